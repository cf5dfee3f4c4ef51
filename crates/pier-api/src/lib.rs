//! The admin API: REST and JSON over HTTP (axum), described by an OpenAPI document at `/openapi.json`, and
//! Pier's OpenID Connect endpoints (`/.well-known/openid-configuration`, `/jwks`, `/token`).
//!
//! The CLI speaks only to this API. Every `/v1` request needs a bearer token: an ID token Pier issued for
//! the CLI (audience `pier-cli`) or an access token (audience: the issuer). The [`Authenticator`] turns it
//! into a principal; each handler then checks the IAM permission its operation needs on its resource.
//! Errors have one JSON shape ([`pier_model::api::ErrorBody`]) and are made in one place
//! ([`error::ApiError`]).
//!
//! The same router is served on the admin listener (loopback by default) and, through the gateway, at the
//! base domain itself (`https://DOMAIN:PORT`), which is also the token issuer's URL.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use pier_control::Platform;
use pier_identity::Principal;
use pier_model::api::ServerInfo;

mod api_gateway_handlers;
mod authorize;
mod domain_handlers;
mod error;
mod extract;
mod handlers;
mod hosting_handlers;
mod iam_handlers;
mod idp;
mod image_handlers;
mod metrics_handlers;
mod openapi;
mod operation_handlers;

pub use error::ApiError;

/// Decides who sent a request.
pub trait Authenticator: Send + Sync + 'static {
    /// The caller, or why it is refused.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError>;
}

/// Accepts Pier-issued tokens addressed to the CLI or the API.
pub struct TokenAuth {
    platform: Arc<Platform>,
}

impl TokenAuth {
    /// An authenticator backed by the platform's identity service.
    pub fn new(platform: Arc<Platform>) -> Self {
        Self { platform }
    }
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenAuth")
    }
}

impl Authenticator for TokenAuth {
    fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::unauthenticated(
                    "missing bearer token: sign in with `pier auth login` (the CLI then sends tokens itself)",
                )
            })?;
        let identity = self.platform.identity();
        identity
            .authenticate(token.trim(), &identity.api_audiences())
            .map(|v| v.principal.clone())
            .map_err(|e| {
                ApiError::unauthenticated(format!(
                    "{e}: sign in again with `pier auth login` or `pier auth activate-service-account`"
                ))
            })
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
    /// The server's metrics, when it keeps them (`GET /v1/metrics`).
    pub metrics: Option<Arc<pier_metrics::Metrics>>,
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
    let v1 = handlers::routes()
        .merge(iam_handlers::routes())
        .merge(image_handlers::routes())
        .merge(domain_handlers::routes())
        .merge(api_gateway_handlers::routes())
        .merge(hosting_handlers::routes())
        .merge(operation_handlers::routes())
        .merge(metrics_handlers::routes())
        .layer(middleware::from_fn_with_state(state.clone(), require_auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/openapi.json", get(openapi::document))
        .merge(idp::routes())
        .merge(v1)
        .fallback(|| async { ApiError::not_found("no such API path: see /openapi.json") })
        .with_state(state)
}

/// Serves the API in-process at the base domain, through the gateway.
pub struct ApexHandler {
    router: Router,
}

impl ApexHandler {
    /// Wraps a router.
    pub fn new(router: Router) -> Self {
        Self { router }
    }
}

impl pier_gateway::LocalHandler for ApexHandler {
    fn call(
        &self,
        req: axum::http::Request<hyper::body::Incoming>,
        _peer: SocketAddr,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = axum::http::Response<pier_gateway::GatewayBody>>
                + Send,
        >,
    > {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let router = self.router.clone();
        Box::pin(async move {
            let resp = match router.oneshot(req.map(axum::body::Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            resp.map(|b| {
                pier_gateway::GatewayBody::Boxed(
                    b.map_err(|e| -> pier_gateway::upstream::BoxError { Box::new(e) })
                        .boxed_unsync(),
                )
            })
        })
    }
}

#[cfg(test)]
mod tests;
