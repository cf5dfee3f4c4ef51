//! The process runtime: each instance is the revision's command, run as a host process inside a sandbox
//! made from [`pier_sandbox`]'s policy, the same policy containers get.
//!
//! - **User.** The instance runs as its service's unprivileged host uid (the first id of the service's
//!   block), with no capabilities, `no_new_privs` and the seccomp profile.
//! - **Filesystem.** Its own mount namespace shows the host read-only with secrets hidden, a private
//!   `/tmp`, and the revision's working directory and command ([`pier_sandbox::fsview`]).
//! - **Network.** Its own network namespace ([`crate::network`]): the app listens on `0.0.0.0:$PORT`
//!   (8080 unless `--port`), which only the gateway reaches, through sockets opened inside.
//! - **Limits.** Its cgroups ([`crate::cgroup`]) hold `--memory`, `--cpu` (Cloud Run's defaults, 512 MiB
//!   and 1 CPU, when unset) and a process limit; an instance over its memory limit is killed and reported
//!   as out of memory. It joins them before `exec`, so nothing it starts escapes, and a server killed with
//!   -9 finds every process it left in them at the next start.
//! - **Environment.** Cleared, then `PATH`, `LANG`, `TZ` and similar from the server, `HOME=/tmp`, the
//!   revision's variables, and the reserved `PORT`/`K_*` (server secrets never leak into apps).
//! - **Stop.** SIGTERM to the whole process group, a grace period, then SIGKILL to everything in the
//!   cgroup; when the leader exits by itself the rest goes too, as when a container's PID 1 exits.
//!
//! A revision deployed `--unsandboxed` (the operator must allow it, and an owner deploy it) keeps the
//! network namespace and limits but runs as the server's user with the host's filesystem and no filter.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use pier_model::api::LogStream;
use pier_model::{InstanceId, RevisionTemplate};
use pier_sandbox::HostView;
use pier_sandbox::launch::{Exit, Launch, LaunchError, Spawned, Spawner};
use pier_sandbox::seccomp::Policies;
use pier_sandbox::userns::UserNsCache;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::cgroup::{CgroupRoot, InstanceCgroup, Limits};
use crate::logs::{InstanceLog, LogStore, pump};
use crate::network::{InstanceNet, Network};
use crate::{
    DEFAULT_CPU_MILLIS, DEFAULT_MEMORY, DEFAULT_PORT, Endpoint, ExitReason, Instance, InstanceSpec,
    PIDS_LIMIT, Runtime, RuntimeError, instance_argv, instance_env,
};

/// Variables passed from the server's environment to every instance, when set.
const PASSED_ENV: [&str; 5] = ["PATH", "LANG", "LC_ALL", "TZ", "TERM"];

/// How often a running instance's out-of-memory counter is read.
const OOM_POLL: Duration = Duration::from_millis(500);

/// The sandbox of sandboxed instances.
pub struct Sandbox {
    /// What instances see of the filesystem.
    pub view: HostView,
    /// The seccomp filters: the profile's, and the operator's named exceptions.
    pub seccomp: Arc<Policies>,
    /// Id mappings for showing the app's files.
    pub userns: UserNsCache,
}

/// Settings of the process runtime.
pub struct ProcessConfig {
    /// Where instance output goes.
    pub logs: Arc<LogStore>,
    /// The working directory when a revision names none.
    pub default_workdir: PathBuf,
    /// The sandbox; without one, only `--unsandboxed` revisions run (tests of the runtime itself).
    pub sandbox: Option<Arc<Sandbox>>,
    /// Whether `--unsandboxed` revisions may run at all (`pier server --allow-unsandboxed`).
    pub allow_unsandboxed: bool,
    /// Instance networks.
    pub network: Arc<Network>,
    /// Instance cgroups.
    pub cgroups: Option<CgroupRoot>,
}

/// Runs instances as sandboxed host processes.
pub struct ProcessRuntime {
    config: ProcessConfig,
    base_env: Vec<(String, String)>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("sandboxed", &self.config.sandbox.is_some())
            .finish_non_exhaustive()
    }
}

impl ProcessRuntime {
    /// A runtime with `config`.
    pub fn new(config: ProcessConfig) -> Self {
        let base_env = PASSED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        if config.cgroups.is_none() {
            tracing::warn!("no usable cgroups: process instances run without limits or tracking");
        }
        Self { config, base_env }
    }

    /// The limits this host cannot enforce, for messages.
    pub fn unenforced(&self) -> Vec<&'static str> {
        match &self.config.cgroups {
            Some(c) => c.enforced().missing(),
            None => vec!["memory", "cpu", "pids"],
        }
    }
}

/// Finds `program` as `execvp` would, from the instance's `PATH` and working directory.
fn resolve_program(program: &str, path: Option<&str>, workdir: &Path) -> Option<PathBuf> {
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
    };
    if program.contains('/') {
        let p = workdir.join(program);
        return runnable(&p).then_some(p);
    }
    path.unwrap_or("/usr/local/bin:/usr/bin:/bin")
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| workdir.join(d).join(program))
        .find(|p| runnable(p))
}

/// Absolute paths that exist among the words of the arguments (`python3 /srv/app/main.py`, a `sh -c`
/// line, `--config=/etc/app.toml`): what the instance is shown besides its working directory and
/// program, when its revision may see private paths.
fn mentioned_paths(argv: &[String]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for word in argv.iter().skip(1).flat_map(|a| a.split_whitespace()) {
        let word = word.trim_matches(|c| c == '\'' || c == '"' || c == ';');
        let path = word.rsplit_once('=').map_or(word, |(_, v)| v);
        if path.starts_with('/') && path.len() > 1 {
            let p = PathBuf::from(path);
            if std::fs::symlink_metadata(&p).is_ok() && !out.contains(&p) && out.len() < 16 {
                out.push(p);
            }
        }
    }
    out
}

fn cstring(s: impl AsRef<[u8]>) -> Result<CString, RuntimeError> {
    CString::new(s.as_ref().to_vec()).map_err(|_| {
        RuntimeError::Unsupported("a command, argument or variable contains a NUL byte".into())
    })
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
        if template.command.is_empty() {
            return Err(RuntimeError::Unsupported(
                "the process runtime needs a command: give --command".into(),
            ));
        }
        if template.unsandboxed && !self.config.allow_unsandboxed {
            return Err(RuntimeError::Unsupported(
                "this server does not run unsandboxed instances: deploy without --unsandboxed, or start the server with --allow-unsandboxed".into(),
            ));
        }
        if let (Some(name), Some(sb)) = (&template.seccomp_exception, &self.config.sandbox) {
            sb.seccomp
                .program(Some(name))
                .map_err(|e| RuntimeError::Unsupported(e.to_string()))?;
        }
        if !template.unsandboxed && self.config.sandbox.is_none() {
            return Err(RuntimeError::Unsupported(
                "this server cannot sandbox host processes (it is not running as root): run `pier server` as root".into(),
            ));
        }
        Ok(())
    }

    async fn start(&self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        let template = spec.template.clone();
        self.check(&template)?;
        let port = template.port.unwrap_or(DEFAULT_PORT);
        let mut env = self.base_env.clone();
        if !template.unsandboxed {
            env.push(("HOME".into(), "/tmp".into()));
        } else if let Ok(home) = std::env::var("HOME") {
            env.push(("HOME".into(), home));
        }
        let inst_env = instance_env(&spec, port);
        env.retain(|(k, _)| !inst_env.iter().any(|(ik, _)| ik == k));
        env.extend(inst_env);
        let argv = instance_argv(&template, &env);
        let Some(program) = argv.first().cloned() else {
            return Err(RuntimeError::Unsupported(
                "the process runtime needs a command: give --command".into(),
            ));
        };
        let workdir = template
            .working_dir
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.config.default_workdir.clone());
        if !workdir.is_dir() {
            return Err(RuntimeError::Unsupported(format!(
                "working directory {} does not exist: fix --workdir or create it",
                workdir.display()
            )));
        }
        let path_var = env
            .iter()
            .rev()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let resolved = resolve_program(&program, path_var, &workdir).ok_or_else(|| {
            RuntimeError::CommandNotFound {
                program: program.clone(),
            }
        })?;
        let exec_path = std::fs::canonicalize(&resolved).unwrap_or(resolved);

        let limits = Limits {
            memory: template.memory_bytes().unwrap_or(DEFAULT_MEMORY),
            cpu_millis: template.cpu_millis().unwrap_or(DEFAULT_CPU_MILLIS),
            pids: PIDS_LIMIT,
        };
        let mut cgroup = match &self.config.cgroups {
            Some(root) => Some(root.create(spec.id.as_str(), &limits).map_err(
                RuntimeError::io(format!("creating the cgroups of instance {}", spec.id)),
            )?),
            None => None,
        };
        let net = match self.config.network.make(&spec, port, None).await {
            Ok(n) => n,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.destroy().await;
                }
                return Err(e);
            }
        };
        let log = self.config.logs.instance_writer(
            &spec.project,
            &spec.service,
            &spec.revision,
            &spec.id,
        );
        let (out_r, out_w) = pier_sandbox::launch::output_pipe()
            .map_err(RuntimeError::io("making the instance's output pipes"))?;
        let (err_r, err_w) = pier_sandbox::launch::output_pipe()
            .map_err(RuntimeError::io("making the instance's output pipes"))?;
        let user = match (&template.unsandboxed, spec.isolation.ids) {
            (false, Some(ids)) => Some((ids.uid, ids.gid)),
            (false, None) => {
                return Err(RuntimeError::Unsupported(
                    "the instance has no user of its own (the service has no id block)".into(),
                ));
            }
            (true, _) => None,
        };
        let launch = Launch {
            program: cstring(exec_path.as_os_str().as_bytes())?,
            argv: argv.iter().map(cstring).collect::<Result<_, _>>()?,
            envp: env
                .iter()
                .map(|(k, v)| cstring(format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
            workdir: cstring(workdir.as_os_str().as_bytes())?,
            stdout: out_w,
            stderr: err_w,
            cgroups: cgroup
                .as_mut()
                .map(|c| c.take_procs_fds())
                .unwrap_or_default(),
            netns: Some(std::os::fd::AsRawFd::as_raw_fd(&net.ns.fd())),
            view: None,
            user,
            seccomp: None,
        };
        let sandbox = if template.unsandboxed {
            None
        } else {
            self.config.sandbox.clone()
        };
        let (wd, path, prog) = (workdir.clone(), exec_path.clone(), program.clone());
        let mentioned = mentioned_paths(&argv);
        let private = template.private_paths;
        let exception = template.seccomp_exception.clone();
        let cgroup_view = cgroup.as_ref().map(|c| c.view()).unwrap_or_default();
        let mut launch = launch;
        // Planning may fork (an id mapping) and spawning forks: on the spawner thread, off the async
        // workers, and from a thread that outlives the instance (see `Spawner`).
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = move || -> Result<Spawned, RuntimeError> {
            if let (Some(sb), Some((uid, gid))) = (sandbox, user) {
                launch.view = Some(
                    sb.view
                        .plan(
                            &wd,
                            Some(&path),
                            &mentioned,
                            private,
                            &cgroup_view,
                            uid,
                            gid,
                            &sb.userns,
                        )
                        .map_err(|e| RuntimeError::Unsupported(e.to_string()))?,
                );
                launch.seccomp = Some(
                    sb.seccomp
                        .program(exception.as_deref())
                        .map_err(|e| RuntimeError::Unsupported(e.to_string()))?
                        .clone(),
                );
            }
            pier_sandbox::launch::spawn(&launch).map_err(|e| match e {
                LaunchError::NotFound(_) => RuntimeError::CommandNotFound { program: prog },
                LaunchError::NotExecutable(_) => RuntimeError::NotExecutable {
                    program: prog,
                    reason: "permission denied (is it executable, and readable by others?)".into(),
                },
                other => RuntimeError::Unsupported(other.to_string()),
            })
        };
        let result = match Spawner::global().run(job, move |r| {
            let _ = tx.send(r);
        }) {
            Ok(()) => rx
                .await
                .map_err(|_| RuntimeError::Unsupported("the spawner thread is gone".into()))
                .and_then(|r| r),
            Err(e) => Err(RuntimeError::Unsupported(e.to_string())),
        };
        let spawned = match result {
            Ok(s) => s,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.destroy().await;
                }
                return Err(e);
            }
        };
        let pid = spawned.pid;
        log.system(&format!(
            "instance started: pid {pid}, PORT={port}, {}, memory {} MiB, cpu {}m, command {program:?}",
            match user {
                Some((uid, _)) => format!("user {uid}, sandboxed"),
                None => "unsandboxed (the server's user)".into(),
            },
            limits.memory >> 20,
            limits.cpu_millis,
        ));
        let unenforced = self.unenforced();
        if !unenforced.is_empty() {
            log.system(&format!(
                "note: this host cannot enforce these limits: {} (see `pier doctor`)",
                unenforced.join(", ")
            ));
        }
        for (r, stream) in [(out_r, LogStream::Stdout), (err_r, LogStream::Stderr)] {
            match tokio::net::unix::pipe::Receiver::from_owned_fd(r) {
                Ok(rx) => {
                    tokio::spawn(pump(rx, log.clone(), stream));
                }
                Err(e) => log.system(&format!("cannot read the instance's output: {e}")),
            }
        }
        let cgroup = cgroup.map(Arc::new);
        let (exit_tx, exit_rx) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let oom = Arc::new(AtomicBool::new(false));
        if let Some(cg) = cgroup.clone() {
            let (mut exit, log, oom) = (exit_rx.clone(), log.clone(), oom.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = exit.wait_for(Option::is_some) => return,
                        _ = tokio::time::sleep(OOM_POLL) => {}
                    }
                    if cg.oom_kills() > 0 {
                        oom.store(true, Ordering::SeqCst);
                        log.system("out of memory: the kernel killed a process over the instance's memory limit; stopping the instance (raise --memory)");
                        cg.kill();
                        return;
                    }
                }
            });
        }
        let ns = net.ns.clone();
        {
            let (log, stopping, cg, oom) =
                (log.clone(), stopping.clone(), cgroup.clone(), oom.clone());
            tokio::spawn(watch_exit(spawned, net, cg, log, stopping, oom, exit_tx));
        }
        Ok(Arc::new(ProcessInstance {
            id: spec.id,
            endpoint: Endpoint::Netns(
                ns,
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
            ),
            pgid: pid,
            cgroup,
            exit: exit_rx,
            log,
            stopping,
        }))
    }

    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError> {
        let mut killed = 0;
        if let Some(root) = &self.config.cgroups {
            for cg in root.leftovers() {
                if !cg.pids().is_empty() {
                    killed += 1;
                    tracing::info!(
                        instance = cg.name(),
                        "killed an instance outside any pool (one still starting at a stop, or left by a killed server)"
                    );
                }
                cg.destroy().await;
            }
        }
        Ok(killed)
    }
}

/// Waits for the leader's end, then takes everything else of the instance down with it.
async fn watch_exit(
    spawned: Spawned,
    net: InstanceNet,
    cgroup: Option<Arc<InstanceCgroup>>,
    log: InstanceLog,
    stopping: Arc<AtomicBool>,
    oom: Arc<AtomicBool>,
    exit_tx: watch::Sender<Option<ExitReason>>,
) {
    #[allow(unsafe_code)]
    // SAFETY: the AsyncFd owns the pidfd, which stays open and the same until it is dropped.
    let registered =
        unsafe { AsyncFd::register_with_interest(spawned.pidfd, tokio::io::Interest::READABLE) };
    let exit = match registered.map_err(|e| e.into_parts().1) {
        Ok(fd) => {
            let _ = fd.readable().await;
            pier_sandbox::launch::reap(fd.get_ref())
        }
        Err(e) => Err(e),
    };
    // Whatever else the leader started goes with it.
    let _ = killpg(Pid::from_raw(spawned.pid), Signal::SIGKILL);
    let oom = oom.load(Ordering::SeqCst) || cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
    if let Some(cg) = &cgroup {
        cg.destroy().await;
    }
    drop(net);
    let reason = match exit {
        _ if oom => ExitReason::OutOfMemory,
        _ if stopping.load(Ordering::SeqCst) => ExitReason::Stopped,
        Ok(Exit::Code(c)) => ExitReason::Exited(c),
        Ok(Exit::Signal(s)) => ExitReason::Signaled(s),
        Err(_) => ExitReason::Exited(-1),
    };
    log.system(&format!("instance {reason}"));
    let _ = exit_tx.send(Some(reason));
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

    fn note(&self, line: &str) {
        self.log.system(line);
    }

    fn usage(&self) -> Option<crate::Usage> {
        self.cgroup.as_ref()?.usage()
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

#[cfg(test)]
mod tests;
