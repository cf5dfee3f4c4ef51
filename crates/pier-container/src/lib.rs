//! The container runtime: runs a revision's OCI image in one of Cloud Run's execution environments,
//! behind the same [`Runtime`] trait and contract as the process runtime.
//!
//! - **gen2** (the default): runc, hardened with [`pier_sandbox`]'s policy: the seccomp profile,
//!   `no_new_privs`, masked paths, a private cgroup namespace, and the service's user namespace, so the
//!   image's root is an unprivileged host user. The image root is an overlay of idmapped layers built for
//!   the service (runc 1.1 cannot idmap mounts itself); the network namespace is owned by that user
//!   namespace, so the container mounts its own sysfs.
//! - **gen1**: gVisor's runsc: the app runs on gVisor's own kernel in user space, under the same seccomp
//!   profile (applied by the sentry), in the same network namespace design, with the same limits, logs and
//!   metadata server. runsc cannot join a user namespace with `--network=host`; gVisor's sentry is the
//!   boundary instead.
//!
//! Starting an instance:
//!
//! 1. the image's read-only root is prepared (unpacked once per image, mounted once per image and id
//!    mapping, then shared);
//! 2. its network is made as every instance's is ([`pier_runtime::network`]);
//! 3. `config.json` is written to the instance's bundle ([`bundle`]);
//! 4. the runtime runs the container in the foreground ([`engine`]): its stdout and stderr are the
//!    instance's log, its exit is the instance's end.
//!
//! An instance over its memory limit is killed by the kernel; Pier reads the cgroup's kill counter
//! (while it runs and when it ends) and reports "out of memory". After the instance ends, the runtime's
//! state, the cgroup and the bundle are deleted; the namespace goes with its last socket. A server killed
//! with -9 leaves containers running: [`Runtime::cleanup_leftovers`] deletes them at the next start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pier_image::{IdMap, ImageSource, ImageStore, pinned_digest};
use pier_model::api::LogStream;
use pier_model::{ExecutionEnvironment, RevisionTemplate};
use pier_runtime::cgroup::{CgroupRoot, Limits};
use pier_runtime::logs::{InstanceLog, LogStore, pump};
use pier_runtime::network::Network;
use pier_runtime::{
    Endpoint, ExitReason, Instance, InstanceSpec, Runtime, RuntimeError, instance_env,
};
use pier_sandbox::userns::UserNsCache;
use tokio::sync::watch;

pub mod bundle;
pub mod cgroups;
pub mod engine;
pub mod user;
pub mod writable;

use bundle::{BundleInput, SharedFiles, UserNamespace};
use cgroups::MemoryController;
use engine::{Engine, Kind};

/// How often a running container's out-of-memory counter is read.
const OOM_POLL: Duration = Duration::from_millis(500);

/// Configuration of the container runtime.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// The gen2 OCI runtime binary (`runc`, or a runc-compatible one such as `crun` or a path).
    pub runtime: PathBuf,
    /// gVisor's `runsc`, which runs gen1 revisions.
    pub gvisor: PathBuf,
    /// This server's directory for the runtimes' state (`--root`).
    pub dir: PathBuf,
    /// Where instances' bundles go (a writable root is mounted inside its bundle, so, as for image
    /// roots, every folder above must let the container's unprivileged host user pass).
    pub bundles: PathBuf,
    /// The cgroup under which instances' cgroups are made (`/pier-containers/INSTALLATION`).
    pub cgroup_parent: String,
    /// Host files mounted into every container.
    pub files: SharedFiles,
    /// This installation's short id.
    pub installation: String,
    /// The seccomp filters: the profile's, and the operator's named exceptions.
    pub seccomp: Arc<pier_sandbox::seccomp::Policies>,
}

/// Runs instances as OCI containers.
pub struct ContainerRuntime {
    config: ContainerConfig,
    runc: Engine,
    /// `None` where runsc is not installed (gen1 deploys then fail with the fix).
    runsc: Result<Engine, String>,
    bundles: PathBuf,
    logs: Arc<LogStore>,
    images: Arc<ImageStore>,
    network: Arc<Network>,
    memory: Option<MemoryController>,
    /// gen1's cgroups, made by Pier (runsc would delete its own before the kill counter can be read).
    gvisor_cgroups: Option<CgroupRoot>,
    userns: Arc<UserNsCache>,
}

impl std::fmt::Debug for ContainerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn runs(binary: &Path) -> bool {
    std::process::Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl ContainerRuntime {
    /// A runtime using `config`, or why containers cannot run here (no runtime binary, not root).
    pub fn new(
        config: ContainerConfig,
        logs: Arc<LogStore>,
        images: Arc<ImageStore>,
        network: Arc<Network>,
    ) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("container images need the server to run as root (for namespaces, mounts and cgroups)".into());
        }
        if !runs(&config.runtime) {
            return Err(format!(
                "the OCI runtime {:?} cannot be run: install it (apt install runc) or choose another with --container-runtime",
                config.runtime
            ));
        }
        let runc = Engine {
            kind: Kind::Runc,
            binary: config.runtime.clone(),
            state: config.dir.join("state"),
        };
        let runsc = if runs(&config.gvisor) {
            Ok(Engine {
                kind: Kind::Runsc,
                binary: config.gvisor.clone(),
                state: config.dir.join("state-gvisor"),
            })
        } else {
            Err(format!(
                "gen1 runs on gVisor, whose runtime {} is not installed: install it (apt install runsc), or deploy with --execution-environment gen2",
                config.gvisor.display()
            ))
        };
        let bundles = config.bundles.clone();
        let mut dirs = vec![&runc.state, &bundles];
        if let Ok(e) = &runsc {
            dirs.push(&e.state);
        }
        for d in dirs {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let gvisor_cgroups = CgroupRoot::detect_at(&config.cgroup_parent);
        Ok(Self {
            memory: MemoryController::detect(),
            gvisor_cgroups,
            userns: Arc::default(),
            config,
            runc,
            runsc,
            bundles,
            logs,
            images,
            network,
        })
    }

    /// Removes this server's (empty) cgroup directories; at shutdown, after every instance stopped.
    pub fn remove_cgroups(&self) {
        cgroups::remove_under(&self.config.cgroup_parent, true);
    }

    fn cgroup_path(&self, id: &str) -> String {
        format!("{}/{id}", self.config.cgroup_parent)
    }

    fn engine(&self, env: ExecutionEnvironment) -> Result<&Engine, RuntimeError> {
        match env {
            ExecutionEnvironment::Gen2 => Ok(&self.runc),
            ExecutionEnvironment::Gen1 => self
                .runsc
                .as_ref()
                .map_err(|why| RuntimeError::Unsupported(why.clone())),
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
        self.engine(
            template
                .execution_environment
                .unwrap_or(ExecutionEnvironment::Gen2),
        )?;
        self.config
            .seccomp
            .oci(template.seccomp_exception.as_deref())
            .map_err(|e| RuntimeError::Unsupported(e.to_string()))?;
        Ok(())
    }

    async fn start(&self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        let template = spec.template.clone();
        self.check(&template)?;
        let env_kind = template
            .execution_environment
            .unwrap_or(ExecutionEnvironment::Gen2);
        let engine = self.engine(env_kind)?.clone();
        let started = Instant::now();
        let image_text = template.image.clone().unwrap_or_default();
        let digest = pinned_digest(&image_text).ok_or_else(|| {
            RuntimeError::Unsupported(format!(
                "image {image_text} is not resolved to a digest: deploy it again"
            ))
        })?;
        // gen2: the service's user namespace, which maps the image's ids and owns the network namespace.
        let userns = match (env_kind, spec.isolation.ids) {
            (ExecutionEnvironment::Gen2, Some(ids)) => {
                let (u, g) = (ids.uid_map(), ids.gid_map());
                let cache = self.userns.clone();
                let ns = tokio::task::spawn_blocking(move || cache.get(&u, &g))
                    .await
                    .map_err(|e| RuntimeError::Unsupported(e.to_string()))?
                    .map_err(RuntimeError::io("making the service's user namespace"))?;
                Some((ids, ns))
            }
            (ExecutionEnvironment::Gen2, None) => {
                return Err(RuntimeError::Unsupported(
                    "the instance has no host ids of its own (its service has no id block)".into(),
                ));
            }
            (ExecutionEnvironment::Gen1, _) => None,
        };
        let map = userns.as_ref().map(|(ids, ns)| IdMap {
            tag: format!("u{}", ids.uid),
            owner: (ids.uid, ids.gid),
            userns: ns.clone(),
        });
        let image = self
            .images
            .prepare_as(&digest, map)
            .await
            .map_err(|e| RuntimeError::Unsupported(e.to_string()))?;
        let image_ready = started.elapsed();

        let port = template.port.unwrap_or(pier_runtime::DEFAULT_PORT);
        let net = self
            .network
            .make(&spec, port, userns.as_ref().map(|(_, ns)| ns.clone()))
            .await?;
        let ns = net.ns.clone();
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
        let memory_limit = template
            .memory_bytes()
            .unwrap_or(pier_runtime::DEFAULT_MEMORY);
        // gen1's cgroups are Pier's own (see the field's docs); runc makes gen2's from the config.
        let gvisor_cg = match (&self.gvisor_cgroups, env_kind) {
            (Some(root), ExecutionEnvironment::Gen1) => Some(Arc::new(
                root.create(
                    &id,
                    &Limits {
                        memory: memory_limit,
                        cpu_millis: template
                            .cpu_millis()
                            .unwrap_or(pier_runtime::DEFAULT_CPU_MILLIS),
                        pids: pier_runtime::PIDS_LIMIT,
                    },
                )
                .map_err(RuntimeError::io(format!("creating the cgroups of {id}")))?,
            )),
            _ => None,
        };
        let owner = userns.as_ref().map(|(ids, _)| (ids.uid, ids.gid));
        // The bundle is the container's alone: its configuration holds the service's environment,
        // and a writable root is mounted inside it. Only its root (the block's first ids, which must
        // walk to a writable root) and the server may enter.
        {
            use std::os::unix::fs::PermissionsExt;
            let (uid, gid) = owner.unwrap_or((0, 0));
            std::os::unix::fs::chown(&bundle_dir, Some(uid), Some(gid))
                .and_then(|()| {
                    std::fs::set_permissions(&bundle_dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(RuntimeError::io(format!("securing the bundle of {id}")))?;
        }
        let writable = if template.writable_root {
            let mounted =
                writable::WritableRoot::mount(&bundle_dir, &image.rootfs, memory_limit, owner);
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
        let user_namespace = userns.as_ref().map(|(ids, ns)| UserNamespace {
            path: PathBuf::from(format!(
                "/proc/{}/fd/{}",
                std::process::id(),
                std::os::fd::AsRawFd::as_raw_fd(ns.as_ref())
            )),
            ids: *ids,
        });
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
            userns: user_namespace.as_ref(),
            seccomp: Some(
                self.config
                    .seccomp
                    .oci(template.seccomp_exception.as_deref())
                    .map_err(|e| abandon(e.to_string()))?,
            ),
        })
        .map_err(|e| abandon(e.to_string()))?;
        let json = serde_json::to_vec(&config).map_err(|e| abandon(e.to_string()))?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(bundle_dir.join("config.json"))
                .and_then(|mut f| f.write_all(&json))
                .map_err(|e| abandon(format!("writing the bundle of {id}: {e}")))?;
        }
        let prepared = started.elapsed();

        let log = self
            .logs
            .instance_writer(&spec.project, &spec.service, &spec.revision, &spec.id);
        let mut cmd = engine.run(&bundle_dir, &id);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = abandon(String::new());
                return Err(RuntimeError::NotExecutable {
                    program: engine.binary.display().to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let runtime_pid = child.id().map(|p| p as i32).unwrap_or(0);
        log.system(&format!(
            "container starting ({}): image {} ({}), PORT={port}, user {}:{}{}, memory {} MiB, cpu {}m, {} root (root ready in {:.1} ms, bundle in {:.1} ms)",
            match env_kind {
                ExecutionEnvironment::Gen1 => "gen1, gVisor",
                ExecutionEnvironment::Gen2 => "gen2",
            },
            image_text.rsplit_once('@').map(|(n, _)| n).unwrap_or(&image_text),
            digest.short(),
            user.uid,
            user.gid,
            owner.map(|(u, _)| format!(" (host uid {})", u + user.uid)).unwrap_or_default(),
            memory_limit >> 20,
            template.cpu_millis().unwrap_or(pier_runtime::DEFAULT_CPU_MILLIS),
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
        let (usage_cg, usage_memory, usage_path) =
            (gvisor_cg.clone(), self.memory.clone(), cgroup.clone());
        let stopping = Arc::new(AtomicBool::new(false));
        let oom_killed = Arc::new(AtomicBool::new(false));
        let oom_kills = {
            let memory = self.memory.clone();
            let (cgroup, gvisor_cg) = (cgroup.clone(), gvisor_cg.clone());
            move || match &gvisor_cg {
                Some(cg) => cg.oom_kills(),
                None => memory.as_ref().map(|m| m.oom_kills(&cgroup)).unwrap_or(0),
            }
        };
        // Out-of-memory kills of any process in the container end the instance, as on Cloud Run.
        {
            let mut exit = exit_rx.clone();
            let (engine, id, oom_kills) = (engine.clone(), id.clone(), oom_kills.clone());
            let (log, oom_killed) = (log.clone(), oom_killed.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = exit.wait_for(Option::is_some) => return,
                        _ = tokio::time::sleep(OOM_POLL) => {}
                    }
                    if oom_kills() > 0 {
                        oom_killed.store(true, Ordering::SeqCst);
                        log.system("out of memory: the kernel killed a process over the instance's memory limit; stopping the instance (raise --memory)");
                        let _ = engine.kill(&id, "KILL").await;
                        return;
                    }
                }
            });
        }
        {
            let (log, stopping, oom_killed) = (log.clone(), stopping.clone(), oom_killed.clone());
            let (engine, id) = (engine.clone(), id.clone());
            tokio::spawn(async move {
                let status = child.wait().await;
                let oom = oom_killed.load(Ordering::SeqCst) || oom_kills() > 0;
                if let Err(e) = engine.delete(&id).await {
                    tracing::warn!(instance = %id, "deleting the container failed: {e}");
                }
                if let Some(w) = &writable {
                    w.unmount();
                }
                let _ = std::fs::remove_dir_all(&bundle_dir);
                if let Some(cg) = &gvisor_cg {
                    cg.destroy().await;
                }
                drop(net);
                let reason = match status {
                    _ if oom => ExitReason::OutOfMemory,
                    _ if stopping.load(Ordering::SeqCst) => ExitReason::Stopped,
                    Ok(s) => engine.exit_reason(s.code()),
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
            engine,
            runtime_pid,
            exit: exit_rx,
            log,
            stopping,
            times: pier_runtime::StartupTimes {
                image_root: Some(image_ready),
                bundle: Some(prepared - image_ready),
            },
            usage: Box::new(move || match &usage_cg {
                Some(cg) => cg.usage(),
                None => cgroups::usage(usage_memory.as_ref(), &usage_path),
            }),
        }))
    }

    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError> {
        let mut count = 0;
        let engines = std::iter::once(&self.runc).chain(self.runsc.as_ref().ok());
        for engine in engines {
            let ids = engine.list().await;
            for id in &ids {
                match engine.delete(id).await {
                    Ok(()) => {
                        tracing::info!(container = %id, "deleted a container outside any pool (one still starting at a stop, or left by a killed server)")
                    }
                    Err(e) => {
                        tracing::warn!(container = %id, "deleting a leftover container failed: {e}")
                    }
                }
            }
            count += ids.len();
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
        if let Some(root) = &self.gvisor_cgroups {
            for cg in root.leftovers() {
                cg.destroy().await;
            }
        }
        cgroups::remove_under(&self.config.cgroup_parent, false);
        Ok(count)
    }
}

struct ContainerInstance {
    id: pier_model::InstanceId,
    container: String,
    endpoint: Endpoint,
    engine: Engine,
    runtime_pid: i32,
    exit: watch::Receiver<Option<ExitReason>>,
    log: InstanceLog,
    stopping: Arc<AtomicBool>,
    times: pier_runtime::StartupTimes,
    /// Reads the container's cgroups (Pier's own for gen1, the runtime's for gen2).
    usage: Box<dyn Fn() -> Option<pier_runtime::Usage> + Send + Sync>,
}

#[async_trait]
impl Instance for ContainerInstance {
    fn startup_times(&self) -> pier_runtime::StartupTimes {
        self.times
    }

    fn usage(&self) -> Option<pier_runtime::Usage> {
        (self.usage)()
    }

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

    fn note(&self, line: &str) {
        self.log.system(line);
    }

    async fn stop(&self, grace: Duration) {
        let (engine, container, pid) = (
            self.engine.clone(),
            self.container.clone(),
            self.runtime_pid,
        );
        pier_runtime::stop_gracefully(
            &self.exit,
            &self.stopping,
            grace,
            &self.log,
            move || {
                tokio::spawn(async move { engine.terminate(&container, pid).await });
            },
            || async {
                if let Err(e) = self.engine.kill(&self.container, "KILL").await {
                    tracing::warn!(instance = %self.id, "killing the container failed: {e}");
                }
            },
        )
        .await;
    }
}
