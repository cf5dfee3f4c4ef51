//! The data dir's permissions. The dir itself is `0711`: other users may pass through it (a gen2
//! container's root user is an unprivileged host user, and the runtime must reach the container's root
//! filesystem under `images/` and `containers/`) but may not list it. Everything that holds a secret or a
//! hash is readable by the server's user alone, and stays so across restarts (files made by older
//! versions are fixed at start):
//!
//! | path | holds | mode |
//! | --- | --- | --- |
//! | `pier.db`, `pier.db-wal`, `pier.db-shm` | password hashes, refresh-token digests, registry credentials, policies | 0600 |
//! | `keys/` | the token signing keys | 0700, files 0600 |
//! | `ca-key.pem` | the local CA's private key | 0600 |
//! | `tls/` | the gateway's private keys | 0700, keys 0600 |
//! | `owner-password`, `owner-credentials.json` | the first owner's password and refresh token | 0600 |
//! | `logs/` | what instances print | 0700 |
//! | `run/` | the hosts file and resolver config instances see | 0700 |
//! | `images/`, `containers/` | images and the OCI runtimes' state | 0711 |
//! | `images/blobs/`, `images/layers/`, `images/copies/`, `images/base/` | pulled blobs and unpacked layers (private images' content) | 0700 |
//! | `containers/state/`, `containers/state-gvisor/` | the OCI runtimes' state | 0700 |
//!
//! Outside the data dir, `/run/pier/INSTALLATION/` (0711) holds the mount points of image roots
//! (`rootfs/`) and the instances' bundles (`bundles/`): a gen2 container walks to its root as an
//! unprivileged host user, so every folder above its root must let others pass, which a data dir
//! under a private home (`/root/.local/share/pier`) does not.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Creates the data dir (`0711`) and the database file (`0600`) before the store opens it.
pub fn prepare(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .with_context(|| format!("creating the data dir {}", dir.display()))?;
    set(dir, 0o711)?;
    let db = dir.join("pier.db");
    if !db.exists() {
        pier_tls::write_private(&db, b"", 0o600)
            .with_context(|| format!("creating {}", db.display()))?;
    }
    Ok(())
}

fn set(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the permissions of {}", path.display()))
}

/// Makes every file that holds a secret readable by the server's user alone (see the module docs).
pub fn secure(dir: &Path) -> Result<()> {
    for f in [
        "pier.db",
        "pier.db-wal",
        "pier.db-shm",
        "ca-key.pem",
        "owner-password",
        "owner-credentials.json",
    ] {
        let p = dir.join(f);
        if p.exists() {
            set(&p, 0o600)?;
        }
    }
    for (d, mode) in [
        ("keys", 0o700),
        ("tls", 0o700),
        ("logs", 0o700),
        ("run", 0o700),
        ("images", 0o711),
        ("images/blobs", 0o700),
        ("images/layers", 0o700),
        ("images/copies", 0o700),
        ("images/base", 0o700),
        ("containers", 0o711),
        ("containers/state", 0o700),
        ("containers/state-gvisor", 0o700),
    ] {
        let p = dir.join(d);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&p)
            .with_context(|| format!("creating {}", p.display()))?;
        set(&p, mode)?;
    }
    Ok(())
}

/// `/run/pier/INSTALLATION` (0711, with `rootfs/` and `bundles/`): where container roots are mounted
/// and bundles written, reachable by containers' unprivileged users wherever the data dir is.
pub fn run_dir(installation: &str) -> Result<std::path::PathBuf> {
    let dir = Path::new("/run/pier").join(installation);
    for d in [
        Path::new("/run/pier").to_owned(),
        dir.clone(),
        dir.join("rootfs"),
        dir.join("bundles"),
    ] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&d)
            .with_context(|| format!("creating {}", d.display()))?;
        set(&d, 0o711)?;
    }
    Ok(dir)
}

/// Removes the run dir at a clean stop, if nothing is left in it.
pub fn remove_run_dir(dir: &Path) {
    for d in ["rootfs", "bundles"] {
        // The owners' folders of image roots, then the folder itself: empty ones only.
        for child in std::fs::read_dir(dir.join(d))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(child.path());
        }
        let _ = std::fs::remove_dir(dir.join(d));
    }
    let _ = std::fs::remove_dir(dir);
}
