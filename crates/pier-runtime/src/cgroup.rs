//! Instances in their own cgroup (v2): every process an instance starts stays in it whatever it does
//! (new process groups, double forks), `cgroup.kill` ends them all at once, and what a killed server left
//! behind is found at the next start by listing the directory.
//!
//! Joining a cgroup costs an RCU grace period (about 10 ms here) unless the hierarchy is mounted with
//! `favordynmods`. On such mounts the instance's process joins before `exec`, so it never runs untracked;
//! elsewhere the server moves it right after spawning, off the cold-start path, and the instance's
//! process group (killed as a whole too) covers its first milliseconds.
//!
//! Layout: `CGROUP2_MOUNT/pier/INSTALLATION/INSTANCE`. On machines with only cgroup v1, or without the
//! rights to create groups, Pier falls back to process groups (see `process`).

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where this installation's instance cgroups live.
#[derive(Clone, Debug)]
pub struct CgroupRoot {
    dir: PathBuf,
    fast_join: bool,
}

/// Whether the cgroup v2 mount has `favordynmods` (cheap migrations).
fn favors_dynmods() -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(" - "))
        .filter(|(_, right)| right.starts_with("cgroup2 "))
        .any(|(_, right)| right.contains("favordynmods"))
}

/// Finds the cgroup v2 mount (`/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/unified` on hybrid
/// ones) from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

impl CgroupRoot {
    /// This installation's root, created if needed; `None` when cgroup v2 is unavailable or not writable.
    pub fn detect(installation: &str) -> Option<Self> {
        let mount = cgroup2_mount()?;
        let dir = mount.join("pier").join(installation);
        fs::create_dir_all(&dir).ok()?;
        // Probe: can we make and remove a group here?
        let probe = dir.join(".probe");
        fs::create_dir(&probe)
            .ok()
            .or_else(|| probe.exists().then_some(()))?;
        let _ = fs::remove_dir(&probe);
        Some(Self {
            dir,
            fast_join: favors_dynmods(),
        })
    }

    /// Whether a process can join a group cheaply before `exec` (see the module docs).
    pub fn joins_fast(&self) -> bool {
        self.fast_join
    }

    /// The root's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the group of a new instance.
    pub fn create(&self, name: &str) -> io::Result<InstanceCgroup> {
        let dir = self.dir.join(name);
        fs::create_dir(&dir)?;
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        Ok(InstanceCgroup {
            dir,
            procs: Some(procs.into()),
        })
    }

    /// Groups left by a previous server.
    pub fn leftovers(&self) -> Vec<InstanceCgroup> {
        fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| InstanceCgroup {
                        dir: e.path(),
                        procs: None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes the root if it is empty (at shutdown).
    pub fn remove_if_empty(&self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// One instance's cgroup.
#[derive(Debug)]
pub struct InstanceCgroup {
    dir: PathBuf,
    procs: Option<OwnedFd>,
}

impl InstanceCgroup {
    /// The open `cgroup.procs` a starting process writes `0` to, to join (before `exec`).
    pub fn procs_fd(&self) -> Option<&OwnedFd> {
        self.procs.as_ref()
    }

    /// Takes the open `cgroup.procs` (to move into the child's pre-exec step).
    pub fn take_procs_fd(&mut self) -> Option<OwnedFd> {
        self.procs.take()
    }

    /// Moves process `pid` into the group (blocking: a migration waits for an RCU grace period).
    pub fn join(&self, pid: i32) -> io::Result<()> {
        fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// Moves `leader` and every descendant it forked before the move into the group (blocking). Once a
    /// process is in, what it forks is too; the loop catches what forked while it ran.
    pub fn adopt(&self, leader: i32) -> io::Result<()> {
        self.join(leader)?;
        for _ in 0..10 {
            let inside = self.pids();
            let outside: Vec<i32> = descendants(leader)
                .into_iter()
                .filter(|p| !inside.contains(p))
                .collect();
            if outside.is_empty() {
                break;
            }
            for pid in outside {
                // It may have exited meanwhile.
                let _ = self.join(pid);
            }
        }
        Ok(())
    }

    /// The group's name (the instance id).
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Processes in the group now.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Whether a process is in the group.
    pub fn contains(&self, pid: i32) -> bool {
        self.pids().contains(&pid)
    }

    /// Sends `sig` to every process in the group.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// Kills every process in the group (`cgroup.kill`, or SIGKILL to each where the kernel lacks it).
    pub fn kill(&self) {
        if fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
            self.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// Kills what is left and removes the group (waiting briefly for the kernel to reap).
    pub async fn destroy(&self) {
        self.kill();
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(cgroup = %self.dir.display(), "could not remove an instance cgroup");
    }
}

/// Every live descendant of `root`, from the parent ids in `/proc`.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The command may hold spaces and parentheses: the fields start after the last ')'.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            if !out.contains(child) {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn groups_track_and_kill_every_descendant() {
        let Some(root) = CgroupRoot::detect("test-cgroups") else {
            panic!(
                "cgroup v2 is not available or not writable: this machine cannot isolate instances"
            );
        };
        let g = root.create("unit-test-1").unwrap();
        let procs = g.procs_fd().unwrap().try_clone().unwrap();
        let mut cmd = tokio::process::Command::new("sh");
        // A child that starts its own session (escaping its process group) is still caught.
        cmd.arg("-c").arg("setsid sleep 100 & sleep 100");
        #[allow(unsafe_code)]
        // SAFETY: write(2) on an already-open descriptor is async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::write(&procs, b"0")?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        for _ in 0..100 {
            if g.pids().len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            g.pids().len() >= 3,
            "sh, sleep and the setsid sleep: {:?}",
            g.pids()
        );
        let dir = g.dir.clone();
        g.destroy().await;
        let _ = child.wait().await;
        assert!(!dir.exists(), "the group is gone");
        assert!(root.leftovers().is_empty());
        root.remove_if_empty();
    }
}
