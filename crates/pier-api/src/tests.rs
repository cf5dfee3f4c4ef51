//! API tests without a socket: the router is called directly (`tower::ServiceExt::oneshot`) over a
//! control plane on an in-memory store. The table of routes is the API's own OpenAPI document, so a
//! documented route without a permission check fails here (every handler carries its `utoipa::path`).

use super::*;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use pier_control::{IdentityService, PlatformParts};
use pier_identity::Principal;
use pier_identity::keys::{KeyRing, RotationPolicy};
use pier_runtime::{Instance, InstanceSpec, Runtime, RuntimeError};
use tower::ServiceExt;

/// A runtime that starts nothing: no route here gets as far as an instance.
struct NoInstances;

#[async_trait::async_trait]
impl Runtime for NoInstances {
    fn name(&self) -> &'static str {
        "no-instances-test-double"
    }
    async fn start(&self, _: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        Err(RuntimeError::CommandNotFound {
            program: "nothing runs in API tests".into(),
        })
    }
    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError> {
        Ok(0)
    }
}

struct Api {
    _dir: tempfile::TempDir,
    router: Router,
    identity: Arc<IdentityService>,
    issuer: String,
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(pier_store::Store::open_in_memory().unwrap());
    let ring =
        Arc::new(KeyRing::open(&dir.path().join("keys"), RotationPolicy::default()).unwrap());
    let scheme = pier_model::UrlScheme::new("pier.localhost", 8443);
    let issuer = scheme.url(scheme.domain());
    let identity = IdentityService::new(
        store.clone(),
        Arc::new(pier_identity::Issuer::new(&issuer, ring)),
        scheme.domain(),
    )
    .unwrap();
    identity.bootstrap().unwrap();
    let (routes, _reader) = pier_gateway::publish::channel(Vec::new());
    let platform = Platform::new(PlatformParts {
        store,
        activator: pier_activator::Activator::new(
            pier_activator::ActivatorConfig::default(),
            Arc::new(Arc::new(NoInstances)),
        ),
        routes,
        admission: Arc::new(pier_gateway::AllowAll),
        logs: Arc::new(pier_runtime::logs::LogStore::new(&dir.path().join("logs"))),
        scheme,
        identity: identity.clone(),
        isolation: Default::default(),
        images: None,
        domains: Default::default(),
        api_gateways: Default::default(),
        hosting: Default::default(),
    });
    platform.recover().await.unwrap();
    let state = AppState {
        auth: Arc::new(TokenAuth::new(platform.clone())),
        platform,
        info: Arc::new(ServerInfo {
            version: "test".into(),
            domain: "pier.localhost".into(),
            https_port: 8443,
            http_port: 8080,
            ca_path: String::new(),
            run_dir: String::new(),
            metrics_url: None,
        }),
        metrics: Some(pier_metrics::Metrics::new()),
    };
    Api {
        _dir: dir,
        router: router(state),
        identity,
        issuer,
    }
}

impl Api {
    /// An access token for `email`, a user created here with no role anywhere.
    fn token_of_user_without_roles(&self, email: &str) -> String {
        self.identity
            .create_user(email, "a long enough password")
            .unwrap();
        self.identity
            .mint_id_token(&Principal::User(email.into()), &self.issuer, None)
            .unwrap()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Every operation of the API document: method, path with its parameters filled, a valid body.
    async fn operations(&self) -> Vec<(Method, String, &'static str)> {
        let (status, doc) = self.call(Method::GET, "/openapi.json", None, "").await;
        assert_eq!(status, StatusCode::OK);
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            let filled = path
                .replace("{project}", "default")
                .replace("{service}", "web")
                .replace("{revision}", "web-00001-abc")
                .replace("{email}", "robot@default.iam.pier.localhost")
                .replace("{key}", "0123456789abcdef")
                .replace("{registry}", "registry.example.com")
                .replace("{domain}", "shop.example.com")
                .replace("{site}", "shop")
                .replace("{channel}", "live")
                .replace("{digest}", &"a".repeat(64));
            for (method, op) in item.as_object().unwrap() {
                let schema = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                    .as_str()
                    .unwrap_or("");
                out.push((
                    method.to_uppercase().parse().unwrap(),
                    filled.clone(),
                    body_for(schema),
                ));
            }
        }
        out
    }
}

/// A valid body of each request type, so refusals come from the permission check, not the parser.
fn body_for(schema: &str) -> &'static str {
    match schema.rsplit('/').next().unwrap_or("") {
        "" => "",
        "DeployRequest" => r#"{"template":{"command":["x"]}}"#,
        "UpdateServiceRequest" | "UpdateTrafficRequest" => "{}",
        "Policy" => r#"{"bindings":[]}"#,
        "BindingChange" => r#"{"member":"user:a@example.com","role":"roles/run.invoker"}"#,
        "CreateServiceAccountRequest" => r#"{"name":"robot"}"#,
        "GenerateIdTokenRequest" => r#"{"audience":"https://example.com"}"#,
        "CreateUserRequest" => r#"{"email":"new@example.com","password":"a long password"}"#,
        "RegistryCredentialRequest" => r#"{"username":"u","secret":"p"}"#,
        "VerifyDomainRequest" => "{}",
        "CreateDomainMappingRequest" => {
            r#"{"domain":"shop.example.com","target":{"kind":"service","name":"web"}}"#
        }
        "CreateApiRequest" => r#"{"name":"shop"}"#,
        "CreateApiConfigRequest" => r#"{"name":"v1","openapiSpec":"swagger: '2.0'"}"#,
        "CreateGatewayRequest" => r#"{"name":"gw","api":"shop","apiConfig":"v1"}"#,
        "UpdateGatewayRequest" | "UpdateApiKeyRequest" => "{}",
        "CreateApiKeyRequest" => r#"{"displayName":"mobile"}"#,
        "CreateSiteVersionRequest" => r#"{"config":{},"files":{}}"#,
        "ReleaseRequest" => r#"{"version":1}"#,
        "CloneRequest" => r#"{"sourceSite":"shop","sourceChannel":"pr-1"}"#,
        "InvalidateRequest" => r#"{"path":"/x"}"#,
        other => panic!("no test body for {other}: add one"),
    }
}

/// Routes any signed-in caller may use: who they are, and what the server is.
const OPEN_TO_EVERY_CALLER: &[(&str, &str)] = &[("GET", "/v1/auth/whoami"), ("GET", "/v1/info")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_caller_without_its_permission() {
    let api = api().await;
    let nobody = api.token_of_user_without_roles("nobody@example.com");
    let ops = api.operations().await;
    assert!(
        ops.len() >= 40,
        "the document lists {} operations",
        ops.len()
    );
    let mut wrong = Vec::new();
    for (method, path, body) in &ops {
        let open = OPEN_TO_EVERY_CALLER
            .iter()
            .any(|(m, p)| method.as_str() == *m && path == p);
        if !path.starts_with("/v1/") {
            continue;
        }
        // No token: 401, before anything else.
        let (status, text) = api.call(method.clone(), path, None, body).await;
        if status != StatusCode::UNAUTHORIZED {
            wrong.push(format!("{method} {path} without a token: {status} {text}"));
        }
        let (status, text) = api.call(method.clone(), path, Some(&nobody), body).await;
        let want = if open {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        if status != want {
            wrong.push(format!(
                "{method} {path} as a caller without roles: {status} {text}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_is_refused() {
    let api = api().await;
    api.identity
        .create_user("someone@example.com", "a long enough password")
        .unwrap();
    // An ID token for a service (the CLI's audience) is not an access token for the API.
    let id_token = api
        .identity
        .mint_identity_token(
            &Principal::User("someone@example.com".into()),
            pier_identity::tokens::CLI_CLIENT_ID,
            None,
        )
        .unwrap();
    let (status, text) = api
        .call(Method::GET, "/v1/auth/whoami", Some(&id_token), "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
}
