//! The activator: one pool of instances per revision, handing each request a slot on an instance.
//!
//! - **Slots.** An instance takes at most `containerConcurrency` requests at once (a hard limit). A request
//!   gets the ready instance with the fewest requests in flight (least outstanding requests).
//! - **Queue.** When no slot is free (every instance is full, or there are none: the revision is scaled to
//!   zero), the request waits in a bounded FIFO queue while the scaler starts instances. It is never
//!   dropped: it gets a slot, or an error that says why (start failed, no capacity, queue full, timeout).
//! - **Scaler.** A task per pool samples concurrency (in flight plus queued), asks
//!   [`pier_autoscaler::decide`] for a count on every tick and at once whenever a request queues, then starts
//!   or stops instances to match. Stopping only takes idle instances.
//! - **Drain.** Closing a pool refuses new requests, lets those in flight finish, then stops its instances.
//!
//! Locking: one short `std::sync::Mutex` per pool guards slot counts and the queue; it is never held across
//! an await, and the control plane never holds it while doing I/O.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pier_model::{InstanceId, ProjectName, RevisionName, RevisionTemplate, ServiceName};
use pier_runtime::{InstanceSpec, Isolation, Runtime};
use thiserror::Error;

mod pool;
pub mod warm;
pub use pool::{Lease, RevisionPool, Slot};

/// Settings shared by every pool.
#[derive(Clone, Debug)]
pub struct ActivatorConfig {
    /// Stable window of the autoscaler.
    pub stable_window: Duration,
    /// Panic window of the autoscaler.
    pub panic_window: Duration,
    /// Idle time before a revision scales to zero.
    pub scale_to_zero_grace: Duration,
    /// Share of `containerConcurrency` the autoscaler aims for.
    pub target_utilization: f64,
    /// How long a request may wait for a slot while the revision is at `max-instances`.
    pub pending_timeout: Duration,
    /// Requests that may wait per revision; more get 429 at once.
    pub queue_limit: usize,
    /// How often the scaler samples and decides.
    pub tick: Duration,
    /// SIGTERM-to-SIGKILL grace when stopping instances.
    pub stop_grace: Duration,
    /// How long a new instance has to listen on PORT.
    pub startup_timeout: Duration,
    /// How many revisions, the most recently used, keep a sandbox made ahead of their next cold start
    /// ([`warm`]); 0 for none.
    pub warm_sandboxes: usize,
}

impl Default for ActivatorConfig {
    fn default() -> Self {
        Self {
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            scale_to_zero_grace: Duration::from_secs(60),
            target_utilization: 0.7,
            pending_timeout: Duration::from_secs(10),
            queue_limit: 10_000,
            tick: Duration::from_millis(500),
            stop_grace: pier_runtime::STOP_GRACE,
            startup_timeout: pier_runtime::STARTUP_TIMEOUT,
            warm_sandboxes: 0,
        }
    }
}

/// Why a request got no slot. The gateway maps each to a status code in one place.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AcquireError {
    /// Too many requests already wait for this revision.
    #[error("too many requests are waiting for an instance of this revision")]
    QueueFull,
    /// The revision is at `max-instances` and none freed a slot in time.
    #[error("no available instance: the revision is at its maximum of {max} instances")]
    NoCapacity {
        /// The revision's `max-instances`.
        max: u32,
    },
    /// No instance could be started.
    #[error("the instance failed to start: {0}")]
    StartFailed(String),
    /// The request's deadline passed while it waited.
    #[error("timed out waiting for an instance")]
    Timeout,
    /// The revision is being removed.
    #[error("the revision is shutting down")]
    Closed,
}

/// Why a revision cannot get a pool here.
#[derive(Debug, Error)]
pub enum CannotRun {
    /// No runtime of this server runs it; the reason says which is missing and how to get it.
    #[error("{0}")]
    NoRuntime(String),
    /// The runtime that would run it refuses the template.
    #[error(transparent)]
    Refused(#[from] pier_runtime::RuntimeError),
    /// The server is stopping: no new pool (and so no instance) is made.
    #[error("revision {0} was not started: the server is stopping; deploy again once it is back")]
    Stopping(RevisionName),
}

/// Which runtime runs a revision.
pub trait RuntimeSelector: Send + Sync + 'static {
    /// The runtime for `template`, or why there is none ([`CannotRun::NoRuntime`]).
    fn runtime_for(&self, template: &RevisionTemplate) -> Result<Arc<dyn Runtime>, CannotRun>;
}

impl<R: Runtime> RuntimeSelector for Arc<R> {
    fn runtime_for(&self, _: &RevisionTemplate) -> Result<Arc<dyn Runtime>, CannotRun> {
        Ok(self.clone())
    }
}

/// What Pier does around an instance's life: environment before it starts (the metadata server's
/// address, CA bundle), and clean-up after it ends.
pub trait InstanceHooks: Send + Sync + 'static {
    /// Extra environment for the instance about to start.
    fn prepare(&self, spec: &InstanceSpec) -> Vec<(String, String)>;

    /// The instance ended (or never started).
    fn ended(&self, id: &InstanceId);

    /// The instance could not be started at all (no process ran, so it has no log of its own): say
    /// why where the service's users look.
    fn start_failed(&self, spec: &InstanceSpec, why: &str) {
        let _ = (spec, why);
    }
}

/// Identifies a pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Project.
    pub project: ProjectName,
    /// Revision.
    pub revision: RevisionName,
}

/// All revision pools.
pub struct Activator {
    config: ActivatorConfig,
    runtimes: Arc<dyn RuntimeSelector>,
    hooks: Option<Arc<dyn InstanceHooks>>,
    pools: Mutex<HashMap<PoolKey, Arc<RevisionPool>>>,
    /// Set by [`Activator::shutdown`] under the pools' lock: no pool is made after it.
    closed: std::sync::atomic::AtomicBool,
    /// Where pools get their metric handles, once the server keeps metrics.
    metrics: OnceLock<Arc<pier_metrics::Metrics>>,
    /// The budget of warm sandboxes all pools share.
    warm: Arc<warm::WarmSandboxes>,
}

impl std::fmt::Debug for Activator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Activator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Activator {
    /// An activator starting instances with `runtimes`.
    pub fn new(config: ActivatorConfig, runtimes: Arc<dyn RuntimeSelector>) -> Arc<Self> {
        Arc::new(Self {
            warm: Arc::new(warm::WarmSandboxes::new(config.warm_sandboxes)),
            config,
            runtimes,
            hooks: None,
            pools: Mutex::new(HashMap::new()),
            closed: Default::default(),
            metrics: OnceLock::new(),
        })
    }

    /// An activator that calls `hooks` around every instance's life.
    pub fn with_hooks(
        config: ActivatorConfig,
        runtimes: Arc<dyn RuntimeSelector>,
        hooks: Arc<dyn InstanceHooks>,
    ) -> Arc<Self> {
        Arc::new(Self {
            warm: Arc::new(warm::WarmSandboxes::new(config.warm_sandboxes)),
            config,
            runtimes,
            hooks: Some(hooks),
            pools: Mutex::new(HashMap::new()),
            closed: Default::default(),
            metrics: OnceLock::new(),
        })
    }

    /// Records pools' metrics into `metrics` (pools made from now on), and reports their live state
    /// at each scrape. Once per activator; a second call is ignored.
    pub fn keep_metrics(self: &Arc<Self>, metrics: Arc<pier_metrics::Metrics>) {
        if self.metrics.set(metrics.clone()).is_ok() {
            metrics.add_source(Arc::new(Live(Arc::downgrade(self))));
        }
    }

    fn pools(&self) -> MutexGuard<'_, HashMap<PoolKey, Arc<RevisionPool>>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether some runtime can run `template`; the reason when none can.
    pub fn check(&self, template: &RevisionTemplate) -> Result<(), CannotRun> {
        Ok(self.runtimes.runtime_for(template)?.check(template)?)
    }

    /// The pool of a revision, if it exists.
    pub fn pool(&self, key: &PoolKey) -> Option<Arc<RevisionPool>> {
        self.pools().get(key).cloned()
    }

    /// The pool of a revision, created (with its scaler task) if needed. `serving` says whether the
    /// revision receives traffic, which decides whether `min-instances` applies; `isolation` is how its
    /// service's instances are isolated.
    pub fn ensure_pool(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        revision: &RevisionName,
        template: Arc<RevisionTemplate>,
        isolation: Isolation,
        serving: bool,
    ) -> Result<Arc<RevisionPool>, CannotRun> {
        let key = PoolKey {
            project: project.clone(),
            revision: revision.clone(),
        };
        let mut pools = self.pools();
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            // A deploy that finished pulling while the server stops starts nothing.
            return Err(CannotRun::Stopping(revision.clone()));
        }
        if let Some(p) = pools.get(&key) {
            p.set_serving(serving);
            return Ok(p.clone());
        }
        let runtime = self.runtimes.runtime_for(&template)?;
        let metrics = self
            .metrics
            .get()
            .map(|m| m.revision(project.as_str(), service.as_str(), revision.as_str()));
        let pool = RevisionPool::new(
            project.clone(),
            service.clone(),
            revision.clone(),
            template,
            isolation,
            serving,
            runtime,
            self.hooks.clone(),
            self.config.clone(),
            metrics,
            self.warm.clone(),
        );
        pools.insert(key, pool.clone());
        Ok(pool)
    }

    /// Removes a revision's pool: refuses new requests, waits for those in flight, stops its instances.
    pub async fn remove_pool(&self, key: &PoolKey) {
        let pool = self.pools().remove(key);
        if let Some(pool) = pool {
            pool.close().await;
            // Unless the revision got a pool again meanwhile (it shares the same series).
            if let (Some(metrics), Some(m)) = (self.metrics.get(), pool.metrics())
                && !self.pools().contains_key(key)
            {
                metrics.forget(m.labels());
            }
        }
    }

    /// Keys of every pool.
    pub fn keys(&self) -> Vec<PoolKey> {
        self.pools().keys().cloned().collect()
    }

    /// Closes every pool (server shutdown): in-flight requests finish, then instances stop. No pool is
    /// made afterwards ([`Activator::ensure_pool`] refuses).
    pub async fn shutdown(&self) {
        let pools: Vec<_> = {
            let mut pools = self.pools();
            self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            pools.drain().map(|(_, p)| p).collect()
        };
        let closes = pools.into_iter().map(|p| async move { p.close().await });
        futures_join_all(closes).await;
    }
}

/// The pools' state at scrape time (held weakly: the activator owns the metrics' source, not the
/// other way round).
struct Live(std::sync::Weak<Activator>);

impl pier_metrics::LiveSource for Live {
    fn revisions(&self) -> Vec<pier_metrics::LiveRevision> {
        let Some(a) = self.0.upgrade() else {
            return Vec::new();
        };
        let pools: Vec<Arc<RevisionPool>> = a.pools().values().cloned().collect();
        pools.iter().map(|p| p.live()).collect()
    }

    fn instances(&self) -> Vec<(pier_metrics::RevisionLabels, u32)> {
        let Some(a) = self.0.upgrade() else {
            return Vec::new();
        };
        let pools: Vec<Arc<RevisionPool>> = a.pools().values().cloned().collect();
        pools
            .iter()
            .filter_map(|p| Some((p.metrics()?.labels().clone(), p.instance_count())))
            .collect()
    }
}

/// Runs futures concurrently and waits for all (a tiny `join_all` without another dependency).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    for h in handles {
        let _ = h.await;
    }
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// The origin of the pools' monotonic clocks (the autoscaler takes time as durations).
static ORIGIN: OnceLock<Instant> = OnceLock::new();

fn since_origin(t: Instant) -> Duration {
    t.duration_since(*ORIGIN.get_or_init(Instant::now))
}

/// Counts and timings a pool keeps for `describe` and benchmarks.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Instances started.
    pub started: AtomicU64,
    /// Instances that failed to start.
    pub failed: AtomicU64,
    /// Sum of microseconds from asking the runtime to start an instance until it was ready.
    pub startup_micros: AtomicU64,
}

#[cfg(test)]
mod tests;
