//! The pure route builder: which host serves what, decided from the store's records alone (no pools, no
//! I/O), so it is tested row by row like the traffic planner. [`super`] turns a plan into routes.
//!
//! Rules (Cloud Run's URL behaviour): a service's URL splits its traffic over the revisions its traffic
//! names that are READY (`LATEST` is the newest ready one); each tag gets its own URL that sends
//! everything to its revision; a URL with nothing ready answers 503 with the reason. Every URL of a
//! service shares one access (ingress, invokers, audiences).

use std::collections::HashMap;
use std::sync::Arc;

use pier_gateway::Access;
use pier_identity::InvokerSet;
use pier_identity::tokens::CLI_CLIENT_ID;
use pier_model::api::RevisionState;
use pier_model::{ProjectName, RevisionName, ServiceName, Tag, TrafficKey, UrlScheme};
use pier_store::{RevisionRecord, ServiceRecord};

/// What the planner reads.
pub(crate) struct Records<'a> {
    pub scheme: &'a UrlScheme,
    /// Each project's hash (the part of its hosts after the service name).
    pub hashes: &'a HashMap<ProjectName, String>,
    pub services: &'a [ServiceRecord],
    pub revisions: &'a HashMap<(ProjectName, RevisionName), RevisionRecord>,
}

/// One host's plan.
pub(crate) struct HostPlan<'a> {
    pub host: String,
    pub service: &'a ServiceRecord,
    pub tag: Option<Tag>,
    pub access: Arc<Access>,
    pub target: Target<'a>,
}

/// Where a host's traffic goes.
pub(crate) enum Target<'a> {
    /// These revisions, with their percents (a tag's: one at 100).
    Split(Vec<(&'a RevisionRecord, u8)>),
    /// Nowhere: answered with 503 and this reason.
    Unavailable(String),
}

/// Every host of every service (services of unknown projects are skipped). `invokers` says who holds
/// the invoker role on a service.
pub(crate) fn plan<'a>(
    records: &Records<'a>,
    invokers: impl Fn(&ProjectName, &ServiceName) -> InvokerSet,
) -> Vec<HostPlan<'a>> {
    let mut out = Vec::new();
    for svc in records.services {
        let Some(hash) = records.hashes.get(&svc.project) else {
            continue;
        };
        let access = Arc::new(Access {
            ingress: svc.ingress,
            invoker_check: svc.invoker_iam_check,
            invokers: invokers(&svc.project, &svc.name),
            audiences: audiences(records.scheme, svc, hash),
            passthrough: svc
                .end_user_auth
                .as_ref()
                .map(|e| e.audiences.clone())
                .unwrap_or_default(),
        });
        let resolve = |key: &TrafficKey| -> Option<&'a RevisionRecord> {
            let name = match key {
                TrafficKey::Latest => svc.latest_ready.as_ref()?,
                TrafficKey::Revision(r) => r,
            };
            records
                .revisions
                .get(&(svc.project.clone(), name.clone()))
                .filter(|r| r.state == RevisionState::Ready)
        };
        let shares: Vec<(&RevisionRecord, u8)> = svc
            .traffic
            .percents()
            .into_iter()
            .filter(|(_, pct)| *pct > 0)
            .filter_map(|(key, pct)| Some((resolve(&key)?, pct)))
            .collect();
        let target = if shares.is_empty() {
            Target::Unavailable(format!(
                "service {} has no ready revision to serve this URL",
                svc.name
            ))
        } else {
            Target::Split(shares)
        };
        out.push(HostPlan {
            host: records.scheme.service_host(&svc.name, hash),
            service: svc,
            tag: None,
            access: access.clone(),
            target,
        });
        for (tag, key) in svc.traffic.tags() {
            let Ok(host) = records.scheme.tag_host(&tag, &svc.name, hash) else {
                continue;
            };
            let target = match resolve(&key) {
                Some(rec) => Target::Split(vec![(rec, 100)]),
                None => Target::Unavailable(format!(
                    "tag {tag} of service {} points at no ready revision",
                    svc.name
                )),
            };
            out.push(HostPlan {
                host,
                service: svc,
                tag: Some(tag),
                access: access.clone(),
                target,
            });
        }
    }
    out
}

/// The audiences a service's tokens may carry: each of its URLs (with and without a trailing slash,
/// with and without the port), its custom audiences, and the CLI's client id.
pub(crate) fn audiences(scheme: &UrlScheme, svc: &ServiceRecord, hash: &str) -> Vec<String> {
    let mut hosts = vec![scheme.service_host(&svc.name, hash)];
    for (tag, _) in svc.traffic.tags() {
        if let Ok(h) = scheme.tag_host(&tag, &svc.name, hash) {
            hosts.push(h);
        }
    }
    let mut out = Vec::new();
    for h in hosts {
        let with_port = scheme.url(&h);
        let bare = format!("https://{h}");
        for u in [with_port, bare] {
            if !out.contains(&u) {
                out.push(format!("{u}/"));
                out.push(u);
            }
        }
    }
    out.extend(svc.custom_audiences.iter().cloned());
    out.push(CLI_CLIENT_ID.to_owned());
    out
}

#[cfg(test)]
mod tests;
