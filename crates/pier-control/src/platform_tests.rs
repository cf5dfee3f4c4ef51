//! Control-plane tests in the middle layer: a `Platform` over an in-memory store, with an in-process
//! test double for the runtime (named as such: its instances are TCP listeners in this process, which is
//! all the default startup probe asks). Each test asserts the routes the gateway would serve after a
//! deploy, a failed deploy, a tag and a delete; the real runtimes are tested end to end elsewhere.

use super::*;
use pier_gateway::{AllowAll, RouteReader};
use pier_identity::keys::{KeyRing, RotationPolicy};
use pier_model::RevisionTemplate;
use pier_runtime::{Endpoint, Instance, InstanceSpec, Runtime, RuntimeError};

/// Instances that listen on a loopback port and do nothing else; a command naming `fail` cannot start.
struct InProcessTestDouble;

#[async_trait::async_trait]
impl Runtime for InProcessTestDouble {
    fn name(&self) -> &'static str {
        "in-process-test-double"
    }
    async fn start(&self, spec: InstanceSpec) -> Result<Arc<dyn Instance>, RuntimeError> {
        if spec.template.command.iter().any(|c| c.contains("fail")) {
            return Err(RuntimeError::CommandNotFound {
                program: spec.template.command.join(" "),
            });
        }
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::Tcp(l.local_addr().unwrap());
        let task = tokio::spawn(async move { while l.accept().await.is_ok() {} });
        Ok(pier_runtime::double::TaskInstance::new(
            spec.id, endpoint, task,
        ))
    }
    async fn cleanup_leftovers(&self) -> Result<usize, RuntimeError> {
        Ok(0)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    platform: Arc<Platform>,
    routes: RouteReader,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_in_memory().unwrap());
    let ring =
        Arc::new(KeyRing::open(&dir.path().join("keys"), RotationPolicy::default()).unwrap());
    let scheme = UrlScheme::new("pier.localhost", 8443);
    let issuer = Arc::new(pier_identity::Issuer::new(
        &scheme.url(scheme.domain()),
        ring,
    ));
    let identity = IdentityService::new(store.clone(), issuer, scheme.domain()).unwrap();
    let (publisher, routes) = pier_gateway::publish::channel(Vec::new());
    let activator = Activator::new(
        pier_activator::ActivatorConfig::default(),
        Arc::new(Arc::new(InProcessTestDouble)),
    );
    let platform = Platform::new(PlatformParts {
        store,
        activator,
        routes: publisher,
        admission: Arc::new(AllowAll),
        logs: Arc::new(LogStore::new(&dir.path().join("logs"))),
        scheme,
        identity,
        isolation: IsolationConfig::default(),
        images: None,
        domains: Default::default(),
        api_gateways: Default::default(),
        hosting: Default::default(),
    });
    platform.recover().await.unwrap();
    Fixture {
        _dir: dir,
        platform,
        routes,
    }
}

fn request(command: &str) -> DeployRequest {
    DeployRequest {
        template: RevisionTemplate {
            command: vec![command.to_owned()],
            ..Default::default()
        },
        allow_unauthenticated: None,
        no_traffic: false,
        tag: None,
        settings: Default::default(),
        creator: None,
    }
}

impl Fixture {
    /// Deploys and waits for the revision to end deploying; returns its name and state.
    async fn deploy(&self, service: &str, req: DeployRequest) -> (RevisionName, RevisionState) {
        let project = ProjectName::default();
        let rev = self
            .platform
            .deploy(&project, &service.parse().unwrap(), req)
            .await
            .unwrap();
        let done = self
            .platform
            .wait_revision(&project, &rev.name, Duration::from_secs(10))
            .await
            .unwrap();
        (done.name, done.state)
    }

    async fn host(&self, service: &str, tag: Option<&str>) -> String {
        let hash = self
            .platform
            .hash_of(&ProjectName::default())
            .await
            .unwrap();
        let service: ServiceName = service.parse().unwrap();
        match tag {
            None => self.platform.scheme.service_host(&service, &hash),
            Some(t) => self
                .platform
                .scheme
                .tag_host(&t.parse().unwrap(), &service, &hash)
                .unwrap(),
        }
    }

    /// The revisions the published route for `host` sends traffic to, with their percents.
    fn targets(&self, host: &str) -> Option<Vec<(String, u8)>> {
        let table = self.routes.current();
        let route = table.get(host)?;
        Some(
            route
                .targets()
                .iter()
                .map(|(pool, pct)| (pool.revision().to_string(), *pct))
                .collect(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_deploy_publishes_its_route_and_a_failed_one_changes_nothing() {
    let f = fixture().await;
    let (first, state) = f.deploy("web", request("serve")).await;
    assert_eq!(state, RevisionState::Ready);
    let host = f.host("web", None).await;
    assert_eq!(f.targets(&host), Some(vec![(first.to_string(), 100)]));

    // A revision that cannot start fails; the route still sends everything to the first.
    let (second, state) = f.deploy("web", request("fail")).await;
    assert_eq!(state, RevisionState::Failed);
    assert_ne!(first, second);
    assert_eq!(f.targets(&host), Some(vec![(first.to_string(), 100)]));

    // A good one takes the traffic.
    let (third, state) = f.deploy("web", request("serve-again")).await;
    assert_eq!(state, RevisionState::Ready);
    assert_eq!(f.targets(&host), Some(vec![(third.to_string(), 100)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_gets_its_own_host_and_a_delete_removes_every_host() {
    let f = fixture().await;
    let (first, _) = f.deploy("api", request("serve")).await;
    let mut tagged = request("serve-green");
    tagged.no_traffic = true;
    tagged.tag = Some("green".parse().unwrap());
    let (green, state) = f.deploy("api", tagged).await;
    assert_eq!(state, RevisionState::Ready);
    let host = f.host("api", None).await;
    let tag_host = f.host("api", Some("green")).await;
    assert_eq!(f.targets(&host), Some(vec![(first.to_string(), 100)]));
    assert_eq!(f.targets(&tag_host), Some(vec![(green.to_string(), 100)]));

    f.platform
        .delete_service(&ProjectName::default(), &"api".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(f.targets(&host), None);
    assert_eq!(f.targets(&tag_host), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_setting_records_no_revision() {
    let f = fixture().await;
    let mut req = request("serve");
    req.settings.add_custom_audiences = vec!["a".into(), String::new()];
    let err = f
        .platform
        .deploy(&ProjectName::default(), &"bad".parse().unwrap(), req)
        .await
        .unwrap_err();
    assert!(matches!(err, ControlError::Invalid(_)), "{err:?}");
    let listed = f
        .platform
        .list_services(&ProjectName::default())
        .await
        .unwrap();
    assert!(listed.is_empty(), "a service was recorded: {listed:?}");
    assert_eq!(f.targets(&f.host("bad", None).await), None);
}
