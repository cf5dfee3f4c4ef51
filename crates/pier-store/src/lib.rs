//! Pier's durable state: projects, services and revisions in one SQLite database under the data dir.
//!
//! Architecture invariant: this is the only crate that speaks SQL. The database runs in WAL mode with
//! `synchronous=FULL`, every change is one transaction, and schema changes are numbered migrations applied at
//! open, so a kill -9 at any moment leaves either the whole change or none of it.
//!
//! The API is synchronous (rusqlite); async callers run it on a blocking thread.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use pier_model::api::RevisionState;
use pier_model::{Ingress, ProjectName, RevisionName, RevisionTemplate, ServiceName, Tag, Traffic};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use thiserror::Error;

mod api_gateways;
mod domains;
mod hosting;
mod identity;
mod images;
mod migrations;
mod rows;

use rows::*;

pub use api_gateways::{ApiConfigRecord, ApiKeyRecord, GatewayRecord};
pub use domains::{CertificateRecord, DomainMappingRecord, DomainVerificationRecord};
pub use hosting::{
    LIVE, NewRelease, SiteChannelRecord, SiteRecord, SiteReleaseRecord, SiteVersionRecord,
};
pub use identity::{IdentitySnapshot, KeyRecord, PolicyRecord, ServiceAccountRecord, UserRecord};
pub use images::{ImageRecord, RegistryCredentialRecord};

/// What can go wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite failed (disk full, permissions, a locked database, ...).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row could not be decoded: the database was edited by hand or by a newer Pier.
    #[error("database holds a value Pier cannot read ({0}); was it written by a newer Pier?")]
    Corrupt(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The change itself is invalid (refused by a check inside the transaction).
    #[error("{0}")]
    Invalid(String),
    /// The call could not run to its end (its task panicked or the runtime is shutting down).
    #[error("the store could not answer: {0}")]
    Unavailable(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A project and the hash that makes its URLs unique.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRecord {
    /// Project name.
    pub name: ProjectName,
    /// Short hex hash in every service URL of the project; never changes.
    pub hash: String,
}

/// A service's stored state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Project.
    pub project: ProjectName,
    /// Name.
    pub name: ServiceName,
    /// Configured traffic.
    pub traffic: Traffic,
    /// Which requests may reach it.
    pub ingress: Ingress,
    /// Whether the gateway checks the invoker permission (off: the service does its own auth).
    pub invoker_iam_check: bool,
    /// Extra audiences its tokens may carry.
    pub custom_audiences: Vec<String>,
    /// The end-user token check, if any.
    pub end_user_auth: Option<pier_model::end_user_auth::EndUserAuth>,
    /// Its edge cache, if on.
    pub cache: Option<pier_model::hosting::CacheSetting>,
    /// Newest revision created.
    pub latest_created: Option<RevisionName>,
    /// Newest revision that became ready.
    pub latest_ready: Option<RevisionName>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
    /// The service's block of host ids (see `pier_sandbox::ids`); given at creation, never shared.
    pub id_block: u32,
}

/// A revision's stored state. The template never changes after creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionRecord {
    /// Project.
    pub project: ProjectName,
    /// Service.
    pub service: ServiceName,
    /// Name.
    pub name: RevisionName,
    /// Sequence number within the service (the NNNNN of its name).
    pub seq: u32,
    /// What it runs.
    pub template: RevisionTemplate,
    /// Deploying, ready or failed.
    pub state: RevisionState,
    /// Failure reason.
    pub message: Option<String>,
    /// Last log lines of a failed start.
    pub log_tail: Vec<String>,
    /// A tag to give it once it is ready.
    pub pending_tag: Option<Tag>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// When it became ready, RFC 3339.
    pub ready_at: Option<String>,
    /// The image it runs, pinned to the digest its tag resolved to at deploy (`NAME@sha256:...`).
    pub image_digest: Option<String>,
    /// Who deployed it (`user:EMAIL` or `serviceAccount:EMAIL`), when recorded.
    pub creator: Option<String>,
}

/// How a deploy wants the new revision routed.
#[derive(Clone, Debug, Default)]
pub struct NewRevision {
    /// Pin LATEST to the current latest ready revision so the new one gets no traffic.
    pub no_traffic: bool,
    /// Tag to give the revision when it becomes ready.
    pub tag: Option<Tag>,
    /// Who deploys it (`user:EMAIL` or `serviceAccount:EMAIL`).
    pub creator: Option<String>,
}

/// The settings of a service that change without a new revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Traffic.
    pub traffic: Traffic,
    /// Ingress.
    pub ingress: Ingress,
    /// Invoker check on or off.
    pub invoker_iam_check: bool,
    /// Custom audiences.
    pub custom_audiences: Vec<String>,
    /// End-user token check.
    pub end_user_auth: Option<pier_model::end_user_auth::EndUserAuth>,
    /// Edge cache.
    pub cache: Option<pier_model::hosting::CacheSetting>,
}

impl ServiceRecord {
    /// The record's current settings, to modify.
    pub fn settings(&self) -> ServiceSettings {
        ServiceSettings {
            traffic: self.traffic.clone(),
            ingress: self.ingress,
            invoker_iam_check: self.invoker_iam_check,
            custom_audiences: self.custom_audiences.clone(),
            end_user_auth: self.end_user_auth.clone(),
            cache: self.cache.clone(),
        }
    }
}

/// The database.
pub struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

pub(crate) fn now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("model types serialize to JSON")
}

impl Store {
    /// The store's async face: runs `f` (one or more calls, each its own transaction) on tokio's
    /// blocking pool, so async callers never block a worker on SQLite. Every async caller (the control
    /// plane, the identity service, the admin API) goes through here; a backend that is async by nature
    /// would answer here without a thread.
    ///
    /// # Errors
    /// What `f` returns, or [`StoreError::Unavailable`] if the task could not run to its end.
    pub async fn call<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-applied change (transactions roll back), so
        // the connection is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Reads a value from the installation's key-value table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Reads `key`, or stores `make()` under it if absent; returns what is stored.
    pub fn meta_or_insert(&self, key: &str, make: impl FnOnce() -> String) -> Result<String> {
        self.write(|tx| {
            let existing: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?;
            if let Some(v) = existing {
                return Ok(v);
            }
            let v = make();
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![key, v],
            )?;
            Ok(v)
        })
    }

    /// Returns the project, creating it with a fresh URL hash from `make_hash` if it does not exist.
    pub fn ensure_project(
        &self,
        name: &ProjectName,
        mut make_hash: impl FnMut() -> String,
    ) -> Result<ProjectRecord> {
        self.write(|tx| {
            if let Some(p) = project_in(tx, name)? {
                return Ok(p);
            }
            for _ in 0..32 {
                let hash = make_hash();
                let taken: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM projects WHERE hash = ?1)",
                    [&hash],
                    |r| r.get(0),
                )?;
                if !taken {
                    tx.execute(
                        "INSERT INTO projects (name, hash, created_at) VALUES (?1, ?2, ?3)",
                        params![name.as_str(), hash, now()],
                    )?;
                    return Ok(ProjectRecord {
                        name: name.clone(),
                        hash,
                    });
                }
            }
            Err(StoreError::Conflict(
                "could not find a free project hash".to_owned(),
            ))
        })
    }

    /// Every project.
    pub fn projects(&self) -> Result<Vec<ProjectRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, hash FROM projects ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        rows.map(|r| {
            let (name, hash) = r?;
            Ok(ProjectRecord {
                name: parse("project name", name)?,
                hash,
            })
        })
        .collect()
    }

    /// One project, if it exists.
    pub fn project(&self, name: &ProjectName) -> Result<Option<ProjectRecord>> {
        project_in(&self.conn(), name)
    }

    /// One service, if it exists.
    pub fn service(
        &self,
        project: &ProjectName,
        name: &ServiceName,
    ) -> Result<Option<ServiceRecord>> {
        service_in(&self.conn(), project, name)
    }

    /// Services of one project, or of all projects, by name.
    pub fn services(&self, project: Option<&ProjectName>) -> Result<Vec<ServiceRecord>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {SERVICE_COLS} FROM services WHERE ?1 IS NULL OR project = ?1 ORDER BY project, name"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([project.map(|p| p.as_str())], RawService::from_row)?;
        rows.map(|r| r?.decode()).collect()
    }

    /// Records a new revision (and the service, on its first deploy) in state DEPLOYING, applying the
    /// deploy's routing wishes in the same transaction. `suffix` is the random end of the revision name.
    pub fn create_revision(
        &self,
        project: &ProjectName,
        service: &ServiceName,
        template: &RevisionTemplate,
        wishes: &NewRevision,
        suffix: &str,
    ) -> Result<(ServiceRecord, RevisionRecord)> {
        self.write(|tx| {
            if project_in(tx, project)?.is_none() {
                return Err(StoreError::NotFound(format!(
                    "project {project} does not exist"
                )));
            }
            let ts = now();
            let existing = service_in(tx, project, service)?;
            if existing.is_none() {
                // The lowest block no service holds.
                let mut taken = tx.prepare("SELECT id_block FROM services ORDER BY id_block")?;
                let mut block: u32 = 0;
                for b in taken.query_map([], |r| r.get::<_, u32>(0))? {
                    if b? == block {
                        block += 1;
                    } else {
                        break;
                    }
                }
                drop(taken);
                tx.execute(
                    "INSERT INTO services (project, name, traffic, next_seq, created_at, updated_at, id_block) \
                     VALUES (?1, ?2, ?3, 1, ?4, ?4, ?5)",
                    params![
                        project.as_str(),
                        service.as_str(),
                        to_json(&Traffic::default()),
                        ts,
                        block
                    ],
                )?;
            }
            let seq: u32 = tx.query_row(
                "SELECT next_seq FROM services WHERE project = ?1 AND name = ?2",
                params![project.as_str(), service.as_str()],
                |r| r.get(0),
            )?;
            let name = RevisionName::for_service(service, seq, suffix);
            if let Some(svc) = &existing
                && wishes.no_traffic
                && let Some(ready) = &svc.latest_ready
            {
                let pinned = svc.traffic.pin_latest(ready);
                tx.execute(
                    "UPDATE services SET traffic = ?3 WHERE project = ?1 AND name = ?2",
                    params![project.as_str(), service.as_str(), to_json(&pinned)],
                )?;
            }
            tx.execute(
                "INSERT INTO revisions (project, service, name, seq, template, state, pending_tag, created_at, creator) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'DEPLOYING', ?6, ?7, ?8)",
                params![
                    project.as_str(),
                    service.as_str(),
                    name.as_str(),
                    seq,
                    to_json(template),
                    wishes.tag.as_ref().map(|t| t.as_str()),
                    ts,
                    wishes.creator.as_deref()
                ],
            )?;
            tx.execute(
                "UPDATE services SET next_seq = next_seq + 1, latest_created = ?3, updated_at = ?4 \
                 WHERE project = ?1 AND name = ?2",
                params![project.as_str(), service.as_str(), name.as_str(), ts],
            )?;
            let svc = service_in(tx, project, service)?
                .ok_or_else(|| StoreError::Corrupt("service vanished".into()))?;
            let rev = revision_in(tx, project, &name)?
                .ok_or_else(|| StoreError::Corrupt("revision vanished".into()))?;
            Ok((svc, rev))
        })
    }

    /// Marks a revision ready: it becomes the service's latest ready revision (unless a newer one already
    /// is), and its pending tag is applied. Returns the updated service.
    pub fn mark_ready(
        &self,
        project: &ProjectName,
        revision: &RevisionName,
    ) -> Result<ServiceRecord> {
        self.write(|tx| {
            let rev = revision_in(tx, project, revision)?.ok_or_else(|| {
                StoreError::NotFound(format!("revision {revision} does not exist"))
            })?;
            let ts = now();
            tx.execute(
                "UPDATE revisions SET state = 'READY', ready_at = ?3, message = NULL, pending_tag = NULL \
                 WHERE project = ?1 AND name = ?2",
                params![project.as_str(), revision.as_str(), ts],
            )?;
            let svc = service_in(tx, project, &rev.service)?
                .ok_or_else(|| StoreError::Corrupt("revision without service".into()))?;
            let newer_ready = match &svc.latest_ready {
                Some(cur) => revision_in(tx, project, cur)?.is_some_and(|r| r.seq > rev.seq),
                None => false,
            };
            if !newer_ready {
                tx.execute(
                    "UPDATE services SET latest_ready = ?3, updated_at = ?4 WHERE project = ?1 AND name = ?2",
                    params![project.as_str(), rev.service.as_str(), revision.as_str(), ts],
                )?;
            }
            if let Some(tag) = rev.pending_tag {
                let traffic = svc
                    .traffic
                    .set_tags(&[(tag, pier_model::TrafficKey::Revision(revision.clone()))]);
                tx.execute(
                    "UPDATE services SET traffic = ?3 WHERE project = ?1 AND name = ?2",
                    params![project.as_str(), rev.service.as_str(), to_json(&traffic)],
                )?;
            }
            service_in(tx, project, &rev.service)?
                .ok_or_else(|| StoreError::Corrupt("service vanished".into()))
        })
    }

    /// Marks a revision failed with the reason and the last lines its instance logged.
    pub fn mark_failed(
        &self,
        project: &ProjectName,
        revision: &RevisionName,
        message: &str,
        log_tail: &[String],
    ) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE revisions SET state = 'FAILED', message = ?3, log_tail = ?4, pending_tag = NULL \
                 WHERE project = ?1 AND name = ?2",
                params![project.as_str(), revision.as_str(), message, to_json(&log_tail)],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "revision {revision} does not exist"
                )));
            }
            Ok(())
        })
    }

    /// Marks every revision still DEPLOYING as failed with `message` (used at start: a deploy the server
    /// did not finish before it stopped). Returns the revisions changed.
    pub fn fail_interrupted_deploys(&self, message: &str) -> Result<Vec<RevisionName>> {
        self.write(|tx| {
            let mut stmt = tx.prepare("SELECT name FROM revisions WHERE state = 'DEPLOYING'")?;
            let names: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            drop(stmt);
            tx.execute(
                "UPDATE revisions SET state = 'FAILED', message = ?1, pending_tag = NULL WHERE state = 'DEPLOYING'",
                [message],
            )?;
            names.into_iter().map(|n| parse("revision name", n)).collect()
        })
    }

    /// Changes a service's settings (traffic, ingress, invoker check, audiences). `change` sees the current
    /// record and the service's revisions inside the transaction and may refuse the change.
    pub fn update_service(
        &self,
        project: &ProjectName,
        name: &ServiceName,
        change: impl FnOnce(&ServiceRecord, &[RevisionRecord]) -> Result<ServiceSettings>,
    ) -> Result<ServiceRecord> {
        self.write(|tx| {
            let svc = service_in(tx, project, name)?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "service {name} does not exist in project {project}"
                ))
            })?;
            let revs = revisions_in(tx, project, Some(name))?;
            let new = change(&svc, &revs)?;
            new.traffic
                .validate()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            tx.execute(
                "UPDATE services SET traffic = ?3, ingress = ?4, invoker_iam_check = ?5, \
                 custom_audiences = ?6, updated_at = ?7, end_user_auth = ?8, cache = ?9 \
                 WHERE project = ?1 AND name = ?2",
                params![
                    project.as_str(),
                    name.as_str(),
                    to_json(&new.traffic),
                    new.ingress.as_str(),
                    new.invoker_iam_check,
                    to_json(&new.custom_audiences),
                    now(),
                    new.end_user_auth.as_ref().map(to_json),
                    new.cache.as_ref().map(to_json)
                ],
            )?;
            service_in(tx, project, name)?
                .ok_or_else(|| StoreError::Corrupt("service vanished".into()))
        })
    }

    /// Deletes a service and its revisions. Returns the deleted revisions' names.
    pub fn delete_service(
        &self,
        project: &ProjectName,
        name: &ServiceName,
    ) -> Result<Vec<RevisionName>> {
        self.write(|tx| {
            let revs = revisions_in(tx, project, Some(name))?;
            let n = tx.execute(
                "DELETE FROM services WHERE project = ?1 AND name = ?2",
                params![project.as_str(), name.as_str()],
            )?;
            tx.execute(
                "DELETE FROM iam_policies WHERE resource = ?1",
                [format!("projects/{project}/services/{name}")],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "service {name} does not exist in project {project}"
                )));
            }
            Ok(revs.into_iter().map(|r| r.name).collect())
        })
    }

    /// Deletes one revision; `check` sees the service, the revision and all the service's revisions inside
    /// the transaction and may refuse (for example while the revision serves traffic).
    pub fn delete_revision(
        &self,
        project: &ProjectName,
        name: &RevisionName,
        check: impl FnOnce(&ServiceRecord, &RevisionRecord, &[RevisionRecord]) -> Result<()>,
    ) -> Result<RevisionRecord> {
        self.write(|tx| {
            let rev = revision_in(tx, project, name)?.ok_or_else(|| {
                StoreError::NotFound(format!("revision {name} does not exist in project {project}"))
            })?;
            let svc = service_in(tx, project, &rev.service)?
                .ok_or_else(|| StoreError::Corrupt("revision without service".into()))?;
            let revs = revisions_in(tx, project, Some(&rev.service))?;
            check(&svc, &rev, &revs)?;
            tx.execute(
                "DELETE FROM revisions WHERE project = ?1 AND name = ?2",
                params![project.as_str(), name.as_str()],
            )?;
            if svc.latest_ready.as_ref() == Some(name) {
                // Fall back to the newest other ready revision.
                let prev: Option<String> = tx
                    .query_row(
                        "SELECT name FROM revisions WHERE project = ?1 AND service = ?2 AND state = 'READY' \
                         ORDER BY seq DESC LIMIT 1",
                        params![project.as_str(), rev.service.as_str()],
                        |r| r.get(0),
                    )
                    .optional()?;
                tx.execute(
                    "UPDATE services SET latest_ready = ?3 WHERE project = ?1 AND name = ?2",
                    params![project.as_str(), rev.service.as_str(), prev],
                )?;
            }
            Ok(rev)
        })
    }

    /// One revision, if it exists.
    pub fn revision(
        &self,
        project: &ProjectName,
        name: &RevisionName,
    ) -> Result<Option<RevisionRecord>> {
        revision_in(&self.conn(), project, name)
    }

    /// Revisions of a project (optionally of one service), grouped by service (in name order), each
    /// service's newest first.
    pub fn revisions(
        &self,
        project: &ProjectName,
        service: Option<&ServiceName>,
    ) -> Result<Vec<RevisionRecord>> {
        revisions_in(&self.conn(), project, service)
    }

    /// Every revision of every project.
    pub fn all_revisions(&self) -> Result<Vec<RevisionRecord>> {
        let conn = self.conn();
        let sql =
            format!("SELECT {REVISION_COLS} FROM revisions ORDER BY project, service, seq DESC");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], RawRevision::from_row)?;
        rows.map(|r| r?.decode()).collect()
    }
}

#[cfg(test)]
mod tests;
