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
    std::fs::write(
        &server,
        r#"
import asyncio, os, websockets
async def echo(ws):
    async for msg in ws:
        await ws.send("echo: " + msg)
async def main():
    async with websockets.serve(echo, "0.0.0.0", int(os.environ["PORT"])):
        await asyncio.Future()
asyncio.run(main())
"#,
    )
    .unwrap();
    let out = pier.ok(&[
        "deploy",
        "ws",
        "--command",
        &format!("exec python3 {}", server.display()),
        "--allow-unauthenticated",
    ]);
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("Service URL: "))
        .unwrap();
    let wss = url.replace("https://", "wss://");
    let client = pier.dir.join("ws_client.py");
    std::fs::write(
        &client,
        r#"
import asyncio, ssl, sys, websockets
async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    # glibc does not resolve *.localhost: connect to loopback, keep the URL's host for SNI and Host.
    async with websockets.connect(sys.argv[1], ssl=ctx, host="127.0.0.1", port=int(sys.argv[3])) as ws:
        for m in ["one", "two"]:
            await ws.send(m)
            print(await ws.recv())
asyncio.run(main())
"#,
    )
    .unwrap();
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
