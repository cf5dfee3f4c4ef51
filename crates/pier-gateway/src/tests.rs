//! Gateway tests over real TLS and real HTTP (reqwest, hyper and raw sockets as clients).
//!
//! Instances come from `AppRuntime`, a test double whose instances are hyper servers inside this process
//! (real loopback sockets), so the proxy is exercised for real without building the example binary; the
//! full stack with the process runtime is tested end to end in the `pier` crate.

use super::*;
use async_trait::async_trait;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use pier_activator::{Activator, ActivatorConfig, RevisionPool};
use pier_model::{ProjectName, RevisionTemplate};
use pier_runtime::{Endpoint, Instance, InstanceSpec, Runtime, RuntimeError};
use std::convert::Infallible;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

type AppBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

fn full(s: impl Into<Bytes>) -> AppBody {
    Full::new(s.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// What the test app saw, for assertions.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(http::Version, http::HeaderMap)>>,
    release: Mutex<Option<mpsc::Sender<()>>>,
    gate: Mutex<Option<mpsc::Receiver<()>>>,
}

async fn app(seen: Arc<Seen>, req: Request<Incoming>) -> Result<Response<AppBody>, Infallible> {
    seen.requests
        .lock()
        .unwrap()
        .push((req.version(), req.headers().clone()));
    let path = req.uri().path().to_owned();
    Ok(match path.as_str() {
        "/sleep" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(full("slept"))
        }
        "/gated-stream" => {
            // First chunk at once, the rest only when the test says so.
            let mut gate = seen.gate.lock().unwrap().take().unwrap();
            let (tx, rx) =
                mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(4);
            tokio::spawn(async move {
                tx.send(Ok(Frame::data(Bytes::from("first;"))))
                    .await
                    .unwrap();
                gate.recv().await;
                tx.send(Ok(Frame::data(Bytes::from("second"))))
                    .await
                    .unwrap();
            });
            Response::new(StreamBody::new(ReceiverStream(rx)).boxed())
        }
        "/echo-body" => {
            // Echo the request body frame by frame as it arrives.
            let body = req
                .into_body()
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
            Response::new(body.boxed())
        }
        "/die" => {
            // Headers promise a body that never comes: the connection is dropped mid-response.
            let (tx, rx) =
                mpsc::channel::<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>>(1);
            tokio::spawn(async move {
                tx.send(Err("instance crashed".into())).await.ok();
            });
            let mut r = Response::new(StreamBody::new(ReceiverStream(rx)).boxed());
            r.headers_mut()
                .insert("content-length", HeaderValue::from_static("100"));
            r
        }
        "/upgrade" => {
            let on = hyper::upgrade::on(req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", HeaderValue::from_static("echo"));
            r.headers_mut()
                .insert("connection", HeaderValue::from_static("upgrade"));
            r
        }
        _ => {
            let mut r = Response::new(full(format!("hello {:?}", req.version())));
            r.headers_mut()
                .insert("keep-alive", HeaderValue::from_static("timeout=5"));
            r.headers_mut()
                .insert("x-app", HeaderValue::from_static("yes"));
            r
        }
    })
}

use http::HeaderValue;

struct ReceiverStream<T>(mpsc::Receiver<T>);
impl<T> futures_util::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

struct AppRuntime {
    seen: Arc<Seen>,
}

#[async_trait]
impl Runtime for AppRuntime {
    fn name(&self) -> &'static str {
        "in-process-test-double"
    }
    async fn start(&self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::Tcp(l.local_addr().unwrap());
        let seen = self.seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r| app(seen.clone(), r));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Ok(pier_runtime::double::TaskInstance::new(
            spec.id, endpoint, task,
        ))
    }
    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError> {
        Ok(0)
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    https: SocketAddr,
    http: SocketAddr,
    ca_pem: String,
    seen: Arc<Seen>,
    _shutdown: watch::Sender<bool>,
    _activator: Arc<Activator>,
}

const HOST: &str = "hello-abc123.pier.localhost";

async fn harness(template: RevisionTemplate, config: GatewayConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ca = pier_tls::LocalCa::load_or_create(dir.path(), "test CA").unwrap();
    let resolver = Arc::new(pier_tls::SniResolver::default());
    let _dc = pier_tls::DomainCert::install(
        "pier.localhost",
        pier_tls::CertSource::LocalCa,
        &dir.path().join("tls"),
        &ca,
        resolver.clone(),
    )
    .unwrap();
    let tls = Arc::new(pier_tls::server_config(resolver).unwrap());
    let seen = Arc::new(Seen::default());
    let activator = Activator::new(
        ActivatorConfig::default(),
        Arc::new(Arc::new(AppRuntime { seen: seen.clone() })),
    );
    let pool: Arc<RevisionPool> = activator
        .ensure_pool(
            &ProjectName::default(),
            &"hello".parse().unwrap(),
            &"hello-00001-abc".parse().unwrap(),
            Arc::new(template),
            pier_runtime::Isolation::default(),
            true,
        )
        .unwrap();
    let (publisher, reader) = crate::publish::channel(Vec::new());
    let gw = Gateway::new(config, reader);
    let mut table = RouteTable::new();
    let service: pier_model::ServiceName = "hello".parse().unwrap();
    let route = Route::new(
        ProjectName::default(),
        service.clone(),
        None,
        Arc::new(Access::public()),
        Arc::new(crate::AllowAll),
        crate::Backend::split(&service, vec![(pool, 100)]),
    );
    table.insert(HOST.into(), Arc::new(stages(route)));
    publisher.publish(table, std::time::Instant::now());
    let (tx, rx) = watch::channel(false);
    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (https, http) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    tokio::spawn(gw.clone().serve_https(l1, tls, rx.clone()));
    tokio::spawn(gw.clone().serve_http(l2, false, rx));
    Harness {
        ca_pem: ca.cert_pem().unwrap(),
        _dir: dir,
        https,
        http,
        seen,
        _shutdown: tx,
        _activator: activator,
    }
}

fn template() -> RevisionTemplate {
    RevisionTemplate {
        command: vec!["x".into()],
        timeout_seconds: 1,
        ..Default::default()
    }
}

impl Harness {
    fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()])
            .resolve(HOST, self.https)
            .resolve("nobody-abc123.pier.localhost", self.https)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }
    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.https.port())
    }
    fn last_headers(&self) -> http::HeaderMap {
        self.seen.requests.lock().unwrap().last().unwrap().1.clone()
    }
}

#[tokio::test]
async fn proxies_with_forwarding_headers_and_without_hop_headers() {
    let h = harness(template(), GatewayConfig::default()).await;
    let resp = h
        .client()
        .get(h.url("/x?y=1"))
        .header("connection", "x-private-hop")
        .header("x-private-hop", "secret")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-app"], "yes");
    assert!(
        resp.headers().get("keep-alive").is_none(),
        "hop headers stripped from responses"
    );
    let seen = h.last_headers();
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert!(seen["forwarded"].to_str().unwrap().contains("proto=https"));
    assert!(seen["host"].to_str().unwrap().starts_with(HOST));
    assert!(headers::valid_traceparent(seen["traceparent"].as_bytes()));
    assert!(seen.get("x-private-hop").is_none());
}

#[tokio::test]
async fn unknown_hosts_get_404_and_http_redirects() {
    let h = harness(template(), GatewayConfig::default()).await;
    let resp = h
        .client()
        .get(format!(
            "https://nobody-abc123.pier.localhost:{}/",
            h.https.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("no service"));

    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, h.http)
        .build()
        .unwrap()
        .get(format!("http://{HOST}:{}/a?b=c", h.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        format!("https://{HOST}:8443/a?b=c").as_str()
    );
}

#[tokio::test]
async fn http2_clients_are_served_over_http1_to_the_instance() {
    let h = harness(template(), GatewayConfig::default()).await;
    let resp = h.client().get(h.url("/")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.unwrap(), "hello HTTP/1.1");
    let (version, _) = h.seen.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(version, http::Version::HTTP_11);
}

#[tokio::test]
async fn h2c_end_to_end_when_the_revision_asks() {
    let h = harness(
        RevisionTemplate {
            http2: true,
            ..template()
        },
        GatewayConfig::default(),
    )
    .await;
    let body = h
        .client()
        .get(h.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello HTTP/2.0");
}

#[tokio::test]
async fn responses_stream_without_buffering() {
    let h = harness(
        RevisionTemplate {
            timeout_seconds: 30,
            ..template()
        },
        GatewayConfig::default(),
    )
    .await;
    let (tx, rx) = mpsc::channel(1);
    *h.seen.gate.lock().unwrap() = Some(rx);
    *h.seen.release.lock().unwrap() = Some(tx.clone());
    let mut resp = h.client().get(h.url("/gated-stream")).send().await.unwrap();
    // The first chunk arrives while the instance is still holding back the rest.
    let first = resp.chunk().await.unwrap().unwrap();
    assert_eq!(first, "first;");
    tx.send(()).await.unwrap();
    let second = resp.chunk().await.unwrap().unwrap();
    assert_eq!(second, "second");
}

#[tokio::test]
async fn request_bodies_stream_both_ways() {
    let h = harness(
        RevisionTemplate {
            timeout_seconds: 30,
            ..template()
        },
        GatewayConfig::default(),
    )
    .await;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(ReceiverStream(rx));
    let client = h.client();
    let url = h.url("/echo-body");
    let pending = tokio::spawn(async move { client.post(url).body(body).send().await });
    tx.send(Ok(Bytes::from("ping-1"))).await.unwrap();
    let mut resp = pending.await.unwrap().unwrap();
    // The echo of the first chunk comes back before the second is sent.
    assert_eq!(resp.chunk().await.unwrap().unwrap(), "ping-1");
    tx.send(Ok(Bytes::from("ping-2"))).await.unwrap();
    assert_eq!(resp.chunk().await.unwrap().unwrap(), "ping-2");
    drop(tx);
    let rest = resp.bytes().await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn slow_instances_give_504_and_broken_ones_502() {
    let h = harness(template(), GatewayConfig::default()).await;
    let c = h.client();
    let resp = c.get(h.url("/sleep")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(resp.text().await.unwrap().contains("request timeout (1s)"));
    let resp = c.get(h.url("/die")).send().await;
    // Headers may already be on their way when the instance dies: the client sees a 502 or a cut body.
    match resp {
        Ok(r) if r.status() == 200 => assert!(r.bytes().await.is_err()),
        Ok(r) => assert_eq!(r.status(), 502),
        Err(_) => {}
    }
    // The gateway keeps serving.
    assert_eq!(c.get(h.url("/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let h = harness(
        template(),
        GatewayConfig {
            max_request_body: 1024,
            ..GatewayConfig::default()
        },
    )
    .await;
    let c = h.client();
    let resp = c
        .post(h.url("/echo-body"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    // Without a length up front (chunked), the stream is cut at the limit.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        for _ in 0..8 {
            if tx.send(Ok(Bytes::from(vec![b'y'; 512]))).await.is_err() {
                break;
            }
        }
    });
    let r = c
        .post(h.url("/echo-body"))
        .body(reqwest::Body::wrap_stream(ReceiverStream(rx)))
        .send()
        .await;
    match r {
        Ok(r) if r.status() == 413 => {}
        Ok(r) => {
            let got = r.bytes().await.map(|b| b.len()).unwrap_or(0);
            assert!(got <= 1024, "no more than the limit reaches the app: {got}");
        }
        Err(_) => {}
    }
    assert_eq!(c.get(h.url("/")).send().await.unwrap().status(), 200);
}

async fn tls_stream(h: &Harness) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(h.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    use rustls::pki_types::pem::PemObject;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(h.https).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(HOST.try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// A WebSocket upgrade becomes a tunnel (the only upgrade Pier forwards, as Cloud Run: `h2c` and
/// other protocols are not switched to behind the guard's back).
#[tokio::test]
async fn upgrades_become_tunnels() {
    let h = harness(
        RevisionTemplate {
            timeout_seconds: 30,
            ..template()
        },
        GatewayConfig::default(),
    )
    .await;
    let mut s = tls_stream(&h).await;
    s.write_all(
        format!(
            "GET /upgrade HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    for msg in ["hello tunnel", "second message"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
    }
}

#[tokio::test]
async fn garbage_and_huge_headers_do_not_hurt_the_gateway() {
    let h = harness(template(), GatewayConfig::default()).await;
    // Not TLS at all.
    let mut raw = tokio::net::TcpStream::connect(h.https).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(n == 0 || buf[0] == 0x15, "closed or a TLS alert");
    // Oversized headers.
    let mut s = tls_stream(&h).await;
    let big = "a".repeat(1024 * 1024);
    let _ = s
        .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    // Still serving.
    assert_eq!(
        h.client().get(h.url("/")).send().await.unwrap().status(),
        200
    );
}

/// A filter for the stage tests: refuses requests carrying `x-test-refuse`, marks every response.
struct MarkingFilter;

impl crate::Filter for MarkingFilter {
    fn name(&self) -> &'static str {
        "test-marking"
    }
    fn on_request(
        &self,
        route: &Route,
        _: &headers::Forwarding,
        req: &mut http::request::Parts,
    ) -> Result<(), crate::error::Refusal> {
        if req.headers.contains_key("x-test-refuse") {
            return Err(crate::error::Refusal::new(
                http::StatusCode::FORBIDDEN,
                format!("Forbidden: refused by a filter of {}", route.service),
            ));
        }
        req.headers
            .insert("x-filtered-request", http::HeaderValue::from_static("yes"));
        Ok(())
    }
    fn on_response(&self, _: &Route, resp: &mut http::response::Parts) {
        resp.headers
            .insert("x-filtered", http::HeaderValue::from_static("yes"));
    }
}

/// A responder for the stage tests: answers `/answered-early` itself.
struct EarlyResponder;

impl crate::Responder for EarlyResponder {
    fn name(&self) -> &'static str {
        "test-early"
    }
    fn respond(&self, _: &Route, req: &http::request::Parts) -> Option<crate::stages::Answer> {
        (req.uri.path() == "/answered-early").then(|| {
            Box::pin(async { crate::error::plain(http::StatusCode::OK, "early\n".into()) })
                as crate::stages::Answer
        })
    }
}

/// Every harness route carries the test stages after its admission filter.
fn stages(route: Route) -> Route {
    route
        .with_filter(Arc::new(MarkingFilter))
        .with_responder(Arc::new(EarlyResponder))
}

#[tokio::test]
async fn a_routes_filters_and_responders_run_in_order() {
    let h = harness(template(), GatewayConfig::default()).await;
    let client = h.client();
    // Forwarded: the filter rewrote the request and marks the response.
    let resp = client.get(h.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-filtered"], "yes");
    assert_eq!(h.last_headers()["x-filtered-request"], "yes");
    let forwarded = h.seen.requests.lock().unwrap().len();

    // Answered by the responder: the app never sees it, the filter still marks it.
    let resp = client.get(h.url("/answered-early")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-filtered"], "yes");
    assert_eq!(resp.text().await.unwrap(), "early\n");
    assert_eq!(h.seen.requests.lock().unwrap().len(), forwarded);

    // Refused by the filter, before any responder: rendered as plain text, or as a gRPC status.
    let resp = client
        .get(h.url("/answered-early"))
        .header("x-test-refuse", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Error answers pass back through the route's filters too (a CORS filter must see them).
    assert_eq!(resp.headers()["x-filtered"], "yes");
    assert_eq!(
        resp.text().await.unwrap(),
        "Forbidden: refused by a filter of hello\n"
    );
    let resp = client
        .post(h.url("/pkg.Svc/Call"))
        .header("x-test-refuse", "1")
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "7");
    assert_eq!(h.seen.requests.lock().unwrap().len(), forwarded);

    // A failure of the instance (past the revision's timeout) is marked as well.
    let resp = client.get(h.url("/sleep")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-filtered"], "yes");
}
