//! Process runtime tests with real processes in real sandboxes: namespaces, cgroups, a seccomp filter,
//! signals and sockets. They need root, as CI runs them.

use std::fs;

use super::*;
use crate::logs::LogQuery;
use crate::network::{EgressMode, NamespaceServices, NetworkConfig};
use crate::probe::{ProbeFailure, wait_ready};
use crate::{ExitReason, Isolation};
use pier_model::{ProjectName, RevisionTemplate};
use pier_sandbox::seccomp::Policies;
use pier_sandbox::{IdRange, PierFiles};

/// No endpoints inside instances (the server's are tested end to end).
struct NoServices;

impl NamespaceServices for NoServices {
    fn attach(
        &self,
        _: &InstanceSpec,
        _: &crate::netns::NetNs,
        _: bool,
    ) -> std::io::Result<Box<dyn Send + Sync>> {
        Ok(Box::new(()))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    logs: Arc<LogStore>,
    rt: ProcessRuntime,
    installation: String,
}

fn runtime(logs: Arc<LogStore>, installation: &str, hosts: Option<PathBuf>) -> ProcessRuntime {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the process sandbox needs root: run the tests as root, as CI does"
    );
    let network = Network::new(
        NetworkConfig {
            https_port: 8443,
            http_port: 8080,
            egress: EgressMode::None,
            subnet: "10.89.0.0/16".parse().unwrap(),
            installation: installation.into(),
            private_ranges: Vec::new(),
            helper: "slirp4netns".into(),
        },
        Arc::new(NoServices),
    )
    .unwrap();
    let sandbox = Sandbox {
        view: HostView::new(
            &[],
            &PierFiles {
                hosts,
                ..Default::default()
            },
        ),
        seccomp: Arc::new(Policies::new(&[]).unwrap()),
        userns: UserNsCache::default(),
    };
    ProcessRuntime::new(ProcessConfig {
        logs,
        default_workdir: PathBuf::from("/"),
        sandbox: Some(Arc::new(sandbox)),
        allow_unsandboxed: true,
        network,
        cgroups: CgroupRoot::detect(installation),
        gate: None,
    })
}

impl Fixture {
    /// Kills what the test left running and removes the test installation's cgroups.
    async fn cleanup(self) {
        cleanup_runtime(&self.rt).await;
    }
}

async fn cleanup_runtime(rt: &ProcessRuntime) {
    let _ = rt.cleanup_leftovers().await;
    if let Some(c) = &rt.config.cgroups {
        c.remove_if_empty();
    }
}

fn fixture(name: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(LogStore::new(&dir.path().join("logs")));
    let installation = format!("test-process-{name}");
    let rt = runtime(logs.clone(), &installation, None);
    Fixture {
        _dir: dir,
        logs,
        rt,
        installation,
    }
}

const BLOCK: u32 = 1_879_048_192 + 9 * 65536;

fn spec(n: u32, command: Vec<&str>) -> InstanceSpec {
    let template = RevisionTemplate {
        command: command.into_iter().map(String::from).collect(),
        ..Default::default()
    };
    let ids = IdRange::default_range().block(9).unwrap();
    assert_eq!(ids.uid, BLOCK);
    InstanceSpec {
        id: format!("svc-00001-abc-i{n}").parse().unwrap(),
        project: ProjectName::default(),
        service: "svc".parse().unwrap(),
        revision: "svc-00001-abc".parse().unwrap(),
        template: Arc::new(template),
        extra_env: vec![],
        isolation: Isolation {
            ids: Some(ids),
            private_egress: false,
        },
    }
}

fn sh(n: u32, line: &str) -> InstanceSpec {
    spec(n, vec!["sh", "-c", line])
}

/// Live processes running as the test's instance uid.
fn instance_processes() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let zombie = status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'));
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok());
            !zombie && uid == Some(BLOCK)
        })
        .collect()
}

/// Waits (up to 5 s: signals are delivered asynchronously) until `f` holds for the instance's processes.
async fn processes_become(f: impl Fn(usize) -> bool) -> bool {
    for _ in 0..250 {
        if f(instance_processes().len()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn wait_log(logs: &LogStore, needle: &str) -> Vec<String> {
    for _ in 0..250 {
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

async fn ended(inst: &Arc<dyn Instance>) -> ExitReason {
    let mut exit = inst.exit_watch();
    tokio::time::timeout(Duration::from_secs(30), exit.wait_for(Option::is_some))
        .await
        .expect("the instance ended")
        .unwrap()
        .clone()
        .unwrap()
}

// These share one uid and the machine's cgroups: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn serves_on_port_8080_in_its_own_namespace() {
    let _one = SERIAL.lock().await;
    let f = fixture("serve");
    let inst =
        f.rt.start(sh(1, "exec python3 -m http.server $PORT"))
            .await
            .unwrap();
    let took = wait_ready(
        inst.endpoint(),
        inst.exit_watch(),
        None,
        inst.endpoint().port(),
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(took < Duration::from_secs(20));
    // The app bound 0.0.0.0:8080 in its namespace; the host's 8080 is not it.
    assert!(inst.endpoint().to_string().contains("127.0.0.1:8080"));
    inst.stop(Duration::from_secs(5)).await;
    assert_eq!(*inst.exit_watch().borrow(), Some(ExitReason::Stopped));
    assert!(
        inst.endpoint().connect().await.is_err(),
        "nothing answers after stop"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn environment_is_clean_and_the_process_is_confined() {
    let _one = SERIAL.lock().await;
    let f = fixture("env");
    let inst = f
        .rt
        .start(sh(
            1,
            "env; echo uid=$(id -u); grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t'; echo done",
        ))
        .await
        .unwrap();
    let lines = wait_log(&f.logs, "done").await;
    for want in [
        "PORT=8080",
        "K_SERVICE=svc",
        "K_REVISION=svc-00001-abc",
        "K_CONFIGURATION=svc",
        "HOME=/tmp",
        "CapEff:0000000000000000",
        "NoNewPrivs:1",
        "Seccomp:2",
    ] {
        assert!(lines.iter().any(|l| l == want), "{want} in {lines:?}");
    }
    assert!(
        lines.iter().any(|l| l == &format!("uid={BLOCK}")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("PATH=")));
    // The server's own environment (cargo sets these for tests) does not leak in.
    assert!(!lines.iter().any(|l| l.starts_with("CARGO")), "{lines:?}");
    assert_eq!(ended(&inst).await, ExitReason::Exited(0));
    f.cleanup().await;
}

#[tokio::test]
async fn an_instance_that_exits_fails_the_probe_with_its_logs() {
    let _one = SERIAL.lock().await;
    let f = fixture("exits");
    let inst =
        f.rt.start(sh(1, "echo 'cannot bind: config missing' >&2; exit 3"))
            .await
            .unwrap();
    let err = wait_ready(
        inst.endpoint(),
        inst.exit_watch(),
        None,
        inst.endpoint().port(),
        Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    assert_eq!(err, ProbeFailure::Exited(ExitReason::Exited(3)));
    wait_log(&f.logs, "config missing").await;
    assert!(
        inst.log_tail(5)
            .iter()
            .any(|l| l.contains("config missing"))
    );
    f.cleanup().await;
}

#[tokio::test]
async fn an_instance_that_never_listens_times_out() {
    let _one = SERIAL.lock().await;
    let f = fixture("never");
    let inst = f.rt.start(sh(1, "sleep 30")).await.unwrap();
    let err = wait_ready(
        inst.endpoint(),
        inst.exit_watch(),
        None,
        inst.endpoint().port(),
        Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProbeFailure::Timeout(_)));
    inst.stop(Duration::from_secs(1)).await;
    f.cleanup().await;
}

#[tokio::test]
async fn missing_and_unrunnable_commands_are_named() {
    let _one = SERIAL.lock().await;
    let f = fixture("missing");
    let err =
        f.rt.start(spec(1, vec!["/nonexistent/app"]))
            .await
            .err()
            .unwrap();
    assert!(matches!(err, RuntimeError::CommandNotFound { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/app"));
    let err =
        f.rt.start(spec(2, vec!["no-such-program-anywhere"]))
            .await
            .err()
            .unwrap();
    assert!(matches!(err, RuntimeError::CommandNotFound { .. }), "{err}");
    f.cleanup().await;
}

#[tokio::test]
async fn stop_and_leader_exit_leave_no_process() {
    let _one = SERIAL.lock().await;
    let f = fixture("stop");
    let inst =
        f.rt.start(sh(1, "setsid sleep 1000 & sleep 1000 & echo started; wait"))
            .await
            .unwrap();
    wait_log(&f.logs, "started").await;
    assert!(processes_become(|n| n >= 3).await, "sh and two sleeps");
    inst.stop(Duration::from_secs(5)).await;
    assert!(
        processes_become(|n| n == 0).await,
        "no orphans, even in another session"
    );

    let inst =
        f.rt.start(sh(2, "sleep 1000 & echo bg; sleep 0.2; exit 7"))
            .await
            .unwrap();
    wait_log(&f.logs, "bg").await;
    assert_eq!(ended(&inst).await, ExitReason::Exited(7));
    assert!(
        processes_become(|n| n == 0).await,
        "the group went with its leader"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn sigterm_ignorers_get_sigkill_after_grace() {
    let _one = SERIAL.lock().await;
    let f = fixture("term");
    let inst =
        f.rt.start(sh(
            1,
            "trap '' TERM; echo trapped; while :; do sleep 0.05; done",
        ))
        .await
        .unwrap();
    wait_log(&f.logs, "trapped").await;
    let started = std::time::Instant::now();
    inst.stop(Duration::from_millis(300)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(processes_become(|n| n == 0).await);
    wait_log(&f.logs, "sending SIGKILL").await;
    f.cleanup().await;
}

#[tokio::test]
async fn leftovers_of_a_killed_server_are_cleaned_at_next_start() {
    let _one = SERIAL.lock().await;
    let f = fixture("leftovers");
    let inst =
        f.rt.start(sh(1, "sleep 1000 & echo up; wait"))
            .await
            .unwrap();
    wait_log(&f.logs, "up").await;
    assert!(processes_become(|n| n >= 2).await);
    // A new server of the same installation finds and kills them through their cgroups.
    let rt2 = runtime(f.logs.clone(), &f.installation, None);
    assert_eq!(rt2.cleanup_leftovers().await.unwrap(), 1);
    assert!(processes_become(|n| n == 0).await);
    drop(inst);
    f.cleanup().await;
}

#[tokio::test]
async fn args_expand_and_run_without_a_shell() {
    let _one = SERIAL.lock().await;
    let f = fixture("args");
    let mut s = spec(1, vec!["echo"]);
    Arc::make_mut(&mut s.template).args = vec!["port=$(PORT)".into(), "$HOME".into()];
    let _inst = f.rt.start(s).await.unwrap();
    let lines = wait_log(&f.logs, "port=").await;
    assert!(
        lines.iter().any(|l| l == "port=8080 $HOME"),
        "no shell expansion: {lines:?}"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn instances_see_piers_hosts_file_as_etc_hosts() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    fs::write(&hosts, "169.254.169.253 hello-abc.pier.localhost\n").unwrap();
    let logs = Arc::new(LogStore::new(&dir.path().join("logs")));
    let rt = runtime(logs.clone(), "test-process-hosts", Some(hosts));
    let _inst = rt.start(sh(1, "cat /etc/hosts; echo done")).await.unwrap();
    let lines = wait_log(&logs, "done").await;
    assert!(
        lines.iter().any(|l| l.contains("hello-abc.pier.localhost")),
        "{lines:?}"
    );
    cleanup_runtime(&rt).await;
}

#[tokio::test]
async fn memory_over_the_limit_is_an_out_of_memory_exit() {
    let _one = SERIAL.lock().await;
    let f = fixture("oom");
    let mut s = sh(
        1,
        "echo allocating; exec python3 -c 'b = bytearray(200 * 1024 * 1024); import time; time.sleep(30)'",
    );
    Arc::make_mut(&mut s.template).memory = Some("64Mi".into());
    let inst = f.rt.start(s).await.unwrap();
    assert_eq!(ended(&inst).await, ExitReason::OutOfMemory);
    // A small allocation under the same limit is fine.
    let mut s = sh(
        2,
        "exec python3 -c 'b = bytearray(10 * 1024 * 1024); print(\"fine\")'",
    );
    Arc::make_mut(&mut s.template).memory = Some("64Mi".into());
    let inst = f.rt.start(s).await.unwrap();
    assert_eq!(ended(&inst).await, ExitReason::Exited(0));
    wait_log(&f.logs, "fine").await;
    f.cleanup().await;
}

#[tokio::test]
async fn unsandboxed_revisions_run_as_the_server_only_where_allowed() {
    let _one = SERIAL.lock().await;
    let f = fixture("unsandboxed");
    let mut s = sh(1, "echo uid=$(id -u); echo done");
    Arc::make_mut(&mut s.template).unsandboxed = true;
    let _inst = f.rt.start(s.clone()).await.unwrap();
    let lines = wait_log(&f.logs, "done").await;
    assert!(lines.iter().any(|l| l == "uid=0"), "{lines:?}");
    let mut strict = runtime(f.logs.clone(), &f.installation, None);
    strict.config.allow_unsandboxed = false;
    let err = strict.start(s).await.err().unwrap();
    assert!(err.to_string().contains("--allow-unsandboxed"), "{err}");
    f.cleanup().await;
    cleanup_runtime(&strict).await;
}
