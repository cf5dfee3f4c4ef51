//! The `pier` command line: gcloud-like verbs (`deploy`, `services`, `revisions`, `logs`) over the admin
//! API, plus the arguments of `pier server` and `pier up`, which the binary runs.
//!
//! Architecture invariant: this is the only crate that prints to stdout. Results go to stdout, progress and
//! errors to stderr; `--format json` prints machine-readable results.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Args, Parser, Subcommand, ValueEnum};
use pier_model::ProjectName;

pub mod auth;
pub mod client;
pub mod commands;
pub mod config;
pub mod output;

pub use client::Client;

/// Pier: a self-hosted serverless platform. Deploy a command or container image, get a stable HTTPS URL,
/// instances start on demand and scale with traffic.
#[derive(Debug, Parser)]
#[command(name = "pier", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Project (namespace) to work in.
    #[arg(long, global = true, env = "PIER_PROJECT")]
    pub project: Option<String>,

    /// Output format of results.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// JSON, as the API returns it.
    Json,
    /// Knative YAML (services) or YAML.
    Yaml,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Pier server (gateway, admin API, instances) in the foreground.
    Server(ServerArgs),
    /// Start a server in the foreground and deploy the service manifests at PATH (the dev loop).
    Up(UpArgs),
    /// Check what this host gives instances (root, host ids, cgroups, seccomp, kernel, helper
    /// programs, ports), with the fix for anything missing.
    Doctor(DoctorArgs),
    /// Deploy a new revision of a service (creating it if needed).
    Deploy(commands::deploy::DeployArgs),
    /// Manage services.
    #[command(subcommand)]
    Services(commands::services::ServicesCommand),
    /// Manage revisions.
    #[command(subcommand)]
    Revisions(commands::revisions::RevisionsCommand),
    /// Read a service's instance logs.
    Logs(commands::logs::LogsArgs),
    /// Sign in, switch accounts, print identity tokens.
    #[command(subcommand)]
    Auth(commands::auth::AuthCommand),
    /// The CLI's settings: the active account and the default project.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// Service accounts and their keys.
    #[command(subcommand)]
    Iam(commands::iam::IamCommand),
    /// Project IAM policies.
    #[command(subcommand)]
    Projects(commands::iam::ProjectsCommand),
    /// The installation's IAM policy (roles that hold in every project).
    #[command(subcommand)]
    Installation(commands::iam::InstallationCommand),
    /// Users who sign in with a password.
    #[command(subcommand)]
    Users(commands::iam::UsersCommand),
    /// Container images on the server.
    #[command(subcommand)]
    Images(commands::images::ImagesCommand),
}

/// Arguments of `pier doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The data dir a server would use [default: $PIER_DATA_DIR or ~/.local/share/pier].
    #[arg(long, env = "PIER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `pier server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Where Pier keeps its state, certificates and logs [default: $PIER_DATA_DIR or ~/.local/share/pier].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Base domain of service URLs (needs wildcard DNS to this machine unless it ends in .localhost).
    #[arg(long, default_value = "pier.localhost")]
    pub domain: String,

    /// HTTPS port of the gateway (0 picks a free one).
    #[arg(long, default_value_t = 8443)]
    pub https_port: u16,

    /// HTTP port of the gateway: redirects to HTTPS unless --http-serve (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,

    /// Serve services on the HTTP port too, instead of redirecting to HTTPS.
    #[arg(long)]
    pub http_serve: bool,

    /// Address of the admin API (loopback unless --api-public). The API is also served, over TLS, at
    /// https://DOMAIN:HTTPS_PORT.
    #[arg(long, default_value = "127.0.0.1:8079")]
    pub api_addr: std::net::SocketAddr,

    /// Allow --api-addr on a non-loopback address (every call needs a token).
    #[arg(long)]
    pub api_public: bool,

    /// Address the gateway listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen: std::net::IpAddr,

    /// Certificate chain (PEM) for the domain instead of one from Pier's local CA.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Worker threads of the server (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,

    /// Idle time before a revision scales to zero (e.g. 60s, 500ms, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub scale_to_zero_grace: Duration,

    /// Autoscaler stable window.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub stable_window: Duration,

    /// Autoscaler panic window.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pub panic_window: Duration,

    /// How long a request may wait for a slot while its revision is at max instances.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub pending_timeout: Duration,

    /// How long a new instance has to listen on PORT (Cloud Run's startup probe allows 240s).
    #[arg(long, default_value = "240s", value_parser = parse_duration)]
    pub startup_timeout: Duration,

    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_request_body: u64,

    /// OCI runtime that runs container images: runc, crun, youki, or a path.
    #[arg(long, default_value = "runc")]
    pub container_runtime: PathBuf,

    /// How instances reach beyond the host: `user` (slirp4netns per instance; nothing on the host changes),
    /// `bridge` (a bridge of the server's own with NAT; sets net.ipv4.ip_forward and adds an nftables
    /// table), or `none`. In every mode private ranges, link-local addresses and the host itself stay
    /// unreachable unless listed with --private-egress.
    #[arg(long, default_value = "user", value_parser = ["user", "bridge", "none"])]
    pub egress: String,

    /// The private subnet instances get addresses from, with --egress bridge.
    #[arg(long, default_value = "10.89.0.0/16", value_name = "CIDR")]
    pub instance_subnet: String,

    /// Private networks (CIDRs, comma-separated or repeated) that services deployed with
    /// --vpc-egress private-ranges-only may reach.
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub private_egress: Vec<String>,

    /// Allow host commands deployed --unsandboxed (they run as the server's user, with the host's
    /// filesystem and no seccomp filter); only owners may deploy them.
    #[arg(long)]
    pub allow_unsandboxed: bool,

    /// A named exception to the seccomp profile, NAME:CALL[,CALL...] (repeatable), such as
    /// profiling:perf_event_open; an owner attaches it to a service with `pier deploy
    /// --seccomp-exception NAME`. Calls that would leave the sandbox (unshare, mount, bpf, keyctl,
    /// kexec_load, ...) cannot be named.
    #[arg(long = "seccomp-exception", value_name = "NAME:CALLS")]
    pub seccomp_exceptions: Vec<String>,

    /// The execution environment of image revisions that name none: gen2 (runc, hardened) or gen1
    /// (gVisor's runsc). Recorded in each revision at deploy.
    #[arg(long, default_value = "gen2", value_parser = ["gen1", "gen2"])]
    pub execution_environment: String,

    /// gVisor's runtime, which runs gen1 revisions.
    #[arg(long, default_value = "runsc")]
    pub gvisor_runtime: PathBuf,

    /// The host ids of instances, `START:COUNT` (a multiple of 65536 ids, one block per service)
    /// [default: the `pier` lines of /etc/subuid and /etc/subgid, else 1879048192:1073741824].
    #[arg(long, value_name = "START:COUNT")]
    pub instance_ids: Option<String>,

    /// A registry (`host:port`) reached over plain HTTP (repeatable); loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,

    /// A PEM file of extra CA certificates trusted for registries (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_cas: Vec<PathBuf>,

    /// An external OpenID Connect issuer whose ID tokens the gateway accepts for end users (repeatable):
    /// its `/.well-known/openid-configuration` and JWKS are fetched and kept fresh.
    #[arg(long = "trusted-issuer", value_name = "URL")]
    pub trusted_issuers: Vec<String>,

    /// A PEM file of extra CA certificates trusted when fetching external issuers' keys (repeatable).
    #[arg(long = "oidc-ca", value_name = "FILE")]
    pub oidc_cas: Vec<PathBuf>,

    /// How image roots are built: overlay (shared read-only layers) or copy (a plain copy per image).
    #[arg(long, default_value = "overlay", value_parser = ["overlay", "copy"])]
    pub rootfs: String,

    /// Most an image may unpack to (file content, such as 16Gi or 500Mi): larger images and
    /// decompression bombs fail their deploy.
    #[arg(long, default_value = "16Gi", value_parser = parse_size)]
    pub max_image_size: u64,
}

/// Parses a size such as `16Gi`, `500Mi` or `1000000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    pier_model::spec::parse_quantity(s.trim())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("{s:?} is not a size: use a number of bytes or one such as 500Mi or 16Gi")
        })
}

/// Arguments of `pier up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// A Knative Service manifest, or a folder of them (*.yaml, *.yml).
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Server settings.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Parses `500ms`, `60s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 300s, 5m, 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The context every client command gets.
#[derive(Debug)]
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Project.
    pub project: ProjectName,
    /// Output format.
    pub format: Format,
}

/// The CLI config, or the data dir's files when there is no config.
pub fn load_config() -> Result<config::CliConfig> {
    let path = config::config_path();
    if let Some(c) = config::CliConfig::load(&path)? {
        return Ok(c);
    }
    let dir = config::default_data_dir();
    let api_url = std::fs::read_to_string(dir.join("api-url"))
        .map(|s| s.trim().to_owned())
        .map_err(|_| {
            anyhow!(
                "no CLI config at {} and no server data at {}: start `pier server` first",
                path.display(),
                dir.display()
            )
        })?;
    let owner = dir.join("owner-credentials.json");
    Ok(config::CliConfig {
        api_url,
        credentials_file: owner.exists().then_some(owner),
        data_dir: dir,
        project: None,
    })
}

/// An HTTP client for the CLI's own calls.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| anyhow!("building the HTTP client: {e}"))
}

impl Ctx {
    /// Builds the context from the CLI config and the active account's credentials.
    pub async fn from_env(project: Option<&str>, format: Format) -> Result<Self> {
        let cfg = load_config()?;
        let creds_path = cfg.credentials_file.clone().ok_or_else(|| {
            anyhow!("not signed in: run `pier auth login EMAIL` or `pier auth activate-service-account --key-file FILE`")
        })?;
        let creds = auth::Credentials::load(&creds_path)?;
        let token = creds
            .access_token(&http_client()?, &cfg.api_url)
            .await
            .map_err(|e| anyhow!("cannot get a token for {}: {e}", creds.account()))?;
        let project = project
            .map(str::to_owned)
            .or(cfg.project.clone())
            .unwrap_or_else(|| "default".into())
            .parse::<ProjectName>()
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Self {
            client: Client::new(&cfg.api_url, token)?,
            project,
            format,
        })
    }
}

/// Runs a client command (everything except `server` and `up`, which the binary runs).
pub async fn run_client(cli: Cli) -> Result<()> {
    // Commands that manage the sign-in itself do not need one.
    if let Command::Auth(c) = &cli.command
        && let Some(r) = commands::auth::run_local(c, cli.format).await
    {
        return r;
    }
    if let Command::Config(c) = &cli.command {
        return commands::config::run(c, cli.format);
    }
    let ctx = Ctx::from_env(cli.project.as_deref(), cli.format).await?;
    match cli.command {
        Command::Deploy(args) => commands::deploy::run(&ctx, args).await,
        Command::Services(c) => commands::services::run(&ctx, c).await,
        Command::Revisions(c) => commands::revisions::run(&ctx, c).await,
        Command::Logs(args) => commands::logs::run(&ctx, args).await,
        Command::Auth(c) => commands::auth::run(&ctx, c).await,
        Command::Iam(c) => commands::iam::run(&ctx, c).await,
        Command::Projects(c) => commands::iam::run_projects(&ctx, c).await,
        Command::Installation(c) => commands::iam::run_installation(&ctx, c).await,
        Command::Users(c) => commands::iam::run_users(&ctx, c).await,
        Command::Images(c) => commands::images::run(&ctx, c).await,
        Command::Server(_) | Command::Up(_) | Command::Doctor(_) | Command::Config(_) => {
            Err(anyhow!("internal: server commands are run by the binary"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
