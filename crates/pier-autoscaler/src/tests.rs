//! Decisions replayed over recorded load traces.

use super::*;

const SEC: Duration = Duration::from_secs(1);

/// Replays a trace: `load[i]` is the concurrency during second `i`. Samples are taken once a second,
/// instances are assumed to start at once, and the decision of each second is recorded.
fn replay(policy: &Policy, load: &[u32]) -> Vec<Decision> {
    let mut samples = Vec::new();
    let mut state = ScalerState::default();
    let mut current = 0;
    let mut last_active = None;
    let mut out = Vec::new();
    for (i, &c) in load.iter().enumerate() {
        let now = SEC * (i as u32 + 1);
        samples.push(Sample {
            at: now,
            concurrency: f64::from(c),
        });
        if c > 0 {
            last_active = Some(now);
        }
        let capacity = current * policy.container_concurrency;
        let (in_flight, queued) = (c.min(capacity), c.saturating_sub(capacity));
        let d = decide(
            policy,
            &Observation {
                now,
                samples: &samples,
                current,
                in_flight,
                queued,
                last_active,
            },
            state,
        );
        state = d.state;
        current = d.desired;
        out.push(d);
    }
    out
}

fn policy() -> Policy {
    Policy::new(10, 0, 20)
}

#[test]
fn nothing_happens_without_traffic() {
    let d = replay(&policy(), &[0; 30]);
    assert!(d.iter().all(|d| d.desired == 0));
}

#[test]
fn first_request_starts_one_instance_at_once() {
    // The activator asks as soon as a request queues, before any sample shows it.
    let obs = Observation {
        now: SEC * 500,
        samples: &[],
        current: 0,
        in_flight: 0,
        queued: 1,
        last_active: Some(SEC * 500),
    };
    let d = decide(&policy(), &obs, ScalerState::default());
    assert_eq!(d.desired, 1);
    assert_eq!(d.reason, Reason::Demand);
    assert_eq!(replay(&policy(), &[1])[0].desired, 1);
}

#[test]
fn burst_from_zero_starts_every_needed_instance_in_one_decision() {
    // 1,000 requests at once, concurrency 10, max 20: all 20 at once, not one by one.
    let d = replay(&policy(), &[1000]);
    assert_eq!(d[0].desired, 20);
    assert_eq!(d[0].reason, Reason::Maximum);
}

#[test]
fn steady_load_settles_at_target_utilisation() {
    // 35 concurrent with concurrency 10 at 70% target: ceil(35/7) = 5.
    let d = replay(&policy(), &[35; 120]);
    assert_eq!(d.last().unwrap().desired, 5);
    assert_eq!(d.last().unwrap().reason, Reason::Stable);
}

#[test]
fn panic_scales_fast_and_holds_through_the_dip() {
    // Steady 7 (one instance), then a burst of 60 for 3 s, then back to 7.
    let mut load = vec![7; 70];
    load.extend([60; 3]);
    load.extend(vec![7; 100]);
    let d = replay(&policy(), &load);
    let burst_end = 72;
    assert_eq!(d[69].desired, 1, "one instance before the burst");
    assert!(
        d[burst_end].desired >= 6,
        "panic scales to the burst: {:?}",
        d[burst_end]
    );
    assert_eq!(d[burst_end].reason, Reason::Panic);
    // During the stable window after the last over-threshold moment it never scales down.
    let peak = d[burst_end].desired;
    for (i, x) in d.iter().enumerate().skip(burst_end).take(55) {
        assert!(x.desired >= peak, "second {i}: {x:?}");
    }
    // Long after, it is back to one instance.
    assert_eq!(d.last().unwrap().desired, 1);
}

#[test]
fn scales_to_zero_only_after_the_idle_grace() {
    let mut p = policy();
    p.scale_to_zero_grace = Duration::from_secs(30);
    let mut load = vec![5; 10];
    load.extend(vec![0; 40]);
    let d = replay(&p, &load);
    // Last request in second 10; grace 30 s: still one instance at second 39, zero from second 40.
    assert_eq!(d[38].desired, 1, "{:?}", d[38]);
    assert_eq!(d[39].desired, 0, "{:?}", d[39]);
    assert_eq!(d[39].reason, Reason::Idle);
}

#[test]
fn short_grace_wins_over_a_long_stable_window() {
    let mut p = policy();
    p.scale_to_zero_grace = Duration::from_secs(2);
    let mut load = vec![5; 5];
    load.extend(vec![0; 5]);
    let d = replay(&p, &load);
    assert_eq!(d[6].desired, 0, "{:?}", d[6]);
}

#[test]
fn min_instances_stay_warm_and_max_caps() {
    let mut p = policy();
    p.min_instances = 2;
    let d = replay(&p, &[0; 10]);
    assert!(
        d.iter()
            .all(|d| d.desired == 2 && d.reason == Reason::Minimum)
    );
    let d = replay(&p, &[10_000; 5]);
    assert!(d.iter().all(|d| d.desired == 20));
}

#[test]
fn scale_down_halves_at_most_per_decision() {
    let policy = Policy::new(10, 0, 100);
    let obs = Observation {
        now: SEC * 1000,
        samples: &[Sample {
            at: SEC * 1000,
            concurrency: 1.0,
        }],
        current: 16,
        in_flight: 1,
        queued: 0,
        last_active: Some(SEC * 1000),
    };
    let d = decide(&policy, &obs, ScalerState::default());
    assert_eq!(d.desired, 8);
    assert_eq!(d.reason, Reason::Hold);
}

#[test]
fn decisions_are_deterministic() {
    let load: Vec<u32> = (0..200).map(|i| (i * 37 % 90) as u32).collect();
    assert_eq!(replay(&policy(), &load), replay(&policy(), &load));
}
