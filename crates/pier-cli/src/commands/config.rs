//! `pier config set|unset|list`: the CLI's settings, as `gcloud config` has them: the active account
//! (any account `pier auth list` shows) and the default project.

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::config::config_path;
use crate::{Format, load_config, output};

/// `pier config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set `account` (switch to another signed-in account) or `project` (the default project).
    Set {
        /// `account` or `project`.
        property: String,
        /// The value.
        value: String,
    },
    /// Clear `project` (back to `default`).
    Unset {
        /// `project`.
        property: String,
    },
    /// Show the settings.
    List,
}

/// Runs a config command: local, needs no server.
#[allow(clippy::print_stdout)]
pub fn run(cmd: &ConfigCommand, format: Format) -> Result<()> {
    let mut cfg = load_config()?;
    match cmd {
        ConfigCommand::Set { property, value } => match property.as_str() {
            "account" => {
                super::auth::switch_account(&mut cfg, value)?;
                eprintln!("Updated property [account] to [{value}].");
            }
            "project" => {
                value
                    .parse::<pier_model::ProjectName>()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                cfg.project = Some(value.clone());
                cfg.save(&config_path())?;
                eprintln!("Updated property [project] to [{value}].");
            }
            other => bail!("unknown property {other:?}: set account or project"),
        },
        ConfigCommand::Unset { property } => match property.as_str() {
            "project" => {
                cfg.project = None;
                cfg.save(&config_path())?;
                eprintln!("Unset property [project].");
            }
            other => bail!("cannot unset {other:?}: only project can be unset"),
        },
        ConfigCommand::List => {
            let account = cfg
                .credentials_file
                .as_ref()
                .and_then(|f| crate::auth::Credentials::load(f).ok())
                .map(|c| c.account().to_owned());
            let project = cfg.project.clone().unwrap_or_else(|| "default".into());
            if !output::structured(
                format,
                &serde_json::json!({"account": account, "project": project, "api": cfg.api_url}),
            )? {
                println!("account = {}", account.as_deref().unwrap_or("(none)"));
                println!("project = {project}");
                println!("api = {}", cfg.api_url);
            }
        }
    }
    Ok(())
}
