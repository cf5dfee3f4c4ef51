//! Hosting end to end, as the README shows it: a small single-page application deployed from its
//! `firebase.json` with `pier hosting deploy`, its `/api/**` rewritten to a private service that the site
//! calls with its own identity, then a second deploy that uploads only what changed, releases, a
//! rollback, a preview channel that expires, and a clone. Real TLS, real curl.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;

/// (status, body, headers lowercased) of `curl ARGS`.
fn call(p: &Pier, args: &[&str]) -> (u16, String, String) {
    static N: AtomicU64 = AtomicU64::new(0);
    let hdr = p
        .dir
        .join(format!("h-{}", N.fetch_add(1, Ordering::Relaxed)));
    let mut full = vec!["-D", hdr.to_str().unwrap(), "-w", "\n%{http_code}"];
    full.extend_from_slice(args);
    let out = p.curl(&full);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let headers = std::fs::read_to_string(&hdr)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let _ = std::fs::remove_file(&hdr);
    (code.trim().parse().unwrap_or(0), body.to_owned(), headers)
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// Lets sites (the project's compute account, their default) invoke `service`.
fn let_the_site_invoke(p: &Pier, service: &str) {
    p.ok(&[
        "services",
        "add-iam-policy-binding",
        service,
        "--member",
        "serviceAccount:compute@default.iam.pier.localhost",
        "--role",
        "roles/run.invoker",
    ]);
}

const FIREBASE_JSON: &str = r#"{
  "hosting": {
    "site": "shop",
    "public": "dist",
    "ignore": ["firebase.json", "**/.*", "**/node_modules/**"],
    "cleanUrls": true,
    "redirects": [
      {"source": "/blog/:post", "destination": "/news/:post", "type": 302},
      {"regex": "^/old/(.*)$", "destination": "/new/:1"}
    ],
    "rewrites": [
      {"source": "/api/**", "run": {"serviceId": "api", "region": "us-central1"}},
      {"source": "**", "destination": "/index.html"}
    ],
    "headers": [
      {"source": "/assets/**", "headers": [{"key": "Cache-Control", "value": "public, max-age=31536000, immutable"}]},
      {"source": "**", "headers": [{"key": "X-Frame-Options", "value": "DENY"}]}
    ]
  }
}"#;

fn app_js(version: &str) -> String {
    format!(
        "// app {version}\n{}",
        "console.log('client-side routing');\n".repeat(300)
    )
}

/// Deploys and returns (stdout URL, stderr).
fn deploy(p: &Pier, project: &Path, extra: &[&str]) -> (String, String) {
    let config = project.join("firebase.json");
    let mut args = vec!["hosting", "deploy", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = p.cli(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "deploy failed: {stderr}\nserver:\n{}",
        p.server_log()
    );
    (
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
        stderr,
    )
}

#[test]
fn a_firebase_project_deploys_and_serves_as_firebase_hosting_does() {
    let p = Pier::start(&[]);
    let api = p.deploy_hello("api", &[]);
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    write(root, "firebase.json", FIREBASE_JSON);
    write(
        root,
        "dist/index.html",
        "<!doctype html><title>shop</title><script src=\"/assets/app.js\"></script>",
    );
    write(root, "dist/404.html", "<h1>custom not found</h1>");
    write(root, "dist/about.html", "<h1>about</h1>");
    write(root, "dist/assets/app.js", &app_js("v1"));
    write(root, "dist/.env", "SECRET=1");
    write(root, "dist/node_modules/x/index.js", "module");

    // A rewrite to a service that does not exist is refused before anything is uploaded.
    write(
        root,
        "bad/firebase.json",
        r#"{"hosting": {"site": "shop", "public": "../dist", "rewrites": [{"source": "/f", "function": "f"}]}}"#,
    );
    let e = p.fails(&[
        "hosting",
        "deploy",
        "--config",
        root.join("bad/firebase.json").to_str().unwrap(),
    ]);
    assert!(
        e.contains("/rewrites/0/function") && e.contains("\"run\""),
        "{e}"
    );

    let (url, err) = deploy(&p, root, &[]);
    assert!(
        url.starts_with("https://shop-") && url.contains(".pier.localhost"),
        "{url}"
    );
    assert!(err.contains("Uploading 4 files (4 new"), "{err}");
    assert!(err.contains("Releasing version v1"), "{err}");

    // Static files, with Firebase's headers.
    let (s, b, h) = call(&p, &[&format!("{url}/")]);
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("<title>shop</title>"));
    assert_eq!(header(&h, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(header(&h, "x-frame-options"), Some("deny"));
    assert_eq!(header(&h, "cache-control"), Some("max-age=3600"));
    // Ignored files were never uploaded.
    assert_eq!(
        call(&p, &[&format!("{url}/.env")]).1,
        call(&p, &[&format!("{url}/")]).1
    );

    // Precompressed variants chosen by Accept-Encoding, conditional requests and ranges.
    let asset = format!("{url}/assets/app.js");
    let (s, _, h) = call(
        &p,
        &["-H", "Accept-Encoding: br, gzip", "-o", "/dev/null", &asset],
    );
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-encoding"), Some("br"));
    assert_eq!(header(&h, "vary"), Some("accept-encoding"));
    assert_eq!(
        header(&h, "cache-control"),
        Some("public, max-age=31536000, immutable"),
        "a headers rule applies last"
    );
    let (_, b, h) = call(&p, &["--compressed", &asset]);
    assert_eq!(b, app_js("v1"), "curl decodes what Pier compressed");
    assert!(header(&h, "content-encoding").is_some());
    let (_, _, h) = call(&p, &[&asset]);
    let etag = header(&h, "etag").unwrap().to_owned();
    assert!(header(&h, "content-encoding").is_none());
    assert!(header(&h, "last-modified").is_some());
    let (s, b, _) = call(&p, &["-H", &format!("If-None-Match: {etag}"), &asset]);
    assert_eq!((s, b.as_str()), (304, ""));
    let (s, b, h) = call(&p, &["-H", "Range: bytes=0-9", &asset]);
    assert_eq!((s, b.as_str()), (206, "// app v1\n"));
    let len = app_js("v1").len();
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes 0-9/{len}").as_str())
    );
    let (s, _, h) = call(&p, &["-H", &format!("Range: bytes={len}-"), &asset]);
    assert_eq!(s, 416);
    assert_eq!(
        header(&h, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    let (s, b, h) = call(&p, &["-I", &asset]);
    assert_eq!(s, 200);
    assert!(b.is_empty() || !b.contains("console.log"));
    assert_eq!(header(&h, "content-length"), Some(len.to_string().as_str()));

    // Order of precedence: redirects with captures, clean URLs, a file before the catch-all rewrite,
    // reserved paths, then client-side routes to index.html.
    let (s, _, h) = call(&p, &[&format!("{url}/blog/hello?ref=x")]);
    assert_eq!(s, 302);
    assert_eq!(header(&h, "location"), Some("/news/hello?ref=x"));
    let (s, _, h) = call(&p, &[&format!("{url}/old/a/b")]);
    assert_eq!(s, 301);
    assert_eq!(header(&h, "location"), Some("/new/a/b"));
    let (s, _, h) = call(&p, &[&format!("{url}/about.html")]);
    assert_eq!(s, 301);
    assert_eq!(header(&h, "location"), Some("/about"));
    let (s, b, _) = call(&p, &[&format!("{url}/about")]);
    assert_eq!((s, b.as_str()), (200, "<h1>about</h1>"));
    let (s, b, _) = call(&p, &[&format!("{url}/cart/42")]);
    assert_eq!(s, 200);
    assert!(
        b.contains("<title>shop</title>"),
        "a client-side route gets index.html"
    );
    let (s, b, _) = call(&p, &[&format!("{url}/__/auth/handler")]);
    assert_eq!(s, 404);
    assert!(b.contains("Page Not Found"), "{b}");
    // Captures are decoded text: encoded again in the Location, which never names another host.
    let (s, _, h) = call(&p, &[&format!("{url}/blog/%5Cevil.com")]);
    assert_eq!(s, 302);
    assert_eq!(header(&h, "location"), Some("/news/%5cevil.com"));
    // Dot segments could widen a rewrite's scope (`/api/../admin` matches `/api/**`).
    let (s, b, _) = call(&p, &["--path-as-is", &format!("{url}/api/../admin")]);
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("`..`"), "{b}");
    let (s, _, h) = call(&p, &["-X", "POST", &asset]);
    assert_eq!(s, 405);
    assert_eq!(header(&h, "allow"), Some("get, head"));

    // The API rewrite reaches the private service as the site's account, once it may invoke it; only
    // the __session cookie goes along, and the client's own Authorization reaches the app.
    let (s, _, _) = call(&p, &[&format!("{api}/items")]);
    assert_eq!(s, 403, "the service is private");
    let (s, b, _) = call(&p, &[&format!("{url}/api/items")]);
    assert_eq!(
        s, 403,
        "the site's account may not invoke the service yet: {b}"
    );
    let_the_site_invoke(&p, "api");
    let b = eventually(10, "the site allowed to invoke api", || {
        let (s, b, _) = call(
            &p,
            &[
                "-H",
                "Cookie: __session=abc; tracking=xyz",
                "-H",
                "Authorization: Bearer app-token",
                &format!("{url}/api/items?q=1"),
            ],
        );
        (s == 200).then_some(b)
    });
    let echo: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(echo["service"], "api");
    assert_eq!(echo["uri"], "/api/items?q=1");
    assert_eq!(echo["headers"]["cookie"], "__session=abc");
    assert_eq!(echo["headers"]["authorization"], "Bearer app-token");
    assert!(
        echo["headers"]["x-serverless-authorization"]
            .as_str()
            .unwrap()
            .ends_with("SIGNATURE_REMOVED_BY_PIER"),
        "{echo}"
    );

    // Uploads are taken only for files a version waiting for release names.
    let stray = "a".repeat(64);
    let (s, b, _) = call(
        &p,
        &[
            "-X",
            "PUT",
            "-H",
            &format!("Authorization: Bearer {}", p.api_token()),
            "--data-binary",
            "stray",
            &format!("{}/v1/projects/default/sites/shop/files/{stray}", p.api_url),
        ],
    );
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("waiting to be released"), "{b}");

    // A second deploy uploads only the changed file; the switch is whole.
    write(root, "dist/assets/app.js", &app_js("v2"));
    let (_, err) = deploy(&p, root, &["-m", "new app"]);
    assert!(err.contains("Uploading 4 files (1 new"), "{err}");
    let (_, b, _) = call(&p, &[&asset]);
    assert_eq!(b, app_js("v2"));
    let releases = p.ok(&["hosting", "releases", "list", "--site", "shop"]);
    assert!(
        releases.contains("new app") && releases.contains("v2"),
        "{releases}"
    );

    // A preview channel at its own URL, with its own content, then it expires.
    write(root, "dist/assets/app.js", &app_js("preview"));
    let out = p.cli(&[
        "hosting",
        "channel",
        "deploy",
        "pr-42",
        "--expires",
        "3s",
        "--config",
        root.join("firebase.json").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let preview = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(preview.starts_with("https://shop--pr-42-"), "{preview}");
    assert_eq!(
        call(&p, &[&format!("{preview}/assets/app.js")]).1,
        app_js("preview")
    );
    assert_eq!(call(&p, &[&asset]).1, app_js("v2"), "live is untouched");

    // Clone the preview to live, then roll back to what live served before.
    p.ok(&["hosting", "clone", "shop:pr-42", "shop:live"]);
    assert_eq!(call(&p, &[&asset]).1, app_js("preview"));
    let out = p.ok(&["hosting", "rollback", "--site", "shop"]);
    assert!(out.contains(&url), "{out}");
    assert_eq!(call(&p, &[&asset]).1, app_js("v2"));

    eventually(10, "the preview channel to expire", || {
        (call(&p, &[&format!("{preview}/")]).0 == 404).then_some(())
    });
    assert_eq!(
        call(&p, &[&asset]).1,
        app_js("v2"),
        "live outlives the preview"
    );
    let e = p.fails(&[
        "hosting",
        "channel",
        "deploy",
        "pr-1",
        "--expires",
        "31d",
        "--config",
        root.join("firebase.json").to_str().unwrap(),
    ]);
    assert!(e.contains("at most 30 days"), "{e}");
}

#[test]
fn a_rewrite_carries_websockets_to_a_private_service() {
    let p = Pier::start(&[]);
    let app = tempfile::tempdir().unwrap();
    let server = app.path().join("ws_server.py");
    std::fs::write(&server, WS_ECHO_SERVER).unwrap();
    p.ok(&[
        "deploy",
        "ws",
        "--command",
        &format!("exec python3 {}", server.display()),
    ]);
    let_the_site_invoke(&p, "ws");
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    write(
        root,
        "firebase.json",
        r#"{"hosting": {"site": "chat", "public": "www", "rewrites": [{"source": "/live/**", "run": {"serviceId": "ws"}}]}}"#,
    );
    write(root, "www/index.html", "<h1>chat</h1>");
    let (url, _) = deploy(&p, root, &[]);
    let out = std::process::Command::new("python3")
        .args(["-c", WS_CLIENT])
        .arg(format!("{}/live/room", url.replace("https://", "wss://")))
        .arg(p.dir.join("ca.pem"))
        .arg(p.https_port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        p.server_log()
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "echo: one\necho: two\n"
    );
}

/// The revision a site's `/api/x` answers from.
fn revision_behind(p: &Pier, url: &str) -> String {
    let (s, b, _) = call(p, &[&format!("{url}/api/x")]);
    assert_eq!(s, 200, "{b}");
    let echo: serde_json::Value = serde_json::from_str(&b).unwrap();
    echo["revision"].as_str().unwrap().to_owned()
}

fn tags_of(p: &Pier, service: &str) -> Vec<String> {
    p.describe(service)["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["tag"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn pinned_rewrites_keep_the_revision_of_their_release() {
    let p = Pier::start(&[]);
    p.deploy_hello("api", &["--allow-unauthenticated"]);
    let first = p.describe("api")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    write(
        root,
        "firebase.json",
        r#"{"hosting": {"site": "shop", "public": "www", "rewrites": [{"source": "/api/**", "run": {"serviceId": "api", "pinTag": true}}]}}"#,
    );
    write(root, "www/index.html", "v1");
    let (url, _) = deploy(&p, root, &[]);
    assert_eq!(revision_behind(&p, &url), first);
    let suffix = first.strip_prefix("api-").unwrap();
    assert_eq!(tags_of(&p, "api"), vec![format!("fh-{suffix}")]);

    // A new revision of the service takes its traffic, not the site's.
    p.deploy_hello("api", &["--env", "GREETING=two"]);
    let second = p.describe("api")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first, second);
    assert_eq!(revision_behind(&p, &url), first);

    // The next release pins the new revision; the old tag goes with the last channel that needed it.
    write(root, "www/index.html", "v2");
    deploy(&p, root, &[]);
    assert_eq!(revision_behind(&p, &url), second);
    let second_suffix = second.strip_prefix("api-").unwrap();
    assert_eq!(tags_of(&p, "api"), vec![format!("fh-{second_suffix}")]);

    // A rollback brings the first revision back, tag and all.
    p.ok(&["hosting", "rollback", "--site", "shop"]);
    assert_eq!(revision_behind(&p, &url), first);
    assert_eq!(tags_of(&p, "api"), vec![format!("fh-{suffix}")]);
}

#[test]
fn deploying_a_site_acts_as_its_account_and_makes_it_public() {
    let p = Pier::start(&[]);
    p.deploy_hello("api", &[]);
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    write(root, "firebase.json", FIREBASE_JSON);
    write(root, "dist/index.html", "<h1>shop</h1>");
    let config = root.join("firebase.json");
    let config = config.to_str().unwrap();
    let dev = p.user("dev@example.com");
    p.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member",
        "user:dev@example.com",
        "--role",
        "roles/run.developer",
    ]);
    // A developer may not make something public...
    let e = dev.fails(&["hosting", "deploy", "--config", config]);
    assert!(e.contains("run.services.setIamPolicy"), "{e}");
    // ...nor, once the site exists, deploy rewrites that call services as its account.
    deploy(&p, root, &[]);
    let e = dev.fails(&["hosting", "deploy", "--config", config]);
    assert!(e.contains("iam.serviceAccounts.actAs"), "{e}");
    p.ok(&[
        "iam",
        "service-accounts",
        "add-iam-policy-binding",
        "compute@default.iam.pier.localhost",
        "--member",
        "user:dev@example.com",
        "--role",
        "roles/iam.serviceAccountUser",
    ]);
    dev.ok(&["hosting", "deploy", "--config", config]);
    // Viewers read; they do not deploy or delete.
    let viewer = p.user("viewer@example.com");
    p.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member",
        "user:viewer@example.com",
        "--role",
        "roles/run.viewer",
    ]);
    assert!(viewer.ok(&["hosting", "sites", "list"]).contains("shop"));
    let e = viewer.fails(&["hosting", "sites", "delete", "shop"]);
    assert!(e.contains("run.services.update"), "{e}");
    let e = viewer.fails(&["hosting", "rollback", "--site", "shop"]);
    assert!(e.contains("run.services.update"), "{e}");
    let releases = p.ok(&["hosting", "releases", "list", "--site", "shop"]);
    assert_eq!(
        releases.lines().count(),
        3,
        "header and two releases: {releases}"
    );
}

/// Drives headless Chromium with Selenium (offline: the driver and browser named, as the README says):
/// opens `url`, waits for the page's API call, follows a client-side link, and prints what the page
/// showed.
const SELENIUM: &str = r#"
import sys
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, profile = sys.argv[1], sys.argv[2]
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--user-data-dir=" + profile]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "api").text != "pending")
    print(driver.find_element(By.ID, "route").text)
    print(driver.find_element(By.ID, "api").text)
    driver.find_element(By.ID, "next").click()
    WebDriverWait(driver, 10).until(lambda d: "/cart/7" in d.find_element(By.ID, "route").text)
    print(driver.find_element(By.ID, "route").text + " " + driver.current_url)
finally:
    driver.quit()
"#;

#[test]
fn a_single_page_application_routes_and_calls_its_api_in_a_real_browser() {
    let p = Pier::start(&[]);
    p.deploy_hello("api", &[]);
    let_the_site_invoke(&p, "api");
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    write(root, "firebase.json", FIREBASE_JSON);
    write(
        root,
        "dist/index.html",
        r#"<!doctype html><html><head><title>shop</title><script src="/assets/app.3f9a.js"></script></head>
<body><p id="route">?</p><p id="api">pending</p><a id="next" href="/cart/7">cart</a></body></html>"#,
    );
    write(
        root,
        "dist/assets/app.3f9a.js",
        r#"window.addEventListener("DOMContentLoaded", async () => {
  const show = () => { document.getElementById("route").textContent = "route " + location.pathname; };
  show();
  document.getElementById("next").addEventListener("click", (ev) => {
    ev.preventDefault(); history.pushState({}, "", "/cart/7"); show();
  });
  try {
    const r = await fetch("/api/items?from=browser");
    const j = await r.json();
    document.getElementById("api").textContent = "api " + r.status + " " + j.service + " " + j.uri;
  } catch (e) { document.getElementById("api").textContent = "api failed " + e; }
});
"#,
    );
    let (url, _) = deploy(&p, root, &[]);
    let home = browser_home(&p);
    let out = std::process::Command::new("python3")
        .args(["-c", SELENIUM])
        .arg(format!("{url}/products/42"))
        .arg(home.path().join("profile"))
        .env("HOME", home.path())
        .env("SE_OFFLINE", "true")
        .output()
        .expect("python3 with selenium (scripts/install-test-deps installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "selenium failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "route /products/42", "{text}");
    assert_eq!(lines[1], "api 200 api /api/items?from=browser", "{text}");
    assert_eq!(lines[2], format!("route /cart/7 {url}/cart/7"), "{text}");
}

/// An app whose answers say how to cache them; it counts what reaches it (in a file of its own).
const CACHE_APP: &str = r#"
import http.server, os, time, threading
lock = threading.Lock()
count = {}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/api/count":
            body, cc = repr(sorted(count.items())).encode(), "no-store"
        else:
            with lock:
                count[path] = count.get(path, 0) + 1
                n = count[path]
            time.sleep(0.5 if path == "/api/cold" else 0)
            auth = self.headers.get("Authorization", "-")
            cc = {"/api/private": "max-age=60", "/api/cookie": "public, max-age=60", "/api/bare": None}.get(path, "public, max-age=60")
            body = f"{path} #{n} for {auth}".encode()
        self.send_response(200)
        if cc:
            self.send_header("Cache-Control", cc)
        if path == "/api/cookie":
            self.send_header("Set-Cookie", "s=1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

fn count_of(p: &Pier, url: &str, path: &str, auth: &[&str]) -> usize {
    let mut args: Vec<&str> = auth.to_vec();
    let u = format!("{url}/api/count");
    args.push(&u);
    let (_, b, _) = call(p, &args);
    b.split(&format!("('{path}', "))
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_edge_cache_keeps_what_rewrites_may_share_and_nothing_else() {
    let p = Pier::start(&["--scale-to-zero-grace", "1s"]);
    let app = tempfile::tempdir().unwrap();
    let script = app.path().join("app.py");
    std::fs::write(&script, CACHE_APP).unwrap();
    p.ok(&[
        "deploy",
        "api",
        "--command",
        &format!("exec python3 {}", script.display()),
    ]);
    let_the_site_invoke(&p, "api");
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    write(
        root,
        "firebase.json",
        r#"{"hosting": {"site": "shop", "public": "www", "rewrites": [{"source": "/api/**", "run": {"serviceId": "api"}}]}}"#,
    );
    write(root, "www/index.html", "shop");
    let (url, _) = deploy(&p, root, &[]);
    let count = |path: &str| -> usize {
        let (_, b, _) = call(&p, &[&format!("{url}/api/count")]);
        b.split(&format!("('{path}', "))
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };

    // A public answer: a miss, then hits that never reach the service.
    let (_, b, h) = call(&p, &[&format!("{url}/api/items")]);
    assert_eq!(header(&h, "x-cache"), Some("miss"), "{h}");
    assert!(b.starts_with("/api/items #1"), "{b}");
    let (_, b2, h) = call(&p, &[&format!("{url}/api/items")]);
    assert_eq!(header(&h, "x-cache"), Some("hit"));
    assert_eq!(b2, b);
    assert!(header(&h, "age").is_some());
    assert_eq!(count("/api/items"), 1);

    // Answers for one caller's credentials are never another's; Set-Cookie is never stored.
    let alice = call(
        &p,
        &[
            "-H",
            "Authorization: Bearer alice",
            &format!("{url}/api/private"),
        ],
    );
    let bob = call(
        &p,
        &[
            "-H",
            "Authorization: Bearer bob",
            &format!("{url}/api/private"),
        ],
    );
    assert!(
        alice.1.ends_with("for Bearer alice") && bob.1.ends_with("for Bearer bob"),
        "{alice:?} {bob:?}"
    );
    call(&p, &[&format!("{url}/api/cookie")]);
    let (_, _, h) = call(&p, &[&format!("{url}/api/cookie")]);
    assert_ne!(header(&h, "x-cache"), Some("hit"));
    assert_eq!(count("/api/cookie"), 2);

    // 100 concurrent requests for a cold key: one reaches the service.
    let cold = format!("{url}/api/cold");
    let mut args: Vec<&str> = vec!["-Z", "--parallel-max", "100", "-o", "/dev/null"];
    for _ in 0..100 {
        args.push(&cold);
    }
    let out = p.curl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count("/api/cold"), 1, "coalesced into one fetch");

    // Invalidation by path rule: the next request reaches the service again.
    p.ok(&["cache", "invalidate", "--site", "shop", "--path", "/api/*"]);
    let (_, b, h) = call(&p, &[&format!("{url}/api/items")]);
    assert_eq!(header(&h, "x-cache"), Some("miss"));
    assert!(b.starts_with("/api/items #2"), "{b}");
    let e = p.fails(&["cache", "invalidate", "--site", "shop", "--path", "api"]);
    assert!(e.contains("starting with /"), "{e}");

    // A hit on a service scaled to zero does not start an instance.
    eventually(30, "scale to zero", || {
        (instances(&p, "api") == 0).then_some(())
    });
    let (_, _, h) = call(&p, &[&format!("{url}/api/items")]);
    assert_eq!(header(&h, "x-cache"), Some("hit"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(instances(&p, "api"), 0, "a hit woke nothing");
}

#[test]
fn a_service_opts_into_the_edge_cache() {
    let p = Pier::start(&["--cache-size", "64Mi", "--cache-disk-size", "64Mi"]);
    let app = tempfile::tempdir().unwrap();
    let script = app.path().join("app.py");
    std::fs::write(&script, CACHE_APP).unwrap();
    let cmd = format!("exec python3 {}", script.display());
    let url = p.deploy_url(&[
        "deploy",
        "api",
        "--command",
        &cmd,
        "--allow-unauthenticated",
    ]);
    let get = |path: &str| call(&p, &[&format!("{url}{path}")]);
    let (_, _, h) = get("/api/items");
    assert_eq!(header(&h, "x-cache"), None, "off until asked for");
    p.ok(&["services", "update", "api", "--cache", "origin-headers"]);
    assert_eq!(p.describe("api")["cache"]["mode"], "origin-headers");
    assert_eq!(header(&get("/api/items").2, "x-cache"), Some("miss"));
    assert_eq!(header(&get("/api/items").2, "x-cache"), Some("hit"));
    get("/api/bare");
    assert_eq!(
        header(&get("/api/bare").2, "x-cache"),
        Some("bypass"),
        "no headers: not kept"
    );
    // `force` keeps answers that say nothing.
    p.ok(&[
        "services",
        "update",
        "api",
        "--cache",
        "force",
        "--cache-default-ttl",
        "60s",
    ]);
    assert_eq!(
        header(&get("/api/items").2, "x-cache"),
        Some("miss"),
        "a new setting starts empty"
    );
    assert_eq!(header(&get("/api/bare").2, "x-cache"), Some("miss"));
    assert_eq!(header(&get("/api/bare").2, "x-cache"), Some("hit"));
    assert_eq!(count_of(&p, &url, "/api/bare", &[]), 3);
    p.ok(&[
        "cache",
        "invalidate",
        "--service",
        "api",
        "--path",
        "/api/bare",
    ]);
    assert_eq!(header(&get("/api/bare").2, "x-cache"), Some("miss"));
    assert_eq!(
        header(&get("/api/items").2, "x-cache"),
        Some("hit"),
        "an exact path drops only itself"
    );
    p.ok(&["services", "update", "api", "--cache", "off"]);
    assert_eq!(header(&get("/api/items").2, "x-cache"), None);

    // A private service: every caller still passes the guard, and one caller's answer is never
    // another's unless the app said public.
    let priv_url = p.deploy_url(&[
        "deploy",
        "priv",
        "--command",
        &cmd,
        "--cache",
        "origin-headers",
    ]);
    let bob = p.user("bob@example.com");
    p.ok(&[
        "services",
        "add-iam-policy-binding",
        "priv",
        "--member",
        "user:bob@example.com",
        "--role",
        "roles/run.invoker",
    ]);
    let owner = format!("Authorization: Bearer {}", p.token());
    let bobs = format!("Authorization: Bearer {}", bob.token());
    let (s, _, _) = call(&p, &[&format!("{priv_url}/api/items")]);
    assert_eq!(s, 403, "no token, no answer, cached or not");
    let (_, a, h) = call(&p, &["-H", &owner, &format!("{priv_url}/api/items")]);
    assert_eq!(header(&h, "x-cache"), Some("miss"));
    let (_, b, h) = call(&p, &["-H", &bobs, &format!("{priv_url}/api/items")]);
    assert_eq!(header(&h, "x-cache"), Some("hit"), "the app said public");
    assert_eq!(a, b);
    let (_, a, _) = call(&p, &["-H", &owner, &format!("{priv_url}/api/private")]);
    let (_, b, h) = call(&p, &["-H", &bobs, &format!("{priv_url}/api/private")]);
    assert_ne!(header(&h, "x-cache"), Some("hit"));
    assert_ne!(a, b, "each caller's own answer");
}
