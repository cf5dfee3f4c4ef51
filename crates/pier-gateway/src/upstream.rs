//! Connections from the gateway to instances.
//!
//! Each instance keeps its own pool of idle HTTP/1.1 connections (or one multiplexed h2c connection), kept
//! in the instance's slot. A connection returns to the pool only once its response body has been read to the
//! end, so it is always ready for the next request; one the instance closed is dropped.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pier_runtime::Endpoint;

/// Errors inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept per instance at most.
const MAX_IDLE: usize = 1024;

/// A request body from a client, streamed to the instance, cut off past the size limit.
pub struct RequestBody {
    inner: Option<Incoming>,
    remaining: u64,
    /// A body already read whole (to check it before forwarding), sent as one frame.
    buffered: Option<Bytes>,
}

/// The request body went over the gateway's limit.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body too large")
    }
}

impl std::error::Error for BodyTooLarge {}

impl RequestBody {
    /// Wraps a client body with a byte limit.
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Self {
            inner: Some(inner),
            remaining: limit,
            buffered: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            inner: None,
            remaining: 0,
            buffered: None,
        }
    }

    /// A body read whole before forwarding (see [`crate::dispatch`]).
    pub fn full(bytes: Bytes) -> Self {
        Self {
            inner: None,
            remaining: 0,
            buffered: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(bytes) = self.buffered.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        // The client is still sending: read the rest away while it gets its 413.
                        if let Some(rest) = self.inner.take() {
                            crate::linger::linger(rest);
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(b) = &self.buffered {
            return SizeHint::with_exact(b.len() as u64);
        }
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for RequestBody {
    /// An instance that answered without reading the whole body: the client's rest is lingered on, so
    /// it sees the answer.
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take() {
            crate::linger::linger(rest);
        }
    }
}

/// A connection ready to send one request.
pub enum Sender {
    /// HTTP/1.1: one request at a time; goes back to the pool after its response.
    H1(http1::SendRequest<RequestBody>),
    /// h2c: multiplexed and shared.
    H2(http2::SendRequest<RequestBody>),
}

/// Connections of one instance.
#[derive(Default)]
pub struct Conns {
    idle: Mutex<Vec<http1::SendRequest<RequestBody>>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
}

impl Conns {
    /// A connection to `endpoint`: an idle one if there is one, else a new one.
    pub async fn checkout(&self, endpoint: &Endpoint, h2: bool) -> Result<Sender, ConnectError> {
        if h2 {
            let existing = self
                .h2
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .filter(|s| !s.is_closed())
                .cloned();
            if let Some(s) = existing {
                return Ok(Sender::H2(s));
            }
            let io = endpoint.connect().await.map_err(ConnectError::Io)?;
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .handshake(TokioIo::new(io))
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
            return Ok(Sender::H2(sender));
        }
        loop {
            let candidate = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match candidate {
                Some(s) if s.is_closed() => continue,
                // A connection is pooled as soon as its response ends; its task may need a moment to be
                // ready for the next request.
                Some(mut s) => match s.ready().await {
                    Ok(()) => return Ok(Sender::H1(s)),
                    Err(_) => continue,
                },
                None => break,
            }
        }
        let io = endpoint.connect().await.map_err(ConnectError::Io)?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(Sender::H1(sender))
    }

    /// Returns an HTTP/1.1 connection whose response is complete.
    pub fn checkin(&self, sender: http1::SendRequest<RequestBody>) {
        if !sender.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(sender);
            }
        }
    }
}

/// Opening a connection to an instance failed.
#[derive(Debug)]
pub enum ConnectError {
    /// TCP connect failed (refused: the instance is gone or not listening).
    Io(std::io::Error),
    /// The HTTP handshake failed.
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "connect: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Io(e) => Some(e),
            ConnectError::Handshake(e) => Some(e),
        }
    }
}
