//! The process runtime: each instance is the revision's command run as its own process group on the host.
//!
//! - `PORT` is a free loopback port chosen per instance; the gateway connects to `127.0.0.1:PORT`.
//! - The environment is cleared, then given `PATH`, `HOME`, `LANG`, `TZ` and similar from the server, the
//!   revision's variables, and the reserved `PORT`/`K_*` (so server secrets never leak into apps).
//! - The group leader dies with the server (`PR_SET_PDEATHSIG`); its group is recorded in the run dir so that
//!   anything it started is killed at the next start after a kill -9 of the server.
//! - Stop is SIGTERM to the whole group, a grace period, then SIGKILL; when the leader exits by itself the
//!   rest of its group is killed too, as when a container's PID 1 exits.
//! - `--cpu`/`--memory` are not enforced by this runtime (deploy a container image for limits); the
//!   instance's log says so when they are set.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use pier_model::api::LogStream;
use pier_model::{InstanceId, RevisionTemplate};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::cgroup::{CgroupRoot, InstanceCgroup};
use crate::logs::{InstanceLog, LogStore, pump};
use crate::{
    Endpoint, ExitReason, Instance, InstanceSpec, Runtime, RuntimeError, instance_argv,
    instance_env,
};

/// Variables passed from the server's environment to every instance, when set.
const PASSED_ENV: [&str; 8] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
];

/// Runs instances as host processes.
pub struct ProcessRuntime {
    logs: Arc<LogStore>,
    run_dir: PathBuf,
    base_env: Vec<(String, String)>,
    default_workdir: PathBuf,
    hosts_file: Option<std::ffi::CString>,
    cgroups: Option<CgroupRoot>,
    live: Arc<std::sync::Mutex<std::collections::HashMap<InstanceId, Tracked>>>,
}

/// How a live instance's processes are found.
#[derive(Clone)]
struct Tracked {
    leader: i32,
    cgroup: Option<Arc<InstanceCgroup>>,
}

impl Tracked {
    fn pids(&self) -> Vec<i32> {
        match &self.cgroup {
            Some(cg) => cg.pids(),
            None => peers::process_tree(self.leader),
        }
    }
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("run_dir", &self.run_dir)
            .finish_non_exhaustive()
    }
}

/// What is recorded about a running instance so a later server can clean it up.
#[derive(Serialize, Deserialize)]
struct Leftover {
    pgid: i32,
    start_ticks: u64,
    boot_id: String,
}

impl ProcessRuntime {
    /// A runtime that logs to `logs` and records running instances under `run_dir`.
    pub fn new(logs: Arc<LogStore>, run_dir: &Path) -> Result<Self, RuntimeError> {
        fs::create_dir_all(run_dir)
            .map_err(RuntimeError::io(format!("creating {}", run_dir.display())))?;
        let base_env = PASSED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        Ok(Self {
            logs,
            run_dir: run_dir.to_owned(),
            base_env,
            default_workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            hosts_file: None,
            cgroups: None,
            live: Arc::default(),
        })
    }

    /// Puts every instance in its own cgroup under `root` (see [`crate::cgroup`]).
    pub fn with_cgroups(mut self, root: Option<CgroupRoot>) -> Self {
        if root.is_none() {
            tracing::warn!(
                "cgroup v2 is not available: instances are tracked by process group only"
            );
        }
        self.cgroups = root;
        self
    }

    /// Gives every instance its own mount namespace where `path` is `/etc/hosts`, so the service hosts
    /// Pier writes there resolve inside instances. Needs root (without it, instances see the host's
    /// `/etc/hosts` and the server logs why).
    pub fn with_hosts_file(mut self, path: &Path) -> Self {
        if !nix::unistd::geteuid().is_root() {
            tracing::warn!(
                "not running as root: instances cannot get their own /etc/hosts, so service hosts may not resolve inside them"
            );
            return self;
        }
        use std::os::unix::ffi::OsStrExt;
        self.hosts_file = std::ffi::CString::new(path.as_os_str().as_bytes()).ok();
        self
    }
}

fn free_port() -> Result<u16, RuntimeError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(RuntimeError::io("finding a free port"))?;
    Ok(l.local_addr()
        .map_err(RuntimeError::io("finding a free port"))?
        .port())
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Field 22 (start time in clock ticks since boot) and field 5 (process group) of `/proc/PID/stat`.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((pgrp, start))
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn check(&self, template: &RevisionTemplate) -> Result<(), RuntimeError> {
        if template.image.is_some() {
            return Err(RuntimeError::Unsupported(
                "this revision runs a container image, which the process runtime cannot run".into(),
            ));
        }
        if template.port.is_some() {
            return Err(RuntimeError::Unsupported(
                "--port needs a container image: the process runtime gives each instance its own free PORT".into(),
            ));
        }
        if template.command.is_empty() {
            return Err(RuntimeError::Unsupported(
                "the process runtime needs a command: give --command".into(),
            ));
        }
        Ok(())
    }

    async fn start(&self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        let template = spec.template.clone();
        self.check(&template)?;
        let port = free_port()?;
        let mut env = self.base_env.clone();
        let inst_env = instance_env(&spec, port);
        env.retain(|(k, _)| !inst_env.iter().any(|(ik, _)| ik == k));
        env.extend(inst_env);
        let argv = instance_argv(&template, &env);
        let Some((program, args)) = argv.split_first() else {
            return Err(RuntimeError::Unsupported(
                "the process runtime needs a command: give --command".into(),
            ));
        };
        let workdir = template
            .working_dir
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.default_workdir.clone());
        if !workdir.is_dir() {
            return Err(RuntimeError::Unsupported(format!(
                "working directory {} does not exist: fix --workdir or create it",
                workdir.display()
            )));
        }

        let log = self
            .logs
            .instance_writer(&spec.project, &spec.service, &spec.revision, &spec.id);
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut cgroup = match &self.cgroups {
            Some(root) => Some(root.create(spec.id.as_str()).map_err(RuntimeError::io(
                format!("creating the cgroup of instance {}", spec.id),
            ))?),
            None => None,
        };
        let join_in_child = self.cgroups.as_ref().is_some_and(|r| r.joins_fast());
        let join_cgroup = if join_in_child {
            cgroup.as_mut().and_then(|c| c.take_procs_fd())
        } else {
            None
        };
        let hosts = self.hosts_file.clone();
        let server_pid = nix::unistd::getpid();
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec. It calls only prctl(2), getppid(2), write(2) on a
        // descriptor opened before the fork, unshare(2) and mount(2), which are async-signal-safe, with C
        // strings built before the fork; it allocates nothing and touches no lock shared with the parent.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // A server killed between the fork and the line above sent no signal: stop here.
                if nix::unistd::getppid() != server_pid {
                    return Err(std::io::Error::other("the server is gone"));
                }
                if let Some(fd) = &join_cgroup {
                    nix::unistd::write(fd, b"0")?;
                }
                if let Some(hosts) = &hosts {
                    use nix::mount::{MsFlags, mount};
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                    mount(
                        None::<&std::ffi::CStr>,
                        c"/",
                        None::<&std::ffi::CStr>,
                        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                        None::<&std::ffi::CStr>,
                    )?;
                    mount(
                        Some(hosts.as_c_str()),
                        c"/etc/hosts",
                        None::<&std::ffi::CStr>,
                        MsFlags::MS_BIND,
                        None::<&std::ffi::CStr>,
                    )?;
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        // The child holds its own copy of the cgroup descriptor; ours closes with the command.
        drop(cmd);
        let cgroup = cgroup.map(Arc::new);
        if spawned.is_err()
            && let Some(cg) = &cgroup
        {
            cg.destroy().await;
        }
        let mut child = spawned.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::CommandNotFound {
                program: program.clone(),
            },
            std::io::ErrorKind::PermissionDenied => RuntimeError::NotExecutable {
                program: program.clone(),
                reason: "permission denied (is it executable?)".into(),
            },
            _ => RuntimeError::NotExecutable {
                program: program.clone(),
                reason: e.to_string(),
            },
        })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        if !join_in_child && let Some(cg) = cgroup.clone() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = cg.adopt(pid) {
                    tracing::debug!(pid, "moving an instance into its cgroup failed: {e}");
                }
            });
        }
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            spec.id.clone(),
            Tracked {
                leader: pid,
                cgroup: cgroup.clone(),
            },
        );
        let state_file = self.run_dir.join(format!("{}.json", spec.id));
        // The process group is recorded too while the cgroup cannot be joined before exec: it covers what
        // the instance starts before the move.
        if (cgroup.is_none() || !join_in_child)
            && let Some((_, start_ticks)) = proc_stat(pid)
        {
            let rec = Leftover {
                pgid: pid,
                start_ticks,
                boot_id: boot_id(),
            };
            if let Ok(json) = serde_json::to_vec(&rec) {
                let _ = fs::write(&state_file, json);
            }
        }
        log.system(&format!(
            "instance started: pid {pid}, PORT={port}, command {program:?}"
        ));
        if template.cpu.is_some() || template.memory.is_some() {
            log.system("note: the process runtime does not enforce --cpu/--memory; deploy a container image for limits");
        }

        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, log.clone(), LogStream::Stdout));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, log.clone(), LogStream::Stderr));
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        {
            let log = log.clone();
            let stopping = stopping.clone();
            let state_file = state_file.clone();
            let live = self.live.clone();
            let id = spec.id.clone();
            let cg = cgroup.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                // Whatever else the leader started goes with it.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                if let Some(cg) = &cg {
                    cg.destroy().await;
                }
                let _ = fs::remove_file(&state_file);
                live.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                use std::os::unix::process::ExitStatusExt;
                let reason = match status {
                    _ if stopping.load(Ordering::SeqCst) => ExitReason::Stopped,
                    Ok(s) => match (s.code(), s.signal()) {
                        (Some(code), _) => ExitReason::Exited(code),
                        (None, Some(sig)) => ExitReason::Signaled(sig),
                        _ => ExitReason::Exited(-1),
                    },
                    Err(_) => ExitReason::Exited(-1),
                };
                log.system(&format!("instance {reason}"));
                let _ = exit_tx.send(Some(reason));
            });
        }
        Ok(Arc::new(ProcessInstance {
            id: spec.id,
            endpoint: Endpoint::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            pgid: pid,
            cgroup,
            exit: exit_rx,
            log,
            stopping,
        }))
    }

    fn peer_instance(&self, peer: SocketAddr) -> Option<InstanceId> {
        if !peer.ip().is_loopback() {
            return None;
        }
        let inode = peers::socket_inode(peer)?;
        let live: Vec<(InstanceId, Tracked)> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        live.into_iter().find_map(|(id, t)| {
            t.pids()
                .into_iter()
                .any(|pid| peers::holds_socket(pid, inode))
                .then_some(id)
        })
    }

    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError> {
        let mut killed = 0;
        // Instances already counted through their cgroup (their process group may be recorded too).
        let mut counted = std::collections::HashSet::new();
        if let Some(root) = &self.cgroups {
            for cg in root.leftovers() {
                if !cg.pids().is_empty() {
                    killed += 1;
                    counted.insert(cg.name());
                }
                cg.destroy().await;
            }
        }
        let entries = match fs::read_dir(&self.run_dir) {
            Ok(e) => e,
            Err(_) => return Ok(killed),
        };
        let boot = boot_id();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            if let Ok(rec) = fs::read(&path)
                .map_err(|_| ())
                .and_then(|b| serde_json::from_slice::<Leftover>(&b).map_err(|_| ()))
                && rec.boot_id == boot
                && rec.pgid > 1
            {
                // Kill members of the recorded group that started no earlier than its leader: a pid reused
                // by an unrelated process after the leader died cannot match both.
                let mut found = false;
                if let Ok(procs) = fs::read_dir("/proc") {
                    for p in procs.flatten() {
                        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
                        else {
                            continue;
                        };
                        if let Some((pgrp, start)) = proc_stat(pid)
                            && pgrp == rec.pgid
                            && start >= rec.start_ticks
                        {
                            found = true;
                            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
                let name = path
                    .file_stem()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if found && !counted.contains(&name) {
                    killed += 1;
                    tracing::info!(instance = ?path.file_stem(), "killed instance left by a previous server");
                }
            }
            let _ = fs::remove_file(&path);
        }
        Ok(killed)
    }
}

struct ProcessInstance {
    id: InstanceId,
    endpoint: Endpoint,
    pgid: i32,
    cgroup: Option<Arc<InstanceCgroup>>,
    exit: watch::Receiver<Option<ExitReason>>,
    log: InstanceLog,
    stopping: Arc<AtomicBool>,
}

#[async_trait]
impl Instance for ProcessInstance {
    fn id(&self) -> &InstanceId {
        &self.id
    }

    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn exit_watch(&self) -> watch::Receiver<Option<ExitReason>> {
        self.exit.clone()
    }

    fn log_tail(&self, n: usize) -> Vec<String> {
        self.log.tail(n)
    }

    async fn stop(&self, grace: Duration) {
        let group = Pid::from_raw(self.pgid);
        let cgroup = self.cgroup.clone();
        let kill_cgroup = cgroup.clone();
        crate::stop_gracefully(
            &self.exit,
            &self.stopping,
            grace,
            &self.log,
            || {
                let _ = killpg(group, Signal::SIGTERM);
                if let Some(cg) = &cgroup {
                    // Processes that left the process group are still in the cgroup.
                    cg.signal(Signal::SIGTERM);
                }
            },
            || async move {
                let _ = killpg(group, Signal::SIGKILL);
                if let Some(cg) = &kill_cgroup {
                    cg.kill();
                }
            },
        )
        .await;
    }
}

mod peers;

#[cfg(test)]
mod tests;
