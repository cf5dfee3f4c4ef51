//! Tests of the traffic planner (`update-traffic` semantics); the rest of the control plane is tested end
//! to end through the `pier` binary.

use super::*;
use pier_model::api::{TagAssignment, TrafficAssignment};

fn rev(n: &str, state: RevisionState, seq: u32) -> RevisionRecord {
    RevisionRecord {
        project: ProjectName::default(),
        service: "a".parse().unwrap(),
        name: n.parse().unwrap(),
        seq,
        template: Default::default(),
        state,
        message: None,
        log_tail: vec![],
        pending_tag: None,
        created_at: String::new(),
        ready_at: None,
        image_digest: None,
        creator: None,
    }
}

fn svc(traffic: Traffic) -> ServiceRecord {
    ServiceRecord {
        project: ProjectName::default(),
        name: "a".parse().unwrap(),
        traffic,
        ingress: Default::default(),
        invoker_iam_check: true,
        custom_audiences: vec![],
        end_user_auth: None,
        cache: None,
        latest_created: Some("a-00003-ccc".parse().unwrap()),
        latest_ready: Some("a-00002-bbb".parse().unwrap()),
        created_at: String::new(),
        updated_at: String::new(),
        id_block: 0,
    }
}

fn revs() -> Vec<RevisionRecord> {
    vec![
        rev("a-00001-aaa", RevisionState::Ready, 1),
        rev("a-00002-bbb", RevisionState::Ready, 2),
        rev("a-00003-ccc", RevisionState::Failed, 3),
    ]
}

fn to(target: &str, percent: u8) -> TrafficAssignment {
    TrafficAssignment {
        target: target.into(),
        percent,
    }
}

#[test]
fn canary_and_rollback() {
    let s = svc(Traffic::default());
    let req = UpdateTrafficRequest {
        to_revisions: vec![to("a-00001-aaa", 90), to("LATEST", 10)],
        ..Default::default()
    };
    let t = plan_traffic(&s, &revs(), &req).unwrap();
    assert_eq!(
        t.percents(),
        vec![
            (TrafficKey::Revision("a-00001-aaa".parse().unwrap()), 90),
            (TrafficKey::Latest, 10)
        ]
    );
    let back = plan_traffic(
        &svc(t),
        &revs(),
        &UpdateTrafficRequest {
            to_latest: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(back.percents(), vec![(TrafficKey::Latest, 100)]);
}

#[test]
fn tags_resolve_as_targets() {
    let s = svc(Traffic::default());
    let tagged = plan_traffic(
        &s,
        &revs(),
        &UpdateTrafficRequest {
            update_tags: vec![TagAssignment {
                tag: "green".parse().unwrap(),
                revision: "a-00001-aaa".into(),
            }],
            ..Default::default()
        },
    )
    .unwrap();
    let moved = plan_traffic(
        &svc(tagged),
        &revs(),
        &UpdateTrafficRequest {
            to_revisions: vec![to("green", 100)],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        moved.percents(),
        vec![(TrafficKey::Revision("a-00001-aaa".parse().unwrap()), 100)]
    );
    assert_eq!(moved.tags().len(), 1);
}

#[test]
fn failed_and_foreign_revisions_are_refused() {
    let s = svc(Traffic::default());
    for (target, why) in [
        ("a-00003-ccc", "not ready"),
        ("b-00001-aaa", "neither a revision"),
        ("nope", "neither a revision"),
    ] {
        let err = plan_traffic(
            &s,
            &revs(),
            &UpdateTrafficRequest {
                to_revisions: vec![to(target, 100)],
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(why), "{target}: {err}");
    }
}
