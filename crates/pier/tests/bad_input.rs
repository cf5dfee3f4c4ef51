//! Bad input gets a clear error and loses nothing: invalid names and flags at the CLI, hostile or broken
//! requests at the gateway, and misuse of the admin API.

mod common;
use common::*;
use std::io::{Read, Write};

#[test]
fn the_cli_refuses_bad_names_and_flags_with_one_line_reasons() {
    let pier = Pier::start(&[]);
    let bin = hello_bin();
    let b = bin.to_str().unwrap();
    let long = "x".repeat(50);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["deploy", "Hello", "--command", b],
            "must start with a lowercase letter",
        ),
        (
            vec!["deploy", "hello-", "--command", b],
            "must not end with a hyphen",
        ),
        (vec!["deploy", &long, "--command", b], "longer than 49"),
        (vec!["deploy", "a_b", "--command", b], "contains '_'"),
        (
            vec!["deploy", "ok", "--command", b, "--concurrency", "0"],
            "--concurrency 0 is out of range",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--concurrency", "1001"],
            "use 1 to 1000",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--max-instances", "0"],
            "--max-instances",
        ),
        (
            vec![
                "deploy",
                "ok",
                "--command",
                b,
                "--min-instances",
                "5",
                "--max-instances",
                "2",
            ],
            "above --max-instances",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--timeout", "3601"],
            "--timeout 3601s is out of range",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--timeout", "soon"],
            "not a duration",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--memory", "lots"],
            "--memory",
        ),
        (vec!["deploy", "ok", "--command", b, "--cpu", "99"], "--cpu"),
        (
            vec!["deploy", "ok", "--command", b, "--env", "PORT=1"],
            "reserved",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--env", "NOVALUE"],
            "KEY=VALUE",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--port", "8022"],
            "--port 8022 is reserved",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--tag", "BAD"],
            "invalid tag name",
        ),
        (vec!["deploy", "ok"], "nothing to deploy"),
        // Service settings given with a deploy are checked before a revision is recorded: a revision
        // left DEPLOYING would never end.
        (
            vec![
                "deploy",
                "ok",
                "--command",
                b,
                "--add-custom-audiences",
                "a,,b",
            ],
            "is not valid",
        ),
        (
            vec![
                "deploy",
                "ok",
                "--command",
                b,
                "--add-custom-audiences",
                "pier-cli",
            ],
            "Pier's own",
        ),
        (
            vec!["deploy", "ok", "--command", b, "--project", "Bad"],
            "invalid project name",
        ),
    ];
    for (args, want) in cases {
        let out = pier.cli(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("ERROR: "), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // None of it created anything.
    assert!(pier.ok(&["services", "list", "--format", "json"]).trim() == "[]");
}

#[test]
fn the_gateway_answers_bad_requests_and_keeps_serving() {
    let pier = Pier::start(&["--max-request-body", "1024"]);
    let url = pier.deploy_hello("api", &["--timeout", "1", "--allow-unauthenticated"]);
    let code = |args: &[&str]| {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        String::from_utf8(pier.curl(&a).stdout).unwrap()
    };
    let port = pier.https_port;
    // A Host for nobody.
    assert_eq!(
        code(&[&format!("https://nobody-000000.pier.localhost:{port}/")]),
        "404"
    );
    // Body too large, with and without a declared length.
    let big = pier.dir.join("big");
    std::fs::write(&big, vec![b'x'; 4096]).unwrap();
    assert_eq!(
        code(&[
            "--data-binary",
            &format!("@{}", big.display()),
            &format!("{url}/body")
        ]),
        "413"
    );
    // The request timeout gives 504.
    assert_eq!(code(&[&format!("{url}/sleep?ms=3000")]), "504");
    // An instance that dies mid-request gives 502 (or a cut connection), and the next request works.
    let died = code(&[&format!("{url}/crash")]);
    assert!(died == "502" || died == "000", "{died}");
    assert_eq!(code(&[&format!("{url}/")]), "200");
    // Plain HTTP redirects.
    let redirect = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!(
            "http://api-x.pier.localhost:{}/p?q=1",
            pier.http_port
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&redirect.stdout),
        format!("302 https://api-x.pier.localhost:{port}/p?q=1")
    );

    // Garbage on the TLS port.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    raw.write_all(b"\x16\x03\x01\xff\xffgarbage garbage garbage\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 16];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15, "closed or alerted");
    // Plain HTTP spoken to the TLS port.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
        .unwrap();
    let n = raw.read(&mut buf).unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15);
    // Oversized headers: 431, not a crash (a raw TLS client: curl itself refuses such headers). The
    // client stops sending once it is past the limit, so the server has read all it sent and closes cleanly.
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname=sys.argv[3])
s.sendall(b"GET / HTTP/1.1\r\nHost: " + sys.argv[3].encode() + b"\r\nX-Big: " + b"a" * 70000)
s.settimeout(20)
print(s.recv(12).decode())
"#;
    let host = url
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap();
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(pier.dir.join("ca.pem"))
        .arg(port.to_string())
        .arg(host)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "HTTP/1.1 431",
        "{out:?}"
    );
    // Still serving after all of it.
    assert_eq!(code(&[&format!("{url}/")]), "200");
}

#[test]
fn the_admin_api_requires_its_token_and_explains_errors() {
    let pier = Pier::start(&[]);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let services = format!("{}/v1/projects/default/services", pier.api_url);
    let (code, body) = curl(&[&services]);
    assert_eq!(code, "401");
    assert!(
        body.contains("UNAUTHENTICATED") && body.contains("bearer"),
        "{body}"
    );
    let (code, _) = curl(&["-H", "Authorization: Bearer wrong", &services]);
    assert_eq!(code, "401");
    // An identity token (the kind services receive) is not for the admin API.
    let id = format!("Authorization: Bearer {}", pier.token());
    let (code, body) = curl(&["-H", &id, &services]);
    assert_eq!(code, "401", "{body}");
    let auth = format!("Authorization: Bearer {}", pier.api_token());
    let (code, body) = curl(&["-H", &auth, &services]);
    assert_eq!((code.as_str(), body.as_str()), ("200", "[]"));
    let (code, body) = curl(&[
        "-H",
        &auth,
        "-H",
        "content-type: application/json",
        "-d",
        "{\"template\": 5}",
        &format!("{services}/x/revisions"),
    ]);
    assert_eq!(code, "400");
    assert!(body.contains("INVALID_ARGUMENT"), "{body}");
    let (code, body) = curl(&[
        "-H",
        &auth,
        &format!("{}/v1/projects/Bad/services", pier.api_url),
    ]);
    assert_eq!(code, "400");
    assert!(body.contains("invalid project name"), "{body}");
    let (code, _) = curl(&["-H", &auth, &format!("{}/v1/nothing", pier.api_url)]);
    assert_eq!(code, "404");
    // The OpenAPI document is public and describes the API.
    let (code, body) = curl(&[&format!("{}/openapi.json", pier.api_url)]);
    assert_eq!(code, "200");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        doc["paths"]["/v1/projects/{project}/services/{service}/revisions"]["post"].is_object()
    );
    assert!(doc["components"]["schemas"]["RevisionTemplate"].is_object());
}
