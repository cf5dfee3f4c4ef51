//! Throttling password sign-ins per account: after [`FREE_FAILURES`] wrong passwords in a row an
//! account waits, twice as long after each further failure (up to [`MAX_WAIT`]), before another attempt
//! is even checked; a success clears it. Unknown accounts are throttled the same way, so the answers
//! say nothing about which exist. Waiting attempts are refused without running argon2, so a guesser
//! cannot spend the server's memory either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords in a row before an account waits.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// Accounts remembered at most (the oldest entries go first).
const MAX_TRACKED: usize = 10_000;

static FAILURES: Mutex<Option<HashMap<String, (u32, Instant)>>> = Mutex::new(None);

fn wait_after(failures: u32) -> Duration {
    if failures < FREE_FAILURES {
        return Duration::ZERO;
    }
    let secs = 1u64 << (failures - FREE_FAILURES).min(16);
    Duration::from_secs(secs).min(MAX_WAIT)
}

/// How long `account` must still wait before its next attempt is checked, if at all.
pub fn must_wait(account: &str) -> Option<Duration> {
    let map = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    let (failures, last) = map.as_ref()?.get(account)?;
    let left = wait_after(*failures).saturating_sub(last.elapsed());
    (!left.is_zero()).then_some(left)
}

/// Records a wrong password for `account`.
pub fn failed(account: &str) {
    let mut map = FAILURES.lock().unwrap_or_else(|p| p.into_inner());
    let map = map.get_or_insert_with(HashMap::new);
    if map.len() >= MAX_TRACKED
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, (_, t))| *t)
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
    let e = map.entry(account.to_owned()).or_insert((0, Instant::now()));
    e.0 += 1;
    e.1 = Instant::now();
}

/// Clears `account`'s failures after a good password.
pub fn succeeded(account: &str) {
    if let Some(map) = FAILURES.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        map.remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_after_the_free_failures_and_a_success_clears_them() {
        let who = "throttle-test@example.com";
        for _ in 0..FREE_FAILURES {
            assert!(must_wait(who).is_none());
            failed(who);
        }
        let w = must_wait(who).unwrap();
        assert!(w <= Duration::from_secs(1) && w > Duration::ZERO, "{w:?}");
        failed(who);
        assert!(must_wait(who).unwrap() > Duration::from_secs(1));
        succeeded(who);
        assert!(must_wait(who).is_none());
        assert_eq!(wait_after(100), MAX_WAIT);
    }
}
