//! Route publication: the gateway's routing table rebuilt from the store after every change, and the
//! pools that lost their traffic dropped once idle. One service's fault stays its own.

use super::*;

impl Platform {
    /// Rebuilds and publishes the routing table from the store.
    pub async fn publish_routes(self: &Arc<Self>) -> Result<()> {
        let _guard = self.publish.lock().await;
        self.publish_locked().await
    }

    /// [`Platform::publish_routes`], for a caller that holds the publication lock (so that a change
    /// to the store and the routes that follow from it are seen together).
    pub(crate) async fn publish_locked(self: &Arc<Self>) -> Result<()> {
        let (projects, services, revisions) = self
            .db(|s| Ok((s.projects()?, s.services(None)?, s.all_revisions()?)))
            .await?;
        let hashes: HashMap<ProjectName, String> =
            projects.into_iter().map(|p| (p.name, p.hash)).collect();
        let revs: HashMap<(ProjectName, RevisionName), RevisionRecord> = revisions
            .into_iter()
            .map(|r| ((r.project.clone(), r.name.clone()), r))
            .collect();
        let mut table = claims::Claims::default();
        let mut routed: HashSet<PoolKey> = HashSet::new();
        let directory = self.identity.directory();
        for svc in &services {
            let Some(hash) = hashes.get(&svc.project) else {
                continue;
            };
            let access = Arc::new(Access {
                ingress: svc.ingress,
                invoker_check: svc.invoker_iam_check,
                invokers: directory.invokers(&svc.project, &svc.name),
                audiences: self.audiences(svc, hash),
            });
            let resolve = |key: &TrafficKey| -> Option<&RevisionRecord> {
                let name = match key {
                    TrafficKey::Latest => svc.latest_ready.as_ref()?,
                    TrafficKey::Revision(r) => r,
                };
                revs.get(&(svc.project.clone(), name.clone()))
                    .filter(|r| r.state == RevisionState::Ready)
            };
            // A revision that cannot be routed (say, its id block is beyond a range since narrowed)
            // makes its own service answer 503 with the reason; every other service keeps serving.
            let mut shares = Vec::new();
            let mut broken = None;
            for (key, pct) in svc.traffic.percents() {
                if let Some(rec) = resolve(&key) {
                    match self.pool_for(rec, svc.id_block, true) {
                        Ok(pool) => {
                            routed.insert(PoolKey {
                                project: rec.project.clone(),
                                revision: rec.name.clone(),
                            });
                            shares.push((pool, pct));
                        }
                        Err(why) => {
                            tracing::error!(service = %svc.name, revision = %rec.name, "cannot route: {why}");
                            broken = Some(cannot_serve(&rec.name));
                        }
                    }
                }
            }
            let host = self.scheme.service_host(&svc.name, hash);
            let route = match broken {
                Some(why) => Route::unavailable(
                    svc.project.clone(),
                    svc.name.clone(),
                    None,
                    why,
                    access.clone(),
                ),
                None => Route::split(
                    svc.project.clone(),
                    svc.name.clone(),
                    None,
                    shares,
                    access.clone(),
                ),
            };
            table.claim(host, Arc::new(route));
            for (tag, key) in svc.traffic.tags() {
                let Ok(host) = self.scheme.tag_host(&tag, &svc.name, hash) else {
                    continue;
                };
                let route = match resolve(&key) {
                    Some(rec) => {
                        let key = PoolKey {
                            project: rec.project.clone(),
                            revision: rec.name.clone(),
                        };
                        let serving = routed.contains(&key);
                        match self.pool_for(rec, svc.id_block, serving) {
                            Ok(pool) => {
                                routed.insert(key);
                                Route::split(
                                    svc.project.clone(),
                                    svc.name.clone(),
                                    Some(tag.clone()),
                                    vec![(pool, 100)],
                                    access.clone(),
                                )
                            }
                            Err(why) => Route::unavailable(
                                svc.project.clone(),
                                svc.name.clone(),
                                Some(tag.clone()),
                                {
                                    tracing::error!(service = %svc.name, revision = %rec.name, "cannot route tag {tag}: {why}");
                                    cannot_serve(&rec.name)
                                },
                                access.clone(),
                            ),
                        }
                    }
                    None => Route::unavailable(
                        svc.project.clone(),
                        svc.name.clone(),
                        Some(tag.clone()),
                        format!(
                            "tag {tag} of service {} points at no ready revision",
                            svc.name
                        ),
                        access.clone(),
                    ),
                };
                table.claim(host, Arc::new(route));
            }
        }
        let mut table = table.into_table();
        if let Some(apex) = self.apex.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            table.insert_local(self.scheme.domain().to_owned(), apex);
        }
        self.write_hosts_file(&table);
        self.gateway.publish(table);
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
        Ok(())
    }

    /// The audiences a service's tokens may carry: each of its URLs (with and without a trailing slash,
    /// with and without the port), its custom audiences, and the CLI's client id.
    pub(crate) fn audiences(&self, svc: &ServiceRecord, hash: &str) -> Vec<String> {
        let mut hosts = vec![self.scheme.service_host(&svc.name, hash)];
        for (tag, _) in svc.traffic.tags() {
            if let Ok(h) = self.scheme.tag_host(&tag, &svc.name, hash) {
                hosts.push(h);
            }
        }
        let mut out = Vec::new();
        for h in hosts {
            let with_port = self.scheme.url(&h);
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

    pub(crate) fn write_hosts_file(&self, table: &RouteTable) {
        let mut hosts: Vec<&str> = table.hosts().collect();
        hosts.sort_unstable();
        let path = self
            .hosts_file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(path) = path {
            let mut text =
                String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n");
            text.push_str(&format!(
                "{} metadata.google.internal metadata\n# Pier services\n",
                pier_runtime::netns::METADATA_IP
            ));
            for h in &hosts {
                text.push_str(&format!("{} {h}\n", pier_runtime::netns::GATEWAY_IP));
            }
            write_in_place(&path, &text);
        }
    }

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
        self.activator.ensure_pool(
            &rec.project,
            &rec.service,
            &rec.name,
            Arc::new(template),
            isolation,
            serving,
        )
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
}

/// What callers of a revision that cannot be routed are told; the reason itself (configuration of
/// the server) goes to the server's log.
fn cannot_serve(revision: &RevisionName) -> String {
    format!(
        "revision {revision} cannot be started on this server; its operator finds why in the server's log"
    )
}
