//! The custom-domain handlers: ownership proofs (`/v1/projects/{project}/domains`) and domain mappings
//! (`/v1/projects/{project}/domainmappings`). Mapping a domain needs the permission to update the service
//! it points at (as on Cloud Run); vouching for a domain without DNS needs the installation's owner.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use pier_control::Resource;
use pier_identity::Permission;
use pier_model::ProjectName;
use pier_model::domains::{
    CreateDomainMappingRequest, DomainMappingView, DomainVerificationView, VerifyDomainRequest,
};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller, ProjectPath};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/projects/{project}/domains", get(list_domains))
        .route(
            "/v1/projects/{project}/domains/{domain}/verify",
            post(verify_domain),
        )
        .route(
            "/v1/projects/{project}/domainmappings",
            get(list_mappings).post(create_mapping),
        )
        .route(
            "/v1/projects/{project}/domainmappings/{domain}",
            get(get_mapping).delete(delete_mapping),
        )
}

fn require(
    s: &AppState,
    who: &pier_identity::Principal,
    p: Permission,
    r: Resource,
) -> Result<(), ApiError> {
    Ok(s.platform.identity().require(who, p, &r)?)
}

fn project_of(path: &str) -> Result<ProjectName, ApiError> {
    path.parse()
        .map_err(|e: pier_model::NameError| ApiError::invalid(e.to_string()))
}

/// The service a mapping points at, once the caller holds `perm` on it. A mapping that does not exist
/// is a 404 only for callers who hold `perm` on the project.
async fn mapping_for(
    s: &AppState,
    who: &pier_identity::Principal,
    project: &ProjectName,
    domain: &str,
    perm: Permission,
) -> Result<DomainMappingView, ApiError> {
    match s.platform.domain_mapping(project, domain).await {
        Ok(view) => {
            let resource = if view.target.kind == "service" {
                let target = view
                    .target
                    .name
                    .parse()
                    .map_err(|e: pier_model::NameError| ApiError::invalid(e.to_string()))?;
                Resource::Service(project.clone(), target)
            } else {
                // Gateways have no policy of their own: the project's decides.
                Resource::Project(project.clone())
            };
            require(s, who, perm, resource)?;
            Ok(view)
        }
        Err(e) => {
            require(s, who, perm, Resource::Project(project.clone()))?;
            Err(e.into())
        }
    }
}

/// Lists the domains a project has claimed, verified or not.
#[utoipa::path(get, path = "/v1/projects/{project}/domains", tag = "domains",
    params(("project" = String, Path)),
    responses((status = 200, body = Vec<DomainVerificationView>)))]
pub(crate) async fn list_domains(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<axum::Json<Vec<DomainVerificationView>>, ApiError> {
    require(
        &s,
        &who,
        Permission::ServicesGet,
        Resource::Project(project.clone()),
    )?;
    Ok(axum::Json(s.platform.list_domains(&project).await?))
}

/// Proves a project owns a domain: checks its TXT record `_pier-challenge.DOMAIN` (the answer says
/// which record to create when it is missing), or, with `withoutDns`, takes an installation owner's word.
#[utoipa::path(post, path = "/v1/projects/{project}/domains/{domain}/verify", tag = "domains",
    params(("project" = String, Path), ("domain" = String, Path)),
    request_body = VerifyDomainRequest,
    responses((status = 200, body = DomainVerificationView), (status = 403, body = pier_model::api::ErrorBody)))]
pub(crate) async fn verify_domain(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, domain)): Path<(String, String)>,
    ApiJson(req): ApiJson<VerifyDomainRequest>,
) -> Result<axum::Json<DomainVerificationView>, ApiError> {
    let project = project_of(&project)?;
    require(
        &s,
        &who,
        Permission::ServicesWrite,
        Resource::Project(project.clone()),
    )?;
    if req.without_dns {
        require(&s, &who, Permission::InstallationSetIamPolicy, Resource::Installation).map_err(
            |_| {
                ApiError::from(pier_control::ControlError::Forbidden(format!(
                    "{who} may not vouch for {domain} without DNS: only an installation owner may (roles/owner on the installation); others create the TXT record"
                )))
            },
        )?;
    }
    Ok(axum::Json(
        s.platform
            .verify_domain(&project, &domain, req.without_dns)
            .await?,
    ))
}

/// Lists a project's domain mappings with their status.
#[utoipa::path(get, path = "/v1/projects/{project}/domainmappings", tag = "domains",
    params(("project" = String, Path)),
    responses((status = 200, body = Vec<DomainMappingView>)))]
pub(crate) async fn list_mappings(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<axum::Json<Vec<DomainMappingView>>, ApiError> {
    require(
        &s,
        &who,
        Permission::ServicesGet,
        Resource::Project(project.clone()),
    )?;
    Ok(axum::Json(s.platform.domain_mappings(&project).await?))
}

/// Maps a domain to a service. Needs `run.services.update` on the service.
#[utoipa::path(post, path = "/v1/projects/{project}/domainmappings", tag = "domains",
    params(("project" = String, Path)),
    request_body = CreateDomainMappingRequest,
    responses((status = 201, body = DomainMappingView), (status = 409, body = pier_model::api::ErrorBody)))]
pub(crate) async fn create_mapping(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    ApiJson(req): ApiJson<CreateDomainMappingRequest>,
) -> Result<(StatusCode, axum::Json<DomainMappingView>), ApiError> {
    let target = match req.target.kind.as_str() {
        "service" => Resource::Service(
            project.clone(),
            req.target
                .name
                .parse()
                .map_err(|e: pier_model::NameError| ApiError::invalid(e.to_string()))?,
        ),
        _ => Resource::Project(project.clone()),
    };
    require(&s, &who, Permission::ServicesWrite, target)?;
    // Moving a domain away from another target needs the right to change that one too (a gateway's
    // is the project's).
    if let Ok(existing) = s.platform.domain_mapping(&project, &req.domain).await
        && existing.target != req.target
    {
        let from = match existing.target.name.parse() {
            Ok(name) if existing.target.kind == "service" => {
                Resource::Service(project.clone(), name)
            }
            _ => Resource::Project(project.clone()),
        };
        require(&s, &who, Permission::ServicesWrite, from)?;
    }
    if req.certificate_file.is_some() || req.private_key_file.is_some() {
        // The server reads those files with its own rights.
        require(&s, &who, Permission::InstallationSetIamPolicy, Resource::Installation).map_err(
            |_| {
                ApiError::from(pier_control::ControlError::Forbidden(format!(
                    "{who} may not have the server read certificate files: only an installation owner may (roles/owner on the installation); use --certificate-mode automatic"
                )))
            },
        )?;
    }
    let view = s.platform.create_domain_mapping(&project, req).await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Describes a domain mapping: its target, conditions and the DNS records to create.
#[utoipa::path(get, path = "/v1/projects/{project}/domainmappings/{domain}", tag = "domains",
    params(("project" = String, Path), ("domain" = String, Path)),
    responses((status = 200, body = DomainMappingView), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn get_mapping(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, domain)): Path<(String, String)>,
) -> Result<axum::Json<DomainMappingView>, ApiError> {
    let project = project_of(&project)?;
    Ok(axum::Json(
        mapping_for(&s, &who, &project, &domain, Permission::ServicesGet).await?,
    ))
}

/// Deletes a domain mapping: the domain stops being served and its certificate is forgotten.
#[utoipa::path(delete, path = "/v1/projects/{project}/domainmappings/{domain}", tag = "domains",
    params(("project" = String, Path), ("domain" = String, Path)),
    responses((status = 204), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn delete_mapping(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, domain)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let project = project_of(&project)?;
    mapping_for(&s, &who, &project, &domain, Permission::ServicesWrite).await?;
    s.platform.delete_domain_mapping(&project, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}
