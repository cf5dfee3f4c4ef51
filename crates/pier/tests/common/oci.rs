//! Container test fixtures with the real tools: Debian's `docker-registry` (distribution v2) on loopback,
//! images built as OCI layouts with `umoci` from small static binaries (the echo server, busybox), and
//! copied between layouts, archives and registries with `skopeo`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Fails loudly when a tool the container tests need is missing (scripts/install-test-deps installs them).
pub fn need(tools: &[&str]) {
    for t in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{t} is not installed: run scripts/install-test-deps (the container tests need runc, docker-registry, skopeo, umoci, busybox-static, htpasswd)"
        );
    }
    assert!(
        nix_root(),
        "the container tests need root (namespaces, mounts, cgroups)"
    );
}

fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A registry on a free loopback port, storing in a temporary directory.
pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    pub creds: Option<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
    _certs: Option<tempfile::TempDir>,
}

impl Registry {
    /// An open registry.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A registry that wants HTTP basic authentication.
    pub fn with_auth(user: &str, password: &str) -> Self {
        Self::launch(Some((user.to_owned(), password.to_owned())))
    }

    /// A registry serving HTTPS with a certificate from a private CA made here; the path returned is the
    /// CA's certificate, to trust it.
    pub fn with_tls() -> (Self, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let d = |f: &str| dir.path().join(f);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args(["req", "-x509", "-days", "1", "-subj", "/CN=pier test CA"])
            .args(ec)
            .arg("-keyout")
            .arg(d("ca.key"))
            .arg("-out")
            .arg(d("ca.pem"))
            .stderr(Stdio::null()));
        run(Command::new("openssl")
            .args(["req", "-subj", "/CN=127.0.0.1"])
            .args(ec)
            .arg("-keyout")
            .arg(d("key.pem"))
            .arg("-out")
            .arg(d("req.csr"))
            .stderr(Stdio::null()));
        std::fs::write(
            d("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "1", "-CAcreateserial"])
            .arg("-in")
            .arg(d("req.csr"))
            .arg("-CA")
            .arg(d("ca.pem"))
            .arg("-CAkey")
            .arg(d("ca.key"))
            .arg("-extfile")
            .arg(d("ext.cnf"))
            .arg("-out")
            .arg(d("cert.pem"))
            .stderr(Stdio::null()));
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            d("cert.pem").display(),
            d("key.pem").display()
        );
        let ca = d("ca.pem");
        let mut reg = Self::launch_with(None, &tls, "");
        reg._certs = Some(dir);
        (reg, ca)
    }

    /// A registry that wants bearer tokens from `tokens` (the Docker token protocol, as Docker Hub, GHCR
    /// and most hosted registries use); `user`/`password` are what the token server accepts.
    pub fn with_token_auth(tokens: &TokenServer, user: &str, password: &str) -> Self {
        let auth = format!(
            "auth:\n  token:\n    realm: http://{}/token\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            tokens.addr,
            tokens.cert_pem.display()
        );
        let mut reg = Self::launch_with(None, "", &auth);
        reg.creds = Some((user.to_owned(), password.to_owned()));
        reg
    }

    fn launch(creds: Option<(String, String)>) -> Self {
        Self::launch_with(creds, "", "")
    }

    fn launch_with(creds: Option<(String, String)>, http_extra: &str, auth: &str) -> Self {
        need(&["docker-registry", "htpasswd"]);
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{http_extra}",
            storage.display()
        );
        if let Some((u, p)) = &creds {
            let htpasswd = dir.path().join("htpasswd");
            let line = run(Command::new("htpasswd").args(["-Bbn", u, p]));
            std::fs::write(&htpasswd, line.trim()).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: pier-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        config.push_str(auth);
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            addr,
            storage,
            creds,
            child,
            _dir: dir,
            _certs: None,
        }
    }

    /// Copies `src` (a skopeo reference such as `oci:DIR:TAG`) to `NAME:TAG` here; returns the image
    /// reference (`127.0.0.1:PORT/NAME:TAG`).
    pub fn push(&self, src: &str, name_tag: &str, extra: &[&str]) -> String {
        let dest = format!("{}/{name_tag}", self.addr);
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.args(extra).arg(src).arg(format!("docker://{dest}"));
        run(&mut cmd);
        dest
    }

    /// The data file of a blob in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What goes into a test image.
#[derive(Default, Clone)]
pub struct ImageSpec {
    /// Host files copied in: (source, path in the image, mode).
    pub files: Vec<(PathBuf, String, u32)>,
    /// Text files written in: (path in the image, content, mode).
    pub texts: Vec<(String, String, u32)>,
    /// Busybox at /bin/busybox with every applet linked in /bin.
    pub busybox: bool,
    /// Host programs copied in at the same paths, with the shared libraries `ldd` lists.
    pub host_programs: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
}

impl ImageSpec {
    /// The echo server alone, as `/pier-hello`, its entrypoint.
    pub fn hello() -> Self {
        Self {
            files: vec![(super::hello_bin(), "/pier-hello".into(), 0o755)],
            entrypoint: vec!["/pier-hello".into()],
            ..Default::default()
        }
    }

    /// Busybox with httpd serving `/www` (CGI scripts in `/www/cgi-bin`) on $PORT.
    pub fn busybox_httpd(scripts: &[(&str, &str)]) -> Self {
        let mut texts = vec![("/www/index.html".to_owned(), "busybox\n".to_owned(), 0o644)];
        for (name, body) in scripts {
            texts.push((
                format!("/www/cgi-bin/{name}"),
                format!("#!/bin/sh\necho 'Content-Type: text/plain'\necho\n{body}\n"),
                0o755,
            ));
        }
        Self {
            texts,
            busybox: true,
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["exec httpd -f -p $PORT -h /www".into()],
            ..Default::default()
        }
    }
}

/// Builds `spec` into the OCI layout `layout` as `tag` with umoci; returns the skopeo reference
/// `oci:LAYOUT:TAG`.
pub fn build(layout: &Path, tag: &str, spec: &ImageSpec) -> String {
    need(&["umoci", "skopeo"]);
    if !layout.join("index.json").exists() {
        run(Command::new("umoci")
            .arg("init")
            .arg("--layout")
            .arg(layout));
    }
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image]));
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    let root = bundle.join("rootfs");
    let place = |dest: &str| {
        let p = root.join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p
    };
    use std::os::unix::fs::PermissionsExt;
    for (src, dest, mode) in &spec.files {
        let p = place(dest);
        std::fs::copy(src, &p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    for (dest, text, mode) in &spec.texts {
        let p = place(dest);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    if spec.busybox {
        let bb = place("/bin/busybox");
        std::fs::copy("/bin/busybox", &bb).unwrap();
        let list = run(Command::new("/bin/busybox").arg("--list"));
        for applet in list.lines().filter(|a| *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
    }
    for prog in &spec.host_programs {
        let libs = run(Command::new("ldd").arg(prog));
        let mut paths: Vec<String> = libs
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(str::to_owned)
            .collect();
        paths.push(prog.clone());
        for path in paths {
            let p = place(&path);
            std::fs::copy(&path, &p).unwrap_or_else(|e| panic!("copying {path}: {e}"));
        }
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    let mut cfg = Command::new("umoci");
    cfg.args([
        "config",
        "--image",
        &image,
        "--clear=config.entrypoint",
        "--clear=config.cmd",
    ]);
    for e in &spec.entrypoint {
        cfg.arg(format!("--config.entrypoint={e}"));
    }
    for c in &spec.cmd {
        cfg.arg(format!("--config.cmd={c}"));
    }
    for e in &spec.env {
        cfg.arg(format!("--config.env={e}"));
    }
    if let Some(u) = &spec.user {
        cfg.arg(format!("--config.user={u}"));
    }
    if let Some(w) = &spec.workdir {
        cfg.arg(format!("--config.workingdir={w}"));
    }
    run(&mut cfg);
    format!("oci:{image}")
}

/// `skopeo copy SRC DEST`.
pub fn copy(src: &str, dest: &str, extra: &[&str]) {
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .args(extra)
        .arg(src)
        .arg(dest));
}

/// The manifest digest of `oci:LAYOUT:TAG`.
pub fn layout_digest(layout: &Path, tag: &str) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .unwrap()
        .to_owned()
}

/// Containers the server with data dir `dir` runs now.
pub fn containers(dir: &Path) -> Vec<String> {
    let state = dir.join("containers/state");
    if !state.exists() {
        return Vec::new();
    }
    let out = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["list", "--quiet"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Containers of the server with data dir `dir` that run an app (not those created ahead of demand
/// and waiting, nor stopped ones).
pub fn running(dir: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(dir.join("containers/state"))
        .args(["list", "--format", "json"])
        .output();
    let Ok(out) = out else { return Vec::new() };
    let list: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "running")
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect()
}

/// Mount points under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    mounts_with_types_under(dir)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// Mount points under `dir` with their filesystem types (`overlay`, `ext4` for an idmapped bind, ...).
pub fn mounts_with_types_under(dir: &Path) -> Vec<(String, String)> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let path = left.split_whitespace().nth(4)?;
            let fstype = right.split_whitespace().next()?;
            Some((path.to_owned(), fstype.to_owned()))
        })
        .filter(|(p, _)| p.starts_with(&prefix))
        .collect()
}

/// Deletes what a server killed with -9 left in `dir` (containers, image mounts), so tests leave the
/// machine clean.
pub fn remove_leftovers(dir: &Path) {
    for id in containers(dir) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(dir.join("containers/state"))
            .args(["delete", "--force", &id])
            .output();
    }
    let mut mounts = mounts_under(dir);
    mounts.sort();
    for m in mounts.iter().rev() {
        let _ = Command::new("umount").args(["-l", m]).output();
    }
}

/// Unmounts what is left under a server's run dir and removes its empty folders, deepest first.
pub fn remove_run_dir(run: &Path) {
    let mut mounts = mounts_under(run);
    mounts.sort();
    for m in mounts.iter().rev() {
        let _ = Command::new("umount").args(["-l", m]).output();
    }
    for top in ["rootfs", "bundles"] {
        for child in std::fs::read_dir(run.join(top))
            .into_iter()
            .flatten()
            .flatten()
        {
            // Bundles hold files (config.json); roots' folders only mount points, now empty.
            if top == "bundles" && mounts_under(&child.path()).is_empty() {
                let _ = std::fs::remove_dir_all(child.path());
            } else {
                remove_empty_dirs(&child.path());
            }
        }
        let _ = std::fs::remove_dir(run.join(top));
    }
    let _ = std::fs::remove_dir(run);
}

/// Removes `dir` and the folders below it, deepest first, where they are empty (files stay).
fn remove_empty_dirs(dir: &Path) {
    for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&child.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A request the token server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The Basic-auth user, if the client sent credentials.
    pub user: Option<String>,
    /// The `scope` parameters, decoded (`repository:hello:pull`).
    pub scopes: Vec<String>,
    /// The HTTP status answered.
    pub status: u16,
}

/// A stand-in for a registry's token service (what Docker Hub's `auth.docker.io` does): it answers the
/// Docker token protocol with RS256 JWTs that Debian's docker-registry verifies through the `x5c` chain.
/// Good credentials get the scopes asked for, no credentials an empty grant, wrong ones 401.
pub struct TokenServer {
    pub addr: String,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<TokenRequest>>>,
    pub cert_pem: PathBuf,
    _dir: tempfile::TempDir,
}

/// The `service` and `iss` the token server and the registry agree on.
const TOKEN_SERVICE: &str = "pier-test-registry";
const TOKEN_ISSUER: &str = "pier-test-tokens";

impl TokenServer {
    pub fn start(user: &str, password: &str) -> Self {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let d = |f: &str| dir.path().join(f);
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-days",
                "1",
                "-subj",
                "/CN=pier test tokens",
            ])
            .args(["-newkey", "rsa:2048", "-nodes"])
            .arg("-keyout")
            .arg(d("key.pem"))
            .arg("-out")
            .arg(d("cert.pem"))
            .stderr(Stdio::null()));
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"])
            .arg("-in")
            .arg(d("key.pem"))
            .arg("-out")
            .arg(d("key.der")));
        run(Command::new("openssl")
            .args(["x509", "-outform", "DER"])
            .arg("-in")
            .arg(d("cert.pem"))
            .arg("-out")
            .arg(d("cert.der")));
        let key =
            aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&std::fs::read(d("key.der")).unwrap())
                .expect("token signing key");
        let x5c =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(d("cert.der")).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = requests.clone();
        let expected = format!("{user}:{password}");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let answered = answer_token_request(conn, &key, &x5c, &expected);
                if let Some(r) = answered {
                    log.lock().unwrap().push(r);
                }
            }
        });
        Self {
            addr,
            requests,
            cert_pem: d("cert.pem"),
            _dir: dir,
        }
    }
}

fn answer_token_request(
    mut conn: std::net::TcpStream,
    key: &aws_lc_rs::signature::RsaKeyPair,
    x5c: &str,
    expected: &str,
) -> Option<TokenRequest> {
    use base64::Engine;
    use std::io::{BufRead, BufReader, Write};
    let b64url = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_owned();
    let mut user_pass = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
            && let Some(b) = value.trim().strip_prefix("Basic ")
        {
            let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
            user_pass = Some(String::from_utf8_lossy(&raw).into_owned());
        }
    }
    let scopes: Vec<String> = target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(percent_decode)
        .collect();
    let user = user_pass
        .as_deref()
        .map(|up| up.split_once(':').map_or(up, |(u, _)| u).to_owned());
    let (status, body) = match user_pass.as_deref() {
        Some(up) if up != expected => (
            401,
            r#"{"details":"incorrect username or password"}"#.to_owned(),
        ),
        granted => {
            // Anonymous callers get a token that grants nothing, as Docker Hub's do for private images.
            let access: Vec<serde_json::Value> = if granted.is_some() {
                scopes
                    .iter()
                    .filter_map(|s| {
                        let mut parts = s.splitn(3, ':');
                        let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                        Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
            let claims = serde_json::json!({
                "iss": TOKEN_ISSUER, "sub": user.clone().unwrap_or_default(), "aud": TOKEN_SERVICE,
                "iat": now, "nbf": now - 10, "exp": now + 300, "jti": format!("{now}-{}", next_token_id()),
                "access": access,
            });
            let signing_input = format!(
                "{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes())
            );
            let mut sig = vec![0; key.public_modulus_len()];
            key.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .ok()?;
            let token = format!("{signing_input}.{}", b64url(&sig));
            (
                200,
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300})
                    .to_string(),
            )
        }
    };
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    Some(TokenRequest {
        user,
        scopes,
        status,
    })
}

/// A process-unique number for token ids.
fn next_token_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(hex))
                if u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16).is_ok() =>
            {
                out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
