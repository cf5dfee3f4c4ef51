//! Where things live: the server's data dir, and the CLI's config file that tells it how to reach the
//! server (API address and the file holding its token).
//!
//! - Data dir: `--data-dir`, else `$PIER_DATA_DIR`, else `$XDG_DATA_HOME/pier`, else `~/.local/share/pier`.
//! - CLI config: `$PIER_CONFIG`, else `$XDG_CONFIG_HOME/pier/config.toml`, else `~/.config/pier/config.toml`.
//!   The server writes it at start unless it belongs to another data dir.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The CLI's config file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// Base URL of the admin API.
    pub api_url: String,
    /// The active account's credentials (a user's refresh token or a service-account key file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// The data dir of the server this config belongs to.
    pub data_dir: PathBuf,
    /// Default project for commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The default data dir.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PIER_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("pier");
    }
    home().join(".local/share/pier")
}

/// The CLI config file's path.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PIER_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("pier/config.toml");
    }
    home().join(".config/pier/config.toml")
}

impl CliConfig {
    /// Reads the config file, if there is one.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(toml::from_str(&text).with_context(|| {
                format!(
                    "{} is not a valid Pier CLI config; fix or delete it",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the config file (0600: it points at a credential).
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string(self).context("encoding the CLI config")?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Called by the server at start: points the CLI at this server unless the existing config belongs to
    /// a different data dir. Returns whether it wrote.
    pub fn adopt(path: &Path, fresh: &CliConfig) -> Result<bool> {
        match Self::load(path) {
            Ok(Some(existing)) if existing.data_dir != fresh.data_dir => Ok(false),
            Ok(Some(existing)) if existing == *fresh => Ok(false),
            Ok(Some(existing)) => {
                // Keep the user's choices: project and an active account that still exists.
                let credentials_file = existing
                    .credentials_file
                    .filter(|f| f.exists())
                    .or_else(|| fresh.credentials_file.clone());
                let merged = CliConfig {
                    project: existing.project,
                    credentials_file,
                    ..fresh.clone()
                };
                merged.save(path)?;
                Ok(true)
            }
            Ok(None) | Err(_) => {
                fresh.save(path)?;
                Ok(true)
            }
        }
    }

    /// Where `pier auth login` and `activate-service-account` keep credentials.
    pub fn credentials_dir() -> PathBuf {
        config_path()
            .parent()
            .map(|p| p.join("credentials"))
            .unwrap_or_else(|| PathBuf::from("credentials"))
    }
}
