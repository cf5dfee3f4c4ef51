//! The control plane: what the admin API asks for, done safely.
//!
//! - **Deploy** records a revision (DEPLOYING), then proves it: one instance must start and listen on PORT.
//!   Only then is it marked READY and does traffic move (LATEST re-resolves). A revision that fails is marked
//!   FAILED with the reason and its last log lines; the previous revision never stops serving.
//! - **Routes.** After every change the control plane rebuilds the routing table from the store (a pure
//!   plan, then pools and each route's admission filter) and publishes it through its
//!   [`pier_gateway::RoutePublisher`]; it never holds the gateway, which reads the other end. Revisions that lose traffic keep their pool until idle, so requests in
//!   flight finish and instances drain.
//! - **Recovery.** At start, deploys a killed server left unfinished are marked failed, leftover instances
//!   are killed, and routes are rebuilt from the store: the same revisions at the same URLs.
//!
//! All store access runs on blocking threads; nothing here holds a lock the gateway needs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pier_activator::{Activator, PoolKey};
use pier_gateway::{Filter, Route, RoutePublisher};
use pier_identity::Member;
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
use tokio::sync::watch;

type Result<T, E = ControlError> = std::result::Result<T, E>;

mod claims;
mod deploy;
mod hosts_file;
mod images;
mod routes;
mod traffic;
mod views;
pub use hosts_file::InstanceHostsFile;
pub use pier_fault::{ControlError, machine};
pub use pier_iam as identity;
pub use pier_iam::{IdentityService, Resource};
pub use traffic::plan_traffic;

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

/// What the control plane is built from, all given at once.
pub struct PlatformParts {
    /// Where services, revisions and identities are kept.
    pub store: Arc<Store>,
    /// Instances: pools per revision, cold starts, scaling.
    pub activator: Arc<Activator>,
    /// Where routing tables go (the gateway reads the other end).
    pub routes: RoutePublisher,
    /// The first filter of every route: ingress, identity and IAM
    /// ([`pier_gateway::auth::IdentityGuard`]; tests of forwarding alone say
    /// [`pier_gateway::AllowAll`]).
    pub admission: Arc<dyn Filter>,
    /// Instances' log lines.
    pub logs: Arc<LogStore>,
    /// The URL forms.
    pub scheme: UrlScheme,
    /// Users, accounts, keys, policies and tokens.
    pub identity: Arc<IdentityService>,
    /// How instances are isolated.
    pub isolation: IsolationConfig,
    /// Container images; `None` when this server cannot run them (deploys of images are refused
    /// with the reason).
    pub images: Option<Arc<ImageStore>>,
}

/// The control plane.
pub struct Platform {
    store: Arc<Store>,
    isolation: IsolationConfig,
    activator: Arc<Activator>,
    routes: RoutePublisher,
    admission: Arc<dyn Filter>,
    logs: Arc<LogStore>,
    scheme: UrlScheme,
    identity: Arc<IdentityService>,
    changes: watch::Sender<u64>,
    publish: tokio::sync::Mutex<()>,
    unrouted_since: Mutex<HashMap<PoolKey, Instant>>,
    images: Option<Arc<ImageStore>>,
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

/// How long unrouted, idle pools are kept before they are dropped.
const POOL_LINGER: Duration = Duration::from_secs(120);

impl Platform {
    /// Builds the control plane from its parts. Call [`Platform::recover`] before serving.
    pub fn new(parts: PlatformParts) -> Arc<Self> {
        let PlatformParts {
            store,
            activator,
            routes,
            admission,
            logs,
            scheme,
            identity,
            isolation,
            images,
        } = parts;
        Arc::new(Self {
            store,
            isolation,
            activator,
            routes,
            admission,
            logs,
            scheme,
            identity,
            changes: watch::channel(0).0,
            publish: tokio::sync::Mutex::new(()),
            unrouted_since: Mutex::new(HashMap::new()),
            images,
            image_ops: tokio::sync::RwLock::new(()),
        })
    }

    /// The identity service.
    pub fn identity(&self) -> &Arc<IdentityService> {
        &self.identity
    }

    /// The URL scheme.
    pub fn scheme(&self) -> &UrlScheme {
        &self.scheme
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T> {
        self.store.call(f).await.map_err(ControlError::from)
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
            .blocking(|id| id.ensure_default_service_account(&ProjectName::default()))
            .await?;
        self.publish_routes().await?;
        Ok(())
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
        self.identity.blocking(|id| id.reload()).await?;
        self.changed();
        tracing::info!(project = %project, service = %name, "deleted service");
        Ok(())
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

    /// A resource's IAM policy.
    pub async fn get_iam_policy(&self, resource: &Resource) -> Result<pier_identity::Policy> {
        let resource = resource.clone();
        self.identity
            .blocking(move |id| id.get_policy(&resource))
            .await
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
        let resource = resource.clone();
        let out = self
            .identity
            .blocking(move |id| {
                id.modify_policy(&resource, Some(&etag), |p| {
                    p.bindings = normalized.bindings.clone();
                    Ok(())
                })
            })
            .await?;
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
        let (resource, role) = (resource.clone(), role.to_owned());
        let out = self
            .identity
            .blocking(move |id| {
                id.modify_policy(&resource, None, |p| {
                    if add {
                        p.add(&role, &member)
                            .map(|_| ())
                            .map_err(|e| ControlError::Invalid(e.to_string()))
                    } else if p.remove(&role, &member) {
                        Ok(())
                    } else {
                        Err(ControlError::NotFound(format!(
                            "{member} has no binding to {role} here"
                        )))
                    }
                })
            })
            .await?;
        self.publish_routes().await?;
        self.changed();
        Ok(out)
    }

    /// Whether a project exists.
    pub async fn project_exists(&self, project: &ProjectName) -> Result<bool> {
        let p = project.clone();
        Ok(self.db(move |s| s.project(&p)).await?.is_some())
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
        if let Some(images) = &self.images {
            images.unmount_all();
        }
    }
}

fn not_found_service(project: &ProjectName, name: &ServiceName) -> ControlError {
    ControlError::NotFound(format!(
        "service {name} does not exist in project {project}: `pier services list` shows them"
    ))
}

#[cfg(test)]
mod platform_tests;
#[cfg(test)]
mod tests;
