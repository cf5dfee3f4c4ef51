//! On-demand instances: scale to zero after the idle grace, cold start on the next request, min-instances
//! kept warm, concurrency as a hard limit, and a burst from zero served without errors.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn idle_services_scale_to_zero_and_cold_start_again() {
    let pier = Pier::start(&["--scale-to-zero-grace", "1s"]);
    let url = pier.deploy_hello("idle", &["--allow-unauthenticated"]);
    let first = pier.curl(&[&url]);
    let pid1: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    eventually(20, "scale to zero", || {
        (instances(&pier, "idle") == 0).then_some(())
    });
    let pid1 = pid1["pid"].as_u64().unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid1}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid1}/stat"))
                .unwrap_or_default()
                .contains(") Z"),
        "the instance process is gone"
    );
    // The next request is held while a new instance starts, then served.
    let again = pier.curl(&["-w", "\n%{http_code}", &url]);
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.ends_with("200"), "{text}");
    let logs = pier.ok(&["logs", "idle"]);
    assert_eq!(logs.matches("instance started").count(), 2, "{logs}");
}

#[test]
fn min_instances_stay_warm() {
    let pier = Pier::start(&["--scale-to-zero-grace", "500ms"]);
    pier.deploy_hello("warm", &["--min-instances", "2", "--allow-unauthenticated"]);
    eventually(20, "two warm instances", || {
        (instances(&pier, "warm") == 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(instances(&pier, "warm"), 2, "kept past the idle grace");
}

#[test]
fn concurrency_is_a_hard_limit_and_full_revisions_answer_429() {
    let pier = Pier::start(&["--pending-timeout", "1s"]);
    let url = pier.deploy_hello(
        "one-at-a-time",
        &[
            "--concurrency",
            "1",
            "--max-instances",
            "1",
            "--allow-unauthenticated",
        ],
    );
    let client = pier.client();
    let (statuses, bodies) = rt().block_on(async {
        let slow = |ms: u64| {
            let c = client.clone();
            let u = format!("{url}/sleep?ms={ms}");
            tokio::spawn(async move {
                let r = c.get(u).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        };
        let a = slow(3000);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b = slow(10);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        (vec![a.0, b.0], vec![a.1, b.1])
    });
    assert_eq!(statuses, vec![200, 429], "{bodies:?}");
    assert!(bodies[1].contains("no available instance"), "{}", bodies[1]);
    assert!(bodies[1].contains("--max-instances"), "says what to do");
}

#[test]
fn a_burst_from_zero_is_served_without_errors() {
    let pier = Pier::start(&["--scale-to-zero-grace", "1s"]);
    let url = pier.deploy_hello(
        "burst",
        &[
            "--concurrency",
            "10",
            "--max-instances",
            "5",
            "--allow-unauthenticated",
        ],
    );
    // Let the deploy's instance go, so the burst starts from zero.
    eventually(20, "scale to zero", || {
        (instances(&pier, "burst") == 0).then_some(())
    });
    let rev = pier.describe("burst")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = pier.client();
    let started = Instant::now();
    let results = rt().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let c = client.clone();
            let u = format!("{url}/sleep?ms=50");
            tasks.push(tokio::spawn(async move {
                c.get(u)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let errors: Vec<_> = results.iter().filter(|s| **s != 200).collect();
    assert!(
        errors.is_empty(),
        "{} of 200 failed: {errors:?}",
        errors.len()
    );
    let logs = pier.ok(&["logs", "burst", "--limit", "1000"]);
    // One instance proved the deploy; the burst started the others.
    let started_instances = logs.matches("instance started").count() - 1;
    assert!(
        (2..=5).contains(&started_instances),
        "the burst scaled out within max-instances: {started_instances} instances of {rev} in {:?}",
        started.elapsed()
    );
}
