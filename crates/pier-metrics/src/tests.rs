//! The rendered output: what recording through handles shows, what retiring a revision removes, and
//! the scrape-time sources.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn line<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines().find(|l| l.starts_with(prefix))
}

#[test]
fn requests_count_by_class_with_latency_and_bytes() {
    let m = Metrics::new();
    let h = m.revision("p", "hello", "hello-00001-abc");
    h.request(200, Duration::from_millis(3), 10, 100);
    h.request(204, Duration::from_millis(1), 0, 0);
    h.request(503, Duration::from_millis(700), 0, 20);
    h.rejected(Rejection::StartFailed);
    let out = m.render();
    let labels = r#"project="p",service="hello",revision="hello-00001-abc""#;
    assert_eq!(
        line(
            &out,
            &format!("pier_request_count_total{{{labels},response_code_class=\"2xx\"}}")
        ),
        Some(
            format!("pier_request_count_total{{{labels},response_code_class=\"2xx\"}} 2").as_str()
        ),
        "{out}"
    );
    assert!(out.contains(&format!(
        "pier_request_count_total{{{labels},response_code_class=\"5xx\"}} 1"
    )));
    // 3 ms and 1 ms fall at or under the 4 ms bucket; the 700 ms one does not.
    assert!(out.contains(&format!(
        "pier_request_latencies_seconds_bucket{{le=\"0.004\",{labels},response_code_class=\"2xx\"}} 2"
    )), "{out}");
    assert!(out.contains(&format!("pier_request_bytes_total{{{labels}}} 10")));
    assert!(out.contains(&format!("pier_response_bytes_total{{{labels}}} 120")));
    assert!(out.contains(&format!(
        "pier_rejected_requests_total{{{labels},code=\"503\",reason=\"start_failed\"}} 1"
    )));
    assert!(out.ends_with("# EOF\n"));
}

#[test]
fn handles_of_the_same_revision_share_their_series_and_retired_ones_leave() {
    let m = Metrics::new();
    let a = m.revision("p", "s", "s-1");
    let b = m.revision("p", "s", "s-1");
    a.request(200, Duration::from_millis(1), 0, 0);
    b.request(200, Duration::from_millis(1), 0, 0);
    let other = m.revision("p", "t", "t-1");
    other.startup(StartupPhase::Total, Duration::from_millis(5));
    let out = m.render();
    assert!(out.contains(r#"pier_request_count_total{project="p",service="s",revision="s-1",response_code_class="2xx"} 2"#), "{out}");
    m.retain(|l| l.service != "s");
    let out = m.render();
    assert!(!out.contains(r#"service="s""#), "{out}");
    assert!(out.contains(r#"pier_instance_startup_latencies_seconds_count{project="p",service="t",revision="t-1",phase="total"} 1"#), "{out}");
}

struct Fixed;

impl LiveSource for Fixed {
    fn revisions(&self) -> Vec<LiveRevision> {
        vec![LiveRevision {
            labels: Some(RevisionLabels {
                project: "p".into(),
                service: "s".into(),
                revision: "s-1".into(),
            }),
            active: 2,
            idle: 1,
            starting: 0,
            pending: 3,
            peak_concurrency: 7,
            cpu_seconds: 1.5,
            memory_bytes: 4096,
            warm_sandboxes: 1,
        }]
    }

    fn counters(&self) -> Vec<LiveCounters> {
        vec![LiveCounters {
            name: "edge_cache_lookups",
            help: "lookups",
            values: vec![("hit", 5), ("miss", 2)],
        }]
    }
}

#[test]
fn scrape_time_sources_and_process_metrics_are_rendered() {
    let m = Metrics::new();
    m.add_source(Arc::new(Fixed));
    let _open = m.gateway().connection(true, false);
    m.gateway().token(TokenCheck::Accepted);
    m.gateway()
        .routes_published(std::time::Duration::from_millis(3), 5);
    let out = m.render();
    let l = r#"project="p",service="s",revision="s-1""#;
    for want in [
        format!("pier_instances{{{l},state=\"active\"}} 2"),
        format!("pier_instances{{{l},state=\"idle\"}} 1"),
        format!("pier_pending_requests{{{l}}} 3"),
        format!("pier_max_request_concurrencies{{{l}}} 7"),
        format!("pier_instance_cpu_seconds_total{{{l}}} 1.5"),
        format!("pier_instance_memory_bytes{{{l}}} 4096"),
        format!("pier_warm_sandboxes{{{l}}} 1"),
        "pier_edge_cache_lookups_total{result=\"hit\"} 5".to_owned(),
        "pier_connections_total{listener=\"https\"} 1".to_owned(),
        "pier_open_connections 1".to_owned(),
        "pier_token_verifications_total{result=\"accepted\"} 1".to_owned(),
        "pier_routed_hosts 5".to_owned(),
        "pier_route_publish_seconds_sum 0.003".to_owned(),
        "pier_route_publish_seconds_count 1".to_owned(),
    ] {
        assert!(out.contains(&want), "missing {want} in\n{out}");
    }
    let rss = line(&out, "process_resident_memory_bytes ").expect("rss");
    let v: f64 = rss.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v > 1e6, "{rss}");
    assert!(line(&out, "process_cpu_seconds_total ").is_some(), "{out}");
}
