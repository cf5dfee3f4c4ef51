//! The README's quickstart as printed, with every default: `pier up examples/hello` run by a user whose
//! home is a real home folder (hidden from instances, as homes are), no `--data-dir`, no `PIER_CONFIG`,
//! the default ports (8443, 8080, 8079); then the README's `curl` with the CA from
//! `~/.local/share/pier`, the "Using Pier" commands against the same server, and a clean stop on
//! SIGTERM. The other tests use free ports and their own folders; this one is what a new user does.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn describe_args(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["template"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// A user's home under `/home`, removed afterwards.
struct Home(PathBuf);

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn as_user(home: &Path, program: &str) -> Command {
    let mut c = Command::new(program);
    // The toolchain stays where it is installed, as it would for a user whose cargo lives in $HOME.
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or_else(|_| "/root/.cargo".into());
    let rustup_home = std::env::var("RUSTUP_HOME").unwrap_or_else(|_| "/root/.rustup".into());
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CARGO_HOME", cargo_home)
        .env("RUSTUP_HOME", rustup_home)
        .current_dir(home);
    c
}

#[test]
fn the_readme_quickstart_works_as_printed() {
    let home = Home(PathBuf::from(format!(
        "/home/pier-readme-{}",
        std::process::id()
    )));
    std::fs::create_dir_all(&home.0).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let log = home.0.join("up.log");
    let mut child = as_user(&home.0, PIER)
        .arg("up")
        .arg(&example)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("Service [hello] URL: ") {
            url = Some(u.to_owned());
            break;
        }
    }
    let url = url.unwrap_or_else(|| {
        let _ = child.kill();
        panic!(
            "no URL printed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(
        url.starts_with("https://hello-") && url.ends_with(".pier.localhost:8443"),
        "the README's URL form: {url}"
    );
    // The README's curl, as printed.
    let out = as_user(&home.0, "curl")
        .args(
            ["--cacert", "~/.local/share/pier/ca.pem"]
                .map(|a| a.replace('~', home.0.to_str().unwrap())),
        )
        .args(["-sS", &format!("{url}/")])
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(body["service"], "hello");
    assert_eq!(body["greeting"], "Hello from Pier");
    assert!(
        body["revision"]
            .as_str()
            .unwrap()
            .starts_with("hello-00001-")
    );

    // "Using Pier", against the same server, from a project folder in the user's home.
    let app = home.0.join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(app.join("index.html"), "<h1>from my folder</h1>\n").unwrap();
    let pier = |args: &[&str]| {
        let out = as_user(&home.0, PIER)
            .args(args)
            .current_dir(&app)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pier {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = pier(&[
        "deploy",
        "web",
        "--command",
        "python3 -m http.server $PORT",
        "--allow-unauthenticated",
    ]);
    let web = service_url(&out);
    let page = as_user(&home.0, "curl")
        .arg("--cacert")
        .arg(home.0.join(".local/share/pier/ca.pem"))
        .args(["-sS", &format!("{web}/index.html")])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&page.stdout),
        "<h1>from my folder</h1>\n"
    );
    assert!(pier(&["services", "list"]).contains("web"));
    assert!(
        pier(&["services", "describe", "web", "--format", "yaml"])
            .contains("serving.knative.dev/v1")
    );
    assert!(pier(&["revisions", "list", "--service", "web"]).contains("web-00001-"));
    assert!(pier(&["logs", "web"]).contains("GET /index.html"));
    pier(&["services", "delete", "web"]);

    // The README's --args example, values starting with `-` included.
    let hello = hello_bin();
    pier(&[
        "deploy",
        "api",
        "--command",
        hello.to_str().unwrap(),
        "--args",
        "--port=$(PORT),--verbose",
        "--allow-unauthenticated",
    ]);
    let args = describe_args(&pier(&["services", "describe", "api", "--format", "json"]));
    assert_eq!(args, ["--port=$(PORT)", "--verbose"]);

    // A container image listening on Cloud Run's default port, 8080, which is also the server's own
    // default HTTP port: the instance's namespace has its own 8080.
    common::oci::need(&["runc", "umoci", "skopeo"]);
    {
        let layout = home.0.join("layout");
        let image = common::oci::build(&layout, "hello", &common::oci::ImageSpec::hello());
        let out = pier(&[
            "deploy",
            "img",
            "--image",
            &image,
            "--allow-unauthenticated",
        ]);
        let img = service_url(&out);
        let body = as_user(&home.0, "curl")
            .arg("--cacert")
            .arg(home.0.join(".local/share/pier/ca.pem"))
            .args(["-sS", &img])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body.stdout).unwrap();
        assert_eq!(v["port"], "8080", "{v}");
    }

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
