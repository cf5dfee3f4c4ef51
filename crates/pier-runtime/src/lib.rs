//! Runs revision instances. The [`Runtime`] trait is the seam between Pier and whatever executes an
//! instance: [`process::ProcessRuntime`] runs the revision's command as a host process group (the embedded
//! default); the OCI container runtime plugs in behind the same trait.
//!
//! Every runtime keeps the same contract, Cloud Run's container contract:
//!
//! - the instance gets `PORT`, `K_SERVICE`, `K_REVISION`, `K_CONFIGURATION` (reserved, set by Pier);
//! - it is ready when it accepts a TCP connection on `PORT` ([`probe::wait_ready`]);
//! - stopping sends SIGTERM, waits the grace period (10 s), then SIGKILLs everything the instance started;
//! - its stdout and stderr go, line by line with timestamps, to the [`logs::LogStore`];
//! - what a killed server left behind is removed at the next start ([`Runtime::cleanup_leftovers`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pier_model::{InstanceId, ProjectName, RevisionName, RevisionTemplate, ServiceName};
use thiserror::Error;
use tokio::sync::watch;

pub mod bridge;
pub mod cgroup;
#[cfg(feature = "test-double")]
pub mod double;
pub mod logs;
pub mod netns;
pub mod network;
pub mod probe;
pub mod process;
pub mod resolver;
pub mod usernet;

/// Grace period between SIGTERM and SIGKILL, as on Cloud Run.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long an instance has to start listening on PORT (Cloud Run's startup probe limit).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(240);
/// Memory limit when the revision sets none (Cloud Run's default).
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// CPU limit in millicores when the revision sets none (Cloud Run's default).
pub const DEFAULT_CPU_MILLIS: u32 = 1000;
/// Most processes (and threads) one instance may have.
pub const PIDS_LIMIT: u64 = 4096;
/// The port when the revision sets none (Cloud Run's default).
pub const DEFAULT_PORT: u16 = 8080;

/// How a service's instances are isolated, decided by the control plane for the service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    /// The service's block of host ids (absent only for runtimes that need none, such as test doubles).
    pub ids: Option<pier_sandbox::IdBlock>,
    /// Whether the service may reach the operator's private ranges (`--vpc-egress private-ranges-only`).
    pub private_egress: bool,
}

/// Everything a runtime needs to start one instance.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// The new instance's id.
    pub id: InstanceId,
    /// Project.
    pub project: ProjectName,
    /// Service (`K_SERVICE`).
    pub service: ServiceName,
    /// Revision (`K_REVISION`).
    pub revision: RevisionName,
    /// What to run.
    pub template: Arc<RevisionTemplate>,
    /// More environment Pier adds (for example the metadata server's address); applied after the user's
    /// and before the reserved variables.
    pub extra_env: Vec<(String, String)>,
    /// How it is isolated.
    pub isolation: Isolation,
}

/// Where the gateway connects to reach an instance.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A TCP address the server process can connect to.
    Tcp(SocketAddr),
    /// A TCP address inside the instance's own network namespace.
    Netns(Arc<netns::NetNs>, SocketAddr),
}

impl Endpoint {
    /// The app's port.
    pub fn port(&self) -> u16 {
        match self {
            Endpoint::Tcp(a) | Endpoint::Netns(_, a) => a.port(),
        }
    }

    /// The same instance at another port (a probe's).
    pub fn with_port(&self, port: u16) -> Endpoint {
        match self {
            Endpoint::Tcp(a) => Endpoint::Tcp(SocketAddr::new(a.ip(), port)),
            Endpoint::Netns(ns, a) => Endpoint::Netns(ns.clone(), SocketAddr::new(a.ip(), port)),
        }
    }

    /// Opens a TCP connection to the instance.
    pub async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(s)
            }
            Endpoint::Netns(ns, addr) => ns.connect(*addr).await,
        }
    }
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Endpoint::Tcp(a), Endpoint::Tcp(b)) => a == b,
            (Endpoint::Netns(n, a), Endpoint::Netns(m, b)) => Arc::ptr_eq(n, m) && a == b,
            _ => false,
        }
    }
}

impl Eq for Endpoint {}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Netns(_, a) => write!(f, "{a} (in the instance's network namespace)"),
        }
    }
}

/// How an instance ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Exited by itself with this status code.
    Exited(i32),
    /// Killed by a signal (number).
    Signaled(i32),
    /// Killed because it went over its memory limit.
    OutOfMemory,
    /// Pier stopped it.
    Stopped,
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exited with status {code}"),
            ExitReason::Signaled(sig) => {
                let name = nix::sys::signal::Signal::try_from(*sig)
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|_| sig.to_string());
                write!(f, "was killed by signal {name}")
            }
            ExitReason::OutOfMemory => f.write_str("was killed: out of memory"),
            ExitReason::Stopped => f.write_str("was stopped"),
        }
    }
}

/// What can go wrong starting or running an instance. Messages say what the user should change.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The command to run does not exist.
    #[error(
        "command {program:?} not found: check --command (is it on PATH, or give its full path)"
    )]
    CommandNotFound {
        /// The program.
        program: String,
    },
    /// The command exists but cannot be executed.
    #[error("command {program:?} cannot be run: {reason}")]
    NotExecutable {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// The revision cannot run on this runtime.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else the operating system refused.
    #[error("{context}: {source}")]
    Io {
        /// What Pier was doing.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Wraps an I/O error with what Pier was doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| RuntimeError::Io { context, source }
    }
}

/// Something that can run instances.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Short name, for logs (`process`, `runc`).
    fn name(&self) -> &'static str;

    /// Whether this runtime can run `template`, checked before a deploy records anything.
    fn check(&self, template: &RevisionTemplate) -> Result<(), RuntimeError> {
        let _ = template;
        Ok(())
    }

    /// Starts an instance and returns once it is running (not yet ready).
    async fn start(&self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError>;

    /// Makes, ahead of demand, everything an instance of `spec` needs but its app: the sandbox (network
    /// namespace with Pier's endpoints, cgroups, bundle, a container created but not started), so that
    /// [`Prepared::start`] only has to let the app run. `None` where this runtime has nothing worth
    /// making early (the caller then uses [`Runtime::start`]). A prepared sandbox belongs to `spec`'s
    /// revision and instance id alone, and holds no port the app listens on.
    async fn prepare(&self, spec: InstanceSpec) -> Option<Result<Box<dyn Prepared>, RuntimeError>> {
        let _ = spec;
        None
    }

    /// Removes instances a previous server process left running (after kill -9). Returns how many.
    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError>;
}

/// A sandbox made by [`Runtime::prepare`], waiting for its app to be started or for being discarded.
/// Dropping it without either still takes its processes down (they wait on a descriptor it holds), but
/// leaves files for [`Runtime::cleanup_leftovers`]: call [`Prepared::discard`].
#[async_trait]
pub trait Prepared: Send + 'static {
    /// The instance it was made for.
    fn id(&self) -> &InstanceId;

    /// Starts the app in it; returns once the app runs (not yet ready), as [`Runtime::start`] does.
    async fn start(self: Box<Self>) -> Result<Arc<dyn Instance>, RuntimeError>;

    /// Removes it and everything it holds; returns when all is gone.
    async fn discard(self: Box<Self>);
}

/// One running instance.
#[async_trait]
pub trait Instance: Send + Sync + 'static {
    /// Its id.
    fn id(&self) -> &InstanceId;

    /// Where to connect.
    fn endpoint(&self) -> &Endpoint;

    /// Watches for the end of the instance: `None` while it runs.
    fn exit_watch(&self) -> watch::Receiver<Option<ExitReason>>;

    /// The last `n` lines it wrote (for failure reports).
    fn log_tail(&self, n: usize) -> Vec<String>;

    /// Writes a line of Pier's own into the instance's log (`[pier] ...`), such as why it is stopped.
    fn note(&self, line: &str) {
        let _ = line;
    }

    /// Stops it: SIGTERM, `grace`, then SIGKILL; returns when everything it started is gone.
    async fn stop(&self, grace: Duration);

    /// How long the phases of its start before the runtime proper took (containers: the image's
    /// root, the bundle); empty where a runtime has none.
    fn startup_times(&self) -> StartupTimes {
        StartupTimes::default()
    }

    /// Its CPU and memory use now, from its cgroups; `None` where they cannot be read.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

/// Phases of an instance's start, as a runtime measured them.
#[derive(Clone, Copy, Debug, Default)]
pub struct StartupTimes {
    /// Preparing the image's root file system.
    pub image_root: Option<Duration>,
    /// Writing the bundle, making the network and cgroups.
    pub bundle: Option<Duration>,
}

/// An instance's resource use, from its cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU time used since it started, in seconds (`cpuacct.usage`, or `usage_usec` of `cpu.stat`).
    pub cpu_seconds: f64,
    /// Memory charged to it now, in bytes (`memory.usage_in_bytes`, or `memory.current`).
    pub memory_bytes: u64,
}

/// The stop sequence every runtime follows: mark the instance as stopping, `term` (SIGTERM), wait up to
/// `grace` for it to end, then `kill` (SIGKILL) and wait for the end. Returns at once if it already ended.
pub async fn stop_gracefully<K: std::future::Future<Output = ()>>(
    exit: &watch::Receiver<Option<ExitReason>>,
    stopping: &std::sync::atomic::AtomicBool,
    grace: Duration,
    log: &logs::InstanceLog,
    term: impl FnOnce(),
    kill: impl FnOnce() -> K,
) {
    let mut exit = exit.clone();
    if exit.borrow().is_some() {
        return;
    }
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
    term();
    let exited = tokio::time::timeout(grace, exit.wait_for(Option::is_some))
        .await
        .is_ok();
    if !exited {
        log.system(&format!(
            "instance did not exit within {}s of SIGTERM: sending SIGKILL",
            grace.as_secs()
        ));
        kill().await;
        let _ = exit.wait_for(Option::is_some).await.map(|_| ());
    }
}

/// The environment every instance gets from Pier, in order: the user's variables, then `extra`, then the
/// reserved ones (which always win).
pub fn instance_env(spec: &InstanceSpec, port: u16) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .template
        .env
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    env.extend(spec.extra_env.iter().cloned());
    env.retain(|(k, _)| !pier_model::spec::RESERVED_ENV.contains(&k.as_str()));
    env.push(("PORT".into(), port.to_string()));
    env.push(("K_SERVICE".into(), spec.service.to_string()));
    env.push(("K_REVISION".into(), spec.revision.to_string()));
    env.push(("K_CONFIGURATION".into(), spec.service.to_string()));
    env
}

/// The argument vector of an instance: `command` then `args`, with `$(VAR)` expanded from `env`.
pub fn instance_argv(template: &RevisionTemplate, env: &[(String, String)]) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    template
        .command
        .iter()
        .chain(template.args.iter())
        .map(|a| pier_model::spec::expand_vars(a, lookup))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_model::EnvVar;

    #[test]
    fn reserved_variables_always_win_and_args_expand() {
        let template = RevisionTemplate {
            command: vec!["app".into(), "--port=$(PORT)".into()],
            args: vec!["$(GREETING)".into(), "$$(PORT)".into()],
            env: vec![EnvVar {
                name: "GREETING".into(),
                value: "hi".into(),
            }],
            ..Default::default()
        };
        let spec = InstanceSpec {
            id: "a-00001-abc-x".parse().unwrap(),
            project: ProjectName::default(),
            service: "a".parse().unwrap(),
            revision: "a-00001-abc".parse().unwrap(),
            template: Arc::new(template),
            extra_env: vec![("PORT".into(), "1".into())],
            isolation: Isolation::default(),
        };
        let env = instance_env(&spec, 9000);
        assert_eq!(env.iter().filter(|(k, _)| k == "PORT").count(), 1);
        assert!(env.contains(&("PORT".into(), "9000".into())));
        assert!(env.contains(&("K_REVISION".into(), "a-00001-abc".into())));
        assert!(env.contains(&("K_CONFIGURATION".into(), "a".into())));
        let argv = instance_argv(&spec.template, &env);
        assert_eq!(argv, vec!["app", "--port=9000", "hi", "$(PORT)"]);
    }
}
