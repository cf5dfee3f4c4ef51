//! A real ACME CA for the custom-domain tests: Let's Encrypt's `pebble` (Debian's package), with its DNS
//! server `pebble-challtestsrv`, on free loopback ports. Pebble ships no certificate for its own HTTPS,
//! so one is made here with openssl (a CA and a `localhost` leaf); Pier trusts that CA with `--acme-ca`.
//! Pebble makes a new issuing root at every start: [`Acme::root_pem`] fetches the current one.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct Acme {
    pub dir: tempfile::TempDir,
    pebble: Option<Child>,
    dns: Child,
    /// Pebble's ACME port (directory at `https://127.0.0.1:PORT/dir`).
    pub acme_port: u16,
    /// Pebble's management port (issuing roots).
    pub pebble_mgmt: u16,
    /// challtestsrv's DNS port (UDP and TCP).
    pub dns_port: u16,
    /// challtestsrv's management port (records).
    pub dns_mgmt: u16,
    /// The ports pebble validates on: Pier's HTTP and HTTPS ports.
    pub http_port: u16,
    pub https_port: u16,
    config: PathBuf,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("running a tool");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` and a certificate for `subject` with `san` (`DNS:a.example,IP:127.0.0.1`) it signs,
/// made with openssl in `dir`: (CA file, certificate file, key file), named after `name`.
pub fn ca_and_leaf(
    dir: &Path,
    name: &str,
    subject: &str,
    san: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    let f = |suffix: &str| format!("{name}-{suffix}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args([
            "-keyout",
            &f("ca.key"),
            "-out",
            &f("ca.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} CA"),
        ]));
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args([
            "-keyout",
            &f("key.pem"),
            "-out",
            &f("leaf.csr"),
            "-subj",
            &format!("/CN={subject}"),
        ]));
    std::fs::write(
        dir.join(f("ext.cnf")),
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .unwrap();
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        &f("leaf.csr"),
        "-CA",
        &f("ca.pem"),
        "-CAkey",
        &f("ca.key"),
        "-CAcreateserial",
        "-out",
        &f("cert.pem"),
        "-days",
        "2",
        "-extfile",
        &f("ext.cnf"),
    ]));
    (
        dir.join(f("ca.pem")),
        dir.join(f("cert.pem")),
        dir.join(f("key.pem")),
    )
}

fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Acme {
    /// Starts challtestsrv (every name resolves to 127.0.0.1, no AAAA) and pebble, validating on
    /// `http_port` and `https_port`, issuing certificates valid for `validity_secs`.
    pub fn start(http_port: u16, https_port: u16, validity_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Pebble's own HTTPS certificate: a CA and a leaf for localhost / 127.0.0.1.
        let (_, cert, key) = ca_and_leaf(d, "pebble", "localhost", "DNS:localhost,IP:127.0.0.1");
        let (acme_port, pebble_mgmt, dns_port, dns_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let config = d.join("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({"pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{pebble_mgmt}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": https_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity_secs,
            }})
            .to_string(),
        )
        .unwrap();
        let log = |name: &str| std::fs::File::create(d.join(name)).unwrap();
        let dns = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("pebble-challtestsrv (scripts/install-test-deps installs it)");
        wait_port(dns_mgmt, "pebble-challtestsrv");
        let mut acme = Self {
            dir,
            pebble: None,
            dns,
            acme_port,
            pebble_mgmt,
            dns_port,
            dns_mgmt,
            http_port,
            https_port,
            config,
        };
        acme.start_pebble();
        acme
    }

    /// (Re)starts pebble (a new issuing root each time).
    pub fn start_pebble(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pebble.log"))
            .unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&self.config)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{}", self.dns_port))
            // No 0-15 s sleep before each validation; nonces are still rejected at random (5 %),
            // which the client must handle.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble (scripts/install-test-deps installs it)");
        self.pebble = Some(child);
        wait_port(self.acme_port, "pebble");
    }

    /// Stops pebble (the CA goes down).
    pub fn stop_pebble(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The CA that signs pebble's own HTTPS certificate (for `--acme-ca`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("pebble-ca.pem")
    }

    /// The DNS server, as `--dns-server` takes it.
    pub fn dns_server(&self) -> String {
        format!("127.0.0.1:{}", self.dns_port)
    }

    /// The root that issues certificates now, as a PEM file (what clients must trust).
    pub fn root_file(&self) -> PathBuf {
        let out = Command::new("curl")
            .args(["-sSf", "--cacert"])
            .arg(self.ca_file())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.pebble_mgmt))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self
            .dir
            .path()
            .join(format!("root-{}.pem", std::process::id()));
        std::fs::write(&path, out.stdout).unwrap();
        path
    }

    fn dns_call(&self, path: &str, body: serde_json::Value) {
        let out = Command::new("curl")
            .args(["-sSf", "-X", "POST", "-d"])
            .arg(body.to_string())
            .arg(format!("http://127.0.0.1:{}{path}", self.dns_mgmt))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sets a TXT record (`host` without the trailing dot).
    pub fn set_txt(&self, host: &str, value: &str) {
        self.dns_call(
            "/set-txt",
            serde_json::json!({"host": format!("{host}."), "value": value}),
        );
    }

    /// Makes `host` resolve to `ip`.
    pub fn add_a(&self, host: &str, ip: &str) {
        self.dns_call(
            "/add-a",
            serde_json::json!({"host": host, "addresses": [ip]}),
        );
    }

    /// Forgets `host`'s A records.
    pub fn clear_a(&self, host: &str) {
        self.dns_call("/clear-a", serde_json::json!({"host": host}));
    }

    /// Names without an A record of their own resolve to `ip` (empty: to nothing).
    pub fn set_default_ipv4(&self, ip: &str) {
        self.dns_call("/set-default-ipv4", serde_json::json!({"ip": ip}));
    }
}

impl Drop for Acme {
    fn drop(&mut self) {
        self.stop_pebble();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
        if std::thread::panicking() {
            for f in ["pebble.log", "challtestsrv.log"] {
                let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                eprintln!(
                    "---- {f} ----\n{}",
                    &text[text.len().saturating_sub(6000)..]
                );
            }
        }
    }
}
