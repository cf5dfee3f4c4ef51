//! The identity guard, every route's admission filter: ingress, then authentication, then authorization, following Cloud Run's observed
//! behaviour.
//!
//! 1. **Ingress.** A route with ingress `internal` (or `internal-and-cloud-load-balancing`) answers 404 to
//!    anything that is not one of Pier's own instances. The peer is identified by the runtime (which
//!    process, or which namespace, owns the connection), never by headers, so a forged `Host` or
//!    `X-Forwarded-For` changes nothing. Checked before authentication.
//! 2. **Public services** (allUsers holds the invoker role) and services with the invoker check off pass
//!    through, their `Authorization` header theirs; but a Pier token addressed to something else (the
//!    CLI's client id, the admin API, another service) has its signature removed, so a public service
//!    never receives a token it could replay elsewhere. A token addressed to the service stays whole
//!    (services with `--no-invoker-iam-check` verify it themselves).
//! 3. **CORS preflight** (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) to a private service
//!    is refused with 403: browsers do not send credentials on preflight, so it cannot be authorized.
//! 4. **Token.** From `X-Serverless-Authorization: Bearer` when present (then `Authorization` is passed to
//!    the app untouched), else `Authorization: Bearer`. None: 403. One that fails verification (signature,
//!    algorithm, times, issuer, audience, revoked principal or key): 401 with
//!    `WWW-Authenticate: Bearer error="invalid_token"`. Valid but without `run.routes.invoke`: 403.
//! 5. **Forward** with the token's signature replaced by `SIGNATURE_REMOVED_BY_PIER`, so the app can read
//!    the claims but cannot replay the token. A client that sends a token in that form is refused: only
//!    Pier makes them, so any such token an app receives is one Pier verified.

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use pier_identity::{TokenError, Verified};

use crate::error::Refusal;
use crate::headers::Forwarding;
use crate::routes::Route;
use crate::stages::Filter;

/// The header Cloud Run checks before `Authorization`.
pub const X_SERVERLESS_AUTHORIZATION: HeaderName =
    HeaderName::from_static("x-serverless-authorization");
pub use pier_identity::tokens::SIGNATURE_REMOVED;

/// Verifies bearer tokens: signature, times, issuer, audience, and that the principal still exists.
pub trait TokenVerifier: Send + Sync + 'static {
    /// What the token says, or why it is refused.
    fn verify(&self, token: &str, audiences: &[String]) -> Result<Arc<Verified>, TokenError>;
}

/// The guard.
pub struct IdentityGuard {
    tokens: Arc<dyn TokenVerifier>,
    issuer: String,
    metrics: Option<Arc<pier_metrics::GatewayMetrics>>,
}

impl IdentityGuard {
    /// A guard verifying tokens with `tokens`; `issuer` is Pier's own (whose tokens are stripped where
    /// they are not addressed to the service).
    pub fn new(tokens: Arc<dyn TokenVerifier>, issuer: &str) -> Self {
        Self {
            tokens,
            issuer: issuer.trim_end_matches('/').to_owned(),
            metrics: None,
        }
    }

    /// Counts the tokens it checks into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<pier_metrics::GatewayMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Removes the signature of every Pier token in `req` (but `except`) that is not addressed to the
    /// route: the CLI's client id, the admin API's audience and other services' URLs do not count.
    fn strip_foreign(
        &self,
        route: &Route,
        req: &mut http::request::Parts,
        except: Option<&HeaderName>,
    ) {
        for name in [X_SERVERLESS_AUTHORIZATION, header::AUTHORIZATION] {
            if except == Some(&name) {
                continue;
            }
            let Some(value) = req.headers.get(&name) else {
                continue;
            };
            let Some(peeked) = bearer(value).and_then(pier_identity::tokens::peek) else {
                continue;
            };
            let addressed = peeked.audiences.iter().any(|a| {
                a != pier_identity::tokens::CLI_CLIENT_ID
                    && (route.access.audiences.contains(a) || route.access.passthrough.contains(a))
            });
            if peeked.issuer == self.issuer
                && !addressed
                && let Some(stripped) = strip_signature(value)
            {
                req.headers.insert(name, stripped);
            }
        }
    }
}

/// Whether a header carries a token in the form Pier forwards verified ones (signature removed).
fn already_stripped(v: &HeaderValue) -> bool {
    bearer(v).is_some_and(|t| t.ends_with(&format!(".{SIGNATURE_REMOVED}")))
}

fn refuse(status: StatusCode, msg: String) -> Refusal {
    Refusal::new(status, msg)
}

fn bearer(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let (scheme, token) = s.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `HEADER.PAYLOAD.SIGNATURE_REMOVED_BY_PIER`, in the same header and with the same scheme.
fn strip_signature(value: &HeaderValue) -> Option<HeaderValue> {
    let s = value.to_str().ok()?;
    let (scheme, token) = s.split_once(' ')?;
    let cut = token.trim().rfind('.')?;
    HeaderValue::from_str(&format!(
        "{scheme} {}.{SIGNATURE_REMOVED}",
        &token.trim()[..cut]
    ))
    .ok()
}

impl Filter for IdentityGuard {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn on_request(
        &self,
        route: &Route,
        conn: &Forwarding,
        req: &mut http::request::Parts,
    ) -> Result<(), Refusal> {
        let access = &route.access;
        if access.ingress != pier_model::Ingress::All {
            // Set by the listener: only the entrances inside instances' namespaces mark connections
            // internal; nothing arriving on the host's listeners is an instance.
            // Internal means from an instance of the same project (Cloud Run: the project's VPC).
            let internal = conn.internal.get() == Some(&route.project);
            if !internal {
                // Cloud Run answers a blocked ingress with 404, as if nothing were there.
                return Err(refuse(
                    StatusCode::NOT_FOUND,
                    "Not Found: this service only accepts requests from inside Pier (ingress internal)."
                        .into(),
                ));
            }
        }
        // Only Pier makes tokens with a removed signature: one from a client is a forgery of that form.
        if [&X_SERVERLESS_AUTHORIZATION, &header::AUTHORIZATION]
            .iter()
            .any(|h| req.headers.get(*h).is_some_and(already_stripped))
        {
            return Err(invalid_token(
                "this token's signature was removed by Pier, so it cannot be used to call a service",
            ));
        }
        if !access.invoker_check || access.invokers.all_users {
            self.strip_foreign(route, req, None);
            return Ok(());
        }
        if req.method == Method::OPTIONS
            && req.headers.contains_key(header::ORIGIN)
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden: CORS preflight to private service {} is refused (browsers send no credentials on preflight); make the service public or serve CORS from a public endpoint.",
                    route.service
                ),
            ));
        }
        let header_name = if req.headers.contains_key(&X_SERVERLESS_AUTHORIZATION) {
            X_SERVERLESS_AUTHORIZATION
        } else {
            header::AUTHORIZATION
        };
        let Some(value) = req.headers.get(&header_name) else {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden: service {} is private. Send an identity token: -H \"Authorization: Bearer $(pier auth print-identity-token)\"",
                    route.service
                ),
            ));
        };
        let Some(token) = bearer(value) else {
            return Err(invalid_token(
                "the Authorization header is not `Bearer <token>`",
            ));
        };
        let checked = self.tokens.verify(token, &access.audiences);
        if let Some(m) = &self.metrics {
            m.token(match checked {
                Ok(_) => pier_metrics::TokenCheck::Accepted,
                Err(_) => pier_metrics::TokenCheck::Refused,
            });
        }
        let verified = match checked {
            Ok(v) => v,
            Err(e) => return Err(invalid_token(&e.to_string())),
        };
        let principal = &verified.principal;
        if !access.invokers.allows(Some(principal)) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden: {principal} may not invoke service {}: an admin can grant it with `pier services add-iam-policy-binding {} --member={principal} --role=roles/run.invoker`",
                    route.service, route.service
                ),
            ));
        }
        // The cached stripped form (no formatting per request).
        let stripped = HeaderValue::from_maybe_shared(verified.stripped.clone())
            .ok()
            .or_else(|| strip_signature(value));
        if let Some(stripped) = stripped {
            req.headers.insert(header_name.clone(), stripped);
        }
        // The other header (the app's own `Authorization` beside `X-Serverless-Authorization`) is the
        // app's, unless it is a Pier token meant for something else.
        self.strip_foreign(route, req, Some(&header_name));
        Ok(())
    }
}

fn invalid_token(why: &str) -> Refusal {
    let description: String = why
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    let r = Refusal::new(
        StatusCode::UNAUTHORIZED,
        format!(
            "Unauthorized: {why}. Get a fresh token with `pier auth print-identity-token --audiences SERVICE_URL`."
        ),
    );
    match HeaderValue::from_str(&format!(
        "Bearer error=\"invalid_token\", error_description=\"{description}\""
    )) {
        Ok(v) => r.with_header(header::WWW_AUTHENTICATE, v),
        Err(_) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stripped_in_place() {
        let v = HeaderValue::from_static("Bearer aaa.bbb.ccc");
        assert_eq!(
            strip_signature(&v).unwrap(),
            "Bearer aaa.bbb.SIGNATURE_REMOVED_BY_PIER"
        );
        assert_eq!(
            bearer(&HeaderValue::from_static("bearer  x.y.z ")),
            Some("x.y.z")
        );
        assert_eq!(bearer(&HeaderValue::from_static("Basic abc")), None);
    }
}
