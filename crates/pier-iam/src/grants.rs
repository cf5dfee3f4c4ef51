//! The token endpoint's grants: password and refresh for users, the JWT-bearer assertion of a
//! service-account key, and revocation, answered in OAuth's shapes (RFC 6749 §5, RFC 7523).

use super::*;

/// What the token endpoint answers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TokenResponse {
    /// An access token (a Pier JWT the admin API accepts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// An ID token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// A refresh token (user sign-in only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Seconds until the tokens expire.
    pub expires_in: u64,
    /// The scope granted, when the client asked for one (RFC 6749 §5.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Always `Bearer`.
    pub token_type: &'static str,
}

/// Why a grant failed, in OAuth's shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GrantError {
    /// `invalid_grant`, `invalid_request`, `unsupported_grant_type`.
    pub error: &'static str,
    /// What was wrong.
    pub error_description: String,
}

/// A failure of the server itself (the store, randomness, signing): never `invalid_grant`, which
/// would tell the client its credentials are bad. Answered as `temporarily_unavailable` (HTTP 503 with
/// `Retry-After`, RFC 6749 §4.1.2.1's code); the cause goes to the server's log only.
pub(crate) fn unavailable(what: &str, cause: impl std::fmt::Display) -> GrantError {
    tracing::error!("token endpoint: {what} failed: {cause}");
    GrantError {
        error: "temporarily_unavailable",
        error_description: format!(
            "the server could not {what} now: retry in a few seconds; if it persists, its operator finds why in the server's log"
        ),
    }
}

pub(crate) fn invalid_grant(why: impl Into<String>) -> GrantError {
    GrantError {
        error: "invalid_grant",
        error_description: why.into(),
    }
}

/// A minting failure: the caller's fault when the request was (say, a refused audience), the
/// server's otherwise.
fn grant_failure(what: &str, e: ControlError) -> GrantError {
    match e.into_callers_fault() {
        Ok(why) => invalid_grant(why),
        Err(other) => unavailable(what, other),
    }
}

impl IdentityService {
    // ----- the token endpoint -----

    /// `grant_type=password`: a user signs in; answers a refresh token and an ID token for the CLI.
    pub fn grant_password(&self, email: &str, password: &str) -> Result<TokenResponse, GrantError> {
        let email = self.check_password(email, password)?;
        let refresh = new_secret().map_err(|e| unavailable("make a refresh token", e))?;
        self.store
            .create_session(&secret_digest(&refresh), &email)
            .map_err(|e| unavailable("record the session", e))?;
        let mut resp = self.grant_refresh(&refresh, None)?;
        resp.refresh_token = Some(refresh);
        Ok(resp)
    }

    /// Checks a user's password, slowed after failures; answers the normalized email.
    pub(crate) fn check_password(&self, email: &str, password: &str) -> Result<String, GrantError> {
        let email = normalize_email(email).map_err(|e| invalid_grant(e.to_string()))?;
        if let Some(wait) = signin::must_wait(&email) {
            return Err(invalid_grant(format!(
                "too many wrong passwords for {email}: wait {}s, then try again",
                wait.as_secs().max(1)
            )));
        }
        let user = self
            .store
            .user(&email)
            .map_err(|e| unavailable("read its users", e))?;
        // Same answer, in the same time, for unknown users and wrong passwords.
        let ok = pier_identity::passwords::verify_or_pretend(
            password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .map_err(|_| GrantError {
            error: "temporarily_unavailable",
            error_description: "the server is busy checking other sign-ins: retry in a few seconds"
                .into(),
        })?;
        if !ok {
            signin::failed(&email);
            return Err(invalid_grant("wrong email or password"));
        }
        signin::succeeded(&email);
        Ok(email)
    }

    /// `grant_type=refresh_token`: fresh tokens for a signed-in user; `audience` (a Pier extension)
    /// chooses the ID token's audience.
    pub fn grant_refresh(
        &self,
        refresh: &str,
        audience: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let email = self
            .store
            .session(&secret_digest(refresh))
            .map_err(|e| unavailable("read its sessions", e))?
            .ok_or_else(|| {
                invalid_grant(
                    "the refresh token is unknown or revoked: sign in again with `pier auth login`",
                )
            })?;
        let who = Principal::User(email);
        let id = self
            .mint_identity_token(&who, audience.unwrap_or(CLI_CLIENT_ID), None)
            .map_err(|e| grant_failure("sign an ID token", e))?;
        let access = self
            .mint_id_token(&who, self.issuer.url(), None)
            .map_err(|e| grant_failure("sign an access token", e))?;
        Ok(TokenResponse {
            access_token: Some(access),
            id_token: Some(id),
            refresh_token: None,
            expires_in: tokens::TOKEN_LIFETIME.as_secs() - 1,
            token_type: "Bearer",
            scope: None,
        })
    }

    /// Ends a session.
    pub fn revoke(&self, refresh: &str) -> Result<()> {
        Ok(self.store.delete_session(&secret_digest(refresh))?)
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`: a service account proves itself with a
    /// JWT signed by one of its keys. With `target_audience` the answer is an ID token, else an access
    /// token.
    pub fn grant_jwt_bearer(&self, assertion: &str) -> Result<TokenResponse, GrantError> {
        let kid = tokens::header_kid(assertion).map_err(|e| invalid_grant(e.to_string()))?;
        let key = self
            .store
            .key(&kid)
            .map_err(|e| unavailable("read its keys", e))?
            .ok_or_else(|| invalid_grant(format!("key {kid} does not exist (deleted?)")))?;
        if key.disabled {
            return Err(invalid_grant(format!("key {kid} is disabled")));
        }
        let dk = DecodingKey::from_rsa_raw_components(&key.n, &key.e);
        let token_uri = self.token_uri();
        let claims = verify_assertion(assertion, &dk, &[GOOGLE_TOKEN_URI, &token_uri])
            .map_err(|e| invalid_grant(format!("invalid assertion: {e}")))?;
        if claims.iss != key.email || claims.sub.as_ref().is_some_and(|s| *s != key.email) {
            return Err(invalid_grant(
                "the assertion's iss is not the service account that owns the key",
            ));
        }
        let who = Principal::ServiceAccount(key.email.clone());
        let (aud, id) = match &claims.target_audience {
            Some(aud) => (aud.clone(), true),
            None => (self.issuer.url().to_owned(), false),
        };
        let token = if id {
            self.mint_identity_token(&who, &aud, Some(&kid))
        } else {
            self.mint_id_token(&who, &aud, Some(&kid))
        }
        .map_err(|e| grant_failure("sign the token", e))?;
        Ok(if id {
            TokenResponse {
                id_token: Some(token),
                expires_in: tokens::TOKEN_LIFETIME.as_secs() - 1,
                token_type: "Bearer",
                ..Default::default()
            }
        } else {
            TokenResponse {
                access_token: Some(token),
                expires_in: tokens::TOKEN_LIFETIME.as_secs() - 1,
                token_type: "Bearer",
                ..Default::default()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_failures_are_never_invalid_grant() {
        let e = grant_failure(
            "sign the token",
            ControlError::Internal("disk on fire".into()),
        );
        assert_eq!(e.error, "temporarily_unavailable");
        assert!(!e.error_description.contains("disk on fire"), "{e:?}");
        let e = unavailable(
            "read its sessions",
            pier_store::StoreError::Unavailable("gone".into()),
        );
        assert_eq!(e.error, "temporarily_unavailable");
        // The caller's own mistakes still are.
        let e = grant_failure(
            "sign the token",
            ControlError::Invalid("audience refused".into()),
        );
        assert_eq!(
            (e.error, e.error_description.as_str()),
            ("invalid_grant", "audience refused")
        );
    }
}
