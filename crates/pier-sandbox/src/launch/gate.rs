//! The gate: what a sandboxed child execs when its sandbox is made ahead of demand. It runs already
//! inside everything [`super::spawn`] set up (cgroups, namespaces, filesystem view, user, no
//! capabilities, seccomp), as `pier __gate PROGRAM ARGV...` with the instance's environment, and:
//!
//! 1. makes itself not dumpable (so no process of the same user opens its pipes through `/proc`), and
//!    writes a record of stage 0 on the status pipe ([`STATUS_FD`]): it waits;
//! 2. reads one byte from the go pipe ([`GO_FD`]): [`GO`] goes on, anything else (end of file: the
//!    server dropped the sandbox, or died) exits with status 0;
//! 3. restores `SIGPIPE` (the Rust runtime ignores it, and an ignored signal stays ignored across
//!    `exec`), marks the status pipe close-on-exec, and execs PROGRAM with ARGV;
//! 4. if that fails, writes the failure record (stage `Exec`, errno) as the child would have, and exits
//!    with 127.
//!
//! Its pid is the instance's pid from the start, so the server's pidfd, process group and cgroup
//! follow the program without anything else changing.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;

use super::Stage;

/// The argument that selects the gate in the `pier` binary (never shown in its help).
pub const ARG: &str = "__gate";
/// The descriptor the gate reads its go byte from.
pub const GO_FD: i32 = 3;
/// The descriptor of the status pipe in the gate.
pub const STATUS_FD: i32 = 4;
/// The byte that lets the program run.
pub const GO: &[u8; 1] = b"G";

/// Runs the gate with the arguments after [`ARG`]: `PROGRAM ARGV...`. Returns only the exit status of
/// a gate that did not exec (one whose exec failed exits with 127 from here).
pub fn main(args: &[OsString]) -> i32 {
    let Some((program, argv)) = args.split_first() else {
        return 2;
    };
    let to_c = |s: &OsString| CString::new(s.clone().into_vec()).ok();
    let (Some(program), Some(argv)) = (
        to_c(program),
        argv.iter().map(to_c).collect::<Option<Vec<CString>>>(),
    ) else {
        return 2;
    };
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    #[allow(unsafe_code)]
    // SAFETY: plain system calls on descriptors this process was started with and on buffers that
    // live until they return; `ptrs` points into `argv`, which outlives the exec.
    unsafe {
        // Not dumpable: a process of the same user (another instance of the service) cannot open
        // this one's descriptors through /proc. The program's exec resets it.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let waiting = [0u8; 8];
        libc::write(STATUS_FD, waiting.as_ptr().cast(), waiting.len());
        let mut byte = [0u8; 1];
        let n = loop {
            let n = libc::read(GO_FD, byte.as_mut_ptr().cast(), 1);
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if n != 1 || byte != *GO {
            return 0;
        }
        libc::close(GO_FD);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::execv(program.as_ptr(), ptrs.as_ptr());
    }
    // The same record, and the same exit, as the child's own failed exec.
    super::fail(STATUS_FD, Stage::Exec, super::errno())
}
