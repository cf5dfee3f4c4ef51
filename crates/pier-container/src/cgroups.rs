//! Where container cgroups live on this machine, and reading their out-of-memory kills.
//!
//! The OCI runtime creates and limits the cgroups (`CGROUP_PARENT/INSTANCE`); Pier reads the memory
//! controller's kill counter to tell an out-of-memory death from any other: `memory.events` (`oom_kill N`)
//! on cgroup v2, `memory.oom_control` (`oom_kill N`) on v1. Machines with v1 controllers and a v2 mount
//! (hybrid) use the v1 memory controller, as the runtime does.

use std::fs;
use std::path::{Path, PathBuf};

/// The memory controller of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryController {
    /// cgroup v1, mounted here.
    V1(PathBuf),
    /// cgroup v2 (unified), mounted here.
    V2(PathBuf),
}

impl MemoryController {
    /// Finds it from `/proc/self/mountinfo`.
    pub fn detect() -> Option<Self> {
        let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mut v2 = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount = left.split_whitespace().nth(4).map(PathBuf::from);
            let mut fields = right.split_whitespace();
            match fields.next() {
                Some("cgroup") => {
                    let opts = fields.nth(1).unwrap_or("");
                    if opts.split(',').any(|o| o == "memory") {
                        return mount.map(MemoryController::V1);
                    }
                }
                Some("cgroup2") => v2 = mount,
                _ => {}
            }
        }
        let v2 = v2?;
        let controllers = fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
        controllers
            .split_whitespace()
            .any(|c| c == "memory")
            .then_some(MemoryController::V2(v2))
    }

    /// How many processes of cgroup `path` (`/parent/instance`) the kernel killed for memory.
    pub fn oom_kills(&self, path: &str) -> u64 {
        let rel = path.trim_start_matches('/');
        let file = match self {
            MemoryController::V1(m) => m.join(rel).join("memory.oom_control"),
            MemoryController::V2(m) => m.join(rel).join("memory.events"),
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }
}

/// The v1 hierarchy that carries `cpuacct`, if any (read once from `/proc/self/mountinfo`).
fn cpuacct_mount() -> Option<&'static Path> {
    static MOUNT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    MOUNT
        .get_or_init(|| {
            let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
            info.lines().find_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mut fields = right.split_whitespace();
                (fields.next() == Some("cgroup")
                    && fields.nth(1)?.split(',').any(|o| o == "cpuacct"))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
            })
        })
        .as_deref()
}

/// CPU and memory use of the container whose cgroup is `path` (`/parent/instance`): v1's `cpuacct.usage`
/// and `memory.usage_in_bytes`, or v2's `cpu.stat` and `memory.current` on a unified machine.
pub fn usage(memory: Option<&MemoryController>, path: &str) -> Option<pier_runtime::Usage> {
    let rel = path.trim_start_matches('/');
    let num = |p: PathBuf| fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    let (cpu, mem) = match memory? {
        MemoryController::V1(m) => (
            cpuacct_mount()
                .and_then(|c| num(c.join(rel).join("cpuacct.usage")))
                .map(|ns| ns as f64 / 1e9),
            num(m.join(rel).join("memory.usage_in_bytes")),
        ),
        MemoryController::V2(m) => (
            fs::read_to_string(m.join(rel).join("cpu.stat"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                })
                .map(|us| us as f64 / 1e6),
            num(m.join(rel).join("memory.current")),
        ),
    };
    // Nothing rather than a CPU time of zero, which would read as the counter going down.
    Some(pier_runtime::Usage {
        cpu_seconds: cpu?,
        memory_bytes: mem.unwrap_or(0),
    })
}

/// Removes the (empty) cgroup directories under `parent` in every hierarchy, deepest first, and
/// `parent` itself when `and_parent` (at shutdown; at start, gen1's groups were just made there).
pub fn remove_under(parent: &str, and_parent: bool) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let rel = parent.trim_start_matches('/');
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if !(right.starts_with("cgroup ") || right.starts_with("cgroup2 ")) {
            continue;
        }
        let Some(mount) = left.split_whitespace().nth(4) else {
            continue;
        };
        let dir = Path::new(mount).join(rel);
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        if !and_parent {
            continue;
        }
        let _ = fs::remove_dir(&dir);
        // The top directory (`/pier-containers`) goes too when no other installation uses it.
        if let Some(top) = dir.parent()
            && top != Path::new(mount)
        {
            let _ = fs::remove_dir(top);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kill_counters_of_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("v1/pier/i");
        fs::create_dir_all(&v1).unwrap();
        fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        let v2 = dir.path().join("v2/pier/i");
        fs::create_dir_all(&v2).unwrap();
        fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(
            MemoryController::V1(dir.path().join("v1")).oom_kills("/pier/i"),
            2
        );
        assert_eq!(
            MemoryController::V2(dir.path().join("v2")).oom_kills("/pier/i"),
            1
        );
        assert_eq!(
            MemoryController::V2(dir.path().join("v2")).oom_kills("/pier/none"),
            0
        );
    }
}
