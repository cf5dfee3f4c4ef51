//! The token and revocation endpoints against the standards, each MUST a check: RFC 6749 (the token
//! endpoint), RFC 7523 (JWT-bearer assertions) and RFC 7009 (revocation). Requests go over plain HTTP
//! with curl to the admin listener, where the CLI sends them; assertions are signed with a real Pier key
//! file by google-auth's own signer.

mod common;

use std::process::Command;

use common::*;

/// A curl call: status, headers (lowercased names), body.
struct Answer {
    status: u16,
    headers: String,
    body: serde_json::Value,
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
    Answer {
        status: status.trim().parse().unwrap(),
        headers: std::fs::read_to_string(headers.path())
            .unwrap()
            .to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
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
