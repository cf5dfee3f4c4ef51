//! `pier deploy SERVICE`: a new revision from flags merged over the service's current template (as
//! `gcloud run deploy` keeps what you do not change), then waits until it is ready and serving.

use anyhow::{Result, anyhow, bail};
use clap::Args;
use pier_model::api::{DeployRequest, RevisionState, RevisionView};
use pier_model::spec::validate_env_name;
use pier_model::{EnvVar, ProjectName, RevisionTemplate, ServiceName, Tag};

use crate::{Client, Ctx, output, parse_duration};

/// Flags that shape a revision's template (shared by `deploy` and `services update`).
#[derive(Debug, Clone, Default, Args)]
pub struct TemplateFlags {
    /// Container image to run: `REGISTRY/NAME:TAG`, `...@sha256:...`, `oci-archive:PATH[:TAG]` (an OCI
    /// layout or `docker save` tar), `docker-archive:PATH` or `oci:DIR[:TAG]`. The tag is resolved to a
    /// digest once, at deploy.
    #[arg(long)]
    pub image: Option<String>,

    /// Command to run. On the host, alone it is a shell line run with `sh -c` (like a Procfile line); with
    /// --args it is the program (or a comma-separated entrypoint list) run directly. With --image it is the
    /// entrypoint list, replacing the image's ENTRYPOINT and CMD.
    #[arg(long, allow_hyphen_values = true)]
    pub command: Option<String>,

    /// Arguments, comma-separated (`^:^a:b` uses `:` instead); `$(VAR)` expands environment variables.
    /// Values may start with `-`, as gcloud's do (`--args '--port=$(PORT),--verbose'`).
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,

    /// An environment variable, `KEY=VALUE` (repeatable); added to or replacing the current ones.
    #[arg(long = "env", alias = "update-env-vars", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Environment variables from a file of `KEY=VALUE` lines.
    #[arg(long)]
    pub env_file: Option<std::path::PathBuf>,

    /// Replace all environment variables with this comma-separated `KEY=VALUE` list.
    #[arg(long)]
    pub set_env_vars: Option<String>,

    /// Remove these environment variables (comma-separated names).
    #[arg(long)]
    pub remove_env_vars: Option<String>,

    /// Remove every environment variable.
    #[arg(long)]
    pub clear_env_vars: bool,

    /// Requests one instance serves at once (1 to 1000, default 80).
    #[arg(long)]
    pub concurrency: Option<u32>,

    /// Instances kept warm while the revision serves traffic (default 0).
    #[arg(long)]
    pub min_instances: Option<u32>,

    /// Most instances (default 100).
    #[arg(long)]
    pub max_instances: Option<u32>,

    /// Request timeout: seconds or a duration such as 5m (default 300s, at most 3600s).
    #[arg(long)]
    pub timeout: Option<String>,

    /// CPU limit (`1`, `0.5`, `500m`).
    #[arg(long)]
    pub cpu: Option<String>,

    /// Memory limit (`512Mi`, `1Gi`).
    #[arg(long)]
    pub memory: Option<String>,

    /// Port the container listens on (container images only).
    #[arg(long)]
    pub port: Option<u16>,

    /// Speak HTTP/2 cleartext (h2c) to instances.
    #[arg(long, overrides_with = "no_use_http2")]
    pub use_http2: bool,

    /// Speak HTTP/1.1 to instances (the default).
    #[arg(long)]
    pub no_use_http2: bool,

    /// Give each container instance a writable root: an in-memory layer over the image, counted against
    /// --memory and gone when the instance stops (container images only).
    #[arg(long, overrides_with = "no_writable_root")]
    pub writable_root: bool,

    /// Keep the container's root read-only, with only /tmp writable (the default).
    #[arg(long)]
    pub no_writable_root: bool,

    /// Working directory of the command [default for host commands: the current directory].
    #[arg(long)]
    pub workdir: Option<std::path::PathBuf>,

    /// Service account the revision runs as (default: the project's compute@PROJECT.iam.DOMAIN); needs
    /// roles/iam.serviceAccountUser on it.
    #[arg(long)]
    pub service_account: Option<String>,

    /// Where a container image runs: gen2 (runc, hardened; the server's default unless it says
    /// otherwise) or gen1 (gVisor).
    #[arg(long, value_parser = ["gen1", "gen2"])]
    pub execution_environment: Option<String>,

    /// Reach the operator's private networks (`pier server --private-egress`): private-ranges-only.
    /// Needs vpcaccess.connectors.use on the installation.
    #[arg(long)]
    pub vpc_egress: Option<String>,

    /// Run the host command without its sandbox, as the server's user with the host's filesystem (the
    /// server must allow it with --allow-unsandboxed; owners only).
    #[arg(long, overrides_with = "no_unsandboxed")]
    pub unsandboxed: bool,

    /// Run the host command in its sandbox (the default).
    #[arg(long)]
    pub no_unsandboxed: bool,

    /// Loosen the seccomp filter with an exception the server defines (`pier server
    /// --seccomp-exception NAME:CALLS`); owners only.
    #[arg(long, conflicts_with = "no_seccomp_exception")]
    pub seccomp_exception: Option<String>,

    /// Run under the seccomp profile alone (drop the service's exception).
    #[arg(long)]
    pub no_seccomp_exception: bool,

    /// When a new instance is ready, as gcloud writes it: tcpSocket.port=P, httpGet.path=/ready,
    /// httpGet.port=P or grpc.port=P,grpc.service=S, with initialDelaySeconds, timeoutSeconds,
    /// periodSeconds and failureThreshold (default: a TCP connect on PORT).
    #[arg(
        long,
        conflicts_with = "no_startup_probe",
        value_name = "KEY=VALUE,..."
    )]
    pub startup_probe: Option<String>,

    /// Back to the default startup probe.
    #[arg(long)]
    pub no_startup_probe: bool,

    /// Restart instances that stop answering: httpGet.path=/healthz or grpc.service=S, with the same
    /// timing settings as --startup-probe.
    #[arg(
        long,
        conflicts_with = "no_liveness_probe",
        value_name = "KEY=VALUE,..."
    )]
    pub liveness_probe: Option<String>,

    /// Remove the liveness probe.
    #[arg(long)]
    pub no_liveness_probe: bool,
}

/// Service settings that need no new revision (shared by `deploy` and `services update`).
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsFlags {
    /// Which requests may reach the service: all, internal, internal-and-cloud-load-balancing.
    #[arg(long)]
    pub ingress: Option<String>,

    /// Let every request through to the service without the invoker check (it does its own auth).
    #[arg(long, overrides_with = "invoker_iam_check")]
    pub no_invoker_iam_check: bool,

    /// Check the invoker permission (the default).
    #[arg(long)]
    pub invoker_iam_check: bool,

    /// Also accept tokens with these audiences (comma-separated).
    #[arg(long)]
    pub add_custom_audiences: Option<String>,

    /// Stop accepting these audiences (comma-separated).
    #[arg(long)]
    pub remove_custom_audiences: Option<String>,

    /// Drop every custom audience.
    #[arg(long)]
    pub clear_custom_audiences: bool,

    /// Check end users' ID tokens (in `Authorization: Bearer`) before requests reach the app:
    /// `oidc:https://ISSUER[,audiences=A|B]` (default audiences: the service's URLs),
    /// `firebase:PROJECT_ID` (Firebase Authentication / Identity Platform), or `none` to stop. The
    /// verified claims reach the app in `X-Endpoint-API-UserInfo`. On a private service callers send
    /// their IAM token in `X-Serverless-Authorization`.
    #[arg(long)]
    pub end_user_auth: Option<String>,

    /// With --end-user-auth: let requests without a token through (a bad token is still refused).
    #[arg(long, requires = "end_user_auth")]
    pub end_user_auth_optional: bool,

    /// The edge cache in front of the service: `origin-headers` keeps what the answers'
    /// Cache-Control lets a shared cache keep, `force` also answers without cache headers (for
    /// --cache-default-ttl), `off` stops. A hit never wakes an instance; the guard still checks every
    /// caller.
    #[arg(long, value_parser = ["off", "origin-headers", "force"])]
    pub cache: Option<String>,

    /// With --cache: the largest answer kept (such as 10Mi).
    #[arg(long, requires = "cache")]
    pub cache_max_size: Option<String>,

    /// With --cache force: how long answers without cache headers are kept (such as 60s or 5m).
    #[arg(long, requires = "cache", value_parser = crate::parse_duration)]
    pub cache_default_ttl: Option<std::time::Duration>,
}

impl SettingsFlags {
    /// The settings request these flags make.
    pub fn request(&self, public: Option<bool>) -> Result<pier_model::api::UpdateServiceRequest> {
        let ingress = self
            .ingress
            .as_deref()
            .map(str::parse::<pier_model::Ingress>)
            .transpose()
            .map_err(|e| anyhow!("{e}"))?;
        let invoker = match (self.no_invoker_iam_check, self.invoker_iam_check) {
            (true, _) => Some(false),
            (_, true) => Some(true),
            _ => None,
        };
        Ok(pier_model::api::UpdateServiceRequest {
            allow_unauthenticated: public,
            ingress,
            invoker_iam_check: invoker,
            add_custom_audiences: self
                .add_custom_audiences
                .as_deref()
                .map(split_list)
                .unwrap_or_default(),
            remove_custom_audiences: self
                .remove_custom_audiences
                .as_deref()
                .map(split_list)
                .unwrap_or_default(),
            clear_custom_audiences: self.clear_custom_audiences,
            end_user_auth: match self.end_user_auth.as_deref() {
                None | Some("none") => None,
                Some(spec) => Some(
                    pier_model::end_user_auth::EndUserAuth::parse(
                        spec,
                        self.end_user_auth_optional,
                    )
                    .map_err(|e| anyhow!("{e}"))?,
                ),
            },
            clear_end_user_auth: self.end_user_auth.as_deref() == Some("none"),
            cache: match self.cache.as_deref() {
                None | Some("off") => None,
                Some(mode) => Some(pier_model::hosting::CacheSetting {
                    mode: if mode == "force" {
                        pier_model::hosting::CacheMode::Force
                    } else {
                        pier_model::hosting::CacheMode::OriginHeaders
                    },
                    max_object_bytes: match self.cache_max_size.as_deref() {
                        None => 10 << 20,
                        Some(s) => pier_model::spec::parse_quantity(s.trim())
                            .filter(|n| *n > 0)
                            .ok_or_else(|| {
                                anyhow!("--cache-max-size {s:?}: use a size such as 10Mi")
                            })?,
                    },
                    default_ttl_seconds: self
                        .cache_default_ttl
                        .map(|d| d.as_secs().max(1))
                        .unwrap_or(60),
                }),
            },
            clear_cache: self.cache.as_deref() == Some("off"),
        })
    }
}

/// Splits a gcloud-style list: commas, or the delimiter given as `^D^` at the start.
pub fn split_list(s: &str) -> Vec<String> {
    if let Some(rest) = s.strip_prefix('^')
        && let Some(end) = rest.find('^')
        && end > 0
    {
        let delim = &rest[..end];
        return rest[end + 1..].split(delim).map(str::to_owned).collect();
    }
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',').map(str::to_owned).collect()
}

fn parse_env(item: &str) -> Result<EnvVar> {
    let (k, v) = item
        .split_once('=')
        .ok_or_else(|| anyhow!("--env {item:?} is not KEY=VALUE"))?;
    validate_env_name(k).map_err(|e| anyhow!("{e}"))?;
    Ok(EnvVar {
        name: k.to_owned(),
        value: v.to_owned(),
    })
}

/// Local images (`oci-archive:`, `docker-archive:`, `oci:`) are read by the server: their paths are made
/// absolute here, against the directory the command runs in.
fn local_image_path(image: &str) -> Result<String> {
    for prefix in ["oci-archive:", "docker-archive:", "oci:"] {
        if let Some(rest) = image.strip_prefix(prefix) {
            let path = std::path::Path::new(rest);
            if rest.is_empty() || path.is_absolute() {
                return Ok(image.to_owned());
            }
            let abs = std::path::absolute(path).map_err(|e| anyhow!("--image {image}: {e}"))?;
            return Ok(format!("{prefix}{}", abs.display()));
        }
    }
    Ok(image.to_owned())
}

fn upsert(env: &mut Vec<EnvVar>, var: EnvVar) {
    match env.iter_mut().find(|e| e.name == var.name) {
        Some(e) => e.value = var.value,
        None => env.push(var),
    }
}

impl TemplateFlags {
    /// Applies the flags over `base`.
    pub fn apply(&self, mut t: RevisionTemplate) -> Result<RevisionTemplate> {
        if let Some(image) = &self.image {
            if t.image.is_none() {
                // From a host command to an image: the command, arguments and directory were the host's.
                t.command.clear();
                t.args.clear();
                t.working_dir = None;
            }
            t.image = Some(local_image_path(image)?);
        }
        match (&self.command, &self.args) {
            // In an image, --command is the entrypoint list, as with gcloud.
            (Some(cmd), None) if t.image.is_some() => {
                t.command = split_list(cmd);
                t.args.clear();
            }
            (Some(cmd), None) => {
                t.command = vec!["sh".into(), "-c".into(), cmd.clone()];
                t.args.clear();
            }
            (Some(cmd), Some(args)) => {
                t.command = split_list(cmd);
                t.args = split_list(args);
            }
            (None, Some(args)) => t.args = split_list(args),
            (None, None) => {}
        }
        if self.clear_env_vars {
            t.env.clear();
        }
        if let Some(set) = &self.set_env_vars {
            t.env = split_list(set)
                .iter()
                .map(|i| parse_env(i))
                .collect::<Result<_>>()?;
        }
        if let Some(remove) = &self.remove_env_vars {
            let names = split_list(remove);
            t.env.retain(|e| !names.contains(&e.name));
        }
        if let Some(file) = &self.env_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow!("--env-file {}: {e}", file.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let line = line.strip_prefix("export ").unwrap_or(line);
                let mut var = parse_env(line)
                    .map_err(|e| anyhow!("--env-file {} line {}: {e}", file.display(), n + 1))?;
                if let Some(unquoted) = var
                    .value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                {
                    var.value = unquoted.to_owned();
                }
                upsert(&mut t.env, var);
            }
        }
        for item in &self.env {
            upsert(&mut t.env, parse_env(item)?);
        }
        if let Some(c) = self.concurrency {
            t.container_concurrency = c;
        }
        if let Some(m) = self.min_instances {
            t.min_instances = m;
        }
        if let Some(m) = self.max_instances {
            t.max_instances = m;
        }
        if let Some(timeout) = &self.timeout {
            let d = parse_duration(timeout).map_err(|e| anyhow!("--timeout {e}"))?;
            if d.subsec_nanos() != 0 || d.as_secs() == 0 {
                bail!("--timeout {timeout} must be a whole number of seconds, 1s to 3600s");
            }
            t.timeout_seconds = u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        }
        if let Some(c) = &self.cpu {
            t.cpu = Some(c.clone());
        }
        if let Some(m) = &self.memory {
            t.memory = Some(m.clone());
        }
        if let Some(p) = self.port {
            t.port = Some(p);
        }
        if self.use_http2 {
            t.http2 = true;
        }
        if self.no_use_http2 {
            t.http2 = false;
        }
        if self.writable_root {
            t.writable_root = true;
        }
        if self.no_writable_root {
            t.writable_root = false;
        }
        if let Some(sa) = &self.service_account {
            t.service_account = Some(sa.to_ascii_lowercase());
        }
        if let Some(e) = &self.execution_environment {
            t.execution_environment = Some(e.parse().map_err(|e| anyhow!("{e}"))?);
        }
        if let Some(v) = &self.vpc_egress {
            t.vpc_egress = Some(v.parse().map_err(|e| anyhow!("{e}"))?);
        }
        if self.unsandboxed {
            t.unsandboxed = true;
        }
        if let Some(e) = &self.seccomp_exception {
            t.seccomp_exception = Some(e.clone());
        }
        if self.no_seccomp_exception {
            t.seccomp_exception = None;
        }
        if let Some(p) = &self.startup_probe {
            t.startup_probe = Some(
                pier_model::Probe::from_flag(p, pier_model::ProbeKind::Startup)
                    .map_err(|e| anyhow!("{e}"))?,
            );
        }
        if self.no_startup_probe {
            t.startup_probe = None;
        }
        if let Some(p) = &self.liveness_probe {
            t.liveness_probe = Some(
                pier_model::Probe::from_flag(p, pier_model::ProbeKind::Liveness)
                    .map_err(|e| anyhow!("{e}"))?,
            );
        }
        if self.no_liveness_probe {
            t.liveness_probe = None;
        }
        if self.no_unsandboxed {
            t.unsandboxed = false;
        }
        if let Some(w) = &self.workdir
            && t.image.is_some()
        {
            // A path inside the container.
            if !w.is_absolute() {
                bail!(
                    "--workdir {} must be an absolute path inside the container",
                    w.display()
                );
            }
            t.working_dir = Some(w.display().to_string());
        } else if let Some(w) = &self.workdir {
            let abs = std::path::absolute(w).map_err(|e| anyhow!("--workdir: {e}"))?;
            t.working_dir = Some(abs.display().to_string());
        } else if self.command.is_some() && t.image.is_none() && t.working_dir.is_none() {
            t.working_dir = std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string());
        }
        t.validate().map_err(|e| anyhow!("{e}"))?;
        Ok(t)
    }
}

/// Arguments of `pier deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Service name (lowercase letters, digits, hyphens; at most 49).
    pub service: String,

    #[command(flatten)]
    pub template: TemplateFlags,

    /// Make the service public: anyone may invoke it.
    #[arg(long, overrides_with = "no_allow_unauthenticated")]
    pub allow_unauthenticated: bool,

    /// Make the service private (the default for new services).
    #[arg(long)]
    pub no_allow_unauthenticated: bool,

    /// Create the revision without moving traffic to it.
    #[arg(long)]
    pub no_traffic: bool,

    /// Tag the new revision (it gets its own URL).
    #[arg(long)]
    pub tag: Option<String>,

    #[command(flatten)]
    pub settings: SettingsFlags,

    /// Return once the revision is created, without waiting for it to be ready.
    #[arg(long = "async")]
    pub no_wait: bool,
}

/// Public/private wish from the two flags.
pub fn public_wish(allow: bool, deny: bool) -> Option<bool> {
    match (allow, deny) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

pub(crate) async fn run(ctx: &Ctx, args: DeployArgs) -> Result<()> {
    let service: ServiceName = args.service.parse().map_err(|e| anyhow!("{e}"))?;
    let tag = args
        .tag
        .as_deref()
        .map(str::parse::<Tag>)
        .transpose()
        .map_err(|e| anyhow!("{e}"))?;
    let existing = ctx.client.get_service(&ctx.project, &service).await?;
    let base = existing
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    if existing.is_none() && args.template.command.is_none() && args.template.image.is_none() {
        bail!(
            "nothing to deploy: give --command (runs on the host) or --image (runs in a container)"
        );
    }
    let template = args.template.apply(base)?;
    let req = DeployRequest {
        template,
        allow_unauthenticated: public_wish(
            args.allow_unauthenticated,
            args.no_allow_unauthenticated,
        ),
        no_traffic: args.no_traffic,
        tag,
        settings: args.settings.request(None)?,
        creator: None,
    };
    deploy_and_wait(ctx, &service, &req, !args.no_wait).await
}

/// Deploys and (unless `wait` is false) waits for the outcome, printing progress like gcloud.
pub async fn deploy_and_wait(
    ctx: &Ctx,
    service: &ServiceName,
    req: &DeployRequest,
    wait: bool,
) -> Result<()> {
    let rev = ctx.client.deploy(&ctx.project, service, req).await?;
    let show = crate::progress::Show::detect(ctx.quiet);
    if show != crate::progress::Show::Quiet {
        eprintln!("Deploying {service} in project {}...", ctx.project);
        eprintln!("  Creating revision {}...", rev.name);
    }
    for w in &rev.warnings {
        eprintln!("WARNING: {w}");
    }
    if !wait {
        if !output::structured(ctx.format, &rev)? {
            println!("Revision {} is deploying.", rev.name);
        }
        return Ok(());
    }
    // The deploy's phases as the server reports them; the revision's final state says how it ended
    // (its reason and last log lines when it failed).
    if let Some(op) = &rev.operation
        && let Err(e) = crate::progress::follow(&ctx.client, op, show).await
    {
        // The operation is gone (a restarted server): the revision's own state still tells.
        if show != crate::progress::Show::Quiet {
            eprintln!("  (progress unavailable: {e:#}; waiting for the revision)");
        }
    }
    let rev = wait_ready(&ctx.client, &ctx.project, &rev, show).await?;
    let svc = ctx
        .client
        .get_service(&ctx.project, service)
        .await?
        .ok_or_else(|| anyhow!("service {service} vanished during the deploy"))?;
    if show != crate::progress::Show::Quiet {
        eprintln!("Done.");
    }
    if output::structured(ctx.format, &svc)? {
        return Ok(());
    }
    let percent: u32 = svc
        .traffic
        .iter()
        .filter(|t| t.revision_name.as_ref() == Some(&rev.name))
        .map(|t| u32::from(t.percent))
        .sum();
    if show != crate::progress::Show::Quiet {
        eprintln!(
            "Service [{service}] revision [{}] has been deployed and is serving {percent} percent of traffic.",
            rev.name
        );
    }
    for t in &svc.traffic {
        if t.revision_name.as_ref() == Some(&rev.name)
            && let (Some(tag), Some(url)) = (&t.tag, &t.url)
        {
            println!("Tag URL ({tag}): {url}");
        }
    }
    println!("Service URL: {}", svc.url);
    Ok(())
}

/// Waits until a revision is ready; a failure becomes an error with its reason and last log lines.
pub async fn wait_ready(
    client: &Client,
    project: &ProjectName,
    rev: &RevisionView,
    show: crate::progress::Show,
) -> Result<RevisionView> {
    let mut r = rev.clone();
    // A spinner with the time spent on a terminal; elsewhere a line every 30 s, so a slow start shows
    // progress in CI logs too.
    let tty = show == crate::progress::Show::Terminal;
    let quiet = show == crate::progress::Show::Quiet;
    let spinner = if tty && rev.operation.is_none() {
        crate::output::spinner(&format!(
            "waiting for {} to pass its startup probe",
            rev.name
        ))
    } else {
        None
    };
    let started = std::time::Instant::now();
    while r.state == RevisionState::Deploying {
        r = client
            .get_revision(project, &rev.name, if tty { 60 } else { 30 })
            .await?;
        if !tty && !quiet && r.state == RevisionState::Deploying {
            eprintln!(
                "  still waiting for {} to pass its startup probe ({}s)",
                rev.name,
                started.elapsed().as_secs()
            );
        }
    }
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    if r.state == RevisionState::Failed {
        let mut msg = format!(
            "revision {} failed: {}",
            r.name,
            r.message.as_deref().unwrap_or("unknown reason")
        );
        if !r.log_tail.is_empty() {
            msg.push_str("\n  last log lines:");
            for l in &r.log_tail {
                msg.push_str("\n    ");
                msg.push_str(&super::logs::visible(l));
            }
        }
        msg.push_str("\n  traffic did not move: the previous revision (if any) keeps serving");
        bail!(msg);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_like_gcloud() {
        assert_eq!(split_list("a,b"), vec!["a", "b"]);
        assert_eq!(split_list("^:^a,b:c"), vec!["a,b", "c"]);
        assert!(split_list("").is_empty());
    }

    #[test]
    fn flags_merge_over_the_current_template() {
        let base = RevisionTemplate {
            command: vec!["sh".into(), "-c".into(), "old".into()],
            env: vec![EnvVar {
                name: "A".into(),
                value: "1".into(),
            }],
            container_concurrency: 10,
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        let flags = TemplateFlags {
            env: vec!["B=2".into(), "A=3".into()],
            timeout: Some("5m".into()),
            ..Default::default()
        };
        let t = flags.apply(base).unwrap();
        assert_eq!(t.command[2], "old", "untouched flags keep their values");
        assert_eq!(t.container_concurrency, 10);
        assert_eq!(t.env_value("A"), Some("3"));
        assert_eq!(t.env_value("B"), Some("2"));
        assert_eq!(t.timeout_seconds, 300);
        let flags = TemplateFlags {
            command: Some("/bin/app".into()),
            args: Some("--port=$(PORT),-v".into()),
            remove_env_vars: Some("A".into()),
            ..Default::default()
        };
        let t = flags.apply(t).unwrap();
        assert_eq!(t.command, vec!["/bin/app"]);
        assert_eq!(t.args, vec!["--port=$(PORT)", "-v"]);
        assert_eq!(t.env_value("A"), None);
    }

    #[test]
    fn bad_flags_say_which() {
        let cases = [
            (
                TemplateFlags {
                    env: vec!["NOEQUALS".into()],
                    ..Default::default()
                },
                "KEY=VALUE",
            ),
            (
                TemplateFlags {
                    env: vec!["PORT=1".into()],
                    ..Default::default()
                },
                "reserved",
            ),
            (
                TemplateFlags {
                    timeout: Some("1.5s".into()),
                    ..Default::default()
                },
                "whole number",
            ),
            (
                TemplateFlags {
                    concurrency: Some(0),
                    ..Default::default()
                },
                "--concurrency",
            ),
        ];
        let base = RevisionTemplate {
            command: vec!["x".into()],
            ..Default::default()
        };
        for (flags, want) in cases {
            let err = flags.apply(base.clone()).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
