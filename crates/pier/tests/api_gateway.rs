//! The API gateway end to end, as the README shows it: an OpenAPI 2.0 document in the style of Google's
//! bookstore example and an OpenAPI 3 one, in front of two services (one private), with API keys, JWTs
//! from Pier and from a second Pier acting as an external issuer, a quota, CORS, validation, a config
//! switch under steady load, and a backend that is down or slow. Real TLS, real curl, real servers.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;

/// (status, body, headers) of `curl ARGS URL`.
fn call(p: &Pier, args: &[&str]) -> (u16, String, String) {
    let hdr = p.dir.join(format!("headers-{}", fastrand_suffix()));
    let mut full = vec!["-D", hdr.to_str().unwrap(), "-w", "\n%{http_code}"];
    full.extend_from_slice(args);
    let out = p.curl(&full);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
    let _ = std::fs::remove_file(&hdr);
    (code.trim().parse().unwrap_or(0), body.to_owned(), headers)
}

fn fastrand_suffix() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn spec_v1(items: &str, orders: &str, idp: &str) -> String {
    format!(
        r##"swagger: "2.0"
info: {{title: Shop, version: "1.0"}}
host: shop.endpoints.example.cloud.goog
x-google-backend:
  address: {items}
securityDefinitions:
  api_key: {{type: apiKey, name: key, in: query}}
  pier:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: PIER_ISSUER
    x-google-audiences: shop-api
  partner:
    type: oauth2
    flow: implicit
    authorizationUrl: ""
    x-google-issuer: {idp}
    x-google-audiences: shop-api
x-google-management:
  metrics: [{{name: quota-reads, valueType: INT64, metricKind: DELTA}}]
  quota:
    limits: [{{name: r, metric: quota-reads, unit: "1/min/{{project}}", values: {{STANDARD: 5}}}}]
security: [{{api_key: []}}]
paths:
  /v1/items:
    get: {{operationId: listItems}}
  /v1/orders/{{id}}:
    get:
      operationId: getOrder
      parameters: [{{name: id, in: path, required: true, type: integer}}]
      x-google-backend: {{address: "{orders}/orders"}}
  /v1/orders:
    post:
      operationId: createOrder
      security: [{{pier: []}}, {{partner: []}}]
      x-pier-validate: true
      parameters:
        - {{name: order, in: body, required: true, schema: {{$ref: "#/definitions/Order"}}}}
  /v1/quota:
    get:
      operationId: quota
      x-google-quota: {{metricCosts: {{quota-reads: 1}}}}
  /v1/slow:
    get:
      operationId: slow
      security: []
      x-google-backend: {{address: "{items}/sleep", deadline: 1}}
  /v1/down:
    get:
      operationId: down
      security: []
      x-google-backend: {{address: "http://127.0.0.1:1/"}}
definitions:
  Order:
    type: object
    additionalProperties: false
    required: [item, count]
    properties:
      item: {{type: string}}
      count: {{type: integer, minimum: 1}}
"##
    )
}

#[test]
fn an_openapi_config_guards_and_routes_two_services() {
    let idp = Pier::start(&["--domain", "idp.localhost"]);
    let idp_issuer = format!("https://idp.localhost:{}", idp.https_port);
    let idp_ca = idp.dir.join("ca.pem");
    // Local backends allowed, for the dead one at 127.0.0.1:1 below.
    let p = Pier::start(&[
        "--oidc-ca",
        idp_ca.to_str().unwrap(),
        "--api-gateway-local-backends",
    ]);
    let items = p.deploy_hello("items", &["--allow-unauthenticated"]);
    let orders = p.deploy_hello("orders", &[]);
    let issuer = format!("https://pier.localhost:{}", p.https_port);
    let spec = spec_v1(&items, &orders, &idp_issuer).replace("PIER_ISSUER", &issuer);
    let file = p.dir.join("openapi.yaml");
    std::fs::write(&file, &spec).unwrap();

    // A faulty document is refused with the pointer of the fault.
    let bad = p.dir.join("bad.yaml");
    std::fs::write(&bad, spec.replace("deadline: 1", "deadline: soon")).unwrap();
    p.ok(&["api-gateway", "apis", "create", "shop"]);
    let e = p.fails(&[
        "api-gateway",
        "api-configs",
        "create",
        "bad",
        "--api",
        "shop",
        "--openapi-spec",
        bad.to_str().unwrap(),
    ]);
    assert!(
        e.contains("/paths/~1v1~1slow/get/x-google-backend/deadline"),
        "{e}"
    );

    let out = p.ok(&[
        "api-gateway",
        "api-configs",
        "create",
        "shop-v1",
        "--api",
        "shop",
        "--openapi-spec",
        file.to_str().unwrap(),
    ]);
    assert!(out.contains("GET /v1/orders/{id} (getOrder)"), "{out}");
    let gw = p
        .ok(&[
            "api-gateway",
            "gateways",
            "create",
            "shop-gw",
            "--api",
            "shop",
            "--api-config",
            "shop-v1",
            "--cors-allow-origins",
            "https://shop.example",
        ])
        .trim()
        .to_owned();
    assert!(
        gw.starts_with("https://shop-gw-") && gw.contains(".pier.localhost:"),
        "{gw}"
    );
    let key = p
        .ok(&[
            "api-keys",
            "create",
            "--display-name",
            "mobile",
            "--api-target",
            "shop",
        ])
        .trim()
        .to_owned();
    assert!(key.starts_with("AIza") && key.len() == 39, "{key}");
    let elsewhere = p
        .ok(&[
            "api-keys",
            "create",
            "--display-name",
            "other",
            "--api-target",
            "other-api",
        ])
        .trim()
        .to_owned();

    // Keys: missing, wrong, restricted elsewhere (ESPv2's JSON errors); right in the query or header.
    let (s, b, _) = call(&p, &[&format!("{gw}/v1/items")]);
    assert_eq!((s, json(&b)["code"].as_u64()), (401, Some(401)), "{b}");
    assert!(b.contains("UNAUTHENTICATED"), "{b}");
    let (s, _, _) = call(
        &p,
        &[&format!(
            "{gw}/v1/items?key=AIzaNotAKeyNotAKeyNotAKeyNotAKeyNotAKe"
        )],
    );
    assert_eq!(s, 401);
    let (s, b, _) = call(&p, &[&format!("{gw}/v1/items?key={elsewhere}")]);
    assert_eq!(s, 403, "{b}");
    let (s, b, _) = call(
        &p,
        &[
            &format!("{gw}/v1/items?key={key}&x=1"),
            "-H",
            "Authorization: Bearer caller-token",
            "-H",
            "X-Endpoint-API-UserInfo: forged",
        ],
    );
    assert_eq!(s, 200, "{b}");
    let echo = json(&b);
    assert_eq!(echo["service"], "items");
    assert!(
        echo["uri"].as_str().unwrap().starts_with("/v1/items?key="),
        "{echo}"
    );
    assert_eq!(
        echo["headers"]["x-forwarded-authorization"],
        "Bearer caller-token"
    );
    assert!(
        echo["headers"].get("x-endpoint-api-userinfo").is_none(),
        "{echo}"
    );
    let (s, _, _) = call(
        &p,
        &[
            &format!("{gw}/v1/items"),
            "-H",
            &format!("x-api-key: {key}"),
        ],
    );
    assert_eq!(s, 200);

    // Paths that could mean one thing here and another to the backend, and header spellings that
    // could pass for Pier's, are refused.
    for path in ["/v1/items/..%2Fitems", "//v1/items", "/v1/./items"] {
        let (s, b, _) = call(&p, &["--path-as-is", &format!("{gw}{path}?key={key}")]);
        assert_eq!(s, 400, "{path}: {b}");
    }
    let (s, _, _) = call(
        &p,
        &[
            "-H",
            "X_Endpoint_API_UserInfo: forged",
            &format!("{gw}/v1/items?key={key}"),
        ],
    );
    assert_eq!(s, 400);

    // 404 and 405 in ESPv2's words.
    let (s, b, _) = call(&p, &[&format!("{gw}/v9/nothing?key={key}")]);
    assert_eq!(s, 404);
    assert_eq!(
        json(&b)["message"],
        "The current request is not defined by this API."
    );
    let (s, _, _) = call(&p, &["-X", "DELETE", &format!("{gw}/v1/items?key={key}")]);
    assert_eq!(s, 405);

    // The private service: refused by its own guard until the gateway's account may invoke it.
    let (s, b, _) = call(&p, &[&format!("{gw}/v1/orders/42?key={key}")]);
    assert_eq!(s, 403, "{b}");
    p.ok(&[
        "services",
        "add-iam-policy-binding",
        "orders",
        "--member",
        "serviceAccount:compute@default.iam.pier.localhost",
        "--role",
        "roles/run.invoker",
    ]);
    let b = eventually(10, "the gateway allowed to invoke orders", || {
        let (s, b, _) = call(&p, &[&format!("{gw}/v1/orders/42?key={key}")]);
        (s == 200).then_some(b)
    });
    let echo = json(&b);
    assert_eq!(echo["service"], "orders");
    assert!(
        echo["uri"].as_str().unwrap().starts_with("/orders?key="),
        "{echo}"
    );
    assert!(echo["uri"].as_str().unwrap().ends_with("&id=42"), "{echo}");
    // The gateway's token reached the app verified, its signature removed.
    assert!(
        echo["headers"]["authorization"]
            .as_str()
            .unwrap()
            .ends_with(".SIGNATURE_REMOVED_BY_PIER"),
        "{echo}"
    );

    // End-user JWTs: Pier's own and an external issuer's; the payload reaches the backend.
    let order = r#"{"item": "book", "count": 2}"#;
    let post = |token: Option<&str>, body: &str| {
        let mut a = vec![
            "-X".to_owned(),
            "POST".into(),
            "-H".into(),
            "content-type: application/json".into(),
            "--data".into(),
            body.into(),
        ];
        if let Some(t) = token {
            a.push("-H".into());
            a.push(format!("Authorization: Bearer {t}"));
        }
        a.push(format!("{gw}/v1/orders"));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        call(&p, &refs)
    };
    let (s, b, h) = post(None, order);
    assert_eq!(
        (s, json(&b)["message"].as_str()),
        (401, Some("Jwt is missing")),
        "{b}"
    );
    assert!(
        h.to_ascii_lowercase()
            .contains("www-authenticate: bearer realm="),
        "{h}"
    );
    let pier_jwt = p.token_for("shop-api");
    let (s, b, _) = post(Some(&pier_jwt), order);
    assert_eq!(s, 200, "{b}");
    let user = json(&b)["headers"]["x-endpoint-api-userinfo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(user, pier_jwt.split('.').nth(1).unwrap());
    // A Pier token for another audience never reaches the API whole (the guard removes its signature).
    let (s, _, _) = post(Some(&p.token_for("someone-else")), order);
    assert_eq!(s, 401);
    let partner_jwt = idp.token_for("shop-api");
    let b = eventually(20, "the external issuer's keys", || {
        let (s, b, _) = post(Some(&partner_jwt), order);
        (s == 200).then_some(b)
    });
    assert_eq!(json(&b)["service"], "items");
    let (s, b, _) = post(Some(&idp.token_for("someone-else")), order);
    assert_eq!(
        (s, json(&b)["message"].as_str()),
        (403, Some("Audiences in Jwt are not allowed")),
        "{b}"
    );
    // A stranger's token, signed by keys nobody published.
    let stranger = Pier::start(&["--domain", "stranger.localhost"]);
    let forged = stranger.token_for("shop-api");
    let (s, _, _) = post(Some(&forged), order);
    assert_eq!(s, 401);

    // Validation: every violation listed, nothing reaches the backend.
    let (s, b, _) = post(Some(&pier_jwt), r#"{"item": 5, "extra": true}"#);
    assert_eq!(s, 400, "{b}");
    let v = json(&b);
    let paths: Vec<&str> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/body/item"), "{v}");
    assert!(
        paths.iter().filter(|p| **p == "/body").count() >= 2,
        "missing count and extra field: {v}"
    );

    // Quota of 5 a minute: the sixth is 429 with Retry-After.
    for i in 0..5 {
        let (s, b, _) = call(&p, &[&format!("{gw}/v1/quota?key={key}")]);
        assert_eq!(s, 200, "call {i}: {b}");
    }
    let (s, b, h) = call(&p, &[&format!("{gw}/v1/quota?key={key}")]);
    assert_eq!(s, 429, "{b}");
    assert!(h.to_ascii_lowercase().contains("retry-after:"), "{h}");

    // CORS preflight from the allowed origin, answered by the gateway without a key.
    let (s, _, h) = call(
        &p,
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: https://shop.example",
            "-H",
            "Access-Control-Request-Method: POST",
            &format!("{gw}/v1/orders"),
        ],
    );
    assert_eq!(s, 200, "{h}");
    assert!(
        h.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://shop.example"),
        "{h}"
    );
    let (s, _, _) = call(
        &p,
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: https://evil.example",
            "-H",
            "Access-Control-Request-Method: POST",
            &format!("{gw}/v1/orders"),
        ],
    );
    assert_eq!(s, 400);
    // The gateway's own refusals are readable by the allowed origin's pages.
    let (s, _, h) = call(
        &p,
        &[
            "-H",
            "Origin: https://shop.example",
            &format!("{gw}/v1/items"),
        ],
    );
    assert_eq!(s, 401);
    assert!(
        h.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://shop.example"),
        "{h}"
    );
    let e = p.fails(&[
        "api-gateway",
        "gateways",
        "update",
        "shop-gw",
        "--cors-allow-origins",
        "*",
        "--cors-allow-credentials",
    ]);
    assert!(e.contains("list the origins"), "{e}");

    // Deadline and a dead backend.
    let started = std::time::Instant::now();
    let (s, b, _) = call(&p, &[&format!("{gw}/v1/slow?ms=4000")]);
    assert_eq!(
        (s, json(&b)["message"].as_str()),
        (504, Some("upstream request timeout")),
        "{b}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (s, b, h) = call(
        &p,
        &[
            "-H",
            "Origin: https://shop.example",
            &format!("{gw}/v1/down"),
        ],
    );
    assert_eq!(s, 503, "{b}");
    assert!(
        h.to_ascii_lowercase()
            .contains("access-control-allow-origin: https://shop.example"),
        "{h}"
    );

    // Revoking a key stops it at once.
    let keys = json(&p.ok(&["api-keys", "list", "--format", "json"]));
    let uid = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["displayName"] == "mobile")
        .unwrap()["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    p.ok(&["api-keys", "delete", &uid]);
    let (s, _, _) = call(&p, &[&format!("{gw}/v1/items?key={key}")]);
    assert_eq!(s, 401);
    p.ok(&["api-keys", "undelete", &uid]);
    let (s, _, _) = call(&p, &[&format!("{gw}/v1/items?key={key}")]);
    assert_eq!(s, 200);

    // An OpenAPI 3 config, switched to and back under steady load: no request fails.
    let v3 = format!(
        r#"{{"openapi": "3.0.3", "info": {{"title": "Shop", "version": "2"}},
          "x-google-backend": {{"address": "{items}"}},
          "components": {{"securitySchemes": {{"k": {{"type": "apiKey", "name": "key", "in": "query"}}}}}},
          "security": [{{"k": []}}],
          "paths": {{"/v1/items": {{"get": {{"x-pier-validate": true, "parameters": [{{"name": "n", "in": "query", "schema": {{"type": "integer", "maximum": 9}}}}]}}}}}}}}"#
    );
    let file3 = p.dir.join("openapi-v3.json");
    std::fs::write(&file3, v3).unwrap();
    p.ok(&[
        "api-gateway",
        "api-configs",
        "create",
        "shop-v2",
        "--api",
        "shop",
        "--openapi-spec",
        file3.to_str().unwrap(),
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let rt = rt();
    let load = {
        let (client, url, stop, ok, failed) = (
            p.client(),
            format!("{gw}/v1/items?key={key}"),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    p.ok(&[
        "api-gateway",
        "gateways",
        "update",
        "shop-gw",
        "--api-config",
        "shop-v2",
    ]);
    let (s, b, _) = call(&p, &[&format!("{gw}/v1/items?key={key}&n=10")]);
    assert_eq!(s, 400, "shop-v2 validates n: {b}");
    let (s, _, _) = call(&p, &[&format!("{gw}/v1/orders/1?key={key}")]);
    assert_eq!(s, 404, "shop-v2 has no orders");
    p.ok(&[
        "api-gateway",
        "gateways",
        "update",
        "shop-gw",
        "--api-config",
        "shop-v1",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(load).unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the switch"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "too little load: {}",
        ok.load(Ordering::Relaxed)
    );

    // Describe and list in the formats the README names; a config in use cannot be deleted.
    let g = json(&p.ok(&[
        "api-gateway",
        "gateways",
        "describe",
        "shop-gw",
        "--format",
        "json",
    ]));
    assert_eq!(g["apiConfig"], "shop-v1");
    assert_eq!(g["defaultHostname"], gw.as_str());
    let a = json(&p.ok(&[
        "api-gateway",
        "apis",
        "describe",
        "shop",
        "--format",
        "json",
    ]));
    assert_eq!(a["name"], "shop");
    let k = p.ok(&["api-keys", "describe", &uid, "--format", "yaml"]);
    assert!(
        k.contains("displayName: mobile") && !k.contains(&key),
        "{k}"
    );
    let y = p.ok(&[
        "api-gateway",
        "api-configs",
        "list",
        "--api",
        "shop",
        "--format",
        "yaml",
    ]);
    assert!(y.contains("shop-v2"), "{y}");
    let e = p.fails(&[
        "api-gateway",
        "api-configs",
        "delete",
        "shop-v1",
        "--api",
        "shop",
    ]);
    assert!(e.contains("serves config shop-v1"), "{e}");
    p.ok(&["api-gateway", "gateways", "delete", "shop-gw"]);
    let (s, _, _) = call(&p, &[&format!("{gw}/v1/items?key={key}")]);
    assert_ne!(s, 200);
}

#[test]
fn making_a_gateway_public_needs_the_right_to_set_iam_policies() {
    let p = Pier::start(&[]);
    let items = p.deploy_hello("items", &["--allow-unauthenticated"]);
    let file = p.dir.join("openapi.yaml");
    std::fs::write(
        &file,
        format!("swagger: '2.0'\ninfo: {{title: t, version: '1'}}\nx-google-backend: {{address: '{items}'}}\npaths:\n  /a:\n    get: {{}}\n"),
    )
    .unwrap();
    p.ok(&["api-gateway", "apis", "create", "shop"]);
    p.ok(&[
        "api-gateway",
        "api-configs",
        "create",
        "v1",
        "--api",
        "shop",
        "--openapi-spec",
        file.to_str().unwrap(),
    ]);
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
    let e = dev.fails(&[
        "api-gateway",
        "gateways",
        "create",
        "gw",
        "--api",
        "shop",
        "--api-config",
        "v1",
    ]);
    assert!(e.contains("run.services.setIamPolicy"), "{e}");
    // A developer who may act as the account can still make a private one.
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
    let url = dev
        .ok(&[
            "api-gateway",
            "gateways",
            "create",
            "gw",
            "--api",
            "shop",
            "--api-config",
            "v1",
            "--no-allow-unauthenticated",
        ])
        .trim()
        .to_owned();
    let (s, b, _) = call(&p, &[&format!("{url}/a")]);
    assert_eq!(s, 403, "private gateway: {b}");
    let token = p.token_for(&url);
    let (s, b, _) = call(
        &p,
        &[
            "-H",
            &format!("X-Serverless-Authorization: Bearer {token}"),
            &format!("{url}/a"),
        ],
    );
    assert_eq!(s, 200, "{b}");

    // By default a config cannot make the server call this machine (or a cloud's metadata server).
    std::fs::write(
        &file,
        "swagger: '2.0'\ninfo: {title: t, version: '1'}\nx-google-backend: {address: 'http://127.0.0.1:9/'}\npaths:\n  /a:\n    get: {}\n",
    )
    .unwrap();
    p.ok(&[
        "api-gateway",
        "api-configs",
        "create",
        "v2",
        "--api",
        "shop",
        "--openapi-spec",
        file.to_str().unwrap(),
    ]);
    dev.ok(&[
        "api-gateway",
        "gateways",
        "update",
        "gw",
        "--api-config",
        "v2",
    ]);
    let (s, b, _) = call(
        &p,
        &[
            "-H",
            &format!("X-Serverless-Authorization: Bearer {token}"),
            &format!("{url}/a"),
        ],
    );
    assert_eq!(s, 503, "{b}");
    assert!(b.contains("--api-gateway-local-backends"), "{b}");
}

#[test]
fn end_user_tokens_guard_a_plain_service_without_a_gateway() {
    let idp = Pier::start(&["--domain", "idp.localhost"]);
    let issuer = format!("oidc:https://idp.localhost:{}", idp.https_port);
    let idp_ca = idp.dir.join("ca.pem");
    let p = Pier::start(&["--oidc-ca", idp_ca.to_str().unwrap()]);
    let url = p.deploy_hello(
        "app",
        &["--allow-unauthenticated", "--end-user-auth", &issuer],
    );
    let (s, b, h) = call(&p, &[&url]);
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("end user's ID token"), "{b}");
    assert!(
        h.to_ascii_lowercase().contains("www-authenticate: bearer"),
        "{h}"
    );
    let token = idp.token_for(&url);
    let b = eventually(20, "the issuer's keys", || {
        let (s, b, _) = call(&p, &["-H", &format!("Authorization: Bearer {token}"), &url]);
        (s == 200).then_some(b)
    });
    assert_eq!(
        json(&b)["headers"]["x-endpoint-api-userinfo"],
        token.split('.').nth(1).unwrap()
    );
    let (s, b, _) = call(
        &p,
        &[
            "-H",
            &format!(
                "Authorization: Bearer {}",
                idp.token_for("https://elsewhere.example")
            ),
            &url,
        ],
    );
    assert_eq!(s, 403, "{b}");
    // A client's own user header never reaches the app.
    let (s, b, _) = call(&p, &["-H", "X-Endpoint-API-UserInfo: forged", &url]);
    assert_eq!(s, 401, "{b}");

    // Optional: no token passes (no user header); a bad one is still refused.
    p.ok(&[
        "services",
        "update",
        "app",
        "--end-user-auth",
        &issuer,
        "--end-user-auth-optional",
    ]);
    let b = eventually(10, "optional end-user auth", || {
        let (s, b, _) = call(&p, &["-H", "X-Endpoint-API-UserInfo: forged", &url]);
        (s == 200).then_some(b)
    });
    assert!(
        json(&b)["headers"].get("x-endpoint-api-userinfo").is_none(),
        "{b}"
    );
    let (s, _, _) = call(&p, &["-H", "Authorization: Bearer not.a.token", &url]);
    assert_eq!(s, 401);

    // A private service: IAM in X-Serverless-Authorization, the end user in Authorization.
    let private = p.deploy_hello("private-app", &["--end-user-auth", &issuer]);
    let iam = p.token_for(&private);
    let user = idp.token_for(&private);
    let (s, b, _) = call(
        &p,
        &[
            "-H",
            &format!("X-Serverless-Authorization: Bearer {iam}"),
            "-H",
            &format!("Authorization: Bearer {user}"),
            &private,
        ],
    );
    assert_eq!(s, 200, "{b}");
    let (s, b, _) = call(
        &p,
        &["-H", &format!("Authorization: Bearer {iam}"), &private],
    );
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("X-Serverless-Authorization"), "{b}");

    // `none` stops the check.
    p.ok(&["services", "update", "app", "--end-user-auth", "none"]);
    let d = p.describe("app");
    assert!(d.get("endUserAuth").is_none(), "{d}");
    // Pier itself as the issuer, with an audience of the app's own: the guard keeps such a token whole
    // for the check (and never takes it for an IAM token).
    let own = format!(
        "oidc:https://pier.localhost:{},audiences=my-app",
        p.https_port
    );
    p.ok(&["services", "update", "app", "--end-user-auth", &own]);
    let mine = p.token_for("my-app");
    let b = eventually(10, "Pier as the end users' issuer", || {
        let (s, b, _) = call(&p, &["-H", &format!("Authorization: Bearer {mine}"), &url]);
        (s == 200).then_some(b)
    });
    assert_eq!(
        json(&b)["headers"]["authorization"],
        format!("Bearer {mine}")
    );
    let (s, _, _) = call(
        &p,
        &[
            "-H",
            &format!("X-Serverless-Authorization: Bearer {mine}"),
            "-H",
            &format!("Authorization: Bearer {mine}"),
            &private,
        ],
    );
    assert_eq!(s, 401, "an end-user audience is not an IAM audience");
    p.ok(&["services", "update", "app", "--end-user-auth", "none"]);
    let e = p.fails(&["services", "update", "app", "--end-user-auth", "saml:x"]);
    assert!(e.contains("oidc:https://ISSUER"), "{e}");
}

/// A static page served from its own origin (Python's http.server), stopped on drop.
struct Page(std::process::Child);

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_page(dir: &std::path::Path, port: u16) -> Page {
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(10, "the page server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Page(child)
}

/// Headless Chromium loads `url` and prints the page's DOM once its scripts are done; Pier's CA is
/// trusted in the browser's own store (an NSS database in `home`), as a user does with certutil.
fn browser(home: &std::path::Path, url: &str) -> String {
    let out = std::process::Command::new("chromium")
        .env("HOME", home)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            home.join("profile").display()
        ))
        .arg(url)
        .output()
        .expect("running chromium (scripts/install-test-deps installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_web_page_calls_a_gateway_across_origins_in_a_real_browser() {
    let p = Pier::start(&[]);
    let items = p.deploy_hello("items", &["--allow-unauthenticated"]);
    let file = p.dir.join("openapi.yaml");
    std::fs::write(
        &file,
        format!("swagger: '2.0'\ninfo: {{title: t, version: '1'}}\nx-google-backend: {{address: '{items}'}}\nsecurityDefinitions: {{k: {{type: apiKey, name: key, in: query}}}}\nsecurity: [{{k: []}}]\npaths:\n  /v1/items:\n    post: {{}}\n"),
    )
    .unwrap();
    let (allowed_port, other_port) = (free_port(), free_port());
    let origin = format!("http://127.0.0.1:{allowed_port}");
    p.ok(&["api-gateway", "apis", "create", "shop"]);
    p.ok(&[
        "api-gateway",
        "api-configs",
        "create",
        "v1",
        "--api",
        "shop",
        "--openapi-spec",
        file.to_str().unwrap(),
    ]);
    let gw = p
        .ok(&[
            "api-gateway",
            "gateways",
            "create",
            "gw",
            "--api",
            "shop",
            "--api-config",
            "v1",
            "--cors-allow-origins",
            &origin,
        ])
        .trim()
        .to_owned();
    let key = p
        .ok(&["api-keys", "create", "--display-name", "web"])
        .trim()
        .to_owned();

    // The page POSTs JSON with the key in a header: the browser sends a preflight first.
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("index.html"),
        format!(
            r#"<html><body><pre id="out">pending</pre><script>
async function call(label, headers) {{
  try {{
    const r = await fetch("{gw}/v1/items", {{method: "POST", headers, body: "{{}}"}});
    const j = await r.json();
    return label + " " + r.status + " " + (j.service || j.code);
  }} catch (e) {{ return label + " failed " + e; }}
}}
(async () => {{
  const a = await call("with-key", {{"Content-Type": "application/json", "X-Api-Key": "{key}"}});
  const b = await call("without-key", {{"Content-Type": "application/json"}});
  document.getElementById("out").textContent = a + " | " + b;
}})();
</script></body></html>"#
        ),
    )
    .unwrap();
    let _allowed = serve_page(site.path(), allowed_port);
    let _other = serve_page(site.path(), other_port);

    // The browser trusts Pier's CA in its own store.
    let home = browser_home(&p);
    let dom = browser(home.path(), &format!("{origin}/index.html"));
    assert!(dom.contains("with-key 200 items"), "{dom}");
    // The gateway's own 401 is readable by the allowed origin's page.
    assert!(dom.contains("without-key 401 401"), "{dom}");
    // Another origin's page is refused by the browser: the preflight fails.
    let dom = browser(
        home.path(),
        &format!("http://127.0.0.1:{other_port}/index.html"),
    );
    assert!(dom.contains("with-key failed TypeError"), "{dom}");
}
