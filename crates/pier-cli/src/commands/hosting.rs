//! `pier hosting …`, after `firebase deploy --only hosting`, `firebase hosting:channel:*`,
//! `firebase hosting:clone` and the console's rollback: a site is deployed from the `hosting` block of a
//! `firebase.json` as it is.
//!
//! A deploy reads the site's entry, lists the files under its `public` folder less its `ignore` globs
//! (matched as the server matches rules, against paths relative to `public`; a glob that matches a
//! folder leaves out what is in it), hashes each (SHA-256), asks the server for a version, uploads only
//! the files the server lacks, and releases the version to the channel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use pier_hosting::pattern::Pattern;
use pier_model::hosting::{
    ChannelView, CloneRequest, CreateSiteVersionRequest, CreatedSiteVersion, ReleaseRequest,
    ReleaseView, SiteView, UploadedFile,
};
use serde_json::Value;

use crate::{Ctx, output};

/// `pier hosting …`.
#[derive(Debug, Subcommand)]
pub enum HostingCommand {
    /// Deploy a site's files and rules from firebase.json to its live channel.
    Deploy(DeployArgs),
    /// Preview channels: the site at its own URL, for a while.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// A channel's releases.
    #[command(subcommand)]
    Releases(ReleasesCommand),
    /// Serve the live channel's previous version again.
    Rollback {
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Serve on TARGET what SOURCE serves (each `SITE:CHANNEL`).
    Clone {
        /// `SITE:CHANNEL` to copy.
        source: String,
        /// `SITE:CHANNEL` to serve it on (a missing preview channel is created).
        target: String,
        /// A new preview channel's life (`12h`, `7d`, at most `30d`).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Sites.
    #[command(subcommand)]
    Sites(SitesCommand),
}

/// `pier cache …`, after `gcloud compute url-maps invalidate-cdn-cache`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Drop what the edge cache holds for a site or a service under a path.
    #[command(group = clap::ArgGroup::new("target").required(true).args(["site", "service"]))]
    Invalidate {
        /// The site.
        #[arg(long)]
        site: Option<String>,
        /// The service.
        #[arg(long)]
        service: Option<String>,
        /// `/x/*` (everything under `/x/`) or an exact path; the query is ignored.
        #[arg(long)]
        path: String,
    },
}

/// Runs a cache command.
pub async fn run_cache(ctx: &Ctx, cmd: CacheCommand) -> Result<()> {
    let CacheCommand::Invalidate {
        site,
        service,
        path,
    } = cmd;
    let project = &ctx.project;
    let (what, url) = match (site, service) {
        (Some(site), _) => (
            format!("site {site}"),
            format!("/v1/projects/{project}/sites/{site}/cache/invalidate"),
        ),
        (_, Some(service)) => (
            format!("service {service}"),
            format!("/v1/projects/{project}/services/{service}/cache/invalidate"),
        ),
        _ => bail!("name a --site or a --service"),
    };
    ctx.client
        .post_empty_json(&url, &serde_json::json!({ "path": path }))
        .await?;
    eprintln!("Invalidated {path} of {what}.");
    Ok(())
}

/// What a deploy reads.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The site (default: the `site` of firebase.json's only hosting entry).
    #[arg(long)]
    pub site: Option<String>,
    /// The firebase.json to read.
    #[arg(long, default_value = "firebase.json")]
    pub config: PathBuf,
    /// The service account rewrites call services as (default: kept from the last deploy, else the
    /// project's compute account).
    #[arg(long)]
    pub service_account: Option<String>,
    /// A message for the release.
    #[arg(long, short = 'm', default_value = "")]
    pub message: String,
}

/// `pier hosting channel …`.
#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// Deploy to a preview channel (created when missing), served at `SITE--CHANNEL-HASH`.
    Deploy {
        /// The channel.
        channel: String,
        /// How long it lives from now (`12h`, `7d`, at most `30d`; a new channel: 7d).
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        deploy: DeployArgs,
    },
    /// List a site's channels.
    List {
        /// The site.
        #[arg(long)]
        site: String,
    },
    /// Delete a preview channel.
    Delete {
        /// The channel.
        channel: String,
        /// The site.
        #[arg(long)]
        site: String,
    },
}

/// `pier hosting releases …`.
#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// List a channel's releases, newest first.
    List {
        /// The site.
        #[arg(long)]
        site: String,
        /// The channel.
        #[arg(long, default_value = "live")]
        channel: String,
    },
}

/// `pier hosting sites …`.
#[derive(Debug, Subcommand)]
pub enum SitesCommand {
    /// List the project's sites.
    List,
    /// Show a site and its channels.
    Describe {
        /// The site.
        name: String,
    },
    /// Delete a site: its URLs stop serving.
    Delete {
        /// The site.
        name: String,
    },
}

/// A channel's life: `30m`, `12h`, `7d`, `2w` (Firebase's units, and seconds), at most 30 days.
pub fn parse_expires(s: &str) -> Result<u64> {
    let secs = parse_life(s)?;
    if secs > pier_model::hosting::MAX_CHANNEL_TTL_SECS {
        bail!("--expires {s}: a preview channel lives at most 30 days; use --expires 30d or less");
    }
    Ok(secs)
}

fn parse_life(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| anyhow!("--expires {s:?}: use a number and a unit, like 12h or 7d"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => bail!("--expires {s:?}: the unit is m, h, d or w (as in 12h or 7d)"),
    };
    Ok(n * unit_secs)
}

/// The site's entry of firebase.json's `hosting` (an object, or an array of them with `site` or
/// `target`), and the site's name.
fn hosting_entry(doc: &Value, site: Option<&str>, file: &Path) -> Result<(Value, String)> {
    let hosting = doc.get("hosting").ok_or_else(|| {
        anyhow!(
            "{} has no `hosting` block: see https://firebase.google.com/docs/hosting/full-config",
            file.display()
        )
    })?;
    let entries: Vec<&Value> = match hosting {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![hosting],
        _ => bail!(
            "{}: `hosting` is an object or an array of them",
            file.display()
        ),
    };
    let name_of = |e: &Value| {
        e.get("site")
            .or_else(|| e.get("target"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let chosen = match site {
        Some(s) => entries
            .iter()
            .find(|e| name_of(e).as_deref() == Some(s))
            .or_else(|| (entries.len() == 1).then(|| &entries[0]))
            .ok_or_else(|| {
                let names: Vec<String> = entries.iter().filter_map(|e| name_of(e)).collect();
                anyhow!(
                    "{} has no hosting entry for site {s}; its entries name: {}",
                    file.display(),
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )
            })?,
        None if entries.len() == 1 => &entries[0],
        None => bail!(
            "{} has {} hosting entries: choose one with --site",
            file.display(),
            entries.len()
        ),
    };
    let name = site
        .map(str::to_owned)
        .or_else(|| name_of(chosen))
        .ok_or_else(|| anyhow!("name the site with --site (the hosting entry has no `site`)"))?;
    Ok(((*chosen).clone(), name))
}

/// Files to deploy: path in the site → file on disk, less what `ignore` matches (a path or any folder
/// above it).
fn list_files(public: &Path, ignore: &[Pattern]) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![public.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let rel = path
                .strip_prefix(public)
                .map_err(|_| anyhow!("{} is outside {}", path.display(), public.display()))?;
            let rel = rel
                .to_str()
                .ok_or_else(|| anyhow!("{}: file names must be UTF-8", path.display()))?
                .to_owned();
            if ignore.iter().any(|p| p.is_match(&rel)) {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
                out.insert(format!("/{rel}"), path);
            }
        }
    }
    Ok(out)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Deploys to `channel`; returns the release.
async fn deploy(
    ctx: &Ctx,
    args: &DeployArgs,
    channel: &str,
    ttl_seconds: Option<u64>,
) -> Result<ReleaseView> {
    let text = std::fs::read_to_string(&args.config).with_context(|| {
        format!(
            "reading {} (name your firebase.json with --config FILE)",
            args.config.display()
        )
    })?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", args.config.display()))?;
    let (mut entry, site) = hosting_entry(&doc, args.site.as_deref(), &args.config)?;
    let obj = entry
        .as_object_mut()
        .ok_or_else(|| anyhow!("the hosting entry must be an object"))?;
    let public = obj
        .remove("public")
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| {
            anyhow!(
                "the hosting entry of site {site} has no `public` folder: add the folder of your built files, as \"public\": \"dist\""
            )
        })?;
    let mut ignore = Vec::new();
    if let Some(list) = obj.remove("ignore") {
        for g in list
            .as_array()
            .ok_or_else(|| anyhow!("`ignore` is a list of globs"))?
        {
            let g = g
                .as_str()
                .ok_or_else(|| anyhow!("`ignore` is a list of globs"))?;
            ignore.push(Pattern::glob(g).map_err(|e| anyhow!("ignore: {e}"))?);
        }
    }
    for hook in ["predeploy", "postdeploy"] {
        if obj.remove(hook).is_some() {
            eprintln!(
                "warning: pier does not run `{hook}` hooks: run them yourself before deploying"
            );
        }
    }
    for key in ["site", "target"] {
        obj.remove(key);
    }
    let base = args.config.parent().unwrap_or(Path::new("."));
    let public_dir = base.join(&public);
    if !public_dir.is_dir() {
        bail!(
            "the public folder {} does not exist: build the site first",
            public_dir.display()
        );
    }
    let on_disk = list_files(&public_dir, &ignore)?;
    let mut files = BTreeMap::new();
    let mut by_digest: BTreeMap<String, (String, PathBuf, u64)> = BTreeMap::new();
    for (path, file) in &on_disk {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let digest = pier_hosting::files::digest_of(&bytes);
        by_digest
            .entry(digest.clone())
            .or_insert_with(|| (path.clone(), file.clone(), bytes.len() as u64));
        files.insert(path.clone(), digest);
    }
    let project = &ctx.project;
    let created: CreatedSiteVersion = ctx
        .client
        .post_json(
            &format!("/v1/projects/{project}/sites/{site}/versions"),
            &CreateSiteVersionRequest {
                config: entry.clone(),
                files,
                service_account: args.service_account.clone(),
            },
        )
        .await?;
    let new_bytes: u64 = created
        .missing
        .iter()
        .filter_map(|d| by_digest.get(d).map(|f| f.2))
        .sum();
    eprintln!(
        "Uploading {} file{} ({} new, {})...",
        on_disk.len(),
        if on_disk.len() == 1 { "" } else { "s" },
        created.missing.len(),
        human_bytes(new_bytes)
    );
    let mut tasks = tokio::task::JoinSet::new();
    let mut queue = created.missing.clone().into_iter();
    let mut uploaded = 0usize;
    loop {
        while tasks.len() < 8 {
            let Some(digest) = queue.next() else { break };
            let (path, file, _) = by_digest
                .get(&digest)
                .cloned()
                .ok_or_else(|| anyhow!("the server asked for a file this deploy does not have"))?;
            let client = ctx.client.clone();
            let url = format!(
                "/v1/projects/{project}/sites/{site}/files/{digest}?path={}",
                encode_query(&path)
            );
            tasks.spawn(async move {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let _: UploadedFile = client
                    .put_bytes(&url, bytes)
                    .await
                    .with_context(|| format!("uploading {path}"))?;
                anyhow::Ok(())
            });
        }
        match tasks.join_next().await {
            Some(done) => {
                done.map_err(|e| anyhow!("an upload failed: {e}"))??;
                uploaded += 1;
                if uploaded.is_multiple_of(100) {
                    eprintln!("  {uploaded}/{} uploaded", created.missing.len());
                }
            }
            None => break,
        }
    }
    eprintln!("Releasing version v{}...", created.version);
    ctx.client
        .post_json(
            &format!("/v1/projects/{project}/sites/{site}/channels/{channel}/releases"),
            &ReleaseRequest {
                version: created.version,
                message: args.message.clone(),
                ttl_seconds,
            },
        )
        .await
}

fn encode_query(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn print_release(ctx: &Ctx, r: &ReleaseView) -> Result<()> {
    if !output::structured(ctx.format, r)? {
        println!("{}", r.url);
    }
    Ok(())
}

fn print_channels(channels: &[ChannelView]) {
    let rows: Vec<Vec<String>> = channels
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.version
                    .map(|v| format!("v{v}"))
                    .unwrap_or_else(|| "-".into()),
                c.expire_time.clone().unwrap_or_else(|| "never".into()),
                c.url.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["CHANNEL", "VERSION", "EXPIRES", "URL"], &rows)
    );
}

/// Runs a hosting command.
pub async fn run(ctx: &Ctx, cmd: HostingCommand) -> Result<()> {
    let project = &ctx.project;
    match cmd {
        HostingCommand::Deploy(args) => {
            let r = deploy(ctx, &args, "live", None).await?;
            print_release(ctx, &r)
        }
        HostingCommand::Channel(ChannelCommand::Deploy {
            channel,
            expires,
            deploy: args,
        }) => {
            if channel == "live" {
                bail!("`live` is not a preview channel: use `pier hosting deploy`");
            }
            let ttl = expires.as_deref().map(parse_expires).transpose()?;
            if channel.parse::<pier_model::ServiceName>().is_err() {
                bail!(
                    "channel name {channel:?} is not valid: use lowercase letters, digits and single hyphens, starting with a letter (as pr-42)"
                );
            }
            let r = deploy(ctx, &args, &channel, ttl).await?;
            print_release(ctx, &r)
        }
        HostingCommand::Channel(ChannelCommand::List { site }) => {
            let s: SiteView = ctx
                .client
                .get_json(&format!("/v1/projects/{project}/sites/{site}"))
                .await?;
            if !output::structured(ctx.format, &s.channels)? {
                print_channels(&s.channels);
            }
            Ok(())
        }
        HostingCommand::Channel(ChannelCommand::Delete { channel, site }) => {
            ctx.client
                .delete(&format!(
                    "/v1/projects/{project}/sites/{site}/channels/{channel}"
                ))
                .await?;
            eprintln!("Deleted channel {channel} of site {site}.");
            Ok(())
        }
        HostingCommand::Releases(ReleasesCommand::List { site, channel }) => {
            let rs: Vec<ReleaseView> = ctx
                .client
                .get_json(&format!(
                    "/v1/projects/{project}/sites/{site}/channels/{channel}/releases"
                ))
                .await?;
            if !output::structured(ctx.format, &rs)? {
                let rows: Vec<Vec<String>> = rs
                    .iter()
                    .map(|r| {
                        vec![
                            r.seq.to_string(),
                            format!("v{}", r.version),
                            r.kind.clone(),
                            r.create_time.clone(),
                            r.created_by.clone(),
                            r.message.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(
                        &["RELEASE", "VERSION", "TYPE", "TIME", "BY", "MESSAGE"],
                        &rows,
                    )
                );
            }
            Ok(())
        }
        HostingCommand::Rollback { site } => {
            let r: ReleaseView = ctx
                .client
                .post_json(
                    &format!("/v1/projects/{project}/sites/{site}/rollback"),
                    &serde_json::json!({}),
                )
                .await?;
            eprintln!("Site {site} serves version v{} again.", r.version);
            print_release(ctx, &r)
        }
        HostingCommand::Clone {
            source,
            target,
            expires,
        } => {
            let split = |s: &str| -> Result<(String, String)> {
                s.split_once(':')
                    .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| anyhow!("{s:?}: give SITE:CHANNEL, as shop:live"))
            };
            let (src_site, src_channel) = split(&source)?;
            let (dst_site, dst_channel) = split(&target)?;
            let ttl = expires.as_deref().map(parse_expires).transpose()?;
            let r: ReleaseView = ctx
                .client
                .post_json(
                    &format!(
                        "/v1/projects/{project}/sites/{dst_site}/channels/{dst_channel}/clone"
                    ),
                    &CloneRequest {
                        source_site: src_site,
                        source_channel: src_channel,
                        ttl_seconds: ttl,
                    },
                )
                .await?;
            eprintln!("{target} serves version v{} of {source}.", r.version);
            print_release(ctx, &r)
        }
        HostingCommand::Sites(SitesCommand::List) => {
            let sites: Vec<SiteView> = ctx
                .client
                .get_json(&format!("/v1/projects/{project}/sites"))
                .await?;
            if !output::structured(ctx.format, &sites)? {
                let rows: Vec<Vec<String>> = sites
                    .iter()
                    .map(|s| {
                        let live = s.channels.iter().find(|c| c.name == "live");
                        vec![
                            s.name.clone(),
                            live.and_then(|c| c.version)
                                .map(|v| format!("v{v}"))
                                .unwrap_or_else(|| "-".into()),
                            s.channels.len().to_string(),
                            s.url.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(&["SITE", "LIVE", "CHANNELS", "URL"], &rows)
                );
            }
            Ok(())
        }
        HostingCommand::Sites(SitesCommand::Describe { name }) => {
            let s: SiteView = ctx
                .client
                .get_json(&format!("/v1/projects/{project}/sites/{name}"))
                .await?;
            if !output::structured(ctx.format, &s)? {
                println!("Site {} (project {})", s.name, s.project);
                println!("  URL:             {}", s.url);
                println!("  Service account: {}", s.service_account);
                print_channels(&s.channels);
            }
            Ok(())
        }
        HostingCommand::Sites(SitesCommand::Delete { name }) => {
            ctx.client
                .delete(&format!("/v1/projects/{project}/sites/{name}"))
                .await?;
            eprintln!("Deleted site {name}.");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_lives() {
        let doc = serde_json::json!({"hosting": [{"site": "shop", "public": "a"}, {"target": "blog", "public": "b"}]});
        let f = Path::new("firebase.json");
        assert_eq!(hosting_entry(&doc, Some("blog"), f).unwrap().1, "blog");
        assert!(hosting_entry(&doc, None, f).is_err());
        let one = serde_json::json!({"hosting": {"public": "dist"}});
        assert_eq!(hosting_entry(&one, Some("x"), f).unwrap().1, "x");
        assert!(hosting_entry(&one, None, f).is_err());
        assert_eq!(parse_expires("7d").unwrap(), 7 * 86400);
        assert_eq!(parse_expires("12h").unwrap(), 12 * 3600);
        assert!(parse_expires("7").is_err());
        assert!(
            parse_expires("31d")
                .unwrap_err()
                .to_string()
                .contains("30d")
        );
        assert!(parse_expires("1y").is_err());
    }

    #[test]
    fn ignored_files_stay_home() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "index.html",
            ".env",
            "a/.git/config",
            "node_modules/x/i.js",
            "a/b.js",
            "firebase.json",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let ignore: Vec<Pattern> = ["firebase.json", "**/.*", "**/node_modules/**"]
            .iter()
            .map(|g| Pattern::glob(g).unwrap())
            .collect();
        let files = list_files(dir.path(), &ignore).unwrap();
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(names, vec!["/a/b.js", "/index.html"]);
    }
}
