//! The web console, served at the base domain under `/console` (`https://DOMAIN:PORT/console`).
//!
//! Server-rendered HTML pages over the admin API: the console calls the same router the CLI calls, in
//! process, with the signed-in user's own access token ([`api`]), so the API's IAM checks decide
//! what each user sees and may change (a viewer sees, and an edit comes back with the API's 403
//! message). It signs users in as an OAuth client of Pier's own authorization server: the
//! authorization code grant with PKCE (`/authorize`, then `/token`; see [`session`]).
//!
//! Pages (`P` a project, `S` a service):
//!
//! | path | what |
//! | --- | --- |
//! | `/console/projects/P/services` | services: status, URL, last deploy and who made it |
//! | `/console/projects/P/services/S` | a service: charts, revisions with traffic and tags (a form), live logs, invokers (grant and revoke), domain mappings, deploy |
//! | `/console/projects/P/operations/ID` | a deploy's progress, followed with htmx (long polls of the API's operation) |
//!
//! Interactivity is small: htmx (the operation page) and uPlot (the charts), pinned released files
//! embedded in the binary ([`assets`]), plus `console.js` for the charts and the log stream (server-sent
//! events). No inline script runs: the pages' content security policy allows only the console's files.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

mod actions;
mod api;
mod assets;
mod html;
mod live;
mod pages;
mod session;

use api::Api;
use session::{Current, SESSION_COOKIE, SIGNIN_COOKIE, Sessions, Signed};

/// The console's OAuth client id, registered with the authorization server.
pub const CLIENT_ID: &str = "pier-console";

/// The project a bare `/console` opens.
const DEFAULT_PROJECT: &str = "default";

/// The console's state: the API it calls, where it lives, who is signed in.
pub struct Console {
    api: Api,
    /// `https://DOMAIN:PORT`: the issuer, the console's origin and the base of its redirect URI.
    origin: String,
    sessions: Sessions,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

type Shared = Arc<Console>;

/// The console's routes (all under `/console`), calling `api` (the admin API's router, whose
/// `/authorize` and `/token` are the issuer's) for everything; `origin` is the issuer's URL,
/// `https://DOMAIN:PORT`.
pub fn router(api: Router, origin: &str) -> Router {
    let console = Arc::new(Console {
        api: Api(api),
        origin: origin.trim_end_matches('/').to_owned(),
        sessions: Sessions::default(),
    });
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/signin", get(sign_in))
        .route("/console/callback", get(callback))
        .route("/console/signout", post(actions::sign_out))
        .route("/console/assets/{version}/{name}", get(assets::serve))
        .route("/console/projects/{project}/services", get(pages::services))
        .route(
            "/console/projects/{project}/services/{service}",
            get(pages::service),
        )
        .route(
            "/console/projects/{project}/services/{service}/traffic",
            post(actions::traffic),
        )
        .route(
            "/console/projects/{project}/services/{service}/iam",
            post(actions::iam),
        )
        .route(
            "/console/projects/{project}/services/{service}/deploy",
            post(actions::deploy),
        )
        .route(
            "/console/projects/{project}/services/{service}/logs",
            get(live::logs),
        )
        .route(
            "/console/projects/{project}/services/{service}/history",
            get(live::history),
        )
        .route(
            "/console/projects/{project}/operations/{operation}",
            get(live::operation),
        )
        .with_state(console)
}

impl Console {
    fn redirect_uri(&self) -> String {
        format!("{}/console/callback", self.origin)
    }

    /// The signed-in user behind the request's cookie (refreshing their access token when it is
    /// about to expire), with the cookie's value.
    async fn signed(&self, headers: &HeaderMap) -> Option<(String, Signed)> {
        let id = session::cookie(headers, SESSION_COOKIE)?;
        let refresh = match self.sessions.current(&id) {
            Current::Fresh(s) => return Some((id, s)),
            Current::None => return None,
            Current::Stale { refresh } => refresh,
        };
        match self
            .api
            .token(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("audience", CLIENT_ID),
            ])
            .await
        {
            Ok(t) => self.sessions.refreshed(&id, t.access_token, t.expires_in),
            Err(e) => {
                if e.status == StatusCode::BAD_REQUEST {
                    // Revoked or unknown: this browser signs in again.
                    self.sessions.close(&id);
                }
                return None;
            }
        }
        match self.sessions.current(&id) {
            Current::Fresh(s) => Some((id, s)),
            _ => None,
        }
    }
}

/// Where a browser that is not signed in goes: the sign-in, coming back to `next`.
fn to_sign_in(next: &str) -> Response {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    no_store(Redirect::to(&format!("/console/signin?{q}")).into_response())
}

fn no_store(mut r: Response) -> Response {
    html::protect(r.headers_mut());
    r
}

#[derive(serde::Deserialize)]
struct HomeParams {
    project: Option<String>,
}

/// `GET /console`: the services of `?project=` (or of the default project).
async fn home(Query(q): Query<HomeParams>) -> Response {
    let project = q
        .project
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PROJECT.to_owned());
    no_store(
        Redirect::to(&format!(
            "/console/projects/{}/services",
            html::seg(project.trim())
        ))
        .into_response(),
    )
}

#[derive(serde::Deserialize)]
struct SignInParams {
    next: Option<String>,
}

/// `GET /console/signin`: starts the authorization code grant (RFC 6749 §4.1.1) with a PKCE challenge
/// (RFC 7636 §4.3) and a `state` bound to this browser by a cookie.
async fn sign_in(State(c): State<Shared>, Query(q): Query<SignInParams>) -> Response {
    let next = q
        .next
        .filter(|n| safe_next(n))
        .unwrap_or_else(|| "/console".to_owned());
    let verifier = session::random();
    let challenge = pier_identity::pkce::s256(&verifier);
    let state = c.sessions.begin(verifier, next);
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", &c.redirect_uri())
        .append_pair("scope", "openid email")
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let mut r = no_store(Redirect::to(&format!("/authorize?{q}")).into_response());
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        SIGNIN_COOKIE,
        &state,
        std::time::Duration::from_secs(600),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Whether `next` may be where a sign-in returns: a path of the console itself (never an open
/// redirect), short, of plain URL characters (so it is a valid `Location` as it is).
fn safe_next(n: &str) -> bool {
    n.len() <= 2048
        && (n == "/console" || n.starts_with("/console/") || n.starts_with("/console?"))
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%?=&+:@!$'()*,;".contains(&b))
}

#[derive(serde::Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /console/callback`: the authorization server's answer (RFC 6749 §4.1.2). The code is redeemed
/// only for the browser whose cookie holds the same `state`.
async fn callback(
    State(c): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<CallbackParams>,
) -> Response {
    let fail = |status: StatusCode, why: &str| {
        let mut r = html::html(
            status,
            format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in failed · Pier</title></head>\
                 <body><h1>Sign-in failed</h1><p id=\"error\">{}</p><p><a href=\"/console/signin\">Sign in again</a></p></body></html>",
                html::esc(why)
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
            SIGNIN_COOKIE,
            "",
            std::time::Duration::ZERO,
        )) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
    };
    let (Some(state), Some(cookie)) =
        (q.state.as_deref(), session::cookie(&headers, SIGNIN_COOKIE))
    else {
        return fail(
            StatusCode::BAD_REQUEST,
            "this sign-in was not started by this browser (no state, or its cookie is gone): start again",
        );
    };
    if !session::same(state, &cookie) {
        return fail(
            StatusCode::BAD_REQUEST,
            "this sign-in answer belongs to another sign-in: start again",
        );
    }
    let Some(pending) = c.sessions.finish(state) else {
        return fail(
            StatusCode::BAD_REQUEST,
            "this sign-in took too long or was already used: start again",
        );
    };
    if let Some(e) = q.error {
        let why = q.error_description.unwrap_or_default();
        return fail(StatusCode::BAD_REQUEST, &format!("{e}: {why}"));
    }
    let Some(code) = q.code else {
        return fail(
            StatusCode::BAD_REQUEST,
            "the answer carries no code: start again",
        );
    };
    let redirect_uri = c.redirect_uri();
    let tokens = match c
        .api
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("client_id", CLIENT_ID),
            ("code_verifier", &pending.verifier),
        ])
        .await
    {
        Ok(t) => t,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, &e.message),
    };
    let Some(refresh) = tokens.refresh_token else {
        return fail(
            StatusCode::BAD_GATEWAY,
            "the token endpoint gave no refresh token",
        );
    };
    #[derive(serde::Deserialize)]
    struct WhoAmI {
        principal: String,
    }
    let who: WhoAmI = match c.api.get(&tokens.access_token, "/v1/auth/whoami").await {
        Ok(w) => w,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, &e.message),
    };
    let email = html::member_name(&who.principal).to_owned();
    let id = c
        .sessions
        .open(email, tokens.access_token, tokens.expires_in, refresh);
    let mut r = no_store(Redirect::to(&pending.next).into_response());
    for cookie in [
        session::set_cookie(
            SESSION_COOKIE,
            &id,
            std::time::Duration::from_secs(12 * 3600),
        ),
        session::set_cookie(SIGNIN_COOKIE, "", std::time::Duration::ZERO),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sign_in_returns_only_into_the_console() {
        for ok in [
            "/console",
            "/console/projects/default/services",
            "/console/projects/p/operations/x?service=web",
        ] {
            assert!(safe_next(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/console",
            "//evil.example/console",
            "/consolevil",
            "/console/\\evil",
            "/console/\u{e9}",
            "/console/\nSet-Cookie:x",
            &format!("/console/{}", "a".repeat(3000)),
        ] {
            assert!(!safe_next(bad), "{bad}");
        }
    }
}
