//! The filter on the bookstore document: operations, keys, JWTs, quotas, validation and the backend
//! call, with real key rings and a test double standing in for the gateway's token minting.

use super::*;
use crate::keys::{KeyEntry, prefix};
use crate::quota::Clock;
use crate::spec::tests::BOOKSTORE;
use pier_gateway::{Access, AllowAll, Backend};
use pier_identity::keys::{KeyRing, RotationPolicy};
use std::sync::atomic::{AtomicU64, Ordering};

/// Test double for the gateway's service account: names the audience it was asked for.
struct FakeTokens;

impl BackendTokens for FakeTokens {
    fn id_token(&self, audience: &str) -> Result<String, String> {
        Ok(format!("gateway-token-for-{audience}"))
    }
}

/// A key set served from memory (the issuer's keys, without HTTP).
struct Served(Vec<u8>);

impl crate::jwt::JwksFetch for Served {
    fn fetch(&self, _: &JwksSource) -> crate::jwt::Fetched {
        let doc = self.0.clone();
        Box::pin(async move { Ok((doc, None)) })
    }
}

struct StillClock(AtomicU64);

impl Clock for StillClock {
    fn now_secs(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Setup {
    filter: ApiFilter,
    route: Route,
    key: String,
    other_project_key: String,
    restricted_key: String,
    ring: KeyRing,
    _dir: tempfile::TempDir,
}

fn entry(key: &str, project: &str, targets: &[&str]) -> (String, KeyEntry) {
    (
        prefix(key).to_owned(),
        KeyEntry {
            uid: format!("k-{project}"),
            project: project.into(),
            digest: pier_identity::passwords::secret_digest(key),
            api_targets: targets.iter().map(|t| t.to_string()).collect(),
        },
    )
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::open(dir.path(), RotationPolicy::default()).unwrap();
    let registry = JwksRegistry::new(Arc::new(Served(serde_json::to_vec(&ring.jwks()).unwrap())));
    let key = crate::keys::generate().unwrap();
    let other_project_key = crate::keys::generate().unwrap();
    let restricted_key = crate::keys::generate().unwrap();
    let keys = Arc::new(KeyDirectory::new([
        entry(&key, "default", &["shop"]),
        entry(&other_project_key, "elsewhere", &[]),
        entry(&restricted_key, "default", &["another-api"]),
    ]));
    let spec = Arc::new(ApiSpec::parse(BOOKSTORE).unwrap());
    let resolve = |r: &BackendRule| Target::Pier(HeaderValue::from_str(&r.authority).unwrap());
    let filter = ApiFilter::new(
        spec,
        Context {
            project: "default".into(),
            api: "shop".into(),
            keys,
            quota: Arc::new(QuotaBook::with_clock(Arc::new(StillClock(AtomicU64::new(
                600,
            ))))),
            jwks: &registry,
            default_audiences: vec!["https://shop-gw.example".into()],
            tokens: Some(Arc::new(FakeTokens)),
            cors: Some(CorsPolicy {
                origins: vec!["https://shop.example".into()],
                ..CorsPolicy::default()
            }),
            resolve: &resolve,
        },
    )
    .unwrap();
    // Let the key refresher load the issuer's keys.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let route = Route::new(
        "default".parse().unwrap(),
        "shop-gw".parse().unwrap(),
        None,
        Arc::new(Access::public()),
        Arc::new(AllowAll),
        Backend::Dispatch,
    );
    Setup {
        filter,
        route,
        key,
        other_project_key,
        restricted_key,
        ring,
        _dir: dir,
    }
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "shop-gw.example");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

impl Setup {
    fn run(&self, req: &mut Parts) -> Result<(), Refusal> {
        let fwd = Forwarding::new([127, 0, 0, 1].into(), "https");
        self.filter.on_request(&self.route, &fwd, req)
    }

    fn jwt(&self, aud: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.ring
            .sign(
                &serde_json::json!({"iss": "https://pier.localhost:8443", "aud": aud,
                "sub": "u", "email": "a@example.com", "iat": now, "exp": now + 600}),
            )
            .unwrap()
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_get_espv2_answers() {
    let s = setup().await;
    let e = s.run(&mut request("GET", "/v2/nothing", &[])).unwrap_err();
    assert_eq!((e.status.as_u16(), e.message.as_str()), (404, NOT_DEFINED));
    let e = s.run(&mut request("PUT", "/v1/shelves", &[])).unwrap_err();
    assert_eq!(e.status.as_u16(), 405);
    assert!(e.message.contains("\"/v1/shelves\""), "{}", e.message);
}

#[tokio::test]
async fn api_keys_are_checked_and_the_backend_call_is_set_up() {
    let s = setup().await;
    // No security on listShelves: through, with the gateway's token and the path appended.
    let mut r = request(
        "GET",
        "/v1/shelves?limit=3",
        &[
            ("authorization", "Bearer caller"),
            ("x-endpoint-api-userinfo", "forged"),
        ],
    );
    s.run(&mut r).unwrap();
    assert_eq!(r.uri, "/v1/shelves?limit=3");
    assert_eq!(
        r.headers["authorization"],
        "Bearer gateway-token-for-https://books-abc123.pier.localhost:8443"
    );
    assert_eq!(r.headers["x-forwarded-authorization"], "Bearer caller");
    assert!(r.headers.get("x-endpoint-api-userinfo").is_none());
    let d = r.extensions.get::<Destination>().unwrap();
    assert!(matches!(&d.target, Target::Pier(h) if h == "books-abc123.pier.localhost:8443"));

    // A client's own X-Forwarded-Authorization never passes for the caller's.
    let mut r = request(
        "GET",
        "/v1/shelves",
        &[("x-forwarded-authorization", "Bearer forged")],
    );
    s.run(&mut r).unwrap();
    assert!(r.headers.get("x-forwarded-authorization").is_none());

    // getShelf needs a key.
    let e = s
        .run(&mut request("GET", "/v1/shelves/1", &[]))
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 401);
    assert!(
        e.message
            .starts_with("UNAUTHENTICATED: Method doesn't allow unregistered callers")
    );
    let e = s
        .run(&mut request(
            "GET",
            "/v1/shelves/1?key=AIzaWRONGWRONGWRONGWRONGWRONGWRONGWRONG",
            &[],
        ))
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 401);
    assert!(e.message.contains("API key not valid"));
    let e = s
        .run(&mut request(
            "GET",
            &format!("/v1/shelves/1?key={}", s.restricted_key),
            &[],
        ))
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 403);
    assert!(e.message.contains("invalid for the given API key"));
    let e = s
        .run(&mut request(
            "GET",
            &format!("/v1/shelves/1?key={}", s.other_project_key),
            &[],
        ))
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 403);
    assert!(e.message.contains("not enabled for the project"));
    // In the header too; CONSTANT_ADDRESS puts the path parameter in the query.
    let mut r = request("GET", "/v1/shelves/7", &[("x-api-key", &s.key)]);
    s.run(&mut r).unwrap();
    assert_eq!(r.uri, "/getShelf?shelf=7");
    assert_eq!(
        r.extensions.get::<Destination>().unwrap().deadline,
        Duration::from_millis(2500)
    );
}

#[tokio::test]
async fn quotas_refuse_the_sixth_call_of_the_minute() {
    let s = setup().await;
    for i in 0..5 {
        s.run(&mut request(
            "GET",
            &format!("/v1/shelves/{i}?key={}", s.key),
            &[],
        ))
        .unwrap();
    }
    let e = s
        .run(&mut request(
            "GET",
            &format!("/v1/shelves/9?key={}", s.key),
            &[],
        ))
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 429);
    assert_eq!(e.header(&header::RETRY_AFTER).unwrap(), "60");
    assert!(e.message.starts_with("RESOURCE_EXHAUSTED"), "{}", e.message);
}

#[tokio::test]
async fn jwt_and_key_together_and_the_user_info_header() {
    let s = setup().await;
    let body_op = |extra: &[(&str, &str)]| {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(extra);
        request("POST", &format!("/v1/shelves?key={}", s.key), &h)
    };
    let e = s.run(&mut body_op(&[])).unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.message.as_str()),
        (401, "Jwt is missing")
    );
    assert!(
        e.header(&header::WWW_AUTHENTICATE)
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=\"https://shop-gw.example/v1/shelves\"")
    );
    let wrong = format!("Bearer {}", s.jwt("someone-else"));
    let e = s
        .run(&mut body_op(&[("authorization", &wrong)]))
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 403);
    let token = s.jwt("shop-api");
    let good = format!("Bearer {token}");
    let mut r = body_op(&[("authorization", &good)]);
    s.run(&mut r).unwrap();
    assert_eq!(
        r.headers["x-endpoint-api-userinfo"],
        token.split('.').nth(1).unwrap()
    );
    assert_eq!(r.headers["x-forwarded-authorization"], good.as_str());
    // The body is checked when dispatched.
    let check = r
        .extensions
        .get::<Destination>()
        .unwrap()
        .body_check
        .clone()
        .unwrap();
    let ok = Bytes::from_static(br#"{"theme": "sf", "id": 1, "note": null}"#);
    assert!(check.check(&r, &ok).is_ok());
    let bad = Bytes::from_static(br#"{"theme": 5, "extra": true}"#);
    let e = check.check(&r, &bad).unwrap_err();
    assert_eq!(e.status.as_u16(), 400);
    let paths: Vec<&str> = e.violations.iter().map(|v| v.path.as_str()).collect();
    assert!(paths.contains(&"/body/theme"), "{:?}", e.violations);
    assert!(paths.contains(&"/body"), "{:?}", e.violations);
    assert!(
        e.violations.iter().any(|v| v.message.contains("extra")),
        "{:?}",
        e.violations
    );
}

#[tokio::test]
async fn parameters_are_validated_before_the_backend() {
    let s = setup().await;
    let e = s
        .run(&mut request("GET", "/v1/shelves?limit=abc", &[]))
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 400);
    assert_eq!(e.violations[0].path, "/query/limit");
    let e = s
        .run(&mut request("GET", "/v1/shelves?limit=500", &[]))
        .unwrap_err();
    assert!(
        e.violations[0].message.contains("500"),
        "{:?}",
        e.violations
    );
}

#[tokio::test]
async fn cors_preflights_are_answered_without_credentials() {
    let s = setup().await;
    let mut r = request(
        "OPTIONS",
        "/v1/shelves/1",
        &[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "GET"),
        ],
    );
    s.run(&mut r).unwrap();
    assert!(r.extensions.get::<crate::cors::PreflightAnswer>().is_some());
    let e = s
        .run(&mut request(
            "OPTIONS",
            "/v1/shelves/1",
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        ))
        .unwrap_err();
    assert_eq!(e.status.as_u16(), 400);
    // An actual request from the allowed origin gets the response headers to add.
    let mut r = request("GET", "/v1/shelves", &[("origin", "https://shop.example")]);
    s.run(&mut r).unwrap();
    let extra = r.extensions.get::<ResponseHeaders>().unwrap();
    assert!(
        extra
            .0
            .iter()
            .any(|(k, v)| k == header::ACCESS_CONTROL_ALLOW_ORIGIN && v == "https://shop.example")
    );
}

#[tokio::test]
async fn allow_all_and_allow_cors_pass_unknown_calls_and_preflights_to_the_backend() {
    let registry = JwksRegistry::new(Arc::new(Served(b"{\"keys\": []}".to_vec())));
    let spec = Arc::new(
        ApiSpec::parse(
            "swagger: '2.0'\ninfo: {title: t, version: '1'}\nx-google-allow: all\nx-google-endpoints: [{name: t, allowCors: true}]\nx-google-backend: {address: 'https://b.example/base'}\nsecurityDefinitions: {k: {type: apiKey, name: key, in: query}}\nsecurity: [{k: []}]\npaths:\n  /v1/items/{id}:\n    get:\n      x-google-backend: {address: 'https://c.example/item'}\n",
        )
        .unwrap(),
    );
    let resolve = |r: &BackendRule| Target::Pier(HeaderValue::from_str(&r.authority).unwrap());
    let filter = ApiFilter::new(
        spec,
        Context {
            project: "default".into(),
            api: "t".into(),
            keys: Arc::new(KeyDirectory::default()),
            quota: Arc::new(QuotaBook::default()),
            jwks: &registry,
            default_audiences: Vec::new(),
            tokens: None,
            cors: None,
            resolve: &resolve,
        },
    )
    .unwrap();
    let route = Route::new(
        "default".parse().unwrap(),
        "gw".parse().unwrap(),
        None,
        Arc::new(Access::public()),
        Arc::new(AllowAll),
        Backend::Dispatch,
    );
    let fwd = Forwarding::new([127, 0, 0, 1].into(), "https");
    // Unknown path: to the top-level backend, appended, no key asked.
    let mut r = request("POST", "/anything/else?x=1", &[]);
    filter.on_request(&route, &fwd, &mut r).unwrap();
    assert_eq!(r.uri, "/base/anything/else?x=1");
    // A configured operation still needs its key.
    assert_eq!(
        filter
            .on_request(&route, &fwd, &mut request("GET", "/v1/items/1", &[]))
            .unwrap_err()
            .status
            .as_u16(),
        401
    );
    // A preflight to a known path goes to that path's backend, unchecked.
    let mut r = request(
        "OPTIONS",
        "/v1/items/1",
        &[
            ("origin", "https://a.example"),
            ("access-control-request-method", "GET"),
        ],
    );
    filter.on_request(&route, &fwd, &mut r).unwrap();
    assert_eq!(r.uri, "/item?id=1");
    assert!(matches!(
        &r.extensions.get::<Destination>().unwrap().target,
        Target::Pier(h) if h == "c.example"
    ));
}
