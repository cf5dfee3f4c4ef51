//! Deploying Knative Service manifests: `pier services replace FILE` and the deploy half of `pier up`
//! (which also applies DomainMapping manifests found beside them).
//!
//! Relative paths in a manifest (the command's program, `workingDir`) are relative to the manifest's
//! folder; a host command with no `workingDir` runs in that folder. `pier up` first runs the manifest's
//! `pier.dev/build` command there.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use pier_model::ServiceName;
use pier_model::api::{DeployRequest, UpdateTrafficRequest};
use pier_model::manifest::ServiceManifest;

use super::deploy::wait_ready;
use crate::Ctx;

/// The manifests at `path`: the file itself, or the `*.yaml`/`*.yml` files of a folder, by name.
pub fn find(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let entries = std::fs::read_dir(path).with_context(|| {
        format!(
            "{} is neither a manifest nor a folder of manifests",
            path.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "no service manifest (*.yaml) in {}: see examples/hello/service.yaml",
            path.display()
        );
    }
    Ok(files)
}

fn resolve(base: &Path, p: &str) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        return p.to_owned();
    }
    let joined = base.join(path);
    std::fs::canonicalize(&joined)
        .unwrap_or(joined)
        .display()
        .to_string()
}

/// Reads a manifest and makes its relative paths absolute.
pub fn load(file: &Path) -> Result<ServiceManifest> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut m =
        ServiceManifest::from_yaml(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    // The file's own folder, whatever form the path has (`echo.yaml`, `./echo.yaml`, a symlink).
    let dir = std::fs::canonicalize(file)
        .with_context(|| format!("resolving {}", file.display()))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    if m.template.image.is_none() {
        if let Some(first) = m.template.command.first_mut()
            && first.contains('/')
        {
            *first = resolve(&dir, first);
        }
        m.template.working_dir = Some(match &m.template.working_dir {
            Some(w) => resolve(&dir, w),
            None => dir.display().to_string(),
        });
    }
    Ok(m)
}

fn run_build(file: &Path, command: &str) -> Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    eprintln!("Building: {command}");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()
        .with_context(|| format!("running the build command {command:?}"))?;
    if !status.success() {
        bail!("the build command {command:?} failed ({status}); fix it and run again");
    }
    Ok(())
}

/// Deploys every manifest in `file` (one per file). With `build`, runs the build annotation first. When
/// not building and the template is unchanged, no new revision is made. Returns each service's URL.
pub async fn deploy_file(
    ctx: &Ctx,
    file: &Path,
    build: bool,
) -> Result<Vec<(ServiceName, String)>> {
    let m = load(file)?;
    if build && let Some(cmd) = &m.build {
        run_build(file, cmd)?;
    }
    let project = m.project.clone().unwrap_or_else(|| ctx.project.clone());
    let existing = ctx.client.get_service(&project, &m.name).await?;
    // What Pier fills in at deploy (the default service account, ...) does not count as a change.
    let unchanged = existing.as_ref().is_some_and(|s| {
        s.ready
            && s.template
                .as_ref()
                .is_some_and(|stored| m.template.as_recorded_like(stored) == *stored)
    });
    if unchanged && !build {
        eprintln!("Service {} is unchanged.", m.name);
    } else {
        eprintln!("Deploying {} in project {project}...", m.name);
        let req = DeployRequest {
            template: m.template.clone(),
            allow_unauthenticated: m.allow_unauthenticated,
            no_traffic: false,
            tag: None,
            settings: Default::default(),
            creator: None,
        };
        let rev = ctx.client.deploy(&project, &m.name, &req).await?;
        eprintln!("  Creating revision {}...", rev.name);
        let show = crate::progress::Show::detect(ctx.quiet);
        if let Some(op) = &rev.operation
            && let Err(e) = crate::progress::follow(&ctx.client, op, show).await
        {
            eprintln!("  (progress unavailable: {e:#}; waiting for the revision)");
        }
        wait_ready(&ctx.client, &project, &rev, show).await?;
    }
    if let Some(traffic) = &m.traffic
        && *traffic != pier_model::Traffic::default()
    {
        eprintln!("  Routing traffic...");
        let req = UpdateTrafficRequest::replacing_with(traffic);
        ctx.client.update_traffic(&project, &m.name, &req).await?;
    } else if let Some(public) = m.allow_unauthenticated
        && unchanged
        && existing
            .as_ref()
            .is_some_and(|s| s.allow_unauthenticated != public)
    {
        ctx.client
            .update_service(
                &project,
                &m.name,
                &pier_model::api::UpdateServiceRequest {
                    allow_unauthenticated: Some(public),
                    ..Default::default()
                },
            )
            .await?;
    }
    let svc = ctx
        .client
        .get_service(&project, &m.name)
        .await?
        .ok_or_else(|| anyhow!("service {} vanished", m.name))?;
    eprintln!("Done.");
    Ok(vec![(m.name, svc.url)])
}

/// Builds and deploys every manifest at `path` (a file or folder), as `pier up` does: Services first,
/// then DomainMappings (which need their services), without waiting for certificates.
pub async fn deploy_path(ctx: &Ctx, path: &Path) -> Result<Vec<(ServiceName, String)>> {
    let mut out = Vec::new();
    let mut mappings = Vec::new();
    for file in find(path)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        if pier_model::domains::DomainMappingManifest::is_one(&text) {
            mappings.push(file);
        } else {
            out.extend(deploy_file(ctx, &file, true).await?);
        }
    }
    for file in mappings {
        let m = super::domains::load(&file)?;
        let project = m.project.clone().unwrap_or_else(|| ctx.project.clone());
        let view = super::domains::apply(ctx, &project, &m.request, None).await?;
        eprintln!(
            "Domain {} maps to {} [{}]; `pier domain-mappings describe --domain {}` shows its certificate",
            view.domain, view.target.kind, view.target.name, view.domain
        );
    }
    Ok(out)
}
