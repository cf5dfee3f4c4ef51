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
