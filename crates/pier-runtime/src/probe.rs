//! The startup probe: an instance is ready when it accepts a TCP connection on its port.
//!
//! Polls every 100 µs for the first 20 ms (a fast app listens within milliseconds, and a cold start is on a
//! request's path, so every poll interval is latency), then every millisecond up to a second, then every
//! 25 ms; it gives up at once when the instance exits. A refused connect on loopback costs microseconds.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::{Endpoint, ExitReason};

/// Why an instance never became ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// It ended before listening.
    Exited(ExitReason),
    /// It did not listen in time.
    Timeout(Duration),
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Exited(r) => write!(f, "the instance {r} before listening on PORT"),
            ProbeFailure::Timeout(t) => write!(
                f,
                "the instance did not listen on PORT within {}s: make sure the app listens on 0.0.0.0:$PORT",
                t.as_secs()
            ),
        }
    }
}

/// Waits until `endpoint` accepts a connection, the instance exits, or `timeout` passes. Returns how long
/// it took.
pub async fn wait_ready(
    endpoint: &Endpoint,
    mut exit: watch::Receiver<Option<ExitReason>>,
    timeout: Duration,
) -> Result<Duration, ProbeFailure> {
    let start = Instant::now();
    loop {
        if let Some(reason) = exit.borrow().clone() {
            return Err(ProbeFailure::Exited(reason));
        }
        if endpoint.connect().await.is_ok() {
            return Ok(start.elapsed());
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(ProbeFailure::Timeout(timeout));
        }
        let delay = if elapsed < Duration::from_millis(20) {
            Duration::from_micros(100)
        } else if elapsed < Duration::from_secs(1) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(25)
        };
        tokio::select! {
            _ = tokio::time::sleep(delay.min(timeout - elapsed)) => {}
            changed = exit.changed() => {
                if changed.is_err() {
                    // The watcher is gone: treat as exited without a status.
                    return Err(ProbeFailure::Exited(exit.borrow().clone().unwrap_or(ExitReason::Stopped)));
                }
            }
        }
    }
}
