//! The request path, phase by phase:
//!
//! ```text
//! route by host ─▶ filters (admission first: ingress, authentication, authorization) ─▶ responders
//!   (may answer) ─▶ backend: pick revision by weight ─▶ acquire a slot (waits for a cold start)
//!   ─▶ rewrite headers ─▶ forward ─▶ filters on the response head, in reverse ─▶ stream it back
//! ```
//!
//! Every failure and refusal leaves through one exit, [`handle`], which logs it, renders it
//! (`error.rs`) and, once the route is known, passes the answer back through the route's filters.
//!
//! Bodies stream both ways; nothing buffers a whole body. A WebSocket (or any HTTP/1.1 upgrade) becomes a
//! byte tunnel that holds its slot until either side closes or the request timeout passes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pier_activator::Lease;
use pier_model::hosts::normalize_host;

use crate::Gateway;
use crate::body::{GatewayBody, ProxyBody};
use crate::dispatch::ResponseHeaders;
use crate::error::{ProxyError, plain};
use crate::headers::{
    Forwarding, connection_names_protected, ensure_traceparent, is_upgrade, strip_hop_by_hop,
};
use crate::observe::{CacheSeen, ObservedBody, Seen};
use crate::routes::Route;
use crate::upstream::{BodyTooLarge, Conns, RequestBody, Sender};

/// How a listener treats requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// TLS: proxy.
    Https,
    /// Plain HTTP that proxies (when configured to serve).
    HttpServe,
    /// Plain HTTP that redirects to HTTPS.
    HttpRedirect,
}

impl Scheme {
    pub(crate) fn proto(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::HttpServe | Scheme::HttpRedirect => "http",
        }
    }
}

/// Serves one request; never fails (errors become responses).
pub async fn handle(
    gw: Arc<Gateway>,
    peer: SocketAddr,
    scheme: Scheme,
    fwd: Arc<Forwarding>,
    req: Request<Incoming>,
) -> Result<Response<ObservedBody>, Infallible> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let exit = gw
        .config
        .telemetry
        .start(&parts, peer.ip(), scheme.proto(), started);
    let request_span = gw.config.telemetry.trace(&parts, peer.ip(), scheme.proto());
    let mut body = Some(body);
    let grpc = crate::error::is_grpc(&parts.headers);
    let logged = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| (parts.method.clone(), parts.uri.path().to_owned()));
    // One span per request; with tracing at info (the default) it is a disabled no-op.
    let span = tracing::debug_span!("request", method = %parts.method, path = parts.uri.path());
    // The route, once known: error answers pass back through its filters too, with the headers its
    // filters asked for (an allowed origin's CORS headers).
    let mut routed = Routed::default();
    routed.seen.span = request_span;
    // Held by the route's record until the answer is known: a client that goes away before (this
    // future dropped) is still counted (see `Routed`'s `Drop`).
    routed.exit = exit;
    let plain_answer = match scheme {
        Scheme::Https => None,
        Scheme::HttpServe | Scheme::HttpRedirect => plain_http(&gw, &parts, scheme),
    };
    let result = if let Some(answer) = plain_answer {
        answer
    } else {
        tracing::Instrument::instrument(
            proxy(&gw, peer, &fwd, parts, &mut body, &mut routed, 0),
            span,
        )
        .await
    };
    let mut exit = routed.exit.take();
    let mut error_seen = None;
    let resp = match result {
        Ok(mut r) => {
            // Answered without reading the body (a responder's answer): the client may still be sending.
            if let Some(b) = body.take() {
                r.body_mut().hold(b);
            }
            r
        }
        Err(e) => {
            if let Some((method, path)) = &logged {
                let (status, _) = e.status_and_message();
                tracing::debug!(%method, %path, status = status.as_u16(), origin = ?e.origin(), retry_safe = e.retry_safe(), cause = ?std::error::Error::source(&e), error = %e, "request failed");
            }
            // A refusal answers at once and holds the unread body (reading it would tell an
            // `Expect: 100-continue` client to send what it is refused for); other failures read a small
            // unread body to its end first, so the client sees a clean answer rather than a reset
            // stream, and leave a large one unread, dropped after the response.
            let refused = matches!(e, ProxyError::Refused(_));
            if let Some(exit) = &mut exit {
                exit.head(0, std::mem::take(&mut routed.seen), Some(&e));
                error_seen = Some(());
            }
            let json = routed
                .route
                .as_ref()
                .is_some_and(|r| r.errors == crate::error::ErrorStyle::Json);
            let resp = if grpc {
                e.into_grpc_response()
            } else if json {
                e.into_json_response()
            } else {
                e.into_response()
            };
            let (mut head, mut out) = resp.into_parts();
            for (name, value) in routed.headers.take().map(|e| e.0).unwrap_or_default() {
                head.headers.insert(name, value);
            }
            if let Some(route) = &routed.route {
                route.on_response(&mut head);
            }
            if let Some(mut b) = body.take() {
                if !refused && !hyper::body::Body::is_end_stream(&b) {
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, discard(&mut b, DRAIN_LIMIT)).await;
                }
                out.hold(b);
            }
            Response::from_parts(head, out)
        }
    };
    if let Some((method, path)) = &logged {
        tracing::debug!(%method, %path, status = resp.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    }
    let (head, body) = resp.into_parts();
    if let Some(exit) = &mut exit {
        if error_seen.is_none() {
            exit.head(head.status.as_u16(), std::mem::take(&mut routed.seen), None);
        } else {
            exit.status(head.status.as_u16());
        }
    }
    Ok(Response::from_parts(head, ObservedBody::new(body, exit)))
}

/// Most bytes of an unread request body read and thrown away before an error answer.
const DRAIN_LIMIT: usize = 256 * 1024;
/// Longest wait for that.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

async fn discard(body: &mut Incoming, limit: usize) {
    use http_body_util::BodyExt;
    let mut seen = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            seen += d.len();
            if seen > limit {
                return;
            }
        }
    }
}

fn request_host(req: &Parts) -> Option<&str> {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(header::HOST)?.to_str().ok())
}

/// What plain HTTP answers itself (see [`crate::entrance`]), with the host normalized and the table
/// read once: a pending ACME HTTP-01 challenge first; then, for a mapped domain, 503 until its
/// certificate exists and the redirect after (with `--http-serve` too: a mapped domain is never served
/// in clear); for other hosts the redirect, or `None` to proxy them when the listener serves.
fn plain_http(
    gw: &Gateway,
    req: &Parts,
    scheme: Scheme,
) -> Option<Result<Response<GatewayBody>, ProxyError>> {
    let Some(host) = request_host(req).and_then(normalize_host) else {
        return (scheme == Scheme::HttpRedirect).then_some(Err(ProxyError::BadHost));
    };
    if let Some(entrance) = &gw.entrance {
        if let Some(token) = req
            .uri
            .path()
            .strip_prefix(crate::entrance::ACME_CHALLENGE_PREFIX)
            && let Some(key_authorization) = entrance.http01(host.as_ref(), token)
        {
            let mut resp = plain(StatusCode::OK, key_authorization);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            return Some(Ok(resp));
        }
        let table = gw.routes.load();
        match table.get(host.as_ref()) {
            Some(route) if route.mapped_domain && !entrance.certified(host.as_ref()) => {
                return Some(Err(ProxyError::CertificatePending(host.to_string())));
            }
            Some(route) if route.mapped_domain => {}
            _ if scheme == Scheme::HttpServe => return None,
            Some(_) => {}
            // A name Pier serves nowhere: no redirect to a handshake that would fail. Names under the
            // base domain redirect (HTTPS says whether a service is there).
            None if !table.under_local(host.as_ref()) => {
                return Some(Err(ProxyError::UnknownHost));
            }
            None => {}
        }
    } else if scheme == Scheme::HttpServe {
        return None;
    }
    Some(redirect(gw, &host, req))
}

/// 302 to the same host and target over HTTPS.
fn redirect(gw: &Gateway, host: &str, req: &Parts) -> Result<Response<GatewayBody>, ProxyError> {
    let port = gw.config.public_https_port;
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut resp = plain(StatusCode::FOUND, format!("Moved: {location}\n"));
    resp.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|_| ProxyError::BadHost)?,
    );
    Ok(resp)
}

fn is_body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTooLarge>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// What is known of a request's route once it is routed: the route (error answers pass back through
/// its filters too) and the headers its filters asked for on the answer (an allowed origin's CORS
/// headers), which a failed dispatch's answer carries as well.
#[derive(Default)]
pub(crate) struct Routed {
    pub(crate) route: Option<Arc<Route>>,
    pub(crate) headers: Option<ResponseHeaders>,
    /// What the request's record needs (see [`crate::observe`]).
    pub(crate) seen: Seen,
    /// The request's record while no answer exists yet.
    pub(crate) exit: Option<Box<crate::observe::Exit>>,
}

impl Drop for Routed {
    /// The client went away before its answer (the request's future was dropped while it waited for
    /// an instance or the app): recorded as 499, nginx's "client closed request", with what was
    /// learnt of it so far.
    fn drop(&mut self) {
        if let Some(mut exit) = self.exit.take() {
            exit.head(CLIENT_CLOSED, std::mem::take(&mut self.seen), None);
            exit.finish(0);
        }
    }
}

/// The status a request's record gets when its client left before the answer.
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// Routes and forwards one request. `hop` is 0 for a client's request and 1 for one an API route
/// dispatched to another of Pier's hosts (see [`crate::dispatch`]).
pub(crate) async fn proxy(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    fwd: &Forwarding,
    mut parts: Parts,
    body: &mut Option<Incoming>,
    routed: &mut Routed,
    hop: u8,
) -> Result<Response<GatewayBody>, ProxyError> {
    // Route by host. The Host value is cloned (a reference count, not a copy) so the request head stays
    // free to change. Pier's own hosts are answered in-process.
    let host_value: HeaderValue = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).map_err(|_| ProxyError::BadHost)?,
        None => parts
            .headers
            .get(header::HOST)
            .cloned()
            .ok_or(ProxyError::BadHost)?,
    };
    let host = host_value
        .to_str()
        .ok()
        .and_then(normalize_host)
        .ok_or(ProxyError::BadHost)?;
    // One host per request (RFC 9112 §3.2: more than one Host line is a 400). Over HTTP/1.1 an
    // absolute-form target's authority replaces the Host line (§3.2.2); over HTTP/2 a `host` that names
    // another entity than `:authority` is malformed (RFC 9113 §8.3.1).
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    if let (Some(_), Some(_)) = (hosts.next(), hosts.next()) {
        return Err(ProxyError::BadRequest(
            "the request has more than one Host header".into(),
        ));
    }
    if parts.version == Version::HTTP_2
        && parts.uri.authority().is_some()
        && let Some(h) = parts.headers.get(header::HOST)
        && h.to_str().ok().and_then(normalize_host).as_deref() != Some(host.as_ref())
    {
        return Err(ProxyError::BadRequest(
            "the Host header names another host than the request target".into(),
        ));
    }
    let table = gw.routes.load();
    let found: Arc<Route> = match table.get(host.as_ref()) {
        Some(r) => r.clone(),
        None => {
            let local = table
                .local(host.as_ref())
                .cloned()
                .ok_or(ProxyError::UnknownHost)?;
            drop(table);
            let body = body.take().ok_or(ProxyError::BadHost)?;
            return Ok(local.call(Request::from_parts(parts, body), peer).await);
        }
    };
    drop(table);
    routed.seen.route = Some(found.clone());
    let route: &Route = routed.route.insert(found);

    // Connection-level headers go before anyone reads the request: what the guard checks is what the
    // app receives. A `Connection` that names a header Pier relies on is refused.
    if let Some(name) = connection_names_protected(&parts.headers) {
        return Err(ProxyError::BadRequest(format!(
            "the Connection header names {name}, which a proxy may not drop"
        )));
    }
    if let Some(why) = crate::headers::ambiguous_credentials(&parts.headers) {
        return Err(ProxyError::BadRequest(why));
    }
    let client_version = parts.version;
    let grpc = crate::error::is_grpc(&parts.headers);
    let upgrade = client_version == Version::HTTP_11 && is_upgrade(&parts.headers);
    strip_hop_by_hop(&mut parts.headers, upgrade);

    // Filters, admission first (ingress, authentication and authorization), then the route's own.
    let guard = routed
        .seen
        .span
        .as_ref()
        .map(|t| t.phase("guard", pier_trace::Kind::Internal));
    for filter in route.filters() {
        if let Err(refusal) = filter.on_request(route, fwd, &mut parts) {
            if let Some(g) = guard {
                g.fail(format!("refused by {}", filter.name()));
                g.end();
            }
            return Err(ProxyError::Refused(refusal));
        }
    }
    if let Some(g) = guard {
        g.end();
    }

    // Responders may answer without a backend; their answer passes back through the filters.
    for responder in route.responders() {
        if let Some(answer) = responder.respond(route, &parts) {
            let (mut head, body) = answer.await.into_parts();
            route.on_response(&mut head);
            return Ok(Response::from_parts(head, body));
        }
    }

    // The shared cache, after the guard and before the backend: a hit never wakes an instance.
    let cache = route.cache().cloned();
    let ticket = match &cache {
        None => None,
        Some(cache) => match cache.lookup(&parts) {
            crate::cache::Lookup::Hit(resp) => {
                routed.seen.cache = Some(CacheSeen::Hit);
                return Ok(*resp);
            }
            crate::cache::Lookup::Bypass => None,
            crate::cache::Lookup::Miss(t) => Some(t),
            crate::cache::Lookup::Wait(wait) => {
                wait.await;
                match cache.lookup(&parts) {
                    crate::cache::Lookup::Hit(resp) => {
                        routed.seen.cache = Some(CacheSeen::Hit);
                        return Ok(*resp);
                    }
                    crate::cache::Lookup::Miss(t) => Some(t),
                    _ => None,
                }
            }
        },
    };
    if ticket.is_some() {
        routed.seen.cache = Some(CacheSeen::Miss);
    }
    let result = backend(
        gw,
        peer,
        fwd,
        route,
        parts,
        body,
        &mut routed.headers,
        &mut routed.seen,
        hop,
        host_value,
        upgrade,
        grpc,
        client_version,
    )
    .await;
    let Some(cache) = cache else {
        return result;
    };
    match (ticket, result) {
        (Some(t), Ok(resp)) => Ok(cache.offer(t, resp)),
        (Some(t), Err(e)) => cache.on_error(t).ok_or(e),
        (None, Ok(mut resp)) => {
            cache.bypassed(&mut resp);
            Ok(resp)
        }
        (None, Err(e)) => Err(e),
    }
}

/// The backend exchange of a routed request that no responder or cache answered.
#[allow(clippy::too_many_arguments)]
async fn backend(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    fwd: &Forwarding,
    route: &Route,
    mut parts: Parts,
    body: &mut Option<Incoming>,
    kept_headers: &mut Option<ResponseHeaders>,
    seen: &mut Seen,
    hop: u8,
    host_value: HeaderValue,
    upgrade: bool,
    grpc: bool,
    client_version: Version,
) -> Result<Response<GatewayBody>, ProxyError> {
    // A dispatching backend: wherever the filters said (an API's operation), back through its filters.
    if matches!(route.backend, crate::routes::Backend::Dispatch) {
        // Kept aside so that a failed dispatch's answer carries them too.
        *kept_headers = parts.extensions.remove::<ResponseHeaders>();
        let (mut head, out) = crate::dispatch::dispatch(gw, peer, fwd, parts, body, hop)
            .await?
            .into_parts();
        for (name, value) in kept_headers.take().map(|e| e.0).unwrap_or_default() {
            head.headers.insert(name, value);
        }
        route.on_response(&mut head);
        return Ok(Response::from_parts(head, out));
    }

    // The backend: pick a revision.
    let pool = route
        .pick()
        .map_err(|why| ProxyError::Unavailable(why.to_owned()))?
        .clone();
    seen.pool = Some(pool.clone());

    let limit = gw.config.max_request_body;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge(limit));
    }

    // Get a slot, waiting for a cold start if needed.
    let timeout_secs = pool.template().timeout_seconds;
    let deadline = Instant::now() + Duration::from_secs(u64::from(timeout_secs));
    let waiting = Instant::now();
    let wait = seen
        .span
        .as_ref()
        .map(|t| t.phase("wait for instance", pier_trace::Kind::Internal));
    let acquired = pool.acquire(deadline).await;
    if let Some(w) = wait {
        match &acquired {
            Err(e) => w.fail(e.to_string()),
            Ok(lease) => {
                // The instance became ready while this request waited: it waited for that cold
                // start, which is shown under the wait.
                let (began, ready) = lease.slot().started();
                let cold = ready > waiting;
                if cold && let Some(t) = &seen.span {
                    t.past(
                        &w,
                        "cold start",
                        began,
                        ready,
                        vec![pier_trace::KeyValue::new(
                            "pier.instance",
                            lease.slot().id().to_string(),
                        )],
                    );
                }
                w.set(vec![pier_trace::KeyValue::new("pier.cold_start", cold)]);
            }
        }
        w.end();
    }
    let lease = acquired.map_err(ProxyError::Acquire)?;
    seen.slot = Some(lease.slot().clone());

    // Rewrite the request for the instance. The app's Host is the authority the request was routed by
    // (an absolute-form target replaces the Host line, RFC 9112 §3.2.2; HTTP/2 clients send only
    // :authority), port included.
    let client_upgrade = if upgrade {
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    } else {
        None
    };
    let authority = host_value
        .to_str()
        .map_err(|_| ProxyError::BadHost)?
        .to_owned();
    fwd.apply(&mut parts.headers, &authority);
    // The upstream exchange's span is the parent of whatever the app does: its context is the one
    // forwarded. Without traces, the caller's context goes on as it came (or a fresh one).
    let upstream = seen
        .span
        .as_ref()
        .map(|t| t.phase("upstream", pier_trace::Kind::Client));
    match upstream.as_ref().and_then(|u| u.traceparent()) {
        Some(tp) => {
            parts.headers.insert(crate::headers::TRACEPARENT, tp);
        }
        None => ensure_traceparent(&mut parts.headers),
    }
    seen.upstream = upstream;
    seen.trace = parts.headers.get(crate::headers::TRACEPARENT).cloned();
    parts.headers.insert(header::HOST, host_value.clone());
    let h2 = lease.template().http2;
    if h2 {
        parts.version = Version::HTTP_2;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        // :authority and host agree (RFC 9113 §8.3.1): both carry the port.
        uri.authority = Some(
            http::uri::Authority::try_from(authority.as_str()).map_err(|_| ProxyError::BadHost)?,
        );
        uri.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadHost)?;
    } else {
        parts.version = Version::HTTP_11;
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            // Origin form for HTTP/1.1: the path and query only.
            let mut uri = http::uri::Parts::default();
            uri.path_and_query = Some(
                parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            );
            parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadHost)?;
        }
    }
    let body = match parts.extensions.remove::<crate::dispatch::Buffered>() {
        Some(b) => RequestBody::full(b.0),
        None => body
            .take()
            .map(|b| RequestBody::new(b, limit))
            .unwrap_or_else(RequestBody::empty),
    };
    let upstream_req = Request::from_parts(parts, body);

    // Forward.
    let conns: Arc<Conns> = lease
        .slot()
        .ext(Conns::default)
        .expect("the gateway is the only user of slot extensions");
    let sender = match conns.checkout(lease.slot().endpoint(), h2).await {
        Ok(s) => s,
        Err(e) => {
            lease.report_unreachable();
            return Err(ProxyError::Connect(e));
        }
    };
    let (fut, h1) = match sender {
        Sender::H1(mut s) => {
            let fut = s.send_request(upstream_req);
            (futures_util::future::Either::Left(fut), Some(s))
        }
        Sender::H2(mut s) => (
            futures_util::future::Either::Right(s.send_request(upstream_req)),
            None,
        ),
    };
    // One timer for the whole exchange: it bounds the response head here, then the body.
    let mut timer = Box::pin(tokio::time::sleep_until(deadline.into()));
    let answer = tokio::select! {
        biased;
        r = fut => Some(r),
        _ = &mut timer => None,
    };
    let mut resp = match answer {
        None => return Err(ProxyError::Timeout(timeout_secs)),
        Some(Err(e)) if is_body_too_large(&e) => return Err(ProxyError::BodyTooLarge(limit)),
        Some(Err(e)) => return Err(ProxyError::UpstreamBroken(e)),
        Some(Ok(r)) => r,
    };

    if let Some(client_upgrade) = client_upgrade
        && resp.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, lease, deadline));
        let (mut parts, _) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        route.on_response(&mut parts);
        return Ok(Response::from_parts(parts, GatewayBody::empty()));
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    // What apps get slightly wrong, normalized rather than failing the client's stream: a 1xx or 204
    // has no body and no length (RFC 9110 §8.6, §15.3.5; HTTP/2 clients reset a stream that claims one,
    // RFC 9113 §8.1.1). A 304 may keep its Content-Length, which describes the selected representation.
    if parts.status.is_informational() || parts.status == StatusCode::NO_CONTENT {
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::TRANSFER_ENCODING);
    }
    parts.version = client_version;
    route.on_response(&mut parts);
    let conn = h1.map(|s| (conns, s));
    Ok(Response::from_parts(
        parts,
        GatewayBody::Proxy(ProxyBody::new(body, lease, conn, timer, grpc)),
    ))
}

/// Copies bytes both ways between an upgraded client connection and the instance, holding the slot.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    lease: Lease,
    deadline: Instant,
) {
    let _lease = lease;
    let (c, u) = tokio::join!(client, upstream);
    let (Ok(c), Ok(u)) = (c, u) else {
        return;
    };
    let mut c = TokioIo::new(c);
    let mut u = TokioIo::new(u);
    let _ = tokio::time::timeout_at(
        deadline.into(),
        tokio::io::copy_bidirectional(&mut c, &mut u),
    )
    .await;
}
