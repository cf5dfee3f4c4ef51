//! The control plane: what the admin API asks for, done safely.
//!
//! - **Deploy** records a revision (DEPLOYING), then proves it: one instance must start and listen on PORT.
//!   Only then is it marked READY and does traffic move (LATEST re-resolves). A revision that fails is marked
//!   FAILED with the reason and its last log lines; the previous revision never stops serving.
//! - **Routes.** After every change the control plane rebuilds the gateway's routing table from the store
//!   and publishes it atomically. Revisions that lose traffic keep their pool until idle, so requests in
//!   flight finish and instances drain.
//! - **Recovery.** At start, deploys a killed server left unfinished are marked failed, leftover instances
//!   are killed, and routes are rebuilt from the store: the same revisions at the same URLs.
//!
//! All store access runs on blocking threads; nothing here holds a lock the gateway needs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pier_activator::{Activator, PoolKey};
use pier_gateway::{Access, Gateway, LocalHandler, Route, RouteTable};
use pier_identity::Member;
use pier_identity::tokens::CLI_CLIENT_ID;
use pier_image::{ImageSource, ImageStore};
use pier_model::api::{
    DeployRequest, ImageView, LogEntry, PruneView, RegistryCredentialRequest, RegistryView,
    RevisionState, RevisionView, ServiceView, TrafficStatus, UpdateServiceRequest,
    UpdateTrafficRequest,
};
use pier_model::{
    ProjectName, RevisionName, ServiceName, SpecError, Tag, Traffic, TrafficKey, UrlScheme,
};
use pier_runtime::logs::{LogQuery, LogStore};
use pier_store::{NewRevision, RevisionRecord, ServiceRecord, ServiceSettings, Store, StoreError};
use thiserror::Error;
use tokio::sync::watch;

/// What went wrong, classified for the API's status codes.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The named thing does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Pier failed (500); the message is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
    /// The machine ran out of something (507, or 503 when it passes): see [`machine`].
    #[error("{}", .0.message())]
    Machine(machine::MachineFault),
}

impl ControlError {
    /// An internal error, unless its text names a fault of the machine.
    pub fn internal(message: impl Into<String>) -> ControlError {
        let message = message.into();
        match machine::MachineFault::recognize(&message) {
            Some(f) => ControlError::Machine(f),
            None => ControlError::Internal(message),
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ControlError::NotFound(m),
            StoreError::Conflict(m) => ControlError::Conflict(m),
            StoreError::Invalid(m) => ControlError::Invalid(m),
            other => ControlError::internal(other.to_string()),
        }
    }
}

impl From<SpecError> for ControlError {
    fn from(e: SpecError) -> Self {
        ControlError::Invalid(e.to_string())
    }
}

type Result<T, E = ControlError> = std::result::Result<T, E>;

mod claims;
pub mod identity;
pub mod machine;
mod signin;
pub use identity::{IdentityService, Resource};

/// How the control plane isolates instances.
#[derive(Clone, Debug)]
pub struct IsolationConfig {
    /// The installation's host ids, one block per service.
    pub ids: pier_sandbox::IdRange,
    /// The execution environment of image revisions that name none (`pier server
    /// --execution-environment`), recorded in each revision at deploy.
    pub default_environment: pier_model::ExecutionEnvironment,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        Self {
            ids: pier_sandbox::IdRange::default_range(),
            default_environment: pier_model::ExecutionEnvironment::Gen2,
        }
    }
}

/// The control plane.
pub struct Platform {
    store: Arc<Store>,
    isolation: IsolationConfig,
    activator: Arc<Activator>,
    gateway: Arc<Gateway>,
    logs: Arc<LogStore>,
    scheme: UrlScheme,
    identity: Arc<IdentityService>,
    changes: watch::Sender<u64>,
    publish: tokio::sync::Mutex<()>,
    unrouted_since: Mutex<HashMap<PoolKey, Instant>>,
    apex: Mutex<Option<Arc<dyn LocalHandler>>>,
    hosts_file: Mutex<Option<std::path::PathBuf>>,
    images: Mutex<Option<Arc<ImageStore>>>,
    /// Deploys hold it shared from pull to record; a prune holds it alone, so it never frees an image a
    /// deploy has pulled but not yet recorded.
    image_ops: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

fn random_chars(n: usize, alphabet: &[u8]) -> String {
    (0..n)
        .map(|_| alphabet[fastrand::usize(..alphabet.len())] as char)
        .collect()
}

fn project_hash() -> String {
    random_chars(6, b"0123456789abcdef")
}

fn revision_suffix() -> String {
    random_chars(3, b"abcdefghijklmnopqrstuvwxyz0123456789")
}

fn image_view(i: pier_store::ImageRecord) -> ImageView {
    ImageView {
        digest: i.digest,
        name: i.name,
        size: i.size,
        pulled_at: i.pulled_at,
        used_by: i.used_by,
    }
}

/// Rewrites a file in place: instances bind-mount this very inode, so it must not be replaced.
fn write_in_place(path: &std::path::Path, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        tracing::warn!(path = %path.display(), "cannot write the instances' hosts file: {e}");
    }
}

/// How long unrouted, idle pools are kept before they are dropped.
const POOL_LINGER: Duration = Duration::from_secs(120);

impl Platform {
    /// Wires the control plane. Call [`Platform::recover`] before serving.
    pub fn new(
        store: Arc<Store>,
        activator: Arc<Activator>,
        gateway: Arc<Gateway>,
        logs: Arc<LogStore>,
        scheme: UrlScheme,
        identity: Arc<IdentityService>,
        isolation: IsolationConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            isolation,
            activator,
            gateway,
            logs,
            scheme,
            identity,
            changes: watch::channel(0).0,
            publish: tokio::sync::Mutex::new(()),
            unrouted_since: Mutex::new(HashMap::new()),
            apex: Mutex::new(None),
            hosts_file: Mutex::new(None),
            images: Mutex::new(None),
            image_ops: tokio::sync::RwLock::new(()),
        })
    }

    /// The identity service.
    pub fn identity(&self) -> &Arc<IdentityService> {
        &self.identity
    }

    /// Serves Pier's own endpoints (identity provider, admin API) at the base domain itself.
    pub fn set_apex_handler(&self, handler: Arc<dyn LocalHandler>) {
        *self.apex.lock().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// Keeps `path` the `/etc/hosts` of every instance: service hosts map to the gateway's address
    /// inside each instance's network namespace, and `metadata.google.internal` to the metadata server's.
    pub fn set_instance_hosts_file(&self, path: std::path::PathBuf) {
        *self.hosts_file.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    }

    /// Lets revisions run container images from `images`.
    pub fn set_images(&self, images: Arc<ImageStore>) {
        *self.images.lock().unwrap_or_else(|p| p.into_inner()) = Some(images);
    }

    /// The URL scheme.
    pub fn scheme(&self) -> &UrlScheme {
        &self.scheme
    }

    /// The gateway this control plane publishes to.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ControlError::Internal(format!("store task failed: {e}")))?
            .map_err(ControlError::from)
    }

    fn changed(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Brings the platform back after a start: unfinished deploys are failed, routes rebuilt, warm
    /// instances started.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        let failed = self
            .db(|s| {
                s.fail_interrupted_deploys(
                    "the server stopped before this revision became ready; deploy again",
                )
            })
            .await?;
        for r in failed {
            tracing::warn!(revision = %r, "marked an interrupted deploy as failed");
        }
        self.db(|s| s.ensure_project(&ProjectName::default(), project_hash))
            .await?;
        self.identity
            .ensure_default_service_account(&ProjectName::default())?;
        self.publish_routes().await?;
        Ok(())
    }

    /// Rebuilds and publishes the routing table from the store.
    pub async fn publish_routes(self: &Arc<Self>) -> Result<()> {
        let _guard = self.publish.lock().await;
        let (projects, services, revisions) = self
            .db(|s| Ok((s.projects()?, s.services(None)?, s.all_revisions()?)))
            .await?;
        let hashes: HashMap<ProjectName, String> =
            projects.into_iter().map(|p| (p.name, p.hash)).collect();
        let revs: HashMap<(ProjectName, RevisionName), RevisionRecord> = revisions
            .into_iter()
            .map(|r| ((r.project.clone(), r.name.clone()), r))
            .collect();
        let mut table = claims::Claims::default();
        let mut routed: HashSet<PoolKey> = HashSet::new();
        let directory = self.identity.directory();
        for svc in &services {
            let Some(hash) = hashes.get(&svc.project) else {
                continue;
            };
            let access = Arc::new(Access {
                ingress: svc.ingress,
                invoker_check: svc.invoker_iam_check,
                invokers: directory.invokers(&svc.project, &svc.name),
                audiences: self.audiences(svc, hash),
            });
            let resolve = |key: &TrafficKey| -> Option<&RevisionRecord> {
                let name = match key {
                    TrafficKey::Latest => svc.latest_ready.as_ref()?,
                    TrafficKey::Revision(r) => r,
                };
                revs.get(&(svc.project.clone(), name.clone()))
                    .filter(|r| r.state == RevisionState::Ready)
            };
            // A revision that cannot be routed (say, its id block is beyond a range since narrowed)
            // makes its own service answer 503 with the reason; every other service keeps serving.
            let mut shares = Vec::new();
            let mut broken = None;
            for (key, pct) in svc.traffic.percents() {
                if let Some(rec) = resolve(&key) {
                    match self.pool_for(rec, svc.id_block, true) {
                        Ok(pool) => {
                            routed.insert(PoolKey {
                                project: rec.project.clone(),
                                revision: rec.name.clone(),
                            });
                            shares.push((pool, pct));
                        }
                        Err(why) => {
                            tracing::error!(service = %svc.name, revision = %rec.name, "cannot route: {why}");
                            broken = Some(cannot_serve(&rec.name));
                        }
                    }
                }
            }
            let host = self.scheme.service_host(&svc.name, hash);
            let route = match broken {
                Some(why) => Route::unavailable(
                    svc.project.clone(),
                    svc.name.clone(),
                    None,
                    why,
                    access.clone(),
                ),
                None => Route::split(
                    svc.project.clone(),
                    svc.name.clone(),
                    None,
                    shares,
                    access.clone(),
                ),
            };
            table.claim(host, Arc::new(route));
            for (tag, key) in svc.traffic.tags() {
                let Ok(host) = self.scheme.tag_host(&tag, &svc.name, hash) else {
                    continue;
                };
                let route = match resolve(&key) {
                    Some(rec) => {
                        let key = PoolKey {
                            project: rec.project.clone(),
                            revision: rec.name.clone(),
                        };
                        let serving = routed.contains(&key);
                        match self.pool_for(rec, svc.id_block, serving) {
                            Ok(pool) => {
                                routed.insert(key);
                                Route::split(
                                    svc.project.clone(),
                                    svc.name.clone(),
                                    Some(tag.clone()),
                                    vec![(pool, 100)],
                                    access.clone(),
                                )
                            }
                            Err(why) => Route::unavailable(
                                svc.project.clone(),
                                svc.name.clone(),
                                Some(tag.clone()),
                                {
                                    tracing::error!(service = %svc.name, revision = %rec.name, "cannot route tag {tag}: {why}");
                                    cannot_serve(&rec.name)
                                },
                                access.clone(),
                            ),
                        }
                    }
                    None => Route::unavailable(
                        svc.project.clone(),
                        svc.name.clone(),
                        Some(tag.clone()),
                        format!(
                            "tag {tag} of service {} points at no ready revision",
                            svc.name
                        ),
                        access.clone(),
                    ),
                };
                table.claim(host, Arc::new(route));
            }
        }
        let mut table = table.into_table();
        if let Some(apex) = self.apex.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            table.insert_local(self.scheme.domain().to_owned(), apex);
        }
        self.write_hosts_file(&table);
        self.gateway.publish(table);
        // Pools that lost their traffic stop keeping min-instances warm and are dropped once idle.
        let deploying: HashSet<PoolKey> = revs
            .values()
            .filter(|r| r.state == RevisionState::Deploying)
            .map(|r| PoolKey {
                project: r.project.clone(),
                revision: r.name.clone(),
            })
            .collect();
        let mut unrouted = self
            .unrouted_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for key in self.activator.keys() {
            if routed.contains(&key) || deploying.contains(&key) {
                unrouted.remove(&key);
            } else {
                if let Some(pool) = self.activator.pool(&key) {
                    pool.set_serving(false);
                }
                unrouted.entry(key).or_insert_with(Instant::now);
            }
        }
        Ok(())
    }

    /// The audiences a service's tokens may carry: each of its URLs (with and without a trailing slash,
    /// with and without the port), its custom audiences, and the CLI's client id.
    fn audiences(&self, svc: &ServiceRecord, hash: &str) -> Vec<String> {
        let mut hosts = vec![self.scheme.service_host(&svc.name, hash)];
        for (tag, _) in svc.traffic.tags() {
            if let Ok(h) = self.scheme.tag_host(&tag, &svc.name, hash) {
                hosts.push(h);
            }
        }
        let mut out = Vec::new();
        for h in hosts {
            let with_port = self.scheme.url(&h);
            let bare = format!("https://{h}");
            for u in [with_port, bare] {
                if !out.contains(&u) {
                    out.push(format!("{u}/"));
                    out.push(u);
                }
            }
        }
        out.extend(svc.custom_audiences.iter().cloned());
        out.push(CLI_CLIENT_ID.to_owned());
        out
    }

    fn write_hosts_file(&self, table: &RouteTable) {
        let mut hosts: Vec<&str> = table.hosts().collect();
        hosts.sort_unstable();
        let path = self
            .hosts_file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(path) = path {
            let mut text =
                String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
            text.push_str(&format!(
                "{} metadata.google.internal metadata\n# Pier services\n",
                pier_runtime::netns::METADATA_IP
            ));
            for h in &hosts {
                text.push_str(&format!("{} {h}\n", pier_runtime::netns::GATEWAY_IP));
            }
            write_in_place(&path, &text);
        }
    }

    /// How instances of a service with id block `block` and this template are isolated.
    fn isolation(
        &self,
        block: u32,
        template: &pier_model::RevisionTemplate,
    ) -> std::result::Result<pier_runtime::Isolation, String> {
        let ids = self.isolation.ids.block(block).ok_or_else(|| {
            format!(
                "this service's id block {block} is beyond the installation's range ({}): give Pier a larger range in /etc/subuid and /etc/subgid",
                self.isolation.ids
            )
        })?;
        Ok(pier_runtime::Isolation {
            ids: Some(ids),
            private_egress: template.vpc_egress.is_some(),
        })
    }

    fn pool_for(
        &self,
        rec: &RevisionRecord,
        block: u32,
        serving: bool,
    ) -> std::result::Result<Arc<pier_activator::RevisionPool>, String> {
        // An image revision runs the digest its tag resolved to at deploy, whatever the tag says now.
        let mut template = rec.template.clone();
        if template.image.is_some() {
            match &rec.image_digest {
                Some(pinned) => template.image = Some(pinned.clone()),
                None => return Err(format!("revision {} has no resolved image", rec.name)),
            }
        }
        let isolation = self.isolation(block, &template)?;
        self.activator.ensure_pool(
            &rec.project,
            &rec.service,
            &rec.name,
            Arc::new(template),
            isolation,
            serving,
        )
    }

    /// Drops pools that have served no traffic for a while and have no instances left.
    pub async fn sweep_pools(&self) {
        let expired: Vec<PoolKey> = {
            let unrouted = self
                .unrouted_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            unrouted
                .iter()
                .filter(|(_, since)| since.elapsed() >= POOL_LINGER)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in expired {
            let idle = self
                .activator
                .pool(&key)
                .is_none_or(|p| p.instance_count() == 0 && p.queued() == 0);
            if idle {
                self.activator.remove_pool(&key).await;
                self.unrouted_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        }
    }

    /// Creates a revision and starts proving it in the background. Returns at once with the revision in
    /// state DEPLOYING; [`Platform::wait_revision`] waits for the outcome.
    pub async fn deploy(
        self: &Arc<Self>,
        project: &ProjectName,
        service: &ServiceName,
        req: DeployRequest,
    ) -> Result<RevisionView> {
        let mut req = req;
        req.template.validate()?;
        // An image revision records the environment it runs in, so changing the server's default later
        // never changes it.
        if req.template.image.is_some() && req.template.execution_environment.is_none() {
            req.template.execution_environment = Some(self.isolation.default_environment);
        }
        self.activator
            .check(&req.template)
            .map_err(ControlError::Invalid)?;
        let image = match &req.template.image {
            Some(text) => {
                let source: ImageSource =
                    text.parse()
                        .map_err(|e: pier_image::reference::BadReference| {
                            ControlError::Invalid(e.to_string())
                        })?;
                if let ImageSource::Local { path, .. } = &source
                    && !path.is_absolute()
                {
                    return Err(ControlError::Invalid(format!(
                        "image {text}: give the archive's absolute path (the server reads it)"
                    )));
                }
                Some(source)
            }
            None => None,
        };
        // A revision runs as a service account: the project's default unless one is named.
        let sa = match &req.template.service_account {
            Some(email) => {
                let sa = self.identity.service_account(email)?;
                if sa.disabled {
                    return Err(ControlError::Invalid(format!(
                        "service account {} is disabled: enable it or choose another --service-account",
                        sa.email
                    )));
                }
                sa.email
            }
            None => {
                self.db({
                    let p = project.clone();
                    move |s| s.ensure_project(&p, project_hash)
                })
                .await?;
                self.identity.ensure_default_service_account(project)?
            }
        };
        req.template.service_account = Some(sa);
        if let Some(tag) = &req.tag {
            // Refuse tags that cannot make a URL before anything is recorded.
            self.scheme.tag_host(tag, service, "000000")?;
        }
        let project = project.clone();
        let service = service.clone();
        let wishes = NewRevision {
            no_traffic: req.no_traffic,
            tag: req.tag.clone(),
        };
        let mut settings = req.settings.clone();
        if settings.allow_unauthenticated.is_none() {
            settings.allow_unauthenticated = req.allow_unauthenticated;
        }
        // Everything is checked before the revision is recorded: from here on, every way out goes
        // through failing the revision, so none is left DEPLOYING.
        self.validate_settings(&settings)?;
        let template = req.template.clone();
        let (p2, s2) = (project.clone(), service.clone());
        let (svc, rev) = self
            .db(move |s| {
                s.ensure_project(&p2, project_hash)?;
                s.create_revision(&p2, &s2, &template, &wishes, &revision_suffix())
            })
            .await?;
        tracing::info!(project = %project, service = %service, revision = %rev.name, "deploying");
        if !settings.is_empty()
            && let Err(e) = self.apply_settings(&project, &service, &settings).await
        {
            self.fail_revision(&rev, &e.to_string(), Vec::new()).await;
            return Err(e);
        }
        self.changed();
        // A revision the runtimes cannot run fails at once, with the reason. An image revision gets its
        // pool once its image is pulled and pinned.
        let pool = match &image {
            Some(_) => None,
            None => match self.pool_for(&rev, svc.id_block, false) {
                Ok(p) => Some(p),
                Err(why) => {
                    self.fail_revision(&rev, &why, Vec::new()).await;
                    return Err(ControlError::Invalid(why));
                }
            },
        };
        let this = self.clone();
        let rec = rev.clone();
        let block = svc.id_block;
        tokio::spawn(async move {
            let (rec, pool) = match (pool, image) {
                (Some(pool), _) => (rec, pool),
                (None, Some(source)) => match this.pull_for(&rec, block, &source).await {
                    Ok(found) => found,
                    Err(why) => {
                        this.fail_revision(&rec, &why, Vec::new()).await;
                        return;
                    }
                },
                (None, None) => return,
            };
            match pool.start_one().await {
                Ok(()) => {
                    let (p, r) = (rec.project.clone(), rec.name.clone());
                    match this.db(move |s| s.mark_ready(&p, &r)).await {
                        Ok(_) => {
                            tracing::info!(revision = %rec.name, "revision ready");
                            if let Err(e) = this.publish_routes().await {
                                tracing::error!(error = %e, "publishing routes failed");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "recording a ready revision failed"),
                    }
                    this.changed();
                }
                Err((why, tail)) => this.fail_revision(&rec, &why, tail).await,
            }
        });
        self.revision_view(&rev).await
    }

    /// Pulls a new revision's image, records the digest it resolved to, and makes its pool.
    async fn pull_for(
        self: &Arc<Self>,
        rec: &RevisionRecord,
        block: u32,
        source: &ImageSource,
    ) -> std::result::Result<(RevisionRecord, Arc<pier_activator::RevisionPool>), String> {
        let images = self
            .images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| "this server cannot run container images".to_owned())?;
        let _recording = self.image_ops.read().await;
        let started = Instant::now();
        let info = images.pull(source).await.map_err(|e| e.to_string())?;
        tracing::info!(
            revision = %rec.name,
            image = %source,
            digest = %info.digest,
            downloaded = info.downloaded,
            elapsed = ?started.elapsed(),
            "image pulled"
        );
        let (p, r, pinned, name, size) = (
            rec.project.clone(),
            rec.name.clone(),
            info.pinned.clone(),
            source.to_string(),
            info.size,
        );
        self.db(move |s| s.set_revision_image(&p, &r, &pinned, &name, size))
            .await
            .map_err(|e| e.to_string())?;
        let mut rec = rec.clone();
        rec.image_digest = Some(info.pinned);
        let pool = self.pool_for(&rec, block, false)?;
        Ok((rec, pool))
    }

    /// The server's images.
    pub async fn list_images(&self) -> Result<Vec<ImageView>> {
        let rows = self.db(|s| s.images()).await?;
        Ok(rows.into_iter().map(image_view).collect())
    }

    /// Forgets images no revision runs and frees their blobs, layers and roots.
    pub async fn prune_images(&self) -> Result<PruneView> {
        let _alone = self.image_ops.write().await;
        let removed = self.db(|s| s.delete_unused_images()).await?;
        // Deny on doubt: a recorded digest that does not parse stops the prune rather than leaving
        // its content off the keep list (and so freeing exactly it).
        let keep: Vec<pier_image::Digest> = self
            .db(|s| s.images())
            .await?
            .iter()
            .map(|i| {
                i.digest.parse().map_err(|_| {
                    ControlError::internal(format!(
                        "image {} has an unreadable digest {:?} in the store: nothing was pruned; delete the image record or restore the store",
                        i.name, i.digest
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let images = self
            .images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let report = match images {
            Some(images) => images.gc(&keep).await,
            None => pier_image::GcReport::default(),
        };
        tracing::info!(
            images = removed.len(),
            blobs = report.blobs,
            bytes = report.bytes,
            "pruned images"
        );
        Ok(PruneView {
            images: removed.into_iter().map(image_view).collect(),
            blobs: report.blobs,
            bytes: report.bytes,
            unpacked: report.unpacked,
        })
    }

    /// Sets the credentials Pier pulls from `registry` with.
    pub async fn set_registry_credential(
        &self,
        registry: &str,
        req: RegistryCredentialRequest,
    ) -> Result<RegistryView> {
        let registry = registry.trim().to_ascii_lowercase();
        if registry.is_empty() || registry.contains('/') || registry.contains(char::is_whitespace) {
            return Err(ControlError::Invalid(format!(
                "registry {registry:?} must be a host with an optional port, like localhost:5000"
            )));
        }
        if req.secret.is_empty() {
            return Err(ControlError::Invalid(
                "the password or token is empty: pass it on stdin (--password-stdin)".into(),
            ));
        }
        let r = registry.clone();
        self.db(move |s| s.set_registry_credential(&r, &req.username, &req.secret))
            .await?;
        self.registries()
            .await?
            .into_iter()
            .find(|v| v.registry == registry)
            .ok_or_else(|| ControlError::Internal("credentials vanished".into()))
    }

    /// Registries with credentials.
    pub async fn registries(&self) -> Result<Vec<RegistryView>> {
        let rows = self.db(|s| s.registries()).await?;
        Ok(rows
            .into_iter()
            .map(|(registry, username, updated_at)| RegistryView {
                registry,
                username,
                updated_at,
            })
            .collect())
    }

    /// Removes a registry's credentials.
    pub async fn delete_registry_credential(&self, registry: &str) -> Result<()> {
        let r = registry.trim().to_ascii_lowercase();
        self.db(move |s| s.delete_registry_credential(&r)).await
    }

    async fn fail_revision(self: &Arc<Self>, rec: &RevisionRecord, why: &str, tail: Vec<String>) {
        // A fault of the machine is named, with what to do.
        let why = &machine::explain(why);
        tracing::warn!(revision = %rec.name, "revision failed: {why}");
        let (p, r, w) = (rec.project.clone(), rec.name.clone(), why.to_owned());
        if let Err(e) = self.db(move |s| s.mark_failed(&p, &r, &w, &tail)).await {
            tracing::error!(error = %e, "recording a failed revision failed");
        }
        self.activator
            .remove_pool(&PoolKey {
                project: rec.project.clone(),
                revision: rec.name.clone(),
            })
            .await;
        self.changed();
    }

    /// Waits until a revision leaves DEPLOYING (or `timeout` passes) and returns it.
    pub async fn wait_revision(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &RevisionName,
        timeout: Duration,
    ) -> Result<RevisionView> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.get_revision(project, name).await?;
            if view.state != RevisionState::Deploying {
                return Ok(view);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Ok(view);
            }
        }
    }

    fn url_for(&self, svc: &ServiceRecord, hash: &str) -> String {
        self.scheme.url(&self.scheme.service_host(&svc.name, hash))
    }

    async fn hash_of(&self, project: &ProjectName) -> Result<String> {
        let p = project.clone();
        Ok(self
            .db(move |s| s.project(&p))
            .await?
            .map(|p| p.hash)
            .unwrap_or_default())
    }

    fn resolved(
        svc: &ServiceRecord,
        revs: &[RevisionRecord],
    ) -> Vec<(Option<RevisionName>, bool, u8, Option<Tag>)> {
        let ready = |n: &RevisionName| {
            revs.iter()
                .any(|r| r.name == *n && r.state == RevisionState::Ready)
        };
        svc.traffic
            .0
            .iter()
            .map(|t| {
                let rev = match t.key() {
                    TrafficKey::Latest => svc.latest_ready.clone(),
                    TrafficKey::Revision(r) => Some(r),
                }
                .filter(ready);
                (rev, t.latest_revision, t.percent, t.tag.clone())
            })
            .collect()
    }

    async fn service_view(&self, svc: ServiceRecord) -> Result<ServiceView> {
        let hash = self.hash_of(&svc.project).await?;
        let (p, n) = (svc.project.clone(), svc.name.clone());
        let revs = self.db(move |s| s.revisions(&p, Some(&n))).await?;
        let latest = svc
            .latest_created
            .as_ref()
            .and_then(|n| revs.iter().find(|r| r.name == *n));
        let traffic: Vec<TrafficStatus> = Self::resolved(&svc, &revs)
            .into_iter()
            .map(
                |(revision_name, latest_revision, percent, tag)| TrafficStatus {
                    url: tag.as_ref().and_then(|t| {
                        self.scheme
                            .tag_host(t, &svc.name, &hash)
                            .ok()
                            .map(|h| self.scheme.url(&h))
                    }),
                    revision_name,
                    latest_revision,
                    percent,
                    tag,
                },
            )
            .collect();
        let (ready, message) = match latest {
            Some(r) if r.state == RevisionState::Failed => (
                false,
                Some(format!(
                    "revision {} failed: {}",
                    r.name,
                    r.message.clone().unwrap_or_default()
                )),
            ),
            Some(r) if r.state == RevisionState::Deploying => {
                (false, Some(format!("revision {} is deploying", r.name)))
            }
            Some(_) => (true, None),
            None => (false, Some("no revision".into())),
        };
        // The most recent unexpected instance end among the revisions that serve.
        let last_instance_exit = traffic
            .iter()
            .filter_map(|t| t.revision_name.as_ref())
            .filter_map(|r| {
                self.activator.pool(&PoolKey {
                    project: svc.project.clone(),
                    revision: r.clone(),
                })
            })
            .filter_map(|p| p.last_exit())
            .max_by(|a, b| a.at.cmp(&b.at));
        Ok(ServiceView {
            last_instance_exit,
            url: self.url_for(&svc, &hash),
            template: latest.map(|r| r.template.clone()),
            traffic_spec: svc.traffic.0.clone(),
            traffic,
            latest_created_revision: svc.latest_created.clone(),
            latest_ready_revision: svc.latest_ready.clone(),
            ready,
            message,
            allow_unauthenticated: self.identity.directory().is_public(&svc.project, &svc.name),
            ingress: svc.ingress,
            invoker_iam_check: svc.invoker_iam_check,
            custom_audiences: svc.custom_audiences.clone(),
            created_at: svc.created_at.clone(),
            updated_at: svc.updated_at.clone(),
            name: svc.name,
            project: svc.project,
        })
    }

    async fn revision_view(&self, rec: &RevisionRecord) -> Result<RevisionView> {
        let (p, n) = (rec.project.clone(), rec.service.clone());
        let svc = self.db(move |s| s.service(&p, &n)).await?;
        let (mut percent, mut tags) = (0u8, Vec::new());
        if let Some(svc) = &svc {
            let (p, n) = (svc.project.clone(), svc.name.clone());
            let revs = self.db(move |s| s.revisions(&p, Some(&n))).await?;
            for (rev, _, pct, tag) in Self::resolved(svc, &revs) {
                if rev.as_ref() == Some(&rec.name) {
                    percent = percent.saturating_add(pct);
                    tags.extend(tag);
                }
            }
        }
        let pool = self.activator.pool(&PoolKey {
            project: rec.project.clone(),
            revision: rec.name.clone(),
        });
        let instances = pool.as_ref().map(|p| p.instances()).unwrap_or_default();
        let last_instance_exit = pool.as_ref().and_then(|p| p.last_exit());
        Ok(RevisionView {
            warnings: Vec::new(),
            name: rec.name.clone(),
            service: rec.service.clone(),
            project: rec.project.clone(),
            template: rec.template.clone(),
            state: rec.state,
            message: rec.message.clone(),
            log_tail: rec.log_tail.clone(),
            created_at: rec.created_at.clone(),
            ready_at: rec.ready_at.clone(),
            percent,
            tags,
            instances,
            image_digest: rec.image_digest.clone(),
            last_instance_exit,
        })
    }

    /// One service.
    pub async fn get_service(
        &self,
        project: &ProjectName,
        name: &ServiceName,
    ) -> Result<ServiceView> {
        let (p, n) = (project.clone(), name.clone());
        let svc = self
            .db(move |s| s.service(&p, &n))
            .await?
            .ok_or_else(|| not_found_service(project, name))?;
        self.service_view(svc).await
    }

    /// Services of a project.
    pub async fn list_services(&self, project: &ProjectName) -> Result<Vec<ServiceView>> {
        let p = project.clone();
        let services = self.db(move |s| s.services(Some(&p))).await?;
        let mut out = Vec::with_capacity(services.len());
        for svc in services {
            out.push(self.service_view(svc).await?);
        }
        Ok(out)
    }

    /// Deletes a service: its URLs stop at once, its instances drain and stop, its logs go.
    pub async fn delete_service(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
    ) -> Result<()> {
        let (p, n) = (project.clone(), name.clone());
        let revisions = self.db(move |s| s.delete_service(&p, &n)).await?;
        self.publish_routes().await?;
        for r in revisions {
            self.activator
                .remove_pool(&PoolKey {
                    project: project.clone(),
                    revision: r,
                })
                .await;
        }
        self.logs.remove(project, name);
        self.identity.reload()?;
        self.changed();
        tracing::info!(project = %project, service = %name, "deleted service");
        Ok(())
    }

    /// Revisions of a project, optionally of one service.
    pub async fn list_revisions(
        &self,
        project: &ProjectName,
        service: Option<&ServiceName>,
    ) -> Result<Vec<RevisionView>> {
        let (p, s2) = (project.clone(), service.cloned());
        if let Some(svc) = service {
            let (p, n) = (project.clone(), svc.clone());
            if self.db(move |s| s.service(&p, &n)).await?.is_none() {
                return Err(not_found_service(project, svc));
            }
        }
        let revs = self.db(move |s| s.revisions(&p, s2.as_ref())).await?;
        let mut out = Vec::with_capacity(revs.len());
        for r in &revs {
            out.push(self.revision_view(r).await?);
        }
        Ok(out)
    }

    /// One revision.
    pub async fn get_revision(
        &self,
        project: &ProjectName,
        name: &RevisionName,
    ) -> Result<RevisionView> {
        let (p, n) = (project.clone(), name.clone());
        let rec = self.db(move |s| s.revision(&p, &n)).await?.ok_or_else(|| {
            ControlError::NotFound(format!(
                "revision {name} does not exist in project {project}: `pier revisions list` shows them"
            ))
        })?;
        self.revision_view(&rec).await
    }

    /// Deletes a revision that serves no traffic and has no tag.
    pub async fn delete_revision(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &RevisionName,
    ) -> Result<()> {
        let (p, n) = (project.clone(), name.clone());
        self.db(move |s| {
            s.delete_revision(&p, &n, |svc, rev, revs| {
                let serving = Self::resolved(svc, revs)
                    .into_iter()
                    .any(|(r, _, pct, tag)| r.as_ref() == Some(&rev.name) && (pct > 0 || tag.is_some()));
                let named = svc.traffic.named_revisions().any(|r| *r == rev.name);
                if serving || named {
                    return Err(StoreError::Conflict(format!(
                        "revision {} is serving traffic or tagged: move its traffic and tags away first (pier services update-traffic)",
                        rev.name
                    )));
                }
                Ok(())
            })
        })
        .await?;
        self.publish_routes().await?;
        self.activator
            .remove_pool(&PoolKey {
                project: project.clone(),
                revision: name.clone(),
            })
            .await;
        self.changed();
        Ok(())
    }

    /// Changes a service's traffic and tags.
    pub async fn update_traffic(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
        req: UpdateTrafficRequest,
    ) -> Result<ServiceView> {
        let (p, n) = (project.clone(), name.clone());
        let hash = self.hash_of(project).await?;
        let scheme = self.scheme.clone();
        let svc = self
            .db(move |s| {
                s.update_service(&p, &n, |svc, revs| {
                    let traffic = plan_traffic(svc, revs, &req)
                        .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    for (tag, _) in traffic.tags() {
                        scheme
                            .tag_host(&tag, &svc.name, &hash)
                            .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    }
                    let mut settings = svc.settings();
                    settings.traffic = traffic;
                    Ok(settings)
                })
            })
            .await?;
        self.publish_routes().await?;
        self.changed();
        self.service_view(svc).await
    }

    /// Changes service settings that need no new revision.
    pub async fn update_service(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
        req: UpdateServiceRequest,
    ) -> Result<ServiceView> {
        let (p, n) = (project.clone(), name.clone());
        if self.db(move |s| s.service(&p, &n)).await?.is_none() {
            return Err(not_found_service(project, name));
        }
        self.apply_settings(project, name, &req).await?;
        self.changed();
        self.get_service(project, name).await
    }

    /// Checks service settings without changing anything.
    fn validate_settings(&self, req: &UpdateServiceRequest) -> Result<()> {
        for a in &req.add_custom_audiences {
            pier_model::settings::validate_audience(a)?;
            if self.scheme.is_own_audience(a) {
                return Err(ControlError::Invalid(format!(
                    "custom audience {a:?} is Pier's own (its CLI, its API, or a URL under {}): tokens meant for them must never reach a service whole; use the service's own name or another URL",
                    self.scheme.domain()
                )));
            }
        }
        Ok(())
    }

    async fn apply_settings(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
        req: &UpdateServiceRequest,
    ) -> Result<()> {
        self.validate_settings(req)?;
        let (p, n, r) = (project.clone(), name.clone(), req.clone());
        self.db(move |s| {
            s.update_service(&p, &n, |svc, _| {
                let mut settings: ServiceSettings = svc.settings();
                if let Some(i) = r.ingress {
                    settings.ingress = i;
                }
                if let Some(c) = r.invoker_iam_check {
                    settings.invoker_iam_check = c;
                }
                if r.clear_custom_audiences {
                    settings.custom_audiences.clear();
                }
                settings
                    .custom_audiences
                    .retain(|a| !r.remove_custom_audiences.contains(a));
                for a in &r.add_custom_audiences {
                    if !settings.custom_audiences.contains(a) {
                        settings.custom_audiences.push(a.clone());
                    }
                }
                Ok(settings)
            })
        })
        .await?;
        if let Some(public) = req.allow_unauthenticated {
            let resource = Resource::Service(project.clone(), name.clone());
            self.identity.modify_policy(&resource, None, |p| {
                if public {
                    p.add("roles/run.invoker", &Member::AllUsers)
                        .map(|_| ())
                        .map_err(|e| ControlError::Invalid(e.to_string()))
                } else {
                    p.remove("roles/run.invoker", &Member::AllUsers);
                    Ok(())
                }
            })?;
        }
        self.publish_routes().await
    }

    /// A resource's IAM policy.
    pub fn get_iam_policy(&self, resource: &Resource) -> Result<pier_identity::Policy> {
        self.identity.get_policy(resource)
    }

    /// Replaces a resource's IAM policy; refused (409) if `policy.etag` is set and stale.
    pub async fn set_iam_policy(
        self: &Arc<Self>,
        resource: &Resource,
        policy: pier_identity::Policy,
    ) -> Result<pier_identity::Policy> {
        let normalized = policy
            .normalized()
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let etag = policy.etag.clone();
        let out = self.identity.modify_policy(resource, Some(&etag), |p| {
            p.bindings = normalized.bindings.clone();
            Ok(())
        })?;
        self.publish_routes().await?;
        self.changed();
        Ok(out)
    }

    /// Grants (`add`) or revokes a role for a member on a resource.
    pub async fn change_binding(
        self: &Arc<Self>,
        resource: &Resource,
        member: &str,
        role: &str,
        add: bool,
    ) -> Result<pier_identity::Policy> {
        let member: Member = member
            .parse()
            .map_err(|e: pier_identity::IdentityError| ControlError::Invalid(e.to_string()))?;
        if pier_identity::iam::role(role).is_none() {
            return Err(ControlError::Invalid(format!(
                "unknown role {role:?}: use one of {}",
                pier_identity::iam::ROLES
                    .iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let out = self.identity.modify_policy(resource, None, |p| {
            if add {
                p.add(role, &member)
                    .map(|_| ())
                    .map_err(|e| ControlError::Invalid(e.to_string()))
            } else if p.remove(role, &member) {
                Ok(())
            } else {
                Err(ControlError::NotFound(format!(
                    "{member} has no binding to {role} here"
                )))
            }
        })?;
        self.publish_routes().await?;
        self.changed();
        Ok(out)
    }

    /// Whether a project exists.
    pub async fn project_exists(&self, project: &ProjectName) -> Result<bool> {
        let p = project.clone();
        Ok(self.db(move |s| s.project(&p)).await?.is_some())
    }

    /// Replaces a service's traffic list wholesale (from a manifest).
    pub async fn set_traffic(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
        traffic: Traffic,
    ) -> Result<ServiceView> {
        self.update_traffic(
            project,
            name,
            UpdateTrafficRequest {
                to_revisions: traffic
                    .percents()
                    .into_iter()
                    .map(|(k, p)| pier_model::api::TrafficAssignment {
                        target: k.to_string(),
                        percent: p,
                    })
                    .collect(),
                update_tags: traffic
                    .tags()
                    .into_iter()
                    .map(|(t, k)| pier_model::api::TagAssignment {
                        tag: t,
                        revision: k.to_string(),
                    })
                    .collect(),
                clear_tags: true,
                ..Default::default()
            },
        )
        .await
    }

    /// A service's newest log lines.
    pub async fn logs(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        query: LogQuery,
    ) -> Result<Vec<LogEntry>> {
        let (p, n) = (project.clone(), service.clone());
        if self.db(move |s| s.service(&p, &n)).await?.is_none() {
            return Err(not_found_service(project, service));
        }
        let logs = self.logs.clone();
        let (p, n) = (project.clone(), service.clone());
        tokio::task::spawn_blocking(move || logs.read(&p, &n, &query))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Internal(format!("reading logs: {e}")))
    }

    /// The log store (for following logs live).
    pub fn log_store(&self) -> &Arc<LogStore> {
        &self.logs
    }

    /// Stops everything: in-flight requests finish, then instances stop.
    pub async fn shutdown(&self) {
        self.activator.shutdown().await;
        let images = self
            .images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(images) = images {
            images.unmount_all();
        }
    }
}

/// What callers of a revision that cannot be routed are told; the reason itself (configuration of
/// the server) goes to the server's log.
fn cannot_serve(revision: &RevisionName) -> String {
    format!(
        "revision {revision} cannot be started on this server; its operator finds why in the server's log"
    )
}

fn not_found_service(project: &ProjectName, name: &ServiceName) -> ControlError {
    ControlError::NotFound(format!(
        "service {name} does not exist in project {project}: `pier services list` shows them"
    ))
}

/// Computes a service's new traffic from an `update-traffic` request. Targets may be revision names,
/// tags, or `LATEST`; revisions must belong to the service and be ready.
pub fn plan_traffic(
    svc: &ServiceRecord,
    revs: &[RevisionRecord],
    req: &UpdateTrafficRequest,
) -> std::result::Result<Traffic, SpecError> {
    let tags = svc.traffic.tags();
    let resolve = |target: &str| -> std::result::Result<TrafficKey, SpecError> {
        if target == "LATEST" {
            return Ok(TrafficKey::Latest);
        }
        if let Some(r) = revs.iter().find(|r| r.name.as_str() == target) {
            if r.state != RevisionState::Ready {
                return Err(SpecError::new(format!(
                    "revision {target} is not ready ({:?}): only ready revisions can serve",
                    r.state
                )));
            }
            return Ok(TrafficKey::Revision(r.name.clone()));
        }
        if let Some((_, key)) = tags.iter().find(|(t, _)| t.as_str() == target) {
            return Ok(key.clone());
        }
        Err(SpecError::new(format!(
            "{target} is neither a revision of service {} nor one of its tags nor LATEST",
            svc.name
        )))
    };
    let mut traffic = svc.traffic.clone();
    if req.clear_tags {
        traffic = traffic.clear_tags();
    }
    if !req.remove_tags.is_empty() {
        traffic = traffic.remove_tags(&req.remove_tags)?;
    }
    if !req.update_tags.is_empty() {
        let updates = req
            .update_tags
            .iter()
            .map(|t| Ok((t.tag.clone(), resolve(&t.revision)?)))
            .collect::<std::result::Result<Vec<_>, SpecError>>()?;
        traffic = traffic.set_tags(&updates);
    }
    if req.to_latest {
        traffic = Traffic::from_parts(&[(TrafficKey::Latest, 100)], &traffic.tags());
    } else if !req.to_revisions.is_empty() {
        let assignments = req
            .to_revisions
            .iter()
            .map(|a| Ok((resolve(&a.target)?, a.percent)))
            .collect::<std::result::Result<Vec<_>, SpecError>>()?;
        traffic = traffic.assign(&assignments)?;
    }
    traffic.validate()?;
    Ok(traffic)
}

#[cfg(test)]
mod tests;
