//! Traffic: `update-traffic` as Cloud Run does it, planned by a pure function over the revisions.

use super::*;

impl Platform {
    /// Changes a service's traffic and tags.
    pub async fn update_traffic(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
        req: UpdateTrafficRequest,
    ) -> Result<ServiceView> {
        let (p, n) = (project.clone(), name.clone());
        let hash = self.hash_of(project).await?;
        let scheme = self.scheme.clone();
        let svc = self
            .db(move |s| {
                s.update_service(&p, &n, |svc, revs| {
                    let traffic = plan_traffic(svc, revs, &req)
                        .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    for (tag, _) in traffic.tags() {
                        scheme
                            .tag_host(&tag, &svc.name, &hash)
                            .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    }
                    let mut settings = svc.settings();
                    settings.traffic = traffic;
                    Ok(settings)
                })
            })
            .await?;
        self.publish_routes().await?;
        self.changed();
        self.service_view(svc).await
    }

    /// Replaces a service's traffic list wholesale (from a manifest).
    pub async fn set_traffic(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
        traffic: Traffic,
    ) -> Result<ServiceView> {
        self.update_traffic(
            project,
            name,
            UpdateTrafficRequest::replacing_with(&traffic),
        )
        .await
    }
}

/// Computes a service's new traffic from an `update-traffic` request. Targets may be revision names,
/// tags, or `LATEST`; revisions must belong to the service and be ready.
pub fn plan_traffic(
    svc: &ServiceRecord,
    revs: &[RevisionRecord],
    req: &UpdateTrafficRequest,
) -> std::result::Result<Traffic, SpecError> {
    let tags = svc.traffic.tags();
    let resolve = |target: &str| -> std::result::Result<TrafficKey, SpecError> {
        if target == "LATEST" {
            return Ok(TrafficKey::Latest);
        }
        if let Some(r) = revs.iter().find(|r| r.name.as_str() == target) {
            if r.state != RevisionState::Ready {
                return Err(SpecError::new(format!(
                    "revision {target} is not ready ({:?}): only ready revisions can serve",
                    r.state
                )));
            }
            return Ok(TrafficKey::Revision(r.name.clone()));
        }
        if let Some((_, key)) = tags.iter().find(|(t, _)| t.as_str() == target) {
            return Ok(key.clone());
        }
        Err(SpecError::new(format!(
            "{target} is neither a revision of service {} nor one of its tags nor LATEST",
            svc.name
        )))
    };
    let mut traffic = svc.traffic.clone();
    if req.clear_tags {
        traffic = traffic.clear_tags();
    }
    if !req.remove_tags.is_empty() {
        traffic = traffic.remove_tags(&req.remove_tags)?;
    }
    if !req.update_tags.is_empty() {
        let updates = req
            .update_tags
            .iter()
            .map(|t| Ok((t.tag.clone(), resolve(&t.revision)?)))
            .collect::<std::result::Result<Vec<_>, SpecError>>()?;
        traffic = traffic.set_tags(&updates);
    }
    if req.to_latest {
        traffic = Traffic::from_parts(&[(TrafficKey::Latest, 100)], &traffic.tags());
    } else if !req.to_revisions.is_empty() {
        let assignments = req
            .to_revisions
            .iter()
            .map(|a| Ok((resolve(&a.target)?, a.percent)))
            .collect::<std::result::Result<Vec<_>, SpecError>>()?;
        traffic = traffic.assign(&assignments)?;
    }
    traffic.validate()?;
    Ok(traffic)
}
