//! The token and revocation endpoints against the standards, each MUST a check: RFC 6749 (the token
//! endpoint), RFC 7523 (JWT-bearer assertions) and RFC 7009 (revocation). Requests go over plain HTTP
//! with curl to the admin listener, where the CLI sends them; assertions are signed with a real Pier key
//! file by google-auth's own signer.
//!
//! The authorization endpoint (`/authorize`) and the `authorization_code` grant, with PKCE, are checked
//! the same way (RFC 6749 §4.1, RFC 7636), as the console (client `pier-console`) uses them: see the
//! section at the end of this file.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;

/// A curl call: status, headers (lowercased), body; curl follows no redirect.
struct Answer {
    status: u16,
    headers: String,
    body: serde_json::Value,
    /// The body as text (the HTML pages of `/authorize`).
    text: String,
    /// The `Location` header, as sent.
    location: Option<String>,
}

fn call(
    pier: &Pier,
    method: &str,
    path: &str,
    form: &[&str],
    content_type: Option<&str>,
) -> Answer {
    let headers = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-D"])
        .arg(headers.path())
        .args(["-o", "-", "-w", "\n%{http_code}"]);
    if let Some(t) = content_type {
        cmd.args(["-H", &format!("Content-Type: {t}")]);
    }
    for f in form {
        cmd.args(["--data-raw", f]);
    }
    let out = cmd.arg(format!("{}{path}", pier.api_url)).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    let raw_headers = std::fs::read_to_string(headers.path()).unwrap();
    let location = raw_headers.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    });
    Answer {
        status: status.trim().parse().unwrap(),
        headers: raw_headers.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        text: body.to_owned(),
        location,
    }
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

fn post(pier: &Pier, path: &str, form: &[&str]) -> Answer {
    call(pier, "POST", path, form, FORM)
}

fn assert_oauth_error(a: &Answer, status: u16, error: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert_eq!(a.body["error"], error, "{what}: {}", a.body);
    assert!(
        a.body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{what}"
    );
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_token_endpoint_follows_rfc_6749() {
    let pier = Pier::start(&[]);
    let password = std::fs::read_to_string(pier.dir.join("owner-password")).unwrap();
    let user = "username=owner%40pier.localhost";
    let pass = format!("password={}", encode(password.trim()));

    // §3.2: the client MUST use POST.
    assert_eq!(call(&pier, "GET", "/token", &[], None).status, 405);
    // §3.2 and Appendix B: form-encoded parameters.
    let a = call(
        &pier,
        "POST",
        "/token",
        &["{\"grant_type\":\"password\"}"],
        Some("application/json"),
    );
    assert_oauth_error(&a, 400, "invalid_request", "a JSON body");
    // §3.1: parameters MUST NOT be included more than once.
    let a = post(
        &pier,
        "/token",
        &["grant_type=password", user, &pass, "grant_type=password"],
    );
    assert_oauth_error(&a, 400, "invalid_request", "a repeated parameter");
    assert!(
        a.body["error_description"]
            .as_str()
            .unwrap()
            .contains("more than once")
    );
    // §3.2: parameters sent without a value MUST be treated as omitted.
    let a = post(&pier, "/token", &["grant_type=password", user, "password="]);
    assert_oauth_error(&a, 400, "invalid_request", "an empty password");
    // §5.2: an unknown grant type.
    let a = post(&pier, "/token", &["grant_type=client_credentials"]);
    assert_oauth_error(&a, 400, "unsupported_grant_type", "client_credentials");
    // §5.2: wrong credentials are invalid_grant; errors are not cached either.
    let a = post(
        &pier,
        "/token",
        &["grant_type=password", user, "password=wrong"],
    );
    assert_oauth_error(&a, 400, "invalid_grant", "a wrong password");
    assert!(
        a.headers.contains("cache-control: no-store"),
        "{}",
        a.headers
    );
    // §5.1: a token answer is JSON with token_type and expires_in, and MUST carry Cache-Control:
    // no-store and Pragma: no-cache.
    let a = post(&pier, "/token", &["grant_type=password", user, &pass]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.headers.contains("content-type: application/json"),
        "{}",
        a.headers
    );
    assert!(
        a.headers.contains("cache-control: no-store"),
        "{}",
        a.headers
    );
    assert!(a.headers.contains("pragma: no-cache"), "{}", a.headers);
    assert_eq!(a.body["token_type"], "Bearer");
    assert!(a.body["expires_in"].as_u64().is_some_and(|s| s > 0));
    let refresh = a.body["refresh_token"].as_str().unwrap().to_owned();
    // §6: the refresh grant.
    let a = post(
        &pier,
        "/token",
        &[
            "grant_type=refresh_token",
            &format!("refresh_token={}", encode(&refresh)),
        ],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.headers.contains("pragma: no-cache"), "{}", a.headers);

    // RFC 7009 §2.1: revocation is POST with `token`.
    assert_eq!(call(&pier, "GET", "/revoke", &[], None).status, 405);
    let a = post(&pier, "/revoke", &[]);
    assert_oauth_error(&a, 400, "invalid_request", "revocation without a token");
    // §2.2: 200 for an invalid token too.
    assert_eq!(post(&pier, "/revoke", &["token=not-a-token"]).status, 200);
    let revoke = format!("token={}", encode(&refresh));
    assert_eq!(post(&pier, "/revoke", &[&revoke]).status, 200);
    // Revoked: the refresh token no longer works, and revoking again is still 200.
    let a = post(
        &pier,
        "/token",
        &[
            "grant_type=refresh_token",
            &format!("refresh_token={}", encode(&refresh)),
        ],
    );
    assert_oauth_error(&a, 400, "invalid_grant", "a revoked refresh token");
    assert_eq!(post(&pier, "/revoke", &[&revoke]).status, 200);
}

/// Signs `claims` (JSON) with the key in `key_file`, with google-auth's RSA signer (header `kid` is the
/// key's id), or with `alg` overridden to make a bad token.
fn sign(key_file: &std::path::Path, claims: &serde_json::Value) -> String {
    let script = r#"
import json, sys
from google.auth import crypt, jwt
info = json.load(open(sys.argv[1]))
signer = crypt.RSASigner.from_service_account_info(info)
print(jwt.encode(signer, json.loads(sys.argv[2])).decode())
"#;
    let claims = claims.to_string();
    python(script, [key_file.to_str().unwrap(), &claims])
        .trim()
        .to_owned()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn jwt_bearer_assertions_follow_rfc_7523() {
    let pier = Pier::start(&[]);
    let mut keys = Vec::new();
    for name in ["caller", "another"] {
        pier.ok(&["iam", "service-accounts", "create", name]);
        let key = pier.dir.join(format!("{name}.json"));
        pier.ok(&[
            "iam",
            "service-accounts",
            "keys",
            "create",
            key.to_str().unwrap(),
            "--iam-account",
            &format!("{name}@default.iam.pier.localhost"),
        ]);
        keys.push(key);
    }
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&keys[0]).unwrap()).unwrap();
    let token_uri = info["token_uri"].as_str().unwrap().to_owned();
    let email = info["client_email"].as_str().unwrap().to_owned();
    let grant = |assertion: &str| {
        post(
            &pier,
            "/token",
            &[
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
                &format!("assertion={assertion}"),
            ],
        )
    };
    let t = now();
    let good = serde_json::json!({
        "iss": email, "sub": email, "aud": token_uri, "iat": t, "exp": t + 600,
        "target_audience": "https://api.example",
    });

    // §2.1 and §3: a valid assertion is exchanged.
    let a = grant(&sign(&keys[0], &good));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["id_token"].is_string(), "{}", a.body);
    assert!(a.headers.contains("pragma: no-cache"), "{}", a.headers);

    let bad = |what: &str, claims: serde_json::Value, key: &std::path::Path| {
        let a = grant(&sign(key, &claims));
        assert_oauth_error(&a, 400, "invalid_grant", what);
    };
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    // §3 item 4: expired (beyond the leeway).
    bad("expired", with("exp", (t - 600).into()), &keys[0]);
    // §3 item 5: not before a time in the future.
    bad("nbf in the future", with("nbf", (t + 600).into()), &keys[0]);
    // §3 item 3: aud MUST identify this authorization server.
    bad(
        "another audience",
        with("aud", "https://elsewhere.example/token".into()),
        &keys[0],
    );
    // §3 item 1 and §3 item 9: iss is the key's owner; the signature is checked against that key.
    bad(
        "iss of another account",
        with("iss", "another@default.iam.pier.localhost".into()),
        &keys[0],
    );
    bad("signed by another account's key", good.clone(), &keys[1]);
    // §3 item 2: a sub, when present, names the same principal.
    bad(
        "sub of another account",
        with("sub", "another@default.iam.pier.localhost".into()),
        &keys[0],
    );
    // §3 item 6: a lifetime no longer than an hour (Pier's own limit on assertions).
    bad(
        "a day-long assertion",
        with("exp", (t + 86_400).into()),
        &keys[0],
    );
    // A tampered payload fails the signature.
    let signed = sign(&keys[0], &good);
    let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
    parts[1] = sign(
        &keys[0],
        &with("target_audience", "https://evil.example".into()),
    )
    .split('.')
    .nth(1)
    .unwrap()
    .to_owned();
    parts[2] = signed.split('.').nth(2).unwrap().to_owned();
    let a = grant(&parts.join("."));
    assert_oauth_error(&a, 400, "invalid_grant", "a tampered payload");
    // §2.1: exactly one assertion.
    let one = sign(&keys[0], &good);
    let a = post(
        &pier,
        "/token",
        &[
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
            &format!("assertion={one}"),
            &format!("assertion={one}"),
        ],
    );
    assert_oauth_error(&a, 400, "invalid_request", "two assertions");
    // The missing assertion.
    let a = post(
        &pier,
        "/token",
        &["grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"],
    );
    assert_oauth_error(&a, 400, "invalid_request", "no assertion");
}

/// Password guessing is throttled per account, the same for accounts that exist and ones that do not,
/// and a good password after the wait works again.
#[test]
fn password_guessing_is_throttled_per_account() {
    let pier = Pier::start(&[]);
    let password = std::fs::read_to_string(pier.dir.join("owner-password")).unwrap();
    let good = format!("password={}", encode(password.trim()));
    for user in ["owner%40pier.localhost", "nobody%40example.com"] {
        let who = format!("username={user}");
        for _ in 0..5 {
            let a = post(
                &pier,
                "/token",
                &["grant_type=password", &who, "password=wrong-guess"],
            );
            assert_oauth_error(&a, 400, "invalid_grant", "a wrong password");
            assert!(
                a.body["error_description"]
                    .as_str()
                    .unwrap()
                    .contains("wrong email or password")
            );
        }
        // Even the right password waits now, unchecked.
        let a = post(&pier, "/token", &["grant_type=password", &who, &good]);
        assert_oauth_error(&a, 400, "invalid_grant", "while throttled");
        assert!(
            a.body["error_description"]
                .as_str()
                .unwrap()
                .contains("too many wrong passwords"),
            "{}",
            a.body
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let a = post(
        &pier,
        "/token",
        &[
            "grant_type=password",
            "username=owner%40pier.localhost",
            &good,
        ],
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

// ----- The authorization code grant -----
//
// `/authorize` (RFC 6749 §3.1 and §4.1.1-§4.1.2.1, §10.13) and `grant_type=authorization_code` at
// `/token` (§4.1.3-§4.1.4, §4.1.2's single use), with PKCE S256 required (RFC 7636 §4.4.1, §4.6), for
// `pier-console`, the one registered client: a public one whose one redirect URI is
// ISSUER/console/callback.

/// The one registered client.
const CLIENT: &str = "pier-console";
/// The password [`Pier::user`] gives its users.
const PASSWORD: &str = "correct horse battery staple";
/// RFC 7636 Appendix B's verifier: the test checks its own S256 against the RFC's challenge.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// A well-formed verifier that is not the one the challenge was made from.
const OTHER_VERIFIER: &str = "another-code-verifier-that-is-not-the-right-one";
/// A state that only survives exact URL- and HTML-encoding.
const STATE: &str = r#"xyz 1&2=3/+"<é>"#;

/// `BASE64URL(SHA256(verifier))` without padding (RFC 7636 §4.2).
fn s256(verifier: &str) -> String {
    use aws_lc_rs::digest::{SHA256, digest};
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

/// `k=v&...`, form-encoded; a pair may repeat.
fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `base` with `key` set to `value` (added when absent), or without it when `value` is None.
fn set<'a>(
    base: &[(&'a str, &'a str)],
    key: &'a str,
    value: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<_> = base.iter().copied().filter(|(k, _)| *k != key).collect();
    out.extend(value.map(|v| (key, v)));
    out
}

/// `base` and then `more`: a parameter sent twice.
fn twice<'a>(base: &[(&'a str, &'a str)], more: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    let mut out = base.to_vec();
    out.push(more);
    out
}

fn authorize_get(pier: &Pier, params: &[(&str, &str)]) -> Answer {
    let path = format!("/authorize?{}", query_string(params));
    call(pier, "GET", &path, &[], None)
}

fn authorize_post(pier: &Pier, params: &[(&str, &str)]) -> Answer {
    post(pier, "/authorize", &[&query_string(params)])
}

/// The start tags of an HTML page with their attributes (values unescaped, `tag` the tag's name), by
/// Python's HTML parser.
fn html_tags(html: &str) -> Vec<serde_json::Value> {
    let script = r#"
import html.parser, json, sys
class P(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
    def handle_starttag(self, tag, attrs):
        self.tags.append(dict(attrs, tag=tag))
p = P()
p.feed(sys.argv[1])
p.close()
print(json.dumps(p.tags))
"#;
    serde_json::from_str(&python(script, [html])).unwrap()
}

/// RFC 6749 §10.13 (clickjacking): no page of the authorization endpoint may be framed; and none is
/// cached, as they carry the request's parameters and, redirected, a code (§10.5).
fn assert_authorize_headers(a: &Answer, what: &str) {
    assert!(
        a.headers.contains("x-frame-options: deny"),
        "RFC 6749 §10.13: {what}: X-Frame-Options: DENY in\n{}",
        a.headers
    );
    assert!(
        a.headers
            .lines()
            .any(|l| l.starts_with("content-security-policy:")
                && l.contains("frame-ancestors 'none'")),
        "RFC 6749 §10.13: {what}: a Content-Security-Policy with frame-ancestors 'none' in\n{}",
        a.headers
    );
    assert!(
        a.headers.contains("cache-control: no-store"),
        "RFC 6749 §10.5: {what}: Cache-Control: no-store in\n{}",
        a.headers
    );
}

/// RFC 6749 §4.1.2.1 and §3.1.2.4: an error that leaves the redirect URI untrusted is told to the
/// user, an HTML page, and never redirected.
fn assert_told_to_the_user(a: &Answer, what: &str) {
    assert_eq!(
        a.status, 400,
        "RFC 6749 §4.1.2.1: {what}: 400 to the user, not a redirect: {:?} {}",
        a.location, a.text
    );
    assert_eq!(
        a.location, None,
        "RFC 6749 §4.1.2.1 (MUST NOT automatically redirect): {what}"
    );
    assert!(
        a.headers.contains("content-type: text/html"),
        "RFC 6749 §4.1.2.1 (inform the resource owner): {what}: an HTML page:\n{}",
        a.headers
    );
    assert!(
        !a.text.trim().is_empty(),
        "RFC 6749 §4.1.2.1 (inform the resource owner): {what}: a message"
    );
    assert_authorize_headers(a, what);
}

/// The query parameters of a 302 to `redirect` (RFC 6749 §4.1.2 and §4.1.2.1: added to the redirect
/// URI's query component, form-encoded).
fn redirected(a: &Answer, redirect: &str, what: &str) -> HashMap<String, String> {
    assert_eq!(
        a.status, 302,
        "RFC 6749 §4.1.2: {what}: a redirect: {}",
        a.text
    );
    let loc = a
        .location
        .as_deref()
        .unwrap_or_else(|| panic!("RFC 6749 §4.1.2: {what}: a 302 without Location"));
    assert!(
        loc.starts_with(&format!("{redirect}?")),
        "RFC 6749 §4.1.2: {what}: to the registered redirect URI {redirect}, parameters in its query: {loc}"
    );
    let url = reqwest::Url::parse(loc).unwrap();
    assert_eq!(
        url.fragment(),
        None,
        "RFC 6749 §4.1.2: {what}: parameters in the query, no fragment: {loc}"
    );
    let mut q = HashMap::new();
    for (k, v) in url.query_pairs() {
        assert!(
            q.insert(k.to_string(), v.into_owned()).is_none(),
            "RFC 6749 §3.1: {what}: {k} twice in {loc}"
        );
    }
    assert_authorize_headers(a, what);
    q
}

/// RFC 6749 §4.1.2.1: any other error is a redirect with `error`, `error_description` and the
/// request's `state`; answers the `error_description`.
fn assert_redirected_error(
    a: &Answer,
    redirect: &str,
    error: &str,
    state: Option<&str>,
    what: &str,
) -> String {
    let q = redirected(a, redirect, what);
    assert_eq!(
        q.get("error").map(String::as_str),
        Some(error),
        "RFC 6749 §4.1.2.1: {what}: {q:?}"
    );
    assert_eq!(
        q.get("state").map(String::as_str),
        state,
        "RFC 6749 §4.1.2.1: {what}: state, exactly as sent (REQUIRED when sent): {q:?}"
    );
    assert!(
        !q.contains_key("code"),
        "RFC 6749 §4.1.2.1: {what}: an error carries no code: {q:?}"
    );
    let d = q.get("error_description").cloned().unwrap_or_default();
    assert!(
        !d.is_empty(),
        "RFC 6749 §4.1.2.1: {what}: an error_description: {q:?}"
    );
    d
}

/// RFC 6749 §4.1.1: the sign-in page, a form POSTed to /authorize that carries `sent` as hidden
/// inputs, with `email`, `password` and the `signin` button. Answers the hidden inputs.
fn assert_sign_in_form(a: &Answer, sent: &[(&str, &str)], what: &str) -> Vec<(String, String)> {
    assert!(
        a.headers.contains("content-type: text/html"),
        "RFC 6749 §4.1.1: {what}: an HTML page:\n{}",
        a.headers
    );
    assert_authorize_headers(a, what);
    let tags = html_tags(&a.text);
    let is = |t: &serde_json::Value, tag: &str| t["tag"] == tag;
    assert!(
        tags.iter().any(|t| is(t, "form")
            && t["method"]
                .as_str()
                .is_some_and(|m| m.eq_ignore_ascii_case("post"))
            && t["action"] == "/authorize"),
        "RFC 6749 §4.1.1: {what}: <form method=\"post\" action=\"/authorize\"> in {}",
        a.text
    );
    let hidden: Vec<(String, String)> = tags
        .iter()
        .filter(|t| is(t, "input") && t["type"] == "hidden")
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("value"))
        })
        .collect();
    for (k, v) in sent {
        assert!(
            hidden.iter().any(|(hk, hv)| hk == k && hv == v),
            "RFC 6749 §4.1.1: {what}: the form carries {k}={v:?} as a hidden input: {hidden:?}"
        );
    }
    for name in ["email", "password"] {
        assert!(
            tags.iter().any(|t| is(t, "input") && t["name"] == name),
            "RFC 6749 §4.1.1: {what}: an input named {name} in {}",
            a.text
        );
    }
    assert!(
        tags.iter()
            .any(|t| (is(t, "button") || is(t, "input")) && t["id"] == "signin"),
        "RFC 6749 §4.1.1: {what}: a submit button with id signin in {}",
        a.text
    );
    hidden
}

/// The issuer, from discovery.
fn issuer(pier: &Pier) -> String {
    let a = call(pier, "GET", "/.well-known/openid-configuration", &[], None);
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["issuer"].as_str().unwrap().to_owned()
}

/// What a browser does: opens the authorization URL with `params`, then posts the sign-in form it
/// got back (its hidden inputs) with `email` and `password`.
fn sign_in(pier: &Pier, params: &[(&str, &str)], email: &str, password: &str) -> Answer {
    let page = authorize_get(pier, params);
    assert_eq!(page.status, 200, "RFC 6749 §4.1.1: {}", page.text);
    let hidden = assert_sign_in_form(&page, params, "the sign-in page");
    let mut form: Vec<(&str, &str)> = hidden
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.extend([("email", email), ("password", password)]);
    authorize_post(pier, &form)
}

/// RFC 6749 §4.1.2: the code a successful sign-in redirects with, to `redirect`, with `state`.
fn code_of(a: &Answer, redirect: &str, state: Option<&str>, what: &str) -> String {
    let q = redirected(a, redirect, what);
    assert_eq!(
        q.get("state").map(String::as_str),
        state,
        "RFC 6749 §4.1.2: {what}: state, exactly as sent (REQUIRED when sent): {q:?}"
    );
    assert!(!q.contains_key("error"), "RFC 6749 §4.1.2: {what}: {q:?}");
    let code = q.get("code").cloned().unwrap_or_default();
    assert!(!code.is_empty(), "RFC 6749 §4.1.2: {what}: a code: {q:?}");
    code
}

/// `grant_type=authorization_code` with `pairs`.
fn exchange(pier: &Pier, pairs: &[(&str, &str)]) -> Answer {
    let mut all = vec![("grant_type", "authorization_code")];
    all.extend_from_slice(pairs);
    post(pier, "/token", &[&query_string(&all)])
}

/// The claims of a JWT, unverified.
fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(1).expect("a JWT has three parts");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// `GET /v1/auth/whoami` with `token`: status and body.
fn whoami(pier: &Pier, token: &str) -> (u16, serde_json::Value) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("{}/v1/auth/whoami", pier.api_url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn the_authorization_endpoint_follows_rfc_6749_and_rfc_7636() {
    let pier = Pier::start(&[]);
    let dev = pier.user("dev@example.com");

    // RFC 8414 §2 (and OpenID Connect Discovery §3): discovery names the endpoint and what it takes.
    let meta = call(&pier, "GET", "/.well-known/openid-configuration", &[], None).body;
    let issuer = meta["issuer"].as_str().unwrap().to_owned();
    assert_eq!(
        meta["authorization_endpoint"],
        format!("{issuer}/authorize"),
        "RFC 8414 §2: authorization_endpoint: {meta}"
    );
    let lists = |k: &str, v: &str| meta[k].as_array().is_some_and(|a| a.iter().any(|x| x == v));
    assert!(
        lists("response_types_supported", "code"),
        "RFC 8414 §2: response_types_supported has code: {meta}"
    );
    assert!(
        lists("grant_types_supported", "authorization_code"),
        "RFC 8414 §2: grant_types_supported has authorization_code: {meta}"
    );
    assert_eq!(
        meta["code_challenge_methods_supported"],
        serde_json::json!(["S256"]),
        "RFC 8414 §2 and RFC 7636 §4.2: S256 only: {meta}"
    );

    let redirect = format!("{issuer}/console/callback");
    let challenge = s256(VERIFIER);
    assert_eq!(
        challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "RFC 7636 Appendix B: the test's own S256"
    );
    let good = [
        ("response_type", "code"),
        ("client_id", CLIENT),
        ("redirect_uri", redirect.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", STATE),
        ("scope", "openid email profile"),
    ];

    // §3.1: GET, and POST with the same parameters, form-encoded; nothing else.
    for method in ["PUT", "DELETE", "PATCH"] {
        let path = format!("/authorize?{}", query_string(&good));
        let a = call(&pier, method, &path, &[], None);
        assert_eq!(
            a.status, 405,
            "RFC 6749 §3.1: {method} /authorize: {}",
            a.text
        );
    }

    // §4.1.1: a valid request answers the sign-in page, carrying the request on; its headers forbid
    // framing (§10.13).
    let a = authorize_get(&pier, &good);
    assert_eq!(
        a.status, 200,
        "RFC 6749 §4.1.1: a valid request: {}",
        a.text
    );
    assert_sign_in_form(&a, &good, "a valid GET");
    // A POST without email and password shows the same form (the contract fixes no status for it).
    let a = authorize_post(&pier, &good);
    assert!(
        matches!(a.status, 200 | 400) && a.location.is_none(),
        "RFC 6749 §3.1: a valid POST without credentials: {} {:?} {}",
        a.status,
        a.location,
        a.text
    );
    assert_sign_in_form(&a, &good, "a valid POST");
    // §3.1.2.3, §4.1.1: redirect_uri is OPTIONAL for a client with one registered.
    let without_redirect = set(&good, "redirect_uri", None);
    let a = authorize_get(&pier, &without_redirect);
    assert_eq!(
        a.status, 200,
        "RFC 6749 §4.1.1: no redirect_uri (the registered one): {}",
        a.text
    );
    assert_sign_in_form(&a, &without_redirect, "no redirect_uri");

    // §4.1.2.1, §3.1.2.4: a missing or unknown client, or a redirect URI that is not exactly the
    // registered one, is told to the user, never redirected to (even with another error in the
    // request, and even with the right password).
    let bad_redirects = [
        format!("{redirect}?next=/"),
        format!("{redirect}#top"),
        format!("{redirect}/"),
        format!("{issuer}/Console/callback"),
        redirect.replacen("https://", "http://", 1),
        "https://evil.example/console/callback".to_owned(),
    ];
    for r in &bad_redirects {
        let a = authorize_get(&pier, &set(&good, "redirect_uri", Some(r)));
        assert_told_to_the_user(&a, &format!("redirect_uri {r}"));
    }
    let told = [
        ("no client_id", set(&good, "client_id", None)),
        (
            "an unknown client_id",
            set(&good, "client_id", Some("evil-app")),
        ),
        (
            "an unknown client_id and no redirect_uri",
            set(&without_redirect, "client_id", Some("evil-app")),
        ),
        ("client_id twice", twice(&good, ("client_id", CLIENT))),
        (
            "redirect_uri twice",
            twice(&good, ("redirect_uri", redirect.as_str())),
        ),
        (
            "an unknown client_id and response_type=token",
            set(
                &set(&good, "client_id", Some("evil-app")),
                "response_type",
                Some("token"),
            ),
        ),
        (
            "a foreign redirect_uri and no code_challenge",
            set(
                &set(&good, "redirect_uri", Some(&bad_redirects[5])),
                "code_challenge",
                None,
            ),
        ),
    ];
    for (what, params) in &told {
        assert_told_to_the_user(&authorize_get(&pier, params), what);
    }
    let a = authorize_post(&pier, &set(&good, "client_id", Some("evil-app")));
    assert_told_to_the_user(&a, "an unknown client_id, POSTed");
    let signing_in = [("email", dev.email.as_str()), ("password", PASSWORD)];
    let a = authorize_post(
        &pier,
        &[
            set(&good, "redirect_uri", Some(&bad_redirects[5])),
            signing_in.to_vec(),
        ]
        .concat(),
    );
    assert_told_to_the_user(&a, "the right password for a foreign redirect_uri");

    // §4.1.2.1: every other error is redirected, with error, error_description and state.
    let too_long = "A".repeat(129);
    let redirected_errors = [
        (
            "response_type=token",
            set(&good, "response_type", Some("token")),
            "unsupported_response_type",
        ),
        (
            "response_type=id_token",
            set(&good, "response_type", Some("id_token")),
            "unsupported_response_type",
        ),
        (
            "no response_type",
            set(&good, "response_type", None),
            "invalid_request",
        ),
        // §3.1: parameters MUST NOT be included more than once.
        (
            "response_type twice",
            twice(&good, ("response_type", "code")),
            "invalid_request",
        ),
        (
            "code_challenge_method twice",
            twice(&good, ("code_challenge_method", "S256")),
            "invalid_request",
        ),
        (
            "scope twice",
            twice(&good, ("scope", "openid")),
            "invalid_request",
        ),
        // RFC 7636 §4.4.1 and §4.2: a code_challenge of 43-128 unreserved characters.
        (
            "a 42-character code_challenge",
            set(&good, "code_challenge", Some(&challenge[..42])),
            "invalid_request",
        ),
        (
            "a 129-character code_challenge",
            set(&good, "code_challenge", Some(&too_long)),
            "invalid_request",
        ),
        (
            "a code_challenge with a +",
            set(
                &good,
                "code_challenge",
                Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"),
            ),
            "invalid_request",
        ),
        // §3.3 and §4.1.2.1: only openid, email and profile.
        (
            "scope=admin",
            set(&good, "scope", Some("admin")),
            "invalid_scope",
        ),
        (
            "scope=openid admin",
            set(&good, "scope", Some("openid admin")),
            "invalid_scope",
        ),
    ];
    for (what, params, error) in &redirected_errors {
        let a = authorize_get(&pier, params);
        assert_redirected_error(&a, &redirect, error, Some(STATE), what);
    }
    // RFC 7636 §4.4.1: PKCE is required, and only with S256 (plain, also the default, is refused).
    let d = assert_redirected_error(
        &authorize_get(&pier, &set(&good, "code_challenge", None)),
        &redirect,
        "invalid_request",
        Some(STATE),
        "no code_challenge",
    );
    assert!(
        d.to_lowercase().contains("code challenge required"),
        "RFC 7636 §4.4.1: \"code challenge required\": {d}"
    );
    for (what, method) in [
        ("no code_challenge_method (plain)", None),
        ("code_challenge_method=plain", Some("plain")),
    ] {
        let a = authorize_get(&pier, &set(&good, "code_challenge_method", method));
        let d = assert_redirected_error(&a, &redirect, "invalid_request", Some(STATE), what);
        assert!(
            d.to_lowercase()
                .contains("transform algorithm not supported"),
            "RFC 7636 §4.4.1: {what}: \"transform algorithm not supported\": {d}"
        );
    }
    // §4.1.2.1: without a state, none comes back; without a redirect_uri, the registered one; POSTed
    // like GET.
    let a = authorize_get(
        &pier,
        &set(&set(&good, "state", None), "response_type", Some("token")),
    );
    assert_redirected_error(&a, &redirect, "unsupported_response_type", None, "no state");
    let a = authorize_get(
        &pier,
        &set(&without_redirect, "response_type", Some("token")),
    );
    assert_redirected_error(
        &a,
        &redirect,
        "unsupported_response_type",
        Some(STATE),
        "no redirect_uri",
    );
    let a = authorize_post(&pier, &set(&good, "scope", Some("admin")));
    assert_redirected_error(
        &a,
        &redirect,
        "invalid_scope",
        Some(STATE),
        "scope=admin, POSTed",
    );

    // §4.1.1: a wrong password answers the form again (401), never a redirect, and does not echo it.
    let guess = "not-the-password-at-all";
    for (what, email) in [
        ("a wrong password", dev.email.as_str()),
        ("an unknown user", "nobody@example.com"),
    ] {
        let a = authorize_post(
            &pier,
            &[good.to_vec(), vec![("email", email), ("password", guess)]].concat(),
        );
        assert_eq!(a.status, 401, "RFC 6749 §4.1.1: {what}: {}", a.text);
        assert_eq!(a.location, None, "RFC 6749 §4.1.1: {what}: no redirect");
        assert!(
            a.text.contains("wrong email or password"),
            "RFC 6749 §4.1.1: {what}: says so: {}",
            a.text
        );
        assert!(
            !a.text.contains(guess),
            "RFC 6749 §10.3: {what}: the password is not sent back"
        );
        assert_sign_in_form(&a, &good, what);
    }

    // §4.1.2: the right password redirects to the redirect URI with a code and the state, exactly
    // (URL-encoded); without a state, none.
    let a = authorize_post(&pier, &[good.to_vec(), signing_in.to_vec()].concat());
    let code = code_of(&a, &redirect, Some(STATE), "the right password");
    let a = authorize_post(
        &pier,
        &[set(&good, "state", None), signing_in.to_vec()].concat(),
    );
    let other = code_of(&a, &redirect, None, "the right password, no state");
    assert_ne!(code, other, "RFC 6749 §10.10: each sign-in its own code");
    // Through the page, as a browser goes.
    let a = sign_in(&pier, &good, &dev.email, PASSWORD);
    code_of(&a, &redirect, Some(STATE), "signing in on the page");
}

#[test]
fn the_authorization_code_grant_follows_rfc_6749_and_rfc_7636() {
    let pier = Pier::start(&[]);
    let dev = pier.user("dev@example.com");
    let issuer = issuer(&pier);
    let redirect = format!("{issuer}/console/callback");
    let challenge = s256(VERIFIER);
    let params = [
        ("response_type", "code"),
        ("client_id", CLIENT),
        ("redirect_uri", redirect.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", STATE),
        ("scope", "openid email"),
    ];
    let a = sign_in(&pier, &params, &dev.email, PASSWORD);
    let code = code_of(&a, &redirect, Some(STATE), "signing in");
    let right = [
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("client_id", CLIENT),
        ("code_verifier", VERIFIER),
    ];

    // Refused exchanges, which leave the code as it was.
    // §4.1.3 and §3.2.1: a public client MUST send its client_id; the code is REQUIRED.
    let a = exchange(&pier, &set(&right, "client_id", None));
    assert_oauth_error(&a, 400, "invalid_request", "RFC 6749 §4.1.3: no client_id");
    let a = exchange(&pier, &set(&right, "code", None));
    assert_oauth_error(&a, 400, "invalid_request", "RFC 6749 §4.1.3: no code");
    // RFC 7636 §4.6: the verifier MUST match the challenge (S256, so the challenge itself does not).
    for (what, verifier) in [
        ("RFC 7636 §4.6: a wrong code_verifier", Some(OTHER_VERIFIER)),
        (
            "RFC 7636 §4.6: the challenge as the verifier",
            Some(challenge.as_str()),
        ),
        ("RFC 7636 §4.6: no code_verifier", None),
    ] {
        let a = exchange(&pier, &set(&right, "code_verifier", verifier));
        assert_oauth_error(&a, 400, "invalid_grant", what);
    }
    // §4.1.3: redirect_uri identical to the authorization request's; the code issued to this client.
    let elsewhere = format!("{redirect}?next=/");
    let a = exchange(&pier, &set(&right, "redirect_uri", Some(&elsewhere)));
    assert_oauth_error(
        &a,
        400,
        "invalid_grant",
        "RFC 6749 §4.1.3: another redirect_uri",
    );
    let a = exchange(&pier, &set(&right, "redirect_uri", None));
    assert_eq!(
        a.status, 400,
        "RFC 6749 §4.1.3: redirect_uri was in the authorization request, so it is required: {}",
        a.body
    );
    assert!(
        a.body["error"] == "invalid_request" || a.body["error"] == "invalid_grant",
        "RFC 6749 §4.1.3 and §5.2: no redirect_uri: {}",
        a.body
    );
    let a = exchange(&pier, &set(&right, "client_id", Some("evil-app")));
    assert_oauth_error(
        &a,
        400,
        "invalid_grant",
        "RFC 6749 §4.1.3: another client_id",
    );
    let a = exchange(&pier, &set(&right, "code", Some("not-a-code")));
    assert_oauth_error(&a, 400, "invalid_grant", "RFC 6749 §5.2: an unknown code");

    // §4.1.4 and §5.1: the right exchange answers tokens, not to be cached.
    let a = exchange(&pier, &right);
    assert_eq!(
        a.status, 200,
        "RFC 6749 §4.1.4: the right exchange: {}",
        a.body
    );
    assert!(
        a.headers.contains("content-type: application/json"),
        "RFC 6749 §5.1: JSON: {}",
        a.headers
    );
    assert!(
        a.headers.contains("cache-control: no-store"),
        "RFC 6749 §5.1: Cache-Control: no-store: {}",
        a.headers
    );
    assert!(
        a.headers.contains("pragma: no-cache"),
        "RFC 6749 §5.1: Pragma: no-cache: {}",
        a.headers
    );
    assert_eq!(a.body["token_type"], "Bearer", "RFC 6749 §5.1: {}", a.body);
    assert!(
        a.body["expires_in"].as_u64().is_some_and(|s| s > 0),
        "RFC 6749 §5.1: expires_in: {}",
        a.body
    );
    let tokens = a.body.clone();
    let string = |k: &str| {
        let s = tokens[k].as_str().unwrap_or_default().to_owned();
        assert!(!s.is_empty(), "RFC 6749 §5.1: a {k}: {tokens}");
        s
    };
    let (access, id_token, refresh) = (
        string("access_token"),
        string("id_token"),
        string("refresh_token"),
    );
    // The access token is the signed-in user's, and the admin API takes it.
    let (status, me) = whoami(&pier, &access);
    assert_eq!(status, 200, "RFC 6749 §7: the access token works: {me}");
    assert_eq!(
        me["principal"],
        format!("user:{}", dev.email),
        "RFC 6749 §4.1.4: the access token is the signed-in user's: {me}"
    );
    // OpenID Connect Core §2 and §3.1.3.3: an ID token for the client, from this issuer.
    let claims = jwt_claims(&id_token);
    assert!(
        claims["aud"] == CLIENT
            || claims["aud"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == CLIENT)),
        "OpenID Connect Core §2: aud is {CLIENT}: {claims}"
    );
    assert_eq!(
        claims["iss"], issuer,
        "OpenID Connect Core §2: iss is the issuer: {claims}"
    );

    // §4.1.3: redirect_uri is required only if it was in the authorization request (the sign-in page
    // carries on only what was sent).
    let no_redirect = set(&set(&params, "redirect_uri", None), "state", None);
    let a = sign_in(&pier, &no_redirect, &dev.email, PASSWORD);
    let code2 = code_of(
        &a,
        &redirect,
        None,
        "signing in without redirect_uri or state",
    );
    let a = exchange(
        &pier,
        &set(&set(&right, "code", Some(&code2)), "redirect_uri", None),
    );
    assert_eq!(
        a.status, 200,
        "RFC 6749 §4.1.3: no redirect_uri in the request, none in the exchange: {}",
        a.body
    );

    // §4.1.2: a code is used once: the second use MUST be denied, and SHOULD revoke the tokens the
    // first one gave.
    let a = exchange(&pier, &right);
    assert_oauth_error(
        &a,
        400,
        "invalid_grant",
        "RFC 6749 §4.1.2: a code used twice",
    );
    let a = post(
        &pier,
        "/token",
        &[
            "grant_type=refresh_token",
            &format!("refresh_token={}", encode(&refresh)),
        ],
    );
    assert_oauth_error(
        &a,
        400,
        "invalid_grant",
        "RFC 6749 §4.1.2: the refresh token of a code used twice is revoked",
    );
}
