//! The request log: one record per request, queued by the exit ([`crate::observe`]) on a bounded
//! queue nobody waits on, and written every [`FLUSH_EVERY`] by a thread of its own as one JSON line per
//! request (Cloud Logging's `httpRequest`), one write per service's file, beside the app logs.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::header::HeaderValue;
use http::{Method, Version};
use pier_activator::{RevisionPool, Slot};
use pier_model::api::{LogEntry, LogStream};
use pier_model::logs::HttpRequest;
use pier_runtime::logs::LogStore;

use crate::observe::CacheSeen;
use crate::routes::Route;

/// The texts of a request's head the log keeps, copied into one buffer when the request arrives.
/// Holding the head's own values instead (slices of the connection's read buffer) would keep that
/// buffer from being reused until the writer ran, and cost the connection a new one per request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Texts {
    buf: String,
    /// Where each of [`Text`]'s fields ends in `buf`.
    ends: [u32; 5],
}

/// The fields of [`Texts`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Text {
    Authority = 0,
    Path = 1,
    UserAgent = 2,
    Referer = 3,
    Trace = 4,
}

impl Texts {
    /// The fields in [`Text`]'s order; bytes that are not UTF-8 are replaced.
    pub(crate) fn new(fields: [Option<&[u8]>; 5]) -> Self {
        let mut buf = String::with_capacity(fields.iter().flatten().map(|f| f.len()).sum());
        let mut ends = [0u32; 5];
        for (i, f) in fields.iter().enumerate() {
            if let Some(f) = f {
                buf.push_str(&String::from_utf8_lossy(f));
            }
            ends[i] = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        }
        Self { buf, ends }
    }

    /// One field, or `None` when it was absent or empty.
    pub(crate) fn get(&self, t: Text) -> Option<&str> {
        let i = t as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.buf
            .get(start..self.ends[i] as usize)
            .filter(|s| !s.is_empty())
    }
}

/// One request, as the request log gets it.
#[derive(Debug)]
pub struct RequestRecord {
    pub(crate) route: Arc<Route>,
    pub(crate) pool: Option<Arc<RevisionPool>>,
    pub(crate) slot: Option<Arc<Slot>>,
    pub(crate) method: Method,
    pub(crate) scheme: &'static str,
    /// Authority, path and query, user agent, referer and the caller's `traceparent`.
    pub(crate) texts: Texts,
    pub(crate) status: u16,
    pub(crate) request_size: u64,
    pub(crate) response_size: u64,
    pub(crate) remote_ip: IpAddr,
    pub(crate) latency: Duration,
    pub(crate) version: Version,
    /// The `traceparent` Pier forwarded (its own span), when it traced the request; else the
    /// caller's, from `texts`.
    pub(crate) trace: Option<HeaderValue>,
    pub(crate) cache: Option<CacheSeen>,
    pub(crate) ended: SystemTime,
}

impl RequestRecord {
    /// The URL, with the values of credential parameters redacted (see [`redact_query`]).
    fn url(&self) -> String {
        let (path, query) = match self.texts.get(Text::Path) {
            Some(p) => match p.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (p, None),
            },
            None => ("/", None),
        };
        let mut url = format!(
            "{}://{}{path}",
            self.scheme,
            self.texts.get(Text::Authority).unwrap_or("")
        );
        if let Some(q) = query {
            url.push('?');
            redact_query(&mut url, q);
        }
        url
    }

    fn trace_id(&self) -> Option<&str> {
        self.trace
            .as_ref()
            .and_then(|t| t.to_str().ok())
            .or_else(|| self.texts.get(Text::Trace))
            .and_then(|t| t.split('-').nth(1))
            .filter(|t| t.len() == 32)
    }

    fn protocol(&self) -> &'static str {
        match self.version {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => "HTTP/1.1",
        }
    }

    /// The log entry: Cloud Logging's `httpRequest`, the trace id of the W3C `traceparent`.
    pub fn to_entry(&self) -> LogEntry {
        let text = |t: Text| self.texts.get(t).map(str::to_owned);
        let url = self.url();
        LogEntry {
            timestamp: pier_runtime::logs::format_time(self.ended),
            instance: self
                .slot
                .as_ref()
                .map(|s| s.id().to_string())
                .unwrap_or_default(),
            revision: self
                .pool
                .as_ref()
                .map(|p| p.revision().to_string())
                .unwrap_or_default(),
            stream: LogStream::Request,
            message: format!("{} {url} {}", self.method, self.status),
            http_request: Some(HttpRequest {
                request_method: self.method.to_string(),
                request_url: url,
                request_size: self.request_size.to_string(),
                status: self.status,
                response_size: self.response_size.to_string(),
                user_agent: text(Text::UserAgent),
                remote_ip: self.remote_ip.to_string(),
                referer: text(Text::Referer),
                latency: format!("{:.6}s", self.latency.as_secs_f64()),
                protocol: self.protocol().to_owned(),
                cache_lookup: self.cache.is_some(),
                cache_hit: self.cache == Some(CacheSeen::Hit),
            }),
            trace: self.trace_id().map(str::to_owned),
            severity: None,
        }
    }

    /// [`RequestRecord::to_entry`]'s JSON, one line, written into `out` without building the entry
    /// (the same fields and names: `LogEntry` reads it back).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let url = self.url();
        out.extend_from_slice(b"{\"timestamp\":\"");
        pier_runtime::logs::write_time(out, self.ended);
        out.extend_from_slice(b"\",\"instance\":\"");
        if let Some(s) = &self.slot {
            escape_into(out, s.id().as_str());
        }
        out.extend_from_slice(b"\",\"revision\":\"");
        if let Some(p) = &self.pool {
            escape_into(out, p.revision().as_str());
        }
        out.extend_from_slice(b"\",\"stream\":\"request\",\"message\":\"");
        escape_into(out, self.method.as_str());
        out.push(b' ');
        escape_into(out, &url);
        let _ = write!(
            out,
            " {}\",\"httpRequest\":{{\"requestMethod\":",
            self.status
        );
        string_into(out, self.method.as_str());
        out.extend_from_slice(b",\"requestUrl\":");
        string_into(out, &url);
        let _ = write!(
            out,
            ",\"requestSize\":\"{}\",\"status\":{},\"responseSize\":\"{}\"",
            self.request_size, self.status, self.response_size
        );
        if let Some(ua) = self.texts.get(Text::UserAgent) {
            out.extend_from_slice(b",\"userAgent\":");
            string_into(out, ua);
        }
        let _ = write!(out, ",\"remoteIp\":\"{}\"", self.remote_ip);
        if let Some(r) = self.texts.get(Text::Referer) {
            out.extend_from_slice(b",\"referer\":");
            string_into(out, r);
        }
        let _ = write!(
            out,
            ",\"latency\":\"{:.6}s\",\"protocol\":\"{}\"",
            self.latency.as_secs_f64(),
            self.protocol()
        );
        if self.cache.is_some() {
            out.extend_from_slice(b",\"cacheLookup\":true");
        }
        if self.cache == Some(CacheSeen::Hit) {
            out.extend_from_slice(b",\"cacheHit\":true");
        }
        out.push(b'}');
        if let Some(t) = self.trace_id() {
            out.extend_from_slice(b",\"trace\":");
            string_into(out, t);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Lines waiting for the writer before new ones are dropped (and counted).
const QUEUE: usize = 16 * 1024;

/// How often the writer wakes to write what was queued: senders never wake it (a send is a push on a
/// queue nobody waits on), so the request path makes no system call for its log line.
const FLUSH_EVERY: Duration = Duration::from_millis(25);

/// The request log: a bounded queue and the thread that writes it every [`FLUSH_EVERY`] (short, so
/// its work comes in small slices rather than bursts that would show in other requests' tails), one file per
/// service beside the app logs' (see [`LogStore`]), rotated the same way, one write per file per
/// flush.
#[derive(Clone)]
pub struct RequestLog {
    tx: std::sync::mpsc::SyncSender<RequestRecord>,
    dropped: Arc<AtomicU64>,
}

impl RequestLog {
    /// Starts the writer thread on `store`. It ends when every handle is dropped, after writing what
    /// is queued.
    pub fn spawn(store: Arc<LogStore>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RequestRecord>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen_dropped = dropped.clone();
        let spawned = std::thread::Builder::new()
            .name("request-log".into())
            .spawn(move || {
                let mut said = 0;
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    let mut records = Vec::new();
                    let open = loop {
                        match rx.try_recv() {
                            Ok(r) => records.push(r),
                            Err(std::sync::mpsc::TryRecvError::Empty) => break true,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => break false,
                        }
                    };
                    write_batch(&store, records);
                    let now = seen_dropped.load(Ordering::Relaxed);
                    if now > said {
                        tracing::warn!(
                            dropped = now - said,
                            "request log lines dropped: the writer could not keep up"
                        );
                        said = now;
                    }
                    if !open {
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("the request log's writer did not start ({e}): no request log");
        }
        Self { tx, dropped }
    }

    pub(crate) fn send(&self, r: RequestRecord) {
        if self.tx.try_send(r).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes a batch, one write per service's file, in time order within each (records are grouped by
/// service without copying their names, and serialized without building entries; followers, if any,
/// get entries).
fn write_batch(store: &LogStore, records: Vec<RequestRecord>) {
    fn key(r: &RequestRecord) -> (&str, &str) {
        (r.route.project.as_str(), r.route.service.as_str())
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    // Stable: a service's lines keep their order.
    order.sort_by(|a, b| key(&records[*a]).cmp(&key(&records[*b])));
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut i = 0;
    while i < order.len() {
        let first = &records[order[i]];
        let mut j = i;
        buf.clear();
        while j < order.len() && key(&records[order[j]]) == key(first) {
            records[order[j]].write_json(&mut buf);
            j += 1;
        }
        store.append_lines(&first.route.project, &first.route.service, &buf, || {
            order[i..j].iter().map(|k| records[*k].to_entry()).collect()
        });
        i = j;
    }
}

/// Query parameters whose values are credentials, never written to a log: API keys as Google's API
/// Gateway (and Pier's) take them (`key`, `api_key`), OAuth bearer tokens in a query (RFC 6750 §2.3
/// `access_token`), authorization codes and PKCE verifiers (RFC 6749 §4.1.2, RFC 7636), and the usual
/// names of signatures and passwords.
const SECRET_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "access_token",
    "id_token",
    "refresh_token",
    "token",
    "code",
    "code_verifier",
    "client_secret",
    "password",
    "signature",
    "sig",
    "x-goog-signature",
    "x-amz-signature",
    "x-amz-security-token",
];

/// Appends `query` to `out` with the value of every credential parameter (by name, any case) replaced
/// by `REDACTED`.
fn redact_query(out: &mut String, query: &str) {
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s)) => {
                out.push_str(name);
                out.push_str("=REDACTED");
            }
            _ => out.push_str(pair),
        }
    }
}

/// Writes `s` as a JSON string's contents (RFC 8259 §7: `"`, `\\` and control characters escaped).
fn escape_into(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x00..=0x1f => {
                let _ = std::io::Write::write_fmt(out, format_args!("\\u{b:04x}"));
            }
            _ => out.push(b),
        }
    }
}

/// Writes `s` as a JSON string.
fn string_into(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_line_reads_back_as_the_entry() {
        let route = Arc::new(Route::new(
            "default".parse().unwrap(),
            "shop".parse().unwrap(),
            None,
            Arc::new(crate::Access::public()),
            Arc::new(crate::AllowAll),
            crate::Backend::Unavailable("none".into()),
        ));
        let record = RequestRecord {
            route,
            pool: None,
            slot: None,
            method: Method::POST,
            scheme: "https",
            texts: Texts::new([
                Some(b"shop-1a2b3c.pier.localhost:8443"),
                Some(b"/cart/%C3%A9?x=1&key=AIzaSECRET&y=2&Access_Token=eyJ.x.y"),
                Some(b"quote\" backslash\\ tab\t end"),
                None,
                None,
            ]),
            status: 503,
            request_size: 12,
            response_size: 345,
            remote_ip: "127.0.0.1".parse().unwrap(),
            latency: Duration::from_micros(1234),
            version: Version::HTTP_2,
            trace: Some(HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )),
            cache: Some(CacheSeen::Miss),
            ended: SystemTime::UNIX_EPOCH + Duration::from_micros(1_796_000_000_123_456),
        };
        let mut out = Vec::new();
        record.write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let read: LogEntry = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(read, record.to_entry());
        let r = read.http_request.unwrap();
        assert_eq!(
            r.user_agent.as_deref(),
            Some("quote\" backslash\\ tab\t end")
        );
        assert_eq!(
            r.request_url,
            "https://shop-1a2b3c.pier.localhost:8443/cart/%C3%A9?x=1&key=REDACTED&y=2&Access_Token=REDACTED",
            "credentials in the query are never logged"
        );
        assert!(!text.contains("SECRET") && !text.contains("eyJ"), "{text}");
        assert_eq!(r.latency, "0.001234s");
        assert!(r.cache_lookup && !r.cache_hit);
        assert_eq!(
            read.trace.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(read.timestamp, "2026-11-30T00:53:20.123456Z");
    }
}
