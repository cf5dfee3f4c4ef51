//! Operations matched by method and path with a compiled router (`matchit`), not a list of regexes:
//! one lookup per request whatever the number of operations. OpenAPI's `{name}` templates are the
//! router's own syntax; a template the router cannot hold (a parameter with a suffix, such as Google's
//! `/{name}:cancel`) is refused when the config is read.

use http::Method;

use crate::spec::{ApiSpec, SpecFault};

/// What a path and method found.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// An operation (index into [`ApiSpec::operations`]) and its path parameters, percent-decoded.
    Operation(usize, Vec<(String, String)>),
    /// The path is known but not with this method (its template and the first operation of the path).
    WrongMethod(String, usize),
    /// Nothing matches.
    NotFound,
}

struct PathEntry {
    template: String,
    methods: Vec<(Method, usize)>,
}

/// The compiled router of one API config.
pub struct Router {
    inner: matchit::Router<usize>,
    entries: Vec<PathEntry>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("paths", &self.entries.len())
            .finish()
    }
}

impl Router {
    /// Compiles the operations of `spec`.
    pub fn new(spec: &ApiSpec) -> Result<Self, SpecFault> {
        let mut inner = matchit::Router::new();
        let mut entries: Vec<PathEntry> = Vec::new();
        for (i, op) in spec.operations.iter().enumerate() {
            if let Some(e) = entries.iter_mut().find(|e| e.template == op.template) {
                e.methods.push((op.method.clone(), i));
                continue;
            }
            inner.insert(op.template.as_str(), entries.len()).map_err(|e| {
                SpecFault::at(
                    op.pointer.rsplit_once('/').map(|(p, _)| p).unwrap_or(""),
                    format!(
                        "the path template {} cannot be routed: {e} (one parameter per path segment, with nothing after it in the segment; two templates may not differ only by a parameter's name)",
                        op.template
                    ),
                )
            })?;
            entries.push(PathEntry {
                template: op.template.clone(),
                methods: vec![(op.method.clone(), i)],
            });
        }
        Ok(Self { inner, entries })
    }

    /// Looks up `method` at `path` (the raw request path, no query).
    pub fn find(&self, method: &Method, path: &str) -> Found {
        let Ok(m) = self.inner.at(path) else {
            return Found::NotFound;
        };
        let entry = &self.entries[*m.value];
        let params = || {
            m.params
                .iter()
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect()
        };
        if let Some((_, i)) = entry.methods.iter().find(|(mm, _)| mm == method) {
            return Found::Operation(*i, params());
        }
        // HEAD is served by GET where the API has no HEAD of its own (RFC 9110 §9.3.2).
        if method == Method::HEAD
            && let Some((_, i)) = entry.methods.iter().find(|(mm, _)| mm == Method::GET)
        {
            return Found::Operation(*i, params());
        }
        Found::WrongMethod(entry.template.clone(), entry.methods[0].1)
    }

    /// The first operation at `path` whatever its method (a CORS preflight passed to the backend).
    pub fn any_method(&self, path: &str) -> Option<(usize, Vec<(String, String)>)> {
        let m = self.inner.at(path).ok()?;
        let entry = &self.entries[*m.value];
        Some((
            entry.methods[0].1,
            m.params
                .iter()
                .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                .collect(),
        ))
    }
}

/// `%XX` sequences decoded (invalid ones kept as they are); not `+`, which is a plus in a path.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(paths: &str) -> ApiSpec {
        ApiSpec::parse(&format!(
            "swagger: '2.0'\ninfo: {{title: t, version: '1'}}\nx-google-backend: {{address: 'https://b.example'}}\npaths:\n{paths}"
        ))
        .unwrap()
    }

    #[test]
    fn matches_operations_and_tells_404_from_405() {
        let s = spec(
            "  /v1/shelves:\n    get: {operationId: list}\n    post: {operationId: create}\n  /v1/shelves/{shelf}:\n    get: {operationId: get}\n  /v1/shelves/special:\n    get: {operationId: special}\n",
        );
        let r = Router::new(&s).unwrap();
        let id = |f: Found| match f {
            Found::Operation(i, p) => (s.operations[i].id.clone(), p),
            other => panic!("{other:?}"),
        };
        assert_eq!(id(r.find(&Method::GET, "/v1/shelves")).0, "list");
        assert_eq!(id(r.find(&Method::POST, "/v1/shelves")).0, "create");
        assert_eq!(
            id(r.find(&Method::GET, "/v1/shelves/a%20b")),
            (
                "get".to_owned(),
                vec![("shelf".to_owned(), "a b".to_owned())]
            )
        );
        // A static segment beats a parameter.
        assert_eq!(id(r.find(&Method::GET, "/v1/shelves/special")).0, "special");
        assert_eq!(id(r.find(&Method::HEAD, "/v1/shelves")).0, "list");
        assert!(matches!(
            r.find(&Method::DELETE, "/v1/shelves/1"),
            Found::WrongMethod(t, _) if t == "/v1/shelves/{shelf}"
        ));
        assert_eq!(r.find(&Method::GET, "/v2/x"), Found::NotFound);
        assert_eq!(r.find(&Method::GET, "/v1/shelves/1/books"), Found::NotFound);
    }

    #[test]
    fn templates_the_router_cannot_hold_are_refused_with_their_pointer() {
        let s = spec("  /v1/{name}:cancel:\n    post: {}\n");
        let e = Router::new(&s).unwrap_err();
        assert_eq!(e.pointer, "/paths/~1v1~1{name}:cancel");
        assert!(e.reason.contains("cannot be routed"), "{e}");
    }

    #[test]
    fn percent_decoding_keeps_what_is_not_an_escape() {
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert_eq!(percent_decode("a+b"), "a+b");
    }
}
