//! What changes while a page is open: a service's logs as server-sent events, its chart data, and a
//! deploy's progress.

use std::convert::Infallible;
use std::fmt::Write;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use pier_model::logs::LogEntry;
use pier_model::operations::{OperationView, PhaseState};

use crate::html::{esc, page, seg};
use crate::{Shared, to_sign_in};

/// Log lines a page starts with before the live ones.
const BACKLOG: u32 = 30;

fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "not signed in to the console: reload the page\n",
    )
        .into_response();
    crate::html::protect(r.headers_mut());
    r
}

/// One log entry as the page shows it: time, severity, then the request (`GET /path 200 0.0012s`)
/// or the app's message.
pub(crate) fn line(e: &LogEntry) -> String {
    let time = e.timestamp.get(11..23).unwrap_or(&e.timestamp);
    let severity = e
        .severity
        .map(|s| format!("{s:?}").to_uppercase())
        .unwrap_or_default();
    match &e.http_request {
        Some(h) => {
            // The URL's path and query: the host is the service's own.
            let path = h
                .request_url
                .splitn(4, '/')
                .nth(3)
                .map(|p| format!("/{p}"))
                .unwrap_or_else(|| h.request_url.clone());
            format!(
                "{time} {severity} {} {path} {} {}",
                h.request_method, h.status, h.latency
            )
        }
        None => format!("{time} {severity} {}", e.message),
    }
}

/// `GET .../logs`: server-sent events, one per log line (requests and app output), from the API's
/// followed log (`?follow=true`, newline-delimited JSON). Each event's data is the line's text.
pub(crate) async fn logs(
    State(c): State<Shared>,
    Path((project, service)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some((id, who)) = c.signed(&headers).await else {
        return unauthorized();
    };
    let path = format!(
        "/v1/projects/{}/services/{}/logs?type=all&follow=true&limit={BACKLOG}",
        seg(&project),
        seg(&service)
    );
    let body = match c.api.stream(&who.access, &path).await {
        Ok(b) => b,
        Err(e) => return (e.status, e.message).into_response(),
    };
    let mut pending: Vec<u8> = Vec::new();
    let c2 = c.clone();
    // The stream ends with the session (signed out, expired): nothing more reaches that page.
    let events = body
        .into_data_stream()
        .take_while(move |_| std::future::ready(c2.sessions.alive(&id)))
        .flat_map(move |chunk| {
            let mut out: Vec<Result<Event, Infallible>> = Vec::new();
            if let Ok(bytes) = chunk {
                pending.extend_from_slice(&bytes);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let raw: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(e) = serde_json::from_slice::<LogEntry>(&raw) {
                        let kind = if e.http_request.is_some() {
                            "request"
                        } else {
                            "app"
                        };
                        out.push(Ok(Event::default().event(kind).data(line(&e))));
                    }
                }
            }
            futures_util::stream::iter(out)
        });
    let mut r = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET .../history`: the service's chart data (the API's `metricsHistory`, last hour), as JSON.
pub(crate) async fn history(
    State(c): State<Shared>,
    Path((project, service)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some((_, who)) = c.signed(&headers).await else {
        return unauthorized();
    };
    let path = format!(
        "/v1/projects/{}/services/{}/metricsHistory?minutes=60",
        seg(&project),
        seg(&service)
    );
    match c
        .api
        .get::<pier_model::api::MetricsHistoryView>(&who.access, &path)
        .await
    {
        Ok(h) => {
            let mut r = axum::Json(h).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => (e.status, e.message).into_response(),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct OperationParams {
    /// The service the operation deploys (for the way back).
    service: Option<String>,
    /// The version the page shows: the fragment waits for a newer one.
    after: Option<u64>,
    /// Whether only the fragment is wanted (htmx's polls).
    fragment: Option<u8>,
}

/// `GET /console/projects/{project}/operations/{operation}`: a deploy's phases. While it runs, the
/// list asks for itself again (htmx), and the API holds each ask until something changes.
pub(crate) async fn operation(
    State(c): State<Shared>,
    Path((project, operation)): Path<(String, String)>,
    Query(q): Query<OperationParams>,
    headers: HeaderMap,
) -> Response {
    let here = format!(
        "/console/projects/{}/operations/{}",
        seg(&project),
        seg(&operation)
    );
    let back_here = match &q.service {
        Some(s) => format!("{here}?service={}", seg(s)),
        None => here.clone(),
    };
    let Some((_, who)) = c.signed(&headers).await else {
        return if q.fragment.is_some() {
            unauthorized()
        } else {
            to_sign_in(&back_here)
        };
    };
    let mut path = format!(
        "/v1/projects/{}/locations/local/operations/{}",
        seg(&project),
        seg(&operation)
    );
    if let Some(v) = q.after {
        let _ = write!(path, "?after={v}&wait=20");
    }
    let op: OperationView = match c.api.get(&who.access, &path).await {
        Ok(o) => o,
        Err(e) => {
            return page(
                e.status,
                "Deploy",
                &who,
                &project,
                &format!(
                    "<h1>Deploy</h1><p id=\"message\" class=\"error\">{}</p>",
                    esc(&e.message)
                ),
            );
        }
    };
    let service = q.service.unwrap_or_default();
    let fragment = phases(&op, &here, &service);
    if q.fragment.is_some() {
        return crate::html::html(StatusCode::OK, fragment);
    }
    let back = if service.is_empty() {
        String::new()
    } else {
        format!(
            "<p><a id=\"back\" href=\"/console/projects/{}/services/{}\">Back to {}</a></p>",
            seg(&project),
            seg(&service),
            esc(&service)
        )
    };
    page(
        StatusCode::OK,
        "Deploy",
        &who,
        &project,
        &format!(
            "<h1>Deploy <small>{}</small></h1>{fragment}{back}",
            esc(&op.metadata.target)
        ),
    )
}

/// The phases list; while the operation runs, it polls for its next version.
fn phases(op: &OperationView, here: &str, service: &str) -> String {
    let mut h = String::new();
    if op.done {
        h.push_str("<div id=\"operation\">");
    } else {
        let _ = write!(
            h,
            "<div id=\"operation\" hx-get=\"{here}?fragment=1&amp;after={}&amp;service={}\" hx-trigger=\"load delay:100ms\" hx-swap=\"outerHTML\">",
            op.version,
            seg(service)
        );
    }
    h.push_str("<ol id=\"phases\">");
    for p in &op.metadata.phases {
        let state = match p.state {
            PhaseState::Pending => "pending",
            PhaseState::Running => "running",
            PhaseState::Succeeded => "done",
            PhaseState::Failed => "failed",
            PhaseState::Skipped => "skipped",
        };
        let _ = write!(
            h,
            "<li data-state=\"{state}\"><span class=\"phase\">{}</span> <span class=\"detail\">{}</span>{}</li>",
            esc(&p.name),
            esc(p.detail.as_deref().unwrap_or("")),
            p.millis
                .map(|m| format!(" <span class=\"took\">{m} ms</span>"))
                .unwrap_or_default()
        );
    }
    h.push_str("</ol>");
    if op.done {
        match &op.error {
            None => h.push_str("<p id=\"operation-done\" class=\"ok\">Done</p>"),
            Some(e) => {
                let _ = write!(
                    h,
                    "<p id=\"operation-done\" class=\"error\">{}</p>",
                    esc(&e.message)
                );
            }
        }
    }
    h.push_str("</div>");
    h
}
