//! SIGTERM drains: requests in flight finish, then instances are stopped; nothing is left running.

mod common;
use common::*;

#[test]
fn sigterm_drains_in_flight_requests_then_stops_instances() {
    let mut pier = Pier::start(&[]);
    let url = pier.deploy_hello("drain", &["--allow-unauthenticated"]);
    let body = String::from_utf8(pier.curl(&[&url]).stdout).unwrap();
    let instance_pid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["pid"]
        .as_u64()
        .unwrap();
    let client = pier.client();
    let slow = std::thread::spawn(move || {
        rt().block_on(async move {
            let r = client
                .get(format!("{url}/sleep?ms=2000"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = pier.terminate();
    assert!(status.success(), "clean exit: {status}");
    let (code, body) = slow.join().unwrap();
    assert_eq!(code, 200, "{body}");
    let alive = std::fs::read_to_string(format!("/proc/{instance_pid}/stat"))
        .map(|s| !s.contains(") Z"))
        .unwrap_or(false);
    assert!(!alive, "the instance was stopped");
    let log = pier.server_log();
    assert!(log.contains("draining") && log.contains("stopped"), "{log}");
}

/// A stop while instances are still starting (in no pool yet) leaves nothing behind: not the instance,
/// not what it started, for a host command and a container alike.
#[test]
fn sigterm_while_instances_start_leaves_nothing_running() {
    let mut pier = Pier::start(&[]);
    let marker = format!("9{}", std::process::id() % 100_000 + 100_000);
    let host_cmd = format!("echo starting; sleep {marker}1");
    pier.ok(&["deploy", "leak", "--command", &host_cmd, "--async"]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let mut spec = common::oci::ImageSpec::busybox_httpd(&[]);
    spec.cmd = vec![format!("sleep {marker}2")];
    common::oci::build(&layout, "slow", &spec);
    pier.ok(&[
        "deploy",
        "leak-ctr",
        "--image",
        &format!("oci:{}:slow", layout.display()),
        "--async",
    ]);
    for n in 1..=2 {
        eventually(30, "the instance's child running", || {
            (!processes_matching(&format!("sleep {marker}{n}")).is_empty()).then_some(())
        });
    }
    let status = pier.terminate();
    assert!(status.success(), "clean exit: {status}");
    for n in 1..=2 {
        let left = processes_matching(&format!("sleep {marker}{n}"));
        assert!(
            left.is_empty(),
            "left running after the stop: {left:?}\n{}",
            pier.server_log()
        );
    }
}
