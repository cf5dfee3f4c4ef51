//! Warm sandboxes (`pier server --warm-sandboxes`, 8 by default): after an instance of a revision
//! starts, the next instance's sandbox is made ahead of demand, and a cold start only lets the app run.
//! Checked with the real parts: the gate processes a process instance waits in, the containers runc
//! created and holds waiting, their network namespaces seen with `ss`; stop, kill -9 and restart.

mod common;

use std::process::Command;

use common::oci::{self, ImageSpec};
use common::*;

/// Pids of `server`'s children whose command line holds `needle` (`__gate`, `__container-shim`).
fn children(server: u32, needle: &str) -> Vec<u32> {
    processes_matching(needle)
        .into_iter()
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
            after.split(' ').nth(1) == Some(server.to_string().as_str())
        })
        .collect()
}

/// The value of `name` in process `pid`'s environment.
fn environ(pid: u32, name: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|b| *b == 0)
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// TCP ports listened on in the network namespace of process `pid`.
fn listening_ports(pid: u32) -> Vec<u16> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .args(["ss", "-Hltn"])
        .output()
        .expect("nsenter ss");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap()
}

fn get_json(p: &Pier, url: &str) -> serde_json::Value {
    let out = p.curl(&[url]);
    assert!(out.status.success(), "curl {url}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn at_zero(p: &Pier, service: &str) {
    eventually(30, "the service to scale to zero", || {
        (instances(p, service) == 0).then_some(())
    });
}

#[test]
fn a_process_cold_start_runs_in_the_sandbox_made_for_it_and_nothing_outlives_the_server() {
    let mut p = Pier::start(&["--scale-to-zero-grace", "200ms"]);
    // `--args ""`: the app itself, without a shell (whose child would have another pid).
    let url = p.deploy_hello("warm", &["--args", "", "--allow-unauthenticated"]);
    let revision = p.describe("warm")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    // The default (8) gives the revision a sandbox once its first instance started: a process waiting
    // in the gate, already its service's unprivileged user, in a namespace where nothing listens on
    // the app's port.
    let gate = eventually(20, "a warm sandbox", || {
        let g = children(p.pid(), "__gate");
        (g.len() == 1).then(|| g[0])
    });
    assert_eq!(
        environ(gate, "K_REVISION").as_deref(),
        Some(revision.as_str())
    );
    assert_ne!(uid_of(gate), 0, "the gate runs as the service's user");
    let ports = listening_ports(gate);
    assert!(
        !ports.contains(&8080),
        "the sandbox holds the app's port: {ports:?}"
    );

    at_zero(&p, "warm");
    let body = get_json(&p, &url);
    assert_eq!(body["revision"], revision.as_str());
    assert_eq!(
        body["pid"].as_u64(),
        Some(u64::from(gate)),
        "the cold start ran the app in the sandbox made for it"
    );
    // The next cold start gets a sandbox of its own.
    let next = eventually(20, "the next warm sandbox", || {
        children(p.pid(), "__gate").into_iter().find(|g| *g != gate)
    });
    // A sandbox whose process was killed while it waited does not fail the request: the start
    // begins again from nothing.
    at_zero(&p, "warm");
    let killed = Command::new("kill")
        .args(["-KILL", &next.to_string()])
        .status();
    assert!(killed.unwrap().success());
    let body = get_json(&p, &url);
    assert_eq!(body["revision"], revision.as_str());
    assert_ne!(body["pid"].as_u64(), Some(u64::from(next)));
    let next = eventually(20, "a warm sandbox again", || {
        children(p.pid(), "__gate")
            .into_iter()
            .find(|g| *g != next && *g != gate)
    });

    // A clean stop takes it down with everything else.
    assert!(p.terminate().success());
    assert!(
        !processes_matching("__gate").contains(&next),
        "a warm sandbox outlived its server"
    );

    // kill -9: the waiting process dies with the server.
    let args = p.args.clone();
    let mut p = Pier::launch(&p.dir.clone(), &args);
    // Sandboxes are made after a start: a request starts one.
    let url = p.describe("warm")["url"].as_str().unwrap().to_owned();
    get_json(&p, &url);
    let gate = eventually(30, "a warm sandbox after the restart", || {
        children(p.pid(), "__gate").first().copied()
    });
    p.kill9();
    eventually(10, "the warm sandbox to end with its server", || {
        (!processes_matching("__gate").contains(&gate)).then_some(())
    });
}

#[test]
fn the_budget_goes_to_the_most_recently_used_revisions_and_zero_turns_it_off() {
    let p = Pier::start(&["--scale-to-zero-grace", "200ms", "--warm-sandboxes", "1"]);
    let url_a = p.deploy_hello("a", &["--allow-unauthenticated"]);
    p.deploy_hello("b", &["--allow-unauthenticated"]);
    let rev = |s: &str| {
        p.describe(s)["latestReadyRevision"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (rev_a, rev_b) = (rev("a"), rev("b"));
    let holder = |want: &str| {
        eventually(20, &format!("the one warm sandbox to be {want}'s"), || {
            let gates = children(p.pid(), "__gate");
            let revs: Vec<String> = gates
                .iter()
                .filter_map(|g| environ(*g, "K_REVISION"))
                .collect();
            (revs == [want.to_owned()]).then(|| gates[0])
        })
    };
    // b started last: it holds the only sandbox.
    let b_gate = holder(&rev_b);
    at_zero(&p, "a");
    assert_eq!(get_json(&p, &url_a)["revision"], rev_a.as_str());
    // a's cold start made a the most recent: b's sandbox is discarded (its process gone, reaped),
    // a gets one.
    holder(&rev_a);
    eventually(10, "b's discarded sandbox to be reaped", || {
        (!std::path::Path::new(&format!("/proc/{b_gate}")).exists()).then_some(())
    });

    let off = Pier::start(&["--warm-sandboxes", "0"]);
    off.deploy_hello("cold", &["--allow-unauthenticated"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(children(off.pid(), "__gate").is_empty());
}

/// Containers runc holds for this server, with their status (`created`, `running`, `stopped`).
fn containers_by_status(dir: &std::path::Path) -> Vec<(String, String)> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(dir.join("containers/state"))
        .args(["list", "--format", "json"])
        .output()
        .expect("runc list");
    let list: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["id"].as_str().unwrap_or("").to_owned(),
                        c["status"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn created(dir: &std::path::Path) -> Vec<(String, u32)> {
    containers_by_status(dir)
        .into_iter()
        .filter(|(_, s)| s == "created")
        .map(|(id, _)| {
            let state = Command::new("runc")
                .arg("--root")
                .arg(dir.join("containers/state"))
                .args(["state", &id])
                .output()
                .unwrap();
            let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
            (id, state["pid"].as_u64().unwrap() as u32)
        })
        .collect()
}

#[test]
fn a_container_cold_start_starts_the_container_created_for_its_revision() {
    oci::need(&["runc"]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    oci::build(&layout, "v1", &ImageSpec::hello());
    oci::build(
        &layout,
        "v2",
        &ImageSpec {
            env: vec!["GREETING=two".into()],
            ..ImageSpec::hello()
        },
    );
    let mut p = Pier::start(&["--scale-to-zero-grace", "200ms"]);
    let v1 = format!("oci:{}:v1", layout.display());
    let url = service_url(&p.ok(&["deploy", "box", "--image", &v1, "--allow-unauthenticated"]));
    let rev1 = p.describe("box")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    // A container created and waiting in `runc init`, held by a shim, for this revision.
    let (id, init) = eventually(30, "a warm container", || {
        let c = created(&p.dir);
        (c.len() == 1).then(|| c[0].clone())
    });
    assert!(id.starts_with(&format!("{rev1}-")), "{id} is not {rev1}'s");
    assert!(!children(p.pid(), "__container-shim").is_empty());
    let ports = listening_ports(init);
    assert!(
        !ports.contains(&8080),
        "the sandbox holds the app's port: {ports:?}"
    );

    at_zero(&p, "box");
    let body = get_json(&p, &url);
    assert_eq!(body["revision"], rev1.as_str());
    let status: Vec<_> = containers_by_status(&p.dir)
        .into_iter()
        .filter(|(c, _)| *c == id)
        .collect();
    assert_eq!(
        status,
        vec![(id.clone(), "running".to_owned())],
        "the cold start ran in it"
    );

    // A new revision's cold start never gets the old revision's container.
    let v2 = format!("oci:{}:v2", layout.display());
    p.ok(&["deploy", "box", "--image", &v2]);
    let rev2 = p.describe("box")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    let (id2, _) = eventually(30, "the new revision's warm container", || {
        created(&p.dir)
            .into_iter()
            .find(|(c, _)| c.starts_with(&format!("{rev2}-")))
    });
    at_zero(&p, "box");
    let body = get_json(&p, &url);
    assert_eq!(body["revision"], rev2.as_str());
    assert_eq!(body["greeting"], "two");
    assert!(
        containers_by_status(&p.dir).contains(&(id2.clone(), "running".to_owned())),
        "{:?}",
        containers_by_status(&p.dir)
    );

    // kill -9: the waiting container is killed by its shim; the next start deletes what is left.
    let waiting = eventually(30, "a warm container", || created(&p.dir).first().cloned());
    p.kill9();
    eventually(10, "the shims to end the waiting container", || {
        (!std::path::Path::new(&format!("/proc/{}", waiting.1)).exists()
            || processes_matching("runc init")
                .iter()
                .all(|p| *p != waiting.1))
        .then_some(())
    });
    let args = p.args.clone();
    let mut p = Pier::launch(&p.dir.clone(), &args);
    eventually(30, "the leftovers to be deleted", || {
        (!containers_by_status(&p.dir)
            .iter()
            .any(|(c, _)| *c == waiting.0))
        .then_some(())
    });
    // A clean stop leaves no container, created or running, and no shim.
    let url = p.describe("box")["url"].as_str().unwrap().to_owned();
    get_json(&p, &url);
    eventually(30, "a warm container after the restart", || {
        created(&p.dir).first().cloned()
    });
    assert!(p.terminate().success());
    assert!(
        containers_by_status(&p.dir).is_empty(),
        "{:?}",
        containers_by_status(&p.dir)
    );
    let state = p.dir.join("containers/state");
    let shims: Vec<u32> = processes_matching("__container-shim")
        .into_iter()
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(state.to_str().unwrap())
        })
        .collect();
    assert!(shims.is_empty(), "shims outlived the server: {shims:?}");
}
