//! Process runtime tests with real processes, signals and sockets.

use super::*;
use crate::logs::LogQuery;
use crate::probe::{ProbeFailure, wait_ready};
use pier_model::{ProjectName, RevisionTemplate};

struct Fixture {
    _dir: tempfile::TempDir,
    logs: Arc<LogStore>,
    rt: ProcessRuntime,
    run_dir: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(LogStore::new(&dir.path().join("logs")));
    let run_dir = dir.path().join("run");
    let rt = ProcessRuntime::new(logs.clone(), &run_dir).unwrap();
    Fixture {
        _dir: dir,
        logs,
        rt,
        run_dir,
    }
}

fn spec(n: u32, command: Vec<&str>) -> InstanceSpec {
    let template = RevisionTemplate {
        command: command.into_iter().map(String::from).collect(),
        ..Default::default()
    };
    InstanceSpec {
        id: format!("svc-00001-abc-i{n}").parse().unwrap(),
        project: ProjectName::default(),
        service: "svc".parse().unwrap(),
        revision: "svc-00001-abc".parse().unwrap(),
        template: Arc::new(template),
        extra_env: vec![],
    }
}

fn sh(n: u32, line: &str) -> InstanceSpec {
    spec(n, vec!["sh", "-c", line])
}

/// Live (not zombie) pids whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(g, _)| g == pgid))
        .filter(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        })
        .collect()
}

/// Waits (up to 5 s: signals are delivered asynchronously) until `f` holds for the group.
async fn group_becomes(pgid: i32, f: impl Fn(usize) -> bool) -> bool {
    for _ in 0..250 {
        if f(group_members(pgid).len()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn pid_of(logs: &LogStore) -> i32 {
    let lines = logs
        .read(
            &ProjectName::default(),
            &"svc".parse().unwrap(),
            &LogQuery::default(),
        )
        .unwrap();
    let started = lines
        .iter()
        .find(|l| l.message.starts_with("instance started"))
        .unwrap();
    started.message["instance started: pid ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn wait_log(logs: &LogStore, needle: &str) -> Vec<String> {
    for _ in 0..200 {
        let lines: Vec<String> = logs
            .read(
                &ProjectName::default(),
                &"svc".parse().unwrap(),
                &LogQuery::default(),
            )
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        if lines.iter().any(|l| l.contains(needle)) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("log never showed {needle:?}");
}

#[tokio::test]
async fn serves_on_port_and_becomes_ready() {
    let f = fixture();
    let inst =
        f.rt.start(sh(1, "exec python3 -m http.server $PORT --bind 127.0.0.1"))
            .await
            .unwrap();
    let took = wait_ready(inst.endpoint(), inst.exit_watch(), Duration::from_secs(20))
        .await
        .unwrap();
    assert!(took < Duration::from_secs(20));
    inst.stop(Duration::from_secs(5)).await;
    assert_eq!(*inst.exit_watch().borrow(), Some(ExitReason::Stopped));
    // The endpoint no longer answers.
    assert!(inst.endpoint().connect().await.is_err());
}

#[tokio::test]
async fn environment_is_clean_with_reserved_variables() {
    let f = fixture();
    let inst = f.rt.start(sh(1, "env; echo done")).await.unwrap();
    let lines = wait_log(&f.logs, "done").await;
    assert!(lines.iter().any(|l| l.starts_with("PORT=")));
    assert!(lines.iter().any(|l| l == "K_SERVICE=svc"));
    assert!(lines.iter().any(|l| l == "K_REVISION=svc-00001-abc"));
    assert!(lines.iter().any(|l| l == "K_CONFIGURATION=svc"));
    assert!(lines.iter().any(|l| l.starts_with("PATH=")));
    // The server's own environment (cargo sets these for tests) does not leak in.
    assert!(!lines.iter().any(|l| l.starts_with("CARGO")), "{lines:?}");
    let mut exit = inst.exit_watch();
    exit.wait_for(Option::is_some).await.unwrap();
    assert_eq!(*exit.borrow(), Some(ExitReason::Exited(0)));
}

#[tokio::test]
async fn an_instance_that_exits_fails_the_probe_with_its_logs() {
    let f = fixture();
    let inst =
        f.rt.start(sh(1, "echo 'cannot bind: config missing' >&2; exit 3"))
            .await
            .unwrap();
    let err = wait_ready(inst.endpoint(), inst.exit_watch(), Duration::from_secs(20))
        .await
        .unwrap_err();
    assert_eq!(err, ProbeFailure::Exited(ExitReason::Exited(3)));
    assert!(err.to_string().contains("exited with status 3"));
    // The pump may lag the exit by a moment.
    wait_log(&f.logs, "config missing").await;
    assert!(
        inst.log_tail(5)
            .iter()
            .any(|l| l.contains("config missing"))
    );
}

#[tokio::test]
async fn an_instance_that_never_listens_times_out() {
    let f = fixture();
    let inst = f.rt.start(sh(1, "sleep 30")).await.unwrap();
    let err = wait_ready(
        inst.endpoint(),
        inst.exit_watch(),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProbeFailure::Timeout(_)));
    assert!(err.to_string().contains("0.0.0.0:$PORT"));
    inst.stop(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn missing_commands_are_named() {
    let f = fixture();
    let err =
        f.rt.start(spec(1, vec!["/nonexistent/app"]))
            .await
            .err()
            .unwrap();
    assert!(matches!(err, RuntimeError::CommandNotFound { .. }));
    assert!(err.to_string().contains("/nonexistent/app"));
    let plain = f._dir.path().join("not-executable");
    fs::write(&plain, "data").unwrap();
    let err =
        f.rt.start(spec(2, vec![plain.to_str().unwrap()]))
            .await
            .err()
            .unwrap();
    assert!(err.to_string().contains("cannot be run"), "{err}");
}

#[tokio::test]
async fn stop_kills_the_whole_group() {
    let f = fixture();
    let inst =
        f.rt.start(sh(1, "sleep 1000 & sleep 1000 & echo started; wait"))
            .await
            .unwrap();
    wait_log(&f.logs, "started").await;
    let pid = pid_of(&f.logs);
    assert!(group_becomes(pid, |n| n >= 3).await, "sh and two sleeps");
    inst.stop(Duration::from_secs(5)).await;
    assert!(group_becomes(pid, |n| n == 0).await, "no orphans");
}

#[tokio::test]
async fn sigterm_ignorers_get_sigkill_after_grace() {
    let f = fixture();
    let inst =
        f.rt.start(sh(
            1,
            "trap '' TERM; echo trapped; while :; do sleep 0.05; done",
        ))
        .await
        .unwrap();
    wait_log(&f.logs, "trapped").await;
    let pid = pid_of(&f.logs);
    let started = std::time::Instant::now();
    inst.stop(Duration::from_millis(300)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(group_becomes(pid, |n| n == 0).await);
    wait_log(&f.logs, "sending SIGKILL").await;
}

#[tokio::test]
async fn leader_exit_takes_its_group_along() {
    let f = fixture();
    let inst =
        f.rt.start(sh(1, "sleep 1000 & echo bg; sleep 0.2; exit 7"))
            .await
            .unwrap();
    wait_log(&f.logs, "bg").await;
    let pid = pid_of(&f.logs);
    let mut exit = inst.exit_watch();
    exit.wait_for(Option::is_some).await.unwrap();
    assert_eq!(*exit.borrow(), Some(ExitReason::Exited(7)));
    assert!(group_becomes(pid, |n| n == 0).await);
}

#[tokio::test]
async fn leftovers_of_a_killed_server_are_cleaned_at_next_start() {
    let f = fixture();
    let inst =
        f.rt.start(sh(1, "sleep 1000 & echo up; wait"))
            .await
            .unwrap();
    wait_log(&f.logs, "up").await;
    let pid = pid_of(&f.logs);
    assert_eq!(
        fs::read_dir(&f.run_dir).unwrap().count(),
        1,
        "state recorded"
    );
    // A new server (same run dir) finds and kills them.
    let rt2 = ProcessRuntime::new(f.logs.clone(), &f.run_dir).unwrap();
    assert_eq!(rt2.cleanup_leftovers().await.unwrap(), 1);
    assert!(group_becomes(pid, |n| n == 0).await);
    assert_eq!(fs::read_dir(&f.run_dir).unwrap().count(), 0);
    drop(inst);
}

#[tokio::test]
async fn args_expand_and_run_without_a_shell() {
    let f = fixture();
    let mut s = spec(1, vec!["echo"]);
    Arc::make_mut(&mut s.template).args = vec!["port=$(PORT)".into(), "$HOME".into()];
    let _inst = f.rt.start(s).await.unwrap();
    let lines = wait_log(&f.logs, "port=").await;
    let line = lines.iter().find(|l| l.starts_with("port=")).unwrap();
    assert!(
        line.parse::<String>().unwrap().ends_with(" $HOME"),
        "no shell expansion: {line}"
    );
    assert!(
        line["port=".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse::<u16>()
            .is_ok()
    );
}

#[tokio::test]
async fn instances_see_piers_hosts_file_as_etc_hosts() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    fs::write(&hosts, "127.0.0.1 api-abc123.pier.localhost\n").unwrap();
    let logs = Arc::new(LogStore::new(&dir.path().join("logs")));
    let rt = ProcessRuntime::new(logs.clone(), &dir.path().join("run"))
        .unwrap()
        .with_hosts_file(&hosts);
    let _inst = rt
        .start(sh(1, "getent hosts api-abc123.pier.localhost; echo done"))
        .await
        .unwrap();
    let lines = wait_log(&logs, "done").await;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("127.0.0.1") && l.contains("api-abc123.pier.localhost")),
        "{lines:?}"
    );
    // The host's own /etc/hosts is untouched.
    assert!(
        !fs::read_to_string("/etc/hosts")
            .unwrap()
            .contains("api-abc123")
    );
}

#[tokio::test]
async fn connections_are_traced_to_the_instance_that_opened_them() {
    let f = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let inst = f
        .rt
        .start(sh(
            1,
            &format!("exec python3 -c \"import socket,time; s=socket.create_connection(('127.0.0.1',{port})); time.sleep(30)\""),
        ))
        .await
        .unwrap();
    let (_sock, peer) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.rt.peer_instance(peer), Some(inst.id().clone()));
    // A connection from this test process is nobody's instance.
    let mine = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (_s2, peer2) = listener.accept().await.unwrap();
    assert_eq!(peer2, mine.local_addr().unwrap());
    assert_eq!(f.rt.peer_instance(peer2), None);
    inst.stop(Duration::from_secs(1)).await;
}

fn cgroup_fixture(name: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(LogStore::new(&dir.path().join("logs")));
    let run_dir = dir.path().join("run");
    let root = crate::cgroup::CgroupRoot::detect(name)
        .expect("cgroup v2 is not available or not writable here");
    let rt = ProcessRuntime::new(logs.clone(), &run_dir)
        .unwrap()
        .with_cgroups(Some(root));
    Fixture {
        _dir: dir,
        logs,
        rt,
        run_dir,
    }
}

/// Live processes whose command line contains `needle`.
fn alive(needle: &str) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            String::from_utf8_lossy(&cmd)
                .replace('\0', " ")
                .contains(needle)
                && !stat.contains(") Z")
        })
        .collect()
}

#[tokio::test]
async fn cgroups_catch_processes_that_leave_the_group() {
    let f = cgroup_fixture("test-process-escape");
    let inst =
        f.rt.start(sh(1, "setsid sleep 1234.5 & echo forked; sleep 1000"))
            .await
            .unwrap();
    wait_log(&f.logs, "forked").await;
    for _ in 0..100 {
        if !alive("sleep 1234.5").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive("sleep 1234.5").is_empty(),
        "the escaped process runs"
    );
    inst.stop(Duration::from_secs(5)).await;
    for _ in 0..100 {
        if alive("sleep 1234.5").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        alive("sleep 1234.5").is_empty(),
        "even a setsid child is stopped"
    );
}

#[tokio::test]
async fn cgroup_leftovers_are_cleaned_at_next_start() {
    let name = format!("test-leftovers-{}", std::process::id());
    let f = cgroup_fixture(&name);
    let inst =
        f.rt.start(sh(1, "setsid sleep 2345.5 & echo up; sleep 1000"))
            .await
            .unwrap();
    wait_log(&f.logs, "up").await;
    // As if the server died: a new runtime on the same cgroup root finds and kills it all.
    let root = crate::cgroup::CgroupRoot::detect(&name).unwrap();
    let rt2 = ProcessRuntime::new(f.logs.clone(), &f.run_dir)
        .unwrap()
        .with_cgroups(Some(root.clone()));
    assert_eq!(rt2.cleanup_leftovers().await.unwrap(), 1);
    for _ in 0..100 {
        if alive("sleep 2345.5").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alive("sleep 2345.5").is_empty());
    assert!(root.leftovers().is_empty());
    drop(inst);
    root.remove_if_empty();
}
