//! Pier's OpenID Connect endpoints, public like any identity provider's: discovery, the signing keys
//! (JWKS), the token endpoint and token revocation.
//!
//! The token endpoint takes form-encoded grants, as Google's does:
//!
//! - `urn:ietf:params:oauth:grant-type:jwt-bearer` with an `assertion` signed by a service-account key
//!   (what `google-auth` sends); with `target_audience` in the assertion it answers an `id_token`.
//! - `password` (`username`, `password`): a user signs in; answers a `refresh_token` and tokens.
//! - `refresh_token` (`refresh_token`, optional `audience`): fresh tokens for a signed-in user.
//! - `authorization_code` (`code`, `redirect_uri`, `client_id`, `code_verifier`): a registered client
//!   redeems the code `/authorize` gave its user (RFC 6749 §4.1.3, RFC 7636 §4.5; see [`crate::authorize`]).
//!
//! Errors are OAuth's: 400 with `{"error": "invalid_grant", "error_description": "..."}`.
//!
//! What the standards require, each checked by a test (`crates/pier/tests/token_endpoint.rs`):
//!
//! - RFC 6749 §3.2: only `POST` (anything else is 405); §3.1: no parameter more than once
//!   (`invalid_request`); parameters sent without a value count as omitted; §5.1: every answer with a
//!   token carries `Cache-Control: no-store` and `Pragma: no-cache`; §5.2: errors are JSON with `error`
//!   from the RFC's list, 400 (`unsupported_grant_type` for unknown grants).
//! - RFC 7523 §2.1: exactly one `assertion`; §3: it must be RS256-signed by a key of the service account
//!   named in `iss`, addressed (`aud`) to this token endpoint, unexpired, not before its `nbf`, and no
//!   longer-lived than an hour; otherwise `invalid_grant`. Two deviations, for Google's client libraries:
//!   `sub` may be absent (google-auth's ID-token assertions carry none; when present it must equal `iss`),
//!   and `aud` may be Google's own token URI, which some of them write whatever the key file says.
//! - RFC 7009 §2.1: revocation is `POST` with a `token`; §2.2: it answers 200 whether or not the token
//!   was valid (an unknown token is not an error), so nothing about tokens leaks.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::AppState;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route(
            "/authorize",
            get(crate::authorize::authorize_get)
                .post(crate::authorize::authorize_post)
                // A sign-in form is a few hundred bytes.
                .layer(axum::extract::DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/token", post(token))
        .route("/revoke", post(revoke))
}

async fn discovery(State(s): State<AppState>) -> impl IntoResponse {
    let iss = s.platform.identity().issuer().url().to_owned();
    axum::Json(serde_json::json!({
        "issuer": iss,
        "jwks_uri": format!("{iss}/jwks"),
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": [
            "authorization_code",
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
        [("cache-control", "no-store"), ("pragma", "no-cache")],
        axum::Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// Reads a form-encoded body: each parameter once (RFC 6749 §3.1), empty values dropped (§3.2). A
/// body that breaks either is an `invalid_request` (the error's description).
fn read_form(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<HashMap<String, String>, String> {
    let form_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(
            "send a form-encoded body (Content-Type: application/x-www-form-urlencoded)".into(),
        );
    }
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if out.contains_key(k.as_ref()) {
            return Err(format!(
                "parameter {k} is sent more than once: send each parameter once"
            ));
        }
        out.insert(k.into_owned(), v.into_owned());
    }
    out.retain(|_, v| !v.is_empty());
    Ok(out)
}

async fn token(State(s): State<AppState>, headers: axum::http::HeaderMap, body: Bytes) -> Response {
    let f = match read_form(&headers, &body) {
        Ok(f) => f,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let id = s.platform.identity().clone();
    let get = |k: &str| f.get(k).map(String::as_str);
    let grant = get("grant_type").unwrap_or("");
    // RSA signing and argon2 are CPU work: keep them off the async workers.
    let f2 = f.clone();
    let grant_owned = grant.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let get = |k: &str| f2.get(k).map(String::as_str);
        match grant_owned.as_str() {
            "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
                get("assertion").map(|a| id.grant_jwt_bearer(a))
            }
            "password" => match (get("username"), get("password")) {
                (Some(u), Some(p)) => Some(id.grant_password(u, p)),
                _ => None,
            },
            "refresh_token" => get("refresh_token").map(|r| id.grant_refresh(r, get("audience"))),
            "authorization_code" => get("code").map(|c| {
                id.grant_authorization_code(
                    c,
                    get("redirect_uri"),
                    get("client_id"),
                    get("code_verifier"),
                )
            }),
            _ => None,
        }
    })
    .await
    .ok()
    .flatten();
    match result {
        Some(Ok(t)) => (
            [("cache-control", "no-store"), ("pragma", "no-cache")],
            axum::Json(t),
        )
            .into_response(),
        Some(Err(e)) if e.error == "temporarily_unavailable" => {
            let mut r = oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                e.error,
                e.error_description,
            );
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, 5u32.into());
            r
        }
        Some(Err(e)) => oauth_error(StatusCode::BAD_REQUEST, e.error, e.error_description),
        None if !matches!(
            grant,
            "urn:ietf:params:oauth:grant-type:jwt-bearer"
                | "password"
                | "refresh_token"
                | "authorization_code"
        ) =>
        {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!(
                    "grant_type {grant:?} is not supported: use authorization_code, urn:ietf:params:oauth:grant-type:jwt-bearer, password or refresh_token"
                ),
            )
        }
        None => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "grant_type {grant} is missing a parameter (code, assertion, username/password or refresh_token)"
            ),
        ),
    }
}

async fn revoke(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let f = match read_form(&headers, &body) {
        Ok(f) => f,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let Some(t) = f.get("token").cloned() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send token=THE_TOKEN (RFC 7009 §2.1)".into(),
        );
    };
    // 200 whether the token was a live refresh token or anything else (RFC 7009 §2.2).
    let revoked = s
        .platform
        .identity()
        .blocking(move |id| id.revoke(&t))
        .await;
    match revoked {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::warn!("revoking a token failed: {e}");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the token could not be revoked now: try again".into(),
            )
        }
    }
}
