//! Revision pools as the control plane sees them: how a revision's instances are isolated, the pool
//! each routed revision gets, and pools that lost their traffic: they stop keeping min-instances warm,
//! linger while requests in flight finish, and are dropped once idle.

use super::*;

/// How long unrouted, idle pools are kept before they are dropped.
const POOL_LINGER: Duration = Duration::from_secs(120);

impl Platform {
    /// How instances of a service with id block `block` and this template are isolated.
    pub(crate) fn isolation(
        &self,
        block: u32,
        template: &pier_model::RevisionTemplate,
    ) -> std::result::Result<pier_runtime::Isolation, String> {
        let ids = self.isolation.ids.block(block).ok_or_else(|| {
            format!(
                "this service's id block {block} is beyond the installation's range ({}): give Pier a larger range in /etc/subuid and /etc/subgid",
                self.isolation.ids
            )
        })?;
        Ok(pier_runtime::Isolation {
            ids: Some(ids),
            private_egress: template.vpc_egress.is_some(),
        })
    }

    pub(crate) fn pool_for(
        &self,
        rec: &RevisionRecord,
        block: u32,
        serving: bool,
    ) -> std::result::Result<Arc<pier_activator::RevisionPool>, String> {
        // An image revision runs the digest its tag resolved to at deploy, whatever the tag says now.
        let mut template = rec.template.clone();
        if template.image.is_some() {
            match &rec.image_digest {
                Some(pinned) => template.image = Some(pinned.clone()),
                None => return Err(format!("revision {} has no resolved image", rec.name)),
            }
        }
        let isolation = self.isolation(block, &template)?;
        self.activator
            .ensure_pool(
                &rec.project,
                &rec.service,
                &rec.name,
                Arc::new(template),
                isolation,
                serving,
            )
            .map_err(|e| e.to_string())
    }

    /// Drops pools that have served no traffic for a while and have no instances left.
    pub async fn sweep_pools(&self) {
        let expired: Vec<PoolKey> = {
            let unrouted = self
                .unrouted_since
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            unrouted
                .iter()
                .filter(|(_, since)| since.elapsed() >= POOL_LINGER)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for key in expired {
            let idle = self
                .activator
                .pool(&key)
                .is_none_or(|p| p.instance_count() == 0 && p.queued() == 0);
            if idle {
                self.activator.remove_pool(&key).await;
                self.unrouted_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
        }
    }

    /// After a publication: pools outside `routed` (and not deploying) stop serving and start their
    /// linger.
    pub(crate) fn retire_unrouted(
        &self,
        routed: &HashSet<PoolKey>,
        revs: &HashMap<(ProjectName, RevisionName), RevisionRecord>,
    ) {
        // Pools that lost their traffic stop keeping min-instances warm and are dropped once idle.
        let deploying: HashSet<PoolKey> = revs
            .values()
            .filter(|r| r.state == RevisionState::Deploying)
            .map(|r| PoolKey {
                project: r.project.clone(),
                revision: r.name.clone(),
            })
            .collect();
        let mut unrouted = self
            .unrouted_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for key in self.activator.keys() {
            if routed.contains(&key) || deploying.contains(&key) {
                unrouted.remove(&key);
            } else {
                if let Some(pool) = self.activator.pool(&key) {
                    pool.set_serving(false);
                }
                unrouted.entry(key).or_insert_with(Instant::now);
            }
        }
    }
}
