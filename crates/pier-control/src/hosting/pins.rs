//! `pinTag` rewrites: a version's rewrites to a service with `"pinTag": true` go to the revision that was
//! the service's latest ready one when the version was first released, through a traffic tag on that
//! revision (`fh-` and the revision's own suffix, `fh-00002-xq4`: one tag per pinned revision, shared by
//! every version that pins it, as Firebase reuses a tag already on the revision). The pins are stored
//! with the version, so a rollback or a clone serves the same revisions again; a tag is made before a
//! release that needs it, and removed once no channel that serves (any site of the project) pins its
//! revision. Tags that do not start with `fh-` are the user's and never touched.

use std::collections::{BTreeMap, BTreeSet};

use pier_model::api::{TagAssignment, UpdateTrafficRequest};
use pier_model::{ProjectName, ServiceName, Tag};

use crate::{ControlError, Platform, Result};

/// Tags Pier makes for pins start with this.
const PREFIX: &str = "fh-";

/// The tag that pins `revision` of `service`.
pub(crate) fn pin_tag(service: &str, revision: &str) -> Option<Tag> {
    let suffix = revision
        .strip_prefix(service)
        .and_then(|s| s.strip_prefix('-'))
        .unwrap_or(revision);
    format!("{PREFIX}{suffix}").parse().ok()
}

impl Platform {
    /// Fixes the pins of `version` (at its first release) and makes sure their tags exist; call before
    /// releasing it.
    pub(crate) async fn pin_version(
        self: &std::sync::Arc<Self>,
        project: &ProjectName,
        site: &str,
        version: i64,
    ) -> Result<()> {
        let (p, s) = (project.clone(), site.to_owned());
        let rec = self.db(move |st| st.site_version(&p, &s, version)).await?;
        let entry: serde_json::Value = serde_json::from_str(&rec.config)
            .map_err(|e| ControlError::internal(format!("hosting entry: {e}")))?;
        let rules = pier_hosting::compile(&entry)
            .map_err(|f| ControlError::Invalid(format!("firebase.json hosting{f}")))?;
        let pinned: Vec<String> = rules
            .run_services()
            .into_iter()
            .filter(|(_, pin)| *pin)
            .map(|(s, _)| s)
            .collect();
        if pinned.is_empty() {
            return Ok(());
        }
        let pins = match rec.pins {
            Some(pins) => pins,
            None => {
                let mut pins = BTreeMap::new();
                for service in &pinned {
                    let name: ServiceName = service
                        .parse()
                        .map_err(|e| ControlError::Invalid(format!("serviceId {service}: {e}")))?;
                    let (p, n) = (project.clone(), name.clone());
                    let svc = self.db(move |st| st.service(&p, &n)).await?.ok_or_else(|| {
                        ControlError::Invalid(format!(
                            "the release pins service {service}, which does not exist in project {project}"
                        ))
                    })?;
                    let ready = svc.latest_ready.ok_or_else(|| {
                        ControlError::Invalid(format!(
                            "the release pins service {service}, which has no ready revision to pin: deploy it first"
                        ))
                    })?;
                    pins.insert(service.clone(), ready.to_string());
                }
                let (p, s) = (project.clone(), site.to_owned());
                self.db(move |st| st.pin_site_version(&p, &s, version, &pins))
                    .await?
            }
        };
        for (service, revision) in pins {
            let Some(tag) = pin_tag(&service, &revision) else {
                continue;
            };
            let name: ServiceName = service
                .parse()
                .map_err(|e| ControlError::Invalid(format!("serviceId {service}: {e}")))?;
            let (p, n) = (project.clone(), name.clone());
            let svc = self.db(move |st| st.service(&p, &n)).await?;
            let tagged = svc.as_ref().is_some_and(|svc| {
                svc.traffic
                    .tags()
                    .iter()
                    .any(|(t, key)| *t == tag && key.to_string() == revision)
            });
            if !tagged {
                self.update_traffic(
                    project,
                    &name,
                    UpdateTrafficRequest {
                        update_tags: vec![TagAssignment {
                            tag,
                            revision: revision.clone(),
                        }],
                        ..UpdateTrafficRequest::default()
                    },
                )
                .await
                .map_err(|e| {
                    ControlError::Invalid(format!(
                        "cannot pin revision {revision} of service {service} for this release: {e}"
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Removes the pin tags (`fh-…`) no serving channel of the project needs any more.
    pub(crate) async fn prune_pin_tags(self: &std::sync::Arc<Self>, project: &ProjectName) {
        if let Err(e) = self.prune_pin_tags_now(project).await {
            tracing::warn!(%project, "removing unused pin tags failed: {e}");
        }
    }

    async fn prune_pin_tags_now(self: &std::sync::Arc<Self>, project: &ProjectName) -> Result<()> {
        let p = project.clone();
        let now = super::now_unix();
        let (services, needed) = self
            .db(move |st| {
                let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
                for c in st.site_channels(Some(&p), None)? {
                    if c.expires_at.is_some_and(|e| e <= now) {
                        continue;
                    }
                    let Some(v) = c.version else { continue };
                    if let Some(pins) = st.site_version(&p, &c.site, v)?.pins {
                        needed.extend(pins);
                    }
                }
                Ok((st.services(Some(&p))?, needed))
            })
            .await?;
        for svc in services {
            let stale: Vec<Tag> = svc
                .traffic
                .tags()
                .into_iter()
                .filter(|(tag, key)| {
                    tag.as_str().starts_with(PREFIX)
                        && !needed.contains(&(svc.name.to_string(), key.to_string()))
                })
                .map(|(tag, _)| tag)
                .collect();
            if stale.is_empty() {
                continue;
            }
            self.update_traffic(
                project,
                &svc.name,
                UpdateTrafficRequest {
                    remove_tags: stale,
                    ..UpdateTrafficRequest::default()
                },
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_tags_name_the_revision() {
        assert_eq!(
            pin_tag("api", "api-00002-xq4").unwrap().as_str(),
            "fh-00002-xq4"
        );
        assert_eq!(pin_tag("api", "other").unwrap().as_str(), "fh-other");
    }
}
