//! A short history of each service's own figures, kept in process so the console can draw charts
//! without a Prometheus server: every [`STEP`], the counters of every revision are read and the
//! differences since the previous step are kept per service (requests per second, latency
//! percentiles, instances, cold starts), for [`KEEP`] steps (six hours).
//!
//! Memory: a service gets its ring on its first step with traffic or instances (32 bytes a step, so
//! about 69 KB for six hours) and loses it after six hours of nothing, so thousands of services at
//! zero cost nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::{Metrics, RevisionLabels};

/// Time between two samples.
pub const STEP: Duration = Duration::from_secs(10);

/// Samples kept per service: six hours at [`STEP`].
pub const KEEP: usize = 6 * 60 * 6;

/// The upper bounds of the latency buckets the history counts in, in seconds: the same as the
/// `pier_request_latencies_seconds` histogram's (0.5 ms doubling), then +Inf.
pub(crate) const BOUNDS: [f64; 16] = {
    let mut b = [0.0005; 16];
    let mut i = 1;
    while i < 16 {
        b[i] = b[i - 1] * 2.0;
        i += 1;
    }
    b
};

/// Counts kept beside a revision's Prometheus series for the history: requests by latency bucket
/// (one atomic add per request) and cold starts.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    buckets: [AtomicU64; 17],
    cold_starts: AtomicU64,
}

impl Recent {
    pub(crate) fn request(&self, elapsed: Duration) {
        let s = elapsed.as_secs_f64();
        let i = BOUNDS.iter().position(|b| s <= *b).unwrap_or(16);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn cold_start(&self) {
        self.cold_starts.fetch_add(1, Ordering::Relaxed);
    }

    fn read(&self) -> Cumulative {
        Cumulative {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            cold_starts: self.cold_starts.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cumulative {
    buckets: [u64; 17],
    cold_starts: u64,
}

/// One service's figures over one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// The step's end, in seconds since the Unix epoch.
    pub at: u64,
    /// Requests answered per second.
    pub requests_per_second: f32,
    /// Latency percentiles 50, 95 and 99 in milliseconds (upper bound of the bucket they fall in);
    /// NaN without requests.
    pub latency_ms: [f32; 3],
    /// Instances (starting, idle or active) at the step's end.
    pub instances: f32,
    /// Instances started while requests waited, during the step.
    pub cold_starts: f32,
}

impl Point {
    fn is_quiet(&self) -> bool {
        self.requests_per_second == 0.0 && self.instances == 0.0 && self.cold_starts == 0.0
    }
}

#[derive(Debug, Default)]
struct Ring {
    points: VecDeque<Point>,
    /// Steps since the last one that was not quiet.
    quiet: usize,
}

#[derive(Debug, Default)]
struct State {
    /// What each revision's counters said at the previous step.
    last: HashMap<RevisionLabels, Cumulative>,
    /// By (project, service).
    rings: HashMap<(String, String), Ring>,
}

/// The in-process history of every service's figures (see the module's docs).
#[derive(Debug, Default)]
pub struct History {
    state: Mutex<State>,
}

impl History {
    /// Samples `metrics` every [`STEP`] on the current tokio runtime until `metrics` is dropped.
    pub fn start(metrics: &Arc<Metrics>) {
        let weak: Weak<Metrics> = Arc::downgrade(metrics);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last = std::time::Instant::now();
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { return };
                m.history.sample(&m, unix_now(), last.elapsed());
                last = std::time::Instant::now();
            }
        });
    }

    /// Takes one sample of every revision's counters at `at` (seconds since the epoch), `elapsed`
    /// after the previous one (the rates' divisor: a late tick does not inflate them).
    pub(crate) fn sample(&self, metrics: &Metrics, at: u64, elapsed: Duration) {
        let handles: Vec<_> = metrics
            .handed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let mut instances: HashMap<(String, String), u32> = HashMap::new();
        for (l, n) in metrics.live.instance_counts() {
            *instances.entry((l.project, l.service)).or_default() += n;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut steps: HashMap<(String, String), Cumulative> = HashMap::new();
        let mut seen = HashMap::with_capacity(handles.len());
        for h in &handles {
            let now = h.recent.read();
            let before = st.last.get(&h.labels).copied().unwrap_or_default();
            let step = steps
                .entry((h.labels.project.clone(), h.labels.service.clone()))
                .or_default();
            for i in 0..17 {
                step.buckets[i] += now.buckets[i].saturating_sub(before.buckets[i]);
            }
            step.cold_starts += now.cold_starts.saturating_sub(before.cold_starts);
            seen.insert(h.labels.clone(), now);
        }
        st.last = seen;
        for k in instances.keys() {
            steps.entry(k.clone()).or_default();
        }
        for (key, step) in steps {
            let point = point(
                at,
                elapsed,
                &step,
                instances.get(&key).copied().unwrap_or(0),
            );
            let quiet = point.is_quiet();
            if quiet && !st.rings.contains_key(&key) {
                continue;
            }
            let ring = st.rings.entry(key).or_default();
            ring.quiet = if quiet { ring.quiet + 1 } else { 0 };
            if ring.points.len() == KEEP {
                ring.points.pop_front();
            }
            ring.points.push_back(point);
        }
        // Services with nothing for the whole window, and services whose series are gone.
        st.rings.retain(|_, r| r.quiet < KEEP);
        let live: std::collections::HashSet<(String, String)> = handles
            .iter()
            .map(|h| (h.labels.project.clone(), h.labels.service.clone()))
            .collect();
        st.rings.retain(|k, _| live.contains(k));
    }

    /// The points of one service from the last `window`, oldest first.
    pub fn service(&self, project: &str, service: &str, window: Duration) -> Vec<Point> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ring) = st.rings.get(&(project.to_owned(), service.to_owned())) else {
            return Vec::new();
        };
        let from = unix_now().saturating_sub(window.as_secs());
        ring.points
            .iter()
            .filter(|p| p.at > from)
            .copied()
            .collect()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn point(at: u64, elapsed: Duration, step: &Cumulative, instances: u32) -> Point {
    let total: u64 = step.buckets.iter().sum();
    let quantile = |q: f64| -> f32 {
        if total == 0 {
            return f32::NAN;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in step.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // The last bucket has no upper bound: report the largest finite one.
                return (BOUNDS[i.min(15)] * 1000.0) as f32;
            }
        }
        (BOUNDS[15] * 1000.0) as f32
    };
    Point {
        at,
        requests_per_second: total as f32 / elapsed.as_secs_f32().max(1.0),
        latency_ms: [quantile(0.50), quantile(0.95), quantile(0.99)],
        instances: instances as f32,
        cold_starts: step.cold_starts as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_becomes_rates_and_percentiles() {
        let m = Metrics::new();
        let h = m.revision("p", "web", "web-00001-abc");
        for _ in 0..98 {
            h.request(200, Duration::from_micros(700), 0, 0);
        }
        h.request(500, Duration::from_millis(30), 0, 0);
        h.request(200, Duration::from_millis(300), 0, 0);
        h.cold_start();
        m.history.sample(&m, 1_000, STEP);
        // A second revision of another service that saw nothing: no ring for it.
        let _quiet = m.revision("p", "idle", "idle-00001-abc");
        m.history.sample(&m, 1_010, STEP);
        let pts = m
            .history
            .service("p", "web", Duration::from_secs(u64::MAX / 2));
        assert_eq!(pts.len(), 2, "{pts:?}");
        let p = pts[0];
        assert_eq!(p.requests_per_second, 10.0);
        // 98 of 100 under 1 ms: p50 and p95 in the 1 ms bucket, p99 in the 32 ms one.
        assert_eq!(p.latency_ms, [1.0, 1.0, 32.0]);
        assert_eq!(p.cold_starts, 1.0);
        // The next step counts only what came after.
        assert_eq!(pts[1].requests_per_second, 0.0);
        assert!(pts[1].latency_ms[0].is_nan());
        assert!(
            m.history
                .service("p", "idle", Duration::from_secs(60))
                .is_empty()
        );
    }

    #[test]
    fn forgotten_services_lose_their_history() {
        let m = Metrics::new();
        let h = m.revision("p", "web", "web-00001-abc");
        h.request(200, Duration::from_millis(2), 0, 0);
        m.history.sample(&m, 1_000, STEP);
        assert_eq!(
            m.history
                .service("p", "web", Duration::from_secs(u64::MAX / 2))
                .len(),
            1
        );
        m.retain(|_| false);
        m.history.sample(&m, 1_010, STEP);
        assert!(
            m.history
                .service("p", "web", Duration::from_secs(u64::MAX / 2))
                .is_empty()
        );
    }
}
