//! Starting a host process inside its sandbox, with `fork` and `execve` done by hand so every step
//! between them is ours and async-signal-safe (the server is multithreaded: a forked child may only
//! make system calls until it execs).
//!
//! The child, in order:
//!
//! 1. dies with the server (`PR_SET_PDEATHSIG`), and stops if the server is already gone;
//! 2. resets its signal mask and `SIGPIPE`, takes `/dev/null` as stdin and the log pipes as stdout and
//!    stderr, and starts its own session (its process group is its pid);
//! 3. joins its cgroups (limits hold from the first instruction it runs), enters its network namespace,
//!    and builds its view of the filesystem ([`FsPlan`]);
//! 4. drops every capability from its bounding set and becomes its service's unprivileged user (which
//!    clears the death signal, so it is set again);
//! 5. marks every inherited descriptor close-on-exec, sets `no_new_privs` and loads the seccomp filter;
//! 6. execs the program, or with a [`Launch::gate`] the gate ([`gate`]): a small process, already in
//!    the whole sandbox, that waits for [`open_gate`] and then execs the program. Everything before the
//!    program's own start (mount namespace and all) is then done ahead of demand.
//!
//! A failure at any step is reported to the server through a close-on-exec pipe (which step, and the
//! OS error) and the child exits; the pipe closing with nothing in it means the exec succeeded. A gate
//! keeps the pipe: it reports itself waiting with a record of stage 0, and after the go its exec of the
//! program as the child's exec would have been.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::fsview::FsPlan;
use crate::seccomp::Program;

pub mod gate;

/// The step of sandbox entry that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Stage {
    DeathSignal = 1,
    Signals,
    Stdio,
    Session,
    Cgroup,
    Network,
    UnshareMounts,
    PrivateMounts,
    OpenShown,
    Unmount,
    ReadOnlyHost,
    MountPrivate,
    HideFile,
    ReadOnlyPath,
    MountPoint,
    Link,
    ShownOptions,
    MountShown,
    Seal,
    Hostname,
    Workdir,
    Capabilities,
    Groups,
    Gid,
    Uid,
    RegainRoot,
    Seccomp,
    Exec,
    Gate,
}

impl Stage {
    const ALL: [Stage; 29] = [
        Stage::DeathSignal,
        Stage::Signals,
        Stage::Stdio,
        Stage::Session,
        Stage::Cgroup,
        Stage::Network,
        Stage::UnshareMounts,
        Stage::PrivateMounts,
        Stage::OpenShown,
        Stage::Unmount,
        Stage::ReadOnlyHost,
        Stage::MountPrivate,
        Stage::HideFile,
        Stage::ReadOnlyPath,
        Stage::MountPoint,
        Stage::Link,
        Stage::ShownOptions,
        Stage::MountShown,
        Stage::Seal,
        Stage::Hostname,
        Stage::Workdir,
        Stage::Capabilities,
        Stage::Groups,
        Stage::Gid,
        Stage::Uid,
        Stage::RegainRoot,
        Stage::Seccomp,
        Stage::Exec,
        Stage::Gate,
    ];

    fn from_u8(b: u8) -> Option<Stage> {
        Stage::ALL.iter().copied().find(|s| *s as u8 == b)
    }

    /// What the step does, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::DeathSignal => "setting the parent-death signal",
            Stage::Signals => "resetting signals",
            Stage::Stdio => "connecting stdin, stdout and stderr",
            Stage::Session => "starting a session",
            Stage::Cgroup => "joining the instance's cgroup",
            Stage::Network => "entering the instance's network namespace",
            Stage::UnshareMounts => "creating the instance's mount namespace",
            Stage::PrivateMounts => "making mounts private",
            Stage::OpenShown => "opening a file to show the instance",
            Stage::Unmount => "unmounting a host filesystem the instance must not see",
            Stage::ReadOnlyHost => "making the host read-only",
            Stage::MountPrivate => "mounting a private filesystem",
            Stage::HideFile => "hiding a file",
            Stage::ReadOnlyPath => "making a path read-only",
            Stage::MountPoint => "making a mount point",
            Stage::Link => "making a link in /dev",
            Stage::ShownOptions => "setting a shown file's mount options",
            Stage::MountShown => "mounting a shown file",
            Stage::Seal => "sealing a hidden directory",
            Stage::Hostname => "setting the host name",
            Stage::Workdir => "entering the working directory",
            Stage::Capabilities => "dropping capabilities",
            Stage::Groups => "clearing supplementary groups",
            Stage::Gid => "switching to the instance's group",
            Stage::Uid => "switching to the instance's user",
            Stage::RegainRoot => "checking root cannot be regained",
            Stage::Seccomp => "loading the seccomp filter",
            Stage::Exec => "running the program",
            Stage::Gate => "running the gate the process waits in (the server's own binary)",
        }
    }
}

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program does not exist (as the instance sees the filesystem).
    #[error("command {0:?} not found")]
    NotFound(String),
    /// The program exists but may not be run.
    #[error(
        "command {0:?} cannot be run: permission denied (is it executable, and readable by others?)"
    )]
    NotExecutable(String),
    /// A sandbox step failed.
    #[error("the instance's sandbox could not be made ({}): {source}", stage.describe())]
    Sandbox {
        /// Which step.
        stage: Stage,
        /// The OS error.
        source: io::Error,
    },
    /// Forking or the status pipe failed.
    #[error("starting the instance's process: {0}")]
    Io(#[from] io::Error),
}

/// Everything a sandboxed process is started with, made before the fork.
#[derive(Debug)]
pub struct Launch {
    /// What `execve` runs: an absolute path, or one relative to the working directory.
    pub program: CString,
    /// The argument vector (`argv[0]` first).
    pub argv: Vec<CString>,
    /// The whole environment, `NAME=value`.
    pub envp: Vec<CString>,
    /// The working directory when there is no [`Launch::view`] (a view changes into it itself).
    pub workdir: CString,
    /// Standard output (the write end of the log pipe).
    pub stdout: OwnedFd,
    /// Standard error.
    pub stderr: OwnedFd,
    /// Open `cgroup.procs` files the process joins first.
    pub cgroups: Vec<OwnedFd>,
    /// A network namespace to enter (the caller keeps it open until `spawn` returns).
    pub netns: Option<RawFd>,
    /// Its view of the filesystem.
    pub view: Option<FsPlan>,
    /// The user and group it runs as, with no capabilities; `None` keeps the server's.
    pub user: Option<(u32, u32)>,
    /// The seccomp filter (with `no_new_privs`).
    pub seccomp: Option<Program>,
    /// The gate binary (`pier`, run with [`gate::ARG`]), opened with `O_PATH`: the child execs it
    /// instead of the program, and the program starts at [`open_gate`].
    pub gate: Option<OwnedFd>,
}

/// A started process.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (its process group and session too).
    pub pid: i32,
    /// A pidfd: readable once it has exited; [`reap`] then collects its status.
    pub pidfd: OwnedFd,
    /// With a [`Launch::gate`]: the gate, waiting for [`open_gate`].
    pub gate: Option<GateHandle>,
}

/// A process waiting at its gate. Dropping it (closing `go`) makes the gate exit with status 0.
#[derive(Debug)]
pub struct GateHandle {
    go: OwnedFd,
    status: OwnedFd,
    /// The program it is to exec, for errors.
    program: CString,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    #[allow(unsafe_code)]
    // SAFETY: pipe2 fills the two descriptors it is given; we own them afterwards.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// A pipe for a child's output: the read end for the server (non-blocking), the write end for the child.
pub fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe()?;
    #[allow(unsafe_code)]
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

fn last_cap() -> libc::c_ulong {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Forks, sets up the sandbox in the child and execs; returns once the program runs (or why it does
/// not). Blocking: call it from a blocking thread.
pub fn spawn(l: &Launch) -> Result<Spawned, LaunchError> {
    let (status_r, status_w) = pipe()?;
    let devnull = OwnedFd::from(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    );
    let mut argv: Vec<*const libc::c_char> = l.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = l.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // The gate's argument vector: `pier __gate PROGRAM ARGV...`.
    let gate_words = [
        c"pier".to_owned(),
        CString::new(gate::ARG).unwrap_or_default(),
    ];
    let mut gate_argv: Vec<*const libc::c_char> = gate_words
        .iter()
        .chain(std::iter::once(&l.program))
        .chain(l.argv.iter())
        .map(|a| a.as_ptr())
        .collect();
    gate_argv.push(std::ptr::null());
    let go = match &l.gate {
        Some(_) => Some(pipe()?),
        None => None,
    };
    let cap_last = last_cap();
    #[allow(unsafe_code)]
    // SAFETY: getpid has no preconditions.
    let server = unsafe { libc::getpid() };
    #[allow(unsafe_code)]
    // SAFETY: the child runs only `child`, which makes async-signal-safe system calls on memory made
    // before the fork and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error().into());
    }
    if pid == 0 {
        let gate = match (&l.gate, &go) {
            (Some(exe), Some((go_r, _))) => {
                Some((exe.as_raw_fd(), go_r.as_raw_fd(), &gate_argv[..]))
            }
            _ => None,
        };
        child(
            l,
            &argv,
            &envp,
            status_w.as_raw_fd(),
            devnull.as_raw_fd(),
            server,
            cap_last,
            gate,
        );
    }
    drop(status_w);
    let go = go.map(|(r, w)| {
        drop(r);
        w
    });
    #[allow(unsafe_code)]
    // SAFETY: pidfd_open on our own child's pid (not yet reaped, so it cannot be reused).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let mut report = [0u8; 8];
    let got = read_report(&status_r, &mut report);
    // Without a gate, the pipe closing empty means the program runs; with one, a record of stage 0
    // means the gate waits.
    let ready = match &go {
        None => got == 0,
        Some(_) => got == report.len() && report[0] == 0,
    };
    if ready && pidfd >= 0 {
        #[allow(unsafe_code)]
        // SAFETY: pidfd_open returned a new descriptor we now own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
        let gate = go.map(|go| GateHandle {
            go,
            status: status_r,
            program: l.program.clone(),
        });
        return Ok(Spawned { pid, pidfd, gate });
    }
    // The child failed (or the pidfd did not open): collect it.
    #[allow(unsafe_code)]
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        if pidfd >= 0 {
            libc::close(pidfd as RawFd);
        }
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
    if got < report.len() {
        return Err(LaunchError::Io(io::Error::other(match &go {
            Some(_) => "the gate the process was to wait in ended before it was ready",
            None => "the new process ended before it reported",
        })));
    }
    Err(failure(&report, &l.program))
}

/// The error a failure record from the child (or the gate) stands for.
fn failure(report: &[u8; 8], program: &CString) -> LaunchError {
    let stage = Stage::from_u8(report[0]).unwrap_or(Stage::Exec);
    let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
    let program = program.to_string_lossy().into_owned();
    match (stage, errno) {
        (Stage::Exec, libc::ENOENT) | (Stage::Exec, libc::ENOTDIR) => {
            LaunchError::NotFound(program)
        }
        (Stage::Exec, libc::EACCES) | (Stage::Exec, libc::EPERM) => {
            LaunchError::NotExecutable(program)
        }
        _ => LaunchError::Sandbox {
            stage,
            source: io::Error::from_raw_os_error(errno),
        },
    }
}

/// Reads the child's status pipe until it closes or holds a whole record; returns how much it read.
fn read_report(status: &OwnedFd, report: &mut [u8; 8]) -> usize {
    let mut got = 0;
    while got < report.len() {
        #[allow(unsafe_code)]
        // SAFETY: reads into our own buffer within its length.
        let n = unsafe {
            libc::read(
                status.as_raw_fd(),
                report[got..].as_mut_ptr().cast(),
                report.len() - got,
            )
        };
        if n == 0 {
            break;
        }
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        got += n as usize;
    }
    got
}

/// Lets a gated process exec its program; returns once it runs, or why it could not, as [`spawn`] does
/// for a process without a gate. Blocking: call it from a blocking thread.
pub fn open_gate(gate: GateHandle) -> Result<(), LaunchError> {
    #[allow(unsafe_code)]
    // SAFETY: writes one byte from a static buffer to a descriptor we own.
    let n = unsafe { libc::write(gate.go.as_raw_fd(), gate::GO.as_ptr().cast(), 1) };
    if n != 1 {
        return Err(LaunchError::Io(io::Error::last_os_error()));
    }
    drop(gate.go);
    let mut report = [0u8; 8];
    match read_report(&gate.status, &mut report) {
        0 => Ok(()),
        8 => Err(failure(&report, &gate.program)),
        _ => Err(LaunchError::Io(io::Error::other(
            "the gate ended before its program started",
        ))),
    }
}

/// The thread every sandboxed process is forked from. A child's parent-death signal fires when the
/// *thread* that forked it ends, not only the process, so forks must come from a thread that lives as
/// long as the server: a pool's worker (tokio's blocking threads end after ten idle seconds) would take
/// its instances down with it.
pub struct Spawner {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawner")
    }
}

impl Spawner {
    /// The process's spawner thread, started on first use.
    pub fn global() -> &'static Spawner {
        static SPAWNER: std::sync::OnceLock<Spawner> = std::sync::OnceLock::new();
        SPAWNER.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
            std::thread::Builder::new()
                .name("pier-spawner".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .expect("starting the spawner thread");
            Spawner {
                jobs: std::sync::Mutex::new(tx),
            }
        })
    }

    /// Runs `job` on the spawner thread; `done` gets its result.
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(T) + Send + 'static,
    ) -> Result<(), LaunchError> {
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Box::new(move || done(job())));
        sent.map_err(|_| LaunchError::Io(io::Error::other("the spawner thread is gone")))
    }
}

/// Reports `stage` and the current `errno` on `status` and exits (in the child).
fn fail(status: RawFd, stage: Stage, errno: i32) -> ! {
    let e = errno.to_ne_bytes();
    let rec = [stage as u8, 0, 0, 0, e[0], e[1], e[2], e[3]];
    #[allow(unsafe_code)]
    // SAFETY: write and _exit are async-signal-safe; `rec` lives on this stack frame.
    unsafe {
        libc::write(status, rec.as_ptr().cast(), rec.len());
        libc::_exit(127);
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The child's side, between fork and exec (see the module docs). `gate` is the gate binary, the read
/// end of its go pipe and its argument vector.
#[allow(clippy::too_many_arguments)]
fn child(
    l: &Launch,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    status: RawFd,
    devnull: RawFd,
    server: libc::pid_t,
    cap_last: libc::c_ulong,
    gate: Option<(RawFd, RawFd, &[*const libc::c_char])>,
) -> ! {
    #[allow(unsafe_code)]
    // SAFETY: only async-signal-safe system calls, on memory made before the fork (the plan, the argument
    // and environment arrays) or on this stack frame; nothing allocates or takes a lock.
    unsafe {
        let check = |r: libc::c_long, stage: Stage| {
            if r < 0 {
                fail(status, stage, errno());
            }
        };
        // 1. Never outlive the server.
        check(
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
            .into(),
            Stage::DeathSignal,
        );
        if libc::getppid() != server {
            libc::_exit(127);
        }
        // 2. Signals, stdio, session.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        check(
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()).into(),
            Stage::Signals,
        );
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        check(
            libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut()).into(),
            Stage::Signals,
        );
        for (from, to) in [
            (devnull, 0),
            (l.stdout.as_raw_fd(), 1),
            (l.stderr.as_raw_fd(), 2),
        ] {
            check(libc::dup2(from, to).into(), Stage::Stdio);
        }
        check(libc::setsid().into(), Stage::Session);
        // 3. Cgroups, network, filesystem.
        for cg in &l.cgroups {
            check(
                libc::write(cg.as_raw_fd(), b"0".as_ptr().cast(), 1) as libc::c_long,
                Stage::Cgroup,
            );
        }
        if let Some(ns) = l.netns {
            check(libc::setns(ns, libc::CLONE_NEWNET).into(), Stage::Network);
        }
        match &l.view {
            Some(view) => {
                if let Err(f) = view.enter() {
                    fail(status, f.stage, f.errno);
                }
            }
            None => check(libc::chdir(l.workdir.as_ptr()).into(), Stage::Workdir),
        }
        // 4. Privileges.
        if let Some((uid, gid)) = l.user {
            for cap in 0..=cap_last {
                let r = libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
                if r != 0 && errno() != libc::EINVAL {
                    fail(status, Stage::Capabilities, errno());
                }
            }
            check(
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
                .into(),
                Stage::Capabilities,
            );
            check(libc::setgroups(0, std::ptr::null()).into(), Stage::Groups);
            check(libc::setresgid(gid, gid, gid).into(), Stage::Gid);
            check(libc::setresuid(uid, uid, uid).into(), Stage::Uid);
            if libc::setuid(0) == 0 {
                fail(status, Stage::RegainRoot, 0);
            }
            // Changing credentials cleared the death signal.
            check(
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                )
                .into(),
                Stage::DeathSignal,
            );
            if libc::getppid() != server {
                libc::_exit(127);
            }
        }
        // 5. Nothing inherited by accident; then the filter.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if let Some(filter) = &l.seccomp
            && let Err(e) = filter.load()
        {
            fail(status, Stage::Seccomp, e.raw_os_error().unwrap_or(0));
        }
        // 6. Run it, or the gate, which keeps the go pipe and the status pipe at fixed numbers
        //    (copied above 10 first, so neither overwrites the other), not closed on exec.
        if let Some((exe, go, gate_argv)) = gate {
            // The gate binary's descriptor moves up too, in case it is 3 or 4.
            let exe_high = libc::fcntl(exe, libc::F_DUPFD_CLOEXEC, 10);
            let go_high = libc::fcntl(go, libc::F_DUPFD, 10);
            let status_high = libc::fcntl(status, libc::F_DUPFD, 10);
            if exe_high < 0
                || go_high < 0
                || status_high < 0
                || libc::dup2(go_high, gate::GO_FD) < 0
                || libc::dup2(status_high, gate::STATUS_FD) < 0
            {
                fail(status, Stage::Gate, errno());
            }
            libc::close(go_high);
            libc::close(status_high);
            libc::syscall(
                libc::SYS_execveat,
                exe_high,
                c"".as_ptr(),
                gate_argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            fail(gate::STATUS_FD, Stage::Gate, errno());
        }
        libc::execve(l.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(status, Stage::Exec, errno());
    }
}

/// Collects the status of a process whose pidfd became readable (it has exited). Blocking otherwise.
pub fn reap(pidfd: &OwnedFd) -> io::Result<Exit> {
    #[allow(unsafe_code)]
    // SAFETY: waitid fills the siginfo we own; P_PIDFD (3) takes the descriptor.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            let r = libc::waitid(
                3 as libc::idtype_t,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            );
            if r == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let status = info.si_status();
        Ok(match info.si_code {
            libc::CLD_EXITED => Exit::Code(status),
            _ => Exit::Signal(status),
        })
    }
}

#[cfg(test)]
mod tests;
