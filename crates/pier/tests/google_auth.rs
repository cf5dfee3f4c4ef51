//! Google's own client library, unmodified, against Pier: `google-auth` from PyPI signs in with a Pier
//! service-account key file, and inside instances finds Pier's metadata server and mints identity tokens
//! for service-to-service calls with `google.oauth2.id_token.fetch_id_token`.

mod common;
use common::*;

fn require_google_auth() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import google.auth, google.oauth2.id_token, requests"])
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "python3 packages google-auth and requests are missing: run scripts/test (it installs them)"
    );
}

fn run_python(pier: &Pier, script: &str, args: &[&str]) -> (bool, String, String) {
    // Names resolve as the README has users set them up (libnss-myhostname), in this command alone.
    let out = with_myhostname("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("REQUESTS_CA_BUNDLE", pier.dir.join("ca.pem"))
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn google_auth_signs_in_with_a_pier_key_file() {
    require_google_auth();
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("api", &[]);
    for name in ["invoker", "stranger"] {
        pier.ok(&["iam", "service-accounts", "create", name]);
        let key = pier.dir.join(format!("{name}.json"));
        pier.ok(&[
            "iam",
            "service-accounts",
            "keys",
            "create",
            key.to_str().unwrap(),
            "--iam-account",
            &format!("{name}@default.iam.pier.localhost"),
        ]);
    }
    pier.ok(&[
        "services",
        "add-iam-policy-binding",
        "api",
        "--member=serviceAccount:invoker@default.iam.pier.localhost",
        "--role=roles/run.invoker",
    ]);
    let script = r#"
import base64, json, sys
from google.oauth2 import service_account
from google.auth.transport.requests import AuthorizedSession
creds = service_account.IDTokenCredentials.from_service_account_file(sys.argv[1], target_audience=sys.argv[2])
r = AuthorizedSession(creds).get(sys.argv[2])
print(r.status_code)
if r.status_code == 200:
    seen = r.json()["headers"]["authorization"].split(" ")[1]
    payload = seen.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    print(json.loads(base64.urlsafe_b64decode(payload))["email"])
"#;
    let key = pier.dir.join("invoker.json");
    let (ok, out, err) = run_python(&pier, script, &[key.to_str().unwrap(), &url]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("200"), "{out}{err}");
    assert_eq!(lines.next(), Some("invoker@default.iam.pier.localhost"));

    // The same library with an account that has no invoker role gets 403.
    let key = pier.dir.join("stranger.json");
    let (ok, out, err) = run_python(&pier, script, &[key.to_str().unwrap(), &url]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "403");
}

const CALLER_APP: &str = r#"
import http.server, json, os
import google.auth.transport.requests, google.oauth2.id_token, requests

TARGET = os.environ["TARGET"]

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            token = google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(), TARGET)
            r = requests.get(TARGET, headers={"Authorization": "Bearer " + token}, timeout=30)
            body = {"status": r.status_code, "body": r.text}
        except Exception as e:
            body = {"status": 0, "error": repr(e)}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

http.server.HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn services_call_each_other_with_fetch_id_token() {
    require_google_auth();
    let pier = Pier::start(&[]);
    let b = pier.deploy_hello("b", &[]);
    let app_dir = tempfile::tempdir().unwrap();
    let app = app_dir.path().join("caller.py");
    std::fs::write(&app, CALLER_APP).unwrap();
    for name in ["a-caller", "c-caller"] {
        pier.ok(&["iam", "service-accounts", "create", name]);
    }
    pier.ok(&[
        "services",
        "add-iam-policy-binding",
        "b",
        "--member=serviceAccount:a-caller@default.iam.pier.localhost",
        "--role=roles/run.invoker",
    ]);
    let deploy_caller = |name: &str, sa: &str| {
        let out = pier.ok(&[
            "deploy",
            name,
            "--command",
            &format!("exec python3 -u {}", app.display()),
            "--env",
            &format!("TARGET={b}"),
            "--service-account",
            sa,
            "--allow-unauthenticated",
        ]);
        service_url(&out)
    };
    let a = deploy_caller("a", "a-caller@default.iam.pier.localhost");
    let c = deploy_caller("c", "c-caller@default.iam.pier.localhost");

    let fetch = |url: &str| -> serde_json::Value {
        let out = pier.curl(&[url]);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    let from_a = fetch(&a);
    assert_eq!(
        from_a["status"],
        200,
        "{from_a}\n{}",
        pier.ok(&["logs", "a"])
    );
    let echoed: serde_json::Value = serde_json::from_str(from_a["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["service"], "b");
    let from_c = fetch(&c);
    assert_eq!(from_c["status"], 403, "{from_c}");

    // b internal: a still reaches it (a Pier instance), the host does not.
    pier.ok(&["services", "update", "b", "--ingress", "internal"]);
    let from_a = fetch(&a);
    assert_eq!(from_a["status"], 200, "{from_a}");
    let out = pier.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {}", pier.token()),
        &b,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn the_metadata_server_refuses_strangers() {
    let pier = Pier::start(&[]);
    let app_dir = tempfile::tempdir().unwrap();
    let app = app_dir.path().join("probe.sh");
    // Inside its own namespace the instance reaches its metadata server at the usual address; a request
    // without the flavor header, or one that looks proxied, is refused.
    std::fs::write(
        &app,
        r#"m=http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/email
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
echo "flavored=$(code -H 'Metadata-Flavor: Google' $m)"
echo "plain=$(code $m)"
echo "proxied=$(code -H 'Metadata-Flavor: Google' -H 'X-Forwarded-For: 1.2.3.4' $m)"
exec python3 -m http.server $PORT
"#,
    )
    .unwrap();
    pier.ok(&["deploy", "m", "--command", &format!("sh {}", app.display())]);
    let logs = eventually(10, "the probe's answers in the log", || {
        let l = pier.ok(&["logs", "m"]);
        l.contains("proxied=").then_some(l)
    });
    for want in ["flavored=200", "plain=403", "proxied=403"] {
        assert!(logs.contains(want), "{want}:\n{logs}");
    }
    // Nothing on the host can reach an instance's metadata server: Pier listens for it only inside the
    // instance's own namespace (this test sends nothing to 169.254.169.254 itself: on a cloud machine that
    // address is the provider's own metadata service).
    let out = std::process::Command::new("ss")
        .args(["-H", "-ltn", "sport = :8022"])
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "a metadata listener in the host's namespace: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
