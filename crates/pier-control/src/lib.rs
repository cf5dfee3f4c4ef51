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

pub mod api_gateways;
mod claims;
mod deploy;
pub mod domains;
pub mod hosting;
mod hosts_file;
mod images;
mod lifecycle;
pub mod operations;
mod policies;
mod pools;
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
    /// Custom domains: DNS look-ups, the records to ask for, certificates.
    pub domains: domains::DomainConfig,
    /// API gateways: JWT key fetching, external backends.
    pub api_gateways: api_gateways::ApiGatewayConfig,
    /// Hosting: where site files are stored.
    pub hosting: hosting::HostingConfig,
}

/// The control plane.
pub struct Platform {
    store: Arc<Store>,
    isolation: IsolationConfig,
    activator: Arc<Activator>,
    routes: RoutePublisher,
    admission: Arc<dyn Filter>,
    logs: Arc<LogStore>,
    /// The gateway's request log, when the server keeps one (see [`Platform::keep_request_logs`]).
    request_logs: std::sync::OnceLock<Arc<LogStore>>,
    /// Deploys' progress, as long-running operations.
    operations: operations::Operations,
    scheme: UrlScheme,
    identity: Arc<IdentityService>,
    changes: watch::Sender<u64>,
    publish: tokio::sync::Mutex<()>,
    unrouted_since: Mutex<HashMap<PoolKey, Instant>>,
    images: Option<Arc<ImageStore>>,
    /// Deploys hold it shared from pull to record; a prune holds it alone, so it never frees an image a
    /// deploy has pulled but not yet recorded.
    image_ops: tokio::sync::RwLock<()>,
    domains: domains::DomainConfig,
    /// Where each mapped domain pointed at the last look.
    pointing: Mutex<HashMap<String, domains::Pointing>>,
    /// One look at the domains at a time, so an older look never tells the certificates last.
    domain_checks: tokio::sync::Mutex<()>,
    api_gateways: api_gateways::ApiGatewayConfig,
    /// JWT key sets when the server gave no registry (they fetch nothing).
    fallback_jwks: Arc<pier_apigateway::JwksRegistry>,
    /// Parsed API configs by (project, API, config): configs never change.
    api_specs: Mutex<HashMap<(String, String, String), Arc<pier_apigateway::ApiSpec>>>,
    /// Each gateway's quota counts, kept across its config switches.
    quota_books: Mutex<HashMap<(String, String), Arc<pier_apigateway::QuotaBook>>>,
    hosting: hosting::HostingConfig,
    /// Compiled site versions that channels serve (see [`hosting::routes`]).
    site_cache: Mutex<HashMap<hosting::routes::VersionKey, Arc<pier_hosting::SiteVersion>>>,
    /// Republishes routes when the next preview channel expires.
    expiry_timer: Mutex<Option<tokio::task::JoinHandle<()>>>,
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
            domains,
            api_gateways,
            hosting,
        } = parts;
        Arc::new(Self {
            store,
            isolation,
            activator,
            routes,
            admission,
            logs,
            request_logs: std::sync::OnceLock::new(),
            operations: operations::Operations::default(),
            scheme,
            identity,
            changes: watch::channel(0).0,
            publish: tokio::sync::Mutex::new(()),
            unrouted_since: Mutex::new(HashMap::new()),
            images,
            image_ops: tokio::sync::RwLock::new(()),
            domains,
            pointing: Mutex::new(HashMap::new()),
            domain_checks: tokio::sync::Mutex::new(()),
            api_gateways,
            fallback_jwks: Arc::new(pier_apigateway::JwksRegistry::new(Arc::new(
                api_gateways::routes::NoFetch,
            ))),
            api_specs: Mutex::new(HashMap::new()),
            quota_books: Mutex::new(HashMap::new()),
            hosting,
            site_cache: Mutex::new(HashMap::new()),
            expiry_timer: Mutex::new(None),
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
