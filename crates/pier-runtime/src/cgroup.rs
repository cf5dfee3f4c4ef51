//! Cgroups of host process instances: every process an instance starts stays in them whatever it does
//! (new sessions, double forks), its memory, CPU and process count are limited, an out-of-memory kill is
//! counted, and what a killed server left behind is found at the next start by listing directories.
//!
//! Both layouts in the field are supported, as runc supports them:
//!
//! - **unified** (cgroup v2 with the `memory`, `cpu` and `pids` controllers): one directory per instance
//!   under `MOUNT/pier/INSTALLATION`, limits in `memory.max`, `cpu.max`, `pids.max`;
//! - **hybrid** (v1 controllers, plus a v2 mount with few or no controllers, as this project's CI machine
//!   has): the instance's v2 directory tracks its processes (and `cgroup.kill` ends them), and a
//!   directory in each v1 hierarchy holds a limit (`memory.limit_in_bytes`, `cpu.cfs_quota_us`,
//!   `pids.max`), and `cpuacct` and `cpuset` directories complete the set a JVM looks for.
//!
//! An instance sees only its own directories, as `/` of its own cgroup namespace (see
//! [`InstanceCgroup::view`]), so runtimes that size themselves from their limits find them.
//!
//! The instance's process joins every group before `exec` (it writes `0` to open `cgroup.procs` files),
//! so limits hold from its first instruction. A limit a host cannot enforce is reported by
//! [`CgroupRoot::enforced`] (`pier doctor` and the instance's log say so).

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An instance's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Memory (and memory plus swap) in bytes.
    pub memory: u64,
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Most processes and threads.
    pub pids: u64,
}

/// CFS period for CPU quotas, in microseconds.
const CPU_PERIOD: u64 = 100_000;

/// Which limits this host enforces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enforced {
    /// Memory.
    pub memory: bool,
    /// CPU.
    pub cpu: bool,
    /// Process count.
    pub pids: bool,
}

impl Enforced {
    /// What is missing, for messages (empty when everything is enforced).
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.memory {
            m.push("memory");
        }
        if !self.cpu {
            m.push("cpu");
        }
        if !self.pids {
            m.push("pids");
        }
        m
    }
}

/// Where this installation's instance cgroups live.
#[derive(Clone, Debug)]
pub struct CgroupRoot {
    /// The v2 directory tracking instances (and holding limits on unified hosts).
    tracking: Option<PathBuf>,
    /// Whether the v2 directory has the memory, cpu and pids controllers.
    unified: bool,
    /// v1 hierarchies Pier uses, on hybrid hosts.
    v1: Vec<V1Dir>,
}

/// The v1 controllers an instance gets a directory in: the three that hold its limits, and the two the
/// JVM also requires before it believes any limit (`cpuacct`, `cpuset`; its CPU usage is read from
/// `cpuacct` too).
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "pids", "cpuacct", "cpuset"];

/// A directory in one v1 hierarchy (which may carry several controllers, as `cpu,cpuacct` often does).
#[derive(Clone, Debug)]
struct V1Dir {
    dir: PathBuf,
    controllers: Vec<String>,
    /// The hierarchy's mount point's name (`memory`, `cpu,cpuacct`): where it appears in an instance.
    name: String,
}

impl V1Dir {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    fn join(&self, name: &str) -> V1Dir {
        V1Dir {
            dir: self.dir.join(name),
            ..self.clone()
        }
    }
}

/// A new v1 `cpuset` group has no CPUs or memory nodes (tasks cannot join it) until they are copied
/// from its parent, level by level from the top (`cgroup.clone_children` would only help below a
/// parent that has them already).
fn fill_cpuset(mount: &Path, dir: &Path) -> io::Result<()> {
    let rel = dir.strip_prefix(mount).unwrap_or(Path::new(""));
    let mut at = mount.to_owned();
    for part in rel.components() {
        let parent = at.clone();
        at.push(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = fs::read_to_string(at.join(file)).unwrap_or_default();
            if mine.trim().is_empty() {
                fs::write(at.join(file), fs::read_to_string(parent.join(file))?.trim())?;
            }
        }
    }
    Ok(())
}

/// The mount points of cgroup hierarchies: the v2 one, and each v1 one with its controllers.
fn mounts() -> (Option<PathBuf>, Vec<(PathBuf, Vec<String>)>) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount) = left.split_whitespace().nth(4).map(PathBuf::from) else {
            continue;
        };
        let mut fields = right.split_whitespace();
        match fields.next() {
            Some("cgroup2") => v2 = v2.or(Some(mount)),
            Some("cgroup") => {
                let opts = fields.nth(1).unwrap_or("");
                v1.push((mount, opts.split(',').map(str::to_owned).collect()));
            }
            _ => {}
        }
    }
    (v2, v1)
}

/// The v2 mount (`/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_mount() -> Option<PathBuf> {
    mounts().0
}

fn probe(dir: &Path) -> Option<()> {
    fs::create_dir_all(dir).ok()?;
    let p = dir.join(".probe");
    fs::create_dir(&p)
        .ok()
        .or_else(|| p.exists().then_some(()))?;
    let _ = fs::remove_dir(&p);
    Some(())
}

impl CgroupRoot {
    /// This installation's groups (`pier/INSTALLATION` in every hierarchy), created if needed; `None`
    /// when this host has no usable cgroups.
    pub fn detect(installation: &str) -> Option<Self> {
        Self::detect_at(&format!("pier/{installation}"))
    }

    /// Groups under `parent` (a path such as `/pier-containers/INSTALLATION`) in every hierarchy.
    pub fn detect_at(parent: &str) -> Option<Self> {
        let (v2, v1) = mounts();
        let rel = Path::new(parent.trim_start_matches('/'));
        let mut root = CgroupRoot {
            tracking: None,
            unified: false,
            v1: Vec::new(),
        };
        if let Some(mount) = &v2 {
            let dir = mount.join(rel);
            if probe(&dir).is_some() {
                let available =
                    fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default();
                let has = |c: &str| available.split_whitespace().any(|a| a == c);
                if has("memory") && has("cpu") && has("pids") {
                    let enable = "+memory +cpu +pids";
                    let ok = rel
                        .ancestors()
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .skip(1)
                        .all(|a| {
                            fs::write(mount.join(a).join("cgroup.subtree_control"), enable).is_ok()
                        });
                    root.unified = ok;
                }
                root.tracking = Some(dir);
            }
        }
        if !root.unified {
            for (mount, opts) in &v1 {
                let controllers: Vec<String> = opts
                    .iter()
                    .filter(|o| V1_CONTROLLERS.contains(&o.as_str()))
                    .cloned()
                    .collect();
                let taken = |c: &String| root.v1.iter().any(|d| d.has(c));
                if controllers.is_empty() || controllers.iter().any(taken) {
                    continue;
                }
                let dir = mount.join(rel);
                if probe(&dir).is_none() {
                    continue;
                }
                if controllers.iter().any(|c| c == "cpuset") && fill_cpuset(mount, &dir).is_err() {
                    continue;
                }
                root.v1.push(V1Dir {
                    dir,
                    controllers,
                    name: mount
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                });
            }
        }
        (root.tracking.is_some() || root.v1_dir("pids").is_some()).then_some(root)
    }

    fn v1_dir(&self, controller: &str) -> Option<&PathBuf> {
        self.v1.iter().find(|d| d.has(controller)).map(|d| &d.dir)
    }

    /// Which limits hold.
    pub fn enforced(&self) -> Enforced {
        if self.unified {
            return Enforced {
                memory: true,
                cpu: true,
                pids: true,
            };
        }
        Enforced {
            memory: self.v1_dir("memory").is_some(),
            cpu: self.v1_dir("cpu").is_some(),
            pids: self.v1_dir("pids").is_some(),
        }
    }

    fn dirs(&self) -> Vec<&PathBuf> {
        self.tracking
            .iter()
            .chain(self.v1.iter().map(|d| &d.dir))
            .collect()
    }

    /// Creates the groups of a new instance, with `limits` written, and opens their `cgroup.procs`.
    pub fn create(&self, name: &str, limits: &Limits) -> io::Result<InstanceCgroup> {
        let mut cg = self.instance(name);
        let result = (|| {
            for d in cg.all_dirs() {
                fs::create_dir(d)?;
            }
            let quota = u64::from(limits.cpu_millis) * CPU_PERIOD / 1000;
            if self.unified
                && let Some(d) = &cg.tracking
            {
                fs::write(d.join("memory.max"), limits.memory.to_string())?;
                let _ = fs::write(d.join("memory.swap.max"), "0");
                fs::write(d.join("cpu.max"), format!("{quota} {CPU_PERIOD}"))?;
                fs::write(d.join("pids.max"), limits.pids.to_string())?;
            }
            if let Some(d) = cg.v1_dir("memory") {
                fs::write(d.join("memory.limit_in_bytes"), limits.memory.to_string())?;
                // Memory plus swap, where swap is accounted.
                let _ = fs::write(
                    d.join("memory.memsw.limit_in_bytes"),
                    limits.memory.to_string(),
                );
            }
            if let Some(d) = cg.v1_dir("cpu") {
                fs::write(d.join("cpu.cfs_period_us"), CPU_PERIOD.to_string())?;
                fs::write(d.join("cpu.cfs_quota_us"), quota.to_string())?;
            }
            if let Some(d) = cg.v1_dir("pids") {
                fs::write(d.join("pids.max"), limits.pids.to_string())?;
            }
            if let Some(d) = cg.v1_dir("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let parent = d.parent().unwrap_or(d);
                    fs::write(d.join(file), fs::read_to_string(parent.join(file))?.trim())?;
                }
            }
            let files: Vec<PathBuf> = cg
                .all_dirs()
                .iter()
                .map(|d| d.join("cgroup.procs"))
                .collect();
            for f in files {
                let f = fs::OpenOptions::new().write(true).open(f)?;
                cg.procs.push(f.into());
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(cg),
            Err(e) => {
                cg.remove_dirs();
                Err(e)
            }
        }
    }

    fn instance(&self, name: &str) -> InstanceCgroup {
        InstanceCgroup {
            name: name.to_owned(),
            tracking: self.tracking.as_ref().map(|d| d.join(name)),
            v1: self.v1.iter().map(|d| d.join(name)).collect(),
            unified: self.unified,
            procs: Vec::new(),
        }
    }

    /// Groups left by a previous server.
    pub fn leftovers(&self) -> Vec<InstanceCgroup> {
        let mut names = std::collections::BTreeSet::new();
        for d in self.dirs() {
            if let Ok(entries) = fs::read_dir(d) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        names.insert(e.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        }
        names.into_iter().map(|n| self.instance(&n)).collect()
    }

    /// Removes the installation's directories if they are empty (at shutdown).
    pub fn remove_if_empty(&self) {
        for d in self.dirs() {
            let _ = fs::remove_dir(d);
            if let Some(parent) = d.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
    }
}

/// One instance's groups.
#[derive(Debug)]
pub struct InstanceCgroup {
    name: String,
    tracking: Option<PathBuf>,
    v1: Vec<V1Dir>,
    unified: bool,
    procs: Vec<OwnedFd>,
}

impl InstanceCgroup {
    fn all_dirs(&self) -> Vec<&PathBuf> {
        self.tracking
            .iter()
            .chain(self.v1.iter().map(|d| &d.dir))
            .collect()
    }

    fn v1_dir(&self, controller: &str) -> Option<&PathBuf> {
        self.v1.iter().find(|d| d.has(controller)).map(|d| &d.dir)
    }

    /// The instance's directories and where each appears in its own `/sys/fs/cgroup` (`""` for the
    /// unified hierarchy of a unified host; `unified` on a hybrid one; the hierarchy's mount name, such
    /// as `memory` or `cpu,cpuacct`, for v1).
    pub fn view(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        if let Some(d) = &self.tracking {
            out.push((
                d.clone(),
                if self.unified {
                    String::new()
                } else {
                    "unified".into()
                },
            ));
        }
        out.extend(self.v1.iter().map(|d| (d.dir.clone(), d.name.clone())));
        out
    }

    /// The open `cgroup.procs` files a starting process writes `0` to, to join (before `exec`).
    pub fn take_procs_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.procs)
    }

    /// The group's name (the instance id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Processes in the group now.
    pub fn pids(&self) -> Vec<i32> {
        let dir = self.tracking.as_ref().or(self.v1_dir("pids"));
        dir.and_then(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Sends `sig` to every process in the group.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// Kills every process in the group (`cgroup.kill`, or SIGKILL to each where the kernel lacks it).
    pub fn kill(&self) {
        let killed = self
            .tracking
            .as_ref()
            .is_some_and(|d| fs::write(d.join("cgroup.kill"), "1").is_ok());
        if !killed {
            // A fork between listing and killing: go round a few times.
            for _ in 0..3 {
                self.signal(nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// CPU and memory use now: v1's `cpuacct.usage` (nanoseconds) and `memory.usage_in_bytes`, or
    /// on a unified host v2's `cpu.stat` `usage_usec` and `memory.current`.
    pub fn usage(&self) -> Option<crate::Usage> {
        let read = |p: PathBuf| fs::read_to_string(p).ok();
        let v1_cpu = self
            .v1_dir("cpuacct")
            .and_then(|d| read(d.join("cpuacct.usage")))
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|ns| ns as f64 / 1e9);
        let v1_mem = self
            .v1_dir("memory")
            .and_then(|d| read(d.join("memory.usage_in_bytes")))
            .and_then(|t| t.trim().parse::<u64>().ok());
        let (v2_cpu, v2_mem) = match (&self.tracking, self.unified) {
            (Some(d), true) => (
                read(d.join("cpu.stat")).and_then(|t| {
                    t.lines().find_map(|l| {
                        l.strip_prefix("usage_usec ")?
                            .trim()
                            .parse::<u64>()
                            .ok()
                            .map(|us| us as f64 / 1e6)
                    })
                }),
                read(d.join("memory.current")).and_then(|t| t.trim().parse::<u64>().ok()),
            ),
            _ => (None, None),
        };
        let cpu = v1_cpu.or(v2_cpu);
        let mem = v1_mem.or(v2_mem);
        // Nothing rather than a CPU time of zero, which would read as the counter going down.
        Some(crate::Usage {
            cpu_seconds: cpu?,
            memory_bytes: mem.unwrap_or(0),
        })
    }

    /// How many processes the kernel killed for going over the memory limit.
    pub fn oom_kills(&self) -> u64 {
        let file = match (self.v1_dir("memory"), &self.tracking) {
            (Some(d), _) => d.join("memory.oom_control"),
            (None, Some(d)) if self.unified => d.join("memory.events"),
            _ => return 0,
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

    fn remove_dirs(&self) -> bool {
        let mut all = true;
        for d in self.all_dirs() {
            if fs::remove_dir(d).is_err() && d.exists() {
                all = false;
            }
        }
        all
    }

    /// Kills what is left and removes the groups (waiting briefly for the kernel to reap).
    pub async fn destroy(&self) {
        self.kill();
        for _ in 0..100 {
            if self.remove_dirs() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            self.kill();
        }
        tracing::warn!(cgroup = %self.name, "could not remove an instance's cgroups");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn groups_limit_track_and_kill_every_descendant() {
        let Some(root) = CgroupRoot::detect("test-cgroups") else {
            panic!("no usable cgroups: this machine cannot isolate instances");
        };
        let enforced = root.enforced();
        assert!(enforced.memory && enforced.pids, "{enforced:?}");
        let limits = Limits {
            memory: 64 << 20,
            cpu_millis: 500,
            pids: 100,
        };
        let mut g = root.create("unit-test-1", &limits).unwrap();
        let procs = g.take_procs_fds();
        let mut cmd = tokio::process::Command::new("sh");
        // A child that starts its own session (escaping its process group) is still caught.
        cmd.arg("-c").arg("setsid sleep 100 & sleep 100");
        #[allow(unsafe_code)]
        // SAFETY: write(2) on already-open descriptors is async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &procs {
                    nix::unistd::write(fd, b"0")?;
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        for _ in 0..200 {
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
        if let Some(d) = g.v1_dir("memory") {
            assert_eq!(
                fs::read_to_string(d.join("memory.limit_in_bytes"))
                    .unwrap()
                    .trim(),
                (64u64 << 20).to_string()
            );
        }
        assert_eq!(g.oom_kills(), 0);
        g.destroy().await;
        let _ = child.wait().await;
        assert!(
            g.all_dirs().iter().all(|d| !d.exists()),
            "the groups are gone"
        );
        assert!(root.leftovers().is_empty());
        root.remove_if_empty();
    }
}
