//! Log entries as the admin API returns them: instances' lines (stdout, stderr, Pier's notes) and the
//! gateway's request log, with severities as Cloud Logging has them.
//!
//! An app line that is a JSON object with `severity` and `message` (Cloud Run's structured logging
//! contract) takes its severity from there; other lines take their stream's: stderr `ERROR`, stdout
//! `DEFAULT`, Pier's notes `INFO`. Request lines are `ERROR` for 5xx, `WARNING` for 4xx, else `INFO`,
//! as Cloud Run's request logs are.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The instance's standard output.
    Stdout,
    /// The instance's standard error.
    Stderr,
    /// Pier's own note about the instance (started, ready, exited, killed).
    System,
    /// A request the gateway answered (the request log).
    Request,
}

/// One log entry: a line an instance wrote, or a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// When Pier read it (RFC 3339, microseconds), or when the request's response ended.
    pub timestamp: String,
    /// Instance that wrote it (or served the request; empty when none did).
    pub instance: String,
    /// Its revision (empty for a request no revision served).
    pub revision: String,
    /// Stream.
    pub stream: LogStream,
    /// The line, without its newline (for a request: `METHOD URL STATUS`).
    pub message: String,
    /// The request, for request entries (Cloud Logging's `HttpRequest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request: Option<HttpRequest>,
    /// The W3C trace id (32 hex digits), for request entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Its severity, as the admin API reports it (see [`LogEntry::severity`]; not stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// A request, in the shape of Cloud Logging's `HttpRequest` (int64 fields as decimal strings, the
/// latency as a protobuf `Duration` string such as `"0.012345s"`, as Google's JSON writes them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub request_method: String,
    /// The full URL (scheme, host, path and query).
    pub request_url: String,
    /// The request body's declared length in bytes.
    pub request_size: String,
    /// The response's status code.
    pub status: u16,
    /// Response body bytes sent.
    pub response_size: String,
    /// `User-Agent`, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The client's address (the connection's peer).
    pub remote_ip: String,
    /// `Referer`, if sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    /// From the request's arrival to the end of its response.
    pub latency: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: String,
    /// Whether the edge cache was asked (a route with a cache).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_lookup: bool,
    /// Whether the edge cache answered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_hit: bool,
}

/// Which logs `pier logs` reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    /// The instances' lines (stdout, stderr, Pier's notes).
    #[default]
    App,
    /// The request log.
    Requests,
    /// Both, merged in time order.
    All,
}

impl std::str::FromStr for LogKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "app" => Ok(LogKind::App),
            "requests" | "request" => Ok(LogKind::Requests),
            "all" => Ok(LogKind::All),
            _ => Err(format!("unknown log type {s:?}: use requests, app or all")),
        }
    }
}

/// Cloud Logging's severities, in order.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// No severity.
    Default,
    /// Debug or trace information.
    Debug,
    /// Routine information.
    Info,
    /// Normal but significant events.
    Notice,
    /// Events that might cause problems.
    Warning,
    /// Events likely to cause problems.
    Error,
    /// Events that cause more severe problems or outages.
    Critical,
    /// A person must take an action immediately.
    Alert,
    /// One or more systems are unusable.
    Emergency,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 9] = [
        Severity::Default,
        Severity::Debug,
        Severity::Info,
        Severity::Notice,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
        Severity::Alert,
        Severity::Emergency,
    ];

    /// Its name, upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Default => "DEFAULT",
            Severity::Debug => "DEBUG",
            Severity::Info => "INFO",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
            Severity::Critical => "CRITICAL",
            Severity::Alert => "ALERT",
            Severity::Emergency => "EMERGENCY",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;

    /// A severity name, any case; `WARN` and `FATAL` are read as `WARNING` and `CRITICAL`, as Cloud
    /// Logging's agents read them.
    fn from_str(s: &str) -> Result<Self, String> {
        let up = s.trim().to_ascii_uppercase();
        match up.as_str() {
            "WARN" => return Ok(Severity::Warning),
            "FATAL" => return Ok(Severity::Critical),
            _ => {}
        }
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == up)
            .ok_or_else(|| {
                format!(
                    "unknown severity {s:?}: use one of DEFAULT, DEBUG, INFO, NOTICE, WARNING, ERROR, CRITICAL, ALERT, EMERGENCY"
                )
            })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pier's own notes about an instance: its unexpected end or a failed start is an `ERROR` (so
/// `--severity ERROR` shows what explains an outage), a liveness failure that stops it a `WARNING`,
/// the rest (started, stopped) `INFO`. The texts are the runtimes' (`instance exited with status N`,
/// `instance was killed ...`, `out of memory: ...`, `the instance could not start: ...`).
fn system_severity(message: &str) -> Severity {
    let m = message.trim_start();
    if m.starts_with("instance exited")
        || m.starts_with("instance was killed")
        || m.starts_with("out of memory")
        || m.starts_with("the instance could not start")
        || m.starts_with("cannot read the instance's output")
    {
        Severity::Error
    } else if m.contains("stopping the instance") {
        Severity::Warning
    } else {
        Severity::Info
    }
}

/// What an app's structured line says (Cloud Run's structured logging: a JSON object on one line).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Structured {
    /// Its `severity`, if it is a known one.
    pub severity: Option<Severity>,
    /// Its `message` (or `textPayload`), if a string.
    pub message: Option<String>,
}

impl LogEntry {
    /// The app's structured fields, when the line is a JSON object.
    pub fn structured(&self) -> Option<Structured> {
        if !matches!(self.stream, LogStream::Stdout | LogStream::Stderr)
            || !self.message.trim_start().starts_with('{')
        {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&self.message).ok()?;
        let obj = v.as_object()?;
        Some(Structured {
            severity: obj
                .get("severity")
                .and_then(|s| s.as_str())
                .and_then(|s| s.parse().ok()),
            message: obj
                .get("message")
                .or_else(|| obj.get("textPayload"))
                .and_then(|m| m.as_str())
                .map(str::to_owned),
        })
    }

    /// The entry's severity (see the module's docs).
    pub fn severity(&self) -> Severity {
        match self.stream {
            LogStream::Request => match self.http_request.as_ref().map(|r| r.status) {
                Some(500..) => Severity::Error,
                Some(400..=499) => Severity::Warning,
                _ => Severity::Info,
            },
            LogStream::System => system_severity(&self.message),
            LogStream::Stdout | LogStream::Stderr => {
                if let Some(s) = self.structured().and_then(|s| s.severity) {
                    return s;
                }
                if self.stream == LogStream::Stderr {
                    Severity::Error
                } else {
                    Severity::Default
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: LogStream, message: &str) -> LogEntry {
        LogEntry {
            timestamp: "2026-12-01T00:00:00.000000Z".into(),
            instance: "i".into(),
            revision: "r".into(),
            stream,
            message: message.into(),
            http_request: None,
            trace: None,
            severity: None,
        }
    }

    #[test]
    fn structured_lines_carry_their_severity_and_plain_ones_their_streams() {
        let e = line(
            LogStream::Stdout,
            r#"{"severity":"warning","message":"disk almost full"}"#,
        );
        assert_eq!(e.severity(), Severity::Warning);
        assert_eq!(
            e.structured().unwrap().message.as_deref(),
            Some("disk almost full")
        );
        assert_eq!(line(LogStream::Stdout, "hi").severity(), Severity::Default);
        assert_eq!(line(LogStream::Stderr, "oops").severity(), Severity::Error);
        assert_eq!(
            line(LogStream::Stderr, r#"{"severity":"INFO","message":"x"}"#).severity(),
            Severity::Info
        );
        // Not JSON, or JSON of another shape: the stream decides.
        assert_eq!(
            line(LogStream::Stdout, "{not json").severity(),
            Severity::Default
        );
        assert_eq!(
            line(LogStream::Stdout, "[1,2]").severity(),
            Severity::Default
        );
    }

    #[test]
    fn severities_parse_and_order() {
        assert_eq!("error".parse::<Severity>(), Ok(Severity::Error));
        assert_eq!("WARN".parse::<Severity>(), Ok(Severity::Warning));
        assert!("loud".parse::<Severity>().unwrap_err().contains("one of"));
        assert!(Severity::Error > Severity::Warning && Severity::Default < Severity::Debug);
    }

    #[test]
    fn request_entries_are_rated_by_status() {
        let mut e = line(LogStream::Request, "GET / 503");
        e.http_request = Some(HttpRequest {
            request_method: "GET".into(),
            request_url: "https://x/".into(),
            request_size: "0".into(),
            status: 503,
            response_size: "10".into(),
            user_agent: None,
            remote_ip: "127.0.0.1".into(),
            referer: None,
            latency: "0.001s".into(),
            protocol: "HTTP/1.1".into(),
            cache_lookup: false,
            cache_hit: false,
        });
        assert_eq!(e.severity(), Severity::Error);
        let json = serde_json::to_string(&e).unwrap();
        assert!(
            json.contains(r#""httpRequest":{"requestMethod":"GET""#),
            "{json}"
        );
        assert!(!json.contains("cacheHit"), "{json}");
        let back: LogEntry = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }
}
