//! The `/v1` handlers of identity and IAM: policies of services, projects and service accounts; service
//! accounts and their keys; users; impersonation; and `whoami`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use pier_control::Resource;
use pier_identity::keyfile::KeyFile;
use pier_identity::{Permission, Policy, Principal};
use pier_model::api::{
    BindingChange, CreateServiceAccountRequest, CreateUserRequest, GenerateIdTokenRequest, KeyView,
    ServiceAccountView, TokenView, UserView, WhoAmI,
};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{AccountPath, ApiJson, Caller, KeyPath, ProjectPath, ServicePath};

use axum::Json;

fn require(s: &AppState, who: &Principal, p: Permission, r: &Resource) -> Result<(), ApiError> {
    Ok(s.platform.identity().require(who, p, r)?)
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/whoami", get(whoami))
        .route(
            "/v1/projects/{project}/services/{service}/iamPolicy",
            get(get_service_policy).put(set_service_policy),
        )
        .route(
            "/v1/projects/{project}/services/{service}/iamPolicy/addBinding",
            post(add_service_binding),
        )
        .route(
            "/v1/projects/{project}/services/{service}/iamPolicy/removeBinding",
            post(remove_service_binding),
        )
        .route(
            "/v1/iamPolicy",
            get(get_installation_policy).put(set_installation_policy),
        )
        .route("/v1/iamPolicy/addBinding", post(add_installation_binding))
        .route(
            "/v1/iamPolicy/removeBinding",
            post(remove_installation_binding),
        )
        .route(
            "/v1/projects/{project}/iamPolicy",
            get(get_project_policy).put(set_project_policy),
        )
        .route(
            "/v1/projects/{project}/iamPolicy/addBinding",
            post(add_project_binding),
        )
        .route(
            "/v1/projects/{project}/iamPolicy/removeBinding",
            post(remove_project_binding),
        )
        .route(
            "/v1/projects/{project}/serviceAccounts",
            get(list_service_accounts).post(create_service_account),
        )
        .route(
            "/v1/serviceAccounts/{email}",
            get(get_service_account).delete(delete_service_account),
        )
        .route(
            "/v1/serviceAccounts/{email}/disable",
            post(disable_service_account),
        )
        .route(
            "/v1/serviceAccounts/{email}/enable",
            post(enable_service_account),
        )
        .route(
            "/v1/serviceAccounts/{email}/iamPolicy",
            get(get_sa_policy).put(set_sa_policy),
        )
        .route(
            "/v1/serviceAccounts/{email}/iamPolicy/addBinding",
            post(add_sa_binding),
        )
        .route(
            "/v1/serviceAccounts/{email}/iamPolicy/removeBinding",
            post(remove_sa_binding),
        )
        .route(
            "/v1/serviceAccounts/{email}/keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/v1/serviceAccounts/{email}/keys/{key}",
            axum::routing::delete(delete_key),
        )
        .route(
            "/v1/serviceAccounts/{email}/keys/{key}/disable",
            post(disable_key),
        )
        .route(
            "/v1/serviceAccounts/{email}/keys/{key}/enable",
            post(enable_key),
        )
        .route(
            "/v1/serviceAccounts/{email}/generateIdToken",
            post(generate_id_token),
        )
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/{email}", axum::routing::delete(delete_user))
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "identity", responses((status = 200, body = WhoAmI)))]
pub(crate) async fn whoami(Caller(who): Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        principal: who.to_string(),
    })
}

// ----- policies -----

async fn get_policy(
    s: &AppState,
    who: &Principal,
    resource: Resource,
    perm: Permission,
) -> Result<Json<Policy>, ApiError> {
    require(s, who, perm, &resource)?;
    Ok(Json(s.platform.get_iam_policy(&resource).await?))
}

async fn set_policy(
    s: &AppState,
    who: &Principal,
    resource: Resource,
    perm: Permission,
    policy: Policy,
) -> Result<Json<Policy>, ApiError> {
    require(s, who, perm, &resource)?;
    Ok(Json(s.platform.set_iam_policy(&resource, policy).await?))
}

async fn binding(
    s: &AppState,
    who: &Principal,
    resource: Resource,
    perm: Permission,
    change: BindingChange,
    add: bool,
) -> Result<Json<Policy>, ApiError> {
    require(s, who, perm, &resource)?;
    Ok(Json(
        s.platform
            .change_binding(&resource, &change.member, &change.role, add)
            .await?,
    ))
}

/// The service at `path` as a resource, once the caller holds `perm` on it: a service that does not
/// exist is a 404 only for callers who may see it (permission first, then existence).
async fn service_resource(
    s: &AppState,
    who: &Principal,
    path: ServicePath,
    perm: Permission,
) -> Result<Resource, ApiError> {
    let ServicePath(project, service) = path;
    let r = Resource::Service(project.clone(), service.clone());
    require(s, who, perm, &r)?;
    // Policies attach to services that exist.
    s.platform.get_service(&project, &service).await?;
    Ok(r)
}

/// A service's IAM policy.
#[utoipa::path(get, path = "/v1/projects/{project}/services/{service}/iamPolicy", tag = "iam",
    params(("project" = String, Path), ("service" = String, Path)),
    responses((status = 200, body = Policy), (status = 403, body = pier_model::api::ErrorBody)))]
pub(crate) async fn get_service_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: ServicePath,
) -> Result<Json<Policy>, ApiError> {
    let r = service_resource(&s, &who, path, Permission::ServicesGetIamPolicy).await?;
    get_policy(&s, &who, r, Permission::ServicesGetIamPolicy).await
}

/// Replaces a service's IAM policy; send the etag you read, or the change is refused (409) if it moved.
#[utoipa::path(put, path = "/v1/projects/{project}/services/{service}/iamPolicy", tag = "iam",
    params(("project" = String, Path), ("service" = String, Path)), request_body = Policy,
    responses((status = 200, body = Policy), (status = 409, body = pier_model::api::ErrorBody)))]
pub(crate) async fn set_service_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: ServicePath,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<Policy>, ApiError> {
    let r = service_resource(&s, &who, path, Permission::ServicesSetIamPolicy).await?;
    set_policy(&s, &who, r, Permission::ServicesSetIamPolicy, policy).await
}

/// Grants a role on a service.
#[utoipa::path(post, path = "/v1/projects/{project}/services/{service}/iamPolicy/addBinding", tag = "iam",
    params(("project" = String, Path), ("service" = String, Path)), request_body = BindingChange,
    responses((status = 200, body = Policy)))]
pub(crate) async fn add_service_binding(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: ServicePath,
    ApiJson(change): ApiJson<BindingChange>,
) -> Result<Json<Policy>, ApiError> {
    let r = service_resource(&s, &who, path, Permission::ServicesSetIamPolicy).await?;
    binding(&s, &who, r, Permission::ServicesSetIamPolicy, change, true).await
}

/// Revokes a role on a service.
#[utoipa::path(post, path = "/v1/projects/{project}/services/{service}/iamPolicy/removeBinding", tag = "iam",
    params(("project" = String, Path), ("service" = String, Path)), request_body = BindingChange,
    responses((status = 200, body = Policy)))]
pub(crate) async fn remove_service_binding(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: ServicePath,
    ApiJson(change): ApiJson<BindingChange>,
) -> Result<Json<Policy>, ApiError> {
    let r = service_resource(&s, &who, path, Permission::ServicesSetIamPolicy).await?;
    binding(&s, &who, r, Permission::ServicesSetIamPolicy, change, false).await
}

/// The installation's IAM policy: roles granted here hold in every project (Google Cloud's
/// organization policy). `roles/vpcaccess.user` is granted here.
#[utoipa::path(get, path = "/v1/iamPolicy", tag = "iam", responses((status = 200, body = Policy)))]
pub(crate) async fn get_installation_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Policy>, ApiError> {
    get_policy(
        &s,
        &who,
        Resource::Installation,
        Permission::InstallationGetIamPolicy,
    )
    .await
}

/// Replaces the installation's IAM policy (etag-checked). A policy with no `roles/owner` member is
/// refused: nobody could change it again.
#[utoipa::path(put, path = "/v1/iamPolicy", tag = "iam", request_body = Policy,
    responses((status = 200, body = Policy)))]
pub(crate) async fn set_installation_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<Policy>, ApiError> {
    // Permission first: a caller who may not change the policy learns nothing about it.
    require(
        &s,
        &who,
        Permission::InstallationSetIamPolicy,
        &Resource::Installation,
    )?;
    keeps_an_owner(&policy)?;
    Ok(Json(
        s.platform
            .set_iam_policy(&Resource::Installation, policy)
            .await?,
    ))
}

/// Grants a role on the installation.
#[utoipa::path(post, path = "/v1/iamPolicy/addBinding", tag = "iam", request_body = BindingChange,
    responses((status = 200, body = Policy)))]
pub(crate) async fn add_installation_binding(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(change): ApiJson<BindingChange>,
) -> Result<Json<Policy>, ApiError> {
    binding(
        &s,
        &who,
        Resource::Installation,
        Permission::InstallationSetIamPolicy,
        change,
        true,
    )
    .await
}

/// Revokes a role on the installation; revoking the last owner is refused.
#[utoipa::path(post, path = "/v1/iamPolicy/removeBinding", tag = "iam", request_body = BindingChange,
    responses((status = 200, body = Policy), (status = 400, body = pier_model::api::ErrorBody)))]
pub(crate) async fn remove_installation_binding(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(change): ApiJson<BindingChange>,
) -> Result<Json<Policy>, ApiError> {
    require(
        &s,
        &who,
        Permission::InstallationSetIamPolicy,
        &Resource::Installation,
    )?;
    if change.role == "roles/owner" {
        let mut after = s.platform.get_iam_policy(&Resource::Installation).await?;
        for b in &mut after.bindings {
            if b.role == change.role {
                b.members.retain(|m| *m != change.member);
            }
        }
        keeps_an_owner(&after)?;
    }
    Ok(Json(
        s.platform
            .change_binding(&Resource::Installation, &change.member, &change.role, false)
            .await?,
    ))
}

/// The installation must keep a `roles/owner` user or service account, or nobody could manage it.
fn keeps_an_owner(policy: &Policy) -> Result<(), ApiError> {
    let has = policy.bindings.iter().any(|b| {
        b.role == "roles/owner"
            && b.members
                .iter()
                .any(|m| m.starts_with("user:") || m.starts_with("serviceAccount:"))
    });
    if has {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "the installation's policy must keep at least one roles/owner user or service account: grant the role to another member first",
        ))
    }
}

/// A project's IAM policy.
#[utoipa::path(get, path = "/v1/projects/{project}/iamPolicy", tag = "iam",
    params(("project" = String, Path)), responses((status = 200, body = Policy)))]
pub(crate) async fn get_project_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<Json<Policy>, ApiError> {
    get_policy(
        &s,
        &who,
        Resource::Project(project),
        Permission::ProjectsGetIamPolicy,
    )
    .await
}

/// Replaces a project's IAM policy (etag-checked).
#[utoipa::path(put, path = "/v1/projects/{project}/iamPolicy", tag = "iam",
    params(("project" = String, Path)), request_body = Policy, responses((status = 200, body = Policy)))]
pub(crate) async fn set_project_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<Policy>, ApiError> {
    set_policy(
        &s,
        &who,
        Resource::Project(project),
        Permission::ProjectsSetIamPolicy,
        policy,
    )
    .await
}

/// Grants a role on a project.
#[utoipa::path(post, path = "/v1/projects/{project}/iamPolicy/addBinding", tag = "iam",
    params(("project" = String, Path)), request_body = BindingChange, responses((status = 200, body = Policy)))]
pub(crate) async fn add_project_binding(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    ApiJson(change): ApiJson<BindingChange>,
) -> Result<Json<Policy>, ApiError> {
    binding(
        &s,
        &who,
        Resource::Project(project),
        Permission::ProjectsSetIamPolicy,
        change,
        true,
    )
    .await
}

/// Revokes a role on a project.
#[utoipa::path(post, path = "/v1/projects/{project}/iamPolicy/removeBinding", tag = "iam",
    params(("project" = String, Path)), request_body = BindingChange, responses((status = 200, body = Policy)))]
pub(crate) async fn remove_project_binding(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    ApiJson(change): ApiJson<BindingChange>,
) -> Result<Json<Policy>, ApiError> {
    binding(
        &s,
        &who,
        Resource::Project(project),
        Permission::ProjectsSetIamPolicy,
        change,
        false,
    )
    .await
}

/// The service account `email` as a resource. One that does not exist is reported as such only to
/// callers who hold `perm` on its project (the project is part of the address), so nobody learns which
/// accounts exist from a 404 they could not otherwise get.
pub(crate) fn sa_resource(
    s: &AppState,
    who: &Principal,
    email: &str,
    perm: Permission,
) -> Result<Resource, ApiError> {
    match s.platform.identity().sa_resource(email) {
        Ok(r) => Ok(r),
        Err(pier_control::ControlError::NotFound(m)) => {
            // Checked on the account it would be (its project's policy and the installation's hold
            // there), so the refusal reads as it would for an account that exists.
            let project = email
                .split_once('@')
                .and_then(|(_, domain)| domain.split_once(".iam."))
                .and_then(|(p, _)| p.parse::<pier_model::ProjectName>().ok());
            let would_be = match project {
                Some(p) => Resource::ServiceAccount(p.to_string(), email.to_owned()),
                None => Resource::Installation,
            };
            require(s, who, perm, &would_be)?;
            Err(ApiError::from(pier_control::ControlError::NotFound(m)))
        }
        Err(e) => Err(e.into()),
    }
}

/// A service account's IAM policy (who may act as it or mint its tokens).
#[utoipa::path(get, path = "/v1/serviceAccounts/{email}/iamPolicy", tag = "iam",
    params(("email" = String, Path)), responses((status = 200, body = Policy)))]
pub(crate) async fn get_sa_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
) -> Result<Json<Policy>, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsGet)?;
    get_policy(&s, &who, r, Permission::ServiceAccountsGet).await
}

/// Replaces a service account's IAM policy (etag-checked).
#[utoipa::path(put, path = "/v1/serviceAccounts/{email}/iamPolicy", tag = "iam",
    params(("email" = String, Path)), request_body = Policy, responses((status = 200, body = Policy)))]
pub(crate) async fn set_sa_policy(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
    ApiJson(policy): ApiJson<Policy>,
) -> Result<Json<Policy>, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsWrite)?;
    set_policy(&s, &who, r, Permission::ServiceAccountsWrite, policy).await
}

/// Grants a role on a service account.
#[utoipa::path(post, path = "/v1/serviceAccounts/{email}/iamPolicy/addBinding", tag = "iam",
    params(("email" = String, Path)), request_body = BindingChange, responses((status = 200, body = Policy)))]
pub(crate) async fn add_sa_binding(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
    ApiJson(change): ApiJson<BindingChange>,
) -> Result<Json<Policy>, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsWrite)?;
    binding(&s, &who, r, Permission::ServiceAccountsWrite, change, true).await
}

/// Revokes a role on a service account.
#[utoipa::path(post, path = "/v1/serviceAccounts/{email}/iamPolicy/removeBinding", tag = "iam",
    params(("email" = String, Path)), request_body = BindingChange, responses((status = 200, body = Policy)))]
pub(crate) async fn remove_sa_binding(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
    ApiJson(change): ApiJson<BindingChange>,
) -> Result<Json<Policy>, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsWrite)?;
    binding(&s, &who, r, Permission::ServiceAccountsWrite, change, false).await
}

// ----- service accounts -----

/// Lists a project's service accounts.
#[utoipa::path(get, path = "/v1/projects/{project}/serviceAccounts", tag = "iam",
    params(("project" = String, Path)), responses((status = 200, body = Vec<ServiceAccountView>)))]
pub(crate) async fn list_service_accounts(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<Json<Vec<ServiceAccountView>>, ApiError> {
    require(
        &s,
        &who,
        Permission::ServiceAccountsGet,
        &Resource::Project(project.clone()),
    )?;
    Ok(Json(
        s.platform
            .identity()
            .blocking(move |id| id.service_accounts(&project))
            .await?,
    ))
}

/// Creates a service account `NAME@PROJECT.iam.DOMAIN`.
#[utoipa::path(post, path = "/v1/projects/{project}/serviceAccounts", tag = "iam",
    params(("project" = String, Path)), request_body = CreateServiceAccountRequest,
    responses((status = 201, body = ServiceAccountView), (status = 409, body = pier_model::api::ErrorBody)))]
pub(crate) async fn create_service_account(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    ApiJson(req): ApiJson<CreateServiceAccountRequest>,
) -> Result<(StatusCode, Json<ServiceAccountView>), ApiError> {
    require(
        &s,
        &who,
        Permission::ServiceAccountsWrite,
        &Resource::Project(project.clone()),
    )?;
    if !s.platform.project_exists(&project).await? {
        return Err(ApiError::not_found(format!(
            "project {project} does not exist: deploy a service into it first"
        )));
    }
    let sa = s
        .platform
        .identity()
        .blocking(move |id| id.create_service_account(&project, &req.name, req.display_name))
        .await?;
    Ok((StatusCode::CREATED, Json(sa)))
}

/// Describes a service account.
#[utoipa::path(get, path = "/v1/serviceAccounts/{email}", tag = "iam",
    params(("email" = String, Path)), responses((status = 200, body = ServiceAccountView)))]
pub(crate) async fn get_service_account(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
) -> Result<Json<ServiceAccountView>, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsGet)?;
    require(&s, &who, Permission::ServiceAccountsGet, &r)?;
    Ok(Json(
        s.platform
            .identity()
            .blocking(move |id| id.service_account(&email))
            .await?,
    ))
}

/// Deletes a service account; its tokens stop working at once.
#[utoipa::path(delete, path = "/v1/serviceAccounts/{email}", tag = "iam",
    params(("email" = String, Path)), responses((status = 204)))]
pub(crate) async fn delete_service_account(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
) -> Result<StatusCode, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsWrite)?;
    require(&s, &who, Permission::ServiceAccountsWrite, &r)?;
    s.platform
        .identity()
        .blocking(move |id| id.delete_service_account(&email))
        .await?;
    s.platform.publish_routes().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_sa_disabled(
    s: AppState,
    who: Principal,
    email: String,
    disabled: bool,
) -> Result<StatusCode, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsWrite)?;
    require(&s, &who, Permission::ServiceAccountsWrite, &r)?;
    s.platform
        .identity()
        .blocking(move |id| id.set_service_account_disabled(&email, disabled))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables a service account: no new tokens, and its tokens are refused.
#[utoipa::path(post, path = "/v1/serviceAccounts/{email}/disable", tag = "iam",
    params(("email" = String, Path)), responses((status = 204)))]
pub(crate) async fn disable_service_account(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
) -> Result<StatusCode, ApiError> {
    set_sa_disabled(s, who, email, true).await
}

/// Enables a service account.
#[utoipa::path(post, path = "/v1/serviceAccounts/{email}/enable", tag = "iam",
    params(("email" = String, Path)), responses((status = 204)))]
pub(crate) async fn enable_service_account(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
) -> Result<StatusCode, ApiError> {
    set_sa_disabled(s, who, email, false).await
}

/// Lists a service account's keys.
#[utoipa::path(get, path = "/v1/serviceAccounts/{email}/keys", tag = "iam",
    params(("email" = String, Path)), responses((status = 200, body = Vec<KeyView>)))]
pub(crate) async fn list_keys(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
) -> Result<Json<Vec<KeyView>>, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsGet)?;
    require(&s, &who, Permission::ServiceAccountsGet, &r)?;
    Ok(Json(
        s.platform
            .identity()
            .blocking(move |id| id.keys(&email))
            .await?,
    ))
}

/// Creates a key and returns it as a Google service-account key file; Pier keeps only its public half.
#[utoipa::path(post, path = "/v1/serviceAccounts/{email}/keys", tag = "iam",
    params(("email" = String, Path)), responses((status = 201, description = "a service-account key file")))]
pub(crate) async fn create_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
) -> Result<(StatusCode, Json<KeyFile>), ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsWrite)?;
    require(&s, &who, Permission::ServiceAccountsWrite, &r)?;
    Ok((
        StatusCode::CREATED,
        Json(
            s.platform
                .identity()
                .blocking(move |id| id.create_key(&email))
                .await?,
        ),
    ))
}

async fn key_op(
    s: AppState,
    who: Principal,
    path: KeyPath,
    op: &str,
) -> Result<StatusCode, ApiError> {
    let KeyPath(email, key) = path;
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsWrite)?;
    require(&s, &who, Permission::ServiceAccountsWrite, &r)?;
    let op = op.to_owned();
    s.platform
        .identity()
        .blocking(move |id| match op.as_str() {
            "delete" => id.delete_key(&email, &key),
            "disable" => id.set_key_disabled(&email, &key, true),
            _ => id.set_key_disabled(&email, &key, false),
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a key; tokens obtained with it stop working at once.
#[utoipa::path(delete, path = "/v1/serviceAccounts/{email}/keys/{key}", tag = "iam",
    params(("email" = String, Path), ("key" = String, Path)), responses((status = 204)))]
pub(crate) async fn delete_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: KeyPath,
) -> Result<StatusCode, ApiError> {
    key_op(s, who, path, "delete").await
}

/// Disables a key.
#[utoipa::path(post, path = "/v1/serviceAccounts/{email}/keys/{key}/disable", tag = "iam",
    params(("email" = String, Path), ("key" = String, Path)), responses((status = 204)))]
pub(crate) async fn disable_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: KeyPath,
) -> Result<StatusCode, ApiError> {
    key_op(s, who, path, "disable").await
}

/// Enables a key.
#[utoipa::path(post, path = "/v1/serviceAccounts/{email}/keys/{key}/enable", tag = "iam",
    params(("email" = String, Path), ("key" = String, Path)), responses((status = 204)))]
pub(crate) async fn enable_key(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: KeyPath,
) -> Result<StatusCode, ApiError> {
    key_op(s, who, path, "enable").await
}

/// Mints an ID token for a service account (impersonation); needs `roles/iam.serviceAccountTokenCreator`.
#[utoipa::path(post, path = "/v1/serviceAccounts/{email}/generateIdToken", tag = "iam",
    params(("email" = String, Path)), request_body = GenerateIdTokenRequest,
    responses((status = 200, body = TokenView), (status = 403, body = pier_model::api::ErrorBody)))]
pub(crate) async fn generate_id_token(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
    ApiJson(req): ApiJson<GenerateIdTokenRequest>,
) -> Result<Json<TokenView>, ApiError> {
    let r = sa_resource(&s, &who, &email, Permission::ServiceAccountsGetOpenIdToken)?;
    require(&s, &who, Permission::ServiceAccountsGetOpenIdToken, &r)?;
    let token = s
        .platform
        .identity()
        .blocking(move |id| {
            let sa = id.service_account(&email)?;
            id.mint_identity_token(&Principal::ServiceAccount(sa.email), &req.audience, None)
        })
        .await?;
    Ok(Json(TokenView { token }))
}

// ----- users -----

/// Lists users.
#[utoipa::path(get, path = "/v1/users", tag = "identity", responses((status = 200, body = Vec<UserView>)))]
pub(crate) async fn list_users(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> Result<Json<Vec<UserView>>, ApiError> {
    require(&s, &who, Permission::UsersWrite, &Resource::Installation)?;
    Ok(Json(s.platform.identity().blocking(|id| id.users()).await?))
}

/// Creates a user with a password.
#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = CreateUserRequest,
    responses((status = 201, body = UserView), (status = 409, body = pier_model::api::ErrorBody)))]
pub(crate) async fn create_user(
    State(s): State<AppState>,
    Caller(who): Caller,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    require(&s, &who, Permission::UsersWrite, &Resource::Installation)?;
    // argon2 is CPU work: off the async workers, with the store write.
    let u = s
        .platform
        .identity()
        .blocking(move |id| id.create_user(&req.email, &req.password))
        .await?;
    Ok((StatusCode::CREATED, Json(u)))
}

/// Deletes a user; their tokens stop working at once.
#[utoipa::path(delete, path = "/v1/users/{email}", tag = "identity",
    params(("email" = String, Path)), responses((status = 204)))]
pub(crate) async fn delete_user(
    State(s): State<AppState>,
    Caller(who): Caller,
    AccountPath(email): AccountPath,
) -> Result<StatusCode, ApiError> {
    require(&s, &who, Permission::UsersWrite, &Resource::Installation)?;
    s.platform
        .identity()
        .blocking(move |id| id.delete_user(&email))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
