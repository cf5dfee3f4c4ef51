//! The binary's command line: the server's own commands (`server`, `up`, `doctor`) and their flags,
//! beside the client commands of `pier-cli`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use pier_cli::parse_duration;

/// Pier: a self-hosted serverless platform. Deploy a command or container image, get a stable HTTPS URL,
/// instances start on demand and scale with traffic.
#[derive(Debug, Parser)]
#[command(name = "pier", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Options of client commands.
    #[command(flatten)]
    pub globals: pier_cli::Globals,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Pier server (gateway, admin API, instances) in the foreground.
    Server(ServerArgs),
    /// Start a server in the foreground and deploy the service manifests at PATH (the dev loop).
    Up(UpArgs),
    /// Check what this host gives instances (root, host ids, cgroups, seccomp, kernel, helper
    /// programs, ports), with the fix for anything missing.
    Doctor(DoctorArgs),
    /// Print a shell completion script: `pier completion bash > /etc/bash_completion.d/pier`
    /// (zsh: into a folder of $fpath as `_pier`; fish: `~/.config/fish/completions/pier.fish`).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages for pier and each of its commands (`pier.1`, `pier-deploy.1`, ...) into DIR.
    Man {
        /// Where to write them (created if needed).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Client commands.
    #[command(flatten)]
    Client(pier_cli::Command),
}

/// Arguments of `pier doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The data dir a server would use [default: $PIER_DATA_DIR or ~/.local/share/pier].
    #[arg(long, env = "PIER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Arguments of `pier server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Where Pier keeps its state, certificates and logs [default: $PIER_DATA_DIR or ~/.local/share/pier].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Base domain of service URLs (needs wildcard DNS to this machine unless it ends in .localhost).
    #[arg(long, default_value = "pier.localhost")]
    pub domain: String,

    /// HTTPS port of the gateway (0 picks a free one).
    #[arg(long, default_value_t = 8443)]
    pub https_port: u16,

    /// HTTP port of the gateway: redirects to HTTPS unless --http-serve (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub http_port: u16,

    /// Serve services on the HTTP port too, instead of redirecting to HTTPS.
    #[arg(long)]
    pub http_serve: bool,

    /// Address of the admin API (loopback unless --api-public). The API is also served, over TLS, at
    /// https://DOMAIN:HTTPS_PORT.
    #[arg(long, default_value = "127.0.0.1:8079")]
    pub api_addr: std::net::SocketAddr,

    /// Allow --api-addr on a non-loopback address (every call needs a token).
    #[arg(long)]
    pub api_public: bool,

    /// Address the gateway listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen: std::net::IpAddr,

    /// Certificate chain (PEM) for the domain instead of one from Pier's local CA.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Worker threads of the server (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,

    /// Idle time before a revision scales to zero (e.g. 60s, 500ms, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub scale_to_zero_grace: Duration,

    /// Autoscaler stable window.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub stable_window: Duration,

    /// Autoscaler panic window.
    #[arg(long, default_value = "6s", value_parser = parse_duration)]
    pub panic_window: Duration,

    /// How long a request may wait for a slot while its revision is at max instances.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub pending_timeout: Duration,

    /// How long a new instance has to listen on PORT (Cloud Run's startup probe allows 240s).
    #[arg(long, default_value = "240s", value_parser = parse_duration)]
    pub startup_timeout: Duration,

    /// How many revisions, the most recently used, keep one sandbox made ahead of their next cold
    /// start (network namespace, cgroups, and for containers the container itself, created and
    /// waiting), so that a request to a revision at zero only waits for its app. Each costs memory while
    /// it waits (see the README); 0 turns them off.
    #[arg(long, default_value_t = 8)]
    pub warm_sandboxes: usize,

    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_request_body: u64,

    /// OCI runtime that runs container images: runc, crun, youki, or a path.
    #[arg(long, default_value = "runc")]
    pub container_runtime: PathBuf,

    /// How instances reach beyond the host: `user` (slirp4netns per instance; nothing on the host changes),
    /// `bridge` (a bridge of the server's own with NAT; sets net.ipv4.ip_forward and adds an nftables
    /// table), or `none`. In every mode private ranges, link-local addresses and the host itself stay
    /// unreachable unless listed with --private-egress.
    #[arg(long, default_value = "user", value_parser = ["user", "bridge", "none"])]
    pub egress: String,

    /// The private subnet instances get addresses from, with --egress bridge.
    #[arg(long, default_value = "10.89.0.0/16", value_name = "CIDR")]
    pub instance_subnet: String,

    /// Private networks (CIDRs, comma-separated or repeated) that services deployed with
    /// --vpc-egress private-ranges-only may reach.
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub private_egress: Vec<String>,

    /// Allow host commands deployed --unsandboxed (they run as the server's user, with the host's
    /// filesystem and no seccomp filter); only owners may deploy them.
    #[arg(long)]
    pub allow_unsandboxed: bool,

    /// A named exception to the seccomp profile, NAME:CALL[,CALL...] (repeatable), such as
    /// profiling:perf_event_open; an owner attaches it to a service with `pier deploy
    /// --seccomp-exception NAME`. Calls that would leave the sandbox (unshare, mount, bpf, keyctl,
    /// kexec_load, ...) cannot be named.
    #[arg(long = "seccomp-exception", value_name = "NAME:CALLS")]
    pub seccomp_exceptions: Vec<String>,

    /// The execution environment of image revisions that name none: gen2 (runc, hardened) or gen1
    /// (gVisor's runsc). Recorded in each revision at deploy.
    #[arg(long, default_value = "gen2", value_parser = ["gen1", "gen2"])]
    pub execution_environment: String,

    /// gVisor's runtime, which runs gen1 revisions.
    #[arg(long, default_value = "runsc")]
    pub gvisor_runtime: PathBuf,

    /// The host ids of instances, `START:COUNT` (a multiple of 65536 ids, one block per service)
    /// [default: the `pier` lines of /etc/subuid and /etc/subgid, else 1879048192:1073741824].
    #[arg(long, value_name = "START:COUNT")]
    pub instance_ids: Option<String>,

    /// A registry (`host:port`) reached over plain HTTP (repeatable); loopback registries always are.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,

    /// A PEM file of extra CA certificates trusted for registries (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_cas: Vec<PathBuf>,

    /// An external OpenID Connect issuer whose ID tokens the gateway accepts for end users (repeatable):
    /// its `/.well-known/openid-configuration` and JWKS are fetched and kept fresh.
    #[arg(long = "trusted-issuer", value_name = "URL")]
    pub trusted_issuers: Vec<String>,

    /// A PEM file of extra CA certificates trusted when fetching external issuers' keys (repeatable).
    #[arg(long = "oidc-ca", value_name = "FILE")]
    pub oidc_cas: Vec<PathBuf>,

    /// Let API gateways call backends outside Pier at loopback and link-local addresses (this machine's
    /// own ports, a cloud's metadata server). Off: an API config cannot make the server reach them.
    #[arg(long)]
    pub api_gateway_local_backends: bool,

    /// How image roots are built: overlay (shared read-only layers) or copy (a plain copy per image).
    #[arg(long, default_value = "overlay", value_parser = ["overlay", "copy"])]
    pub rootfs: String,

    /// Memory for the edge cache (answers of hosting rewrites kept by their Cache-Control, such as
    /// 256Mi): the least used go first.
    #[arg(long, default_value = "256Mi", value_parser = parse_size)]
    pub cache_size: u64,

    /// A disk tier for the edge cache in the data dir (`cache/`), such as 10Gi: answers memory evicts
    /// go there and come back when asked for. Off unless given; emptied at start.
    #[arg(long, value_parser = parse_size)]
    pub cache_disk_size: Option<u64>,

    /// Most an image may unpack to (file content, such as 16Gi or 500Mi): larger images and
    /// decompression bombs fail their deploy.
    #[arg(long, default_value = "16Gi", value_parser = parse_size)]
    pub max_image_size: u64,

    /// The ACME directory that issues certificates for mapped domains: a URL, or `letsencrypt` /
    /// `letsencrypt-staging`.
    #[arg(long, default_value = "letsencrypt", value_name = "URL")]
    pub acme_directory: String,

    /// Contact address of the ACME account (the CA writes about expiring certificates and problems).
    #[arg(long, value_name = "EMAIL")]
    pub acme_email: Option<String>,

    /// Trust this CA (PEM) for the ACME directory's own HTTPS (a private or test CA).
    #[arg(long, value_name = "FILE")]
    pub acme_ca: Option<PathBuf>,

    /// The ACME challenge to answer: http-01 on the HTTP port, or tls-alpn-01 on the HTTPS port (for a
    /// server whose HTTP port is closed to the internet).
    #[arg(long, default_value = "http-01", value_parser = ["http-01", "tls-alpn-01"])]
    pub acme_challenge: String,

    /// The DNS server Pier asks about mapped domains (ownership TXT records, where a name points), as
    /// ADDR:PORT; by default the system's resolvers.
    #[arg(long, value_name = "ADDR:PORT")]
    pub dns_server: Option<std::net::SocketAddr>,

    /// The server's public IPv4 address: mapped domains are told to add an A record for it.
    #[arg(long = "public-ipv4", value_name = "IP")]
    pub public_ipv4: Vec<std::net::Ipv4Addr>,

    /// The server's public IPv6 address: mapped domains are told to add an AAAA record for it.
    #[arg(long = "public-ipv6", value_name = "IP")]
    pub public_ipv6: Vec<std::net::Ipv6Addr>,

    /// The name mapped domains are told to point at with a CNAME when no public address is given
    /// (default: --domain).
    #[arg(long, value_name = "HOST")]
    pub canonical_host: Option<String>,

    /// Where Prometheus scrapes `GET /metrics`, as ADDR:PORT, or `off`. On loopback no credentials are
    /// asked; elsewhere --metrics-token-file is required.
    #[arg(long, default_value = "127.0.0.1:9464", value_parser = parse_metrics_addr, value_name = "ADDR:PORT|off")]
    pub metrics_addr: MetricsAddr,

    /// A file holding the bearer token `GET /metrics` then requires (what Prometheus sends with its
    /// `authorization.credentials_file`).
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,

    /// Keep a request log per service (one JSON line per request, read with `pier logs --type
    /// requests`): on or off.
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub request_log: String,

    /// Send request traces (OpenTelemetry spans) to this OTLP/HTTP collector, such as
    /// http://127.0.0.1:4318 (`/v1/traces` is added unless given). Off unless set.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// The share of requests traced when the caller sends no sampling decision (0 to 1); a caller's
    /// `traceparent` flag is always honoured.
    #[arg(
        long,
        default_value_t = 0.01,
        value_name = "RATIO",
        allow_negative_numbers = true
    )]
    pub trace_sample_ratio: f64,
}

/// Where metrics are served, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<std::net::SocketAddr>);

/// Parses `--metrics-addr`: an address and port, or `off`.
pub fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(MetricsAddr(None));
    }
    s.parse().map(|a| MetricsAddr(Some(a))).map_err(|_| {
        format!("{s:?} is not an address: use ADDR:PORT such as 127.0.0.1:9464, or off")
    })
}

/// Parses a size such as `16Gi`, `500Mi` or `1000000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    pier_model::spec::parse_quantity(s.trim())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("{s:?} is not a size: use a number of bytes or one such as 500Mi or 16Gi")
        })
}

/// Arguments of `pier up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// A Knative Service manifest, or a folder of them (*.yaml, *.yml).
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Server settings.
    #[command(flatten)]
    pub server: ServerArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn server_flags_and_client_commands_parse_side_by_side() {
        let cli = Cli::try_parse_from(["pier", "server", "--https-port", "9443"]).unwrap();
        assert!(matches!(cli.command, Command::Server(a) if a.https_port == 9443));
        let cli = Cli::try_parse_from(["pier", "services", "list", "--project", "p1"]).unwrap();
        assert!(matches!(cli.command, Command::Client(_)));
        assert_eq!(cli.globals.project.as_deref(), Some("p1"));
        let err = Cli::try_parse_from(["pier", "server", "--max-image-size", "lots"]).unwrap_err();
        assert!(err.to_string().contains("is not a size"), "{err}");
    }
}
