//! Lingering on a request body nobody will read: when Pier (or the app) answers before the client has
//! sent its whole body (413, 401, 403, 404, 429, 503, an app that answers early), closing at once makes
//! the kernel reset the connection over the unread bytes, and the reset wipes out the answer before the
//! client reads it (RFC 9112 §9.6). So the rest of the body is read and thrown away, for a bounded time,
//! after the answer: the client finishes sending, then reads the answer. Over HTTP/2 the same keeps the
//! stream open until the client's half ends, instead of resetting it under the answer.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

/// Longest silence from the client while lingering (nginx's `lingering_timeout`).
pub const IDLE: Duration = Duration::from_secs(5);
/// Longest linger in all (nginx's `lingering_time`).
pub const TOTAL: Duration = Duration::from_secs(30);

/// Reads `body` to its end in the background, discarding it, within [`IDLE`] and [`TOTAL`].
pub fn linger(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let _ = tokio::time::timeout(TOTAL, async {
            while let Ok(Some(Ok(_))) = tokio::time::timeout(IDLE, body.frame()).await {}
        })
        .await;
    });
}

/// A request body kept unread until it is dropped, then lingered on.
#[derive(Default)]
pub struct Held(pub Option<Incoming>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(body) = self.0.take() {
            linger(body);
        }
    }
}
