//! Running a built server: listeners and housekeeping start, the CLI learns where the server is, `pier
//! up` deploys its manifests; then, on SIGTERM or Ctrl-C, an ordered shutdown: stop accepting, let
//! requests in flight finish, stop the jobs, stop instances (those still starting too), and remove
//! what the server made on the host (cgroups, network, run dir).

use super::*;
use jobs::Job;

impl Server {
    /// Serves until a signal (or, with `up`, until its deploy fails), then shuts down in order.
    pub(super) async fn run(self, up: Option<PathBuf>) -> Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let https_port = self.https.local_addr()?.port();
        let http_port = self.http.local_addr()?.port();
        let api_addr = self.api.local_addr()?;
        if let Some(m) = &self.metrics {
            m.add_edge_cache(self.platform.edge_cache().clone());
        }
        let metrics_task = self.metrics.map(|m| tokio::spawn(m.serve(stop_rx.clone())));
        let listeners = [
            tokio::spawn(self.gateway.clone().serve_https(
                self.https,
                self.tls.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(self.gateway.clone().serve_http(
                self.http,
                self.args.http_serve,
                stop_rx.clone(),
            )),
            tokio::spawn({
                let mut stop = stop_rx.clone();
                let (api, router) = (self.api, self.router);
                async move {
                    let _ = axum::serve(api, router)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await;
                }
            }),
        ];

        // Tell the CLI where we are.
        let api_url = format!("http://{api_addr}");
        // Whole or not at all: the CLI and scripts read it while the server starts.
        pier_tls::write_private(&self.data_dir.join("api-url"), api_url.as_bytes(), 0o644)?;
        let cli_config = CliConfig {
            api_url: api_url.clone(),
            credentials_file: self.owner_creds.exists().then(|| self.owner_creds.clone()),
            data_dir: self.data_dir.clone(),
            project: None,
        };
        if let Err(e) = CliConfig::adopt(&config_path(), &cli_config) {
            tracing::warn!("could not write the CLI config: {e:#}");
        }
        let ca_path = self.ca.cert_path().display().to_string();
        tracing::info!(
            "Pier {} serving https://*.{}:{https_port} (HTTP on :{http_port} {}), admin API {api_url} and {}",
            env!("CARGO_PKG_VERSION"),
            self.args.domain,
            if self.args.http_serve {
                "serves"
            } else {
                "redirects to HTTPS"
            },
            self.issuer_url,
        );
        tracing::info!(
            "local CA certificate: {ca_path} (trust it: curl --cacert {ca_path}, or copy it to /usr/local/share/ca-certificates/pier.crt and run update-ca-certificates)"
        );

        let jobs: Vec<_> = housekeeping(
            &self.platform,
            &self.domain_cert,
            &self.ca,
            &self.ring,
            &self.data_dir,
        )
        .into_iter()
        .map(|job| job.spawn(stop_rx.clone()))
        .chain([tokio::spawn(self.certificates.clone().run(stop_rx.clone()))])
        .collect();

        let up_failed = match up {
            Some(path) => deploy_up(
                &self.identity,
                &self.scheme,
                &self.issuer_url,
                &api_url,
                &ca_path,
                &path,
            )
            .await
            .err(),
            None => None,
        };
        if up_failed.is_none() {
            wait_for_signal().await;
            tracing::info!("shutting down: draining requests in flight");
        }

        // Ordered shutdown.
        let _ = stop_tx.send(true);
        for task in listeners.into_iter().chain(metrics_task) {
            let _ = task.await;
        }
        if let Some(t) = self.traces.clone() {
            // The exporter's last batch, off the async threads (it blocks on its HTTP client).
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
        for job in jobs {
            let _ = job.await;
        }
        tracing::info!("stopping instances");
        self.platform.shutdown().await;
        // Instances still starting when the stop came are in no pool yet: whatever this installation
        // still runs (found by its cgroups and containers, as at start) goes now.
        let mut late = self.process.cleanup_leftovers().await.unwrap_or(0);
        if let Some(c) = &self.container {
            late += c.cleanup_leftovers().await.unwrap_or(0);
        }
        if late > 0 {
            tracing::info!("stopped {late} instances that were still starting");
        }
        if let Some(root) = &self.cgroups {
            root.remove_if_empty();
        }
        if let Some(c) = &self.container {
            c.remove_cgroups();
        }
        self.network.teardown();
        data_dir::remove_run_dir(&self.run_dir);
        tracing::info!("stopped");
        match up_failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The server's periodic jobs.
fn housekeeping(
    platform: &Arc<Platform>,
    domain_cert: &Arc<DomainCert>,
    ca: &Arc<LocalCa>,
    ring: &Arc<KeyRing>,
    data_dir: &Path,
) -> Vec<Job> {
    let cache = platform.edge_cache().clone();
    let mut last_report = (0, 0);
    let (platform, domains) = (platform.clone(), platform.clone());
    let (domain_cert, ca) = (domain_cert.clone(), ca.clone());
    let ring = ring.clone();
    let mut watch = machine_watch::Watch::new(data_dir.to_path_buf());
    vec![
        // Pools that served no traffic for a while and have no instances left.
        Job::new("sweep-pools", Duration::from_secs(10), move || {
            let platform = platform.clone();
            async move { platform.sweep_pools().await }
        }),
        // Mapped domains: where they point now, and so which may have certificates ordered.
        Job::new("check-domains", Duration::from_secs(10), move || {
            let platform = domains.clone();
            async move {
                if let Err(e) = platform.check_domains().await {
                    tracing::error!("checking mapped domains failed: {e}");
                }
            }
        }),
        // The domain's certificate, renewed ahead of its expiry.
        Job::blocking("refresh-certificate", Duration::from_secs(60), move || {
            if let Err(e) = domain_cert.refresh(&ca, SystemTime::now(), false) {
                tracing::error!("certificate refresh failed: {e}");
            }
        }),
        // Signing keys, rotated on their schedule (a new key is RSA generation: CPU work).
        Job::blocking("rotate-signing-keys", Duration::from_secs(60), move || {
            if let Err(e) = ring.rotate(SystemTime::now()) {
                tracing::error!("signing key rotation failed: {e}");
            }
        }),
        // The edge cache's hit ratio and bytes, when they moved.
        Job::new("report-cache", Duration::from_secs(60), move || {
            let stats = cache.stats();
            let hits = stats.hits.load(std::sync::atomic::Ordering::Relaxed);
            let misses = stats.misses.load(std::sync::atomic::Ordering::Relaxed);
            if (hits, misses) != last_report {
                last_report = (hits, misses);
                let ratio = hits as f64 / (hits + misses).max(1) as f64;
                tracing::info!(
                    hits,
                    misses,
                    hit_ratio = format!("{ratio:.3}"),
                    bytes_served = stats.hit_bytes.load(std::sync::atomic::Ordering::Relaxed),
                    bytes_held = cache.bytes(),
                    bytes_on_disk = cache.disk_bytes().unwrap_or(0),
                    "edge cache"
                );
            }
            async {}
        }),
        // Free space, inodes and descriptors: crossing a low mark is logged (at start too).
        Job::blocking("watch-machine", machine_watch::EVERY, move || watch.check()),
    ]
}

/// `pier up`: deploys the manifests at `path` as the owner, and prints their URLs.
async fn deploy_up(
    identity: &IdentityService,
    scheme: &UrlScheme,
    issuer_url: &str,
    api_url: &str,
    ca_path: &str,
    path: &Path,
) -> Result<()> {
    let token = identity
        .mint_id_token(
            &Principal::User(format!("owner@{}", scheme.domain())),
            issuer_url,
            None,
        )
        .map_err(|e| anyhow!("{e}"))?;
    let client = pier_cli::Client::new(api_url, token)?;
    let ctx = pier_cli::Ctx {
        client,
        project: pier_model::ProjectName::default(),
        format: pier_cli::Format::Text,
        quiet: false,
    };
    let urls = pier_cli::commands::manifests::deploy_path(&ctx, path).await?;
    pier_cli::output::service_urls(&urls);
    tracing::info!(
        "try: curl --cacert {ca_path} {}",
        urls.first().map(|u| u.1.as_str()).unwrap_or("")
    );
    tracing::info!("press Ctrl-C to stop");
    Ok(())
}
