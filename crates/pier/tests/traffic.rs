//! Traffic splits, tags with their own URLs, --no-traffic, rollback, and revision deletion rules.

mod common;
use common::*;

fn revision_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["revision"].as_str().unwrap().to_owned()
}

#[test]
fn splits_tags_and_rollback() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("web", &["--env", "GREETING=one", "--allow-unauthenticated"]);
    let v1 = pier.describe("web")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();

    // --no-traffic with a tag: v2 is ready and reachable at its tag URL, but serves none of the main URL.
    let out = pier.ok(&[
        "deploy",
        "web",
        "--command",
        hello_bin().to_str().unwrap(),
        "--env",
        "GREETING=two",
        "--no-traffic",
        "--tag",
        "green",
    ]);
    let tag_url = out
        .lines()
        .find_map(|l| l.strip_prefix("Tag URL (green): "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    assert!(tag_url.starts_with("https://green---web-"), "{tag_url}");
    let svc = pier.describe("web");
    let v2 = svc["latestReadyRevision"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    let client = pier.client();
    let rt = rt();
    let get = |u: &str| {
        rt.block_on(async {
            let r = client.get(u).send().await.unwrap();
            assert_eq!(r.status(), 200, "{u}");
            r.text().await.unwrap()
        })
    };
    for _ in 0..10 {
        assert_eq!(revision_of(&get(&url)), v1, "main URL stays on v1");
    }
    assert_eq!(revision_of(&get(&tag_url)), v2, "tag URL reaches v2 at 0%");

    // A 50/50 split sends requests to both.
    pier.ok(&[
        "services",
        "update-traffic",
        "web",
        "--to-revisions",
        &format!("{v1}=50,{v2}=50"),
    ]);
    let mut counts = std::collections::HashMap::new();
    for _ in 0..200 {
        *counts.entry(revision_of(&get(&url))).or_insert(0) += 1;
    }
    let (a, b) = (counts[&v1], counts[&v2]);
    assert!(a > 50 && b > 50, "both revisions serve: {counts:?}");

    // By tag, then roll back by revision, then back to LATEST.
    pier.ok(&[
        "services",
        "update-traffic",
        "web",
        "--to-tags",
        "green=100",
    ]);
    assert_eq!(revision_of(&get(&url)), v2);
    pier.ok(&[
        "services",
        "update-traffic",
        "web",
        "--to-revisions",
        &format!("{v1}=100"),
    ]);
    for _ in 0..10 {
        assert_eq!(revision_of(&get(&url)), v1);
    }
    // A revision that serves or is tagged cannot be deleted.
    let err = pier.fails(&["revisions", "delete", &v1]);
    assert!(err.contains("serving traffic"), "{err}");
    let err = pier.fails(&["revisions", "delete", &v2]);
    assert!(err.contains("serving traffic or tagged"), "{err}");
    pier.ok(&[
        "services",
        "update-traffic",
        "web",
        "--to-latest",
        "--remove-tags",
        "green",
    ]);
    assert_eq!(revision_of(&get(&url)), v2);
    let resp = pier.curl(&["-o", "/dev/null", "-w", "%{http_code}", &tag_url]);
    assert_eq!(
        String::from_utf8_lossy(&resp.stdout),
        "404",
        "removed tag URL is gone"
    );
    pier.ok(&["revisions", "delete", &v1]);
    assert!(!pier.ok(&["revisions", "list"]).contains(&v1));

    // Bad traffic requests are refused with a reason.
    for (args, want) in [
        (
            vec!["--to-revisions", "web-00009-zzz=100"],
            "neither a revision",
        ),
        (
            vec!["--to-revisions", &format!("{v2}=60,LATEST=60")],
            "more than 100",
        ),
        (
            vec!["--to-revisions", &format!("{v2}=150")],
            "percentage from 0 to 100",
        ),
        (
            vec!["--update-tags", &format!("x{}={v2}", "y".repeat(60))],
            "too long",
        ),
        (vec![], "nothing to change"),
    ] {
        let mut a = vec!["services", "update-traffic", "web"];
        a.extend(args.iter().map(|s| &**s));
        let err = pier.fails(&a);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
