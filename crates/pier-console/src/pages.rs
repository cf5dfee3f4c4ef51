//! The console's pages: the services of a project, and one service with everything a Cloud Run user
//! looks at daily. Each page is a few API calls made at once, then one string.

use std::collections::HashMap;
use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use pier_model::api::{RevisionState, RevisionView, ServiceView};
use pier_model::domains::DomainMappingView;

use crate::api::ApiFailure;
use crate::html::{csrf_field, esc, member_name, page, seg, when};
use crate::session::Signed;
use crate::{Shared, to_sign_in};

/// An IAM policy as the API answers it (only what the page shows).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Policy {
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Binding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// A page that could not be made: the API's refusal, shown in the frame.
fn failed(who: &Signed, project: &str, title: &str, e: &ApiFailure) -> Response {
    let status = if e.status.is_client_error() || e.status.is_server_error() {
        e.status
    } else {
        StatusCode::BAD_GATEWAY
    };
    page(
        status,
        title,
        who,
        project,
        &format!(
            "<h1>{}</h1><p id=\"message\" class=\"error\">{}</p>",
            esc(title),
            esc(&e.message)
        ),
    )
}

fn status_of(s: &ServiceView, latest: Option<&RevisionView>) -> (&'static str, &'static str) {
    match latest.map(|r| r.state) {
        Some(RevisionState::Deploying) => ("Deploying", "deploying"),
        _ if s.ready => ("Ready", "ready"),
        Some(RevisionState::Failed) => ("Failed", "failed"),
        _ => ("Not ready", "failed"),
    }
}

fn deployed(r: Option<&RevisionView>) -> String {
    match r {
        Some(r) => match &r.creator {
            Some(c) => format!("{} by {}", when(&r.created_at), member_name(c)),
            None => when(&r.created_at),
        },
        None => "never".into(),
    }
}

/// `GET /console/projects/{project}/services`.
pub(crate) async fn services(
    State(c): State<Shared>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some((_, who)) = c.signed(&headers).await else {
        return to_sign_in(&format!("/console/projects/{}/services", seg(&project)));
    };
    let p = seg(&project);
    let (services_path, revisions_path) = (
        format!("/v1/projects/{p}/services"),
        format!("/v1/projects/{p}/revisions"),
    );
    let (services, revisions) = tokio::join!(
        c.api.get::<Vec<ServiceView>>(&who.access, &services_path),
        c.api.get::<Vec<RevisionView>>(&who.access, &revisions_path),
    );
    let services = match services {
        Ok(s) => s,
        Err(e) => return failed(&who, &project, "Services", &e),
    };
    // A caller who may list services but not every revision still gets the list.
    let revisions = revisions.unwrap_or_default();
    let latest: HashMap<&str, &RevisionView> = {
        let mut m: HashMap<&str, &RevisionView> = HashMap::new();
        for r in &revisions {
            let e = m.entry(r.service.as_str()).or_insert(r);
            if r.created_at > e.created_at {
                *e = r;
            }
        }
        m
    };
    let mut rows = String::with_capacity(services.len() * 400);
    for s in &services {
        let name = s.name.as_str();
        let last = latest.get(name).copied();
        let (status, class) = status_of(s, last);
        let _ = write!(
            rows,
            "<tr data-service=\"{n}\"><td><a href=\"/console/projects/{p}/services/{sn}\">{n}</a></td>\
             <td class=\"status {class}\">{status}</td><td class=\"url\"><a href=\"{u}\">{u}</a></td>\
             <td class=\"deployed\">{d}</td></tr>",
            n = esc(name),
            sn = seg(name),
            u = esc(&s.url),
            d = esc(&deployed(last)),
        );
    }
    let body = if services.is_empty() {
        format!(
            "<h1>Services</h1><p class=\"empty\">No services in project {} yet: deploy one with <code>pier deploy NAME --image IMAGE</code>.</p>",
            esc(&project)
        )
    } else {
        format!(
            "<h1>Services <small>{} in project {}</small></h1>\
             <table id=\"services\"><thead><tr><th>Name</th><th>Status</th><th>URL</th><th>Last deployed</th></tr></thead>\
             <tbody>{rows}</tbody></table>",
            services.len(),
            esc(&project)
        )
    };
    page(StatusCode::OK, "Services", &who, &project, &body)
}

/// `GET /console/projects/{project}/services/{service}`.
pub(crate) async fn service(
    State(c): State<Shared>,
    Path((project, service)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (p, s) = (seg(&project), seg(&service));
    let base = format!("/console/projects/{p}/services/{s}");
    let Some((_, who)) = c.signed(&headers).await else {
        return to_sign_in(&base);
    };
    let t = &who.access;
    let paths = [
        format!("/v1/projects/{p}/services/{s}"),
        format!("/v1/projects/{p}/revisions?service={s}"),
        format!("/v1/projects/{p}/services/{s}/iamPolicy"),
        format!("/v1/projects/{p}/domainmappings"),
        // Whether the user may read the logs (a viewer may not): one line is enough to know.
        format!("/v1/projects/{p}/services/{s}/logs?limit=1"),
    ];
    let (svc, revisions, policy, mappings, logs) = tokio::join!(
        c.api.get::<ServiceView>(t, &paths[0]),
        c.api.get::<Vec<RevisionView>>(t, &paths[1]),
        c.api.get::<Policy>(t, &paths[2]),
        c.api.get::<Vec<DomainMappingView>>(t, &paths[3]),
        c.api.get::<serde_json::Value>(t, &paths[4]),
    );
    let svc = match svc {
        Ok(v) => v,
        Err(e) => return failed(&who, &project, &service, &e),
    };
    let revisions = revisions.unwrap_or_default();
    let latest = revisions
        .iter()
        .max_by(|a, b| a.created_at.cmp(&b.created_at));
    let (status, class) = status_of(&svc, latest);
    let mut b = String::with_capacity(16 * 1024);
    let _ = write!(
        b,
        "<h1 id=\"service\">{n}</h1><p class=\"summary\"><span class=\"status {class}\">{status}</span> \
         <a id=\"url\" href=\"{u}\">{u}</a> · {access} · last deployed {d}</p>",
        n = esc(&service),
        u = esc(&svc.url),
        access = if svc.allow_unauthenticated {
            "public"
        } else {
            "private (invokers need a token)"
        },
        d = esc(&deployed(latest)),
    );
    if let Some(m) = &svc.message {
        let _ = write!(b, "<p class=\"error\">{}</p>", esc(m));
    }
    // Charts: console.js draws them from the history endpoint.
    let _ = write!(
        b,
        "<section><h2>Last hour</h2><div class=\"charts\" data-history=\"{base}/history\">\
         <figure><figcaption>Requests per second</figcaption><div id=\"chart-requests\"></div></figure>\
         <figure><figcaption>Latency (ms): p50, p95, p99</figcaption><div id=\"chart-latency\"></div></figure>\
         <figure><figcaption>Instances and cold starts</figcaption><div id=\"chart-instances\"></div></figure>\
         </div></section>"
    );
    revisions_section(
        &mut b,
        &who,
        &base,
        &revisions,
        crate::actions::follows_latest(&svc),
    );
    match logs {
        Ok(_) => {
            let _ = write!(
                b,
                "<section><h2>Logs</h2><p class=\"hint\">Requests and app output, live.</p>\
                 <div id=\"logs\" data-stream=\"{base}/logs\" aria-live=\"polite\"></div></section>"
            );
        }
        Err(e) => {
            let _ = write!(
                b,
                "<section><h2>Logs</h2><p class=\"hint\" id=\"logs-refused\">{}</p></section>",
                esc(&e.message)
            );
        }
    }
    iam_section(&mut b, &who, &base, policy);
    domains_section(&mut b, &service, mappings);
    let _ = write!(
        b,
        "<section><h2>Deploy a new revision</h2>\
         <form id=\"deploy\" method=\"post\" action=\"{base}/deploy\">{csrf}\
         <label>Image <input id=\"image\" name=\"image\" placeholder=\"registry.example/app:tag\" size=\"40\"></label>\
         <label>or command <input id=\"command\" name=\"command\" placeholder=\"/usr/local/bin/app --port $PORT\" size=\"40\"></label>\
         <p class=\"hint\">Everything else (environment, limits, scaling) is kept from the current revision.</p>\
         <button id=\"deploy-button\">Deploy</button></form></section>",
        csrf = csrf_field(&who),
    );
    page(StatusCode::OK, &service, &who, &project, &b)
}

fn revisions_section(
    b: &mut String,
    who: &Signed,
    base: &str,
    revisions: &[RevisionView],
    following_latest: bool,
) {
    let _ = write!(
        b,
        "<section><h2>Revisions and traffic</h2><form id=\"traffic\" method=\"post\" action=\"{base}/traffic\">{}\
         <table id=\"revisions\"><thead><tr><th>Revision</th><th>State</th><th>Deployed</th><th>Runs</th>\
         <th>Traffic</th><th>Set %</th><th>Tags</th><th>Set tags</th></tr></thead><tbody>",
        csrf_field(who)
    );
    for r in revisions {
        let n = r.name.as_str();
        let state = match r.state {
            RevisionState::Ready => "Ready",
            RevisionState::Deploying => "Deploying",
            RevisionState::Failed => "Failed",
        };
        let runs = match &r.template.image {
            Some(i) => i.clone(),
            None => r.template.command.join(" "),
        };
        let tags: Vec<&str> = r.tags.iter().map(|t| t.as_str()).collect();
        let _ = write!(
            b,
            "<tr data-revision=\"{n}\"><td>{n}</td><td class=\"state\">{state}</td><td>{d}</td><td class=\"runs\"><code>{runs}</code></td>\
             <td class=\"traffic\">{pct}%</td>\
             <td><input type=\"number\" min=\"0\" max=\"100\" name=\"percent.{n}\" value=\"{pct}\" aria-label=\"percent for {n}\"{dis}></td>\
             <td class=\"tags\">{tags}</td><td><input name=\"tag.{n}\" value=\"{tags}\" size=\"10\" aria-label=\"tags for {n}\"></td></tr>",
            n = esc(n),
            d = esc(&deployed(Some(r))),
            runs = esc(&runs),
            pct = r.percent,
            dis = if r.state == RevisionState::Ready {
                ""
            } else {
                " readonly"
            },
            tags = esc(&tags.join(", ")),
        );
    }
    let _ = write!(
        b,
        "</tbody></table><label><input type=\"checkbox\" id=\"latest\" name=\"latest\" value=\"1\"{}> send all traffic to the latest ready revision (and follow new ones)</label> \
         <button id=\"save-traffic\">Save traffic</button></form></section>",
        if following_latest { " checked" } else { "" }
    );
}

fn iam_section(b: &mut String, who: &Signed, base: &str, policy: Result<Policy, ApiFailure>) {
    b.push_str("<section><h2>Who may invoke</h2>");
    match policy {
        Ok(p) => {
            b.push_str("<table id=\"iam\"><thead><tr><th>Member</th><th>Role</th><th></th></tr></thead><tbody>");
            for bind in &p.bindings {
                for m in &bind.members {
                    let _ = write!(
                        b,
                        "<tr data-member=\"{m}\" data-role=\"{r}\"><td>{m}</td><td>{r}</td><td>\
                         <form method=\"post\" action=\"{base}/iam\">{csrf}<input type=\"hidden\" name=\"action\" value=\"revoke\">\
                         <input type=\"hidden\" name=\"member\" value=\"{m}\"><input type=\"hidden\" name=\"role\" value=\"{r}\">\
                         <button class=\"revoke\">Revoke</button></form></td></tr>",
                        m = esc(m),
                        r = esc(&bind.role),
                        csrf = csrf_field(who),
                    );
                }
            }
            b.push_str("</tbody></table>");
        }
        Err(e) => {
            let _ = write!(b, "<p class=\"hint\">{}</p>", esc(&e.message));
        }
    }
    let _ = write!(
        b,
        "<form id=\"grant\" method=\"post\" action=\"{base}/iam\">{}<input type=\"hidden\" name=\"action\" value=\"grant\">\
         <input type=\"hidden\" name=\"role\" value=\"roles/run.invoker\">\
         <label>Member <input id=\"member\" name=\"member\" placeholder=\"user:EMAIL, serviceAccount:EMAIL or allUsers\" size=\"36\"></label> \
         <button id=\"grant-invoker\">Grant invoker</button></form></section>",
        csrf_field(who)
    );
}

fn domains_section(
    b: &mut String,
    service: &str,
    mappings: Result<Vec<DomainMappingView>, ApiFailure>,
) {
    b.push_str("<section><h2>Domain mappings</h2>");
    match mappings {
        Ok(ms) => {
            let mine: Vec<&DomainMappingView> =
                ms.iter().filter(|m| m.target.name == service).collect();
            if mine.is_empty() {
                b.push_str("<p class=\"hint\" id=\"domains\">None: map one with <code>pier domain-mappings create</code>.</p>");
            } else {
                b.push_str("<ul id=\"domains\">");
                for m in mine {
                    let _ = write!(
                        b,
                        "<li><a href=\"{u}\">{d}</a> <span class=\"status {c}\">{s}</span></li>",
                        u = esc(&m.url),
                        d = esc(&m.domain),
                        c = if m.ready() { "ready" } else { "deploying" },
                        s = if m.ready() { "Ready" } else { "Pending" },
                    );
                }
                b.push_str("</ul>");
            }
        }
        Err(e) => {
            let _ = write!(b, "<p class=\"hint\">{}</p>", esc(&e.message));
        }
    }
    b.push_str("</section>");
}
