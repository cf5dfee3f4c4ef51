//! A released site version as the gateway's stages: [`HostingFilter`] decides what answers each request
//! ([`crate::site::SiteVersion::decide`]); a rewrite to a service becomes a [`Destination`] for the
//! route's dispatching backend, and everything else is answered by [`HostingResponder`] (a file, a
//! redirect, a 404).
//!
//! A rewrite reaches its service through that service's own route (traffic, guard, cold start,
//! streaming, WebSockets), with an ID token of the site's service account in `X-Serverless-Authorization`
//! (the client's own `Authorization` goes to the app untouched), so a private service serves a site
//! whose account holds `run.invoker` on it. As Firebase Hosting does, only the `__session` cookie is
//! forwarded (<https://firebase.google.com/docs/hosting/manage-cache#using_cookies>).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use pier_gateway::headers::Forwarding;
use pier_gateway::{
    Answer, Destination, Filter, GatewayBody, Refusal, Responder, ResponseHeaders, Route, Target,
};

use crate::files::FileStore;
use crate::respond::{StaticFile, serve};
use crate::site::{Ask, Decision, SiteVersion};

/// How long a rewrite waits for its service's response head: Firebase Hosting's 60 s
/// (<https://firebase.google.com/docs/hosting/cloud-run#direct_requests_to_container>).
pub const REWRITE_DEADLINE: Duration = Duration::from_secs(60);

/// Tokens are reused for this long (Pier's ID tokens live an hour).
const TOKEN_REUSE: Duration = Duration::from_secs(45 * 60);

/// Mints ID tokens of a site's service account.
pub trait SiteTokens: Send + Sync + 'static {
    /// An ID token for `audience`, or why not.
    fn id_token(&self, audience: &str) -> Result<String, String>;
}

/// Where a `run` rewrite goes, resolved when routes are published.
#[derive(Clone, Debug)]
pub enum RunTarget {
    /// A service's host (its URL's, or a pinned tag's) and the audience of its tokens.
    Service {
        /// `Host` to route by.
        host: HeaderValue,
        /// The service's URL.
        audience: String,
    },
    /// The service cannot be reached: answered 503 with this reason.
    Missing(String),
}

/// One site channel's stages, shared by its filter and responder.
pub struct SiteStage {
    version: Arc<SiteVersion>,
    files: FileStore,
    /// One per rewrite (by index); `None` for file rewrites.
    runs: Vec<Option<RunTarget>>,
    tokens: Arc<dyn SiteTokens>,
    cache: Mutex<HashMap<String, (HeaderValue, Instant)>>,
}

/// The decision for one request, left in its extensions by the filter for the responder.
#[derive(Clone, Debug)]
struct Planned {
    decision: Decision,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl SiteStage {
    /// The stages of `version`; `runs` holds a target for each rewrite to a service (by index).
    pub fn new(
        version: Arc<SiteVersion>,
        files: FileStore,
        runs: Vec<Option<RunTarget>>,
        tokens: Arc<dyn SiteTokens>,
    ) -> Arc<Self> {
        Arc::new(Self {
            version,
            files,
            runs,
            tokens,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The filter and the responder to add to the site's route.
    pub fn stages(self: &Arc<Self>) -> (Arc<HostingFilter>, Arc<HostingResponder>) {
        (
            Arc::new(HostingFilter(self.clone())),
            Arc::new(HostingResponder(self.clone())),
        )
    }

    fn token(&self, audience: &str) -> Result<HeaderValue, String> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, at)) = cache.get(audience)
            && at.elapsed() < TOKEN_REUSE
        {
            return Ok(v.clone());
        }
        let token = self.tokens.id_token(audience)?;
        let v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        cache.insert(audience.to_owned(), (v.clone(), Instant::now()));
        Ok(v)
    }
}

/// Decides each request (see [`crate::site`]).
pub struct HostingFilter(Arc<SiteStage>);

/// Answers what the filter decided, except rewrites to services.
pub struct HostingResponder(Arc<SiteStage>);

fn decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let s = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(s, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Languages a client prefers: the `firebase-language-override` cookie, else `Accept-Language` by
/// weight; primary subtags, lowercased.
fn languages(req: &Parts) -> Vec<String> {
    if let Some(v) = cookie(req, "firebase-language-override") {
        return v
            .split(',')
            .map(|l| l.trim().to_ascii_lowercase())
            .filter(|l| !l.is_empty())
            .collect();
    }
    let mut weighted: Vec<(f32, String)> = Vec::new();
    for v in req.headers.get_all(header::ACCEPT_LANGUAGE) {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                })
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
            if q > 0.0 && !primary.is_empty() && primary != "*" {
                weighted.push((q, primary));
            }
        }
    }
    weighted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out: Vec<String> = Vec::new();
    for (_, l) in weighted {
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// The client's country for i18n: the `firebase-country-override` cookie, else `X-Country-Code`.
fn country(req: &Parts) -> Option<String> {
    cookie(req, "firebase-country-override")
        .or_else(|| req.headers.get("x-country-code")?.to_str().ok())
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
}

fn cookie<'a>(req: &'a Parts, name: &str) -> Option<&'a str> {
    pier_gateway::headers::cookie(&req.headers, name)
}

impl Filter for HostingFilter {
    fn name(&self) -> &'static str {
        "hosting"
    }

    fn on_request(&self, _: &Route, _: &Forwarding, req: &mut Parts) -> Result<(), Refusal> {
        let raw = req.uri.path();
        let path = decode(raw).ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "the request path is not valid percent-encoded UTF-8",
            )
        })?;
        // `/api/../admin` would match `/api/**` and reach the service as a path it may read as `/admin`.
        if path.split('/').any(|seg| seg == "." || seg == "..") || path.contains('\0') {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "the request path has `.` or `..` segments (or an encoded NUL): send the path it means",
            ));
        }
        let langs = if self.0.version.rules.i18n_root.is_some() {
            languages(req)
        } else {
            Vec::new()
        };
        let country = if self.0.version.rules.i18n_root.is_some() {
            country(req)
        } else {
            None
        };
        let decision = self.0.version.decide(&Ask {
            path: &path,
            query: req.uri.query(),
            languages: &langs,
            country: country.as_deref(),
        });
        let mut headers = self.0.version.headers_for_answer(&path, &decision);
        if self.0.version.rules.i18n_root.is_some() && !matches!(decision, Decision::Run(_)) {
            // The answer depends on the language and country the client asked for.
            headers.insert(
                0,
                (
                    header::VARY,
                    HeaderValue::from_static("Accept-Language, Cookie"),
                ),
            );
        }
        if let Decision::Run(i) = decision {
            let target = self.0.runs.get(i).cloned().flatten();
            let (host, audience) = match target {
                Some(RunTarget::Service { host, audience }) => (host, audience),
                Some(RunTarget::Missing(why)) => {
                    return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, why));
                }
                None => {
                    return Err(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "this rewrite has no service",
                    ));
                }
            };
            let token = self.0.token(&audience).map_err(|e| {
                tracing::error!("cannot mint the site's token for {audience}: {e}");
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the site cannot call its service now; its operator finds why in the server's log",
                )
            })?;
            // Only `__session` goes to the service.
            let session = cookie(req, "__session").map(|v| format!("__session={v}"));
            req.headers.remove(header::COOKIE);
            if let Some(c) = session.and_then(|c| HeaderValue::from_str(&c).ok()) {
                req.headers.insert(header::COOKIE, c);
            }
            req.extensions.insert(Destination {
                target: Target::Pier(host),
                deadline: REWRITE_DEADLINE,
                body_check: None,
                serverless_authorization: Some(token),
            });
            if !headers.is_empty() {
                req.extensions.insert(ResponseHeaders(headers));
            }
            return Ok(());
        }
        req.extensions.insert(Planned { decision, headers });
        Ok(())
    }
}

/// Firebase's default page for a path nothing answers.
const NOT_FOUND_PAGE: &str = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Page Not Found</title></head>\n<body><h1>Page Not Found</h1><p>This file does not exist and there was no index.html found in the current directory or 404.html in the root directory.</p></body></html>\n";

impl Responder for HostingResponder {
    fn name(&self) -> &'static str {
        "hosting"
    }

    fn respond(&self, _: &Route, req: &Parts) -> Option<Answer> {
        let planned = req.extensions.get::<Planned>()?.clone();
        let stage = self.0.clone();
        let method = req.method.clone();
        // Only what the answer depends on travels into it.
        let mut headers = http::HeaderMap::new();
        for name in [
            header::ACCEPT_ENCODING,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::RANGE,
            header::IF_RANGE,
        ] {
            for v in req.headers.get_all(&name) {
                headers.append(name.clone(), v.clone());
            }
        }
        Some(Box::pin(async move {
            let mut resp = match planned.decision {
                Decision::Redirect {
                    status, location, ..
                } => {
                    let mut r = Response::new(GatewayBody::empty());
                    *r.status_mut() =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
                    if let Ok(v) = HeaderValue::from_str(&location) {
                        r.headers_mut().insert(header::LOCATION, v);
                    }
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                    r
                }
                Decision::File { .. } | Decision::NotFound
                    if method != Method::GET && method != Method::HEAD =>
                {
                    let mut r = pier_gateway::error::plain(
                        StatusCode::METHOD_NOT_ALLOWED,
                        format!("{method} is not allowed on static content: use GET or HEAD\n"),
                    );
                    r.headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                    r
                }
                Decision::File { path, not_found } => {
                    let Some(entry) = stage.version.files.get(&path) else {
                        return pier_gateway::error::plain(
                            StatusCode::NOT_FOUND,
                            "not found\n".into(),
                        );
                    };
                    let file = StaticFile {
                        digest: entry.digest.clone(),
                        stored: entry.stored,
                        name: path,
                        modified: stage.version.released,
                    };
                    let status = if not_found {
                        StatusCode::NOT_FOUND
                    } else {
                        StatusCode::OK
                    };
                    return serve(
                        &stage.files,
                        &file,
                        status,
                        &method,
                        &headers,
                        &planned.headers,
                    )
                    .await;
                }
                Decision::NotFound => {
                    let mut r = Response::new(if method == Method::HEAD {
                        GatewayBody::empty()
                    } else {
                        GatewayBody::full(NOT_FOUND_PAGE)
                    });
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    );
                    r.headers_mut().insert(
                        header::CONTENT_LENGTH,
                        HeaderValue::from(NOT_FOUND_PAGE.len()),
                    );
                    r
                }
                Decision::Run(_) => {
                    return pier_gateway::error::plain(StatusCode::NOT_FOUND, "not found\n".into());
                }
            };
            crate::respond::set_rule_headers(resp.headers_mut(), &planned.headers);
            resp
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_decode_and_languages_rank() {
        assert_eq!(decode("/a%20b.html").as_deref(), Some("/a b.html"));
        assert_eq!(decode("/%zz"), None);
        assert_eq!(decode("/%ff"), None);
        let (mut parts, _) = http::Request::new(()).into_parts();
        parts.headers.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("de;q=0.5, fr-CA, fr;q=0.9, *;q=0.1"),
        );
        assert_eq!(languages(&parts), vec!["fr", "de"]);
        parts.headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; firebase-language-override=es"),
        );
        assert_eq!(languages(&parts), vec!["es"]);
        assert_eq!(cookie(&parts, "a"), Some("1"));
    }
}
