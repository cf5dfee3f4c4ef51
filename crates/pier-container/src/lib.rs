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
//! Starting an instance ([`prepare`]):
//!
//! 1. the image's read-only root is prepared (unpacked once per image, mounted once per image and id
//!    mapping, then shared);
//! 2. its network is made as every instance's is ([`pier_runtime::network`]);
//! 3. `config.json` is written to the instance's bundle ([`bundle`]);
//! 4. gen2: the container is created by runc under a [`shim`], its first process waiting in `runc
//!    init`; this is where a sandbox made ahead of demand ([`Runtime::prepare`]) stops;
//! 5. the app is let run: the shim opens runc's `exec.fifo` (gen2), or `runsc run` starts (gen1). Its
//!    stdout and stderr are the instance's log, the shim's (or runsc's) exit is the instance's end.
//!
//! An instance over its memory limit is killed by the kernel; Pier reads the cgroup's kill counter
//! (while it runs and when it ends) and reports "out of memory". After the instance ends, the runtime's
//! state, the cgroup and the bundle are deleted; the namespace goes with its last socket. A server killed
//! with -9 leaves containers running: [`Runtime::cleanup_leftovers`] deletes them at the next start.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pier_image::{ImageSource, ImageStore};
use pier_model::{ExecutionEnvironment, RevisionTemplate};
use pier_runtime::cgroup::CgroupRoot;
use pier_runtime::logs::LogStore;
use pier_runtime::network::Network;
use pier_runtime::{Instance, InstanceSpec, Prepared, Runtime, RuntimeError};
use pier_sandbox::userns::UserNsCache;

pub mod bundle;
pub mod cgroups;
pub mod engine;
mod instance;
pub mod prepare;
pub mod shim;
pub mod user;
pub mod writable;

use bundle::SharedFiles;
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
    /// The binary that runs [`shim::main`] (`pier` itself, with [`shim::ARG`]).
    pub shim: PathBuf,
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
        Box::new(self.make(spec).await?).start().await
    }

    async fn prepare(
        &self,
        spec: InstanceSpec,
    ) -> Option<Result<Box<dyn pier_runtime::Prepared>, RuntimeError>> {
        Some(
            self.make(spec)
                .await
                .map(|p| Box::new(p) as Box<dyn pier_runtime::Prepared>),
        )
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
