//! Tokens of a trusted external OpenID Connect issuer, end to end: a second Pier server plays the external
//! identity platform (real discovery document, JWKS and RS256 tokens over real TLS from its own CA).

mod common;

use common::*;

fn status(p: &Pier, url: &str, token: &str) -> String {
    let out = p.curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {token}"),
        url,
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_trusted_issuers_tokens_reach_services_by_iam_but_never_the_admin_api() {
    let idp = Pier::start(&["--domain", "idp.localhost"]);
    let issuer = format!("https://idp.localhost:{}", idp.https_port);
    let idp_ca = idp.dir.join("ca.pem");
    let a = Pier::start(&[
        "--trusted-issuer",
        &issuer,
        "--oidc-ca",
        idp_ca.to_str().unwrap(),
    ]);
    eventually(20, "the issuer's keys", || {
        a.server_log()
            .contains("external issuer keys loaded")
            .then_some(())
    });
    let url = a.deploy_hello("private", &[]);
    let token = idp.token_for(&url);

    // Verified, but its user may not invoke yet.
    assert_eq!(status(&a, &url, &token), "403");
    a.ok(&[
        "services",
        "add-iam-policy-binding",
        "private",
        "--member",
        "user:owner@idp.localhost",
        "--role",
        "roles/run.invoker",
    ]);
    eventually(10, "the invoker binding", || {
        (status(&a, &url, &token) == "200").then_some(())
    });

    // Never the admin API.
    assert_eq!(
        status(
            &a,
            &format!("{}/v1/projects/default/services", a.api_url),
            &token
        ),
        "401"
    );
    // Another audience, or an issuer nobody trusts: invalid.
    let elsewhere = idp.token_for("https://elsewhere.example");
    assert_eq!(status(&a, &url, &elsewhere), "401");
    let stranger = Pier::start(&["--domain", "stranger.localhost"]);
    assert_eq!(status(&a, &url, &stranger.token_for(&url)), "401");
}

#[test]
fn an_untrusted_issuer_certificate_or_a_bad_url_is_refused() {
    let idp = Pier::start(&["--domain", "idp.localhost"]);
    let issuer = format!("https://idp.localhost:{}", idp.https_port);
    // Without its CA the keys cannot be fetched, so its tokens are refused.
    let a = Pier::start(&["--trusted-issuer", &issuer]);
    eventually(20, "the fetch failure", || {
        a.server_log()
            .contains("cannot fetch the issuer's keys")
            .then_some(())
    });
    let url = a.deploy_hello("private", &[]);
    assert_eq!(status(&a, &url, &idp.token_for(&url)), "401");
    drop(a);

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(PIER)
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path())
        .args(with_free_ports(&["--trusted-issuer", "http://idp.example"]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must start with https://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
