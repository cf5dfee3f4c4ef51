//! The two OCI runtimes behind Cloud Run's execution environments, and how each is driven:
//!
//! | | gen2: runc | gen1: gVisor's runsc |
//! | --- | --- | --- |
//! | run | `runc run --keep --bundle B ID` | `runsc --network=host --oci-seccomp run --bundle B ID` |
//! | graceful stop | SIGTERM to the runtime process (it forwards it) | `runsc kill ID TERM` (SIGTERM would end the sandbox at once) |
//! | exit status | the app's, 128+N for signal N | the same, and 128 for runsc's own errors |
//! | network | the namespace Pier made | the same, with `--network=host`: the app's sockets are that namespace's |
//! | seccomp | `linux.seccomp`, compiled by runc | `--oci-seccomp`, applied by the sentry to the app |
//!
//! runsc here (Debian 12's 2022 release) runs on the ptrace platform; its own network stack does not start
//! on this kernel, and `--network=host` is what keeps the data-plane design (Pier's sockets inside the
//! instance's namespace, the namespace's filter) unchanged.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use pier_runtime::ExitReason;

/// Which runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// runc (or another runc-compatible runtime): gen2.
    Runc,
    /// gVisor's runsc: gen1.
    Runsc,
}

/// One runtime binary with its state directory.
#[derive(Clone, Debug)]
pub struct Engine {
    /// Which.
    pub kind: Kind,
    /// The binary.
    pub binary: PathBuf,
    /// Its `--root` (container state).
    pub state: PathBuf,
}

/// A runtime command that failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The runtime's binary could not be run at all.
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        /// The runtime's binary.
        binary: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed; its error output says why.
    #[error("{stderr} ({command}: {status})")]
    Failed {
        /// The subcommand (`kill`, `delete`).
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its error output, trimmed.
        stderr: String,
    },
}

impl Engine {
    fn base(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("--root").arg(&self.state);
        if self.kind == Kind::Runsc {
            cmd.args(["--network=host", "--oci-seccomp"]);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The command that runs container `id` from `bundle` in the foreground.
    pub fn run(&self, bundle: &Path, id: &str) -> tokio::process::Command {
        let mut cmd = self.base();
        match self.kind {
            Kind::Runc => cmd.args(["run", "--keep", "--bundle"]),
            Kind::Runsc => cmd.args(["run", "--bundle"]),
        };
        cmd.arg(bundle).arg(id);
        cmd
    }

    /// Runs one runtime command to completion.
    pub async fn command(&self, args: &[&str]) -> Result<(), EngineError> {
        let out = self
            .base()
            .args(args)
            .output()
            .await
            .map_err(|source| EngineError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(EngineError::Failed {
                command: args.first().copied().unwrap_or("").to_owned(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Sends `signal` (`TERM`, `KILL`) to the container's processes.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        self.command(&["kill", id, signal]).await
    }

    /// Asks the container to stop: SIGTERM to the app.
    pub async fn terminate(&self, id: &str, runtime_pid: i32) {
        match self.kind {
            // `runc run` forwards the signal to the container's first process.
            Kind::Runc => {
                if runtime_pid > 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(runtime_pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
            Kind::Runsc => {
                if let Err(e) = self.kill(id, "TERM").await {
                    tracing::debug!(container = id, "runsc kill TERM: {e}");
                }
            }
        }
    }

    /// Removes the container's state (and whatever still runs).
    pub async fn delete(&self, id: &str) -> Result<(), EngineError> {
        match self.kind {
            Kind::Runc => self.command(&["delete", "--force", id]).await,
            Kind::Runsc => self.command(&["delete", "-force", id]).await,
        }
    }

    /// Containers the state holds.
    pub async fn list(&self) -> Vec<String> {
        let out = self.base().args(["list", "--quiet"]).output().await;
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != "ID")
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// How the instance ended, from the runtime's exit status.
    pub fn exit_reason(&self, code: Option<i32>) -> ExitReason {
        match code {
            Some(128) if self.kind == Kind::Runsc => ExitReason::Exited(128),
            Some(code) if (129..=128 + 64).contains(&code) => ExitReason::Signaled(code - 128),
            Some(code) => ExitReason::Exited(code),
            None => ExitReason::Exited(-1),
        }
    }
}
