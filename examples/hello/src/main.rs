//! `pier-hello`: a tiny HTTP echo server that follows Cloud Run's container contract.
//!
//! It listens on `0.0.0.0:$PORT` (HTTP/1.1 and h2c), and answers every request with a JSON document of its
//! `K_SERVICE`, `K_REVISION`, `K_CONFIGURATION`, the request line and headers. A few paths help tests and
//! benchmarks look at the platform from the inside:
//!
//! | path | what it does |
//! | --- | --- |
//! | `/` (any other path) | the JSON echo |
//! | `/plain` | a fixed 13-byte `text/plain` body, for benchmarks |
//! | `/sleep?ms=N` | waits N ms, then echoes |
//! | `/stream?chunks=N&ms=M` | N chunks, M ms apart, streamed |
//! | `/body` | streams the request body back |
//! | `/status?code=N` | answers with status N |
//! | `/env?name=VAR` | the value of one environment variable |
//! | `/crash` | exits the process at once, mid-request |
//! | `/probe` | a JSON report of its own sandbox (see `probe.rs`) |
//! | `/fetch?addr=HOST:PORT` | a plain HTTP/1.0 `GET /` to that address (names resolve as the app's would); the answer's first line, or why it failed |

#![allow(clippy::print_stderr)] // the instance's log is its standard error

mod probe;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never: Infallible| match never {})
                .boxed(),
        )
        .expect("static response parts are valid")
}

fn query_param<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

fn echo(req: &Request<Incoming>) -> Response<Body> {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "greeting": env("GREETING"),
        "service": env("K_SERVICE"),
        "revision": env("K_REVISION"),
        "configuration": env("K_CONFIGURATION"),
        "port": env("PORT"),
        "pid": std::process::id(),
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    full(StatusCode::OK, "application/json", doc.to_string())
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let resp = match req.uri().path() {
        "/plain" => full(StatusCode::OK, "text/plain", "Hello, world\n"),
        "/sleep" => {
            let ms = query_param(&req, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            echo(&req)
        }
        "/stream" => {
            let chunks: u32 = query_param(&req, "chunks")
                .and_then(|v| v.parse().ok())
                .unwrap_or(5);
            let ms: u64 = query_param(&req, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                for i in 0..chunks {
                    if tx.send(Bytes::from(format!("chunk {i}\n"))).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            });
            Response::builder()
                .header("content-type", "text/plain")
                .body(ChannelBody(rx).boxed())
                .expect("static response parts are valid")
        }
        "/body" => Response::builder()
            .header("content-type", "application/octet-stream")
            .body(req.into_body().boxed())
            .expect("static response parts are valid"),
        "/status" => {
            let code = query_param(&req, "code")
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            full(code, "text/plain", format!("status {}\n", code.as_u16()))
        }
        "/env" => {
            let name = query_param(&req, "name").unwrap_or("");
            full(
                StatusCode::OK,
                "text/plain",
                std::env::var(name).unwrap_or_default(),
            )
        }
        "/crash" => std::process::exit(3),
        "/fetch" => {
            let addr = query_param(&req, "addr").unwrap_or("").to_owned();
            match fetch(&addr).await {
                Ok(line) => full(StatusCode::OK, "text/plain", line),
                Err(e) => full(StatusCode::BAD_GATEWAY, "text/plain", format!("error: {e}")),
            }
        }
        "/probe" => full(
            StatusCode::OK,
            "application/json",
            probe::report().to_string(),
        ),
        _ => echo(&req),
    };
    Ok(resp)
}

/// `GET /` over HTTP/1.0 to `addr`, with 3 s to answer: the status line.
async fn fetch(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        // Up to the end of the status line, not to EOF: under gVisor's host networking (Debian 12's
        // runsc) an edge-triggered reader sometimes never hears the peer's close.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        Ok(text.lines().next().unwrap_or("").to_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))
        })
}

/// A response body fed chunk by chunk from a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("pier-hello listening on {addr}");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                _ = term.recv() => {
                    eprintln!("pier-hello: SIGTERM, exiting");
                    return Ok(());
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handle);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
