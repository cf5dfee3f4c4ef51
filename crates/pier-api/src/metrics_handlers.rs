//! What Pier measures, for callers of the API: the Prometheus text of the whole server, and one
//! service's recent history (what the console charts).

use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pier_control::Resource;
use pier_identity::Permission;
use pier_model::api::MetricsHistoryView;
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Caller, ServicePath};

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/metrics", get(metrics)).route(
        "/v1/projects/{project}/services/{service}/metricsHistory",
        get(history),
    )
}

/// The server's metrics in Prometheus' text format (the same as `--metrics-addr` serves), for
/// callers who may read every service (`run.services.get` on the installation: a viewer there).
#[utoipa::path(get, path = "/v1/metrics", tag = "server",
    responses((status = 200, body = String, content_type = "application/openmetrics-text"),
        (status = 403, body = pier_model::api::ErrorBody), (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn metrics(
    State(s): State<AppState>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    s.platform
        .identity()
        .require(&who, Permission::ServicesGet, &Resource::Installation)
        .map_err(|_| {
            ApiError::forbidden(format!(
                "{who} may not read the server's metrics: they cover every project. An owner can grant roles/run.viewer on the installation (`pier installation add-iam-policy-binding --member={who} --role=roles/run.viewer`)"
            ))
        })?;
    let m = kept(&s)?;
    let text = tokio::task::spawn_blocking(move || m.render())
        .await
        .map_err(|e| {
            ApiError::from(pier_control::ControlError::Internal(format!(
                "rendering metrics: {e}"
            )))
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, pier_metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

fn kept(s: &AppState) -> Result<std::sync::Arc<pier_metrics::Metrics>, ApiError> {
    s.metrics.clone().ok_or_else(|| {
        ApiError::not_found("this server keeps no metrics (it runs with --metrics-addr off)")
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryParams {
    /// How far back, in minutes (default 60, at most 360).
    minutes: Option<u64>,
}

/// One service's recent figures at ten-second steps (kept in the server for six hours): requests
/// per second, latency percentiles, instances and cold starts.
#[utoipa::path(get, path = "/v1/projects/{project}/services/{service}/metricsHistory", tag = "services",
    params(("project" = String, Path), ("service" = String, Path),
        ("minutes" = Option<u64>, Query, description = "How far back (default 60, at most 360)")),
    responses((status = 200, body = MetricsHistoryView), (status = 403, body = pier_model::api::ErrorBody),
        (status = 404, body = pier_model::api::ErrorBody)))]
pub(crate) async fn history(
    State(s): State<AppState>,
    Caller(who): Caller,
    ServicePath(project, service): ServicePath,
    Query(q): Query<HistoryParams>,
) -> Result<axum::Json<MetricsHistoryView>, ApiError> {
    s.platform.identity().require(
        &who,
        Permission::ServicesGet,
        &Resource::Service(project.clone(), service.clone()),
    )?;
    let minutes = q.minutes.unwrap_or(60);
    if !(1..=360).contains(&minutes) {
        return Err(ApiError::invalid(format!(
            "minutes={minutes}: give 1 to 360 (the server keeps six hours)"
        )));
    }
    let m = kept(&s)?;
    let points = m.history().service(
        project.as_str(),
        service.as_str(),
        Duration::from_secs(minutes * 60),
    );
    let finite = |v: f32| v.is_finite().then_some(v);
    Ok(axum::Json(MetricsHistoryView {
        step_seconds: pier_metrics::history::STEP.as_secs(),
        time: points.iter().map(|p| p.at).collect(),
        requests_per_second: points.iter().map(|p| p.requests_per_second).collect(),
        latency_p50_ms: points.iter().map(|p| finite(p.latency_ms[0])).collect(),
        latency_p95_ms: points.iter().map(|p| finite(p.latency_ms[1])).collect(),
        latency_p99_ms: points.iter().map(|p| finite(p.latency_ms[2])).collect(),
        instances: points.iter().map(|p| p.instances).collect(),
        cold_starts: points.iter().map(|p| p.cold_starts).collect(),
    }))
}
