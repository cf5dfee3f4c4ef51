//! End-user authentication on a plain service (`pier deploy --end-user-auth`): the same JWT checks and
//! user header as an API gateway's JWT scheme, as a filter after the service's guard.
//!
//! The token is read from `Authorization: Bearer`. On a private service the guard takes the caller's
//! IAM token from `X-Serverless-Authorization` when present (Cloud Run's rule), leaving `Authorization`
//! to the end user; a caller who put the IAM token in `Authorization` is told so. With `optional`, a
//! request without a token passes (without the user header); a token that is there must be good.

use http::StatusCode;
use http::header::{self, HeaderValue};
use http::request::Parts;
use pier_gateway::headers::Forwarding;
use pier_gateway::{Filter, Refusal, Route};

use crate::filter::USER_INFO;
use crate::jwt::{JwtFailure, JwtVerifier};

/// The end-user token check of one service.
#[derive(Debug)]
pub struct EndUserFilter {
    verifier: JwtVerifier,
    issuer: String,
    optional: bool,
}

impl EndUserFilter {
    /// A check with `verifier` (whose locations are ignored: the token is in `Authorization`).
    pub fn new(verifier: JwtVerifier, issuer: &str, optional: bool) -> Self {
        Self {
            verifier,
            issuer: issuer.to_owned(),
            optional,
        }
    }
}

fn unauthorized(route: &Route, message: String, invalid: bool) -> Refusal {
    let r = Refusal::new(StatusCode::UNAUTHORIZED, message);
    let value = if invalid {
        "Bearer error=\"invalid_token\"".to_owned()
    } else {
        format!("Bearer realm=\"{}\"", route.service)
    };
    match HeaderValue::from_str(&value) {
        Ok(v) => r.with_header(header::WWW_AUTHENTICATE, v),
        Err(_) => r,
    }
}

impl Filter for EndUserFilter {
    fn name(&self) -> &'static str {
        "end-user-auth"
    }

    fn on_request(&self, route: &Route, _: &Forwarding, req: &mut Parts) -> Result<(), Refusal> {
        req.headers.remove(&USER_INFO);
        let token = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, t) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| t.trim())
            });
        let Some(token) = token else {
            if self.optional {
                return Ok(());
            }
            return Err(unauthorized(
                route,
                format!(
                    "Unauthorized: service {} needs an end user's ID token from {} in `Authorization: Bearer` (for a private service, send the IAM token in `X-Serverless-Authorization`).",
                    route.service, self.issuer
                ),
                false,
            ));
        };
        if token.ends_with(pier_gateway::auth::SIGNATURE_REMOVED) {
            return Err(unauthorized(
                route,
                format!(
                    "Unauthorized: service {} checks end users' tokens in `Authorization`, and that header held the IAM token: send the IAM token in `X-Serverless-Authorization` and the end user's ID token in `Authorization`.",
                    route.service
                ),
                true,
            ));
        }
        match self.verifier.verify(token) {
            Ok(payload) => {
                if let Ok(v) = HeaderValue::from_str(payload) {
                    req.headers.insert(USER_INFO, v);
                }
                Ok(())
            }
            Err(f) => {
                let (status, why) = f.status_and_message();
                let message = format!(
                    "{}: the end user's token is refused ({why}); get a fresh ID token from {}.",
                    if status == StatusCode::FORBIDDEN {
                        "Forbidden"
                    } else {
                        "Unauthorized"
                    },
                    self.issuer
                );
                if f == JwtFailure::Audience {
                    return Err(Refusal::new(StatusCode::FORBIDDEN, message));
                }
                Err(unauthorized(route, message, true))
            }
        }
    }
}
