//! `pier services list | describe | delete | update | update-traffic | replace`.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use pier_model::api::{
    DeployRequest, ServiceView, TagAssignment, TrafficAssignment, UpdateServiceRequest,
    UpdateTrafficRequest,
};
use pier_model::manifest::ServiceManifest;
use pier_model::{ServiceName, Tag};

use super::deploy::{SettingsFlags, TemplateFlags, deploy_and_wait, public_wish, split_list};
use super::iam::{BindingArgs, PolicyOp, policy};
use crate::{Ctx, Format, output};

/// Service commands.
#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// List services.
    List,
    /// Show a service: URL, traffic, latest revision.
    Describe {
        /// Service name.
        service: String,
    },
    /// Delete a service, its revisions and logs.
    Delete {
        /// Service name.
        service: String,
    },
    /// Change a service: template flags make a new revision; the others change settings in place.
    Update(Box<UpdateArgs>),
    /// Split traffic between revisions, move tags, roll back.
    UpdateTraffic(TrafficArgs),
    /// Create or replace a service from a Knative Service manifest.
    Replace {
        /// The manifest (YAML).
        file: PathBuf,
    },
    /// Print a service's IAM policy.
    GetIamPolicy {
        /// Service name.
        service: String,
    },
    /// Replace a service's IAM policy from a file (JSON or YAML; its etag must be current).
    SetIamPolicy {
        /// Service name.
        service: String,
        /// The policy file.
        file: PathBuf,
    },
    /// Grant a role on a service (`--member=allUsers --role=roles/run.invoker` makes it public).
    AddIamPolicyBinding {
        /// Service name.
        service: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
    /// Revoke a role on a service.
    RemoveIamPolicyBinding {
        /// Service name.
        service: String,
        #[command(flatten)]
        binding: BindingArgs,
    },
}

/// Arguments of `services update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Service name.
    pub service: String,
    #[command(flatten)]
    pub template: TemplateFlags,
    /// Make the service public.
    #[arg(long, overrides_with = "no_allow_unauthenticated")]
    pub allow_unauthenticated: bool,
    /// Make the service private.
    #[arg(long)]
    pub no_allow_unauthenticated: bool,
    #[command(flatten)]
    pub settings: SettingsFlags,
}

/// Arguments of `services update-traffic`.
#[derive(Debug, Args)]
pub struct TrafficArgs {
    /// Service name.
    pub service: String,
    /// Assignments `REVISION=PERCENT,...` (`LATEST` for the latest ready revision, or a tag); under 100 in
    /// total leaves the rest to what serves now.
    #[arg(long, conflicts_with_all = ["to_latest", "to_tags"])]
    pub to_revisions: Option<String>,
    /// Send all traffic to the latest ready revision.
    #[arg(long, conflicts_with = "to_tags")]
    pub to_latest: bool,
    /// Assignments by tag, `TAG=PERCENT,...`.
    #[arg(long)]
    pub to_tags: Option<String>,
    /// Set or move tags, `TAG=REVISION,...`.
    #[arg(long, alias = "set-tags")]
    pub update_tags: Option<String>,
    /// Remove tags, `TAG,...`.
    #[arg(long)]
    pub remove_tags: Option<String>,
    /// Remove every tag.
    #[arg(long)]
    pub clear_tags: bool,
}

fn pairs(flag: &str, s: &str) -> Result<Vec<(String, String)>> {
    split_list(s)
        .into_iter()
        .map(|item| {
            item.split_once('=')
                .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
                .ok_or_else(|| anyhow!("{flag} {item:?} is not NAME=VALUE"))
        })
        .collect()
}

fn assignments(flag: &str, s: &str) -> Result<Vec<TrafficAssignment>> {
    pairs(flag, s)?
        .into_iter()
        .map(|(target, pct)| {
            let percent: u8 = pct
                .parse()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| anyhow!("{flag}: {pct:?} is not a percentage from 0 to 100"))?;
            Ok(TrafficAssignment { target, percent })
        })
        .collect()
}

impl TrafficArgs {
    fn request(&self) -> Result<UpdateTrafficRequest> {
        let mut req = UpdateTrafficRequest {
            to_latest: self.to_latest,
            clear_tags: self.clear_tags,
            ..Default::default()
        };
        if let Some(s) = &self.to_revisions {
            req.to_revisions = assignments("--to-revisions", s)?;
        }
        if let Some(s) = &self.to_tags {
            req.to_revisions = assignments("--to-tags", s)?;
        }
        if let Some(s) = &self.update_tags {
            req.update_tags = pairs("--update-tags", s)?
                .into_iter()
                .map(|(tag, revision)| {
                    Ok(TagAssignment {
                        tag: tag.parse::<Tag>().map_err(|e| anyhow!("{e}"))?,
                        revision,
                    })
                })
                .collect::<Result<_>>()?;
        }
        if let Some(s) = &self.remove_tags {
            req.remove_tags = split_list(s)
                .iter()
                .map(|t| t.parse::<Tag>().map_err(|e| anyhow!("{e}")))
                .collect::<Result<_>>()?;
        }
        if !req.to_latest
            && req.to_revisions.is_empty()
            && req.update_tags.is_empty()
            && req.remove_tags.is_empty()
            && !req.clear_tags
        {
            bail!(
                "nothing to change: give --to-revisions, --to-latest, --to-tags, --update-tags, --remove-tags or --clear-tags"
            );
        }
        Ok(req)
    }
}

fn service_name(s: &str) -> Result<ServiceName> {
    s.parse().map_err(|e| anyhow!("{e}"))
}

/// Prints a service for people; `serving` is its latest ready revision, whose image is shown as gcloud
/// does (`NAME at sha256:...`).
pub fn describe_text(svc: &ServiceView, serving: Option<&pier_model::api::RevisionView>) {
    println!("Service {} in project {}", svc.name, svc.project);
    println!("  URL:        {}", svc.url);
    println!(
        "  Ready:      {}{}",
        if svc.ready { "True" } else { "False" },
        svc.message
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    println!(
        "  Access:     {}",
        if svc.allow_unauthenticated {
            "public (allow unauthenticated)"
        } else {
            "private (requires authentication)"
        }
    );
    println!("  Traffic:");
    for t in &svc.traffic {
        let target = match (&t.revision_name, t.latest_revision) {
            (Some(r), true) => format!("LATEST ({r})"),
            (Some(r), false) => r.to_string(),
            (None, _) => "LATEST (no ready revision)".into(),
        };
        let tag = match (&t.tag, &t.url) {
            (Some(tag), Some(url)) => format!("  tag {tag}: {url}"),
            _ => String::new(),
        };
        println!("    {:>3}%  {target}{tag}", t.percent);
    }
    if let Some(r) = &svc.latest_ready_revision {
        println!("  Latest ready revision:   {r}");
    }
    if let Some(e) = &svc.last_instance_exit {
        println!(
            "  Last instance exit:      {}",
            crate::output::instance_exit(e)
        );
    }
    if let Some(r) = &svc.latest_created_revision {
        println!("  Latest created revision: {r}");
    }
    if let Some(rev) = serving
        && let Some(image) = &rev.template.image
    {
        // The digest the serving revision runs, which a later push to the tag never changes.
        match rev.image_digest.as_deref().and_then(|d| d.rsplit_once('@')) {
            Some((_, digest)) => println!("  Image:      {image} at {digest} (serving)"),
            None => println!("  Image:      {image} (serving)"),
        }
    }
    if let Some(t) = &svc.template {
        if let Some(i) = &t.image
            && svc.latest_created_revision != svc.latest_ready_revision
        {
            println!("  Image:      {i} (latest created revision)");
        }
        if !t.command.is_empty() {
            println!("  Command:    {:?}", t.command);
        }
        if !t.args.is_empty() {
            println!("  Args:       {:?}", t.args);
        }
        println!(
            "  Scaling:    concurrency {}, min {} max {} instances, timeout {}s",
            t.container_concurrency, t.min_instances, t.max_instances, t.timeout_seconds
        );
        for e in &t.env {
            println!("  Env:        {}={}", e.name, e.value);
        }
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: ServicesCommand) -> Result<()> {
    match cmd {
        ServicesCommand::List => {
            let list = ctx.client.list_services(&ctx.project).await?;
            if output::structured(ctx.format, &list)? {
                return Ok(());
            }
            if list.is_empty() {
                eprintln!("Listed 0 services in project {}.", ctx.project);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    // Both facts: whether something serves, and whether the last deploy worked.
                    let serving = s.latest_ready_revision.is_some();
                    let last_failed = !s.ready;
                    vec![
                        match (serving, last_failed) {
                            (true, false) => "✔",
                            (true, true) => "!",
                            (false, _) => "✖",
                        }
                        .to_owned(),
                        s.name.to_string(),
                        s.url.clone(),
                        s.latest_ready_revision
                            .as_ref()
                            .map(|r| r.to_string())
                            .unwrap_or_else(|| "-".into()),
                        if s.allow_unauthenticated {
                            "public"
                        } else {
                            "private"
                        }
                        .into(),
                        match (serving, last_failed) {
                            (true, false) => "serving".to_owned(),
                            (true, true) => format!(
                                "serving; latest revision {} is not ready",
                                s.latest_created_revision
                                    .as_ref()
                                    .map(|r| r.to_string())
                                    .unwrap_or_default()
                            ),
                            (false, _) => "not serving".to_owned(),
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &["", "SERVICE", "URL", "LATEST READY", "ACCESS", "STATUS"],
                    &rows
                )
            );
        }
        ServicesCommand::Describe { service } => {
            let name = service_name(&service)?;
            let svc = ctx
                .client
                .get_service(&ctx.project, &name)
                .await?
                .ok_or_else(|| {
                    anyhow!(
                        "service {name} does not exist in project {}: `pier services list` shows them",
                        ctx.project
                    )
                })?;
            if ctx.format == Format::Yaml {
                let m = ServiceManifest {
                    project: Some(svc.project.clone()),
                    name: svc.name.clone(),
                    template: svc.template.clone().unwrap_or_default(),
                    traffic: Some(pier_model::Traffic(svc.traffic_spec.clone())),
                    allow_unauthenticated: Some(svc.allow_unauthenticated),
                    build: None,
                };
                print!("{}", m.to_yaml());
            } else if !output::structured(ctx.format, &svc)? {
                let serving = match &svc.latest_ready_revision {
                    Some(r) => ctx.client.get_revision(&ctx.project, r, 0).await.ok(),
                    None => None,
                };
                describe_text(&svc, serving.as_ref());
            }
        }
        ServicesCommand::Delete { service } => {
            let name = service_name(&service)?;
            ctx.client.delete_service(&ctx.project, &name).await?;
            eprintln!("Deleted service [{name}].");
        }
        ServicesCommand::Update(args) => {
            let args = *args;
            let name = service_name(&args.service)?;
            let svc = ctx
                .client
                .get_service(&ctx.project, &name)
                .await?
                .ok_or_else(|| {
                    anyhow!("service {name} does not exist: create it with `pier deploy`")
                })?;
            let public = public_wish(args.allow_unauthenticated, args.no_allow_unauthenticated);
            let settings: UpdateServiceRequest = args.settings.request(public)?;
            // A new revision only when the template changes, as Cloud Run does: the flags are
            // applied and the result compared, so no list of "template flags" can fall out of date.
            let current = svc.template.unwrap_or_default();
            let template = args.template.apply(current.clone())?;
            if template == current {
                if settings.is_empty() {
                    bail!(
                        "nothing to change: the flags given leave the revision template as it is; give template flags with new values, --[no-]allow-unauthenticated, --ingress, --[no-]invoker-iam-check or custom audience flags (see --help)"
                    );
                }
                let svc = ctx
                    .client
                    .update_service(&ctx.project, &name, &settings)
                    .await?;
                if !output::structured(ctx.format, &svc)? {
                    println!("Service [{name}] updated.");
                }
                return Ok(());
            }
            let req = DeployRequest {
                template,
                allow_unauthenticated: public,
                no_traffic: false,
                tag: None,
                settings,
                creator: None,
            };
            deploy_and_wait(ctx, &name, &req, true).await?;
        }
        ServicesCommand::UpdateTraffic(args) => {
            let name = service_name(&args.service)?;
            let req = args.request()?;
            let svc = ctx.client.update_traffic(&ctx.project, &name, &req).await?;
            if !output::structured(ctx.format, &svc)? {
                eprintln!("Updated traffic of service [{name}]:");
                for t in &svc.traffic {
                    let target = t
                        .revision_name
                        .as_ref()
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "-".into());
                    let latest = if t.latest_revision { " (LATEST)" } else { "" };
                    let tag = t.url.as_ref().map(|u| format!("  {u}")).unwrap_or_default();
                    println!("  {:>3}% {target}{latest}{tag}", t.percent);
                }
            }
        }
        ServicesCommand::GetIamPolicy { service } => {
            let name = service_name(&service)?;
            let base = format!("/v1/projects/{}/services/{name}", ctx.project);
            policy(ctx, &base, PolicyOp::Get, &format!("service [{name}]")).await?;
        }
        ServicesCommand::SetIamPolicy { service, file } => {
            let name = service_name(&service)?;
            let base = format!("/v1/projects/{}/services/{name}", ctx.project);
            policy(
                ctx,
                &base,
                PolicyOp::Set(file),
                &format!("service [{name}]"),
            )
            .await?;
        }
        ServicesCommand::AddIamPolicyBinding { service, binding } => {
            let name = service_name(&service)?;
            let base = format!("/v1/projects/{}/services/{name}", ctx.project);
            policy(
                ctx,
                &base,
                PolicyOp::Add(binding),
                &format!("service [{name}]"),
            )
            .await?;
        }
        ServicesCommand::RemoveIamPolicyBinding { service, binding } => {
            let name = service_name(&service)?;
            let base = format!("/v1/projects/{}/services/{name}", ctx.project);
            policy(
                ctx,
                &base,
                PolicyOp::Remove(binding),
                &format!("service [{name}]"),
            )
            .await?;
        }
        ServicesCommand::Replace { file } => {
            let deployed = super::manifests::deploy_file(ctx, &file, false).await?;
            for (_, url) in deployed {
                println!("Service URL: {url}");
            }
        }
    }
    Ok(())
}
