//! Identity and IAM end to end: private by default, identity tokens, IAM bindings and policies with etags,
//! service accounts and keys, the gateway's checks (Cloud Run's behaviour), ingress, and the refusals a
//! verifier must make.

mod common;
use base64::Engine;
use common::*;

fn code_and_body(out: &std::process::Output) -> (String, String) {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// curl with `args`, returning (status, body).
fn call(pier: &Pier, args: &[&str]) -> (String, String) {
    let mut a = vec!["-w", "\n%{http_code}"];
    a.extend_from_slice(args);
    code_and_body(&pier.curl(&a))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn decode_part(token: &str, i: usize) -> serde_json::Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn services_are_private_until_made_public() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("api", &[]);
    let svc = pier.describe("api");
    assert_eq!(svc["allowUnauthenticated"], false, "private by default");

    // No token: 403, with a short body that says what to do.
    let (code, body) = call(&pier, &[&url]);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("print-identity-token"), "{body}");

    // The CLI's own token (audience: the CLI client id) works, as gcloud's does on Cloud Run.
    let token = pier.token();
    let auth = format!("Authorization: Bearer {token}");
    let (code, body) = call(&pier, &["-H", &auth, &url]);
    assert_eq!(code, "200", "{body}");
    // The app sees the claims but not the signature.
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seen = echoed["headers"]["authorization"].as_str().unwrap();
    assert!(seen.ends_with(".SIGNATURE_REMOVED_BY_PIER"), "{seen}");
    assert!(!seen.contains(token.split('.').nth(2).unwrap()));

    // A token for the service's URL works too, with or without a trailing slash.
    for aud in [url.clone(), format!("{url}/")] {
        let t = pier.token_for(&aud);
        assert_eq!(decode_part(&t, 1)["aud"], aud.as_str());
        let (code, _) = call(&pier, &["-H", &format!("Authorization: Bearer {t}"), &url]);
        assert_eq!(code, "200");
    }

    // Public, then private again.
    pier.ok(&[
        "services",
        "add-iam-policy-binding",
        "api",
        "--member=allUsers",
        "--role=roles/run.invoker",
    ]);
    assert_eq!(call(&pier, &[&url]).0, "200");
    assert_eq!(pier.describe("api")["allowUnauthenticated"], true);
    pier.ok(&[
        "services",
        "remove-iam-policy-binding",
        "api",
        "--member=allUsers",
        "--role=roles/run.invoker",
    ]);
    assert_eq!(call(&pier, &[&url]).0, "403");

    // --allow-unauthenticated at deploy; --no-allow-unauthenticated later.
    let web = pier.deploy_hello("web", &["--allow-unauthenticated"]);
    assert_eq!(call(&pier, &[&web]).0, "200");
    pier.ok(&["services", "update", "web", "--no-allow-unauthenticated"]);
    assert_eq!(call(&pier, &[&web]).0, "403");

    // A token for api does not open web.
    let api_token = pier.token_for(&url);
    let (code, body) = call(
        &pier,
        &["-H", &format!("Authorization: Bearer {api_token}"), &web],
    );
    assert_eq!(code, "401", "{body}");
}

#[test]
fn policies_have_etags_and_bad_bindings_are_refused() {
    let pier = Pier::start(&[]);
    pier.deploy_hello("api", &[]);
    let policy: serde_json::Value =
        serde_json::from_str(&pier.ok(&["services", "get-iam-policy", "api", "--format", "json"]))
            .unwrap();
    let etag = policy["etag"].as_str().unwrap().to_owned();
    assert_eq!(etag, "ACAB", "an empty policy has Google's empty etag");
    let file = pier.dir.join("policy.json");
    std::fs::write(
        &file,
        serde_json::json!({
            "bindings": [{"role": "roles/run.invoker", "members": ["allAuthenticatedUsers"]}],
            "etag": etag,
        })
        .to_string(),
    )
    .unwrap();
    pier.ok(&["services", "set-iam-policy", "api", file.to_str().unwrap()]);
    // The same file again carries a stale etag: refused, nothing changes.
    let err = pier.fails(&["services", "set-iam-policy", "api", file.to_str().unwrap()]);
    assert!(err.contains("etag"), "{err}");
    let now: serde_json::Value =
        serde_json::from_str(&pier.ok(&["services", "get-iam-policy", "api", "--format", "json"]))
            .unwrap();
    assert_eq!(now["bindings"][0]["members"][0], "allAuthenticatedUsers");
    // YAML by default, like gcloud.
    assert!(
        pier.ok(&["services", "get-iam-policy", "api"])
            .contains("roles/run.invoker")
    );
    for (member, role, want) in [
        ("alice", "roles/run.invoker", "not valid"),
        ("user:alice@example.com", "roles/editor", "unknown role"),
    ] {
        let err = pier.fails(&[
            "services",
            "add-iam-policy-binding",
            "api",
            "--member",
            member,
            "--role",
            role,
        ]);
        assert!(err.contains(want), "{err}");
    }
    let err = pier.fails(&[
        "services",
        "add-iam-policy-binding",
        "nope",
        "--member=allUsers",
        "--role=roles/run.invoker",
    ]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn service_accounts_keys_and_the_gateway_checks() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("api", &[]);
    let sa = pier
        .ok(&["iam", "service-accounts", "create", "caller"])
        .trim()
        .to_owned();
    assert_eq!(sa, "caller@default.iam.pier.localhost");
    let key = pier.dir.join("key.json");
    pier.ok(&[
        "iam",
        "service-accounts",
        "keys",
        "create",
        key.to_str().unwrap(),
        "--iam-account",
        &sa,
    ]);
    let keyfile: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
    for field in [
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "token_uri",
    ] {
        assert!(keyfile[field].is_string(), "key file has {field}");
    }
    assert_eq!(keyfile["type"], "service_account");
    assert!(keyfile["token_uri"].as_str().unwrap().ends_with("/token"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Keep the owner's token for later, then act as the service account.
    let owner_token = pier.token();
    pier.ok(&[
        "auth",
        "activate-service-account",
        "--key-file",
        key.to_str().unwrap(),
    ]);
    let sa_token = pier.token_for(&url);
    let claims = decode_part(&sa_token, 1);
    assert_eq!(claims["email"], sa.as_str());
    assert_eq!(claims["aud"], url.as_str());
    assert_eq!(decode_part(&sa_token, 0)["alg"], "RS256");
    let auth = format!("Authorization: Bearer {sa_token}");
    // Valid token, no invoker role: 403.
    let (code, body) = call(&pier, &["-H", &auth, &url]);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("add-iam-policy-binding"), "{body}");
    // The service account cannot change IAM either.
    let err = pier.fails(&[
        "services",
        "add-iam-policy-binding",
        "api",
        "--member=allUsers",
        "--role=roles/run.invoker",
    ]);
    assert!(err.contains("lacks permission"), "{err}");

    // The owner grants the invoker role; the same token now works.
    let owner = |args: &[&str]| {
        let out = std::process::Command::new(PIER)
            .args(args)
            .env("PIER_CONFIG", pier.dir.join("owner-cli.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    std::fs::write(
        pier.dir.join("owner-cli.toml"),
        format!(
            "api_url = \"{}\"\ncredentials_file = \"{}\"\ndata_dir = \"{}\"\n",
            pier.api_url,
            pier.dir.join("owner-credentials.json").display(),
            pier.dir.display()
        ),
    )
    .unwrap();
    owner(&[
        "services",
        "add-iam-policy-binding",
        "api",
        &format!("--member=serviceAccount:{sa}"),
        "--role=roles/run.invoker",
    ]);
    let (code, body) = call(&pier, &["-H", &auth, &url]);
    assert_eq!(code, "200", "{body}");

    // X-Serverless-Authorization is checked first; Authorization then reaches the app untouched.
    let (code, body) = call(
        &pier,
        &[
            "-H",
            &format!("X-Serverless-Authorization: Bearer {sa_token}"),
            "-H",
            "Authorization: Bearer app-own-token",
            &url,
        ],
    );
    assert_eq!(code, "200", "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["headers"]["authorization"], "Bearer app-own-token");
    assert!(
        echoed["headers"]["x-serverless-authorization"]
            .as_str()
            .unwrap()
            .ends_with("SIGNATURE_REMOVED_BY_PIER")
    );

    // Disabling the key refuses new token requests and the tokens it produced; enabling restores both.
    let kid = keyfile["private_key_id"].as_str().unwrap();
    owner(&[
        "iam",
        "service-accounts",
        "keys",
        "disable",
        kid,
        "--iam-account",
        &sa,
    ]);
    assert_eq!(call(&pier, &["-H", &auth, &url]).0, "401");
    let err = pier.fails(&["auth", "print-identity-token", "--audiences", &url]);
    assert!(err.contains("disabled"), "{err}");
    owner(&[
        "iam",
        "service-accounts",
        "keys",
        "enable",
        kid,
        "--iam-account",
        &sa,
    ]);
    assert_eq!(call(&pier, &["-H", &auth, &url]).0, "200");
    let listed = owner(&[
        "iam",
        "service-accounts",
        "keys",
        "list",
        "--iam-account",
        &sa,
        "--format",
        "json",
    ]);
    assert!(listed.contains(kid));

    // Deleting the key: its tokens are refused at once, and no new ones are issued.
    owner(&[
        "iam",
        "service-accounts",
        "keys",
        "delete",
        kid,
        "--iam-account",
        &sa,
    ]);
    let (code, body) = call(&pier, &["-H", &auth, &url]);
    assert_eq!(code, "401", "{body}");
    let err = pier.fails(&["auth", "print-identity-token", "--audiences", &url]);
    assert!(err.contains("does not exist"), "{err}");

    // A second key, then the whole account deleted: refused too.
    let key2 = pier.dir.join("key2.json");
    owner(&[
        "iam",
        "service-accounts",
        "keys",
        "create",
        key2.to_str().unwrap(),
        "--iam-account",
        &sa,
    ]);
    pier.ok(&[
        "auth",
        "activate-service-account",
        "--key-file",
        key2.to_str().unwrap(),
    ]);
    let t2 = pier.token_for(&url);
    assert_eq!(
        call(&pier, &["-H", &format!("Authorization: Bearer {t2}"), &url]).0,
        "200"
    );
    owner(&["iam", "service-accounts", "delete", &sa]);
    assert_eq!(
        call(&pier, &["-H", &format!("Authorization: Bearer {t2}"), &url]).0,
        "401"
    );

    // The owner token still works throughout.
    assert_eq!(
        call(
            &pier,
            &["-H", &format!("Authorization: Bearer {owner_token}"), &url]
        )
        .0,
        "200"
    );
    // Every credentialed account stays listed after switching, and `config set account` switches
    // back, as gcloud's does.
    let list = pier.ok(&["auth", "list"]);
    assert!(
        list.contains("owner@pier.localhost") && list.contains(&sa),
        "{list}"
    );
    pier.ok(&["config", "set", "account", "owner@pier.localhost"]);
    assert_eq!(
        pier.ok(&["auth", "whoami"]).trim(),
        "user:owner@pier.localhost"
    );
    let err = pier.fails(&["config", "set", "account", "nobody@example.com"]);
    assert!(err.contains("pier auth login nobody@example.com"), "{err}");
    pier.ok(&["config", "set", "project", "other"]);
    assert!(pier.ok(&["config", "list"]).contains("project = other"));
    pier.ok(&["config", "unset", "project"]);
}

#[test]
fn forged_and_broken_tokens_are_refused() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("api", &[]);
    let b = pier.deploy_hello("b", &[]);
    let good = pier.token_for(&url);
    let jwks: serde_json::Value = serde_json::from_str(
        &String::from_utf8(
            pier.curl(&[&format!("https://pier.localhost:{}/jwks", pier.https_port)])
                .stdout,
        )
        .unwrap(),
    )
    .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = decode_part(&good, 1);

    let mut forged = Vec::new();
    // alg=none.
    forged.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(format!(r#"{{"alg":"none","kid":"{kid}"}}"#).as_bytes()),
            parts[1]
        ),
    ));
    // HS256 keyed with the public key.
    let header = b64(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#).as_bytes());
    let key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        jwks["keys"][0].to_string().as_bytes(),
    );
    let sig = aws_lc_rs::hmac::sign(&key, format!("{header}.{}", parts[1]).as_bytes());
    forged.push((
        "HS256",
        format!("{header}.{}.{}", parts[1], b64(sig.as_ref())),
    ));
    // Unknown kid.
    forged.push((
        "unknown kid",
        format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256","kid":"nope"}"#),
            parts[1],
            parts[2]
        ),
    ));
    // Tampered payload (more time, same signature).
    claims["exp"] = (claims["exp"].as_u64().unwrap() + 86400).into();
    forged.push((
        "tampered",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(claims.to_string().as_bytes()),
            parts[2]
        ),
    ));
    // Garbage and oversized.
    forged.push(("garbage", "not-a-token".to_owned()));
    forged.push((
        "oversized",
        format!("{}.{}.{}", parts[0], "A".repeat(20_000), parts[2]),
    ));
    for (what, token) in &forged {
        let (code, body) = call(
            &pier,
            &["-H", &format!("Authorization: Bearer {token}"), &url],
        );
        assert_eq!(code, "401", "{what}: {body}");
    }
    // 401s carry the WWW-Authenticate header OAuth clients look for.
    let out = pier.curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-H",
        "Authorization: Bearer x.y.z",
        &url,
    ]);
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        head.contains("www-authenticate: bearer error=\"invalid_token\""),
        "{head}"
    );
    // Not a bearer token at all.
    assert_eq!(
        call(&pier, &["-H", "Authorization: Basic YTpi", &url]).0,
        "401"
    );
    // A token for api presented to b: wrong audience.
    let (code, body) = call(&pier, &["-H", &format!("Authorization: Bearer {good}"), &b]);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("audience"), "{body}");
    // A token from another Pier (another issuer, other keys) is refused.
    let other = Pier::start(&[]);
    let foreign = other.token_for(&url);
    assert_eq!(
        call(
            &pier,
            &["-H", &format!("Authorization: Bearer {foreign}"), &url]
        )
        .0,
        "401"
    );
    // The real one still works.
    assert_eq!(
        call(
            &pier,
            &["-H", &format!("Authorization: Bearer {good}"), &url]
        )
        .0,
        "200"
    );
}

#[test]
fn roles_users_impersonation_and_settings() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("api", &[]);
    // A developer: may deploy (with actAs on the default service account), may not change IAM.
    let pw = pier.dir.join("pw");
    std::fs::write(&pw, "correct horse battery").unwrap();
    let out = std::process::Command::new(PIER)
        .args(["users", "create", "dev@example.com", "--password-stdin"])
        .env("PIER_CONFIG", pier.dir.join("cli.toml"))
        .stdin(std::fs::File::open(&pw).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pier.ok(&[
        "projects",
        "add-iam-policy-binding",
        "default",
        "--member=user:dev@example.com",
        "--role=roles/run.developer",
    ]);
    pier.ok(&[
        "iam",
        "service-accounts",
        "add-iam-policy-binding",
        "compute@default.iam.pier.localhost",
        "--member=user:dev@example.com",
        "--role=roles/iam.serviceAccountUser",
    ]);
    let owner_creds = pier.dir.join("owner-credentials.json");
    pier.ok(&[
        "auth",
        "login",
        "dev@example.com",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(pier.ok(&["auth", "whoami"]).trim(), "user:dev@example.com");
    // Deploys work (from a folder every user may read); IAM changes do not.
    let app = visible_dir();
    let hello = visible_hello(app.path());
    pier.ok(&[
        "deploy",
        "devsvc",
        "--command",
        hello.to_str().unwrap(),
        "--workdir",
        app.path().to_str().unwrap(),
    ]);
    let policy_file = pier.dir.join("public.json");
    std::fs::write(
        &policy_file,
        r#"{"bindings":[{"role":"roles/run.invoker","members":["allUsers"]}]}"#,
    )
    .unwrap();
    let err = pier.fails(&[
        "services",
        "set-iam-policy",
        "api",
        policy_file.to_str().unwrap(),
    ]);
    assert!(
        err.contains("lacks permission run.services.setIamPolicy"),
        "{err}"
    );
    let err = pier.fails(&["deploy", "pub", "--command", "x", "--allow-unauthenticated"]);
    assert!(err.contains("setIamPolicy"), "{err}");
    // Developers may invoke (run.developer includes run.routes.invoke).
    let t = pier.token_for(&url);
    assert_eq!(
        call(&pier, &["-H", &format!("Authorization: Bearer {t}"), &url]).0,
        "200"
    );
    // Wrong password: refused, no session.
    std::fs::write(&pw, "wrong wrong wrong").unwrap();
    let err = pier.fails(&[
        "auth",
        "login",
        "dev@example.com",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(err.contains("wrong email or password"), "{err}");

    // Back to the owner: a user with no role is refused by the gateway (403), and impersonation needs
    // the token creator role.
    std::fs::write(
        pier.dir.join("cli.toml"),
        format!(
            "api_url = \"{}\"\ncredentials_file = \"{}\"\ndata_dir = \"{}\"\n",
            pier.api_url,
            owner_creds.display(),
            pier.dir.display()
        ),
    )
    .unwrap();
    pier.ok(&[
        "projects",
        "remove-iam-policy-binding",
        "default",
        "--member=user:dev@example.com",
        "--role=roles/run.developer",
    ]);
    let (code, _) = call(&pier, &["-H", &format!("Authorization: Bearer {t}"), &url]);
    assert_eq!(code, "403", "no invoker role any more");
    pier.ok(&["iam", "service-accounts", "create", "robot1"]);
    let robot = "robot1@default.iam.pier.localhost";
    let imp = pier.ok(&[
        "auth",
        "print-identity-token",
        "--impersonate-service-account",
        robot,
        "--audiences",
        &url,
    ]);
    assert_eq!(
        decode_part(imp.trim(), 1)["email"],
        robot,
        "the owner may impersonate"
    );

    // Deleting a user stops their tokens at once.
    pier.ok(&["users", "delete", "dev@example.com"]);
    pier.ok(&[
        "services",
        "add-iam-policy-binding",
        "api",
        "--member=allAuthenticatedUsers",
        "--role=roles/run.invoker",
    ]);
    assert_eq!(
        call(&pier, &["-H", &format!("Authorization: Bearer {t}"), &url]).0,
        "401"
    );

    // --no-invoker-iam-check lets everything through; custom audiences are accepted. Settings make
    // no revision; a template flag makes one only when it changes the template.
    let revisions = || {
        let list = pier.ok(&["revisions", "list", "--format", "json"]);
        serde_json::from_str::<serde_json::Value>(&list)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    let before = revisions();
    pier.ok(&["services", "update", "api", "--no-invoker-iam-check"]);
    assert_eq!(call(&pier, &[&url]).0, "200");
    assert_eq!(revisions(), before, "a setting made a revision");
    pier.ok(&["services", "update", "api", "--max-instances", "3"]);
    assert_eq!(revisions(), before + 1);
    let err = pier.fails(&["services", "update", "api", "--max-instances", "3"]);
    assert!(
        err.contains("leave the revision template as it is"),
        "{err}"
    );
    assert_eq!(revisions(), before + 1);
    pier.ok(&[
        "services",
        "update",
        "api",
        "--invoker-iam-check",
        "--add-custom-audiences",
        "my-audience",
    ]);
    assert_eq!(call(&pier, &[&url]).0, "403");
    let custom = pier.token_for("my-audience");
    pier.ok(&[
        "services",
        "remove-iam-policy-binding",
        "api",
        "--member=allAuthenticatedUsers",
        "--role=roles/run.invoker",
    ]);
    assert_eq!(
        call(
            &pier,
            &["-H", &format!("Authorization: Bearer {custom}"), &url]
        )
        .0,
        "200"
    );
    assert_eq!(pier.describe("api")["customAudiences"][0], "my-audience");
}

#[test]
fn cors_preflight_and_ingress() {
    let pier = Pier::start(&[]);
    let url = pier.deploy_hello("api", &[]);
    let preflight = [
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example",
        "-H",
        "Access-Control-Request-Method: POST",
    ];
    let mut args = preflight.to_vec();
    args.push(&url);
    let (code, body) = call(&pier, &args);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("CORS preflight"), "{body}");
    pier.ok(&[
        "services",
        "add-iam-policy-binding",
        "api",
        "--member=allUsers",
        "--role=roles/run.invoker",
    ]);
    assert_eq!(
        call(&pier, &args).0,
        "200",
        "public services get their preflight"
    );

    // Ingress internal: the host (not an instance) gets 404, even public and with forged headers.
    pier.ok(&["services", "update", "api", "--ingress", "internal"]);
    assert_eq!(pier.describe("api")["ingress"], "internal");
    let (code, body) = call(&pier, &[&url]);
    assert_eq!(code, "404", "{body}");
    let (code, _) = call(
        &pier,
        &[
            "-H",
            "X-Forwarded-For: 127.0.0.1",
            "-H",
            "Forwarded: for=127.0.0.1",
            &url,
        ],
    );
    assert_eq!(code, "404");
    let err = pier.fails(&["services", "update", "api", "--ingress", "private"]);
    assert!(err.contains("use all, internal"), "{err}");
    pier.ok(&["services", "update", "api", "--ingress", "all"]);
    assert_eq!(call(&pier, &[&url]).0, "200");
}

#[test]
fn oidc_discovery_and_jwks_are_public() {
    let pier = Pier::start(&[]);
    let base = format!("https://pier.localhost:{}", pier.https_port);
    let (code, body) = call(
        &pier,
        &[&format!("{base}/.well-known/openid-configuration")],
    );
    assert_eq!(code, "200");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["issuer"], base.as_str());
    assert_eq!(doc["id_token_signing_alg_values_supported"][0], "RS256");
    assert_eq!(doc["token_endpoint"], format!("{base}/token").as_str());
    let (_, body) = call(&pier, &[&format!("{base}/jwks")]);
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    // Tokens say who issued them.
    assert_eq!(decode_part(&pier.token(), 1)["iss"], base.as_str());
    // The token endpoint speaks OAuth errors.
    let (code, body) = call(
        &pier,
        &[
            "-d",
            "grant_type=password&username=nobody@x&password=wrongwrong",
            &format!("{base}/token"),
        ],
    );
    assert_eq!(code, "400");
    assert!(body.contains("invalid_grant"), "{body}");
    let (code, body) = call(
        &pier,
        &[
            "-d",
            "grant_type=client_credentials",
            &format!("{base}/token"),
        ],
    );
    assert_eq!(code, "400");
    assert!(body.contains("unsupported_grant_type"), "{body}");
    // The admin API is served there too, behind tokens.
    let (code, _) = call(&pier, &[&format!("{base}/v1/projects/default/services")]);
    assert_eq!(code, "401");
    let auth = format!("Authorization: Bearer {}", pier.api_token());
    let (code, _) = call(
        &pier,
        &["-H", &auth, &format!("{base}/v1/projects/default/services")],
    );
    assert_eq!(code, "200");
}
