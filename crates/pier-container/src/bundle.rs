//! The OCI runtime bundle of one instance: `config.json` built from the image's config and the revision's
//! template, following Cloud Run's (and Kubernetes') rules:
//!
//! - the argument vector: `--command` replaces the image's Entrypoint (and drops its Cmd), `--args`
//!   replaces Cmd; `$(VAR)` in the revision's command and args expands from the environment;
//! - the environment: the image's, then the revision's variables, then Pier's, then the reserved `PORT` and
//!   `K_*` (which always win); `PATH` defaults as in Docker when the image sets none;
//! - the working directory: the revision's, else the image's, else `/`;
//! - the user: the image's `User`, resolved in the image's own `/etc/passwd` and `/etc/group`.
//!
//! What every container gets, from [`pier_sandbox`]'s policy: pid, mount, ipc, uts and cgroup namespaces
//! and the network namespace Pier made; in gen2 also its service's user namespace (image root is an
//! unprivileged host user); Pier's seccomp profile and `no_new_privs`; a read-only root; in-memory `/tmp`;
//! Docker's default capabilities less `NET_RAW` and `MKNOD`; Docker's masked and read-only paths; memory
//! and CPU limits (Cloud Run's defaults, 512 MiB and 1 CPU, when the revision sets none) and a process
//! limit, in the cgroup `CGROUP_PARENT/INSTANCE`.

use std::path::Path;

use pier_image::RunConfig;
use pier_model::RevisionTemplate;
use pier_runtime::{DEFAULT_CPU_MILLIS, DEFAULT_MEMORY, PIDS_LIMIT};
use serde_json::{Value, json};

/// `PATH` when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The user namespace a gen2 container joins: the service's, which also owns its network namespace.
#[derive(Debug, Clone)]
pub struct UserNamespace {
    /// Where the runtime opens it (`/proc/<server pid>/fd/<fd>`).
    pub path: std::path::PathBuf,
    /// The service's host ids (container ids `0..65536` map onto them).
    pub ids: pier_sandbox::IdBlock,
}

/// The user a container runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Home directory, for `HOME`.
    pub home: String,
}

impl Default for User {
    fn default() -> Self {
        Self {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/root".into(),
        }
    }
}

/// Host files bind-mounted read-only into every container.
#[derive(Debug, Clone, Default)]
pub struct SharedFiles {
    /// Mapped to `/etc/hosts` (service hosts → the in-namespace gateway).
    pub hosts: Option<std::path::PathBuf>,
    /// Mapped to `/etc/pier/ca-bundle.pem` (system CAs plus Pier's).
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Mapped to `/etc/pier/ca.pem` (Pier's CA alone).
    pub ca_cert: Option<std::path::PathBuf>,
    /// Mapped to `/etc/resolv.conf` (with egress: name servers reachable through NAT).
    pub resolv: Option<std::path::PathBuf>,
}

/// Everything `config.json` is made from.
#[derive(Debug)]
pub struct BundleInput<'a> {
    /// Hostname inside.
    pub hostname: &'a str,
    /// The image root.
    pub rootfs: &'a Path,
    /// The image's run config.
    pub image: &'a RunConfig,
    /// The revision.
    pub template: &'a RevisionTemplate,
    /// Pier's variables for the instance, reserved ones last (from [`pier_runtime::instance_env`]).
    pub env: &'a [(String, String)],
    /// The resolved user.
    pub user: &'a User,
    /// The network namespace to join.
    pub netns: &'a Path,
    /// The cgroup path.
    pub cgroup: &'a str,
    /// Shared files to mount.
    pub files: &'a SharedFiles,
    /// The user namespace to join (gen2); `None` runs in the host's (gen1: gVisor's sentry is the
    /// boundary there).
    pub userns: Option<&'a UserNamespace>,
    /// The seccomp profile in OCI form.
    pub seccomp: Option<&'a Value>,
}

/// Why no config can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Nothing to run.
    #[error(
        "the image has no entrypoint or command: give --command (and --args), or set ENTRYPOINT/CMD in the image"
    )]
    NoCommand,
    /// A relative working directory.
    #[error("working directory {0:?} must be an absolute path inside the container")]
    RelativeWorkdir(String),
}

/// The environment: image, then revision and Pier's (already ordered in `pier_env`), later wins.
pub fn merged_env(image: &RunConfig, pier_env: &[(String, String)], home: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    set("PATH", DEFAULT_PATH);
    set("HOME", home);
    for item in image.env.iter().flatten() {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => set(k, v),
            _ => {}
        }
    }
    for (k, v) in pier_env {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The argument vector, by Kubernetes' rules for command/args over Entrypoint/Cmd.
pub fn merged_argv(
    image: &RunConfig,
    template: &RevisionTemplate,
    env: &[(String, String)],
) -> Vec<String> {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let expand = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|a| pier_model::spec::expand_vars(a, lookup))
            .collect()
    };
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    match (template.command.is_empty(), template.args.is_empty()) {
        (false, false) => [expand(&template.command), expand(&template.args)].concat(),
        (false, true) => expand(&template.command),
        (true, false) => [entrypoint, expand(&template.args)].concat(),
        (true, true) => [entrypoint, cmd].concat(),
    }
}

/// `config.json` for one instance.
pub fn config(input: &BundleInput<'_>) -> Result<Value, BundleError> {
    let t = input.template;
    let pier_env: Vec<(String, String)> = input.env.to_vec();
    let argv = merged_argv(input.image, t, &pier_env);
    if argv.is_empty() || argv[0].is_empty() {
        return Err(BundleError::NoCommand);
    }
    let env = merged_env(input.image, &pier_env, &input.user.home);
    let cwd = t
        .working_dir
        .clone()
        .or_else(|| input.image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        return Err(BundleError::RelativeWorkdir(cwd));
    }
    let memory = t.memory_bytes().unwrap_or(DEFAULT_MEMORY);
    let cpu_millis = t.cpu_millis().unwrap_or(DEFAULT_CPU_MILLIS);
    let period: u64 = 100_000;
    let quota = i64::from(cpu_millis) * 100;

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        // The instance's own cgroup, read-only: runtimes (JVM, Go, Node) size themselves from its limits.
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "nodev", "mode=1777"]}),
    ];
    let binds = [
        (&input.files.hosts, "/etc/hosts"),
        (&input.files.ca_bundle, "/etc/pier/ca-bundle.pem"),
        (&input.files.ca_cert, "/etc/pier/ca.pem"),
        (&input.files.resolv, "/etc/resolv.conf"),
    ];
    for (source, destination) in binds {
        if let Some(source) = source {
            mounts.push(json!({
                "destination": destination, "type": "bind", "source": source,
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]
            }));
        }
    }

    let caps: Vec<&str> = pier_sandbox::caps::CONTAINER.to_vec();
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        // Its cgroup paths show as `/`: the host's layout stays hidden.
        json!({"type": "cgroup"}),
        json!({"type": "network", "path": input.netns}),
    ];
    let mut id_mappings = None;
    if let Some(u) = input.userns {
        namespaces.push(json!({"type": "user", "path": u.path}));
        id_mappings = Some((
            json!([{"containerID": 0, "hostID": u.ids.uid, "size": pier_sandbox::ids::BLOCK}]),
            json!([{"containerID": 0, "hostID": u.ids.gid, "size": pier_sandbox::ids::BLOCK}]),
        ));
    }
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": input.user.uid,
                "gid": input.user.gid,
                "additionalGids": input.user.additional_gids,
            },
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            // setuid bits and file capabilities in the image grant nothing.
            "noNewPrivileges": true,
        },
        "root": {"path": input.rootfs, "readonly": !input.template.writable_root},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": input.cgroup,
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": memory, "swap": memory},
                "cpu": {"quota": quota, "period": period},
                "pids": {"limit": PIDS_LIMIT},
            },
            "maskedPaths": pier_sandbox::paths::masked_paths(),
            "readonlyPaths": pier_sandbox::paths::READ_ONLY,
        },
    });
    if let Some((uids, gids)) = id_mappings {
        config["linux"]["uidMappings"] = uids;
        config["linux"]["gidMappings"] = gids;
    }
    if let Some(seccomp) = input.seccomp {
        config["linux"]["seccomp"] = seccomp.clone();
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RunConfig {
        RunConfig {
            env: Some(vec!["PATH=/app/bin".into(), "LANG=C.UTF-8".into()]),
            entrypoint: Some(vec!["/app/server".into()]),
            cmd: Some(vec!["--mode=prod".into()]),
            working_dir: Some("/app".into()),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let img = image();
        let env = vec![("PORT".to_owned(), "8080".to_owned())];
        let mut t = RevisionTemplate::default();
        assert_eq!(merged_argv(&img, &t, &env), ["/app/server", "--mode=prod"]);
        t.args = vec!["--port=$(PORT)".into()];
        assert_eq!(merged_argv(&img, &t, &env), ["/app/server", "--port=8080"]);
        t.command = vec!["/bin/sh".into(), "-c".into()];
        t.args = vec!["echo $(PORT)".into()];
        assert_eq!(merged_argv(&img, &t, &env), ["/bin/sh", "-c", "echo 8080"]);
        t.args.clear();
        assert_eq!(merged_argv(&img, &t, &env), ["/bin/sh", "-c"]);
        let empty = RunConfig::default();
        let none = RevisionTemplate::default();
        assert!(merged_argv(&empty, &none, &env).is_empty());
    }

    #[test]
    fn later_environment_wins_and_path_defaults() {
        let env = merged_env(
            &image(),
            &[
                ("LANG".into(), "de_DE".into()),
                ("PORT".into(), "8080".into()),
            ],
            "/root",
        );
        assert!(env.contains(&"PATH=/app/bin".to_owned()));
        assert!(env.contains(&"LANG=de_DE".to_owned()));
        assert!(env.contains(&"PORT=8080".to_owned()));
        assert!(env.contains(&"HOME=/root".to_owned()));
        let bare = merged_env(&RunConfig::default(), &[], "/");
        assert!(bare.contains(&format!("PATH={DEFAULT_PATH}")));
    }

    #[test]
    fn config_is_a_valid_runtime_spec_with_limits() {
        let t = RevisionTemplate {
            memory: Some("256Mi".into()),
            cpu: Some("500m".into()),
            ..Default::default()
        };
        let img = image();
        let user = User {
            uid: 1000,
            gid: 1000,
            additional_gids: vec![27],
            home: "/home/app".into(),
        };
        let files = SharedFiles {
            hosts: Some("/run/pier/hosts".into()),
            ..Default::default()
        };
        let cfg = config(&BundleInput {
            hostname: "svc-1",
            rootfs: Path::new("/images/rootfs/abc"),
            image: &img,
            template: &t,
            env: &[("PORT".into(), "8080".into())],
            user: &user,
            netns: Path::new("/proc/1/fd/9"),
            cgroup: "/pier-containers/x/svc-1",
            files: &files,
            userns: Some(&UserNamespace {
                path: "/proc/1/fd/10".into(),
                ids: pier_sandbox::IdRange::default_range().block(2).unwrap(),
            }),
            seccomp: Some(&json!({"defaultAction": "SCMP_ACT_ERRNO"})),
        })
        .unwrap();
        let spec: oci_spec::runtime::Spec = serde_json::from_value(cfg.clone()).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        let res = &cfg["linux"]["resources"];
        assert_eq!(res["memory"]["limit"], 256 << 20);
        assert_eq!(res["cpu"]["quota"], 50_000);
        assert_eq!(cfg["process"]["user"]["uid"], 1000);
        assert_eq!(cfg["process"]["cwd"], "/app");
        let mounts = cfg["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/hosts"));
        assert!(
            mounts
                .iter()
                .any(|m| m["destination"] == "/tmp" && m["type"] == "tmpfs")
        );
        let caps = cfg["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(
            !caps
                .iter()
                .any(|c| c == "CAP_NET_RAW" || c == "CAP_SYS_ADMIN")
        );
        let ns = cfg["linux"]["namespaces"].as_array().unwrap();
        assert!(
            ns.iter()
                .any(|n| n["type"] == "network" && n["path"] == "/proc/1/fd/9")
        );
        // Image root is the service's first host id, not the host's root.
        assert!(
            ns.iter()
                .any(|n| n["type"] == "user" && n["path"] == "/proc/1/fd/10")
        );
        assert!(ns.iter().any(|n| n["type"] == "cgroup"));
        assert_eq!(
            cfg["linux"]["uidMappings"][0]["hostID"],
            1_879_048_192u64 + 2 * 65536
        );
        assert_eq!(cfg["linux"]["uidMappings"][0]["size"], 65536);
        assert_eq!(cfg["process"]["noNewPrivileges"], true);
        assert_eq!(cfg["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        let masked = cfg["linux"]["maskedPaths"].as_array().unwrap();
        assert!(masked.iter().any(|p| p == "/proc/interrupts"));
        assert!(masked.iter().any(|p| p == "/sys/devices/virtual/powercap"));
    }

    #[test]
    fn no_command_and_relative_workdir_are_refused() {
        let files = SharedFiles::default();
        let user = User::default();
        let mut t = RevisionTemplate::default();
        let input = |t: &RevisionTemplate, img: &RunConfig| {
            config(&BundleInput {
                hostname: "h",
                rootfs: Path::new("/r"),
                image: img,
                template: t,
                env: &[],
                user: &user,
                netns: Path::new("/n"),
                cgroup: "/c",
                files: &files,
                userns: None,
                seccomp: None,
            })
        };
        assert_eq!(
            input(&t, &RunConfig::default()).unwrap_err(),
            BundleError::NoCommand
        );
        t.working_dir = Some("app".into());
        assert!(matches!(
            input(&t, &image()).unwrap_err(),
            BundleError::RelativeWorkdir(_)
        ));
    }
}
