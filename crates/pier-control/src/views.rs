//! What the API shows of services and revisions: their URLs, traffic status and conditions.

use super::*;
use pier_model::logs::LogKind;

impl Platform {
    pub(crate) fn url_for(&self, svc: &ServiceRecord, hash: &str) -> String {
        self.scheme.url(&self.scheme.service_host(&svc.name, hash))
    }

    pub(crate) async fn hash_of(&self, project: &ProjectName) -> Result<String> {
        let p = project.clone();
        Ok(self
            .db(move |s| s.project(&p))
            .await?
            .map(|p| p.hash)
            .unwrap_or_default())
    }

    pub(crate) fn resolved(
        svc: &ServiceRecord,
        revs: &[RevisionRecord],
    ) -> Vec<(Option<RevisionName>, bool, u8, Option<Tag>)> {
        let ready = |n: &RevisionName| {
            revs.iter()
                .any(|r| r.name == *n && r.state == RevisionState::Ready)
        };
        svc.traffic
            .0
            .iter()
            .map(|t| {
                let rev = match t.key() {
                    TrafficKey::Latest => svc.latest_ready.clone(),
                    TrafficKey::Revision(r) => Some(r),
                }
                .filter(ready);
                (rev, t.latest_revision, t.percent, t.tag.clone())
            })
            .collect()
    }

    pub(crate) async fn service_view(&self, svc: ServiceRecord) -> Result<ServiceView> {
        let hash = self.hash_of(&svc.project).await?;
        let (p, n) = (svc.project.clone(), svc.name.clone());
        let revs = self.db(move |s| s.revisions(&p, Some(&n))).await?;
        Ok(self.service_view_from(svc, &revs, &hash))
    }

    /// A service's view from its records (`revs`: its revisions), without reading the store: lists
    /// read every record once, not once per service.
    fn service_view_from(
        &self,
        svc: ServiceRecord,
        revs: &[RevisionRecord],
        hash: &str,
    ) -> ServiceView {
        let latest = svc
            .latest_created
            .as_ref()
            .and_then(|n| revs.iter().find(|r| r.name == *n));
        let traffic: Vec<TrafficStatus> = Self::resolved(&svc, revs)
            .into_iter()
            .map(
                |(revision_name, latest_revision, percent, tag)| TrafficStatus {
                    url: tag.as_ref().and_then(|t| {
                        self.scheme
                            .tag_host(t, &svc.name, hash)
                            .ok()
                            .map(|h| self.scheme.url(&h))
                    }),
                    revision_name,
                    latest_revision,
                    percent,
                    tag,
                },
            )
            .collect();
        let (ready, message) = match latest {
            Some(r) if r.state == RevisionState::Failed => (
                false,
                Some(format!(
                    "revision {} failed: {}",
                    r.name,
                    r.message.clone().unwrap_or_default()
                )),
            ),
            Some(r) if r.state == RevisionState::Deploying => {
                (false, Some(format!("revision {} is deploying", r.name)))
            }
            Some(_) => (true, None),
            None => (false, Some("no revision".into())),
        };
        // The most recent unexpected instance end among the revisions that serve.
        let last_instance_exit = traffic
            .iter()
            .filter_map(|t| t.revision_name.as_ref())
            .filter_map(|r| {
                self.activator.pool(&PoolKey {
                    project: svc.project.clone(),
                    revision: r.clone(),
                })
            })
            .filter_map(|p| p.last_exit())
            .max_by(|a, b| a.at.cmp(&b.at));
        ServiceView {
            last_instance_exit,
            url: self.url_for(&svc, hash),
            template: latest.map(|r| r.template.clone()),
            traffic_spec: svc.traffic.0.clone(),
            traffic,
            latest_created_revision: svc.latest_created.clone(),
            latest_ready_revision: svc.latest_ready.clone(),
            ready,
            message,
            allow_unauthenticated: self.identity.directory().is_public(&svc.project, &svc.name),
            ingress: svc.ingress,
            invoker_iam_check: svc.invoker_iam_check,
            custom_audiences: svc.custom_audiences.clone(),
            end_user_auth: svc.end_user_auth.clone(),
            cache: svc.cache.clone(),
            created_at: svc.created_at.clone(),
            updated_at: svc.updated_at.clone(),
            name: svc.name,
            project: svc.project,
        }
    }

    pub(crate) async fn revision_view(&self, rec: &RevisionRecord) -> Result<RevisionView> {
        let (p, n) = (rec.project.clone(), rec.service.clone());
        let svc = self.db(move |s| s.service(&p, &n)).await?;
        let revs = match &svc {
            Some(svc) => {
                let (p, n) = (svc.project.clone(), svc.name.clone());
                self.db(move |s| s.revisions(&p, Some(&n))).await?
            }
            None => Vec::new(),
        };
        Ok(self.revision_view_from(rec, svc.as_ref(), &revs))
    }

    /// A revision's view from its records (its service, and that service's revisions), without
    /// reading the store.
    fn revision_view_from(
        &self,
        rec: &RevisionRecord,
        svc: Option<&ServiceRecord>,
        revs: &[RevisionRecord],
    ) -> RevisionView {
        let (mut percent, mut tags) = (0u8, Vec::new());
        if let Some(svc) = svc {
            for (rev, _, pct, tag) in Self::resolved(svc, revs) {
                if rev.as_ref() == Some(&rec.name) {
                    percent = percent.saturating_add(pct);
                    tags.extend(tag);
                }
            }
        }
        let pool = self.activator.pool(&PoolKey {
            project: rec.project.clone(),
            revision: rec.name.clone(),
        });
        let instances = pool.as_ref().map(|p| p.instances()).unwrap_or_default();
        let last_instance_exit = pool.as_ref().and_then(|p| p.last_exit());
        RevisionView {
            warnings: Vec::new(),
            operation: None,
            name: rec.name.clone(),
            service: rec.service.clone(),
            project: rec.project.clone(),
            template: rec.template.clone(),
            state: rec.state,
            message: rec.message.clone(),
            log_tail: rec.log_tail.clone(),
            created_at: rec.created_at.clone(),
            ready_at: rec.ready_at.clone(),
            percent,
            tags,
            instances,
            image_digest: rec.image_digest.clone(),
            creator: rec.creator.clone(),
            last_instance_exit,
        }
    }

    /// One service.
    pub async fn get_service(
        &self,
        project: &ProjectName,
        name: &ServiceName,
    ) -> Result<ServiceView> {
        let (p, n) = (project.clone(), name.clone());
        let svc = self
            .db(move |s| s.service(&p, &n))
            .await?
            .ok_or_else(|| not_found_service(project, name))?;
        self.service_view(svc).await
    }

    /// Services of a project.
    pub async fn list_services(&self, project: &ProjectName) -> Result<Vec<ServiceView>> {
        let p = project.clone();
        // Three reads for the whole list, whatever its length.
        let (services, revisions) = self
            .db(move |s| Ok((s.services(Some(&p))?, s.revisions(&p, None)?)))
            .await?;
        let hash = self.hash_of(project).await?;
        let by_service = by_service(&revisions);
        Ok(services
            .into_iter()
            .map(|svc| {
                let revs = by_service.get(&svc.name).copied().unwrap_or(&[]);
                self.service_view_from(svc, revs, &hash)
            })
            .collect())
    }

    /// Revisions of a project, optionally of one service.
    pub async fn list_revisions(
        &self,
        project: &ProjectName,
        service: Option<&ServiceName>,
    ) -> Result<Vec<RevisionView>> {
        let (p, s2) = (project.clone(), service.cloned());
        if let Some(svc) = service {
            let (p, n) = (project.clone(), svc.clone());
            if self.db(move |s| s.service(&p, &n)).await?.is_none() {
                return Err(not_found_service(project, svc));
            }
        }
        let p2 = p.clone();
        let (revs, services) = self
            .db(move |s| Ok((s.revisions(&p, s2.as_ref())?, s.services(Some(&p2))?)))
            .await?;
        let by_service = by_service(&revs);
        let services: HashMap<&ServiceName, &ServiceRecord> =
            services.iter().map(|s| (&s.name, s)).collect();
        Ok(revs
            .iter()
            .map(|r| {
                let svc = services.get(&r.service).copied();
                let siblings = by_service.get(&r.service).copied().unwrap_or(&[]);
                self.revision_view_from(r, svc, siblings)
            })
            .collect())
    }

    /// One revision.
    pub async fn get_revision(
        &self,
        project: &ProjectName,
        name: &RevisionName,
    ) -> Result<RevisionView> {
        let (p, n) = (project.clone(), name.clone());
        let rec = self.db(move |s| s.revision(&p, &n)).await?.ok_or_else(|| {
            ControlError::NotFound(format!(
                "revision {name} does not exist in project {project}: `pier revisions list` shows them"
            ))
        })?;
        self.revision_view(&rec).await
    }
}

/// Reads that are not views of a resource: whether a project exists, a service's logs.
impl Platform {
    /// Whether a project exists.
    pub async fn project_exists(&self, project: &ProjectName) -> Result<bool> {
        let p = project.clone();
        Ok(self.db(move |s| s.project(&p)).await?.is_some())
    }

    /// A service's newest log lines.
    pub async fn logs(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        query: LogQuery,
        kind: LogKind,
    ) -> Result<Vec<LogEntry>> {
        let (p, n) = (project.clone(), service.clone());
        if self.db(move |s| s.service(&p, &n)).await?.is_none() {
            return Err(not_found_service(project, service));
        }
        let mut stores = Vec::new();
        if kind != LogKind::Requests {
            stores.push(self.logs.clone());
        }
        if kind != LogKind::App {
            match self.request_logs.get() {
                Some(r) => stores.push(r.clone()),
                None if kind == LogKind::Requests => {
                    return Err(ControlError::Invalid(
                        "this server keeps no request log (it runs with --request-log off)".into(),
                    ));
                }
                None => {}
            }
        }
        let (p, n) = (project.clone(), service.clone());
        tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for store in stores {
                all.extend(store.read(&p, &n, &query)?);
            }
            // Both files are in time order; merged, the newest `limit` are kept.
            all.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
            if query.limit > 0 && all.len() > query.limit {
                all.drain(..all.len() - query.limit);
            }
            Ok::<_, std::io::Error>(all)
        })
        .await
        .map_err(|e| ControlError::Internal(e.to_string()))?
        .map_err(|e| ControlError::Internal(format!("reading logs: {e}")))
    }

    /// The log store (for following logs live).
    pub fn log_store(&self) -> &Arc<LogStore> {
        &self.logs
    }

    /// The request log's store, if the server keeps one.
    pub fn request_log_store(&self) -> Option<&Arc<LogStore>> {
        self.request_logs.get()
    }

    /// Reads (and follows) the gateway's request log from `store` too. Once; later calls are ignored.
    pub fn keep_request_logs(&self, store: Arc<LogStore>) {
        let _ = self.request_logs.set(store);
    }
}

/// A project's revisions by their service, borrowed: the store answers them grouped by service
/// ([`pier_store::Store::revisions`]), so each service's are one run of the list.
fn by_service(revs: &[RevisionRecord]) -> HashMap<&ServiceName, &[RevisionRecord]> {
    let out: HashMap<&ServiceName, &[RevisionRecord]> = revs
        .chunk_by(|a, b| a.service == b.service)
        .map(|run| (&run[0].service, run))
        .collect();
    debug_assert_eq!(
        out.values().map(|r| r.len()).sum::<usize>(),
        revs.len(),
        "the store's revisions come grouped by service"
    );
    out
}
