//! Named exceptions: the way to loosen the profile without a hole. The operator defines each one in the
//! server's settings (`pier server --seccomp-exception NAME:CALL,CALL`), naming the calls it allows
//! outright; an owner attaches one by name to a service (`pier deploy --seccomp-exception NAME`). There
//! is no "unconfined": calls that would take an instance out of its sandbox (new namespaces, mounts,
//! kernel modules and kexec, keyrings, BPF, file handles, raw I/O ports, swap) are refused in any
//! exception.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::Value;

use super::{Arch, Profile, Program, SeccompError};

/// Calls no exception may allow, and why.
pub const NEVER: &[(&str, &str)] = &[
    (
        "unshare",
        "makes namespaces (a new user namespace holds every capability)",
    ),
    ("setns", "joins other namespaces"),
    ("clone3", "takes namespace flags BPF cannot read"),
    ("mount", "changes mounts"),
    ("umount2", "changes mounts"),
    ("pivot_root", "changes mounts"),
    ("move_mount", "changes mounts"),
    ("open_tree", "changes mounts"),
    ("fsopen", "changes mounts"),
    ("fsconfig", "changes mounts"),
    ("fsmount", "changes mounts"),
    ("fspick", "changes mounts"),
    ("mount_setattr", "changes mounts"),
    ("init_module", "loads kernel code"),
    ("finit_module", "loads kernel code"),
    ("delete_module", "unloads kernel code"),
    ("kexec_load", "replaces the kernel"),
    ("kexec_file_load", "replaces the kernel"),
    ("reboot", "stops the host"),
    ("bpf", "loads kernel programs"),
    ("keyctl", "reaches kernel keyrings"),
    ("add_key", "reaches kernel keyrings"),
    ("request_key", "reaches kernel keyrings"),
    (
        "open_by_handle_at",
        "opens host files by handle (the Shocker escape)",
    ),
    ("iopl", "reaches hardware I/O ports"),
    ("ioperm", "reaches hardware I/O ports"),
    ("swapon", "changes the host's swap"),
    ("swapoff", "changes the host's swap"),
];

/// One named exception: the calls it allows outright, on top of the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exception {
    /// Its name (lowercase letters, digits and hyphens).
    pub name: String,
    /// The calls it allows.
    pub calls: Vec<String>,
}

impl FromStr for Exception {
    type Err = SeccompError;

    /// `NAME:CALL,CALL`, such as `profiling:perf_event_open`.
    fn from_str(s: &str) -> Result<Exception, SeccompError> {
        let bad = |why: &str| {
            SeccompError::Exception(format!(
                "--seccomp-exception {s:?}: {why}; write NAME:CALL[,CALL...], such as profiling:perf_event_open"
            ))
        };
        let (name, calls) = s.split_once(':').ok_or_else(|| bad("no calls"))?;
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(bad(
                "the name must be lowercase letters, digits and hyphens",
            ));
        }
        let calls: Vec<String> = calls
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if calls.is_empty() {
            return Err(bad("no calls"));
        }
        Ok(Exception {
            name: name.to_owned(),
            calls,
        })
    }
}

impl Profile {
    /// This profile with `calls` allowed outright (their conditions and errnos dropped). Refuses calls
    /// no table knows and those in [`NEVER`].
    pub fn with_allowed(&self, calls: &[String]) -> Result<Profile, SeccompError> {
        let mut p = self.clone();
        for call in calls {
            if let Some((_, why)) = NEVER.iter().find(|(n, _)| n == call) {
                return Err(SeccompError::Exception(format!(
                    "{call} cannot be allowed by an exception: it {why}"
                )));
            }
            let known = [Arch::X86_64, Arch::Aarch64]
                .iter()
                .any(|a| a.table().contains_key(call));
            if !known {
                return Err(SeccompError::Exception(format!(
                    "{call} is not a system call Pier knows (see crates/pier-sandbox/policy/syscalls/)"
                )));
            }
            p.allow_if.retain(|c| c.name != *call);
            p.errno.retain(|(n, _)| n != call);
            p.allow.insert(call.clone());
        }
        Ok(p)
    }
}

/// The filters instances run under on this machine: the profile's, and one per named exception, each
/// compiled once (BPF for host processes, OCI for containers).
#[derive(Debug)]
pub struct Policies {
    default: (Program, Value),
    named: BTreeMap<String, (Program, Value, Vec<String>)>,
}

impl Policies {
    /// The profile's filters for this machine's architecture, and `exceptions`'.
    pub fn new(exceptions: &[Exception]) -> Result<Policies, SeccompError> {
        let arch = Arch::native()?;
        let base = Profile::builtin()?;
        let default = (base.compile(arch)?, base.to_oci(arch)?);
        let mut named = BTreeMap::new();
        for e in exceptions {
            if named.contains_key(&e.name) {
                return Err(SeccompError::Exception(format!(
                    "--seccomp-exception {} is defined twice: give each exception its own name",
                    e.name
                )));
            }
            let p = base.with_allowed(&e.calls)?;
            named.insert(
                e.name.clone(),
                (p.compile(arch)?, p.to_oci(arch)?, e.calls.clone()),
            );
        }
        Ok(Policies { default, named })
    }

    /// The names of the exceptions, and the calls each allows.
    pub fn exceptions(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.named
            .iter()
            .map(|(n, (_, _, c))| (n.as_str(), c.as_slice()))
    }

    fn get(&self, exception: Option<&str>) -> Result<(&Program, &Value), SeccompError> {
        match exception {
            None => Ok((&self.default.0, &self.default.1)),
            Some(name) => self
                .named
                .get(name)
                .map(|(p, v, _)| (p, v))
                .ok_or_else(|| {
                    SeccompError::Exception(format!(
                        "seccomp exception {name:?} is not defined on this server (pier server --seccomp-exception {name}:CALLS)"
                    ))
                }),
        }
    }

    /// The BPF program for host processes under `exception` (or the profile alone).
    pub fn program(&self, exception: Option<&str>) -> Result<&Program, SeccompError> {
        Ok(self.get(exception)?.0)
    }

    /// The OCI `linux.seccomp` object for containers under `exception` (or the profile alone).
    pub fn oci(&self, exception: Option<&str>) -> Result<&Value, SeccompError> {
        Ok(self.get(exception)?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_allow_only_what_they_name_and_never_an_escape() {
        let e: Exception = "profiling:perf_event_open".parse().unwrap();
        assert_eq!(e.calls, ["perf_event_open"]);
        for bad in [
            "profiling",
            "Prof:perf_event_open",
            "x:",
            ":perf_event_open",
        ] {
            assert!(bad.parse::<Exception>().is_err(), "{bad}");
        }
        let arch = Arch::native().unwrap();
        let nr = arch.table()["perf_event_open"];
        let base = Profile::builtin().unwrap();
        let loose = base.with_allowed(&e.calls).unwrap();
        let args = [0u64; 6];
        assert_ne!(
            base.decide(arch, nr, args).unwrap(),
            super::super::RET_ALLOW
        );
        assert_eq!(
            loose.decide(arch, nr, args).unwrap(),
            super::super::RET_ALLOW
        );
        // The compiled program agrees, and nothing else moved.
        let prog = loose.compile(arch).unwrap();
        assert_eq!(prog.run(arch.audit(), nr, args), super::super::RET_ALLOW);
        let keyctl = arch.table()["keyctl"];
        assert_eq!(
            prog.run(arch.audit(), keyctl, args),
            base.decide(arch, keyctl, args).unwrap()
        );
        for (never, _) in NEVER {
            let err = base.with_allowed(&[never.to_string()]).unwrap_err();
            assert!(
                err.to_string().contains("cannot be allowed"),
                "{never}: {err}"
            );
        }
        let err = base.with_allowed(&["no_such_call".into()]).unwrap_err();
        assert!(err.to_string().contains("not a system call"), "{err}");

        let policies = Policies::new(&[e]).unwrap();
        assert!(policies.program(Some("profiling")).is_ok());
        assert!(policies.oci(None).is_ok());
        let missing = policies.program(Some("debug")).unwrap_err();
        assert!(missing.to_string().contains("not defined"), "{missing}");
    }
}
