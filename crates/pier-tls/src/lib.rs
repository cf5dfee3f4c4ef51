//! TLS for the gateway: Pier's local certificate authority, leaf certificates for the base domain, and the
//! rustls server configuration that picks a certificate by SNI.
//!
//! At first start Pier creates a CA (`ca.pem`, which users trust, and `ca-key.pem`, 0600) in the data dir.
//! From it, it issues a leaf for `DOMAIN` and `*.DOMAIN` (service and tag hosts are both one label under the
//! base domain), valid 90 days and reissued when less than 30 remain. A user-supplied certificate (for
//! `--domain run.example.com` with wildcard DNS) replaces the issued leaf and is reloaded when its files
//! change. Certificates are swapped atomically; handshakes in progress keep the one they started with.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;

/// How long an issued leaf is valid.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Reissue a leaf when less than this remains.
pub const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What can go wrong with certificates.
#[derive(Debug, Error)]
pub enum TlsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the certificate or key.
    #[error("certificate refused: {0}")]
    Rustls(#[from] rustls::Error),
}

type Result<T, E = TlsError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `data` to `path` atomically (temp file + rename) with `mode` permissions from creation on.
pub fn write_private(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Pier's local certificate authority.
pub struct LocalCa {
    cert_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Pier");
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl LocalCa {
    /// Loads the CA from `dir` (`ca.pem`, `ca-key.pem`), creating it on first start. `name` is the CA's
    /// common name; it must be the same at every start of one installation.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Self> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let params = ca_params(name);
        let key = if key_path.exists() && cert_path.exists() {
            let pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            KeyPair::from_pem(&pem).map_err(|e| TlsError::BadPem {
                path: key_path.clone(),
                reason: format!("not a usable private key ({e}); move it away to create a new CA"),
            })?
        } else {
            let key = KeyPair::generate()?;
            let mut p = params.clone();
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - time::Duration::days(1);
            p.not_after = now + time::Duration::days(3650);
            let cert = p.self_signed(&key)?;
            write_private(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_private(&cert_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(path = %cert_path.display(), "created local certificate authority");
            key
        };
        Ok(Self {
            cert_path,
            issuer: Issuer::new(params, key),
        })
    }

    /// Where the CA certificate is (the file users trust).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> Result<String> {
        fs::read_to_string(&self.cert_path).map_err(io_err(&self.cert_path))
    }

    /// Issues a server certificate for `names`, valid from an hour ago for `validity`.
    pub fn issue(&self, names: &[String], validity: Duration) -> Result<IssuedLeaf> {
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        let not_after = SystemTime::now() + validity;
        params.not_after = now + validity;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let ca = self.cert_pem()?;
        Ok(IssuedLeaf {
            chain_pem: format!("{}{}", cert.pem(), ca),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// A freshly issued certificate with its key.
#[derive(Debug, Clone)]
pub struct IssuedLeaf {
    /// Leaf then CA, PEM.
    pub chain_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
    /// End of validity.
    pub not_after: SystemTime,
}

/// Builds a rustls `CertifiedKey` from PEM text.
/// `cert_origin` and `key_origin` name the files in errors.
pub fn certified_key_from_pem(
    chain_pem: &str,
    key_pem: &str,
    cert_origin: &Path,
    key_origin: &Path,
) -> Result<CertifiedKey> {
    let bad = |reason: String| TlsError::BadPem {
        path: cert_origin.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(format!("unreadable certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::BadPem {
        path: key_origin.to_owned(),
        reason: format!("no usable private key: {e}"),
    })?;
    let ck = CertifiedKey::from_der(chain, key, &provider())?;
    ck.keys_match()
        .map_err(|e| bad(format!("the key does not match the certificate: {e}")))?;
    Ok(ck)
}

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Answers TLS-ALPN-01 validations: the self-signed certificate carrying a pending challenge's digest for
/// a name (RFC 8737 §3), while that challenge is pending.
pub trait ChallengeCerts: Send + Sync + std::fmt::Debug + 'static {
    /// The challenge certificate for `name`, if one is pending.
    fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>>;
}

/// A `CertifiedKey` for ACME's TLS-ALPN-01 challenge certificate (RFC 8737 §3), whose critical
/// acmeIdentifier extension webpki refuses to parse, so the key is not matched against it.
///
/// # Errors
/// The key cannot be loaded.
pub fn challenge_certified_key(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey> {
    let signing = provider().key_provider.load_private_key(key)?;
    Ok(CertifiedKey::new(vec![cert], signing))
}

/// Chooses a certificate by SNI: exact name first, then a wildcard one label up, then the default for
/// names inside a served wildcard's domain (and clients that send no SNI). A name Pier serves nowhere gets
/// none, so its handshake fails. A ClientHello that offers only ACME's `acme-tls/1` gets the pending
/// challenge certificate for its name, and nothing else.
#[derive(Debug, Default)]
pub struct SniResolver {
    certs: ArcSwap<CertTable>,
    challenges: Option<Arc<dyn ChallengeCerts>>,
}

#[derive(Debug, Default, Clone)]
struct CertTable {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    /// A resolver that also answers TLS-ALPN-01 challenges from `challenges`.
    pub fn with_challenges(challenges: Arc<dyn ChallengeCerts>) -> Self {
        Self {
            certs: ArcSwap::default(),
            challenges: Some(challenges),
        }
    }

    /// Installs `cert` for `names` (`*.example.com` for a wildcard); the first cert ever set becomes the
    /// default for clients that send no SNI.
    pub fn set(&self, names: &[String], cert: Arc<CertifiedKey>) {
        self.certs.rcu(|cur| {
            let mut t = CertTable::clone(cur);
            for n in names {
                t.by_name.insert(n.to_ascii_lowercase(), cert.clone());
            }
            if t.default.is_none() {
                t.default = Some(cert.clone());
            }
            t
        });
    }

    /// Installs `cert` for one exact name (a mapped domain); never the default.
    pub fn set_exact(&self, name: &str, cert: Arc<CertifiedKey>) {
        self.certs.rcu(|cur| {
            let mut t = CertTable::clone(cur);
            t.by_name.insert(name.to_ascii_lowercase(), cert.clone());
            t
        });
    }

    /// Stops serving `name` (a domain no longer mapped).
    pub fn remove(&self, name: &str) {
        self.certs.rcu(|cur| {
            let mut t = CertTable::clone(cur);
            t.by_name.remove(&name.to_ascii_lowercase());
            t
        });
    }

    /// Whether a certificate is installed for exactly `name`.
    pub fn has(&self, name: &str) -> bool {
        self.certs
            .load()
            .by_name
            .contains_key(&name.to_ascii_lowercase())
    }

    /// Makes `cert` the default.
    pub fn set_default(&self, cert: Arc<CertifiedKey>) {
        self.certs.rcu(|cur| {
            let mut t = CertTable::clone(cur);
            t.default = Some(cert.clone());
            t
        });
    }

    /// Looks up the certificate for a server name: one hash look-up per label at most, whatever the
    /// number of names served.
    pub fn lookup(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let table = self.certs.load();
        let Some(name) = name else {
            return table.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = table.by_name.get(&name) {
            return Some(c.clone());
        }
        let mut rest = name.as_str();
        let mut first = true;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(c) = table.by_name.get(&format!("*.{parent}")) {
                // One label under a wildcard: its certificate. Deeper: the default, as before.
                return if first {
                    Some(c.clone())
                } else {
                    table.default.clone()
                };
            }
            first = false;
            rest = parent;
        }
        None
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A validator offers acme-tls/1 alone (RFC 8737 §3); a client that offers it beside others is
        // an ordinary client and gets the ordinary certificate.
        let acme = hello.alpn().is_some_and(|protos| {
            let offered: Vec<&[u8]> = protos.collect();
            offered == [ACME_TLS_ALPN]
        });
        if acme {
            let name = hello.server_name()?;
            return self.challenges.as_ref()?.tls_alpn01(name);
        }
        self.lookup(hello.server_name())
    }
}

/// The rustls server configuration of the gateway: TLS 1.2 and 1.3, ALPN h2 then http/1.1, and ACME's
/// `acme-tls/1` for validators (connections that negotiate it are closed after the handshake).
pub fn server_config(resolver: Arc<SniResolver>) -> Result<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Ok(cfg)
}

/// Where a domain's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// Issued by the local CA and renewed before expiry.
    LocalCa,
    /// Files the user supplied, reloaded when they change.
    Files {
        /// Certificate chain PEM.
        cert: PathBuf,
        /// Private key PEM.
        key: PathBuf,
    },
}

/// Keeps the certificate for one base domain (`DOMAIN` and `*.DOMAIN`) current in a resolver.
#[derive(Debug)]
pub struct DomainCert {
    domain: String,
    source: CertSource,
    dir: PathBuf,
    resolver: Arc<SniResolver>,
    state: std::sync::Mutex<DomainCertState>,
}

#[derive(Debug, Default)]
struct DomainCertState {
    not_after: Option<SystemTime>,
    files_mtime: Option<(SystemTime, SystemTime)>,
}

impl DomainCert {
    /// Loads (or issues) the certificate for `domain` and installs it in `resolver`. Issued leaves are kept
    /// in `dir` so restarts do not churn certificates.
    pub fn install(
        domain: &str,
        source: CertSource,
        dir: &Path,
        ca: &LocalCa,
        resolver: Arc<SniResolver>,
    ) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let this = Self {
            domain: domain.to_ascii_lowercase(),
            source,
            dir: dir.to_owned(),
            resolver,
            state: Default::default(),
        };
        this.refresh(ca, SystemTime::now(), true)?;
        Ok(this)
    }

    fn names(&self) -> Vec<String> {
        vec![self.domain.clone(), format!("*.{}", self.domain)]
    }

    fn paths(&self) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.dir.join(format!("{}.crt.pem", self.domain)),
            self.dir.join(format!("{}.key.pem", self.domain)),
            self.dir.join(format!("{}.not-after", self.domain)),
        )
    }

    /// When the current certificate expires (issued leaves only).
    pub fn not_after(&self) -> Option<SystemTime> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .not_after
    }

    /// Renews an issued leaf that expires within [`LEAF_RENEW_BEFORE`] of `now`, or reloads user files
    /// that changed. Returns whether a new certificate was installed.
    pub fn refresh(&self, ca: &LocalCa, now: SystemTime, first: bool) -> Result<bool> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &self.source {
            CertSource::Files { cert, key } => {
                let mtime = |p: &Path| {
                    fs::metadata(p)
                        .and_then(|m| m.modified())
                        .map_err(io_err(p))
                };
                let stamp = (mtime(cert)?, mtime(key)?);
                if !first && state.files_mtime == Some(stamp) {
                    return Ok(false);
                }
                let chain = fs::read_to_string(cert).map_err(io_err(cert))?;
                let keypem = fs::read_to_string(key).map_err(io_err(key))?;
                let ck = certified_key_from_pem(&chain, &keypem, cert, key)?;
                self.resolver.set(&self.names(), Arc::new(ck.clone()));
                self.resolver.set_default(Arc::new(ck));
                state.files_mtime = Some(stamp);
                Ok(true)
            }
            CertSource::LocalCa => {
                let (crt_path, key_path, na_path) = self.paths();
                if first && state.not_after.is_none() {
                    // Reuse the leaf on disk if it is still good.
                    if let (Ok(chain), Ok(keypem), Ok(na)) = (
                        fs::read_to_string(&crt_path),
                        fs::read_to_string(&key_path),
                        fs::read_to_string(&na_path),
                    ) && let Ok(secs) = na.trim().parse::<u64>()
                    {
                        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                        if not_after > now + LEAF_RENEW_BEFORE
                            && let Ok(ck) =
                                certified_key_from_pem(&chain, &keypem, &crt_path, &key_path)
                        {
                            let ck = Arc::new(ck);
                            self.resolver.set(&self.names(), ck.clone());
                            self.resolver.set_default(ck);
                            state.not_after = Some(not_after);
                            return Ok(true);
                        }
                    }
                }
                if let Some(na) = state.not_after
                    && na > now + LEAF_RENEW_BEFORE
                {
                    return Ok(false);
                }
                let leaf = ca.issue(&self.names(), LEAF_VALIDITY)?;
                let ck = Arc::new(certified_key_from_pem(
                    &leaf.chain_pem,
                    &leaf.key_pem,
                    &crt_path,
                    &key_path,
                )?);
                write_private(&key_path, leaf.key_pem.as_bytes(), 0o600)?;
                write_private(&crt_path, leaf.chain_pem.as_bytes(), 0o644)?;
                let secs = leaf
                    .not_after
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                write_private(&na_path, secs.to_string().as_bytes(), 0o644)?;
                self.resolver.set(&self.names(), ck.clone());
                self.resolver.set_default(ck);
                state.not_after = Some(leaf.not_after);
                tracing::info!(domain = %self.domain, "issued certificate for *.{}", self.domain);
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests;
