//! The edge cache: one memory-bounded store for the whole server ([`EdgeCache`], least valuable entries
//! evicted first by bytes, with `moka`), seen by each route through a [`ScopedCache`] (its own keys,
//! its own settings), which implements the gateway's [`RouteCache`] seam.
//!
//! What is stored and for how long follows RFC 9111's rules for a shared cache, decided by the
//! well-kept `http-cache-semantics` crate: only GET (HEAD is answered from a stored GET), storable
//! statuses, `Cache-Control` (`public`, `s-maxage`, `max-age`, `private`, `no-store`, `no-cache`),
//! `Expires`, `Age`, and a request with `Authorization` stored only when the answer allows it
//! (§3.5) — where a Pier token in `X-Serverless-Authorization` counts as `Authorization`, so two callers
//! never get each other's answers unless the app said `public`. On top of it, Pier:
//!
//! - never stores an answer with `Set-Cookie`, a `Vary` on anything but `Accept`, `Accept-Encoding` and
//!   `Origin` (or `*`), a partial answer, or one larger than the scope's object limit;
//! - keys a hosting site's answers by its `__session` cookie too (the only cookie a site forwards, as
//!   Firebase keys its CDN);
//! - stores a 404 without freshness for 10 s (negative caching; still never with `Authorization`);
//! - answers a failed fetch with a stale copy within its `stale-if-error` window (RFC 5861 §4);
//! - coalesces misses: concurrent requests for one key wait for the first one's answer (bounded), and
//!   a key whose answer could not be stored is passed straight through for a few seconds, so waiting
//!   never serializes uncacheable traffic;
//! - invalidates a URI on an unsafe method to it (§4.4), and by path rules on demand (Cloud CDN's:
//!   `/x/*` or an exact path, query ignored).
//!
//! Every answer that went through a cached route says what happened in `x-cache` (`hit`, `miss`,
//! `stale`, `bypass`), the header Firebase Hosting uses.

mod body;
mod disk;
mod scope;

pub use scope::{ScopedCache, Settings};

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_cache_semantics::CachePolicy;

/// How long a key whose answer could not be stored is passed straight through.
const PASS_FOR: Duration = Duration::from_secs(5);

/// The server-wide cache.
pub struct EdgeCache {
    entries: moka::sync::Cache<Key, Arc<Stored>>,
    disk: Option<Arc<disk::Disk>>,
    passes: moka::sync::Cache<Key, ()>,
    flights: Mutex<HashMap<Key, tokio::sync::watch::Receiver<bool>>>,
    stats: Stats,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answers from the cache (fresh or stale).
    pub hits: AtomicU64,
    /// Answers fetched for the cache.
    pub misses: AtomicU64,
    /// Bytes of bodies sent from the cache.
    pub hit_bytes: AtomicU64,
}

impl std::fmt::Debug for EdgeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCache")
            .field("entries", &self.entries.entry_count())
            .field("bytes", &self.entries.weighted_size())
            .finish()
    }
}

/// A stored answer's key: the scope (a route's cache) and the request target (path and query, plus
/// a site's `__session`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub scope: Arc<str>,
    pub target: String,
}

impl Key {
    /// The path part of the target (before `?` and the session).
    fn path(&self) -> &str {
        let t = self.target.split('\0').next().unwrap_or("");
        t.split('?').next().unwrap_or(t)
    }
}

/// A stored answer.
pub(crate) struct Stored {
    pub policy: CachePolicy,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl EdgeCache {
    /// A cache holding at most `bytes` of answers (bodies and headers) in memory.
    pub fn new(bytes: u64) -> Arc<Self> {
        Self::build(bytes, None)
    }

    /// The same, with a disk tier of `disk_bytes` in `dir` (emptied first) for what memory evicts.
    pub fn with_disk(
        bytes: u64,
        dir: std::path::PathBuf,
        disk_bytes: u64,
    ) -> std::io::Result<Arc<Self>> {
        Ok(Self::build(bytes, Some(disk::Disk::open(dir, disk_bytes)?)))
    }

    fn build(bytes: u64, disk: Option<Arc<disk::Disk>>) -> Arc<Self> {
        let spill = disk.clone();
        Arc::new(Self {
            disk,
            entries: moka::sync::Cache::builder()
                .max_capacity(bytes)
                .weigher(|k: &Key, v: &Arc<Stored>| {
                    let headers: usize = v
                        .headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len() + 32)
                        .sum();
                    u32::try_from(v.body.len() + headers + k.target.len() + 128).unwrap_or(u32::MAX)
                })
                .support_invalidation_closures()
                .eviction_listener(move |k: Arc<Key>, v: Arc<Stored>, cause| {
                    // Evicted for room: to the disk tier, if there is one.
                    if cause == moka::notification::RemovalCause::Size
                        && let Some(d) = &spill
                    {
                        d.spill((*k).clone(), v);
                    }
                })
                .build(),
            passes: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(PASS_FOR)
                .build(),
            flights: Mutex::new(HashMap::new()),
            stats: Stats::default(),
        })
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes held now (approximately: eviction runs in the background).
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// Drops what `scope_prefix` holds under `path` (Cloud CDN's rules: `/x/*` is every path under
    /// `/x/`, anything else that exact path; the query is ignored). Returns at once; the entries are
    /// gone for every later lookup.
    pub fn invalidate(&self, scope_prefix: &str, path: &str) {
        let prefix = scope_prefix.to_owned();
        let rule = path.to_owned();
        let matches = move |k: &Key| k.scope.starts_with(&prefix) && path_matches(&rule, k.path());
        if let Some(d) = &self.disk {
            d.invalidate_if(matches.clone());
        }
        let result = self.entries.invalidate_entries_if(move |k, _| matches(k));
        if let Err(e) = result {
            tracing::error!("invalidating the cache failed: {e}");
        }
    }

    /// Bytes the disk tier holds (approximately), if there is one.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.disk.as_ref().map(|d| d.bytes())
    }

    /// Whether the disk tier holds `key` (and memory does not).
    pub(crate) fn on_disk(&self, key: &Key) -> bool {
        self.disk.as_ref().is_some_and(|d| d.has(key))
    }

    /// Brings `key` back from the disk tier into memory (blocking).
    pub(crate) fn load(&self, key: &Key) {
        if let Some(stored) = self.disk.as_ref().and_then(|d| d.load(key)) {
            self.entries.insert(key.clone(), Arc::new(stored));
        }
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Arc<Stored>> {
        self.entries.get(key)
    }

    pub(crate) fn put(&self, key: Key, stored: Stored) {
        self.entries.insert(key, Arc::new(stored));
    }

    pub(crate) fn remove(&self, key: &Key) {
        self.entries.invalidate(key);
        if let Some(d) = &self.disk {
            d.remove(key);
        }
    }

    pub(crate) fn pass(&self, key: Key) {
        self.passes.insert(key, ());
    }

    pub(crate) fn passing(&self, key: &Key) -> bool {
        self.passes.contains_key(key)
    }
}

/// Cloud CDN's path rules: `/x/*` matches every path under `/x/`; anything else matches exactly.
pub fn path_matches(rule: &str, path: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => rule.split('?').next() == Some(path),
    }
}

/// A fetch in flight: dropping it tells the requests waiting on the key to look again.
pub(crate) struct Flight {
    cache: Arc<EdgeCache>,
    key: Key,
    tx: tokio::sync::watch::Sender<bool>,
}

impl Flight {
    /// Starts a fetch of `key`, or returns the flight already fetching it.
    pub(crate) fn start(
        cache: &Arc<EdgeCache>,
        key: &Key,
    ) -> Result<Flight, tokio::sync::watch::Receiver<bool>> {
        let mut flights = cache.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = flights.get(key) {
            return Err(rx.clone());
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        flights.insert(key.clone(), rx);
        Ok(Flight {
            cache: cache.clone(),
            key: key.clone(),
            tx,
        })
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.cache
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        let _ = self.tx.send(true);
    }
}

#[cfg(test)]
mod tests;
