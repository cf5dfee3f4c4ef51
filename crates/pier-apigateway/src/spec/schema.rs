//! Request validation, which ESPv2 does not do: an operation's parameters and JSON body checked against
//! its OpenAPI schemas before anything reaches the backend.
//!
//! OpenAPI 2.0 and 3.0 Schema Objects are not JSON Schema. They are translated once, when the config is
//! read, then compiled with the `jsonschema` crate (Draft 4 for 2.0 and 3.0, whose `exclusiveMinimum`
//! is a boolean; 2020-12 for 3.1):
//!
//! - `nullable: true` (3.0) and `x-nullable: true` (2.0) add `"null"` to a `type` in the same object
//!   (3.0.4 §4.8.24.1 "nullable"); `enum` is left as it is;
//! - `type: file` (2.0 form data) is dropped; form bodies are not validated;
//! - a `readOnly` property is not required in a request (2.0 §Schema Object, 3.0.4 "readOnly");
//! - `discriminator` is an annotation; `oneOf` does the checking;
//! - `$ref`s point into the same document only (`#/definitions/…`, `#/components/schemas/…`): a
//!   remote or file reference is refused when the config is created, so a spec can never make the server
//!   fetch a URL (and the crate is built without its HTTP and file resolvers);
//! - 2.0's non-body parameters (type, format, items, enum, bounds at the parameter itself) become a
//!   schema; their string values are converted to the declared type first (2.0 §Parameter Object,
//!   `collectionFormat`; 3.x `style: form` with `explode`).

use std::collections::BTreeMap;

use bytes::Bytes;
use http::request::Parts;
use jsonschema::{Draft, Validator};
use pier_gateway::Violation;
use serde_json::{Map, Value};

use super::{OasVersion, SpecFault, escape};

/// Most violations reported for one request.
const MAX_VIOLATIONS: usize = 20;

/// The document's shared schemas, translated, and the document itself (for parameter `$ref`s).
pub(crate) struct Definitions<'d> {
    version: OasVersion,
    defs: Value,
    doc: &'d Value,
}

impl<'d> Definitions<'d> {
    pub(crate) fn of(doc: &'d Value, version: OasVersion) -> Result<Self, SpecFault> {
        let base = match version {
            OasVersion::Swagger2 => "/definitions",
            _ => "/components/schemas",
        };
        let mut defs = Map::new();
        if let Some(all) = doc.pointer(base).and_then(Value::as_object) {
            for (name, s) in all {
                let ptr = format!("{base}/{}", escape(name));
                defs.insert(name.clone(), translate(s, &ptr, version)?);
            }
        }
        Ok(Self {
            version,
            defs: Value::Object(defs),
            doc,
        })
    }

    /// Follows a local `$ref` of a parameter or request body.
    fn resolve<'a>(&'a self, v: &'a Value, ptr: &str) -> Result<&'a Value, SpecFault> {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return Ok(v);
        };
        let target = r.strip_prefix('#').ok_or_else(|| {
            SpecFault::at(
                format!("{ptr}/$ref"),
                format!("{r}: only references inside the document (#/…) are allowed; a spec never makes the server fetch URLs"),
            )
        })?;
        self.doc
            .pointer(target)
            .ok_or_else(|| SpecFault::at(format!("{ptr}/$ref"), format!("{r} does not exist")))
    }

    /// A validator for `schema` (already translated), with every shared schema beside it.
    fn compile(&self, schema: Value, ptr: &str) -> Result<Validator, SpecFault> {
        let draft = match self.version {
            OasVersion::OpenApi31 => Draft::Draft202012,
            _ => Draft::Draft4,
        };
        let wrapped = serde_json::json!({"definitions": self.defs, "allOf": [schema]});
        jsonschema::options()
            .with_draft(draft)
            .should_validate_formats(true)
            .build(&wrapped)
            .map_err(|e| SpecFault::at(ptr, format!("the schema does not compile: {e}")))
    }
}

/// OpenAPI Schema Object → JSON Schema (see the module's rules). `ptr` locates faults.
pub(crate) fn translate(v: &Value, ptr: &str, version: OasVersion) -> Result<Value, SpecFault> {
    let Value::Object(obj) = v else {
        return Ok(v.clone());
    };
    let mut out = Map::new();
    let mut nullable = false;
    for (k, val) in obj {
        let here = format!("{ptr}/{}", escape(k));
        match k.as_str() {
            "$ref" => {
                let r = val.as_str().unwrap_or_default();
                let local = if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    format!("#/definitions/{name}")
                } else if r.starts_with("#/definitions/") {
                    r.to_owned()
                } else if r.starts_with('#') {
                    return Err(SpecFault::at(
                        here,
                        format!(
                            "{r}: a schema may refer to shared schemas only (#/definitions/… or #/components/schemas/…)"
                        ),
                    ));
                } else {
                    return Err(SpecFault::at(
                        here,
                        format!(
                            "{r}: remote and file references are refused (a spec never makes the server fetch URLs); copy the schema into the document"
                        ),
                    ));
                };
                out.insert(k.clone(), Value::String(local));
            }
            "properties" | "patternProperties" | "definitions" | "$defs" => {
                let mut m = Map::new();
                if let Some(props) = val.as_object() {
                    for (name, s) in props {
                        m.insert(
                            name.clone(),
                            translate(s, &format!("{here}/{}", escape(name)), version)?,
                        );
                    }
                }
                out.insert(k.clone(), Value::Object(m));
            }
            "items" | "allOf" | "anyOf" | "oneOf" | "prefixItems" => match val {
                Value::Array(l) => {
                    let mut v2 = Vec::new();
                    for (i, s) in l.iter().enumerate() {
                        v2.push(translate(s, &format!("{here}/{i}"), version)?);
                    }
                    out.insert(k.clone(), Value::Array(v2));
                }
                other => {
                    out.insert(k.clone(), translate(other, &here, version)?);
                }
            },
            "not" | "additionalProperties" | "additionalItems" => {
                out.insert(k.clone(), translate(val, &here, version)?);
            }
            "nullable" | "x-nullable" if version != OasVersion::OpenApi31 => {
                nullable = val.as_bool() == Some(true);
            }
            "type" if val.as_str() == Some("file") => {}
            "discriminator" | "$schema" => {}
            _ => {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    if nullable {
        match out.get_mut("type") {
            Some(Value::String(t)) => {
                let t = std::mem::take(t);
                out.insert("type".into(), serde_json::json!([t, "null"]));
            }
            Some(Value::Array(l)) if !l.contains(&Value::from("null")) => l.push("null".into()),
            _ => {}
        }
    }
    // A readOnly property is the server's to set: not required of a request.
    let read_only: Vec<String> = out
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter(|(_, s)| s.get("readOnly").and_then(Value::as_bool) == Some(true))
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    if !read_only.is_empty()
        && let Some(Value::Array(req)) = out.get_mut("required")
    {
        req.retain(|n| n.as_str().is_none_or(|n| !read_only.iter().any(|r| r == n)));
    }
    Ok(Value::Object(out))
}

/// Where a parameter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ParamIn {
    Path,
    Query,
    Header,
}

impl ParamIn {
    fn as_str(self) -> &'static str {
        match self {
            ParamIn::Path => "path",
            ParamIn::Query => "query",
            ParamIn::Header => "header",
        }
    }
}

/// What a parameter's text is turned into before it is validated.
#[derive(Clone, Debug, PartialEq)]
enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    /// Items of a kind, split on a separator (`None`: one value per occurrence).
    Array(Box<Kind>, Option<char>),
}

struct ParamCheck {
    name: String,
    location: ParamIn,
    required: bool,
    kind: Kind,
    validator: Validator,
}

struct BodyRule {
    required: bool,
    validator: Validator,
}

/// An operation's compiled request checks.
pub struct RequestChecks {
    params: Vec<ParamCheck>,
    body: Option<BodyRule>,
}

impl std::fmt::Debug for RequestChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestChecks")
            .field(
                "params",
                &self.params.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("body", &self.body.is_some())
            .finish()
    }
}

fn kind_of(schema: &Value, defs: &Definitions<'_>, sep: Option<char>) -> Kind {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .rsplit('/')
            .next()
            .and_then(|n| defs.defs.get(n))
            .unwrap_or(schema),
        None => schema,
    };
    let t = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(l)) => l
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ => "string",
    };
    match t {
        "integer" => Kind::Integer,
        "number" => Kind::Number,
        "boolean" => Kind::Boolean,
        "array" => Kind::Array(
            Box::new(kind_of(
                schema.get("items").unwrap_or(&Value::Null),
                defs,
                None,
            )),
            sep,
        ),
        _ => Kind::String,
    }
}

impl RequestChecks {
    /// Compiles the checks of one operation (`shared`: its path item's parameters).
    pub(crate) fn compile(
        defs: &Definitions<'_>,
        shared: Option<&Value>,
        op: &Map<String, Value>,
        ptr: &str,
    ) -> Result<Self, SpecFault> {
        // Path-item parameters, overridden by the operation's of the same name and place.
        let mut merged: BTreeMap<(String, String), (Value, String)> = BTreeMap::new();
        let item_ptr = ptr.rsplit_once('/').map(|(p, _)| p).unwrap_or(ptr);
        for (list, base) in [
            (shared, format!("{item_ptr}/parameters")),
            (op.get("parameters"), format!("{ptr}/parameters")),
        ] {
            let Some(Value::Array(list)) = list else {
                continue;
            };
            for (i, p) in list.iter().enumerate() {
                let here = format!("{base}/{i}");
                let p = defs.resolve(p, &here)?;
                let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                let place = p.get("in").and_then(Value::as_str).unwrap_or_default();
                merged.insert((place.to_owned(), name.to_owned()), (p.clone(), here));
            }
        }
        let mut params = Vec::new();
        let mut body = None;
        for ((place, name), (p, here)) in merged {
            let location = match place.as_str() {
                "path" => ParamIn::Path,
                "query" => ParamIn::Query,
                "header" => ParamIn::Header,
                "body" => {
                    let s = p
                        .get("schema")
                        .ok_or_else(|| SpecFault::at(&here, "a body parameter needs a `schema`"))?;
                    let t = translate(s, &format!("{here}/schema"), defs.version)?;
                    body = Some(BodyRule {
                        required: p.get("required").and_then(Value::as_bool) == Some(true),
                        validator: defs.compile(t, &here)?,
                    });
                    continue;
                }
                // Form data and cookies are not validated.
                _ => continue,
            };
            let required = location == ParamIn::Path
                || p.get("required").and_then(Value::as_bool) == Some(true);
            let (schema, sep) = match p.get("schema") {
                // 3.x: `style: form` explodes arrays by default (one value per occurrence).
                Some(s) => {
                    let explode = p
                        .get("explode")
                        .and_then(Value::as_bool)
                        .unwrap_or(location == ParamIn::Query);
                    (s.clone(), (!explode).then_some(','))
                }
                // 2.0: the parameter is its own schema.
                None => {
                    let mut s = p.as_object().cloned().unwrap_or_default();
                    let sep = match s.get("collectionFormat").and_then(Value::as_str) {
                        Some("multi") => None,
                        Some("ssv") => Some(' '),
                        Some("tsv") => Some('\t'),
                        Some("pipes") => Some('|'),
                        _ => Some(','),
                    };
                    for k in [
                        "in",
                        "name",
                        "required",
                        "description",
                        "collectionFormat",
                        "allowEmptyValue",
                    ] {
                        s.remove(k);
                    }
                    (Value::Object(s), sep)
                }
            };
            let kind = kind_of(&schema, defs, sep);
            let t = translate(&schema, &here, defs.version)?;
            params.push(ParamCheck {
                name: if location == ParamIn::Header {
                    name.to_ascii_lowercase()
                } else {
                    name
                },
                location,
                required,
                kind,
                validator: defs.compile(t, &here)?,
            });
        }
        if let Some(rb) = op.get("requestBody") {
            let here = format!("{ptr}/requestBody");
            let rb = defs.resolve(rb, &here)?;
            let content = rb.get("content").and_then(Value::as_object);
            let json = content.and_then(|c| {
                c.iter()
                    .find(|(mime, _)| is_json(mime))
                    .and_then(|(_, m)| m.get("schema"))
            });
            if let Some(s) = json {
                let t = translate(s, &format!("{here}/content"), defs.version)?;
                body = Some(BodyRule {
                    required: rb.get("required").and_then(Value::as_bool) == Some(true),
                    validator: defs.compile(t, &here)?,
                });
            }
        }
        Ok(Self { params, body })
    }

    /// Whether the body must be read to check it.
    pub fn checks_body(&self) -> bool {
        self.body.is_some()
    }

    /// Checks path, query and header parameters (`path_params` as matched, percent-decoded).
    pub fn check_params(&self, head: &Parts, path_params: &[(String, String)]) -> Vec<Violation> {
        let mut out = Vec::new();
        let query: Vec<(String, String)> = head
            .uri
            .query()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for p in &self.params {
            let values: Vec<String> = match p.location {
                ParamIn::Path => path_params
                    .iter()
                    .filter(|(k, _)| *k == p.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                ParamIn::Query => query
                    .iter()
                    .filter(|(k, _)| *k == p.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                ParamIn::Header => head
                    .headers
                    .get_all(p.name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .collect(),
            };
            let at = format!("/{}/{}", p.location.as_str(), p.name);
            if values.is_empty() {
                if p.required {
                    out.push(Violation {
                        path: at,
                        message: format!(
                            "the {} parameter `{}` is required",
                            p.location.as_str(),
                            p.name
                        ),
                    });
                }
                continue;
            }
            let value = coerce(&p.kind, &values);
            push_errors(&mut out, &p.validator, &value, &at);
        }
        out.truncate(MAX_VIOLATIONS);
        out
    }

    /// Checks a JSON body read whole.
    pub fn check_body(&self, head: &Parts, body: &Bytes) -> Vec<Violation> {
        let Some(rule) = &self.body else {
            return Vec::new();
        };
        let at = "/body".to_owned();
        if body.is_empty() {
            return if rule.required {
                vec![Violation {
                    path: at,
                    message: "a request body is required".into(),
                }]
            } else {
                Vec::new()
            };
        }
        if let Some(ct) = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            && !is_json(ct)
        {
            return vec![Violation {
                path: at,
                message: format!(
                    "the body must be JSON (Content-Type: application/json), not {ct}"
                ),
            }];
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return vec![Violation {
                    path: at,
                    message: format!("the body is not valid JSON: {e}"),
                }];
            }
        };
        let mut out = Vec::new();
        push_errors(&mut out, &rule.validator, &value, &at);
        out
    }
}

fn is_json(mime: &str) -> bool {
    let m = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    m == "application/json" || m.ends_with("+json")
}

fn push_errors(out: &mut Vec<Violation>, v: &Validator, value: &Value, at: &str) {
    for e in v.iter_errors(value) {
        if out.len() >= MAX_VIOLATIONS {
            break;
        }
        out.push(Violation {
            path: format!("{at}{}", e.instance_path().as_str()),
            message: e.to_string(),
        });
    }
}

/// A parameter's text as the JSON value its schema describes; text that does not convert stays text,
/// so the validator names the type it should have had.
fn coerce(kind: &Kind, values: &[String]) -> Value {
    match kind {
        Kind::Array(item, sep) => {
            let parts: Vec<String> = match (sep, values) {
                (Some(c), [one]) if !one.is_empty() => one.split(*c).map(str::to_owned).collect(),
                _ => values.to_vec(),
            };
            Value::Array(parts.iter().map(|p| scalar(item, p)).collect())
        }
        other => scalar(other, &values[0]),
    }
}

fn scalar(kind: &Kind, text: &str) -> Value {
    let converted = match kind {
        Kind::Integer => text.parse::<i64>().ok().map(Value::from),
        Kind::Number => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Kind::Boolean => match text {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        Kind::String | Kind::Array(..) => None,
    };
    converted.unwrap_or_else(|| Value::String(text.to_owned()))
}
