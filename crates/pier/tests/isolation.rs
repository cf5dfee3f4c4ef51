//! What an instance may do, measured from inside it: the echo server's `/probe` reports its seccomp
//! mode, `no_new_privs`, user ids, cgroup view, masked paths, and the result of calls the profile
//! refuses, in every runtime (a host process, a gen2 container, a gen1 gVisor sandbox). Every attempt
//! is harmless if it succeeds (see `examples/hello/src/probe.rs`). Then the real workloads the shared
//! profile must let run, and the limits every instance gets.

mod common;

use std::path::Path;

use common::oci::{self, ImageSpec};
use common::*;

fn probe(pier: &Pier, url: &str) -> serde_json::Value {
    let out = pier.curl(&[&format!("{url}/probe")]);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The calls every runtime refuses (by the seccomp profile, or under gVisor by its own kernel).
const REFUSED: [&str; 11] = [
    "unshare_user",
    "keyctl",
    "add_key",
    "mount",
    "kexec_load",
    "bpf",
    "perf_event_open",
    "io_uring_setup",
    "userfaultfd",
    "open_by_handle_at",
    "ptrace",
];

fn assert_refused(report: &serde_json::Value, runtime: &str) {
    for call in REFUSED {
        let got = report["tried"][call].as_str().unwrap_or("missing");
        assert!(
            got == "EPERM" || got == "ENOSYS",
            "{runtime}: {call} answered {got}, expected a refusal:\n{report:#}"
        );
    }
    for (path, empty) in report["maskedEmpty"].as_object().unwrap() {
        assert_eq!(empty, true, "{runtime}: {path} is not masked");
    }
    assert_eq!(report["shadowReadable"], false, "{runtime}");
}

fn image(dir: &Path) -> String {
    let layout = dir.join("layout");
    oci::build(&layout, "hello", &ImageSpec::hello());
    format!("oci:{}:hello", layout.display())
}

#[test]
fn every_runtime_refuses_the_same_calls_and_hides_the_host() {
    oci::need(&["runc", "runsc"]);
    let pier = Pier::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let image = image(work.path());

    // A host process.
    let url = pier.deploy_hello("proc", &["--allow-unauthenticated"]);
    let p = probe(&pier, &url);
    assert_refused(&p, "process");
    assert_eq!(p["seccomp"], "2");
    assert_eq!(p["noNewPrivs"], "1");
    assert_eq!(p["capEff"], "0000000000000000");
    assert_eq!(p["capBnd"], "0000000000000000");
    let uid: u64 = p["uid"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(uid >= 1_879_048_192, "{p}");
    for line in p["cgroup"].as_array().unwrap() {
        assert!(
            line.as_str().unwrap().ends_with(":/"),
            "process cgroup view: {p}"
        );
    }

    // gen2: runc in the service's user namespace.
    let url = pier_deploy(
        &pier,
        "gen2",
        &["--image", &image, "--allow-unauthenticated"],
    );
    let g2 = probe(&pier, &url);
    assert_refused(&g2, "gen2");
    assert_eq!(g2["seccomp"], "2");
    assert_eq!(g2["noNewPrivs"], "1");
    let map: Vec<u64> = g2["uidMap"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(map[0], 0, "{g2}");
    assert!(
        map[1] >= 1_879_048_192 && map[2] == 65536,
        "image root is not host root: {g2}"
    );
    for line in g2["cgroup"].as_array().unwrap() {
        assert!(
            line.as_str().unwrap().ends_with(":/"),
            "gen2 cgroup view: {g2}"
        );
    }

    // gen1: gVisor. Its own kernel answers /proc; the sandbox process on the host is what counts.
    let url = pier_deploy(
        &pier,
        "gen1",
        &[
            "--image",
            &image,
            "--execution-environment",
            "gen1",
            "--allow-unauthenticated",
        ],
    );
    let g1 = probe(&pier, &url);
    assert_refused(&g1, "gen1");
    let rev = pier.describe("gen1");
    assert_eq!(rev["template"]["executionEnvironment"], "gen1");
    let sandbox = runsc_sandbox(&pier.dir);
    let status = std::fs::read_to_string(format!("/proc/{sandbox}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    assert_eq!(
        field("Seccomp:"),
        "2",
        "the sandbox on the host is filtered:\n{status}"
    );
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
}

fn pier_deploy(pier: &Pier, name: &str, args: &[&str]) -> String {
    let mut all = vec!["deploy", name];
    all.extend_from_slice(args);
    let out = pier.ok(&all);
    service_url(&out)
}

/// The pid of the one runsc sandbox the server runs (from `runsc state`).
fn runsc_sandbox(data: &Path) -> u32 {
    let state = data.join("containers/state-gvisor");
    let list = std::process::Command::new("runsc")
        .arg("--root")
        .arg(&state)
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .expect("a gen1 container")
        .to_owned();
    let out = std::process::Command::new("runsc")
        .arg("--root")
        .arg(&state)
        .args(["state", &id])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["pid"].as_u64().unwrap() as u32
}

#[test]
fn real_workloads_run_under_the_shared_profile() {
    let pier = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::write(
        app.path().join("server.js"),
        "require('http').createServer((q, s) => s.end('node ' + process.version)).listen(process.env.PORT);\n",
    )
    .unwrap();
    std::fs::write(
        app.path().join("Server.java"),
        r#"import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
public class Server {
  public static void main(String[] a) throws Exception {
    HttpServer s = HttpServer.create(new InetSocketAddress(Integer.parseInt(System.getenv("PORT"))), 0);
    s.createContext("/", x -> { byte[] b = ("java " + Runtime.version() + " maxHeap=" + Runtime.getRuntime().maxMemory()).getBytes(); x.sendResponseHeaders(200, b.length); x.getResponseBody().write(b); x.close(); });
    s.start();
  }
}
"#,
    )
    .unwrap();
    let workdir = app.path().to_str().unwrap();
    for (name, command, want) in [
        (
            "py",
            "exec python3 -m http.server $PORT",
            "Directory listing",
        ),
        ("node", "exec node server.js", "node v"),
        // The JVM sizes itself from the instance's cgroup limits.
        ("java", "exec java -Xshare:off Server.java", "java 17"),
    ] {
        let url = pier_deploy(
            &pier,
            name,
            &[
                "--command",
                command,
                "--workdir",
                workdir,
                "--memory",
                "512Mi",
                "--allow-unauthenticated",
            ],
        );
        let out = pier.curl(&[&url]);
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            body.contains(want),
            "{name}: {body}\n{}",
            pier.ok(&["logs", name])
        );
        if let Some(heap) = body.split("maxHeap=").nth(1) {
            // A quarter of the instance's 512 MiB, not of the host's memory: it read its own limit.
            let heap: u64 = heap.trim().parse().unwrap();
            assert!(
                heap <= 256 << 20,
                "the JVM sized its heap from the host: {heap} bytes"
            );
        }
    }
}

#[test]
fn host_processes_are_held_to_their_limits() {
    let pier = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::write(
        app.path().join("alloc.py"),
        r#"import http.server, os, sys
n = int(os.environ["MIB"])
held = bytearray(n * 1024 * 1024)
for i in range(0, len(held), 4096): held[i] = 1
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"holding %d MiB" % n)
http.server.HTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"#,
    )
    .unwrap();
    let workdir = app.path().to_str().unwrap();
    // 10 MiB under a 64 MiB limit serves.
    let url = pier_deploy(
        &pier,
        "small",
        &[
            "--command",
            "exec python3 alloc.py",
            "--workdir",
            workdir,
            "--memory",
            "64Mi",
            "--env",
            "MIB=10",
            "--allow-unauthenticated",
        ],
    );
    assert!(String::from_utf8_lossy(&pier.curl(&[&url]).stdout).contains("holding 10 MiB"));
    // 200 MiB under the same limit is killed, and reported as out of memory.
    let err = pier.fails(&[
        "deploy",
        "big",
        "--command",
        "exec python3 alloc.py",
        "--workdir",
        workdir,
        "--memory",
        "64Mi",
        "--env",
        "MIB=200",
    ]);
    assert!(err.contains("out of memory"), "{err}");
    let describe = pier.ok(&["services", "describe", "big"]);
    assert!(describe.contains("out of memory"), "{describe}");
    // The process limit: forking past it fails inside, and the instance lives on.
    std::fs::write(
        app.path().join("forks.py"),
        r#"import http.server, os, signal
kids, err = [], "none"
try:
    while len(kids) < 5000:
        pid = os.fork()
        if pid == 0:
            signal.pause()
            os._exit(0)
        kids.append(pid)
except OSError as e:
    err = e.strerror
for k in kids:
    os.kill(k, signal.SIGKILL)
    os.waitpid(k, 0)
print("forked=%d failed=%s" % (len(kids), err), flush=True)
http.server.HTTPServer(("", int(os.environ["PORT"])), http.server.SimpleHTTPRequestHandler).serve_forever()
"#,
    )
    .unwrap();
    // Room for 4096 small processes: the process limit, not memory, is what stops them.
    let forks = pier_deploy(
        &pier,
        "forks",
        &[
            "--command",
            "exec python3 forks.py",
            "--workdir",
            workdir,
            "--memory",
            "4Gi",
            "--allow-unauthenticated",
        ],
    );
    assert_eq!(
        pier.curl(&["-o", "/dev/null", "-w", "%{http_code}", &forks])
            .stdout,
        b"200"
    );
    let logs = pier.ok(&["logs", "forks"]);
    let forked: u32 = logs
        .lines()
        .find_map(|l| l.split("forked=").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no fork count in the log:\n{logs}"));
    assert!(
        logs.contains("failed=Resource temporarily unavailable"),
        "{logs}"
    );
    assert!(
        forked < 4096,
        "the pids limit held: {forked} processes\n{logs}"
    );
    // CPU: a busy loop under --cpu 0.5 gets about half a core (measured from the cgroup's own usage).
    let cpu = pier_deploy(
        &pier,
        "cpu",
        &[
            "--command",
            "(while :; do :; done) & exec python3 -m http.server $PORT",
            "--cpu",
            "0.5",
            "--allow-unauthenticated",
        ],
    );
    let _ = cpu;
    let usage = || -> f64 {
        let pid = pier
            .ok(&["logs", "cpu"])
            .lines()
            .find_map(|l| l.split("instance started: pid ").nth(1))
            .and_then(|r| r.split(',').next())
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap();
        // utime + stime of the busy shell (a child of the instance's first process), in ticks.
        let mut total = 0.0;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
                || entry.file_name() == pid.to_string().as_str()
            {
                total += f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
            }
        }
        total
    };
    let before = usage();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let used = (usage() - before) / 100.0 / 3.0;
    assert!(used < 0.7, "--cpu 0.5 held: {used:.2} cores");
    assert!(used > 0.2, "the busy loop ran: {used:.2} cores");
}

/// A named exception loosens the filter for the one service an owner attaches it to, in every runtime;
/// a developer cannot attach it, an unknown name is refused with the fix, and an exception naming a call
/// that would leave the sandbox keeps the server from starting.
#[test]
fn named_exceptions_loosen_only_what_they_name() {
    oci::need(&["runc"]);
    let bad = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(PIER)
        .args(["server", "--data-dir"])
        .arg(bad.path())
        .args(with_free_ports(&["--seccomp-exception", "escape:unshare"]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a server with an escape hatch started"
    );
    assert!(err.contains("unshare cannot be allowed"), "{err}");

    let pier = Pier::start(&["--seccomp-exception", "profiling:perf_event_open"]);
    let work = tempfile::tempdir().unwrap();
    let image = image(work.path());
    // In a folder every user may read: a developer redeploys this service below.
    let app = visible_dir();
    let hello = visible_hello(app.path());
    for (name, how) in [
        (
            "proc",
            vec![
                "--command",
                hello.to_str().unwrap(),
                "--workdir",
                app.path().to_str().unwrap(),
            ],
        ),
        ("gen2", vec!["--image", image.as_str()]),
    ] {
        let mut args = how.clone();
        args.extend([
            "--seccomp-exception",
            "profiling",
            "--allow-unauthenticated",
        ]);
        let url = pier_deploy(&pier, name, &args);
        let p = probe(&pier, &url);
        // Allowed now, so the kernel answers the bad arguments.
        assert_eq!(p["tried"]["perf_event_open"], "EFAULT", "{name}: {p:#}");
        // Nothing else moved.
        assert_eq!(p["tried"]["bpf"], "EPERM", "{name}");
        assert_eq!(p["tried"]["unshare_user"], "EPERM", "{name}");
        let rev = pier.describe(name);
        assert_eq!(rev["template"]["seccompException"], "profiling");
    }
    // Another service keeps the profile alone.
    let plain = pier.deploy_hello("plain", &["--allow-unauthenticated"]);
    assert_eq!(probe(&pier, &plain)["tried"]["perf_event_open"], "EPERM");
    // An unknown name fails the deploy with the fix; a developer may not attach one.
    let err = pier.fails(&[
        "deploy",
        "typo",
        "--command",
        hello.to_str().unwrap(),
        "--seccomp-exception",
        "profilng",
    ]);
    assert!(err.contains("not defined on this server"), "{err}");
    let dev = pier.user("dev@example.com");
    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member=user:dev@example.com",
        "--role=roles/run.developer",
    ]);
    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member=user:dev@example.com",
        "--role=roles/iam.serviceAccountUser",
    ]);
    let err = dev.fails(&[
        "deploy",
        "devsvc",
        "--command",
        hello.to_str().unwrap(),
        "--workdir",
        "/",
        "--seccomp-exception",
        "profiling",
    ]);
    assert!(err.contains("pier.instances.loosenSandbox"), "{err}");
    // A developer redeploying the owner's service keeps its exception.
    dev.ok(&["deploy", "proc", "--env", "REDEPLOYED=1"]);
    assert_eq!(
        pier.describe("proc")["template"]["seccompException"],
        "profiling"
    );
}
