//! The README's transcript, end to end: server, deploy, curl, list, describe, revisions, logs, delete.

mod common;
use common::*;

#[test]
fn the_quickstart_transcript_works() {
    let pier = Pier::start(&[]);
    // The issue's own example: a Python one-liner run through sh -c.
    let out = pier.ok(&[
        "deploy",
        "hello",
        "--command",
        "python3 -m http.server $PORT",
        "--allow-unauthenticated",
    ]);
    let url = service_url(&out);
    let hash_host = url
        .strip_prefix("https://")
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        hash_host.starts_with("hello-") && hash_host.ends_with(".pier.localhost"),
        "{url}"
    );

    // Real curl, trusting Pier's CA, resolving *.pier.localhost itself.
    let resp = pier.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &format!("{url}/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&resp.stdout), "200 2", "{resp:?}");
    let resp = pier.curl(&[
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("{url}/"),
    ]);
    assert_eq!(String::from_utf8_lossy(&resp.stdout), "200");

    let list: serde_json::Value =
        serde_json::from_str(&pier.ok(&["services", "list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["name"], "hello");
    assert_eq!(list[0]["url"], url.as_str());
    let text = pier.ok(&["services", "list"]);
    assert!(text.contains("hello") && text.contains(&url), "{text}");

    let svc = pier.describe("hello");
    assert_eq!(svc["ready"], true);
    assert_eq!(svc["allowUnauthenticated"], true);
    let rev = svc["latestReadyRevision"].as_str().unwrap().to_owned();
    assert!(
        rev.starts_with("hello-00001-") && rev.len() == "hello-00001-abc".len(),
        "{rev}"
    );
    assert!(
        pier.ok(&["services", "describe", "hello"])
            .contains("100%  LATEST")
    );
    let yaml = pier.ok(&["services", "describe", "hello", "--format", "yaml"]);
    assert!(yaml.contains("serving.knative.dev/v1"), "{yaml}");

    let revs = pier.ok(&["revisions", "list", "--service", "hello"]);
    assert!(revs.contains(&rev) && revs.contains("Ready"), "{revs}");

    // Logs carry timestamps and the instance id; the python server logs each request to stderr.
    let logs = eventually(10, "request log line", || {
        let l = pier.ok(&["logs", "hello"]);
        l.contains("\"GET / HTTP/1.1\" 200").then_some(l)
    });
    let line = logs.lines().find(|l| l.contains("GET / HTTP")).unwrap();
    let mut parts = line.split_whitespace();
    let ts = parts.next().unwrap();
    assert!(ts.ends_with('Z') && ts.contains('T'), "{line}");
    assert!(
        parts.next().unwrap().starts_with(&format!("{rev}-")),
        "{line}"
    );

    // The URL is the same on redeploy.
    let url2 = pier.deploy_hello("hello", &[]);
    assert_eq!(url, url2);

    pier.ok(&["services", "delete", "hello"]);
    let resp = pier.curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("{url}/")]);
    assert_eq!(String::from_utf8_lossy(&resp.stdout), "404");
    let err = pier.fails(&["services", "describe", "hello"]);
    assert!(err.contains("does not exist"), "{err}");
}
