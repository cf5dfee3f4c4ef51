//! `GET /v1/projects/{project}/locations/local/operations/{id}`: a long-running operation (a deploy's
//! progress), in Google's shape. `after=VERSION&wait=SECONDS` long-polls: the answer comes when the
//! operation changes past that version, or ends, or the wait passes (at most 60 s).

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use pier_control::Resource;
use pier_identity::Permission;
use pier_model::operations::OperationView;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Caller;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/projects/{project}/locations/local/operations/{id}",
        get(get_operation),
    )
}

#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct Wait {
    /// Answer only once the operation's version passes this one (or it ends).
    after: Option<u64>,
    /// Longest wait for that, in seconds (default 30, at most 60).
    wait: Option<u64>,
}

/// An operation, for callers who may read its service.
#[utoipa::path(get, path = "/v1/projects/{project}/locations/local/operations/{id}", tag = "services",
    params(("project" = String, Path), ("id" = String, Path), Wait),
    responses((status = 200, body = OperationView), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn get_operation(
    State(s): State<AppState>,
    Caller(who): Caller,
    Path((project, id)): Path<(String, String)>,
    Query(w): Query<Wait>,
) -> Result<axum::Json<OperationView>, ApiError> {
    let project: pier_model::ProjectName = project
        .parse()
        .map_err(|e: pier_model::NameError| ApiError::invalid(e.to_string()))?;
    // An operation that does not exist is a 404 only for callers who may read the project; others
    // get the 403 an existing one would give them.
    let op = match s.platform.operation(&project, &id) {
        Ok(op) => op,
        Err(e) => {
            s.platform.identity().require(
                &who,
                Permission::ServicesGet,
                &Resource::Project(project.clone()),
            )?;
            return Err(e.into());
        }
    };
    let service: pier_model::ServiceName = op
        .service()
        .parse()
        .map_err(|e: pier_model::NameError| ApiError::invalid(e.to_string()))?;
    s.platform.identity().require(
        &who,
        Permission::ServicesGet,
        &Resource::Service(project.clone(), service),
    )?;
    let view = match w.after {
        Some(after) => {
            let wait = Duration::from_secs(w.wait.unwrap_or(30).min(60));
            op.wait_after(after, wait).await
        }
        None => op.view(),
    };
    Ok(axum::Json(view))
}
