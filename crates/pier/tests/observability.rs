//! What operators and developers watch: a real Prometheus server (Debian's `prometheus`) scraping
//! `--metrics-addr` with the bearer token of `--metrics-token-file`, queried for a rate and a latency
//! quantile after known traffic; the same text on the admin API for viewers only; and the request log
//! beside an app's structured logs, read back with `pier logs --type/--severity/--since/--follow`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A Prometheus server on loopback, stopped (and its data removed) when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (`ADDR:PORT`) every second, sending the token in `token_file`.
    fn scraping(target: &str, token_file: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pier\n    scrape_interval: 1s\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n",
                token_file.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
            .spawn()
            .expect("prometheus (Debian's package; scripts/install-test-deps installs it)");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The value of an instant query's first sample, if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-G"])
            .arg(format!("{}/api/v1/query", self.url))
            .arg("--data-urlencode")
            .arg(format!("query={query}"))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// (status, body) of a GET with an optional bearer token.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        c.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = c.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn prometheus_scrapes_rates_and_latency_quantiles() {
    // A metrics address off loopback without a token is refused before anything starts.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(PIER)
        .args(["server", "--data-dir"])
        .arg(dir.path())
        .args(with_free_ports(&["--metrics-addr", "0.0.0.0:0"]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--metrics-token-file"),
        "{err}"
    );

    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, "s3cret-metrics-token-0123456789\n").unwrap();
    let pier = Pier::start(&["--metrics-token-file", token_file.to_str().unwrap()]);
    let metrics_url = pier.api_get("/v1/info")["metricsUrl"]
        .as_str()
        .expect("the server reports where its metrics are")
        .to_owned();
    let target = metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    // The token is required, compared exactly.
    assert_eq!(get(&metrics_url, None).0, 401);
    assert_eq!(
        get(&metrics_url, Some("s3cret-metrics-token-012345678")).0,
        401
    );
    let (code, text) = get(&metrics_url, Some("s3cret-metrics-token-0123456789"));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");

    let url = pier.deploy_hello("hello", &["--allow-unauthenticated"]);
    let prom = Prometheus::scraping(&target, &token_file);
    eventually(30, "Prometheus scraping Pier", || {
        (prom.value("up{job=\"pier\"}") == Some(1.0)).then_some(())
    });
    // Known traffic: 30 answers of 200 and 10 of 404, over HTTP/2 and HTTP/1.1.
    for i in 0..30 {
        let proto = if i % 2 == 0 { "--http2" } else { "--http1.1" };
        let out = pier.curl(&["-o", "/dev/null", "-w", "%{http_code}", proto, &url]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    for _ in 0..10 {
        let out = pier.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{url}/status?code=404"),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    }
    let sum = |class: &str| {
        format!(
            "sum(pier_request_count_total{{service=\"hello\",response_code_class=\"{class}\"}})"
        )
    };
    eventually(30, "Prometheus to see the 40 requests", || {
        (prom.value(&sum("2xx")) == Some(30.0) && prom.value(&sum("4xx")) == Some(10.0))
            .then_some(())
    });
    let rate = prom
        .value("sum(rate(pier_request_count_total{service=\"hello\"}[1m]))")
        .expect("a rate");
    assert!(rate > 0.0, "rate {rate}");
    let p50 = prom
        .value("histogram_quantile(0.5, sum by (le) (rate(pier_request_latencies_seconds_bucket{service=\"hello\",response_code_class=\"2xx\"}[1m])))")
        .expect("a latency quantile");
    assert!(p50 > 0.0 && p50 < 1.0, "p50 latency {p50} s");
    // The instance that served them, its start, and the gateway's own counters.
    assert!(
        prom.value("sum(pier_instances{service=\"hello\",state=~\"active|idle\"})")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        prom.value(
            "sum(pier_instance_startup_latencies_seconds_count{service=\"hello\",phase=\"total\"})"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(prom.value("pier_http2_streams_total").unwrap_or(0.0) >= 15.0);
    // Publishing the routes after the deploy: timed, with the hosts it routes.
    assert!(
        prom.value("pier_route_publish_seconds_count")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(prom.value("pier_routed_hosts").unwrap_or(0.0) >= 1.0);
    assert!(
        prom.value("sum(pier_instance_memory_bytes{service=\"hello\"})")
            .unwrap_or(0.0)
            > 0.0
    );

    // A client that gives up while the app still works is counted too: 499, as nginx names it.
    let out = pier.curl(&[
        "--http2",
        "--max-time",
        "1",
        &format!("{url}/sleep?ms=3000"),
    ]);
    assert!(!out.status.success(), "curl gave up");
    let class_4xx = || {
        let (_, text) = get(&metrics_url, Some("s3cret-metrics-token-0123456789"));
        text.lines()
            .filter(|l| {
                l.starts_with("pier_request_count_total{")
                    && l.contains("service=\"hello\"")
                    && l.contains("response_code_class=\"4xx\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    eventually(10, "the abandoned request to be counted", || {
        (class_4xx() == 11.0).then_some(())
    });

    // The same text on the admin API: the owner reads it, a user without a role on the installation
    // is refused, and a viewer there reads it.
    let admin = format!("{}/v1/metrics", pier.api_url);
    let (code, text) = get(&admin, Some(&pier.api_token()));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("pier_request_count_total{"), "{text}");
    let dev = pier.user("dev@example.com");
    let (code, text) = get(&admin, Some(&dev.api_token()));
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("roles/run.viewer"), "{text}");
    pier.ok(&[
        "installation",
        "add-iam-policy-binding",
        "--member=user:dev@example.com",
        "--role=roles/run.viewer",
    ]);
    assert_eq!(get(&admin, Some(&dev.api_token())).0, 200);
}

/// An app that logs one structured line per request (Cloud Run's structured logging): `ERROR` and a
/// 500 under `/fail`, else `INFO` and a 200.
const STRUCTURED_APP: &str = r#"
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        bad = self.path.startswith("/fail")
        print(json.dumps({"severity": "ERROR" if bad else "INFO", "message": "handled " + self.path}), flush=True)
        self.send_response(500 if bad else 200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

#[test]
fn request_logs_and_structured_app_logs_filter_and_follow() {
    let pier = Pier::start(&[]);
    let dir = visible_dir();
    std::fs::write(dir.path().join("app.py"), STRUCTURED_APP).unwrap();
    let out = pier
        .command(PIER)
        .current_dir(dir.path())
        .env("PIER_CONFIG", pier.dir.join("cli.toml"))
        .args([
            "deploy",
            "app",
            "--command",
            "python3 app.py",
            "--allow-unauthenticated",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let url = service_url(&String::from_utf8_lossy(&out.stdout));

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let out = pier.curl(&[
        "-o",
        "/dev/null",
        "-A",
        "observability-test/1",
        "-H",
        &format!("traceparent: 00-{trace}-00f067aa0ba902b7-01"),
        &format!("{url}/hello?x=1"),
    ]);
    assert!(out.status.success());
    pier.curl(&["-o", "/dev/null", &format!("{url}/fail")]);

    // One JSON line per request in Cloud Logging's httpRequest shape, written off the request path.
    let entries = eventually(10, "two request log lines", || {
        let out = pier.ok(&["logs", "app", "--type", "requests", "--format", "json"]);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines.len() == 2).then_some(lines)
    });
    let first = &entries[0];
    let r = &first["httpRequest"];
    assert_eq!(r["requestMethod"], "GET");
    assert!(
        r["requestUrl"].as_str().unwrap().ends_with("/hello?x=1"),
        "{first}"
    );
    assert_eq!(r["status"], 200);
    assert_eq!(r["responseSize"], "3");
    assert_eq!(r["userAgent"], "observability-test/1");
    assert_eq!(r["remoteIp"], "127.0.0.1");
    assert!(r["latency"].as_str().unwrap().ends_with('s'), "{first}");
    assert_eq!(first["trace"], trace, "the caller's trace id is the line's");
    assert!(
        first["instance"].as_str().unwrap().starts_with("app-"),
        "{first}"
    );
    assert!(
        first["revision"].as_str().unwrap().starts_with("app-"),
        "{first}"
    );
    assert_eq!(entries[1]["httpRequest"]["status"], 500);
    assert_eq!(first["severity"], "INFO");
    assert_eq!(entries[1]["severity"], "ERROR", "a 5xx request is an error");

    // --severity: the 500 request and the app's ERROR line, not the INFO ones.
    let errors = eventually(10, "the app's structured lines", || {
        let out = pier.ok(&["logs", "app", "--type", "all", "--severity", "ERROR"]);
        (out.lines().count() == 2).then_some(out)
    });
    assert!(
        errors.contains("[request] GET") && errors.contains(" 500 "),
        "{errors}"
    );
    assert!(errors.contains("[stdout] ERROR handled /fail"), "{errors}");
    assert!(!errors.contains("/hello"), "{errors}");
    // --since: a recent window has them, a future start has nothing.
    assert!(
        pier.ok(&["logs", "app", "--type", "all", "--since", "1h"])
            .contains("/hello")
    );
    assert_eq!(
        pier.ok(&[
            "logs",
            "app",
            "--type",
            "all",
            "--since",
            "2099-01-01T00:00:00Z"
        ]),
        ""
    );
    // Bad input says what to do.
    let err = pier.fails(&["logs", "app", "--severity", "LOUD"]);
    assert!(err.contains("EMERGENCY"), "{err}");
    let err = pier.fails(&["logs", "app", "--since", "yesterday"]);
    assert!(err.contains("RFC 3339"), "{err}");

    // --follow on the request log sees a new request as it happens.
    let mut follow = pier
        .command(PIER)
        .args([
            "logs", "app", "--type", "requests", "--follow", "--limit", "1",
        ])
        .env("PIER_CONFIG", pier.dir.join("cli.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    pier.curl(&["-o", "/dev/null", &format!("{url}/live-one")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = false;
    while Instant::now() < deadline && !seen {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            seen = line.contains("/live-one");
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "--follow did not show the new request");

    // A server without a request log says so.
    let quiet = Pier::start(&["--request-log", "off"]);
    quiet.deploy_hello("h", &["--allow-unauthenticated"]);
    let err = quiet.fails(&["logs", "h", "--type", "requests"]);
    assert!(err.contains("--request-log off"), "{err}");
}

/// An OTLP/HTTP receiver built from the `opentelemetry-proto` package: every span of every export,
/// decoded, as one JSON line in the file given (argv 2), listening on the port given (argv 1).
const OTLP_RECEIVER: &str = r#"
import http.server, json, sys
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
out = open(sys.argv[2], "a")
def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            resource = {a.key: value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.write(json.dumps({
                        "path": self.path, "service": resource.get("service.name"),
                        "trace": s.trace_id.hex(), "span": s.span_id.hex(), "parent": s.parent_span_id.hex(),
                        "name": s.name, "kind": s.kind, "status": s.status.code,
                        "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                        "attrs": {a.key: value(a.value) for a in s.attributes},
                    }) + "\n")
        out.flush()
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

/// Kills a child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn traces_reach_an_otlp_receiver_with_their_parents() {
    let dir = tempfile::tempdir().unwrap();
    let spans_file = dir.path().join("spans.jsonl");
    std::fs::write(&spans_file, "").unwrap();
    let port = free_port();
    let _receiver = Killed(
        Command::new("python3")
            .args(["-c", OTLP_RECEIVER, &port.to_string()])
            .arg(&spans_file)
            .spawn()
            .unwrap(),
    );
    // A bad endpoint is refused at start.
    let out = Command::new(PIER)
        .args(["server", "--data-dir"])
        .arg(dir.path().join("bad"))
        .args(with_free_ports(&["--otlp-endpoint", "127.0.0.1:4318"]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("http://"), "{err}");

    // Ratio 0: only callers that ask for a sampled trace get one.
    let endpoint = format!("http://127.0.0.1:{port}");
    let pier = Pier::start(&[
        "--otlp-endpoint",
        &endpoint,
        "--trace-sample-ratio",
        "0",
        "--scale-to-zero-grace",
        "300ms",
    ]);
    let url = pier.deploy_hello("hello", &["--allow-unauthenticated"]);
    eventually(30, "the service to scale to zero", || {
        (instances(&pier, "hello") == 0).then_some(())
    });

    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    pier.curl(&[
        "-o",
        "/dev/null",
        "-H",
        &format!("traceparent: 00-{unsampled}-b7ad6b7169203331-00"),
        &url,
    ]);
    pier.curl(&["-o", "/dev/null", &url]);
    // At zero again, so that the sampled request waits for a cold start.
    eventually(30, "the service to scale to zero again", || {
        (instances(&pier, "hello") == 0).then_some(())
    });
    let sampled = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let out = pier.curl(&[
        "-H",
        &format!("traceparent: 00-{sampled}-{caller_span}-01"),
        &format!("{url}/sleep?ms=20"),
    ]);
    let echo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let seen_by_app = echo["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent reached the app: {echo}"))
        .to_owned();

    let spans: Vec<serde_json::Value> = eventually(30, "the sampled trace's spans", || {
        let text = std::fs::read_to_string(&spans_file).unwrap();
        let spans: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (spans.iter().filter(|s| s["trace"] == sampled).count() >= 5).then_some(spans)
    });
    assert!(
        spans.iter().all(|s| s["trace"] == sampled),
        "only the sampled trace is exported: {spans:#?}"
    );
    assert!(
        spans
            .iter()
            .all(|s| s["path"] == "/v1/traces" && s["service"] == "pier")
    );
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("no {n} span in {spans:#?}"))
    };
    let request = by_name("request");
    // SERVER = 2, CLIENT = 3, INTERNAL = 1 (OTLP's SpanKind).
    assert_eq!(request["kind"], 2);
    assert_eq!(
        request["parent"], caller_span,
        "the caller's span is the parent"
    );
    let attrs = &request["attrs"];
    assert_eq!(attrs["http.request.method"], "GET");
    assert_eq!(attrs["url.path"], "/sleep");
    assert_eq!(attrs["http.response.status_code"], 200);
    assert_eq!(attrs["pier.service"], "hello");
    assert!(
        attrs["pier.revision"]
            .as_str()
            .unwrap()
            .starts_with("hello-")
    );
    for child in ["guard", "wait for instance", "upstream"] {
        assert_eq!(by_name(child)["parent"], request["span"], "{child}");
    }
    let wait = by_name("wait for instance");
    assert_eq!(wait["attrs"]["pier.cold_start"], true);
    let cold = by_name("cold start");
    assert_eq!(cold["parent"], wait["span"]);
    let upstream = by_name("upstream");
    assert_eq!(upstream["kind"], 3);
    // The app's context names Pier's upstream span: its own spans join under it.
    assert_eq!(
        seen_by_app,
        format!("00-{sampled}-{}-01", upstream["span"].as_str().unwrap())
    );
    // The upstream exchange took at least the app's 20 ms, within the request's span.
    let (us, ue) = (
        upstream["start"].as_u64().unwrap(),
        upstream["end"].as_u64().unwrap(),
    );
    let (rs, re) = (
        request["start"].as_u64().unwrap(),
        request["end"].as_u64().unwrap(),
    );
    assert!(ue - us >= 20_000_000, "{upstream}");
    assert!(rs <= us && ue <= re, "{request} {upstream}");
}
