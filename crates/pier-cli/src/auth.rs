//! The CLI's credentials and how it turns them into tokens: a signed-in user's refresh token (exchanged at
//! the token endpoint), or a service-account key file (an RS256 assertion exchanged by the JWT-bearer
//! grant, exactly as Google's client libraries do).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use pier_identity::keyfile::KeyFile;
use serde::{Deserialize, Serialize};

/// A user's stored sign-in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserCredentials {
    /// Always `authorized_user`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The user's email.
    pub account: String,
    /// The refresh token.
    pub refresh_token: String,
}

/// What the CLI signs in with.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// A user.
    User(UserCredentials),
    /// A service account key.
    ServiceAccount(Box<KeyFile>),
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

impl Credentials {
    /// Reads a credentials file (either kind).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading credentials {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        match v.get("type").and_then(|t| t.as_str()) {
            Some("authorized_user") => Ok(Credentials::User(serde_json::from_value(v)?)),
            Some("service_account") => Ok(Credentials::ServiceAccount(Box::new(
                serde_json::from_value(v).with_context(|| {
                    format!(
                        "{} is not a complete service-account key file",
                        path.display()
                    )
                })?,
            ))),
            _ => bail!(
                "{} is neither a Pier sign-in nor a service-account key file",
                path.display()
            ),
        }
    }

    /// The account's email.
    pub fn account(&self) -> &str {
        match self {
            Credentials::User(u) => &u.account,
            Credentials::ServiceAccount(k) => &k.client_email,
        }
    }

    /// An ID token with audience `audience`, from the token endpoint at `api_url/token`.
    pub async fn id_token(
        &self,
        http: &reqwest::Client,
        api_url: &str,
        audience: &str,
    ) -> Result<String> {
        let form: Vec<(&str, String)> = match self {
            Credentials::User(u) => vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", u.refresh_token.clone()),
                ("audience", audience.to_owned()),
            ],
            Credentials::ServiceAccount(k) => vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ),
                ("assertion", assertion(k, Some(audience))?),
            ],
        };
        let answer = token_request(http, api_url, &form).await?;
        answer
            .id_token
            .ok_or_else(|| anyhow!("the token endpoint returned no ID token"))
    }

    /// An access token: what the admin API accepts (services never receive one whole), as gcloud calls
    /// Google's APIs with access tokens and services with ID tokens.
    pub async fn access_token(&self, http: &reqwest::Client, api_url: &str) -> Result<String> {
        let form: Vec<(&str, String)> = match self {
            Credentials::User(u) => vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", u.refresh_token.clone()),
            ],
            Credentials::ServiceAccount(k) => vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                ),
                ("assertion", assertion(k, None)?),
            ],
        };
        let answer = token_request(http, api_url, &form).await?;
        answer
            .access_token
            .ok_or_else(|| anyhow!("the token endpoint returned no access token"))
    }
}

/// Signs the JWT-bearer assertion a service-account key makes: with `target_audience` it asks for an ID
/// token, without for an access token.
fn assertion(key: &KeyFile, target_audience: Option<&str>) -> Result<String> {
    let enc = jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.as_bytes())
        .map_err(|e| anyhow!("the key file's private_key is unusable: {e}"))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.private_key_id.clone());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = serde_json::json!({
        "iss": key.client_email,
        "sub": key.client_email,
        "aud": key.token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    if let Some(aud) = target_audience {
        claims["target_audience"] = serde_json::Value::String(aud.to_owned());
    }
    jsonwebtoken::encode(&header, &claims, &enc).map_err(|e| anyhow!("signing the assertion: {e}"))
}

async fn token_request(
    http: &reqwest::Client,
    api_url: &str,
    form: &[(&str, String)],
) -> Result<TokenAnswer> {
    let url = format!("{}/token", api_url.trim_end_matches('/'));
    let resp = http.post(&url).form(form).send().await.map_err(|e| {
        if e.is_connect() {
            anyhow!("cannot reach the Pier server at {api_url}: start it with `pier server`")
        } else {
            anyhow!("talking to {url}: {e}")
        }
    })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        if let Ok(e) = serde_json::from_str::<OAuthError>(&text) {
            bail!(
                "{}{}",
                e.error,
                e.error_description
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            );
        }
        bail!("the token endpoint answered {status}: {}", text.trim());
    }
    serde_json::from_str(&text).map_err(|e| anyhow!("unexpected token answer: {e}"))
}

/// Signs a user in with a password; returns their credentials.
pub async fn login(
    http: &reqwest::Client,
    api_url: &str,
    email: &str,
    password: &str,
) -> Result<UserCredentials> {
    let answer = token_request(
        http,
        api_url,
        &[
            ("grant_type", "password".into()),
            ("username", email.to_owned()),
            ("password", password.to_owned()),
        ],
    )
    .await?;
    Ok(UserCredentials {
        kind: "authorized_user".into(),
        account: email.to_ascii_lowercase(),
        refresh_token: answer
            .refresh_token
            .ok_or_else(|| anyhow!("the server returned no refresh token"))?,
    })
}

/// Ends a user's session on the server.
pub async fn revoke(http: &reqwest::Client, api_url: &str, refresh_token: &str) -> Result<()> {
    let url = format!("{}/revoke", api_url.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .form(&[("token", refresh_token)])
        .send()
        .await
        .map_err(|e| anyhow!("talking to {url}: {e}"))?;
    if !resp.status().is_success() {
        bail!("revoking failed: {}", resp.status());
    }
    Ok(())
}
