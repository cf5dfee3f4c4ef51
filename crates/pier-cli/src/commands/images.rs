//! `pier images list | prune | registries`: the server's image cache and the registries it has
//! credentials for.

use anyhow::Result;
use clap::Subcommand;
use pier_model::api::{ImageView, PruneView, RegistryView};

use crate::{Ctx, output};

/// `pier images ...`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List the images the server has pulled, and how many revisions run each.
    List,
    /// Forget the images no revision runs and free their disk space.
    Prune,
    /// List the registries the server has credentials for (set them with `pier auth configure-docker`).
    Registries,
}

/// Human-readable bytes.
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// Runs an images command.
pub async fn run(ctx: &Ctx, cmd: ImagesCommand) -> Result<()> {
    match cmd {
        ImagesCommand::List => {
            let images: Vec<ImageView> = ctx.client.get_json("/v1/images").await?;
            if output::structured(ctx.format, &images)? {
                return Ok(());
            }
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|i| {
                    vec![
                        short(&i.digest).to_owned(),
                        i.name.clone(),
                        size(i.size),
                        i.used_by.to_string(),
                        i.pulled_at.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["DIGEST", "IMAGE", "SIZE", "REVISIONS", "PULLED"], &rows)
            );
        }
        ImagesCommand::Prune => {
            let report: PruneView = ctx.client.post_json("/v1/images/prune", &()).await?;
            if output::structured(ctx.format, &report)? {
                return Ok(());
            }
            for i in &report.images {
                println!("Removed image {} ({})", short(&i.digest), i.name);
            }
            println!(
                "Freed {} in {} blobs; removed {} unpacked layers and roots.",
                size(report.bytes),
                report.blobs,
                report.unpacked
            );
        }
        ImagesCommand::Registries => {
            let regs: Vec<RegistryView> = ctx.client.get_json("/v1/registries").await?;
            if output::structured(ctx.format, &regs)? {
                return Ok(());
            }
            let rows: Vec<Vec<String>> = regs
                .iter()
                .map(|r| {
                    vec![
                        r.registry.clone(),
                        if r.username.is_empty() {
                            "(token)".into()
                        } else {
                            r.username.clone()
                        },
                        r.updated_at.clone(),
                    ]
                })
                .collect();
            print!("{}", output::table(&["REGISTRY", "USER", "SET"], &rows));
        }
    }
    Ok(())
}
