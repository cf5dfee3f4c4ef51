//! The authorization endpoint (`/authorize`, RFC 6749 §3.1 and §4.1.1, with PKCE per RFC 7636 §4.3):
//! a registered client sends its user here; the user signs in with their password on a page of the
//! server's own, and goes back to the client's redirect URI with a one-time code, which the client
//! redeems at `/token` (`grant_type=authorization_code`).
//!
//! What the standards require, each checked by a test (`crates/pier/tests/token_endpoint.rs`):
//!
//! - §3.1: `GET` and `POST`, parameters sent without a value count as omitted, none more than once.
//! - §4.1.2.1 and §3.1.2.4: a missing, unknown or repeated client, or a redirect URI other than the
//!   registered one, is told to the user (400 with a page), never redirected to; every other error goes
//!   back to the client's redirect URI as `error`, `error_description` and `state`.
//! - RFC 7636 §4.4.1: without `code_challenge`, or with a method other than `S256`, `invalid_request`.
//! - §10.13: the page cannot be framed (`X-Frame-Options: DENY`, CSP `frame-ancestors 'none'`), and
//!   nothing of it is cached (`Cache-Control: no-store`).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pier_iam::{AuthorizationRequest, AuthorizeError};

use crate::AppState;

/// `GET /authorize?...`: the sign-in page for a valid request.
pub(crate) async fn authorize_get(
    State(s): State<AppState>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = pairs(query.as_deref().unwrap_or("").as_bytes());
    match s.platform.identity().check_authorization(&params) {
        Ok(_) => page(StatusCode::OK, &sign_in_form(&params, "", None)),
        Err(e) => refusal(e),
    }
}

/// `POST /authorize` (form-encoded): the same parameters, plus the user's `email` and `password`.
pub(crate) async fn authorize_post(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return page(
            StatusCode::BAD_REQUEST,
            "<p id=\"error\">Send the sign-in form (application/x-www-form-urlencoded).</p>",
        );
    }
    let all = pairs(&body);
    let credential = |name: &str| {
        all.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (email, password) = (credential("email"), credential("password"));
    let params: Vec<(String, String)> = all
        .iter()
        .filter(|(k, _)| k != "email" && k != "password")
        .cloned()
        .collect();
    let identity = s.platform.identity().clone();
    let request = match identity.check_authorization(&params) {
        Ok(r) => r,
        Err(e) => return refusal(e),
    };
    if email.is_empty() || password.is_empty() {
        return page(
            StatusCode::BAD_REQUEST,
            &sign_in_form(&params, &email, Some("Enter your email and password.")),
        );
    }
    let r2 = request.clone();
    let e2 = email.clone();
    let issued =
        tokio::task::spawn_blocking(move || identity.authorize_with_password(&r2, &e2, &password))
            .await;
    match issued {
        Ok(Ok(code)) => redirect(&request, &[("code", &code)]),
        Ok(Err(e)) if e.error == "invalid_grant" => page(
            StatusCode::UNAUTHORIZED,
            &sign_in_form(&params, &email, Some(&e.error_description)),
        ),
        Ok(Err(e)) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            &sign_in_form(&params, &email, Some(&e.error_description)),
        ),
        Err(_) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            &sign_in_form(
                &params,
                &email,
                Some("The server could not sign you in now: try again."),
            ),
        ),
    }
}

fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw).into_owned().collect()
}

/// A refused request: a page for the user, or the error on the client's redirect URI.
fn refusal(e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Untrusted(why) => page(
            StatusCode::BAD_REQUEST,
            &format!(
                "<h1>This sign-in request cannot be used</h1><p id=\"error\">{}</p>",
                escape(&why)
            ),
        ),
        AuthorizeError::Redirect {
            redirect_uri,
            error,
            description,
            state,
        } => {
            let r = AuthorizationRequest {
                client_id: String::new(),
                redirect_uri,
                redirect_uri_sent: true,
                code_challenge: String::new(),
                scope: None,
                state,
            };
            redirect(&r, &[("error", error), ("error_description", &description)])
        }
    }
}

/// 302 to the request's redirect URI with `params` and its `state` (RFC 6749 §4.1.2).
fn redirect(r: &AuthorizationRequest, params: &[(&str, &str)]) -> Response {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    if let Some(s) = &r.state {
        q.append_pair("state", s);
    }
    let sep = if r.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{sep}{}", r.redirect_uri, q.finish());
    let mut resp = StatusCode::FOUND.into_response();
    protect(resp.headers_mut());
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The headers every answer of this endpoint carries.
fn protect(h: &mut HeaderMap) {
    for (k, v) in [
        ("cache-control", "no-store"),
        ("pragma", "no-cache"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
}

fn page(status: StatusCode, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Sign in to Pier</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>"
    );
    let mut resp = (status, html).into_response();
    protect(resp.headers_mut());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f6f7f9;margin:0}\
main{max-width:22rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px #0002}\
label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.5rem;box-sizing:border-box}\
button{margin-top:1.2rem;padding:.5rem 1rem}#error{color:#b00020}";

/// The sign-in form, carrying the request's parameters as hidden fields.
fn sign_in_form(params: &[(String, String)], email: &str, error: Option<&str>) -> String {
    let hidden: String = params
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let error = error
        .map(|e| format!("<p id=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<h1>Sign in to Pier</h1>{error}<form method=\"post\" action=\"/authorize\">{hidden}\
         <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required value=\"{}\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button id=\"signin\" type=\"submit\">Sign in</button></form>",
        escape(email)
    )
}

/// Escapes text for HTML content and quoted attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
