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

/// What went wrong building a filter: always a bug in the profile or its tables, caught by the tests.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
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
#[derive(Debug)]
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

    /// Compiles the profile to a classic BPF program for `arch` (see the module docs for its shape).
    pub fn compile(&self, arch: Arch) -> Result<Program, SeccompError> {
        if !self.architectures.contains(&arch) {
            return Err(SeccompError::UnsupportedArch(arch.name()));
        }
        let rules = self.rules(arch)?;
        let highest = rules.keys().next_back().copied().unwrap_or(0);
        let deny = RET_ERRNO | self.default_errno;
        let mut asm = Asm::default();
        // 1. The ABI.
        asm.push(Ins::Ld(OFF_ARCH));
        asm.push(Ins::Jeq(arch.audit(), Jmp::Skip(1), Jmp::Next));
        asm.push(Ins::Ret(RET_KILL_PROCESS));
        asm.push(Ins::Ld(OFF_NR));
        if arch == Arch::X86_64 {
            // x32 calls arrive as x86-64 with the marker bit; -1 is a tracer skipping the call.
            let x32 = asm.label();
            asm.push(Ins::Jge(X32_BIT, Jmp::To(x32), Jmp::Next));
            let native = asm.label();
            asm.push(Ins::Ja(native));
            asm.place(x32);
            let skip = asm.label();
            asm.push(Ins::Jeq(u32::MAX, Jmp::To(skip), Jmp::Next));
            asm.push(Ins::Ret(RET_KILL_PROCESS));
            asm.place(skip);
            asm.push(Ins::Ret(deny));
            asm.place(native);
        }
        // 2. Newer than the profile.
        let known = asm.label();
        asm.push(Ins::Jgt(highest, Jmp::Next, Jmp::To(known)));
        asm.push(Ins::Ret(RET_ERRNO | libc::ENOSYS as u32));
        asm.place(known);
        // 3. The named calls, found by a binary search on the number; 4. the default.
        let entries: Vec<(u32, &Rule)> = rules.iter().map(|(n, r)| (*n, r)).collect();
        search(&mut asm, &entries, deny);
        let filter = asm.assemble()?;
        if filter.len() > 4096 {
            return Err(SeccompError::TooLarge(format!(
                "{} instructions, BPF allows 4096",
                filter.len()
            )));
        }
        Ok(Program { filter })
    }
}

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg_lo(i: u8) -> u32 {
    16 + 8 * u32::from(i)
}
fn off_arg_hi(i: u8) -> u32 {
    20 + 8 * u32::from(i)
}

/// Entries at most this many are tested one by one; more are split in halves.
const LEAF: usize = 6;

/// Emits the decision for `entries` (sorted by number; the accumulator holds the number).
fn search(asm: &mut Asm, entries: &[(u32, &Rule)], deny: u32) {
    if entries.len() <= LEAF {
        for (nr, rule) in entries {
            let next = asm.label();
            asm.push(Ins::Jeq(*nr, Jmp::Next, Jmp::To(next)));
            emit_rule(asm, rule, deny);
            asm.place(next);
        }
        asm.push(Ins::Ret(deny));
        return;
    }
    let mid = entries.len() / 2;
    let upper = asm.label();
    asm.push(Ins::Jge(entries[mid].0, Jmp::Next, Jmp::Skip(1)));
    asm.push(Ins::Ja(upper));
    search(asm, &entries[..mid], deny);
    asm.place(upper);
    search(asm, &entries[mid..], deny);
}

/// Emits the block of one call; it always ends in a return.
fn emit_rule(asm: &mut Asm, rule: &Rule, deny: u32) {
    match rule {
        Rule::Allow => asm.push(Ins::Ret(RET_ALLOW)),
        Rule::Errno(e) => asm.push(Ins::Ret(RET_ERRNO | e)),
        Rule::AllowIf(conds) => {
            for (arg, op, value, mask) in conds {
                let fail = asm.label();
                let pass = asm.label();
                emit_condition(asm, *arg, *op, *value, *mask, pass, fail);
                asm.place(pass);
                asm.push(Ins::Ret(RET_ALLOW));
                asm.place(fail);
            }
            asm.push(Ins::Ret(deny));
        }
    }
}

/// Jumps to `pass` when `args[arg] op value` holds, else to `fail`, comparing the high words first.
fn emit_condition(asm: &mut Asm, arg: u8, op: Op, value: u64, mask: u64, pass: Label, fail: Label) {
    let (vh, vl) = ((value >> 32) as u32, value as u32);
    let (mh, ml) = ((mask >> 32) as u32, mask as u32);
    let (p, f) = (Jmp::To(pass), Jmp::To(fail));
    let hi = off_arg_hi(arg);
    let lo = off_arg_lo(arg);
    match op {
        Op::Eq => {
            asm.push(Ins::Ld(hi));
            asm.push(Ins::Jeq(vh, Jmp::Next, f));
            asm.push(Ins::Ld(lo));
            asm.push(Ins::Jeq(vl, p, f));
        }
        Op::Ne => {
            asm.push(Ins::Ld(hi));
            asm.push(Ins::Jeq(vh, Jmp::Next, p));
            asm.push(Ins::Ld(lo));
            asm.push(Ins::Jeq(vl, f, p));
        }
        Op::MaskedEq => {
            asm.push(Ins::Ld(hi));
            asm.push(Ins::And(mh));
            asm.push(Ins::Jeq(vh, Jmp::Next, f));
            asm.push(Ins::Ld(lo));
            asm.push(Ins::And(ml));
            asm.push(Ins::Jeq(vl, p, f));
        }
        Op::Gt | Op::Ge => {
            // hi > vh: holds; hi < vh: fails; equal: decided by the low word.
            asm.push(Ins::Ld(hi));
            asm.push(Ins::Jgt(vh, p, Jmp::Next));
            asm.push(Ins::Jeq(vh, Jmp::Next, f));
            asm.push(Ins::Ld(lo));
            if op == Op::Gt {
                asm.push(Ins::Jgt(vl, p, f));
            } else {
                asm.push(Ins::Jge(vl, p, f));
            }
        }
        Op::Lt | Op::Le => {
            asm.push(Ins::Ld(hi));
            asm.push(Ins::Jgt(vh, f, Jmp::Next));
            asm.push(Ins::Jeq(vh, Jmp::Next, p));
            asm.push(Ins::Ld(lo));
            if op == Op::Lt {
                asm.push(Ins::Jge(vl, f, p));
            } else {
                asm.push(Ins::Jgt(vl, f, p));
            }
        }
    }
}

// ----- a small assembler with labels -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Label(usize);

#[derive(Clone, Copy, Debug)]
enum Jmp {
    /// The next instruction.
    Next,
    /// Skip this many instructions.
    Skip(u8),
    /// A label.
    To(Label),
}

#[derive(Clone, Copy, Debug)]
enum Ins {
    Ld(u32),
    And(u32),
    Jeq(u32, Jmp, Jmp),
    Jgt(u32, Jmp, Jmp),
    Jge(u32, Jmp, Jmp),
    Ja(Label),
    Ret(u32),
}

#[derive(Default)]
struct Asm {
    code: Vec<Ins>,
    labels: Vec<Option<usize>>,
}

// Classic BPF opcodes (linux/bpf_common.h): class | size/op | mode/source.
/// `BPF_LD | BPF_W | BPF_ABS`.
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`.
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
/// `BPF_JMP | BPF_JA`.
const BPF_JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
/// `BPF_JMP | BPF_JGT | BPF_K`.
const BPF_JMP_JGT_K: u16 = 0x05 | 0x20;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
/// `BPF_RET | BPF_K`.
const BPF_RET_K: u16 = 0x06;

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn place(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }

    fn push(&mut self, i: Ins) {
        self.code.push(i);
    }

    fn assemble(&self) -> Result<Vec<Filter>, SeccompError> {
        let target = |l: Label| -> Result<usize, SeccompError> {
            self.labels[l.0]
                .ok_or_else(|| SeccompError::TooLarge("a jump to a label never placed".into()))
        };
        let mut out = Vec::with_capacity(self.code.len());
        for (pc, ins) in self.code.iter().enumerate() {
            let rel = |j: Jmp| -> Result<u8, SeccompError> {
                let off = match j {
                    Jmp::Next => 0,
                    Jmp::Skip(n) => usize::from(n),
                    Jmp::To(l) => {
                        let t = target(l)?;
                        t.checked_sub(pc + 1)
                            .ok_or_else(|| SeccompError::TooLarge("a backward jump".into()))?
                    }
                };
                u8::try_from(off).map_err(|_| {
                    SeccompError::TooLarge(format!("a conditional jump of {off} instructions"))
                })
            };
            out.push(match *ins {
                Ins::Ld(k) => Filter::new(BPF_LD_W_ABS, 0, 0, k),
                Ins::And(k) => Filter::new(BPF_ALU_AND_K, 0, 0, k),
                Ins::Ret(k) => Filter::new(BPF_RET_K, 0, 0, k),
                Ins::Ja(l) => {
                    let off = target(l)?
                        .checked_sub(pc + 1)
                        .ok_or_else(|| SeccompError::TooLarge("a backward jump".into()))?;
                    Filter::new(BPF_JMP_JA, 0, 0, off as u32)
                }
                Ins::Jeq(k, t, f) => Filter::new(BPF_JMP_JEQ_K, rel(t)?, rel(f)?, k),
                Ins::Jgt(k, t, f) => Filter::new(BPF_JMP_JGT_K, rel(t)?, rel(f)?, k),
                Ins::Jge(k, t, f) => Filter::new(BPF_JMP_JGE_K, rel(t)?, rel(f)?, k),
            });
        }
        Ok(out)
    }
}

/// One BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Filter {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

impl Filter {
    fn new(code: u16, jt: u8, jf: u8, k: u32) -> Self {
        Self { code, jt, jf, k }
    }
}

/// A compiled filter, ready to load.
#[derive(Clone, Debug)]
pub struct Program {
    filter: Vec<Filter>,
}

impl Program {
    /// The instructions.
    pub fn instructions(&self) -> &[Filter] {
        &self.filter
    }

    /// Runs the program on a call, as the kernel would (for tests and `pier doctor`).
    pub fn run(&self, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let word = |off: u32| -> u32 {
            match off {
                OFF_NR => nr,
                OFF_ARCH => arch,
                o if (16..64).contains(&o) => {
                    let i = ((o - 16) / 8) as usize;
                    if (o - 16) % 8 == 0 {
                        args[i] as u32
                    } else {
                        (args[i] >> 32) as u32
                    }
                }
                _ => 0,
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        while let Some(f) = self.filter.get(pc) {
            let jump = |cond: bool| pc + 1 + usize::from(if cond { f.jt } else { f.jf });
            pc = match f.code {
                BPF_LD_W_ABS => {
                    acc = word(f.k);
                    pc + 1
                }
                BPF_ALU_AND_K => {
                    acc &= f.k;
                    pc + 1
                }
                BPF_JMP_JA => pc + 1 + f.k as usize,
                BPF_JMP_JEQ_K => jump(acc == f.k),
                BPF_JMP_JGT_K => jump(acc > f.k),
                BPF_JMP_JGE_K => jump(acc >= f.k),
                BPF_RET_K => return f.k,
                _ => return RET_KILL_PROCESS,
            };
        }
        RET_KILL_PROCESS
    }

    /// Sets `no_new_privs` and installs the filter on the calling thread. Async-signal-safe: it only
    /// makes system calls on memory that exists already, so it may run in a forked child before `exec`.
    /// Like runc, it passes `SECCOMP_FILTER_FLAG_SPEC_ALLOW` (no forced speculative-store-bypass
    /// mitigation).
    pub fn load(&self) -> std::io::Result<()> {
        #[allow(unsafe_code)]
        // SAFETY: prctl and seccomp take plain integers and a pointer to a `sock_fprog` that points at
        // `self.filter`, which outlives both calls; `Filter` has `struct sock_filter`'s layout.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let prog = libc::sock_fprog {
                len: self.filter.len() as u16,
                filter: self.filter.as_ptr() as *mut libc::sock_filter,
            };
            const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
            const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_long = 1 << 2;
            if libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
