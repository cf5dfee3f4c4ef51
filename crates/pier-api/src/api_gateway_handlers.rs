//! The API gateway handlers: APIs (`/v1/projects/{project}/apis`), their configs
//! (`…/apis/{api}/configs`), gateways (`…/gateways`) and API keys (`…/keys`).
//!
//! Reading needs `run.services.get` on the project, changing `run.services.update`. A config names the
//! service account its backends get ID tokens of, so creating it, and creating or switching a gateway
//! to it, needs `iam.serviceAccounts.actAs` on that account. A gateway anyone may call (the default, as
//! Google's) needs `run.services.setIamPolicy` on the project: nothing widens access without it.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use pier_identity::{Permission, Principal};
use pier_model::ProjectName;
use pier_model::api_gateways::{
    ApiConfigView, ApiKeyView, ApiView, CreateApiConfigRequest, CreateApiKeyRequest,
    CreateApiRequest, CreateGatewayRequest, CreatedApiKey, GatewayView, UpdateApiKeyRequest,
    UpdateGatewayRequest,
};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller, ProjectPath, project_of, require_on_project as require};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/projects/{project}/apis",
            get(list_apis).post(create_api),
        )
        .route(
            "/v1/projects/{project}/apis/{api}",
            get(get_api).delete(delete_api),
        )
        .route(
            "/v1/projects/{project}/apis/{api}/configs",
            get(list_configs).post(create_config),
        )
        .route(
            "/v1/projects/{project}/apis/{api}/configs/{config}",
            get(get_config).delete(delete_config),
        )
        .route(
            "/v1/projects/{project}/gateways",
            get(list_gateways).post(create_gateway),
        )
        .route(
            "/v1/projects/{project}/gateways/{gateway}",
            get(get_gateway)
                .patch(update_gateway)
                .delete(delete_gateway),
        )
        .route(
            "/v1/projects/{project}/keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/v1/projects/{project}/keys/{key}",
            get(get_key).patch(update_key).delete(delete_key),
        )
        .route(
            "/v1/projects/{project}/keys/{key}/undelete",
            post(undelete_key),
        )
        .route("/v1/projects/{project}/keys/{key}/rotate", post(rotate_key))
}

/// The caller may act as the account whose tokens a config's backends get.
fn require_act_as(s: &AppState, who: &Principal, email: &str) -> Result<(), ApiError> {
    let sa = crate::iam_handlers::sa_resource(s, who, email, Permission::ServiceAccountsActAs)?;
    s.platform
        .identity()
        .require(who, Permission::ServiceAccountsActAs, &sa)
        .map_err(|_| {
            ApiError::from(pier_control::ControlError::Forbidden(format!(
                "{who} may not act as {email} (iam.serviceAccounts.actAs), whose ID tokens the API's backends get: ask an admin for roles/iam.serviceAccountUser on it"
            )))
        })
}

/// Making a gateway reachable by everyone is widening access: it needs the IAM-policy permission.
fn require_public(s: &AppState, who: &Principal, project: &ProjectName) -> Result<(), ApiError> {
    require(s, who, Permission::ServicesSetIamPolicy, project).map_err(|_| {
        ApiError::from(pier_control::ControlError::Forbidden(format!(
            "{who} may not make a gateway callable by everyone (run.services.setIamPolicy on project {project}): ask an admin, or pass --no-allow-unauthenticated"
        )))
    })
}

/// Lists a project's APIs.
#[utoipa::path(get, path = "/v1/projects/{project}/apis", tag = "api-gateway",
    params(("project" = String, Path)), responses((status = 200, body = Vec<ApiView>)))]
pub(crate) async fn list_apis(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<axum::Json<Vec<ApiView>>, ApiError> {
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(s.platform.list_apis(&project).await?))
}

/// Creates an API.
#[utoipa::path(post, path = "/v1/projects/{project}/apis", tag = "api-gateway",
    params(("project" = String, Path)), request_body = CreateApiRequest,
    responses((status = 201, body = ApiView), (status = 409, body = pier_model::api::ErrorBody)))]
pub(crate) async fn create_api(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    ApiJson(req): ApiJson<CreateApiRequest>,
) -> Result<(StatusCode, axum::Json<ApiView>), ApiError> {
    require(&s, &who, Permission::ServicesWrite, &project)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(s.platform.create_api(&project, &req.name).await?),
    ))
}

/// One API.
#[utoipa::path(get, path = "/v1/projects/{project}/apis/{api}", tag = "api-gateway",
    params(("project" = String, Path), ("api" = String, Path)), responses((status = 200, body = ApiView)))]
pub(crate) async fn get_api(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, api)): Path<(String, String)>,
) -> Result<axum::Json<ApiView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(s.platform.get_api(&project, &api).await?))
}

/// Deletes an API that has no config.
#[utoipa::path(delete, path = "/v1/projects/{project}/apis/{api}", tag = "api-gateway",
    params(("project" = String, Path), ("api" = String, Path)), responses((status = 204)))]
pub(crate) async fn delete_api(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, api)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    s.platform.delete_api(&project, &api).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists an API's configs.
#[utoipa::path(get, path = "/v1/projects/{project}/apis/{api}/configs", tag = "api-gateway",
    params(("project" = String, Path), ("api" = String, Path)),
    responses((status = 200, body = Vec<ApiConfigView>)))]
pub(crate) async fn list_configs(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, api)): Path<(String, String)>,
) -> Result<axum::Json<Vec<ApiConfigView>>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(
        s.platform.list_api_configs(&project, &api).await?,
    ))
}

/// Creates a config from an OpenAPI document; a faulty document is refused with the JSON pointer of
/// the fault. The answer lists lint warnings.
#[utoipa::path(post, path = "/v1/projects/{project}/apis/{api}/configs", tag = "api-gateway",
    params(("project" = String, Path), ("api" = String, Path)), request_body = CreateApiConfigRequest,
    responses((status = 201, body = ApiConfigView), (status = 400, body = pier_model::api::ErrorBody)))]
pub(crate) async fn create_config(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, api)): Path<(String, String)>,
    ApiJson(req): ApiJson<CreateApiConfigRequest>,
) -> Result<(StatusCode, axum::Json<ApiConfigView>), ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let sa = req
        .backend_auth_service_account
        .clone()
        .unwrap_or_else(|| s.platform.identity().default_service_account(&project));
    require_act_as(&s, &who, &sa)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(s.platform.create_api_config(&project, &api, req).await?),
    ))
}

/// One config.
#[utoipa::path(get, path = "/v1/projects/{project}/apis/{api}/configs/{config}", tag = "api-gateway",
    params(("project" = String, Path), ("api" = String, Path), ("config" = String, Path)),
    responses((status = 200, body = ApiConfigView)))]
pub(crate) async fn get_config(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, api, config)): Path<(String, String, String)>,
) -> Result<axum::Json<ApiConfigView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(
        s.platform.get_api_config(&project, &api, &config).await?,
    ))
}

/// Deletes a config no gateway serves.
#[utoipa::path(delete, path = "/v1/projects/{project}/apis/{api}/configs/{config}", tag = "api-gateway",
    params(("project" = String, Path), ("api" = String, Path), ("config" = String, Path)),
    responses((status = 204)))]
pub(crate) async fn delete_config(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, api, config)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    s.platform
        .delete_api_config(&project, &api, &config)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists a project's gateways.
#[utoipa::path(get, path = "/v1/projects/{project}/gateways", tag = "api-gateway",
    params(("project" = String, Path)), responses((status = 200, body = Vec<GatewayView>)))]
pub(crate) async fn list_gateways(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<axum::Json<Vec<GatewayView>>, ApiError> {
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(s.platform.list_gateways(&project).await?))
}

/// Creates a gateway serving one config at its own URL.
#[utoipa::path(post, path = "/v1/projects/{project}/gateways", tag = "api-gateway",
    params(("project" = String, Path)), request_body = CreateGatewayRequest,
    responses((status = 201, body = GatewayView), (status = 403, body = pier_model::api::ErrorBody)))]
pub(crate) async fn create_gateway(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    ApiJson(req): ApiJson<CreateGatewayRequest>,
) -> Result<(StatusCode, axum::Json<GatewayView>), ApiError> {
    require(&s, &who, Permission::ServicesWrite, &project)?;
    if req.allow_unauthenticated.unwrap_or(true) {
        require_public(&s, &who, &project)?;
    }
    let sa = s
        .platform
        .api_config_service_account(&project, &req.api, &req.api_config)
        .await?;
    require_act_as(&s, &who, &sa)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(s.platform.create_gateway(&project, req).await?),
    ))
}

/// One gateway.
#[utoipa::path(get, path = "/v1/projects/{project}/gateways/{gateway}", tag = "api-gateway",
    params(("project" = String, Path), ("gateway" = String, Path)),
    responses((status = 200, body = GatewayView)))]
pub(crate) async fn get_gateway(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, gateway)): Path<(String, String)>,
) -> Result<axum::Json<GatewayView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(
        s.platform.get_gateway(&project, &gateway).await?,
    ))
}

/// Switches a gateway to another config (atomically), or changes who may call it or its CORS.
#[utoipa::path(patch, path = "/v1/projects/{project}/gateways/{gateway}", tag = "api-gateway",
    params(("project" = String, Path), ("gateway" = String, Path)), request_body = UpdateGatewayRequest,
    responses((status = 200, body = GatewayView)))]
pub(crate) async fn update_gateway(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, gateway)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateGatewayRequest>,
) -> Result<axum::Json<GatewayView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let current = s.platform.gateway_record(&project, &gateway).await?;
    if req.allow_unauthenticated == Some(true) && !current.public {
        require_public(&s, &who, &project)?;
    }
    let config = req.api_config.clone().unwrap_or(current.config);
    let sa = s
        .platform
        .api_config_service_account(&project, &current.api, &config)
        .await?;
    require_act_as(&s, &who, &sa)?;
    Ok(axum::Json(
        s.platform.update_gateway(&project, &gateway, req).await?,
    ))
}

/// Deletes a gateway.
#[utoipa::path(delete, path = "/v1/projects/{project}/gateways/{gateway}", tag = "api-gateway",
    params(("project" = String, Path), ("gateway" = String, Path)), responses((status = 204)))]
pub(crate) async fn delete_gateway(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, gateway)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    s.platform.delete_gateway(&project, &gateway).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists a project's API keys (never their secrets).
#[utoipa::path(get, path = "/v1/projects/{project}/keys", tag = "api-gateway",
    params(("project" = String, Path)), responses((status = 200, body = Vec<ApiKeyView>)))]
pub(crate) async fn list_keys(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<axum::Json<Vec<ApiKeyView>>, ApiError> {
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(s.platform.list_api_keys(&project).await?))
}

/// Creates an API key; the answer is the only place its secret appears.
#[utoipa::path(post, path = "/v1/projects/{project}/keys", tag = "api-gateway",
    params(("project" = String, Path)), request_body = CreateApiKeyRequest,
    responses((status = 201, body = CreatedApiKey)))]
pub(crate) async fn create_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> Result<(StatusCode, axum::Json<CreatedApiKey>), ApiError> {
    require(&s, &who, Permission::ServicesWrite, &project)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(s.platform.create_api_key(&project, req).await?),
    ))
}

/// One API key (never its secret).
#[utoipa::path(get, path = "/v1/projects/{project}/keys/{key}", tag = "api-gateway",
    params(("project" = String, Path), ("key" = String, Path)), responses((status = 200, body = ApiKeyView)))]
pub(crate) async fn get_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, key)): Path<(String, String)>,
) -> Result<axum::Json<ApiKeyView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(s.platform.get_api_key(&project, &key).await?))
}

/// Restricts a key to APIs.
#[utoipa::path(patch, path = "/v1/projects/{project}/keys/{key}", tag = "api-gateway",
    params(("project" = String, Path), ("key" = String, Path)), request_body = UpdateApiKeyRequest,
    responses((status = 200, body = ApiKeyView)))]
pub(crate) async fn update_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, key)): Path<(String, String)>,
    ApiJson(req): ApiJson<UpdateApiKeyRequest>,
) -> Result<axum::Json<ApiKeyView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let (view, _) = s
        .platform
        .update_api_key(&project, &key, None, req.api_targets, false)
        .await?;
    Ok(axum::Json(view))
}

/// Revokes a key (it stops working at once; `undelete` restores it).
#[utoipa::path(delete, path = "/v1/projects/{project}/keys/{key}", tag = "api-gateway",
    params(("project" = String, Path), ("key" = String, Path)), responses((status = 200, body = ApiKeyView)))]
pub(crate) async fn delete_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, key)): Path<(String, String)>,
) -> Result<axum::Json<ApiKeyView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let (view, _) = s
        .platform
        .update_api_key(&project, &key, Some(true), None, false)
        .await?;
    Ok(axum::Json(view))
}

/// Restores a revoked key.
#[utoipa::path(post, path = "/v1/projects/{project}/keys/{key}/undelete", tag = "api-gateway",
    params(("project" = String, Path), ("key" = String, Path)), responses((status = 200, body = ApiKeyView)))]
pub(crate) async fn undelete_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, key)): Path<(String, String)>,
) -> Result<axum::Json<ApiKeyView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let (view, _) = s
        .platform
        .update_api_key(&project, &key, Some(false), None, false)
        .await?;
    Ok(axum::Json(view))
}

/// Gives a key a new secret; the old one stops working at once.
#[utoipa::path(post, path = "/v1/projects/{project}/keys/{key}/rotate", tag = "api-gateway",
    params(("project" = String, Path), ("key" = String, Path)), responses((status = 200, body = CreatedApiKey)))]
pub(crate) async fn rotate_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, key)): Path<(String, String)>,
) -> Result<axum::Json<CreatedApiKey>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let (view, secret) = s
        .platform
        .update_api_key(&project, &key, None, None, true)
        .await?;
    Ok(axum::Json(CreatedApiKey {
        key: view,
        key_string: secret.unwrap_or_default(),
    }))
}
