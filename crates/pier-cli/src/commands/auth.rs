//! `pier auth login | activate-service-account | list | revoke | print-identity-token | whoami`.
//!
//! Credentials live in `~/.config/pier/credentials/ACCOUNT.json` (0600); the config file names the active
//! one. The server's first start signs the local CLI in as the owner.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use pier_identity::tokens::CLI_CLIENT_ID;
use pier_model::api::{GenerateIdTokenRequest, TokenView, WhoAmI};

use crate::auth::{Credentials, UserCredentials};
use crate::config::{CliConfig, config_path};
use crate::{Ctx, Format, http_client, load_config, output};

/// Sign-in commands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Sign in as a user with a password.
    Login {
        /// The user's email.
        email: String,
        /// Read the password from standard input (one line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Read the password from a file.
        #[arg(long, conflicts_with = "password_stdin")]
        password_file: Option<PathBuf>,
    },
    /// Use a service account's key file (Google's format) as the active account.
    ActivateServiceAccount {
        /// The account (must match the key file's client_email when given).
        account: Option<String>,
        /// The key file.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// List the accounts the CLI has credentials for.
    List,
    /// Forget an account's credentials (and end a user's session on the server).
    Revoke {
        /// The account; the active one if absent.
        account: Option<String>,
    },
    /// Print an ID token for the active account.
    PrintIdentityToken {
        /// The token's audience, e.g. a service URL (default: the Pier CLI's client id, which every
        /// service accepts for testing).
        #[arg(long)]
        audiences: Option<String>,
        /// Mint the token for this service account instead (needs roles/iam.serviceAccountTokenCreator).
        #[arg(long)]
        impersonate_service_account: Option<String>,
    },
    /// Print an access token for the active account: what the admin API accepts (never a service).
    PrintAccessToken,
    /// Show who the server thinks you are.
    Whoami,
    /// Give the server credentials for a container registry (it pulls images with them), or remove them.
    ConfigureDocker {
        /// The registry, `host[:port]` (for example localhost:5000).
        registry: String,
        /// User name (omit to send the secret as a bearer token).
        #[arg(long, default_value = "")]
        username: String,
        /// Read the password or token from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
        /// Read the password or token from a file.
        #[arg(long, conflicts_with = "password_stdin")]
        password_file: Option<PathBuf>,
        /// Remove the registry's credentials instead.
        #[arg(long, conflicts_with_all = ["username", "password_stdin", "password_file"])]
        remove: bool,
    },
}

fn save_private(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

/// Every credentials file the CLI knows: its own (`auth login`, `activate-service-account`), the
/// server's owner credentials in the data dir, and the active one.
pub fn known_credentials(cfg: &CliConfig) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(CliConfig::credentials_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let owner = cfg.data_dir.join("owner-credentials.json");
    if owner.is_file() {
        files.push(owner);
    }
    if let Some(a) = &cfg.credentials_file {
        files.push(a.clone());
    }
    files.sort();
    files.dedup();
    files
}

/// Makes the credentials of `account` (an email) the active ones.
pub fn switch_account(cfg: &mut CliConfig, account: &str) -> Result<()> {
    let known = known_credentials(cfg);
    let found = known
        .iter()
        .find(|f| Credentials::load(f).is_ok_and(|c| c.account().eq_ignore_ascii_case(account)));
    match found {
        Some(f) => activate(cfg, f),
        None => {
            let names: Vec<String> = known
                .iter()
                .filter_map(|f| Credentials::load(f).ok())
                .map(|c| c.account().to_owned())
                .collect();
            bail!(
                "no credentials for {account}: sign in with `pier auth login {account}` or `pier auth activate-service-account --key-file KEY`; known accounts: {}",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            )
        }
    }
}

fn activate(cfg: &mut CliConfig, file: &Path) -> Result<()> {
    cfg.credentials_file = Some(file.to_owned());
    cfg.save(&config_path())
}

fn read_password(stdin: bool, file: Option<&Path>) -> Result<String> {
    if let Some(f) = file {
        return Ok(std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_owned());
    }
    let tty = std::io::stdin().is_terminal();
    if !stdin && tty {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    // Hide what is typed on a terminal.
    let saved = if tty && !stdin {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let fd = std::io::stdin();
        tcgetattr(&fd).ok().inspect(|t| {
            let mut quiet = t.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            let _ = tcsetattr(&fd, SetArg::TCSANOW, &quiet);
        })
    } else {
        None
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
        eprintln!();
    }
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Runs the commands that need no signed-in account; `None` for the others.
pub(crate) async fn run_local(cmd: &AuthCommand, format: Format) -> Option<Result<()>> {
    match cmd {
        AuthCommand::Whoami | AuthCommand::ConfigureDocker { .. } => None,
        AuthCommand::PrintIdentityToken { .. } | AuthCommand::PrintAccessToken => {
            Some(print_token(cmd).await)
        }
        _ => Some(run_offline(cmd, format).await),
    }
}

async fn run_offline(cmd: &AuthCommand, format: Format) -> Result<()> {
    let mut cfg = load_config()?;
    match cmd {
        AuthCommand::Login {
            email,
            password_stdin,
            password_file,
        } => {
            let password = read_password(*password_stdin, password_file.as_deref())?;
            let creds = crate::auth::login(&http_client()?, &cfg.api_url, email, &password).await?;
            let file = CliConfig::credentials_dir().join(format!("{}.json", creds.account));
            save_private(&file, &serde_json::to_vec_pretty(&creds)?)?;
            activate(&mut cfg, &file)?;
            eprintln!("You are now signed in as [{}].", creds.account);
        }
        AuthCommand::ActivateServiceAccount { account, key_file } => {
            let creds = Credentials::load(key_file)?;
            let Credentials::ServiceAccount(key) = &creds else {
                bail!("{} is not a service-account key file", key_file.display());
            };
            if let Some(a) = account
                && !a.eq_ignore_ascii_case(&key.client_email)
            {
                bail!("the key file belongs to {}, not {a}", key.client_email);
            }
            // Prove the key works before switching to it.
            creds
                .access_token(&http_client()?, &cfg.api_url)
                .await
                .map_err(|e| anyhow!("the key was refused: {e}"))?;
            let file = CliConfig::credentials_dir().join(format!("{}.json", key.client_email));
            save_private(&file, &serde_json::to_vec_pretty(key.as_ref())?)?;
            activate(&mut cfg, &file)?;
            eprintln!(
                "Activated service account credentials for: [{}]",
                key.client_email
            );
        }
        AuthCommand::List => {
            let active = cfg.credentials_file.clone();
            let files = known_credentials(&cfg);
            let mut rows = Vec::new();
            for f in files {
                if let Ok(c) = Credentials::load(&f) {
                    let kind = match c {
                        Credentials::User(_) => "user",
                        Credentials::ServiceAccount(_) => "serviceAccount",
                    };
                    rows.push(vec![
                        if Some(&f) == active.as_ref() { "*" } else { "" }.to_owned(),
                        c.account().to_owned(),
                        kind.to_owned(),
                    ]);
                }
            }
            if format != Format::Text {
                let v: Vec<_> = rows
                    .iter()
                    .map(|r| serde_json::json!({"active": r[0] == "*", "account": r[1], "type": r[2]}))
                    .collect();
                output::structured(format, &v)?;
            } else {
                print!("{}", output::table(&["ACTIVE", "ACCOUNT", "TYPE"], &rows));
            }
        }
        AuthCommand::Revoke { account } => {
            let file = match account {
                Some(a) => CliConfig::credentials_dir().join(format!("{a}.json")),
                None => cfg
                    .credentials_file
                    .clone()
                    .ok_or_else(|| anyhow!("no active account to revoke"))?,
            };
            let creds = Credentials::load(&file)?;
            if let Credentials::User(UserCredentials { refresh_token, .. }) = &creds {
                crate::auth::revoke(&http_client()?, &cfg.api_url, refresh_token).await?;
            }
            // The server's owner credentials stay; only the CLI's own copies are deleted.
            if file.starts_with(CliConfig::credentials_dir()) {
                std::fs::remove_file(&file)
                    .with_context(|| format!("deleting {}", file.display()))?;
            }
            if cfg.credentials_file.as_ref() == Some(&file) {
                cfg.credentials_file = None;
                cfg.save(&config_path())?;
            }
            eprintln!("Revoked credentials: [{}]", creds.account());
        }
        AuthCommand::Whoami
        | AuthCommand::PrintIdentityToken { .. }
        | AuthCommand::PrintAccessToken
        | AuthCommand::ConfigureDocker { .. } => {}
    }
    Ok(())
}

async fn print_token(cmd: &AuthCommand) -> Result<()> {
    let cfg = load_config()?;
    let creds_path = cfg.credentials_file.clone().ok_or_else(|| {
        anyhow!("not signed in: run `pier auth login EMAIL` or `pier auth activate-service-account --key-file FILE`")
    })?;
    let creds = Credentials::load(&creds_path)?;
    let AuthCommand::PrintIdentityToken {
        audiences,
        impersonate_service_account,
    } = cmd
    else {
        println!(
            "{}",
            creds.access_token(&http_client()?, &cfg.api_url).await?
        );
        return Ok(());
    };
    let audience = audiences.as_deref().unwrap_or(CLI_CLIENT_ID);
    let http = http_client()?;
    let token = match impersonate_service_account {
        None => creds.id_token(&http, &cfg.api_url, audience).await?,
        Some(sa) => {
            let mine = creds.access_token(&http, &cfg.api_url).await?;
            let client = crate::Client::new(&cfg.api_url, mine)?;
            let t: TokenView = client
                .post_json(
                    &format!("/v1/serviceAccounts/{sa}/generateIdToken"),
                    &GenerateIdTokenRequest {
                        audience: audience.to_owned(),
                        include_email: true,
                    },
                )
                .await?;
            t.token
        }
    };
    println!("{token}");
    Ok(())
}

/// Runs the commands that talk to the API.
pub(crate) async fn run(ctx: &Ctx, cmd: AuthCommand) -> Result<()> {
    match cmd {
        AuthCommand::Whoami => {
            let who: WhoAmI = ctx.client.get_json("/v1/auth/whoami").await?;
            if !output::structured(ctx.format, &who)? {
                println!("{}", who.principal);
            }
        }
        AuthCommand::ConfigureDocker {
            registry,
            username,
            password_stdin,
            password_file,
            remove,
        } => {
            let path = format!("/v1/registries/{registry}");
            if remove {
                ctx.client.delete(&path).await?;
                eprintln!("Removed the credentials for registry [{registry}].");
                return Ok(());
            }
            let secret = read_password(password_stdin, password_file.as_deref())?;
            let req = pier_model::api::RegistryCredentialRequest {
                username: username.clone(),
                secret,
            };
            let view: pier_model::api::RegistryView = ctx.client.put_json(&path, &req).await?;
            if !output::structured(ctx.format, &view)? {
                eprintln!(
                    "The server now pulls from [{}] as [{}].",
                    view.registry,
                    if view.username.is_empty() {
                        "(token)"
                    } else {
                        &view.username
                    }
                );
            }
        }
        _ => {}
    }
    Ok(())
}
