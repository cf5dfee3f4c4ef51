//! The admin API, called in process: every page the console shows and every change it makes is one
//! or more requests to the same router the CLI talks to, with the signed-in user's own access token,
//! so the API's IAM checks decide what the user sees and may do. Nothing here reads the store.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use serde::de::DeserializeOwned;
use tower::ServiceExt;

/// Largest API answer the console reads whole (a project's revisions, a log page).
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// A refused or failed API call, with the API's own message (what to show the user).
#[derive(Clone, Debug)]
pub(crate) struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
}

impl ApiFailure {
    fn internal(why: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("the console could not read the API's answer: {why}"),
        }
    }
}

/// The API router and how to call it.
#[derive(Clone)]
pub(crate) struct Api(pub Router);

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<axum::response::Response, ApiFailure> {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some((ct, bytes)) => req.header(header::CONTENT_TYPE, ct).body(Body::from(bytes)),
            None => req.body(Body::empty()),
        }
        .map_err(ApiFailure::internal)?;
        match self.0.clone().oneshot(req).await {
            Ok(r) => Ok(r),
            Err(never) => match never {},
        }
    }

    async fn answer<T: DeserializeOwned>(resp: axum::response::Response) -> Result<T, ApiFailure> {
        let status = resp.status();
        let bytes = read(resp.into_body()).await?;
        if !status.is_success() {
            return Err(failure(status, &bytes));
        }
        if bytes.is_empty() {
            return serde_json::from_slice(b"null").map_err(ApiFailure::internal);
        }
        serde_json::from_slice(&bytes).map_err(ApiFailure::internal)
    }

    /// `GET path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, ApiFailure> {
        Self::answer(self.call(Method::GET, path, Some(token), None).await?).await
    }

    /// `method path` with a JSON body, answered as JSON (`()` for an empty answer).
    pub async fn send<T: DeserializeOwned>(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ApiFailure> {
        let json = serde_json::to_vec(body).map_err(ApiFailure::internal)?;
        Self::answer(
            self.call(method, path, Some(token), Some(("application/json", json)))
                .await?,
        )
        .await
    }

    /// `GET path` whose answer streams (followed logs): the body as it comes.
    pub async fn stream(&self, token: &str, path: &str) -> Result<Body, ApiFailure> {
        let resp = self.call(Method::GET, path, Some(token), None).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = read(resp.into_body()).await?;
            return Err(failure(status, &bytes));
        }
        Ok(resp.into_body())
    }

    /// A form to the token endpoint, as any OAuth client sends it.
    pub async fn token(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, ApiFailure> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        Self::answer(
            self.call(
                Method::POST,
                "/token",
                None,
                Some(("application/x-www-form-urlencoded", body.into_bytes())),
            )
            .await?,
        )
        .await
    }
}

impl Api {
    /// Revokes a refresh token (RFC 7009).
    pub async fn token_revoke(&self, token: &str) -> Result<(), ApiFailure> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .finish();
        let resp = self
            .call(
                Method::POST,
                "/revoke",
                None,
                Some(("application/x-www-form-urlencoded", body.into_bytes())),
            )
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let status = resp.status();
            Err(failure(status, &read(resp.into_body()).await?))
        }
    }
}

/// What the token endpoint answers (RFC 6749 §5.1). No `Debug`: it holds tokens.
#[derive(serde::Deserialize)]
pub(crate) struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    pub expires_in: u64,
}

async fn read(body: Body) -> Result<Bytes, ApiFailure> {
    axum::body::to_bytes(body, MAX_ANSWER)
        .await
        .map_err(ApiFailure::internal)
}

/// The API's message from its error shape (`{"error": {"message"}}`) or OAuth's
/// (`{"error_description"}`).
fn failure(status: StatusCode, bytes: &[u8]) -> ApiFailure {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let message = v["error"]["message"]
        .as_str()
        .or_else(|| v["error_description"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the API answered {status}"));
    ApiFailure { status, message }
}
