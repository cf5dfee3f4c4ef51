//! The attack list: every finding of the security review, replayed against the real binary with the
//! roles Cloud Run has (an owner, a developer, a stranger), and now failing to succeed. Each test names
//! the finding it closes; new attacks join the list with their fixes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// A developer of project `default` who may deploy as its default service account: the attacker of
/// finding 1.
fn developer(pier: &Pier) -> Account<'_> {
    let dev = pier.user("dev@example.com");
    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member=user:dev@example.com",
        "--role=roles/run.developer",
    ]);
    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member=user:dev@example.com",
        "--role=roles/iam.serviceAccountUser",
    ]);
    dev
}

/// A folder every user may read, for a developer's app (developers see only what every user sees of
/// the host; `/tmp` is every instance's own).
fn shared_dir() -> tempfile::TempDir {
    visible_dir()
}

fn write_script(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn answers(logs: &str) -> std::collections::HashMap<String, String> {
    logs.lines()
        .filter_map(|l| l.split("] ").nth(1))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn pid_in_log(logs: &str) -> u32 {
    logs.lines()
        .find_map(|l| l.split("instance started: pid ").nth(1))
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .expect("a pid in the log")
}

/// Finding 1: anyone who may deploy a command ran code as root on the host, with its filesystem.
#[test]
fn a_developers_command_reaches_nothing_of_the_host_or_other_instances() {
    let pier = Pier::start(&[]);
    // The owner's service, with a secret in its private /tmp.
    let owner_app = shared_dir();
    let victim = write_script(
        owner_app.path(),
        "victim.sh",
        "echo s3cret > /tmp/secret; exec python3 -m http.server $PORT\n",
    );
    pier.ok(&["deploy", "victim", "--command", &format!("sh {victim}")]);
    let victim_pid = pid_in_log(&pier.ok(&["logs", "victim"]));

    let dev = developer(&pier);
    let app = shared_dir();
    let api_port = pier.api_url.rsplit(':').next().unwrap().to_owned();
    let probe = write_script(
        app.path(),
        "probe.sh",
        r#"v=$VICTIM
echo "uid=$(id -u)"
cat "$DATA/owner-credentials.json" >/dev/null 2>&1 && echo datadir=readable || echo datadir=hidden
ls "$DATA/keys" >/dev/null 2>&1 && echo keys=readable || echo keys=hidden
cat /etc/shadow 2>/dev/null | grep -q root && echo shadow=readable || echo shadow=hidden
cat /proc/$v/root/tmp/secret >/dev/null 2>&1 && echo victim_files=readable || echo victim_files=refused
test -e /proc/$v && echo victim_process=visible || echo victim_process=hidden
kill -0 $v 2>/dev/null && echo signal=allowed || echo signal=refused
python3 -c "import ctypes; print('ptrace=' + ('allowed' if ctypes.CDLL(None).ptrace(16, $v, 0, 0) == 0 else 'refused'))"
(echo x > /usr/pier-probe) 2>/dev/null && echo host_write=allowed || echo host_write=refused
(echo x > /tmp/mine) && echo tmp_write=allowed || echo tmp_write=refused
curl -s -m 3 -o /dev/null "http://127.0.0.1:$API/v1/info" && echo admin_api=reached || echo admin_api=unreachable
echo done=1
exec python3 -m http.server $PORT
"#,
    );
    dev.ok(&[
        "deploy",
        "probe",
        "--command",
        &format!("sh {probe}"),
        "--workdir",
        app.path().to_str().unwrap(),
        "--env",
        &format!("DATA={}", pier.dir.display()),
        "--env",
        &format!("VICTIM={victim_pid}"),
        "--env",
        &format!("API={api_port}"),
    ]);
    let logs = eventually(20, "the probe's answers", || {
        let l = pier.ok(&["logs", "probe"]);
        l.contains("done=1").then_some(l)
    });
    let a = answers(&logs);
    for (k, v) in [
        ("datadir", "hidden"),
        ("keys", "hidden"),
        ("shadow", "hidden"),
        ("victim_files", "refused"),
        ("victim_process", "hidden"),
        ("signal", "refused"),
        ("ptrace", "refused"),
        ("host_write", "refused"),
        ("tmp_write", "allowed"),
        ("admin_api", "unreachable"),
    ] {
        assert_eq!(a.get(k).map(String::as_str), Some(v), "{k}:\n{logs}");
    }
    let uid: u32 = a["uid"].parse().unwrap();
    assert!(
        uid >= 1_879_048_192,
        "an unprivileged host uid, not root: {uid}"
    );
    assert!(!Path::new("/usr/pier-probe").exists());

    // Running unsandboxed, or showing a folder other users cannot read, is an owner's call.
    let err = dev.fails(&["deploy", "raw", "--command", "sh -c id", "--unsandboxed"]);
    assert!(
        err.contains("--unsandboxed") && err.contains("owner"),
        "{err}"
    );
    let private = tempfile::tempdir().unwrap();
    let err = dev.fails(&[
        "deploy",
        "hidden",
        "--command",
        "python3 -m http.server $PORT",
        "--workdir",
        private.path().to_str().unwrap(),
    ]);
    assert!(err.contains("not visible to instances"), "{err}");
}

/// Finding 2: process instances listened on the host's network, so anyone on the host reached private
/// services without a token.
#[test]
fn an_instance_is_reachable_only_through_the_gateway() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("private", &[]);
    let logs = pier.ok(&["logs", "private"]);
    let pid = pid_in_log(&logs);
    assert!(logs.contains("PORT=8080"), "{logs}");
    // Its network namespace is its own: nothing the host (or another instance) connects to is its port.
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"));
    let other = pier.deploy_hello("other", &["--allow-unauthenticated"]);
    let other_pid = pid_in_log(&pier.ok(&["logs", "other"]));
    assert_ne!(ns(&pid.to_string()), ns(&other_pid.to_string()));
    // Through the gateway, the guard decides.
    let out = pier.curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    let out = pier.curl(&["-o", "/dev/null", "-w", "%{http_code}", &other]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
}

/// Finding 3: a developer could make a private service public by turning the invoker check off.
#[test]
fn a_developer_cannot_widen_who_reaches_a_service() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("b", &["--ingress", "internal"]);
    let dev = developer(&pier);
    for (flags, what) in [
        (vec!["--no-invoker-iam-check"], "invoker check"),
        (vec!["--ingress", "all"], "ingress"),
        (vec!["--add-custom-audiences", "mine"], "custom audiences"),
    ] {
        let mut args = vec!["services", "update", "b"];
        args.extend(flags);
        let err = dev.fails(&args);
        assert!(
            err.contains("setIamPolicy") && err.contains(what),
            "{what}: {err}"
        );
    }
    // Narrowing is a developer's to do.
    dev.ok(&["services", "update", "b", "--ingress", "internal"]);
    // A deploy that asks for public access goes on without it, and says so.
    let app = visible_dir();
    let hello = visible_hello(app.path());
    let out = dev.cli(&[
        "deploy",
        "c",
        "--command",
        hello.to_str().unwrap(),
        "--workdir",
        app.path().to_str().unwrap(),
        "--allow-unauthenticated",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WARNING") && stderr.contains("not applied"),
        "{stderr}"
    );
    let c = pier.describe("c");
    assert_eq!(c["allowUnauthenticated"], false);
    let code = pier.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        c["url"].as_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8_lossy(&code.stdout), "403");
    // Nobody may claim Pier's own audiences, owners included.
    for own in ["pier-cli", url.as_str(), "https://pier.localhost"] {
        let err = pier.fails(&["services", "update", "b", "--add-custom-audiences", own]);
        assert!(err.contains("Pier's own"), "{own}: {err}");
    }
}

/// Finding 4: a token sent to a public service could be replayed against the admin API as its sender.
#[test]
fn tokens_reaching_a_public_service_cannot_be_replayed() {
    let pier = Pier::start(&[]);
    let public = pier.deploy_hello("pub", &["--allow-unauthenticated"]);
    let private = pier.deploy_hello("priv", &[]);
    let seen = |token: &str| -> String {
        let out = pier.curl(&["-H", &format!("Authorization: Bearer {token}"), &public]);
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        body["headers"]["authorization"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    // The CLI's identity token, an access token, and a token for another service: stripped.
    for token in [pier.token(), pier.api_token(), pier.token_for(&private)] {
        let got = seen(&token);
        assert!(got.ends_with(".SIGNATURE_REMOVED_BY_PIER"), "{got}");
        assert!(!got.contains(token.rsplit('.').next().unwrap()));
    }
    // A token addressed to the service itself stays whole: it may verify it.
    let mine = pier.token_for(&public);
    assert_eq!(seen(&mine), format!("Bearer {mine}"));
    // The admin API takes only its own tokens: not the CLI's identity token, nor a service's.
    let api = format!("{}/v1/projects/default/services", pier.api_url);
    for (token, want) in [
        (pier.token(), "401"),
        (mine, "401"),
        (pier.api_token(), "200"),
    ] {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .arg(&api)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    }
}

/// Finding 5: `Connection: X-Serverless-Authorization` let the app see only a forged token, in the
/// form Pier gives verified ones.
#[test]
fn the_app_only_ever_sees_tokens_pier_verified() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("api", &[]);
    let good = pier.token_for(&url);
    let forged = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJlbWFpbCI6InJvb3QifQ.SIGNATURE_REMOVED_BY_PIER";
    let out = pier.curl(&[
        "--http1.1",
        "-w",
        "\n%{http_code}",
        "-H",
        &format!("X-Serverless-Authorization: Bearer {good}"),
        "-H",
        &format!("Authorization: {forged}"),
        "-H",
        "Connection: X-Serverless-Authorization",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("400"), "{text}");
    assert!(text.contains("Connection"), "{text}");
    // A token in Pier's stripped form is refused wherever it comes.
    for header in ["Authorization", "X-Serverless-Authorization"] {
        let out = pier.curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("{header}: {forged}"),
            &url,
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "{header}");
    }
    // Headers CGI-style apps would read as the credential headers, and credential headers sent twice
    // (apps that join repeated headers would read the second): refused, both over HTTP/1.1 and h2.
    for (version, extra) in [
        (
            "--http1.1",
            vec![
                "-H".to_owned(),
                format!("X_Serverless_Authorization: {forged}"),
            ],
        ),
        (
            "--http2",
            vec![
                "-H".to_owned(),
                format!("X_Serverless_Authorization: {forged}"),
            ],
        ),
        (
            "--http1.1",
            vec![
                "-H".to_owned(),
                "Authorization: Basic eDp5".to_owned(),
                "-H".to_owned(),
                format!("Authorization: {forged}"),
            ],
        ),
    ] {
        let mut args = vec![
            version.to_owned(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "-H".into(),
            format!("X-Serverless-Authorization: Bearer {good}"),
        ];
        args.extend(extra.clone());
        args.push(url.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = pier.curl(&args);
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        // `Authorization_` is no protected name once hyphenated (`Authorization-`): it passes.
        let want = if extra[1].starts_with("Authorization_") {
            "200"
        } else {
            "400"
        };
        assert_eq!(code, want, "{version} {extra:?}");
    }
    // An h2c upgrade is not tunnelled past the guard: the request is answered as it is.
    let out = pier.curl(&[
        "--http1.1",
        "-H",
        &format!("X-Serverless-Authorization: Bearer {good}"),
        "-H",
        "Connection: Upgrade, HTTP2-Settings",
        "-H",
        "Upgrade: h2c",
        "-H",
        "HTTP2-Settings: AAMAAABkAAQAAP__",
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("200"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("\"upgrade\""),
        "the app saw the upgrade: {text}"
    );
}

/// Finding 6: a service named `green---b` took over service `b`'s tag URL.
#[test]
fn no_name_can_take_over_another_resources_host() {
    let pier = Pier::start(&[]);
    for name in ["green---b", "a--b"] {
        let err = pier.fails(&["deploy", name, "--command", hello_bin().to_str().unwrap()]);
        assert!(err.contains("two hyphens"), "{name}: {err}");
    }
}

/// The wider sweep: secrets at rest are the server's alone.
#[test]
fn secrets_in_the_data_dir_are_private() {
    let pier = Pier::start(&[]);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&pier.dir),
        0o711,
        "the data dir can be passed, not listed"
    );
    for f in [
        "pier.db",
        "ca-key.pem",
        "owner-password",
        "owner-credentials.json",
    ] {
        assert_eq!(mode(&pier.dir.join(f)), 0o600, "{f}");
    }
    // Image content (private registries' included) is the server's alone; only the paths a gen2
    // container's mapped root walks through to reach its root may be passed.
    for d in [
        "keys",
        "logs",
        "run",
        "images/blobs",
        "images/layers",
        "images/copies",
        "images/base",
        "containers/state",
    ] {
        assert_eq!(mode(&pier.dir.join(d)), 0o700, "{d}");
    }
    for d in ["images", "containers"] {
        assert_eq!(mode(&pier.dir.join(d)), 0o711, "{d}");
    }
    // Container roots and bundles live in the run dir, passable but not listable; each owner's
    // folder inside is closed to everyone else (tested with containers).
    let run = pier.run_dir();
    for d in [run.clone(), run.join("rootfs"), run.join("bundles")] {
        assert_eq!(mode(&d), 0o711, "{}", d.display());
    }
    for key in std::fs::read_dir(pier.dir.join("keys")).unwrap().flatten() {
        assert_eq!(mode(&key.path()), 0o600, "{}", key.path().display());
    }
}

/// The wider sweep: a caller without access learns nothing of what exists.
#[test]
fn strangers_cannot_tell_what_exists() {
    let pier = Pier::start(&[]);
    pier.deploy_hello("exists", &[]);
    let stranger = pier.user("stranger@example.com");
    let a = stranger.fails(&["services", "describe", "exists"]);
    let b = stranger.fails(&["services", "describe", "missing"]);
    assert!(
        a.contains("lacks permission") && b.contains("lacks permission"),
        "{a}\n{b}"
    );
    assert_eq!(a.replace("exists", "X"), b.replace("missing", "X"));
    let a = stranger.fails(&["revisions", "list", "--service", "exists"]);
    let b = stranger.fails(&["revisions", "list", "--service", "missing"]);
    assert_eq!(a.replace("exists", "X"), b.replace("missing", "X"));
    // A revision, by name.
    let rev = pier.describe("exists")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = stranger.fails(&["revisions", "describe", &rev]);
    let b = stranger.fails(&["revisions", "describe", "missing-00001-abc"]);
    assert!(
        a.contains("lacks permission") && b.contains("lacks permission"),
        "{a}\n{b}"
    );
    // The same words, naming only the revision asked about (not its service).
    assert_eq!(a.replace(&rev, "X"), b.replace("missing-00001-abc", "X"));
    // A service account's policy and keys.
    pier.ok(&["iam", "service-accounts", "create", "exists"]);
    {
        let (sa, missing) = (
            "exists@default.iam.pier.localhost",
            "missing@default.iam.pier.localhost",
        );
        let a = stranger.fails(&["iam", "service-accounts", "get-iam-policy", sa]);
        let b = stranger.fails(&["iam", "service-accounts", "get-iam-policy", missing]);
        assert!(
            a.contains("lacks permission") && b.contains("lacks permission"),
            "{a}\n{b}"
        );
        let a = stranger.fails(&[
            "iam",
            "service-accounts",
            "keys",
            "list",
            "--iam-account",
            sa,
        ]);
        let b = stranger.fails(&[
            "iam",
            "service-accounts",
            "keys",
            "list",
            "--iam-account",
            missing,
        ]);
        assert_eq!(a.replace(sa, "X"), b.replace(missing, "X"));
    }
    // A project: deploying into one that exists and one that does not reads the same.
    let a = stranger.fails(&["deploy", "x", "--command", "true", "--project", "default"]);
    let b = stranger.fails(&[
        "deploy",
        "x",
        "--command",
        "true",
        "--project",
        "nosuchproject",
    ]);
    assert_eq!(
        a.replace("default", "X"),
        b.replace("nosuchproject", "X"),
        "the project's existence shows"
    );
    // The owner, who may see, is told what is missing.
    let owner = pier.fails(&["revisions", "describe", "missing-00001-abc"]);
    assert!(
        owner.contains("does not exist") || owner.contains("not found"),
        "{owner}"
    );
}

/// Role scope, as on Cloud Run: a viewer reads services but not their logs (which may hold what the app
/// printed); `roles/logging.viewer` grants the logs alone, and a failed revision's last log lines are
/// shown only to those who may read logs.
#[test]
fn a_viewer_does_not_read_logs() {
    let pier = Pier::start(&[]);
    pier.deploy_hello("api", &[]);
    pier.fails(&[
        "deploy",
        "broken",
        "--command",
        "echo secret-$((40+2))-log; exit 3",
    ]);
    let viewer = pier.user("viewer@example.com");
    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member=user:viewer@example.com",
        "--role=roles/run.viewer",
    ]);
    viewer.ok(&["services", "describe", "api"]);
    let err = viewer.fails(&["logs", "api"]);
    assert!(err.contains("logging.logEntries.list"), "{err}");
    let revs = viewer.ok(&[
        "revisions",
        "list",
        "--service",
        "broken",
        "--format",
        "json",
    ]);
    assert!(
        !revs.contains("secret-42-log"),
        "a viewer sees a failed revision's log lines: {revs}"
    );
    let owner_view = pier.ok(&[
        "revisions",
        "list",
        "--service",
        "broken",
        "--format",
        "json",
    ]);
    assert!(owner_view.contains("secret-42-log"), "{owner_view}");

    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member=user:viewer@example.com",
        "--role=roles/logging.viewer",
    ]);
    viewer.ok(&["logs", "api"]);
    let revs = viewer.ok(&[
        "revisions",
        "list",
        "--service",
        "broken",
        "--format",
        "json",
    ]);
    assert!(revs.contains("secret-42-log"), "{revs}");
}

/// VPC egress is the installation's to grant (as `vpcaccess.connectors.use` is on Google Cloud): a
/// developer is refused until an owner grants `roles/vpcaccess.user` on the installation, and the
/// installation never loses its last owner.
#[test]
fn private_networks_are_granted_on_the_installation() {
    let pier = Pier::start(&["--private-egress", "192.168.77.0/24"]);
    let dev = developer(&pier);
    let dir = shared_dir();
    let app = write_script(dir.path(), "app.sh", "exec python3 -m http.server $PORT\n");
    let deploy = |who: &Account| {
        who.cli(&[
            "deploy",
            "net",
            "--command",
            &app,
            "--workdir",
            dir.path().to_str().unwrap(),
            "--vpc-egress",
            "private-ranges-only",
        ])
    };
    let out = deploy(&dev);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("pier installation add-iam-policy-binding"),
        "{err}"
    );
    // A project-level grant is not enough: the network is the installation's.
    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member=user:dev@example.com",
        "--role=roles/vpcaccess.user",
    ]);
    // (the union of policies includes projects; the permission is checked on the installation)
    let out = deploy(&dev);
    assert!(
        !out.status.success(),
        "a project grant opened the installation's network"
    );
    // A developer cannot grant it to themselves.
    dev.fails(&[
        "installation",
        "add-iam-policy-binding",
        "--member=user:dev@example.com",
        "--role=roles/vpcaccess.user",
    ]);
    pier.ok(&[
        "installation",
        "add-iam-policy-binding",
        "--member=user:dev@example.com",
        "--role=roles/vpcaccess.user",
    ]);
    let out = deploy(&dev);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let policy = pier.ok(&["installation", "get-iam-policy", "--format", "json"]);
    assert!(policy.contains("roles/vpcaccess.user"), "{policy}");
    // The last owner stays.
    let err = pier.fails(&[
        "installation",
        "remove-iam-policy-binding",
        "--member=user:owner@pier.localhost",
        "--role=roles/owner",
    ]);
    assert!(err.contains("at least one roles/owner"), "{err}");
}

/// The wider sweep: the Host an app receives is the one the request was routed by (RFC 9112 §3.2).
#[test]
fn the_app_receives_the_host_it_was_routed_by() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("h", &["--allow-unauthenticated"]);
    let host = url.trim_start_matches("https://").to_owned();
    // An absolute-form target wins over a Host line that says otherwise.
    let out = pier.curl(&[
        "--http1.1",
        "--request-target",
        &format!("https://{host}/"),
        "-H",
        "Host: other.example",
        &url,
    ]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["headers"]["host"], host.as_str());
    // Two Host lines: 400 (curl sends only one, so the request is written by hand over TLS).
    let script = format!(
        r#"import socket, ssl
ctx = ssl.create_default_context(cafile="{ca}")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", {port})), server_hostname="{name}")
s.sendall(b"GET / HTTP/1.1\r\nHost: {host}\r\nHost: other.example\r\nConnection: close\r\n\r\n")
print(s.recv(100).decode().split("\r\n")[0])
"#,
        ca = pier.dir.join("ca.pem").display(),
        port = pier.https_port,
        name = host.split(':').next().unwrap(),
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains(" 400 "),
        "{status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Another local user of the host (here `nobody`) reaches nothing of a container's: not its image
/// root (gen2 or gen1), not its bundle's configuration (which holds the service's environment), and a
/// setuid binary in an image grants nothing on the host (every root is mounted `nosuid`).
#[test]
fn local_users_reach_nothing_of_containers() {
    common::oci::need(&["runc", "runsc"]);
    let pier = Pier::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let image = common::oci::build(&layout, "hello", &common::oci::ImageSpec::hello());
    for (name, extra) in [
        ("gen2", vec![]),
        ("gen1", vec!["--execution-environment", "gen1"]),
    ] {
        let mut args = vec![
            "deploy",
            name,
            "--image",
            &image,
            "--set-env-vars",
            "DB_PASSWORD=hunter2",
        ];
        args.extend(extra);
        pier.ok(&args);
    }
    let run = pier.run_dir();
    let roots = common::oci::mounts_with_types_under(&run.join("rootfs"));
    assert!(roots.len() >= 2, "{roots:?}");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for (root, _) in &roots {
        let line = info.lines().find(|l| l.contains(root.as_str())).unwrap();
        let opts = line.split_whitespace().nth(5).unwrap();
        assert!(opts.contains("nosuid") && opts.contains("nodev"), "{line}");
    }
    let as_nobody = |path: &str| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "cat",
                path,
            ])
            .output()
            .unwrap()
    };
    for (root, _) in &roots {
        let out = as_nobody(&format!("{root}/pier-hello"));
        assert!(!out.status.success(), "nobody read {root}/pier-hello");
    }
    for bundle in std::fs::read_dir(run.join("bundles")).unwrap().flatten() {
        let config = bundle.path().join("config.json");
        let out = as_nobody(config.to_str().unwrap());
        assert!(!out.status.success(), "nobody read {}", config.display());
        assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    }
}

/// An identity token with Pier's own audience is an access token to the admin API: nobody gets one
/// for another account (impersonation), nor by naming the audience in a refresh, so Token Creator
/// cannot act as the account it may mint identity tokens for.
#[test]
fn identity_tokens_never_carry_the_admin_apis_audience() {
    let pier = Pier::start(&[]);
    let dev = developer(&pier);
    pier.ok(&["iam", "service-accounts", "create", "deployer"]);
    let sa = "deployer@default.iam.pier.localhost";
    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        &format!("--member=serviceAccount:{sa}"),
        "--role=roles/run.admin",
    ]);
    pier.ok(&[
        "iam",
        "service-accounts",
        "add-iam-policy-binding",
        sa,
        "--member=user:dev@example.com",
        "--role=roles/iam.serviceAccountTokenCreator",
    ]);
    let issuer = pier.api_get("/v1/info")["domain"]
        .as_str()
        .unwrap()
        .to_owned();
    let issuer = format!("https://{issuer}:{}", pier.https_port);
    let err = dev.fails(&[
        "auth",
        "print-identity-token",
        "--impersonate-service-account",
        sa,
        "--audiences",
        &issuer,
    ]);
    assert!(err.contains("access token to Pier's admin API"), "{err}");
    // A service URL is fine.
    dev.ok(&[
        "auth",
        "print-identity-token",
        "--impersonate-service-account",
        sa,
        "--audiences",
        "https://api.example",
    ]);
    // Nor does the refresh grant hand one out by name.
    let err = pier.fails(&["auth", "print-identity-token", "--audiences", &issuer]);
    assert!(err.contains("access token to Pier's admin API"), "{err}");
}

/// Internal ingress admits instances of the service's own project only (Cloud Run: the project's
/// VPC), not every instance on the server.
#[test]
fn internal_ingress_is_for_the_services_own_project() {
    let pier = Pier::start(&[]);
    let dir = shared_dir();
    let inner_url = pier.deploy_url(&[
        "deploy",
        "inner",
        "--project",
        "other",
        "--command",
        hello_bin().to_str().unwrap(),
        "--ingress",
        "internal",
        "--allow-unauthenticated",
    ]);
    let caller = write_script(
        dir.path(),
        "caller.py",
        r#"import http.server, os, urllib.request, urllib.error
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            code = urllib.request.urlopen(os.environ["TARGET"], timeout=10).status
        except urllib.error.HTTPError as e:
            code = e.code
        self.send_response(200); self.end_headers(); self.wfile.write(str(code).encode())
http.server.HTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"#,
    );
    let mut codes = Vec::new();
    for project in ["other", "default"] {
        let out = pier.ok(&[
            "deploy",
            "caller",
            "--project",
            project,
            "--command",
            &format!("exec python3 {caller}"),
            "--workdir",
            dir.path().to_str().unwrap(),
            "--env",
            &format!("TARGET={inner_url}"),
            "--allow-unauthenticated",
        ]);
        let url = service_url(&out);
        codes.push(String::from_utf8(pier.curl(&[&url]).stdout).unwrap());
    }
    assert_eq!(codes, ["200", "404"], "same project in, other project out");
}

/// A developer cannot make the server pull from its own loopback (a port scan, or a local service's
/// answer echoed back through an error): that is an owner's to do, as local image files are.
#[test]
fn a_developer_cannot_pull_from_the_servers_loopback() {
    let pier = Pier::start(&[]);
    let dev = developer(&pier);
    for image in [
        "127.0.0.1:9/probe:1",
        "localhost:9/probe",
        "169.254.169.254/x:y",
    ] {
        let err = dev.fails(&["deploy", "scan", "--image", image]);
        assert!(err.contains("an owner's to use"), "{image}: {err}");
    }
    // The owner may (the registry is simply not there).
    let err = pier.fails(&["deploy", "scan", "--image", "127.0.0.1:9/probe:1"]);
    assert!(!err.contains("an owner's to use"), "{err}");
}
