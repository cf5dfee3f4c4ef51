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
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
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
    // The interrupted deploy's processes are killed at start too. The kernel may still be finishing
    // their exit when the cgroup is already empty (a task leaves its cgroup early in its exit), so
    // this waits for them to be gone rather than sampling once.
    eventually(10, "the interrupted deploy's instance to be gone", || {
        let alive: Vec<u32> = leftover
            .iter()
            .copied()
            .filter(|p| processes_matching("sleep 30").contains(p))
            .collect();
        alive.is_empty().then_some(())
    });

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

/// What one mutation did, once the CLI said it succeeded (so it is committed).
enum Committed {
    Deployed(String),
    Bound(String),
    Account(String),
}

/// kill -9 at a random instant while deploys, traffic and IAM changes run, five times over: after each
/// restart everything the CLI reported done is there, nothing is left deploying, the dead server's
/// instances are gone, and the same URLs serve.
#[test]
fn kill_9_at_random_instants_loses_nothing_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let args = fixed_ports();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut rng = seed;
    let mut next = move || {
        // xorshift: reproducible from the seed printed on failure.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let bin = hello_bin();
    let mut committed: Vec<Committed> = Vec::new();
    let mut urls: Vec<(String, String)> = Vec::new();
    for round in 0..5 {
        let mut pier = Pier::launch(tmp.path(), &args);
        // Everything committed before is still there and serves.
        for c in &committed {
            match c {
                Committed::Deployed(name) => {
                    let svc = pier.describe(name);
                    assert!(
                        svc["latestReadyRevision"].is_string(),
                        "seed {seed}: {name}: {svc}"
                    );
                }
                Committed::Bound(name) => {
                    let p = pier.ok(&["services", "get-iam-policy", name, "--format", "json"]);
                    assert!(
                        p.contains("allUsers"),
                        "seed {seed}: binding on {name} lost: {p}"
                    );
                }
                Committed::Account(name) => {
                    pier.ok(&[
                        "iam",
                        "service-accounts",
                        "describe",
                        &format!("{name}@default.iam.pier.localhost"),
                    ]);
                }
            }
        }
        for (name, url) in &urls {
            let out = pier.curl(&["-o", "/dev/null", "-w", "%{http_code}", url]);
            assert_eq!(out.stdout, b"200", "seed {seed}: {name} at {url}");
        }
        let revs = pier.ok(&["revisions", "list", "--format", "json"]);
        assert!(
            !revs.contains("\"DEPLOYING\""),
            "seed {seed}: half-made revisions: {revs}"
        );

        // Mutate on a thread while the main thread picks an instant to kill.
        let dir = pier.dir.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let bin2 = bin.clone();
        let worker = std::thread::spawn(move || {
            let run = |args: &[&str]| {
                std::process::Command::new(PIER)
                    .args(args)
                    .env("PIER_CONFIG", dir.join("cli.toml"))
                    .env("PIER_DATA_DIR", &dir)
                    .output()
                    .map(|o| {
                        (
                            o.status.success(),
                            String::from_utf8_lossy(&o.stdout).into_owned(),
                        )
                    })
                    .unwrap_or((false, String::new()))
            };
            let mut done = Vec::new();
            let mut i = 0;
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                let name = format!("r{round}-s{i}");
                let (ok, out) = run(&["deploy", &name, "--command", bin2.to_str().unwrap()]);
                if !ok {
                    break;
                }
                let url = out
                    .lines()
                    .find_map(|l| l.strip_prefix("Service URL: "))
                    .unwrap_or_default()
                    .to_owned();
                done.push((Committed::Deployed(name.clone()), Some(url)));
                let (ok, _) = run(&[
                    "services",
                    "add-iam-policy-binding",
                    &name,
                    "--member=allUsers",
                    "--role=roles/run.invoker",
                ]);
                if !ok {
                    break;
                }
                done.push((Committed::Bound(name.clone()), None));
                let account = format!("acct-r{round}-{i}");
                if !run(&["iam", "service-accounts", "create", &account]).0 {
                    break;
                }
                done.push((Committed::Account(account), None));
                i += 1;
            }
            done
        });
        let wait = 300 + next() % 2500;
        std::thread::sleep(std::time::Duration::from_millis(wait));
        // The dead server's instances, to check after the restart.
        let instances = processes_matching(bin.to_str().unwrap());
        pier.kill9();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // A service is reachable without a token once its public binding committed.
        let mut deployed = std::collections::HashMap::new();
        for (c, url) in worker.join().unwrap() {
            match (&c, url) {
                (Committed::Deployed(name), Some(url)) => {
                    deployed.insert(name.clone(), url);
                }
                (Committed::Bound(name), _) => {
                    if let Some(url) = deployed.get(name) {
                        urls.push((name.clone(), url.clone()));
                    }
                }
                _ => {}
            }
            committed.push(c);
        }
        let pier = Pier::launch(tmp.path(), &args);
        eventually(15, "the dead server's instances gone", || {
            let alive: Vec<u32> = processes_matching(bin.to_str().unwrap())
                .into_iter()
                .filter(|p| instances.contains(p))
                .collect();
            alive.is_empty().then_some(())
        });
        drop(pier);
    }
    assert!(
        committed.len() >= 5,
        "seed {seed}: too little happened to test: {}",
        committed.len()
    );
}

/// A revision that cannot be routed after a restart (its service's id block is beyond the narrowed
/// `--instance-ids`) stops neither the server nor the other services: it answers 503 with a reason.
#[test]
fn one_unroutable_service_leaves_the_others_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let args = fixed_ports();
    let mut pier = Pier::launch(tmp.path(), &args);
    let first = pier.deploy_hello("first", &["--allow-unauthenticated"]);
    let second = pier.deploy_hello("second", &["--allow-unauthenticated"]);
    assert!(pier.terminate().success());

    // One block of ids: the first service's (block 0) only.
    let mut narrowed = args.clone();
    narrowed.extend(["--instance-ids".to_owned(), "1879048192:65536".to_owned()]);
    let pier = Pier::launch(tmp.path(), &narrowed);
    let status = |url: &str| {
        let out = pier.curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", url]);
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(status(&first), "200");
    assert_eq!(status(&second), "503");
    let body = String::from_utf8(pier.curl(&["-sS", &second]).stdout).unwrap();
    assert!(body.contains("cannot be started on this server"), "{body}");
    assert!(
        pier.server_log()
            .contains("beyond the installation's range"),
        "the reason is logged"
    );
}
