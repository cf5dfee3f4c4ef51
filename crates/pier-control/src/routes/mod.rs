//! Route publication: the gateway's routing table rebuilt from the store after every change (planned by
//! the pure [`plan`], then given pools and the admission filter), and the pools that lost their traffic
//! dropped once idle. One service's fault stays its own.

use super::*;
use pier_gateway::Backend;

pub(crate) mod plan;

impl Platform {
    /// Rebuilds and publishes the routing table from the store.
    pub async fn publish_routes(self: &Arc<Self>) -> Result<()> {
        let _guard = self.publish.lock().await;
        self.publish_locked().await
    }

    /// [`Platform::publish_routes`], for a caller that holds the publication lock (so that a change
    /// to the store and the routes that follow from it are seen together).
    pub(crate) async fn publish_locked(self: &Arc<Self>) -> Result<()> {
        let began = Instant::now();
        let (projects, services, revisions, mappings, verifications, gateways, sites) = self
            .db(|s| {
                Ok((
                    s.projects()?,
                    s.services(None)?,
                    s.all_revisions()?,
                    s.domain_mappings(None)?,
                    s.domain_verifications(None)?,
                    crate::api_gateways::routes::GatewayRecords {
                        gateways: s.gateways(None)?,
                        configs: s.api_configs(None, None)?,
                        keys: s.api_keys(None)?,
                    },
                    crate::hosting::routes::SiteRecords {
                        sites: s.sites(None)?,
                        channels: s.site_channels(None, None)?,
                    },
                ))
            })
            .await?;
        let hashes: HashMap<ProjectName, String> =
            projects.into_iter().map(|p| (p.name, p.hash)).collect();
        let revs: HashMap<(ProjectName, RevisionName), RevisionRecord> = revisions
            .into_iter()
            .map(|r| ((r.project.clone(), r.name.clone()), r))
            .collect();
        let directory = self.identity.directory();
        let records = plan::Records {
            scheme: &self.scheme,
            hashes: &hashes,
            services: &services,
            revisions: &revs,
        };
        let plans = plan::plan(&records, |p, s| directory.invokers(p, s));
        let mut table = claims::Claims::default();
        let mut routed: HashSet<PoolKey> = HashSet::new();
        // By (project, name), as gateways' routes are: mapped domains look either up.
        let mut main_routes: HashMap<(ProjectName, String), Arc<Route>> = HashMap::new();
        // Service URLs first, so a revision that serves traffic there is marked serving before a tag
        // URL asks for its pool.
        let (main, tagged): (Vec<_>, Vec<_>) = plans.into_iter().partition(|p| p.tag.is_none());
        for host_plan in main.into_iter().chain(tagged) {
            let svc = host_plan.service;
            let backend = match host_plan.target {
                plan::Target::Unavailable(why) => Backend::Unavailable(why),
                plan::Target::Split(shares) => {
                    // A revision that cannot be routed (say, its id block is beyond a range since
                    // narrowed) makes its own URL answer 503 with the reason; every other keeps serving.
                    let mut pools = Vec::new();
                    let mut broken = None;
                    for (rec, pct) in shares {
                        let key = PoolKey {
                            project: rec.project.clone(),
                            revision: rec.name.clone(),
                        };
                        let serving = host_plan.tag.is_none() || routed.contains(&key);
                        match self.pool_for(rec, svc.id_block, serving) {
                            Ok(pool) => {
                                routed.insert(key);
                                pools.push((pool, pct));
                            }
                            Err(why) => {
                                tracing::error!(service = %svc.name, revision = %rec.name, tag = ?host_plan.tag, "cannot route: {why}");
                                broken = Some(cannot_serve(&rec.name));
                            }
                        }
                    }
                    match broken {
                        Some(why) => Backend::Unavailable(why),
                        None => Backend::split(&svc.name, pools),
                    }
                }
            };
            let end_user = svc
                .end_user_auth
                .as_ref()
                .map(|e| self.end_user_filter(e, &host_plan.access.audiences));
            let mut route = Route::new(
                svc.project.clone(),
                svc.name.clone(),
                host_plan.tag,
                host_plan.access,
                self.admission.clone(),
                backend,
            );
            if let Some(f) = end_user {
                route = route.with_filter(f);
            }
            if let Some(c) = &svc.cache {
                // One scope per URL (a tag's serves its own revision; a mapped domain shares it) and
                // per setting (a change starts empty).
                let scope = format!(
                    "{}{}/{}-{}-{}",
                    crate::hosting::routes::service_scope_prefix(&svc.project, &svc.name),
                    route.tag.as_ref().map_or("-", |t| t.as_str()),
                    c.mode.as_str(),
                    c.max_object_bytes,
                    c.default_ttl_seconds
                );
                route = route.with_cache(pier_cache::ScopedCache::new(
                    self.hosting.cache.clone(),
                    &scope,
                    pier_cache::Settings {
                        max_object: c.max_object_bytes,
                        session_key: false,
                        force_ttl: (c.mode == pier_model::hosting::CacheMode::Force)
                            .then(|| Duration::from_secs(c.default_ttl_seconds)),
                        require_public: false,
                    },
                ));
            }
            let route = Arc::new(route);
            if route.tag.is_none() {
                main_routes.insert((svc.project.clone(), svc.name.to_string()), route.clone());
            }
            table.claim(host_plan.host, route, &self.admission);
        }
        // Gateways call Pier's own names (services, mapped domains) through their routes.
        let mapped: HashSet<String> = mappings.iter().map(|m| m.domain.clone()).collect();
        let gateway_routes = self.claim_gateways(&mut table, &gateways, &hashes, &mapped);
        // Sites call services through their main routes' hosts.
        let service_hosts: HashMap<(ProjectName, String), String> = services
            .iter()
            .filter_map(|s| {
                let hash = hashes.get(&s.project)?;
                Some((
                    (s.project.clone(), s.name.to_string()),
                    self.scheme.service_host(&s.name, hash),
                ))
            })
            .collect();
        let (site_routes, next_expiry) = self
            .claim_sites(&mut table, &sites, &hashes, &service_hosts)
            .await;
        // Mapped domains serve their target (a service, a gateway) exactly as its own URL does,
        // through the same guard.
        for mapping in crate::domains::routed_mappings(&mappings, &verifications) {
            let key = (mapping.project.clone(), mapping.target_name.clone());
            let target = match mapping.target_kind.as_str() {
                "service" => main_routes.get(&key),
                "gateway" => gateway_routes.get(&key),
                "site" => site_routes.get(&key),
                _ => None,
            };
            if let Some(target) = target {
                let route = Arc::new(target.for_mapped_domain());
                table.claim(mapping.domain.clone(), route, &self.admission);
            }
        }
        // Subscribers write files (the instances' hosts file): off the async workers.
        let (routes, table) = (self.routes.clone(), table.into_table());
        tokio::task::spawn_blocking(move || routes.publish(table, began))
            .await
            .map_err(|e| ControlError::internal(format!("publishing routes failed: {e}")))?;
        self.retire_unrouted(&routed, &revs);
        self.schedule_expiry(next_expiry);
        Ok(())
    }
}

/// What callers of a revision that cannot be routed are told; the reason itself (configuration of
/// the server) goes to the server's log.
fn cannot_serve(revision: &RevisionName) -> String {
    format!(
        "revision {revision} cannot be started on this server; its operator finds why in the server's log"
    )
}
