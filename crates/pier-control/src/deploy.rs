//! Deploys: a request checked whole, a revision recorded, then proven by one instance (after its image
//! is pulled and pinned); settings changed with a deploy or alone. Each deploy reports its phases as a
//! long-running operation ([`operations`]).

use super::*;

/// A deploy's phases, as its operation names them.
const PULLING: &str = "Pulling image";
const STARTING: &str = "Starting the instance";
const PROBING: &str = "Probing";
const ROUTING: &str = "Routing traffic";

impl Platform {
    /// Creates a revision and starts proving it in the background. Returns at once with the revision in
    /// state DEPLOYING; [`Platform::wait_revision`] waits for the outcome.
    pub async fn deploy(
        self: &Arc<Self>,
        project: &ProjectName,
        service: &ServiceName,
        req: DeployRequest,
    ) -> Result<RevisionView> {
        let mut req = req;
        req.template.validate()?;
        // An image revision records the environment it runs in, so changing the server's default later
        // never changes it.
        if req.template.image.is_some() && req.template.execution_environment.is_none() {
            req.template.execution_environment = Some(self.isolation.default_environment);
        }
        self.activator
            .check(&req.template)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let image = match &req.template.image {
            Some(text) => {
                let source: ImageSource =
                    text.parse()
                        .map_err(|e: pier_image::reference::BadReference| {
                            ControlError::Invalid(e.to_string())
                        })?;
                if let ImageSource::Local { path, .. } = &source
                    && !path.is_absolute()
                {
                    return Err(ControlError::Invalid(format!(
                        "image {text}: give the archive's absolute path (the server reads it)"
                    )));
                }
                Some(source)
            }
            None => None,
        };
        // A revision runs as a service account: the project's default unless one is named.
        let sa = self
            .acting_account(
                project,
                req.template.service_account.as_deref(),
                "--service-account",
            )
            .await?;
        req.template.service_account = Some(sa);
        if let Some(tag) = &req.tag {
            // Refuse tags that cannot make a URL before anything is recorded.
            self.scheme.tag_host(tag, service, "000000")?;
        }
        let project = project.clone();
        let service = service.clone();
        let wishes = NewRevision {
            no_traffic: req.no_traffic,
            tag: req.tag.clone(),
            creator: req.creator.clone(),
        };
        let mut settings = req.settings.clone();
        if settings.allow_unauthenticated.is_none() {
            settings.allow_unauthenticated = req.allow_unauthenticated;
        }
        // Everything is checked before the revision is recorded: from here on, every way out goes
        // through failing the revision, so none is left DEPLOYING.
        self.validate_settings(&settings)?;
        let template = req.template.clone();
        let (p2, s2) = (project.clone(), service.clone());
        let (svc, rev) = self
            .db(move |s| {
                s.ensure_project(&p2, project_hash)?;
                s.create_revision(&p2, &s2, &template, &wishes, &revision_suffix())
            })
            .await?;
        tracing::info!(project = %project, service = %service, revision = %rev.name, "deploying");
        let phases: &[&str] = if image.is_some() {
            &[PULLING, STARTING, PROBING, ROUTING]
        } else {
            &[STARTING, PROBING, ROUTING]
        };
        let op = self.operations.start(
            project.as_str(),
            service.as_str(),
            "deploy",
            format!(
                "projects/{project}/services/{service}/revisions/{}",
                rev.name
            ),
            phases,
        );
        if !settings.is_empty()
            && let Err(e) = self.apply_settings(&project, &service, &settings).await
        {
            op.fail(&e.to_string());
            self.fail_revision(&rev, &e.to_string(), Vec::new()).await;
            return Err(e);
        }
        self.changed();
        // A revision the runtimes cannot run fails at once, with the reason. An image revision gets its
        // pool once its image is pulled and pinned.
        let pool = match &image {
            Some(_) => None,
            None => match self.pool_for(&rev, svc.id_block, false) {
                Ok(p) => Some(p),
                Err(why) => {
                    op.fail(&why);
                    self.fail_revision(&rev, &why, Vec::new()).await;
                    return Err(ControlError::Invalid(why));
                }
            },
        };
        let this = self.clone();
        let operation = op.name();
        let rec = rev.clone();
        let block = svc.id_block;
        let span = tracing::info_span!("deploy", project = %rev.project, service = %rev.service, revision = %rev.name);
        let proving = async move {
            let (rec, pool) = match (pool, image) {
                (Some(pool), _) => (rec, pool),
                (None, Some(source)) => {
                    op.begin(PULLING);
                    match this.pull_for(&rec, block, &source, &op).await {
                        Ok(found) => {
                            op.end(PULLING);
                            found
                        }
                        Err(why) => {
                            op.fail(&why);
                            this.fail_revision(&rec, &why, Vec::new()).await;
                            return;
                        }
                    }
                }
                (None, None) => return,
            };
            op.begin(STARTING);
            let started = {
                let op = op.clone();
                move || {
                    op.end(STARTING);
                    op.begin(PROBING);
                }
            };
            match pool.start_one_reporting(started).await {
                Ok(()) => {
                    op.end(PROBING);
                    op.begin(ROUTING);
                    // Ready and routed are one step for whoever waits: the publication lock is held
                    // from recording to publishing, and waiters take it before they answer.
                    let publishing = this.publish.lock().await;
                    let (p, r) = (rec.project.clone(), rec.name.clone());
                    // The operation says how it ended: a revision that is ready but not recorded (the
                    // store failed) or not routed is not a success the caller may build on.
                    let routed = match this.db(move |s| s.mark_ready(&p, &r)).await {
                        Ok(_) => {
                            tracing::info!(revision = %rec.name, "revision ready");
                            this.publish_locked().await.map_err(|e| {
                                tracing::error!(error = %e, "publishing routes failed");
                                format!(
                                    "the revision started, but routing traffic to it failed: {e}"
                                )
                            })
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "recording a ready revision failed");
                            Err(format!(
                                "the revision started, but recording it as ready failed: {e}"
                            ))
                        }
                    };
                    drop(publishing);
                    this.changed();
                    match routed {
                        Ok(()) => {
                            op.end(ROUTING);
                            op.succeed();
                        }
                        Err(why) => op.fail(&why),
                    }
                }
                Err((why, tail)) => {
                    op.fail(&why);
                    this.fail_revision(&rec, &why, tail).await;
                }
            }
        };
        tokio::spawn(tracing::Instrument::instrument(proving, span));
        let mut view = self.revision_view(&rev).await?;
        view.operation = Some(operation);
        Ok(view)
    }

    /// An operation of `project` (a deploy's progress) by id.
    pub fn operation(&self, project: &ProjectName, id: &str) -> Result<Arc<operations::Operation>> {
        self.operations.get(project.as_str(), id).ok_or_else(|| {
            ControlError::NotFound(format!(
                "operation {id} does not exist in project {project} (operations are kept an hour, and not across restarts)"
            ))
        })
    }

    /// Pulls a new revision's image, records the digest it resolved to, and makes its pool.
    pub(crate) async fn pull_for(
        self: &Arc<Self>,
        rec: &RevisionRecord,
        block: u32,
        source: &ImageSource,
        op: &operations::Operation,
    ) -> std::result::Result<(RevisionRecord, Arc<pier_activator::RevisionPool>), String> {
        let images = self
            .images
            .clone()
            .ok_or_else(|| "this server cannot run container images".to_owned())?;
        let _recording = self.image_ops.read().await;
        let started = Instant::now();
        let report = |p: &pier_image::PullProgress| {
            op.detail(
                PULLING,
                format!(
                    "{}/{} layers, {:.1} of {:.1} MB",
                    p.layers_done,
                    p.layers,
                    p.bytes_done as f64 / 1e6,
                    p.bytes as f64 / 1e6
                ),
            );
        };
        let info = images
            .pull_reporting(source, &report)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            revision = %rec.name,
            image = %source,
            digest = %info.digest,
            downloaded = info.downloaded,
            elapsed = ?started.elapsed(),
            "image pulled"
        );
        let (p, r, pinned, name, size) = (
            rec.project.clone(),
            rec.name.clone(),
            info.pinned.clone(),
            source.to_string(),
            info.size,
        );
        self.db(move |s| s.set_revision_image(&p, &r, &pinned, &name, size))
            .await
            .map_err(|e| e.to_string())?;
        let mut rec = rec.clone();
        rec.image_digest = Some(info.pinned);
        let pool = self.pool_for(&rec, block, false)?;
        Ok((rec, pool))
    }

    pub(crate) async fn fail_revision(
        self: &Arc<Self>,
        rec: &RevisionRecord,
        why: &str,
        tail: Vec<String>,
    ) {
        // A fault of the machine is named, with what to do.
        let why = &machine::explain(why);
        tracing::warn!(revision = %rec.name, "revision failed: {why}");
        let (p, r, w) = (rec.project.clone(), rec.name.clone(), why.to_owned());
        if let Err(e) = self.db(move |s| s.mark_failed(&p, &r, &w, &tail)).await {
            tracing::error!(error = %e, "recording a failed revision failed");
        }
        // A service whose first revision failed still has its URL: it answers as the service's access
        // says (403 for a private one, 503 "no ready revision" for those let in), never 404.
        if let Err(e) = self.publish_routes().await {
            tracing::error!(error = %e, "publishing routes failed");
        }
        self.activator
            .remove_pool(&PoolKey {
                project: rec.project.clone(),
                revision: rec.name.clone(),
            })
            .await;
        self.changed();
    }

    /// Waits until a revision leaves DEPLOYING (or `timeout` passes) and returns it.
    pub async fn wait_revision(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &RevisionName,
        timeout: Duration,
    ) -> Result<RevisionView> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.get_revision(project, name).await?;
            if view.state != RevisionState::Deploying {
                // A revision recorded ready is published under this lock: once we hold it, the
                // routes that make it serve are out too.
                drop(self.publish.lock().await);
                return Ok(view);
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Ok(view);
            }
        }
    }

    /// Changes service settings that need no new revision.
    pub async fn update_service(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
        req: UpdateServiceRequest,
    ) -> Result<ServiceView> {
        let (p, n) = (project.clone(), name.clone());
        if self.db(move |s| s.service(&p, &n)).await?.is_none() {
            return Err(not_found_service(project, name));
        }
        self.apply_settings(project, name, &req).await?;
        self.changed();
        self.get_service(project, name).await
    }

    /// The account something runs as or mints tokens of: `named` if it exists and is enabled (`flag`
    /// names the option to change in the error), else the project's default compute account, made (with
    /// the project) on first use.
    pub(crate) async fn acting_account(
        &self,
        project: &ProjectName,
        named: Option<&str>,
        flag: &str,
    ) -> Result<String> {
        match named {
            Some(email) => {
                let email = email.to_owned();
                let sa = self
                    .identity
                    .blocking(move |id| id.service_account(&email))
                    .await?;
                if sa.disabled {
                    return Err(ControlError::Invalid(format!(
                        "service account {} is disabled: enable it or choose another {flag}",
                        sa.email
                    )));
                }
                Ok(sa.email)
            }
            None => {
                let p = project.clone();
                self.db(move |s| s.ensure_project(&p, project_hash)).await?;
                let p = project.clone();
                self.identity
                    .blocking(move |id| id.ensure_default_service_account(&p))
                    .await
            }
        }
    }

    /// Checks service settings without changing anything.
    pub(crate) fn validate_settings(&self, req: &UpdateServiceRequest) -> Result<()> {
        for a in &req.add_custom_audiences {
            pier_model::settings::validate_audience(a)?;
            if self.scheme.is_own_audience(a) {
                return Err(ControlError::Invalid(format!(
                    "custom audience {a:?} is Pier's own (its CLI, its API, or a URL under {}): tokens meant for them must never reach a service whole; use the service's own name or another URL",
                    self.scheme.domain()
                )));
            }
        }
        Ok(())
    }

    pub(crate) async fn apply_settings(
        self: &Arc<Self>,
        project: &ProjectName,
        name: &ServiceName,
        req: &UpdateServiceRequest,
    ) -> Result<()> {
        self.validate_settings(req)?;
        let (p, n, r) = (project.clone(), name.clone(), req.clone());
        self.db(move |s| {
            s.update_service(&p, &n, |svc, _| {
                let mut settings: ServiceSettings = svc.settings();
                if let Some(i) = r.ingress {
                    settings.ingress = i;
                }
                if let Some(c) = r.invoker_iam_check {
                    settings.invoker_iam_check = c;
                }
                if r.clear_custom_audiences {
                    settings.custom_audiences.clear();
                }
                settings
                    .custom_audiences
                    .retain(|a| !r.remove_custom_audiences.contains(a));
                for a in &r.add_custom_audiences {
                    if !settings.custom_audiences.contains(a) {
                        settings.custom_audiences.push(a.clone());
                    }
                }
                if r.clear_end_user_auth {
                    settings.end_user_auth = None;
                }
                if r.clear_cache {
                    settings.cache = None;
                }
                if let Some(c) = &r.cache {
                    settings.cache = Some(c.clone());
                }
                if let Some(e) = &r.end_user_auth {
                    settings.end_user_auth = Some(e.clone());
                }
                Ok(settings)
            })
        })
        .await?;
        if let Some(public) = req.allow_unauthenticated {
            let resource = Resource::Service(project.clone(), name.clone());
            self.identity
                .blocking(move |id| {
                    id.modify_policy(&resource, None, |p| {
                        if public {
                            p.add("roles/run.invoker", &Member::AllUsers)
                                .map(|_| ())
                                .map_err(|e| ControlError::Invalid(e.to_string()))
                        } else {
                            p.remove("roles/run.invoker", &Member::AllUsers);
                            Ok(())
                        }
                    })
                })
                .await?;
        }
        self.publish_routes().await
    }
}
