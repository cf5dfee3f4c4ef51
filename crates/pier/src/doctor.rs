//! `pier doctor`: what this host gives instances, checked the way the server would use it, each line
//! with the fix when something is missing. It changes nothing on the host beyond a probe cgroup it
//! removes again. Exit status 1 when something the server needs by default is missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};
use pier_runtime::cgroup::CgroupRoot;
use pier_sandbox::ids::{IdRange, RangeSource};
use pier_sandbox::{Arch, Profile};

/// How much a finding matters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    /// Works, but not as it should for production.
    Warn,
    /// A default feature cannot work.
    Fail,
}

struct Report {
    failed: bool,
}

impl Report {
    #[allow(clippy::print_stdout)]
    fn line(&mut self, level: Level, what: &str, detail: &str) {
        let tag = match level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => {
                self.failed = true;
                "FAIL"
            }
        };
        println!("  {tag}  {what}: {detail}");
    }
}

/// The first line of `program --version`, or `None` when it cannot be run.
fn version(program: &str, flag: &str) -> Option<String> {
    let out = Command::new(program).arg(flag).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Some(text.lines().next().unwrap_or("").trim().to_owned())
}

/// The running kernel's (major, minor).
fn kernel() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Runs the checks; fails when a default feature cannot work.
#[allow(clippy::print_stdout)]
pub fn run(data_dir: Option<PathBuf>) -> Result<()> {
    let mut r = Report { failed: false };
    println!("Pier doctor: what this host gives instances");

    // Root: namespaces, cgroups and mounts for every instance need it.
    if nix::unistd::geteuid().is_root() {
        r.line(
            Level::Ok,
            "root",
            "the server can make instances' namespaces, cgroups and mounts",
        );
    } else {
        r.line(
            Level::Fail,
            "root",
            "not root: no instance can start (each needs namespaces only root can make); run `pier server` as root",
        );
    }

    // Host ids.
    match IdRange::detect() {
        Ok(range) if range.source == RangeSource::SubidFiles => r.line(
            Level::Ok,
            "host ids",
            &format!("/etc/subuid and /etc/subgid give Pier {range}"),
        ),
        Ok(range) => {
            let (u, g) = range.subid_lines();
            r.line(
                Level::Warn,
                "host ids",
                &format!(
                    "no `pier` line in /etc/subuid and /etc/subgid: Pier uses {range}; reserve them so no other tool hands them out: add `{u}` to /etc/subuid and `{g}` to /etc/subgid"
                ),
            );
        }
        Err(e) => r.line(Level::Fail, "host ids", &e.to_string()),
    }

    // Limits.
    let probe = format!("doctor-{}", std::process::id());
    match CgroupRoot::detect(&probe) {
        Some(root) => {
            let missing = root.enforced().missing();
            if missing.is_empty() {
                r.line(Level::Ok, "limits", "memory, CPU and process limits hold for every instance");
            } else {
                r.line(
                    Level::Warn,
                    "limits",
                    &format!(
                        "this host cannot enforce {} limits: mount the cgroup controllers (cgroup v2 with memory, cpu and pids, or the v1 hierarchies)",
                        missing.join(", ")
                    ),
                );
            }
            root.remove_if_empty();
        }
        None => r.line(
            Level::Fail,
            "limits",
            "no usable cgroups: mount cgroup2 at /sys/fs/cgroup (or the v1 controllers) and run as root",
        ),
    }

    // The sandbox's filter.
    match Arch::native().and_then(|a| Profile::builtin()?.compile(a).map(|_| a)) {
        Ok(arch) => r.line(
            Level::Ok,
            "seccomp",
            &format!("the profile compiles for {arch}"),
        ),
        Err(e) => r.line(Level::Fail, "seccomp", &e.to_string()),
    }

    // The kernel: idmapped mounts (5.12) and overlays of detached layers (lowerdir+, 6.8) for gen2.
    match kernel() {
        Some(k) if k >= (6, 8) => r.line(
            Level::Ok,
            "kernel",
            &format!("{}.{}: idmapped image layers stacked without copies (gen2)", k.0, k.1),
        ),
        Some(k) if k >= (5, 12) => r.line(
            Level::Warn,
            "kernel",
            &format!(
                "{}.{}: gen2 roots are idmapped copies of the image (6.8 stacks shared layers instead)",
                k.0, k.1
            ),
        ),
        Some(k) => r.line(
            Level::Fail,
            "kernel",
            &format!("{}.{}: idmapped mounts need Linux 5.12 or later", k.0, k.1),
        ),
        None => r.line(Level::Warn, "kernel", "cannot read the kernel's version"),
    }

    // Programs.
    for (program, flag, level, needed_for, package) in [
        (
            "ip",
            "-V",
            Level::Fail,
            "instances' network namespaces",
            "iproute2",
        ),
        (
            "nft",
            "--version",
            Level::Fail,
            "instances' firewalls",
            "nftables",
        ),
        (
            "slirp4netns",
            "--version",
            Level::Fail,
            "outbound network (--egress user, the default)",
            "slirp4netns",
        ),
        (
            "runc",
            "--version",
            Level::Warn,
            "container images (gen2)",
            "runc",
        ),
        ("runsc", "--version", Level::Warn, "gen1 (gVisor)", "runsc"),
    ] {
        match version(program, flag) {
            Some(v) => r.line(Level::Ok, program, &format!("{v} ({needed_for})")),
            None => r.line(
                level,
                program,
                &format!("not found: {needed_for} cannot work; install it (apt install {package})"),
            ),
        }
    }

    // The default ports.
    let busy: Vec<String> = [("0.0.0.0", 8443), ("0.0.0.0", 8080), ("127.0.0.1", 8079)]
        .into_iter()
        .filter(|(host, port)| TcpListener::bind((*host, *port)).is_err())
        .map(|(_, port)| port.to_string())
        .collect();
    if busy.is_empty() {
        r.line(
            Level::Ok,
            "ports",
            "8443, 8080 and 8079 are free for `pier server`'s defaults",
        );
    } else {
        r.line(
            Level::Warn,
            "ports",
            &format!(
                "{} in use (a server running already?): pass --https-port, --http-port or --api-addr",
                busy.join(", ")
            ),
        );
    }

    // Names: curl and browsers resolve *.localhost themselves; Python, gcloud and gRPC ask the system.
    use std::net::ToSocketAddrs;
    let resolves = |host: &str| {
        (host, 443)
            .to_socket_addrs()
            .is_ok_and(|mut a| a.any(|a| a.ip().is_loopback()))
    };
    if resolves("pier.localhost") && resolves("hello-0.pier.localhost") {
        r.line(
            Level::Ok,
            "names",
            "pier.localhost and its service hosts resolve to this machine",
        );
    } else {
        r.line(
            Level::Warn,
            "names",
            "*.pier.localhost does not resolve for programs that ask the system (Python, gcloud, gRPC; curl and browsers resolve it themselves): apt install libnss-myhostname (Debian's package puts myhostname in the hosts: line of /etc/nsswitch.conf)",
        );
    }

    // Descriptor headroom.
    let (open, limit) = pier_control::machine::descriptors();
    if limit >= 65_536 {
        r.line(
            Level::Ok,
            "descriptors",
            &format!("a limit of {limit} (each connection and instance takes a few)"),
        );
    } else {
        r.line(
            Level::Warn,
            "descriptors",
            &format!("a limit of {limit} ({open} open now): a busy server runs out; raise it to 65536 or more (LimitNOFILE=, ulimit -n)"),
        );
    }

    // Where the data would go, how much room it has, and whether this machine trusts its CA.
    if let Some(dir) = data_dir {
        // The data dir may not exist yet: measure the nearest folder that does.
        let existing = dir
            .ancestors()
            .find(|a| a.exists())
            .unwrap_or(std::path::Path::new("/"));
        let room = pier_control::machine::space(existing)
            .map(|(free, total, ifree, itotal)| {
                format!(
                    "{} free of {}, {ifree} of {itotal} inodes",
                    pier_control::machine::human(free),
                    pier_control::machine::human(total)
                )
            })
            .unwrap_or_default();
        match pier_control::machine::low_space(existing) {
            None => r.line(
                Level::Ok,
                "data dir",
                &format!("{} ({room}; hidden from every instance)", dir.display()),
            ),
            Some(w) => r.line(Level::Warn, "data dir", &w),
        }
        if let Ok(ca) = std::fs::read_to_string(dir.join("ca.pem")) {
            let trusted = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt")
                .is_ok_and(|bundle| bundle.contains(ca.trim()));
            if trusted {
                r.line(Level::Ok, "CA", "this machine trusts Pier's local CA");
            } else {
                r.line(
                    Level::Warn,
                    "CA",
                    &format!(
                        "this machine does not trust Pier's local CA: pass it per program (curl --cacert, REQUESTS_CA_BUNDLE, NODE_EXTRA_CA_CERTS) or copy {}/ca.pem to /usr/local/share/ca-certificates/pier.crt and run update-ca-certificates",
                        dir.display()
                    ),
                );
            }
        }
    }

    if r.failed {
        bail!("this host cannot run Pier's defaults: fix the FAIL lines above");
    }
    Ok(())
}
