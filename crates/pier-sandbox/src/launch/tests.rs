//! A real process in a real sandbox: a shell script probes what it can and cannot do and prints the
//! answers, which the test checks. Needs root (namespaces, mounts, other uids), as CI runs it.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::*;
use crate::fsview::{HostView, PierFiles};
use crate::seccomp::{Arch, Profile};
use crate::userns::UserNsCache;

const UID: u32 = 1_879_048_192 + 7 * 65536;

fn root() {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the sandbox needs root: run the tests as root, as CI does"
    );
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap()
}

/// Runs `script` with `sh` in a full sandbox (view, user, seccomp, no network namespace) from
/// `workdir`; returns its exit and output.
fn run(view: &HostView, workdir: &Path, script: &str) -> (Exit, String) {
    let userns = UserNsCache::default();
    let plan = view
        .plan(
            workdir,
            Some(Path::new("/bin/sh")),
            &[],
            true,
            &[],
            UID,
            UID,
            &userns,
        )
        .unwrap();
    let (r, w) = pipe().unwrap();
    let launch = Launch {
        program: cstr("/bin/sh"),
        argv: vec![cstr("sh"), cstr("-c"), cstr(script)],
        envp: vec![cstr("PATH=/usr/bin:/bin"), cstr("HOME=/tmp")],
        workdir: cstr("/"),
        stdout: w.try_clone().unwrap(),
        stderr: w,
        cgroups: Vec::new(),
        netns: None,
        view: Some(plan),
        user: Some((UID, UID)),
        seccomp: Some(
            Profile::builtin()
                .unwrap()
                .compile(Arch::native().unwrap())
                .unwrap(),
        ),
        gate: None,
    };
    let child = spawn(&launch).unwrap();
    drop(launch);
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    let exit = reap(&child.pidfd).unwrap();
    (exit, out)
}

fn answers(out: &str) -> std::collections::HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn a_sandboxed_process_sees_and_does_only_what_it_may() {
    root();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("owner-credentials.json"), "secret").unwrap();
    // An app in a 0700 folder owned by root, as tests and the quickstart have them.
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("data.txt"), "app data").unwrap();
    std::fs::set_permissions(
        app.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let hosts = app.path().join("hosts-for-instances");
    std::fs::write(&hosts, "169.254.169.253 svc.pier.localhost\n").unwrap();
    // A hidden folder inside another (the CLI's config dir inside a hidden home) is hidden with it.
    let nested = secrets.path().join("cli-config");
    std::fs::create_dir(&nested).unwrap();
    let view = HostView::new(
        &[secrets.path().to_owned(), nested],
        &PierFiles {
            hosts: Some(hosts),
            ..Default::default()
        },
    );
    let secret = secrets.path().join("owner-credentials.json");
    let script = format!(
        r#"
        echo uid=$(id -u)
        echo caps=$(grep CapEff /proc/self/status | tr -d '\t' | cut -d: -f2)
        echo nnp=$(grep NoNewPrivs /proc/self/status | tr -d '\t' | cut -d: -f2)
        echo seccomp=$(grep '^Seccomp:' /proc/self/status | tr -d '\t' | cut -d: -f2)
        cat {secret} >/dev/null 2>&1 && echo datadir=readable || echo datadir=hidden
        cat /etc/shadow 2>/dev/null | grep -q root && echo shadow=readable || echo shadow=hidden
        ls -A /root 2>/dev/null | grep -q . && echo roothome=visible || echo roothome=empty
        echo x > /etc/pier-probe 2>/dev/null && echo etc=writable || echo etc=readonly
        echo x > /tmp/probe && echo tmp=writable || echo tmp=readonly
        cat data.txt >/dev/null 2>&1 && echo app=readable || echo app=unreadable
        echo x > data.txt 2>/dev/null && echo appwrite=yes || echo appwrite=no
        grep -q svc.pier.localhost /etc/hosts && echo hosts=pier || echo hosts=host
        echo pids=$(ls -d /proc/[0-9]* | wc -l)
        kill -0 1 2>/dev/null && echo init=signalable || echo init=refused
        echo host=$(hostname)
        unshare -U true 2>/dev/null && echo userns=yes || echo userns=no
        echo null=$(echo hi > /dev/null && echo ok)
        "#,
        secret = secret.display()
    );
    let (exit, out) = run(&view, app.path(), &script);
    assert_eq!(exit, Exit::Code(0), "{out}");
    let a = answers(&out);
    let expect = [
        ("uid", UID.to_string()),
        ("caps", "0000000000000000".to_owned()),
        ("nnp", "1".to_owned()),
        ("seccomp", "2".to_owned()),
        ("datadir", "hidden".to_owned()),
        ("shadow", "hidden".to_owned()),
        ("roothome", "empty".to_owned()),
        ("etc", "readonly".to_owned()),
        ("tmp", "writable".to_owned()),
        ("app", "readable".to_owned()),
        ("appwrite", "no".to_owned()),
        ("hosts", "pier".to_owned()),
        ("init", "refused".to_owned()),
        ("host", "localhost".to_owned()),
        ("userns", "no".to_owned()),
        ("null", "ok".to_owned()),
    ];
    for (k, v) in expect {
        assert_eq!(a.get(k), Some(&v), "{k} in:\n{out}");
    }
    // Only its own processes (the shell and its pipeline) exist for it.
    let pids: usize = a["pids"].parse().unwrap();
    assert!(pids < 10, "{pids} processes visible:\n{out}");
    // The host saw none of it.
    assert!(!Path::new("/etc/pier-probe").exists());
    assert!(!Path::new("/tmp/probe").exists());
}

#[test]
fn failures_name_the_step_and_missing_programs_are_not_found() {
    root();
    let view = HostView::new(&[], &PierFiles::default());
    let dir = tempfile::tempdir().unwrap();
    let userns = UserNsCache::default();
    let (r, w) = pipe().unwrap();
    drop(r);
    let launch = Launch {
        program: cstr("/no/such/program"),
        argv: vec![cstr("x")],
        envp: Vec::new(),
        workdir: cstr("/"),
        stdout: w.try_clone().unwrap(),
        stderr: w,
        cgroups: Vec::new(),
        netns: None,
        view: Some(
            view.plan(dir.path(), None, &[], true, &[], UID, UID, &userns)
                .unwrap(),
        ),
        user: Some((UID, UID)),
        seccomp: None,
        gate: None,
    };
    match spawn(&launch) {
        Err(LaunchError::NotFound(p)) => assert_eq!(p, "/no/such/program"),
        other => panic!("expected not found, got {other:?}"),
    }
    // A working directory holding a secret is refused before anything runs.
    let secrets = tempfile::tempdir().unwrap();
    let data = secrets.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(
        secrets.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let view = HostView::new(std::slice::from_ref(&data), &PierFiles::default());
    let err = view
        .plan(secrets.path(), None, &[], true, &[], UID, UID, &userns)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Pier's own files") && err.contains("--workdir"),
        "{err}"
    );
    // Without the right to private paths, a hidden or closed working directory is refused outright.
    let app = tempfile::tempdir().unwrap();
    let err = view
        .plan(app.path(), None, &[], false, &[], UID, UID, &userns)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not visible to instances"), "{err}");
    let _: PathBuf = data;
}

/// The parent-death signal fires when the forking *thread* ends: children forked on a short-lived
/// thread die with it, children forked through the spawner live on.
#[test]
fn children_outlive_the_thread_that_asked_for_them() {
    root();
    let start = || {
        let (r, w) = pipe().unwrap();
        drop(r);
        Launch {
            program: cstr("/bin/sleep"),
            argv: vec![cstr("sleep"), cstr("30")],
            envp: Vec::new(),
            workdir: cstr("/"),
            stdout: w.try_clone().unwrap(),
            stderr: w,
            cgroups: Vec::new(),
            netns: None,
            view: None,
            user: None,
            seccomp: None,
            gate: None,
        }
    };
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z") && !s.contains(") X"))
    };
    // Forked on a thread that then ends: killed.
    let direct = std::thread::spawn(move || spawn(&start()).unwrap())
        .join()
        .unwrap();
    // Forked through the spawner, asked from a thread that then ends: alive.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        Spawner::global()
            .run(
                move || spawn(&start()).unwrap(),
                move |s| tx.send(s).unwrap(),
            )
            .unwrap();
    })
    .join()
    .unwrap();
    let spawned = rx.recv().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = reap(&direct.pidfd);
    assert!(
        !alive(direct.pid),
        "a child of an ended thread got its death signal"
    );
    assert!(alive(spawned.pid), "the spawner's child lives on");
    #[allow(unsafe_code)]
    // SAFETY: kill on our own child.
    unsafe {
        libc::kill(spawned.pid, libc::SIGKILL);
    }
    let _ = reap(&spawned.pidfd);
}
