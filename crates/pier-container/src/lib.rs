//! The container runtime: runs a revision's OCI image with an OCI runtime (`runc` by default; `crun` or
//! `youki` can be chosen), behind the same [`Runtime`] trait and contract as the process runtime.
//!
//! Starting an instance:
//!
//! 1. the image's read-only root is prepared (unpacked and mounted once per image, then shared);
//! 2. a network namespace is made with only loopback and the link-local addresses, and Pier's services for
//!    the instance (its metadata server, a gateway entrance) listen inside it ([`NamespaceServices`]);
//! 3. `config.json` is written to the instance's bundle ([`bundle`]);
//! 4. `runc run --keep` starts the container in the foreground: its stdout and stderr are the instance's
//!    log, its exit is the instance's end; SIGTERM sent to it is forwarded to the container.
//!
//! The gateway reaches the instance's `PORT` with sockets it opens inside the namespace, so no other
//! process on the host can reach the port and bypass authentication. An instance over its memory limit is
//! killed by the kernel; Pier reads the cgroup's kill counter (while it runs and when it ends) and reports
//! "out of memory" rather than a plain exit. After the instance ends, the runtime's state, the cgroup and
//! the bundle are deleted; the namespace goes with its last socket. A server killed with -9 leaves
//! containers running: [`Runtime::cleanup_leftovers`] deletes them at the next start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use pier_image::{ImageSource, ImageStore, pinned_digest};
use pier_model::RevisionTemplate;
use pier_model::api::LogStream;
use pier_runtime::logs::{InstanceLog, LogStore, pump};
use pier_runtime::netns::NetNs;
use pier_runtime::{
    Endpoint, ExitReason, Instance, InstanceSpec, Runtime, RuntimeError, instance_env,
};
use tokio::sync::watch;

pub mod bundle;
pub mod cgroups;
pub mod egress;
pub mod user;
pub mod writable;

use bundle::{BundleInput, SharedFiles};
use cgroups::MemoryController;

/// How often a running container's out-of-memory counter is read.
const OOM_POLL: Duration = Duration::from_millis(500);

/// Pier's services for one instance, served on listeners inside its network namespace.
pub trait NamespaceServices: Send + Sync + 'static {
    /// Starts serving `spec`'s instance inside `ns`; dropping what it returns stops them.
    fn attach(&self, spec: &InstanceSpec, ns: &NetNs) -> std::io::Result<Box<dyn Send + Sync>>;
}

/// Configuration of the container runtime.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The OCI runtime binary (`runc`, `crun`, `youki`, or a path).
    pub runtime: PathBuf,
    /// This server's directory for the runtime's state (`--root`) and the bundles.
    pub dir: PathBuf,
    /// The cgroup under which instances' cgroups are made (`/pier-containers/INSTALLATION`).
    pub cgroup_parent: String,
    /// Host files mounted into every container.
    pub files: SharedFiles,
    /// This installation's short id (names its bridge and firewall table).
    pub installation: String,
    /// Outbound network for instances, on this subnet; none, only Pier's services are reachable.
    pub egress: Option<egress::Subnet>,
}

/// Runs instances as OCI containers.
pub struct ContainerRuntime {
    config: ContainerConfig,
    state: PathBuf,
    bundles: PathBuf,
    logs: Arc<LogStore>,
    images: Arc<ImageStore>,
    services: Option<Arc<dyn NamespaceServices>>,
    memory: Option<MemoryController>,
    egress: Option<Arc<egress::Egress>>,
}

impl std::fmt::Debug for ContainerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Runs an OCI runtime command to completion; its error output on failure.
async fn runtime_cmd(runtime: &Path, state: &Path, args: &[&str]) -> Result<(), String> {
    let out = tokio::process::Command::new(runtime)
        .arg("--root")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

impl ContainerRuntime {
    /// A runtime using `config`, or why containers cannot run here (no runtime binary, not root).
    pub fn new(
        config: ContainerConfig,
        logs: Arc<LogStore>,
        images: Arc<ImageStore>,
    ) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("container images need the server to run as root (for namespaces, mounts and cgroups)".into());
        }
        let found = std::process::Command::new(&config.runtime)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !found.is_ok_and(|s| s.success()) {
            return Err(format!(
                "the OCI runtime {:?} cannot be run: install it (apt install runc) or choose another with --container-runtime",
                config.runtime
            ));
        }
        let state = config.dir.join("state");
        let bundles = config.dir.join("bundles");
        for d in [&state, &bundles] {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let egress = match config.egress {
            Some(subnet) => Some(Arc::new(egress::Egress::setup(
                &config.installation,
                subnet,
            )?)),
            None => None,
        };
        Ok(Self {
            egress,
            memory: MemoryController::detect(),
            config,
            state,
            bundles,
            logs,
            images,
            services: None,
        })
    }

    /// Serves Pier's per-instance services inside each instance's namespace.
    pub fn with_services(mut self, services: Arc<dyn NamespaceServices>) -> Self {
        self.services = Some(services);
        self
    }

    /// Removes this server's (empty) cgroup directories; at shutdown, after every instance stopped.
    pub fn remove_cgroups(&self) {
        cgroups::remove_parent(&self.config.cgroup_parent);
    }

    /// Removes this server's bridge and firewall table (egress); at shutdown, after every instance stopped.
    pub fn remove_network(&self) {
        if let Some(e) = &self.egress {
            e.teardown();
        }
    }

    fn cgroup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.config.cgroup_parent)
    }

    async fn runtime_cmd(&self, args: &[&str]) -> Result<(), String> {
        runtime_cmd(&self.config.runtime, &self.state, args).await
    }

    /// Container ids the runtime's state holds.
    async fn list(&self) -> Vec<String> {
        let out = tokio::process::Command::new(&self.config.runtime)
            .arg("--root")
            .arg(&self.state)
            .args(["list", "--quiet"])
            .stdin(Stdio::null())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }
}

#[async_trait]
impl Runtime for ContainerRuntime {
    fn name(&self) -> &'static str {
        "container"
    }

    fn check(&self, template: &RevisionTemplate) -> Result<(), RuntimeError> {
        let Some(image) = &template.image else {
            return Err(RuntimeError::Unsupported(
                "the container runtime runs images: give --image".into(),
            ));
        };
        image
            .parse::<ImageSource>()
            .map_err(|e| RuntimeError::Unsupported(e.to_string()))?;
        if let Some(w) = &template.working_dir
            && !w.starts_with('/')
        {
            return Err(RuntimeError::Unsupported(format!(
                "--workdir {w:?} must be an absolute path inside the container"
            )));
        }
        Ok(())
    }

    async fn start(&self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        let template = spec.template.clone();
        self.check(&template)?;
        let started = Instant::now();
        let image_text = template.image.clone().unwrap_or_default();
        let digest = pinned_digest(&image_text).ok_or_else(|| {
            RuntimeError::Unsupported(format!(
                "image {image_text} is not resolved to a digest: deploy it again"
            ))
        })?;
        let image = self
            .images
            .prepare(&digest)
            .await
            .map_err(|e| RuntimeError::Unsupported(e.to_string()))?;
        let image_ready = started.elapsed();

        let leased = match &self.egress {
            Some(e) => {
                let (link, lease) = e.lease().map_err(RuntimeError::Unsupported)?;
                Some((e.clone(), link, lease))
            }
            None => None,
        };
        let ns = tokio::task::spawn_blocking(move || -> Result<NetNs, RuntimeError> {
            let io = RuntimeError::io("creating the instance's network namespace");
            let Some((egress, link, lease)) = leased else {
                return NetNs::create().map_err(io);
            };
            let mut ns = NetNs::create_linked(Some(link.clone())).map_err(io)?;
            // The lease and the host veth end live as long as the namespace.
            ns.hold(lease);
            egress.attach(&link).map_err(|e| {
                RuntimeError::Unsupported(format!("connecting the instance to the network: {e}"))
            })?;
            Ok(ns)
        })
        .await
        .map_err(|e| RuntimeError::Unsupported(e.to_string()))??;
        let ns = Arc::new(ns);
        let attached = match &self.services {
            Some(s) => Some(s.attach(&spec, &ns).map_err(RuntimeError::io(
                "serving Pier's endpoints inside the instance's namespace",
            ))?),
            None => None,
        };

        let port = template.port.unwrap_or(bundle::DEFAULT_PORT);
        let env = instance_env(&spec, port);
        let user = user::resolve(&image.rootfs, image.config.user.as_deref())
            .map_err(RuntimeError::Unsupported)?;
        let id = spec.id.as_str().to_owned();
        let cgroup = self.cgroup_path(&id);
        let netns_path = ns.path();
        let hostname: String = id.chars().take(63).collect();
        let bundle_dir = self.bundles.join(&id);
        let _ = std::fs::remove_dir_all(&bundle_dir);
        std::fs::create_dir_all(&bundle_dir)
            .map_err(RuntimeError::io(format!("creating the bundle of {id}")))?;
        let memory_limit = template.memory_bytes().unwrap_or(bundle::DEFAULT_MEMORY);
        let writable = if template.writable_root {
            let mounted = writable::WritableRoot::mount(&bundle_dir, &image.rootfs, memory_limit);
            match mounted {
                Ok(w) => Some(w),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&bundle_dir);
                    return Err(RuntimeError::Unsupported(e));
                }
            }
        } else {
            None
        };
        let abandon = |e: String| {
            if let Some(w) = &writable {
                w.unmount();
            }
            let _ = std::fs::remove_dir_all(&bundle_dir);
            RuntimeError::Unsupported(e)
        };
        let config = bundle::config(&BundleInput {
            hostname: &hostname,
            rootfs: writable.as_ref().map_or(&image.rootfs, |w| &w.root),
            image: &image.config,
            template: &template,
            env: &env,
            user: &user,
            netns: &netns_path,
            cgroup: &cgroup,
            files: &self.config.files,
        })
        .map_err(|e| abandon(e.to_string()))?;
        let json = serde_json::to_vec(&config).map_err(|e| abandon(e.to_string()))?;
        std::fs::write(bundle_dir.join("config.json"), json)
            .map_err(|e| abandon(format!("writing the bundle of {id}: {e}")))?;
        let prepared = started.elapsed();

        let log = self
            .logs
            .instance_writer(&spec.project, &spec.service, &spec.revision, &spec.id);
        let mut cmd = tokio::process::Command::new(&self.config.runtime);
        cmd.arg("--root")
            .arg(&self.state)
            .args(["run", "--keep", "--bundle"])
            .arg(&bundle_dir)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = abandon(String::new());
                return Err(RuntimeError::NotExecutable {
                    program: self.config.runtime.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let runtime_pid = child.id().map(|p| p as i32).unwrap_or(0);
        log.system(&format!(
            "container starting: image {} ({}), PORT={port}, user {}:{}, memory {} MiB, cpu {}m, {} root (root ready in {:.1} ms, bundle in {:.1} ms)",
            image_text.rsplit_once('@').map(|(n, _)| n).unwrap_or(&image_text),
            digest.short(),
            user.uid,
            user.gid,
            memory_limit >> 20,
            template.cpu_millis().unwrap_or(bundle::DEFAULT_CPU_MILLIS),
            if writable.is_some() { "writable in-memory" } else { "read-only" },
            image_ready.as_secs_f64() * 1e3,
            (prepared - image_ready).as_secs_f64() * 1e3,
        ));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump(out, log.clone(), LogStream::Stdout));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump(err, log.clone(), LogStream::Stderr));
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        let stopping = Arc::new(AtomicBool::new(false));
        let oom_killed = Arc::new(AtomicBool::new(false));
        // Out-of-memory kills of any process in the container end the instance, as on Cloud Run.
        if let Some(memory) = self.memory.clone() {
            let mut exit = exit_rx.clone();
            let (runtime, state, id, cgroup) = (
                self.config.runtime.clone(),
                self.state.clone(),
                id.clone(),
                cgroup.clone(),
            );
            let (log, oom_killed) = (log.clone(), oom_killed.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = exit.wait_for(Option::is_some) => return,
                        _ = tokio::time::sleep(OOM_POLL) => {}
                    }
                    if memory.oom_kills(&cgroup) > 0 {
                        oom_killed.store(true, Ordering::SeqCst);
                        log.system("out of memory: the kernel killed a process over the instance's memory limit; stopping the instance (raise --memory)");
                        let _ = runtime_cmd(&runtime, &state, &["kill", &id, "KILL"]).await;
                        return;
                    }
                }
            });
        }
        {
            let (runtime, state) = (self.config.runtime.clone(), self.state.clone());
            let memory = self.memory.clone();
            let (log, stopping, oom_killed) = (log.clone(), stopping.clone(), oom_killed.clone());
            let (id, cgroup) = (id.clone(), cgroup.clone());
            let ns = ns.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                let oom = oom_killed.load(Ordering::SeqCst)
                    || memory.as_ref().is_some_and(|m| m.oom_kills(&cgroup) > 0);
                if let Err(e) = runtime_cmd(&runtime, &state, &["delete", "--force", &id]).await {
                    tracing::warn!(instance = %id, "deleting the container failed: {e}");
                }
                if let Some(w) = &writable {
                    w.unmount();
                }
                let _ = std::fs::remove_dir_all(&bundle_dir);
                drop(attached);
                drop(ns);
                let reason = match status {
                    _ if oom => ExitReason::OutOfMemory,
                    _ if stopping.load(Ordering::SeqCst) => ExitReason::Stopped,
                    // The runtime exits with the container's status, 128+N for signal N.
                    Ok(s) => match s.code() {
                        Some(code) if (129..=128 + 64).contains(&code) => {
                            ExitReason::Signaled(code - 128)
                        }
                        Some(code) => ExitReason::Exited(code),
                        None => ExitReason::Exited(-1),
                    },
                    Err(_) => ExitReason::Exited(-1),
                };
                log.system(&format!("instance {reason}"));
                let _ = exit_tx.send(Some(reason));
            });
        }
        Ok(Arc::new(ContainerInstance {
            id: spec.id,
            container: id,
            endpoint: Endpoint::Netns(
                ns,
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
            ),
            runtime: self.config.runtime.clone(),
            state: self.state.clone(),
            runtime_pid,
            exit: exit_rx,
            log,
            stopping,
        }))
    }

    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError> {
        let ids = self.list().await;
        for id in &ids {
            match self.runtime_cmd(&["delete", "--force", id]).await {
                Ok(()) => {
                    tracing::info!(container = %id, "deleted a container left by a previous server")
                }
                Err(e) => {
                    tracing::warn!(container = %id, "deleting a leftover container failed: {e}")
                }
            }
        }
        let unmounted = writable::unmount_under(&self.bundles);
        if unmounted > 0 {
            tracing::info!("unmounted {unmounted} writable-root mounts left by a previous server");
        }
        if let Ok(entries) = std::fs::read_dir(&self.bundles) {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        cgroups::remove_parent(&self.config.cgroup_parent);
        Ok(ids.len())
    }
}

struct ContainerInstance {
    id: pier_model::InstanceId,
    container: String,
    endpoint: Endpoint,
    runtime: PathBuf,
    state: PathBuf,
    runtime_pid: i32,
    exit: watch::Receiver<Option<ExitReason>>,
    log: InstanceLog,
    stopping: Arc<AtomicBool>,
}

#[async_trait]
impl Instance for ContainerInstance {
    fn id(&self) -> &pier_model::InstanceId {
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
        let runtime_pid = self.runtime_pid;
        pier_runtime::stop_gracefully(
            &self.exit,
            &self.stopping,
            grace,
            &self.log,
            // `runc run` forwards the signal to the container's first process.
            || {
                if runtime_pid > 0 {
                    let _ = nix::sys::signal::kill(Pid::from_raw(runtime_pid), Signal::SIGTERM);
                }
            },
            || async {
                if let Err(e) = runtime_cmd(
                    &self.runtime,
                    &self.state,
                    &["kill", &self.container, "KILL"],
                )
                .await
                {
                    tracing::warn!(instance = %self.id, "killing the container failed: {e}");
                }
            },
        )
        .await;
    }
}
