//! A stored file as an HTTP response, as a good static web server gives it: the representation chosen by
//! `Accept-Encoding` among the variants made at deploy (brotli, then gzip, then the file; `Vary:
//! Accept-Encoding` whenever a variant exists), a strong `ETag` per representation and `Last-Modified`
//! (the release time), `If-None-Match` and `If-Modified-Since` answered with 304 (RFC 9110 §13.1.1,
//! §13.1.3; `If-None-Match` wins), one byte range (`Range: bytes=…`, RFC 9110 §14.2) answered with 206,
//! or 416 with `Content-Range: bytes */LEN` when it cannot be satisfied, `If-Range` honoured, and HEAD as
//! GET without the body. Several ranges get the whole file (allowed by §14.2), as nginx does when the
//! ranges overlap.

use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use pier_gateway::GatewayBody;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::files::{FileStore, Stored};

/// Firebase Hosting's browser caching for static files when no `headers` rule says otherwise: one hour
/// (<https://firebase.google.com/docs/hosting/manage-cache>).
pub const DEFAULT_CACHE_CONTROL: &str = "max-age=3600";

/// Files up to this size are read whole; larger ones are streamed.
const READ_WHOLE: u64 = 1 << 20;

/// One file to answer with.
#[derive(Clone, Debug)]
pub struct StaticFile {
    /// Its digest.
    pub digest: String,
    /// What is stored.
    pub stored: Stored,
    /// Its path in the site (for the content type).
    pub name: String,
    /// `Last-Modified`: when its version was released.
    pub modified: SystemTime,
}

/// Which representation to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    fn ext(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gz"),
            Coding::Brotli => Some("br"),
        }
    }
}

/// The codings `accept` allows with a non-zero weight (RFC 9110 §12.5.3), as (gzip, br).
fn accepted(headers: &HeaderMap) -> (bool, bool) {
    let (mut gzip, mut br) = (false, false);
    for v in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0))
            });
            if zero {
                continue;
            }
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = true,
                "br" => br = true,
                "*" => {
                    gzip = true;
                    br = true;
                }
                _ => {}
            }
        }
    }
    (gzip, br)
}

/// The `Content-Type` of a file named `name`; text gets `charset=utf-8`, as Firebase sends.
pub fn content_type(name: &str) -> HeaderValue {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let text = mime.type_() == "text"
        || matches!(mime.subtype().as_str(), "javascript" | "json")
        || mime.suffix().is_some_and(|s| s == "json");
    let value = if text {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

fn etag(digest: &str, coding: Coding) -> String {
    match coding {
        Coding::Identity => format!("\"{}\"", &digest[..32]),
        Coding::Gzip => format!("\"{}-gz\"", &digest[..32]),
        Coding::Brotli => format!("\"{}-br\"", &digest[..32]),
    }
}

/// Whether an `If-None-Match` list names `tag` (weak comparison, RFC 9110 §8.8.3.2).
fn none_match(headers: &HeaderMap, tag: &str) -> Option<bool> {
    let mut seen = false;
    for v in headers.get_all(header::IF_NONE_MATCH) {
        seen = true;
        let Ok(v) = v.to_str() else { continue };
        for t in v.split(',') {
            let t = t.trim();
            if t == "*" || t.trim_start_matches("W/") == tag {
                return Some(true);
            }
        }
    }
    seen.then_some(false)
}

/// A byte range of a representation of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// No usable `Range`: the whole.
    Whole,
    /// `start..=end`.
    Part(u64, u64),
    /// Nothing of it can be sent: 416.
    Unsatisfiable,
}

fn range(value: &str, len: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Whole;
    };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // The last `b` bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Range::Whole;
        };
        if n == 0 || len == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Part(len.saturating_sub(n), len - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return Range::Whole;
    };
    let end = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(len.saturating_sub(1)),
            _ => return Range::Whole,
        }
    };
    if start >= len {
        return Range::Unsatisfiable;
    }
    Range::Part(start, end)
}

/// Builds the answer for `file` with `status` (200, or 404 for the site's `404.html`). `extra` are
/// the `headers` rules' headers, applied last.
pub async fn serve(
    store: &FileStore,
    file: &StaticFile,
    status: StatusCode,
    method: &Method,
    req: &HeaderMap,
    extra: &[(header::HeaderName, HeaderValue)],
) -> Response<GatewayBody> {
    let (gz_ok, br_ok) = accepted(req);
    let coding = if br_ok && file.stored.brotli.is_some() {
        Coding::Brotli
    } else if gz_ok && file.stored.gzip.is_some() {
        Coding::Gzip
    } else {
        Coding::Identity
    };
    let len = match coding {
        Coding::Identity => file.stored.size,
        Coding::Gzip => file.stored.gzip.unwrap_or(0),
        Coding::Brotli => file.stored.brotli.unwrap_or(0),
    };
    let tag = etag(&file.digest, coding);
    let mut head = Response::builder().status(status);
    let h = head.headers_mut().expect("a fresh builder");
    h.insert(header::CONTENT_TYPE, content_type(&file.name));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(DEFAULT_CACHE_CONTROL),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(file.modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if file.stored.gzip.is_some() || file.stored.brotli.is_some() {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if let Some(ext) = coding.ext() {
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(if ext == "gz" { "gzip" } else { "br" }),
        );
    }
    let ok = status == StatusCode::OK;
    if ok {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    set_rule_headers(h, extra);

    // Conditional requests (only for a successful answer).
    let fresh = ok
        && match none_match(req, &tag) {
            Some(matched) => matched,
            None => req
                .get(header::IF_MODIFIED_SINCE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| httpdate::parse_http_date(v).ok())
                .is_some_and(|since| {
                    // Whole seconds: `Last-Modified` has no finer resolution.
                    let secs = |t: SystemTime| {
                        t.duration_since(SystemTime::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0)
                    };
                    secs(file.modified) <= secs(since)
                }),
        };
    if fresh {
        let mut resp = head
            .status(StatusCode::NOT_MODIFIED)
            .body(GatewayBody::empty())
            .expect("valid head");
        resp.headers_mut().remove(header::CONTENT_TYPE);
        return resp;
    }

    let mut part = Range::Whole;
    if ok && let Some(r) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        let if_range_ok = match req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
            None => true,
            Some(v) => v.trim() == tag,
        };
        if if_range_ok {
            part = range(r, len);
        }
    }
    let (start, end) = match part {
        Range::Whole => (0, len.saturating_sub(1)),
        Range::Part(s, e) => (s, e),
        Range::Unsatisfiable => {
            let mut resp = head
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .body(GatewayBody::empty())
                .expect("valid head");
            let h = resp.headers_mut();
            h.remove(header::CONTENT_ENCODING);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if let Range::Part(..) = part {
        head = head.status(StatusCode::PARTIAL_CONTENT);
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            head = head.header(header::CONTENT_RANGE, v);
        }
    }
    head = head.header(header::CONTENT_LENGTH, count);
    if method == Method::HEAD || count == 0 {
        return head.body(GatewayBody::empty()).expect("valid head");
    }
    let path = match coding.ext() {
        None => store.path(&file.digest),
        Some(ext) => store.variant_path(&file.digest, ext),
    };
    let answer = if len <= crate::files::HOT_FILE_MAX {
        store.read_small(path).await.and_then(|b| {
            let (s, e) = (start as usize, (start + count) as usize);
            if e > b.len() {
                return Err(std::io::Error::other(
                    "the stored file is shorter than recorded",
                ));
            }
            Ok(GatewayBody::full(b.slice(s..e)))
        })
    } else {
        body(path, start, count).await
    };
    match answer {
        Ok(b) => head.body(b).expect("valid head"),
        Err(e) => {
            tracing::error!(digest = %file.digest, "a site file cannot be read: {e}");
            pier_gateway::error::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this file cannot be read; the site's operator finds why in the server's log\n"
                    .into(),
            )
        }
    }
}

/// Sets the `headers` rules' headers, last; a rule's `Vary` is added to the server's (which a shared
/// cache needs to tell encodings apart), not put in its place.
pub fn set_rule_headers(h: &mut HeaderMap, extra: &[(header::HeaderName, HeaderValue)]) {
    for (name, value) in extra {
        if name == header::VARY
            && let Some(old) = h.get(header::VARY).and_then(|v| v.to_str().ok())
            && let Ok(new) = value.to_str()
            && let Ok(v) = HeaderValue::from_str(&format!("{old}, {new}"))
        {
            h.insert(header::VARY, v);
            continue;
        }
        h.insert(name.clone(), value.clone());
    }
}

async fn body(path: PathBuf, start: u64, count: u64) -> std::io::Result<GatewayBody> {
    let mut f = tokio::fs::File::open(&path).await?;
    if start > 0 {
        f.seek(SeekFrom::Start(start)).await?;
    }
    if count <= READ_WHOLE {
        let mut buf = vec![0u8; count as usize];
        f.read_exact(&mut buf).await?;
        return Ok(GatewayBody::full(Bytes::from(buf)));
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(count), 64 * 1024)
        .map_ok(http_body::Frame::data)
        .map_err(|e| Box::new(e) as pier_gateway::upstream::BoxError);
    Ok(GatewayBody::Boxed(StreamBody::new(stream).boxed_unsync()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_read_as_rfc_9110_says() {
        assert_eq!(range("bytes=0-9", 100), Range::Part(0, 9));
        assert_eq!(range("bytes=90-", 100), Range::Part(90, 99));
        assert_eq!(range("bytes=-10", 100), Range::Part(90, 99));
        assert_eq!(range("bytes=-1000", 100), Range::Part(0, 99));
        assert_eq!(range("bytes=50-1000", 100), Range::Part(50, 99));
        assert_eq!(range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(range("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(range("bytes=9-1", 100), Range::Whole);
        assert_eq!(range("bytes=0-1,5-6", 100), Range::Whole);
        assert_eq!(range("items=0-1", 100), Range::Whole);
    }

    #[test]
    fn encodings_with_zero_weight_are_not_accepted() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert_eq!(accepted(&h), (false, true));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("*"));
        assert_eq!(accepted(&h), (true, true));
        assert_eq!(accepted(&HeaderMap::new()), (false, false));
    }

    #[test]
    fn types_and_tags() {
        assert_eq!(content_type("/a/index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/x.png"), "image/png");
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert_eq!(none_match(&h, "\"b\""), Some(true));
        assert_eq!(none_match(&h, "\"c\""), Some(false));
        assert_eq!(none_match(&HeaderMap::new(), "\"c\""), None);
    }
}
