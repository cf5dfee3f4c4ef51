//! The `/v1/images` and `/v1/registries` handlers: the server's image cache and the credentials it pulls
//! with. Both are installation-wide; the secrets are write-only.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use pier_control::Resource;
use pier_identity::Permission;
use pier_model::api::{ImageView, PruneView, RegistryCredentialRequest, RegistryView};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/images", get(list_images))
        .route("/v1/images/prune", post(prune_images))
        .route("/v1/registries", get(list_registries))
        .route(
            "/v1/registries/{registry}",
            put(set_registry).delete(delete_registry),
        )
}

fn require(s: &AppState, who: &pier_identity::Principal, p: Permission) -> Result<(), ApiError> {
    Ok(s.platform
        .identity()
        .require(who, p, &Resource::Installation)?)
}

/// Lists the images in the server's cache and how many revisions run each.
#[utoipa::path(get, path = "/v1/images", tag = "images",
    responses((status = 200, body = Vec<ImageView>)))]
pub(crate) async fn list_images(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> Result<axum::Json<Vec<ImageView>>, ApiError> {
    require(&s, &who, Permission::ImagesGet)?;
    Ok(axum::Json(s.platform.list_images().await?))
}

/// Forgets the images no revision runs and frees their blobs, unpacked layers and roots.
#[utoipa::path(post, path = "/v1/images/prune", tag = "images",
    responses((status = 200, body = PruneView)))]
pub(crate) async fn prune_images(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> Result<axum::Json<PruneView>, ApiError> {
    require(&s, &who, Permission::ImagesWrite)?;
    Ok(axum::Json(s.platform.prune_images().await?))
}

/// Lists the registries Pier has credentials for (never the secrets).
#[utoipa::path(get, path = "/v1/registries", tag = "images",
    responses((status = 200, body = Vec<RegistryView>)))]
pub(crate) async fn list_registries(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> Result<axum::Json<Vec<RegistryView>>, ApiError> {
    require(&s, &who, Permission::ImagesWrite)?;
    Ok(axum::Json(s.platform.registries().await?))
}

/// Sets the credentials Pier pulls from a registry with.
#[utoipa::path(put, path = "/v1/registries/{registry}", tag = "images",
    params(("registry" = String, Path, description = "host[:port]")),
    request_body = RegistryCredentialRequest,
    responses((status = 200, body = RegistryView), (status = 400, body = pier_model::api::ErrorBody)))]
pub(crate) async fn set_registry(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(registry): Path<String>,
    ApiJson(req): ApiJson<RegistryCredentialRequest>,
) -> Result<axum::Json<RegistryView>, ApiError> {
    require(&s, &who, Permission::ImagesWrite)?;
    Ok(axum::Json(
        s.platform.set_registry_credential(&registry, req).await?,
    ))
}

/// Removes a registry's credentials.
#[utoipa::path(delete, path = "/v1/registries/{registry}", tag = "images",
    params(("registry" = String, Path, description = "host[:port]")),
    responses((status = 204), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn delete_registry(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path(registry): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&s, &who, Permission::ImagesWrite)?;
    s.platform.delete_registry_credential(&registry).await?;
    Ok(StatusCode::NO_CONTENT)
}
