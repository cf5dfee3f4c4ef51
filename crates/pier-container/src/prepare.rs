//! Making a container instance's sandbox, and letting its app run.
//!
//! [`ContainerRuntime::make`] does everything but the app: the image's root (unpacked once per image,
//! mounted once per image and id mapping), the network ([`pier_runtime::network`]), the bundle's
//! `config.json` ([`crate::bundle`]), and for gen2 the container itself, created by runc under a shim
//! ([`crate::shim`]) and waiting in `runc init`. [`PreparedContainer::start`] then only tells the shim to
//! go; gen1 spawns `runsc run` there. Both a cold start and a sandbox made ahead of demand (the pool's
//! warm sandboxes) take this path, so it is the one every container test exercises.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pier_image::{IdMap, pinned_digest};
use pier_model::api::LogStream;
use pier_model::{ExecutionEnvironment, InstanceId};
use pier_runtime::cgroup::{InstanceCgroup, Limits};
use pier_runtime::logs::{InstanceLog, pump};
use pier_runtime::network::InstanceNet;
use pier_runtime::{
    Endpoint, ExitReason, Instance, InstanceSpec, Prepared, Runtime, RuntimeError, instance_env,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::bundle::{self, BundleInput, UserNamespace};
use crate::cgroups::{self, MemoryController};
use crate::engine::{Engine, Kind};
use crate::instance::ContainerInstance;
use crate::writable::WritableRoot;
use crate::{ContainerRuntime, OOM_POLL, shim, user};

/// How the app of a made sandbox is let run.
enum Launch {
    /// gen2: the shim holds a created container and waits for [`shim::GO`] on `control`.
    Shim {
        child: Box<tokio::process::Child>,
        control: tokio::net::UnixStream,
    },
    /// gen1: `runsc run` is spawned at the start (runsc's create cannot be split from its start here).
    Run,
}

/// A container instance's sandbox, made and waiting for its app to be let run (or to be discarded).
pub struct PreparedContainer {
    id: InstanceId,
    container: String,
    engine: Engine,
    log: InstanceLog,
    net: InstanceNet,
    port: u16,
    files: Leftovers,
    memory: Option<MemoryController>,
    cgroup: String,
    times: pier_runtime::StartupTimes,
    /// The log line that says what starts (written when it does).
    starting: String,
    launch: Launch,
}

/// What an instance's sandbox leaves on the host until it is removed: its bundle, a writable root
/// mounted inside it, and gen1's cgroups (gen2's are runc's, removed by `runc delete`).
struct Leftovers {
    bundle_dir: PathBuf,
    writable: Option<WritableRoot>,
    gvisor_cg: Option<Arc<InstanceCgroup>>,
}

impl Leftovers {
    /// Removes them all (whatever ran in the sandbox has ended or never started).
    async fn remove(&self) {
        if let Some(w) = &self.writable {
            w.unmount();
        }
        let _ = std::fs::remove_dir_all(&self.bundle_dir);
        if let Some(cg) = &self.gvisor_cg {
            cg.destroy().await;
        }
    }
}

/// Sends `child`'s stdout and stderr, line by line, to the instance's log.
fn pump_output(child: &mut tokio::process::Child, log: &InstanceLog) {
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, log.clone(), LogStream::Stdout));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, log.clone(), LogStream::Stderr));
    }
}

impl std::fmt::Debug for PreparedContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedContainer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ContainerRuntime {
    /// Makes everything an instance of `spec` needs but its app (see the module docs).
    pub(crate) async fn make(&self, spec: InstanceSpec) -> Result<PreparedContainer, RuntimeError> {
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
        let env = instance_env(&spec, port);
        let user = user::resolve(&image.rootfs, image.config.user.as_deref())
            .map_err(RuntimeError::Unsupported)?;
        let id = spec.id.as_str().to_owned();
        let cgroup = self.cgroup_path(&id);
        let netns_path = net.ns.path();
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
            match WritableRoot::mount(&bundle_dir, &image.rootfs, memory_limit, owner) {
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
        let log = self
            .logs
            .instance_writer(&spec.project, &spec.service, &spec.revision, &spec.id);
        let starting = format!(
            "container starting ({}): image {} ({}), PORT={port}, user {}:{}{}, memory {} MiB, cpu {}m, {} root",
            match env_kind {
                ExecutionEnvironment::Gen1 => "gen1, gVisor",
                ExecutionEnvironment::Gen2 => "gen2",
            },
            image_text
                .rsplit_once('@')
                .map(|(n, _)| n)
                .unwrap_or(&image_text),
            digest.short(),
            user.uid,
            user.gid,
            owner
                .map(|(u, _)| format!(" (host uid {})", u + user.uid))
                .unwrap_or_default(),
            memory_limit >> 20,
            template
                .cpu_millis()
                .unwrap_or(pier_runtime::DEFAULT_CPU_MILLIS),
            if writable.is_some() {
                "writable in-memory"
            } else {
                "read-only"
            },
        );
        let launch = match engine.kind {
            Kind::Runsc => Launch::Run,
            Kind::Runc => match self.create(&engine, &bundle_dir, &id, &log).await {
                Ok(l) => l,
                Err(e) => {
                    let _ = engine.delete(&id).await;
                    return Err(abandon(e));
                }
            },
        };
        let prepared = started.elapsed();
        Ok(PreparedContainer {
            id: spec.id,
            container: id,
            engine,
            log,
            net,
            port,
            files: Leftovers {
                bundle_dir,
                writable,
                gvisor_cg,
            },
            memory: self.memory.clone(),
            cgroup,
            times: pier_runtime::StartupTimes {
                image_root: Some(image_ready),
                bundle: Some(prepared - image_ready),
            },
            starting,
            launch,
        })
    }

    /// Runs the shim, which creates the container; returns once it is created (its first process waits
    /// in `runc init`), or why it could not be (the runtime's own words, from the instance's log).
    async fn create(
        &self,
        engine: &Engine,
        bundle: &std::path::Path,
        id: &str,
        log: &InstanceLog,
    ) -> Result<Launch, String> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| format!("making the container's control socket: {e}"))?;
        let mut cmd = tokio::process::Command::new(&self.config.shim);
        cmd.arg(shim::ARG)
            .arg(&engine.binary)
            .arg(&engine.state)
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot run the container shim {}: {e}",
                self.config.shim.display()
            )
        })?;
        pump_output(&mut child, log);
        ours.set_nonblocking(true)
            .map_err(|e| format!("the container's control socket: {e}"))?;
        let mut control = tokio::net::UnixStream::from_std(ours)
            .map_err(|e| format!("the container's control socket: {e}"))?;
        let mut byte = [0u8; 1];
        let created = tokio::select! {
            read = control.read(&mut byte) => matches!(read, Ok(1) if byte[0] == shim::CREATED),
            _ = child.wait() => false,
        };
        if created {
            return Ok(Launch::Shim {
                child: Box::new(child),
                control,
            });
        }
        drop(control);
        let status = child.wait().await;
        // Give the log pumps a moment to catch the runtime's last words.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let said: Vec<String> = log
            .tail(5)
            .into_iter()
            .filter(|l| !l.contains("[pier]"))
            .collect();
        Err(format!(
            "the container could not be created ({}){}",
            status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {}", said.join(" / "))
            }
        ))
    }
}

#[async_trait]
impl Prepared for PreparedContainer {
    fn id(&self) -> &InstanceId {
        &self.id
    }

    async fn start(self: Box<Self>) -> Result<Arc<dyn Instance>, RuntimeError> {
        let this = *self;
        let (mut child, runtime_pid) = match this.launch {
            Launch::Shim {
                mut child,
                mut control,
            } => {
                // Go, then the shim's answer: the app runs, or the container ended while it waited.
                let mut answer = [0u8; 1];
                let started = match control.write_all(&[shim::GO]).await {
                    Ok(()) => {
                        matches!(control.read(&mut answer).await, Ok(1) if answer[0] == shim::STARTED)
                    }
                    Err(_) => false,
                };
                drop(control);
                if !started {
                    let _ = child.wait().await;
                    let _ = this.engine.delete(&this.container).await;
                    this.files.remove().await;
                    return Err(RuntimeError::Unsupported(
                        "the container made for this start ended before its app could run".into(),
                    ));
                }
                let pid = child.id().map(|p| p as i32).unwrap_or(0);
                (child, pid)
            }
            Launch::Run => {
                let mut cmd = this.engine.run(&this.files.bundle_dir, &this.container);
                cmd.stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .kill_on_drop(false);
                let mut child = match cmd.spawn() {
                    Ok(c) => c,
                    Err(e) => {
                        this.files.remove().await;
                        return Err(RuntimeError::NotExecutable {
                            program: this.engine.binary.display().to_string(),
                            reason: e.to_string(),
                        });
                    }
                };
                pump_output(&mut child, &this.log);
                let pid = child.id().map(|p| p as i32).unwrap_or(0);
                (Box::new(child), pid)
            }
        };
        let times = this.times;
        this.log.system(&format!(
            "{} (root ready in {:.1} ms, bundle in {:.1} ms)",
            this.starting,
            times.image_root.unwrap_or_default().as_secs_f64() * 1e3,
            times.bundle.unwrap_or_default().as_secs_f64() * 1e3,
        ));
        let ns = this.net.ns.clone();
        let (engine, id, log) = (this.engine, this.container, this.log);
        let (exit_tx, exit_rx) = watch::channel(None);
        let (usage_cg, usage_memory, usage_path) = (
            this.files.gvisor_cg.clone(),
            this.memory.clone(),
            this.cgroup.clone(),
        );
        let stopping = Arc::new(AtomicBool::new(false));
        let oom_killed = Arc::new(AtomicBool::new(false));
        let oom_kills = {
            let memory = this.memory.clone();
            let (cgroup, gvisor_cg) = (this.cgroup.clone(), this.files.gvisor_cg.clone());
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
            let (files, net) = (this.files, this.net);
            tokio::spawn(async move {
                let status = child.wait().await;
                let oom = oom_killed.load(Ordering::SeqCst) || oom_kills() > 0;
                if let Err(e) = engine.delete(&id).await {
                    tracing::warn!(instance = %id, "deleting the container failed: {e}");
                }
                files.remove().await;
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
            id: this.id,
            container: id,
            endpoint: Endpoint::Netns(
                ns,
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, this.port)),
            ),
            engine,
            runtime_pid,
            exit: exit_rx,
            log,
            stopping,
            times,
            usage: Box::new(move || match &usage_cg {
                Some(cg) => cg.usage(),
                None => cgroups::usage(usage_memory.as_ref(), &usage_path),
            }),
        }))
    }

    async fn discard(self: Box<Self>) {
        let this = *self;
        if let Launch::Shim { mut child, control } = this.launch {
            // End of file on its control socket: the shim kills the waiting container and exits.
            drop(control);
            let _ = child.wait().await;
            if let Err(e) = this.engine.delete(&this.container).await {
                tracing::warn!(instance = %this.id, "deleting a warm container failed: {e}");
            }
        }
        this.files.remove().await;
        drop(this.net);
        tracing::debug!(instance = %this.id, "discarded a sandbox that was never started");
    }
}
