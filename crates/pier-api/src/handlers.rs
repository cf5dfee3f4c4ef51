//! The `/v1` handlers. Each is a thin translation between HTTP and the control plane.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pier_model::api::{
    DeployRequest, LogEntry, RevisionView, ServerInfo, ServiceView, UpdateServiceRequest,
    UpdateTrafficRequest,
};
use pier_model::{RevisionName, ServiceName};
use pier_runtime::logs::LogQuery;
use serde::Deserialize;

use pier_control::Resource;
use pier_identity::Permission;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Caller, ProjectPath, RevisionPath, ServicePath};

fn require(
    s: &AppState,
    who: &pier_identity::Principal,
    p: Permission,
    r: Resource,
) -> Result<(), ApiError> {
    Ok(s.platform.identity().require(who, p, &r)?)
}

/// The service a revision belongs to, once the caller holds `perm` on it. A revision that does not
/// exist is a 404 only for callers who hold `perm` on the project; others get the same 403 an existing
/// revision would give them.
async fn revision_service(
    s: &AppState,
    who: &pier_identity::Principal,
    project: &pier_model::ProjectName,
    revision: &RevisionName,
    perm: Permission,
) -> Result<ServiceName, ApiError> {
    // One refusal for both cases, naming only what the caller asked about, so it tells nothing of
    // which service owns the revision or whether it exists.
    let refused = || {
        ApiError::from(pier_control::ControlError::Forbidden(format!(
            "{who} lacks permission {} on revision {revision} in project {project}: ask an owner to grant a role that includes it",
            perm.as_str()
        )))
    };
    match s.platform.get_revision(project, revision).await {
        Ok(view) => {
            require(
                s,
                who,
                perm,
                Resource::Service(project.clone(), view.service.clone()),
            )
            .map_err(|_| refused())?;
            Ok(view.service)
        }
        Err(pier_control::ControlError::NotFound(m)) => {
            require(s, who, perm, Resource::Project(project.clone())).map_err(|_| refused())?;
            Err(ApiError::from(pier_control::ControlError::NotFound(m)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Blanks a failed revision's last log lines for callers who may not read the service's logs.
fn hide_logs(
    s: &AppState,
    who: &pier_identity::Principal,
    project: &pier_model::ProjectName,
    mut view: RevisionView,
) -> RevisionView {
    let r = Resource::Service(project.clone(), view.service.clone());
    if !view.log_tail.is_empty()
        && s.platform
            .identity()
            .require(who, Permission::LogsRead, &r)
            .is_err()
    {
        view.log_tail.clear();
    }
    view
}

/// Longest a client may ask `?wait=` to hold a revision request.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/projects/{project}/services", get(list_services))
        .route(
            "/v1/projects/{project}/services/{service}",
            get(get_service)
                .delete(delete_service)
                .patch(update_service),
        )
        .route(
            "/v1/projects/{project}/services/{service}/revisions",
            post(deploy),
        )
        .route(
            "/v1/projects/{project}/services/{service}/traffic",
            post(update_traffic),
        )
        .route("/v1/projects/{project}/services/{service}/logs", get(logs))
        .route("/v1/projects/{project}/revisions", get(list_revisions))
        .route(
            "/v1/projects/{project}/revisions/{revision}",
            get(get_revision).delete(delete_revision),
        )
}

/// Server version, domain, ports and CA path.
#[utoipa::path(get, path = "/v1/info", tag = "server",
    responses((status = 200, body = ServerInfo)))]
pub(crate) async fn info(State(s): State<AppState>) -> axum::Json<ServerInfo> {
    axum::Json(ServerInfo::clone(&s.info))
}

/// Lists a project's services.
#[utoipa::path(get, path = "/v1/projects/{project}/services", tag = "services",
    params(("project" = String, Path, description = "project name")),
    responses((status = 200, body = Vec<ServiceView>), (status = 400, body = pier_model::api::ErrorBody)))]
pub(crate) async fn list_services(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
) -> Result<axum::Json<Vec<ServiceView>>, ApiError> {
    require(
        &s,
        &who,
        Permission::ServicesGet,
        Resource::Project(project.clone()),
    )?;
    Ok(axum::Json(s.platform.list_services(&project).await?))
}

/// Describes a service.
#[utoipa::path(get, path = "/v1/projects/{project}/services/{service}", tag = "services",
    params(("project" = String, Path), ("service" = String, Path)),
    responses((status = 200, body = ServiceView), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn get_service(
    State(s): State<AppState>,
    Caller(who): Caller,
    ServicePath(project, service): ServicePath,
) -> Result<axum::Json<ServiceView>, ApiError> {
    require(
        &s,
        &who,
        Permission::ServicesGet,
        Resource::Service(project.clone(), service.clone()),
    )?;
    Ok(axum::Json(
        s.platform.get_service(&project, &service).await?,
    ))
}

/// Deletes a service, its revisions and logs.
#[utoipa::path(delete, path = "/v1/projects/{project}/services/{service}", tag = "services",
    params(("project" = String, Path), ("service" = String, Path)),
    responses((status = 204), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn delete_service(
    State(s): State<AppState>,
    Caller(who): Caller,
    ServicePath(project, service): ServicePath,
) -> Result<StatusCode, ApiError> {
    require(
        &s,
        &who,
        Permission::ServicesWrite,
        Resource::Service(project.clone(), service.clone()),
    )?;
    s.platform.delete_service(&project, &service).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes service settings that need no new revision.
#[utoipa::path(patch, path = "/v1/projects/{project}/services/{service}", tag = "services",
    params(("project" = String, Path), ("service" = String, Path)),
    request_body = UpdateServiceRequest,
    responses((status = 200, body = ServiceView), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn update_service(
    State(s): State<AppState>,
    Caller(who): Caller,
    ServicePath(project, service): ServicePath,
    ApiJson(req): ApiJson<UpdateServiceRequest>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    let resource = Resource::Service(project.clone(), service.clone());
    require(&s, &who, Permission::ServicesWrite, resource.clone())?;
    // Widening who may reach the service needs the right to set its IAM policy, as on Cloud Run.
    let current = s.platform.get_service(&project, &service).await?;
    let widening = req.widening(
        current.ingress,
        current.invoker_iam_check,
        &current.custom_audiences,
    );
    if !widening.is_empty() {
        require(&s, &who, Permission::ServicesSetIamPolicy, resource).map_err(|_| {
            ApiError::from(pier_control::ControlError::Forbidden(format!(
                "{who} may not widen who reaches service {service} ({}): that needs run.services.setIamPolicy (roles/run.admin or roles/owner)",
                widening.join(", ")
            )))
        })?;
    }
    Ok(axum::Json(
        s.platform.update_service(&project, &service, req).await?,
    ))
}

/// Deploys a new revision (creating the service on first deploy). Answers at once with the revision in
/// state DEPLOYING; `GET .../revisions/{revision}?wait=N` waits for the outcome.
#[utoipa::path(post, path = "/v1/projects/{project}/services/{service}/revisions", tag = "services",
    params(("project" = String, Path), ("service" = String, Path)),
    request_body = DeployRequest,
    responses((status = 202, body = RevisionView), (status = 400, body = pier_model::api::ErrorBody)))]
pub(crate) async fn deploy(
    State(s): State<AppState>,
    Caller(who): Caller,
    ServicePath(project, service): ServicePath,
    ApiJson(mut req): ApiJson<DeployRequest>,
) -> Result<(StatusCode, axum::Json<RevisionView>), ApiError> {
    // Writing a service needs the service's permission, checked first so the answer says nothing about
    // whether the project exists; creating the project also needs the installation-level one.
    let resource = Resource::Service(project.clone(), service.clone());
    require(&s, &who, Permission::ServicesWrite, resource.clone())?;
    if !s.platform.project_exists(&project).await? {
        require(&s, &who, Permission::ProjectsCreate, Resource::Installation)?;
    }
    // Widening who may reach the service needs the right to set its IAM policy; without it the deploy
    // goes on without the widening and says so, as Cloud Run's does.
    req.creator = Some(who.to_string());
    let mut warnings = Vec::new();
    if req.settings.allow_unauthenticated.is_none() {
        req.settings.allow_unauthenticated = req.allow_unauthenticated.take();
    }
    let current = match s.platform.get_service(&project, &service).await {
        Ok(v) => Some(v),
        Err(pier_control::ControlError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (ingress, check, audiences) = current
        .as_ref()
        .map(|c| (c.ingress, c.invoker_iam_check, c.custom_audiences.clone()))
        .unwrap_or((pier_model::Ingress::All, true, Vec::new()));
    let widening = req.settings.widening(ingress, check, &audiences);
    if !widening.is_empty()
        && s.platform
            .identity()
            .require(&who, Permission::ServicesSetIamPolicy, &resource)
            .is_err()
    {
        warnings.push(format!(
            "{} not applied: {who} lacks run.services.setIamPolicy on service {service}; ask an admin to grant it (pier services add-iam-policy-binding / update)",
            widening.join(", ")
        ));
        req.settings.without_widening(ingress, check, &audiences);
    }
    // Running as a service account needs actAs on it (the project's default one included).
    let identity = s.platform.identity();
    let sa = match &req.template.service_account {
        Some(email) => {
            crate::iam_handlers::sa_resource(&s, &who, email, Permission::ServiceAccountsActAs)?
        }
        None => Resource::ServiceAccount(
            project.to_string(),
            identity.default_service_account(&project),
        ),
    };
    require(&s, &who, Permission::ServiceAccountsActAs, sa)?;
    // Host access is an installation-level right: running unsandboxed, or letting the instance read host
    // paths other users cannot (a home, a 0700 folder), which Pier records with the revision.
    if req.template.unsandboxed {
        identity.require(&who, Permission::InstancesHostAccess, &Resource::Installation).map_err(|_| {
            ApiError::from(pier_control::ControlError::Forbidden(format!(
                "{who} may not deploy --unsandboxed: it runs the command as the server's user, which only an owner may allow"
            )))
        })?;
    }
    req.template.private_paths = req.template.image.is_none()
        && identity
            .require(
                &who,
                Permission::InstancesHostAccess,
                &Resource::Installation,
            )
            .is_ok();
    // A seccomp exception is the owner's to attach; a revision that keeps the one its service has
    // already may be deployed by whoever may deploy.
    let kept = current
        .as_ref()
        .and_then(|c| c.template.as_ref())
        .is_some_and(|t| t.seccomp_exception == req.template.seccomp_exception);
    if req.template.seccomp_exception.is_some() && !kept {
        identity
            .require(&who, Permission::InstancesLoosenSandbox, &Resource::Installation)
            .map_err(|_| {
                ApiError::from(pier_control::ControlError::Forbidden(format!(
                    "{who} may not attach --seccomp-exception: loosening the sandbox needs pier.instances.loosenSandbox on the installation, which only an owner has"
                )))
            })?;
    }
    if req.template.vpc_egress.is_some() {
        identity.require(&who, Permission::NetworksUse, &Resource::Installation).map_err(|_| {
            ApiError::from(pier_control::ControlError::Forbidden(format!(
                "{who} may not deploy with --vpc-egress: reaching the operator's private networks needs vpcaccess.connectors.use on the installation: ask an owner to run `pier installation add-iam-policy-binding --member={who} --role=roles/vpcaccess.user`"
            )))
        })?;
    }
    // An image from the server's own files reads them as the server: an installation-level right.
    let local = ["oci-archive:", "docker-archive:", "oci:"];
    if let Some(image) = &req.template.image
        && local.iter().any(|p| image.starts_with(p))
    {
        require(&s, &who, Permission::ImagesWrite, Resource::Installation)?;
    }
    // So is a registry on the server's own loopback or link-local addresses: pulling from one reaches
    // the server's own network as the server (a port scan, or a local service's answer).
    if let Some(image) = &req.template.image
        && registry_is_the_servers_own(image)
    {
        identity
            .require(&who, Permission::ImagesWrite, &Resource::Installation)
            .map_err(|_| {
                ApiError::from(pier_control::ControlError::Forbidden(format!(
                    "{who} may not pull from {image}: a registry on the server's own loopback or link-local addresses is an owner's to use (pier.images.update); push the image to a registry on the network"
                )))
            })?;
    }
    let mut rev = s.platform.deploy(&project, &service, req).await?;
    rev.warnings = warnings;
    Ok((StatusCode::ACCEPTED, axum::Json(rev)))
}

/// Whether an image reference names a registry on the server's loopback (`localhost`, 127.0.0.0/8,
/// `::1`) or link-local addresses (169.254.0.0/16, `fe80::/10`).
fn registry_is_the_servers_own(image: &str) -> bool {
    if image.contains("://")
        || ["oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .any(|p| image.starts_with(p))
    {
        return false;
    }
    let first = image.split('/').next().unwrap_or("");
    let names_a_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !names_a_registry {
        return false;
    }
    let host = match first.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => first.rsplit_once(':').map_or(first, |(h, _)| h),
    };
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            ip.is_loopback() || ip.is_link_local() || ip.is_unspecified()
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => false,
    }
}

/// Changes traffic and tags.
#[utoipa::path(post, path = "/v1/projects/{project}/services/{service}/traffic", tag = "services",
    params(("project" = String, Path), ("service" = String, Path)),
    request_body = UpdateTrafficRequest,
    responses((status = 200, body = ServiceView), (status = 400, body = pier_model::api::ErrorBody)))]
pub(crate) async fn update_traffic(
    State(s): State<AppState>,
    Caller(who): Caller,
    ServicePath(project, service): ServicePath,
    ApiJson(req): ApiJson<UpdateTrafficRequest>,
) -> Result<axum::Json<ServiceView>, ApiError> {
    require(
        &s,
        &who,
        Permission::ServicesWrite,
        Resource::Service(project.clone(), service.clone()),
    )?;
    Ok(axum::Json(
        s.platform.update_traffic(&project, &service, req).await?,
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct LogParams {
    /// Newest lines to return (default 100, at most 10000).
    limit: Option<usize>,
    /// Only this revision.
    revision: Option<String>,
    /// Only this instance.
    instance: Option<String>,
    /// Which logs: `app` (the default: the instances' lines), `requests` (the request log) or `all`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// Only entries since this time: RFC 3339 (`2026-12-01T10:00:00Z`) or a duration back from now
    /// (`10m`, `2h`, `30s`, `1d`).
    since: Option<String>,
    /// Only entries of this severity or above (`DEFAULT` .. `EMERGENCY`, Cloud Logging's).
    severity: Option<String>,
    /// Keep the response open and stream new lines (NDJSON).
    #[serde(default)]
    follow: bool,
}

/// `since` as the timestamps of log entries are written (so that they compare as text).
fn parse_since(s: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "since={s:?}: use an RFC 3339 time (2026-12-01T10:00:00Z) or a duration back from now (30s, 10m, 2h, 1d)"
        ))
    };
    if let Ok(t) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(pier_runtime::logs::format_time(t.into()));
    }
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    let at = std::time::SystemTime::now()
        .checked_sub(std::time::Duration::from_secs(secs))
        .ok_or_else(bad)?;
    Ok(pier_runtime::logs::format_time(at))
}

/// A service's logs (instances' lines, its request log, or both), oldest first; with `follow=true`, an
/// NDJSON stream that stays open.
#[utoipa::path(get, path = "/v1/projects/{project}/services/{service}/logs", tag = "services",
    params(("project" = String, Path), ("service" = String, Path), LogParams),
    responses((status = 200, body = Vec<LogEntry>), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn logs(
    State(s): State<AppState>,
    Caller(who): Caller,
    ServicePath(project, service): ServicePath,
    Query(q): Query<LogParams>,
) -> Result<Response, ApiError> {
    require(
        &s,
        &who,
        Permission::LogsRead,
        Resource::Service(project.clone(), service.clone()),
    )?;
    let revision = q
        .revision
        .as_deref()
        .map(str::parse::<RevisionName>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let kind: pier_model::logs::LogKind = q
        .kind
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(ApiError::invalid)?
        .unwrap_or_default();
    let severity = q
        .severity
        .as_deref()
        .map(str::parse::<pier_model::logs::Severity>)
        .transpose()
        .map_err(ApiError::invalid)?;
    let query = LogQuery {
        revision,
        instance: q.instance.clone(),
        limit: q.limit.unwrap_or(100).min(10_000),
        since: q.since.as_deref().map(parse_since).transpose()?,
        severity,
    };
    let app_live =
        (kind != pier_model::logs::LogKind::Requests).then(|| s.platform.log_store().subscribe());
    let request_live = (kind != pier_model::logs::LogKind::App)
        .then(|| s.platform.request_log_store().map(|r| r.subscribe()))
        .flatten();
    let mut lines = s
        .platform
        .logs(&project, &service, query.clone(), kind)
        .await?;
    for e in &mut lines {
        e.severity = Some(e.severity());
    }
    if !q.follow {
        return Ok(axum::Json(lines).into_response());
    }
    let first: String = lines
        .iter()
        .filter_map(|l| serde_json::to_string(l).ok())
        .map(|l| l + "\n")
        .collect();
    let last_ts = lines
        .last()
        .map(|l| l.timestamp.clone())
        .unwrap_or_default();
    let filter = move |p: &pier_model::ProjectName, svc: &ServiceName, e: &LogEntry| {
        *p == project && *svc == service && e.timestamp > last_ts && query.matches(e)
    };
    // New lines from either log, as they come.
    let live = futures_util::stream::select(log_stream(app_live), log_stream(request_live));
    let stream = futures_util::stream::unfold(
        (Some(first), Box::pin(live), filter),
        |(first, mut live, filter)| async move {
            use futures_util::StreamExt;
            if let Some(first) = first
                && !first.is_empty()
            {
                return Some((Ok::<_, std::io::Error>(first), (None, live, filter)));
            }
            while let Some(item) = live.next().await {
                let (p, svc, e) = &*item;
                if filter(p, svc, e) {
                    let mut e = e.clone();
                    e.severity = Some(e.severity());
                    let line = serde_json::to_string(&e).unwrap_or_default() + "\n";
                    return Some((Ok(line), (None, live, filter)));
                }
            }
            None
        },
    );
    Ok(Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// A log store's live lines as a stream (lines missed by a slow reader are skipped); none without one.
fn log_stream(
    rx: Option<tokio::sync::broadcast::Receiver<pier_runtime::logs::LiveLine>>,
) -> impl futures_util::Stream<Item = pier_runtime::logs::LiveLine> {
    futures_util::stream::unfold(rx, |rx| async move {
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                Ok(item) => return Some((item, Some(rx))),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct RevisionFilter {
    /// Only this service's revisions.
    service: Option<String>,
}

/// Lists revisions, newest first per service.
#[utoipa::path(get, path = "/v1/projects/{project}/revisions", tag = "revisions",
    params(("project" = String, Path), RevisionFilter),
    responses((status = 200, body = Vec<RevisionView>), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn list_revisions(
    State(s): State<AppState>,
    Caller(who): Caller,
    ProjectPath(project): ProjectPath,
    Query(f): Query<RevisionFilter>,
) -> Result<axum::Json<Vec<RevisionView>>, ApiError> {
    let service = f
        .service
        .as_deref()
        .map(str::parse::<ServiceName>)
        .transpose()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let resource = match &service {
        Some(svc) => Resource::Service(project.clone(), svc.clone()),
        None => Resource::Project(project.clone()),
    };
    require(&s, &who, Permission::ServicesGet, resource)?;
    let list = s
        .platform
        .list_revisions(&project, service.as_ref())
        .await?;
    Ok(axum::Json(
        list.into_iter()
            .map(|v| hide_logs(&s, &who, &project, v))
            .collect(),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct WaitParams {
    /// Seconds to wait for a deploying revision to become ready or fail (at most 300).
    wait: Option<u64>,
}

/// Describes a revision; with `wait`, first waits while it is deploying.
#[utoipa::path(get, path = "/v1/projects/{project}/revisions/{revision}", tag = "revisions",
    params(("project" = String, Path), ("revision" = String, Path), WaitParams),
    responses((status = 200, body = RevisionView), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn get_revision(
    State(s): State<AppState>,
    Caller(who): Caller,
    RevisionPath(project, revision): RevisionPath,
    Query(w): Query<WaitParams>,
) -> Result<axum::Json<RevisionView>, ApiError> {
    revision_service(&s, &who, &project, &revision, Permission::ServicesGet).await?;
    let view = match w.wait {
        Some(secs) if secs > 0 => {
            s.platform
                .wait_revision(&project, &revision, Duration::from_secs(secs).min(MAX_WAIT))
                .await?
        }
        _ => s.platform.get_revision(&project, &revision).await?,
    };
    Ok(axum::Json(hide_logs(&s, &who, &project, view)))
}

/// Deletes a revision that serves no traffic.
#[utoipa::path(delete, path = "/v1/projects/{project}/revisions/{revision}", tag = "revisions",
    params(("project" = String, Path), ("revision" = String, Path)),
    responses((status = 204), (status = 409, body = pier_model::api::ErrorBody)))]
pub(crate) async fn delete_revision(
    State(s): State<AppState>,
    Caller(who): Caller,
    RevisionPath(project, revision): RevisionPath,
) -> Result<StatusCode, ApiError> {
    revision_service(&s, &who, &project, &revision, Permission::ServicesWrite).await?;
    s.platform.delete_revision(&project, &revision).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod registry_tests {
    use super::registry_is_the_servers_own as own;

    #[test]
    fn loopback_and_link_local_registries_are_the_servers_own() {
        for image in [
            "127.0.0.1:5000/app:1",
            "localhost:5000/app",
            "localhost/app",
            "[::1]:5000/app",
            "169.254.169.254/x:y",
            "127.9.9.9/a/b@sha256:00",
            "registry.pier.localhost:8443/app",
        ] {
            assert!(own(image), "{image}");
        }
        for image in [
            "docker.io/library/busybox",
            "busybox",
            "10.0.0.5:5000/app",
            "oci:/srv/layout:tag",
            "registry.example.com/app:1",
            "library/busybox:1",
        ] {
            assert!(!own(image), "{image}");
        }
    }
}
