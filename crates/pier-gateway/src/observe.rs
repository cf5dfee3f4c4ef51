//! What the gateway records of each request, at its one exit: the metrics of the revision that served
//! it (or of the service's route, when none did) and one line in the service's request log.
//!
//! Both are taken when the response's body ends (or is dropped), so latency runs from the request's
//! arrival to the last byte handed to the connection (Cloud Run's `request_latencies`), and the
//! response size is what was sent. Nothing here looks anything up per request: the handles were
//! resolved when routes were published ([`MetricsSubscriber`]) and pools made; a log line is a record
//! put on a bounded channel (`try_send`: a full channel drops the line and counts it, it never waits),
//! formatted and written by [`RequestLog`]'s own thread ([`crate::request_log`]).

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Version};
use hyper::body::{Body, Frame, SizeHint};
use pier_activator::{AcquireError, RevisionPool, Slot};
use pier_metrics::{Metrics, Rejection, RevisionMetrics};
use pier_trace::KeyValue;
use pier_trace::{Phase, RequestTrace};

use crate::body::GatewayBody;
use crate::error::ProxyError;
use crate::request_log::{RequestLog, RequestRecord, Texts};
use crate::routes::{Route, RouteTable};
use crate::upstream::BoxError;

/// What the gateway records, set at its construction (see [`crate::GatewayConfig`]).
#[derive(Clone, Default)]
pub struct Telemetry {
    /// Where metrics go.
    pub metrics: Option<Arc<Metrics>>,
    /// Where request log lines go.
    pub requests: Option<RequestLog>,
    /// Where request spans go.
    pub traces: Option<Arc<pier_trace::Tracing>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("metrics", &self.metrics.is_some())
            .field("requests", &self.requests.is_some())
            .field("traces", &self.traces.is_some())
            .finish()
    }
}

impl Telemetry {
    /// The request's trace, when traces are kept: its span starts now, under the caller's
    /// `traceparent` if it sends one.
    pub(crate) fn trace(
        &self,
        parts: &Parts,
        peer: IpAddr,
        proto: &'static str,
    ) -> Option<RequestTrace> {
        let tracing = self.traces.as_ref()?;
        // Attributes are made for sampled requests only.
        tracing.request(parts.headers.get(crate::headers::TRACEPARENT), || {
            let host = parts
                .uri
                .authority()
                .map(|a| a.host().to_owned())
                .or_else(|| {
                    parts
                        .headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_owned())
                })
                .unwrap_or_default();
            let version = match parts.version {
                Version::HTTP_2 => "2",
                Version::HTTP_10 => "1.0",
                _ => "1.1",
            };
            vec![
                KeyValue::new("http.request.method", parts.method.to_string()),
                KeyValue::new("url.path", parts.uri.path().to_owned()),
                KeyValue::new("url.scheme", proto),
                KeyValue::new("server.address", host),
                KeyValue::new("network.protocol.version", version),
                KeyValue::new("client.address", peer.to_string()),
            ]
        })
    }

    /// Starts recording a request, when anything is recorded.
    pub(crate) fn start(
        &self,
        parts: &Parts,
        peer: IpAddr,
        proto: &'static str,
        started: Instant,
    ) -> Option<Box<Exit>> {
        if self.metrics.is_none() && self.requests.is_none() && self.traces.is_none() {
            return None;
        }
        if parts.version == Version::HTTP_2
            && let Some(m) = &self.metrics
        {
            m.gateway().h2_stream();
        }
        let request_size = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let line = self.requests.as_ref().map(|log| {
            let header = |name| parts.headers.get(name).map(HeaderValue::as_bytes);
            let authority = match parts.uri.authority() {
                Some(a) => Some(a.as_str().as_bytes()),
                None => header(header::HOST),
            };
            Line {
                log: log.clone(),
                method: parts.method.clone(),
                scheme: proto,
                texts: Texts::new([
                    authority,
                    parts.uri.path_and_query().map(|p| p.as_str().as_bytes()),
                    header(header::USER_AGENT),
                    header(header::REFERER),
                    header(crate::headers::TRACEPARENT),
                ]),
                remote_ip: peer,
                version: parts.version,
            }
        });
        Some(Box::new(Exit {
            started,
            request_size,
            status: 0,
            rejection: None,
            seen: Seen::default(),
            line,
        }))
    }
}

/// What the request path learns of a request on its way (the route, the revision, the instance, the
/// trace context it forwarded, the cache's answer).
#[derive(Default)]
pub(crate) struct Seen {
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) pool: Option<Arc<RevisionPool>>,
    pub(crate) slot: Option<Arc<Slot>>,
    pub(crate) trace: Option<HeaderValue>,
    pub(crate) cache: Option<CacheSeen>,
    /// The request's span, when traces are kept.
    pub(crate) span: Option<RequestTrace>,
    /// The upstream exchange's span, ended with the response body.
    pub(crate) upstream: Option<Phase>,
}

/// What the edge cache did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheSeen {
    /// Asked, and it answered.
    Hit,
    /// Asked, and the backend answered.
    Miss,
}

struct Line {
    log: RequestLog,
    method: Method,
    /// The URL's parts, joined by the writer (no formatting on the request path).
    scheme: &'static str,
    texts: Texts,
    remote_ip: IpAddr,
    version: Version,
}

/// One request's record, finished when its response body ends.
pub(crate) struct Exit {
    started: Instant,
    request_size: u64,
    status: u16,
    rejection: Option<Rejection>,
    seen: Seen,
    line: Option<Line>,
}

impl Exit {
    /// The response's head is known: its status, what the path saw, and the error it answers, if any.
    pub(crate) fn head(&mut self, status: u16, seen: Seen, error: Option<&ProxyError>) {
        self.status = status;
        self.seen = seen;
        self.rejection = error.and_then(rejection);
    }

    /// The status actually sent, when the error's answer was rendered after [`Exit::head`].
    pub(crate) fn status(&mut self, status: u16) {
        self.status = status;
    }

    pub(crate) fn finish(mut self, sent: u64) {
        let elapsed = self.started.elapsed();
        if let Some(up) = self.seen.upstream.take() {
            up.set(vec![KeyValue::new(
                "http.response.status_code",
                i64::from(self.status),
            )]);
            up.end();
        }
        if let Some(span) = self.seen.span.take() {
            let mut attrs = vec![KeyValue::new("http.response.body.size", sent as i64)];
            if let Some(route) = &self.seen.route {
                attrs.push(KeyValue::new("pier.project", route.project.to_string()));
                attrs.push(KeyValue::new("pier.service", route.service.to_string()));
            }
            if let Some(pool) = &self.seen.pool {
                attrs.push(KeyValue::new("pier.revision", pool.revision().to_string()));
            }
            if let Some(slot) = &self.seen.slot {
                attrs.push(KeyValue::new("pier.instance", slot.id().to_string()));
            }
            span.end(self.status, attrs);
        }
        let metrics: Option<&Arc<RevisionMetrics>> = self
            .seen
            .pool
            .as_ref()
            .and_then(|p| p.metrics())
            .or_else(|| self.seen.route.as_ref().and_then(|r| r.metrics()));
        if let Some(m) = metrics {
            m.request(self.status, elapsed, self.request_size, sent);
            if let Some(r) = self.rejection {
                m.rejected(r);
            }
        }
        let (Some(line), Some(route)) = (self.line, &self.seen.route) else {
            return;
        };
        let record = RequestRecord {
            route: route.clone(),
            pool: self.seen.pool.take(),
            slot: self.seen.slot.take(),
            method: line.method,
            scheme: line.scheme,
            texts: line.texts,
            status: self.status,
            request_size: self.request_size,
            response_size: sent,
            remote_ip: line.remote_ip,
            latency: elapsed,
            version: line.version,
            trace: self.seen.trace,
            cache: self.seen.cache,
            ended: SystemTime::now(),
        };
        line.log.send(record);
    }
}

/// The metrics reason of a gateway error answered 429, 503 or 504.
fn rejection(e: &ProxyError) -> Option<Rejection> {
    Some(match e {
        ProxyError::Acquire(AcquireError::QueueFull) => Rejection::QueueFull,
        ProxyError::Acquire(AcquireError::NoCapacity { .. }) => Rejection::MaxInstances,
        ProxyError::Acquire(AcquireError::StartFailed(_)) => Rejection::StartFailed,
        ProxyError::Acquire(AcquireError::Timeout) => Rejection::PendingTimeout,
        ProxyError::Acquire(AcquireError::Closed) => Rejection::Closing,
        ProxyError::Unavailable(_) => Rejection::NoRevision,
        ProxyError::Timeout(_) => Rejection::RequestTimeout,
        _ => return None,
    })
}

/// A response body that finishes its request's record when it ends or is dropped, counting the bytes
/// it passes on.
pub struct ObservedBody {
    inner: GatewayBody,
    exit: Option<Box<Exit>>,
    sent: u64,
}

impl ObservedBody {
    pub(crate) fn new(inner: GatewayBody, exit: Option<Box<Exit>>) -> Self {
        Self {
            inner,
            exit,
            sent: 0,
        }
    }

    fn finish(&mut self) {
        if let Some(exit) = self.exit.take() {
            exit.finish(self.sent);
        }
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if this.exit.is_some()
                    && let Some(d) = frame.data_ref()
                {
                    this.sent += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves each published route's own metric handles (a [`crate::RouteSubscriber`]), and drops the
/// series of services no route serves any more.
pub struct MetricsSubscriber(pub Arc<Metrics>);

impl crate::RouteSubscriber for MetricsSubscriber {
    fn published(&self, table: &RouteTable) {
        let mut live = std::collections::HashSet::new();
        for route in table.routes() {
            route.set_metrics(|| {
                self.0
                    .revision(route.project.as_str(), route.service.as_str(), "")
            });
            live.insert((route.project.as_str(), route.service.as_str()));
        }
        self.0.retain(|l| {
            !l.revision.is_empty() || live.contains(&(l.project.as_str(), l.service.as_str()))
        });
    }

    fn served(&self, took: std::time::Duration, hosts: usize) {
        self.0.gateway().routes_published(took, hosts);
    }
}
