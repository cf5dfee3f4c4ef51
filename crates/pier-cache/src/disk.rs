//! The optional disk tier (`pier server --cache-disk-size`): answers the memory tier evicts for room go
//! to files in the data dir (`DATA/cache/`), bounded by bytes with their own least-valuable-first
//! eviction, and come back into memory when asked for again. Files are written by one thread of their
//! own, off the request path (an eviction that finds it busy drops the answer); reading one back is a
//! blocking read on tokio's blocking pool, which the request waits for. The tier starts empty: its
//! files are removed at start.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};

use crate::{Key, Stored};

/// A file of the tier.
pub(crate) struct DiskFile {
    path: PathBuf,
    size: u64,
}

impl Drop for DiskFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a file holds before the body: one JSON line.
#[derive(Serialize, Deserialize)]
struct Head {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    policy: CachePolicy,
}

/// The disk tier.
pub(crate) struct Disk {
    index: moka::sync::Cache<Key, Arc<DiskFile>>,
    tx: std::sync::mpsc::SyncSender<(Key, Arc<Stored>, u64)>,
    /// Invalidations so far: a spill from before the latest one is not written (it might hold what
    /// was just invalidated). Held while an invalidation runs and while a file enters the index.
    generation: Arc<std::sync::Mutex<u64>>,
}

impl Disk {
    /// A tier of at most `bytes` in `dir` (emptied first), with its writer thread.
    pub(crate) fn open(dir: PathBuf, bytes: u64) -> std::io::Result<Arc<Self>> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let index: moka::sync::Cache<Key, Arc<DiskFile>> = moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(|_, f: &Arc<DiskFile>| u32::try_from(f.size).unwrap_or(u32::MAX))
            .support_invalidation_closures()
            .build();
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Key, Arc<Stored>, u64)>(256);
        let writer_index = index.clone();
        let generation = Arc::new(std::sync::Mutex::new(0u64));
        let writer_generation = generation.clone();
        let seq = AtomicU64::new(0);
        std::thread::Builder::new()
            .name("pier-cache-disk".into())
            .spawn(move || {
                for (key, stored, spilled_at) in rx {
                    let path = dir.join(format!("{:016x}", seq.fetch_add(1, Ordering::Relaxed)));
                    match write(&path, &stored) {
                        Ok(size) => {
                            let file = Arc::new(DiskFile { path, size });
                            let now = writer_generation.lock().unwrap_or_else(|p| p.into_inner());
                            if *now == spilled_at {
                                writer_index.insert(key, file);
                            }
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&path);
                            tracing::warn!("the cache's disk tier could not write an answer: {e}");
                        }
                    }
                }
            })?;
        Ok(Arc::new(Self {
            index,
            tx,
            generation,
        }))
    }

    /// Hands an answer evicted from memory to the writer (dropped if it is busy).
    pub(crate) fn spill(&self, key: Key, stored: Arc<Stored>) {
        let at = *self.generation.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.tx.try_send((key, stored, at));
    }

    /// Whether the tier holds `key`.
    pub(crate) fn has(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    /// Reads `key` back (blocking).
    pub(crate) fn load(&self, key: &Key) -> Option<Stored> {
        let file = self.index.get(key)?;
        match read(&file.path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("the cache's disk tier could not read an answer back: {e}");
                self.index.invalidate(key);
                None
            }
        }
    }

    pub(crate) fn remove(&self, key: &Key) {
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        self.index.invalidate(key);
    }

    pub(crate) fn invalidate_if(&self, f: impl Fn(&Key) -> bool + Send + Sync + 'static) {
        let mut g = self.generation.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        if let Err(e) = self.index.invalidate_entries_if(move |k, _| f(k)) {
            tracing::error!("invalidating the cache's disk tier failed: {e}");
        }
    }

    /// Bytes held (approximately).
    pub(crate) fn bytes(&self) -> u64 {
        self.index.run_pending_tasks();
        self.index.weighted_size()
    }
}

fn write(path: &PathBuf, stored: &Stored) -> std::io::Result<u64> {
    let head = Head {
        status: stored.status.as_u16(),
        headers: stored
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        policy: stored.policy.clone(),
    };
    let mut line = serde_json::to_vec(&head).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::File::create(path)?;
    f.write_all(&line)?;
    f.write_all(&stored.body)?;
    Ok((line.len() + stored.body.len()) as u64)
}

fn read(path: &PathBuf) -> std::io::Result<Stored> {
    let all = std::fs::read(path)?;
    let end = all
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| std::io::Error::other("no head line"))?;
    let head: Head = serde_json::from_slice(&all[..end]).map_err(std::io::Error::other)?;
    let mut headers = HeaderMap::new();
    for (n, v) in head.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(&v),
        ) {
            headers.append(n, v);
        }
    }
    Ok(Stored {
        policy: head.policy,
        status: StatusCode::from_u16(head.status).map_err(std::io::Error::other)?,
        headers,
        body: Bytes::copy_from_slice(&all[end + 1..]),
    })
}
