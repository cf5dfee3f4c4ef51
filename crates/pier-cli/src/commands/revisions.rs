//! `pier revisions list | describe | delete`.

use anyhow::{Result, anyhow};
use clap::Subcommand;
use pier_model::api::{RevisionState, RevisionView};
use pier_model::{RevisionName, ServiceName};

use crate::{Ctx, output};

/// Revision commands.
#[derive(Debug, Subcommand)]
pub enum RevisionsCommand {
    /// List revisions, newest first.
    List {
        /// Only this service's revisions.
        #[arg(long)]
        service: Option<String>,
    },
    /// Show a revision.
    Describe {
        /// Revision name.
        revision: String,
    },
    /// Delete a revision that serves no traffic.
    Delete {
        /// Revision name.
        revision: String,
    },
}

fn state(r: &RevisionView) -> &'static str {
    match r.state {
        RevisionState::Deploying => "Deploying",
        RevisionState::Ready => "Ready",
        RevisionState::Failed => "Failed",
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: RevisionsCommand) -> Result<()> {
    match cmd {
        RevisionsCommand::List { service } => {
            let service = service
                .as_deref()
                .map(str::parse::<ServiceName>)
                .transpose()
                .map_err(|e| anyhow!("{e}"))?;
            let list = ctx
                .client
                .list_revisions(&ctx.project, service.as_ref())
                .await?;
            if output::structured(ctx.format, &list)? {
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|r| {
                    let tags = r
                        .tags
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    vec![
                        if r.percent > 0 { "yes" } else { "" }.to_owned(),
                        r.name.to_string(),
                        r.service.to_string(),
                        state(r).to_owned(),
                        format!("{}%", r.percent),
                        if tags.is_empty() { "-".into() } else { tags },
                        r.instances.len().to_string(),
                        r.created_at.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &[
                        "ACTIVE",
                        "REVISION",
                        "SERVICE",
                        "STATE",
                        "TRAFFIC",
                        "TAGS",
                        "INSTANCES",
                        "DEPLOYED"
                    ],
                    &rows
                )
            );
        }
        RevisionsCommand::Describe { revision } => {
            let name: RevisionName = revision.parse().map_err(|e| anyhow!("{e}"))?;
            let r = ctx.client.get_revision(&ctx.project, &name, 0).await?;
            if output::structured(ctx.format, &r)? {
                return Ok(());
            }
            println!("Revision {} of service {}", r.name, r.service);
            println!("  State:     {}", state(&r));
            if let Some(m) = &r.message {
                println!("  Message:   {m}");
            }
            println!("  Traffic:   {}%", r.percent);
            println!("  Created:   {}", r.created_at);
            if let Some(t) = &r.ready_at {
                println!("  Ready:     {t}");
            }
            if let Some(i) = &r.template.image {
                println!("  Image:     {i}");
            }
            if let Some(d) = &r.image_digest {
                println!("  Digest:    {d}");
            }
            if !r.template.command.is_empty() {
                println!("  Command:   {:?}", r.template.command);
            }
            if let Some(m) = &r.template.memory {
                println!("  Memory:    {m}");
            }
            if let Some(c) = &r.template.cpu {
                println!("  CPU:       {c}");
            }
            println!(
                "  Scaling:   concurrency {}, min {} max {} instances, timeout {}s",
                r.template.container_concurrency,
                r.template.min_instances,
                r.template.max_instances,
                r.template.timeout_seconds
            );
            for i in &r.instances {
                println!(
                    "  Instance:  {} {:?} ({} in flight, since {})",
                    i.id, i.state, i.in_flight, i.started_at
                );
            }
            if let Some(e) = &r.last_instance_exit {
                println!("  Last exit: instance {}", crate::output::instance_exit(e));
            }
            if !r.log_tail.is_empty() {
                println!("  Last log lines:");
                for l in &r.log_tail {
                    println!("    {l}");
                }
            }
        }
        RevisionsCommand::Delete { revision } => {
            let name: RevisionName = revision.parse().map_err(|e| anyhow!("{e}"))?;
            ctx.client.delete_revision(&ctx.project, &name).await?;
            eprintln!("Deleted revision [{name}].");
        }
    }
    Ok(())
}
