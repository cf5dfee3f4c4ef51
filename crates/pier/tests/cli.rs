//! More of the CLI, end to end: projects as namespaces, manifests (`services replace`), `services update`,
//! `--env-file`, `logs --follow`, a custom domain with a user-supplied certificate, a deploy's progress
//! and its operation, `--format value(...)`, completions and man pages.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::Command;

#[test]
fn projects_are_namespaces_with_their_own_urls() {
    let pier = Pier::start(&[]);
    let a = pier.deploy_hello("same", &["--allow-unauthenticated"]);
    let b = pier.deploy_hello("same", &["--project", "team-b", "--allow-unauthenticated"]);
    assert_ne!(a, b, "each project has its own URL hash");
    let body = String::from_utf8(pier.curl(&[&b]).stdout).unwrap();
    assert!(body.contains("\"service\":\"same\""));
    let listed = pier.ok(&[
        "services",
        "list",
        "--project",
        "team-b",
        "--format",
        "json",
    ]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["project"], "team-b");
    pier.ok(&["services", "delete", "same", "--project", "team-b"]);
    // The default project's service is untouched.
    assert_eq!(pier.describe("same")["url"], a.as_str());
}

#[test]
fn manifests_update_and_env_files() {
    let pier = Pier::start(&[]);
    // The manifest's folder is the instance's working directory: the app's own, not Pier's data dir.
    let app = tempfile::tempdir().unwrap();
    let manifest = app.path().join("svc.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: fromyaml
  annotations:
    pier.dev/allow-unauthenticated: "true"
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/maxScale: "3"
    spec:
      containerConcurrency: 5
      containers:
        - command: ["{}"]
          env:
            - name: GREETING
              value: from yaml
"#,
            hello_bin().display()
        ),
    )
    .unwrap();
    let out = pier.ok(&["services", "replace", manifest.to_str().unwrap()]);
    let url = service_url(&out);
    let svc = pier.describe("fromyaml");
    assert_eq!(svc["template"]["containerConcurrency"], 5);
    assert_eq!(svc["template"]["maxInstances"], 3);
    assert_eq!(svc["allowUnauthenticated"], true);
    assert!(
        String::from_utf8(pier.curl(&[&url]).stdout)
            .unwrap()
            .contains("from yaml")
    );
    // Replacing with the same manifest makes no new revision; a bare file name in its own folder, as
    // users type it, names the same manifest.
    let bare = pier
        .command(PIER)
        .args(["services", "replace", "svc.yaml"])
        .env("PIER_CONFIG", pier.dir.join("cli.toml"))
        .current_dir(app.path())
        .output()
        .unwrap();
    assert!(
        bare.status.success(),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    let revs = pier.ok(&[
        "revisions",
        "list",
        "--service",
        "fromyaml",
        "--format",
        "json",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&revs)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // `services update` with template flags makes a revision and keeps the rest.
    let env_file = pier.dir.join("app.env");
    std::fs::write(
        &env_file,
        "# comment\nGREETING=\"from file\"\nexport EXTRA=1\n",
    )
    .unwrap();
    pier.ok(&[
        "services",
        "update",
        "fromyaml",
        "--env-file",
        env_file.to_str().unwrap(),
    ]);
    let svc = pier.describe("fromyaml");
    assert_eq!(
        svc["template"]["containerConcurrency"], 5,
        "untouched settings stay"
    );
    let env = svc["template"]["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "EXTRA" && e["value"] == "1"),
        "{env:?}"
    );
    assert!(
        String::from_utf8(pier.curl(&[&url]).stdout)
            .unwrap()
            .contains("from file")
    );
    // Settings-only update: private now, without a new revision.
    let before = svc["latestReadyRevision"].clone();
    pier.ok(&[
        "services",
        "update",
        "fromyaml",
        "--no-allow-unauthenticated",
    ]);
    let svc = pier.describe("fromyaml");
    assert_eq!(svc["allowUnauthenticated"], false);
    assert_eq!(svc["latestReadyRevision"], before);
    // A broken env file is refused with its line number.
    std::fs::write(&env_file, "OK=1\nbroken line\n").unwrap();
    let err = pier.fails(&[
        "services",
        "update",
        "fromyaml",
        "--env-file",
        env_file.to_str().unwrap(),
    ]);
    assert!(err.contains("line 2"), "{err}");
    // A broken manifest is refused, naming the problem.
    std::fs::write(&manifest, "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {template: {spec: {containers: []}}}\n").unwrap();
    let err = pier.fails(&["services", "replace", manifest.to_str().unwrap()]);
    assert!(
        err.contains("Pier reads serving.knative.dev/v1 Service manifests"),
        "{err}"
    );
}

#[test]
fn logs_follow_streams_new_lines() {
    let pier = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    let server = app.path().join("talk.sh");
    std::fs::write(
        &server,
        "echo booting; exec python3 -u -m http.server $PORT\n",
    )
    .unwrap();
    let out = pier.ok(&[
        "deploy",
        "talk",
        "--command",
        &format!("sh {}", server.display()),
        "--allow-unauthenticated",
    ]);
    let url = service_url(&out);
    let mut follower = std::process::Command::new(PIER)
        .args(["logs", "talk", "--follow", "--limit", "5"])
        .env("PIER_CONFIG", pier.dir.join("cli.toml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    // First the tail, including the boot line.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("booting")) {
        seen.push(lines.next().unwrap().unwrap());
    }
    // Then a line written after following began.
    pier.curl(&[&format!("{url}/followed-path")]);
    let found = loop {
        let line = lines.next().unwrap().unwrap();
        if line.contains("/followed-path") {
            break line;
        }
    };
    assert!(found.contains("[stderr]"), "{found}");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn a_custom_domain_with_a_user_certificate() {
    // Issue a certificate for run.example.com from a CA of our own (as a user would bring one).
    let tmp = tempfile::tempdir().unwrap();
    let ca = pier_tls::LocalCa::load_or_create(tmp.path(), "user CA").unwrap();
    let leaf = ca
        .issue(
            &["run.example.com".into(), "*.run.example.com".into()],
            std::time::Duration::from_secs(86400),
        )
        .unwrap();
    let cert = tmp.path().join("fullchain.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, &leaf.chain_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let pier = Pier::start(&[
        "--domain",
        "run.example.com",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = pier.deploy_hello("api", &["--allow-unauthenticated"]);
    assert!(url.contains(".run.example.com:"), "{url}");
    let host = url
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap();
    let out = std::process::Command::new("curl")
        .arg("--cacert")
        .arg(tmp.path().join("ca.pem"))
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", pier.https_port))
        .args(["-sS", &url])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"service\":\"api\""),
        "{out:?}"
    );
    // A missing certificate file stops the server with a clear error.
    let out = std::process::Command::new(PIER)
        .args(["server", "--data-dir"])
        .arg(tmp.path().join("other"))
        .args(with_free_ports(&[
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ]))
        .env("PIER_CONFIG", tmp.path().join("cli.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.pem"));
}

/// `pier doctor` checks the host as the server would use it, and names the fix for what is missing.
#[test]
fn doctor_checks_the_host_and_names_fixes() {
    let out = std::process::Command::new(PIER)
        .arg("doctor")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for what in [
        "root",
        "host ids",
        "limits",
        "seccomp",
        "kernel",
        "slirp4netns",
        "runc",
        "runsc",
    ] {
        assert!(
            text.contains(&format!("{what}: ")),
            "no {what} line:\n{text}"
        );
    }
    // Without slirp4netns (the default egress) and runsc on PATH.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["ip", "nft", "runc"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
        std::os::unix::fs::symlink(path, bin.path().join(tool)).unwrap();
    }
    let out = std::process::Command::new(PIER)
        .arg("doctor")
        .env("PATH", bin.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the default egress cannot work:\n{text}"
    );
    assert!(
        text.contains("FAIL  slirp4netns") && text.contains("apt install slirp4netns"),
        "{text}"
    );
    assert!(
        text.contains("warn  runsc") && text.contains("apt install runsc"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("fix the FAIL lines"));
}

#[test]
fn deploy_progress_operations_formats_and_completions() {
    let p = Pier::start(&[]);
    let dir = visible_dir();
    let hello = visible_hello(dir.path());
    let hello = hello.to_str().unwrap();
    // Not a terminal: the phases as plain lines, in order; results alone on stdout.
    let out = p.cli(&[
        "deploy",
        "hello",
        "--command",
        hello,
        "--allow-unauthenticated",
    ]);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{progress}");
    in_order(
        &progress,
        &[
            "Creating revision",
            "Starting the instance...",
            "Starting the instance: done",
            "Probing: done",
            "Routing traffic: done",
        ],
    );
    assert!(
        !progress.contains("Pulling image"),
        "a command pulls nothing"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("Service URL: https://hello-"),
        "{stdout}"
    );
    // --quiet: results only.
    let out = p.cli(&["deploy", "hello", "--command", hello, "-q"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Service URL: "));
    // A failing deploy names the phase it failed in.
    let err = p.fails(&["deploy", "hello", "--command", "exit 3"]);
    assert!(err.contains("Probing: failed"), "{err}");
    assert!(err.contains("exited with status 3"), "{err}");

    // The operation itself, in Google's shape, for whoever may read the service.
    let out = p.ok(&[
        "deploy",
        "hello",
        "--command",
        hello,
        "--async",
        "--format",
        "json",
    ]);
    let rev: serde_json::Value = serde_json::from_str(&out).unwrap();
    let name = rev["operation"]
        .as_str()
        .expect("a deploy names its operation")
        .to_owned();
    assert!(
        name.starts_with("projects/default/locations/local/operations/"),
        "{name}"
    );
    let op = eventually(30, "the operation to end", || {
        let v = p.api_get(&format!("/v1/{name}?after=0&wait=5"));
        (v["done"] == true).then_some(v)
    });
    assert!(op["error"].is_null(), "{op}");
    let phases: Vec<(&str, &str)> = op["metadata"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        phases,
        [
            ("Starting the instance", "SUCCEEDED"),
            ("Probing", "SUCCEEDED"),
            ("Routing traffic", "SUCCEEDED")
        ]
    );
    let stranger = p.user("stranger@example.com");
    let out = p
        .command("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", stranger.api_token()))
        .arg(format!("{}/v1/{name}", p.api_url))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
    let err = p.fails(&["services", "list", "--format", "value(bad path)"]);
    assert!(err.contains("value(FIELD)"), "{err}");

    // gcloud's --format value(...) and table.
    assert_eq!(
        p.ok(&["services", "list", "--format", "value(name)"]),
        "hello\n"
    );
    let url = p.ok(&["services", "describe", "hello", "--format", "value(url)"]);
    assert!(
        url.starts_with("https://hello-") && url.lines().count() == 1,
        "{url}"
    );
    assert!(
        p.ok(&["services", "list", "--format", "table"])
            .contains("SERVICE")
    );

    // Completions and man pages from the same definitions.
    let script = p.dir.join("pier.bash");
    std::fs::write(&script, p.ok(&["completion", "bash"])).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p pier", script.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("-F _pier pier"),
        "{out:?}"
    );
    assert!(p.ok(&["completion", "zsh"]).starts_with("#compdef pier"));
    assert!(p.ok(&["completion", "fish"]).contains("complete -c pier"));
    let man = tempfile::tempdir().unwrap();
    p.ok(&["man", "--dir", man.path().to_str().unwrap()]);
    let page = std::fs::read_to_string(man.path().join("pier-services-describe.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("pier\\-services\\-describe"), "{page}");
}
