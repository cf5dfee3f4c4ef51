//! The profile compiled to classic BPF for host processes ([`Profile::compile`]), the assembler it
//! uses, and [`Program`]: the filter, an interpreter the tests check it with, and its loading.

use super::{
    Arch, Op, Profile, RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS, Rule, SeccompError, X32_BIT,
};

impl Profile {
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
