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
use std::time::Duration;

use async_trait::async_trait;
use pier_model::RevisionTemplate;
use pier_sandbox::HostView;
use pier_sandbox::launch::Launch;
use pier_sandbox::seccomp::Policies;
use pier_sandbox::userns::UserNsCache;

use crate::cgroup::{CgroupRoot, Limits};
use crate::logs::LogStore;
use crate::network::Network;
use crate::{
    DEFAULT_CPU_MILLIS, DEFAULT_MEMORY, DEFAULT_PORT, Instance, InstanceSpec, PIDS_LIMIT, Prepared,
    Runtime, RuntimeError, instance_argv, instance_env,
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
    /// The gate binary (`pier`, which runs [`pier_sandbox::launch::gate`] with its hidden argument),
    /// opened with `O_PATH` (the server's own `/proc/self/exe`, so an upgrade on disk changes nothing):
    /// with one, a prepared instance's process is made, sandbox and all, and waits in the gate for its
    /// start; without, the process is forked at the start.
    pub gate: Option<Arc<std::os::fd::OwnedFd>>,
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

impl ProcessRuntime {
    /// Makes everything an instance of `spec` needs but its process (see [`prepared`]).
    async fn make(&self, spec: InstanceSpec) -> Result<prepared::PreparedProcess, RuntimeError> {
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
        // A descriptor of the gate binary for this child (before anything that needs undoing).
        let gate_fd = match &self.config.gate {
            Some(fd) => Some(
                fd.try_clone()
                    .map_err(RuntimeError::io("opening the instance gate"))?,
            ),
            None => None,
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
            gate: gate_fd,
        };
        let sandbox = if template.unsandboxed {
            None
        } else {
            self.config.sandbox.clone()
        };
        let (wd, path) = (workdir.clone(), exec_path.clone());
        let mentioned = mentioned_paths(&argv);
        let private = template.private_paths;
        let exception = template.seccomp_exception.clone();
        let cgroup_view = cgroup.as_ref().map(|c| c.view()).unwrap_or_default();
        let mut launch = launch;
        let prog = program.clone();
        // Planning may fork (an id mapping) and spawning forks: on the spawner thread, off the async
        // workers, and from a thread that outlives the instance (see `Spawner`).
        let job = move || -> Result<prepared::Made, RuntimeError> {
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
            if launch.gate.is_none() {
                return Ok(prepared::Made::Planned(launch));
            }
            // The process is made now, in its whole sandbox, and waits in the gate. A gate that
            // cannot run leaves the fork to the start, which then reports what it finds.
            match pier_sandbox::launch::spawn(&launch) {
                Ok(spawned) => Ok(prepared::Made::Gated(spawned)),
                Err(e) => {
                    tracing::warn!(
                        "the instance gate could not wait for {prog:?} ({e}): its process is forked at its start instead"
                    );
                    launch.gate = None;
                    Ok(prepared::Made::Planned(launch))
                }
            }
        };
        let made = match prepared::on_spawner(job).await {
            Ok(m) => m,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.destroy().await;
                }
                return Err(e);
            }
        };
        Ok(prepared::PreparedProcess {
            id: spec.id,
            made,
            program,
            port,
            user,
            limits,
            cgroup,
            net,
            log,
            output: (out_r, err_r),
            unenforced: self.unenforced(),
        })
    }
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
        Box::new(self.make(spec).await?).start().await
    }

    async fn prepare(&self, spec: InstanceSpec) -> Option<Result<Box<dyn Prepared>, RuntimeError>> {
        Some(
            self.make(spec)
                .await
                .map(|p| Box::new(p) as Box<dyn Prepared>),
        )
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

pub mod prepared;

#[cfg(test)]
mod tests;
