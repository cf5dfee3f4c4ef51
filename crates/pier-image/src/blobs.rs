//! The content-addressed blob cache: `blobs/sha256/<hex>`, one file per manifest, config or layer.
//!
//! A blob enters the cache only through [`BlobWriter::commit`], which checks the bytes against the
//! expected digest, syncs them and renames them into place, so a crash never leaves a half-written blob
//! under a digest's name. Readers check again as they read ([`BlobStore::read`] for small blobs; layers are
//! hashed while they are unpacked), so a blob damaged on disk is found before it is used.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};

/// Where blobs live.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

/// A blob whose bytes are not what its digest says.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The bytes hash to something else.
    #[error("content does not match its digest {expected} (it hashes to {actual})")]
    Mismatch {
        /// What it should be.
        expected: Digest,
        /// What it is.
        actual: Digest,
    },
    /// Reading or writing failed.
    #[error("blob {digest}: {source}")]
    Io {
        /// The blob.
        digest: String,
        /// Why.
        source: io::Error,
    },
}

impl BlobStore {
    /// The cache under `dir` (created if needed).
    pub fn open(dir: &Path) -> io::Result<Self> {
        let store = Self {
            dir: dir.join("sha256"),
            tmp: dir.join("tmp"),
        };
        fs::create_dir_all(&store.dir)?;
        fs::create_dir_all(&store.tmp)?;
        // Partial downloads of a server that died.
        if let Ok(entries) = fs::read_dir(&store.tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(store)
    }

    /// Where `digest` is stored.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Whether the cache holds `digest`.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size on disk of `digest`, if held.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// A writer for a blob whose digest is `expected` (`None`: whatever it turns out to be).
    pub fn writer(&self, expected: Option<&Digest>) -> Result<BlobWriter, BlobError> {
        let name = format!(
            "{}-{:016x}",
            expected.map(|d| d.short()).unwrap_or("unknown"),
            fastrand::u64(..)
        );
        let path = self.tmp.join(name);
        let file = File::create(&path).map_err(|source| BlobError::Io {
            digest: expected.map(|d| d.to_string()).unwrap_or_default(),
            source,
        })?;
        Ok(BlobWriter {
            store: self.clone(),
            expected: expected.cloned(),
            path,
            file: Some(io::BufWriter::with_capacity(256 * 1024, file)),
            hasher: Hasher::new(),
            len: 0,
        })
    }

    /// Stores `bytes`, checking them against `expected` when given; returns their digest.
    pub fn put(&self, expected: Option<&Digest>, bytes: &[u8]) -> Result<Digest, BlobError> {
        let mut w = self.writer(expected)?;
        w.write_all(bytes).map_err(|source| BlobError::Io {
            digest: expected.map(|d| d.to_string()).unwrap_or_default(),
            source,
        })?;
        w.commit()
    }

    /// Reads a whole (small) blob, checking its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let bytes = fs::read(self.path(digest)).map_err(|source| BlobError::Io {
            digest: digest.to_string(),
            source,
        })?;
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(BlobError::Mismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Opens a blob for streaming; the reader must hash what it reads.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        File::open(self.path(digest)).map_err(|source| BlobError::Io {
            digest: digest.to_string(),
            source,
        })
    }

    /// Every blob held.
    pub fn list(&self) -> Vec<Digest> {
        fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        format!("sha256:{}", e.file_name().to_string_lossy())
                            .parse()
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes a blob; returns the bytes freed.
    pub fn remove(&self, digest: &Digest) -> u64 {
        let size = self.size(digest).unwrap_or(0);
        match fs::remove_file(self.path(digest)) {
            Ok(()) => size,
            Err(_) => 0,
        }
    }
}

/// A blob being written; it appears in the cache only on a successful [`commit`](Self::commit).
pub struct BlobWriter {
    store: BlobStore,
    expected: Option<Digest>,
    path: PathBuf,
    file: Option<io::BufWriter<File>>,
    hasher: Hasher,
    len: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks the digest, syncs, and moves the blob into the cache. Returns its digest.
    pub fn commit(mut self) -> Result<Digest, BlobError> {
        let hasher = std::mem::take(&mut self.hasher);
        let actual = hasher.finish();
        let io_err = |source| BlobError::Io {
            digest: actual.to_string(),
            source,
        };
        if let Some(expected) = &self.expected
            && *expected != actual
        {
            return Err(BlobError::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let file = self.file.take().expect("committed once");
        let file = file.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        fs::rename(&self.path, self.store.path(&actual)).map_err(io_err)?;
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() || self.path.exists() {
            // Not committed (or the rename failed): nothing half-written stays behind.
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_matching_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let good = Digest::of(b"hello");
        assert_eq!(store.put(Some(&good), b"hello").unwrap(), good);
        assert!(store.contains(&good));
        assert_eq!(store.read(&good).unwrap(), b"hello");

        let wrong = Digest::of(b"other");
        let err = store.put(Some(&wrong), b"hello!").unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err}");
        assert!(!store.contains(&wrong));
        assert!(!store.contains(&Digest::of(b"hello!")));
        // Nothing half-written stays in tmp.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        // Damage on disk is found by the reader.
        fs::write(store.path(&good), b"jello").unwrap();
        assert!(matches!(store.read(&good), Err(BlobError::Mismatch { .. })));
        assert_eq!(store.list(), vec![good.clone()]);
        assert_eq!(store.remove(&good), 5);
        assert!(store.list().is_empty());
    }
}
