//! State read at scrape time: what the activator's pools hold now (instances by state, waiting
//! requests, the peak concurrency since the last scrape, instances' CPU and memory from their cgroups),
//! and other counters kept elsewhere (the edge cache's). Nothing on the request path.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::RevisionLabels;

/// One revision's state now.
#[derive(Clone, Debug, Default)]
pub struct LiveRevision {
    /// Its labels.
    pub labels: Option<RevisionLabels>,
    /// Ready instances with requests in flight (Cloud Run's `active`).
    pub active: u32,
    /// Ready instances without (Cloud Run's `idle`).
    pub idle: u32,
    /// Instances starting.
    pub starting: u32,
    /// Requests waiting for a slot.
    pub pending: u32,
    /// The most requests one instance had in flight at once since the last scrape (Cloud Run's
    /// `container/max_request_concurrencies`, per scrape interval instead of per minute).
    pub peak_concurrency: u32,
    /// CPU time its instances used since the pool was made, in seconds (from their cgroups, read at
    /// each scrape; an instance that ended keeps the share last read): a counter, so `rate()` gives
    /// the CPU cores it uses.
    pub cpu_seconds: f64,
    /// Memory its running instances use now, in bytes (from their cgroups).
    pub memory_bytes: u64,
    /// Sandboxes made ahead of demand for its next cold start (0 or 1; `pier server --warm-sandboxes`).
    pub warm_sandboxes: u32,
}

/// Counters another part of Pier keeps (the edge cache's hits, misses, bypasses), by `result`.
#[derive(Clone, Debug, Default)]
pub struct LiveCounters {
    /// The metric's name, without the `pier_` prefix and `_total` suffix.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// Values by result.
    pub values: Vec<(&'static str, u64)>,
}

/// Something that reports state at scrape time.
pub trait LiveSource: Send + Sync + 'static {
    /// The revisions it knows of.
    fn revisions(&self) -> Vec<LiveRevision> {
        Vec::new()
    }

    /// How many instances (starting or running) each revision has now: a cheap read, unlike
    /// [`LiveSource::revisions`] (no cgroup, and the peak is left alone), for the history.
    fn instances(&self) -> Vec<(RevisionLabels, u32)> {
        Vec::new()
    }

    /// Counters it keeps.
    fn counters(&self) -> Vec<LiveCounters> {
        Vec::new()
    }
}

#[derive(Default)]
pub(crate) struct Sources(Mutex<Vec<Arc<dyn LiveSource>>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}

impl Sources {
    pub(crate) fn add(&self, s: Arc<dyn LiveSource>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }

    pub(crate) fn instance_counts(&self) -> Vec<(RevisionLabels, u32)> {
        let sources = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        sources.iter().flat_map(|s| s.instances()).collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    project: String,
    service: String,
    revision: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type Gauge = (&'static str, &'static str, fn(&LiveRevision) -> f64);

const GAUGES: [Gauge; 4] = [
    (
        "pending_requests",
        "Requests waiting for an instance slot now",
        |r| f64::from(r.pending),
    ),
    (
        "max_request_concurrencies",
        "Most requests one instance had in flight at once since the last scrape",
        |r| f64::from(r.peak_concurrency),
    ),
    (
        "instance_memory_bytes",
        "Memory the revision's running instances use now (their cgroups)",
        |r| r.memory_bytes as f64,
    ),
    (
        "warm_sandboxes",
        "Sandboxes made ahead of demand for the revision's next cold start (pier server --warm-sandboxes)",
        |r| f64::from(r.warm_sandboxes),
    ),
];

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sources: Vec<Arc<dyn LiveSource>> =
            self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let revisions: Vec<LiveRevision> = sources
            .iter()
            .flat_map(|s| s.revisions())
            .filter(|r| r.labels.is_some())
            .collect();
        {
            let mut m = encoder.encode_descriptor(
                "instances",
                "Instances by state: active (serving requests), idle, starting (Cloud Run's container/instance_count)",
                None,
                MetricType::Gauge,
            )?;
            for r in &revisions {
                let Some(l) = &r.labels else { continue };
                for (state, n) in [
                    ("active", r.active),
                    ("idle", r.idle),
                    ("starting", r.starting),
                ] {
                    let labels = StateLabels {
                        project: l.project.clone(),
                        service: l.service.clone(),
                        revision: l.revision.clone(),
                        state,
                    };
                    ConstGauge::new(i64::from(n)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, value) in GAUGES {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for r in &revisions {
                let Some(l) = &r.labels else { continue };
                ConstGauge::new(value(r)).encode(m.encode_family(l)?)?;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "instance_cpu_seconds",
                "CPU time the revision's instances used, in seconds (their cgroups; rate() is the cores in use)",
                None,
                MetricType::Counter,
            )?;
            for r in &revisions {
                let Some(l) = &r.labels else { continue };
                ConstCounter::new(r.cpu_seconds).encode(m.encode_family(l)?)?;
            }
        }
        for counters in sources.iter().flat_map(|s| s.counters()) {
            let mut m = encoder.encode_descriptor(
                counters.name,
                counters.help,
                None,
                MetricType::Counter,
            )?;
            for (result, v) in &counters.values {
                ConstCounter::new(*v).encode(m.encode_family(&ResultLabel { result })?)?;
            }
        }
        Ok(())
    }
}
