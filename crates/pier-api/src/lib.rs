//! The admin API: REST and JSON over HTTP (axum), described by an OpenAPI document at `/openapi.json`.
//!
//! The CLI speaks only to this API. Every request but `/healthz` and `/openapi.json` needs a bearer token,
//! checked by the [`Authenticator`] (today the admin token the server writes at first start, compared in
//! constant time; the identity work replaces it behind the same trait). Errors have one JSON shape
//! ([`pier_model::api::ErrorBody`]) and are made in one place ([`error::ApiError`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use pier_control::Platform;
use pier_model::api::ServerInfo;

mod error;
mod extract;
mod handlers;
mod openapi;

pub use error::ApiError;

/// Who a request comes from, as far as the API can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The holder of the server's admin token.
    Admin,
}

/// Decides who sent a request.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller, or why it is refused.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError>;
}

/// Accepts exactly one bearer token, compared in constant time.
pub struct AdminToken {
    token: String,
}

impl AdminToken {
    /// An authenticator for `token`.
    pub fn new(token: String) -> Self {
        Self { token }
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl Authenticator for AdminToken {
    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        use subtle::ConstantTimeEq;
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "missing bearer token: the CLI reads it from its config file; other clients send `Authorization: Bearer <token>`",
                )
            })?;
        if bool::from(presented.as_bytes().ct_eq(self.token.as_bytes())) {
            Ok(Principal::Admin)
        } else {
            Err(ApiError::unauthenticated(
                "invalid token: use the token in the server's data dir (admin-token)",
            ))
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The control plane.
    pub platform: Arc<Platform>,
    /// Who may call.
    pub auth: Arc<dyn Authenticator>,
    /// What `/v1/info` says.
    pub info: Arc<ServerInfo>,
}

async fn require_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match state.auth.authenticate(req.headers()) {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

/// The API's router.
pub fn router(state: AppState) -> Router {
    let v1 = handlers::routes().layer(middleware::from_fn_with_state(state.clone(), require_auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/openapi.json", get(openapi::document))
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such API path: see /openapi.json") })
        .with_state(state)
}

#[cfg(test)]
mod tests;
