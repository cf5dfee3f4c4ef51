//! HTTP/2 from clients, h2c end to end when a revision asks for it, streaming and WebSockets.

mod common;
use common::*;

#[test]
fn http2_clients_and_h2c_instances() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("h1", &["--allow-unauthenticated"]);
    let out = pier.curl(&["--http2", "-w", "\n%{http_version}", &url]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("\n2"), "{text}");
    assert!(
        text.contains("\"version\":\"HTTP/1.1\""),
        "instances speak HTTP/1.1 by default: {text}"
    );

    let url2 = pier.deploy_hello("h2", &["--use-http2", "--allow-unauthenticated"]);
    let out = pier.curl(&["--http1.1", &url2]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\"version\":\"HTTP/2.0\""),
        "h2c end to end: {text}"
    );
}

#[test]
fn responses_stream_and_request_bodies_pass_through() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("stream", &["--allow-unauthenticated"]);
    let client = pier.client();
    rt().block_on(async {
        let mut r = client
            .get(format!("{url}/stream?chunks=3&ms=300"))
            .send()
            .await
            .unwrap();
        let mut chunks = Vec::new();
        while let Some(c) = r.chunk().await.unwrap() {
            chunks.push(String::from_utf8(c.to_vec()).unwrap());
        }
        assert_eq!(chunks.concat(), "chunk 0\nchunk 1\nchunk 2\n");
        assert!(chunks.len() >= 3, "arrived in pieces: {chunks:?}");
        let body = vec![7u8; 5 * 1024 * 1024];
        let echoed = client
            .post(format!("{url}/body"))
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(echoed.len(), body.len());
    });
}

#[test]
fn websockets_work_through_the_gateway() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .unwrap();
    assert!(
        probe.success(),
        "python3 package `websockets` is missing: run scripts/test (it installs it)"
    );
    let pier = Pier::start(&[]);
    let app_dir = tempfile::tempdir().unwrap();
    let server = app_dir.path().join("ws_server.py");
    std::fs::write(&server, WS_ECHO_SERVER).unwrap();
    let out = pier.ok(&[
        "deploy",
        "ws",
        "--command",
        &format!("exec python3 {}", server.display()),
        "--allow-unauthenticated",
    ]);
    let url = service_url(&out);
    let wss = url.replace("https://", "wss://");
    let client = pier.dir.join("ws_client.py");
    std::fs::write(&client, WS_CLIENT).unwrap();
    let out = std::process::Command::new("python3")
        .arg(&client)
        .arg(&wss)
        .arg(pier.dir.join("ca.pem"))
        .arg(pier.https_port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "echo: one\necho: two\n"
    );
}

/// Answers sent while the client is still uploading (the 413 past the body limit, the 403 of a private
/// service, the 404 of an unknown host) reach real clients: curl over HTTP/1.1 (with and without
/// `Expect: 100-continue`) and HTTP/2, and Python `requests`. Pier lingers on the unread body instead of
/// closing under it (RFC 9112 §9.6).
#[test]
fn early_answers_reach_clients_that_are_still_sending() {
    let pier = Pier::start(&["--max-request-body", "1048576"]);
    let public = pier.deploy_hello("public", &["--allow-unauthenticated"]);
    let private = pier.deploy_hello("private", &[]);
    let body = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(body.path(), vec![b'x'; 8 << 20]).unwrap();
    let data = format!("@{}", body.path().display());
    let unknown = public.replace("public-", "nosuchservice-");
    for (url, want) in [
        (format!("{public}/body"), "413"),
        (format!("{private}/body"), "403"),
        (format!("{unknown}/body"), "404"),
    ] {
        for (label, extra) in [
            ("h1", vec!["--http1.1"]),
            ("h1 without Expect", vec!["--http1.1", "-H", "Expect:"]),
            ("h2", vec!["--http2"]),
        ] {
            let mut args = extra.clone();
            args.extend([
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "--data-binary",
                &data,
                &url,
            ]);
            let out = pier.curl(&args);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                want,
                "{label} {url}: curl exit {:?}, {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "{label} {url}: curl exit {:?}",
                out.status.code()
            );
        }
        // Python requests, with names resolving as the README has users set them up.
        let script = r#"
import sys, requests
r = requests.post(sys.argv[1], data=open(sys.argv[2], "rb"), verify=sys.argv[3])
print(r.status_code)
"#;
        let out = with_myhostname("python3")
            .args(["-c", script, &url])
            .arg(body.path())
            .arg(pier.dir.join("ca.pem"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "requests {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What apps get slightly wrong is normalized, not turned into a broken stream: a 204 that claims a
/// Content-Length reaches HTTP/2 clients as a clean 204 (it used to reset the stream), as it always did
/// over HTTP/1.1; a 304 keeps its length, which RFC 9110 §8.6 allows.
#[test]
fn a_204_with_a_length_is_normalized() {
    let pier = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::write(
        app.path().join("odd.py"),
        r#"import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        code = int(self.path.split("=")[1])
        self.send_response(code)
        self.send_header("Content-Length", "11")
        self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
"#,
    )
    .unwrap();
    let out = pier.ok(&[
        "deploy",
        "odd",
        "--command",
        "exec python3 odd.py",
        "--workdir",
        app.path().to_str().unwrap(),
        "--allow-unauthenticated",
    ]);
    let url = service_url(&out);
    for version in ["--http1.1", "--http2"] {
        for code in ["204", "304"] {
            let out = pier.curl(&[
                version,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{url}/?c={code}"),
            ]);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                code,
                "{version} {code}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// An h2c app on Python's `h2`, which refuses a request whose `:authority` and `host` disagree (RFC 9113
/// §8.3.1), as Hypercorn does. It answers with the headers it received.
const STRICT_H2C_APP: &str = r#"
import json, os, socket, threading
import h2.config, h2.connection, h2.events, h2.exceptions

config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")

def serve(s):
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    s.sendall(conn.data_to_send())
    while True:
        data = s.recv(65535)
        if not data:
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            print("refused:", e, flush=True)
            s.sendall(conn.data_to_send())
            break
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                body = json.dumps(dict(ev.headers)).encode()
                conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/json"),
                                                 ("content-length", str(len(body)))])
                conn.send_data(ev.stream_id, body, end_stream=True)
        s.sendall(conn.data_to_send())
    s.close()

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(os.environ["PORT"])))
srv.listen(16)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// What the app receives about the original request: over h2c, `:authority` and `host` agree and keep
/// the port, and `Forwarded`'s `host=` is the Host as received (RFC 7239 §5.3), so frameworks build
/// links with the port.
#[test]
fn an_h2c_app_gets_agreeing_authority_and_the_port() {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import h2"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "Python's h2 is missing: run scripts/install-test-deps");
    let pier = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("app.py"), STRICT_H2C_APP).unwrap();
    let url = pier.deploy_url(&[
        "deploy",
        "strict",
        "--command",
        "exec python3 app.py",
        "--workdir",
        app.path().to_str().unwrap(),
        "--use-http2",
        "--allow-unauthenticated",
    ]);
    let authority = url.trim_start_matches("https://").to_owned();
    for version in ["--http1.1", "--http2"] {
        let out = pier.curl(&[version, "-sS", &url]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let seen: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{version}: {text}\n{}", pier.ok(&["logs", "strict"])));
        assert_eq!(seen[":authority"], authority.as_str(), "{version}: {seen}");
        if let Some(host) = seen["host"].as_str() {
            assert_eq!(host, authority, "{version}: {seen}");
        }
        let forwarded = seen["forwarded"].as_str().unwrap_or_default();
        assert!(
            forwarded.contains(&format!("host=\"{authority}\"")),
            "{version}: {forwarded}"
        );
    }
}
