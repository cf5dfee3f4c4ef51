//! Custom domains end to end, against a real ACME CA (pebble) and its DNS server (challtestsrv): ownership
//! by TXT record, a mapping's certificate issued over HTTP-01 and TLS-ALPN-01 and served by SNI, the
//! service's guard at its custom domain, HTTP answers before and after the certificate, conditions that
//! say what is wrong, a CA that is down, and a restart that keeps everything.

mod common;
use common::acme::{self, Acme};
use common::*;

use std::path::Path;

/// `pier server` on fixed free ports (pebble must know them before it starts), with the CA and DNS of
/// `acme`.
fn server(dir: &Path, acme: &Acme, extra: &[&str]) -> Pier {
    let mut args: Vec<String> = [
        "--https-port",
        &acme.https_port.to_string(),
        "--http-port",
        &acme.http_port.to_string(),
        "--api-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--egress",
        "none",
        "--acme-directory",
        &acme.directory(),
        "--acme-ca",
        acme.ca_file().to_str().unwrap(),
        "--acme-email",
        "ops@example.com",
        "--dns-server",
        &acme.dns_server(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Pier::launch(dir, &args)
}

/// `curl` to `https://DOMAIN:PORT/PATH` trusting only `root`; (HTTP status, body), or status 0 and
/// curl's error when the handshake fails.
fn https(pier: &Pier, root: &Path, domain: &str, path: &str, extra: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(root)
        .arg("--resolve")
        .arg(format!("{domain}:{}:127.0.0.1", pier.https_port))
        .args(extra)
        .arg(format!("https://{domain}:{}{path}", pier.https_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let code: u16 = code.trim().parse().unwrap_or(0);
    if code == 0 {
        return (0, String::from_utf8_lossy(&out.stderr).into_owned());
    }
    (code, body.to_owned())
}

/// Plain HTTP to `DOMAIN`: (status, headers and body).
fn http(pier: &Pier, domain: &str, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "--resolve",
        ])
        .arg(format!("{domain}:{}:127.0.0.1", pier.http_port))
        .arg(format!("http://{domain}:{}{path}", pier.http_port))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn mapping(pier: &Pier, domain: &str) -> serde_json::Value {
    serde_json::from_str(&pier.ok(&[
        "domain-mappings",
        "describe",
        "--domain",
        domain,
        "--format",
        "json",
    ]))
    .unwrap()
}

fn condition<'a>(m: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    m["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {m}"))
}

#[test]
fn a_verified_domain_gets_a_certificate_over_http01_and_keeps_the_services_guard() {
    let (http_port, https_port) = (free_port(), free_port());
    let acme = Acme::start(http_port, https_port, 3600);
    let data = tempfile::tempdir().unwrap();
    let mut pier = server(data.path(), &acme, &[]);
    let root = acme.root_file();
    pier.deploy_hello("shop", &["--allow-unauthenticated"]);

    // Ownership: the TXT record to create, then verified once DNS has it.
    let out = pier.ok(&["domains", "verify", "shop.example.com"]);
    assert!(out.contains("is not verified yet"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("_pier-challenge.shop.example.com TXT"))
        .unwrap_or_else(|| panic!("{out}"));
    let token = line.rsplit('"').nth(1).unwrap();
    acme.set_txt("_pier-challenge.shop.example.com", token);
    let out = pier.ok(&["domains", "verify", "shop.example.com"]);
    assert!(
        out.contains("is verified for project default (dns)"),
        "{out}"
    );

    // Nothing is served at a domain before it is mapped: no certificate, 404 over HTTP.
    let (code, err) = https(&pier, &root, "shop.example.com", "/", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(http(&pier, "shop.example.com", "/").0, 404);

    // The README's command, as printed.
    let out = pier.cli(&[
        "domain-mappings",
        "create",
        "--service",
        "shop",
        "--domain",
        "shop.example.com",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\n{}",
        pier.server_log()
    );
    assert!(stderr.contains("Creating domain mapping..."), "{stderr}");
    assert!(
        stderr.contains("add this DNS record: shop.example.com CNAME pier.localhost."),
        "{stderr}"
    );
    let url = format!("https://shop.example.com:{https_port}");
    assert!(
        stdout.contains(&format!("Done. {url} now serves service [shop]")),
        "{stdout}"
    );

    // Served with the CA's certificate, to the service, with the domain as its Host.
    let (code, body) = https(&pier, &root, "shop.example.com", "/", &[]);
    assert_eq!(code, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["service"], "shop");
    assert_eq!(
        echo["headers"]["host"],
        format!("shop.example.com:{https_port}")
    );
    let forwarded = echo["headers"]["forwarded"].as_str().unwrap();
    assert!(
        forwarded.ends_with(&format!(
            "proto=https;host=\"shop.example.com:{https_port}\""
        )),
        "{forwarded}"
    );
    // HTTP/2 too.
    let (code, _) = https(&pier, &root, "shop.example.com", "/", &["--http2"]);
    assert_eq!(code, 200);
    // An API gateway is a mapping target too: its operations, its keys, its JSON errors.
    let shop_url = pier.describe("shop")["url"].as_str().unwrap().to_owned();
    let spec = data.path().join("openapi.yaml");
    std::fs::write(
        &spec,
        format!("swagger: '2.0'\ninfo: {{title: t, version: '1'}}\nx-google-backend: {{address: '{shop_url}'}}\nsecurityDefinitions: {{k: {{type: apiKey, name: key, in: query}}}}\nsecurity: [{{k: []}}]\npaths:\n  /v1/items:\n    get: {{}}\n"),
    )
    .unwrap();
    pier.ok(&["api-gateway", "apis", "create", "shop"]);
    pier.ok(&[
        "api-gateway",
        "api-configs",
        "create",
        "v1",
        "--api",
        "shop",
        "--openapi-spec",
        spec.to_str().unwrap(),
    ]);
    pier.ok(&[
        "api-gateway",
        "gateways",
        "create",
        "shop-gw",
        "--api",
        "shop",
        "--api-config",
        "v1",
    ]);
    let key = pier
        .ok(&["api-keys", "create", "--display-name", "web"])
        .trim()
        .to_owned();
    acme.add_a("api.shop.example.com", "127.0.0.1");
    pier.ok(&[
        "domain-mappings",
        "create",
        "--gateway",
        "shop-gw",
        "--domain",
        "api.shop.example.com",
    ]);
    let (code, body) = https(
        &pier,
        &root,
        "api.shop.example.com",
        &format!("/v1/items?key={key}"),
        &[],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["service"],
        "shop"
    );
    let (code, body) = https(&pier, &root, "api.shop.example.com", "/v1/items", &[]);
    assert_eq!(code, 401, "{body}");
    assert!(body.starts_with("{\"code\":401"), "{body}");
    // So is a hosting site: its files and rules at the domain.
    let site = data.path().join("site");
    std::fs::create_dir_all(site.join("public")).unwrap();
    std::fs::write(site.join("public/index.html"), "<h1>the shop's site</h1>").unwrap();
    std::fs::write(
        site.join("firebase.json"),
        r#"{"hosting": {"site": "www", "public": "public", "rewrites": [{"source": "**", "destination": "/index.html"}]}}"#,
    )
    .unwrap();
    pier.ok(&[
        "hosting",
        "deploy",
        "--config",
        site.join("firebase.json").to_str().unwrap(),
    ]);
    acme.add_a("www.shop.example.com", "127.0.0.1");
    pier.ok(&[
        "domain-mappings",
        "create",
        "--site",
        "www",
        "--domain",
        "www.shop.example.com",
    ]);
    let (code, body) = https(&pier, &root, "www.shop.example.com", "/products/7", &[]);
    assert_eq!((code, body.as_str()), (200, "<h1>the shop's site</h1>"));
    // HTTP now redirects to it; ACME's path is not the app's.
    let (code, head) = http(&pier, "shop.example.com", "/x?y=1");
    assert_eq!(code, 302, "{head}");
    assert!(head.contains(&format!("{url}/x?y=1")), "{head}");
    assert_eq!(
        http(
            &pier,
            "shop.example.com",
            "/.well-known/acme-challenge/nope"
        )
        .0,
        302
    );

    // Cloud Run's shape.
    let yaml = pier.ok(&[
        "domain-mappings",
        "describe",
        "--domain",
        "shop.example.com",
        "--format",
        "yaml",
    ]);
    for want in [
        "apiVersion: domains.cloudrun.com/v1",
        "kind: DomainMapping",
        "routeName: shop",
        "certificateMode: AUTOMATIC",
        "type: CertificateProvisioned",
        "rrdata: pier.localhost.",
    ] {
        assert!(yaml.contains(want), "{want} in\n{yaml}");
    }
    let list = pier.ok(&["domain-mappings", "list"]);
    assert!(
        list.contains("shop.example.com") && list.contains("True"),
        "{list}"
    );
    // The order is counted in the server's metrics.
    let metrics_url = pier.api_get("/v1/info")["metricsUrl"]
        .as_str()
        .expect("the test server keeps metrics")
        .to_owned();
    let text = pier.curl(&["-sS", &metrics_url]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines().any(
            |l| l.starts_with("pier_acme_orders_total{result=\"valid\"}")
                && l.rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v >= 1.0)
        ),
        "pier_acme_orders_total counts the valid order:\n{text}"
    );

    // A private service at its custom domain: the same guard. A verified parent covers the subdomain.
    pier.deploy_hello("vault", &[]);
    let out = pier.ok(&["domains", "verify", "example.com"]);
    let token = out
        .lines()
        .find(|l| l.contains(" TXT "))
        .unwrap()
        .rsplit('"')
        .nth(1)
        .unwrap()
        .to_owned();
    acme.set_txt("_pier-challenge.example.com", &token);
    pier.ok(&["domains", "verify", "example.com"]);
    let out = pier.cli(&[
        "domain-mappings",
        "create",
        "--service",
        "vault",
        "--domain",
        "vault.example.com",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("service [vault] is private"), "{stderr}");
    let vault = format!("https://vault.example.com:{https_port}");
    assert_eq!(https(&pier, &root, "vault.example.com", "/", &[]).0, 403);
    // A token for the custom domain is refused until the service lists it as an audience.
    let token = pier.token_for(&vault);
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(
        https(&pier, &root, "vault.example.com", "/", &["-H", &bearer]).0,
        401
    );
    pier.ok(&[
        "services",
        "update",
        "vault",
        "--add-custom-audiences",
        &vault,
    ]);
    let (code, body) = https(&pier, &root, "vault.example.com", "/", &["-H", &bearer]);
    assert_eq!(code, 200, "{body}");
    // The service's own token works there too.
    let own = format!("Authorization: Bearer {}", pier.token());
    assert_eq!(
        https(&pier, &root, "vault.example.com", "/", &["-H", &own]).0,
        200
    );

    // One domain, one service: moving it needs --force-override.
    let err = pier.fails(&[
        "domain-mappings",
        "create",
        "--service",
        "vault",
        "--domain",
        "shop.example.com",
        "--async",
    ]);
    assert!(
        err.contains("already maps to service shop") && err.contains("--force-override"),
        "{err}"
    );
    pier.ok(&[
        "domain-mappings",
        "create",
        "--service",
        "vault",
        "--domain",
        "shop.example.com",
        "--force-override",
    ]);
    assert_eq!(
        https(&pier, &root, "shop.example.com", "/", &[]).0,
        403,
        "now the private vault"
    );
    pier.ok(&[
        "domain-mappings",
        "create",
        "--service",
        "shop",
        "--domain",
        "shop.example.com",
        "--force-override",
    ]);
    assert_eq!(https(&pier, &root, "shop.example.com", "/", &[]).0, 200);

    // Knative's DomainMapping, as `pier domain-mappings replace` takes it.
    let manifest = data.path().join("mapping.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: serving.knative.dev/v1beta1\nkind: DomainMapping\nmetadata:\n  name: www.example.com\nspec:\n  ref:\n    apiVersion: serving.knative.dev/v1\n    kind: Service\n    name: shop\n",
    )
    .unwrap();
    pier.ok(&["domain-mappings", "replace", manifest.to_str().unwrap()]);
    assert_eq!(https(&pier, &root, "www.example.com", "/", &[]).0, 200);

    // kill -9 with an order in flight: after a restart it is ordered again and served.
    pier.ok(&[
        "domain-mappings",
        "create",
        "--service",
        "shop",
        "--domain",
        "mid.example.com",
        "--async",
    ]);
    pier.kill9();
    let args = pier.args.clone();
    pier = Pier::launch(data.path(), &args);
    eventually(60, "mid.example.com after a kill -9", || {
        (https(&pier, &root, "mid.example.com", "/", &[]).0 == 200).then_some(())
    });

    // Restart: the same mappings, the stored certificates, no new order.
    pier.terminate();
    let orders_before = pier.server_log().matches("ordering certificate").count();
    let args = pier.args.clone();
    let pier2 = Pier::launch(data.path(), &args);
    assert_eq!(https(&pier2, &root, "shop.example.com", "/", &[]).0, 200);
    assert_eq!(
        https(&pier2, &root, "vault.example.com", "/", &["-H", &bearer]).0,
        200
    );
    assert!(mapping(&pier2, "shop.example.com")["conditions"][0]["status"] == "True");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(
        pier2.server_log().matches("ordering certificate").count(),
        orders_before,
        "{}",
        pier2.server_log()
    );

    // Delete: no longer served, over HTTPS or HTTP.
    pier2.ok(&["domain-mappings", "delete", "--domain", "vault.example.com"]);
    assert_eq!(https(&pier2, &root, "vault.example.com", "/", &[]).0, 0);
    assert_eq!(http(&pier2, "vault.example.com", "/").0, 404);
    let err = pier2.fails(&[
        "domain-mappings",
        "describe",
        "--domain",
        "vault.example.com",
    ]);
    assert!(err.contains("not mapped"), "{err}");
}

#[test]
fn tls_alpn01_unverified_and_unpointed_domains_say_why_and_a_ca_outage_keeps_certificates() {
    let (http_port, https_port) = (free_port(), free_port());
    // Certificates valid for 24 s: renewed after about 16.
    let mut acme = Acme::start(http_port, https_port, 24);
    let data = tempfile::tempdir().unwrap();
    let pier = server(data.path(), &acme, &["--acme-challenge", "tls-alpn-01"]);
    let root = acme.root_file();
    pier.deploy_hello("web", &["--allow-unauthenticated"]);

    // Unverified: the mapping exists, serves nothing, and says why; the CLI stops waiting at once.
    let err = pier.fails(&[
        "domain-mappings",
        "create",
        "--service",
        "web",
        "--domain",
        "web.example.org",
    ]);
    assert!(
        err.contains("PermissionDenied") && err.contains("pier domains verify web.example.org"),
        "{err}"
    );
    assert_eq!(http(&pier, "web.example.org", "/").0, 404);

    // DNS that points elsewhere: said with what it resolves to and what it should.
    acme.set_default_ipv4("");
    acme.add_a("pier.localhost", "127.0.0.1");
    acme.add_a("web.example.org", "192.0.2.7");
    pier.ok(&["domains", "verify", "web.example.org", "--without-dns"]);
    let m = eventually(20, "DnsNotPointing", || {
        let m = mapping(&pier, "web.example.org");
        (condition(&m, "DomainRoutable")["reason"] == "DnsNotPointing").then_some(m)
    });
    let msg = condition(&m, "DomainRoutable")["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("192.0.2.7")
            && msg.contains("127.0.0.1")
            && msg.contains("CNAME pier.localhost."),
        "{msg}"
    );
    assert_eq!(condition(&m, "Ready")["status"], "False");
    // Routed (verified) but no certificate yet: plain HTTP says so and when to retry; never a redirect.
    let (code, head) = http(&pier, "web.example.org", "/");
    assert_eq!(code, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 30"),
        "{head}"
    );
    assert!(head.contains("being issued"), "{head}");
    assert_eq!(
        https(&pier, &root, "web.example.org", "/", &[]).0,
        0,
        "no certificate, no handshake"
    );

    // Once DNS points here, the certificate follows (TLS-ALPN-01: validated on the HTTPS port).
    acme.clear_a("web.example.org");
    acme.add_a("web.example.org", "127.0.0.1");
    let m = eventually(60, "the mapping to become ready", || {
        let m = mapping(&pier, "web.example.org");
        (condition(&m, "Ready")["status"] == "True").then_some(m)
    });
    assert!(m["certificateExpires"].is_string(), "{m}");
    assert_eq!(https(&pier, &root, "web.example.org", "/", &[]).0, 200);
    assert!(
        pier.server_log().contains("challenge=TlsAlpn01"),
        "{}",
        pier.server_log()
    );

    // Renewal at a third of the lifetime left: a new certificate, served without a gap.
    let first = m["certificateExpires"].as_str().unwrap().to_owned();
    eventually(30, "a renewed certificate", || {
        assert_eq!(https(&pier, &root, "web.example.org", "/", &[]).0, 200);
        let m = mapping(&pier, "web.example.org");
        (m["certificateExpires"].as_str() != Some(first.as_str())).then_some(())
    });

    // A certificate of the operator's own (mode NONE), read from files and reloaded when they change.
    let own = tempfile::tempdir().unwrap();
    let (ca1, cert, key) =
        acme::ca_and_leaf(own.path(), "one", "own.example.org", "DNS:own.example.org");
    acme.add_a("own.example.org", "127.0.0.1");
    pier.ok(&["domains", "verify", "own.example.org", "--without-dns"]);
    let err = pier.fails(&[
        "domain-mappings",
        "create",
        "--service",
        "web",
        "--domain",
        "own.example.org",
        "--certificate-mode",
        "none",
    ]);
    assert!(
        err.contains("--certificate-file and --private-key-file"),
        "{err}"
    );
    pier.ok(&[
        "domain-mappings",
        "create",
        "--service",
        "web",
        "--domain",
        "own.example.org",
        "--certificate-mode",
        "none",
        "--certificate-file",
        cert.to_str().unwrap(),
        "--private-key-file",
        key.to_str().unwrap(),
    ]);
    assert_eq!(https(&pier, &ca1, "own.example.org", "/", &[]).0, 200);
    let (ca2, cert2, key2) =
        acme::ca_and_leaf(own.path(), "two", "own.example.org", "DNS:own.example.org");
    std::fs::rename(&key2, &key).unwrap();
    std::fs::rename(&cert2, &cert).unwrap();
    eventually(30, "the replaced certificate", || {
        (https(&pier, &ca2, "own.example.org", "/", &[]).0 == 200).then_some(())
    });
    assert_eq!(
        https(&pier, &ca1, "own.example.org", "/", &[]).0,
        0,
        "the old one is gone"
    );

    // The CA goes down: a new mapping fails with the reason and backs off; the existing one keeps serving.
    acme.stop_pebble();
    acme.add_a("api.example.org", "127.0.0.1");
    pier.ok(&["domains", "verify", "api.example.org", "--without-dns"]);
    let err = pier.fails(&[
        "domain-mappings",
        "create",
        "--service",
        "web",
        "--domain",
        "api.example.org",
    ]);
    assert!(
        err.contains("CertificateProvisionFailed") && err.contains("next try at"),
        "{err}"
    );
    assert_eq!(https(&pier, &root, "web.example.org", "/", &[]).0, 200);
    // A name mapped nowhere: no certificate at all.
    let (code, e) = https(&pier, &root, "nowhere.example.org", "/", &[]);
    assert_eq!(code, 0, "{e}");
}
