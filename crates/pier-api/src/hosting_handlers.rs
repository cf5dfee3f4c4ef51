//! The hosting handlers: sites (`/v1/projects/{project}/sites`), their versions, uploaded files,
//! channels and releases.
//!
//! Reading needs `run.services.get` on the project, changing `run.services.update`. A site is public, so
//! the deploy that creates one needs `run.services.setIamPolicy` on the project; a site calls services
//! as its service account, so creating a site, naming its account, deploying a version that rewrites
//! to services, or cloning another site's version into it needs `iam.serviceAccounts.actAs` on it.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use pier_control::Resource;
use pier_identity::{Permission, Principal};
use pier_model::hosting::{
    CloneRequest, CreateSiteVersionRequest, CreatedSiteVersion, InvalidateRequest, ReleaseRequest,
    ReleaseView, SiteView, UploadedFile,
};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller, ProjectPath, project_of, require_on_project as require};

/// The largest file a site may hold, in bytes (uploads are read whole before they are checked).
pub const MAX_FILE_BYTES: usize = 256 << 20;

/// The largest version request (the file list), in bytes.
const MAX_VERSION_BYTES: usize = 32 << 20;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/projects/{project}/sites", get(list_sites))
        .route(
            "/v1/projects/{project}/sites/{site}",
            get(get_site).delete(delete_site),
        )
        .route(
            "/v1/projects/{project}/sites/{site}/versions",
            post(create_version).layer(DefaultBodyLimit::max(MAX_VERSION_BYTES)),
        )
        .route(
            "/v1/projects/{project}/sites/{site}/files/{digest}",
            put(upload_file).layer(DefaultBodyLimit::max(MAX_FILE_BYTES)),
        )
        .route(
            "/v1/projects/{project}/sites/{site}/channels/{channel}",
            axum::routing::delete(delete_channel),
        )
        .route(
            "/v1/projects/{project}/sites/{site}/channels/{channel}/releases",
            get(list_releases).post(release),
        )
        .route(
            "/v1/projects/{project}/sites/{site}/channels/{channel}/clone",
            post(clone_channel),
        )
        .route(
            "/v1/projects/{project}/sites/{site}/rollback",
            post(rollback),
        )
        .route(
            "/v1/projects/{project}/sites/{site}/cache/invalidate",
            post(invalidate),
        )
        .route(
            "/v1/projects/{project}/services/{service}/cache/invalidate",
            post(invalidate_service),
        )
}

/// The caller may act as the account a site calls services as.
fn require_act_as(
    s: &AppState,
    who: &Principal,
    account: &str,
    site: &str,
) -> Result<(), ApiError> {
    let sa = crate::iam_handlers::sa_resource(s, who, account, Permission::ServiceAccountsActAs)?;
    s.platform
        .identity()
        .require(who, Permission::ServiceAccountsActAs, &sa)
        .map_err(|_| {
            ApiError::from(pier_control::ControlError::Forbidden(format!(
                "{who} may not act as {account} (iam.serviceAccounts.actAs), whom site {site} calls services as: ask an admin for roles/iam.serviceAccountUser on it, or name another with --service-account"
            )))
        })
}

/// Lists a project's sites.
#[utoipa::path(get, path = "/v1/projects/{project}/sites", tag = "hosting",
    params(("project" = String, Path)), responses((status = 200, body = Vec<SiteView>)))]
pub(crate) async fn list_sites(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<axum::Json<Vec<SiteView>>, ApiError> {
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(s.platform.list_sites(&project).await?))
}

/// One site with its channels.
#[utoipa::path(get, path = "/v1/projects/{project}/sites/{site}", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path)), responses((status = 200, body = SiteView)))]
pub(crate) async fn get_site(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site)): Path<(String, String)>,
) -> Result<axum::Json<SiteView>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(s.platform.get_site(&project, &site).await?))
}

/// Deletes a site: its URLs stop serving at once.
#[utoipa::path(delete, path = "/v1/projects/{project}/sites/{site}", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path)), responses((status = 204)))]
pub(crate) async fn delete_site(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    s.platform.delete_site(&project, &site, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a version (and the site, on its first deploy); answers the digests to upload.
#[utoipa::path(post, path = "/v1/projects/{project}/sites/{site}/versions", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path)), request_body = CreateSiteVersionRequest,
    responses((status = 201, body = CreatedSiteVersion), (status = 400, body = pier_model::api::ErrorBody)))]
pub(crate) async fn create_version(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site)): Path<(String, String)>,
    ApiJson(req): ApiJson<CreateSiteVersionRequest>,
) -> Result<(StatusCode, axum::Json<CreatedSiteVersion>), ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let exists = s.platform.site_exists(&project, &site).await?;
    if !exists {
        require(&s, &who, Permission::ServicesSetIamPolicy, &project).map_err(|_| {
            ApiError::from(pier_control::ControlError::Forbidden(format!(
                "{who} may not create site {site}: a site is public, so creating one needs run.services.setIamPolicy on project {project}; ask an admin"
            )))
        })?;
    }
    // A version's rewrites call services as the site's account: deploying one acts as it.
    let calls_services = req
        .config
        .get("rewrites")
        .and_then(|r| r.as_array())
        .is_some_and(|r| r.iter().any(|rule| rule.get("run").is_some()));
    if !exists || req.service_account.is_some() || calls_services {
        let account = s
            .platform
            .site_account(&project, &site, req.service_account.as_deref())
            .await?;
        require_act_as(&s, &who, &account, &site)?;
    }
    let created = s
        .platform
        .create_site_version(&project, &site, req, &who.to_string(), !exists)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// What an upload may say about the file.
#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    /// A path the file is uploaded for (its type decides whether variants are made).
    path: Option<String>,
}

/// Uploads one file, checked against its SHA-256.
#[utoipa::path(put, path = "/v1/projects/{project}/sites/{site}/files/{digest}", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path), ("digest" = String, Path),
        ("path" = Option<String>, Query, description = "a path the file has in the site")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = UploadedFile), (status = 400, body = pier_model::api::ErrorBody)))]
pub(crate) async fn upload_file(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site, digest)): Path<(String, String, String)>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Result<axum::Json<UploadedFile>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    Ok(axum::Json(
        s.platform
            .upload_site_file(&project, &site, &digest, q.path.as_deref(), body)
            .await?,
    ))
}

/// A channel's releases, newest first.
#[utoipa::path(get, path = "/v1/projects/{project}/sites/{site}/channels/{channel}/releases", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path), ("channel" = String, Path)),
    responses((status = 200, body = Vec<ReleaseView>)))]
pub(crate) async fn list_releases(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site, channel)): Path<(String, String, String)>,
) -> Result<axum::Json<Vec<ReleaseView>>, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesGet, &project)?;
    Ok(axum::Json(
        s.platform.site_releases(&project, &site, &channel).await?,
    ))
}

/// Makes a channel serve a version (created when missing: a preview lives 7 days unless told).
#[utoipa::path(post, path = "/v1/projects/{project}/sites/{site}/channels/{channel}/releases", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path), ("channel" = String, Path)),
    request_body = ReleaseRequest,
    responses((status = 201, body = ReleaseView), (status = 409, body = pier_model::api::ErrorBody)))]
pub(crate) async fn release(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site, channel)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<ReleaseRequest>,
) -> Result<(StatusCode, axum::Json<ReleaseView>), ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let r = s
        .platform
        .release_site(&project, &site, &channel, req, &who.to_string())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(r)))
}

/// Serves on this channel what another channel serves.
#[utoipa::path(post, path = "/v1/projects/{project}/sites/{site}/channels/{channel}/clone", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path), ("channel" = String, Path)),
    request_body = CloneRequest, responses((status = 201, body = ReleaseView)))]
pub(crate) async fn clone_channel(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site, channel)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<CloneRequest>,
) -> Result<(StatusCode, axum::Json<ReleaseView>), ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    if req.source_site != site {
        // The copied version's rewrites will call services as this site's account.
        let account = s.platform.site_account(&project, &site, None).await?;
        require_act_as(&s, &who, &account, &site)?;
    }
    let r = s
        .platform
        .clone_site(
            &project,
            (&req.source_site, &req.source_channel),
            (&site, &channel),
            req.ttl_seconds,
            &who.to_string(),
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(r)))
}

/// Deletes a preview channel.
#[utoipa::path(delete, path = "/v1/projects/{project}/sites/{site}/channels/{channel}", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path), ("channel" = String, Path)),
    responses((status = 204)))]
pub(crate) async fn delete_channel(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site, channel)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    s.platform
        .delete_site(&project, &site, Some(&channel))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes the live channel serve the version before its current one.
#[utoipa::path(post, path = "/v1/projects/{project}/sites/{site}/rollback", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path)), responses((status = 201, body = ReleaseView)))]
pub(crate) async fn rollback(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site)): Path<(String, String)>,
) -> Result<(StatusCode, axum::Json<ReleaseView>), ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    let r = s
        .platform
        .rollback_site(&project, &site, &who.to_string())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(r)))
}

/// Drops what the edge cache holds for the site under a path (`/x/*` or exact; query ignored).
#[utoipa::path(post, path = "/v1/projects/{project}/sites/{site}/cache/invalidate", tag = "hosting",
    params(("project" = String, Path), ("site" = String, Path)), request_body = InvalidateRequest,
    responses((status = 204)))]
pub(crate) async fn invalidate(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, site)): Path<(String, String)>,
    ApiJson(req): ApiJson<InvalidateRequest>,
) -> Result<StatusCode, ApiError> {
    let project = project_of(&project)?;
    require(&s, &who, Permission::ServicesWrite, &project)?;
    s.platform
        .invalidate_site_cache(&project, &site, &req.path)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Drops what the edge cache holds for a service under a path (`/x/*` or exact; query ignored).
#[utoipa::path(post, path = "/v1/projects/{project}/services/{service}/cache/invalidate", tag = "hosting",
    params(("project" = String, Path), ("service" = String, Path)), request_body = InvalidateRequest,
    responses((status = 204)))]
pub(crate) async fn invalidate_service(
    State(s): State<AppState>,
    Caller(who): Caller,
    crate::extract::ServicePath(project, service): crate::extract::ServicePath,
    ApiJson(req): ApiJson<InvalidateRequest>,
) -> Result<StatusCode, ApiError> {
    s.platform.identity().require(
        &who,
        Permission::ServicesWrite,
        &Resource::Service(project.clone(), service.clone()),
    )?;
    s.platform
        .invalidate_service_cache(&project, &service, &req.path)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
