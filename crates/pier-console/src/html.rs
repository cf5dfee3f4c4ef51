//! HTML by hand: escaping, the page frame every console page shares, and the headers it goes out with.

use std::fmt::Write;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::assets;
use crate::session::Signed;

/// Escapes text for HTML content and double- or single-quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment (names are URL-safe today; this keeps them so).
pub(crate) fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The content security policy of console pages: only the console's own scripts, styles and
/// connections; nothing may frame it (clickjacking).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// A page of the console for `who`, in `project`.
pub(crate) fn page(
    status: StatusCode,
    title: &str,
    who: &Signed,
    project: &str,
    body: &str,
) -> Response {
    let mut h = String::with_capacity(body.len() + 2048);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <meta name=\"htmx-config\" content='{{\"includeIndicatorStyles\":false,\"allowEval\":false,\"allowScriptTags\":false}}'>\
         <title>{} · Pier</title>\
         <link rel=\"stylesheet\" href=\"{}\"><link rel=\"stylesheet\" href=\"{}\">\
         <script src=\"{}\" defer></script><script src=\"{}\" defer></script><script src=\"{}\" defer></script>\
         </head><body><header><a class=\"brand\" href=\"/console/projects/{}/services\">Pier</a>\
         <form class=\"project\" method=\"get\" action=\"/console\"><label>Project <input name=\"project\" value=\"{}\" size=\"12\"></label></form>\
         <span class=\"who\" id=\"who\">{}</span>\
         <form id=\"signout\" method=\"post\" action=\"/console/signout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Sign out</button></form>\
         </header><main>",
        esc(title),
        assets::url("uPlot.min.css"),
        assets::url("console.css"),
        assets::url("htmx.min.js"),
        assets::url("uPlot.iife.min.js"),
        assets::url("console.js"),
        seg(project),
        esc(project),
        esc(&who.email),
        esc(&who.csrf),
    );
    if let Some(f) = &who.flash {
        let _ = write!(
            h,
            "<p id=\"message\" class=\"{}\" role=\"status\">{}</p>",
            if f.ok { "ok" } else { "error" },
            esc(&f.text)
        );
    }
    h.push_str(body);
    h.push_str("</main></body></html>");
    html(status, h)
}

/// HTML with the console's headers: never cached (it shows private state), never framed.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    protect(h);
    r
}

/// The security headers of every console answer.
pub(crate) fn protect(h: &mut axum::http::HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
}

/// The hidden CSRF field of a form.
pub(crate) fn csrf_field(who: &Signed) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&who.csrf)
    )
}

/// `user:a@b` → `a@b`; other members as they are.
pub(crate) fn member_name(m: &str) -> &str {
    m.strip_prefix("user:")
        .or_else(|| m.strip_prefix("serviceAccount:"))
        .unwrap_or(m)
}

/// An RFC 3339 time shortened for a table: `2026-12-01 06:14:45 UTC`.
pub(crate) fn when(t: &str) -> String {
    let t = t.split('.').next().unwrap_or(t).trim_end_matches('Z');
    format!("{} UTC", t.replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(member_name("user:a@b"), "a@b");
        assert_eq!(member_name("allUsers"), "allUsers");
        assert_eq!(when("2026-12-01T06:14:45.123Z"), "2026-12-01 06:14:45 UTC");
    }
}
