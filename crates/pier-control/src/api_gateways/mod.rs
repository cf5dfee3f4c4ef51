//! API gateways: APIs, their immutable configs, gateways serving one config each, and API keys. A
//! config's OpenAPI document is read and checked when it is created (a fault is refused with its JSON
//! pointer; lint findings come back as warnings); gateways become routes when routes are published
//! ([`routes`]), and every change here republishes them (keys included: the key directory is compiled
//! into each gateway's filter).
//!
//! Access rules (the handlers check them): configs name the service account whose ID tokens their
//! backends get, so creating or switching a gateway to a config needs `iam.serviceAccounts.actAs` on it;
//! a public gateway (the default, as Google's) needs `run.services.setIamPolicy` on the project.

use std::sync::Arc;

use pier_apigateway::{ApiSpec, JwksRegistry};
use pier_gateway::ExternalForward;
use pier_model::api_gateways::{
    ApiConfigView, ApiKeyView, ApiView, CorsSetting, CreateApiConfigRequest, CreateApiKeyRequest,
    CreateGatewayRequest, CreatedApiKey, GatewayView, UpdateGatewayRequest,
};
use pier_model::{HostKind, ProjectName, ServiceName};
use pier_store::{ApiConfigRecord, ApiKeyRecord, GatewayRecord};

use crate::{ControlError, Platform, Result};

pub(crate) mod routes;

/// What the control plane needs for API gateways.
#[derive(Clone, Default)]
pub struct ApiGatewayConfig {
    /// JWT issuers' key sets; `None`: JWT schemes accept no token (tests of the control plane alone).
    pub jwks: Option<Arc<JwksRegistry>>,
    /// Forwards to backends outside Pier; `None`: such backends answer 503.
    pub external: Option<Arc<dyn ExternalForward>>,
}

impl std::fmt::Debug for ApiGatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiGatewayConfig")
            .field("jwks", &self.jwks.is_some())
            .field("external", &self.external.is_some())
            .finish()
    }
}

/// A CORS setting that lets any origin's pages send credentials would hand every site the caller's
/// session: refused, as browsers refuse `*` with credentials.
fn check_cors(c: Option<&CorsSetting>) -> Result<()> {
    if let Some(c) = c {
        if c.allowed_origins.is_empty() {
            return Err(ControlError::Invalid(
                "a CORS setting needs at least one allowed origin (--cors-allow-origins)".into(),
            ));
        }
        if c.allow_credentials && c.allowed_origins.iter().any(|o| o == "*") {
            return Err(ControlError::Invalid(
                "--cors-allow-credentials with the origin `*` would let every site's pages send your users' credentials: list the origins".into(),
            ));
        }
    }
    Ok(())
}

/// Names of APIs, configs and gateways follow service names (lowercase letters, digits, hyphens).
fn check_name(what: &str, name: &str) -> Result<ServiceName> {
    name.parse().map_err(|e: pier_model::NameError| {
        ControlError::Invalid(format!("{what} name {name:?}: {e}"))
    })
}

fn spec_view(rec: &ApiConfigRecord, spec: &ApiSpec) -> ApiConfigView {
    ApiConfigView {
        name: rec.name.clone(),
        api: rec.api.clone(),
        title: spec.title.clone(),
        openapi_version: match spec.version {
            pier_apigateway::spec::OasVersion::Swagger2 => "swagger 2.0",
            pier_apigateway::spec::OasVersion::OpenApi30 => "openapi 3.0",
            pier_apigateway::spec::OasVersion::OpenApi31 => "openapi 3.1",
        }
        .into(),
        operations: spec
            .operations
            .iter()
            .map(|o| format!("{} {} ({})", o.method, o.template, o.id))
            .collect(),
        backend_auth_service_account: rec.service_account.clone(),
        warnings: spec.warnings.clone(),
        create_time: rec.created_at.clone(),
    }
}

pub(crate) fn cors_policy(s: &CorsSetting) -> pier_apigateway::CorsPolicy {
    let d = pier_apigateway::CorsPolicy::default();
    pier_apigateway::CorsPolicy {
        origins: s.allowed_origins.clone(),
        methods: s.allowed_methods.clone().unwrap_or(d.methods),
        headers: s.allowed_headers.clone().unwrap_or(d.headers),
        expose: s.expose_headers.clone().unwrap_or(d.expose),
        credentials: s.allow_credentials,
        max_age: s.max_age.unwrap_or(d.max_age),
    }
}

fn key_view(k: &ApiKeyRecord) -> ApiKeyView {
    ApiKeyView {
        uid: k.uid.clone(),
        display_name: k.display_name.clone(),
        key_prefix: k.prefix.clone(),
        api_targets: k.api_targets.clone(),
        create_time: k.created_at.clone(),
        delete_time: k.deleted_at.clone(),
    }
}

impl Platform {
    /// Creates an API (and the project, on first use).
    pub async fn create_api(&self, project: &ProjectName, name: &str) -> Result<ApiView> {
        check_name("API", name)?;
        let (p, n) = (project.clone(), name.to_owned());
        self.db(move |s| {
            s.ensure_project(&p, crate::project_hash)?;
            s.create_api(&p, &n)
        })
        .await?;
        self.list_apis(project)
            .await?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| ControlError::internal("the API just created is gone"))
    }

    /// The project's APIs.
    pub async fn list_apis(&self, project: &ProjectName) -> Result<Vec<ApiView>> {
        let p = project.clone();
        let apis = self.db(move |s| s.apis(&p)).await?;
        Ok(apis
            .into_iter()
            .map(|(name, created)| ApiView {
                name,
                project: project.to_string(),
                create_time: created,
            })
            .collect())
    }

    /// One API.
    pub async fn get_api(&self, project: &ProjectName, name: &str) -> Result<ApiView> {
        self.list_apis(project)
            .await?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "API {name} does not exist in project {project}: `pier api-gateway apis list` shows them"
                ))
            })
    }

    /// Deletes an API with no config left.
    pub async fn delete_api(&self, project: &ProjectName, name: &str) -> Result<()> {
        let (p, n) = (project.clone(), name.to_owned());
        self.db(move |s| s.delete_api(&p, &n)).await
    }

    /// Reads, checks and records a config. The backend service account defaults to the project's
    /// compute account; it must exist and be enabled.
    pub async fn create_api_config(
        &self,
        project: &ProjectName,
        api: &str,
        req: CreateApiConfigRequest,
    ) -> Result<ApiConfigView> {
        check_name("API config", &req.name)?;
        let spec = ApiSpec::parse(&req.openapi_spec)
            .map_err(|e| ControlError::Invalid(format!("the OpenAPI document is refused: {e}")))?;
        pier_apigateway::router::Router::new(&spec)
            .map_err(|e| ControlError::Invalid(format!("the OpenAPI document is refused: {e}")))?;
        let sa = self
            .acting_account(
                project,
                req.backend_auth_service_account.as_deref(),
                "--backend-auth-service-account",
            )
            .await?;
        let rec = ApiConfigRecord {
            project: project.clone(),
            api: api.to_owned(),
            name: req.name.clone(),
            spec: req.openapi_spec,
            service_account: sa,
            created_at: crate::domains::rfc3339(std::time::SystemTime::now()),
        };
        let r2 = rec.clone();
        self.db(move |s| s.create_api_config(&r2)).await?;
        let mut view = spec_view(&rec, &spec);
        view.warnings.extend(self.lint_backends(&spec).await?);
        Ok(view)
    }

    /// Backends under Pier's domain that no service answers at: a typo, or a service not deployed yet.
    async fn lint_backends(&self, spec: &ApiSpec) -> Result<Vec<String>> {
        let (projects, services) = self.db(|s| Ok((s.projects()?, s.services(None)?))).await?;
        let hosts: std::collections::HashSet<String> = services
            .iter()
            .filter_map(|svc| {
                let p = projects.iter().find(|p| p.name == svc.project)?;
                Some(self.scheme.service_host(&svc.name, &p.hash))
            })
            .collect();
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for op in &spec.operations {
            let Some(b) = &op.backend else { continue };
            let host = b.authority.split(':').next().unwrap_or_default().to_owned();
            if pier_model::hosts::is_within(&host, self.scheme.domain())
                && !hosts.contains(&host)
                && seen.insert(host.clone())
            {
                out.push(format!(
                    "{}/x-google-backend: no service of this Pier answers at {host} (deploy it, or fix the address: `pier services list` shows the URLs)",
                    op.pointer
                ));
            }
        }
        Ok(out)
    }

    async fn config_record(
        &self,
        project: &ProjectName,
        api: &str,
        name: &str,
    ) -> Result<ApiConfigRecord> {
        let (p, a) = (project.clone(), api.to_owned());
        self.db(move |s| s.api_configs(Some(&p), Some(&a)))
            .await?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "config {name} of API {api} does not exist in project {project}: `pier api-gateway api-configs list --api {api}` shows them"
                ))
            })
    }

    /// One config.
    pub async fn get_api_config(
        &self,
        project: &ProjectName,
        api: &str,
        name: &str,
    ) -> Result<ApiConfigView> {
        let rec = self.config_record(project, api, name).await?;
        let spec = self.parsed_spec(&rec)?;
        Ok(spec_view(&rec, &spec))
    }

    /// The service account a config's backends get tokens of (for the caller's `actAs` check).
    pub async fn api_config_service_account(
        &self,
        project: &ProjectName,
        api: &str,
        name: &str,
    ) -> Result<String> {
        Ok(self
            .config_record(project, api, name)
            .await?
            .service_account)
    }

    /// The configs of an API.
    pub async fn list_api_configs(
        &self,
        project: &ProjectName,
        api: &str,
    ) -> Result<Vec<ApiConfigView>> {
        let (p, a) = (project.clone(), api.to_owned());
        let recs = self.db(move |s| s.api_configs(Some(&p), Some(&a))).await?;
        recs.iter()
            .map(|r| Ok(spec_view(r, &*self.parsed_spec(r)?)))
            .collect()
    }

    /// Deletes a config no gateway serves.
    pub async fn delete_api_config(
        &self,
        project: &ProjectName,
        api: &str,
        name: &str,
    ) -> Result<()> {
        let (p, a, n) = (project.clone(), api.to_owned(), name.to_owned());
        self.db(move |s| s.delete_api_config(&p, &a, &n)).await
    }

    /// A config's document, parsed once per config (configs never change).
    pub(crate) fn parsed_spec(&self, rec: &ApiConfigRecord) -> Result<Arc<ApiSpec>> {
        let key = (rec.project.to_string(), rec.api.clone(), rec.name.clone());
        if let Some(s) = self
            .api_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let spec = Arc::new(ApiSpec::parse(&rec.spec).map_err(|e| {
            ControlError::internal(format!(
                "config {} of API {} no longer parses: {e}",
                rec.name, rec.api
            ))
        })?);
        self.api_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, spec.clone());
        Ok(spec)
    }

    fn gateway_view(&self, g: &GatewayRecord, hash: &str) -> GatewayView {
        let host = self.scheme.host(HostKind::Gateway, &g.name, hash);
        GatewayView {
            name: g.name.clone(),
            api: g.api.clone(),
            api_config: g.config.clone(),
            default_hostname: self.scheme.url(&host),
            allow_unauthenticated: g.public,
            cors: g.cors.as_deref().and_then(|c| serde_json::from_str(c).ok()),
            state: "ACTIVE".into(),
            create_time: g.created_at.clone(),
            update_time: g.updated_at.clone(),
        }
    }

    async fn project_hash_of(&self, project: &ProjectName) -> Result<String> {
        let p = project.clone();
        self.db(move |s| s.project(&p))
            .await?
            .map(|p| p.hash)
            .ok_or_else(|| ControlError::NotFound(format!("project {project} does not exist")))
    }

    /// Creates a gateway serving one config, and publishes it.
    pub async fn create_gateway(
        self: &Arc<Self>,
        project: &ProjectName,
        req: CreateGatewayRequest,
    ) -> Result<GatewayView> {
        check_name("gateway", &req.name)?;
        check_cors(req.cors.as_ref())?;
        self.config_record(project, &req.api, &req.api_config)
            .await?;
        let rec = GatewayRecord {
            project: project.clone(),
            name: req.name.clone(),
            api: req.api,
            config: req.api_config,
            public: req.allow_unauthenticated.unwrap_or(true),
            cors: req
                .cors
                .map(|c| serde_json::to_string(&c).unwrap_or_default()),
            created_at: String::new(),
            updated_at: String::new(),
        };
        {
            let _publish = self.publish.lock().await;
            let r2 = rec.clone();
            self.db(move |s| s.create_gateway(&r2)).await?;
            self.changed();
            self.publish_locked().await?;
        }
        self.get_gateway(project, &rec.name).await
    }

    /// The gateway's record.
    pub async fn gateway_record(&self, project: &ProjectName, name: &str) -> Result<GatewayRecord> {
        let p = project.clone();
        self.db(move |s| s.gateways(Some(&p)))
            .await?
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "gateway {name} does not exist in project {project}: `pier api-gateway gateways list` shows them"
                ))
            })
    }

    /// One gateway.
    pub async fn get_gateway(&self, project: &ProjectName, name: &str) -> Result<GatewayView> {
        let g = self.gateway_record(project, name).await?;
        let hash = self.project_hash_of(project).await?;
        Ok(self.gateway_view(&g, &hash))
    }

    /// The project's gateways.
    pub async fn list_gateways(&self, project: &ProjectName) -> Result<Vec<GatewayView>> {
        let p = project.clone();
        let gs = self.db(move |s| s.gateways(Some(&p))).await?;
        if gs.is_empty() {
            return Ok(Vec::new());
        }
        let hash = self.project_hash_of(project).await?;
        Ok(gs.iter().map(|g| self.gateway_view(g, &hash)).collect())
    }

    /// Switches a gateway's config (one statement, then one route swap: no request sees half of
    /// either), or changes its access or CORS.
    pub async fn update_gateway(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &str,
        req: UpdateGatewayRequest,
    ) -> Result<GatewayView> {
        check_cors(req.cors.as_ref())?;
        let mut g = self.gateway_record(project, name).await?;
        if let Some(c) = req.api_config {
            self.config_record(project, &g.api, &c).await?;
            g.config = c;
        }
        if let Some(p) = req.allow_unauthenticated {
            g.public = p;
        }
        if req.clear_cors {
            g.cors = None;
        }
        if let Some(c) = req.cors {
            g.cors = Some(serde_json::to_string(&c).unwrap_or_default());
        }
        {
            let _publish = self.publish.lock().await;
            let g2 = g.clone();
            self.db(move |s| s.update_gateway(&g2)).await?;
            self.changed();
            self.publish_locked().await?;
        }
        self.get_gateway(project, name).await
    }

    /// Deletes a gateway.
    pub async fn delete_gateway(self: &Arc<Self>, project: &ProjectName, name: &str) -> Result<()> {
        let _publish = self.publish.lock().await;
        let (p, n) = (project.clone(), name.to_owned());
        self.db(move |s| s.delete_gateway(&p, &n)).await?;
        self.changed();
        self.publish_locked().await
    }

    /// Makes an API key; its secret is in the answer and nowhere else.
    pub async fn create_api_key(
        self: &Arc<Self>,
        project: &ProjectName,
        req: CreateApiKeyRequest,
    ) -> Result<CreatedApiKey> {
        if req.display_name.trim().is_empty() {
            return Err(ControlError::Invalid(
                "an API key needs a --display-name".into(),
            ));
        }
        for t in &req.api_targets {
            check_name("API", t)?;
        }
        let key =
            pier_apigateway::keys::generate().map_err(|e| ControlError::internal(e.to_string()))?;
        let rec = ApiKeyRecord {
            uid: format!(
                "k-{}",
                crate::random_chars(12, b"abcdefghijklmnopqrstuvwxyz0123456789")
            ),
            project: project.clone(),
            display_name: req.display_name,
            prefix: pier_apigateway::keys::prefix(&key).to_owned(),
            digest: pier_identity::passwords::secret_digest(&key),
            api_targets: req.api_targets,
            created_at: crate::domains::rfc3339(std::time::SystemTime::now()),
            deleted_at: None,
        };
        {
            let _publish = self.publish.lock().await;
            let (p, r2) = (project.clone(), rec.clone());
            self.db(move |s| {
                s.ensure_project(&p, crate::project_hash)?;
                s.create_api_key(&r2)
            })
            .await?;
            self.publish_locked().await?;
        }
        Ok(CreatedApiKey {
            key: key_view(&rec),
            key_string: key,
        })
    }

    /// The project's API keys (revoked ones too).
    pub async fn list_api_keys(&self, project: &ProjectName) -> Result<Vec<ApiKeyView>> {
        let p = project.clone();
        Ok(self
            .db(move |s| s.api_keys(Some(&p)))
            .await?
            .iter()
            .map(key_view)
            .collect())
    }

    /// One API key (never its secret).
    pub async fn get_api_key(&self, project: &ProjectName, uid: &str) -> Result<ApiKeyView> {
        self.list_api_keys(project)
            .await?
            .into_iter()
            .find(|k| k.uid == uid)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "API key {uid} does not exist in project {project}: `pier api-keys list` shows them"
                ))
            })
    }

    /// Revokes (`Some(true)`), restores (`Some(false)`) or restricts a key, or gives it a new secret
    /// (`rotate`: the old one stops working at once). Returns the new secret when rotated.
    pub async fn update_api_key(
        self: &Arc<Self>,
        project: &ProjectName,
        uid: &str,
        deleted: Option<bool>,
        api_targets: Option<Vec<String>>,
        rotate: bool,
    ) -> Result<(ApiKeyView, Option<String>)> {
        for t in api_targets.iter().flatten() {
            check_name("API", t)?;
        }
        let secret = if rotate {
            Some(
                pier_apigateway::keys::generate()
                    .map_err(|e| ControlError::internal(e.to_string()))?,
            )
        } else {
            None
        };
        let stored = secret.as_ref().map(|k| {
            (
                pier_apigateway::keys::prefix(k).to_owned(),
                pier_identity::passwords::secret_digest(k),
            )
        });
        let _publish = self.publish.lock().await;
        let (p, u) = (project.clone(), uid.to_owned());
        let rec = self
            .db(move |s| {
                s.update_api_key(
                    &p,
                    &u,
                    deleted,
                    api_targets.as_deref(),
                    stored.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                )
            })
            .await?;
        self.publish_locked().await?;
        Ok((key_view(&rec), secret))
    }
}
