//! `pier domains verify | list` (ownership of custom domains) and `pier domain-mappings create | list |
//! describe | delete` (custom domains mapped to services), after `gcloud beta run domain-mappings` and
//! Search Console's verification.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use pier_model::api::ServiceView;
use pier_model::domains::{
    CertificateMode, CreateDomainMappingRequest, DomainMappingManifest, DomainMappingView,
    DomainVerificationView, MappingTarget, VerifyDomainRequest,
};

use crate::{Ctx, Format, output};

/// `pier domains ...`.
#[derive(Debug, Subcommand)]
pub enum DomainsCommand {
    /// Prove the project owns a domain: prints the TXT record to create, and checks it.
    Verify {
        /// The domain (`example.com` covers its subdomains too).
        domain: String,
        /// Vouch for it without DNS (installation owners only; for private networks).
        #[arg(long)]
        without_dns: bool,
    },
    /// List the domains the project has claimed, and which are verified.
    List,
}

/// Where a certificate comes from, as `--certificate-mode` takes it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// From the server's ACME CA (Let's Encrypt by default).
    Automatic,
    /// From the server's local CA (development).
    LocalCa,
    /// Your own, from --certificate-file and --private-key-file (files on the server, reloaded when
    /// they change; installation owners only).
    None,
}

/// `pier domain-mappings create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The domain to map.
    #[arg(long)]
    pub domain: String,
    /// The service it serves.
    #[arg(long, required_unless_present_any = ["gateway", "site"])]
    pub service: Option<String>,
    /// The API gateway it serves.
    #[arg(long, conflicts_with_all = ["service", "site"])]
    pub gateway: Option<String>,
    /// The hosting site it serves (its live channel).
    #[arg(long, conflicts_with_all = ["service", "gateway"])]
    pub site: Option<String>,
    /// Where its certificate comes from.
    #[arg(long, value_enum, default_value_t = ModeArg::Automatic)]
    pub certificate_mode: ModeArg,
    /// With --certificate-mode none: the certificate chain (PEM) on the server.
    #[arg(long, requires = "private_key_file")]
    pub certificate_file: Option<std::path::PathBuf>,
    /// With --certificate-mode none: its private key (PEM) on the server.
    #[arg(long, requires = "certificate_file")]
    pub private_key_file: Option<std::path::PathBuf>,
    /// Move the domain from another service of the project.
    #[arg(long)]
    pub force_override: bool,
    /// Return at once instead of waiting for the certificate.
    #[arg(long = "async")]
    pub no_wait: bool,
    /// Longest wait for the mapping to become ready.
    #[arg(long, default_value = "5m", value_parser = crate::parse_duration)]
    pub timeout: Duration,
}

/// `pier domain-mappings ...`.
#[derive(Debug, Subcommand)]
pub enum DomainMappingsCommand {
    /// Map a domain to a service; waits until it serves over HTTPS.
    Create(CreateArgs),
    /// List the project's domain mappings.
    List,
    /// Show a mapping: its conditions and the DNS records to create (`--format yaml`: Cloud Run's
    /// DomainMapping).
    Describe {
        /// The mapped domain.
        #[arg(long)]
        domain: String,
    },
    /// Delete a mapping: the domain stops being served.
    Delete {
        /// The mapped domain.
        #[arg(long)]
        domain: String,
    },
    /// Create or replace a mapping from a manifest: Cloud Run's `domains.cloudrun.com/v1` or Knative's
    /// `serving.knative.dev/v1beta1` DomainMapping. Waits until it serves, as `create` does.
    Replace {
        /// The manifest (YAML).
        file: std::path::PathBuf,
        /// Return at once instead of waiting for the certificate.
        #[arg(long = "async")]
        no_wait: bool,
        /// Longest wait for the mapping to become ready.
        #[arg(long, default_value = "5m", value_parser = crate::parse_duration)]
        timeout: Duration,
    },
}

fn verification_text(v: &DomainVerificationView) {
    if v.verified {
        println!(
            "Domain {} is verified for project {} ({}).",
            v.domain,
            v.project,
            v.method.as_deref().unwrap_or("")
        );
    } else {
        println!(
            "Domain {} is not verified yet. Add this DNS record:",
            v.domain
        );
        println!("  {} TXT \"{}\"", v.record.name, v.record.rrdata);
        println!(
            "then run `pier domains verify {}` again once DNS publishes it.",
            v.domain
        );
    }
}

/// Runs a domains command.
pub async fn run_domains(ctx: &Ctx, cmd: DomainsCommand) -> Result<()> {
    let project = &ctx.project;
    match cmd {
        DomainsCommand::Verify {
            domain,
            without_dns,
        } => {
            let v: DomainVerificationView = ctx
                .client
                .post_json(
                    &format!("/v1/projects/{project}/domains/{domain}/verify"),
                    &VerifyDomainRequest { without_dns },
                )
                .await?;
            if output::structured(ctx.format, &v)? {
                return Ok(());
            }
            verification_text(&v);
        }
        DomainsCommand::List => {
            let all: Vec<DomainVerificationView> = ctx
                .client
                .get_json(&format!("/v1/projects/{project}/domains"))
                .await?;
            if output::structured(ctx.format, &all)? {
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|v| {
                    vec![
                        v.domain.clone(),
                        if v.verified { "yes" } else { "no" }.into(),
                        v.method.clone().unwrap_or_default(),
                        format!("{} TXT {}", v.record.name, v.record.rrdata),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["DOMAIN", "VERIFIED", "HOW", "RECORD"], &rows)
            );
        }
    }
    Ok(())
}

/// Cloud Run's `domains.cloudrun.com/v1` DomainMapping for a mapping (what `gcloud beta run
/// domain-mappings describe --format yaml` prints).
pub fn cloud_run_manifest(m: &DomainMappingView) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "domains.cloudrun.com/v1",
        "kind": "DomainMapping",
        "metadata": {
            "name": m.domain,
            "namespace": m.project,
            "creationTimestamp": m.created_at,
        },
        "spec": {
            "routeName": m.target.name,
            "certificateMode": m.certificate_mode.as_str(),
        },
        "status": {
            "conditions": m.conditions,
            "mappedRouteName": m.target.name,
            "resourceRecords": m.resource_records,
            "url": m.url,
        }
    })
}

fn describe_text(m: &DomainMappingView) {
    println!("Domain:      {}", m.domain);
    println!("Serves:      {} [{}]", m.target.kind, m.target.name);
    println!("URL:         {}", m.url);
    println!("Certificate: {}", m.certificate_mode.as_str());
    if let Some(exp) = &m.certificate_expires {
        println!("Expires:     {exp}");
    }
    println!("Conditions:");
    for c in &m.conditions {
        let why = if c.reason.is_empty() {
            String::new()
        } else {
            format!(" {}: {}", c.reason, c.message)
        };
        println!("  {:<24} {}{why}", c.kind, c.status);
    }
    println!("DNS records:");
    for r in &m.resource_records {
        println!("  {} {} {}", r.name, r.kind, r.rrdata);
    }
}

/// Reasons that do not resolve themselves: waiting longer changes nothing.
fn stops_the_wait(reason: &str) -> bool {
    matches!(
        reason,
        "PermissionDenied" | "RouteMissing" | "CertificateProvisionFailed" | "RateLimited"
    )
}

/// Polls a mapping until it is ready, a reason stops it, or `timeout` passes.
async fn wait_ready(
    ctx: &Ctx,
    project: &pier_model::ProjectName,
    domain: &str,
    timeout: Duration,
) -> Result<DomainMappingView> {
    let path = format!("/v1/projects/{project}/domainmappings/{domain}");
    let spinner = output::spinner("waiting for the mapping");
    let started = Instant::now();
    let mut said = String::new();
    loop {
        let m: DomainMappingView = ctx.client.get_json(&path).await?;
        let ready = m.condition("Ready").cloned();
        if m.ready() {
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            return Ok(m);
        }
        let (reason, message) = ready.map(|c| (c.reason, c.message)).unwrap_or_default();
        if stops_the_wait(&reason) {
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            bail!("domain mapping {domain} is not ready: {reason}: {message}");
        }
        if started.elapsed() > timeout {
            if let Some(s) = spinner {
                s.finish_and_clear();
            }
            bail!(
                "domain mapping {domain} is still not ready after {}s ({reason}: {message}); `pier domain-mappings describe --domain {domain}` shows its state",
                timeout.as_secs()
            );
        }
        let line = format!("{reason}: {message}");
        match &spinner {
            Some(s) => s.set_message(line.clone()),
            None if line != said => eprintln!("  {line}"),
            None => {}
        }
        said = line;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A path as the server must be given it: absolute.
fn absolute(p: &std::path::Path) -> Result<String> {
    Ok(std::path::absolute(p)
        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        .display()
        .to_string())
}

/// Reads a DomainMapping manifest.
pub fn load(file: &std::path::Path) -> Result<DomainMappingManifest> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    DomainMappingManifest::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// Creates (or moves) a mapping, says what to do about a private service and DNS, and waits until it
/// serves when `wait` is given.
pub async fn apply(
    ctx: &Ctx,
    project: &pier_model::ProjectName,
    req: &CreateDomainMappingRequest,
    wait: Option<Duration>,
) -> Result<DomainMappingView> {
    let service: Option<ServiceView> = if req.target.kind == "service" {
        ctx.client
            .get_json(&format!(
                "/v1/projects/{project}/services/{}",
                req.target.name
            ))
            .await
            .ok()
    } else {
        None
    };
    eprintln!("Creating domain mapping...");
    let m: DomainMappingView = ctx
        .client
        .post_json(&format!("/v1/projects/{project}/domainmappings"), req)
        .await?;
    if service.is_some_and(|s| !s.allow_unauthenticated) {
        eprintln!(
            "  service [{}] is private: {} needs a token too, whose audience the service lists (pier services update {} --add-custom-audiences {})",
            req.target.name, m.url, req.target.name, m.url
        );
    }
    for r in &m.resource_records {
        eprintln!("  add this DNS record: {} {} {}", r.name, r.kind, r.rrdata);
    }
    match wait {
        Some(timeout) => {
            eprintln!("Waiting for certificate provisioning...");
            wait_ready(ctx, project, &m.domain, timeout).await
        }
        None => Ok(m),
    }
}

fn print_result(ctx: &Ctx, m: &DomainMappingView) -> Result<()> {
    if output::structured(ctx.format, m)? {
        return Ok(());
    }
    if m.ready() {
        println!(
            "Done. {} now serves {} [{}]",
            m.url, m.target.kind, m.target.name
        );
    } else {
        describe_text(m);
    }
    Ok(())
}

/// Runs a domain-mappings command.
pub async fn run_mappings(ctx: &Ctx, cmd: DomainMappingsCommand) -> Result<()> {
    let project = &ctx.project;
    let base = format!("/v1/projects/{project}/domainmappings");
    match cmd {
        DomainMappingsCommand::Create(args) => {
            let (kind, name) = match (&args.service, &args.gateway, &args.site) {
                (Some(s), _, _) => ("service", s.clone()),
                (_, Some(g), _) => ("gateway", g.clone()),
                (_, _, Some(s)) => ("site", s.clone()),
                _ => bail!("name what the domain serves: --service NAME"),
            };
            let req = CreateDomainMappingRequest {
                domain: args.domain.clone(),
                target: MappingTarget {
                    kind: kind.into(),
                    name,
                },
                certificate_mode: match args.certificate_mode {
                    ModeArg::Automatic => CertificateMode::Automatic,
                    ModeArg::LocalCa => CertificateMode::LocalCa,
                    ModeArg::None => CertificateMode::None,
                },
                force_override: args.force_override,
                certificate_file: args.certificate_file.as_deref().map(absolute).transpose()?,
                private_key_file: args.private_key_file.as_deref().map(absolute).transpose()?,
            };
            let wait = (!args.no_wait).then_some(args.timeout);
            let m = apply(ctx, &ctx.project, &req, wait).await?;
            print_result(ctx, &m)?;
        }
        DomainMappingsCommand::Replace {
            file,
            no_wait,
            timeout,
        } => {
            let manifest = load(&file)?;
            let project = manifest
                .project
                .clone()
                .unwrap_or_else(|| ctx.project.clone());
            let req = manifest.request;
            let m = apply(ctx, &project, &req, (!no_wait).then_some(timeout)).await?;
            print_result(ctx, &m)?;
        }
        DomainMappingsCommand::List => {
            let all: Vec<DomainMappingView> = ctx.client.get_json(&base).await?;
            if output::structured(ctx.format, &all)? {
                return Ok(());
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|m| {
                    let ready = m.condition("Ready");
                    vec![
                        m.domain.clone(),
                        m.target.name.clone(),
                        ready.map(|c| c.status.clone()).unwrap_or_default(),
                        ready.map(|c| c.reason.clone()).unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["DOMAIN", "SERVICE", "READY", "REASON"], &rows)
            );
        }
        DomainMappingsCommand::Describe { domain } => {
            let m: DomainMappingView = ctx.client.get_json(&format!("{base}/{domain}")).await?;
            match ctx.format {
                Format::Yaml => {
                    output::structured(Format::Yaml, &cloud_run_manifest(&m))?;
                }
                Format::Json => {
                    output::structured(Format::Json, &m)?;
                }
                Format::Value(_) => {
                    output::structured(ctx.format, &m)?;
                }
                Format::Text => describe_text(&m),
            }
        }
        DomainMappingsCommand::Delete { domain } => {
            ctx.client.delete(&format!("{base}/{domain}")).await?;
            println!("Deleted domain mapping [{domain}].");
        }
    }
    Ok(())
}
