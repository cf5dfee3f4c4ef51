//! A fetched answer's body on its way to the client, copied into the cache as it streams: stored when it
//! ends whole within the scope's limit; a body that fails, is cut or outgrows the limit is not stored.
//! The fetch's flight ends when the body does, so the requests waiting on it find the stored answer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_cache_semantics::CachePolicy;
use pier_gateway::GatewayBody;
use pier_gateway::upstream::BoxError;

use crate::{EdgeCache, Flight, Key, Stored};

/// What to store when the body ends.
pub(crate) struct Store {
    pub cache: Arc<EdgeCache>,
    pub key: Key,
    pub policy: CachePolicy,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub limit: u64,
    /// The declared length: the body is whole once that much came, even if the client's side never
    /// polls for the end.
    pub expected: Option<u64>,
    pub flight: Option<Flight>,
}

struct Tee {
    inner: GatewayBody,
    /// The chunks so far, joined once at their exact size when the body ends.
    chunks: Vec<Bytes>,
    len: u64,
    store: Option<Store>,
}

/// `body`, copied into the cache as it is sent.
pub(crate) fn tee(body: GatewayBody, store: Store) -> GatewayBody {
    let mut t = Tee {
        inner: body,
        chunks: Vec::new(),
        len: 0,
        store: Some(store),
    };
    // A body that is already over is never polled: stored now.
    if t.inner.is_end_stream() {
        t.finish();
    }
    GatewayBody::Boxed(t.boxed_unsync())
}

impl Tee {
    /// The body ended whole: stored, and the flight ends.
    fn finish(&mut self) {
        if let Some(s) = self.store.take() {
            let mut whole = BytesMut::with_capacity(self.len as usize);
            for c in self.chunks.drain(..) {
                whole.extend_from_slice(&c);
            }
            let body = whole.freeze();
            s.cache.put(
                s.key,
                Stored {
                    policy: s.policy,
                    status: s.status,
                    headers: s.headers,
                    body,
                },
            );
            drop(s.flight);
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let mut whole = false;
                if let (Some(data), Some(store)) = (frame.data_ref(), &this.store) {
                    if this.len + data.len() as u64 > store.limit {
                        // Too large to keep: sent on, not stored.
                        if let Some(s) = this.store.take() {
                            s.cache.pass(s.key.clone());
                        }
                        this.chunks.clear();
                    } else {
                        this.len += data.len() as u64;
                        this.chunks.push(data.clone());
                        whole = store.expected == Some(this.len);
                    }
                }
                // The last frame: the client may not poll again.
                if whole || this.inner.is_end_stream() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.store = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
