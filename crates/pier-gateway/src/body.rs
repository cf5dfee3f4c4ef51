//! Response bodies the gateway sends: a short fixed body (errors, redirects), or an instance's response
//! streamed frame by frame. A streamed body holds the request's slot on the instance until it ends, so
//! concurrency counts cover streaming; it returns the connection to the instance's pool only when the body
//! was read to the end, and cuts the stream when the request timeout passes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use pier_activator::Lease;

use crate::linger::Held;
use crate::upstream::{BoxError, Conns, RequestBody};

/// The body of every gateway response.
pub enum GatewayBody {
    /// A fixed body, and possibly the request body it answers, kept unread until the response is sent
    /// (dropping it first would make HTTP/2 reset the stream before the client sees the answer), then
    /// lingered on (see [`crate::linger`]).
    Full(Option<Bytes>, Held),
    /// An instance's response.
    Proxy(ProxyBody),
    /// Any other body (in-process handlers).
    Boxed(http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>),
}

impl GatewayBody {
    /// A fixed body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        GatewayBody::Full(Some(b.into()), Held::default())
    }

    /// No body.
    pub fn empty() -> Self {
        GatewayBody::Full(None, Held::default())
    }

    /// Keeps an unread request body alive until this (fixed) response has been sent, then lingers on
    /// it; with another kind of response, lingers on it at once.
    pub fn hold(&mut self, request_body: Incoming) {
        match self {
            GatewayBody::Full(_, hold) => hold.0 = Some(request_body),
            _ => crate::linger::linger(request_body),
        }
    }
}

/// An instance's response body in flight.
pub struct ProxyBody {
    inner: Incoming,
    lease: Option<Lease>,
    conn: Option<(Arc<Conns>, http1::SendRequest<RequestBody>)>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    done: bool,
    /// A gRPC response: past the deadline it ends with `grpc-status: DEADLINE_EXCEEDED` trailers
    /// rather than a reset stream.
    grpc: bool,
}

impl ProxyBody {
    /// Streams `inner`, holding `lease` until the end and returning `conn` to its pool after a complete read.
    pub fn new(
        inner: Incoming,
        lease: Lease,
        conn: Option<(Arc<Conns>, http1::SendRequest<RequestBody>)>,
        deadline: Pin<Box<tokio::time::Sleep>>,
        grpc: bool,
    ) -> Self {
        Self {
            inner,
            lease: Some(lease),
            conn,
            deadline,
            done: false,
            grpc,
        }
    }

    fn finish(&mut self, complete: bool) {
        self.done = true;
        if let Some((conns, sender)) = self.conn.take()
            && complete
        {
            conns.checkin(sender);
        }
        self.lease = None;
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if !self.done {
            let complete = self.inner.is_end_stream();
            self.finish(complete);
        }
    }
}

/// The response ran past the request timeout.
#[derive(Debug)]
pub struct ResponseTimeout;

impl std::fmt::Display for ResponseTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response exceeded the request timeout")
    }
}

impl std::error::Error for ResponseTimeout {}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            GatewayBody::Full(b, _) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Boxed(b) => Pin::new(b).poll_frame(cx),
            GatewayBody::Proxy(p) => {
                if p.done {
                    return Poll::Ready(None);
                }
                match Pin::new(&mut p.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                    Poll::Ready(Some(Err(e))) => {
                        p.finish(false);
                        Poll::Ready(Some(Err(Box::new(e))))
                    }
                    Poll::Ready(None) => {
                        p.finish(true);
                        Poll::Ready(None)
                    }
                    Poll::Pending => {
                        if p.deadline.as_mut().poll(cx).is_ready() {
                            p.finish(false);
                            if p.grpc {
                                let mut t = http::HeaderMap::new();
                                t.insert(
                                    "grpc-status",
                                    http::HeaderValue::from(crate::error::GRPC_DEADLINE_EXCEEDED),
                                );
                                t.insert(
                                    "grpc-message",
                                    http::HeaderValue::from_static(
                                        "the response ran past the revision's request timeout",
                                    ),
                                );
                                return Poll::Ready(Some(Ok(Frame::trailers(t))));
                            }
                            return Poll::Ready(Some(Err(Box::new(ResponseTimeout))));
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(b, _) => b.is_none(),
            GatewayBody::Proxy(p) => p.done || p.inner.is_end_stream(),
            GatewayBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(Some(b), _) => SizeHint::with_exact(b.len() as u64),
            GatewayBody::Full(None, _) => SizeHint::with_exact(0),
            GatewayBody::Proxy(p) => p.inner.size_hint(),
            GatewayBody::Boxed(b) => b.size_hint(),
        }
    }
}
