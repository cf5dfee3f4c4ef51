//! The server: its flags checked, its parts built once and in order ([`build`]), then run until a
//! signal and shut down in order ([`run`]), with housekeeping as named periodic jobs ([`jobs`]).

use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cli::ServerArgs;
use anyhow::{Context, Result, anyhow, bail};
use pier_activator::{Activator, ActivatorConfig};
use pier_api::{ApexHandler, AppState, TokenAuth};
use pier_cli::config::{CliConfig, config_path, default_data_dir};
use pier_control::{IdentityService, Platform, PlatformParts};
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

mod allocator;
mod apigw;
mod build;
mod containers;
mod data_dir;
mod domains;
mod instance_env;
mod instances;
mod jobs;
mod machine_watch;
mod metrics;
mod namespace;
mod oidc;
mod run;

use build::Server;

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
    allocator::limit_arenas();
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

/// Config → build → run.
async fn serve(args: ServerArgs, up: Option<PathBuf>) -> Result<()> {
    Server::build(args).await?.run(up).await
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
