//! Faults of the machine, named: a full disk, no inodes, a read-only filesystem, no descriptors, no
//! memory, no processes. Pier reports them as what ran out, where, and what to do, instead of "internal
//! error"; the API answers them with 507 Insufficient Storage (RFC 4918 §11.5) for storage, or 503 with
//! `Retry-After` for exhaustion that passes.
//!
//! Faults reach here as OS errors or as the text of one (image pulls, runtimes and SQLite report them
//! in words): [`MachineFault::from_io`] and [`MachineFault::recognize`] are the one place that maps
//! them. [`set_data_dir`] names the filesystem that matters most, so messages can say how much is free.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// What ran out or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// No space left on a filesystem (`ENOSPC`, SQLite's "database or disk is full", `EDQUOT`).
    NoSpace,
    /// No inodes left (`ENOSPC` with space to spare).
    NoInodes,
    /// A filesystem is mounted read-only (`EROFS`).
    ReadOnly,
    /// Too many open files (`EMFILE` for the server, `ENFILE` for the machine).
    Descriptors,
    /// No memory (`ENOMEM`).
    Memory,
    /// No more processes or threads (`EAGAIN` from fork, the pids limit).
    Processes,
}

/// A fault of the machine, with where it happened when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineFault {
    /// What ran out.
    pub kind: FaultKind,
    /// The path involved, when known.
    pub path: Option<PathBuf>,
}

static DATA_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Names the data dir, whose filesystem storage faults are reported against when no path is known.
pub fn set_data_dir(dir: &Path) {
    let _ = DATA_DIR.set(dir.to_owned());
}

/// Free bytes, total bytes, free inodes and total inodes of the filesystem holding `path`.
pub fn space(path: &Path) -> Option<(u64, u64, u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    #[allow(unsafe_code)]
    // SAFETY: statvfs(3) fills the struct it is given from a valid C string; it is read only on success.
    let s = unsafe {
        if libc::statvfs(c.as_ptr(), s.as_mut_ptr()) != 0 {
            return None;
        }
        s.assume_init()
    };
    let frag = s.f_frsize;
    Some((s.f_bavail * frag, s.f_blocks * frag, s.f_favail, s.f_files))
}

/// Bytes in a short human form (`512 B`, `3.2 MiB`, `1.0 GiB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl MachineFault {
    /// The fault an OS error stands for, if it is one.
    pub fn from_io(e: &std::io::Error, path: Option<&Path>) -> Option<MachineFault> {
        let kind = match e.raw_os_error()? {
            libc::ENOSPC | libc::EDQUOT => FaultKind::NoSpace,
            libc::EROFS => FaultKind::ReadOnly,
            libc::EMFILE | libc::ENFILE => FaultKind::Descriptors,
            libc::ENOMEM => FaultKind::Memory,
            _ => return None,
        };
        Some(MachineFault::new(kind, path.map(Path::to_owned)))
    }

    /// The fault a message reports, if it reports one: Rust's OS error texts (`... (os error 28)`),
    /// SQLite's, and the C library's.
    pub fn recognize(message: &str) -> Option<MachineFault> {
        let m = message.to_ascii_lowercase();
        let kind = if m.contains("os error 28")
            || m.contains("no space left on device")
            || m.contains("database or disk is full")
            || m.contains("disk quota exceeded")
            || m.contains("os error 122")
        {
            FaultKind::NoSpace
        } else if m.contains("os error 30") || m.contains("read-only file system") {
            FaultKind::ReadOnly
        } else if m.contains("os error 24")
            || m.contains("os error 23")
            || m.contains("too many open files")
        {
            FaultKind::Descriptors
        } else if m.contains("os error 12") || m.contains("cannot allocate memory") {
            FaultKind::Memory
        } else if m.contains("resource temporarily unavailable") && m.contains("fork") {
            FaultKind::Processes
        } else {
            return None;
        };
        Some(MachineFault::new(kind, None))
    }

    fn new(kind: FaultKind, path: Option<PathBuf>) -> MachineFault {
        let path = path.or_else(|| DATA_DIR.get().cloned());
        // ENOSPC with blocks to spare is the inode table.
        let kind = match (kind, path.as_deref().and_then(space)) {
            (FaultKind::NoSpace, Some((free, _, 0, files))) if files > 0 && free > 0 => {
                FaultKind::NoInodes
            }
            (k, _) => k,
        };
        MachineFault { kind, path }
    }

    /// Whether waiting can cure it by itself (503 and `Retry-After`), rather than an operator (507).
    pub fn passes(&self) -> bool {
        matches!(
            self.kind,
            FaultKind::Descriptors | FaultKind::Memory | FaultKind::Processes
        )
    }

    /// What to tell the user: what ran out, where, and what to do.
    pub fn message(&self) -> String {
        let at = self
            .path
            .as_deref()
            .map(|p| format!("the filesystem holding {}", p.display()))
            .unwrap_or_else(|| "the server's filesystem".into());
        let figures = self.path.as_deref().and_then(space);
        match self.kind {
            FaultKind::NoSpace => format!(
                "the server is out of disk space: {at} is full{}; free space there (`pier images prune` removes unused images), then retry; `pier doctor` shows free space",
                figures
                    .map(|(free, total, _, _)| format!(" ({} free of {})", human(free), human(total)))
                    .unwrap_or_default()
            ),
            FaultKind::NoInodes => format!(
                "the server is out of inodes: {at} has no free file entries left{}; delete unused files there (`pier images prune` removes unused images), then retry",
                figures
                    .map(|(_, _, _, files)| format!(" (0 of {files})"))
                    .unwrap_or_default()
            ),
            FaultKind::ReadOnly => format!(
                "{at} is mounted read-only: remount it read-write (or move the data dir), then retry"
            ),
            FaultKind::Descriptors => "the server has too many open files: wait for connections to close and retry, or raise its limit (LimitNOFILE=, ulimit -n)".into(),
            FaultKind::Memory => "the machine is out of memory: retry shortly, or lower --memory and --max-instances".into(),
            FaultKind::Processes => "the machine cannot start more processes: retry shortly, or raise its pids limits".into(),
        }
    }
}

/// Below this share of free space or inodes (percent), or this many free bytes, the server warns.
pub const LOW_PERCENT: u64 = 5;
/// See [`LOW_PERCENT`].
pub const LOW_BYTES: u64 = 256 << 20;

/// A warning when the filesystem holding `path` is low on space or inodes, or `None`.
pub fn low_space(path: &Path) -> Option<String> {
    let (free, total, ifree, itotal) = space(path)?;
    // Small filesystems get a proportionate mark: a quarter of their size, at most LOW_BYTES.
    let low_bytes =
        total > 0 && (free * 100 / total < LOW_PERCENT || free < LOW_BYTES.min(total / 4));
    let low_inodes = itotal > 0 && ifree * 100 / itotal < LOW_PERCENT;
    if low_bytes {
        Some(format!(
            "the filesystem holding {} is low on space: {} free of {}; deploys fail when it is full (`pier images prune` frees unused images)",
            path.display(),
            human(free),
            human(total)
        ))
    } else if low_inodes {
        Some(format!(
            "the filesystem holding {} is low on inodes: {ifree} free of {itotal}",
            path.display()
        ))
    } else {
        None
    }
}

/// Descriptors this process has open, and its soft limit.
pub fn descriptors() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[allow(unsafe_code)]
    // SAFETY: getrlimit(2) writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (open, if ok { lim.rlim_cur } else { 0 })
}

/// `message` with the named fault appended when it reports one, for failure texts that reach users
/// (a revision's failure, an instance's start).
pub fn explain(message: &str) -> String {
    match MachineFault::recognize(message) {
        Some(f) => format!("{}: {message}", f.message()),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_and_their_texts_are_named() {
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let f = MachineFault::from_io(&full, Some(Path::new("/"))).unwrap();
        assert!(matches!(f.kind, FaultKind::NoSpace | FaultKind::NoInodes));
        assert!(!f.passes());
        assert_eq!(
            MachineFault::recognize("database error: database or disk is full").map(|f| f.kind),
            Some(FaultKind::NoSpace)
        );
        assert_eq!(
            MachineFault::recognize("unpacking layer: Read-only file system (os error 30)")
                .map(|f| f.kind),
            Some(FaultKind::ReadOnly)
        );
        let fds = MachineFault::recognize("accept: Too many open files (os error 24)").unwrap();
        assert!(fds.passes());
        assert!(fds.message().contains("too many open files"));
        assert_eq!(
            MachineFault::recognize("the app exited with status 1"),
            None
        );
        assert!(
            explain("writing blob: No space left on device (os error 28)")
                .contains("out of disk space")
        );
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
