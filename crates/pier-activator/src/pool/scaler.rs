//! The scaler of one revision's pool: a task that samples demand on ticks, asks the autoscaler
//! ([`pier_autoscaler::decide`]) how many instances to have, and starts or stops instances to match. A
//! pool at rest stops ticking until something wakes it.

use std::sync::Arc;
use std::time::Instant;

use pier_autoscaler::{Observation, Policy, Sample, decide};
use pier_model::api::InstanceState;

use super::{RevisionPool, stop_instance};
use crate::{AcquireError, since_origin};

impl RevisionPool {
    /// Whether the scaler has nothing to watch: no instance (starting, serving or draining), no request
    /// in flight or waiting, only zero demand in its window, and no minimum to keep while it serves.
    /// Whatever changes that (a request, an instance, serving again) wakes the scaler.
    pub(crate) fn at_rest(&self) -> bool {
        let st = self.lock();
        !st.closed
            && st.entries.is_empty()
            && st.starting == 0
            && st.in_flight == 0
            && st.waiters.is_empty()
            && st.samples.iter().all(|s| s.concurrency == 0.0)
            && !(st.serving && self.template.min_instances > 0)
    }

    /// One scaler step: sample (on ticks), decide, start or stop instances.
    pub(super) fn step(self: &Arc<Self>, sample: bool) -> Option<()> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        let t = since_origin(now);
        let demand = st.in_flight + st.waiters.len() as u32;
        if sample {
            st.samples.push_back(Sample {
                at: t,
                concurrency: f64::from(demand),
            });
            while st
                .samples
                .front()
                .is_some_and(|s| s.at + self.config.stable_window < t)
            {
                st.samples.pop_front();
            }
        }
        if demand > 0 {
            st.last_active = Some(now);
        }
        // Instances taken out of rotation (unreachable) are stopped once idle.
        let mut gone = Vec::new();
        st.entries.retain(|e| {
            let drop_it = e.state == InstanceState::Draining && e.in_flight == 0;
            if drop_it {
                gone.push(e.slot.clone());
            }
            !drop_it
        });
        let grace = self.config.stop_grace;
        for v in gone {
            stop_instance(v, grace);
        }
        let mut policy = Policy::new(
            self.template.container_concurrency,
            if st.serving {
                self.template.min_instances
            } else {
                0
            },
            self.template.max_instances,
        );
        policy.stable_window = self.config.stable_window;
        policy.panic_window = self.config.panic_window;
        policy.scale_to_zero_grace = self.config.scale_to_zero_grace;
        policy.target_utilization = self.config.target_utilization;
        let active: Vec<usize> = st
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state != InstanceState::Draining)
            .map(|(i, _)| i)
            .collect();
        let current = st.starting + active.len() as u32;
        let samples: Vec<Sample> = st.samples.iter().copied().collect();
        let d = decide(
            &policy,
            &Observation {
                now: t,
                samples: &samples,
                current,
                in_flight: st.in_flight,
                queued: st.waiters.len() as u32,
                last_active: st.last_active.map(since_origin),
            },
            st.scaler,
        );
        st.scaler = d.state;

        // Requests waiting too long while the revision is full get Cloud Run's "no available instance".
        if current >= policy.max_instances && st.starting == 0 {
            let pending = self.config.pending_timeout;
            while st
                .waiters
                .front()
                .is_some_and(|w| now.duration_since(w.since) >= pending)
            {
                if let Some(w) = st.waiters.pop_front() {
                    let _ = w.tx.send(Err(AcquireError::NoCapacity {
                        max: policy.max_instances,
                    }));
                }
            }
        }
        st.waiters.retain(|w| !w.tx.is_closed());

        if d.desired > current {
            if st.next_start.is_some_and(|t| t > now) {
                return Some(());
            }
            let n = d.desired - current;
            st.starting += n;
            if let Some(m) = &self.metrics
                && !st.waiters.is_empty()
            {
                for _ in 0..n.min(st.waiters.len() as u32) {
                    m.cold_start();
                }
            }
            drop(st);
            tracing::debug!(revision = %self.revision, from = current, to = d.desired, reason = ?d.reason, "scaling up");
            for _ in 0..n {
                let pool = self.clone();
                tokio::spawn(async move {
                    let _ = pool.start_instance().await;
                });
            }
        } else if d.desired < current && sample {
            // Scale down on ticks only: a flurry of wake-ups (one per queued request) must not compound
            // the per-decision scale-down limit. Stop idle instances only, newest first; busy ones are
            // reconsidered next tick.
            let mut excess = current - d.desired;
            let mut victims = Vec::new();
            for i in active.into_iter().rev() {
                if excess == 0 {
                    break;
                }
                if st.entries[i].in_flight == 0 && st.entries[i].state == InstanceState::Ready {
                    st.entries[i].state = InstanceState::Draining;
                    victims.push(st.entries[i].slot.clone());
                    excess -= 1;
                }
            }
            st.entries
                .retain(|e| !victims.iter().any(|v| Arc::ptr_eq(v, &e.slot)));
            drop(st);
            if !victims.is_empty() {
                tracing::debug!(revision = %self.revision, from = current, to = d.desired, reason = ?d.reason, "scaling down");
            }
            for v in victims {
                stop_instance(v, grace);
            }
        }
        Some(())
    }
}

/// The scaler task of one pool; ends when the pool is closed.
pub(super) async fn scaler(pool: std::sync::Weak<RevisionPool>) {
    let Some(tick) = pool.upgrade().map(|p| p.config.tick) else {
        return;
    };
    let mut next_tick = tokio::time::Instant::now() + tick;
    loop {
        let Some(p) = pool.upgrade() else { return };
        // A revision at rest (no instance, no request, nothing to keep warm) has nothing to sample or
        // decide until something wakes it: most services are at zero, and ten thousand pools ticking
        // twice a second would cost the server CPU for nothing.
        let at_rest = p.at_rest();
        let sample = tokio::select! {
            _ = tokio::time::sleep_until(next_tick), if !at_rest => {
                next_tick += tick;
                true
            }
            _ = p.wake.notified() => {
                if at_rest {
                    next_tick = tokio::time::Instant::now() + tick;
                }
                false
            }
        };
        if p.step(sample).is_none() {
            return;
        }
    }
}
