//! The data plane: terminates TLS, routes by host, and streams requests to revision instances.
//!
//! The gateway reads routes from an immutable [`routes::RouteTable`] snapshot the control plane publishes
//! through a [`publish::RoutePublisher`] (`arc-swap`: no lock on the request path), runs each route's
//! stages ([`stages`]: filters, responders, a backend), holds requests through cold starts via the activator, and maps
//! every failure to a response in one place ([`error`]). Listeners shut down gracefully: they stop
//! accepting, let in-flight requests finish, and close idle connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod auth;
pub mod body;
pub mod cache;
pub mod dispatch;
pub mod entrance;
pub mod error;
pub mod headers;
pub mod linger;
pub mod observe;
pub mod proxy;
pub mod publish;
pub mod request_log;
pub mod routes;
pub mod stages;
pub mod upstream;

pub use body::GatewayBody;
pub use dispatch::{BodyCheck, Destination, ExternalForward, ResponseHeaders, Target};
pub use entrance::DomainEntrance;
pub use error::{ErrorStyle, Refusal, Violation};
pub use proxy::Scheme;
pub use publish::{RoutePublisher, RouteReader, RouteSubscriber};
pub use routes::{Access, Backend, Route, RouteTable};
pub use stages::{AllowAll, Answer, Filter, Responder};

/// Cloud Run's limit on HTTP/1 request bodies.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 32 * 1024 * 1024;

/// Largest request head (request line and headers) accepted; larger ones get 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Gateway settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The HTTPS port clients use (for redirects); 443 is left out of URLs.
    pub public_https_port: u16,
    /// Largest request body accepted, in bytes.
    pub max_request_body: u64,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a client to send request headers.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// What is recorded of each request (metrics, the request log); nothing by default.
    pub telemetry: observe::Telemetry,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            public_https_port: 8443,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            telemetry: observe::Telemetry::default(),
        }
    }
}

/// A host served in-process (Pier's identity provider and admin API at the base domain).
pub trait LocalHandler: Send + Sync + 'static {
    /// Answers one request.
    fn call(
        &self,
        req: http::Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<GatewayBody>> + Send>>;
}

/// The gateway.
pub struct Gateway {
    config: GatewayConfig,
    routes: RouteReader,
    entrance: Option<Arc<dyn DomainEntrance>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.config)
            .field("hosts", &self.routes.load().len())
            .finish()
    }
}

impl Gateway {
    /// A gateway serving the routes `routes` reads. Admission is part of every route (see
    /// [`Route::new`]), so there is no gateway that forgot it.
    pub fn new(config: GatewayConfig, routes: RouteReader) -> Arc<Self> {
        Arc::new(Self {
            config,
            routes,
            entrance: None,
        })
    }

    /// A gateway that also serves mapped domains: ACME's HTTP-01 challenges answered on plain HTTP
    /// before anything else, and no redirect to a mapped domain before its certificate exists (see
    /// [`entrance`]).
    pub fn with_domains(
        config: GatewayConfig,
        routes: RouteReader,
        entrance: Arc<dyn DomainEntrance>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            routes,
            entrance: Some(entrance),
        })
    }

    /// The current routing table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.current()
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_read_timeout)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(true);
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_BYTES as u32)
            .max_concurrent_streams(1000);
        b
    }

    /// Serves HTTPS on `listener` until `shutdown` turns true, then drains.
    pub async fn serve_https(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: watch::Receiver<bool>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        self.serve(listener, Some(acceptor), Scheme::Https, None, shutdown)
            .await;
    }

    /// Serves a gateway entrance inside an instance's own network namespace (HTTPS when `tls` is given,
    /// else plain HTTP that redirects or, with `http_serve`, proxies, as outside): only that instance can
    /// connect, so its requests count as internal for ingress to services of its `project`. Runs until
    /// the task is aborted.
    pub async fn serve_internal(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        http_serve: bool,
        project: pier_model::ProjectName,
    ) {
        let (_keep, never) = watch::channel(false);
        let (acceptor, scheme) = match tls {
            Some(t) => (Some(tokio_rustls::TlsAcceptor::from(t)), Scheme::Https),
            None if http_serve => (None, Scheme::HttpServe),
            None => (None, Scheme::HttpRedirect),
        };
        self.serve(listener, acceptor, scheme, Some(project), never)
            .await;
    }

    /// Serves plain HTTP on `listener`: redirects to HTTPS, or proxies when `serve` is true.
    pub async fn serve_http(
        self: Arc<Self>,
        listener: TcpListener,
        serve: bool,
        shutdown: watch::Receiver<bool>,
    ) {
        let scheme = if serve {
            Scheme::HttpServe
        } else {
            Scheme::HttpRedirect
        };
        self.serve(listener, None, scheme, None, shutdown).await;
    }

    async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        scheme: Scheme,
        internal: Option<pier_model::ProjectName>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let graceful = GracefulShutdown::new();
        let builder = Arc::new(self.builder());
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break,
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = tls.clone();
            let internal = internal.clone();
            let handshake_timeout = self.config.handshake_timeout;
            let metrics = self.config.telemetry.metrics.clone();
            tokio::spawn(async move {
                let _open = metrics
                    .as_ref()
                    .map(|m| m.gateway().connection(tls.is_some(), internal.is_some()));
                let handshake = |how| {
                    if let Some(m) = &metrics {
                        m.gateway().handshake(how);
                    }
                };
                let fwd = headers::Forwarding::for_peer(peer, scheme.proto());
                if let Some(p) = internal {
                    let _ = fwd.internal.set(p);
                }
                let fwd = Arc::new(fwd);
                let service = hyper::service::service_fn(move |req| {
                    proxy::handle(gw.clone(), peer, scheme, fwd.clone(), req)
                });
                match tls {
                    Some(acceptor) => {
                        let tls_stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                // An ACME validator (TLS-ALPN-01) needs the handshake only.
                                Ok(Ok(s))
                                    if s.get_ref().1.alpn_protocol()
                                        == Some(pier_tls::ACME_TLS_ALPN) =>
                                {
                                    handshake(pier_metrics::Handshake::Ok);
                                    return;
                                }
                                Ok(Ok(s)) => {
                                    handshake(pier_metrics::Handshake::Ok);
                                    s
                                }
                                Ok(Err(e)) => {
                                    handshake(pier_metrics::Handshake::Failed);
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    handshake(pier_metrics::Handshake::TimedOut);
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                    None => {
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(self.config.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("gateway drain timed out; closing remaining connections");
        }
    }
}

#[cfg(test)]
mod tests;
