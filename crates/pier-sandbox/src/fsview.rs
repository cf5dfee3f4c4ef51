//! What a host process instance sees of the filesystem: the host, read-only, with its secrets hidden,
//! plus a few things of its own. Built in the server as a list of steps ([`FsPlan`]), then run by the
//! instance's process between `fork` and `exec` in a mount namespace of its own ([`FsPlan::enter`]),
//! so the host's mounts never change.
//!
//! The view, in the order it is made:
//!
//! 1. a private copy of the host's mounts, all read-only, `nosuid` and `nodev`;
//! 2. [`paths::HIDDEN_AREAS`], Pier's data dir and the CLI's config dir: empty directories;
//!    [`paths::HIDDEN_FILES`]: empty files;
//! 3. `/tmp` and `/var/tmp`: fresh, writable, in memory (counted against the instance's memory limit);
//! 4. `/dev`: only `null`, `zero`, `full`, `random`, `urandom`, `tty`, a private `pts`, `shm` and `mqueue`;
//! 5. `/proc`: a new instance with `hidepid=invisible` (other users' processes do not exist), Docker's
//!    masked and read-only paths; `/sys` masked the same way;
//! 6. Pier's files: `/etc/hosts` (service hosts resolve to the gateway), `/etc/resolv.conf`, the CA
//!    bundle under `/run/pier`;
//! 7. the revision's working directory and command, read-only at their own paths, owned (through an
//!    idmapped mount) by the instance's user, so an app in a `0700` directory still runs.
//!
//! A working directory that would show a secret (it contains Pier's data dir, a hidden area, or is
//! someone's home) is refused before anything starts, with the flag to change.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod steps;

use crate::paths;
use crate::userns::UserNsCache;
use steps::{Builder, Step};
pub use steps::{FsPlan, StepFailed};

/// Most detached mounts one plan holds (binds of Pier's files, the app, device nodes).
const MAX_SLOTS: usize = 32;

/// Why a view cannot be made for a revision; the message names what to change.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The working directory does not exist.
    #[error("working directory {0} does not exist: fix --workdir or create it")]
    NoWorkdir(PathBuf),
    /// Showing the working directory would show a secret.
    #[error(
        "{dir} cannot be shown to instances: it holds {secret}; deploy from the application's own folder (--workdir)"
    )]
    RevealsSecret {
        /// The directory.
        dir: PathBuf,
        /// What it contains.
        secret: String,
    },
    /// The working directory or command is hidden or closed to other users, and the revision may not
    /// be shown private paths.
    #[error(
        "{0} is not visible to instances (it is hidden from them, or closed to other users): deploy from a folder every user can read, or have an owner deploy it"
    )]
    NotVisible(PathBuf),
    /// A visible parent of the working directory or command is closed to other users.
    #[error(
        "{path} cannot be shown to instances: its parent {parent} is not open to other users (chmod o+x {parent}, or move the application)"
    )]
    ClosedParent {
        /// The path.
        path: PathBuf,
        /// Its closed parent.
        parent: PathBuf,
    },
    /// The plan needs more mounts than it has room for.
    #[error("too many files to mount into the instance")]
    TooMany,
    /// The operating system refused something while planning.
    #[error("{0}")]
    Io(String),
}

/// The host's view, common to every instance of this server: what is hidden, and Pier's own files.
#[derive(Debug, Clone)]
pub struct HostView {
    hidden_areas: Vec<PathBuf>,
    hidden_files: Vec<PathBuf>,
    /// Secrets a working directory must not contain (hidden areas, data dir, config dir).
    secrets: Vec<PathBuf>,
    /// Pier's own (data dir, config dir): never shown.
    pier_secrets: Vec<PathBuf>,
    homes: Vec<PathBuf>,
    files: Vec<(PathBuf, PathBuf)>,
    masked: Vec<String>,
}

/// Pier's files inside every process instance.
#[derive(Debug, Clone, Default)]
pub struct PierFiles {
    /// Becomes `/etc/hosts`.
    pub hosts: Option<PathBuf>,
    /// Becomes `/etc/resolv.conf`.
    pub resolv: Option<PathBuf>,
    /// Becomes [`CA_BUNDLE`].
    pub ca_bundle: Option<PathBuf>,
    /// Becomes [`CA_CERT`].
    pub ca_cert: Option<PathBuf>,
}

/// Where a process instance finds the system CAs plus Pier's.
pub const CA_BUNDLE: &str = "/run/pier/ca-bundle.pem";
/// Where a process instance finds Pier's CA alone.
pub const CA_CERT: &str = "/run/pier/ca.pem";

/// The directories to hide, each once: existing ones only, and none inside another (hiding the outer
/// one hides it, and the inner one's mount point would no longer exist), nor inside a directory every
/// instance gets a fresh copy of (`/tmp`).
fn canonical_dirs(list: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let dirs: BTreeSet<PathBuf> = list
        .into_iter()
        .filter(|p| {
            // Symlinks (/var/run -> /run) hide their target, which is listed on its own.
            std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
        })
        .collect();
    dirs.iter()
        .filter(|p| {
            !dirs.iter().any(|q| q != *p && p.starts_with(q))
                && !paths::PRIVATE_WRITABLE
                    .iter()
                    .any(|w| p.starts_with(w) && p.as_path() != Path::new(w))
        })
        .cloned()
        .collect()
}

fn home_dirs() -> Vec<PathBuf> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(5))
        .filter(|h| h.len() > 1 && h.starts_with('/'))
        .map(PathBuf::from)
        .filter(|h| {
            !matches!(
                h.to_str(),
                Some("/nonexistent" | "/bin" | "/usr/sbin" | "/var/empty")
            )
        })
        .collect()
}

impl HostView {
    /// The view for this host, hiding `extra` too (Pier's data dir, the CLI's config dir), with Pier's
    /// `files` mounted.
    pub fn new(extra: &[PathBuf], files: &PierFiles) -> HostView {
        let extra: Vec<PathBuf> = extra
            .iter()
            .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let hidden_areas = canonical_dirs(
            paths::HIDDEN_AREAS
                .iter()
                .map(PathBuf::from)
                .chain(extra.iter().cloned()),
        );
        let hidden_files = paths::HIDDEN_FILES
            .iter()
            .map(PathBuf::from)
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
            .collect();
        let mut secrets = hidden_areas.clone();
        secrets.extend(extra.iter().cloned());
        let mut out = HostView {
            pier_secrets: extra,
            hidden_areas,
            hidden_files,
            secrets,
            homes: home_dirs(),
            files: Vec::new(),
            masked: paths::masked_paths(),
        };
        let resolv_target = resolv_target();
        for (src, dst) in [
            (&files.hosts, PathBuf::from("/etc/hosts")),
            (&files.resolv, resolv_target),
            (&files.ca_bundle, PathBuf::from(CA_BUNDLE)),
            (&files.ca_cert, PathBuf::from(CA_CERT)),
        ] {
            if let Some(src) = src {
                out.files.push((src.clone(), dst));
            }
        }
        out
    }

    /// What is hidden (for logs and `pier doctor`).
    pub fn hidden(&self) -> impl Iterator<Item = &Path> {
        self.hidden_areas
            .iter()
            .chain(self.hidden_files.iter())
            .map(PathBuf::as_path)
    }

    /// Whether an instance would not see `path` (in or under something hidden or replaced).
    fn replaced(&self, path: &Path) -> bool {
        paths::is_under(path, &self.hidden_areas)
            || paths::PRIVATE_WRITABLE.iter().any(|p| path.starts_with(p))
            || path.starts_with("/dev")
            || path.starts_with("/proc")
    }

    /// Why `dir` may not be shown, if it may not.
    fn check_reveal(&self, dir: &Path) -> Result<(), ViewError> {
        if let Some(secret) = paths::contains_any(dir, &self.pier_secrets) {
            return Err(ViewError::RevealsSecret {
                dir: dir.to_owned(),
                secret: format!("Pier's own files ({})", secret.display()),
            });
        }
        if let Some(secret) = paths::contains_any(dir, &self.secrets) {
            return Err(ViewError::RevealsSecret {
                dir: dir.to_owned(),
                secret: secret.display().to_string(),
            });
        }
        if self.homes.iter().any(|h| h == dir) {
            return Err(ViewError::RevealsSecret {
                dir: dir.to_owned(),
                secret: "a user's home (their keys and credentials)".into(),
            });
        }
        Ok(())
    }

    /// The steps that make the view for one instance running as `uid`/`gid`. With `private` (recorded
    /// for revisions an owner deployed), `workdir`, `program` (absolute, resolved) and the existing
    /// absolute paths in `mentioned` (what the command's arguments name) are shown read-only and owned by
    /// the instance's user, wherever they are; without it they must be visible to every user already.
    /// `cgroups` are the instance's own cgroup directories and where each appears under
    /// `/sys/fs/cgroup` (`""` for `/sys/fs/cgroup` itself): read-only, so runtimes that size themselves
    /// from their limits (the JVM, Go, Node) find them. Blocking (it may create a user namespace).
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        workdir: &Path,
        program: Option<&Path>,
        mentioned: &[PathBuf],
        private: bool,
        cgroups: &[(PathBuf, String)],
        uid: u32,
        gid: u32,
        userns: &UserNsCache,
    ) -> Result<FsPlan, ViewError> {
        let workdir =
            std::fs::canonicalize(workdir).map_err(|_| ViewError::NoWorkdir(workdir.to_owned()))?;
        if !workdir.is_dir() {
            return Err(ViewError::NoWorkdir(workdir));
        }
        let mut b = Builder::default();
        // A cgroup namespace too: the instance has joined its cgroups already, which become its `/`.
        b.step(Step::Unshare(
            libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWCGROUP,
        ));
        b.step(Step::MakePrivate);

        // Sources that are hidden or replaced later are taken now.
        let mut pier_files = Vec::new();
        for (src, dst) in &self.files {
            let slot = b.clone_tree(src)?;
            pier_files.push((slot, dst.clone()));
        }
        let mut own_cgroups = Vec::new();
        for (dir, rel) in cgroups {
            let slot = b.clone_tree(dir)?;
            own_cgroups.push((slot, rel.clone()));
        }
        let mut devices = Vec::new();
        for d in ["null", "zero", "full", "random", "urandom", "tty"] {
            let path = PathBuf::from(format!("/dev/{d}"));
            if path.exists() {
                let slot = b.clone_tree(&path)?;
                devices.push((slot, path));
            }
        }
        // The app: its folder, command and the files it names, unless every user sees them already.
        let mut app: Vec<(usize, PathBuf, bool, Arc<OwnedFd>)> = Vec::new();
        let mut shown = |path: &Path, b: &mut Builder| -> Result<(), ViewError> {
            let is_dir = path.is_dir();
            if !self.replaced(path) && open_to_others(path, is_dir) {
                return Ok(());
            }
            if !private {
                return Err(ViewError::NotVisible(path.to_owned()));
            }
            if app.iter().any(|(_, p, _, _)| path.starts_with(p)) {
                return Ok(());
            }
            if is_dir {
                self.check_reveal(path)?;
            } else if self.hidden_files.iter().any(|f| f == path) {
                return Err(ViewError::RevealsSecret {
                    dir: path.to_owned(),
                    secret: "a file Pier hides from instances".into(),
                });
            }
            if paths::is_under(path, &self.pier_secrets) {
                return Err(ViewError::RevealsSecret {
                    dir: path.to_owned(),
                    secret: "Pier's own files".into(),
                });
            }
            if let Some(parent) = closed_visible_parent(path, |p| self.replaced(p)) {
                return Err(ViewError::ClosedParent {
                    path: path.to_owned(),
                    parent,
                });
            }
            let meta = std::fs::metadata(path)
                .map_err(|e| ViewError::Io(format!("{}: {e}", path.display())))?;
            let ns = userns
                .get(
                    &format!("{} {uid} 1\n", meta.uid()),
                    &format!("{} {gid} 1\n", meta.gid()),
                )
                .map_err(|e| {
                    ViewError::Io(format!("making the id mapping for {}: {e}", path.display()))
                })?;
            let slot = b.clone_tree(path)?;
            app.push((slot, path.to_owned(), is_dir, ns));
            Ok(())
        };
        if workdir != Path::new("/") {
            shown(&workdir, &mut b)?;
        }
        if let Some(program) = program {
            shown(program, &mut b)?;
        }
        for m in mentioned {
            if let Ok(m) = std::fs::canonicalize(m)
                && m != Path::new("/")
            {
                // A path the command names but the instance may not see only fails the command.
                if private {
                    shown(&m, &mut b)?;
                }
            }
        }

        // 1. Everything read-only.
        b.step(Step::ReadOnlyAll);
        // 2. Secrets hidden.
        for area in &self.hidden_areas {
            b.tmpfs(
                area,
                "mode=755,size=1m,nr_inodes=4096",
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            );
            b.to_seal.push(b.cstr(area));
        }
        for f in &self.hidden_files {
            b.step(Step::BindNull(b.cstr(f)));
        }
        // 3. Private writable directories.
        for dir in ["/tmp", "/var/tmp"] {
            if Path::new(dir).is_dir() {
                b.tmpfs(
                    Path::new(dir),
                    "mode=1777",
                    libc::MS_NOSUID | libc::MS_NODEV,
                );
            }
        }
        // 4. /dev.
        b.tmpfs(
            Path::new("/dev"),
            "mode=755,size=64k,nr_inodes=64",
            libc::MS_NOSUID | libc::MS_NOEXEC,
        );
        for (slot, path) in devices {
            b.step(Step::Touch(b.cstr(&path)));
            b.step(Step::Attach {
                slot,
                target: b.cstr(&path),
                idmap: None,
                device: true,
            });
        }
        for (link, target) in [
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
            ("/dev/ptmx", "pts/ptmx"),
        ] {
            b.step(Step::Symlink {
                target: b.cstr(Path::new(target)),
                link: b.cstr(Path::new(link)),
            });
        }
        for d in ["/dev/pts", "/dev/shm", "/dev/mqueue"] {
            b.step(Step::Mkdir(b.cstr(Path::new(d))));
        }
        b.mount(
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=620",
            false,
        );
        b.tmpfs(
            Path::new("/dev/shm"),
            "mode=1777",
            libc::MS_NOSUID | libc::MS_NODEV,
        );
        b.mount(
            "mqueue",
            "/dev/mqueue",
            "mqueue",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
            true,
        );
        b.to_seal.push(b.cstr(Path::new("/dev")));
        // 5. /proc and /sys.
        b.mount(
            "proc",
            "/proc",
            "proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "hidepid=invisible",
            false,
        );
        for p in &self.masked {
            let path = Path::new(p);
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => b.step(Step::Mount {
                    source: b.cstr(Path::new("tmpfs")),
                    target: b.cstr(path),
                    fstype: b.cstr(Path::new("tmpfs")),
                    flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    data: b.cstr(Path::new("size=0")),
                    optional: true,
                }),
                Ok(_) => b.step(Step::BindNull(b.cstr(path))),
                Err(_) => {}
            }
        }
        for p in paths::READ_ONLY {
            if Path::new(p).exists() {
                b.step(Step::ReadOnlyBind(b.cstr(Path::new(p))));
            }
        }
        // Its own cgroups, and nothing of the host's hierarchy: the host's mounts there are detached, not
        // covered, or runtimes that read /proc/self/mountinfo (the JVM) find the host's first.
        let root = Path::new("/sys/fs/cgroup");
        b.step(Step::Detach(b.cstr(root)));
        if own_cgroups.iter().all(|(_, rel)| !rel.is_empty()) {
            b.tmpfs(
                root,
                "mode=755,size=16k",
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            );
            b.to_seal.push(b.cstr(root));
        }
        for (slot, rel) in own_cgroups {
            let target = if rel.is_empty() {
                root.to_owned()
            } else {
                root.join(&rel)
            };
            if !rel.is_empty() {
                b.ensure_dir(&target);
            }
            b.step(Step::Attach {
                slot,
                target: b.cstr(&target),
                idmap: None,
                device: false,
            });
        }
        // 6. Pier's files.
        for (slot, dst) in pier_files {
            b.ensure_file(&dst);
            b.step(Step::Attach {
                slot,
                target: b.cstr(&dst),
                idmap: None,
                device: false,
            });
        }
        // 7. The app.
        for (slot, path, is_dir, ns) in app {
            if is_dir {
                b.ensure_dir(&path);
            } else {
                b.ensure_file(&path);
            }
            b.step(Step::Attach {
                slot,
                target: b.cstr(&path),
                idmap: Some(ns.as_raw_fd()),
                device: false,
            });
            b.namespaces.push(ns);
        }
        // Hidden areas and /dev stop being writable now that everything is in place.
        for t in std::mem::take(&mut b.to_seal) {
            b.step(Step::Seal(t));
        }
        b.step(Step::Hostname(
            CString::new("localhost").unwrap_or_default(),
        ));
        b.step(Step::Chdir(b.cstr(&workdir)));
        Ok(FsPlan {
            steps: b.steps,
            slots: b.slots,
            _namespaces: b.namespaces,
        })
    }
}

/// Where `/etc/resolv.conf` really is (it is often a link into `/run`, which instances get empty).
fn resolv_target() -> PathBuf {
    std::fs::canonicalize("/etc/resolv.conf").unwrap_or_else(|_| PathBuf::from("/etc/resolv.conf"))
}

/// Whether any user may read (and, for a directory, enter; for a file, run) `path`, through every parent.
fn open_to_others(path: &Path, is_dir: bool) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let mode = meta.permissions().mode();
    let own = if is_dir {
        mode & 0o005 == 0o005
    } else {
        mode & 0o004 != 0
    };
    own && path
        .ancestors()
        .skip(1)
        .all(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// The nearest visible parent of `path` that other users cannot enter (Pier cannot open it for them).
fn closed_visible_parent(path: &Path, replaced: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .filter(|a| !replaced(a))
        .find(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_owned)
}

/// One step, with everything it needs made before the fork.
#[cfg(test)]
mod tests;
