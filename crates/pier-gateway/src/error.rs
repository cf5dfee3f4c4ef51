//! Every way a request can fail in the gateway, and the one place they become HTTP responses.
//!
//! As in pingora, an error records where it came from (the client, the instance, or Pier itself), which
//! decides its status code. Bodies are short, plain text, and say what to do; internals (addresses, OS
//! errors) go to the log, not to the client.

use http::{HeaderValue, Response, StatusCode, header};
use pier_activator::AcquireError;

use crate::body::GatewayBody;

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The client sent something wrong.
    Downstream,
    /// The instance failed.
    Upstream,
    /// Pier could not serve (no route, no capacity).
    Internal,
}

/// A failed request.
#[derive(Debug)]
pub enum ProxyError {
    /// No usable `Host` header or `:authority`.
    BadHost,
    /// The request is malformed in a way the message names.
    BadRequest(String),
    /// No service at this host.
    UnknownHost,
    /// The route exists but has nothing ready to serve.
    Unavailable(String),
    /// No instance slot.
    Acquire(AcquireError),
    /// The body is larger than the limit.
    BodyTooLarge(u64),
    /// Could not connect to the instance: nothing of the request reached it.
    Connect(crate::upstream::ConnectError),
    /// The instance broke the connection or sent garbage, after the request (or part of it) was sent.
    UpstreamBroken(hyper::Error),
    /// No response within the revision's timeout.
    Timeout(u32),
    /// A filter refused the request (ingress, identity, IAM, and later CORS, API keys, quotas).
    Refused(Refusal),
    /// A mapped domain asked for over plain HTTP before its certificate exists.
    CertificatePending(String),
    /// An API operation's backend did not answer within its `deadline` (seconds; ESPv2's default 15).
    Deadline(f64),
}

impl ProxyError {
    /// Where the error came from.
    pub fn origin(&self) -> Source {
        match self {
            ProxyError::BadHost
            | ProxyError::BadRequest(_)
            | ProxyError::BodyTooLarge(_)
            | ProxyError::Refused(_) => Source::Downstream,
            ProxyError::UnknownHost
            | ProxyError::Unavailable(_)
            | ProxyError::Acquire(_)
            | ProxyError::CertificatePending(_) => Source::Internal,
            ProxyError::Connect(_)
            | ProxyError::UpstreamBroken(_)
            | ProxyError::Timeout(_)
            | ProxyError::Deadline(_) => Source::Upstream,
        }
    }

    /// Whether sending the request again (to another instance) is safe whatever its method: only
    /// when nothing of it reached an instance (a refused connection, a failed handshake, no slot).
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect(_)
                | ProxyError::Acquire(AcquireError::QueueFull | AcquireError::NoCapacity { .. })
        )
    }

    /// Status code and body.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            ProxyError::BadHost => (
                StatusCode::BAD_REQUEST,
                "Bad Request: the request has no valid Host header.".into(),
            ),
            ProxyError::BadRequest(why) => (
                StatusCode::BAD_REQUEST,
                format!("Bad Request: {why}."),
            ),
            ProxyError::UnknownHost => (
                StatusCode::NOT_FOUND,
                "Not Found: no service is deployed at this host. Check the URL (`pier services list` shows them).".into(),
            ),
            ProxyError::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Service Unavailable: {why}."),
            ),
            ProxyError::Acquire(e) => match e {
                AcquireError::QueueFull | AcquireError::NoCapacity { .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Rejected: no available instance ({e}). Try again later, or raise --max-instances or --concurrency."
                    ),
                ),
                AcquireError::StartFailed(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable: the instance failed to start. `pier logs SERVICE` shows why.".into(),
                ),
                AcquireError::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "Gateway Timeout: no instance became available within the request timeout.".into(),
                ),
                AcquireError::Closed => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable: the revision is shutting down; retry.".into(),
                ),
            },
            ProxyError::BodyTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload Too Large: request bodies are limited to {limit} bytes."),
            ),
            ProxyError::Connect(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable: the instance refused the connection. `pier logs SERVICE` shows why.".into(),
            ),
            ProxyError::UpstreamBroken(_) => (
                StatusCode::BAD_GATEWAY,
                "Bad Gateway: the instance closed the connection before sending a complete response. `pier logs SERVICE` shows why.".into(),
            ),
            ProxyError::Timeout(secs) => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("Gateway Timeout: the instance did not answer within the request timeout ({secs}s)."),
            ),
            ProxyError::Refused(r) => (r.status, r.message.trim_end().to_owned()),
            // ESPv2's words, which clients of Google's gateways may match on.
            ProxyError::Deadline(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout".into()),
            ProxyError::CertificatePending(host) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Service Unavailable: the certificate for {host} is being issued; retry over HTTPS shortly (`pier domain-mappings describe --domain {host}` shows its state)."),
            ),
        }
    }

    /// The response the client gets.
    pub fn into_response(self) -> Response<GatewayBody> {
        if let ProxyError::Refused(r) = self {
            return r.into_response(false);
        }
        let (status, msg) = self.status_and_message();
        let retry = matches!(self, ProxyError::CertificatePending(_));
        let mut resp = plain(status, format!("{msg}\n"));
        if retry {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::entrance::CERTIFICATE_RETRY_AFTER_SECS),
            );
        }
        resp
    }

    /// The response a gRPC client gets: a "Trailers-Only" answer (HTTP 200, `grpc-status`,
    /// `grpc-message`), so the client sees the right code and Pier's explanation rather than a bare
    /// HTTP status. Codes follow gRPC's HTTP mapping (`doc/http-grpc-status-mapping.md`), except that a
    /// request past its deadline is `DEADLINE_EXCEEDED`, as the client's own deadline would be.
    pub fn into_grpc_response(self) -> Response<GatewayBody> {
        if let ProxyError::Refused(r) = self {
            return r.into_response(true);
        }
        let (status, msg) = self.status_and_message();
        let code = match self {
            ProxyError::Timeout(_) | ProxyError::Deadline(_) => GRPC_DEADLINE_EXCEEDED,
            _ => grpc_code(status),
        };
        grpc_status(code, &msg)
    }
}

impl ProxyError {
    /// The response on an API route ([`ErrorStyle::Json`]): ESPv2's body `{"code": N, "message":
    /// "…"}` (Envoy's local reply format in ESPv2), with a refusal's headers and its violations.
    pub fn into_json_response(self) -> Response<GatewayBody> {
        match self {
            ProxyError::Refused(r) => r.into_json_response(),
            other => {
                let (status, message) = other.status_and_message();
                json_error(status, &message, &[])
            }
        }
    }
}

/// How a route renders the errors the gateway itself produces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorStyle {
    /// Plain text that says what to do (a service's URL).
    #[default]
    Plain,
    /// ESPv2's JSON (an API gateway's URL).
    Json,
}

/// One way a request broke an API's schema: where (`/query/limit`, `/body/items/0/price`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// A JSON pointer into the request: `/path/NAME`, `/query/NAME`, `/header/NAME`, or `/body…`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// `{"code": N, "message": "…"}`, with `"violations": [{"path", "message"}]` when there are any.
pub fn json_error(
    status: StatusCode,
    message: &str,
    violations: &[Violation],
) -> Response<GatewayBody> {
    let mut body = serde_json::json!({"code": status.as_u16(), "message": message.trim_end()});
    if !violations.is_empty() {
        body["violations"] = violations
            .iter()
            .map(|v| serde_json::json!({"path": v.path, "message": v.message}))
            .collect();
    }
    let body = format!("{body}\n");
    let mut resp = Response::new(GatewayBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.status_and_message().1)
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProxyError::Connect(e) => Some(e),
            ProxyError::UpstreamBroken(e) => Some(e),
            _ => None,
        }
    }
}

/// The gRPC code for an HTTP status, following gRPC's HTTP mapping (`doc/http-grpc-status-mapping.md`),
/// with a gateway timeout as `DEADLINE_EXCEEDED` and a body over the limit as `RESOURCE_EXHAUSTED`.
fn grpc_code(status: StatusCode) -> u32 {
    match status {
        StatusCode::GATEWAY_TIMEOUT => GRPC_DEADLINE_EXCEEDED,
        StatusCode::PAYLOAD_TOO_LARGE => 8, // RESOURCE_EXHAUSTED
        StatusCode::UNAUTHORIZED => 16,     // UNAUTHENTICATED
        StatusCode::FORBIDDEN => 7,         // PERMISSION_DENIED
        StatusCode::NOT_FOUND => 12,        // UNIMPLEMENTED
        StatusCode::BAD_REQUEST => 13,      // INTERNAL
        _ => 14,                            // UNAVAILABLE
    }
}

/// A request a filter ([`crate::Filter`], the admission filter first) refused: what to answer, rendered here like every
/// other gateway error, as plain text or, to a gRPC client, as a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403 or 404.
    pub status: StatusCode,
    /// What was wrong and what to do, one line.
    pub message: String,
    /// Every way the request broke an API's schema (400 from request validation).
    pub violations: Vec<Violation>,
    /// Headers the answer carries: `WWW-Authenticate` for a refused token (RFC 6750 §3),
    /// `Retry-After` for a quota (RFC 9110 §10.2.3), an API gateway's CORS headers.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Refusal {
    /// A refusal with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            violations: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// The same refusal, answered with `name: value` too.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The value of one of its headers.
    pub fn header(&self, name: &header::HeaderName) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The response on an API route: ESPv2's JSON (see [`json_error`]).
    pub fn into_json_response(self) -> Response<GatewayBody> {
        let mut resp = json_error(self.status, &self.message, &self.violations);
        self.add_headers(&mut resp);
        resp
    }

    fn add_headers(self, resp: &mut Response<GatewayBody>) {
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
    }

    /// The response: plain text, or a gRPC status when the request is gRPC.
    pub fn into_response(self, grpc: bool) -> Response<GatewayBody> {
        let mut resp = if grpc {
            grpc_status(grpc_code(self.status), &self.message)
        } else {
            let mut text = format!("{}\n", self.message.trim_end());
            for v in &self.violations {
                text.push_str(&format!("  {}: {}\n", v.path, v.message));
            }
            plain(self.status, text)
        };
        self.add_headers(&mut resp);
        resp
    }
}

/// gRPC's `DEADLINE_EXCEEDED`.
pub const GRPC_DEADLINE_EXCEEDED: u32 = 4;

/// A gRPC "Trailers-Only" response: status and message, no body.
pub fn grpc_status(code: u32, message: &str) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&grpc_message(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// `grpc-message` is percent-encoded UTF-8 (gRPC's HTTP/2 protocol document).
pub fn grpc_message(message: &str) -> String {
    let mut out = String::new();
    for b in message.trim().bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a request is gRPC (`content-type: application/grpc`, with or without a `+format`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A short plain-text response.
pub fn plain(status: StatusCode, body: String) -> Response<GatewayBody> {
    let mut resp = Response::new(GatewayBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_keep_their_cause_and_are_safe_to_retry() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e = ProxyError::Connect(crate::upstream::ConnectError::Io(refused));
        assert!(e.retry_safe());
        assert_eq!(e.origin(), Source::Upstream);
        let cause = std::error::Error::source(&e).expect("the connect error");
        let io = std::error::Error::source(cause).expect("the OS error");
        assert!(io.to_string().contains("refused"), "{io}");
        // The client never sees the cause itself.
        assert!(!e.to_string().contains(&cause.to_string()), "{e}");
        for e in [
            ProxyError::Timeout(5),
            ProxyError::Acquire(AcquireError::Timeout),
        ] {
            assert!(!e.retry_safe(), "{e}");
        }
        assert!(ProxyError::Acquire(AcquireError::QueueFull).retry_safe());
    }
}
