//! Pier's own metrics, in Prometheus' text format (OpenMetrics 1.0, what `prometheus-client` writes).
//!
//! Three kinds of instruments, chosen so that recording costs a few atomic operations on the request
//! path and never a lookup:
//!
//! - **Handles** ([`RevisionMetrics`]): the labelled series of one revision (or of a service's route
//!   before a revision is picked) resolved once, when routes are published and pools made, and kept
//!   in the route and the pool. Recording is an atomic add (counters) or a short per-series lock
//!   (histograms); the label-set lookup (a lock on the family's map) happens at publication only.
//! - **Gateway-wide** ([`GatewayMetrics`]): connections, TLS handshakes, HTTP/2 streams, token
//!   verifications, each a plain counter.
//! - **Read at scrape time** ([`live`], [`process`]): instance counts by state, waiting requests, peak
//!   concurrency, instances' CPU and memory from their cgroups, edge-cache counters, and the process's
//!   own CPU, memory and file descriptors. Nothing is kept up to date between scrapes for them.
//!
//! Labels are bounded: project, service, revision, a response code class, a fixed reason or phase; never
//! a path, a host, a user or an instance id. Names follow Cloud Run's metrics where one exists
//! (`request_count`, `request_latencies`, `container/instance_count`, `container/startup_latencies`,
//! `container/max_request_concurrencies`), in Prometheus' conventions: a `pier_` prefix, seconds and
//! bytes as base units, `_total` on counters.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod handles;
pub mod history;
pub mod live;
pub mod process;

pub use handles::{
    GatewayMetrics, Handshake, OpenConnection, Rejection, RevisionMetrics, StartupPhase, TokenCheck,
};
pub use history::History;
pub use live::{LiveCounters, LiveRevision, LiveSource};

/// The content type of [`Metrics::render`]'s output (OpenMetrics text, which Prometheus asks for and
/// prefers).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of a revision's series. `revision` is empty for requests a service's route answered
/// before picking a revision (refused by its guard, no revision ready).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    /// Project.
    pub project: String,
    /// Service (a hosting site's or API gateway's routes use their own name here).
    pub service: String,
    /// Revision, or empty.
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    project: String,
    service: String,
    revision: String,
    response_code_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    project: String,
    service: String,
    revision: String,
    code: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    project: String,
    service: String,
    revision: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

/// Makes histograms with fixed buckets (a function pointer, so families stay `Send + Sync` and
/// nameable).
#[derive(Clone, Copy)]
struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// Request latencies: 0.5 ms to about 16 s, doubling (Cloud Run's `request_latencies` is a
/// distribution in milliseconds; Prometheus' unit is the second).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Startup phases and waits for an instance: 0.25 ms to about 16 s, doubling.
fn startup_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 17))
}

pub(crate) struct Families {
    requests: Family<ClassLabels, Counter>,
    latencies: Family<ClassLabels, Histogram, Buckets>,
    request_bytes: Family<RevisionLabels, Counter>,
    response_bytes: Family<RevisionLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    startup: Family<PhaseLabels, Histogram, Buckets>,
    pending_wait: Family<RevisionLabels, Histogram, Buckets>,
    cold_starts: Family<RevisionLabels, Counter>,
}

/// The registry and every family in it. One per server; cheap to share (`Arc`).
pub struct Metrics {
    registry: Registry,
    families: Arc<Families>,
    gateway: Arc<GatewayMetrics>,
    live: Arc<live::Sources>,
    /// Each service's recent figures, for the console's charts (sampled once [`History::start`]ed).
    history: history::History,
    /// Handles handed out, by labels: asking again returns the same handle (publishing routes again
    /// costs a map lookup per route), and a revision's series can be dropped with it.
    handed: Mutex<std::collections::HashMap<RevisionLabels, Arc<RevisionMetrics>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every family registered under the `pier_` prefix, plus the scrape-time collectors (live
    /// instance state from the sources given later with [`Metrics::add_source`], and this process's
    /// own metrics, unprefixed as Prometheus' client libraries name them).
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let families = Arc::new(Families {
            requests: Family::default(),
            latencies: Family::new_with_constructor(Buckets(latency_histogram)),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            rejected: Family::default(),
            startup: Family::new_with_constructor(Buckets(startup_histogram)),
            pending_wait: Family::new_with_constructor(Buckets(startup_histogram)),
            cold_starts: Family::default(),
        });
        let gateway = Arc::new(GatewayMetrics::new());
        let live = Arc::new(live::Sources::default());
        {
            let pier = registry.sub_registry_with_prefix("pier");
            pier.register(
                "request_count",
                "Requests answered, by response code class (Cloud Run's request_count)",
                families.requests.clone(),
            );
            pier.register(
                "request_latencies_seconds",
                "Time from a request's arrival to the end of its response (Cloud Run's request_latencies)",
                families.latencies.clone(),
            );
            pier.register(
                "request_bytes",
                "Request body bytes received (the declared length)",
                families.request_bytes.clone(),
            );
            pier.register(
                "response_bytes",
                "Response body bytes sent",
                families.response_bytes.clone(),
            );
            pier.register(
                "rejected_requests",
                "Requests answered 429, 503 or 504 by Pier itself, by reason",
                families.rejected.clone(),
            );
            pier.register(
                "instance_startup_latencies_seconds",
                "Time to start an instance, whole (phase=total) and by phase: image root, bundle, runtime (the runtime and the app until its port answers)",
                families.startup.clone(),
            );
            pier.register(
                "pending_wait_seconds",
                "Time requests waited for a free instance slot (only requests that waited)",
                families.pending_wait.clone(),
            );
            pier.register(
                "cold_starts",
                "Instances started while requests waited for them",
                families.cold_starts.clone(),
            );
            gateway.register(pier);
            pier.register_collector(Box::new(live.clone()));
        }
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Arc::new(Self {
            registry,
            families,
            gateway,
            live,
            history: history::History::default(),
            handed: Mutex::new(Default::default()),
        })
    }

    /// The handles of one revision's series (`revision` empty: a service route's own). Takes the
    /// families' locks: call it when routes are published or a pool is made, never per request.
    pub fn revision(&self, project: &str, service: &str, revision: &str) -> Arc<RevisionMetrics> {
        let labels = RevisionLabels {
            project: project.to_owned(),
            service: service.to_owned(),
            revision: revision.to_owned(),
        };
        self.handed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(labels)
            .or_insert_with_key(|l| Arc::new(RevisionMetrics::resolve(&self.families, l.clone())))
            .clone()
    }

    /// Drops one revision's series (its pool is gone).
    pub fn forget(&self, labels: &RevisionLabels) {
        let removed = self
            .handed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(labels);
        if removed.is_some() {
            handles::forget(&self.families, labels);
        }
    }

    /// Drops every series of the revisions (or routes) for which `keep` says no, so that deleted
    /// revisions and services leave the output. Handles still held keep counting into nothing.
    pub fn retain(&self, keep: impl Fn(&RevisionLabels) -> bool) {
        let mut handed = self.handed.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<RevisionLabels> = handed.keys().filter(|l| !keep(l)).cloned().collect();
        for labels in gone {
            handed.remove(&labels);
            handles::forget(&self.families, &labels);
        }
    }

    /// Each service's recent figures (empty until [`History::start`] runs).
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// The gateway-wide counters.
    pub fn gateway(&self) -> &Arc<GatewayMetrics> {
        &self.gateway
    }

    /// Adds a source of scrape-time state (the activator's pools, the edge cache).
    pub fn add_source(&self, source: Arc<dyn LiveSource>) {
        self.live.add(source);
    }

    /// Everything, in OpenMetrics text (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; a collector that fails ends the output early, which a
        // scraper reports as a parse error rather than silently missing series.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Whether a bearer token given for the metrics endpoint is the configured one, in constant time for
/// tokens of the configured length.
pub fn token_matches(given: &str, want: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == want.len() && bool::from(given.as_bytes().ct_eq(want.as_bytes()))
}

#[cfg(test)]
mod tests;
