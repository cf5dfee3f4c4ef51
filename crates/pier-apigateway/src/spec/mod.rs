//! An OpenAPI document read as Google's API Gateway and Cloud Endpoints read it: OpenAPI 2.0 (their main
//! format) and 3.0/3.1, with the `x-google-*` extensions. Parsed once, when an API config is created
//! (where every fault is refused with its JSON pointer) and again when routes are published (the
//! result is cached per config).
//!
//! What is read (Google's "OpenAPI extensions" pages; behaviour checked against ESPv2's sources):
//!
//! - operations: `paths` × methods, under 2.0's `basePath`; path-item `parameters` merged into each;
//! - `x-google-backend` at the top level or per operation ([`backend`]);
//! - security: 2.0 `securityDefinitions` / 3.x `components.securitySchemes` of `type: apiKey`, and of
//!   `type: oauth2` (or `openIdConnect`, or `http` bearer) with `x-google-issuer`, `x-google-jwks_uri`,
//!   `x-google-audiences`, `x-google-jwt-locations` (3.x also `x-google-auth`); `security` at the top
//!   level or per operation (a list means OR, the schemes inside one item AND);
//! - quotas: `x-google-management.quota.limits` (unit `1/min/{project}` only, as Google) and per
//!   operation `x-google-quota.metricCosts`;
//! - `x-google-allow: configured | all`, `x-google-endpoints[].allowCors`;
//! - Pier's own: `x-pier-validate: true` at the top level or per operation turns on request validation
//!   ([`schema`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use serde_json::Value;

pub mod backend;
pub mod schema;

pub use backend::{BackendRule, PathTranslation};
pub use schema::RequestChecks;

/// Which OpenAPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OasVersion {
    /// Swagger 2.0.
    Swagger2,
    /// OpenAPI 3.0.x.
    OpenApi30,
    /// OpenAPI 3.1.x.
    OpenApi31,
}

/// A fault that makes a document unusable: where (a JSON pointer, RFC 6901) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {reason}", line.map(|l| format!("line {l}, ")).unwrap_or_default(), if pointer.is_empty() { "the document" } else { pointer })]
pub struct SpecFault {
    /// JSON pointer of the faulty value (`""` for the whole document).
    pub pointer: String,
    /// What is wrong and what to do.
    pub reason: String,
    /// The line, when the parser gives one (syntax errors).
    pub line: Option<usize>,
}

impl SpecFault {
    pub(crate) fn at(pointer: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            reason: reason.into(),
            line: None,
        }
    }
}

/// Where a JWT may be found (`x-google-jwt-locations`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtLocation {
    /// A header, with a prefix before the token (`Bearer `).
    Header {
        /// Header name (lowercase).
        name: String,
        /// What precedes the token.
        prefix: String,
    },
    /// A query parameter.
    Query(String),
}

/// ESPv2's default JWT locations: `Authorization: Bearer`, `X-Goog-Iap-Jwt-Assertion`, `?access_token`.
pub fn default_jwt_locations() -> Vec<JwtLocation> {
    vec![
        JwtLocation::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        },
        JwtLocation::Header {
            name: "x-goog-iap-jwt-assertion".into(),
            prefix: String::new(),
        },
        JwtLocation::Query("access_token".into()),
    ]
}

/// A JWT provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtScheme {
    /// `iss` the tokens must carry.
    pub issuer: String,
    /// Where its keys are; `None`: found by OpenID discovery from the issuer.
    pub jwks_uri: Option<String>,
    /// Accepted audiences; empty: the API's service name and the gateway's URLs.
    pub audiences: Vec<String>,
    /// Where tokens are looked for.
    pub locations: Vec<JwtLocation>,
}

/// Where an API key may be sent: the scheme's own place first, then ESPv2's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyLocation {
    /// A query parameter.
    Query(String),
    /// A header (lowercase).
    Header(String),
}

/// A security scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecurityScheme {
    /// An API key.
    ApiKey(Vec<KeyLocation>),
    /// An end-user JWT.
    Jwt(JwtScheme),
}

/// One operation.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Method.
    pub method: Method,
    /// Path template, `basePath` included (`/v1/shelves/{shelf}`).
    pub template: String,
    /// `operationId`, or `METHOD TEMPLATE`.
    pub id: String,
    /// JSON pointer of the operation in the document.
    pub pointer: String,
    /// Its backend (its own, else the top level's); `None` when neither names one.
    pub backend: Option<BackendRule>,
    /// Alternatives (OR) of scheme names that must all pass (AND); empty: no check.
    pub security: Vec<Vec<String>>,
    /// Quota metric costs.
    pub costs: Vec<(String, u64)>,
    /// Request validation, when turned on.
    pub checks: Option<Arc<RequestChecks>>,
}

/// A parsed API document.
#[derive(Clone, Debug)]
pub struct ApiSpec {
    /// Which OpenAPI.
    pub version: OasVersion,
    /// `info.title`.
    pub title: String,
    /// 2.0's `host` (or the first 3.x server's host): ESPv2's service name, a default JWT audience.
    pub service_name: Option<String>,
    /// Every operation.
    pub operations: Vec<Operation>,
    /// Security schemes by name.
    pub schemes: BTreeMap<String, SecurityScheme>,
    /// Quota limits: metric → requests (cost units) per minute per consumer.
    pub limits: BTreeMap<String, u64>,
    /// `x-google-allow: all`: unknown paths go to the top-level backend, unchecked.
    pub allow_all: bool,
    /// `allowCors`: preflights go to the backend unchecked.
    pub allow_cors: bool,
    /// The top-level backend.
    pub default_backend: Option<BackendRule>,
    /// What looks wrong but does not stop the document from serving.
    pub warnings: Vec<String>,
}

/// JSON pointer escaping (RFC 6901 §3).
pub(crate) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Reads a document: JSON or YAML text.
pub fn parse_text(text: &str) -> Result<Value, SpecFault> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        serde_json::from_str(text).map_err(|e| SpecFault {
            pointer: String::new(),
            reason: format!("not valid JSON: {e}"),
            line: Some(e.line()),
        })
    } else {
        yaml_serde::from_str::<Value>(text).map_err(|e| SpecFault {
            pointer: String::new(),
            reason: format!("not valid YAML: {e}"),
            line: e.location().map(|l| l.line()),
        })
    }
}

impl ApiSpec {
    /// Parses and checks a document (JSON or YAML).
    pub fn parse(text: &str) -> Result<Self, SpecFault> {
        let doc = parse_text(text)?;
        Self::from_value(&doc)
    }

    /// Checks a parsed document.
    pub fn from_value(doc: &Value) -> Result<Self, SpecFault> {
        let root = doc
            .as_object()
            .ok_or_else(|| SpecFault::at("", "the document must be an object"))?;
        let version = match (root.get("swagger"), root.get("openapi")) {
            (Some(Value::String(v)), None) if v == "2.0" => OasVersion::Swagger2,
            (None, Some(Value::String(v))) if v.starts_with("3.0.") || v == "3.0" => {
                OasVersion::OpenApi30
            }
            (None, Some(Value::String(v))) if v.starts_with("3.1.") || v == "3.1" => {
                OasVersion::OpenApi31
            }
            (Some(v), _) => {
                return Err(SpecFault::at(
                    "/swagger",
                    format!(
                        "unsupported version {v}: use swagger: \"2.0\" or openapi: 3.0.x/3.1.x"
                    ),
                ));
            }
            (_, Some(v)) => {
                return Err(SpecFault::at(
                    "/openapi",
                    format!(
                        "unsupported version {v}: use openapi 3.0.x or 3.1.x (or swagger: \"2.0\")"
                    ),
                ));
            }
            (None, None) => {
                return Err(SpecFault::at(
                    "",
                    "not an OpenAPI document: it has neither `swagger: \"2.0\"` nor `openapi: 3.x`",
                ));
            }
        };
        let title = doc
            .pointer("/info/title")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let service_name = match version {
            OasVersion::Swagger2 => doc.get("host").and_then(Value::as_str).map(str::to_owned),
            _ => doc
                .pointer("/servers/0/url")
                .and_then(Value::as_str)
                .and_then(|u| u.parse::<http::Uri>().ok())
                .and_then(|u| u.host().map(str::to_owned)),
        };
        let mut warnings = Vec::new();
        let default_backend = match root.get("x-google-backend") {
            Some(v) => Some(BackendRule::parse(v, "/x-google-backend", true)?),
            None => None,
        };
        let schemes = read_schemes(doc, version)?;
        let limits = read_limits(doc)?;
        let allow_all = match root.get("x-google-allow") {
            None => false,
            Some(Value::String(s)) if s == "configured" => false,
            Some(Value::String(s)) if s == "all" => true,
            Some(other) => {
                return Err(SpecFault::at(
                    "/x-google-allow",
                    format!("{other} is not `configured` or `all`"),
                ));
            }
        };
        let allow_cors = root
            .get("x-google-endpoints")
            .and_then(Value::as_array)
            .is_some_and(|l| {
                l.iter()
                    .any(|e| e.get("allowCors").and_then(Value::as_bool) == Some(true))
            });
        let top_security = match root.get("security") {
            Some(v) => read_security(v, "/security")?,
            None => Vec::new(),
        };
        let top_validate = read_validate(root.get("x-pier-validate"), "/x-pier-validate")?;
        let base_path = match version {
            OasVersion::Swagger2 => root
                .get("basePath")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim_end_matches('/')
                .to_owned(),
            _ => String::new(),
        };
        let schemas = schema::Definitions::of(doc, version)?;
        let mut operations = Vec::new();
        let paths = root
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| SpecFault::at("/paths", "the document has no `paths` object"))?;
        for (path, item) in paths {
            let item_ptr = format!("/paths/{}", escape(path));
            if !path.starts_with('/') {
                return Err(SpecFault::at(item_ptr, "a path must start with `/`"));
            }
            let item = item
                .as_object()
                .ok_or_else(|| SpecFault::at(&item_ptr, "a path item must be an object"))?;
            let shared_params = item.get("parameters");
            for (method, op) in item {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let ptr = format!("{item_ptr}/{method}");
                let op_obj = op
                    .as_object()
                    .ok_or_else(|| SpecFault::at(&ptr, "an operation must be an object"))?;
                let backend = match op_obj.get("x-google-backend") {
                    Some(v) => Some(BackendRule::parse(
                        v,
                        &format!("{ptr}/x-google-backend"),
                        false,
                    )?),
                    None => default_backend.clone(),
                };
                let security = match op_obj.get("security") {
                    Some(v) => read_security(v, &format!("{ptr}/security"))?,
                    None => top_security.clone(),
                };
                for (i, alt) in security.iter().enumerate() {
                    for name in alt {
                        if !schemes.contains_key(name) {
                            warnings.push(format!(
                                "{ptr}/security/{i}: the security scheme `{name}` is not defined, so no request can pass it"
                            ));
                        }
                    }
                }
                let costs = read_costs(op_obj.get("x-google-quota"), &ptr)?;
                for (metric, _) in &costs {
                    if !limits.contains_key(metric) {
                        warnings.push(format!(
                            "{ptr}/x-google-quota: the metric `{metric}` has no limit in x-google-management.quota.limits, so it is not limited"
                        ));
                    }
                }
                let validate = match op_obj.get("x-pier-validate") {
                    Some(v) => read_validate(Some(v), &format!("{ptr}/x-pier-validate"))?,
                    None => top_validate,
                };
                let template = format!("{base_path}{path}");
                let checks = if validate {
                    Some(Arc::new(schema::RequestChecks::compile(
                        &schemas,
                        shared_params,
                        op_obj,
                        &ptr,
                    )?))
                } else {
                    None
                };
                if backend.is_none() {
                    warnings.push(format!(
                        "{ptr}: no x-google-backend here or at the top level, so calls answer 503"
                    ));
                }
                let id = op_obj
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{} {template}", method.to_uppercase()));
                operations.push(Operation {
                    method: Method::from_bytes(method.to_uppercase().as_bytes())
                        .map_err(|_| SpecFault::at(&ptr, "not an HTTP method"))?,
                    template,
                    id,
                    pointer: ptr,
                    backend,
                    security,
                    costs,
                    checks,
                });
            }
        }
        if operations.is_empty() {
            return Err(SpecFault::at(
                "/paths",
                "the document defines no operation: add at least one path with a method",
            ));
        }
        if allow_all && default_backend.is_none() {
            return Err(SpecFault::at(
                "/x-google-allow",
                "`all` sends unknown paths to the top-level x-google-backend, and there is none",
            ));
        }
        Ok(Self {
            version,
            title,
            service_name,
            operations,
            schemes,
            limits,
            allow_all,
            allow_cors,
            default_backend,
            warnings,
        })
    }

    /// Every JWT scheme's `jwt_audience`-independent audiences, for the gateway's guard (so an end-user
    /// token addressed to the API keeps its signature until the JWT filter verified it).
    pub fn jwt_audiences(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.schemes.values() {
            if let SecurityScheme::Jwt(j) = s {
                out.extend(j.audiences.iter().cloned());
            }
        }
        if let Some(host) = &self.service_name {
            out.push(format!("https://{host}"));
        }
        out
    }
}

fn read_validate(v: Option<&Value>, ptr: &str) -> Result<bool, SpecFault> {
    match v {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(SpecFault::at(ptr, format!("{other} is not true or false"))),
    }
}

fn read_security(v: &Value, ptr: &str) -> Result<Vec<Vec<String>>, SpecFault> {
    let list = v
        .as_array()
        .ok_or_else(|| SpecFault::at(ptr, "`security` must be a list of requirement objects"))?;
    let mut out = Vec::new();
    for (i, req) in list.iter().enumerate() {
        let obj = req.as_object().ok_or_else(|| {
            SpecFault::at(
                format!("{ptr}/{i}"),
                "a security requirement must be an object",
            )
        })?;
        out.push(obj.keys().cloned().collect());
    }
    // `[{}]` (an empty requirement) means "no check", as `[]` does.
    if out.iter().any(|alt: &Vec<String>| alt.is_empty()) {
        return Ok(Vec::new());
    }
    Ok(out)
}

fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s
            .split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        Value::Array(l) => l
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

fn read_schemes(
    doc: &Value,
    version: OasVersion,
) -> Result<BTreeMap<String, SecurityScheme>, SpecFault> {
    let base = match version {
        OasVersion::Swagger2 => "/securityDefinitions",
        _ => "/components/securitySchemes",
    };
    let mut out = BTreeMap::new();
    let Some(defs) = doc.pointer(base).and_then(Value::as_object) else {
        return Ok(out);
    };
    for (name, def) in defs {
        let ptr = format!("{base}/{}", escape(name));
        let kind = def.get("type").and_then(Value::as_str).unwrap_or_default();
        let auth = def.get("x-google-auth");
        let issuer = def
            .get("x-google-issuer")
            .or_else(|| auth.and_then(|a| a.get("issuer")))
            .and_then(Value::as_str);
        let scheme = match (kind, issuer) {
            ("apiKey", _) => {
                let name = def
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| SpecFault::at(&ptr, "an apiKey scheme needs `name`"))?;
                let mut locations = match def.get("in").and_then(Value::as_str) {
                    Some("query") => vec![KeyLocation::Query(name.to_owned())],
                    Some("header") => vec![KeyLocation::Header(name.to_ascii_lowercase())],
                    _ => {
                        return Err(SpecFault::at(
                            format!("{ptr}/in"),
                            "an apiKey scheme is `in: query` or `in: header`",
                        ));
                    }
                };
                for d in [
                    KeyLocation::Query("key".into()),
                    KeyLocation::Query("api_key".into()),
                    KeyLocation::Header("x-api-key".into()),
                ] {
                    if !locations.contains(&d) {
                        locations.push(d);
                    }
                }
                SecurityScheme::ApiKey(locations)
            }
            (_, Some(issuer)) => {
                let jwks_uri = def
                    .get("x-google-jwks_uri")
                    .or_else(|| auth.and_then(|a| a.get("jwksUri")))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                // Keys fetched in clear could be swapped on the way, and tokens forged with them.
                if let Some(u) = &jwks_uri
                    && !u.starts_with("https://")
                {
                    return Err(SpecFault::at(
                        format!("{ptr}/x-google-jwks_uri"),
                        format!(
                            "{u} is not an https:// URL (keys fetched in clear could be replaced on the way)"
                        ),
                    ));
                }
                if !issuer.starts_with("https://") {
                    return Err(SpecFault::at(
                        format!("{ptr}/x-google-issuer"),
                        format!("{issuer} is not an https:// URL"),
                    ));
                }
                let audiences = def
                    .get("x-google-audiences")
                    .or_else(|| auth.and_then(|a| a.get("audiences")))
                    .map(string_list)
                    .unwrap_or_default();
                let locations = match def
                    .get("x-google-jwt-locations")
                    .or_else(|| auth.and_then(|a| a.get("jwtLocations")))
                {
                    Some(v) => read_jwt_locations(v, &format!("{ptr}/x-google-jwt-locations"))?,
                    None => default_jwt_locations(),
                };
                SecurityScheme::Jwt(JwtScheme {
                    issuer: issuer.trim_end_matches('/').to_owned(),
                    jwks_uri,
                    audiences,
                    locations,
                })
            }
            (other, None) => {
                return Err(SpecFault::at(
                    ptr,
                    format!(
                        "a `{other}` scheme needs x-google-issuer (an end-user JWT provider); Pier's gateway checks API keys (type: apiKey) and JWTs"
                    ),
                ));
            }
        };
        out.insert(name.clone(), scheme);
    }
    Ok(out)
}

fn read_jwt_locations(v: &Value, ptr: &str) -> Result<Vec<JwtLocation>, SpecFault> {
    let list = v
        .as_array()
        .ok_or_else(|| SpecFault::at(ptr, "must be a list of {header, value_prefix} or {query}"))?;
    let mut out = Vec::new();
    for (i, l) in list.iter().enumerate() {
        if let Some(h) = l.get("header").and_then(Value::as_str) {
            out.push(JwtLocation::Header {
                name: h.to_ascii_lowercase(),
                prefix: l
                    .get("value_prefix")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        } else if let Some(q) = l.get("query").and_then(Value::as_str) {
            out.push(JwtLocation::Query(q.to_owned()));
        } else {
            return Err(SpecFault::at(
                format!("{ptr}/{i}"),
                "a JWT location has `header` (and `value_prefix`) or `query`",
            ));
        }
    }
    Ok(out)
}

fn read_limits(doc: &Value) -> Result<BTreeMap<String, u64>, SpecFault> {
    let mut out = BTreeMap::new();
    let Some(limits) = doc
        .pointer("/x-google-management/quota/limits")
        .and_then(Value::as_array)
    else {
        return Ok(out);
    };
    for (i, l) in limits.iter().enumerate() {
        let ptr = format!("/x-google-management/quota/limits/{i}");
        let metric = l
            .get("metric")
            .and_then(Value::as_str)
            .ok_or_else(|| SpecFault::at(&ptr, "a limit needs `metric`"))?;
        let unit = l.get("unit").and_then(Value::as_str).unwrap_or_default();
        if unit != "1/min/{project}" {
            return Err(SpecFault::at(
                format!("{ptr}/unit"),
                format!(
                    "unit {unit:?} is not supported: use \"1/min/{{project}}\" (per minute, per consumer project), as Google's gateways do"
                ),
            ));
        }
        let value = l
            .pointer("/values/STANDARD")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .ok_or_else(|| {
                SpecFault::at(
                    format!("{ptr}/values"),
                    "a limit needs `values: {STANDARD: N}`",
                )
            })?;
        out.insert(metric.to_owned(), value);
    }
    Ok(out)
}

fn read_costs(v: Option<&Value>, ptr: &str) -> Result<Vec<(String, u64)>, SpecFault> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let ptr = format!("{ptr}/x-google-quota/metricCosts");
    let costs = v
        .get("metricCosts")
        .and_then(Value::as_object)
        .ok_or_else(|| SpecFault::at(&ptr, "x-google-quota needs a `metricCosts` object"))?;
    costs
        .iter()
        .map(|(m, c)| {
            let c = c
                .as_u64()
                .or_else(|| c.as_str()?.parse().ok())
                .ok_or_else(|| {
                    SpecFault::at(format!("{ptr}/{}", escape(m)), "a cost is a whole number")
                })?;
            Ok((m.clone(), c))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
