//! Wires the parts into a running server: data dir, store, certificates, identity, runtime, activator,
//! metadata server, gateway, control plane and admin API; then handles signals and shuts down in order
//! (stop accepting, let requests in flight finish, stop instances).

use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use pier_activator::{Activator, ActivatorConfig};
use pier_api::{ApexHandler, AppState, TokenAuth};
use pier_cli::ServerArgs;
use pier_cli::config::{CliConfig, config_path, default_data_dir};
use pier_control::{IdentityService, Platform};
use pier_gateway::auth::IdentityGuard;
use pier_gateway::{Gateway, GatewayConfig};
use pier_identity::keys::{KeyRing, RotationPolicy};
use pier_identity::{Issuer, Principal};
use pier_metadata::MetadataServer;
use pier_model::UrlScheme;
use pier_model::api::ServerInfo;
use pier_runtime::Runtime;
use pier_runtime::logs::LogStore;
use pier_runtime::process::{ProcessConfig, ProcessRuntime};
use pier_store::Store;
use pier_tls::{CertSource, DomainCert, LocalCa, SniResolver};
use tokio::net::TcpListener;
use tokio::sync::watch;

mod containers;
mod data_dir;
mod instance_env;
mod instances;
mod machine_watch;
mod namespace;
mod oidc;

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow!("no randomness from the OS: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

async fn bind(addr: SocketAddr, what: &str, flag: &str) -> Result<TcpListener> {
    // A server killed a moment ago may have a child between fork and exec that still holds copies of its
    // listening sockets; give it a few seconds to go before calling the port taken.
    let mut tries = 0;
    let result = loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 30 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    result.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!("cannot listen on {addr} for {what}: the address is in use; stop the other server or choose another port with {flag}")
        } else {
            anyhow!("cannot listen on {addr} for {what}: {e} (choose another with {flag})")
        }
    })
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PIER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the server until SIGTERM or Ctrl-C; with `up`, also deploys the manifests at that path.
pub fn run(args: ServerArgs, up: Option<PathBuf>) -> Result<()> {
    init_tracing();
    // One worker means a single-threaded scheduler: cheaper per task switch than a one-thread pool.
    let mut rt = match args.workers {
        Some(0) => bail!("--workers must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    rt.enable_all();
    let rt = rt.build().context("starting the async runtime")?;
    rt.block_on(serve(args, up))
}

/// The owner's credentials file the CLI uses after the first start.
#[derive(serde::Serialize)]
struct OwnerCredentials<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    account: &'a str,
    refresh_token: &'a str,
}

async fn serve(args: ServerArgs, up: Option<PathBuf>) -> Result<()> {
    if !args.api_addr.ip().is_loopback() && !args.api_public {
        bail!(
            "--api-addr {} is not a loopback address: pass --api-public to expose the admin API (it is guarded by tokens), or keep it on loopback",
            args.api_addr
        );
    }
    if let Some(bad) = args
        .trusted_issuers
        .iter()
        .find(|u| !u.starts_with("https://"))
    {
        bail!("--trusted-issuer {bad}: an issuer URL must start with https://");
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    data_dir::prepare(&data_dir)?;
    let data_dir = std::fs::canonicalize(&data_dir)?;
    // Faults of the machine are named against the data dir's filesystem; crossing a low mark is logged.
    pier_control::machine::set_data_dir(&data_dir);
    tokio::spawn(machine_watch::run(data_dir.clone()));

    let store = Arc::new(
        Store::open(&data_dir.join("pier.db"))
            .with_context(|| format!("opening {}", data_dir.join("pier.db").display()))?,
    );
    let installation = store.meta_or_insert("installation", || {
        random_hex(16).unwrap_or_else(|_| "0".repeat(32))
    })?;

    // Certificates.
    let ca = LocalCa::load_or_create(
        &data_dir,
        &format!(
            "Pier local CA {}",
            &installation[..8.min(installation.len())]
        ),
    )?;
    let resolver = Arc::new(SniResolver::default());
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
    let https_port = https.local_addr()?.port();
    let http_port = http.local_addr()?.port();
    let api_addr = api.local_addr()?;
    let scheme = UrlScheme::new(&args.domain, https_port);

    // Identity: the issuer is the base domain itself, served by the gateway.
    let ring = Arc::new(KeyRing::open(
        &data_dir.join("keys"),
        RotationPolicy::default(),
    )?);
    let issuer_url = scheme.url(scheme.domain());
    let issuer = Arc::new(Issuer::new(&issuer_url, ring.clone()));
    let identity = IdentityService::new(store.clone(), issuer, scheme.domain())?;
    identity.set_external_issuers(oidc::start(&args.trusted_issuers, &args.oidc_cas)?);
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
    let ids = instances::id_range(args.instance_ids.as_deref())?;
    let cgroups = pier_runtime::cgroup::CgroupRoot::detect(&installation);
    let metadata = MetadataServer::new(Arc::new(instance_env::MetadataTokens(identity.clone())));
    let hooks = Arc::new(instance_env::InstanceEnv::new(
        &ca_bundle,
        ca.cert_path(),
        logs.clone(),
    ));
    let gateway = Gateway::new(
        GatewayConfig {
            public_https_port: https_port,
            max_request_body: args.max_request_body,
            ..GatewayConfig::default()
        },
        Arc::new(IdentityGuard::new(identity.clone(), &issuer_url)),
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
            ..ActivatorConfig::default()
        },
        Arc::new(containers::Runtimes {
            process: process.clone(),
            container,
        }),
        hooks,
    );
    let platform = Platform::new(
        store,
        activator,
        gateway.clone(),
        logs,
        scheme.clone(),
        identity.clone(),
        pier_control::IsolationConfig {
            ids,
            default_environment: args
                .execution_environment
                .parse()
                .map_err(|e: pier_model::SpecError| anyhow!("{e}"))?,
        },
    );
    if containers_ok {
        platform.set_images(images);
    }
    platform.set_instance_hosts_file(hosts_file);

    let ca_path = ca.cert_path().display().to_string();
    let info = ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        domain: args.domain.clone(),
        https_port,
        http_port,
        ca_path: ca_path.clone(),
        run_dir: run_dir.display().to_string(),
    };
    let state = AppState {
        platform: platform.clone(),
        auth: Arc::new(TokenAuth::new(platform.clone())),
        info: Arc::new(info),
    };
    let router = pier_api::router(state);
    platform.set_apex_handler(Arc::new(ApexHandler::new(router.clone())));
    platform.recover().await?;

    // Serve.
    let (stop_tx, stop_rx) = watch::channel(false);
    let https_task = tokio::spawn(gateway.clone().serve_https(https, tls, stop_rx.clone()));
    let http_task = tokio::spawn(gateway.clone().serve_http(
        http,
        args.http_serve,
        stop_rx.clone(),
    ));
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(async move {
        let _ = axum::serve(api, router)
            .with_graceful_shutdown(async move {
                let _ = api_stop.wait_for(|s| *s).await;
            })
            .await;
    });

    // Tell the CLI where we are.
    let api_url = format!("http://{api_addr}");
    write_file(&data_dir.join("api-url"), &api_url)?;
    let cli_config = CliConfig {
        api_url: api_url.clone(),
        credentials_file: owner_creds.exists().then(|| owner_creds.clone()),
        data_dir: data_dir.clone(),
        project: None,
    };
    if let Err(e) = CliConfig::adopt(&config_path(), &cli_config) {
        tracing::warn!("could not write the CLI config: {e:#}");
    }

    tracing::info!(
        "Pier {} serving https://*.{}:{https_port} (HTTP on :{http_port} {}), admin API {api_url} and {issuer_url}",
        env!("CARGO_PKG_VERSION"),
        args.domain,
        if args.http_serve {
            "serves"
        } else {
            "redirects to HTTPS"
        },
    );
    tracing::info!(
        "local CA certificate: {ca_path} (trust it: curl --cacert {ca_path}, or copy it to /usr/local/share/ca-certificates/pier.crt and run update-ca-certificates)"
    );

    // Housekeeping: idle pools, certificates, signing keys.
    {
        let platform = platform.clone();
        let domain_cert = domain_cert.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            let mut last_check = SystemTime::now();
            loop {
                tick.tick().await;
                platform.sweep_pools().await;
                if last_check.elapsed().unwrap_or_default() >= Duration::from_secs(60) {
                    last_check = SystemTime::now();
                    if let Err(e) = domain_cert.refresh(&ca, SystemTime::now(), false) {
                        tracing::error!("certificate refresh failed: {e}");
                    }
                    if let Err(e) = ring.rotate(SystemTime::now()) {
                        tracing::error!("signing key rotation failed: {e}");
                    }
                }
            }
        });
    }

    let mut up_failed = None;
    if let Some(path) = up {
        let token = identity
            .mint_id_token(
                &Principal::User(format!("owner@{}", scheme.domain())),
                &issuer_url,
                None,
            )
            .map_err(|e| anyhow!("{e}"))?;
        let client = pier_cli::Client::new(&api_url, token)?;
        let ctx = pier_cli::Ctx {
            client,
            project: pier_model::ProjectName::default(),
            format: pier_cli::Format::Text,
        };
        match pier_cli::commands::manifests::deploy_path(&ctx, &path).await {
            Ok(urls) => {
                pier_cli::output::service_urls(&urls);
                tracing::info!(
                    "try: curl --cacert {ca_path} {}",
                    urls.first().map(|u| u.1.as_str()).unwrap_or("")
                );
                tracing::info!("press Ctrl-C to stop");
            }
            Err(e) => up_failed = Some(e),
        }
    }

    if up_failed.is_none() {
        wait_for_signal().await;
        tracing::info!("shutting down: draining requests in flight");
    }
    let _ = stop_tx.send(true);
    let _ = https_task.await;
    let _ = http_task.await;
    let _ = api_task.await;
    tracing::info!("stopping instances");
    platform.shutdown().await;
    // Instances still starting when the stop came are in no pool yet: whatever this installation
    // still runs (found by its cgroups and containers, as at start) goes now.
    let mut late = process.cleanup_leftovers().await.unwrap_or(0);
    if let Some(c) = &container_at_exit {
        late += c.cleanup_leftovers().await.unwrap_or(0);
    }
    if late > 0 {
        tracing::info!("stopped {late} instances that were still starting");
    }
    if let Some(root) = &cgroups {
        root.remove_if_empty();
    }
    if let Some(c) = &container_at_exit {
        c.remove_cgroups();
    }
    network.teardown();
    data_dir::remove_run_dir(&run_dir);
    tracing::info!("stopped");
    match up_failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
