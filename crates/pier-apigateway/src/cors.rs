//! CORS answered by the gateway, from a gateway's CORS setting (the Fetch standard's CORS protocol;
//! defaults are ESPv2's `--cors_preset=basic` ones). A preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered by the gateway itself, before any key or JWT check
//! (browsers send no credentials on a preflight); an actual request from an allowed origin gets the
//! response headers that let the page read the answer. The allowed origin is echoed, never `*`, with
//! `Vary: Origin`.
//!
//! An API that wants its backend to answer preflights instead says `allowCors: true` in
//! `x-google-endpoints` (see [`crate::filter`]).

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use pier_gateway::{Answer, Refusal, Responder, Route};

/// A gateway's CORS setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Allowed origins (`https://shop.example`), or `*` for any.
    pub origins: Vec<String>,
    /// Allowed methods, comma-separated.
    pub methods: String,
    /// Allowed request headers, comma-separated.
    pub headers: String,
    /// Response headers a page may read, comma-separated.
    pub expose: String,
    /// Whether credentials (cookies, `Authorization`) may be sent.
    pub credentials: bool,
    /// How long a browser may cache a preflight, in seconds.
    pub max_age: u64,
}

impl Default for CorsPolicy {
    /// ESPv2's `basic` preset.
    fn default() -> Self {
        Self {
            origins: vec!["*".into()],
            methods: "GET, POST, PUT, PATCH, DELETE, OPTIONS".into(),
            headers: "DNT,User-Agent,X-User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization,X-Api-Key".into(),
            expose: "Content-Length,Content-Range".into(),
            credentials: false,
            max_age: 1_728_000,
        }
    }
}

/// ESPv2's words for a preflight it cannot answer.
pub const PREFLIGHT_REFUSED: &str = "The CORS preflight request is missing one (or more) of the following required headers [Origin, Access-Control-Request-Method] or has an unmatched Origin header.";

/// The answer a preflight gets, found by the filter and given by [`PreflightResponder`].
#[derive(Clone, Debug)]
pub struct PreflightAnswer(pub Vec<(HeaderName, HeaderValue)>);

/// Whether a request is a CORS preflight.
pub fn is_preflight(head: &Parts) -> bool {
    head.method == Method::OPTIONS
        && head.headers.contains_key(header::ORIGIN)
        && head
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl CorsPolicy {
    fn allowed_origin<'a>(&self, head: &'a Parts) -> Option<&'a HeaderValue> {
        let origin = head.headers.get(header::ORIGIN)?;
        let o = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(o))
            .then_some(origin)
    }

    fn common(&self, origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = vec![
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()),
            (header::VARY, HeaderValue::from_static("Origin")),
        ];
        if self.credentials {
            out.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        out
    }

    /// The headers of a preflight's answer, or the refusal (400, ESPv2's message) for an origin or
    /// method that is not allowed.
    pub fn preflight(&self, head: &Parts) -> Result<PreflightAnswer, Refusal> {
        let refused = || Refusal::new(StatusCode::BAD_REQUEST, PREFLIGHT_REFUSED);
        let origin = self.allowed_origin(head).ok_or_else(refused)?;
        let method = head
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self
            .methods
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case(method))
        {
            return Err(refused());
        }
        let mut out = self.common(origin);
        for (name, value) in [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.headers),
            (header::ACCESS_CONTROL_MAX_AGE, &self.max_age.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                out.push((name, v));
            }
        }
        Ok(PreflightAnswer(out))
    }

    /// The headers an actual request's answer gets (none for an origin that is not allowed).
    pub fn actual(&self, head: &Parts) -> Vec<(HeaderName, HeaderValue)> {
        let Some(origin) = self.allowed_origin(head) else {
            return Vec::new();
        };
        let mut out = self.common(origin);
        if let Ok(v) = HeaderValue::from_str(&self.expose) {
            out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, v));
        }
        out
    }
}

/// Answers preflights the filter accepted (200, no body, as Envoy's CORS filter in ESPv2).
#[derive(Debug, Default)]
pub struct PreflightResponder;

impl Responder for PreflightResponder {
    fn name(&self) -> &'static str {
        "cors-preflight"
    }

    fn respond(&self, _route: &Route, req: &Parts) -> Option<Answer> {
        let answer = req.extensions.get::<PreflightAnswer>()?.clone();
        Some(Box::pin(async move {
            let mut resp = http::Response::new(pier_gateway::GatewayBody::empty());
            for (name, value) in answer.0 {
                resp.headers_mut().append(name, value);
            }
            resp
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: Method, origin: Option<&str>, acrm: Option<&str>) -> Parts {
        let mut b = http::Request::builder().method(method).uri("/v1/items");
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        if let Some(m) = acrm {
            b = b.header("access-control-request-method", m);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn preflights_echo_allowed_origins_and_refuse_others() {
        let p = CorsPolicy {
            origins: vec!["https://shop.example".into()],
            credentials: true,
            ..CorsPolicy::default()
        };
        let h = head(Method::OPTIONS, Some("https://shop.example"), Some("POST"));
        assert!(is_preflight(&h));
        let a = p.preflight(&h).unwrap();
        let get = |n: HeaderName| a.0.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(),
            "https://shop.example"
        );
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(),
            "true"
        );
        assert_eq!(get(header::ACCESS_CONTROL_MAX_AGE).unwrap(), "1728000");
        let e = p
            .preflight(&head(
                Method::OPTIONS,
                Some("https://evil.example"),
                Some("POST"),
            ))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            p.preflight(&head(
                Method::OPTIONS,
                Some("https://shop.example"),
                Some("TRACE")
            ))
            .is_err()
        );
        assert!(!is_preflight(&head(
            Method::OPTIONS,
            Some("https://shop.example"),
            None
        )));
        // Actual requests: headers only for an allowed origin.
        assert!(
            p.actual(&head(Method::GET, Some("https://evil.example"), None))
                .is_empty()
        );
        assert!(
            !p.actual(&head(Method::GET, Some("https://shop.example"), None))
                .is_empty()
        );
    }
}
