//! The `pier` command line's client side: gcloud-like verbs (`deploy`, `services`, `revisions`, `logs`)
//! over the admin API. The binary adds `server`, `up` and `doctor`, whose flags are its own.
//!
//! Architecture invariant: this is the only crate that prints to stdout. Results go to stdout, progress and
//! errors to stderr; `--format json` prints machine-readable results.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use pier_model::ProjectName;

pub mod auth;
pub mod client;
pub mod commands;
pub mod config;
pub mod output;
pub mod progress;

pub use client::Client;

/// Options every client command takes (the binary flattens them into its command line).
#[derive(Debug, Clone, Args)]
pub struct Globals {
    /// Project (namespace) to work in.
    #[arg(long, global = true, env = "PIER_PROJECT")]
    pub project: Option<String>,

    /// Output format of results: text (or table), json, yaml, or value(FIELD) for one field of each
    /// result's JSON form (a dotted path such as `url` or `template.image`), as gcloud's --format has.
    #[arg(long, global = true, value_parser = parse_format, default_value = "text")]
    pub format: Format,

    /// Print results only: no progress (spinners, phases) on stderr.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For people (`text`, or `table` as gcloud names it).
    Text,
    /// JSON, as the API returns it.
    Json,
    /// Knative YAML (services) or YAML.
    Yaml,
    /// One field of each result, one per line (`value(url)`): a dotted path into the JSON form.
    Value(&'static str),
}

/// Parses `--format`: `text`, `table`, `json`, `yaml` or `value(FIELD)`.
pub fn parse_format(s: &str) -> Result<Format, String> {
    match s.trim() {
        "text" | "table" => Ok(Format::Text),
        "json" => Ok(Format::Json),
        "yaml" => Ok(Format::Yaml),
        other => {
            let field = other
                .strip_prefix("value(")
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
                .filter(|f| {
                    !f.is_empty()
                        && f.split('.').all(|p| {
                            !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
                })
                .ok_or_else(|| {
                    "use text, table, json, yaml or value(FIELD), FIELD a dotted path into the JSON form such as url or template.image".to_owned()
                })?;
            // One format per process: the field lives as long as the command.
            Ok(Format::Value(Box::leak(field.to_owned().into_boxed_str())))
        }
    }
}

/// The client commands (the binary adds `server`, `up` and `doctor`).
// Parsed once per process: the size of its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Custom domains the project owns.
    #[command(subcommand)]
    Domains(commands::domains::DomainsCommand),
    /// Custom domains mapped to services, with managed certificates.
    #[command(subcommand)]
    DomainMappings(commands::domains::DomainMappingsCommand),
    /// API gateways from OpenAPI documents: APIs, configs, gateways.
    #[command(subcommand)]
    ApiGateway(commands::api_gateway::ApiGatewayCommand),
    /// API keys for API gateways.
    #[command(subcommand)]
    ApiKeys(commands::api_gateway::ApiKeysCommand),
    /// Static sites from firebase.json: deploys, preview channels, releases, rollback.
    #[command(subcommand)]
    Hosting(commands::hosting::HostingCommand),
    /// The edge cache: invalidate what it holds.
    #[command(subcommand)]
    Cache(commands::hosting::CacheCommand),
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
    /// No progress output (`--quiet`).
    pub quiet: bool,
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
            quiet: false,
        })
    }
}

/// Runs a client command.
pub async fn run_client(globals: Globals, command: Command) -> Result<()> {
    // Commands that manage the sign-in itself do not need one.
    if let Command::Auth(c) = &command
        && let Some(r) = commands::auth::run_local(c, globals.format).await
    {
        return r;
    }
    if let Command::Config(c) = &command {
        return commands::config::run(c, globals.format);
    }
    let mut ctx = Ctx::from_env(globals.project.as_deref(), globals.format).await?;
    ctx.quiet = globals.quiet;
    match command {
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
        Command::Domains(c) => commands::domains::run_domains(&ctx, c).await,
        Command::DomainMappings(c) => commands::domains::run_mappings(&ctx, c).await,
        Command::ApiGateway(c) => commands::api_gateway::run(&ctx, c).await,
        Command::ApiKeys(c) => commands::api_gateway::run_keys(&ctx, c).await,
        Command::Hosting(c) => commands::hosting::run(&ctx, c).await,
        Command::Cache(c) => commands::hosting::run_cache(&ctx, c).await,
        Command::Config(_) => unreachable!("answered above"),
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
}
