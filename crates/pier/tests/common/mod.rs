//! The end-to-end harness: starts the real `pier` binary on free ports with a temporary data dir, runs the
//! real CLI against it, and talks to services over real TLS (reqwest trusting Pier's CA, and curl).

#![allow(dead_code, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub const PIER: &str = env!("CARGO_BIN_EXE_pier");

pub mod acme;
pub mod oci;

/// The example echo server, built once per test run: statically linked, so the same binary runs on the
/// host (process runtime) and alone in a container image.
pub fn hello_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(PIER).parent().unwrap();
        let bin = dir.join("pier-hello");
        let status = Command::new(env!("CARGO"))
            .args([
                "rustc",
                "--quiet",
                "-p",
                "pier-hello",
                "--bin",
                "pier-hello",
            ])
            .args(["--", "-C", "target-feature=+crt-static"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("running cargo to build pier-hello");
        assert!(status.success(), "building pier-hello failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// Resolves every name to loopback, as curl and browsers do for *.localhost.
struct Loopback(u16);

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.0));
        Box::pin(async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) })
    }
}

pub struct Pier {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub child: Option<Child>,
    pub api_url: String,
    pub https_port: u16,
    pub http_port: u16,
    pub ca_pem: String,
    pub args: Vec<String>,
    /// The network namespace (a name under `/run/netns`) the server and every command run in, if any.
    pub netns: Option<String>,
    /// The server's log, when it is not `dir/server.log`.
    pub log: Option<PathBuf>,
    /// The server's pid when it runs in a mount namespace of its own: commands run there too, and
    /// the harness reads its files through `/proc/PID/root`.
    pub mount_ns_of: Option<u32>,
    /// The server's run dir (`/run/pier/INSTALLATION`), once it is up: removed with the server.
    run_dir_seen: Option<PathBuf>,
}

/// `program`, run in network namespace `netns` when one is given (with `nsenter`, which changes
/// nothing else: `ip netns exec` would remount `/sys` and hide the cgroup hierarchies).
pub fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

impl Pier {
    /// Starts a server with extra `args` on free ports.
    pub fn start(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut p = Self::launch(&dir, &with_free_ports(args));
        p._tmp = Some(tmp);
        p
    }

    /// Starts a server in an existing data dir with exactly `args`.
    pub fn launch(dir: &Path, args: &[String]) -> Self {
        Self::launch_in(None, dir, args)
    }

    /// Starts a server with extra `args` on free ports inside network namespace `netns`.
    pub fn start_in(netns: &str, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let mut p = Self::launch_in(Some(netns), &dir, &with_free_ports(args));
        p._tmp = Some(tmp);
        p
    }

    fn launch_in(netns: Option<&str>, dir: &Path, args: &[String]) -> Self {
        let _ = std::fs::remove_file(dir.join("api-url"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let child = in_netns(netns, PIER)
            .arg("server")
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("PIER_CONFIG", dir.join("cli.toml"))
            .env("PIER_LOG", "info,pier_activator=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting pier server");
        let mut p = Pier {
            dir: dir.to_owned(),
            _tmp: None,
            child: Some(child),
            api_url: String::new(),
            https_port: 0,
            http_port: 0,
            ca_pem: String::new(),
            args: args.to_vec(),
            netns: netns.map(str::to_owned),
            log: None,
            mount_ns_of: None,
            run_dir_seen: None,
        };
        p.wait_up();
        p
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("pier server exited ({status}):\n{}", self.server_log());
            }
            if let Ok(url) = std::fs::read_to_string(self.host_path(&self.dir.join("api-url"))) {
                let out = self.cli(&["services", "list", "--format", "json"]);
                if out.status.success() {
                    self.api_url = url.trim().to_owned();
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "server never came up:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let info = self.api_get("/v1/info");
        self.run_dir_seen = info["runDir"].as_str().map(PathBuf::from);
        self.https_port = info["httpsPort"].as_u64().unwrap() as u16;
        self.http_port = info["httpPort"].as_u64().unwrap() as u16;
        self.ca_pem = std::fs::read_to_string(self.host_path(&self.dir.join("ca.pem"))).unwrap();
    }

    /// An ID token of the active account (the owner after the first start), with the CLI's audience:
    /// services accept it, the admin API does not.
    pub fn token(&self) -> String {
        self.ok(&["auth", "print-identity-token"]).trim().to_owned()
    }

    /// An access token of the active account: what the admin API accepts.
    pub fn api_token(&self) -> String {
        self.ok(&["auth", "print-access-token"]).trim().to_owned()
    }

    /// An ID token of the active account for `audience`.
    pub fn token_for(&self, audience: &str) -> String {
        self.ok(&["auth", "print-identity-token", "--audiences", audience])
            .trim()
            .to_owned()
    }

    /// GET on the admin API, as JSON.
    pub fn api_get(&self, path: &str) -> serde_json::Value {
        let out = self
            .command("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {}", self.api_token()))
            .arg(format!("{}{path}", self.api_url))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
        assert!(
            out.status.success() && status == "200",
            "GET {path}: HTTP {status:?} {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(body).unwrap()
    }

    /// `program`, run where the server runs (its network or mount namespace, if it has one).
    pub fn command(&self, program: &str) -> Command {
        match self.mount_ns_of {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--mount=/proc/{pid}/ns/mnt"))
                    .arg("--")
                    .arg(program);
                c
            }
            None => in_netns(self.netns.as_deref(), program),
        }
    }

    /// Where this server mounts container roots and writes bundles (`/run/pier/INSTALLATION`).
    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(self.api_get("/v1/info")["runDir"].as_str().unwrap())
    }

    /// Where the harness reads a path of the server's (through `/proc/PID/root` when the server has a
    /// mount namespace of its own).
    pub fn host_path(&self, p: &Path) -> PathBuf {
        match self.mount_ns_of {
            Some(pid) => PathBuf::from(format!("/proc/{pid}/root{}", p.display())),
            None => p.to_owned(),
        }
    }

    pub fn server_log(&self) -> String {
        let path = self
            .log
            .clone()
            .unwrap_or_else(|| self.dir.join("server.log"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Starts a server on free ports through `wrapper` (a command that runs its arguments, such as
    /// `unshare -m ...` or `prlimit ...`), with its data dir at `data` as the server sees it and its log
    /// in `host_dir`. The harness reaches the data dir through `/proc/PID/root`, so a data dir on a
    /// filesystem mounted in the server's own mount namespace works.
    pub fn start_wrapped(wrapper: &[&str], host_dir: &Path, data: &Path, args: &[&str]) -> Self {
        let log_path = host_dir.join("server.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let args = with_free_ports(args);
        let child = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(PIER)
            .arg("server")
            .arg("--data-dir")
            .arg(data)
            .args(&args)
            .env("PIER_CONFIG", data.join("cli.toml"))
            .env("PIER_LOG", "info,pier_activator=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting pier server");
        let pid = child.id();
        let mut p = Pier {
            dir: data.to_owned(),
            _tmp: None,
            child: Some(child),
            api_url: String::new(),
            https_port: 0,
            http_port: 0,
            ca_pem: String::new(),
            args,
            netns: None,
            log: Some(log_path),
            mount_ns_of: Some(pid),
            run_dir_seen: None,
        };
        p.wait_up();
        p
    }

    /// Runs the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(PIER)
            .args(args)
            .env("PIER_CONFIG", self.dir.join("cli.toml"))
            .env("PIER_DATA_DIR", &self.dir)
            .env_remove("PIER_PROJECT")
            .stdin(Stdio::null())
            .output()
            .expect("running pier")
    }

    /// Runs the CLI and returns stdout; panics with stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "pier {args:?} failed:\nstdout: {}\nstderr: {}\nserver:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "pier {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Deploys the echo server as `name` with extra flags; returns the service URL.
    pub fn deploy_hello(&self, name: &str, extra: &[&str]) -> String {
        let bin = hello_bin();
        let mut args = vec!["deploy", name, "--command", bin.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.deploy_url(&args)
    }

    /// Runs `pier ARGS` (a deploy) as the owner and returns the `Service URL:` it prints.
    pub fn deploy_url(&self, args: &[&str]) -> String {
        service_url(&self.ok(args))
    }

    /// JSON description of a service.
    pub fn describe(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["services", "describe", name, "--format", "json"])).unwrap()
    }

    /// A reqwest client trusting Pier's CA, with every host resolving to this server's HTTPS port.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .dns_resolver(Arc::new(Loopback(self.https_port)))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// curl with Pier's CA.
    pub fn curl(&self, args: &[&str]) -> Output {
        self.command("curl")
            .arg("--cacert")
            .arg(self.dir.join("ca.pem"))
            .args(["-sS", "--max-time", "60"])
            .args(args)
            .output()
            .expect("curl")
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server did not stop:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
}

impl Drop for Pier {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate_quietly();
        }
        // A server killed with -9 and not restarted leaves containers and image mounts behind.
        oci::remove_leftovers(&self.dir);
        // A server stops by removing its run dir; one killed with -9 and not restarted leaves it.
        if let Some(run) = &self.run_dir_seen {
            oci::remove_run_dir(run);
        }
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.server_log());
        }
    }
}

impl Pier {
    fn terminate_quietly(&mut self) -> Option<()> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if c.try_wait().ok()?.is_some() {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        Some(())
    }
}

/// Free ports, and no egress unless the test asks for it (so no test sends traffic off the machine).
pub fn with_free_ports(args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--https-port".into(),
        "0".into(),
        "--http-port".into(),
        "0".into(),
        "--api-addr".into(),
        "127.0.0.1:0".into(),
    ];
    if !args.contains(&"--metrics-addr") {
        v.extend(["--metrics-addr".into(), "127.0.0.1:0".into()]);
    }
    if !args.contains(&"--egress") {
        v.extend(["--egress".into(), "none".into()]);
    }
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// A free TCP port (for restarts that must keep their URLs).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `program` run the way the README tells users on hosts whose resolver does not map `*.localhost` to
/// this machine: with `myhostname` in the `hosts:` line of `/etc/nsswitch.conf` (Debian's
/// `libnss-myhostname`). The changed file is bind-mounted in a mount namespace of the command's own, so
/// the machine's resolver never changes.
pub fn with_myhostname(program: &str) -> Command {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    let conf = CONF.get_or_init(|| {
        let text = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
        let fixed: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("hosts:") && !l.contains("myhostname") {
                    format!(
                        "hosts: files myhostname {}",
                        l.split_once(':').unwrap().1.replace("files", "").trim()
                    )
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        // Under the build's own scratch folder, not `/tmp`: one file for every test binary, replaced
        // atomically, so nothing is left behind on the machine.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join("nsswitch-myhostname.conf");
        let part = dir.join(format!("nsswitch-myhostname.conf.{}", std::process::id()));
        std::fs::write(&part, fixed + "\n").unwrap();
        std::fs::rename(&part, &path).unwrap();
        path
    });
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/nsswitch.conf && exec \"$@\"")
        .arg(conf)
        .arg(program);
    c
}

/// A folder every instance can see, whatever the clone's location (a clone under `/tmp` or a home is
/// out of instances' sight: `/tmp` is each instance's own, homes are hidden), for apps that users
/// other than the owner deploy. Removed when dropped.
pub fn visible_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("pier-test-")
        .tempdir_in("/opt")
        .expect("a folder under /opt for apps instances must see");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A copy of the echo server in `dir` (from [`visible_dir`]), which every instance can run.
pub fn visible_hello(dir: &Path) -> PathBuf {
    let to = dir.join("pier-hello");
    std::fs::copy(hello_bin(), &to).unwrap();
    to
}

/// Asserts that `text` holds each of `parts`, in that order.
pub fn in_order(text: &str, parts: &[&str]) {
    let mut from = 0;
    for p in parts {
        match text[from..].find(p) {
            Some(i) => from += i + p.len(),
            None => panic!("no {p:?} after the earlier parts {parts:?} in:\n{text}"),
        }
    }
}

/// Retries `f` until it returns Some or `secs` pass.
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Live (not zombie) processes whose command line contains `needle`.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_none_or(|c| c == 'Z' || c == 'X');
        if zombie {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Another signed-in account of the same server: the CLI with its own config file.
pub struct Account<'a> {
    pub pier: &'a Pier,
    pub config: PathBuf,
    pub email: String,
}

impl Pier {
    /// Creates user `email` (as the owner) and signs the CLI in as it, in a config of its own.
    pub fn user(&self, email: &str) -> Account<'_> {
        let password = "correct horse battery staple";
        let pw = self.dir.join(format!("{email}.pw"));
        std::fs::write(&pw, password).unwrap();
        let out = Command::new(PIER)
            .args(["users", "create", email, "--password-stdin"])
            .env("PIER_CONFIG", self.dir.join("cli.toml"))
            .stdin(std::fs::File::open(&pw).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = self.dir.join(format!("{email}.toml"));
        std::fs::write(
            &config,
            format!(
                "api_url = \"{}\"\ndata_dir = \"{}\"\n",
                self.api_url,
                self.dir.display()
            ),
        )
        .unwrap();
        let a = Account {
            pier: self,
            config,
            email: email.to_owned(),
        };
        a.ok(&[
            "auth",
            "login",
            email,
            "--password-file",
            pw.to_str().unwrap(),
        ]);
        a
    }
}

impl Account<'_> {
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(PIER)
            .args(args)
            .env("PIER_CONFIG", &self.config)
            .env_remove("PIER_PROJECT")
            .env_remove("PIER_DATA_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("running pier")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "pier {args:?} as {} failed:\nstdout: {}\nstderr: {}\nserver:\n{}",
            self.email,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.pier.server_log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "pier {args:?} as {} should have failed; stdout: {}",
            self.email,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn token(&self) -> String {
        self.ok(&["auth", "print-identity-token"]).trim().to_owned()
    }

    pub fn api_token(&self) -> String {
        self.ok(&["auth", "print-access-token"]).trim().to_owned()
    }
}

/// The `Service URL:` a deploy (or `services replace`, or `pier up`) printed in `out`.
pub fn service_url(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Service URL: "))
        .unwrap_or_else(|| panic!("no URL in {out}"))
        .to_owned()
}

/// Runs `python3 -c SCRIPT ARGS...`, which must exit 0; returns what it printed.
pub fn python<A: AsRef<std::ffi::OsStr>>(
    script: &str,
    args: impl IntoIterator<Item = A>,
) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A home for a real browser (Chromium) in which Pier's CA is trusted the way a user trusts it: in the
/// browser's own NSS database (`~/.pki/nssdb`), with `certutil` from libnss3-tools.
pub fn browser_home(p: &Pier) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let db = format!("sql:{}", home.path().join(".pki/nssdb").display());
    std::fs::create_dir_all(home.path().join(".pki/nssdb")).unwrap();
    for args in [
        vec!["-N", "-d", &db, "--empty-password"],
        vec![
            "-A",
            "-d",
            &db,
            "-t",
            "C,,",
            "-n",
            "pier",
            "-i",
            p.dir.join("ca.pem").to_str().unwrap(),
        ],
    ] {
        let st = std::process::Command::new("certutil")
            .args(&args)
            .status()
            .expect("certutil (scripts/install-test-deps installs libnss3-tools)");
        assert!(st.success(), "certutil {args:?}");
    }
    home
}

/// A WebSocket echo server (Python `websockets`) on `$PORT`: answers each message with `echo: MESSAGE`.
pub const WS_ECHO_SERVER: &str = r#"
import asyncio, os, websockets
async def echo(ws):
    async for msg in ws:
        await ws.send("echo: " + msg)
async def main():
    async with websockets.serve(echo, "0.0.0.0", int(os.environ["PORT"])):
        await asyncio.Future()
asyncio.run(main())
"#;

/// A WebSocket client: `python3 -c WS_CLIENT wss://URL CA_FILE HTTPS_PORT` sends `one` and `two` and
/// prints the answers.
pub const WS_CLIENT: &str = r#"
import asyncio, ssl, sys, websockets
async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    # glibc does not resolve *.localhost: connect to loopback, keep the URL's host for SNI and Host.
    async with websockets.connect(sys.argv[1], ssl=ctx, host="127.0.0.1", port=int(sys.argv[3])) as ws:
        for m in ["one", "two"]:
            await ws.send(m)
            print(await ws.recv())
asyncio.run(main())
"#;

/// How many instances a service's revisions have now.
pub fn instances(pier: &Pier, service: &str) -> usize {
    let revs: serde_json::Value = serde_json::from_str(&pier.ok(&[
        "revisions",
        "list",
        "--service",
        service,
        "--format",
        "json",
    ]))
    .unwrap();
    revs.as_array()
        .unwrap()
        .iter()
        .map(|r| r["instances"].as_array().unwrap().len())
        .sum()
}
