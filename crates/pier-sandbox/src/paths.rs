//! Which paths an instance may not see or change, in one list for every runtime.
//!
//! - [`MASKED`] and [`READ_ONLY`] are Docker's current defaults (moby's `oci.DefaultSpec`, as
//!   `docker inspect` shows `HostConfig.MaskedPaths`/`ReadonlyPaths` in Docker 28), plus the per-CPU
//!   `thermal_throttle` directories moby masks since 2025 ([`masked_paths`] finds them on this host).
//!   Masked paths leak host or hardware detail (`/proc/kcore`, interrupt counts, RAPL energy counters
//!   used by the PLATYPUS attack, CVE-2020-8694); read-only ones hold kernel settings.
//! - [`HIDDEN_AREAS`] and [`HIDDEN_FILES`] are what a host process instance must not see of the host:
//!   homes, runtime sockets, service state, host keys and password hashes. Pier's data dir and the CLI's
//!   config are added by the caller.

use std::path::{Path, PathBuf};

/// Paths replaced by nothing: an empty read-only directory, or `/dev/null` for files.
pub const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths left visible but read-only.
pub const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host directories a process instance sees as empty: people's homes, sockets and runtime state of the
/// host's services, their data and logs, mounted media, the boot partition, host keys.
pub const HIDDEN_AREAS: &[&str] = &[
    "/home",
    "/root",
    "/run",
    "/var/run",
    "/var/lib",
    "/var/log",
    "/var/spool",
    "/var/mail",
    "/var/backups",
    "/var/cache",
    "/srv",
    "/mnt",
    "/media",
    "/boot",
    "/lost+found",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/sudoers.d",
];

/// Host files a process instance sees as empty (`/dev/null`): password hashes and sudo rules.
pub const HIDDEN_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/security/opasswd",
];

/// Directories a process instance gets fresh and writable (in memory, counted against its memory
/// limit), as a container gets its own `/tmp`.
pub const PRIVATE_WRITABLE: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// [`MASKED`] plus the `thermal_throttle` directory of every CPU this host has.
pub fn masked_paths() -> Vec<String> {
    let mut out: Vec<String> = MASKED.iter().map(|s| s.to_string()).collect();
    if let Ok(cpus) = std::fs::read_dir("/sys/devices/system/cpu") {
        let mut found: Vec<String> = cpus
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("cpu") && n[3..].bytes().all(|b| b.is_ascii_digit()) && n.len() > 3
            })
            .map(|e| e.path().join("thermal_throttle"))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        found.sort();
        out.extend(found);
    }
    out
}

/// Whether `path` lies in (or is) one of `areas`.
pub fn is_under(path: &Path, areas: &[PathBuf]) -> bool {
    areas.iter().any(|a| path.starts_with(a))
}

/// Whether `path` is an ancestor of (or equal to) one of `secrets`: showing it would show them.
pub fn contains_any(path: &Path, secrets: &[PathBuf]) -> Option<PathBuf> {
    secrets.iter().find(|s| s.starts_with(path)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_lists_are_complete() {
        for p in [
            "/proc/interrupts",
            "/sys/devices/virtual/powercap",
            "/proc/kcore",
        ] {
            assert!(MASKED.contains(&p), "{p}");
        }
        assert!(READ_ONLY.contains(&"/proc/sys"));
        let all = masked_paths();
        assert!(all.len() >= MASKED.len());
        assert!(
            all.iter()
                .skip(MASKED.len())
                .all(|p| p.ends_with("/thermal_throttle"))
        );
    }

    #[test]
    fn containment() {
        let areas = vec![PathBuf::from("/home"), PathBuf::from("/var/lib/pier")];
        assert!(is_under(Path::new("/home/a/app"), &areas));
        assert!(!is_under(Path::new("/homework"), &areas));
        assert_eq!(
            contains_any(Path::new("/var"), &areas),
            Some(PathBuf::from("/var/lib/pier"))
        );
        assert_eq!(contains_any(Path::new("/srv/app"), &areas), None);
    }
}
