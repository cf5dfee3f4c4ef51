//! One site's entry of `firebase.json`'s `hosting` block, read as Firebase Hosting documents it
//! (<https://firebase.google.com/docs/hosting/full-config>) and compiled once per version into
//! [`Rules`]: redirects, rewrites, headers, `cleanUrls`, `trailingSlash` and `i18n`.
//!
//! `public` and `ignore` are the deploying client's business (which files to upload); the server keeps
//! them only as given. Rewrites to Cloud Functions (`function`), Dynamic Links and web frameworks have
//! nothing to run on here and are refused with the JSON pointer of the rule.

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::pattern::Pattern;

/// A rule that cannot be served, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {reason}")]
pub struct ConfigFault {
    /// JSON pointer into the hosting entry (`/rewrites/2/function`).
    pub pointer: String,
    /// What is wrong and what to do.
    pub reason: String,
}

fn fault(pointer: impl Into<String>, reason: impl Into<String>) -> ConfigFault {
    ConfigFault {
        pointer: pointer.into(),
        reason: reason.into(),
    }
}

/// A redirect rule.
#[derive(Clone, Debug)]
pub struct Redirect {
    /// What it matches.
    pub pattern: Pattern,
    /// Where to (captures as `:name`), a path or an absolute URL.
    pub destination: String,
    /// 301 unless the rule's `type` says otherwise (301, 302, 303, 307 or 308).
    pub status: u16,
}

/// What a rewrite serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewriteTarget {
    /// A file of the version (`destination`).
    File(String),
    /// A service of the site's project (`run: {serviceId}`); `pin_tag`: the revision that was latest
    /// when the version was released, through a traffic tag.
    Run {
        /// The service.
        service: String,
        /// Whether to pin the revision.
        pin_tag: bool,
    },
}

/// A rewrite rule.
#[derive(Clone, Debug)]
pub struct Rewrite {
    /// What it matches.
    pub pattern: Pattern,
    /// What it serves.
    pub target: RewriteTarget,
}

/// A `headers` rule: every matching rule's headers are set on the response, in order, last.
#[derive(Clone, Debug)]
pub struct HeaderRule {
    /// What it matches (the request's path as sent).
    pub pattern: Pattern,
    /// Headers to set.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A site version's compiled rules.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// In order: the first match wins.
    pub redirects: Vec<Redirect>,
    /// In order: the first match wins.
    pub rewrites: Vec<Rewrite>,
    /// All that match apply.
    pub headers: Vec<HeaderRule>,
    /// `cleanUrls`: `/about` serves `about.html`, and `/about.html` redirects to `/about`.
    pub clean_urls: bool,
    /// `trailingSlash`: `Some(true)` adds one, `Some(false)` removes it, `None` only for directories.
    pub trailing_slash: Option<bool>,
    /// `i18n.root`: where country and language folders are (`/localized`).
    pub i18n_root: Option<String>,
}

impl Rules {
    /// The services the rewrites call, each once, with whether any of its rules pins a tag.
    pub fn run_services(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = Vec::new();
        for r in &self.rewrites {
            if let RewriteTarget::Run { service, pin_tag } = &r.target {
                match out.iter_mut().find(|(s, _)| s == service) {
                    Some(entry) => entry.1 |= *pin_tag,
                    None => out.push((service.clone(), *pin_tag)),
                }
            }
        }
        out
    }
}

/// The most rules (redirects, rewrites and headers together) a site may have: every request is matched
/// against them in order.
pub const MAX_RULES: usize = 2000;

/// Headers a rule may not set: framing and connection management are the gateway's.
const FORBIDDEN_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "content-encoding",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// Compiles one hosting entry (an object of `firebase.json`'s `hosting`).
pub fn compile(entry: &Value) -> Result<Rules, ConfigFault> {
    let obj = entry
        .as_object()
        .ok_or_else(|| fault("", "a hosting entry must be a JSON object"))?;
    for refused in ["source", "frameworksBackend"] {
        if obj.contains_key(refused) {
            return Err(fault(
                format!("/{refused}"),
                "web frameworks are not supported: build the app to static files and name the folder in `public`",
            ));
        }
    }
    let count: usize = ["redirects", "rewrites", "headers"]
        .iter()
        .filter_map(|k| obj.get(*k).and_then(Value::as_array).map(Vec::len))
        .sum();
    if count > MAX_RULES {
        return Err(fault(
            "",
            format!(
                "a site has at most {MAX_RULES} redirects, rewrites and headers rules together; this one has {count}"
            ),
        ));
    }
    let mut rules = Rules::default();
    for (i, r) in array(obj.get("redirects"), "/redirects")?
        .iter()
        .enumerate()
    {
        let at = format!("/redirects/{i}");
        let pattern = pattern_of(r, &at)?;
        let destination = string(r.get("destination"), &format!("{at}/destination"))?;
        let status = match r.get("type") {
            None => 301,
            Some(v) => match v.as_u64() {
                Some(s @ (301 | 302 | 303 | 307 | 308)) => s as u16,
                _ => {
                    return Err(fault(
                        format!("{at}/type"),
                        "a redirect's type is 301 or 302 (or 303, 307, 308)",
                    ));
                }
            },
        };
        rules.redirects.push(Redirect {
            pattern,
            destination,
            status,
        });
    }
    for (i, r) in array(obj.get("rewrites"), "/rewrites")?.iter().enumerate() {
        let at = format!("/rewrites/{i}");
        let pattern = pattern_of(r, &at)?;
        let target = if let Some(d) = r.get("destination") {
            let d = string(Some(d), &format!("{at}/destination"))?;
            if !d.starts_with('/') {
                return Err(fault(
                    format!("{at}/destination"),
                    "a rewrite's destination is a path of the site, starting with /",
                ));
            }
            RewriteTarget::File(d)
        } else if let Some(run) = r.get("run") {
            let service = string(run.get("serviceId"), &format!("{at}/run/serviceId"))?;
            let pin_tag = match run.get("pinTag") {
                None | Some(Value::Bool(false)) => false,
                Some(Value::Bool(true)) => true,
                Some(_) => {
                    return Err(fault(format!("{at}/run/pinTag"), "pinTag is true or false"));
                }
            };
            RewriteTarget::Run { service, pin_tag }
        } else if r.get("function").is_some() {
            return Err(fault(
                format!("{at}/function"),
                "rewrites to Cloud Functions are not supported: deploy the function as a Pier service and rewrite to it with `\"run\": {\"serviceId\": \"NAME\"}`",
            ));
        } else if r.get("dynamicLinks").is_some() {
            return Err(fault(
                format!("{at}/dynamicLinks"),
                "Dynamic Links are not supported (Google has shut them down)",
            ));
        } else {
            return Err(fault(
                at,
                "a rewrite needs a `destination` (a file) or `run` (a service)",
            ));
        };
        rules.rewrites.push(Rewrite { pattern, target });
    }
    for (i, r) in array(obj.get("headers"), "/headers")?.iter().enumerate() {
        let at = format!("/headers/{i}");
        let pattern = pattern_of(r, &at)?;
        let mut headers = Vec::new();
        for (j, h) in array(r.get("headers"), &format!("{at}/headers"))?
            .iter()
            .enumerate()
        {
            let hat = format!("{at}/headers/{j}");
            let key = string(h.get("key"), &format!("{hat}/key"))?;
            let value = string(h.get("value"), &format!("{hat}/value"))?;
            let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
                fault(
                    format!("{hat}/key"),
                    format!("{key:?} is not a header name"),
                )
            })?;
            if FORBIDDEN_HEADERS.contains(&name.as_str()) {
                return Err(fault(
                    format!("{hat}/key"),
                    format!("{key} is set by the server and cannot be set by a rule"),
                ));
            }
            let value = HeaderValue::from_str(&value).map_err(|_| {
                fault(
                    format!("{hat}/value"),
                    "a header value holds visible ASCII, spaces and tabs only",
                )
            })?;
            headers.push((name, value));
        }
        rules.headers.push(HeaderRule { pattern, headers });
    }
    rules.clean_urls = match obj.get("cleanUrls") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(fault("/cleanUrls", "cleanUrls is true or false")),
    };
    rules.trailing_slash = match obj.get("trailingSlash") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(fault("/trailingSlash", "trailingSlash is true or false")),
    };
    if let Some(i18n) = obj.get("i18n") {
        let root = string(i18n.get("root"), "/i18n/root")?;
        let root = format!("/{}", root.trim_matches('/'));
        rules.i18n_root = Some(root);
    }
    Ok(rules)
}

fn array<'a>(v: Option<&'a Value>, at: &str) -> Result<&'a [Value], ConfigFault> {
    match v {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(fault(at, "must be an array")),
    }
}

fn string(v: Option<&Value>, at: &str) -> Result<String, ConfigFault> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(fault(at, "must be a non-empty string")),
        None => Err(fault(at, "is required")),
    }
}

fn pattern_of(rule: &Value, at: &str) -> Result<Pattern, ConfigFault> {
    match (rule.get("source"), rule.get("regex")) {
        (Some(_), Some(_)) => Err(fault(at, "a rule has a `source` or a `regex`, not both")),
        (Some(s), None) => {
            let s = string(Some(s), &format!("{at}/source"))?;
            Pattern::glob(&s).map_err(|e| fault(format!("{at}/source"), e.0))
        }
        (None, Some(r)) => {
            let r = string(Some(r), &format!("{at}/regex"))?;
            Pattern::regex(&r).map_err(|e| fault(format!("{at}/regex"), e.0))
        }
        (None, None) => Err(fault(at, "a rule needs a `source` glob or a `regex`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_entry_compiles() {
        let rules = compile(&json!({
            "public": "dist",
            "ignore": ["firebase.json"],
            "cleanUrls": true,
            "trailingSlash": false,
            "i18n": {"root": "localized/"},
            "redirects": [{"source": "/old/:rest*", "destination": "/new/:rest", "type": 302}],
            "rewrites": [
                {"source": "/api/**", "run": {"serviceId": "api", "region": "us-central1", "pinTag": true}},
                {"regex": "^/app/.*", "destination": "/index.html"}
            ],
            "headers": [{"source": "**/*.js", "headers": [{"key": "Cache-Control", "value": "max-age=31536000"}]}]
        }))
        .unwrap();
        assert_eq!(rules.redirects[0].status, 302);
        assert_eq!(rules.run_services(), vec![("api".to_owned(), true)]);
        assert_eq!(rules.i18n_root.as_deref(), Some("/localized"));
        assert_eq!(rules.trailing_slash, Some(false));
        assert!(rules.clean_urls);
    }

    #[test]
    fn what_cannot_run_here_is_refused_with_its_pointer() {
        let e = compile(&json!({"rewrites": [{"source": "**", "destination": "/i.html"}, {"source": "/f", "function": "api"}]})).unwrap_err();
        assert_eq!(e.pointer, "/rewrites/1/function");
        assert!(e.reason.contains("\"run\""), "{e}");
        let e =
            compile(&json!({"redirects": [{"source": "/a", "destination": "/b", "type": 200}]}))
                .unwrap_err();
        assert_eq!(e.pointer, "/redirects/0/type");
        let e = compile(&json!({"headers": [{"source": "**", "headers": [{"key": "Content-Length", "value": "1"}]}]})).unwrap_err();
        assert_eq!(e.pointer, "/headers/0/headers/0/key");
        let e = compile(&json!({"rewrites": [{"regex": "(", "destination": "/x"}]})).unwrap_err();
        assert_eq!(e.pointer, "/rewrites/0/regex");
        let e = compile(
            &json!({"rewrites": [{"source": "**", "run": {"serviceId": "a", "pinTag": "yes"}}]}),
        )
        .unwrap_err();
        assert_eq!(e.pointer, "/rewrites/0/run/pinTag");
        let e = compile(&json!({"source": "."})).unwrap_err();
        assert_eq!(e.pointer, "/source");
    }
}
