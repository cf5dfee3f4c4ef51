//! A typed client for the admin API. Errors carry the server's message, or say how to reach the server.

use anyhow::{Result, anyhow};
use pier_model::api::{
    DeployRequest, ErrorBody, LogEntry, RevisionView, ServerInfo, ServiceView,
    UpdateServiceRequest, UpdateTrafficRequest,
};
use pier_model::{ProjectName, RevisionName, ServiceName};
use serde::de::DeserializeOwned;

/// The admin API client.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for the API at `base` (`http://127.0.0.1:8079`) with `token`.
    pub fn new(base: &str, token: String) -> Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| anyhow!("building the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        Self::json(self.execute(req).await?).await
    }

    async fn raw(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        req.bearer_auth(&self.token).send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!(
                    "cannot reach the Pier server at {}: start it with `pier server` (or check api_url in {})",
                    self.base,
                    crate::config::config_path().display()
                )
            } else {
                anyhow!("talking to the Pier server at {}: {e}", self.base)
            }
        })
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(anyhow!("{}", body.error.message)),
            Err(_) => Err(anyhow!("the server answered {status}: {}", text.trim())),
        }
    }

    async fn execute(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        Self::check(self.raw(req).await?).await
    }

    async fn json<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
        let text = resp
            .text()
            .await
            .map_err(|e| anyhow!("reading the API's answer: {e}"))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("the API answered with unexpected JSON: {e}"))
    }

    /// `GET path` as JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.get(self.url(path))).await
    }

    /// `POST path` with a JSON body, answer as JSON.
    pub async fn post_json<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// `PUT path` with a JSON body, answer as JSON.
    pub async fn put_json<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.http.put(self.url(path)).json(body)).await
    }

    /// `PUT path` with raw bytes (`application/octet-stream`), answer as JSON.
    pub async fn put_bytes<T: DeserializeOwned>(&self, path: &str, body: Vec<u8>) -> Result<T> {
        self.send(
            self.http
                .put(self.url(path))
                .header("content-type", "application/octet-stream")
                .body(body),
        )
        .await
    }

    /// `PATCH path` with a JSON body, answer as JSON.
    pub async fn patch_json<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    /// `DELETE path`, answer as JSON.
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// `POST path` with a JSON body, ignoring the answer's body.
    pub async fn post_empty_json<B: serde::Serialize>(&self, path: &str, body: &B) -> Result<()> {
        self.execute(self.http.post(self.url(path)).json(body))
            .await?;
        Ok(())
    }

    /// `POST path` with no body, ignoring the answer's body.
    pub async fn post_empty(&self, path: &str) -> Result<()> {
        self.execute(self.http.post(self.url(path))).await?;
        Ok(())
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.execute(self.http.delete(self.url(path))).await?;
        Ok(())
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn svc_path(project: &ProjectName, service: &ServiceName) -> String {
        format!("/v1/projects/{project}/services/{service}")
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<ServerInfo> {
        self.send(self.http.get(self.url("/v1/info"))).await
    }

    /// Lists services.
    pub async fn list_services(&self, project: &ProjectName) -> Result<Vec<ServiceView>> {
        self.send(
            self.http
                .get(self.url(&format!("/v1/projects/{project}/services"))),
        )
        .await
    }

    /// Describes a service; `None` when it does not exist.
    pub async fn get_service(
        &self,
        project: &ProjectName,
        service: &ServiceName,
    ) -> Result<Option<ServiceView>> {
        let resp = self
            .raw(self.http.get(self.url(&Self::svc_path(project, service))))
            .await?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Self::json(Self::check(resp).await?).await.map(Some)
    }

    /// Deletes a service.
    pub async fn delete_service(&self, project: &ProjectName, service: &ServiceName) -> Result<()> {
        self.execute(
            self.http
                .delete(self.url(&Self::svc_path(project, service))),
        )
        .await?;
        Ok(())
    }

    /// Changes settings that need no revision.
    pub async fn update_service(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        req: &UpdateServiceRequest,
    ) -> Result<ServiceView> {
        self.send(
            self.http
                .patch(self.url(&Self::svc_path(project, service)))
                .json(req),
        )
        .await
    }

    /// Starts a deploy.
    pub async fn deploy(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        req: &DeployRequest,
    ) -> Result<RevisionView> {
        self.send(
            self.http
                .post(self.url(&format!("{}/revisions", Self::svc_path(project, service))))
                .json(req),
        )
        .await
    }

    /// Changes traffic.
    pub async fn update_traffic(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        req: &UpdateTrafficRequest,
    ) -> Result<ServiceView> {
        self.send(
            self.http
                .post(self.url(&format!("{}/traffic", Self::svc_path(project, service))))
                .json(req),
        )
        .await
    }

    /// Lists revisions.
    pub async fn list_revisions(
        &self,
        project: &ProjectName,
        service: Option<&ServiceName>,
    ) -> Result<Vec<RevisionView>> {
        let mut req = self
            .http
            .get(self.url(&format!("/v1/projects/{project}/revisions")));
        if let Some(s) = service {
            req = req.query(&[("service", s.as_str())]);
        }
        self.send(req).await
    }

    /// Describes a revision, waiting up to `wait_secs` while it deploys.
    pub async fn get_revision(
        &self,
        project: &ProjectName,
        revision: &RevisionName,
        wait_secs: u64,
    ) -> Result<RevisionView> {
        self.send(
            self.http
                .get(self.url(&format!("/v1/projects/{project}/revisions/{revision}")))
                .query(&[("wait", wait_secs)]),
        )
        .await
    }

    /// A long-running operation by name (`projects/P/locations/local/operations/ID`); with `after`, it
    /// waits (up to 30 s) for a version past that one.
    pub async fn get_operation(
        &self,
        name: &str,
        after: Option<u64>,
    ) -> Result<pier_model::operations::OperationView> {
        let mut req = self.http.get(self.url(&format!("/v1/{name}")));
        if let Some(v) = after {
            req = req.query(&[("after", v), ("wait", 30)]);
        }
        self.send(req).await
    }

    /// Deletes a revision.
    pub async fn delete_revision(
        &self,
        project: &ProjectName,
        revision: &RevisionName,
    ) -> Result<()> {
        self.execute(
            self.http
                .delete(self.url(&format!("/v1/projects/{project}/revisions/{revision}"))),
        )
        .await?;
        Ok(())
    }

    /// Reads logs.
    pub async fn logs(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        query: &[(&str, String)],
    ) -> Result<Vec<LogEntry>> {
        self.send(
            self.http
                .get(self.url(&format!("{}/logs", Self::svc_path(project, service))))
                .query(query),
        )
        .await
    }

    /// Follows logs: calls `each` for every line until the server closes the stream.
    pub async fn follow_logs(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        query: &[(&str, String)],
        mut each: impl FnMut(LogEntry),
    ) -> Result<()> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        q.push(("follow", "true".into()));
        let mut resp = self
            .execute(
                self.http
                    .get(self.url(&format!("{}/logs", Self::svc_path(project, service))))
                    .query(&q),
            )
            .await?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| anyhow!("log stream: {e}"))? {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(entry) = serde_json::from_slice::<LogEntry>(&line) {
                    each(entry);
                }
            }
        }
        Ok(())
    }
}
