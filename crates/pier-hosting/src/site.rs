//! A released version of a site, compiled: its files by path and its rules, and the pure decision of
//! what answers a request, in Firebase Hosting's order
//! (<https://firebase.google.com/docs/hosting/full-config#hosting_priority_order>):
//!
//! 1. reserved paths under `/__/` (Firebase's own; Pier serves none of them: 404);
//! 2. `redirects`, the first that matches;
//! 3. an exact static file, with `cleanUrls` and `trailingSlash` (their redirects included) and `i18n`;
//! 4. `rewrites`, the first that matches;
//! 5. the site's `/404.html` (with status 404);
//! 6. a default 404 page.
//!
//! `headers` rules are matched against the path as requested and apply to whatever answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderName, HeaderValue};

use crate::config::{RewriteTarget, Rules};
use crate::files::Stored;

/// A file of a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its content's SHA-256 (hex).
    pub digest: String,
    /// What is stored for it.
    pub stored: Stored,
}

/// A version ready to serve.
#[derive(Debug)]
pub struct SiteVersion {
    /// Files by path (`/index.html`).
    pub files: HashMap<String, Entry>,
    /// Compiled rules.
    pub rules: Rules,
    /// When it was released (`Last-Modified`).
    pub released: SystemTime,
    /// The revision each `pinTag` rewrite's service is pinned to (service to revision), fixed when the
    /// version was first released.
    pub pins: HashMap<String, String>,
}

/// What answers one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A redirect to `location` (a path with the query kept, or an absolute URL).
    Redirect {
        /// 301, 302, …
        status: u16,
        /// Where to.
        location: String,
        /// Whether a `redirects` rule made it (`headers` rules do not apply to those), rather than
        /// `cleanUrls` or `trailingSlash`.
        rule: bool,
    },
    /// A file of the version; `not_found` for the site's own 404 page.
    File {
        /// Its path in the version.
        path: String,
        /// Whether it answers as a 404.
        not_found: bool,
    },
    /// The rewrite to a service (its index in [`Rules::rewrites`]).
    Run(usize),
    /// Nothing: the default 404.
    NotFound,
}

/// A request as the decision sees it.
#[derive(Clone, Copy, Debug)]
pub struct Ask<'a> {
    /// The path, percent-decoded.
    pub path: &'a str,
    /// The query string, without `?`, if any.
    pub query: Option<&'a str>,
    /// Languages the client prefers, best first, lowercased (`fr`, `en`).
    pub languages: &'a [String],
    /// The client's country, lowercased (`ca`), when known.
    pub country: Option<&'a str>,
}

impl SiteVersion {
    /// A version from its files and rules.
    pub fn new(files: HashMap<String, Entry>, rules: Rules, released: SystemTime) -> Arc<Self> {
        Self::pinned(files, rules, released, HashMap::new())
    }

    /// A version whose `pinTag` rewrites go to the given revisions (service to revision).
    pub fn pinned(
        files: HashMap<String, Entry>,
        rules: Rules,
        released: SystemTime,
        pins: HashMap<String, String>,
    ) -> Arc<Self> {
        Arc::new(Self {
            files,
            rules,
            released,
            pins,
        })
    }

    fn has(&self, path: &str) -> bool {
        self.files.contains_key(path)
    }

    /// Decides what answers `ask`.
    pub fn decide(&self, ask: &Ask<'_>) -> Decision {
        let path = ask.path;
        if path.starts_with("/__/") {
            return Decision::NotFound;
        }
        for r in &self.rules.redirects {
            if let Some(caps) = r.pattern.captures(path) {
                let mut location = crate::pattern::substitute(&r.destination, &caps);
                if let Some(q) = ask.query.filter(|q| !q.is_empty()) {
                    location.push(if location.contains('?') { '&' } else { '?' });
                    location.push_str(q);
                }
                return Decision::Redirect {
                    status: r.status,
                    location,
                    rule: true,
                };
            }
        }
        if let Some(d) = self.static_file(path, ask) {
            return d;
        }
        for (i, r) in self.rules.rewrites.iter().enumerate() {
            if r.pattern.is_match(path) {
                return match &r.target {
                    RewriteTarget::Run { .. } => Decision::Run(i),
                    // The exact path: no index, no cleanUrls, no i18n (as superstatic serves them).
                    RewriteTarget::File(dest) if self.has(dest) => Decision::File {
                        path: dest.clone(),
                        not_found: dest == "/404.html",
                    },
                    RewriteTarget::File(_) => self.not_found(ask),
                };
            }
        }
        self.not_found(ask)
    }

    fn not_found(&self, ask: &Ask<'_>) -> Decision {
        match self.localized("/404.html", ask) {
            Some(path) => Decision::File {
                path,
                not_found: true,
            },
            None => Decision::NotFound,
        }
    }

    /// `path` under the client's i18n folders first, in Firebase's order (`LANG_COUNTRY` for each
    /// language, `ALL_COUNTRY`, then `LANG_ALL` and `LANG` for each language), then as is.
    fn localized(&self, path: &str, ask: &Ask<'_>) -> Option<String> {
        if let Some(root) = &self.rules.i18n_root {
            let mut folders = Vec::new();
            if let Some(c) = ask.country {
                folders.extend(ask.languages.iter().map(|l| format!("{l}_{c}")));
                folders.push(format!("ALL_{c}"));
            }
            for l in ask.languages {
                folders.push(format!("{l}_ALL"));
                folders.push(l.clone());
            }
            for folder in folders {
                let p = format!("{root}/{folder}{path}");
                if self.has(&p) {
                    return Some(p);
                }
            }
        }
        self.has(path).then(|| path.to_owned())
    }

    /// The static-content step: the file a path names (with `index.html` for directories and `.html`
    /// dropped under `cleanUrls`), or the redirect that puts the path in its canonical form.
    fn static_file(&self, path: &str, ask: &Ask<'_>) -> Option<Decision> {
        let redirect = |to: String| {
            let mut location = crate::pattern::same_site(crate::pattern::encode_path(&to));
            if let Some(q) = ask.query.filter(|q| !q.is_empty()) {
                location.push('?');
                location.push_str(q);
            }
            Decision::Redirect {
                status: 301,
                location,
                rule: false,
            }
        };
        let file = |p: String| Decision::File {
            path: p,
            not_found: false,
        };
        let clean = self.rules.clean_urls;
        let slash = self.rules.trailing_slash;
        let (base, ends_slash) = match path.strip_suffix('/') {
            Some(b) if !b.is_empty() => (b, true),
            _ => (path, false),
        };
        if path == "/" {
            return self.localized("/index.html", ask).map(file);
        }
        // `cleanUrls`: a request naming `.html` redirects to the clean form.
        if clean
            && !ends_slash
            && let Some(stem) = path.strip_suffix(".html")
            && self.localized(path, ask).is_some()
        {
            let stem = stem.strip_suffix("/index").map_or(stem, |s| s);
            let to = if stem.is_empty() {
                "/".to_owned()
            } else if slash == Some(true) {
                format!("{stem}/")
            } else {
                stem.to_owned()
            };
            return Some(redirect(to));
        }
        // An exact file (not a directory index): served as named; a trailing slash after it is not a
        // file.
        if !ends_slash && let Some(p) = self.localized(path, ask) {
            if slash == Some(true) && clean && p.ends_with(".html") {
                return Some(redirect(format!("{path}/")));
            }
            return Some(file(p));
        }
        // A directory's index, or (cleanUrls) `NAME.html`; a directory wins.
        if let Some(found) = self.localized(&format!("{base}/index.html"), ask) {
            let want = match slash {
                Some(w) => Some(w),
                // Unset: directories get a slash, unless cleanUrls serves them either way.
                None if clean => None,
                None => Some(true),
            };
            return Some(match want {
                Some(true) if !ends_slash => redirect(format!("{base}/")),
                Some(false) if ends_slash => redirect(base.to_owned()),
                _ => file(found),
            });
        }
        if clean && let Some(found) = self.localized(&format!("{base}.html"), ask) {
            if let Some(dir) = base.strip_suffix("/index") {
                let dir = if dir.is_empty() { "/" } else { dir };
                return Some(redirect(match slash {
                    Some(true) if dir != "/" => format!("{dir}/"),
                    _ => dir.to_owned(),
                }));
            }
            return match (slash, ends_slash) {
                (Some(true), false) => Some(redirect(format!("{base}/"))),
                (Some(false), true) => Some(redirect(base.to_owned())),
                // Unset: a clean URL has no slash; with one it names nothing.
                (None, true) => None,
                _ => Some(file(found)),
            };
        }
        None
    }

    /// The `headers` rules' headers for `path`, in order (a later rule's value replaces an earlier's).
    pub fn headers_for(&self, path: &str) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        self.add_headers(path, &mut out);
        out
    }

    /// The headers for what `decision` answers `path` with: none for a `redirects` rule's answer (as
    /// superstatic), the `/404.html` rules under the path's own for the site's 404 page.
    pub fn headers_for_answer(
        &self,
        path: &str,
        decision: &Decision,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        match decision {
            Decision::Redirect { rule: true, .. } => return out,
            Decision::File {
                path: page,
                not_found: true,
            } => self.add_headers(page, &mut out),
            _ => {}
        }
        self.add_headers(path, &mut out);
        out
    }

    fn add_headers(&self, path: &str, out: &mut Vec<(HeaderName, HeaderValue)>) {
        for rule in &self.rules.headers {
            if rule.pattern.is_match(path) {
                for (name, value) in &rule.headers {
                    out.retain(|(n, _)| n != name);
                    out.push((name.clone(), value.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn version(config: serde_json::Value, paths: &[&str]) -> Arc<SiteVersion> {
        let files = paths
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    Entry {
                        digest: "0".repeat(64),
                        stored: Stored::default(),
                    },
                )
            })
            .collect();
        SiteVersion::new(
            files,
            crate::config::compile(&config).unwrap(),
            SystemTime::UNIX_EPOCH,
        )
    }

    fn ask(v: &SiteVersion, path: &str) -> Decision {
        v.decide(&Ask {
            path,
            query: None,
            languages: &[],
            country: None,
        })
    }

    fn file(p: &str) -> Decision {
        Decision::File {
            path: p.into(),
            not_found: false,
        }
    }

    fn moved(to: &str) -> Decision {
        Decision::Redirect {
            status: 301,
            location: to.into(),
            rule: false,
        }
    }

    const SPA: &[&str] = &[
        "/index.html",
        "/about.html",
        "/docs/index.html",
        "/app.js",
        "/404.html",
    ];

    #[test]
    fn precedence_is_firebases() {
        let v = version(
            json!({
                "redirects": [{"source": "/app.js", "destination": "/moved.js"}],
                "rewrites": [
                    {"source": "/api/**", "run": {"serviceId": "api"}},
                    {"source": "/about.html", "destination": "/index.html"},
                    {"source": "/spa/**", "destination": "/index.html"}
                ]
            }),
            SPA,
        );
        // A redirect beats a file; a file beats a rewrite.
        assert_eq!(
            ask(&v, "/app.js"),
            Decision::Redirect {
                status: 301,
                location: "/moved.js".into(),
                rule: true
            }
        );
        assert_eq!(ask(&v, "/about.html"), file("/about.html"));
        assert_eq!(ask(&v, "/spa/x/y"), file("/index.html"));
        assert_eq!(ask(&v, "/api/items"), Decision::Run(0));
        assert_eq!(
            ask(&v, "/nothing"),
            Decision::File {
                path: "/404.html".into(),
                not_found: true
            }
        );
        assert_eq!(ask(&v, "/__/auth/handler"), Decision::NotFound);
        let bare = version(json!({}), &["/index.html"]);
        assert_eq!(ask(&bare, "/nothing"), Decision::NotFound);
    }

    #[test]
    fn redirects_keep_the_query() {
        let v = version(
            json!({"redirects": [{"source": "/blog/:post", "destination": "/news/:post?src=blog", "type": 302}]}),
            SPA,
        );
        let d = v.decide(&Ask {
            path: "/blog/hi",
            query: Some("utm=x"),
            languages: &[],
            country: None,
        });
        assert_eq!(
            d,
            Decision::Redirect {
                status: 302,
                location: "/news/hi?src=blog&utm=x".into(),
                rule: true
            }
        );
    }

    /// The table superstatic 11 gives (with `/about.html` and `/dir/index.html`): each row is a
    /// setting, each column a request, `""` a 200 from the expected file and `">X"` a 301 to X.
    #[test]
    fn clean_urls_and_trailing_slashes_as_superstatic() {
        let files = &["/index.html", "/about.html", "/dir/index.html", "/a.js"];
        let paths = [
            "/a.js",
            "/about",
            "/about.html",
            "/dir",
            "/dir/",
            "/dir/index.html",
            "/",
        ];
        let table: [(serde_json::Value, [&str; 7]); 6] = [
            (json!({}), ["", "404", "", ">/dir/", "", "", ""]),
            (
                json!({"cleanUrls": true}),
                ["", "", ">/about", "", "", ">/dir", ""],
            ),
            (
                json!({"trailingSlash": true}),
                ["", "404", "", ">/dir/", "", "", ""],
            ),
            (
                json!({"trailingSlash": true, "cleanUrls": true}),
                ["", ">/about/", ">/about/", ">/dir/", "", ">/dir/", ""],
            ),
            (
                json!({"trailingSlash": false}),
                ["", "404", "", "", ">/dir", "", ""],
            ),
            (
                json!({"trailingSlash": false, "cleanUrls": true}),
                ["", "", ">/about", "", ">/dir", ">/dir", ""],
            ),
        ];
        for (config, row) in table {
            let v = version(config.clone(), files);
            for (path, want) in paths.iter().zip(row) {
                let got = ask(&v, path);
                let ok = match want {
                    "" => matches!(
                        got,
                        Decision::File {
                            not_found: false,
                            ..
                        }
                    ),
                    "404" => got == Decision::NotFound,
                    to => got == moved(&to[1..]),
                };
                assert!(ok, "{config} {path}: want {want:?}, got {got:?}");
            }
        }
        let v = version(json!({"cleanUrls": true}), files);
        assert_eq!(ask(&v, "/about/"), Decision::NotFound);
        assert_eq!(ask(&v, "/dir/index"), moved("/dir"));
        assert_eq!(ask(&v, "/index.html"), moved("/"));
        assert_eq!(ask(&v, "/a.js/"), Decision::NotFound);
    }

    #[test]
    fn languages_pick_localized_files_first() {
        let v = version(
            json!({"i18n": {"root": "/localized"}}),
            &[
                "/index.html",
                "/localized/fr_ALL/index.html",
                "/localized/de/404.html",
                "/404.html",
            ],
        );
        let fr = vec!["fr".to_owned()];
        let d = v.decide(&Ask {
            path: "/",
            query: None,
            languages: &fr,
            country: None,
        });
        assert_eq!(d, file("/localized/fr_ALL/index.html"));
        let de = vec!["de".to_owned()];
        let d = v.decide(&Ask {
            path: "/missing",
            query: None,
            languages: &de,
            country: None,
        });
        assert_eq!(
            d,
            Decision::File {
                path: "/localized/de/404.html".into(),
                not_found: true
            }
        );
    }

    #[test]
    fn header_rules_apply_in_order() {
        let v = version(
            json!({"headers": [
                {"source": "**", "headers": [{"key": "X-Frame-Options", "value": "DENY"}, {"key": "Cache-Control", "value": "no-cache"}]},
                {"source": "**/*.js", "headers": [{"key": "Cache-Control", "value": "max-age=31536000"}]}
            ]}),
            SPA,
        );
        let h = v.headers_for("/app.js");
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].1, "max-age=31536000");
        assert_eq!(v.headers_for("/x").len(), 2);
    }
}
