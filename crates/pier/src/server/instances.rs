//! The server's instance isolation, from its settings: the id range, the instance network, and the
//! sandbox host processes run in.

use std::path::Path;
use std::sync::Arc;

use crate::cli::ServerArgs;
use anyhow::{Result, anyhow, bail};
use pier_runtime::network::{EgressMode, NamespaceServices, Network, NetworkConfig};
use pier_runtime::process::Sandbox;
use pier_sandbox::ids::{IdRange, RangeSource};
use pier_sandbox::seccomp::{Exception, Policies};
use pier_sandbox::userns::UserNsCache;
use pier_sandbox::{HostView, PierFiles};

/// The installation's host ids: `--instance-ids`, else the `pier` lines of `/etc/subuid` and
/// `/etc/subgid`, else Pier's default range (with a warning naming the lines to add).
pub fn id_range(arg: Option<&str>) -> Result<IdRange> {
    let range = match arg {
        Some(text) => {
            let (start, count) = text
                .split_once(':')
                .and_then(|(s, c)| Some((s.parse::<u32>().ok()?, c.parse::<u32>().ok()?)))
                .ok_or_else(|| {
                    anyhow!(
                        "--instance-ids {text:?}: write START:COUNT, such as 1879048192:1073741824"
                    )
                })?;
            if count < pier_sandbox::ids::BLOCK || start.checked_add(count).is_none() {
                bail!(
                    "--instance-ids {text}: give at least {} ids that fit below 4294967296",
                    pier_sandbox::ids::BLOCK
                );
            }
            IdRange {
                uid_start: start,
                gid_start: start,
                count,
                source: RangeSource::Configured,
            }
        }
        None => IdRange::detect().map_err(|e| anyhow!("{e}"))?,
    };
    if range.source == RangeSource::Default {
        let (u, g) = range.subid_lines();
        tracing::info!(
            "instances run as unprivileged host ids {range}; to reserve them for Pier, add `{u}` to /etc/subuid and `{g}` to /etc/subgid (`pier doctor` checks)"
        );
    }
    Ok(range)
}

/// The instance network as `--egress`, `--instance-subnet` and `--private-egress` say.
pub fn network(
    args: &ServerArgs,
    installation: &str,
    https_port: u16,
    http_port: u16,
    services: Arc<dyn NamespaceServices>,
) -> Result<Arc<Network>> {
    let egress: EgressMode = args.egress.parse().map_err(|e: String| anyhow!(e))?;
    let subnet = args
        .instance_subnet
        .parse()
        .map_err(|e: String| anyhow!("--instance-subnet: {e}"))?;
    let private_ranges = args
        .private_egress
        .iter()
        .map(|c| {
            c.parse()
                .map_err(|e: String| anyhow!("--private-egress: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Network::new(
        NetworkConfig {
            https_port,
            http_port,
            egress,
            subnet,
            installation: installation.to_owned(),
            private_ranges,
            helper: pier_runtime::usernet::HELPER.into(),
        },
        services,
    )
    .map_err(|e| anyhow!("--egress {}: {e}", args.egress))
}

/// The sandbox of host processes, or `None` where it cannot be made (not root, where no instance can
/// start at all: each needs namespaces only root can make).
pub fn process_sandbox(
    data_dir: &Path,
    cli_config: &Path,
    files: &PierFiles,
    seccomp: Arc<Policies>,
) -> Option<Arc<Sandbox>> {
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "not running as root: instances need namespaces only root can make, so none can start; run `pier server` as root"
        );
        return None;
    }
    let mut hidden = vec![data_dir.to_owned()];
    if let Some(dir) = cli_config.parent() {
        hidden.push(dir.to_owned());
    }
    Some(Arc::new(Sandbox {
        view: HostView::new(&hidden, files),
        seccomp,
        userns: UserNsCache::default(),
    }))
}

/// The seccomp filters every instance runs under: the profile's, and the `--seccomp-exception`s.
pub fn seccomp_policies(args: &ServerArgs) -> Result<Arc<Policies>> {
    let exceptions = args
        .seccomp_exceptions
        .iter()
        .map(|e| e.parse::<Exception>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{e}"))?;
    let policies = Policies::new(&exceptions).map_err(|e| anyhow!("{e}"))?;
    for (name, calls) in policies.exceptions() {
        tracing::info!(
            "seccomp exception {name} allows {} for the services an owner attaches it to",
            calls.join(", ")
        );
    }
    Ok(Arc::new(policies))
}

/// The binary process instances wait in until their start: this one, opened once through
/// `/proc/self/exe` with `O_PATH` (what runs, even if the file was replaced since), when instances' users
/// may execute it; `None` (each start then forks anew) otherwise.
pub fn gate_binary() -> Option<Arc<std::os::fd::OwnedFd>> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let exe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open("/proc/self/exe")
        .ok()?;
    // fstat of the descriptor itself: the file that runs, looked up once.
    let mode = exe.metadata().ok()?.permissions().mode();
    if mode & 0o001 == 0 {
        tracing::warn!(
            "this binary is not executable by other users: process instances are forked at each start instead of waiting ready (chmod o+x it for faster cold starts)"
        );
        return None;
    }
    Some(Arc::new(exe.into()))
}
