//! A metadata server compatible with Google's (the part Cloud Run instances use), so Google's client
//! libraries find identity tokens inside instances without a code change.
//!
//! Each instance gets its own endpoint, on a listener the server opens inside the instance's own network
//! namespace and reaches as `169.254.169.254:80` there (where Google's libraries look by default). Only
//! the instance can connect to it, so every caller is the instance; nothing else on the host can reach
//! any endpoint. A request is answered only when it carries `Metadata-Flavor: Google` (except the root
//! ping), and no `X-Forwarded-For`, `Forwarded` or `X-Real-IP` (an SSRF guard: a proxied request is not
//! the instance asking).
//!
//! Served paths (under `/computeMetadata/v1/`): `instance/service-accounts/{default,EMAIL}/identity?audience=`
//! (an ID token for the revision's service account), `.../email`, `.../token`, `.../?recursive=true`,
//! `instance/service-accounts/`, `project/project-id`, `project/numeric-project-id`, `instance/region`,
//! `instance/zone`, `instance/id`. Every answer carries `Metadata-Flavor: Google`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pier_model::InstanceId;

/// Why no token was minted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRefusal {
    /// The account may not have this token (disabled, deleted, an audience it may not name): 403.
    Refused(String),
    /// The server could not mint it now (its keys, its store): 503, and the instance retries.
    Unavailable(String),
}

impl std::fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenRefusal::Refused(why) | TokenRefusal::Unavailable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for TokenRefusal {}

/// Mints tokens for service accounts.
pub trait TokenSource: Send + Sync + 'static {
    /// An ID token for `service_account` with audience `audience`.
    fn id_token(&self, service_account: &str, audience: &str) -> Result<String, TokenRefusal>;
    /// An access token for `service_account` and its lifetime in seconds.
    fn access_token(&self, service_account: &str) -> Result<(String, u64), TokenRefusal>;
}

/// A refusal as the instance sees it.
fn refused(e: TokenRefusal) -> Response {
    match e {
        TokenRefusal::Refused(why) => refuse(StatusCode::FORBIDDEN, &format!("Forbidden: {why}")),
        TokenRefusal::Unavailable(why) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("Service Unavailable: {why}; retry"),
        ),
    }
}

/// What one instance's endpoint knows.
#[derive(Clone)]
struct Endpoint {
    instance: InstanceId,
    service_account: String,
    project: String,
    numeric_project: String,
    tokens: Arc<dyn TokenSource>,
}

/// The metadata server: one endpoint per running instance.
pub struct MetadataServer {
    tokens: Arc<dyn TokenSource>,
    endpoints: Mutex<HashMap<InstanceId, (SocketAddr, tokio::task::AbortHandle)>>,
}

impl std::fmt::Debug for MetadataServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataServer").finish_non_exhaustive()
    }
}

fn numeric(project: &str) -> String {
    // A stable 12-digit number per project name (FNV-1a), like a project number.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in project.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012}", h % 1_000_000_000_000)
}

impl MetadataServer {
    /// A server minting tokens with `tokens`.
    pub fn new(tokens: Arc<dyn TokenSource>) -> Arc<Self> {
        Arc::new(Self {
            tokens,
            endpoints: Mutex::new(HashMap::new()),
        })
    }

    /// Serves an instance's endpoint on `listener`, opened inside the instance's own network namespace:
    /// only the instance can connect to it, so every caller is the instance.
    pub fn open_in_namespace(
        &self,
        listener: std::net::TcpListener,
        instance: &InstanceId,
        service_account: &str,
        project: &str,
    ) -> std::io::Result<()> {
        self.serve(listener, instance, service_account, project)
    }

    fn serve(
        &self,
        std_listener: std::net::TcpListener,
        instance: &InstanceId,
        service_account: &str,
        project: &str,
    ) -> std::io::Result<()> {
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let ep = Endpoint {
            instance: instance.clone(),
            service_account: service_account.to_owned(),
            project: project.to_owned(),
            numeric_project: numeric(project),
            tokens: self.tokens.clone(),
        };
        let app = router(ep);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        if let Some((_, old)) = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(instance.clone(), (addr, task.abort_handle()))
        {
            old.abort();
        }
        Ok(())
    }

    /// Closes an instance's endpoint.
    pub fn close(&self, instance: &InstanceId) {
        if let Some((_, task)) = self
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(instance)
        {
            task.abort();
        }
    }

    /// Endpoints open now.
    pub fn open_count(&self) -> usize {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

fn flavored(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    r
}

fn text(body: impl Into<String>) -> Response {
    flavored(StatusCode::OK, "application/text", body.into())
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    flavored(status, "text/plain", format!("{msg}\n"))
}

/// Checks the headers; `None` means go on.
fn gate(headers: &HeaderMap, need_flavor: bool) -> Option<Response> {
    if ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|h| headers.contains_key(*h))
    {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "Forbidden: requests carrying X-Forwarded-For, Forwarded or X-Real-IP are refused (the metadata server is not reachable through proxies)",
        ));
    }
    let flavor_ok = headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Google"));
    if need_flavor && !flavor_ok {
        return Some(refuse(
            StatusCode::FORBIDDEN,
            "Forbidden: missing Metadata-Flavor: Google header",
        ));
    }
    None
}

fn router(ep: Endpoint) -> Router {
    Router::new()
        .route("/", get(root))
        .route(
            "/computeMetadata/v1/instance/service-accounts/",
            get(accounts),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/{account}/",
            get(account_info),
        )
        .route(
            "/computeMetadata/v1/instance/service-accounts/{account}/{item}",
            get(account_item),
        )
        .route("/computeMetadata/v1/project/project-id", get(project_id))
        .route(
            "/computeMetadata/v1/project/numeric-project-id",
            get(numeric_project_id),
        )
        .route("/computeMetadata/v1/instance/region", get(region))
        .route("/computeMetadata/v1/instance/zone", get(zone))
        .route("/computeMetadata/v1/instance/id", get(instance_id))
        .fallback(not_found)
        .with_state(ep)
}

async fn root(h: HeaderMap) -> Response {
    gate(&h, false).unwrap_or_else(|| text("computeMetadata/\n"))
}

async fn not_found(h: HeaderMap) -> Response {
    gate(&h, true)
        .unwrap_or_else(|| refuse(StatusCode::NOT_FOUND, "Not Found: no such metadata path"))
}

async fn accounts(State(ep): State<Endpoint>, h: HeaderMap) -> Response {
    gate(&h, true).unwrap_or_else(|| text(format!("default/\n{}/\n", ep.service_account)))
}

fn known_account(ep: &Endpoint, account: &str) -> bool {
    account == "default" || account == ep.service_account
}

async fn account_info(
    State(ep): State<Endpoint>,
    Path(account): Path<String>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = gate(&h, true) {
        return r;
    }
    if !known_account(&ep, &account) {
        return refuse(StatusCode::NOT_FOUND, "Not Found: unknown service account");
    }
    let doc = serde_json::json!({
        "aliases": ["default"],
        "email": ep.service_account,
        "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
    });
    flavored(StatusCode::OK, "application/json", doc.to_string())
}

async fn account_item(
    State(ep): State<Endpoint>,
    Path((account, item)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    h: HeaderMap,
) -> Response {
    if let Some(r) = gate(&h, true) {
        return r;
    }
    if !known_account(&ep, &account) {
        return refuse(StatusCode::NOT_FOUND, "Not Found: unknown service account");
    }
    match item.as_str() {
        "email" => text(ep.service_account.clone()),
        "aliases" => text("default\n"),
        "scopes" => text("https://www.googleapis.com/auth/cloud-platform\n"),
        "identity" => {
            let Some(aud) = q.get("audience").filter(|a| !a.is_empty()) else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "Bad Request: the audience parameter is required",
                );
            };
            let (tokens, sa, aud) = (ep.tokens.clone(), ep.service_account.clone(), aud.clone());
            match tokio::task::spawn_blocking(move || tokens.id_token(&sa, &aud)).await {
                Ok(Ok(t)) => text(t),
                Ok(Err(e)) => refused(e),
                Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "token minting failed"),
            }
        }
        "token" => {
            let (tokens, sa) = (ep.tokens.clone(), ep.service_account.clone());
            match tokio::task::spawn_blocking(move || tokens.access_token(&sa)).await {
                Ok(Ok((t, ttl))) => flavored(
                    StatusCode::OK,
                    "application/json",
                    serde_json::json!({"access_token": t, "expires_in": ttl, "token_type": "Bearer"})
                        .to_string(),
                ),
                Ok(Err(e)) => refused(e),
                Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "token minting failed"),
            }
        }
        _ => refuse(StatusCode::NOT_FOUND, "Not Found: no such metadata path"),
    }
}

async fn project_id(State(ep): State<Endpoint>, h: HeaderMap) -> Response {
    gate(&h, true).unwrap_or_else(|| text(ep.project.clone()))
}

async fn numeric_project_id(State(ep): State<Endpoint>, h: HeaderMap) -> Response {
    gate(&h, true).unwrap_or_else(|| text(ep.numeric_project.clone()))
}

async fn region(State(ep): State<Endpoint>, h: HeaderMap) -> Response {
    gate(&h, true).unwrap_or_else(|| text(format!("projects/{}/regions/local", ep.numeric_project)))
}

async fn zone(State(ep): State<Endpoint>, h: HeaderMap) -> Response {
    gate(&h, true).unwrap_or_else(|| text(format!("projects/{}/zones/local-1", ep.numeric_project)))
}

async fn instance_id(State(ep): State<Endpoint>, h: HeaderMap) -> Response {
    gate(&h, true).unwrap_or_else(|| text(ep.instance.to_string()))
}

#[cfg(test)]
mod tests;
