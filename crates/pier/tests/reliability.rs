//! No request dropped while the service changes: steady load from `wrk` (HTTP/1.1) and `h2load`
//! (HTTP/2) through the gateway while the service gets redeploys, traffic splits, a tag move, a rollback,
//! a `max-instances` change, and a revision scaled to zero and back; a streaming response keeps going
//! while its instance is scaled down. `bench/reliability.sh` runs the long version and prints counts.

mod common;
use common::*;

fn latest(pier: &Pier, service: &str) -> String {
    pier.describe(service)["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn no_request_is_dropped_while_the_service_changes() {
    let pier = Pier::start(&["--scale-to-zero-grace", "1s"]);
    let bin = hello_bin();
    let hello = bin.to_str().unwrap();
    let url = service_url(&pier.ok(&[
        "deploy",
        "steady",
        "--command",
        hello,
        "--env",
        "GREETING=v1",
        "--allow-unauthenticated",
    ]));
    let first = latest(&pier, "steady");
    let secs = "14";
    // Load for the whole run, over both protocols; the names resolve as the README has users set up.
    let wrk = {
        let url = url.clone();
        std::thread::spawn(move || {
            with_myhostname("wrk")
                .args([
                    "-t1",
                    "-c8",
                    "-d",
                    &format!("{secs}s"),
                    &format!("{url}/plain"),
                ])
                .output()
        })
    };
    let h2 = {
        let url = url.clone();
        std::thread::spawn(move || {
            with_myhostname("h2load")
                .args(["-c4", "-m4", "-D", secs, &format!("{url}/plain")])
                .output()
        })
    };
    std::thread::sleep(std::time::Duration::from_secs(1));

    // A stream from the first revision, through a tag, while that revision is scaled to zero.
    pier.ok(&[
        "services",
        "update-traffic",
        "steady",
        "--update-tags",
        &format!("old={first}"),
    ]);
    let tag_url = url.replacen("https://", "https://old---", 1);
    let stream = {
        let client = pier.client();
        std::thread::spawn(move || {
            rt().block_on(async move {
                let r = client
                    .get(format!("{tag_url}/stream?chunks=8&ms=500"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                r.text().await.map_err(|e| e.to_string())
            })
        })
    };
    // Redeploys.
    for v in 2..=4 {
        pier.ok(&["deploy", "steady", "--env", &format!("GREETING=v{v}")]);
    }
    let now = latest(&pier, "steady");
    // Splits, a tag move, a rollback, a max-instances change.
    pier.ok(&[
        "services",
        "update-traffic",
        "steady",
        "--to-revisions",
        &format!("{first}=50,{now}=50"),
    ]);
    pier.ok(&[
        "services",
        "update-traffic",
        "steady",
        "--to-revisions",
        &format!("{first}=10,{now}=90"),
    ]);
    pier.ok(&[
        "services",
        "update-traffic",
        "steady",
        "--update-tags",
        &format!("green={now}"),
    ]);
    pier.ok(&[
        "services",
        "update-traffic",
        "steady",
        "--update-tags",
        &format!("green={first}"),
    ]);
    pier.ok(&[
        "services",
        "update-traffic",
        "steady",
        "--to-revisions",
        &format!("{first}=100"),
    ]);
    pier.ok(&["services", "update-traffic", "steady", "--to-latest"]);
    pier.ok(&["deploy", "steady", "--max-instances", "3"]);
    // The first revision loses its traffic: once its stream ends it scales to zero; then it comes back.
    let stream = stream.join().unwrap();
    let body = stream.unwrap_or_else(|e| panic!("the stream broke: {e}"));
    assert_eq!(body.matches("chunk").count(), 8, "{body}");
    eventually(20, "the first revision at zero instances", || {
        let r = pier.ok(&["revisions", "describe", &first, "--format", "json"]);
        let v: serde_json::Value = serde_json::from_str(&r).unwrap();
        v["instances"].as_array().unwrap().is_empty().then_some(())
    });
    pier.ok(&[
        "services",
        "update-traffic",
        "steady",
        "--to-revisions",
        &format!("{first}=100"),
    ]);
    pier.ok(&["services", "update-traffic", "steady", "--to-latest"]);

    let wrk = wrk.join().unwrap().unwrap();
    let wrk_out = String::from_utf8_lossy(&wrk.stdout);
    assert!(
        wrk.status.success(),
        "{wrk_out}{}",
        String::from_utf8_lossy(&wrk.stderr)
    );
    assert!(!wrk_out.contains("Non-2xx"), "wrk saw errors:\n{wrk_out}");
    assert!(
        !wrk_out.contains("Socket errors"),
        "wrk saw socket errors:\n{wrk_out}"
    );
    let h2 = h2.join().unwrap().unwrap();
    let h2_out = String::from_utf8_lossy(&h2.stdout);
    let line = h2_out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no h2load summary:\n{h2_out}"));
    assert!(line.contains(" 0 failed, 0 errored"), "h2load: {line}");
    let status = h2_out
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or("");
    assert!(
        status.contains(" 0 3xx, 0 4xx, 0 5xx"),
        "h2load: {status}\n{h2_out}"
    );
}
