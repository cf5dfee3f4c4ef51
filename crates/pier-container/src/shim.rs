//! The container shim: the small process that holds one gen2 container, so the container can be made
//! ahead of demand and started in a moment. Pier runs it as `pier __container-shim RUNC STATE BUNDLE ID`
//! with the instance's log pipes as stdout and stderr and one end of a socket pair as stdin (the
//! control socket). It:
//!
//! 1. becomes a child subreaper, so the container's first process becomes its child once `runc create`
//!    exits (and its exit status can be collected, as `runc run` would);
//! 2. runs `runc create` (the container is made: namespaces, mounts, cgroups, seccomp; its first
//!    process waits in `runc init` on the state's `exec.fifo`) and sends `R` on the control socket;
//! 3. waits for one byte: `G` starts the app, as `runc start` would (open `exec.fifo` for reading and
//!    read it: `runc init` writes to it and then execs the app; the fifo is then removed, which is how
//!    runc tells "created" from "running"; init is checked every 100 ms meanwhile, as runc does), and
//!    answers `S` once the app runs or `F` if the container ended first; end of file (Pier dropped the
//!    sandbox, or died) kills it;
//! 4. forwards SIGTERM, SIGINT and SIGHUP to the app, reaps everything reparented to it, and exits with
//!    the app's status (128+N when signal N killed it), as `runc run` does.
//!
//! Pier deletes the container's state afterwards (`runc delete`); a shim whose server was killed
//! with -9 before the start kills the container and exits, and the next server deletes what is left.

#![allow(clippy::print_stderr)] // the shim's standard error is the instance's log, where its words belong

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

/// The argument that selects the shim in the `pier` binary (never shown in its help).
pub const ARG: &str = "__container-shim";

/// The byte the shim sends once the container is created.
pub const CREATED: u8 = b'R';
/// The byte that starts the app.
pub const GO: u8 = b'G';
/// The byte the shim answers once the app runs.
pub const STARTED: u8 = b'S';
/// The byte the shim answers when the container ended before its app could run.
pub const FAILED: u8 = b'F';

/// Runs the shim with the arguments after [`ARG`]: `RUNC STATE BUNDLE ID`. Never returns to the caller's
/// own logic: the process exits with the returned code.
pub fn main(args: &[std::ffi::OsString]) -> ExitCode {
    let [runc, state, bundle, id] = args else {
        eprintln!("[pier] the container shim takes RUNC STATE BUNDLE ID");
        return ExitCode::from(2);
    };
    match run(
        Path::new(runc),
        Path::new(state),
        Path::new(bundle),
        &id.to_string_lossy(),
    ) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("[pier] container shim: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(runc: &Path, state: &Path, bundle: &Path, id: &str) -> std::io::Result<u8> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
    // Signals for the app wait until it runs, then a thread forwards them (std resets the mask of
    // what it spawns, so runc and the container do not inherit this).
    let mut forwarded = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        forwarded.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), None).map_err(std::io::Error::from)?;
    // The control socket is our stdin; fd 0 becomes /dev/null for what we start.
    let control = nix::unistd::dup(std::io::stdin()).map_err(std::io::Error::from)?;
    // Not inherited by runc (nor, through it, by the container).
    nix::fcntl::fcntl(
        &control,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(std::io::Error::from)?;
    let control = UnixStream::from(control);
    nix::unistd::dup2_stdin(std::fs::File::open("/dev/null")?).map_err(std::io::Error::from)?;
    // In the runtime's state folder (the server's alone), not the bundle (the service's root owns it).
    let pid_file = state.join(format!("{id}.init-pid"));
    let status = Command::new(runc)
        .arg("--root")
        .arg(state)
        .arg("create")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .status()?;
    if !status.success() {
        eprintln!("[pier] the runtime could not create the container ({status})");
        return Ok(1);
    }
    let read = std::fs::read_to_string(&pid_file);
    let _ = std::fs::remove_file(&pid_file);
    let init: i32 = read?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other("the runtime wrote no pid file"))?;
    let init = Pid::from_raw(init);
    let mut control = control;
    let mut go = [0u8; 1];
    let started = control.write_all(&[CREATED]).is_ok()
        && matches!(control.read(&mut go), Ok(1) if go[0] == GO);
    if !started {
        // Dropped before its start, or the server is gone: the container never runs its app.
        let _ = kill(init, Signal::SIGKILL);
        reap_until(init);
        return Ok(0);
    }
    std::thread::spawn(move || {
        while let Ok(sig) = forwarded.wait() {
            let _ = kill(init, sig);
        }
    });
    let fifo = state.join(id).join("exec.fifo");
    let outcome = wait_started(&fifo, init);
    let started = matches!(outcome, Outcome::Started);
    let _ = control.write_all(&[if started { STARTED } else { FAILED }]);
    drop(control);
    match outcome {
        Outcome::Started => {
            let _ = std::fs::remove_file(&fifo);
        }
        Outcome::Ended(code) => {
            eprintln!("[pier] the container ended before its app could start");
            return Ok(code);
        }
        Outcome::Failed => {
            eprintln!("[pier] the container ended before its app could start");
            let _ = kill(init, Signal::SIGKILL);
        }
    }
    Ok(reap_until(init))
}

/// What became of the go.
enum Outcome {
    /// The app runs.
    Started,
    /// `runc init` ended first, with this status.
    Ended(u8),
    /// `runc init` closed the fifo without a word.
    Failed,
}

/// Lets the app run as `runc start` does: opens runc's `exec.fifo` for reading and reads it to its end
/// (`runc init` opens it, perhaps only after `runc create` returned, writes a byte, then execs the app,
/// which closes it). The open blocks until init opens its end, so it runs on a thread while this one
/// checks every 100 ms that init is still alive (as runc does), and stops waiting if it ended.
fn wait_started(fifo: &Path, init: Pid) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.to_owned();
    std::thread::spawn(move || {
        let read = std::fs::File::open(&path).and_then(|mut f| {
            let mut word = Vec::new();
            f.read_to_end(&mut word).map(|_| word)
        });
        let _ = tx.send(read);
    });
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(Ok(word)) if !word.is_empty() => return Outcome::Started,
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Outcome::Failed,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                match waitpid(init, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(status) => {
                        if let Some(code) = ended(status, init) {
                            return Outcome::Ended(code);
                        }
                    }
                    Err(_) => return Outcome::Failed,
                }
            }
        }
    }
}

/// `init`'s status as `runc run` reports it (128+N when signal N killed it), if `status` is its end.
fn ended(status: WaitStatus, init: Pid) -> Option<u8> {
    match status {
        WaitStatus::Exited(pid, code) if pid == init => Some(code as u8),
        WaitStatus::Signaled(pid, sig, _) if pid == init => Some(128u8.saturating_add(sig as u8)),
        _ => None,
    }
}

/// Reaps every child until `init` ends; returns its status as `runc run` reports it.
fn reap_until(init: Pid) -> u8 {
    loop {
        match waitpid(None, None) {
            Ok(status) => {
                if let Some(code) = ended(status, init) {
                    return code;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return 1,
        }
    }
}
