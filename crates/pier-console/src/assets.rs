//! The console's static files, embedded in the binary and served under a path that carries a hash of
//! their content, so that browsers may keep them for a year (`immutable`) and a new Pier's files are
//! new URLs.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/console.js"),
    },
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/htmx-2.0.11/htmx.min.js"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/uplot-1.6.32/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/vendor/uplot-1.6.32/uPlot.min.css"),
    },
];

/// The first 12 hex digits of the SHA-256 of every file together: the path segment that changes with
/// any of them.
fn version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for f in FILES {
            ctx.update(f.name.as_bytes());
            ctx.update(f.body);
        }
        ctx.finish().as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    })
}

/// The URL path of the file `name`.
pub(crate) fn url(name: &str) -> String {
    format!("/console/assets/{}/{name}", version())
}

/// `GET /console/assets/{version}/{name}`.
pub(crate) async fn serve(Path((v, name)): Path<(String, String)>) -> Response {
    let Some(f) = FILES.iter().find(|f| f.name == name) else {
        return (StatusCode::NOT_FOUND, "no such console file\n").into_response();
    };
    // An old version's URL gets today's file, but not for a year.
    let cache = if v == version() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut r = f.body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(f.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}
