//! Building the server, once and in order: each part is made with what it needs, nothing is wired
//! afterwards. Flags are checked first, listeners bound before anything starts (a busy port fails
//! fast), then: data dir and store, certificates, identity, routes (a publisher for the control plane,
//! a reader for the gateway), instances (sandbox, network, runtimes), the activator, the control plane,
//! and the admin API, which also serves Pier's own host through the gateway.

use super::*;

/// Everything the server runs, built.
pub(super) struct Server {
    pub args: ServerArgs,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub scheme: UrlScheme,
    pub issuer_url: String,
    pub ca: Arc<LocalCa>,
    pub ring: Arc<KeyRing>,
    pub domain_cert: Arc<DomainCert>,
    pub tls: Arc<rustls::ServerConfig>,
    pub https: TcpListener,
    pub http: TcpListener,
    pub api: TcpListener,
    /// `GET /metrics`, and the token it requires, if served.
    pub metrics: Option<metrics::Endpoint>,
    /// The trace exporter, flushed at shutdown.
    pub traces: Option<Arc<pier_trace::Tracing>>,
    pub owner_creds: PathBuf,
    pub identity: Arc<IdentityService>,
    pub gateway: Arc<Gateway>,
    pub platform: Arc<Platform>,
    pub router: axum::Router,
    pub process: Arc<ProcessRuntime>,
    pub container: Option<Arc<pier_container::ContainerRuntime>>,
    pub cgroups: Option<pier_runtime::cgroup::CgroupRoot>,
    pub network: Arc<pier_runtime::network::Network>,
    pub certificates: Arc<pier_certs::CertManager>,
}

/// Refuses flags that cannot work together, before anything is made.
fn check_flags(args: &ServerArgs) -> Result<()> {
    if !args.api_addr.ip().is_loopback() && !args.api_public {
        bail!(
            "--api-addr {} is not a loopback address: pass --api-public to expose the admin API (it is guarded by tokens), or keep it on loopback",
            args.api_addr
        );
    }
    metrics::check_flags(args)?;
    if let Some(bad) = args
        .trusted_issuers
        .iter()
        .find(|u| !u.starts_with("https://"))
    {
        bail!("--trusted-issuer {bad}: an issuer URL must start with https://");
    }
    Ok(())
}

impl Server {
    /// Builds every part; serves nothing yet (see [`Server::run`]).
    pub(super) async fn build(args: ServerArgs) -> Result<Self> {
        check_flags(&args)?;
        let default_environment: pier_model::ExecutionEnvironment = args
            .execution_environment
            .parse()
            .map_err(|e: pier_model::SpecError| anyhow!("{e}"))?;
        let ids = instances::id_range(args.instance_ids.as_deref())?;
        let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        data_dir::prepare(&data_dir)?;
        let data_dir = std::fs::canonicalize(&data_dir)?;
        // Faults of the machine are named against the data dir's filesystem.
        pier_control::machine::set_data_dir(&data_dir);

        let store = Arc::new(
            Store::open(&data_dir.join("pier.db"))
                .with_context(|| format!("opening {}", data_dir.join("pier.db").display()))?,
        );
        // The installation's id names its cgroups, run dir and network; made once, from the OS's
        // randomness (none: the server does not start, rather than share an id with another).
        let fresh = random_hex(16)?;
        let installation = store.meta_or_insert("installation", || fresh)?;

        // Certificates.
        let ca = Arc::new(LocalCa::load_or_create(
            &data_dir,
            &format!(
                "Pier local CA {}",
                &installation[..8.min(installation.len())]
            ),
        )?);
        // Metrics are kept only when served (`--metrics-addr off`: nothing recorded at all).
        let registry = args.metrics_addr.0.map(|_| pier_metrics::Metrics::new());
        // The console's charts read a short history of them, sampled in process.
        if let Some(r) = &registry {
            pier_metrics::History::start(r);
        }
        let domains = domains::build(&args, &store, &ca, registry.as_ref())?;
        let resolver = domains.resolver.clone();
        let source = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => CertSource::LocalCa,
        };
        let domain_cert = Arc::new(DomainCert::install(
            &args.domain,
            source,
            &data_dir.join("tls"),
            &ca,
            resolver.clone(),
        )?);
        let tls = Arc::new(pier_tls::server_config(resolver)?);
        let ca_bundle = instance_env::write_ca_bundle(&data_dir, ca.cert_path())?;

        // Listeners first, so a busy port fails before anything starts.
        let https = bind(
            SocketAddr::new(args.listen, args.https_port),
            "HTTPS",
            "--https-port",
        )
        .await?;
        let http = bind(
            SocketAddr::new(args.listen, args.http_port),
            "HTTP",
            "--http-port",
        )
        .await?;
        let api = bind(args.api_addr, "the admin API", "--api-addr").await?;
        let metrics = match &registry {
            Some(r) => Some(metrics::Endpoint::bind(&args, r.clone()).await?),
            None => None,
        };
        let https_port = https.local_addr()?.port();
        let http_port = http.local_addr()?.port();
        let scheme = UrlScheme::new(&args.domain, https_port);

        // Identity: the issuer is the base domain itself, served by the gateway.
        let ring = Arc::new(KeyRing::open(
            &data_dir.join("keys"),
            RotationPolicy::default(),
        )?);
        let issuer_url = scheme.url(scheme.domain());
        let issuer = Arc::new(Issuer::new(&issuer_url, ring.clone()));
        let identity = IdentityService::with_external_issuers(
            store.clone(),
            issuer,
            scheme.domain(),
            oidc::start(&args.trusted_issuers, &args.oidc_cas)?,
        )?;
        let owner_creds = data_dir.join("owner-credentials.json");
        if let Some(owner) = identity.bootstrap()? {
            pier_tls::write_private(
                &data_dir.join("owner-password"),
                owner.password.as_bytes(),
                0o600,
            )?;
            let session = identity
                .grant_password(&owner.email, &owner.password)
                .map_err(|e| anyhow!("signing the owner in: {}", e.error_description))?;
            let refresh = session.refresh_token.unwrap_or_default();
            let creds = OwnerCredentials {
                kind: "authorized_user",
                account: &owner.email,
                refresh_token: &refresh,
            };
            pier_tls::write_private(&owner_creds, &serde_json::to_vec_pretty(&creds)?, 0o600)?;
            tracing::info!(
                "created the owner user {} (password in {})",
                owner.email,
                data_dir.join("owner-password").display()
            );
        }

        // Instances: every one in a sandbox of its own (see the pier-sandbox crate), whatever runs it.
        let logs = Arc::new(LogStore::new(&data_dir.join("logs")));
        let run_dir = data_dir.join("run");
        std::fs::create_dir_all(&run_dir)?;
        let hosts_file = run_dir.join("instance-hosts");
        let resolv_file = run_dir.join("instance-resolv.conf");
        write_file(&hosts_file, "127.0.0.1 localhost\n")?;
        write_file(
            &resolv_file,
            &pier_runtime::resolver::instance_resolv_conf(),
        )?;
        let cgroups = pier_runtime::cgroup::CgroupRoot::detect(&installation);
        let metadata =
            MetadataServer::new(Arc::new(instance_env::MetadataTokens(identity.clone())));
        let hooks = Arc::new(instance_env::InstanceEnv::new(
            &ca_bundle,
            ca.cert_path(),
            logs.clone(),
        ));
        // Routes: the control plane publishes, the gateway reads, the instances' hosts file follows.
        let mut subscribers: Vec<Arc<dyn pier_gateway::RouteSubscriber>> = vec![Arc::new(
            pier_control::InstanceHostsFile::new(hosts_file.clone()),
        )];
        if let Some(r) = &registry {
            subscribers.push(Arc::new(pier_gateway::observe::MetricsSubscriber(
                r.clone(),
            )));
        }
        let (routes, reader) = pier_gateway::publish::channel(subscribers);
        let traces = match &args.otlp_endpoint {
            Some(url) => {
                let t = pier_trace::Tracing::start(url, args.trace_sample_ratio)
                    .map_err(|e| anyhow!(e))?;
                // The address only: no user or password a URL may carry.
                let shown = pier_trace::traces_url(url)
                    .ok()
                    .and_then(|u| u.parse::<axum::http::Uri>().ok())
                    .map(|u| {
                        format!(
                            "{}://{}{}{}",
                            u.scheme_str().unwrap_or("http"),
                            u.host().unwrap_or(""),
                            u.port().map(|p| format!(":{p}")).unwrap_or_default(),
                            u.path()
                        )
                    })
                    .unwrap_or_default();
                tracing::info!(
                    "traces to {shown} ({}% of requests that bring no sampling decision)",
                    args.trace_sample_ratio * 100.0
                );
                Some(Arc::new(t))
            }
            None => None,
        };
        let request_logs = (args.request_log == "on")
            .then(|| Arc::new(LogStore::new(&data_dir.join("request-logs"))));
        let request_log = request_logs
            .clone()
            .map(pier_gateway::request_log::RequestLog::spawn);
        let gateway = Gateway::with_domains(
            GatewayConfig {
                public_https_port: https_port,
                max_request_body: args.max_request_body,
                telemetry: pier_gateway::observe::Telemetry {
                    metrics: registry.clone(),
                    requests: request_log,
                    traces: traces.clone(),
                },
                ..GatewayConfig::default()
            },
            reader,
            domains.entrance.clone(),
        );
        let network = instances::network(
            &args,
            &installation,
            https_port,
            http_port,
            Arc::new(namespace::NsServices {
                metadata: metadata.clone(),
                gateway: gateway.clone(),
                identity: identity.clone(),
                tls: tls.clone(),
                http_serve: args.http_serve,
                upstreams: Arc::new(pier_runtime::resolver::upstreams()),
            }),
        )?;
        let files = pier_sandbox::PierFiles {
            hosts: Some(hosts_file.clone()),
            resolv: Some(resolv_file.clone()),
            ca_bundle: Some(ca_bundle.clone()),
            ca_cert: Some(ca.cert_path().to_path_buf()),
        };
        let seccomp = instances::seccomp_policies(&args)?;
        let process = Arc::new(ProcessRuntime::new(ProcessConfig {
            logs: logs.clone(),
            default_workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            sandbox: instances::process_sandbox(&data_dir, &config_path(), &files, seccomp.clone()),
            allow_unsandboxed: args.allow_unsandboxed,
            network: network.clone(),
            cgroups: cgroups.clone(),
            gate: instances::gate_binary(),
        }));
        data_dir::secure(&data_dir)?;
        let leftovers = process.cleanup_leftovers().await?;
        if leftovers > 0 {
            tracing::info!(
                count = leftovers,
                "cleaned up instances left by a previous server"
            );
        }

        // Containers: images, and the runtime with Pier's services inside each instance's namespace.
        let run_dir = data_dir::run_dir(&installation)?;
        let images = containers::image_store(
            &data_dir,
            &run_dir,
            store.clone(),
            args.insecure_registries.clone(),
            &args.registry_cas,
            &args.rootfs,
            args.max_image_size,
        )?;
        let container = containers::container_runtime(
            containers::container_config(
                &args.container_runtime,
                &args.gvisor_runtime,
                &data_dir,
                &run_dir,
                &installation,
                pier_container::bundle::SharedFiles {
                    hosts: Some(hosts_file.clone()),
                    ca_bundle: Some(ca_bundle.clone()),
                    ca_cert: Some(ca.cert_path().to_path_buf()),
                    resolv: Some(resolv_file.clone()),
                },
                seccomp.clone(),
            ),
            logs.clone(),
            images.clone(),
            network.clone(),
        );
        match &container {
            Ok(c) => {
                let left = c.cleanup_leftovers().await?;
                if left > 0 {
                    tracing::info!(count = left, "deleted containers left by a previous server");
                }
            }
            Err(why) => tracing::warn!("container images are disabled: {why}"),
        }
        let containers_ok = container.is_ok();
        let container_at_exit = container.as_ref().ok().cloned();

        let activator = Activator::with_hooks(
            ActivatorConfig {
                stable_window: args.stable_window,
                panic_window: args.panic_window,
                scale_to_zero_grace: args.scale_to_zero_grace,
                pending_timeout: args.pending_timeout,
                startup_timeout: args.startup_timeout,
                warm_sandboxes: args.warm_sandboxes,
                ..ActivatorConfig::default()
            },
            Arc::new(containers::Runtimes {
                process: process.clone(),
                container,
            }),
            hooks,
        );
        if let Some(r) = &registry {
            activator.keep_metrics(r.clone());
        }
        let mut guard = IdentityGuard::new(identity.clone(), &issuer_url);
        if let Some(r) = &registry {
            guard = guard.with_metrics(r.gateway().clone());
        }
        let platform = Platform::new(PlatformParts {
            store,
            activator,
            routes: routes.clone(),
            admission: Arc::new(guard),
            logs,
            scheme: scheme.clone(),
            identity: identity.clone(),
            isolation: pier_control::IsolationConfig {
                ids,
                default_environment,
            },
            images: containers_ok.then_some(images),
            domains: domains.config.clone(),
            api_gateways: apigw::config(
                &issuer_url,
                ring.clone(),
                ca.cert_path(),
                &args.oidc_cas,
                args.api_gateway_local_backends,
            )?,
            hosting: pier_control::hosting::HostingConfig::new(Some(
                pier_hosting::FileStore::open(data_dir.join("hosting").join("files"))
                    .context("opening the site file store")?,
            ))
            .with_cache(match args.cache_disk_size {
                None => pier_cache::EdgeCache::new(args.cache_size),
                Some(disk) => {
                    pier_cache::EdgeCache::with_disk(args.cache_size, data_dir.join("cache"), disk)
                        .context("opening the edge cache's disk tier")?
                }
            }),
        });

        if let Some(r) = request_logs {
            platform.keep_request_logs(r);
        }

        // The admin API, also served at the base domain through the gateway (the server publishes
        // that host; the control plane publishes services').
        let info = ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            domain: args.domain.clone(),
            https_port,
            http_port,
            ca_path: ca.cert_path().display().to_string(),
            run_dir: run_dir.display().to_string(),
            metrics_url: metrics
                .as_ref()
                .and_then(|m| m.local_addr())
                .map(|a| format!("http://{a}/metrics")),
        };
        let state = AppState {
            platform: platform.clone(),
            auth: Arc::new(TokenAuth::new(platform.clone())),
            info: Arc::new(info),
            metrics: registry.clone(),
        };
        let router = pier_api::router(state);
        // At the base domain (HTTPS only) the console is served beside the API it calls.
        let apex = router
            .clone()
            .merge(pier_console::router(router.clone(), &issuer_url));
        routes.serve_local(scheme.domain().to_owned(), Arc::new(ApexHandler::new(apex)));
        platform.recover().await?;
        Ok(Self {
            args,
            data_dir,
            run_dir,
            scheme,
            issuer_url,
            ca,
            ring,
            domain_cert,
            tls,
            https,
            http,
            api,
            metrics,
            traces,
            owner_creds,
            identity,
            gateway,
            platform,
            router,
            process,
            container: container_at_exit,
            cgroups,
            network,
            certificates: domains.manager,
        })
    }
}
