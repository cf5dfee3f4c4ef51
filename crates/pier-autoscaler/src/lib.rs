//! Scaling decisions for one revision, as pure functions: observed concurrency in, desired instance count
//! out.
//!
//! Architecture invariant: no I/O, no clock, no async. Time arrives as `Duration`s since an origin the
//! caller picks, so every decision can be replayed from a recorded trace in a unit test.
//!
//! The algorithm follows Knative's KPA:
//!
//! - **Stable mode.** Average concurrency (requests in flight plus queued) over the stable window (60 s)
//!   divided by the per-instance target (`containerConcurrency` × target utilisation, 70 %).
//! - **Panic mode.** When the average over the short panic window (6 s) asks for at least twice the
//!   instances there are, scale to the panic figure at once and do not scale down until the load has stayed
//!   under the threshold for a whole stable window.
//! - **Hard limit.** Pier adds a floor the KPA does not have: enough instances to give every request in flight
//!   or queued a slot (`ceil(demand / containerConcurrency)`), so a burst from zero starts all the instances it
//!   needs in the first decision.
//! - **Scale to zero** only after no request has been in flight or queued for the idle grace period, and never
//!   below `min-instances`. Scale-down otherwise halves at most per decision.

use std::time::Duration;

/// One observation of a revision's concurrency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When it was taken.
    pub at: Duration,
    /// Requests in flight plus queued at that moment.
    pub concurrency: f64,
}

/// How one revision scales.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Hard per-instance limit (`--concurrency`).
    pub container_concurrency: u32,
    /// Share of `container_concurrency` the autoscaler aims for, in (0, 1].
    pub target_utilization: f64,
    /// Instances kept warm (0 for revisions that serve no traffic).
    pub min_instances: u32,
    /// Most instances.
    pub max_instances: u32,
    /// Averaging window of stable mode.
    pub stable_window: Duration,
    /// Averaging window of panic mode.
    pub panic_window: Duration,
    /// Panic when the panic window asks for this many times the current instances.
    pub panic_threshold: f64,
    /// Idle time before scaling to zero.
    pub scale_to_zero_grace: Duration,
    /// Scale down by at most this factor per decision.
    pub max_scale_down_rate: f64,
}

impl Policy {
    /// Knative's and Cloud Run's defaults for a revision with the given limits.
    pub fn new(container_concurrency: u32, min_instances: u32, max_instances: u32) -> Self {
        Self {
            container_concurrency: container_concurrency.max(1),
            target_utilization: 0.7,
            min_instances,
            max_instances,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_to_zero_grace: Duration::from_secs(60),
            max_scale_down_rate: 2.0,
        }
    }

    fn target(&self) -> f64 {
        (f64::from(self.container_concurrency) * self.target_utilization).max(0.01)
    }
}

/// What the caller saw when asking for a decision.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// Now.
    pub now: Duration,
    /// Recent samples, oldest first; only those inside the windows count.
    pub samples: &'a [Sample],
    /// Instances ready or starting.
    pub current: u32,
    /// Requests being served now.
    pub in_flight: u32,
    /// Requests waiting for a slot now.
    pub queued: u32,
    /// Last moment a request was in flight or queued, if ever.
    pub last_active: Option<Duration>,
}

/// Memory the autoscaler carries from one decision to the next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScalerState {
    /// Last time the panic condition held; `None` when not panicking.
    pub panic_since: Option<Duration>,
    /// Highest count decided during the current panic.
    pub panic_desired: u32,
}

/// Why the count is what it is (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Stable-window average.
    Stable,
    /// Panic-window average during a burst.
    Panic,
    /// Enough slots for every request in flight or queued.
    Demand,
    /// Kept at `min-instances`.
    Minimum,
    /// Capped at `max-instances`.
    Maximum,
    /// Idle past the grace period.
    Idle,
    /// Held while recently active (before the grace period ends) or by the scale-down rate.
    Hold,
}

/// The decision: how many instances there should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Desired instances (ready plus starting).
    pub desired: u32,
    /// State for the next decision.
    pub state: ScalerState,
    /// What determined `desired`.
    pub reason: Reason,
}

fn window_average(samples: &[Sample], now: Duration, window: Duration) -> f64 {
    let start = now.saturating_sub(window);
    let (sum, n) = samples
        .iter()
        .filter(|s| s.at > start && s.at <= now)
        .fold((0.0, 0u32), |(sum, n), s| (sum + s.concurrency, n + 1));
    if n == 0 { 0.0 } else { sum / f64::from(n) }
}

fn ceil_div(a: f64, b: f64) -> u32 {
    let v = (a / b).ceil();
    if v.is_finite() && v > 0.0 {
        v.min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// Decides the desired instance count.
pub fn decide(policy: &Policy, obs: &Observation<'_>, state: ScalerState) -> Decision {
    let target = policy.target();
    let stable = window_average(obs.samples, obs.now, policy.stable_window);
    let panic_avg = window_average(obs.samples, obs.now, policy.panic_window);
    let desired_stable = ceil_div(stable, target);
    let desired_panic = ceil_div(panic_avg, target);

    // Panic bookkeeping (Knative: enter or extend when over the threshold, leave a stable window after the
    // last time it was over).
    let over = obs.current > 0
        && f64::from(desired_panic) / f64::from(obs.current) >= policy.panic_threshold;
    let mut next = state;
    if over {
        next.panic_since = Some(obs.now);
    } else if let Some(since) = state.panic_since
        && obs.now >= since + policy.stable_window
    {
        next = ScalerState::default();
    }

    let (mut desired, mut reason) = if next.panic_since.is_some() {
        let d = desired_panic.max(state.panic_desired).max(obs.current);
        next.panic_desired = d;
        (d, Reason::Panic)
    } else {
        (desired_stable, Reason::Stable)
    };

    // Hard limit: every request in flight or queued needs a slot.
    let demand = obs.in_flight.saturating_add(obs.queued);
    let floor = demand.div_ceil(policy.container_concurrency);
    if floor > desired {
        desired = floor;
        reason = Reason::Demand;
    }

    let idle = demand == 0
        && obs
            .last_active
            .is_none_or(|t| obs.now >= t + policy.scale_to_zero_grace);
    if idle {
        desired = 0;
        reason = Reason::Idle;
    } else if desired == 0 && (obs.current > 0 || demand > 0) {
        // Recently active: keep one instance through the grace period.
        desired = 1;
        reason = Reason::Hold;
    }

    // Limit how fast we scale down (except to zero when idle).
    if !idle && desired < obs.current {
        let limit = (f64::from(obs.current) / policy.max_scale_down_rate).floor() as u32;
        if desired < limit {
            desired = limit;
            reason = Reason::Hold;
        }
    }

    if desired > policy.max_instances {
        desired = policy.max_instances;
        reason = Reason::Maximum;
    }
    if desired < policy.min_instances {
        desired = policy.min_instances;
        reason = Reason::Minimum;
    }
    Decision {
        desired,
        state: next,
        reason,
    }
}

#[cfg(test)]
mod tests;
