//! Header rules of the proxy: hop-by-hop headers are removed in both directions, forwarding headers
//! (`X-Forwarded-For`, `X-Forwarded-Proto`, `Forwarded`) are appended, and a W3C `traceparent` is passed
//! through when valid and created when absent.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1). `TE` is rebuilt as
/// `trailers` when the client asked for trailers (the one value HTTP/2 allows, RFC 9113 §8.2.2, and what
/// gRPC requires); `Trailer` is not hop-by-hop (RFC 9110 §6.6.2) and passes.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    KEEP_ALIVE,
    // Only meaningful with an h2c upgrade, which Pier does not tunnel (RFC 9113 §3.1).
    HTTP2_SETTINGS,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

/// Headers a `Connection` header may not name: the ones the guard reads or Pier sets for the app.
/// Naming one would make a proxy drop it after the guard saw it (or before the app sees Pier's), so a
/// request that does is refused.
const PROTECTED: [&str; 12] = [
    "host",
    "authorization",
    "x-serverless-authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "traceparent",
    "content-length",
    "cookie",
    // Written by API gateways and end-user checks for the app to trust.
    "x-endpoint-api-userinfo",
    "x-forwarded-authorization",
];

/// The first header Pier relies on that the request's `Connection` header names, if any.
pub fn connection_names_protected(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .find(|t| PROTECTED.contains(&t.as_str()))
}

/// Why a request's credentials are ambiguous, if they are: a header whose name has underscores where a
/// header Pier relies on has hyphens (CGI, WSGI and PHP apps read `X_Serverless_Authorization` as
/// `X-Serverless-Authorization`, so it would reach them beside the one Pier checked), or a credential
/// header sent twice (apps that join repeated headers would read the second one too).
pub fn ambiguous_credentials(headers: &HeaderMap) -> Option<String> {
    for name in headers.keys() {
        let n = name.as_str();
        if n.contains('_') && PROTECTED.contains(&n.replace('_', "-").as_str()) {
            return Some(format!(
                "the header {n} would reach some apps as {}: send it with hyphens",
                n.replace('_', "-")
            ));
        }
    }
    for name in [header::AUTHORIZATION.as_str(), "x-serverless-authorization"] {
        if headers.get_all(name).iter().count() > 1 {
            return Some(format!("the request has more than one {name} header"));
        }
    }
    None
}

/// Whether a request asks to switch to WebSocket, the one upgrade Pier tunnels (as Cloud Run). Other
/// upgrades (`h2c`, which would carry requests past the guard once tunnelled) are ignored, as RFC 9110
/// §7.8 lets a server do: the request is answered as it is.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let websocket = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
    websocket && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those the `Connection` header names. With `keep_upgrade`, the
/// `Upgrade` header and a `Connection: upgrade` survive (for protocol switches).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none: one pass over the names finds out without hashing.
    let any = headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(k) || *k == header::UPGRADE);
    if !any && !keep_upgrade {
        return;
    }
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.trim()
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && *n == header::UPGRADE))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// What a connection adds to every request's forwarding headers, computed once per connection, and what
/// the guard learned about the peer.
#[derive(Debug)]
pub struct Forwarding {
    /// The peer's address.
    pub peer: std::net::SocketAddr,
    /// The project of the instance the connection comes from, when it arrived on a gateway entrance
    /// inside an instance's namespace (set by the listener; nothing on the host's listeners is one).
    pub internal: std::sync::OnceLock<pier_model::ProjectName>,
    client: IpAddr,
    proto: &'static str,
    /// `X-Forwarded-For` when the request brings none: the client address alone.
    xff: HeaderValue,
    /// `Forwarded` for the last host seen on the connection (usually its only one).
    forwarded: std::sync::Mutex<Option<(String, HeaderValue)>>,
}

impl Forwarding {
    /// For a connection from `peer` over `proto` (`https` or `http`).
    pub fn for_peer(peer: std::net::SocketAddr, proto: &'static str) -> Self {
        let mut f = Self::new(peer.ip(), proto);
        f.peer = peer;
        f
    }

    /// For a connection from `client` over `proto` (`https` or `http`).
    pub fn new(client: IpAddr, proto: &'static str) -> Self {
        let xff = HeaderValue::from_str(&client.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer: std::net::SocketAddr::new(client, 0),
            internal: std::sync::OnceLock::new(),
            client,
            proto,
            xff,
            forwarded: std::sync::Mutex::new(None),
        }
    }

    fn element(&self, host: &str) -> String {
        let ip = self.client.to_string();
        let node = match self.client {
            IpAddr::V4(_) => ip,
            IpAddr::V6(_) => format!("\"[{ip}]\""),
        };
        // The Host as received, port included (RFC 7239 §5.3); a value with `:` is not a token, so it
        // is quoted (§4).
        if host.contains(':') {
            format!("for={node};proto={};host=\"{host}\"", self.proto)
        } else {
            format!("for={node};proto={};host={host}", self.proto)
        }
    }

    /// Appends this hop to `X-Forwarded-For` and `Forwarded` and sets `X-Forwarded-Proto`.
    pub fn apply(&self, headers: &mut HeaderMap, host: &str) {
        match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => {
                if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {}", self.client)) {
                    headers.insert(X_FORWARDED_FOR, v);
                }
            }
            _ => {
                headers.insert(X_FORWARDED_FOR, self.xff.clone());
            }
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => {
                if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {}", self.element(host))) {
                    headers.insert(header::FORWARDED, v);
                }
            }
            _ => {
                let mut cache = self.forwarded.lock().unwrap_or_else(|p| p.into_inner());
                let value = match cache.as_ref() {
                    Some((h, v)) if h == host => v.clone(),
                    _ => {
                        let v = HeaderValue::from_str(&self.element(host))
                            .unwrap_or_else(|_| HeaderValue::from_static("for=unknown"));
                        *cache = Some((host.to_owned(), v.clone()));
                        v
                    }
                };
                headers.insert(header::FORWARDED, value);
            }
        }
    }
}

/// Appends this hop to `X-Forwarded-For`, `X-Forwarded-Proto` (replaced) and `Forwarded`.
pub fn add_forwarding(headers: &mut HeaderMap, client: IpAddr, proto: &'static str, host: &str) {
    Forwarding::new(client, proto).apply(headers, host);
}

/// Whether `value` is a well-formed W3C trace context `traceparent` (version 00).
pub fn valid_traceparent(value: &[u8]) -> bool {
    if value.len() != 55 {
        return false;
    }
    let hex = |r: std::ops::Range<usize>| {
        value[r]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let all_zero = |r: std::ops::Range<usize>| value[r].iter().all(|b| *b == b'0');
    value[2] == b'-'
        && value[35] == b'-'
        && value[52] == b'-'
        && hex(0..2)
        && &value[0..2] != b"ff"
        && hex(3..35)
        && !all_zero(3..35)
        && hex(36..52)
        && !all_zero(36..52)
        && hex(53..55)
}

/// Keeps a valid `traceparent`, or sets a new one (sampled) when it is absent or malformed.
pub fn ensure_traceparent(headers: &mut HeaderMap) {
    if headers
        .get(&TRACEPARENT)
        .is_some_and(|v| valid_traceparent(v.as_bytes()))
    {
        return;
    }
    let trace = loop {
        let t = fastrand::u128(..);
        if t != 0 {
            break t;
        }
    };
    let span = loop {
        let s = fastrand::u64(..);
        if s != 0 {
            break s;
        }
    };
    // Formatted on the stack: this runs on every request without a trace context.
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-01";
    hex_into(&mut buf[3..35], trace);
    hex_into(&mut buf[36..52], u128::from(span));
    if let Ok(v) = HeaderValue::from_bytes(&buf) {
        headers.insert(TRACEPARENT, v);
    }
}

/// Writes `v` as lowercase hex filling `out` (most significant digit first).
fn hex_into(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// The value of cookie `name` in a request's `Cookie` headers (RFC 6265 §5.4: `name=value` pairs
/// separated by `;`), the first if it is there more than once.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-app", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-app", "te"]);
        assert_eq!(h["te"], "trailers", "gRPC's TE survives, alone");
        let mut h = map(&[("te", "gzip, deflate"), ("trailer", "grpc-status")]);
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("te"));
        assert_eq!(h["trailer"], "grpc-status", "Trailer is not hop-by-hop");
    }

    #[test]
    fn connection_may_not_name_what_pier_relies_on() {
        let h = map(&[("connection", "keep-alive, X-Serverless-Authorization")]);
        assert_eq!(
            connection_names_protected(&h).as_deref(),
            Some("x-serverless-authorization")
        );
        assert_eq!(
            connection_names_protected(&map(&[("connection", "close, x-mine")])),
            None
        );
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
    }

    #[test]
    fn forwarding_headers_append() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "http"),
        ]);
        add_forwarding(
            &mut h,
            "127.0.0.1".parse().unwrap(),
            "https",
            "a.pier.localhost",
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=127.0.0.1;proto=https;host=a.pier.localhost"
        );
        let mut h6 = HeaderMap::new();
        add_forwarding(&mut h6, "::1".parse().unwrap(), "https", "h");
        assert_eq!(h6["forwarded"], "for=\"[::1]\";proto=https;host=h");
        let mut port = HeaderMap::new();
        add_forwarding(
            &mut port,
            "10.0.0.1".parse().unwrap(),
            "https",
            "a.example:8443",
        );
        assert_eq!(
            port["forwarded"],
            "for=10.0.0.1;proto=https;host=\"a.example:8443\""
        );
    }

    #[test]
    fn traceparent_is_kept_or_created() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = map(&[("traceparent", good)]);
        ensure_traceparent(&mut h);
        assert_eq!(h["traceparent"], good);
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let mut h = map(&[("traceparent", bad)]);
            ensure_traceparent(&mut h);
            let v = h["traceparent"].as_bytes();
            assert!(valid_traceparent(v), "{bad} replaced by a valid one");
            assert_ne!(v, bad.as_bytes());
        }
        let mut empty = HeaderMap::new();
        ensure_traceparent(&mut empty);
        assert!(valid_traceparent(empty["traceparent"].as_bytes()));
    }
}
