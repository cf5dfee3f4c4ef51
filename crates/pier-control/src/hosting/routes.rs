//! Sites as routes: each channel that serves a version (and has not expired) gets a route at its host
//! (`SITE-HASH.DOMAIN` for `live`, `SITE--CHANNEL-HASH.DOMAIN` for previews; the site kind's own hash)
//! whose admission filter is the usual guard with public access (sites are public, as Firebase's), then
//! the version's [`pier_hosting::SiteStage`] (a filter that decides, a responder that answers files and
//! redirects) and a dispatching backend for rewrites to services, resolved here to the services' hosts
//! of the same publication. Compiled versions are cached by (project, site, version, release time):
//! a version never changes, so a republication compiles only what was just released.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;
use pier_gateway::{Access, Backend, Route};
use pier_hosting::config::RewriteTarget;
use pier_hosting::{Entry, RunTarget, SiteStage, SiteTokens, SiteVersion};
use pier_identity::{InvokerSet, Principal};
use pier_model::{ProjectName, ServiceName};
use pier_store::{SiteChannelRecord, SiteRecord, StoreError};

use crate::claims::Claims;
use crate::{IdentityService, Platform};

/// What site routes are built from, read with the rest of the routes.
pub(crate) struct SiteRecords {
    pub sites: Vec<SiteRecord>,
    pub channels: Vec<SiteChannelRecord>,
}

/// A compiled version, by (project, site, version, release time).
pub(crate) type VersionKey = (String, String, i64, String);

/// The site's service account's ID tokens.
struct AccountTokens {
    identity: Arc<IdentityService>,
    account: Principal,
}

impl SiteTokens for AccountTokens {
    fn id_token(&self, audience: &str) -> Result<String, String> {
        self.identity
            .mint_identity_token(&self.account, audience, None)
            .map_err(|e| e.to_string())
    }
}

fn released(at: Option<&str>) -> SystemTime {
    at.and_then(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    })
    .map(|t| {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.unix_timestamp().max(0) as u64)
    })
    .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl Platform {
    /// The host a rewrite to `service` goes to: the tag host of its pinned revision, else its own.
    fn rewrite_host(
        &self,
        main: Option<&String>,
        service: &str,
        pinned: Option<&String>,
        hash: &str,
    ) -> Option<String> {
        let main = main?;
        match pinned {
            None => Some(main.clone()),
            Some(revision) => {
                let tag = super::pins::pin_tag(service, revision)?;
                let name: ServiceName = service.parse().ok()?;
                self.scheme.tag_host(&tag, &name, hash).ok()
            }
        }
    }

    /// Compiled versions for every serving channel, reading from the store only those not cached.
    async fn site_versions(
        &self,
        wanted: Vec<VersionKey>,
    ) -> HashMap<VersionKey, Result<Arc<SiteVersion>, String>> {
        let Some(files) = self.hosting.files.clone() else {
            return HashMap::new();
        };
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        {
            let cache = self.site_cache.lock().unwrap_or_else(|p| p.into_inner());
            for key in wanted {
                match cache.get(&key) {
                    Some(v) => {
                        out.insert(key, Ok(v.clone()));
                    }
                    None => missing.push(key),
                }
            }
        }
        if !missing.is_empty() {
            let loaded = self
                .db(move |st| {
                    let mut got = Vec::new();
                    for key in missing {
                        let project: ProjectName = key
                            .0
                            .parse()
                            .map_err(|e| StoreError::Corrupt(format!("site project: {e}")))?;
                        let rec = st.site_version(&project, &key.1, key.2)?;
                        let compiled =
                            compile(&rec.config, &rec.files, rec.pins.as_ref(), &files, &key.3);
                        got.push((key, compiled));
                    }
                    Ok(got)
                })
                .await;
            match loaded {
                Ok(got) => {
                    let mut cache = self.site_cache.lock().unwrap_or_else(|p| p.into_inner());
                    for (key, compiled) in got {
                        if let Ok(v) = &compiled {
                            cache.insert(key.clone(), v.clone());
                        }
                        out.insert(key, compiled);
                    }
                }
                Err(e) => tracing::error!("reading site versions failed: {e}"),
            }
        }
        // Versions no channel serves any more leave the cache.
        let mut cache = self.site_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|k, _| out.contains_key(k));
        out
    }

    /// Claims every serving channel's host in `table`; `service_hosts` maps (project, service) to the
    /// service's main host. Returns the live channels' routes by (project, site), for mapped domains,
    /// and the next time a channel expires (Unix seconds).
    pub(crate) async fn claim_sites(
        &self,
        table: &mut Claims,
        records: &SiteRecords,
        hashes: &HashMap<ProjectName, String>,
        service_hosts: &HashMap<(ProjectName, String), String>,
    ) -> (HashMap<(ProjectName, String), Arc<Route>>, Option<i64>) {
        let mut out = HashMap::new();
        let Some(files) = self.hosting.files.clone() else {
            return (out, None);
        };
        let now = super::now_unix();
        let serving: Vec<&SiteChannelRecord> = records
            .channels
            .iter()
            .filter(|c| c.version.is_some() && c.expires_at.is_none_or(|e| e > now))
            .collect();
        let next_expiry = serving.iter().filter_map(|c| c.expires_at).min();
        let wanted: Vec<VersionKey> = serving
            .iter()
            .map(|c| {
                (
                    c.project.to_string(),
                    c.site.clone(),
                    c.version.unwrap_or(0),
                    c.released_at.clone().unwrap_or_default(),
                )
            })
            .collect();
        let versions = self.site_versions(wanted.clone()).await;
        for (c, key) in serving.into_iter().zip(wanted) {
            let Some(hash) = hashes.get(&c.project) else {
                continue;
            };
            let Some(site) = records
                .sites
                .iter()
                .find(|s| s.project == c.project && s.name == c.site)
            else {
                continue;
            };
            let Ok(name) = c.site.parse::<ServiceName>() else {
                continue;
            };
            let host = self.channel_host(hash, &c.site, &c.name);
            let access = Arc::new(Access {
                ingress: pier_model::Ingress::All,
                invoker_check: true,
                invokers: InvokerSet {
                    all_users: true,
                    ..InvokerSet::default()
                },
                audiences: vec![self.scheme.url(&host)],
                passthrough: Vec::new(),
            });
            let route = Route::new(
                c.project.clone(),
                name.clone(),
                None,
                access.clone(),
                self.admission.clone(),
                Backend::Dispatch,
            );
            let route = match versions.get(&key) {
                Some(Ok(version)) => {
                    let runs = version
                        .rules
                        .rewrites
                        .iter()
                        .map(|r| match &r.target {
                            RewriteTarget::File(_) => None,
                            RewriteTarget::Run { service, pin_tag } => Some(
                                match self.rewrite_host(
                                    service_hosts.get(&(c.project.clone(), service.clone())),
                                    service,
                                    pin_tag.then(|| version.pins.get(service)).flatten(),
                                    hash,
                                ) {
                                    Some(h) => match HeaderValue::from_str(&h) {
                                        Ok(v) => RunTarget::Service {
                                            host: v,
                                            audience: self.scheme.url(&h),
                                        },
                                        Err(_) => RunTarget::Missing(format!("service {service} has no usable host")),
                                    },
                                    None => RunTarget::Missing(format!(
                                        "site {} rewrites to service {service}, which does not exist in project {}",
                                        c.site, c.project
                                    )),
                                },
                            ),
                        })
                        .collect();
                    let stage = SiteStage::new(
                        version.clone(),
                        files.clone(),
                        runs,
                        Arc::new(AccountTokens {
                            identity: self.identity.clone(),
                            account: Principal::ServiceAccount(site.service_account.clone()),
                        }),
                    );
                    let (filter, responder) = stage.stages();
                    route.with_filter(filter).with_responder(responder)
                }
                other => {
                    if let Some(Err(why)) = other {
                        tracing::error!(site = %c.site, version = ?c.version, "cannot serve the site: {why}");
                    }
                    Route::new(
                        c.project.clone(),
                        name,
                        None,
                        access,
                        self.admission.clone(),
                        Backend::Unavailable(format!(
                            "site {} cannot serve its version; its operator finds why in the server's log",
                            c.site
                        )),
                    )
                }
            };
            // Rewrites' answers are kept by their Cache-Control, per channel and version: a release
            // starts from an empty scope.
            let route = route.with_cache(pier_cache::ScopedCache::new(
                self.hosting.cache.clone(),
                &format!(
                    "{}{}/v{}@{}",
                    site_scope_prefix(&c.project, &c.site),
                    c.name,
                    c.version.unwrap_or(0),
                    c.released_at.as_deref().unwrap_or("")
                ),
                pier_cache::Settings {
                    session_key: true,
                    require_public: true,
                    ..pier_cache::Settings::default()
                },
            ));
            let route = Arc::new(route);
            if c.name == pier_store::LIVE {
                out.insert((c.project.clone(), c.site.clone()), route.clone());
            }
            table.claim(host, route, &self.admission);
        }
        (out, next_expiry)
    }
}

/// The beginning of every cache scope of a service's URLs.
pub(crate) fn service_scope_prefix(project: &ProjectName, service: &ServiceName) -> String {
    format!("service:{project}/{service}/")
}

/// The beginning of every cache scope of a site's channels.
pub(crate) fn site_scope_prefix(project: &ProjectName, site: &str) -> String {
    format!("site:{project}/{site}/")
}

/// Compiles a stored version: its hosting entry and its files with what the file store holds for each.
fn compile(
    config: &str,
    files: &std::collections::BTreeMap<String, String>,
    pins: Option<&std::collections::BTreeMap<String, String>>,
    store: &pier_hosting::FileStore,
    released_at: &str,
) -> Result<Arc<SiteVersion>, String> {
    let entry: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("hosting entry: {e}"))?;
    let rules = pier_hosting::compile(&entry).map_err(|e| e.to_string())?;
    let mut map = HashMap::with_capacity(files.len());
    for (path, digest) in files {
        let stored = store
            .stat(digest)
            .ok_or_else(|| format!("file {path} ({digest}) is missing from the file store"))?;
        map.insert(
            path.clone(),
            Entry {
                digest: digest.clone(),
                stored,
            },
        );
    }
    let pins = pins
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok(SiteVersion::pinned(
        map,
        rules,
        released(Some(released_at)),
        pins,
    ))
}
