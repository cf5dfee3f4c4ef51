//! The compiled filter is checked against the profile's own decision, call by call, on both
//! architectures: every number in the tables with assorted arguments, plus the refusals the profile
//! exists for.

use super::*;

const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;

fn nr(arch: Arch, name: &str) -> u32 {
    *arch
        .table()
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not in the {arch} table"))
}

fn program(arch: Arch) -> Program {
    Profile::builtin().unwrap().compile(arch).unwrap()
}

#[test]
fn the_profile_parses_and_names_only_known_calls() {
    let p = Profile::builtin().unwrap();
    assert!(p.reference.contains("moby/profiles"));
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let rules = p.rules(arch).unwrap();
        assert!(rules.len() > 250, "{arch}: {} rules", rules.len());
        // The highest named number is the highest in the table: nothing in the tables is left out of
        // the ENOSYS rule by accident.
        let table_max = arch.table().values().max().copied().unwrap();
        assert_eq!(p.highest_named(arch).unwrap(), table_max);
    }
}

#[test]
fn the_calls_the_profile_exists_to_refuse_are_refused() {
    let refused = [
        "unshare",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "mount",
        "umount2",
        "pivot_root",
        "kexec_load",
        "kexec_file_load",
        "open_by_handle_at",
        "init_module",
        "finit_module",
        "delete_module",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
        "swapon",
        "reboot",
        "fsopen",
        "fsmount",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "syslog",
        "acct",
    ];
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let prog = program(arch);
        for name in refused {
            let n = nr(arch, name);
            assert_eq!(
                prog.run(arch.audit(), n, [0; 6]),
                EPERM,
                "{arch}: {name} must be refused with EPERM"
            );
        }
        // A new process is fine; a new namespace through clone is not.
        let clone = nr(arch, "clone");
        let thread_flags = 0x003d_0f00; // CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|PARENT_SETTID|CHILD_CLEARTID
        assert_eq!(
            prog.run(arch.audit(), clone, [thread_flags, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        for ns_flag in [
            0x1000_0000u64, // CLONE_NEWUSER
            0x2000_0000,    // CLONE_NEWPID
            0x4000_0000,    // CLONE_NEWNET
            0x0002_0000,    // CLONE_NEWNS
        ] {
            assert_eq!(
                prog.run(arch.audit(), clone, [thread_flags | ns_flag, 0, 0, 0, 0, 0]),
                EPERM,
                "{arch}: clone with {ns_flag:#x}"
            );
        }
        // clone3's flags are out of reach: ENOSYS makes libcs fall back to clone.
        assert_eq!(prog.run(arch.audit(), nr(arch, "clone3"), [0; 6]), ENOSYS);
        // Sockets: AF_INET yes, AF_ALG and AF_VSOCK no, AF_ALG with stray upper bits no.
        let socket = nr(arch, "socket");
        assert_eq!(
            prog.run(arch.audit(), socket, [2, 1, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(prog.run(arch.audit(), socket, [38, 5, 0, 0, 0, 0]), EPERM);
        assert_eq!(prog.run(arch.audit(), socket, [40, 1, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            prog.run(arch.audit(), socket, [0xffff_ffff_0000_0026, 5, 0, 0, 0, 0]),
            EPERM
        );
        // personality: the normal persona yes, turning off address randomization no.
        let personality = nr(arch, "personality");
        assert_eq!(prog.run(arch.audit(), personality, [0; 6]), RET_ALLOW);
        assert_eq!(
            prog.run(arch.audit(), personality, [0x0004_0000, 0, 0, 0, 0, 0]),
            EPERM
        );
        // Newer than the profile: ENOSYS, so libraries fall back.
        assert_eq!(prog.run(arch.audit(), 1000, [0; 6]), ENOSYS);
        // Another ABI: the number means something else, the process is killed.
        assert_eq!(prog.run(0x4000_0003, 1, [0; 6]), RET_KILL_PROCESS);
        // What a server does all day is allowed.
        for name in [
            "read",
            "write",
            "openat",
            "close",
            "mmap",
            "futex",
            "epoll_pwait",
            "accept4",
            "sendto",
            "recvfrom",
            "execve",
            "exit_group",
            "getrandom",
            "rseq",
        ] {
            assert_eq!(
                prog.run(arch.audit(), nr(arch, name), [0; 6]),
                RET_ALLOW,
                "{name}"
            );
        }
    }
    // x32 calls (x86-64 numbers with bit 30) are killed; a tracer's -1 is refused.
    let x86 = program(Arch::X86_64);
    assert_eq!(
        x86.run(Arch::X86_64.audit(), 0x4000_0000 | 1, [0; 6]),
        RET_KILL_PROCESS
    );
    assert_eq!(x86.run(Arch::X86_64.audit(), u32::MAX, [0; 6]), EPERM);
}

#[test]
fn the_filter_decides_every_call_as_the_profile_does() {
    let p = Profile::builtin().unwrap();
    let samples: [[u64; 6]; 6] = [
        [0; 6],
        [1, 2, 3, 4, 5, 6],
        [38, 0, 0, 0, 0, 0],
        [u64::MAX; 6],
        [0x7e02_0000, 0, 0, 0, 0, 0],
        [0x1_0000_0000, 8, 0x20008, 0, 0, 0],
    ];
    for arch in [Arch::X86_64, Arch::Aarch64] {
        let prog = p.compile(arch).unwrap();
        assert!(
            prog.instructions().len() < 1500,
            "{} instructions",
            prog.instructions().len()
        );
        for n in 0..520u32 {
            for args in samples {
                assert_eq!(
                    prog.run(arch.audit(), n, args),
                    p.decide(arch, n, args).unwrap(),
                    "{arch}: syscall {n} with {args:?}"
                );
            }
        }
    }
}

#[test]
fn every_comparison_compiles_to_its_meaning() {
    // A profile of one call per operator, checked on values around the boundary in both words.
    let text = r#"{
        "defaultErrno": "EPERM", "architectures": ["x86_64"], "allow": [], "errno": [],
        "allowIf": [
            {"name": "read", "arg": 0, "op": "eq", "value": 4294967301},
            {"name": "write", "arg": 1, "op": "ne", "value": 4294967301},
            {"name": "open", "arg": 2, "op": "lt", "value": 4294967301},
            {"name": "close", "arg": 3, "op": "le", "value": 4294967301},
            {"name": "stat", "arg": 4, "op": "gt", "value": 4294967301},
            {"name": "fstat", "arg": 5, "op": "ge", "value": 4294967301},
            {"name": "lstat", "arg": 0, "op": "masked_eq", "mask": 81604378880, "value": 4294967296}
        ]
    }"#;
    let p = Profile::parse(text).unwrap();
    let prog = p.compile(Arch::X86_64).unwrap();
    let values = [
        0u64,
        4,
        5,
        6,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0004,
        0x1_0000_0005,
        0x1_0000_0006,
        0x2_0000_0000,
        0x13_0000_0000,
        u64::MAX,
    ];
    for name in ["read", "write", "open", "close", "stat", "fstat", "lstat"] {
        let n = nr(Arch::X86_64, name);
        for v in values {
            for slot in 0..6 {
                let mut args = [0u64; 6];
                args[slot] = v;
                assert_eq!(
                    prog.run(Arch::X86_64.audit(), n, args),
                    p.decide(Arch::X86_64, n, args).unwrap(),
                    "{name} with args[{slot}] = {v:#x}"
                );
            }
        }
    }
}

#[test]
fn the_oci_form_lists_only_this_architectures_calls() {
    let p = Profile::builtin().unwrap();
    let x86 = p.to_oci(Arch::X86_64).unwrap();
    let arm = p.to_oci(Arch::Aarch64).unwrap();
    assert_eq!(x86["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(x86["defaultErrnoRet"], 1);
    assert_eq!(x86["architectures"][0], "SCMP_ARCH_X86_64");
    let names = |v: &Value, action: &str| -> Vec<String> {
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == action && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_owned())
            .collect()
    };
    let x86_allowed = names(&x86, "SCMP_ACT_ALLOW");
    let arm_allowed = names(&arm, "SCMP_ACT_ALLOW");
    assert!(x86_allowed.contains(&"arch_prctl".to_owned()));
    assert!(!arm_allowed.contains(&"arch_prctl".to_owned()));
    assert!(!x86_allowed.contains(&"ptrace".to_owned()));
    assert!(names(&x86, "SCMP_ACT_ERRNO").contains(&"clone3".to_owned()));
    // clone's condition: libseccomp takes the mask in `value` and the result in `valueTwo`.
    let clone = x86["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["names"][0] == "clone")
        .unwrap();
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone["args"][0]["value"], 0x7e02_0000u64);
    assert_eq!(clone["args"][0]["valueTwo"], 0);
}
