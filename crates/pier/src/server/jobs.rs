//! Housekeeping as named periodic jobs: each runs on its own schedule until the server stops, logs what
//! fails, and never takes down another.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One round of a job's work.
type Work = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A job: a name for the log, how often, and what it does.
pub(super) struct Job {
    name: &'static str,
    every: Duration,
    work: Work,
}

impl Job {
    /// A job that runs `work` at once, then every `every`.
    pub(super) fn new<F, Fut>(name: &'static str, every: Duration, mut work: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            name,
            every,
            work: Box::new(move || Box::pin(work())),
        }
    }

    /// A job whose work blocks (file I/O, key generation): each round runs on the blocking pool, never
    /// on an async worker.
    pub(super) fn blocking<F>(name: &'static str, every: Duration, work: F) -> Self
    where
        F: FnMut() + Send + 'static,
    {
        let work = std::sync::Arc::new(std::sync::Mutex::new(work));
        Self::new(name, every, move || {
            let work = work.clone();
            async move {
                let round = tokio::task::spawn_blocking(move || {
                    (work.lock().unwrap_or_else(|p| p.into_inner()))();
                });
                if let Err(e) = round.await {
                    tracing::error!(job = name, "a round failed: {e}");
                }
            }
        })
    }

    /// Runs the job until `stop` turns true; a round in progress finishes first.
    pub(super) fn spawn(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                tracing::trace!(job = self.name, "running");
                (self.work)().await;
            }
            tracing::debug!(job = self.name, "stopped");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_job_runs_on_its_schedule_and_stops_when_told() {
        let rounds = Arc::new(AtomicU32::new(0));
        let counted = rounds.clone();
        let (stop, stopped) = watch::channel(false);
        let job = Job::new("count", Duration::from_secs(10), move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        })
        .spawn(stopped);
        // At 0 s, 10 s, 20 s and 30 s.
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 4);
        stop.send(true).unwrap();
        job.await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(rounds.load(Ordering::SeqCst), 4);
    }
}
