//! A deploy must prove its revision before traffic moves; a failed one leaves the previous revision
//! serving, and moving traffic drops no request in flight.

mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Requests `url` in a loop on a thread, counting answers that are not 200 with the expected greeting.
struct Prober {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    bad: Arc<std::sync::Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(pier: &Pier, url: &str, want: &'static str) -> Self {
        let client = pier.client();
        let url = url.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, b) = (stop.clone(), ok.clone(), bad.clone());
        let handle = std::thread::spawn(move || {
            rt().block_on(async move {
                while !s.load(Ordering::SeqCst) {
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let body = r.text().await.unwrap_or_default();
                            if body.contains(want) {
                                o.fetch_add(1, Ordering::SeqCst);
                            } else {
                                b.lock().unwrap().push(body);
                            }
                        }
                        Ok(r) => b.lock().unwrap().push(format!("status {}", r.status())),
                        Err(e) => b.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        });
        Self {
            stop,
            ok,
            bad,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap();
        (
            self.ok.load(Ordering::SeqCst),
            self.bad.lock().unwrap().clone(),
        )
    }
}

#[test]
fn failed_deploys_leave_the_previous_revision_serving() {
    let pier = Pier::start(&["--startup-timeout", "2s"]);
    let url = pier.deploy_hello("api", &["--env", "GREETING=one", "--allow-unauthenticated"]);
    let first = pier.describe("api")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    let prober = Prober::start(&pier, &url, "\"greeting\":\"one\"");

    let cases: [(&[&str], &str); 4] = [
        (&["--command", "/nonexistent/app"], "not found"),
        (
            &["--command", "echo 'config missing' >&2; exit 3"],
            "exited with status 3",
        ),
        (
            &["--command", "sleep 600"],
            "did not listen on PORT within 2s",
        ),
        (
            &["--command", "definitely-not-a-command-xyz"],
            "exited with status 127",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["deploy", "api"];
        args.extend_from_slice(flags);
        let err = pier.fails(&args);
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(err.contains("previous revision"), "{err}");
        let svc = pier.describe("api");
        assert_eq!(
            svc["latestReadyRevision"],
            first.as_str(),
            "traffic never moved"
        );
        assert_eq!(svc["ready"], false);
        assert!(svc["message"].as_str().unwrap().contains("failed"), "{svc}");
    }
    // The failing command's own words reach the user.
    let err = pier.fails(&[
        "deploy",
        "api",
        "--command",
        "echo 'config missing' >&2; exit 3",
    ]);
    assert!(err.contains("config missing"), "{err}");
    // The list shows both facts: the service serves, and its latest revision is not ready.
    let list = pier.ok(&["services", "list"]);
    assert!(list.contains("serving; latest revision api-00"), "{list}");

    let (ok, bad) = prober.finish();
    assert!(ok > 0, "the probe ran");
    assert!(
        bad.is_empty(),
        "requests failed during bad deploys: {bad:?}"
    );
    let revs = pier.ok(&["revisions", "list", "--service", "api"]);
    assert_eq!(revs.matches("Failed").count(), 5, "{revs}");

    // A private service whose first deploy fails still has its URL: refused to strangers, 503 (no
    // ready revision) to its owner; never a 404 that says nothing is deployed.
    let out = pier.cli(&["deploy", "fresh", "--command", "exit 3"]);
    assert!(!out.status.success());
    let url = pier.describe("fresh")["url"].as_str().unwrap().to_owned();
    let code = |extra: &[&str]| {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        args.extend_from_slice(extra);
        String::from_utf8_lossy(&pier.curl(&args).stdout).into_owned()
    };
    assert_eq!(code(&[&url]), "403");
    let auth = format!("Authorization: Bearer {}", pier.token());
    assert_eq!(code(&["-H", &auth, &url]), "503");
}

#[test]
fn traffic_moves_only_once_the_new_revision_is_ready() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello(
        "slow",
        &["--env", "GREETING=one", "--allow-unauthenticated"],
    );
    let bin = hello_bin();
    // Record which revision answers each request, in order, while v2 (slow to start) deploys.
    let client = pier.client();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = std::thread::spawn({
        let (url, stop) = (url.clone(), stop.clone());
        move || {
            rt().block_on(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = client.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let body = r.text().await.unwrap();
                    seen.push(if body.contains("\"greeting\":\"one\"") {
                        1
                    } else {
                        2
                    });
                }
                seen
            })
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    pier.ok(&[
        "deploy",
        "slow",
        "--command",
        &format!("sleep 1.5; exec {}", bin.display()),
        "--env",
        "GREETING=two",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let seen = seen.join().unwrap();
    let ones = seen.iter().take_while(|g| **g == 1).count();
    assert!(ones > 5, "v1 kept serving while v2 started: {ones}");
    assert!(
        seen[ones..].iter().all(|g| *g == 2),
        "once v2 took over, v1 never answered again"
    );
    assert!(seen.len() > ones, "v2 serves after the deploy");
}

#[test]
fn moving_traffic_drops_no_request_in_flight() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello(
        "mover",
        &["--env", "GREETING=one", "--allow-unauthenticated"],
    );
    let client = pier.client();
    let slow = std::thread::spawn({
        let url = url.clone();
        move || {
            rt().block_on(async move {
                let r = client
                    .get(format!("{url}/sleep?ms=3000"))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    pier.deploy_hello("mover", &["--env", "GREETING=two"]);
    let first = pier.ok(&[
        "revisions",
        "list",
        "--service",
        "mover",
        "--format",
        "json",
    ]);
    let revs: serde_json::Value = serde_json::from_str(&first).unwrap();
    let old = revs[1]["name"].as_str().unwrap().to_owned();
    // Route everything back and forth while the slow request is still running.
    pier.ok(&[
        "services",
        "update-traffic",
        "mover",
        "--to-revisions",
        &format!("{old}=100"),
    ]);
    pier.ok(&["services", "update-traffic", "mover", "--to-latest"]);
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("\"greeting\":\"one\""),
        "served by the old revision: {body}"
    );
}
