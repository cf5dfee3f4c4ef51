//! The platform's life: recovery at start (interrupted deploys failed, the default project and account
//! made, routes rebuilt), deleting services and revisions, and shutdown.

use super::*;

impl Platform {
    /// Brings the platform back after a start: unfinished deploys are failed, routes rebuilt, warm
    /// instances started.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        let failed = self
            .db(|s| {
                s.fail_interrupted_deploys(
                    "the server stopped before this revision became ready; deploy again",
                )
            })
            .await?;
        for r in failed {
            tracing::warn!(revision = %r, "marked an interrupted deploy as failed");
        }
        self.db(|s| s.ensure_project(&ProjectName::default(), project_hash))
            .await?;
        self.identity
            .blocking(|id| id.ensure_default_service_account(&ProjectName::default()))
            .await?;
        self.publish_routes().await?;
        Ok(())
    }

    /// Deletes a service: its URLs stop at once, its instances drain and stop, its logs go.
    pub async fn delete_service(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
    ) -> Result<()> {
        let (p, n) = (project.clone(), name.clone());
        let revisions = self.db(move |s| s.delete_service(&p, &n)).await?;
        self.publish_routes().await?;
        for r in revisions {
            self.activator
                .remove_pool(&PoolKey {
                    project: project.clone(),
                    revision: r,
                })
                .await;
        }
        self.logs.remove(project, name);
        if let Some(requests) = self.request_logs.get() {
            requests.remove(project, name);
        }
        self.identity.blocking(|id| id.reload()).await?;
        // Its mapped domains stop asking for certificates (they say RouteMissing).
        self.check_domains().await?;
        self.changed();
        tracing::info!(project = %project, service = %name, "deleted service");
        Ok(())
    }

    /// Deletes a revision that serves no traffic and has no tag.
    pub async fn delete_revision(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &RevisionName,
    ) -> Result<()> {
        let (p, n) = (project.clone(), name.clone());
        self.db(move |s| {
            s.delete_revision(&p, &n, |svc, rev, revs| {
                let serving = Self::resolved(svc, revs)
                    .into_iter()
                    .any(|(r, _, pct, tag)| r.as_ref() == Some(&rev.name) && (pct > 0 || tag.is_some()));
                let named = svc.traffic.named_revisions().any(|r| *r == rev.name);
                if serving || named {
                    return Err(StoreError::Conflict(format!(
                        "revision {} is serving traffic or tagged: move its traffic and tags away first (pier services update-traffic)",
                        rev.name
                    )));
                }
                Ok(())
            })
        })
        .await?;
        self.publish_routes().await?;
        self.activator
            .remove_pool(&PoolKey {
                project: project.clone(),
                revision: name.clone(),
            })
            .await;
        self.changed();
        Ok(())
    }

    /// Stops everything: in-flight requests finish, then instances stop.
    pub async fn shutdown(&self) {
        self.activator.shutdown().await;
        if let Some(images) = &self.images {
            images.unmount_all();
        }
    }
}
