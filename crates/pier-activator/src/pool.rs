//! One revision's pool: its instances, their slots, the queue of waiting requests, and the scaler task.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use std::time::{Duration, Instant};
use tracing::Instrument;

use pier_autoscaler::{Sample, ScalerState};
use pier_model::api::{InstanceExitView, InstanceState, InstanceView};
use pier_model::{InstanceId, ProjectName, RevisionName, RevisionTemplate, ServiceName};
use pier_runtime::probe::wait_ready;

/// How long an instance that failed its liveness probe gets between SIGTERM and SIGKILL.
const STOP_GRACE_FOR_LIVENESS: Duration = Duration::from_secs(10);
use pier_runtime::{Endpoint, ExitReason, Instance, InstanceSpec, Isolation, Runtime};
use tokio::sync::{Notify, oneshot};

use crate::{AcquireError, ActivatorConfig, InstanceHooks, PoolStats, random_suffix};

mod scaler;
mod spare;

use spare::Spare;

/// A running instance as the gateway sees it: where to connect, plus a place for the gateway to keep its
/// per-instance connection pool.
pub struct Slot {
    instance: Arc<dyn Instance>,
    started_at: String,
    /// When its start began and when it became ready (a request that waited for it traces this).
    began: Instant,
    ready: Instant,
    ext: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("id", self.instance.id())
            .field("endpoint", self.instance.endpoint())
            .finish()
    }
}

impl Slot {
    /// The instance id.
    pub fn id(&self) -> &InstanceId {
        self.instance.id()
    }

    /// Where to connect.
    pub fn endpoint(&self) -> &Endpoint {
        self.instance.endpoint()
    }

    /// When the instance's start began and when it became ready.
    pub fn started(&self) -> (Instant, Instant) {
        (self.began, self.ready)
    }

    /// Per-instance state the gateway attaches (its idle connections), created on first use.
    pub fn ext<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<Arc<T>> {
        self.ext
            .get_or_init(|| Arc::new(init()))
            .clone()
            .downcast::<T>()
            .ok()
    }
}

struct Entry {
    slot: Arc<Slot>,
    in_flight: u32,
    state: InstanceState,
}

struct Waiter {
    tx: oneshot::Sender<Result<Lease, AcquireError>>,
    since: Instant,
}

struct PoolState {
    entries: Vec<Entry>,
    starting: u32,
    waiters: VecDeque<Waiter>,
    in_flight: u32,
    last_active: Option<Instant>,
    samples: VecDeque<Sample>,
    scaler: ScalerState,
    closed: bool,
    serving: bool,
    failures: u32,
    next_start: Option<Instant>,
    last_failure: Option<String>,
    last_exit: Option<InstanceExitView>,
    /// The most requests one instance had in flight since the metrics last read it.
    peak: u32,
    /// CPU seconds of each instance at the last scrape, and of those that ended since the pool was
    /// made (so the revision's CPU counter never goes down).
    cpu_seen: std::collections::HashMap<InstanceId, f64>,
    cpu_retired: f64,
    /// The sandbox made ahead of the next cold start ([`crate::warm`]).
    spare: Spare,
}

/// The pool of one revision.
pub struct RevisionPool {
    project: ProjectName,
    service: ServiceName,
    revision: RevisionName,
    template: Arc<RevisionTemplate>,
    isolation: Isolation,
    runtime: Arc<dyn Runtime>,
    hooks: Option<Arc<dyn InstanceHooks>>,
    config: ActivatorConfig,
    state: Mutex<PoolState>,
    wake: Notify,
    drained: Notify,
    /// Counters for `describe` and benchmarks.
    pub stats: PoolStats,
    /// The revision's metric handles, when the server keeps metrics.
    metrics: Option<Arc<pier_metrics::RevisionMetrics>>,
    /// Taken by a metrics scrape, so two scrapes do not interleave their CPU bookkeeping.
    scrape: Mutex<()>,
    /// The server's budget of warm sandboxes.
    warm: Arc<crate::warm::WarmSandboxes>,
}

impl std::fmt::Debug for RevisionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionPool")
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// A slot on an instance, held for the life of one request (including streaming its response). Dropping it
/// frees the slot, handing it straight to the next queued request if there is one.
pub struct Lease {
    pool: Arc<RevisionPool>,
    slot: Arc<Slot>,
    armed: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("slot", &self.slot).finish()
    }
}

impl Lease {
    /// The instance this lease is on.
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// The revision's template (timeout, HTTP/2, ...).
    pub fn template(&self) -> &Arc<RevisionTemplate> {
        &self.pool.template
    }

    /// Tells the pool the instance misbehaved (refused a connection): it is taken out of rotation.
    pub fn report_unreachable(&self) {
        self.pool.evict(&self.slot);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.pool.release(&self.slot);
        }
    }
}

impl RevisionPool {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        project: ProjectName,
        service: ServiceName,
        revision: RevisionName,
        template: Arc<RevisionTemplate>,
        isolation: Isolation,
        serving: bool,
        runtime: Arc<dyn Runtime>,
        hooks: Option<Arc<dyn InstanceHooks>>,
        config: ActivatorConfig,
        metrics: Option<Arc<pier_metrics::RevisionMetrics>>,
        warm: Arc<crate::warm::WarmSandboxes>,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            project,
            service,
            revision,
            template,
            isolation,
            runtime,
            hooks,
            config,
            state: Mutex::new(PoolState {
                entries: Vec::new(),
                starting: 0,
                waiters: VecDeque::new(),
                in_flight: 0,
                last_active: None,
                samples: VecDeque::new(),
                scaler: ScalerState::default(),
                closed: false,
                serving,
                failures: 0,
                next_start: None,
                last_failure: None,
                last_exit: None,
                peak: 0,
                cpu_seen: Default::default(),
                cpu_retired: 0.0,
                spare: Spare::Empty,
            }),
            wake: Notify::new(),
            drained: Notify::new(),
            stats: PoolStats::default(),
            metrics,
            scrape: Mutex::new(()),
            warm,
        });
        tokio::spawn(scaler::scaler(Arc::downgrade(&pool)));
        pool
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revision.
    pub fn revision(&self) -> &RevisionName {
        &self.revision
    }

    /// The service.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// The revision's template.
    pub fn template(&self) -> &Arc<RevisionTemplate> {
        &self.template
    }

    /// Whether the revision receives traffic (so `min-instances` applies).
    pub fn set_serving(&self, serving: bool) {
        let changed = {
            let mut st = self.lock();
            std::mem::replace(&mut st.serving, serving) != serving
        };
        if changed {
            self.wake.notify_one();
        }
    }

    /// The revision's metric handles, if the server keeps metrics.
    pub fn metrics(&self) -> Option<&Arc<pier_metrics::RevisionMetrics>> {
        self.metrics.as_ref()
    }

    /// Gets a slot, waiting (until `deadline`) for one to free up or for a new instance to start.
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Lease, AcquireError> {
        let since = Instant::now();
        let rx = {
            let mut st = self.lock();
            if st.closed {
                return Err(AcquireError::Closed);
            }
            st.last_active = Some(Instant::now());
            if let Some(lease) = self.take_slot(&mut st) {
                return Ok(lease);
            }
            if st.waiters.len() >= self.config.queue_limit {
                return Err(AcquireError::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(Waiter {
                tx,
                since: Instant::now(),
            });
            rx
        };
        self.wake.notify_one();
        let result = match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AcquireError::Closed),
            Err(_) => Err(AcquireError::Timeout),
        };
        if let Some(m) = &self.metrics {
            m.waited(since.elapsed());
        }
        result
    }

    /// Picks the ready instance with the fewest requests in flight that has a free slot.
    fn take_slot(self: &Arc<Self>, st: &mut PoolState) -> Option<Lease> {
        let limit = self.template.container_concurrency;
        let best = st
            .entries
            .iter_mut()
            .filter(|e| e.state == InstanceState::Ready && e.in_flight < limit)
            .min_by_key(|e| e.in_flight)?;
        best.in_flight += 1;
        let in_flight = best.in_flight;
        let slot = best.slot.clone();
        st.in_flight += 1;
        st.peak = st.peak.max(in_flight);
        Some(Lease {
            pool: self.clone(),
            slot,
            armed: true,
        })
    }

    /// Gives free slots to queued requests, oldest first.
    fn dispatch(self: &Arc<Self>, st: &mut PoolState) {
        while !st.waiters.is_empty() {
            let Some(mut lease) = self.take_slot(st) else {
                return;
            };
            loop {
                let Some(w) = st.waiters.pop_front() else {
                    // Nobody left to take it: give the slot back without re-locking.
                    lease.armed = false;
                    self.uncount(st, &lease.slot);
                    return;
                };
                match w.tx.send(Ok(lease)) {
                    Ok(()) => break,
                    Err(Ok(back)) => lease = back,
                    Err(Err(_)) => unreachable!("we sent Ok"),
                }
            }
        }
    }

    fn uncount(&self, st: &mut PoolState, slot: &Arc<Slot>) {
        st.in_flight = st.in_flight.saturating_sub(1);
        if let Some(e) = st.entries.iter_mut().find(|e| Arc::ptr_eq(&e.slot, slot)) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }

    fn release(self: &Arc<Self>, slot: &Arc<Slot>) {
        let mut st = self.lock();
        self.uncount(&mut st, slot);
        st.last_active = Some(Instant::now());
        self.dispatch(&mut st);
        if st.in_flight == 0 {
            self.drained.notify_waiters();
        }
    }

    fn evict(&self, slot: &Arc<Slot>) {
        let mut st = self.lock();
        if let Some(e) = st.entries.iter_mut().find(|e| Arc::ptr_eq(&e.slot, slot)) {
            e.state = InstanceState::Draining;
        }
        drop(st);
        self.wake.notify_one();
    }

    /// The last instance that ended by itself (crash, exit, out of memory).
    pub fn last_exit(&self) -> Option<InstanceExitView> {
        self.lock().last_exit.clone()
    }

    /// The instances, for `describe`.
    pub fn instances(&self) -> Vec<InstanceView> {
        self.lock()
            .entries
            .iter()
            .map(|e| InstanceView {
                id: e.slot.id().clone(),
                state: e.state,
                in_flight: e.in_flight,
                started_at: e.slot.started_at.clone(),
            })
            .collect()
    }

    /// Ready plus starting instances.
    pub fn instance_count(&self) -> u32 {
        let st = self.lock();
        st.starting
            + st.entries
                .iter()
                .filter(|e| e.state != InstanceState::Draining)
                .count() as u32
    }

    /// The pool's state for a metrics scrape. The peak concurrency starts again from what is in flight
    /// now (so a long request keeps counting); CPU is a counter: an instance's share is retired only once
    /// it has left the pool, and never goes below what a scrape saw (scrapes of one pool take turns).
    pub fn live(&self) -> pier_metrics::LiveRevision {
        let _turn = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let (mut live, instances) = {
            let mut st = self.lock();
            let busiest = st.entries.iter().map(|e| e.in_flight).max().unwrap_or(0);
            let mut live = pier_metrics::LiveRevision {
                labels: self.metrics.as_ref().map(|m| m.labels().clone()),
                starting: st.starting,
                pending: st.waiters.len() as u32,
                peak_concurrency: std::mem::replace(&mut st.peak, busiest),
                warm_sandboxes: u32::from(matches!(st.spare, Spare::Ready(_))),
                ..Default::default()
            };
            let mut instances = Vec::new();
            for e in &st.entries {
                match (e.state, e.in_flight) {
                    (InstanceState::Ready, 0) => live.idle += 1,
                    (InstanceState::Ready, _) => live.active += 1,
                    _ => {}
                }
                instances.push(e.slot.instance.clone());
            }
            (live, instances)
        };
        let mut now = std::collections::HashMap::new();
        {
            let st = self.lock();
            for i in &instances {
                let seen = st.cpu_seen.get(i.id()).copied().unwrap_or(0.0);
                now.insert(i.id().clone(), seen);
            }
        }
        for i in instances {
            if let Some(u) = i.usage() {
                if let Some(cpu) = now.get_mut(i.id()) {
                    *cpu = cpu.max(u.cpu_seconds);
                }
                live.memory_bytes += u.memory_bytes;
            }
        }
        let mut st = self.lock();
        let gone: f64 = st
            .cpu_seen
            .iter()
            .filter(|(id, _)| !now.contains_key(*id))
            .map(|(_, cpu)| *cpu)
            .sum();
        st.cpu_retired += gone;
        live.cpu_seconds = st.cpu_retired + now.values().sum::<f64>();
        st.cpu_seen = now;
        live
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.lock().waiters.len()
    }

    /// Starts one instance now and waits until it is ready (used by deploys to prove a revision works).
    /// On failure, returns the reason and the instance's last log lines.
    pub async fn start_one(self: &Arc<Self>) -> Result<(), (String, Vec<String>)> {
        self.start_one_reporting(|| {}).await
    }

    /// [`RevisionPool::start_one`], calling `started` once the runtime has started the instance (its
    /// image unpacked, its sandbox made), before its startup probe (a deploy reports these phases).
    pub async fn start_one_reporting(
        self: &Arc<Self>,
        started: impl FnOnce() + Send + 'static,
    ) -> Result<(), (String, Vec<String>)> {
        {
            let mut st = self.lock();
            if st.closed {
                return Err(("the revision is shutting down".into(), Vec::new()));
            }
            st.starting += 1;
            // Counts as activity so the fresh instance stays through the idle grace.
            st.last_active = Some(Instant::now());
        }
        // A scaler at rest watches again (it scales this instance down when idle).
        self.wake.notify_one();
        self.start_instance_as(Some(Box::new(started))).await
    }

    /// Starts an instance (the caller has counted it in `starting`).
    pub(super) async fn start_instance(self: &Arc<Self>) -> Result<(), (String, Vec<String>)> {
        self.start_instance_as(None).await
    }

    /// What a new instance of this revision is started with.
    fn spec(&self, id: InstanceId) -> InstanceSpec {
        let mut spec = InstanceSpec {
            id,
            project: self.project.clone(),
            service: self.service.clone(),
            revision: self.revision.clone(),
            template: self.template.clone(),
            extra_env: Vec::new(),
            isolation: self.isolation.clone(),
        };
        if let Some(hooks) = &self.hooks {
            spec.extra_env = hooks.prepare(&spec);
        }
        spec
    }

    /// Starts an instance in this revision's warm sandbox if it has one, else from nothing, in an
    /// `instance_start` span (`warm` says which).
    async fn start_instance_as(
        self: &Arc<Self>,
        started: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<(), (String, Vec<String>)> {
        let spare = self.take_spare();
        let id = match &spare {
            Some(p) => p.id().clone(),
            None => InstanceId::for_revision(&self.revision, &random_suffix(5)),
        };
        let span = tracing::info_span!("instance_start", revision = %self.revision, instance = %id, warm = spare.is_some());
        self.start_in(id, spare, started).instrument(span).await
    }

    async fn start_in(
        self: &Arc<Self>,
        id: InstanceId,
        spare: Option<Box<dyn pier_runtime::Prepared>>,
        started: Option<Box<dyn FnOnce() + Send>>,
    ) -> Result<(), (String, Vec<String>)> {
        let begin = Instant::now();
        let spec = self.spec(id.clone());
        let ended = |pool: &Self| {
            if let Some(hooks) = &pool.hooks {
                hooks.ended(&id);
            }
        };
        let logged = spec.clone();
        let warm = spare.is_some();
        let result = match spare {
            Some(p) => match p.start().await {
                Ok(i) => Ok(i),
                Err(e) => {
                    // What it held ended while it waited (killed from outside): start from nothing.
                    tracing::warn!(revision = %self.revision, "a warm sandbox could not start ({e}): starting an instance without it");
                    self.runtime.start(spec).await
                }
            },
            None => self.runtime.start(spec).await,
        };
        let instance = match result {
            Ok(i) => i,
            Err(e) => {
                ended(self);
                let msg = e.to_string();
                if let Some(hooks) = &self.hooks {
                    hooks.start_failed(&logged, &msg);
                }
                self.start_failed(&msg);
                return Err((msg, Vec::new()));
            }
        };
        if let Some(f) = started {
            f();
        }
        let ready = wait_ready(
            instance.endpoint(),
            instance.exit_watch(),
            self.template.startup_probe.as_ref(),
            instance.endpoint().port(),
            self.config.startup_timeout,
        )
        .await;
        if let Err(why) = ready {
            instance.stop(self.config.stop_grace).await;
            ended(self);
            // Give the log pumps a moment to catch the instance's last words.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let tail = instance.log_tail(20);
            let msg = why.to_string();
            self.start_failed(&msg);
            return Err((msg, tail));
        }
        let took = begin.elapsed();
        let micros = took.as_micros() as u64;
        if let Some(m) = &self.metrics {
            m.startup(pier_metrics::StartupPhase::Total, took);
            let mut before_runtime = Duration::ZERO;
            // A warm sandbox's image root and bundle were made before this start, off its path.
            let times = if warm {
                pier_runtime::StartupTimes::default()
            } else {
                instance.startup_times()
            };
            for (phase, t) in [
                (pier_metrics::StartupPhase::ImageRoot, times.image_root),
                (pier_metrics::StartupPhase::Bundle, times.bundle),
            ] {
                if let Some(t) = t {
                    m.startup(phase, t);
                    before_runtime += t;
                }
            }
            m.startup(
                pier_metrics::StartupPhase::Runtime,
                took.saturating_sub(before_runtime),
            );
        }
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        self.stats
            .startup_micros
            .fetch_add(micros, Ordering::Relaxed);
        tracing::debug!(revision = %self.revision, instance = %id, micros, "instance ready");
        let slot = Arc::new(Slot {
            instance: instance.clone(),
            started_at: pier_runtime::logs::timestamp(),
            began: begin,
            ready: Instant::now(),
            ext: OnceLock::new(),
        });
        let closed = {
            let mut st = self.lock();
            st.starting = st.starting.saturating_sub(1);
            st.failures = 0;
            st.next_start = None;
            if !st.closed {
                st.entries.push(Entry {
                    slot: slot.clone(),
                    in_flight: 0,
                    state: InstanceState::Ready,
                });
                self.dispatch(&mut st);
            }
            st.closed
        };
        if closed {
            instance.stop(self.config.stop_grace).await;
            ended(self);
            return Ok(());
        }
        // A liveness probe stops an instance that no longer answers; the pool replaces it as needed.
        if let Some(probe) = self.template.liveness_probe.clone() {
            let watched = slot.instance.clone();
            let mut exit = watched.exit_watch();
            tokio::spawn(async move {
                let endpoint = watched.endpoint().clone();
                let why = tokio::select! {
                    why = pier_runtime::probe::watch_liveness(&endpoint, &probe, endpoint.port()) => why,
                    _ = exit.wait_for(Option::is_some) => return,
                };
                tracing::warn!(instance = %watched.id(), "{why}: stopping it");
                watched.note(&format!("{why}: stopping the instance"));
                let span = tracing::info_span!("instance_stop", instance = %watched.id());
                watched.stop(STOP_GRACE_FOR_LIVENESS).instrument(span).await;
            });
        }
        // The next cold start of this revision finds a sandbox ready, budget permitting.
        self.warm.used(self);
        // Watch for the instance ending by itself.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut exit = slot.instance.exit_watch();
            let _ = exit.wait_for(Option::is_some).await;
            let reason = exit.borrow().clone();
            if let Some(pool) = weak.upgrade() {
                if let Some(hooks) = &pool.hooks {
                    hooks.ended(slot.id());
                }
                pool.instance_ended(&slot, reason);
            }
        });
        Ok(())
    }

    fn start_failed(&self, msg: &str) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(revision = %self.revision, "instance failed to start: {msg}");
        let mut st = self.lock();
        st.starting = st.starting.saturating_sub(1);
        st.failures += 1;
        let backoff = Duration::from_millis(500) * 2u32.saturating_pow(st.failures.min(6));
        st.next_start = Some(Instant::now() + backoff.min(Duration::from_secs(30)));
        st.last_failure = Some(msg.to_owned());
        let ready = st.entries.iter().any(|e| e.state == InstanceState::Ready);
        if !ready && st.starting == 0 {
            // Nobody will free a slot soon: tell the waiting requests why rather than letting them hang.
            for w in st.waiters.drain(..) {
                let _ = w.tx.send(Err(AcquireError::StartFailed(msg.to_owned())));
            }
        }
    }

    fn instance_ended(self: &Arc<Self>, slot: &Arc<Slot>, reason: Option<ExitReason>) {
        let mut st = self.lock();
        let before = st.entries.len();
        st.entries.retain(|e| !Arc::ptr_eq(&e.slot, slot));
        let removed = before != st.entries.len();
        let stopped = matches!(reason, Some(ExitReason::Stopped) | None);
        if removed && !stopped {
            let text = reason.as_ref().map(|r| r.to_string()).unwrap_or_default();
            tracing::warn!(
                revision = %self.revision,
                instance = %slot.id(),
                "instance {text}"
            );
            st.last_exit = Some(InstanceExitView {
                id: slot.id().clone(),
                reason: text,
                out_of_memory: matches!(reason, Some(ExitReason::OutOfMemory)),
                at: pier_runtime::logs::timestamp(),
            });
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Refuses new requests, waits for in-flight ones (up to the request timeout), stops every instance.
    pub async fn close(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            st.closed = true;
            for w in st.waiters.drain(..) {
                let _ = w.tx.send(Err(AcquireError::Closed));
            }
        }
        let limit = Duration::from_secs(u64::from(self.template.timeout_seconds));
        let _ = tokio::time::timeout(limit, async {
            loop {
                let drained = self.drained.notified();
                if self.lock().in_flight == 0 {
                    break;
                }
                drained.await;
            }
        })
        .await;
        let entries: Vec<Arc<Slot>> = {
            let mut st = self.lock();
            st.entries.drain(..).map(|e| e.slot).collect()
        };
        self.warm.forget(self);
        self.discard_spare().await;
        let grace = self.config.stop_grace;
        let stops: Vec<_> = entries
            .into_iter()
            .map(|s| stop_instance(s, grace))
            .collect();
        for s in stops {
            let _ = s.await;
        }
        self.wake.notify_one();
    }
}

/// Stops an instance in the background, in an `instance_stop` span.
fn stop_instance(slot: Arc<Slot>, grace: Duration) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("instance_stop", instance = %slot.instance.id());
    tokio::spawn(async move { slot.instance.stop(grace).await }.instrument(span))
}
