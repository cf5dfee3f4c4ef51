//! What a revision runs: the immutable template a deploy records, with Cloud Run's defaults and limits.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::SpecError;

/// Default number of requests one instance serves at once (Cloud Run's default).
pub const DEFAULT_CONCURRENCY: u32 = 80;
/// Highest per-instance concurrency Cloud Run allows.
pub const MAX_CONCURRENCY: u32 = 1000;
/// Default cap on instances per revision.
pub const DEFAULT_MAX_INSTANCES: u32 = 100;
/// Highest `max-instances` Pier accepts.
pub const MAX_MAX_INSTANCES: u32 = 1000;
/// Default request timeout in seconds.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;
/// Longest request timeout Cloud Run allows, in seconds.
pub const MAX_TIMEOUT_SECONDS: u32 = 3600;

/// Environment variables Pier sets in every instance; users cannot override them.
pub const RESERVED_ENV: [&str; 4] = ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

/// One environment variable of a revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Its value.
    #[serde(default)]
    pub value: String,
}

/// The immutable description of what a revision runs and how it scales.
///
/// Field names follow Knative's `RevisionSpec` (camelCase in JSON) so manifests translate one to one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionTemplate {
    /// Container image to run with the OCI runtime; absent, the process runtime runs `command` on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Entrypoint. `["sh", "-c", LINE]` for a Procfile-style command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments; `$(VAR)` expands to the instance's environment variable VAR, `$$(VAR)` is a literal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Working directory of the instance's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Requests one instance serves at once (hard limit), 1 to 1000.
    #[serde(default = "default_concurrency")]
    pub container_concurrency: u32,
    /// Instances kept warm while the revision serves traffic.
    #[serde(default)]
    pub min_instances: u32,
    /// Most instances the autoscaler starts.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// Request timeout in seconds, 1 to 3600.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// CPU limit: `1`, `2`, `0.5` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory limit: `512Mi`, `1Gi`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Speak HTTP/2 cleartext (h2c) to the instance instead of HTTP/1.1.
    #[serde(default, skip_serializing_if = "is_false")]
    pub http2: bool,
    /// Port the container listens on (container runtime only; the process runtime assigns one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Identity the instance runs as (`NAME@PROJECT.iam.DOMAIN`); absent, the project's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Give the container a writable root: an in-memory layer over the image's read-only one, private to
    /// each instance and gone when it stops (container images only; the default root is read-only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub writable_root: bool,
    /// Cloud Run's execution environment: `gen2` (the hardened container runtime, default) or `gen1`
    /// (gVisor). Resolved at deploy from the server's default and recorded, so changing the default
    /// never changes a running revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_environment: Option<ExecutionEnvironment>,
    /// Reach the operator's private networks (Cloud Run's `run.googleapis.com/vpc-access-egress`):
    /// only `private-ranges-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_egress: Option<VpcEgress>,
    /// Run a host command without the sandbox, as the server's user (the operator must allow it with
    /// `pier server --allow-unsandboxed`, and only an owner may deploy it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unsandboxed: bool,
    /// A named exception to the seccomp profile the operator defined (`pier server
    /// --seccomp-exception NAME:CALLS`), attached by an owner: the calls it names are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_exception: Option<String>,
    /// When a new instance is ready (default: it accepts a TCP connection on `PORT` within the
    /// server's `--startup-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<crate::probe::Probe>,
    /// A check that restarts an instance that stops answering (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<crate::probe::Probe>,
    /// Show the host command's working directory, program and the files its arguments name to the
    /// instance even where other users cannot read them (a home, a `0700` folder). Pier records it at
    /// deploy: true only when an owner deployed the revision, since it lets the instance read those
    /// paths.
    #[serde(default, skip_serializing_if = "is_false")]
    pub private_paths: bool,
}

/// Where a revision's instances run, in Cloud Run's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionEnvironment {
    /// gVisor (`runsc`): the app runs on a kernel of its own in user space.
    Gen1,
    /// runc with Pier's hardening: seccomp, user namespace, read-only root.
    Gen2,
}

impl ExecutionEnvironment {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionEnvironment::Gen1 => "gen1",
            ExecutionEnvironment::Gen2 => "gen2",
        }
    }
}

impl std::str::FromStr for ExecutionEnvironment {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "gen1" => Ok(ExecutionEnvironment::Gen1),
            "gen2" => Ok(ExecutionEnvironment::Gen2),
            other => Err(SpecError::new(format!(
                "--execution-environment {other:?} is not valid: use gen1 (gVisor) or gen2"
            ))),
        }
    }
}

/// Which traffic goes to the operator's private networks (Cloud Run's VPC egress setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VpcEgress {
    /// Private ranges the operator lists (`pier server --private-egress`) are reachable.
    PrivateRangesOnly,
}

impl VpcEgress {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        "private-ranges-only"
    }
}

impl std::str::FromStr for VpcEgress {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "private-ranges-only" => Ok(VpcEgress::PrivateRangesOnly),
            "all-traffic" => Err(SpecError::new(
                "--vpc-egress all-traffic is not available: Pier has no VPC to send all traffic to; use private-ranges-only",
            )),
            other => Err(SpecError::new(format!(
                "--vpc-egress {other:?} is not valid: use private-ranges-only"
            ))),
        }
    }
}

/// Ports an app may not listen on: Pier's own endpoints inside every instance, and the rest of the set
/// Knative's queue-proxy reserves.
pub const RESERVED_PORTS: [u16; 5] = [8012, 8013, 8022, 9090, 9091];

fn is_false(b: &bool) -> bool {
    !*b
}
fn default_concurrency() -> u32 {
    DEFAULT_CONCURRENCY
}
fn default_max_instances() -> u32 {
    DEFAULT_MAX_INSTANCES
}
fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_SECONDS
}

impl Default for RevisionTemplate {
    fn default() -> Self {
        Self {
            image: None,
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            container_concurrency: DEFAULT_CONCURRENCY,
            min_instances: 0,
            max_instances: DEFAULT_MAX_INSTANCES,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            cpu: None,
            memory: None,
            http2: false,
            port: None,
            service_account: None,
            writable_root: false,
            execution_environment: None,
            vpc_egress: None,
            unsandboxed: false,
            seccomp_exception: None,
            startup_probe: None,
            liveness_probe: None,
            private_paths: false,
        }
    }
}

impl RevisionTemplate {
    /// Checks every field against Pier's limits; the error names the flag to change.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.image.is_none() && self.command.is_empty() {
            return Err(SpecError::new(
                "nothing to run: give --command (runs on the host) or --image (runs in a container)",
            ));
        }
        if let Some(image) = &self.image
            && image.trim().is_empty()
        {
            return Err(SpecError::new("--image is empty"));
        }
        if self.command.first().is_some_and(|c| c.trim().is_empty()) {
            return Err(SpecError::new("--command is empty"));
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.container_concurrency) {
            return Err(SpecError::new(format!(
                "--concurrency {} is out of range: use 1 to {MAX_CONCURRENCY}",
                self.container_concurrency
            )));
        }
        if !(1..=MAX_MAX_INSTANCES).contains(&self.max_instances) {
            return Err(SpecError::new(format!(
                "--max-instances {} is out of range: use 1 to {MAX_MAX_INSTANCES}",
                self.max_instances
            )));
        }
        if self.min_instances > self.max_instances {
            return Err(SpecError::new(format!(
                "--min-instances {} is above --max-instances {}: lower the minimum or raise the maximum",
                self.min_instances, self.max_instances
            )));
        }
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&self.timeout_seconds) {
            return Err(SpecError::new(format!(
                "--timeout {}s is out of range: use 1s to {MAX_TIMEOUT_SECONDS}s",
                self.timeout_seconds
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for var in &self.env {
            validate_env_name(&var.name)?;
            if !seen.insert(var.name.as_str()) {
                return Err(SpecError::new(format!(
                    "environment variable {} is set twice: keep one",
                    var.name
                )));
            }
        }
        if let Some(cpu) = &self.cpu {
            parse_cpu_millis(cpu)?;
        }
        if let Some(mem) = &self.memory {
            parse_memory_bytes(mem)?;
        }
        if self.writable_root && self.image.is_none() {
            return Err(SpecError::new(
                "--writable-root needs a container image: a host command already writes to the host's own filesystem",
            ));
        }
        if self.port == Some(0) {
            return Err(SpecError::new("--port 0 is not a port: use 1 to 65535"));
        }
        if let Some(p) = self.port
            && RESERVED_PORTS.contains(&p)
        {
            return Err(SpecError::new(format!(
                "--port {p} is reserved: Pier's own endpoints inside every instance use 8012, 8013 and 8022 (and 9090 and 9091 are kept free, as Knative does); choose another port"
            )));
        }
        if self.unsandboxed && self.image.is_some() {
            return Err(SpecError::new(
                "--unsandboxed is for host commands: a container image always runs in its sandbox",
            ));
        }
        if let Some(p) = &self.startup_probe {
            p.validate(crate::probe::ProbeKind::Startup)?;
        }
        if let Some(p) = &self.liveness_probe {
            p.validate(crate::probe::ProbeKind::Liveness)?;
        }
        if self.unsandboxed && self.seccomp_exception.is_some() {
            return Err(SpecError::new(
                "--seccomp-exception loosens the sandbox's filter, and --unsandboxed runs without one: choose one",
            ));
        }
        if self.execution_environment == Some(ExecutionEnvironment::Gen1) && self.image.is_none() {
            return Err(SpecError::new(
                "--execution-environment gen1 runs container images under gVisor: deploy an --image, or use gen2 for a host command",
            ));
        }
        Ok(())
    }

    /// This template as Pier records it when `stored` was recorded from it: the fields Pier fills in at
    /// deploy (the default service account, the execution environment, whether private paths are shown)
    /// taken from `stored` where this template leaves them to Pier. Compare the result with `stored` to
    /// tell whether deploying this would change anything.
    pub fn as_recorded_like(&self, stored: &RevisionTemplate) -> RevisionTemplate {
        let mut t = self.clone();
        if t.service_account.is_none() {
            t.service_account = stored.service_account.clone();
        }
        if t.execution_environment.is_none() {
            t.execution_environment = stored.execution_environment;
        }
        t.private_paths = stored.private_paths;
        t
    }

    /// CPU limit in thousandths of a core, if one is set.
    pub fn cpu_millis(&self) -> Option<u32> {
        self.cpu.as_deref().and_then(|c| parse_cpu_millis(c).ok())
    }

    /// Memory limit in bytes, if one is set.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory
            .as_deref()
            .and_then(|m| parse_memory_bytes(m).ok())
    }

    /// Looks up a user environment variable.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }
}

/// Checks an environment variable name: a C-like identifier (letters, digits, `_`, `.`, `-`, not starting
/// with a digit) that is not one Pier reserves.
pub fn validate_env_name(name: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(SpecError::new("an environment variable has an empty name"));
    }
    if RESERVED_ENV.contains(&name) {
        return Err(SpecError::new(format!(
            "environment variable {name} is reserved: Pier sets it in every instance; remove it from --env"
        )));
    }
    let first_ok = !name.as_bytes()[0].is_ascii_digit();
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !chars_ok {
        return Err(SpecError::new(format!(
            "environment variable name {name:?} is invalid: use letters, digits, '_', '.' or '-', not starting with a digit"
        )));
    }
    Ok(())
}

/// Parses a CPU quantity (`1`, `0.5`, `500m`) into millicores.
pub fn parse_cpu_millis(s: &str) -> Result<u32, SpecError> {
    let bad = || {
        SpecError::new(format!(
            "--cpu {s:?} is invalid: use a number of cores such as 1, 2 or 0.5, or millicores such as 500m (0.08 to 8 cores)"
        ))
    };
    let millis = if let Some(m) = s.strip_suffix('m') {
        m.parse::<u32>().map_err(|_| bad())?
    } else {
        let cores: f64 = s.parse().map_err(|_| bad())?;
        if !cores.is_finite() || cores <= 0.0 {
            return Err(bad());
        }
        (cores * 1000.0).round() as u32
    };
    if !(80..=8000).contains(&millis) {
        return Err(bad());
    }
    Ok(millis)
}

/// Parses a memory quantity (`512Mi`, `1Gi`, `256M`) into bytes.
pub fn parse_memory_bytes(s: &str) -> Result<u64, SpecError> {
    parse_quantity(s)
        .filter(|bytes| ((6 << 20)..=(32 << 30)).contains(bytes))
        .ok_or_else(|| {
            SpecError::new(format!(
                "--memory {s:?} is invalid: use a size such as 512Mi or 2Gi (6Mi to 32Gi)"
            ))
        })
}

/// Parses a Kubernetes quantity of bytes (`512Mi`, `16Gi`, `256M`, `1000`).
pub fn parse_quantity(s: &str) -> Option<u64> {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (num, mult) = units
        .iter()
        .find_map(|(suffix, mult)| s.strip_suffix(suffix).map(|n| (n, *mult)))
        .unwrap_or((s, 1));
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Expands Kubernetes-style `$(VAR)` references in `arg` from `lookup`; `$$(VAR)` stays a literal
/// `$(VAR)`, and unknown variables are left as written.
pub fn expand_vars<'a>(arg: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
            continue;
        }
        if let Some(inner) = tail.strip_prefix("$(")
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match lookup(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
            continue;
        }
        out.push('$');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> RevisionTemplate {
        RevisionTemplate {
            command: vec!["sh".into(), "-c".into(), "true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_cloud_runs() {
        let t: RevisionTemplate = serde_json::from_str(r#"{"command":["x"]}"#).unwrap();
        assert_eq!(t.container_concurrency, 80);
        assert_eq!(t.max_instances, 100);
        assert_eq!(t.min_instances, 0);
        assert_eq!(t.timeout_seconds, 300);
        t.validate().unwrap();
    }

    #[test]
    fn out_of_range_flags_name_the_flag() {
        type Mutate = Box<dyn Fn(&mut RevisionTemplate)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (Box::new(|t| t.container_concurrency = 0), "--concurrency"),
            (
                Box::new(|t| t.container_concurrency = 1001),
                "--concurrency",
            ),
            (Box::new(|t| t.max_instances = 0), "--max-instances"),
            (
                Box::new(|t| {
                    t.min_instances = 5;
                    t.max_instances = 2
                }),
                "--min-instances",
            ),
            (Box::new(|t| t.timeout_seconds = 3601), "--timeout"),
            (Box::new(|t| t.cpu = Some("lots".into())), "--cpu"),
            (Box::new(|t| t.memory = Some("1Pi".into())), "--memory"),
            (Box::new(|t| t.command.clear()), "nothing to run"),
            (
                Box::new(|t| {
                    t.env = vec![EnvVar {
                        name: "PORT".into(),
                        value: "1".into(),
                    }]
                }),
                "reserved",
            ),
            (
                Box::new(|t| {
                    t.env = vec![EnvVar {
                        name: "1A".into(),
                        value: "1".into(),
                    }]
                }),
                "invalid",
            ),
        ];
        for (mutate, expected) in cases {
            let mut t = template();
            mutate(&mut t);
            let err = t.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_cpu_millis("1").unwrap(), 1000);
        assert_eq!(parse_cpu_millis("0.5").unwrap(), 500);
        assert_eq!(parse_cpu_millis("250m").unwrap(), 250);
        assert!(parse_cpu_millis("0").is_err());
        assert!(parse_cpu_millis("9").is_err());
        assert_eq!(parse_memory_bytes("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_memory_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_memory_bytes("100M").unwrap(), 100_000_000);
        assert!(parse_memory_bytes("1Ki").is_err());
        assert!(parse_memory_bytes("12Q").is_err());
    }

    #[test]
    fn vars_expand_like_kubernetes() {
        let env = |k: &str| match k {
            "PORT" => Some("8080"),
            "NAME" => Some("x"),
            _ => None,
        };
        assert_eq!(expand_vars("--port=$(PORT)", env), "--port=8080");
        assert_eq!(expand_vars("$(NAME)$(NAME)", env), "xx");
        assert_eq!(expand_vars("$$(PORT)", env), "$(PORT)");
        assert_eq!(expand_vars("$(MISSING)", env), "$(MISSING)");
        assert_eq!(expand_vars("cost: $5 $(", env), "cost: $5 $(");
    }
}
