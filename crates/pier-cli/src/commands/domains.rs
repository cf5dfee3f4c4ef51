//! `pier domains verify | list` (ownership of custom domains) and `pier domain-mappings create | list |
//! describe | delete` (custom domains mapped to services), after `gcloud beta run domain-mappings` and
//! Search Console's verification.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use pier_model::api::ServiceView;
use pier_model::domains::{
    CertificateMode, CreateDomainMappingRequest, DomainMappingView, DomainVerificationView,
    MappingTarget, VerifyDomainRequest,
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
}

/// `pier domain-mappings create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The domain to map.
    #[arg(long)]
    pub domain: String,
    /// The service it serves.
    #[arg(long)]
    pub service: String,
    /// Where its certificate comes from.
    #[arg(long, value_enum, default_value_t = ModeArg::Automatic)]
    pub certificate_mode: ModeArg,
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
async fn wait_ready(ctx: &Ctx, domain: &str, timeout: Duration) -> Result<DomainMappingView> {
    let path = format!("/v1/projects/{}/domainmappings/{domain}", ctx.project);
    let tty = std::io::stderr().is_terminal();
    let spinner = tty.then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_style(
            indicatif::ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        s.enable_steady_tick(Duration::from_millis(120));
        s
    });
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

/// Runs a domain-mappings command.
pub async fn run_mappings(ctx: &Ctx, cmd: DomainMappingsCommand) -> Result<()> {
    let project = &ctx.project;
    let base = format!("/v1/projects/{project}/domainmappings");
    match cmd {
        DomainMappingsCommand::Create(args) => {
            let service: ServiceView = ctx
                .client
                .get_json(&format!("/v1/projects/{project}/services/{}", args.service))
                .await?;
            let req = CreateDomainMappingRequest {
                domain: args.domain.clone(),
                target: MappingTarget {
                    kind: "service".into(),
                    name: args.service.clone(),
                },
                certificate_mode: match args.certificate_mode {
                    ModeArg::Automatic => CertificateMode::Automatic,
                    ModeArg::LocalCa => CertificateMode::LocalCa,
                },
                force_override: args.force_override,
            };
            eprintln!("Creating domain mapping...");
            let m: DomainMappingView = ctx.client.post_json(&base, &req).await?;
            if !service.allow_unauthenticated {
                eprintln!(
                    "  service [{}] is private: {} needs a token too, whose audience the service lists (pier services update {} --add-custom-audiences {})",
                    args.service, m.url, args.service, m.url
                );
            }
            for r in &m.resource_records {
                eprintln!("  add this DNS record: {} {} {}", r.name, r.kind, r.rrdata);
            }
            let m = if args.no_wait {
                m
            } else {
                eprintln!("Waiting for certificate provisioning...");
                wait_ready(ctx, &m.domain, args.timeout).await?
            };
            if output::structured(ctx.format, &m)? {
                return Ok(());
            }
            if m.ready() {
                println!("Done. {} now serves service [{}]", m.url, m.target.name);
            } else {
                describe_text(&m);
            }
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
