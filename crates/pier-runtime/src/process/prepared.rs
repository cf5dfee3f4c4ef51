//! A process instance's sandbox made ahead of its process, and the process once it runs.
//!
//! [`PreparedProcess`] holds what [`super::ProcessRuntime`] made for one instance: its cgroups, its
//! network namespace with Pier's endpoints, its log pipes, and, with the runtime's gate, its process:
//! forked, inside its whole sandbox (mount namespace, user, seccomp) and waiting in the gate
//! ([`pier_sandbox::launch::gate`]), so [`PreparedProcess::start`] only lets it exec the program.
//! Without a gate the view is planned and the filter compiled, and the start forks.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use pier_model::InstanceId;
use pier_model::api::LogStream;
use pier_sandbox::launch::{Exit, Launch, LaunchError, Spawned, Spawner};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::OOM_POLL;
use crate::cgroup::{InstanceCgroup, Limits};
use crate::logs::{InstanceLog, pump};
use crate::network::InstanceNet;
use crate::{Endpoint, ExitReason, Instance, Prepared, RuntimeError};

/// How far the instance's process is made.
pub(super) enum Made {
    /// Not forked: the start forks, enters the sandbox and execs.
    Planned(Launch),
    /// Forked, in its sandbox, waiting in the gate.
    Gated(Spawned),
}

/// The runtime's error for a process that did not start.
pub(super) fn launch_error(e: LaunchError, program: String) -> RuntimeError {
    match e {
        LaunchError::NotFound(_) => RuntimeError::CommandNotFound { program },
        LaunchError::NotExecutable(_) => RuntimeError::NotExecutable {
            program,
            reason: "permission denied (is it executable, and readable by others?)".into(),
        },
        other => RuntimeError::Unsupported(other.to_string()),
    }
}

/// Forks `launch` on the spawner thread.
async fn fork(launch: Launch, program: String) -> Result<Spawned, RuntimeError> {
    on_spawner(move || pier_sandbox::launch::spawn(&launch).map_err(|e| launch_error(e, program)))
        .await
}

/// Runs `job` on the spawner thread, which outlives every instance (a child's parent-death signal
/// follows the thread that forked it: see `Spawner`), and waits for its result.
pub(super) async fn on_spawner<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    match Spawner::global().run(job, move |r| {
        let _ = tx.send(r);
    }) {
        Ok(()) => rx
            .await
            .map_err(|_| RuntimeError::Unsupported("the spawner thread is gone".into()))
            .and_then(|r| r),
        Err(e) => Err(RuntimeError::Unsupported(e.to_string())),
    }
}

/// One instance's sandbox, made, its process not yet running the program.
pub struct PreparedProcess {
    pub(super) id: InstanceId,
    pub(super) made: Made,
    /// The command as the revision names it, for messages.
    pub(super) program: String,
    pub(super) port: u16,
    pub(super) user: Option<(u32, u32)>,
    pub(super) limits: Limits,
    pub(super) cgroup: Option<InstanceCgroup>,
    pub(super) net: InstanceNet,
    pub(super) log: InstanceLog,
    /// The read ends of its stdout and stderr pipes.
    pub(super) output: (OwnedFd, OwnedFd),
    /// The limits this host cannot enforce.
    pub(super) unenforced: Vec<&'static str>,
}

#[async_trait]
impl Prepared for PreparedProcess {
    fn id(&self) -> &InstanceId {
        &self.id
    }

    async fn start(self: Box<Self>) -> Result<Arc<dyn Instance>, RuntimeError> {
        let PreparedProcess {
            id,
            made,
            program,
            port,
            user,
            limits,
            cgroup,
            net,
            log,
            output: (out_r, err_r),
            unenforced,
        } = *self;
        let prog = program.clone();
        let result = match made {
            Made::Planned(launch) => fork(launch, prog).await,
            // Opening a gate forks nothing: a blocking thread waits for the program's exec.
            Made::Gated(mut spawned) => tokio::task::spawn_blocking(move || {
                let Some(gate) = spawned.gate.take() else {
                    return Ok(spawned);
                };
                match pier_sandbox::launch::open_gate(gate) {
                    Ok(()) => Ok(spawned),
                    Err(e) => {
                        // The gate exits after a failed exec: collect it.
                        let _ = pier_sandbox::launch::reap(&spawned.pidfd);
                        Err(launch_error(e, prog))
                    }
                }
            })
            .await
            .unwrap_or_else(|e| Err(RuntimeError::Unsupported(e.to_string()))),
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
            id,
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

    async fn discard(self: Box<Self>) {
        if let Made::Gated(mut spawned) = self.made {
            // The gate reads end of file and exits: collect it.
            drop(spawned.gate.take());
            let _ = tokio::task::spawn_blocking(move || pier_sandbox::launch::reap(&spawned.pidfd))
                .await;
        }
        if let Some(cg) = &self.cgroup {
            cg.destroy().await;
        }
        tracing::debug!(instance = %self.id, "discarded a sandbox that was never started");
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
