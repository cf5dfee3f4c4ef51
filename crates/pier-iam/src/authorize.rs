//! The authorization code grant (RFC 6749 §4.1) with PKCE (RFC 7636), for Pier's own registered
//! clients: checking an authorization request, signing its user in, issuing a one-time code, and
//! redeeming that code at the token endpoint.
//!
//! Codes live in memory for [`CODE_LIFETIME`] (RFC 6749 §4.1.2: "a maximum authorization code lifetime
//! of 10 minutes is RECOMMENDED"); a restart loses the few in flight, and their users sign in again. A
//! code is kept after its redemption until it expires so that a second use is recognised: it is refused
//! and the session the first use opened is ended (§4.1.2's MUST and SHOULD).

use std::time::{Duration, Instant};

use pier_identity::pkce;

use super::*;
use crate::grants::{invalid_grant, unavailable};

/// The console's client id: a public client (RFC 6749 §2.1) whose one redirect URI is
/// `ISSUER/console/callback`.
pub const CONSOLE_CLIENT_ID: &str = "pier-console";

/// How long a code may wait for its redemption.
pub const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// The most parameters an authorization request may carry (it has nine at most, plus the sign-in
/// form's two): more is refused before anything else is read.
pub const MAX_PARAMETERS: usize = 24;

/// The scopes a client may ask for (OpenID Connect's standard ones); RFC 6749 §3.3 lets a server
/// refuse others (`invalid_scope`).
const SCOPES: &[&str] = &["openid", "email", "profile"];

/// An authorization request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// The registered client asking.
    pub client_id: String,
    /// Where the answer goes: the one the client sent, else its registered one (§3.1.2.3).
    pub redirect_uri: String,
    /// Whether the client sent `redirect_uri` (then the token request must repeat it, §4.1.3).
    pub redirect_uri_sent: bool,
    /// The PKCE challenge (`S256`).
    pub code_challenge: String,
    /// The scope asked for, as sent.
    pub scope: Option<String>,
    /// The client's `state`, echoed in the answer.
    pub state: Option<String>,
}

/// Why an authorization request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or its redirect URI is missing, unknown or doubtful: the user is told, and the
    /// browser is never sent to the URI (RFC 6749 §4.1.2.1, §3.1.2.4).
    Untrusted(String),
    /// Everything else goes back to the client, on its redirect URI (§4.1.2.1).
    Redirect {
        /// The verified redirect URI.
        redirect_uri: String,
        /// One of §4.1.2.1's codes.
        error: &'static str,
        /// What was wrong.
        description: String,
        /// The client's `state`, if it sent one.
        state: Option<String>,
    },
}

/// A code waiting for (or past) its redemption.
#[derive(Debug)]
struct Code {
    request: AuthorizationRequest,
    email: String,
    expires: Instant,
    /// The digest of the session its redemption opened.
    redeemed: Option<String>,
}

/// The codes issued and not yet expired, by the digest of the code.
#[derive(Debug, Default)]
pub(crate) struct Codes(std::sync::Mutex<HashMap<String, Code>>);

impl IdentityService {
    /// The redirect URIs registered for `client_id`, or `None` for an unknown client (RFC 6749
    /// §3.1.2.2: public clients must register theirs). The console is the only client today.
    pub fn redirect_uris(&self, client_id: &str) -> Option<Vec<String>> {
        (client_id == CONSOLE_CLIENT_ID).then(|| {
            vec![format!(
                "{}/console/callback",
                self.issuer.url().trim_end_matches('/')
            )]
        })
    }

    /// Checks an authorization request's parameters (query or form pairs, in order; empty values
    /// count as omitted, RFC 6749 §3.1) against RFC 6749 §4.1.1 and RFC 7636 §4.3.
    ///
    /// # Errors
    /// [`AuthorizeError::Untrusted`] for a missing, unknown or repeated `client_id` or a `redirect_uri`
    /// other than the registered one; [`AuthorizeError::Redirect`] for the rest.
    pub fn check_authorization(
        &self,
        params: &[(String, String)],
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        if params.len() > MAX_PARAMETERS {
            return Err(AuthorizeError::Untrusted(format!(
                "the request carries {} parameters, more than an authorization request has ({MAX_PARAMETERS} at most): start again from the application that sent you here",
                params.len()
            )));
        }
        // Each name's values, in one pass (empty values count as omitted, §3.1).
        let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
        for (k, v) in params.iter().filter(|(_, v)| !v.is_empty()) {
            by_name.entry(k.as_str()).or_default().push(v.as_str());
        }
        let all = |name: &str| -> Vec<&str> { by_name.get(name).cloned().unwrap_or_default() };
        let client_id = match all("client_id")[..] {
            [] => {
                return Err(AuthorizeError::Untrusted(
                    "the request names no client (client_id): start again from the application that sent you here".into(),
                ));
            }
            [one] => one.to_owned(),
            _ => {
                return Err(AuthorizeError::Untrusted(
                    "client_id is sent more than once: start again from the application that sent you here".into(),
                ));
            }
        };
        let registered = self.redirect_uris(&client_id).ok_or_else(|| {
            AuthorizeError::Untrusted(format!(
                "no client {client_id:?} is registered with this server: start again from the application that sent you here"
            ))
        })?;
        let (redirect_uri, redirect_uri_sent) = match all("redirect_uri")[..] {
            [] => (registered[0].clone(), false),
            [one] if registered.iter().any(|r| r == one) => (one.to_owned(), true),
            [one] => {
                return Err(AuthorizeError::Untrusted(format!(
                    "redirect_uri {one:?} is not registered for client {client_id}: this page will not send you there"
                )));
            }
            _ => {
                return Err(AuthorizeError::Untrusted(
                    "redirect_uri is sent more than once: start again from the application that sent you here".into(),
                ));
            }
        };
        let states = all("state");
        let state = (states.len() == 1).then(|| states[0].to_owned());
        let refuse = |error: &'static str, description: String| AuthorizeError::Redirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description,
            state: state.clone(),
        };
        if let Some((k, _)) = by_name.iter().find(|(_, v)| v.len() > 1) {
            return Err(refuse(
                "invalid_request",
                format!("parameter {k} is sent more than once (RFC 6749 §3.1)"),
            ));
        }
        let one = |name: &str| all(name).first().map(|v| (*v).to_owned());
        match one("response_type").as_deref() {
            None => {
                return Err(refuse(
                    "invalid_request",
                    "response_type is missing: send response_type=code".into(),
                ));
            }
            Some("code") => {}
            Some(other) => {
                return Err(refuse(
                    "unsupported_response_type",
                    format!("response_type {other:?} is not supported: send response_type=code"),
                ));
            }
        }
        let Some(code_challenge) = one("code_challenge") else {
            return Err(refuse(
                "invalid_request",
                "code challenge required (RFC 7636 §4.4.1): send code_challenge and code_challenge_method=S256".into(),
            ));
        };
        if one("code_challenge_method").as_deref() != Some(pkce::S256) {
            return Err(refuse(
                "invalid_request",
                "transform algorithm not supported (RFC 7636 §4.4.1): send code_challenge_method=S256".into(),
            ));
        }
        if !pkce::well_formed(&code_challenge) {
            return Err(refuse(
                "invalid_request",
                "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636 §4.2)"
                    .into(),
            ));
        }
        let scope = one("scope");
        if let Some(bad) = scope
            .as_deref()
            .and_then(|s| s.split(' ').find(|w| !w.is_empty() && !SCOPES.contains(w)))
        {
            return Err(refuse(
                "invalid_scope",
                format!("scope {bad:?} is not offered: ask for openid, email or profile"),
            ));
        }
        Ok(AuthorizationRequest {
            client_id,
            redirect_uri,
            redirect_uri_sent,
            code_challenge,
            scope,
            state,
        })
    }

    /// Signs a user in for a checked authorization request and issues its one-time code (RFC 6749
    /// §4.1.2).
    ///
    /// # Errors
    /// `invalid_grant` for a wrong email or password (or too many of them), `temporarily_unavailable`
    /// when the server cannot check or record now.
    pub fn authorize_with_password(
        &self,
        request: &AuthorizationRequest,
        email: &str,
        password: &str,
    ) -> Result<String, GrantError> {
        let email = self.check_password(email, password)?;
        let code = new_secret().map_err(|e| unavailable("make an authorization code", e))?;
        let now = Instant::now();
        let mut codes = self.codes.0.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, c| c.expires > now);
        codes.insert(
            secret_digest(&code),
            Code {
                request: request.clone(),
                email,
                expires: now + CODE_LIFETIME,
                redeemed: None,
            },
        );
        Ok(code)
    }

    /// `grant_type=authorization_code` (RFC 6749 §4.1.3, RFC 7636 §4.5–4.6): the code redeemed by the
    /// client it was issued to, with the same redirect URI and the verifier of its challenge, for a
    /// session's tokens (the ID token addressed to the client). A failed check leaves the code
    /// redeemable; a second redemption ends the first one's session.
    ///
    /// # Errors
    /// `invalid_request` without `client_id`; `invalid_grant` for anything that does not match.
    pub fn grant_authorization_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
        client_id: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let Some(client_id) = client_id else {
            return Err(GrantError {
                error: "invalid_request",
                error_description:
                    "client_id is missing: a public client names itself (RFC 6749 §4.1.3)".into(),
            });
        };
        let digest = secret_digest(code);
        let now = Instant::now();
        let mut codes = self.codes.0.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, c| c.expires > now);
        let Some(c) = codes.get_mut(&digest) else {
            return Err(invalid_grant(
                "the authorization code is unknown or expired: sign in again",
            ));
        };
        if let Some(session) = c.redeemed.take() {
            codes.remove(&digest);
            drop(codes);
            if let Err(e) = self.store.delete_session(&session) {
                tracing::error!("ending the session of a reused authorization code failed: {e}");
            }
            return Err(invalid_grant(
                "the authorization code was already used: the session it opened is ended; sign in again",
            ));
        }
        if c.request.client_id != client_id {
            return Err(invalid_grant(
                "the authorization code was issued to another client",
            ));
        }
        match redirect_uri {
            Some(r) if r == c.request.redirect_uri => {}
            None if !c.request.redirect_uri_sent => {}
            _ => {
                return Err(invalid_grant(
                    "redirect_uri differs from the authorization request's (RFC 6749 §4.1.3)",
                ));
            }
        }
        let Some(verifier) = verifier else {
            return Err(invalid_grant(
                "code_verifier is missing: send the verifier of the code_challenge (RFC 7636 §4.5)",
            ));
        };
        if !pkce::verifies(verifier, &c.request.code_challenge) {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge (RFC 7636 §4.6)",
            ));
        }
        let refresh = new_secret().map_err(|e| unavailable("make a refresh token", e))?;
        let session = secret_digest(&refresh);
        // Redeemed from here on, whatever the store says: the lock is not held across its write, and
        // a code whose session could not be recorded is spent (its user signs in again).
        c.redeemed = Some(session.clone());
        let (email, scope) = (c.email.clone(), c.request.scope.clone());
        drop(codes);
        self.store
            .create_session(&session, &email)
            .map_err(|e| unavailable("record the session", e))?;
        let mut resp = self.grant_refresh(&refresh, Some(client_id))?;
        resp.refresh_token = Some(refresh);
        resp.scope = scope;
        Ok(resp)
    }
}
