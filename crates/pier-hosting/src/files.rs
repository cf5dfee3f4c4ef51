//! Site files, content-addressed: a file is stored once under its SHA-256 (`DIR/ab/abcdef…`), whatever
//! sites and versions name it, and enters only through [`FileStore::put`], which hashes what it writes
//! and keeps it only when the hash is the one announced. Compressible files also get their gzip and
//! brotli variants (`….gz`, `….br`), made once here at deploy time and kept only when smaller.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{Context, SHA256};

/// Why a file could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not a hex SHA-256.
    #[error("{0:?} is not a SHA-256 digest (64 lowercase hex characters)")]
    BadDigest(String),
    /// The content's digest is another.
    #[error(
        "the content's SHA-256 is {actual}, not {expected}: the upload was corrupted or named the wrong file"
    )]
    Mismatch {
        /// Announced.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The disk.
    #[error("storing the file failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The stored representations of one file: sizes in bytes, `None` where a variant is not kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The file itself.
    pub size: u64,
    /// Its gzip variant.
    pub gzip: Option<u64>,
    /// Its brotli variant.
    pub brotli: Option<u64>,
}

/// A directory of content-addressed files, with the small ones most asked for kept in memory.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
    hot: std::sync::Arc<HotFiles>,
}

/// Files up to this size are kept in memory once served.
pub const HOT_FILE_MAX: u64 = 256 << 10;

/// Memory for hot files, in bytes.
pub const HOT_BUDGET: usize = 64 << 20;

/// Small files' bytes by path on disk, within [`HOT_BUDGET`]: a file that does not fit makes room by
/// dropping others (in the map's own order, which is random), so what is served often stays. Files
/// never change (they are named by their digest), so nothing is ever stale.
#[derive(Debug, Default)]
pub struct HotFiles {
    map: std::sync::Mutex<(std::collections::HashMap<PathBuf, bytes::Bytes>, usize)>,
}

impl HotFiles {
    fn get(&self, path: &Path) -> Option<bytes::Bytes> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.0.get(path).cloned()
    }

    fn put(&self, path: PathBuf, bytes: bytes::Bytes) {
        let mut guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (map, used) = &mut *guard;
        while *used + bytes.len() > HOT_BUDGET {
            let Some(k) = map.keys().next().cloned() else {
                break;
            };
            if let Some(old) = map.remove(&k) {
                *used -= old.len();
            }
        }
        *used += bytes.len();
        if let Some(old) = map.insert(path, bytes) {
            *used -= old.len();
        }
    }
}

/// Whether `s` is a lowercase hex SHA-256.
pub fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Files smaller than this are not worth compressing (one packet either way).
const COMPRESS_MIN: u64 = 256;

impl FileStore {
    /// A store in `dir` (created when missing).
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        // Uploads a crash interrupted are not files of any version.
        let _ = std::fs::remove_dir_all(dir.join("tmp"));
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(Self {
            dir,
            hot: std::sync::Arc::default(),
        })
    }

    /// Where the file with `digest` is (whether or not it exists). `digest` must be checked first.
    pub fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(&digest[..2]).join(digest)
    }

    /// Where a variant (`"gz"`, `"br"`) of `digest` is.
    pub fn variant_path(&self, digest: &str, ext: &str) -> PathBuf {
        self.dir.join(&digest[..2]).join(format!("{digest}.{ext}"))
    }

    /// The whole content of a small stored file (`size` at most [`HOT_FILE_MAX`]), from memory after its
    /// first read.
    pub async fn read_small(&self, path: PathBuf) -> std::io::Result<bytes::Bytes> {
        if let Some(b) = self.hot.get(&path) {
            return Ok(b);
        }
        let bytes = bytes::Bytes::from(tokio::fs::read(&path).await?);
        self.hot.put(path, bytes.clone());
        Ok(bytes)
    }

    /// What is stored for `digest`, or `None`.
    pub fn stat(&self, digest: &str) -> Option<Stored> {
        if !is_digest(digest) {
            return None;
        }
        let size = std::fs::metadata(self.path(digest)).ok()?.len();
        let len = |ext| {
            std::fs::metadata(self.variant_path(digest, ext))
                .ok()
                .map(|m| m.len())
        };
        Some(Stored {
            size,
            gzip: len("gz"),
            brotli: len("br"),
        })
    }

    /// Stores `content` as `digest` (blocking: hashing, compressing and fsyncing). `name` (a path the
    /// file is uploaded for) decides whether it is worth compressing. Storing what is already stored
    /// checks the content again and changes nothing.
    pub fn put(&self, digest: &str, content: &[u8], name: &str) -> Result<Stored, FileError> {
        if !is_digest(digest) {
            return Err(FileError::BadDigest(digest.to_owned()));
        }
        let mut ctx = Context::new(&SHA256);
        ctx.update(content);
        let actual = hex::encode(ctx.finish().as_ref());
        if actual != digest {
            return Err(FileError::Mismatch {
                expected: digest.to_owned(),
                actual,
            });
        }
        let path = self.path(digest);
        if let Some(stored) = self.stat(digest) {
            return Ok(stored);
        }
        std::fs::create_dir_all(path.parent().unwrap_or(&self.dir))?;
        let size = content.len() as u64;
        let mut stored = Stored {
            size,
            ..Stored::default()
        };
        if size >= COMPRESS_MIN && compressible(name) {
            let gz = gzip(content)?;
            if (gz.len() as u64) < size * 9 / 10 {
                self.write_atomic(&self.variant_path(digest, "gz"), &gz)?;
                stored.gzip = Some(gz.len() as u64);
            }
            let br = brotli(content)?;
            if (br.len() as u64) < size * 9 / 10 {
                self.write_atomic(&self.variant_path(digest, "br"), &br)?;
                stored.brotli = Some(br.len() as u64);
            }
        }
        // The file itself last: its presence says the variants are done.
        self.write_atomic(&path, content)?;
        Ok(stored)
    }

    fn write_atomic(&self, to: &Path, content: &[u8]) -> std::io::Result<()> {
        let mut tmp = tempfile_in(&self.dir.join("tmp"))?;
        tmp.1.write_all(content)?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, to)?;
        // The rename is durable only once its directory is.
        if let Some(dir) = to.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    loop {
        let path = dir.join(format!("up-{:016x}", rand_u64()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap_or_default();
    u64::from_le_bytes(b)
}

/// Whether a file of this name is text-like (compresses well): by its type, as nginx's `gzip_types`
/// would be set for a site.
pub fn compressible(name: &str) -> bool {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    match (mime.type_().as_str(), mime.subtype().as_str()) {
        ("text", _) => true,
        ("image", "svg") | ("image", "x-icon") | ("image", "vnd.microsoft.icon") => true,
        ("application", sub) => {
            matches!(
                sub,
                "javascript" | "json" | "xml" | "wasm" | "manifest+json" | "ld+json" | "xhtml+xml"
            ) || mime.suffix().is_some_and(|s| s == "json" || s == "xml")
        }
        ("font", "ttf" | "otf") => true,
        _ => name.ends_with(".map") || name.ends_with(".webmanifest"),
    }
}

fn gzip(content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(content)?;
    enc.finish()
}

fn brotli(content: &[u8]) -> std::io::Result<Vec<u8>> {
    let quality = if content.len() <= 1 << 20 { 11 } else { 9 };
    let mut out = Vec::new();
    {
        let mut w = ::brotli::CompressorWriter::new(&mut out, 64 * 1024, quality, 22);
        w.write_all(content)?;
        w.flush()?;
    }
    Ok(out)
}

/// The hex SHA-256 of `content`.
pub fn digest_of(content: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&SHA256, content).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_enter_only_under_their_own_digest_with_variants_when_smaller() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let text = "hello, pier! ".repeat(200);
        let d = digest_of(text.as_bytes());
        let wrong = digest_of(b"other");
        assert!(matches!(
            store.put(&wrong, text.as_bytes(), "/a.js"),
            Err(FileError::Mismatch { .. })
        ));
        assert!(store.stat(&wrong).is_none());
        assert!(matches!(
            store.put("../../etc/passwd", b"x", "/a"),
            Err(FileError::BadDigest(_))
        ));
        let stored = store.put(&d, text.as_bytes(), "/a.js").unwrap();
        assert_eq!(stored.size, text.len() as u64);
        assert!(stored.gzip.unwrap() < stored.size / 10);
        assert!(stored.brotli.unwrap() < stored.size / 10);
        assert_eq!(store.stat(&d), Some(stored));
        let gz = std::fs::read(store.variant_path(&d, "gz")).unwrap();
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back)
            .unwrap();
        assert_eq!(back, text);
        // A PNG is stored as is.
        let png = vec![7u8; 4096];
        let p = digest_of(&png);
        assert_eq!(store.put(&p, &png, "/i.png").unwrap().gzip, None);
    }
}
