//! Property tests of the parsers that face the network or users: host normalization, names and the
//! host scheme, traffic arithmetic, manifests and probe flags. Bounded case counts keep them fast in CI;
//! a failure proptest finds becomes a regression case in the unit tests.

use proptest::prelude::*;

use crate::hosts::normalize_host;
use crate::manifest::ServiceManifest;
use crate::probe::{Probe, ProbeKind};
use crate::traffic::{Traffic, TrafficKey};
use crate::{RevisionName, ServiceName, Tag, UrlScheme};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Never panics; what it accepts is lowercase, has no port, and normalizes to itself.
    #[test]
    fn host_normalization_is_idempotent(raw in "\\PC{0,80}") {
        if let Some(h) = normalize_host(&raw) {
            prop_assert!(!h.bytes().any(|b| b.is_ascii_uppercase()));
            prop_assert!(!h.is_empty() && h.len() <= 253);
            let again = normalize_host(&h).map(|c| c.into_owned());
            prop_assert_eq!(again.as_deref(), Some(h.as_ref()));
        }
    }

    /// No service name can form another service's tag host, nor any other service's host (the finding
    /// where a service named `green---b` answered at `b`'s tag URL).
    #[test]
    fn no_name_forms_another_resources_host(
        a in "[a-z][a-z0-9-]{0,20}",
        b in "[a-z][a-z0-9-]{0,20}",
        tag in "[a-z][a-z0-9-]{0,10}",
    ) {
        let scheme = UrlScheme::new("pier.localhost", 8443);
        if let (Ok(sa), Ok(sb), Ok(t)) = (a.parse::<ServiceName>(), b.parse::<ServiceName>(), tag.parse::<Tag>()) {
            let tag_host = scheme.tag_host(&t, &sb, "3f9a2c");
            if let Ok(tag_host) = tag_host {
                prop_assert_ne!(scheme.service_host(&sa, "3f9a2c"), tag_host);
            }
            if sa != sb {
                prop_assert_ne!(scheme.service_host(&sa, "3f9a2c"), scheme.service_host(&sb, "3f9a2c"));
            }
        }
    }

    /// Names never panic and round-trip.
    #[test]
    fn names_round_trip(raw in "\\PC{0,70}") {
        if let Ok(n) = raw.parse::<ServiceName>() {
            prop_assert_eq!(n.to_string(), raw.clone());
            prop_assert!(!n.as_str().contains("--"));
        }
        let _ = raw.parse::<RevisionName>();
        let _ = raw.parse::<Tag>();
    }

    /// What `update-traffic` accepts is valid and adds up to 100; more than 100 is refused.
    #[test]
    fn traffic_assignments_add_up(parts in proptest::collection::vec((0u8..4, 0u8..=100), 0..4)) {
        let revs = ["svc-00001-aaa", "svc-00002-bbb", "svc-00003-ccc"];
        let mut assignments: Vec<(TrafficKey, u8)> = Vec::new();
        for (which, pct) in parts {
            let key = match which {
                3 => TrafficKey::Latest,
                i => TrafficKey::Revision(revs[usize::from(i)].parse().unwrap()),
            };
            if !assignments.iter().any(|(k, _)| *k == key) {
                assignments.push((key, pct));
            }
        }
        let total: u32 = assignments.iter().map(|(_, p)| u32::from(*p)).sum();
        if let Ok(t) = Traffic::default().assign(&assignments) {
            prop_assert!(t.validate().is_ok());
            let sum: u32 = t.percents().iter().map(|(_, p)| u32::from(*p)).sum();
            prop_assert_eq!(sum, 100);
        }
        // Over 100 is never accepted.
        if total > 100 {
            prop_assert!(Traffic::default().assign(&assignments).is_err());
        }
    }

    /// Manifests never panic, whatever the text.
    #[test]
    fn manifests_never_panic(text in "\\PC{0,400}") {
        let _ = ServiceManifest::from_yaml(&text);
    }

    /// Probe flags never panic, and what parses is valid.
    #[test]
    fn probe_flags_never_panic(text in "[a-zA-Z.=,/0-9]{0,80}") {
        for kind in [ProbeKind::Startup, ProbeKind::Liveness] {
            if let Ok(p) = Probe::from_flag(&text, kind) {
                prop_assert!(p.validate(kind).is_ok());
            }
        }
    }
}
