//! The backend of routes whose filters choose where each request goes ([`crate::Backend::Dispatch`]):
//! an API gateway's operations each name a backend. The choosing filter leaves a [`Destination`] in the
//! request's extensions; this module sends the request there.
//!
//! - **A host Pier serves** ([`Target::Pier`]): the request is routed again by that host, through its
//!   route's own filters (its guard checks the token the API filter put in `Authorization`, so a private
//!   service stays private behind an API) and its backend. One hop only: a destination that is itself a
//!   dispatching route is refused, so no configuration loops through Pier's names (the control plane
//!   sends every one of Pier's names here, never to the external client).
//! - **An address outside Pier** ([`Target::External`]): handed to an [`ExternalForward`].
//!
//! The [`Destination::deadline`] bounds the wait for the response head (ESPv2's `deadline`, 504 past it).
//! A [`BodyCheck`] (request validation) reads the body whole, up to the gateway's body limit, before
//! anything is forwarded: a request that breaks the schema never reaches the backend.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use crate::Gateway;
use crate::auth::X_SERVERLESS_AUTHORIZATION;
use crate::body::GatewayBody;
use crate::error::{ProxyError, Refusal};
use crate::headers::Forwarding;
use crate::upstream::RequestBody;

/// Where one request goes, chosen by a filter.
#[derive(Clone)]
pub struct Destination {
    /// The backend.
    pub target: Target,
    /// Longest wait for the backend's response head; past it, 504 `upstream request timeout`.
    pub deadline: Duration,
    /// Checks the whole body before it is forwarded, when set.
    pub body_check: Option<Arc<dyn BodyCheck>>,
    /// For a host Pier serves: the `X-Serverless-Authorization` value to send there (a site's own
    /// identity), in place of whatever the client sent in that header; its `Authorization` then
    /// reaches the app untouched.
    pub serverless_authorization: Option<HeaderValue>,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("target", &self.target)
            .field("deadline", &self.deadline)
            .field("body_check", &self.body_check.is_some())
            .field(
                "serverless_authorization",
                &self.serverless_authorization.is_some(),
            )
            .finish()
    }
}

/// A backend.
#[derive(Clone)]
pub enum Target {
    /// A host Pier routes (`NAME-HASH.DOMAIN[:PORT]`, the value the `Host` header gets).
    Pier(HeaderValue),
    /// An address outside Pier; the request's URI is already absolute.
    External(Arc<dyn ExternalForward>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pier(h) => write!(f, "Pier({h:?})"),
            Target::External(_) => f.write_str("External"),
        }
    }
}

/// Checks a request body read whole (request validation): `Err` is the refusal to answer with.
pub trait BodyCheck: Send + Sync + 'static {
    /// Accepts or refuses `body` for the request `head`.
    fn check(&self, head: &Parts, body: &Bytes) -> Result<(), Refusal>;
}

/// A response future from an [`ExternalForward`].
pub type Forwarded =
    Pin<Box<dyn Future<Output = Result<Response<GatewayBody>, ProxyError>> + Send>>;

/// Sends requests to addresses outside Pier (an API's `https://` backend).
pub trait ExternalForward: Send + Sync + 'static {
    /// Sends `req` (absolute URI) and streams the answer back.
    fn forward(&self, req: Request<RequestBody>) -> Forwarded;
}

/// Headers a filter wants on the response of a dispatched request (CORS headers for an allowed
/// origin), added after the backend answered.
#[derive(Clone, Debug, Default)]
pub struct ResponseHeaders(pub Vec<(http::header::HeaderName, HeaderValue)>);

/// A body already read whole, forwarded instead of the client's stream.
#[derive(Clone)]
pub(crate) struct Buffered(pub Bytes);

/// Sends a request to the [`Destination`] its route's filters chose.
pub(crate) async fn dispatch(
    gw: &Arc<Gateway>,
    peer: SocketAddr,
    fwd: &Forwarding,
    mut parts: Parts,
    body: &mut Option<Incoming>,
    hop: u8,
) -> Result<Response<GatewayBody>, ProxyError> {
    let dest = parts.extensions.remove::<Destination>().ok_or_else(|| {
        ProxyError::Unavailable("no operation was chosen for this request".into())
    })?;
    if hop > 0 {
        return Err(ProxyError::Unavailable(
            "an API's backend cannot be another API gateway".into(),
        ));
    }
    let limit = gw.config.max_request_body;
    let mut buffered = None;
    if let Some(check) = &dest.body_check {
        let bytes = read_whole(body.take(), limit).await?;
        check.check(&parts, &bytes).map_err(ProxyError::Refused)?;
        buffered = Some(bytes);
    }
    let secs = dest.deadline.as_secs_f64();
    let exchange = async {
        match dest.target {
            Target::Pier(authority) => {
                // Routed again by the backend's host, in origin form, with only the credentials the
                // API filter chose (a private gateway's own IAM token does not travel further).
                parts.headers.insert(header::HOST, authority);
                let pq = parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
                parts.uri = Uri::from(pq);
                parts.headers.remove(X_SERVERLESS_AUTHORIZATION);
                if let Some(token) = dest.serverless_authorization {
                    parts.headers.insert(X_SERVERLESS_AUTHORIZATION, token);
                }
                if let Some(b) = buffered {
                    parts.extensions.insert(Buffered(b));
                }
                let mut inner = crate::proxy::Routed::default();
                Box::pin(crate::proxy::proxy(
                    gw,
                    peer,
                    fwd,
                    parts,
                    body,
                    &mut inner,
                    hop + 1,
                ))
                .await
            }
            Target::External(out) => {
                let authority = parts
                    .uri
                    .authority()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_default();
                fwd.apply(&mut parts.headers, &authority);
                crate::headers::ensure_traceparent(&mut parts.headers);
                if let Ok(v) = HeaderValue::from_str(&authority) {
                    parts.headers.insert(header::HOST, v);
                }
                let b = match buffered {
                    Some(b) => RequestBody::full(b),
                    None => body
                        .take()
                        .map(|b| RequestBody::new(b, limit))
                        .unwrap_or_else(RequestBody::empty),
                };
                out.forward(Request::from_parts(parts, b)).await
            }
        }
    };
    tokio::time::timeout(dest.deadline, exchange)
        .await
        .unwrap_or(Err(ProxyError::Deadline(secs)))
}

/// The whole client body, at most `limit` bytes.
async fn read_whole(body: Option<Incoming>, limit: u64) -> Result<Bytes, ProxyError> {
    use http_body_util::BodyExt;
    let Some(mut body) = body else {
        return Ok(Bytes::new());
    };
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|_| ProxyError::BadRequest("the request body could not be read".into()))?;
        if let Some(d) = frame.data_ref() {
            if (out.len() + d.len()) as u64 > limit {
                crate::linger::linger(body);
                return Err(ProxyError::BodyTooLarge(limit));
            }
            out.extend_from_slice(d);
        }
    }
    Ok(out.freeze())
}
