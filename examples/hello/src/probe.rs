//! `GET /probe`: the instance looks at its own sandbox and reports it as JSON, for Pier's isolation tests.
//!
//! What it reads: its `/proc/self/status` (uid, capabilities, `no_new_privs`, seccomp mode), its
//! `uid_map`, its `/proc/self/cgroup`, and whether masked paths read empty. What it tries, each attempt
//! harmless if it succeeds, and each in a forked child so nothing it does changes the server: a new user
//! namespace, a new session keyring, `add_key` with nothing to add, a tmpfs on its own `/tmp/probe-mnt`,
//! `kexec_load` with invalid flags, `bpf`, `perf_event_open` and `io_uring_setup` with invalid
//! arguments, `userfaultfd`, `open_by_handle_at` on a bad descriptor, and `ptrace(PTRACE_TRACEME)`.
//! Each attempt reports `ok` or the errno's name; a refusal by the seccomp filter is `EPERM` (or `ENOSYS`
//! for calls gVisor does not implement), whereas an allowed call with bad arguments gets `EINVAL`,
//! `EFAULT` or `EBADF`.

use serde_json::{Map, Value, json};

fn errno_name(e: i32) -> String {
    match e {
        0 => "ok".into(),
        libc::EPERM => "EPERM".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EFAULT => "EFAULT".into(),
        libc::EBADF => "EBADF".into(),
        libc::EACCES => "EACCES".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::E2BIG => "E2BIG".into(),
        libc::ENOMEM => "ENOMEM".into(),
        other => format!("errno {other}"),
    }
}

/// Runs `attempt` in a forked child (so a success changes nothing here) and returns its errno, 0 for
/// success.
fn in_child(attempt: fn() -> i32) -> i32 {
    #[allow(unsafe_code)]
    // SAFETY: the child makes only the raw system calls of `attempt` and `_exit`; it allocates nothing.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let e = attempt();
            libc::_exit(e.clamp(0, 255));
        }
        if pid < 0 {
            return -1;
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -libc::WTERMSIG(status)
        }
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(255)
}

macro_rules! syscall_attempt {
    ($($arg:expr),* $(,)?) => {{
        #[allow(unsafe_code)]
        // SAFETY: a raw system call with invalid or null arguments; the kernel checks them.
        let r = unsafe { libc::syscall($($arg),*) };
        if r < 0 { last_errno() } else { 0 }
    }};
}

/// A named attempt: a system call made in a forked child, returning its errno (0 for success).
type Attempt = (&'static str, fn() -> i32);

fn attempts() -> Vec<Attempt> {
    vec![
        ("unshare_user", || {
            syscall_attempt!(libc::SYS_unshare, libc::CLONE_NEWUSER)
        }),
        ("keyctl", || syscall_attempt!(libc::SYS_keyctl, 1, 0)), // KEYCTL_JOIN_SESSION_KEYRING, anonymous
        ("add_key", || {
            syscall_attempt!(libc::SYS_add_key, 0, 0, 0, 0, 0)
        }),
        ("mount", || {
            let r = syscall_attempt!(
                libc::SYS_mount,
                c"tmpfs".as_ptr(),
                c"/tmp/probe-mnt".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                0
            );
            if r == 0 {
                let _ = syscall_attempt!(libc::SYS_umount2, c"/tmp/probe-mnt".as_ptr(), 0);
            }
            r
        }),
        ("kexec_load", || {
            syscall_attempt!(libc::SYS_kexec_load, 0, 0, 0, 0xdead_0000u64)
        }),
        ("bpf", || syscall_attempt!(libc::SYS_bpf, 0, 0, 0)),
        ("perf_event_open", || {
            syscall_attempt!(libc::SYS_perf_event_open, 0, 0, -1, -1, 0)
        }),
        ("io_uring_setup", || {
            syscall_attempt!(libc::SYS_io_uring_setup, 0, 0)
        }),
        ("userfaultfd", || {
            syscall_attempt!(libc::SYS_userfaultfd, libc::O_CLOEXEC)
        }),
        ("open_by_handle_at", || {
            syscall_attempt!(libc::SYS_open_by_handle_at, -1, 0, 0)
        }),
        ("ptrace", || {
            syscall_attempt!(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0)
        }),
    ]
}

fn status_field(status: &str, name: &str) -> Value {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| Value::String(v.trim().to_owned()))
        .unwrap_or(Value::Null)
}

/// Whether a masked path shows nothing: missing, empty, or unreadable.
fn reads_empty(path: &str) -> bool {
    match std::fs::metadata(path) {
        Err(_) => true,
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        Ok(_) => std::fs::read(path).map(|b| b.is_empty()).unwrap_or(true),
    }
}

/// The report.
pub fn report() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let _ = std::fs::create_dir_all("/tmp/probe-mnt");
    let mut tried = Map::new();
    for (name, attempt) in attempts() {
        tried.insert(name.into(), Value::String(errno_name(in_child(attempt))));
    }
    let mut masked = Map::new();
    for p in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/interrupts",
        "/proc/timer_list",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ] {
        masked.insert(p.into(), Value::Bool(reads_empty(p)));
    }
    json!({
        "uid": status_field(&status, "Uid:"),
        "capEff": status_field(&status, "CapEff:"),
        "capBnd": status_field(&status, "CapBnd:"),
        "noNewPrivs": status_field(&status, "NoNewPrivs:"),
        "seccomp": status_field(&status, "Seccomp:"),
        "uidMap": std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default().trim(),
        "cgroup": std::fs::read_to_string("/proc/self/cgroup")
            .unwrap_or_default()
            .lines()
            .map(|l| Value::String(l.to_owned()))
            .collect::<Vec<_>>(),
        "tried": tried,
        "maskedEmpty": masked,
        "shadowReadable": std::fs::read_to_string("/etc/shadow").is_ok_and(|s| !s.is_empty()),
    })
}
