//! Startup and liveness probes per revision, as Cloud Run has them (`--startup-probe`,
//! `--liveness-probe`, Knative's `startupProbe`/`livenessProbe`): an HTTP probe holds traffic until the
//! app says it is ready, a probe that never passes fails the deploy within its window with the last
//! answer, and a liveness probe replaces an instance that stops answering.

mod common;
use common::*;

const APP: &str = r#"
import http.server, os, time
started = time.time()
health_calls = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global health_calls
        if self.path == "/ready":
            code = 200 if time.time() - started > float(os.environ.get("READY_AFTER", "0")) else 503
        elif self.path == "/healthz":
            health_calls += 1
            code = 200 if health_calls <= int(os.environ.get("HEALTHY_CALLS", "1000000")) else 500
        else:
            code = 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"pid %d\n" % os.getpid())
http.server.HTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"#;

fn deploy(pier: &Pier, workdir: &str, name: &str, extra: &[&str]) -> Result<String, String> {
    let mut args = vec![
        "deploy",
        name,
        "--command",
        "exec python3 -u app.py",
        "--workdir",
        workdir,
        "--allow-unauthenticated",
    ];
    args.extend_from_slice(extra);
    let out = pier.cli(&args);
    if out.status.success() {
        Ok(service_url(&String::from_utf8_lossy(&out.stdout)))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn startup_probes_hold_traffic_until_ready_and_fail_with_the_reason() {
    let pier = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("app.py"), APP).unwrap();
    let workdir = app.path().to_str().unwrap();

    // Ready after 1.5 s: the deploy waits for /ready, not for the port.
    let started = std::time::Instant::now();
    let url = deploy(
        &pier,
        workdir,
        "slow",
        &[
            "--env",
            "READY_AFTER=1.5",
            "--startup-probe",
            "httpGet.path=/ready,periodSeconds=1,failureThreshold=10",
        ],
    )
    .unwrap();
    assert!(
        started.elapsed().as_secs_f64() >= 1.5,
        "ready before /ready said so"
    );
    assert_eq!(
        pier.curl(&["-o", "/dev/null", "-w", "%{http_code}", &url])
            .stdout,
        b"200"
    );
    let describe = pier.describe("slow");
    assert_eq!(
        describe["template"]["startupProbe"]["httpGet"]["path"],
        "/ready"
    );
    let yaml = pier.ok(&["services", "describe", "slow", "--format", "yaml"]);
    assert!(
        yaml.contains("startupProbe:") && yaml.contains("path: /ready"),
        "{yaml}"
    );

    // Never ready: the deploy fails when the window (2 × 1 s) is over, with the last answer.
    let started = std::time::Instant::now();
    let err = deploy(
        &pier,
        workdir,
        "never",
        &[
            "--env",
            "READY_AFTER=9999",
            "--startup-probe",
            "httpGet.path=/ready,periodSeconds=1,failureThreshold=2",
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("startup probe (GET :8080/ready) did not pass within 2s")
            && err.contains("HTTP 503"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "failed fast: {:?}",
        started.elapsed()
    );

    // An app that never listens, with a TCP probe of 3 × 1 s: no 240 s wait.
    let started = std::time::Instant::now();
    let err = pier.fails(&[
        "deploy",
        "mute",
        "--command",
        "sleep 600",
        "--startup-probe",
        "tcpSocket.port=8080,periodSeconds=1,failureThreshold=3",
    ]);
    assert!(
        err.contains("tcp :8080") && err.contains("within 3s"),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());

    // Bad settings are refused before anything runs, with the rule.
    let err = pier.fails(&[
        "deploy",
        "bad",
        "--command",
        "true",
        "--liveness-probe",
        "tcpSocket.port=8080",
    ]);
    assert!(
        err.contains("a liveness probe is an httpGet or a grpc check"),
        "{err}"
    );
    let err = pier.fails(&[
        "deploy",
        "bad",
        "--command",
        "true",
        "--startup-probe",
        "periodSeconds=2,timeoutSeconds=5",
    ]);
    assert!(err.contains("at most periodSeconds"), "{err}");
}

#[test]
fn a_liveness_probe_replaces_an_instance_that_stops_answering() {
    let pier = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("app.py"), APP).unwrap();
    let workdir = app.path().to_str().unwrap();
    let url = deploy(
        &pier,
        workdir,
        "flaky",
        &[
            "--env",
            "HEALTHY_CALLS=2",
            "--min-instances",
            "1",
            "--liveness-probe",
            "httpGet.path=/healthz,periodSeconds=1,failureThreshold=2",
        ],
    )
    .unwrap();
    let first = String::from_utf8(pier.curl(&[&url]).stdout).unwrap();
    let logs = eventually(30, "the liveness probe stopping the instance", || {
        let l = pier.ok(&["logs", "flaky"]);
        l.contains("liveness probe (GET :8080/healthz) failed 2 times in a row")
            .then_some(l)
    });
    assert!(logs.contains("HTTP 500"), "{logs}");
    // min-instances brings a new one, which serves.
    let second = eventually(30, "a replacement instance", || {
        let body = String::from_utf8(pier.curl(&[&url]).stdout).ok()?;
        (body.starts_with("pid") && body != first).then_some(body)
    });
    assert_ne!(first, second);
}
