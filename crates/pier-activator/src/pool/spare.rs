//! A pool's warm sandbox: made after an instance start when the server's budget allows
//! ([`crate::warm`]), taken by the next start, discarded when the pool closes or loses its place.

use std::sync::Arc;

use pier_model::InstanceId;
use pier_runtime::Prepared;

use super::RevisionPool;
use crate::random_suffix;

/// A pool's warm sandbox.
#[derive(Default)]
pub(crate) enum Spare {
    /// None, and none being made.
    #[default]
    Empty,
    /// Being made.
    Making,
    /// Made, waiting for a start.
    Ready(Box<dyn Prepared>),
    /// Its runtime makes none ([`pier_runtime::Runtime::prepare`] returned `None`).
    Unsupported,
}

impl RevisionPool {
    /// The warm sandbox, if one is ready (the pool then has none until it makes another).
    pub(super) fn take_spare(&self) -> Option<Box<dyn Prepared>> {
        let mut st = self.lock();
        match std::mem::take(&mut st.spare) {
            Spare::Ready(p) => Some(p),
            other => {
                st.spare = other;
                None
            }
        }
    }

    /// Makes a warm sandbox in the background if the pool has none, is open and may hold one.
    pub(crate) fn refill_spare(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            if st.closed || !matches!(st.spare, Spare::Empty) {
                return;
            }
            st.spare = Spare::Making;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let id = InstanceId::for_revision(&pool.revision, &random_suffix(5));
            let made = pool.runtime.prepare(pool.spec(id.clone())).await;
            let failed = matches!(made, Some(Err(_)));
            let unwanted = {
                let mut st = pool.lock();
                let (next, unwanted) = match made {
                    None => (Spare::Unsupported, None),
                    Some(Err(e)) => {
                        tracing::warn!(revision = %pool.revision, "making a warm sandbox failed: {e}");
                        (Spare::Empty, None)
                    }
                    // Unwanted now: stays `Making` until discarded, so a closing pool waits for it.
                    Some(Ok(p)) if st.closed || !pool.warm.holds(&pool) => (Spare::Making, Some(p)),
                    Some(Ok(p)) => {
                        tracing::debug!(revision = %pool.revision, instance = %id, "warm sandbox ready");
                        (Spare::Ready(p), None)
                    }
                };
                st.spare = next;
                unwanted
            };
            match unwanted {
                Some(p) => {
                    pool.discard(p).await;
                    pool.lock().spare = Spare::Empty;
                }
                None if failed => {
                    // Its making failed: it never existed.
                    if let Some(hooks) = &pool.hooks {
                        hooks.ended(&id);
                    }
                }
                None => {}
            }
        });
    }

    /// Discards the warm sandbox in the background (the pool lost its place in the budget).
    pub(crate) fn drop_spare(self: &Arc<Self>) {
        if let Some(p) = self.take_spare() {
            let pool = self.clone();
            tokio::spawn(async move { pool.discard(p).await });
        }
    }

    /// Discards the warm sandbox and waits until it is gone (the pool is closing); one still being
    /// made is discarded by its maker, which sees the pool closed.
    pub(super) async fn discard_spare(&self) {
        if let Some(p) = self.take_spare() {
            self.discard(p).await;
        }
        // A sandbox being made is discarded by its maker: wait for that, so nothing outlives the pool.
        while matches!(self.lock().spare, Spare::Making) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    async fn discard(&self, p: Box<dyn Prepared>) {
        let id = p.id().clone();
        p.discard().await;
        if let Some(hooks) = &self.hooks {
            hooks.ended(&id);
        }
    }
}
