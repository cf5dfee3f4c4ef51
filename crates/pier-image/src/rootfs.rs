//! Root filesystems for containers, shared read-only by every instance of every revision that runs the
//! same image.
//!
//! - **Overlay** (the default): each layer is unpacked once into `layers/<digest>` (whiteouts in
//!   overlayfs's own form), and an image's root is a read-only overlayfs mount at `rootfs/<digest>` of its
//!   layers on top of Pier's base layer, which holds the mount points the container runtime needs (`/proc`,
//!   `/dev`, `/tmp`, `/etc/hosts`, ...) since nothing can be created in a read-only root. Images sharing
//!   layers share their unpacked directories and the page cache.
//! - **Copy** (when overlayfs cannot be mounted, or chosen): the layers are applied one after the other
//!   into `copies/<digest>`; the runtime then makes that root read-only inside the container.
//!
//! A layer or copy is unpacked into a temporary directory and renamed into place only once complete and
//! its blob's digest checked, so a crash or a hostile layer never leaves a half-made root under a digest's
//! name.

use std::collections::HashSet;
use std::fs;
use std::io::{BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::ImageError;
use crate::blobs::BlobStore;
use crate::digest::{Digest, HashingReader};
use crate::manifest::{Descriptor, Manifest};
use crate::unpack::{Compression, UnpackError, UnpackMode, unpack_layer_limited};

/// Directories every root has (mount points for the container runtime).
pub const BASE_DIRS: [&str; 6] = ["proc", "sys", "dev", "tmp", "etc/pier", "var/run/pier"];
/// Files every root has (bind-mount points).
pub const BASE_FILES: [&str; 5] = [
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
    "etc/pier/ca-bundle.pem",
    "etc/pier/ca.pem",
];

/// The kernel's limit on mount options (one page).
const MAX_MOUNT_OPTIONS: usize = 4000;

/// How roots are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootfsMode {
    /// Read-only overlayfs of shared layer directories, falling back to copies if overlayfs is missing.
    #[default]
    Overlay,
    /// A plain directory per image.
    Copy,
}

impl std::str::FromStr for RootfsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "overlay" => Ok(RootfsMode::Overlay),
            "copy" => Ok(RootfsMode::Copy),
            other => Err(format!(
                "unknown root filesystem mode {other:?}: use overlay or copy"
            )),
        }
    }
}

/// Builds and tracks roots under one directory.
#[derive(Debug)]
pub(crate) struct Roots {
    layers: PathBuf,
    mounts: PathBuf,
    copies: PathBuf,
    base: PathBuf,
    mode: std::sync::Mutex<RootfsMode>,
    /// Most bytes of file content one image's preparation may write.
    max_bytes: u64,
}

impl Roots {
    pub(crate) fn open(
        dir: &Path,
        mounts: Option<&Path>,
        mode: RootfsMode,
        max_bytes: u64,
    ) -> std::io::Result<Self> {
        let roots = Self {
            layers: dir.join("layers"),
            mounts: mounts.map_or_else(|| dir.join("rootfs"), Path::to_path_buf),
            copies: dir.join("copies"),
            base: dir.join("base"),
            mode: std::sync::Mutex::new(mode),
            max_bytes,
        };
        for d in [&roots.layers, &roots.mounts, &roots.copies] {
            fs::create_dir_all(d)?;
        }
        make_base(&roots.base)?;
        // Half-made directories of a server that died mid-unpack.
        for d in [&roots.layers, &roots.copies] {
            for e in fs::read_dir(d)?.flatten() {
                if e.file_name().to_string_lossy().contains(".tmp-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(roots)
    }

    fn mode(&self) -> RootfsMode {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The root of the image whose manifest is `digest`, built if needed. Blocking.
    pub(crate) fn prepare(
        &self,
        digest: &Digest,
        manifest: &Manifest,
        blobs: &BlobStore,
    ) -> Result<PathBuf, ImageError> {
        if self.mode() == RootfsMode::Overlay {
            match self.overlay(digest, manifest, blobs) {
                Ok(p) => return Ok(p),
                Err(ImageError::OverlayUnavailable(why)) => {
                    tracing::warn!(
                        "overlayfs is unavailable ({why}): image roots are plain copies from now on"
                    );
                    *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = RootfsMode::Copy;
                }
                Err(e) => return Err(e),
            }
        }
        self.copy(digest, manifest, blobs)
    }

    /// The root of `digest` with its ids mapped through `map`, at `rootfs/<tag>/<digest>`: an overlay of
    /// idmapped layers, or an idmapped bind of the copy in copy mode, `nosuid` and `nodev`. The
    /// `<tag>` folder belongs to the mapping's root and is closed to everyone else. Blocking.
    pub(crate) fn prepare_mapped(
        &self,
        digest: &Digest,
        manifest: &Manifest,
        blobs: &BlobStore,
        map: &crate::IdMap,
    ) -> Result<PathBuf, ImageError> {
        let owned = self.mounts.join(&map.tag);
        if !owned.is_dir() {
            fs::create_dir_all(&owned).map_err(|e| ImageError::Io(e.to_string()))?;
        }
        std::os::unix::fs::chown(&owned, Some(map.owner.0), Some(map.owner.1))
            .and_then(|()| fs::set_permissions(&owned, fs::Permissions::from_mode(0o700)))
            .map_err(|e| ImageError::Io(format!("securing {}: {e}", owned.display())))?;
        let target = owned.join(digest.hex());
        if is_mountpoint(&target) {
            return Ok(target);
        }
        let mapped = |dir: &Path| {
            pier_sandbox::mounts::idmapped_tree(dir, &map.userns).map_err(|e| {
                ImageError::Io(format!("mapping the ids of the root of {digest}: {e}"))
            })
        };
        fs::create_dir_all(&target).map_err(|e| ImageError::Io(e.to_string()))?;
        let result = if self.mode() == RootfsMode::Overlay {
            let mut lowers = Vec::new();
            let mut budget = self.max_bytes;
            for layer in manifest.layers.iter().rev() {
                lowers.push(mapped(&self.layer_dir(layer, blobs, &mut budget)?)?);
            }
            lowers.push(mapped(&self.base)?);
            pier_sandbox::mounts::overlay_of(&lowers, &target)
                .map_err(|e| ImageError::Io(format!("mounting the root of {digest}: {e}")))
        } else {
            let copy = self.copy(digest, manifest, blobs)?;
            pier_sandbox::mounts::attach(mapped(&copy)?, &target)
                .map_err(|e| ImageError::Io(format!("mounting the root of {digest}: {e}")))
        };
        if result.is_err() {
            let _ = fs::remove_dir(&target);
        }
        result.map(|()| target)
    }

    fn overlay(
        &self,
        digest: &Digest,
        manifest: &Manifest,
        blobs: &BlobStore,
    ) -> Result<PathBuf, ImageError> {
        // Unmapped roots (gen1, run by root) live in a folder only root may walk.
        let owned = self.mounts.join("root");
        if !owned.is_dir() {
            fs::create_dir_all(&owned).map_err(|e| ImageError::Io(e.to_string()))?;
        }
        fs::set_permissions(&owned, fs::Permissions::from_mode(0o700))
            .map_err(|e| ImageError::Io(format!("securing {}: {e}", owned.display())))?;
        let target = owned.join(digest.hex());
        if is_mountpoint(&target) {
            return Ok(target);
        }
        let mut lower = Vec::new();
        let mut budget = self.max_bytes;
        for layer in manifest.layers.iter().rev() {
            lower.push(self.layer_dir(layer, blobs, &mut budget)?);
        }
        lower.push(self.base.clone());
        let mut options = String::from("lowerdir=");
        for (i, dir) in lower.iter().enumerate() {
            let text = overlay_option_path(dir).ok_or_else(|| {
                ImageError::OverlayUnavailable(format!(
                    "the data directory path {} has characters overlayfs options cannot carry",
                    dir.display()
                ))
            })?;
            if i > 0 {
                options.push(':');
            }
            options.push_str(text);
        }
        if options.len() > MAX_MOUNT_OPTIONS {
            return Err(ImageError::OverlayUnavailable(format!(
                "{} layers are too many for one overlayfs mount",
                manifest.layers.len()
            )));
        }
        fs::create_dir_all(&target).map_err(|e| ImageError::Io(e.to_string()))?;
        nix::mount::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some(options.as_str()),
        )
        .map_err(|e| match e {
            nix::errno::Errno::EPERM | nix::errno::Errno::ENODEV | nix::errno::Errno::EINVAL => {
                let _ = fs::remove_dir(&target);
                ImageError::OverlayUnavailable(e.desc().to_owned())
            }
            e => ImageError::Io(format!("mounting the root of {digest}: {e}")),
        })?;
        Ok(target)
    }

    /// The unpacked directory of one layer (overlay form), made if needed within `budget` bytes (less
    /// what it wrote).
    fn layer_dir(
        &self,
        layer: &Descriptor,
        blobs: &BlobStore,
        budget: &mut u64,
    ) -> Result<PathBuf, ImageError> {
        let digest = layer
            .digest()
            .map_err(|e| ImageError::Corrupt(e.to_string()))?;
        let dir = self.layers.join(digest.hex());
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self
            .layers
            .join(format!("{}.tmp-{:08x}", digest.hex(), fastrand::u32(..)));
        fs::create_dir(&tmp).map_err(|e| ImageError::Io(e.to_string()))?;
        match apply(
            layer,
            &digest,
            blobs,
            &tmp,
            UnpackMode::Overlay,
            *budget,
            self.max_bytes,
        ) {
            Ok(written) => *budget -= written,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        }
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fs::remove_dir_all(&tmp);
            if !dir.is_dir() {
                return Err(ImageError::Io(format!("storing layer {digest}: {e}")));
            }
        }
        Ok(dir)
    }

    fn copy(
        &self,
        digest: &Digest,
        manifest: &Manifest,
        blobs: &BlobStore,
    ) -> Result<PathBuf, ImageError> {
        let dir = self.copies.join(digest.hex());
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self
            .copies
            .join(format!("{}.tmp-{:08x}", digest.hex(), fastrand::u32(..)));
        fs::create_dir(&tmp).map_err(|e| ImageError::Io(e.to_string()))?;
        let mut budget = self.max_bytes;
        let result = manifest.layers.iter().try_for_each(|layer| {
            let d = layer
                .digest()
                .map_err(|e| ImageError::Corrupt(e.to_string()))?;
            budget -= apply(
                layer,
                &d,
                blobs,
                &tmp,
                UnpackMode::Flatten,
                budget,
                self.max_bytes,
            )?;
            Ok(())
        });
        // The runtime's mount points, as the base layer gives overlay roots: a container in a user
        // namespace cannot create them in its root.
        let result =
            result.and_then(|()| make_base(&tmp).map_err(|e| ImageError::Io(e.to_string())));
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &dir).map_err(|e| ImageError::Io(e.to_string()))?;
        Ok(dir)
    }

    /// Unmounts every root (server shutdown, or the start after a crash).
    pub(crate) fn unmount_all(&self) -> usize {
        let mut n = 0;
        for target in mounts_under(&self.mounts) {
            if nix::mount::umount2(&target, MntFlags::MNT_DETACH).is_ok() {
                n += 1;
            }
            let _ = fs::remove_dir(&target);
        }
        n
    }

    /// Removes roots and layers not in `keep_images` / `keep_layers`; returns how many went.
    pub(crate) fn gc(&self, keep_images: &HashSet<String>, keep_layers: &HashSet<String>) -> usize {
        let mut removed = 0;
        // Roots are named by digest (in their owner's folder); layers and copies by digest.
        let image_of = |name: &str| name.split('.').next().unwrap_or(name).to_owned();
        for target in mounts_under(&self.mounts) {
            let name = target.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| !keep_images.contains(&image_of(&n))) {
                let _ = nix::mount::umount2(&target, MntFlags::MNT_DETACH);
            }
        }
        let sweep = |dir: &Path, keep: &HashSet<String>, rmdir_only: bool| -> usize {
            let mut n = 0;
            for e in fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if keep.contains(&image_of(&name)) {
                    continue;
                }
                let gone = if rmdir_only {
                    fs::remove_dir(e.path()).is_ok()
                } else {
                    fs::remove_dir_all(e.path()).is_ok()
                };
                n += usize::from(gone);
            }
            n
        };
        // Mount points sit one folder down, in their owner's folder (`root`, `u<uid>`).
        for owner in fs::read_dir(&self.mounts).into_iter().flatten().flatten() {
            removed += sweep(&owner.path(), keep_images, true);
        }
        removed += sweep(&self.copies, keep_images, false);
        removed += sweep(&self.layers, keep_layers, false);
        removed
    }
}

/// Unpacks one layer blob into `dest`, writing at most `limit` bytes of file content (what is left of the
/// image's `max`) and checking the blob's digest on the way; the bytes written.
fn apply(
    layer: &Descriptor,
    digest: &Digest,
    blobs: &BlobStore,
    dest: &Path,
    mode: UnpackMode,
    limit: u64,
    max: u64,
) -> Result<u64, ImageError> {
    let compression = match Compression::from_media_type(&layer.media_type) {
        Some(c) => c,
        None => {
            let mut head = [0u8; 4];
            let n = blobs
                .open_blob(digest)?
                .read(&mut head)
                .map_err(|e| ImageError::Io(e.to_string()))?;
            Compression::sniff(&head[..n])
        }
    };
    let file = blobs.open_blob(digest)?;
    let mut reader = HashingReader::new(BufReader::with_capacity(1 << 20, file));
    let report =
        unpack_layer_limited(&mut reader, compression, dest, mode, limit).map_err(|e| match e {
            UnpackError::TooLarge { entry, .. } => ImageError::Unsupported(format!(
                "the image unpacks to more than the server's limit of {} MiB (layer {digest}, at {entry:?}): \
                 a decompression bomb, or an image too big for this server (raise pier server --max-image-size)",
                max >> 20
            )),
            e => ImageError::Corrupt(format!("layer {digest} cannot be unpacked: {e}")),
        })?;
    let (actual, _) = reader
        .finish()
        .map_err(|e| ImageError::Io(format!("reading layer {digest}: {e}")))?;
    if &actual != digest {
        // Damaged on disk: drop it so the next deploy downloads it again.
        blobs.remove(digest);
        return Err(ImageError::Corrupt(format!(
            "cached layer {digest} is damaged (it hashes to {actual}); deploy again to download it anew"
        )));
    }
    if let Some(first) = report.skipped.first() {
        // Device nodes and the like: never created in a root (the container runtime provides /dev).
        tracing::info!(
            layer = %digest,
            count = report.skipped.len(),
            "layer entries not created, such as {first}"
        );
        for s in &report.skipped[1..] {
            tracing::debug!(layer = %digest, "not created: {s}");
        }
    }
    Ok(report.bytes)
}

/// Pier's base layer: the runtime's mount points, empty.
fn make_base(base: &Path) -> std::io::Result<()> {
    for d in BASE_DIRS {
        fs::create_dir_all(base.join(d))?;
    }
    for f in BASE_FILES {
        let p = base.join(f);
        if !p.exists() {
            fs::write(p, b"")?;
        }
    }
    Ok(())
}

/// `path` as overlayfs mount options can carry it (no `:`, `,` or `\\`), or `None`.
pub fn overlay_option_path(path: &Path) -> Option<&str> {
    path.to_str()
        .filter(|t| !t.is_empty() && !t.contains([':', ',', '\\']))
}

/// Mount points under `dir`, from `/proc/self/mountinfo` (deepest first).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let prefix = format!("{}/", dir.display());
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(&prefix))
        .map(PathBuf::from)
        .collect();
    out.sort();
    out.dedup();
    out.reverse();
    out
}

fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .any(|p| unescape_mountinfo(p) == want)
}

/// Mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_carry_only_plain_paths() {
        assert_eq!(
            overlay_option_path(Path::new("/var/lib/pier")),
            Some("/var/lib/pier")
        );
        for bad in ["/a:b", "/a,b", "/a\\b", ""] {
            assert_eq!(overlay_option_path(Path::new(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\1"), "/x\\1");
    }
}
