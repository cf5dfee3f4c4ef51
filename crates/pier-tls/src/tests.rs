//! Certificate tests with real rustls handshakes over loopback sockets.

use super::*;
use std::io::Read;
use std::net::{TcpListener, TcpStream};

fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// Serves one TLS connection with `server` and returns what the client saw: the peer certificate and ALPN.
fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::result::Result<(CertificateDer<'static>, Option<Vec<u8>>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(server).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let mut buf = [0u8; 5];
        if tls.read_exact(&mut buf).is_ok() {
            let _ = tls.write_all(b"world");
        }
    });
    let mut sock = TcpStream::connect(addr).unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(client, name).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let result = (|| {
        tls.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"world");
        let cert = tls.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned();
        Ok((cert, tls.conn.alpn_protocol().map(|a| a.to_vec())))
    })();
    drop(sock);
    let _ = srv.join();
    result
}

fn setup() -> (tempfile::TempDir, LocalCa, Arc<SniResolver>, DomainCert) {
    let dir = tempfile::tempdir().unwrap();
    let ca = LocalCa::load_or_create(dir.path(), "Pier test CA").unwrap();
    let resolver = Arc::new(SniResolver::default());
    let dc = DomainCert::install(
        "pier.localhost",
        CertSource::LocalCa,
        &dir.path().join("tls"),
        &ca,
        resolver.clone(),
    )
    .unwrap();
    (dir, ca, resolver, dc)
}

#[test]
fn clients_trusting_the_ca_accept_service_and_tag_hosts() {
    let (_dir, ca, resolver, _dc) = setup();
    let server = Arc::new(server_config(resolver).unwrap());
    let ca_pem = ca.cert_pem().unwrap();
    for host in [
        "hello-3f9a2c.pier.localhost",
        "green---hello-3f9a2c.pier.localhost",
        "pier.localhost",
    ] {
        let (_, alpn) = handshake(
            server.clone(),
            client_config(&ca_pem, &[b"h2", b"http/1.1"]),
            host,
        )
        .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "h2 is preferred");
    }
    let (_, alpn) = handshake(
        server.clone(),
        client_config(&ca_pem, &[b"http/1.1"]),
        "a-1.pier.localhost",
    )
    .unwrap();
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[test]
fn other_names_and_untrusting_clients_fail() {
    let (_dir, ca, resolver, _dc) = setup();
    let server = Arc::new(server_config(resolver).unwrap());
    let ca_pem = ca.cert_pem().unwrap();
    // Two labels below the domain are not covered by the wildcard.
    let err = handshake(
        server.clone(),
        client_config(&ca_pem, &[]),
        "a.b.pier.localhost",
    )
    .unwrap_err();
    assert!(
        err.contains("NotValidForName") || err.contains("not valid"),
        "{err}"
    );
    let other = tempfile::tempdir().unwrap();
    let other_ca = LocalCa::load_or_create(other.path(), "someone else").unwrap();
    let err = handshake(
        server,
        client_config(&other_ca.cert_pem().unwrap(), &[]),
        "a.pier.localhost",
    )
    .unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.contains("invalid peer certificate"),
        "{err}"
    );
}

#[test]
fn ca_and_leaf_survive_restart_with_private_keys_0600() {
    let (dir, ca, resolver, dc) = setup();
    let first = resolver.lookup(Some("x.pier.localhost")).unwrap();
    let first_ca = ca.cert_pem().unwrap();
    drop((ca, dc));
    let ca2 = LocalCa::load_or_create(dir.path(), "Pier test CA").unwrap();
    assert_eq!(ca2.cert_pem().unwrap(), first_ca);
    let resolver2 = Arc::new(SniResolver::default());
    let _dc2 = DomainCert::install(
        "pier.localhost",
        CertSource::LocalCa,
        &dir.path().join("tls"),
        &ca2,
        resolver2.clone(),
    )
    .unwrap();
    let second = resolver2.lookup(Some("x.pier.localhost")).unwrap();
    assert_eq!(first.cert, second.cert, "a good leaf is reused");
    for key in [
        dir.path().join("ca-key.pem"),
        dir.path().join("tls/pier.localhost.key.pem"),
    ] {
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
}

#[test]
fn leaf_is_rotated_before_expiry() {
    let (_dir, ca, resolver, dc) = setup();
    let before = resolver.lookup(Some("x.pier.localhost")).unwrap();
    let not_after = dc.not_after().unwrap();
    assert!(
        !dc.refresh(&ca, SystemTime::now(), false).unwrap(),
        "fresh leaf stays"
    );
    // 61 days on, fewer than 30 remain: a new leaf replaces it.
    let later = SystemTime::now() + Duration::from_secs(61 * 24 * 3600);
    assert!(dc.refresh(&ca, later, false).unwrap());
    let after = resolver.lookup(Some("x.pier.localhost")).unwrap();
    assert_ne!(before.cert, after.cert);
    assert!(dc.not_after().unwrap() >= not_after);
}

#[test]
fn user_supplied_certificate_serves_its_domain() {
    let (dir, ca, _r, _dc) = setup();
    let leaf = ca
        .issue(
            &["run.example.com".into(), "*.run.example.com".into()],
            LEAF_VALIDITY,
        )
        .unwrap();
    let cert = dir.path().join("user.crt");
    let key = dir.path().join("user.key");
    fs::write(&cert, &leaf.chain_pem).unwrap();
    fs::write(&key, &leaf.key_pem).unwrap();
    let resolver = Arc::new(SniResolver::default());
    let _dc = DomainCert::install(
        "run.example.com",
        CertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        &dir.path().join("tls"),
        &ca,
        resolver.clone(),
    )
    .unwrap();
    let server = Arc::new(server_config(resolver).unwrap());
    handshake(
        server,
        client_config(&ca.cert_pem().unwrap(), &[]),
        "api-1a2b3c.run.example.com",
    )
    .unwrap();

    // A broken key file is refused with the file's name.
    fs::write(&key, "garbage").unwrap();
    let err = DomainCert::install(
        "run.example.com",
        CertSource::Files { cert, key },
        &dir.path().join("tls"),
        &ca,
        Arc::new(SniResolver::default()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("user.key") && err.contains("private key"),
        "{err}"
    );
}
