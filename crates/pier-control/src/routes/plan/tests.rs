//! The route plan, row by row: records in, hosts and their targets out.

use super::*;
use pier_model::{Ingress, RevisionTemplate, Traffic};

const HASH: &str = "abc123";

fn scheme() -> UrlScheme {
    UrlScheme::new("pier.localhost", 8443)
}

fn service(name: &str, traffic: Traffic, latest_ready: Option<&str>) -> ServiceRecord {
    ServiceRecord {
        project: ProjectName::default(),
        name: name.parse().unwrap(),
        traffic,
        ingress: Ingress::All,
        invoker_iam_check: true,
        custom_audiences: vec!["https://api.example.com".into()],
        end_user_auth: None,
        cache: None,
        latest_created: None,
        latest_ready: latest_ready.map(|r| r.parse().unwrap()),
        created_at: String::new(),
        updated_at: String::new(),
        id_block: 0,
    }
}

fn revision(name: &str, state: RevisionState) -> RevisionRecord {
    let rev: RevisionName = name.parse().unwrap();
    RevisionRecord {
        project: ProjectName::default(),
        service: name.split('-').next().unwrap().parse().unwrap(),
        name: rev,
        seq: 1,
        template: RevisionTemplate::default(),
        state,
        message: None,
        log_tail: Vec::new(),
        pending_tag: None,
        created_at: String::new(),
        ready_at: None,
        image_digest: None,
        creator: None,
    }
}

fn key(r: &str) -> TrafficKey {
    match r {
        "LATEST" => TrafficKey::Latest,
        r => TrafficKey::Revision(r.parse().unwrap()),
    }
}

/// `(percents, tags)` → traffic.
fn traffic(percents: &[(&str, u8)], tags: &[(&str, &str)]) -> Traffic {
    let p: Vec<(TrafficKey, u8)> = percents.iter().map(|(r, p)| (key(r), *p)).collect();
    let t: Vec<(Tag, TrafficKey)> = tags
        .iter()
        .map(|(t, r)| (t.parse().unwrap(), key(r)))
        .collect();
    Traffic::from_parts(&p, &t)
}

/// The plan as text: `host -> rev:pct,rev:pct` or `host -> 503 reason`.
fn render(services: &[ServiceRecord], revisions: &[RevisionRecord]) -> Vec<String> {
    let hashes: HashMap<ProjectName, String> = [(ProjectName::default(), HASH.to_owned())].into();
    let revs: HashMap<(ProjectName, RevisionName), RevisionRecord> = revisions
        .iter()
        .map(|r| ((r.project.clone(), r.name.clone()), r.clone()))
        .collect();
    let scheme = scheme();
    let records = Records {
        scheme: &scheme,
        hashes: &hashes,
        services,
        revisions: &revs,
    };
    plan(&records, |_, _| InvokerSet::default())
        .into_iter()
        .map(|p| match p.target {
            Target::Split(shares) => format!(
                "{} -> {}",
                p.host,
                shares
                    .iter()
                    .map(|(r, pct)| format!("{}:{pct}", r.name))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Target::Unavailable(why) => format!("{} -> 503 {why}", p.host),
        })
        .collect()
}

/// One row: what it shows, the service, its revisions and their states, the plan wanted.
type Row<'a> = (
    &'a str,
    ServiceRecord,
    &'a [(&'a str, RevisionState)],
    &'a [&'a str],
);

#[test]
fn hosts_and_targets_follow_traffic_and_readiness() {
    use RevisionState::{Deploying, Failed, Ready};
    let rows: &[Row] = &[
        (
            "latest is the newest ready revision",
            service(
                "web",
                traffic(&[("LATEST", 100)], &[]),
                Some("web-00002-bbb"),
            ),
            &[("web-00001-aaa", Ready), ("web-00002-bbb", Ready)],
            &["web-abc123.pier.localhost -> web-00002-bbb:100"],
        ),
        (
            "a split names both revisions",
            service(
                "web",
                traffic(&[("web-00001-aaa", 90), ("web-00002-bbb", 10)], &[]),
                Some("web-00002-bbb"),
            ),
            &[("web-00001-aaa", Ready), ("web-00002-bbb", Ready)],
            &["web-abc123.pier.localhost -> web-00001-aaa:90,web-00002-bbb:10"],
        ),
        (
            "a revision that is not ready gets no share",
            service(
                "web",
                traffic(&[("web-00001-aaa", 50), ("web-00002-bbb", 50)], &[]),
                Some("web-00001-aaa"),
            ),
            &[("web-00001-aaa", Ready), ("web-00002-bbb", Failed)],
            &["web-abc123.pier.localhost -> web-00001-aaa:50"],
        ),
        (
            "nothing ready: 503 with the reason",
            service("web", traffic(&[("LATEST", 100)], &[]), None),
            &[("web-00001-aaa", Deploying)],
            &[
                "web-abc123.pier.localhost -> 503 service web has no ready revision to serve this URL",
            ],
        ),
        (
            "each tag has its own host with everything to its revision",
            service(
                "web",
                traffic(
                    &[("LATEST", 100)],
                    &[("green", "web-00001-aaa"), ("blue", "web-00002-bbb")],
                ),
                Some("web-00002-bbb"),
            ),
            &[("web-00001-aaa", Ready), ("web-00002-bbb", Failed)],
            &[
                "web-abc123.pier.localhost -> 503 service web has no ready revision to serve this URL",
                "green---web-abc123.pier.localhost -> web-00001-aaa:100",
                "blue---web-abc123.pier.localhost -> 503 tag blue of service web points at no ready revision",
            ],
        ),
    ];
    for (what, svc, revs, want) in rows {
        let revs: Vec<RevisionRecord> = revs.iter().map(|(n, s)| revision(n, *s)).collect();
        let got = render(std::slice::from_ref(svc), &revs);
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want_sorted: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want_sorted.sort();
        assert_eq!(got_sorted, want_sorted, "{what}");
    }
}

#[test]
fn services_of_unknown_projects_get_no_host() {
    let mut svc = service("web", traffic(&[("LATEST", 100)], &[]), None);
    svc.project = "elsewhere".parse().unwrap();
    assert!(render(&[svc], &[]).is_empty());
}

#[test]
fn tokens_may_name_every_url_of_the_service_its_custom_audiences_and_the_cli() {
    let svc = service(
        "web",
        traffic(&[("LATEST", 100)], &[("green", "LATEST")]),
        None,
    );
    let got = audiences(&scheme(), &svc, HASH);
    for want in [
        "https://web-abc123.pier.localhost:8443",
        "https://web-abc123.pier.localhost:8443/",
        "https://web-abc123.pier.localhost",
        "https://web-abc123.pier.localhost/",
        "https://green---web-abc123.pier.localhost:8443",
        "https://api.example.com",
        CLI_CLIENT_ID,
    ] {
        assert!(got.iter().any(|a| a == want), "{want} missing from {got:?}");
    }
    assert!(!got.iter().any(|a| a.contains("blue")), "{got:?}");
}
