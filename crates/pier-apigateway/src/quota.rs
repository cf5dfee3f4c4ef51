//! Quotas (`x-google-management` limits, `x-google-quota` costs): per-minute windows per consumer and
//! metric, as Google documents for its gateways ("per minute, per project"). A window is a calendar
//! minute of the clock; a request is charged all its metrics at once or none (one that would pass one
//! limit but not another is refused and charged nothing). Unlike ESPv2, whose checks are asynchronous and
//! let the first request over the limit through, the limit is exact.
//!
//! The book belongs to a gateway and outlives its configs, so switching config does not reset anyone's
//! count. It takes its own short lock (no I/O under it); the control plane never holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; a test clock can be moved.
pub trait Clock: Send + Sync + 'static {
    /// Now, in seconds.
    fn now_secs(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_secs(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    }
}

/// A request over a limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// The metric whose limit it would pass.
    pub metric: String,
    /// Its limit per minute.
    pub limit: u64,
    /// Seconds until the window turns.
    pub retry_after: u64,
}

/// One consumer's windows: metric → (minute, used).
type Windows = HashMap<String, (u64, u64)>;

/// One gateway's quota counts.
pub struct QuotaBook {
    clock: Arc<dyn Clock>,
    /// consumer → metric → (minute, used); looked up by `&str`, so a request allocates nothing unless
    /// it is a consumer's or a metric's first.
    windows: Mutex<HashMap<String, Windows>>,
}

impl std::fmt::Debug for QuotaBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaBook").finish_non_exhaustive()
    }
}

impl Default for QuotaBook {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl QuotaBook {
    /// A book reading `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `consumer` the `costs` (metric, cost, limit per minute), all or nothing.
    pub fn charge(&self, consumer: &str, costs: &[(String, u64, u64)]) -> Result<(), Exhausted> {
        if costs.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_secs();
        let minute = now / 60;
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let counts = match w.get_mut(consumer) {
            Some(c) => c,
            None => w.entry(consumer.to_owned()).or_default(),
        };
        for (metric, cost, limit) in costs {
            let used = match counts.get(metric.as_str()) {
                Some((m, used)) if *m == minute => *used,
                _ => 0,
            };
            if used.saturating_add(*cost) > *limit {
                return Err(Exhausted {
                    metric: metric.clone(),
                    limit: *limit,
                    retry_after: 60 - now % 60,
                });
            }
        }
        for (metric, cost, _) in costs {
            let e = match counts.get_mut(metric.as_str()) {
                Some(e) => e,
                None => counts.entry(metric.clone()).or_insert((minute, 0)),
            };
            if e.0 != minute {
                *e = (minute, 0);
            }
            e.1 += cost;
        }
        // Old windows go once the map grows: bounded by the consumers of one minute.
        if w.len() > 10_000 {
            w.retain(|_, counts| counts.values().any(|(m, _)| *m == minute));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct FakeClock(AtomicU64);

    impl Clock for FakeClock {
        fn now_secs(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn a_limit_of_five_a_minute_refuses_the_sixth_until_the_minute_turns() {
        let clock = Arc::new(FakeClock(AtomicU64::new(60 * 1000 + 10)));
        let book = QuotaBook::with_clock(clock.clone());
        let cost = [("read".to_owned(), 1, 5)];
        for _ in 0..5 {
            book.charge("project:a", &cost).unwrap();
        }
        let e = book.charge("project:a", &cost).unwrap_err();
        assert_eq!(e.retry_after, 50);
        assert_eq!(e.limit, 5);
        // Another consumer has its own count.
        book.charge("project:b", &cost).unwrap();
        // Later in the same minute: still refused, with less to wait.
        clock.0.store(60 * 1000 + 59, Ordering::Relaxed);
        assert_eq!(book.charge("project:a", &cost).unwrap_err().retry_after, 1);
        // The next minute starts afresh.
        clock.0.store(60 * 1001, Ordering::Relaxed);
        for _ in 0..5 {
            book.charge("project:a", &cost).unwrap();
        }
        assert!(book.charge("project:a", &cost).is_err());
    }

    #[test]
    fn several_metrics_are_charged_all_or_nothing() {
        let clock = Arc::new(FakeClock(AtomicU64::new(0)));
        let book = QuotaBook::with_clock(clock);
        let both = [("a".to_owned(), 1, 10), ("b".to_owned(), 3, 4)];
        book.charge("c", &both).unwrap();
        // b would go to 6 > 4: refused, and a is not charged either.
        assert_eq!(book.charge("c", &both).unwrap_err().metric, "b");
        let a_only = [("a".to_owned(), 9, 10)];
        book.charge("c", &a_only).unwrap();
        assert!(book.charge("c", &[("a".to_owned(), 1, 10)]).is_err());
    }
}
