//! `x-google-backend`: where an operation's calls go, and how the path is rewritten on the way
//! (Google's "x-google-backend" reference; the rewriting follows ESPv2's `path_rewrite` filter).

use std::time::Duration;

use serde_json::Value;

use super::SpecFault;

/// ESPv2's default deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15);

/// How the request path becomes the backend's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathTranslation {
    /// The address's path (its trailing `/` removed), then the request's path; the query is kept.
    AppendPathToAddress,
    /// The address's path alone; the path parameters are appended to the query as `name=value`.
    ConstantAddress,
}

/// A backend rule.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendRule {
    /// `scheme://host[:port][/path]`.
    pub address: String,
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub authority: String,
    /// The ID token's audience: `jwt_audience`, else `scheme://authority` (see [`Self::audience`]).
    audience: String,
    /// The address's path with no trailing `/` (empty for none).
    pub path: String,
    /// Path translation; the default is APPEND at the top level and CONSTANT on an operation.
    pub translation: PathTranslation,
    /// Audience of the ID token sent to the backend; `None`: the address itself.
    pub jwt_audience: Option<String>,
    /// No ID token: the caller's `Authorization` goes through untouched.
    pub disable_auth: bool,
    /// Longest wait for the response head.
    pub deadline: Duration,
    /// `h2` to ask for HTTP/2 (external backends; a Pier service speaks what it was deployed with).
    pub http2: bool,
}

impl BackendRule {
    /// Reads a rule; `top_level` decides the default path translation.
    pub fn parse(v: &Value, ptr: &str, top_level: bool) -> Result<Self, SpecFault> {
        let obj = v
            .as_object()
            .ok_or_else(|| SpecFault::at(ptr, "x-google-backend must be an object"))?;
        let address = obj
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| SpecFault::at(ptr, "x-google-backend needs an `address` (a URL)"))?;
        let uri: http::Uri = address.parse().map_err(|e| {
            SpecFault::at(
                format!("{ptr}/address"),
                format!("{address} is not a URL: {e}"),
            )
        })?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(SpecFault::at(
                format!("{ptr}/address"),
                format!(
                    "{address}: Pier's gateway forwards to http:// and https:// addresses (grpc:// backends are not supported)"
                ),
            ));
        }
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                SpecFault::at(format!("{ptr}/address"), format!("{address} has no host"))
            })?;
        if uri.query().is_some() {
            return Err(SpecFault::at(
                format!("{ptr}/address"),
                format!("{address}: an address has no query string"),
            ));
        }
        let path = uri.path().trim_end_matches('/').to_owned();
        let translation = match obj.get("path_translation").and_then(Value::as_str) {
            None if top_level => PathTranslation::AppendPathToAddress,
            None => PathTranslation::ConstantAddress,
            Some("APPEND_PATH_TO_ADDRESS") => PathTranslation::AppendPathToAddress,
            Some("CONSTANT_ADDRESS") => PathTranslation::ConstantAddress,
            Some(other) => {
                return Err(SpecFault::at(
                    format!("{ptr}/path_translation"),
                    format!("{other} is not APPEND_PATH_TO_ADDRESS or CONSTANT_ADDRESS"),
                ));
            }
        };
        let deadline = match obj.get("deadline") {
            None => DEFAULT_DEADLINE,
            Some(d) => {
                let secs = d
                    .as_f64()
                    .or_else(|| d.as_str()?.trim().parse().ok())
                    .ok_or_else(|| {
                        SpecFault::at(format!("{ptr}/deadline"), "a deadline is seconds, a number")
                    })?;
                if secs > 0.0 && secs.is_finite() {
                    Duration::from_millis((secs * 1000.0).round().max(1.0) as u64)
                } else {
                    DEFAULT_DEADLINE
                }
            }
        };
        let http2 = match obj.get("protocol").and_then(Value::as_str) {
            None | Some("http/1.1") => false,
            Some("h2") => true,
            Some(other) => {
                return Err(SpecFault::at(
                    format!("{ptr}/protocol"),
                    format!("{other} is not `http/1.1` or `h2`"),
                ));
            }
        };
        let jwt_audience = obj
            .get("jwt_audience")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let disable_auth = obj
            .get("disable_auth")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let audience = jwt_audience
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{authority}"));
        Ok(Self {
            address: address.to_owned(),
            scheme,
            authority,
            audience,
            path,
            translation,
            jwt_audience,
            disable_auth,
            deadline,
            http2,
        })
    }

    /// The audience of the ID token for this backend: `jwt_audience`, else the address's origin
    /// (`scheme://host[:port]`, ESPv2's own fallback, which is also the URL a Cloud Run or Pier service
    /// accepts as audience; Google's compiler writes the whole address, path included, which a service
    /// would refuse when the address has a path).
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The backend's path and query for a request to `path` with `query`, where the template bound
    /// `params` (raw, as in the request path).
    pub fn translate(
        &self,
        path: &str,
        query: Option<&str>,
        params: &[(String, String)],
    ) -> String {
        match self.translation {
            PathTranslation::AppendPathToAddress => {
                let mut out = format!("{}{path}", self.path);
                if out.is_empty() {
                    out.push('/');
                }
                if let Some(q) = query {
                    out.push('?');
                    out.push_str(q);
                }
                out
            }
            PathTranslation::ConstantAddress => {
                let mut out = if self.path.is_empty() {
                    "/".to_owned()
                } else {
                    self.path.clone()
                };
                let mut parts: Vec<String> = Vec::new();
                if let Some(q) = query.filter(|q| !q.is_empty()) {
                    parts.push(q.to_owned());
                }
                // Values were decoded when matched: encoded again, so `1&admin=true` stays one value.
                for (k, v) in params {
                    let v: String = form_urlencoded::byte_serialize(v.as_bytes()).collect();
                    parts.push(format!("{k}={v}"));
                }
                if !parts.is_empty() {
                    out.push('?');
                    out.push_str(&parts.join("&"));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: Value, top: bool) -> BackendRule {
        BackendRule::parse(&v, "/x", top).unwrap()
    }

    #[test]
    fn translation_follows_espv2() {
        // Top level: APPEND by default.
        let r = rule(json!({"address": "https://b.example/api/"}), true);
        assert_eq!(r.translation, PathTranslation::AppendPathToAddress);
        assert_eq!(
            r.translate("/v1/shelves/42", Some("x=1"), &[]),
            "/api/v1/shelves/42?x=1"
        );
        let r = rule(json!({"address": "https://b.example"}), true);
        assert_eq!(r.translate("/v1/a", None, &[]), "/v1/a");
        // Operation level: CONSTANT by default, path parameters after the client's query.
        let r = rule(json!({"address": "https://b.example/getShelf"}), false);
        assert_eq!(r.translation, PathTranslation::ConstantAddress);
        let params = vec![("shelf".to_owned(), "42".to_owned())];
        assert_eq!(
            r.translate("/v1/shelves/42", None, &params),
            "/getShelf?shelf=42"
        );
        assert_eq!(
            r.translate("/v1/shelves/42", Some("x=1"), &params),
            "/getShelf?x=1&shelf=42"
        );
        let r = rule(json!({"address": "https://b.example"}), false);
        assert_eq!(r.translate("/v1/a", None, &[]), "/");
        // A decoded value cannot add parameters of its own.
        let sneaky = vec![("id".to_owned(), "1&admin=true".to_owned())];
        assert_eq!(r.translate("/x", None, &sneaky), "/?id=1%26admin%3Dtrue");
    }

    #[test]
    fn deadline_audience_and_faults() {
        let r = rule(
            json!({"address": "https://b.example/x", "deadline": "7.5"}),
            false,
        );
        assert_eq!(r.deadline, Duration::from_millis(7500));
        assert_eq!(r.audience(), "https://b.example");
        let r = rule(
            json!({"address": "https://b.example", "deadline": 0, "jwt_audience": "aud", "protocol": "h2"}),
            true,
        );
        assert_eq!(r.deadline, DEFAULT_DEADLINE);
        assert_eq!(r.audience(), "aud");
        assert!(r.http2);
        for (v, at) in [
            (json!({"address": "grpc://b:1"}), "/x/address"),
            (
                json!({"address": "https://b", "protocol": "h3"}),
                "/x/protocol",
            ),
            (
                json!({"address": "https://b", "path_translation": "X"}),
                "/x/path_translation",
            ),
            (
                json!({"address": "https://b", "deadline": "soon"}),
                "/x/deadline",
            ),
            (json!({}), "/x"),
        ] {
            let e = BackendRule::parse(&v, "/x", true).unwrap_err();
            assert_eq!(e.pointer, at, "{v}: {e}");
        }
    }
}
