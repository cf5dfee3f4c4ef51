//! `pier iam service-accounts ...`, `pier projects ...-iam-policy...` and `pier users ...`, plus the IAM
//! policy verbs shared with `pier services`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use pier_identity::Policy;
use pier_identity::keyfile::KeyFile;
use pier_model::api::{
    BindingChange, CreateServiceAccountRequest, CreateUserRequest, KeyView, ServiceAccountView,
    UserView,
};

use crate::{Ctx, Format, output};

/// `--member` and `--role`.
#[derive(Debug, Clone, Args)]
pub struct BindingArgs {
    /// `user:EMAIL`, `serviceAccount:EMAIL`, `allUsers` or `allAuthenticatedUsers`.
    #[arg(long)]
    pub member: String,
    /// `roles/run.invoker`, `roles/run.viewer`, `roles/run.developer`, `roles/run.admin`, `roles/owner`,
    /// `roles/logging.viewer`, `roles/iam.serviceAccountUser`, `roles/iam.serviceAccountTokenCreator`
    /// or (on the installation) `roles/vpcaccess.user`.
    #[arg(long)]
    pub role: String,
}

/// The IAM policy verbs of a resource whose API path is `base`.
#[derive(Debug, Clone)]
pub enum PolicyOp {
    /// Print it.
    Get,
    /// Replace it from a file (JSON or YAML; its etag must match the current one).
    Set(PathBuf),
    /// Grant a role.
    Add(BindingArgs),
    /// Revoke a role.
    Remove(BindingArgs),
}

/// Prints a policy the way gcloud does (YAML unless `--format json`).
pub fn print_policy(format: Format, p: &Policy) -> Result<()> {
    match format {
        Format::Json | Format::Value(_) => {
            output::structured(format, p)?;
        }
        Format::Text | Format::Yaml => print!("{}", yaml_serde::to_string(p)?),
    }
    Ok(())
}

fn read_policy(file: &Path) -> Result<Policy> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text)
        .or_else(|_| yaml_serde::from_str(&text))
        .map_err(|e| {
            anyhow!(
                "{} is not an IAM policy (JSON or YAML): {e}",
                file.display()
            )
        })
}

/// Runs a policy verb against `base` (e.g. `/v1/projects/p/services/s`).
pub async fn policy(ctx: &Ctx, base: &str, op: PolicyOp, what: &str) -> Result<()> {
    let p: Policy = match op {
        PolicyOp::Get => ctx.client.get_json(&format!("{base}/iamPolicy")).await?,
        PolicyOp::Set(file) => {
            let p = read_policy(&file)?;
            let out = ctx
                .client
                .put_json(&format!("{base}/iamPolicy"), &p)
                .await?;
            eprintln!("Updated IAM policy for {what}.");
            out
        }
        PolicyOp::Add(b) => {
            let out = ctx
                .client
                .post_json(
                    &format!("{base}/iamPolicy/addBinding"),
                    &BindingChange {
                        member: b.member,
                        role: b.role,
                    },
                )
                .await?;
            eprintln!("Updated IAM policy for {what}.");
            out
        }
        PolicyOp::Remove(b) => {
            let out = ctx
                .client
                .post_json(
                    &format!("{base}/iamPolicy/removeBinding"),
                    &BindingChange {
                        member: b.member,
                        role: b.role,
                    },
                )
                .await?;
            eprintln!("Updated IAM policy for {what}.");
            out
        }
    };
    print_policy(ctx.format, &p)
}

/// `pier iam ...`.
#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// Service accounts.
    #[command(subcommand)]
    ServiceAccounts(SaCommand),
}

/// `pier iam service-accounts ...`.
#[derive(Debug, Subcommand)]
pub enum SaCommand {
    /// Create a service account NAME@PROJECT.iam.DOMAIN.
    Create {
        /// 6 to 30 lowercase letters, digits and hyphens.
        name: String,
        /// Free text.
        #[arg(long)]
        display_name: Option<String>,
    },
    /// List the project's service accounts.
    List,
    /// Show one.
    Describe {
        /// Its email.
        email: String,
    },
    /// Delete one (its tokens stop working at once).
    Delete {
        /// Its email.
        email: String,
    },
    /// Disable one.
    Disable {
        /// Its email.
        email: String,
    },
    /// Enable one.
    Enable {
        /// Its email.
        email: String,
    },
    /// Print its IAM policy (who may act as it or mint its tokens).
    GetIamPolicy {
        /// Its email.
        email: String,
    },
    /// Replace its IAM policy from a file.
    SetIamPolicy {
        /// Its email.
        email: String,
        /// The policy (JSON or YAML).
        file: PathBuf,
    },
    /// Grant a role on it.
    AddIamPolicyBinding {
        /// Its email.
        email: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Revoke a role on it.
    RemoveIamPolicyBinding {
        /// Its email.
        email: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `pier iam service-accounts keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and write it to FILE (Google's key file format; 0600).
    Create {
        /// Where to write the key file.
        file: PathBuf,
        /// The service account.
        #[arg(long)]
        iam_account: String,
    },
    /// List keys.
    List {
        /// The service account.
        #[arg(long)]
        iam_account: String,
    },
    /// Delete a key (tokens obtained with it stop working at once).
    Delete {
        /// Key id.
        key: String,
        /// The service account.
        #[arg(long)]
        iam_account: String,
    },
    /// Disable a key.
    Disable {
        /// Key id.
        key: String,
        /// The service account.
        #[arg(long)]
        iam_account: String,
    },
    /// Enable a key.
    Enable {
        /// Key id.
        key: String,
        /// The service account.
        #[arg(long)]
        iam_account: String,
    },
}

/// `pier projects ...`.
#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Print a project's IAM policy.
    GetIamPolicy {
        /// The project.
        project: String,
    },
    /// Replace a project's IAM policy from a file.
    SetIamPolicy {
        /// The project.
        project: String,
        /// The policy (JSON or YAML).
        file: PathBuf,
    },
    /// Grant a role on a project.
    AddIamPolicyBinding {
        /// The project.
        project: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Revoke a role on a project.
    RemoveIamPolicyBinding {
        /// The project.
        project: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
}

/// `pier installation ...`: the installation's own IAM policy, whose roles hold in every project (Google
/// Cloud's organization policy).
#[derive(Debug, Subcommand)]
pub enum InstallationCommand {
    /// Print the installation's IAM policy.
    GetIamPolicy,
    /// Replace the installation's IAM policy from a file.
    SetIamPolicy {
        /// The policy (JSON or YAML).
        file: PathBuf,
    },
    /// Grant a role on the installation (in every project).
    AddIamPolicyBinding {
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Revoke a role on the installation.
    RemoveIamPolicyBinding {
        #[command(flatten)]
        binding: BindingArgs,
    },
}

/// `pier users ...`.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user who signs in with a password.
    Create {
        /// Email.
        email: String,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Delete a user (their tokens stop working at once).
    Delete {
        /// Email.
        email: String,
    },
}

fn sa_rows(list: &[ServiceAccountView]) -> Vec<Vec<String>> {
    list.iter()
        .map(|s| {
            vec![
                s.email.clone(),
                s.display_name.clone().unwrap_or_default(),
                if s.disabled { "True" } else { "False" }.into(),
            ]
        })
        .collect()
}

fn write_key_file(path: &Path, key: &KeyFile) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {} (it must not exist yet)", path.display()))?;
    f.write_all(&serde_json::to_vec_pretty(key)?)?;
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx, cmd: IamCommand) -> Result<()> {
    let IamCommand::ServiceAccounts(cmd) = cmd;
    let sa_path = |email: &str| format!("/v1/serviceAccounts/{email}");
    match cmd {
        SaCommand::Create { name, display_name } => {
            let sa: ServiceAccountView = ctx
                .client
                .post_json(
                    &format!("/v1/projects/{}/serviceAccounts", ctx.project),
                    &CreateServiceAccountRequest { name, display_name },
                )
                .await?;
            if !output::structured(ctx.format, &sa)? {
                eprintln!("Created service account [{}].", sa.email);
                println!("{}", sa.email);
            }
        }
        SaCommand::List => {
            let list: Vec<ServiceAccountView> = ctx
                .client
                .get_json(&format!("/v1/projects/{}/serviceAccounts", ctx.project))
                .await?;
            if !output::structured(ctx.format, &list)? {
                print!(
                    "{}",
                    output::table(&["EMAIL", "DISPLAY NAME", "DISABLED"], &sa_rows(&list))
                );
            }
        }
        SaCommand::Describe { email } => {
            let sa: ServiceAccountView = ctx.client.get_json(&sa_path(&email)).await?;
            if !output::structured(ctx.format, &sa)? {
                println!(
                    "email: {}\nuniqueId: {}\nproject: {}\ndisabled: {}",
                    sa.email, sa.unique_id, sa.project, sa.disabled
                );
            }
        }
        SaCommand::Delete { email } => {
            ctx.client.delete(&sa_path(&email)).await?;
            eprintln!("Deleted service account [{email}].");
        }
        SaCommand::Disable { email } => {
            ctx.client
                .post_empty(&format!("{}/disable", sa_path(&email)))
                .await?;
            eprintln!("Disabled service account [{email}].");
        }
        SaCommand::Enable { email } => {
            ctx.client
                .post_empty(&format!("{}/enable", sa_path(&email)))
                .await?;
            eprintln!("Enabled service account [{email}].");
        }
        SaCommand::GetIamPolicy { email } => {
            policy(ctx, &sa_path(&email), PolicyOp::Get, &email).await?
        }
        SaCommand::SetIamPolicy { email, file } => {
            policy(ctx, &sa_path(&email), PolicyOp::Set(file), &email).await?
        }
        SaCommand::AddIamPolicyBinding { email, binding } => {
            policy(ctx, &sa_path(&email), PolicyOp::Add(binding), &email).await?
        }
        SaCommand::RemoveIamPolicyBinding { email, binding } => {
            policy(ctx, &sa_path(&email), PolicyOp::Remove(binding), &email).await?
        }
        SaCommand::Keys(k) => match k {
            KeysCommand::Create { file, iam_account } => {
                let key: KeyFile = ctx
                    .client
                    .post_json(
                        &format!("{}/keys", sa_path(&iam_account)),
                        &serde_json::json!({}),
                    )
                    .await?;
                write_key_file(&file, &key)?;
                eprintln!(
                    "created key [{}] of type [json] as [{}] for [{}]",
                    key.private_key_id,
                    file.display(),
                    iam_account
                );
            }
            KeysCommand::List { iam_account } => {
                let keys: Vec<KeyView> = ctx
                    .client
                    .get_json(&format!("{}/keys", sa_path(&iam_account)))
                    .await?;
                if !output::structured(ctx.format, &keys)? {
                    let rows: Vec<Vec<String>> = keys
                        .iter()
                        .map(|k| {
                            vec![
                                k.id.clone(),
                                k.created_at.clone(),
                                if k.disabled { "True" } else { "False" }.into(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(&["KEY_ID", "CREATED_AT", "DISABLED"], &rows)
                    );
                }
            }
            KeysCommand::Delete { key, iam_account } => {
                ctx.client
                    .delete(&format!("{}/keys/{key}", sa_path(&iam_account)))
                    .await?;
                eprintln!("Deleted key [{key}] for service account [{iam_account}].");
            }
            KeysCommand::Disable { key, iam_account } => {
                ctx.client
                    .post_empty(&format!("{}/keys/{key}/disable", sa_path(&iam_account)))
                    .await?;
                eprintln!("Disabled key [{key}] for service account [{iam_account}].");
            }
            KeysCommand::Enable { key, iam_account } => {
                ctx.client
                    .post_empty(&format!("{}/keys/{key}/enable", sa_path(&iam_account)))
                    .await?;
                eprintln!("Enabled key [{key}] for service account [{iam_account}].");
            }
        },
    }
    Ok(())
}

pub(crate) async fn run_projects(ctx: &Ctx, cmd: ProjectsCommand) -> Result<()> {
    let base = |p: &str| format!("/v1/projects/{p}");
    match cmd {
        ProjectsCommand::GetIamPolicy { project } => {
            policy(ctx, &base(&project), PolicyOp::Get, &project).await
        }
        ProjectsCommand::SetIamPolicy { project, file } => {
            policy(ctx, &base(&project), PolicyOp::Set(file), &project).await
        }
        ProjectsCommand::AddIamPolicyBinding { project, binding } => {
            policy(ctx, &base(&project), PolicyOp::Add(binding), &project).await
        }
        ProjectsCommand::RemoveIamPolicyBinding { project, binding } => {
            policy(ctx, &base(&project), PolicyOp::Remove(binding), &project).await
        }
    }
}

pub(crate) async fn run_installation(ctx: &Ctx, cmd: InstallationCommand) -> Result<()> {
    let (base, what) = ("/v1", "the installation");
    match cmd {
        InstallationCommand::GetIamPolicy => policy(ctx, base, PolicyOp::Get, what).await,
        InstallationCommand::SetIamPolicy { file } => {
            policy(ctx, base, PolicyOp::Set(file), what).await
        }
        InstallationCommand::AddIamPolicyBinding { binding } => {
            policy(ctx, base, PolicyOp::Add(binding), what).await
        }
        InstallationCommand::RemoveIamPolicyBinding { binding } => {
            policy(ctx, base, PolicyOp::Remove(binding), what).await
        }
    }
}

pub(crate) async fn run_users(ctx: &Ctx, cmd: UsersCommand) -> Result<()> {
    match cmd {
        UsersCommand::Create {
            email,
            password_stdin,
        } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\n', '\r']).to_owned(), false)
            } else {
                (
                    pier_identity::passwords::new_secret().map_err(|e| anyhow!("{e}"))?,
                    true,
                )
            };
            let u: UserView = ctx
                .client
                .post_json(
                    "/v1/users",
                    &CreateUserRequest {
                        email,
                        password: password.clone(),
                    },
                )
                .await?;
            eprintln!("Created user [{}].", u.email);
            if generated {
                println!("{password}");
                eprintln!("That is the user's password; it is shown once.");
            }
        }
        UsersCommand::List => {
            let list: Vec<UserView> = ctx.client.get_json("/v1/users").await?;
            if !output::structured(ctx.format, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|u| vec![u.email.clone(), u.unique_id.clone()])
                    .collect();
                print!("{}", output::table(&["EMAIL", "UNIQUE_ID"], &rows));
            }
        }
        UsersCommand::Delete { email } => {
            ctx.client.delete(&format!("/v1/users/{email}")).await?;
            eprintln!("Deleted user [{email}].");
        }
    }
    Ok(())
}
