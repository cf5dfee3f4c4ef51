//! Importing images from local files: an OCI image layout (a directory, or a tar of one: `skopeo copy
//! ... oci-archive:`, `buildah push ... oci-archive:`) or a `docker save` archive (old layout with
//! `manifest.json` and `<id>/layer.tar`, or the newer one whose blobs are under `blobs/sha256/`).
//!
//! A tar is read once, as a stream: blobs named by digest are checked against their names as they enter
//! the cache; other files are hashed to name them. Nothing in the archive is ever written to a path it
//! names, so a hostile archive can at worst fail the import.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::manifest::{
    Descriptor, Index, Manifest, OCI_CONFIG, OCI_MANIFEST, Versioned, host_platform, pick_platform,
};
use crate::reference::LocalKind;
use crate::unpack::Compression;
use crate::{ImageError, Pulled};

/// Largest JSON document read from an archive.
const MAX_JSON: u64 = 16 << 20;

/// One image of a `docker save` archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Imports the image at `path` into `blobs`.
pub(crate) fn import(
    kind: LocalKind,
    path: &Path,
    tag: Option<&str>,
    blobs: &BlobStore,
) -> Result<Pulled, ImageError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        ImageError::NotFound(format!(
            "cannot open {}: {e}; give an existing archive or layout",
            path.display()
        ))
    })?;
    let (manifest_bytes, digest) = if meta.is_dir() {
        if kind == LocalKind::DockerArchive {
            return Err(ImageError::Unsupported(format!(
                "{} is a directory: docker-archive: takes a `docker save` tar",
                path.display()
            )));
        }
        from_layout_dir(path, tag, blobs)?
    } else {
        if kind == LocalKind::Layout {
            return Err(ImageError::Unsupported(format!(
                "{} is a file: oci: takes a layout directory; use oci-archive: for a tar",
                path.display()
            )));
        }
        from_tar(kind, path, tag, blobs)?
    };
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| ImageError::Corrupt(format!("manifest in {}: {e}", path.display())))?;
    for d in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
        let digest = d.digest().map_err(|e| ImageError::Corrupt(e.to_string()))?;
        if !blobs.contains(&digest) {
            return Err(ImageError::Corrupt(format!(
                "{} lacks blob {digest} that its manifest names",
                path.display()
            )));
        }
    }
    Ok(Pulled {
        digest,
        manifest,
        downloaded: meta.len(),
    })
}

/// An OCI layout directory: `index.json` and `blobs/sha256/*`.
fn from_layout_dir(
    dir: &Path,
    tag: Option<&str>,
    blobs: &BlobStore,
) -> Result<(Vec<u8>, Digest), ImageError> {
    let index_bytes = std::fs::read(dir.join("index.json")).map_err(|e| {
        ImageError::Corrupt(format!(
            "{} is not an OCI image layout (index.json: {e})",
            dir.display()
        ))
    })?;
    let copy_in = |d: &Digest| -> Result<(), ImageError> {
        if blobs.contains(d) {
            return Ok(());
        }
        let mut src = File::open(dir.join("blobs/sha256").join(d.hex()))
            .map_err(|e| ImageError::Corrupt(format!("{} lacks blob {d}: {e}", dir.display())))?;
        let mut w = blobs.writer(Some(d))?;
        io::copy(&mut src, &mut w).map_err(|e| ImageError::Io(format!("copying {d}: {e}")))?;
        w.commit()?;
        Ok(())
    };
    let (bytes, digest) = choose_in_index(&index_bytes, tag, &copy_in, blobs)?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::Corrupt(format!("manifest {digest}: {e}")))?;
    for d in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
        copy_in(&d.digest().map_err(|e| ImageError::Corrupt(e.to_string()))?)?;
    }
    Ok((bytes, digest))
}

/// Picks the image in an OCI `index.json` (by tag, else the only one, else this platform's) and returns
/// its manifest, read from the cache after `fetch` put it there.
fn choose_in_index(
    index_bytes: &[u8],
    tag: Option<&str>,
    fetch: &dyn Fn(&Digest) -> Result<(), ImageError>,
    blobs: &BlobStore,
) -> Result<(Vec<u8>, Digest), ImageError> {
    let index: Index = serde_json::from_slice(index_bytes)
        .map_err(|e| ImageError::Corrupt(format!("index.json: {e}")))?;
    let entry: &Descriptor = match tag {
        Some(t) => index
            .manifests
            .iter()
            .find(|d| {
                d.ref_name()
                    .is_some_and(|n| n == t || n.rsplit_once(':').is_some_and(|(_, x)| x == t))
            })
            .ok_or_else(|| {
                let names: Vec<&str> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.ref_name())
                    .collect();
                ImageError::NotFound(format!(
                    "no image tagged {t:?} in the layout (it has: {})",
                    if names.is_empty() {
                        "no tags".to_owned()
                    } else {
                        names.join(", ")
                    }
                ))
            })?,
        None if index.manifests.len() == 1 => &index.manifests[0],
        None if index.manifests.is_empty() => {
            return Err(ImageError::NotFound("the layout holds no image".into()));
        }
        None => {
            // Several entries: a multi-platform layout, or several tags.
            pick_platform(&index, &host_platform()).map_err(|_| {
                let names: Vec<&str> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.ref_name())
                    .collect();
                ImageError::Unsupported(format!(
                    "the layout holds {} images: name one with :TAG after the path (tags: {})",
                    index.manifests.len(),
                    names.join(", ")
                ))
            })?
        }
    };
    let mut digest = entry
        .digest()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    fetch(&digest)?;
    let mut bytes = blobs.read(&digest)?;
    let v: Versioned = serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::Corrupt(format!("manifest {digest}: {e}")))?;
    if v.is_index() {
        let inner: Index = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("index {digest}: {e}")))?;
        let entry = pick_platform(&inner, &host_platform()).map_err(ImageError::Unsupported)?;
        digest = entry
            .digest()
            .map_err(|e| ImageError::Corrupt(e.to_string()))?;
        fetch(&digest)?;
        bytes = blobs.read(&digest)?;
    }
    Ok((bytes, digest))
}

/// Normalizes a path inside an archive (`./a/b` → `a/b`); `None` for anything leaving the archive.
fn archive_path(p: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// A tar: an OCI layout or a `docker save` archive.
fn from_tar(
    kind: LocalKind,
    path: &Path,
    tag: Option<&str>,
    blobs: &BlobStore,
) -> Result<(Vec<u8>, Digest), ImageError> {
    let file = File::open(path)
        .map_err(|e| ImageError::NotFound(format!("cannot open {}: {e}", path.display())))?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, file));
    let corrupt = |e: io::Error| ImageError::Corrupt(format!("reading {}: {e}", path.display()));
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    // Every file that is not a named blob, by its path: its digest.
    let mut files: HashMap<String, Digest> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let Some(name) = archive_path(&entry.path().map_err(corrupt)?) else {
            continue;
        };
        let kind_of = entry.header().entry_type();
        if kind_of.is_symlink() || kind_of.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(corrupt)? {
                let base = Path::new(&name).parent().unwrap_or(Path::new(""));
                let joined = if kind_of.is_symlink() {
                    base.join(&*target)
                } else {
                    target.into_owned()
                };
                if let Some(t) = archive_path(&normalize(&joined)) {
                    links.insert(name, t);
                }
            }
            continue;
        }
        if !kind_of.is_file() {
            continue;
        }
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let digest: Digest = format!("sha256:{hex}").parse().map_err(|_| {
                ImageError::Corrupt(format!("{}: odd blob name {name}", path.display()))
            })?;
            if !blobs.contains(&digest) {
                let mut w = blobs.writer(Some(&digest))?;
                io::copy(&mut entry, &mut w).map_err(corrupt)?;
                w.commit()
                    .map_err(|e| ImageError::Corrupt(format!("{}: {e}", path.display())))?;
            }
            files.insert(name, digest);
        } else if matches!(name.as_str(), "index.json" | "manifest.json" | "oci-layout") {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(MAX_JSON)
                .read_to_end(&mut bytes)
                .map_err(corrupt)?;
            docs.insert(name, bytes);
        } else if name.ends_with(".tar") || name.ends_with(".json") {
            let mut w = blobs.writer(None)?;
            io::copy(&mut entry, &mut w).map_err(corrupt)?;
            files.insert(name, w.commit()?);
        }
    }
    let resolve = |p: &str| -> Option<Digest> {
        let mut p = p.to_owned();
        for _ in 0..8 {
            if let Some(d) = files.get(&p) {
                return Some(d.clone());
            }
            p = links.get(&p)?.clone();
        }
        None
    };
    if kind != LocalKind::DockerArchive
        && let Some(index) = docs.get("index.json")
    {
        let present = |d: &Digest| {
            if blobs.contains(d) {
                Ok(())
            } else {
                Err(ImageError::Corrupt(format!(
                    "{} lacks blob {d} that its index names",
                    path.display()
                )))
            }
        };
        return choose_in_index(index, tag, &present, blobs);
    }
    let Some(list) = docs.get("manifest.json") else {
        return Err(ImageError::Unsupported(format!(
            "{} is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
            path.display()
        )));
    };
    let entries: Vec<DockerEntry> = serde_json::from_slice(list)
        .map_err(|e| ImageError::Corrupt(format!("manifest.json: {e}")))?;
    let entry = match tag {
        Some(t) => entries
            .iter()
            .find(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|rt| rt == t || rt.rsplit_once(':').is_some_and(|(_, x)| x == t))
            })
            .ok_or_else(|| ImageError::NotFound(format!("no image tagged {t:?} in the archive")))?,
        None => match entries.as_slice() {
            [one] => one,
            [] => return Err(ImageError::NotFound("the archive holds no image".into())),
            _ => {
                return Err(ImageError::Unsupported(format!(
                    "the archive holds {} images: name one with oci-archive:PATH:TAG",
                    entries.len()
                )));
            }
        },
    };
    let missing = |p: &str| ImageError::Corrupt(format!("the archive lacks {p}"));
    let config = resolve(&entry.config).ok_or_else(|| missing(&entry.config))?;
    let mut layers = Vec::new();
    for l in &entry.layers {
        let digest = resolve(l).ok_or_else(|| missing(l))?;
        let mut head = [0u8; 4];
        let n = blobs
            .open_blob(&digest)?
            .read(&mut head)
            .map_err(|e| ImageError::Io(e.to_string()))?;
        let media_type = match Compression::sniff(&head[..n]) {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        };
        layers.push(descriptor(media_type, &digest, blobs));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        config: descriptor(OCI_CONFIG, &config, blobs),
        layers,
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Io(e.to_string()))?;
    let digest = blobs.put(None, &bytes)?;
    Ok((bytes, digest))
}

fn descriptor(media_type: &str, digest: &Digest, blobs: &BlobStore) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.to_string(),
        size: blobs.size(digest).unwrap_or(0) as i64,
        platform: None,
        annotations: None,
    }
}

/// Folds `..` in an archive-internal path (`a/b/../c` → `a/c`).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
            _ => {}
        }
    }
    out
}
