//! Pier's OpenID Connect endpoints, public like any identity provider's: discovery, the signing keys
//! (JWKS), the token endpoint and token revocation.
//!
//! The token endpoint takes form-encoded grants, as Google's does:
//!
//! - `urn:ietf:params:oauth:grant-type:jwt-bearer` with an `assertion` signed by a service-account key
//!   (what `google-auth` sends); with `target_audience` in the assertion it answers an `id_token`.
//! - `password` (`username`, `password`): a user signs in; answers a `refresh_token` and tokens.
//! - `refresh_token` (`refresh_token`, optional `audience`): fresh tokens for a signed-in user.
//!
//! Errors are OAuth's: 400 with `{"error": "invalid_grant", "error_description": "..."}`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
}

async fn discovery(State(s): State<AppState>) -> impl IntoResponse {
    let iss = s.platform.identity().issuer().url().to_owned();
    axum::Json(serde_json::json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/jwks"),
        "token_endpoint": format!("{iss}/token"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": [
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "password",
            "refresh_token"
        ],
        "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"],
    }))
}

async fn jwks(State(s): State<AppState>) -> impl IntoResponse {
    (
        [("cache-control", "public, max-age=300")],
        axum::Json(s.platform.identity().issuer().ring().jwks()),
    )
}

fn oauth_error(status: StatusCode, error: &str, description: String) -> Response {
    (
        status,
        [("cache-control", "no-store")],
        axum::Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

async fn token(
    State(s): State<AppState>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send a form-encoded body (application/x-www-form-urlencoded)".into(),
        );
    };
    let id = s.platform.identity().clone();
    let get = |k: &str| f.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let grant = get("grant_type").unwrap_or("");
    // RSA signing and argon2 are CPU work: keep them off the async workers.
    let f2 = f.clone();
    let grant_owned = grant.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let get = |k: &str| f2.get(k).map(String::as_str).filter(|v| !v.is_empty());
        match grant_owned.as_str() {
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                get("assertion").map(|a| id.grant_jwt_bearer(a))
            }
            "password" => match (get("username"), get("password")) {
                (Some(u), Some(p)) => Some(id.grant_password(u, p)),
                _ => None,
            },
            "refresh_token" => get("refresh_token").map(|r| id.grant_refresh(r, get("audience"))),
            _ => None,
        }
    })
    .await
    .ok()
    .flatten();
    match result {
        Some(Ok(t)) => ([("cache-control", "no-store")], axum::Json(t)).into_response(),
        Some(Err(e)) => oauth_error(StatusCode::BAD_REQUEST, e.error, e.error_description),
        None if !matches!(
            grant,
            "urn:ietf:params:oauth:grant-type:jwt-bearer" | "password" | "refresh_token"
        ) =>
        {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type {grant:?} is not supported: use urn:ietf:params:oauth:grant-type:jwt-bearer, password or refresh_token"
                ),
            )
        }
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "grant_type {grant} is missing a parameter (assertion, username/password or refresh_token)"
            ),
        ),
    }
}

async fn revoke(State(s): State<AppState>, Form(f): Form<HashMap<String, String>>) -> Response {
    match f.get("token") {
        Some(t) => match s.platform.identity().revoke(t) {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            ),
        },
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send token=...".into(),
        ),
    }
}
