//! `pier up examples/hello`, the README's first command: builds the example, starts the server, deploys,
//! prints the URL, serves it, and stops cleanly on SIGTERM.

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn up_builds_deploys_and_serves_the_example() {
    let tmp = tempfile::tempdir().unwrap();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello");
    let mut child = Command::new(PIER)
        .arg("up")
        .arg(&example)
        .args(with_free_ports(&[]))
        .arg("--data-dir")
        .arg(tmp.path())
        .env("PIER_CONFIG", tmp.path().join("cli.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(tmp.path().join("up.log")).unwrap(),
        ))
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
        panic!(
            "no URL printed:\n{}",
            std::fs::read_to_string(tmp.path().join("up.log")).unwrap_or_default()
        )
    });
    let out = Command::new("curl")
        .arg("--cacert")
        .arg(tmp.path().join("ca.pem"))
        .args(["-sS", &url])
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["service"], "hello");
    assert_eq!(body["greeting"], "Hello from Pier");
    assert!(
        body["revision"]
            .as_str()
            .unwrap()
            .starts_with("hello-00001-")
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
