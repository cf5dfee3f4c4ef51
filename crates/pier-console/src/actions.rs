//! What the console's forms change, each through the admin API with the user's token: traffic and
//! tags, invokers, a new revision, and signing out. Every form is checked first (same origin, the
//! session's CSRF token); the outcome is a one-time message on the page the browser goes back to
//! (303, so a reload does not post again).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use pier_model::api::{
    DeployRequest, RevisionView, ServiceView, TagAssignment, TrafficAssignment,
    UpdateTrafficRequest,
};

use crate::html::seg;
use crate::session::{self, SESSION_COOKIE, Signed};
use crate::{Shared, no_store, to_sign_in};

/// A checked form: the session's cookie, the user and the fields (each name once: the last wins).
struct Posted {
    id: String,
    who: Signed,
    fields: Vec<(String, String)>,
}

impl Posted {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

async fn posted(
    c: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    back: &str,
) -> Result<Posted, Response> {
    if !session::same_origin(headers, &c.origin) {
        return Err(refused("this form was sent from another site"));
    }
    let Some((id, who)) = c.signed(headers).await else {
        return Err(to_sign_in(back));
    };
    let fields: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let token = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !session::same(token, &who.csrf) {
        return Err(refused(
            "this form is stale (its security token does not match your session): reload the page and send it again",
        ));
    }
    Ok(Posted { id, who, fields })
}

fn refused(why: &str) -> Response {
    crate::html::html(
        StatusCode::FORBIDDEN,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Refused · Pier</title></head>\
             <body><h1>Refused</h1><p id=\"message\" class=\"error\">{}</p></body></html>",
            crate::html::esc(why)
        ),
    )
}

/// Back to `to` with a message for the page.
fn back(c: &Shared, id: &str, to: &str, outcome: Result<String, String>) -> Response {
    let (ok, text) = match outcome {
        Ok(t) => (true, t),
        Err(t) => (false, t),
    };
    c.sessions.flash(id, ok, text);
    no_store(Redirect::to(to).into_response())
}

/// `POST /console/signout`: ends the session and revokes its refresh token (RFC 7009). Needs only the
/// cookie and its CSRF token: no refresh, so signing out works whatever the token endpoint says.
pub(crate) async fn sign_out(State(c): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if !session::same_origin(&headers, &c.origin) {
        return refused("this form was sent from another site");
    }
    let Some(id) = session::cookie(&headers, SESSION_COOKIE) else {
        return no_store(Redirect::to("/console/signin").into_response());
    };
    let given = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    match c.sessions.csrf(&id) {
        Some(want) if session::same(&given, &want) => {}
        Some(_) => return refused("this form is stale: reload the page and sign out again"),
        None => {}
    }
    if let Some(refresh) = c.sessions.close(&id) {
        let _ = c.api.token_revoke(&refresh).await;
    }
    let mut r = no_store(Redirect::to("/console/signin").into_response());
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        SESSION_COOKIE,
        "",
        std::time::Duration::ZERO,
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Splits a tag field: names separated by commas or spaces.
fn tag_list(v: &str) -> Vec<String> {
    v.split([',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What the traffic form changes, as `update-traffic` would, or `None` when it changes nothing.
///
/// Traffic moves only when the form says so: "latest" checked on a service that does not follow the
/// latest revision yet, or a percent changed (then every revision's percent, the posted or the current
/// one, must add up to 100), or "latest" unchecked on one that does (its percents pin it). Tags change
/// only on the revisions whose field was posted.
fn traffic_request(
    fields: &[(String, String)],
    revisions: &[RevisionView],
    following_latest: bool,
) -> Result<Option<UpdateTrafficRequest>, String> {
    let field = |name: String| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut req = UpdateTrafficRequest::default();
    let latest = fields.iter().any(|(k, v)| k == "latest" && !v.is_empty());
    if latest {
        req.to_latest = !following_latest;
    } else {
        let mut sum = 0u32;
        let mut changed = following_latest;
        let mut split = Vec::new();
        for r in revisions {
            let pct = match field(format!("percent.{}", r.name.as_str())) {
                None => r.percent,
                Some(v) => {
                    let v = if v.is_empty() { "0".to_owned() } else { v };
                    v.parse::<u8>().ok().filter(|p| *p <= 100).ok_or_else(|| {
                        format!("{}: {v:?} is not a percent from 0 to 100", r.name.as_str())
                    })?
                }
            };
            changed |= pct != r.percent;
            sum += u32::from(pct);
            if pct > 0 {
                split.push(TrafficAssignment {
                    target: r.name.as_str().to_owned(),
                    percent: pct,
                });
            }
        }
        if changed {
            if sum != 100 {
                return Err(format!(
                    "the percents add up to {sum}: make them 100, or send all traffic to the latest revision"
                ));
            }
            req.to_revisions = split;
        }
    }
    let mut wanted: HashMap<String, String> = HashMap::new();
    let mut posted: Vec<&str> = Vec::new();
    for r in revisions {
        if let Some(v) = field(format!("tag.{}", r.name.as_str())) {
            posted.push(r.name.as_str());
            for t in tag_list(&v) {
                if let Some(other) = wanted.insert(t.clone(), r.name.as_str().to_owned()) {
                    return Err(format!(
                        "tag {t} is given to both {other} and {}: a tag names one revision",
                        r.name.as_str()
                    ));
                }
            }
        }
    }
    let mut current: HashMap<String, String> = HashMap::new();
    for r in revisions {
        for t in &r.tags {
            current.insert(t.as_str().to_owned(), r.name.as_str().to_owned());
        }
    }
    for (tag, rev) in &wanted {
        if current.get(tag) != Some(rev) {
            req.update_tags.push(TagAssignment {
                tag: tag.parse().map_err(|e| format!("tag {tag}: {e}"))?,
                revision: rev.clone(),
            });
        }
    }
    for (tag, rev) in &current {
        if posted.contains(&rev.as_str()) && !wanted.contains_key(tag) {
            req.remove_tags
                .push(tag.parse().map_err(|e| format!("tag {tag}: {e}"))?);
        }
    }
    let nothing = !req.to_latest
        && req.to_revisions.is_empty()
        && req.update_tags.is_empty()
        && req.remove_tags.is_empty();
    Ok((!nothing).then_some(req))
}

/// Whether some of the service's traffic follows its latest ready revision (`LATEST`).
pub(crate) fn follows_latest(svc: &ServiceView) -> bool {
    svc.traffic
        .iter()
        .any(|t| t.latest_revision && t.percent > 0)
}

/// `POST .../traffic`: the revisions table's percents and tags.
pub(crate) async fn traffic(
    State(c): State<Shared>,
    Path((project, service)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (p, s) = (seg(&project), seg(&service));
    let page = format!("/console/projects/{p}/services/{s}");
    let f = match posted(&c, &headers, &body, &page).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let t = &f.who.access;
    let outcome = async {
        let revisions: Vec<RevisionView> = c
            .api
            .get(t, &format!("/v1/projects/{p}/revisions?service={s}"))
            .await
            .map_err(|e| e.message)?;
        let svc: ServiceView = c
            .api
            .get(t, &format!("/v1/projects/{p}/services/{s}"))
            .await
            .map_err(|e| e.message)?;
        let Some(req) = traffic_request(&f.fields, &revisions, follows_latest(&svc))? else {
            return Ok("Nothing to change: the traffic and tags are as the form says".to_owned());
        };
        let svc: ServiceView = c
            .api
            .send(
                t,
                Method::POST,
                &format!("/v1/projects/{p}/services/{s}/traffic"),
                &req,
            )
            .await
            .map_err(|e| e.message)?;
        let now: Vec<String> = svc
            .traffic
            .iter()
            .filter(|t| t.percent > 0)
            .map(|t| {
                format!(
                    "{} {}%",
                    t.revision_name
                        .as_ref()
                        .map(|r| r.as_str())
                        .unwrap_or("LATEST"),
                    t.percent
                )
            })
            .collect();
        Ok(format!("Traffic saved: {}", now.join(", ")))
    }
    .await;
    back(&c, &f.id, &page, outcome)
}

/// `POST .../iam`: grant or revoke a role (the invoker's, from the page) for one member.
pub(crate) async fn iam(
    State(c): State<Shared>,
    Path((project, service)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (p, s) = (seg(&project), seg(&service));
    let page = format!("/console/projects/{p}/services/{s}");
    let f = match posted(&c, &headers, &body, &page).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let outcome = async {
        let Some(member) = f.get("member") else {
            return Err("give a member: user:EMAIL, serviceAccount:EMAIL, allUsers or allAuthenticatedUsers".to_owned());
        };
        // A bare email means a user, as in Google's console.
        let member = if member.contains(':')
            || member == "allUsers"
            || member == "allAuthenticatedUsers"
        {
            member.to_owned()
        } else {
            format!("user:{member}")
        };
        let role = f.get("role").unwrap_or("roles/run.invoker").to_owned();
        let (verb, done) = match f.get("action") {
            Some("revoke") => ("removeBinding", "Revoked"),
            _ => ("addBinding", "Granted"),
        };
        let _: serde_json::Value = c
            .api
            .send(
                &f.who.access,
                Method::POST,
                &format!("/v1/projects/{p}/services/{s}/iamPolicy/{verb}"),
                &pier_model::api::BindingChange {
                    member: member.clone(),
                    role: role.clone(),
                },
            )
            .await
            .map_err(|e| e.message)?;
        Ok(format!("{done} {role} for {member}"))
    }
    .await;
    back(&c, &f.id, &page, outcome)
}

/// `POST .../deploy`: a new revision with another image or command, everything else kept; the
/// browser goes on to the deploy's operation.
pub(crate) async fn deploy(
    State(c): State<Shared>,
    Path((project, service)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (p, s) = (seg(&project), seg(&service));
    let page = format!("/console/projects/{p}/services/{s}");
    let f = match posted(&c, &headers, &body, &page).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let t = &f.who.access;
    let outcome = async {
        let svc: ServiceView = c
            .api
            .get(t, &format!("/v1/projects/{p}/services/{s}"))
            .await
            .map_err(|e| e.message)?;
        let mut template = svc.template.unwrap_or_default();
        match (f.get("image"), f.get("command")) {
            (Some(_), Some(_)) => {
                return Err("give an image or a command, not both".to_owned());
            }
            (Some(image), None) => {
                if template.image.is_none() {
                    // From a host command to an image: the command was the host's.
                    template.command.clear();
                    template.args.clear();
                    template.working_dir = None;
                }
                template.image = Some(image.to_owned());
            }
            (None, Some(command)) if template.image.is_some() => {
                template.command = command.split_whitespace().map(str::to_owned).collect();
                template.args.clear();
            }
            (None, Some(command)) => {
                template.command = vec!["sh".into(), "-c".into(), command.to_owned()];
                template.args.clear();
            }
            (None, None) => {}
        }
        let req = DeployRequest {
            template,
            allow_unauthenticated: None,
            no_traffic: false,
            tag: None,
            settings: Default::default(),
            creator: None,
        };
        let rev: RevisionView = c
            .api
            .send(
                t,
                Method::POST,
                &format!("/v1/projects/{p}/services/{s}/revisions"),
                &req,
            )
            .await
            .map_err(|e| e.message)?;
        Ok(rev)
    }
    .await;
    match outcome {
        Ok(rev) => {
            let id = rev
                .operation
                .as_deref()
                .and_then(|o| o.rsplit('/').next())
                .unwrap_or("")
                .to_owned();
            if id.is_empty() {
                return back(
                    &c,
                    &f.id,
                    &page,
                    Ok(format!("Deploying {}", rev.name.as_str())),
                );
            }
            c.sessions.flash(
                &f.id,
                true,
                format!("Deploying {} of {service}", rev.name.as_str()),
            );
            no_store(
                Redirect::to(&format!(
                    "/console/projects/{p}/operations/{}?service={s}",
                    seg(&id)
                ))
                .into_response(),
            )
        }
        Err(e) => back(&c, &f.id, &page, Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, percent: u8, tags: &[&str]) -> RevisionView {
        let v = serde_json::json!({
            "name": name, "service": "web", "project": "default", "template": {},
            "state": "READY", "createdAt": "2026-12-01T00:00:00Z", "percent": percent,
            "tags": tags, "instances": [], "logTail": [], "warnings": [],
        });
        serde_json::from_value(v).unwrap()
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn the_traffic_form_becomes_an_exact_update() {
        let revs = [
            rev("web-00002-bbb", 0, &[]),
            rev("web-00001-aaa", 100, &["old"]),
        ];
        let req = traffic_request(
            &form(&[
                ("percent.web-00002-bbb", "50"),
                ("percent.web-00001-aaa", "50"),
                ("tag.web-00002-bbb", "green, canary"),
                ("tag.web-00001-aaa", ""),
            ]),
            &revs,
            false,
        )
        .unwrap()
        .unwrap();
        let split: Vec<(String, u8)> = req
            .to_revisions
            .iter()
            .map(|t| (t.target.clone(), t.percent))
            .collect();
        assert_eq!(
            split,
            [("web-00002-bbb".into(), 50), ("web-00001-aaa".into(), 50)]
        );
        let mut added: Vec<String> = req
            .update_tags
            .iter()
            .map(|t| t.tag.as_str().to_owned())
            .collect();
        added.sort();
        assert_eq!(added, ["canary", "green"]);
        assert_eq!(
            req.remove_tags
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>(),
            ["old"]
        );
    }

    #[test]
    fn the_form_changes_only_what_it_changes() {
        let revs = [
            rev("web-00002-bbb", 100, &[]),
            rev("web-00001-aaa", 0, &["old"]),
        ];
        // A tag added on a service that follows LATEST: traffic keeps following it.
        let req = traffic_request(
            &form(&[
                ("latest", "1"),
                ("percent.web-00002-bbb", "100"),
                ("percent.web-00001-aaa", "0"),
                ("tag.web-00002-bbb", "blue"),
            ]),
            &revs,
            true,
        )
        .unwrap()
        .unwrap();
        assert!(!req.to_latest && req.to_revisions.is_empty(), "{req:?}");
        assert_eq!(req.update_tags.len(), 1);
        // The other revision's tag was not in the form: it stays.
        assert!(req.remove_tags.is_empty(), "{req:?}");
        // The same form again changes nothing.
        let same = form(&[("latest", "1"), ("tag.web-00001-aaa", "old")]);
        assert!(traffic_request(&same, &revs, true).unwrap().is_none());
        // Unchecking "latest" pins the current split.
        let req = traffic_request(&form(&[("percent.web-00002-bbb", "100")]), &revs, true)
            .unwrap()
            .unwrap();
        assert_eq!(req.to_revisions.len(), 1);
        // Checking it on a pinned service follows LATEST again.
        let req = traffic_request(&form(&[("latest", "1")]), &revs, false)
            .unwrap()
            .unwrap();
        assert!(req.to_latest);
    }

    #[test]
    fn bad_traffic_forms_say_what_to_fix() {
        let revs = [rev("web-00002-bbb", 0, &[]), rev("web-00001-aaa", 100, &[])];
        let e = traffic_request(
            &form(&[
                ("percent.web-00002-bbb", "50"),
                ("percent.web-00001-aaa", "40"),
            ]),
            &revs,
            false,
        )
        .unwrap_err();
        assert!(e.contains("add up to 90"), "{e}");
        let e =
            traffic_request(&form(&[("percent.web-00002-bbb", "x")]), &revs, false).unwrap_err();
        assert!(e.contains("not a percent"), "{e}");
        let e = traffic_request(
            &form(&[
                ("latest", "1"),
                ("tag.web-00002-bbb", "t"),
                ("tag.web-00001-aaa", "t"),
            ]),
            &revs,
            false,
        )
        .unwrap_err();
        assert!(e.contains("a tag names one revision"), "{e}");
    }
}
