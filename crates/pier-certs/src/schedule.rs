//! When to issue, renew and retry: pure functions of times and counts (no clock, no I/O), so tests give
//! them any time they like.
//!
//! - **Renew** when a third of the certificate's lifetime is left (Let's Encrypt's advice for 90-day
//!   certificates: renew at 60 days), spread earlier by up to a tenth of that third with jitter, so a
//!   thousand certificates issued in one minute do not all renew in one minute.
//! - **Inside the CA's renewal window** when the CA offers ACME Renewal Information (RFC 9773 §4.2): a
//!   uniformly random time in the suggested window, now if the window has begun.
//! - **Retry** a failure after 1 minute, doubling up to 6 hours, with ±20 % jitter; a rate limit waits at
//!   least as long as the CA said.

use std::time::{Duration, SystemTime};

/// First retry after a failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
/// Longest wait between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(6 * 3600);

/// When to renew a certificate valid from `not_before` to `not_after`; `jitter` in `[0, 1)` moves it
/// earlier by up to a tenth of the last third.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let third = lifetime / 3;
    let spread = third.mul_f64(jitter.clamp(0.0, 1.0) / 10.0);
    not_after - third - spread
}

/// When to renew inside the CA's suggested window `[start, end)` (RFC 9773 §4.2): `jitter` in `[0, 1)`
/// picks the point; a window already begun means now.
pub fn renew_in_window(
    start: SystemTime,
    end: SystemTime,
    now: SystemTime,
    jitter: f64,
) -> SystemTime {
    let width = end.duration_since(start).unwrap_or(Duration::ZERO);
    let at = start + width.mul_f64(jitter.clamp(0.0, 1.0));
    if start <= now { now } else { at }
}

/// How long to wait after the `failures`-th failure in a row (1 for the first); `jitter` in `[0, 1)`
/// scales the wait by 0.8 to 1.2. `ca_says` is a rate limit's own retry time, which is never cut short.
pub fn retry_after(failures: u32, jitter: f64, ca_says: Option<Duration>) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = FIRST_RETRY.saturating_mul(1u32 << doublings).min(MAX_RETRY);
    let wait = base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0));
    match ca_says {
        Some(d) => wait.max(d),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    const DAY: u64 = 86_400;

    #[test]
    fn a_90_day_certificate_renews_at_60_days_spread_by_at_most_two_days() {
        let (from, to) = (t(0), t(90 * DAY));
        assert_eq!(renew_at(from, to, 0.0), t(60 * DAY));
        let earliest = renew_at(from, to, 0.999_999);
        assert!(
            earliest < t(60 * DAY) && earliest > t(57 * DAY),
            "{earliest:?}"
        );
        // A short-lived certificate (a test CA's 5 minutes) renews after 200 s.
        assert_eq!(renew_at(t(0), t(300), 0.0), t(200));
    }

    #[test]
    fn jitter_spreads_renewals_of_certificates_issued_together() {
        let at: std::collections::HashSet<SystemTime> = (0..100)
            .map(|i| renew_at(t(0), t(90 * DAY), f64::from(i) / 100.0))
            .collect();
        assert_eq!(at.len(), 100);
    }

    #[test]
    fn the_renewal_window_is_used_when_the_ca_offers_one() {
        let (start, end) = (t(50 * DAY), t(52 * DAY));
        assert_eq!(renew_in_window(start, end, t(10 * DAY), 0.5), t(51 * DAY));
        // Once the window has begun (or the CA moved it into the past, as on a revocation): now.
        assert_eq!(renew_in_window(start, end, t(51 * DAY), 0.9), t(51 * DAY));
        assert_eq!(renew_in_window(t(0), t(1), t(5), 0.0), t(5));
    }

    #[test]
    fn failures_back_off_from_a_minute_to_six_hours() {
        assert_eq!(retry_after(1, 0.5, None), Duration::from_secs(60));
        assert_eq!(retry_after(2, 0.5, None), Duration::from_secs(120));
        assert_eq!(retry_after(5, 0.5, None), Duration::from_secs(960));
        assert_eq!(retry_after(30, 0.5, None), MAX_RETRY);
        assert_eq!(retry_after(1, 0.0, None), Duration::from_secs(48));
        assert_eq!(retry_after(1, 0.999_999_9, None).as_secs(), 71);
    }

    #[test]
    fn a_rate_limit_waits_at_least_what_the_ca_says() {
        let ca = Duration::from_secs(3 * 3600);
        assert_eq!(retry_after(1, 0.5, Some(ca)), ca);
        assert_eq!(
            retry_after(20, 0.5, Some(Duration::from_secs(5))),
            MAX_RETRY
        );
    }
}
