//! A gateway's API config compiled into one filter ([`ApiFilter`]) that runs after the route's
//! admission filter. Per request, in ESPv2's order:
//!
//! 1. a client's `X-Endpoint-API-UserInfo` is removed (only the gateway writes it);
//! 2. a CORS preflight is answered from the gateway's CORS setting, or with `allowCors` passed to the
//!    path's backend, unchecked;
//! 3. the operation is found by method and path (404 `The current request is not defined by this
//!    API.`, 405 for a known path with another method); with `x-google-allow: all` unknown calls go to
//!    the top-level backend unchecked;
//! 4. security: the operation's requirements (OR of ANDs of API keys and JWTs);
//! 5. quota: the operation's metric costs charged to the consumer (the key's project, else the
//!    gateway's), 429 with `Retry-After` past the limit;
//! 6. request validation (`x-pier-validate`): parameters here, the JSON body when it is dispatched;
//! 7. the backend: path translated, an ID token of the gateway's service account in `Authorization`
//!    (the caller's moved to `X-Forwarded-Authorization`) unless `disable_auth`, the verified JWT's
//!    payload in `X-Endpoint-API-UserInfo`, and a [`Destination`] for the dispatching backend.
//!
//! Everything here is compiled when routes are published; a request parses nothing of the config and
//! takes no lock but the quota book's and the token cache's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, StatusCode};
use pier_gateway::headers::Forwarding;
use pier_gateway::{BodyCheck, Destination, Filter, Refusal, ResponseHeaders, Route, Target};

use crate::cors::{CorsPolicy, PREFLIGHT_REFUSED, is_preflight};
use crate::jwt::{JwksRegistry, JwksSource, JwtFailure, JwtVerifier};
use crate::keys::KeyDirectory;
use crate::quota::QuotaBook;
use crate::router::{Found, Router};
use crate::spec::{ApiSpec, BackendRule, KeyLocation, RequestChecks, SecurityScheme, SpecFault};

/// The header the verified JWT payload travels in (ESPv2's default name).
pub const USER_INFO: HeaderName = HeaderName::from_static("x-endpoint-api-userinfo");
/// Where the caller's own `Authorization` goes when the gateway sends its ID token.
pub const X_FORWARDED_AUTHORIZATION: HeaderName =
    HeaderName::from_static("x-forwarded-authorization");

/// ESPv2's message for a call that matches no operation.
pub const NOT_DEFINED: &str = "The current request is not defined by this API.";

/// Mints ID tokens of the gateway's service account.
pub trait BackendTokens: Send + Sync + 'static {
    /// A fresh ID token for `audience`, or why there is none.
    fn id_token(&self, audience: &str) -> Result<String, String>;
}

/// How long a minted backend token is reused (Pier's ID tokens last an hour).
const TOKEN_REUSE: Duration = Duration::from_secs(50 * 60);

/// ID tokens per audience, reused until ten minutes before they expire.
struct TokenCache {
    source: Arc<dyn BackendTokens>,
    tokens: Mutex<HashMap<String, (HeaderValue, Instant)>>,
}

impl TokenCache {
    fn bearer(&self, audience: &str) -> Result<HeaderValue, String> {
        if let Some((v, at)) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(audience)
            && at.elapsed() < TOKEN_REUSE
        {
            return Ok(v.clone());
        }
        let token = self.source.id_token(audience)?;
        let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the minted token is not a header value".to_owned())?;
        v.set_sensitive(true);
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(audience.to_owned(), (v.clone(), Instant::now()));
        Ok(v)
    }
}

/// What a config is compiled with.
pub struct Context<'a> {
    /// The gateway's project.
    pub project: String,
    /// The API's name (what keys are restricted to).
    pub api: String,
    /// Every usable API key.
    pub keys: Arc<KeyDirectory>,
    /// The gateway's quota book.
    pub quota: Arc<QuotaBook>,
    /// Key sets of JWT issuers.
    pub jwks: &'a JwksRegistry,
    /// Audiences a JWT scheme without `x-google-audiences` accepts: the gateway's URLs.
    pub default_audiences: Vec<String>,
    /// The gateway's service account's tokens; `None`: no backend auth.
    pub tokens: Option<Arc<dyn BackendTokens>>,
    /// The gateway's CORS setting.
    pub cors: Option<CorsPolicy>,
    /// Where a backend address goes (a host Pier serves, or outside).
    pub resolve: &'a dyn Fn(&BackendRule) -> Target,
}

struct OpRuntime {
    backend: Option<(BackendRule, Target)>,
    security: Vec<Vec<String>>,
    /// (metric, cost, limit per minute) for the metrics that have limits.
    costs: Vec<(String, u64, u64)>,
    checks: Option<Arc<RequestChecks>>,
    /// The body half of `checks`, made once: what each dispatched request carries.
    body_check: Option<Arc<dyn BodyCheck>>,
}

enum SchemeRuntime {
    Key(Vec<KeyLocation>),
    Jwt(JwtVerifier),
    /// Used by an operation but not defined: nothing passes it.
    Undefined,
}

/// One gateway's compiled API config.
pub struct ApiFilter {
    project: String,
    api: String,
    spec: Arc<ApiSpec>,
    router: Router,
    ops: Vec<OpRuntime>,
    unregistered: Option<OpRuntime>,
    schemes: HashMap<String, SchemeRuntime>,
    keys: Arc<KeyDirectory>,
    quota: Arc<QuotaBook>,
    tokens: Option<TokenCache>,
    cors: Option<CorsPolicy>,
}

impl std::fmt::Debug for ApiFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiFilter")
            .field("api", &self.api)
            .field("operations", &self.ops.len())
            .finish()
    }
}

impl ApiFilter {
    /// Compiles `spec` for one gateway.
    pub fn new(spec: Arc<ApiSpec>, cx: Context<'_>) -> Result<Self, SpecFault> {
        let router = Router::new(&spec)?;
        let runtime = |backend: Option<&BackendRule>,
                       security: Vec<Vec<String>>,
                       costs: &[(String, u64)],
                       checks: Option<Arc<RequestChecks>>| OpRuntime {
            backend: backend.map(|r| (r.clone(), (cx.resolve)(r))),
            security,
            costs: costs
                .iter()
                .filter_map(|(m, c)| Some((m.clone(), *c, *spec.limits.get(m)?)))
                .collect(),
            body_check: checks
                .clone()
                .filter(|c| c.checks_body())
                .map(|c| Arc::new(Validate(c)) as Arc<dyn BodyCheck>),
            checks,
        };
        let ops = spec
            .operations
            .iter()
            .map(|op| {
                runtime(
                    op.backend.as_ref(),
                    op.security.clone(),
                    &op.costs,
                    op.checks.clone(),
                )
            })
            .collect();
        let unregistered = spec.allow_all.then(|| {
            let mut top = spec.default_backend.clone();
            if let Some(t) = &mut top {
                t.translation = crate::spec::PathTranslation::AppendPathToAddress;
            }
            runtime(top.as_ref(), Vec::new(), &[], None)
        });
        let mut schemes = HashMap::new();
        for op in &spec.operations {
            for name in op.security.iter().flatten() {
                schemes
                    .entry(name.clone())
                    .or_insert(SchemeRuntime::Undefined);
            }
        }
        let mut default_audiences = cx.default_audiences.clone();
        if let Some(host) = &spec.service_name {
            default_audiences.push(format!("https://{host}"));
        }
        for (name, s) in &spec.schemes {
            let rt = match s {
                SecurityScheme::ApiKey(locs) => SchemeRuntime::Key(locs.clone()),
                SecurityScheme::Jwt(j) => {
                    let jwks = cx.jwks.get(&JwksSource {
                        issuer: j.issuer.clone(),
                        jwks_uri: j.jwks_uri.clone(),
                    });
                    SchemeRuntime::Jwt(JwtVerifier::new(j, &default_audiences, jwks))
                }
            };
            schemes.insert(name.clone(), rt);
        }
        Ok(Self {
            project: cx.project,
            api: cx.api,
            router,
            ops,
            unregistered,
            schemes,
            keys: cx.keys,
            quota: cx.quota,
            tokens: cx.tokens.map(|source| TokenCache {
                source,
                tokens: Mutex::new(HashMap::new()),
            }),
            cors: cx.cors,
            spec,
        })
    }

    /// The parsed config.
    pub fn spec(&self) -> &ApiSpec {
        &self.spec
    }

    /// Checks the caller against the operation's requirements: the key's id when a key passed, and
    /// the JWT payload when a JWT did.
    fn authenticate(
        &self,
        op: &OpRuntime,
        req: &Parts,
    ) -> Result<(Option<String>, Option<String>), Refusal> {
        if op.security.is_empty() {
            return Ok((None, None));
        }
        let mut first = None;
        'alternatives: for alt in &op.security {
            let (mut consumer, mut user) = (None, None);
            for name in alt {
                let outcome = match self.schemes.get(name) {
                    Some(SchemeRuntime::Key(locs)) => self.check_key(locs, req).map(|p| {
                        consumer = Some(p);
                    }),
                    Some(SchemeRuntime::Jwt(v)) => check_jwt(v, req).map(|payload| {
                        user = Some(payload);
                    }),
                    Some(SchemeRuntime::Undefined) | None => Err(esp(
                        StatusCode::UNAUTHORIZED,
                        format!(
                            "UNAUTHENTICATED: the API config's security scheme `{name}` is not defined, so no caller can pass it."
                        ),
                    )),
                };
                if let Err(e) = outcome {
                    // The most telling refusal wins: a valid token for another audience, then a bad
                    // credential, then a missing one (the first of equals).
                    if first.as_ref().is_none_or(|f| rank(&e) > rank(f)) {
                        first = Some(e);
                    }
                    continue 'alternatives;
                }
            }
            return Ok((consumer, user));
        }
        Err(first.unwrap_or_else(|| esp(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")))
    }

    /// The key's id, or the refusal (ESPv2's words; a key that is not valid is 401 here, not
    /// Service Control's 400).
    fn check_key(&self, locs: &[KeyLocation], req: &Parts) -> Result<String, Refusal> {
        let Some(key) = crate::keys::extract(locs, req) else {
            return Err(esp(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED: Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            ));
        };
        let Some(entry) = self.keys.lookup(&key) else {
            return Err(esp(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED: API key not valid. Please pass a valid API key.",
            ));
        };
        if entry.project != self.project {
            return Err(esp(
                StatusCode::FORBIDDEN,
                format!(
                    "PERMISSION_DENIED: API {} is not enabled for the project.",
                    self.api
                ),
            ));
        }
        if !entry.api_targets.is_empty() && !entry.api_targets.contains(&self.api) {
            return Err(esp(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED: The API targeted by this request is invalid for the given API key.",
            ));
        }
        Ok(entry.uid.clone())
    }

    /// Sets up the backend call of `op`.
    fn forward(
        &self,
        op: &OpRuntime,
        params: &[(String, String)],
        req: &mut Parts,
        user: Option<String>,
    ) -> Result<(), Refusal> {
        let Some((rule, target)) = &op.backend else {
            return Err(esp(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE: this operation has no backend (x-google-backend) in the API config.",
            ));
        };
        let pq = rule.translate(req.uri.path(), req.uri.query(), params);
        if !rule.disable_auth
            && let Some(tokens) = &self.tokens
        {
            let audience = rule.audience();
            let bearer = tokens.bearer(audience).map_err(|why| {
                tracing::warn!(%audience, "API gateway: no backend token: {why}");
                esp(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Token not found for audience: {audience}"),
                )
            })?;
            if let Some(caller) = req.headers.remove(header::AUTHORIZATION) {
                req.headers.insert(X_FORWARDED_AUTHORIZATION, caller);
            }
            req.headers.insert(header::AUTHORIZATION, bearer);
        }
        if let Some(u) = user
            && let Ok(v) = HeaderValue::from_str(&u)
        {
            req.headers.insert(USER_INFO, v);
        }
        req.uri = match target {
            Target::Pier(_) => pq.parse(),
            Target::External(_) => format!("{}://{}{pq}", rule.scheme, rule.authority).parse(),
        }
        .map_err(|_| {
            esp(
                StatusCode::BAD_REQUEST,
                "the translated path is not a valid URI",
            )
        })?;
        req.extensions.insert(Destination {
            target: target.clone(),
            deadline: rule.deadline,
            body_check: op.body_check.clone(),
            serverless_authorization: None,
        });
        Ok(())
    }
}

fn check_jwt(v: &JwtVerifier, req: &Parts) -> Result<String, Refusal> {
    let failure = match v.find(req) {
        None => JwtFailure::Missing,
        Some(token) => match v.verify(&token) {
            Ok(payload) => return Ok(payload.to_owned()),
            Err(f) => f,
        },
    };
    let (status, message) = failure.status_and_message();
    let mut r = esp(status, message);
    // Envoy's jwt_authn: a realm, and `invalid_token` unless the token was missing (RFC 6750 §3).
    let host = req
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            req.headers
                .get(header::HOST)?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let realm = format!("https://{host}{}", req.uri.path());
    let realm: String = realm
        .chars()
        .filter(|c| *c != '"' && *c != '\\')
        .take(256)
        .collect();
    let value = if failure == JwtFailure::Missing {
        format!("Bearer realm=\"{realm}\"")
    } else {
        format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        r = r.with_header(header::WWW_AUTHENTICATE, v);
    }
    Err(r)
}

/// Why a path is not in normal form: an encoded `/` or `\\`, a dot segment, or an empty segment. Such
/// paths could match one operation here and mean another to the backend, so they are refused rather
/// than normalized.
fn unnormalized(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Some("has an encoded slash or a backslash");
    }
    if path.len() > 1 && path.contains("//") {
        return Some("has an empty segment");
    }
    if path.split('/').any(|s| {
        let s = s.to_ascii_lowercase();
        s == "." || s == ".." || s == "%2e" || s == "%2e%2e" || s == ".%2e" || s == "%2e."
    }) {
        return Some("has a dot segment");
    }
    None
}

/// How much a refusal says about the caller's credentials (see [`ApiFilter::authenticate`]).
fn rank(r: &Refusal) -> u8 {
    if r.status == StatusCode::FORBIDDEN {
        3
    } else if r.message == "Jwt is missing"
        || r.message
            .starts_with("UNAUTHENTICATED: Method doesn't allow")
        || r.message == "Jwt issuer is not configured"
    {
        1
    } else {
        2
    }
}

fn esp(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal::new(status, message)
}

/// The body half of request validation.
struct Validate(Arc<RequestChecks>);

impl BodyCheck for Validate {
    fn check(&self, head: &Parts, body: &Bytes) -> Result<(), Refusal> {
        let violations = self.0.check_body(head, body);
        if violations.is_empty() {
            return Ok(());
        }
        let mut r = esp(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT: the request does not match the API's schema.",
        );
        r.violations = violations;
        Err(r)
    }
}

impl Filter for ApiFilter {
    fn name(&self) -> &'static str {
        "api"
    }

    fn on_request(&self, _: &Route, _: &Forwarding, req: &mut Parts) -> Result<(), Refusal> {
        // Only the gateway writes these (ESPv2 keeps a client's X-Forwarded-Authorization when the
        // client sent no `Authorization`; a backend could take a forged one for the caller's).
        req.headers.remove(&USER_INFO);
        req.headers.remove(&X_FORWARDED_AUTHORIZATION);
        let result = self.check(req);
        // The gateway's own answers are readable by an allowed origin's pages too.
        match (result, &self.cors) {
            (Err(mut r), Some(cors)) if !is_preflight(req) => {
                r.headers.extend(cors.actual(req));
                Err(r)
            }
            (result, _) => result,
        }
    }
}

impl ApiFilter {
    fn check(&self, req: &mut Parts) -> Result<(), Refusal> {
        let path = req.uri.path().to_owned();
        if let Some(why) = unnormalized(&path) {
            return Err(esp(
                StatusCode::BAD_REQUEST,
                format!("INVALID_ARGUMENT: the request path {why}; send it in normal form"),
            ));
        }
        if is_preflight(req) {
            if let Some(cors) = &self.cors {
                let answer = cors.preflight(req)?;
                req.extensions.insert(answer);
                return Ok(());
            }
            if self.spec.allow_cors
                && let Some((i, params)) = self.router.any_method(&path)
            {
                let op = &self.ops[i];
                return self.forward(op, &params, req, None);
            }
        }
        let (op, params) = match self.router.find(&req.method, &path) {
            Found::Operation(i, params) => (&self.ops[i], params),
            found => match (&self.unregistered, found) {
                (Some(op), _) => (op, Vec::new()),
                (None, Found::WrongMethod(..)) if req.method == Method::OPTIONS => {
                    return Err(esp(StatusCode::BAD_REQUEST, PREFLIGHT_REFUSED));
                }
                (None, Found::WrongMethod(template, _)) => {
                    return Err(esp(
                        StatusCode::METHOD_NOT_ALLOWED,
                        format!(
                            "The current request is matched to the defined url template \"{template}\" but its http method is not allowed"
                        ),
                    ));
                }
                (None, _) => return Err(esp(StatusCode::NOT_FOUND, NOT_DEFINED)),
            },
        };
        let (key_uid, user) = self.authenticate(op, req)?;
        if !op.costs.is_empty() {
            // Per consumer: the key (as ESPv2's `api_key:KEY`), else the gateway's project.
            let consumer = match &key_uid {
                Some(uid) => format!("api_key:{uid}"),
                None => format!("project:{}", self.project),
            };
            if let Err(e) = self.quota.charge(&consumer, &op.costs) {
                let mut r = esp(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "RESOURCE_EXHAUSTED: Quota exceeded for quota metric '{}' and limit '{} per minute' of service '{}' for consumer '{consumer}'.",
                        e.metric, e.limit, self.api
                    ),
                );
                r = r.with_header(header::RETRY_AFTER, HeaderValue::from(e.retry_after));
                return Err(r);
            }
        }
        if let Some(checks) = &op.checks {
            let violations = checks.check_params(req, &params);
            if !violations.is_empty() {
                let mut r = esp(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT: the request does not match the API's schema.",
                );
                r.violations = violations;
                return Err(r);
            }
        }
        if let Some(cors) = &self.cors {
            let extra = cors.actual(req);
            if !extra.is_empty() {
                req.extensions.insert(ResponseHeaders(extra));
            }
        }
        self.forward(op, &params, req, user)
    }
}

#[cfg(test)]
mod tests;
