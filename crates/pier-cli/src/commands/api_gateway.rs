//! `pier api-gateway apis | api-configs | gateways …` and `pier api-keys …`, after `gcloud api-gateway`
//! and `gcloud services api-keys`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pier_model::api_gateways::{
    ApiConfigView, ApiKeyView, ApiView, CorsSetting, CreateApiConfigRequest, CreateApiKeyRequest,
    CreateApiRequest, CreateGatewayRequest, CreatedApiKey, GatewayView, UpdateApiKeyRequest,
    UpdateGatewayRequest,
};

use crate::{Ctx, output};

/// `pier api-gateway …`.
#[derive(Debug, Subcommand)]
pub enum ApiGatewayCommand {
    /// APIs: the names configs and gateways belong to.
    #[command(subcommand)]
    Apis(ApisCommand),
    /// API configs: OpenAPI documents (Google API Gateway's format), immutable once created.
    #[command(subcommand)]
    ApiConfigs(ConfigsCommand),
    /// Gateways: one config served at its own URL.
    #[command(subcommand)]
    Gateways(GatewaysCommand),
}

/// `pier api-gateway apis …`.
#[derive(Debug, Subcommand)]
pub enum ApisCommand {
    /// Create an API.
    Create {
        /// Its name.
        name: String,
    },
    /// List the project's APIs.
    List,
    /// Show an API.
    Describe {
        /// Its name.
        name: String,
    },
    /// Delete an API (its configs first).
    Delete {
        /// Its name.
        name: String,
    },
}

/// `pier api-gateway api-configs …`.
#[derive(Debug, Subcommand)]
pub enum ConfigsCommand {
    /// Create a config from an OpenAPI document (2.0, 3.0 or 3.1; YAML or JSON). A faulty document is
    /// refused with the JSON pointer of the fault; lint findings are printed as warnings.
    Create {
        /// Its name.
        name: String,
        /// The API.
        #[arg(long)]
        api: String,
        /// The OpenAPI document.
        #[arg(long)]
        openapi_spec: std::path::PathBuf,
        /// The service account whose ID tokens the backends get (default: the project's compute
        /// account). You need `iam.serviceAccounts.actAs` on it.
        #[arg(long)]
        backend_auth_service_account: Option<String>,
    },
    /// List an API's configs.
    List {
        /// The API.
        #[arg(long)]
        api: String,
    },
    /// Show a config: its operations and warnings.
    Describe {
        /// Its name.
        name: String,
        /// The API.
        #[arg(long)]
        api: String,
    },
    /// Delete a config no gateway serves.
    Delete {
        /// Its name.
        name: String,
        /// The API.
        #[arg(long)]
        api: String,
    },
}

/// The CORS flags of `gateways create/update`.
#[derive(Debug, Args)]
pub struct CorsArgs {
    /// Answer CORS preflights at the gateway for these origins (comma-separated, `*` for any).
    #[arg(long, value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,
    /// Allowed methods (default: GET, POST, PUT, PATCH, DELETE, OPTIONS).
    #[arg(long)]
    pub cors_allow_methods: Option<String>,
    /// Allowed request headers.
    #[arg(long)]
    pub cors_allow_headers: Option<String>,
    /// Response headers pages may read.
    #[arg(long)]
    pub cors_expose_headers: Option<String>,
    /// Let pages send credentials.
    #[arg(long)]
    pub cors_allow_credentials: bool,
    /// How long browsers may cache a preflight, in seconds.
    #[arg(long)]
    pub cors_max_age: Option<u64>,
}

impl CorsArgs {
    fn setting(&self) -> Option<CorsSetting> {
        (!self.cors_allow_origins.is_empty()).then(|| CorsSetting {
            allowed_origins: self.cors_allow_origins.clone(),
            allowed_methods: self.cors_allow_methods.clone(),
            allowed_headers: self.cors_allow_headers.clone(),
            expose_headers: self.cors_expose_headers.clone(),
            allow_credentials: self.cors_allow_credentials,
            max_age: self.cors_max_age,
        })
    }
}

/// `pier api-gateway gateways …`.
#[derive(Debug, Subcommand)]
pub enum GatewaysCommand {
    /// Create a gateway serving a config; prints its URL.
    Create {
        /// Its name.
        name: String,
        /// The API.
        #[arg(long)]
        api: String,
        /// The config to serve.
        #[arg(long)]
        api_config: String,
        /// Only callers with the invoker role on the project (default: anyone, as Google's gateways;
        /// that needs the permission to set IAM policies).
        #[arg(long)]
        no_allow_unauthenticated: bool,
        #[command(flatten)]
        cors: CorsArgs,
    },
    /// Switch a gateway to another config (atomic; roll back the same way), or change its access or CORS.
    Update {
        /// Its name.
        name: String,
        /// The config to serve.
        #[arg(long)]
        api_config: Option<String>,
        /// Let anyone call it.
        #[arg(long, conflicts_with = "no_allow_unauthenticated")]
        allow_unauthenticated: bool,
        /// Only callers with the invoker role on the project.
        #[arg(long)]
        no_allow_unauthenticated: bool,
        #[command(flatten)]
        cors: CorsArgs,
        /// Remove the CORS setting.
        #[arg(long)]
        clear_cors: bool,
    },
    /// List the project's gateways.
    List,
    /// Show a gateway.
    Describe {
        /// Its name.
        name: String,
    },
    /// Delete a gateway.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `pier api-keys …`.
#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key; it is printed once and never again.
    Create {
        /// A name for people.
        #[arg(long)]
        display_name: String,
        /// Restrict it to these APIs (repeat, or comma-separate; default: any API of the project).
        #[arg(long, value_delimiter = ',')]
        api_target: Vec<String>,
    },
    /// List the project's keys (never their secrets).
    List,
    /// Show a key (never its secret).
    Describe {
        /// The key's id.
        uid: String,
    },
    /// Restrict a key to APIs, or lift its restriction.
    Update {
        /// The key's id.
        uid: String,
        /// The APIs it may call.
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "clear_api_targets"
        )]
        api_target: Vec<String>,
        /// Let it call any API of the project.
        #[arg(long, conflicts_with = "api_target")]
        clear_api_targets: bool,
    },
    /// Revoke a key: it stops working at once.
    Delete {
        /// The key's id.
        uid: String,
    },
    /// Restore a revoked key.
    Undelete {
        /// The key's id.
        uid: String,
    },
    /// Give a key a new secret (printed once); the old one stops working at once.
    Rotate {
        /// The key's id.
        uid: String,
    },
}

fn config_text(c: &ApiConfigView) {
    println!("Config:      {} (API {})", c.name, c.api);
    println!("Document:    {} \"{}\"", c.openapi_version, c.title);
    println!("Backend SA:  {}", c.backend_auth_service_account);
    println!("Operations:");
    for o in &c.operations {
        println!("  {o}");
    }
    for w in &c.warnings {
        eprintln!("warning: {w}");
    }
}

fn gateway_text(g: &GatewayView) {
    println!("Gateway:     {}", g.name);
    println!("API config:  {} (API {})", g.api_config, g.api);
    println!(
        "Callers:     {}",
        if g.allow_unauthenticated {
            "anyone (the config's keys and JWTs decide)"
        } else {
            "holders of roles/run.invoker on the project"
        }
    );
    if let Some(c) = &g.cors {
        println!("CORS:        {}", c.allowed_origins.join(", "));
    }
    println!("URL:         {}", g.default_hostname);
}

fn key_rows(keys: &[ApiKeyView]) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.uid.clone(),
                k.display_name.clone(),
                format!("{}…", k.key_prefix),
                if k.api_targets.is_empty() {
                    "(any)".into()
                } else {
                    k.api_targets.join(",")
                },
                if k.delete_time.is_some() {
                    "REVOKED".into()
                } else {
                    "ACTIVE".into()
                },
            ]
        })
        .collect();
    output::table(&["UID", "NAME", "KEY", "API TARGETS", "STATE"], &rows)
}

fn created_key(ctx: &Ctx, k: &CreatedApiKey) -> Result<()> {
    if output::structured(ctx.format, k)? {
        return Ok(());
    }
    eprintln!(
        "Key {} ({}). It is shown once: keep it now.",
        k.key.uid, k.key.display_name
    );
    println!("{}", k.key_string);
    Ok(())
}

/// Runs `pier api-gateway …`.
pub async fn run(ctx: &Ctx, cmd: ApiGatewayCommand) -> Result<()> {
    let p = &ctx.project;
    match cmd {
        ApiGatewayCommand::Apis(c) => match c {
            ApisCommand::Create { name } => {
                let a: ApiView = ctx
                    .client
                    .post_json(
                        &format!("/v1/projects/{p}/apis"),
                        &CreateApiRequest { name },
                    )
                    .await?;
                if !output::structured(ctx.format, &a)? {
                    println!("Created API {} in project {}.", a.name, a.project);
                }
            }
            ApisCommand::List => {
                let all: Vec<ApiView> = ctx
                    .client
                    .get_json(&format!("/v1/projects/{p}/apis"))
                    .await?;
                if !output::structured(ctx.format, &all)? {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|a| vec![a.name.clone(), a.create_time.clone()])
                        .collect();
                    print!("{}", output::table(&["API", "CREATED"], &rows));
                }
            }
            ApisCommand::Describe { name } => {
                let a: ApiView = ctx
                    .client
                    .get_json(&format!("/v1/projects/{p}/apis/{name}"))
                    .await?;
                if !output::structured(ctx.format, &a)? {
                    println!("API:     {}", a.name);
                    println!("Project: {}", a.project);
                    println!("Created: {}", a.create_time);
                }
            }
            ApisCommand::Delete { name } => {
                ctx.client
                    .delete(&format!("/v1/projects/{p}/apis/{name}"))
                    .await?;
                println!("Deleted API {name}.");
            }
        },
        ApiGatewayCommand::ApiConfigs(c) => match c {
            ConfigsCommand::Create {
                name,
                api,
                openapi_spec,
                backend_auth_service_account,
            } => {
                let text = std::fs::read_to_string(&openapi_spec)
                    .with_context(|| format!("reading {}", openapi_spec.display()))?;
                let v: ApiConfigView = ctx
                    .client
                    .post_json(
                        &format!("/v1/projects/{p}/apis/{api}/configs"),
                        &CreateApiConfigRequest {
                            name,
                            openapi_spec: text,
                            backend_auth_service_account,
                        },
                    )
                    .await?;
                if !output::structured(ctx.format, &v)? {
                    config_text(&v);
                }
            }
            ConfigsCommand::List { api } => {
                let all: Vec<ApiConfigView> = ctx
                    .client
                    .get_json(&format!("/v1/projects/{p}/apis/{api}/configs"))
                    .await?;
                if !output::structured(ctx.format, &all)? {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.openapi_version.clone(),
                                c.operations.len().to_string(),
                                c.create_time.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(&["CONFIG", "DOCUMENT", "OPERATIONS", "CREATED"], &rows)
                    );
                }
            }
            ConfigsCommand::Describe { name, api } => {
                let v: ApiConfigView = ctx
                    .client
                    .get_json(&format!("/v1/projects/{p}/apis/{api}/configs/{name}"))
                    .await?;
                if !output::structured(ctx.format, &v)? {
                    config_text(&v);
                }
            }
            ConfigsCommand::Delete { name, api } => {
                ctx.client
                    .delete(&format!("/v1/projects/{p}/apis/{api}/configs/{name}"))
                    .await?;
                println!("Deleted config {name} of API {api}.");
            }
        },
        ApiGatewayCommand::Gateways(c) => match c {
            GatewaysCommand::Create {
                name,
                api,
                api_config,
                no_allow_unauthenticated,
                cors,
            } => {
                let g: GatewayView = ctx
                    .client
                    .post_json(
                        &format!("/v1/projects/{p}/gateways"),
                        &CreateGatewayRequest {
                            name,
                            api,
                            api_config,
                            allow_unauthenticated: Some(!no_allow_unauthenticated),
                            cors: cors.setting(),
                        },
                    )
                    .await?;
                if !output::structured(ctx.format, &g)? {
                    eprintln!("Gateway {} serves config {}.", g.name, g.api_config);
                    println!("{}", g.default_hostname);
                }
            }
            GatewaysCommand::Update {
                name,
                api_config,
                allow_unauthenticated,
                no_allow_unauthenticated,
                cors,
                clear_cors,
            } => {
                let req = UpdateGatewayRequest {
                    api_config,
                    allow_unauthenticated: if allow_unauthenticated {
                        Some(true)
                    } else if no_allow_unauthenticated {
                        Some(false)
                    } else {
                        None
                    },
                    cors: cors.setting(),
                    clear_cors,
                };
                let g: GatewayView = ctx
                    .client
                    .patch_json(&format!("/v1/projects/{p}/gateways/{name}"), &req)
                    .await?;
                if !output::structured(ctx.format, &g)? {
                    eprintln!("Gateway {} now serves config {}.", g.name, g.api_config);
                    println!("{}", g.default_hostname);
                }
            }
            GatewaysCommand::List => {
                let all: Vec<GatewayView> = ctx
                    .client
                    .get_json(&format!("/v1/projects/{p}/gateways"))
                    .await?;
                if !output::structured(ctx.format, &all)? {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|g| {
                            vec![
                                g.name.clone(),
                                g.api.clone(),
                                g.api_config.clone(),
                                g.default_hostname.clone(),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(&["GATEWAY", "API", "CONFIG", "URL"], &rows)
                    );
                }
            }
            GatewaysCommand::Describe { name } => {
                let g: GatewayView = ctx
                    .client
                    .get_json(&format!("/v1/projects/{p}/gateways/{name}"))
                    .await?;
                if !output::structured(ctx.format, &g)? {
                    gateway_text(&g);
                }
            }
            GatewaysCommand::Delete { name } => {
                ctx.client
                    .delete(&format!("/v1/projects/{p}/gateways/{name}"))
                    .await?;
                println!("Deleted gateway {name}.");
            }
        },
    }
    Ok(())
}

/// Runs `pier api-keys …`.
pub async fn run_keys(ctx: &Ctx, cmd: ApiKeysCommand) -> Result<()> {
    let p = &ctx.project;
    match cmd {
        ApiKeysCommand::Create {
            display_name,
            api_target,
        } => {
            let k: CreatedApiKey = ctx
                .client
                .post_json(
                    &format!("/v1/projects/{p}/keys"),
                    &CreateApiKeyRequest {
                        display_name,
                        api_targets: api_target,
                    },
                )
                .await?;
            created_key(ctx, &k)?;
        }
        ApiKeysCommand::List => {
            let all: Vec<ApiKeyView> = ctx
                .client
                .get_json(&format!("/v1/projects/{p}/keys"))
                .await?;
            if !output::structured(ctx.format, &all)? {
                print!("{}", key_rows(&all));
            }
        }
        ApiKeysCommand::Describe { uid } => {
            let k: ApiKeyView = ctx
                .client
                .get_json(&format!("/v1/projects/{p}/keys/{uid}"))
                .await?;
            if !output::structured(ctx.format, &k)? {
                print!("{}", key_rows(&[k]));
            }
        }
        ApiKeysCommand::Update {
            uid,
            api_target,
            clear_api_targets: _,
        } => {
            let k: ApiKeyView = ctx
                .client
                .patch_json(
                    &format!("/v1/projects/{p}/keys/{uid}"),
                    &UpdateApiKeyRequest {
                        api_targets: Some(api_target),
                    },
                )
                .await?;
            if !output::structured(ctx.format, &k)? {
                print!("{}", key_rows(&[k]));
            }
        }
        ApiKeysCommand::Delete { uid } => {
            let k: ApiKeyView = ctx
                .client
                .delete_json(&format!("/v1/projects/{p}/keys/{uid}"))
                .await?;
            if !output::structured(ctx.format, &k)? {
                println!("Revoked key {} ({}).", k.uid, k.display_name);
            }
        }
        ApiKeysCommand::Undelete { uid } => {
            let k: ApiKeyView = ctx
                .client
                .post_json(
                    &format!("/v1/projects/{p}/keys/{uid}/undelete"),
                    &serde_json::json!({}),
                )
                .await?;
            if !output::structured(ctx.format, &k)? {
                println!("Restored key {} ({}).", k.uid, k.display_name);
            }
        }
        ApiKeysCommand::Rotate { uid } => {
            let k: CreatedApiKey = ctx
                .client
                .post_json(
                    &format!("/v1/projects/{p}/keys/{uid}/rotate"),
                    &serde_json::json!({}),
                )
                .await?;
            created_key(ctx, &k)?;
        }
    }
    Ok(())
}
