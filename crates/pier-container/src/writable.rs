//! Writable roots (`--writable-root`): an overlayfs per instance whose lower layer is the image's shared,
//! read-only root and whose upper layer lives on a tmpfs sized to the instance's memory limit.
//!
//! Writes land in memory, are charged to the container's memory cgroup (as Cloud Run counts its in-memory
//! filesystem against the instance's memory), are seen by that instance only, and vanish when it stops:
//! the shared image root is never touched. The mounts sit in the instance's bundle directory, so
//! [`unmount_under`] on the bundles clears what a killed server left behind.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// A mounted writable root; [`WritableRoot::unmount`] undoes it.
#[derive(Debug)]
pub struct WritableRoot {
    /// The overlay mount: the container's root.
    pub root: PathBuf,
    scratch: PathBuf,
}

impl WritableRoot {
    /// Mounts a writable root for the instance whose bundle is `bundle`, over the image root `lower`,
    /// with at most `size` bytes of writes. With `owner` (the host ids of a gen2 container's root), the
    /// top of the writable layer belongs to it, as the image root's directories appear to.
    pub fn mount(
        bundle: &Path,
        lower: &Path,
        size: u64,
        owner: Option<(u32, u32)>,
    ) -> Result<Self, String> {
        let scratch = bundle.join("scratch");
        let root = bundle.join("root");
        for d in [&scratch, &root] {
            fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        let lower_text = pier_image::rootfs::overlay_option_path(lower).ok_or_else(|| {
            format!(
                "a writable root cannot be layered over {}: the path has characters overlayfs options cannot carry",
                lower.display()
            )
        })?;
        nix::mount::mount(
            Some("tmpfs"),
            &scratch,
            Some("tmpfs"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some(format!("size={size},mode=0700").as_str()),
        )
        .map_err(|e| {
            format!(
                "mounting the in-memory layer of the writable root: {}",
                e.desc()
            )
        })?;
        let this = Self { root, scratch };
        let (upper, work) = (this.scratch.join("upper"), this.scratch.join("work"));
        for d in [&upper, &work] {
            if let Err(e) = fs::create_dir(d) {
                this.unmount();
                return Err(format!("creating {}: {e}", d.display()));
            }
        }
        if let Some((uid, gid)) = owner
            && let Err(e) = std::os::unix::fs::chown(&upper, Some(uid), Some(gid))
        {
            this.unmount();
            return Err(format!(
                "giving the writable layer to the container's root: {e}"
            ));
        }
        let options = format!(
            "lowerdir={lower_text},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        if let Err(e) = nix::mount::mount(
            Some("overlay"),
            &this.root,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(options.as_str()),
        ) {
            this.unmount();
            return Err(format!(
                "--writable-root needs overlayfs, which refused to mount ({}): deploy with --no-writable-root and write to /tmp instead",
                e.desc()
            ));
        }
        Ok(this)
    }

    /// Unmounts the overlay and its in-memory layer (what was written is gone).
    pub fn unmount(&self) {
        for m in [&self.root, &self.scratch] {
            if let Err(e) = nix::mount::umount2(m, MntFlags::MNT_DETACH)
                && e != nix::errno::Errno::EINVAL
            {
                tracing::warn!("unmounting {}: {}", m.display(), e.desc());
            }
        }
    }
}

/// Unmounts every mount under `dir` (deepest first), as a killed server leaves them in bundles.
pub fn unmount_under(dir: &Path) -> usize {
    pier_image::rootfs::mounts_under(dir)
        .iter()
        .filter(|m| nix::mount::umount2(*m, MntFlags::MNT_DETACH).is_ok())
        .count()
}
