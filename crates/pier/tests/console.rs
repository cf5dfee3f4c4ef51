//! The web console in a real browser: headless Chromium driven by Selenium (offline, Debian's
//! chromium and chromedriver), trusting Pier's CA in its own NSS database as a user would.
//!
//! A user with run.admin signs in at Pier's own sign-in page (a wrong password first), sees the service
//! she deployed with the CLI in the list (ready, its URL, deployed by her), opens it, splits traffic
//! 50/50 and tags a revision with the traffic form (curl then sees both revisions answer the service URL,
//! and the tagged one its tag URL), watches a request's log line arrive while the page stays open, sees
//! the charts drawn, grants and revokes an invoker, deploys a third revision from the page and follows
//! its phases to the end, and signs out. Then a viewer, in a fresh browser profile, opens the same page,
//! is refused a traffic change with the API's reason, and the traffic stays as it was.
//!
//! The browser runs one Python script (`BROWSER`) that takes one JSON command a line on stdin and
//! answers one JSON line each, so the checks, curl's included, stay here between the steps while the
//! page stays open. On any failure the browser's screenshots and page sources are in
//! `target/tmp/console-screenshots` (the assertion messages say where).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// Where the browser leaves its screenshots and page sources.
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// `assert!`, saying where the browser's screenshots are.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        assert!(
            $cond,
            "{}\n(the browser's screenshots and page sources: {})",
            format_args!($($msg)+),
            screenshots().display()
        )
    };
}

#[test]
fn a_user_runs_a_service_from_the_console_and_a_viewer_only_looks() {
    let shots = screenshots();
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();

    let p = Pier::start(&[]);
    let base = console_url(&p);
    let domain = p.api_get("/v1/info")["domain"].as_str().unwrap().to_owned();

    // Alice administers project default and may run revisions as its service account; Bob only looks.
    let alice = p.user(ALICE);
    p.user(BOB);
    grant_on_project(&p, ALICE, "roles/run.admin");
    p.ok(&[
        "iam",
        "service-accounts",
        "add-iam-policy-binding",
        &format!("compute@default.iam.{domain}"),
        &format!("--member=user:{ALICE}"),
        "--role=roles/iam.serviceAccountUser",
    ]);
    grant_on_project(&p, BOB, "roles/run.viewer");

    // Two revisions, deployed by Alice with the CLI, public so that curl needs no token. The app is a
    // copy in a folder every user's instances can see (not the build's own target folder).
    let app = visible_dir();
    let hello = visible_hello(app.path());
    let hello = hello.to_str().unwrap();
    let workdir = app.path().to_str().unwrap();
    let deploy = |greeting: &str| {
        service_url(&alice.ok(&[
            "deploy",
            "web",
            "--command",
            hello,
            "--workdir",
            workdir,
            "--env",
            &format!("GREETING={greeting}"),
            "--allow-unauthenticated",
        ]))
    };
    let url = deploy("one");
    let v1 = latest(&p);
    deploy("two");
    let v2 = latest(&p);
    check!(v1 != v2, "the second deploy made a new revision: {v1}");

    // ---- Alice, in the browser.
    let home = browser_home(&p);
    let mut b = Browser::open(&base, home.path(), "alice");

    // Signing in: /console sends her to Pier's sign-in page, which refuses a wrong password.
    let r = b.run(
        "signin",
        json!({"email": ALICE, "password": "wrong horse battery staple"}),
    );
    check!(
        r["signin_page"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{base}/authorize?"))),
        "/console sends a browser that is not signed in to Pier's sign-in page: {r}"
    );
    check!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("wrong email or password")),
        "a wrong password is refused on the page: {r}"
    );
    let r = b.run("signin", json!({"email": ALICE, "password": PASSWORD}));
    check!(
        r["error"].is_null() && r["url"] == format!("{base}/console/projects/default/services"),
        "signed in, she lands on the services of project default: {r}"
    );

    // The list shows her service: ready, its URL, deployed by her, a link to its page.
    let rows = b.run("services", json!({}));
    let web = rows
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "web"))
        .cloned()
        .unwrap_or(Value::Null);
    check!(web["status"] == "Ready", "web is ready in the list: {rows}");
    check!(web["url"] == url.as_str(), "its URL, {url}: {web}");
    check!(
        web["deployed"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("by {ALICE}"))),
        "who deployed its latest revision: {web}"
    );
    let page_url = format!("{base}/console/projects/default/services/web");
    check!(
        web["links"]
            .as_array()
            .is_some_and(|l| l.iter().any(|h| *h == page_url)),
        "a link to {page_url}: {web}"
    );

    // The service's page: both revisions, the second serving everything, the public binding.
    let page = b.run("open_service", json!({"name": "web"}));
    check!(
        page["service"] == "web" && page["url"] == page_url,
        "the service page: {page}"
    );
    check!(
        page["revisions"][v1.as_str()].is_object() && page["revisions"][v2.as_str()].is_object(),
        "both revisions, {v1} and {v2}, are listed: {page}"
    );
    check!(
        page["revisions"][v2.as_str()]["traffic"] == "100%"
            && page["percents"][v2.as_str()] == "100",
        "{v2} serves 100%, and the traffic form says so: {page}"
    );
    check!(
        has_binding(&page, "allUsers", "roles/run.invoker"),
        "the public service's invoker binding: {page}"
    );

    // Split 50/50 and tag the second revision, from the traffic form.
    let page = b.run(
        "set_traffic",
        json!({
            "percents": {v1.as_str(): 50, v2.as_str(): 50},
            "tags": {v2.as_str(): "green"},
        }),
    );
    check!(message_is(&page, "ok"), "the split is saved: {page}");
    for v in [&v1, &v2] {
        check!(
            page["revisions"][v.as_str()]["traffic"] == "50%",
            "{v} serves 50% on the reloaded page: {page}"
        );
    }
    check!(
        page["revisions"][v2.as_str()]["tags"]
            .as_str()
            .is_some_and(|t| t.contains("green")),
        "{v2} is tagged green: {page}"
    );
    // The API has it, and requests follow it.
    let want: BTreeMap<String, u64> = BTreeMap::from([(v1.clone(), 50), (v2.clone(), 50)]);
    check!(
        split(&p) == want,
        "the CLI shows the split: {:?}",
        split(&p)
    );
    let mut answered: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        *answered.entry(revision_at(&p, &url)).or_default() += 1;
    }
    check!(
        answered.get(&v1).is_some_and(|n| *n >= 5) && answered.get(&v2).is_some_and(|n| *n >= 5),
        "both revisions answer the service URL: {answered:?}"
    );
    let green = tag_url(&p, "green");
    check!(
        revision_at(&p, &green) == v2,
        "the tag URL {green} reaches {v2}"
    );

    // Live logs: with the page open (and not reloaded), a new request's line arrives. The request is
    // sent again every half second until it does, so the test does not depend on when the page's
    // stream connects.
    b.run("mark", json!({}));
    let path = format!("/live-check-{}", std::process::id());
    let stop = AtomicBool::new(false);
    let seen = std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..30 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                p.curl(&["-o", "/dev/null", &format!("{url}{path}")]);
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        let seen = b.run("wait_log", json!({"text": path}));
        stop.store(true, Ordering::Relaxed);
        seen
    });
    check!(
        seen["line"]
            .as_str()
            .is_some_and(|l| l.contains("GET") && l.contains(&path)),
        "the request's log line: {seen}"
    );
    check!(
        seen["same_page"] == true,
        "the line arrived while the page stayed open, not with a reload: {seen}"
    );

    // The charts are drawn, now that there is traffic.
    let charts = b.run("charts", json!({}));
    for chart in ["chart-requests", "chart-latency", "chart-instances"] {
        let drawn = (0..2usize).all(|i| charts[chart][i].as_f64().is_some_and(|n| n > 0.0));
        check!(drawn, "#{chart} holds a canvas with a size: {charts}");
    }

    // IAM: grant Bob the invoker role from the page, then revoke it.
    let bob = format!("user:{BOB}");
    let page = b.run("grant", json!({"member": bob}));
    check!(
        has_binding(&page, &bob, "roles/run.invoker"),
        "the page lists the new binding: {page}"
    );
    check!(
        invokers(&p).contains(&bob),
        "the service's policy has it: {:?}",
        invokers(&p)
    );
    let page = b.run(
        "revoke",
        json!({"member": bob, "role": "roles/run.invoker"}),
    );
    check!(
        !has_binding(&page, &bob, "roles/run.invoker")
            && has_binding(&page, "allUsers", "roles/run.invoker"),
        "only Bob's binding is gone: {page}"
    );
    check!(
        !invokers(&p).contains(&bob),
        "the service's policy lost it: {:?}",
        invokers(&p)
    );

    // Deploy from the page, and follow the operation's phases to the end.
    let op = b.run("deploy", json!({"image": "", "command": hello}));
    check!(op["done"] == "Done", "the deploy ends well: {op}");
    let phases: Vec<(&str, &str)> = op["phases"]
        .as_array()
        .map(|ph| {
            ph.iter()
                .map(|x| (x[0].as_str().unwrap_or(""), x[1].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    check!(
        !phases.is_empty() && phases.iter().all(|(_, state)| *state == "done"),
        "every phase is done: {op}"
    );
    let names = phases
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(" / ");
    check!(
        in_sequence(
            &names,
            &["Starting the instance", "Probing", "Routing traffic"]
        ),
        "the deploy's phases, in order: {op}"
    );
    let revisions = revisions(&p);
    let v3 = latest(&p);
    check!(
        revisions.len() == 3 && v3 != v1 && v3 != v2,
        "a third revision, {v3}: {revisions:?}"
    );
    let creator = revisions
        .iter()
        .find(|r| r["name"] == v3.as_str())
        .map(|r| r["creator"].clone())
        .unwrap_or(Value::Null);
    check!(
        creator == format!("user:{ALICE}"),
        "the console deploys as the signed-in user: {creator}"
    );

    // Signing out: the console asks to sign in again.
    let r = b.run("signout", json!({}));
    check!(
        r["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{base}/authorize?"))),
        "after signing out, the console sends the browser to the sign-in page: {r}"
    );
    drop(b);

    // ---- Bob, a viewer, in a browser profile of his own.
    let before = p.describe("web")["traffic"].clone();
    let mut b = Browser::open(&base, home.path(), "bob");
    let r = b.run("signin", json!({"email": BOB, "password": PASSWORD}));
    check!(
        r["error"].is_null() && r["url"] == format!("{base}/console/projects/default/services"),
        "the viewer signs in: {r}"
    );
    let page = b.run("open_service", json!({"name": "web"}));
    check!(
        page["service"] == "web" && page["revisions"].as_object().is_some_and(|r| r.len() == 3),
        "the viewer sees the service and its three revisions: {page}"
    );
    check!(
        page["logs_refused"]
            .as_str()
            .is_some_and(|t| t.contains("lacks permission")),
        "the viewer is told why the logs are not shown (a viewer may not read them): {page}"
    );
    let page = b.run(
        "set_traffic",
        json!({
            "percents": {v1.as_str(): 100, v2.as_str(): 0, v3.as_str(): 0},
            "tags": {},
        }),
    );
    check!(
        message_is(&page, "error")
            && page["message"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("lacks permission")),
        "the viewer is refused with the API's reason: {page}"
    );
    let after = p.describe("web")["traffic"].clone();
    check!(
        after == before,
        "the traffic is unchanged: {before} then {after}"
    );
}

/// Where the console is: Pier's own origin, which issues its tokens (`https://pier.localhost:PORT`).
fn console_url(p: &Pier) -> String {
    let out = p
        .command("curl")
        .args(["-sS", "--fail"])
        .arg(format!("{}/.well-known/openid-configuration", p.api_url))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "discovery: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["issuer"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

fn grant_on_project(p: &Pier, email: &str, role: &str) {
    p.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        &format!("--member=user:{email}"),
        &format!("--role={role}"),
    ]);
}

/// The latest ready revision of `web`.
fn latest(p: &Pier) -> String {
    p.describe("web")["latestReadyRevision"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `web`'s revisions, as `pier revisions list` shows them.
fn revisions(p: &Pier) -> Vec<Value> {
    let out = p.ok(&["revisions", "list", "--service", "web", "--format", "json"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The share of `web`'s URL each revision serves, as the CLI shows it (revisions serving none left out).
fn split(p: &Pier) -> BTreeMap<String, u64> {
    let mut shares = BTreeMap::new();
    for t in p.describe("web")["traffic"].as_array().unwrap() {
        let percent = t["percent"].as_u64().unwrap_or(0);
        if percent > 0 {
            let rev = t["revisionName"].as_str().unwrap_or("?").to_owned();
            *shares.entry(rev).or_default() += percent;
        }
    }
    shares
}

/// The URL of `web`'s tag `tag`.
fn tag_url(p: &Pier, tag: &str) -> String {
    let svc = p.describe("web");
    svc["traffic"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["tag"] == tag))
        .and_then(|t| t["url"].as_str())
        .unwrap_or_else(|| panic!("no URL for tag {tag}: {svc}"))
        .to_owned()
}

/// The revision that answered a GET of `url` (pier-hello echoes its `K_REVISION`).
fn revision_at(p: &Pier, url: &str) -> String {
    let out = p.curl(&["--fail", url]);
    check!(
        out.status.success(),
        "GET {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    echo["revision"].as_str().unwrap_or_default().to_owned()
}

/// The members `web`'s policy grants roles/run.invoker.
fn invokers(p: &Pier) -> Vec<String> {
    let policy: Value =
        serde_json::from_str(&p.ok(&["services", "get-iam-policy", "web", "--format", "json"]))
            .unwrap();
    let mut members = Vec::new();
    for b in policy["bindings"].as_array().into_iter().flatten() {
        if b["role"] == "roles/run.invoker" {
            for m in b["members"].as_array().into_iter().flatten() {
                members.extend(m.as_str().map(str::to_owned));
            }
        }
    }
    members
}

/// Whether a service page (as the script reports it) lists `member` with `role` in its IAM table.
fn has_binding(page: &Value, member: &str, role: &str) -> bool {
    page["iam"]
        .as_array()
        .is_some_and(|rows| rows.iter().any(|r| r[0] == member && r[1] == role))
}

/// Whether a page's `#message` has class `class` (`ok` or `error`).
fn message_is(page: &Value, class: &str) -> bool {
    page["message"]["class"]
        .as_str()
        .is_some_and(|c| c.split_whitespace().any(|c| c == class))
}

/// Whether `text` holds each of `parts`, in that order.
fn in_sequence(text: &str, parts: &[&str]) -> bool {
    let mut rest = text;
    parts.iter().all(|part| match rest.find(part) {
        Some(i) => {
            rest = &rest[i + part.len()..];
            true
        }
        None => false,
    })
}

/// One headless Chromium, driven by the `BROWSER` script: one JSON command a line in, one JSON answer
/// a line out. Dropping it closes the script's stdin, and the script closes the browser.
struct Browser {
    who: String,
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<String>,
    /// The script's standard error (Python's tracebacks, Selenium's warnings).
    log: PathBuf,
    /// Whether a failure was already reported (with its screenshot).
    failed: bool,
}

impl Browser {
    /// A browser for `who` (which names its profile and its screenshots), trusting Pier's CA from
    /// `home` (see `browser_home`), opening pages under `base`.
    fn open(base: &str, home: &Path, who: &str) -> Browser {
        let log = screenshots().join(format!("{who}-script.log"));
        let mut child = Command::new("python3")
            .args(["-u", "-c", BROWSER])
            .arg(base)
            .arg(home.join(format!("profile-{who}")))
            .arg(screenshots())
            .arg(who)
            .env("HOME", home)
            .env("SE_OFFLINE", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 with selenium (scripts/install-test-deps installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, replies) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut b = Browser {
            who: who.to_owned(),
            stdin: child.stdin.take(),
            child,
            replies,
            log,
            failed: false,
        };
        let ready = b.reply("starting the browser", Duration::from_secs(60));
        if ready["ok"] != true {
            b.failed = true;
            panic!(
                "console ({who}): the browser did not start: {ready}{}",
                b.context()
            );
        }
        b
    }

    /// Runs one command of the script (`do` is `what`, the rest `args`) and returns its result; panics
    /// with the page's URL, text, source and screenshot when it fails.
    fn run(&mut self, what: &str, args: Value) -> Value {
        let mut command = args;
        command["do"] = json!(what);
        let sent = self
            .stdin
            .as_mut()
            .map(|s| writeln!(s, "{command}").and_then(|()| s.flush()));
        if !matches!(sent, Some(Ok(()))) {
            self.failed = true;
            panic!(
                "console ({}): could not send `{what}`: the script is gone{}",
                self.who,
                self.context()
            );
        }
        let reply = self.reply(what, Duration::from_secs(120));
        if reply["ok"] != true {
            self.failed = true;
            let s = |k: &str| reply[k].as_str().unwrap_or("").to_owned();
            panic!(
                "console ({}): `{what}` failed: {}\npage: {}\nscreenshot: {}\npage text:\n{}\n\
                 page source (start):\n{}\n{}{}",
                self.who,
                s("error"),
                s("url"),
                s("screenshot"),
                s("text"),
                s("source"),
                s("trace"),
                self.context()
            );
        }
        reply["result"].clone()
    }

    /// The script's next JSON line (anything else it prints is skipped).
    fn reply(&mut self, what: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.replies.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.failed = true;
                    panic!(
                        "console ({}): no answer to `{what}` in {timeout:?}{}",
                        self.who,
                        self.context()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.failed = true;
                    panic!(
                        "console ({}): the browser script ended during `{what}`{}",
                        self.who,
                        self.context()
                    );
                }
            }
        }
    }

    /// Where to look: the screenshots, and the end of the script's log.
    fn context(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "\nthe browser's screenshots and page sources: {}\nthe script's log ({}):\n{tail}",
            screenshots().display(),
            self.log.display()
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A check on this side failed while the browser was open: keep what it showed.
        let shot = json!({"do": "screenshot", "name": "at-failure"});
        if std::thread::panicking()
            && !self.failed
            && let Some(stdin) = self.stdin.as_mut()
            && writeln!(stdin, "{shot}")
                .and_then(|()| stdin.flush())
                .is_ok()
        {
            let _ = self.replies.recv_timeout(Duration::from_secs(20));
        }
        // End of input: the script quits the browser and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drives headless Chromium with Selenium, offline (the browser and its driver named), for
/// `python3 -c BROWSER BASE_URL PROFILE_DIR SCREENSHOT_DIR WHO`. Reads one JSON command a line
/// (`{"do": NAME, ...arguments}`), answers one JSON line: `{"ok": true, "result": ...}`, or
/// `{"ok": false, "error", "url", "screenshot", "text", "source", "trace"}` after saving a screenshot
/// and the page's source in SCREENSHOT_DIR. Its first line, `{"ok": true, "result": "ready"}`, says
/// the browser is up.
const BROWSER: &str = include_str!("browser/console.py");
