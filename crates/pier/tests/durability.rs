//! kill -9 of the server loses no committed deploy: on restart the same revisions serve at the same URLs,
//! instances the dead server left are cleaned up, and a deploy it did not finish is marked failed.

mod common;
use common::*;

fn fixed_ports() -> Vec<String> {
    vec![
        "--https-port".into(),
        free_port().to_string(),
        "--http-port".into(),
        free_port().to_string(),
        "--api-addr".into(),
        format!("127.0.0.1:{}", free_port()),
    ]
}

#[test]
fn kill_9_loses_nothing_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let args = fixed_ports();
    let mut pier = Pier::launch(tmp.path(), &args);
    let url = pier.deploy_hello(
        "keep",
        &["--env", "GREETING=kept", "--allow-unauthenticated"],
    );
    pier.deploy_hello("other", &["--tag", "blue"]);
    let before = pier.describe("keep");
    let body = String::from_utf8(pier.curl(&[&url]).stdout).unwrap();
    let old_pid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;

    // A deploy that has not finished when the server dies.
    let bin = hello_bin();
    let out = pier.ok(&[
        "deploy",
        "keep",
        "--async",
        "--command",
        &format!("sleep 30; exec {}", bin.display()),
    ]);
    assert!(out.contains("is deploying"), "{out}");
    // Its instance runs (the sandboxed `sh` and the `sleep` it forked) when the server dies.
    let leftover = eventually(10, "the deploy's sleep to start", || {
        let found = processes_matching("sleep 30");
        (found.len() >= 2).then_some(found)
    });

    pier.kill9();
    let pier = Pier::launch(tmp.path(), &args);

    // The old instance (an orphan of the killed server) is gone.
    eventually(10, "orphan cleanup", || {
        let alive = std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false);
        (!alive).then_some(())
    });
    let alive: Vec<u32> = leftover
        .iter()
        .copied()
        .filter(|p| processes_matching("sleep 30").contains(p))
        .collect();
    assert!(
        alive.is_empty(),
        "the interrupted deploy's instance is gone: {alive:?}"
    );

    let after = pier.describe("keep");
    assert_eq!(after["url"], before["url"], "same URL");
    assert_eq!(
        after["latestReadyRevision"], before["latestReadyRevision"],
        "same revision"
    );
    let body = String::from_utf8(pier.curl(&[&url]).stdout).unwrap();
    assert!(body.contains("\"greeting\":\"kept\""), "{body}");
    let revs = pier.ok(&["revisions", "list", "--service", "keep", "--format", "json"]);
    let revs: serde_json::Value = serde_json::from_str(&revs).unwrap();
    assert_eq!(revs[0]["state"], "FAILED");
    assert!(
        revs[0]["message"]
            .as_str()
            .unwrap()
            .contains("server stopped")
    );
    // Tags survive too.
    let other = pier.describe("other");
    let tags: Vec<&serde_json::Value> = other["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.get("tag"))
        .collect();
    assert_eq!(tags, vec!["blue"]);
}
