//! Container images for the container runtime: parsing image references, pulling from registries and
//! local archives into a content-addressed blob cache, unpacking layers safely, and preparing read-only
//! root filesystems shared by every revision that runs the same image.
//!
//! Layout of the images directory (in the server's data dir):
//!
//! ```text
//! images/blobs/sha256/<hex>   manifests, configs and layers, each checked against its digest
//! images/layers/<hex>         one unpacked layer (overlayfs lower directory)
//! images/rootfs/<hex>         an image's read-only root (overlayfs mount), by manifest digest
//! images/copies/<hex>         an image's root as a plain copy, where overlayfs is unavailable
//! images/base                 Pier's base layer: mount points for the container runtime
//! ```
//!
//! An image is known by its manifest digest. Pulling resolves a tag to that digest once; running needs only
//! the digest and the cache, never the registry again.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub mod archive;
pub mod blobs;
pub mod digest;
pub mod manifest;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod unpack;

pub use blobs::{BlobError, BlobStore};
pub use digest::Digest;
pub use manifest::RunConfig;
pub use reference::{ImageSource, LocalKind, pinned, pinned_digest};
pub use registry::{RegistryCredential, RegistryOptions};
pub use rootfs::RootfsMode;

use manifest::{ConfigFile, Manifest, host_platform};

/// Why an image cannot be pulled or prepared. Every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference is malformed.
    #[error(transparent)]
    BadReference(#[from] reference::BadReference),
    /// No such image or tag.
    #[error("{0}")]
    NotFound(String),
    /// The registry wants (other) credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The registry cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The registry refused for another reason.
    #[error("{0}")]
    Registry(String),
    /// Content that does not match its digest, or a layer that cannot be unpacked safely.
    #[error("{0}")]
    Corrupt(String),
    /// Something Pier does not run (other platforms, schema 1, ...).
    #[error("{0}")]
    Unsupported(String),
    /// overlayfs cannot be used here (the store falls back to copies).
    #[error("overlayfs unavailable: {0}")]
    OverlayUnavailable(String),
    /// The local disk failed.
    #[error("image store: {0}")]
    Io(String),
}

impl From<BlobError> for ImageError {
    fn from(e: BlobError) -> Self {
        match e {
            e @ BlobError::Mismatch { .. } => ImageError::Corrupt(e.to_string()),
            e @ BlobError::Io { .. } => ImageError::Io(e.to_string()),
        }
    }
}

/// What a pull brought into the cache.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest digest.
    pub digest: Digest,
    /// The manifest.
    pub manifest: Manifest,
    /// Bytes transferred (or read from the archive).
    pub downloaded: u64,
}

/// How far a pull is: the image's config and layers, counted and in bytes (as the manifest gives
/// their sizes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Blobs in the cache now.
    pub layers_done: usize,
    /// Blobs the image has (its config and layers).
    pub layers: usize,
    /// Bytes of the blobs in the cache now.
    pub bytes_done: u64,
    /// Bytes of them all.
    pub bytes: u64,
}

/// Told of a pull's progress (see [`ImageStore::pull_reporting`]).
pub type Progress<'a> = dyn Fn(&PullProgress) + Send + Sync + 'a;

/// An image ready to record in a revision.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Manifest digest.
    pub digest: Digest,
    /// The source pinned to the digest (what the revision records).
    pub pinned: String,
    /// Compressed size of config and layers.
    pub size: u64,
    /// How it runs.
    pub config: RunConfig,
    /// Bytes transferred by this pull (0 when everything was cached).
    pub downloaded: u64,
}

/// An image ready to run.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Manifest digest.
    pub digest: Digest,
    /// Its read-only root.
    pub rootfs: PathBuf,
    /// How it runs.
    pub config: RunConfig,
}

/// A mapping of image ids onto a service's host ids: the user namespace that carries it, and a short tag
/// naming it in the roots' directory names.
#[derive(Debug, Clone)]
pub struct IdMap {
    /// Names the mapping (unique per mapping, such as the first host uid).
    pub tag: String,
    /// The host uid and gid the mapping's root becomes: the only ones that may walk to the mapped
    /// root (its folder is theirs, mode 0700), so no other local user reaches the image's files.
    pub owner: (u32, u32),
    /// The user namespace whose maps apply.
    pub userns: Arc<std::os::fd::OwnedFd>,
}

/// What a garbage collection freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: usize,
    /// Bytes of blobs removed.
    pub bytes: u64,
    /// Unpacked layers and roots removed.
    pub unpacked: usize,
}

/// Options of the store.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Registry access.
    pub registry: RegistryOptions,
    /// How roots are built.
    pub rootfs: RootfsMode,
    /// Most bytes of file content preparing one image's root may write (a guard against decompression
    /// bombs); layers already unpacked for other images cost nothing.
    pub max_unpacked_bytes: u64,
    /// Where prepared roots are mounted (default: `rootfs/` in the store's directory). A container
    /// in a user namespace walks to its root as an unprivileged host user, so every folder above this
    /// one must let others pass; the server puts it under `/run`.
    pub mounts: Option<std::path::PathBuf>,
}

/// A prepared root: the image, and the id mapping's tag (`None` for the unmapped root).
type RootKey = (Digest, Option<String>);

/// The images of one server.
#[derive(Debug)]
pub struct ImageStore {
    blobs: BlobStore,
    roots: rootfs::Roots,
    options: ImageOptions,
    prepared: Mutex<HashMap<RootKey, Arc<PreparedImage>>>,
    /// Pulls and prepares hold it shared; a collection holds it alone, so it never removes what a pull
    /// just fetched but has not yet recorded.
    gc_lock: tokio::sync::RwLock<()>,
    /// One root is built at a time (two instances starting at once share the work).
    build_lock: tokio::sync::Mutex<()>,
}

impl ImageStore {
    /// Opens (creating) the store in `dir`. Unmounts roots a previous server left mounted.
    pub fn open(dir: &Path, options: ImageOptions) -> std::io::Result<Arc<Self>> {
        let blobs = BlobStore::open(&dir.join("blobs"))?;
        let roots = rootfs::Roots::open(
            dir,
            options.mounts.as_deref(),
            options.rootfs,
            options.max_unpacked_bytes,
        )?;
        let stale = roots.unmount_all();
        if stale > 0 {
            tracing::info!(
                count = stale,
                "unmounted image roots left by a previous server"
            );
        }
        Ok(Arc::new(Self {
            blobs,
            roots,
            options,
            prepared: Mutex::new(HashMap::new()),
            gc_lock: tokio::sync::RwLock::new(()),
            build_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// The blob cache.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Pulls `source` (a registry, or a local archive or layout) into the cache and checks that it can
    /// run here.
    pub async fn pull(self: &Arc<Self>, source: &ImageSource) -> Result<ImageInfo, ImageError> {
        self.pull_reporting(source, &|_| {}).await
    }

    /// [`ImageStore::pull`], telling `progress` how far a registry pull is (the blobs it needs, then
    /// after each one arrives or is found cached).
    pub async fn pull_reporting(
        self: &Arc<Self>,
        source: &ImageSource,
        progress: &Progress<'_>,
    ) -> Result<ImageInfo, ImageError> {
        let _shared = self.gc_lock.read().await;
        let pulled = match source {
            ImageSource::Registry(r) => {
                registry::pull(r, &self.options.registry, &self.blobs, progress).await?
            }
            ImageSource::Local { kind, path, tag } => {
                let (kind, path, tag) = (*kind, path.clone(), tag.clone());
                let this = self.clone();
                tokio::task::spawn_blocking(move || {
                    archive::import(kind, &path, tag.as_deref(), &this.blobs)
                })
                .await
                .map_err(|e| ImageError::Io(e.to_string()))??
            }
        };
        if let Some(pinned) = source.digest()
            && pinned != pulled.digest
        {
            return Err(ImageError::Corrupt(format!(
                "the registry sent manifest {} for {source}",
                pulled.digest
            )));
        }
        let config = self.config_of(&pulled.manifest)?;
        let size = pulled.manifest.config.size.max(0) as u64
            + pulled
                .manifest
                .layers
                .iter()
                .map(|l| l.size.max(0) as u64)
                .sum::<u64>();
        Ok(ImageInfo {
            pinned: reference::pinned(source, &pulled.digest),
            digest: pulled.digest,
            size,
            config,
            downloaded: pulled.downloaded,
        })
    }

    /// Whether the cache holds the image `digest` (its manifest).
    pub fn has(&self, digest: &Digest) -> bool {
        self.blobs.contains(digest)
    }

    fn manifest(&self, digest: &Digest) -> Result<Manifest, ImageError> {
        let bytes = self.blobs.read(digest).map_err(|e| match e {
            BlobError::Io { .. } => ImageError::NotFound(format!(
                "image {digest} is not in the image cache (pruned?): deploy the image again"
            )),
            e => e.into(),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("manifest {digest}: {e}")))
    }

    /// Reads and checks an image's config: it must be a Linux image for this machine's architecture.
    fn config_of(&self, manifest: &Manifest) -> Result<RunConfig, ImageError> {
        let digest = manifest
            .config
            .digest()
            .map_err(|e| ImageError::Corrupt(e.to_string()))?;
        let bytes = self.blobs.read(&digest)?;
        let file: ConfigFile = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("image config {digest}: {e}")))?;
        let host = host_platform();
        if !file.os.is_empty() && file.os != host.os {
            return Err(ImageError::Unsupported(format!(
                "the image is for {}, not Linux: build it for {host}",
                file.os
            )));
        }
        if !file.architecture.is_empty() && file.architecture != host.architecture {
            return Err(ImageError::Unsupported(format!(
                "the image is built for {}/{} but this machine runs {host}: build or pull the {host} variant",
                file.os, file.architecture
            )));
        }
        if let Some(rootfs) = &file.rootfs
            && !rootfs.diff_ids.is_empty()
            && rootfs.diff_ids.len() != manifest.layers.len()
        {
            return Err(ImageError::Corrupt(format!(
                "the image config lists {} layers but its manifest {}",
                rootfs.diff_ids.len(),
                manifest.layers.len()
            )));
        }
        Ok(file.config.unwrap_or_default())
    }

    /// The root and run config of image `digest`, unpacking and mounting on first use.
    pub async fn prepare(
        self: &Arc<Self>,
        digest: &Digest,
    ) -> Result<Arc<PreparedImage>, ImageError> {
        self.prepare_as(digest, None).await
    }

    /// [`ImageStore::prepare`], the root's ids mapped through `map` (a service's user namespace) when
    /// given: one root per image and mapping, shared by every instance of that service.
    pub async fn prepare_as(
        self: &Arc<Self>,
        digest: &Digest,
        map: Option<IdMap>,
    ) -> Result<Arc<PreparedImage>, ImageError> {
        let key = (digest.clone(), map.as_ref().map(|m| m.tag.clone()));
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        let _shared = self.gc_lock.read().await;
        let _build = self.build_lock.lock().await;
        if let Some(p) = self.cached(&key) {
            return Ok(p);
        }
        let this = self.clone();
        let d = digest.clone();
        let prepared = tokio::task::spawn_blocking(move || -> Result<PreparedImage, ImageError> {
            let manifest = this.manifest(&d)?;
            let config = this.config_of(&manifest)?;
            let started = std::time::Instant::now();
            let rootfs = match &map {
                None => this.roots.prepare(&d, &manifest, &this.blobs)?,
                Some(m) => this.roots.prepare_mapped(&d, &manifest, &this.blobs, m)?,
            };
            tracing::info!(image = %d, root = %rootfs.display(), elapsed = ?started.elapsed(), "image root ready");
            Ok(PreparedImage {
                digest: d,
                rootfs,
                config,
            })
        })
        .await
        .map_err(|e| ImageError::Io(e.to_string()))??;
        let prepared = Arc::new(prepared);
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, prepared.clone());
        Ok(prepared)
    }

    fn cached(&self, key: &RootKey) -> Option<Arc<PreparedImage>> {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Removes everything not needed by the images in `keep`: other manifests and their configs and
    /// layers, unpacked layers, roots.
    pub async fn gc(self: &Arc<Self>, keep: &[Digest]) -> GcReport {
        let _alone = self.gc_lock.write().await;
        let keep: Vec<Digest> = keep.to_vec();
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.gc_now(&keep))
            .await
            .unwrap_or_default()
    }

    fn gc_now(&self, keep: &[Digest]) -> GcReport {
        let mut blobs_kept: HashSet<Digest> = HashSet::new();
        let mut layers_kept: HashSet<String> = HashSet::new();
        let mut images_kept: HashSet<String> = HashSet::new();
        for d in keep {
            let Ok(m) = self.manifest(d) else { continue };
            blobs_kept.insert(d.clone());
            images_kept.insert(d.hex().to_owned());
            if let Ok(c) = m.config.digest() {
                blobs_kept.insert(c);
            }
            for l in &m.layers {
                if let Ok(ld) = l.digest() {
                    layers_kept.insert(ld.hex().to_owned());
                    blobs_kept.insert(ld);
                }
            }
        }
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(d, _), _| images_kept.contains(d.hex()));
        let mut report = GcReport::default();
        for b in self.blobs.list() {
            if !blobs_kept.contains(&b) {
                report.bytes += self.blobs.remove(&b);
                report.blobs += 1;
            }
        }
        report.unpacked = self.roots.gc(&images_kept, &layers_kept);
        report
    }

    /// Unmounts every image root (at shutdown, after every instance stopped).
    pub fn unmount_all(&self) {
        self.prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.roots.unmount_all();
    }
}
