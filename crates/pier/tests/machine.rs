//! Faults of the machine get named, actionable errors. The server's data dir is a small tmpfs mounted in
//! the server's own mount namespace (nothing is mounted on the host); filling it makes deploys and image
//! pulls fail with "out of disk space" (507 from the API), while what already serves goes on serving;
//! freeing space heals without a restart and leaves nothing half-made. A server under a low descriptor
//! limit backs off instead of spinning and serves again once connections close.

mod common;

use std::path::Path;
use std::process::Command;

use common::oci::{self, ImageSpec};
use common::*;

/// Fills the filesystem holding `dir` with one file; returns it.
fn fill(dir: &Path) -> std::path::PathBuf {
    let f = dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "status=none"])
        .arg(format!("of={}", f.display()))
        .status()
        .unwrap();
    f
}

#[test]
fn a_full_disk_is_named_and_heals_without_a_restart() {
    oci::need(&["runc"]);
    let host = tempfile::tempdir().unwrap();
    let data = host.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mount = format!(
        "mount -t tmpfs -o size=96m tmpfs {} && exec \"$@\"",
        data.display()
    );
    let pier = Pier::start_wrapped(
        &[
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mount,
            "sh",
        ],
        host.path(),
        &data,
        &[],
    );
    let url = pier.deploy_hello("before", &["--allow-unauthenticated"]);
    let layout = host.path().join("layout");
    oci::build(&layout, "hello", &ImageSpec::hello());
    let image = format!("oci:{}:hello", layout.display());

    let filler = fill(&pier.host_path(&pier.dir));
    // A deploy: the named fault, not "internal error".
    let err = pier.fails(&[
        "deploy",
        "after",
        "--command",
        hello_bin().to_str().unwrap(),
    ]);
    assert!(err.contains("out of disk space"), "{err}");
    assert!(err.contains("pier doctor"), "{err}");
    assert!(!err.contains("internal error"), "{err}");
    // The API answers 507 Insufficient Storage.
    let token = pier.api_token();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {token}"))
        .args(["-H", "content-type: application/json", "--data"])
        .arg(format!(
            r#"{{"template":{{"command":["{}"]}}}}"#,
            hello_bin().display()
        ))
        .arg(format!(
            "{}/v1/projects/default/services/api507/revisions",
            pier.api_url
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "507");
    // An image pull fails with the same name, and leaves no partial blob behind.
    let err = pier.fails(&["deploy", "img", "--image", &image]);
    assert!(err.contains("out of disk space"), "{err}");
    let tmp_blobs = std::fs::read_dir(pier.host_path(&pier.dir.join("images/blobs/tmp")))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(tmp_blobs, 0, "a half-written blob was left");
    // What serves goes on serving, its logs dropped rather than blocking it.
    for _ in 0..20 {
        let out = pier.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{url}/plain"),
        ]);
        assert_eq!(out.stdout, b"200");
    }

    // Freed: the same deploys work, without a restart.
    std::fs::remove_file(filler).unwrap();
    pier.deploy_hello("after", &["--allow-unauthenticated"]);
    let out = pier.ok(&[
        "deploy",
        "img",
        "--image",
        &image,
        "--allow-unauthenticated",
    ]);
    assert!(out.contains("Service URL:"), "{out}");
    let list = pier.ok(&["services", "list"]);
    assert!(list.contains("after") && list.contains("img"), "{list}");
    let log = pier.server_log();
    assert!(
        log.contains("cannot write instance logs") || log.contains("out of disk space"),
        "{log}"
    );
}

/// Jiffies of CPU the process has used (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_server_backs_off_and_recovers() {
    let host = tempfile::tempdir().unwrap();
    let data = host.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let pier = Pier::start_wrapped(&["prlimit", "--nofile=300:300"], host.path(), &data, &[]);
    let url = pier.deploy_hello("fds", &["--allow-unauthenticated"]);
    // Hold more connections than the server has descriptors.
    let held: Vec<std::net::TcpStream> = (0..400)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", pier.https_port)).ok())
        .collect();
    assert!(held.len() > 300, "{} connections", held.len());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let pid = pier.pid();
    let before = cpu_ticks(pid);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    assert!(used < 50, "the accept loop spins: {used} ticks in 3 s");
    assert!(
        pier.server_log().contains("Too many open files"),
        "{}",
        pier.server_log()
    );
    drop(held);
    eventually(30, "serving again", || {
        let out = pier.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{url}/plain"),
        ]);
        (out.stdout == b"200").then_some(())
    });
}

/// A port another program holds, and a container runtime that is not installed: named at start and at
/// deploy, with the fix.
#[test]
fn a_taken_port_and_a_missing_runtime_are_named() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(PIER)
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args([
            "--https-port",
            &port,
            "--http-port",
            "0",
            "--api-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--egress",
            "none",
        ])
        .env("PIER_CONFIG", dir.path().join("cli.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("cannot listen on 0.0.0.0:{port}")) && err.contains("--https-port"),
        "{err}"
    );
    drop(taken);

    let pier = Pier::start(&["--container-runtime", "/nonexistent/runc"]);
    let err = pier.fails(&["deploy", "img", "--image", "oci:/nonexistent:latest"]);
    assert!(
        err.contains("cannot run container images") && err.contains("apt install runc"),
        "{err}"
    );
}
