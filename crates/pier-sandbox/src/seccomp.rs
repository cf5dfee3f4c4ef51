//! The seccomp profile every instance runs under, kept as data (`policy/seccomp.json`) and turned into
//! what each runtime takes:
//!
//! - [`Profile::to_oci`]: the OCI `linux.seccomp` object for runc (which compiles it with libseccomp) and
//!   for runsc (`--oci-seccomp`);
//! - [`Profile::compile`]: classic BPF for host processes, loaded by [`Program::load`] just before `exec`.
//!
//! The compiled program follows what runc does with the same profile, so a call is decided the same way
//! in every runtime:
//!
//! 1. a call from another ABI (i386 `int 0x80`, x32, AArch32) kills the process: its number would mean
//!    something else;
//! 2. a number above the highest one the profile names answers `ENOSYS`, so libcs fall back from
//!    syscalls newer than the profile (runc's `patchbpf` rule);
//! 3. named calls are allowed, allowed when an argument condition holds, or answer their own errno
//!    (`clone3`: `ENOSYS`, since its flags live in memory BPF cannot read);
//! 4. everything else answers the profile's default errno (`EPERM`).
//!
//! Arguments are 64-bit in `seccomp_data`; conditions compare all 64 bits as libseccomp does (the profile
//! only uses comparisons that fail closed when an `int` argument carries stray upper bits).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};

/// The profile's source, compiled into the binary.
const PROFILE_JSON: &str = include_str!("../policy/seccomp.json");
const TABLE_X86_64: &str = include_str!("../policy/syscalls/x86_64.tbl");
const TABLE_AARCH64: &str = include_str!("../policy/syscalls/aarch64.tbl");

/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_ERRNO` (the errno goes in the low 16 bits).
pub const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// The x32 ABI's marker bit in the syscall number (`__X32_SYSCALL_BIT`).
const X32_BIT: u32 = 0x4000_0000;

/// What went wrong building a filter: a bug in the profile or its tables (caught by the tests), or an
/// operator's exception that names the wrong calls.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// An operator's exception is not well formed, names a call no table has, or one no exception may
    /// grant.
    #[error("{0}")]
    Exception(String),
    /// The profile file does not parse.
    #[error("the seccomp profile is malformed: {0}")]
    Malformed(String),
    /// A name the profile uses is in no table.
    #[error("the seccomp profile names {name:?}, which {arch} does not have")]
    UnknownSyscall {
        /// The name.
        name: String,
        /// The architecture.
        arch: Arch,
    },
    /// The program does not fit classic BPF's limits.
    #[error("the seccomp program does not fit: {0}")]
    TooLarge(String),
    /// This machine's architecture has no table.
    #[error("seccomp filters are not available on this architecture ({0})")]
    UnsupportedArch(&'static str),
}

/// An architecture the profile covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// x86-64, native 64-bit ABI.
    X86_64,
    /// 64-bit ARM.
    Aarch64,
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Arch {
    /// The architecture Pier was built for.
    pub fn native() -> Result<Arch, SeccompError> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(SeccompError::UnsupportedArch(other)),
        }
    }

    /// The name used in the profile file.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// `AUDIT_ARCH_*`, as the kernel reports it in `seccomp_data.arch`.
    pub fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => 0xc000_003e,
            Arch::Aarch64 => 0xc000_00b7,
        }
    }

    /// libseccomp's name, for OCI's `architectures`.
    pub fn oci(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
        }
    }

    fn table_text(self) -> &'static str {
        match self {
            Arch::X86_64 => TABLE_X86_64,
            Arch::Aarch64 => TABLE_AARCH64,
        }
    }

    /// The architecture's system call numbers by name.
    pub fn table(self) -> &'static HashMap<String, u32> {
        static X86: OnceLock<HashMap<String, u32>> = OnceLock::new();
        static ARM: OnceLock<HashMap<String, u32>> = OnceLock::new();
        let cell = match self {
            Arch::X86_64 => &X86,
            Arch::Aarch64 => &ARM,
        };
        cell.get_or_init(|| parse_table(self.table_text()))
    }
}

fn parse_table(text: &str) -> HashMap<String, u32> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (name, nr) = l.split_once(' ')?;
            Some((name.to_owned(), nr.trim().parse().ok()?))
        })
        .collect()
}

/// An argument comparison, as libseccomp names them (`SCMP_CMP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Unsigned less than.
    Lt,
    /// Unsigned less than or equal.
    Le,
    /// Unsigned greater than.
    Gt,
    /// Unsigned greater than or equal.
    Ge,
    /// `(arg & mask) == value`.
    MaskedEq,
}

impl Op {
    fn oci(self) -> &'static str {
        match self {
            Op::Eq => "SCMP_CMP_EQ",
            Op::Ne => "SCMP_CMP_NE",
            Op::Lt => "SCMP_CMP_LT",
            Op::Le => "SCMP_CMP_LE",
            Op::Gt => "SCMP_CMP_GT",
            Op::Ge => "SCMP_CMP_GE",
            Op::MaskedEq => "SCMP_CMP_MASKED_EQ",
        }
    }

    /// The comparison itself (what the compiled filter computes).
    pub fn holds(self, arg: u64, value: u64, mask: u64) -> bool {
        match self {
            Op::Eq => arg == value,
            Op::Ne => arg != value,
            Op::Lt => arg < value,
            Op::Le => arg <= value,
            Op::Gt => arg > value,
            Op::Ge => arg >= value,
            Op::MaskedEq => arg & mask == value,
        }
    }
}

/// One condition under which a call is allowed; several for the same call are alternatives.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The call.
    pub name: String,
    /// Which argument (0 to 5).
    pub arg: u8,
    /// The comparison.
    pub op: Op,
    /// The value compared with (for `masked_eq`, the expected masked value).
    pub value: u64,
    /// The mask of `masked_eq`.
    #[serde(default)]
    pub mask: u64,
    /// Only on this architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Why.
    #[serde(default)]
    pub why: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    names: Vec<String>,
    #[serde(default)]
    why: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrnoGroup {
    names: Vec<String>,
    errno: String,
    #[serde(default)]
    why: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    #[serde(default)]
    reference: String,
    default_errno: String,
    architectures: Vec<String>,
    allow: Vec<Group>,
    allow_if: Vec<Condition>,
    errno: Vec<ErrnoGroup>,
    #[serde(default)]
    arch_only: BTreeMap<String, Vec<String>>,
}

fn errno_number(name: &str) -> Result<u32, SeccompError> {
    let n = match name {
        "EPERM" => libc::EPERM,
        "ENOSYS" => libc::ENOSYS,
        "EACCES" => libc::EACCES,
        "EINVAL" => libc::EINVAL,
        other => {
            return Err(SeccompError::Malformed(format!(
                "unknown errno {other:?} (use EPERM, ENOSYS, EACCES or EINVAL)"
            )));
        }
    };
    Ok(n as u32)
}

/// What the profile decides for one named call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Always allowed.
    Allow,
    /// Allowed when one of these conditions holds: `(arg, op, value, mask)`.
    AllowIf(Vec<(u8, Op, u64, u64)>),
    /// Answers this errno.
    Errno(u32),
}

/// The seccomp profile.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Where the allow-list was checked against.
    pub reference: String,
    default_errno: u32,
    architectures: Vec<Arch>,
    allow: BTreeSet<String>,
    allow_if: Vec<Condition>,
    errno: Vec<(String, u32)>,
    arch_only: HashMap<Arch, BTreeSet<String>>,
}

impl Profile {
    /// Pier's default profile (parsed once).
    pub fn builtin() -> Result<&'static Profile, SeccompError> {
        static PROFILE: OnceLock<Result<Profile, String>> = OnceLock::new();
        PROFILE
            .get_or_init(|| Profile::parse(PROFILE_JSON).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| SeccompError::Malformed(e.clone()))
    }

    /// Parses a profile in Pier's format.
    pub fn parse(text: &str) -> Result<Profile, SeccompError> {
        let file: ProfileFile =
            serde_json::from_str(text).map_err(|e| SeccompError::Malformed(e.to_string()))?;
        let mut architectures = Vec::new();
        for a in &file.architectures {
            architectures.push(match a.as_str() {
                "x86_64" => Arch::X86_64,
                "aarch64" => Arch::Aarch64,
                other => {
                    return Err(SeccompError::Malformed(format!(
                        "unknown architecture {other:?}"
                    )));
                }
            });
        }
        let mut arch_only = HashMap::new();
        for (arch, names) in file.arch_only {
            let arch = match arch.as_str() {
                "x86_64" => Arch::X86_64,
                "aarch64" => Arch::Aarch64,
                other => {
                    return Err(SeccompError::Malformed(format!(
                        "unknown architecture {other:?} in archOnly"
                    )));
                }
            };
            arch_only.insert(arch, names.into_iter().collect());
        }
        let mut errno = Vec::new();
        for g in file.errno {
            let e = errno_number(&g.errno)?;
            let _ = g.why;
            errno.extend(g.names.into_iter().map(|n| (n, e)));
        }
        for c in &file.allow_if {
            if c.arg > 5 {
                return Err(SeccompError::Malformed(format!(
                    "{}: argument {} does not exist (0 to 5)",
                    c.name, c.arg
                )));
            }
        }
        Ok(Profile {
            reference: file.reference,
            default_errno: errno_number(&file.default_errno)?,
            architectures,
            allow: file
                .allow
                .into_iter()
                .flat_map(|g| {
                    let _ = g.why;
                    g.names
                })
                .collect(),
            allow_if: file.allow_if,
            errno,
            arch_only,
        })
    }

    /// Whether `name` exists only on another architecture than `arch`.
    fn foreign(&self, name: &str, arch: Arch) -> bool {
        self.arch_only
            .iter()
            .any(|(a, names)| *a != arch && names.contains(name))
    }

    /// The decision for every named call on `arch`, by syscall number.
    pub fn rules(&self, arch: Arch) -> Result<BTreeMap<u32, Rule>, SeccompError> {
        let table = arch.table();
        let number = |name: &str| -> Result<Option<u32>, SeccompError> {
            match table.get(name) {
                Some(n) => Ok(Some(*n)),
                None if self.foreign(name, arch) => Ok(None),
                None => Err(SeccompError::UnknownSyscall {
                    name: name.to_owned(),
                    arch,
                }),
            }
        };
        let mut rules = BTreeMap::new();
        for name in &self.allow {
            if let Some(nr) = number(name)? {
                rules.insert(nr, Rule::Allow);
            }
        }
        for c in &self.allow_if {
            if c.arch.as_deref().is_some_and(|a| a != arch.name()) {
                continue;
            }
            let Some(nr) = number(&c.name)? else { continue };
            match rules.entry(nr).or_insert_with(|| Rule::AllowIf(Vec::new())) {
                Rule::AllowIf(conds) => conds.push((c.arg, c.op, c.value, c.mask)),
                _ => {
                    return Err(SeccompError::Malformed(format!(
                        "{} is both allowed outright and under a condition",
                        c.name
                    )));
                }
            }
        }
        for (name, e) in &self.errno {
            if let Some(nr) = number(name)?
                && rules.insert(nr, Rule::Errno(*e)).is_some()
            {
                return Err(SeccompError::Malformed(format!(
                    "{name} has an errno and another rule"
                )));
            }
        }
        Ok(rules)
    }

    /// The errno every call the profile does not name answers.
    pub fn default_errno(&self) -> u32 {
        self.default_errno
    }

    /// The highest syscall number the profile names on `arch`: numbers above answer `ENOSYS`.
    pub fn highest_named(&self, arch: Arch) -> Result<u32, SeccompError> {
        Ok(self.rules(arch)?.keys().next_back().copied().unwrap_or(0))
    }

    /// What the profile decides for a call (the reference the compiled filter is tested against).
    pub fn decide(&self, arch: Arch, nr: u32, args: [u64; 6]) -> Result<u32, SeccompError> {
        if nr > self.highest_named(arch)? {
            return Ok(RET_ERRNO | libc::ENOSYS as u32);
        }
        let deny = RET_ERRNO | self.default_errno;
        Ok(match self.rules(arch)?.get(&nr) {
            None => deny,
            Some(Rule::Allow) => RET_ALLOW,
            Some(Rule::Errno(e)) => RET_ERRNO | e,
            Some(Rule::AllowIf(conds)) => {
                if conds
                    .iter()
                    .any(|(i, op, v, m)| op.holds(args[usize::from(*i)], *v, *m))
                {
                    RET_ALLOW
                } else {
                    deny
                }
            }
        })
    }

    /// The OCI `linux.seccomp` object for `arch` (runc compiles it with libseccomp; runsc needs
    /// `--oci-seccomp` to apply it). One condition per rule, so runc's and runsc's rule for several
    /// conditions on one argument never matter.
    pub fn to_oci(&self, arch: Arch) -> Result<Value, SeccompError> {
        let rules = self.rules(arch)?;
        let table = arch.table();
        let name_of: HashMap<u32, &str> = table.iter().map(|(n, nr)| (*nr, n.as_str())).collect();
        let mut allowed = Vec::new();
        let mut by_errno: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
        let mut syscalls = Vec::new();
        for (nr, rule) in &rules {
            let name = name_of.get(nr).copied().unwrap_or_default();
            match rule {
                Rule::Allow => allowed.push(name),
                Rule::Errno(e) => by_errno.entry(*e).or_default().push(name),
                Rule::AllowIf(conds) => {
                    for (arg, op, value, mask) in conds {
                        let cond = if *op == Op::MaskedEq {
                            json!({"index": arg, "value": mask, "valueTwo": value, "op": op.oci()})
                        } else {
                            json!({"index": arg, "value": value, "op": op.oci()})
                        };
                        syscalls.push(json!({
                            "names": [name], "action": "SCMP_ACT_ALLOW", "args": [cond]
                        }));
                    }
                }
            }
        }
        syscalls.insert(0, json!({"names": allowed, "action": "SCMP_ACT_ALLOW"}));
        for (e, names) in by_errno {
            syscalls.push(json!({"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": e}));
        }
        Ok(json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": self.default_errno,
            "architectures": [arch.oci()],
            "syscalls": syscalls,
        }))
    }
}

mod bpf;
mod exceptions;

pub use bpf::{Filter, Program};
pub use exceptions::{Exception, Policies};

#[cfg(test)]
mod tests;
