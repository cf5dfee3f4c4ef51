//! Warm sandboxes: for the revisions used most recently, one instance's sandbox made ahead of demand
//! ([`pier_runtime::Runtime::prepare`]), so that their next cold start only lets the app run.
//!
//! - **Bounded.** At most `limit` revisions hold one (`pier server --warm-sandboxes`); a revision that
//!   starts an instance becomes the most recent, and the least recent beyond the limit loses its
//!   sandbox. `0` turns them off.
//! - **Made after a start, off the request path.** Once an instance of a revision is ready (a deploy's
//!   first instance, a scale-up, a cold start), the revision gets a sandbox for its next start if it
//!   has none; a cold start takes it and the next is made once that start is done.
//! - **One revision's own.** A sandbox is made from its revision's template, service identity and
//!   isolation, for an instance id of that revision, and only that revision's pool takes it.
//! - **Cleaned.** A pool that closes (its revision removed, the server stopping) discards its
//!   sandbox and waits for it to be gone; after kill -9, what a sandbox holds ends with the server
//!   (its processes wait on a descriptor the server held) and the next start's clean-up removes the
//!   rest, as for instances.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use crate::pool::RevisionPool;

/// The server's budget of warm sandboxes, shared by every pool.
#[derive(Debug, Default)]
pub struct WarmSandboxes {
    limit: usize,
    /// Pools allowed a sandbox, least recently used first.
    holders: Mutex<VecDeque<Weak<RevisionPool>>>,
}

impl WarmSandboxes {
    /// A budget of `limit` revisions with a warm sandbox each.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            holders: Mutex::default(),
        }
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<RevisionPool>>> {
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `pool` just started an instance: it becomes the most recent holder and gets a sandbox if it
    /// has none; the least recent holders beyond the limit discard theirs.
    pub(crate) fn used(&self, pool: &Arc<RevisionPool>) {
        if self.limit == 0 {
            return;
        }
        let evicted: Vec<Arc<RevisionPool>> = {
            let mut holders = self.holders();
            holders
                .retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(pool)));
            holders.push_back(Arc::downgrade(pool));
            let mut evicted = Vec::new();
            while holders.len() > self.limit {
                if let Some(p) = holders.pop_front().and_then(|w| w.upgrade()) {
                    evicted.push(p);
                }
            }
            evicted
        };
        for p in evicted {
            p.drop_spare();
        }
        pool.refill_spare();
    }

    /// Whether `pool` may still hold a sandbox.
    pub(crate) fn holds(&self, pool: &RevisionPool) -> bool {
        self.holders()
            .iter()
            .any(|w| std::ptr::eq(w.as_ptr(), pool as *const RevisionPool))
    }

    /// `pool` is closing: it holds none any more.
    pub(crate) fn forget(&self, pool: &RevisionPool) {
        self.holders().retain(|w| {
            w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), pool as *const RevisionPool)
        });
    }
}
