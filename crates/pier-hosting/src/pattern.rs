//! The patterns `firebase.json` rules match request paths with, compiled once to one anchored regular
//! expression each.
//!
//! - **`source`**: a glob as Firebase Hosting reads it (minimatch with extglobs, plus path-to-regexp's
//!   captures): `*` is any run of characters but `/`, `**` any run including `/` (`/api/**` matches
//!   `/api/` and below, not `/api`; `**/` also matches nothing), `?` one character but `/`, `{a,b}`
//!   either, `@(a|b)`, `?(…)`, `+(…)`, `*(…)` the extglob groups. Case-sensitive, as minimatch.
//! - **Captures** in a `source` (`:name`, a segment, and `:name*`, the rest of the path, both at the
//!   start of a segment) make it a path-to-regexp pattern, as superstatic reads those: case-insensitive,
//!   and a trailing slash is optional.
//! - **`regex`**: RE2 syntax (the `regex` crate reads the same language: no look-around, no
//!   back-references), named groups `(?P<name>…)` captured for the destination.
//!
//! A redirect's `destination` names captures as `:name` (numbered ones as `:1`, `:2`).

use regex::Regex;

/// A compiled `source` or `regex` pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    re: Regex,
    /// As written, for messages.
    pub text: String,
}

/// Why a pattern cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

impl Pattern {
    /// A `source` glob.
    pub fn glob(glob: &str) -> Result<Self, PatternError> {
        if glob.chars().count() > MAX_PATTERN_LEN {
            return Err(PatternError(format!(
                "a source is at most {MAX_PATTERN_LEN} characters"
            )));
        }
        let re = glob_to_regex(glob)?;
        let re = regex::RegexBuilder::new(&re)
            .size_limit(COMPILED_LIMIT)
            .build()
            .map_err(|e| PatternError(format!("source {glob:?} is not a usable glob: {e}")))?;
        Ok(Self {
            re,
            text: glob.to_owned(),
        })
    }

    /// A `regex` rule (RE2 syntax), anchored at both ends as Firebase does.
    pub fn regex(text: &str) -> Result<Self, PatternError> {
        if text.chars().count() > MAX_PATTERN_LEN {
            return Err(PatternError(format!(
                "a regex is at most {MAX_PATTERN_LEN} characters"
            )));
        }
        let re = regex::RegexBuilder::new(&format!("^(?:{text})$"))
            .size_limit(COMPILED_LIMIT)
            .build()
            .map_err(|e| {
                PatternError(format!(
                    "regex {text:?} is not a valid RE2 expression: {}",
                    e.to_string().lines().last().unwrap_or("invalid")
                ))
            })?;
        Ok(Self {
            re,
            text: text.to_owned(),
        })
    }

    /// Whether `path` matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.re.is_match(path)
    }

    /// The captures of `path`, by name and by number (`"1"`, `"2"`, …), or `None` when it does not
    /// match.
    pub fn captures(&self, path: &str) -> Option<Vec<(String, String)>> {
        let caps = self.re.captures(path)?;
        let mut out = Vec::new();
        for (i, name) in self.re.capture_names().enumerate().skip(1) {
            if let Some(m) = caps.get(i) {
                out.push((i.to_string(), m.as_str().to_owned()));
                if let Some(name) = name {
                    out.push((name.to_owned(), m.as_str().to_owned()));
                }
            }
        }
        Some(out)
    }
}

/// The longest `source` or `regex` a rule may have, in characters.
pub const MAX_PATTERN_LEN: usize = 2048;

/// How large one compiled pattern may grow (the `regex` crate's size limit), in bytes.
const COMPILED_LIMIT: usize = 1 << 20;

/// Percent-encodes what a captured (decoded) path piece may hold that a `Location` path must not carry
/// as is: anything but RFC 3986's unreserved and sub-delimiter characters, `:`, `@` and `/`. So `?`,
/// `#`, `%`, `\`, spaces and controls from a capture stay inside the path.
pub fn encode_path(piece: &str) -> String {
    let mut out = String::with_capacity(piece.len());
    for b in piece.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A `Location` that stays on the site: a path made of decoded pieces that begins with `//` or `/\`
/// would name another host, so its leading slashes collapse to one.
pub fn same_site(location: String) -> String {
    if location.starts_with("//") || location.starts_with("/\\") {
        format!("/{}", location.trim_start_matches(['/', '\\']))
    } else {
        location
    }
}

/// Replaces `:name` (and `:1`) in a redirect's destination by the captures, percent-encoded
/// ([`encode_path`]); longer names first, so `:path` is not read as `:p` followed by `ath`. A
/// destination that is a path stays on the site ([`same_site`]).
pub fn substitute(destination: &str, captures: &[(String, String)]) -> String {
    let out = substitute_raw(destination, captures);
    if destination.starts_with('/') {
        same_site(out)
    } else {
        out
    }
}

fn substitute_raw(destination: &str, captures: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = captures.iter().collect();
    sorted.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = String::with_capacity(destination.len());
    let mut rest = destination;
    while let Some(i) = rest.find(':') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match sorted.iter().find(|(name, _)| {
            after.starts_with(name.as_str())
                && !after[name.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        }) {
            Some((name, value)) => {
                out.push_str(&encode_path(value));
                rest = &after[name.len()..];
                // `:name*` in a destination is the same capture.
                if let Some(r) = rest.strip_prefix('*') {
                    rest = r;
                }
            }
            None => {
                out.push(':');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn glob_to_regex(glob: &str) -> Result<String, PatternError> {
    let bad = |why: &str| PatternError(format!("source {glob:?}: {why}"));
    let chars: Vec<char> = glob.chars().collect();
    let mut re = String::from("^");
    // Open groups: `None` for `{…}` (its commas separate choices), `Some(op)` for an extglob `op(…)`.
    let mut groups: Vec<Option<char>> = Vec::new();
    let mut captures = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '*' if next == Some('*') => {
                // `**/` also matches nothing (`**/*.js` matches `/app.js`).
                let after = chars.get(i + 2).copied();
                if after == Some('/') {
                    re.push_str("(?:.*/)?");
                    i += 3;
                } else {
                    re.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '@' | '?' | '+' | '*' | '!' if next == Some('(') => {
                if c == '!' {
                    return Err(bad(
                        "negated extglobs `!(…)` are not supported; list what to match",
                    ));
                }
                re.push_str("(?:");
                groups.push(Some(c));
                i += 2;
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '{' => {
                re.push_str("(?:");
                groups.push(None);
            }
            '}' if groups.last() == Some(&None) => {
                groups.pop();
                re.push(')');
            }
            ',' if groups.last() == Some(&None) => re.push('|'),
            '|' if matches!(groups.last(), Some(Some(_))) => re.push('|'),
            ')' if matches!(groups.last(), Some(Some(_))) => {
                let op = groups.pop().flatten();
                re.push(')');
                match op {
                    Some('?') => re.push('?'),
                    Some('+') => re.push('+'),
                    Some('*') => re.push('*'),
                    _ => {}
                }
            }
            ':' if (i == 0 || chars[i - 1] == '/')
                && next.is_some_and(|n| n.is_ascii_alphabetic() || n == '_') =>
            {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                captures = true;
                if chars.get(end) == Some(&'*') {
                    re.push_str(&format!("(?P<{name}>.*)"));
                    end += 1;
                } else {
                    re.push_str(&format!("(?P<{name}>[^/]+)"));
                }
                i = end;
                continue;
            }
            '[' => {
                // A character class, copied as is up to its end.
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == ']')
                    .ok_or_else(|| bad("`[` without `]`"))?;
                let class: String = chars[i..i + end + 1].iter().collect();
                re.push_str(&class.replacen("[!", "[^", 1));
                i += end + 1;
                continue;
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
        i += 1;
    }
    if !groups.is_empty() {
        return Err(bad("a group is not closed"));
    }
    if captures {
        if re.ends_with('/') {
            re.pop();
        }
        re.insert_str(1, "(?i)");
        re.push_str("/?");
    }
    re.push('$');
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        Pattern::glob(glob).unwrap().is_match(path)
    }

    #[test]
    fn globs_match_as_firebase_reads_them() {
        assert!(m("**", "/"));
        assert!(m("**", "/a/b/c.html"));
        assert!(!m("/api/**", "/api"));
        assert!(m("/api/**", "/api/"));
        assert!(m("/api/**", "/api/v1/items"));
        assert!(!m("/API/x", "/api/x"));
        assert!(!m("/api/**", "/apix"));
        assert!(m("/*.html", "/a.html"));
        assert!(!m("/*.html", "/a/b.html"));
        assert!(m("**/*.js", "/app.js"));
        assert!(m("**/*.js", "/assets/app.js"));
        assert!(m("**/*.@(jpg|jpeg|gif|png)", "/img/a.jpeg"));
        assert!(!m("**/*.@(jpg|jpeg|gif|png)", "/img/a.svg"));
        assert!(m("**/*.{js,css}", "/a/b.css"));
        assert!(m("/a?c", "/abc"));
        assert!(!m("/a?c", "/a/c"));
        assert!(m("/x.+(a|b)", "/x.abab"));
        assert!(!m("/exact", "/exact/"));
        assert!(Pattern::glob("/!(x)").is_err());
        assert!(Pattern::glob("/{a,b").is_err());
    }

    #[test]
    fn captures_feed_destinations() {
        let p = Pattern::glob("/blog/:year/:slug").unwrap();
        let caps = p.captures("/blog/2024/hello").unwrap();
        assert_eq!(
            substitute("/news/:year/:slug?from=blog", &caps),
            "/news/2024/hello?from=blog"
        );
        let p = Pattern::glob("/old/:rest*").unwrap();
        let caps = p.captures("/old/a/b/c").unwrap();
        assert_eq!(substitute("/new/:rest*", &caps), "/new/a/b/c");
        assert_eq!(substitute("/new/:rest", &caps), "/new/a/b/c");
        assert!(p.captures("/other").is_none());
        // With captures, path-to-regexp's rules: any case, optional trailing slash.
        let p = Pattern::glob("/p/:id").unwrap();
        assert!(p.is_match("/P/42/"));
        assert!(!p.is_match("/p/42/x"));
        // A capture named like a prefix of another is not confused with it.
        let caps = vec![
            ("p".to_owned(), "P".to_owned()),
            ("path".to_owned(), "PATH".to_owned()),
        ];
        assert_eq!(substitute("/:path/:p/:px", &caps), "/PATH/P/:px");
        // Captures are decoded text: they are encoded again, and never name another host.
        let p = Pattern::glob("/blog/:slug*").unwrap();
        let caps = p.captures("/blog/\\evil.com?x#y z").unwrap();
        assert_eq!(substitute("/:slug", &caps), "/%5Cevil.com%3Fx%23y%20z");
        let caps = p.captures("/blog//evil.com").unwrap();
        assert_eq!(substitute("/:slug", &caps), "/evil.com");
        assert_eq!(
            substitute("https://example.com/:slug", &caps),
            "https://example.com//evil.com"
        );
    }

    #[test]
    fn regex_rules_are_anchored_re2() {
        let p = Pattern::regex(r"/u/(\d+)/(?P<tab>[a-z]+)").unwrap();
        let caps = p.captures("/u/42/posts").unwrap();
        assert_eq!(
            substitute("/users/:1?tab=:tab", &caps),
            "/users/42?tab=posts"
        );
        assert!(!p.is_match("/x/u/42/posts"));
        let err = Pattern::regex(r"/(?=look)").unwrap_err();
        assert!(err.0.contains("not a valid RE2"), "{err}");
    }
}
