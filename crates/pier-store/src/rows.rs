//! How records are read from SQL rows: the columns each table's queries select, the raw rows, and their
//! decoding into model types, where a value Pier cannot read is [`StoreError::Corrupt`] rather than a
//! panic or a default.

use pier_model::api::RevisionState;
use pier_model::{ProjectName, RevisionName, ServiceName};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{ProjectRecord, Result, RevisionRecord, ServiceRecord, StoreError};

pub(crate) fn parse_state(s: &str) -> Result<RevisionState> {
    Ok(match s {
        "DEPLOYING" => RevisionState::Deploying,
        "READY" => RevisionState::Ready,
        "FAILED" => RevisionState::Failed,
        other => return Err(StoreError::Corrupt(format!("revision state {other:?}"))),
    })
}

pub(crate) fn parse<T: std::str::FromStr>(what: &str, s: String) -> Result<T> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {s:?}")))
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

pub(crate) const SERVICE_COLS: &str = "project, name, traffic, latest_created, latest_ready, created_at, \
     updated_at, ingress, invoker_iam_check, custom_audiences, id_block, end_user_auth, cache";
pub(crate) const REVISION_COLS: &str = "project, service, name, seq, template, state, message, log_tail, \
     pending_tag, created_at, ready_at, image_digest, creator";

pub(crate) struct RawService {
    project: String,
    name: String,
    traffic: String,
    latest_created: Option<String>,
    latest_ready: Option<String>,
    created_at: String,
    updated_at: String,
    ingress: String,
    invoker_iam_check: bool,
    custom_audiences: String,
    id_block: u32,
    end_user_auth: Option<String>,
    cache: Option<String>,
}

impl RawService {
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            project: r.get(0)?,
            name: r.get(1)?,
            traffic: r.get(2)?,
            latest_created: r.get(3)?,
            latest_ready: r.get(4)?,
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
            ingress: r.get(7)?,
            invoker_iam_check: r.get(8)?,
            custom_audiences: r.get(9)?,
            id_block: r.get(10)?,
            end_user_auth: r.get(11)?,
            cache: r.get(12)?,
        })
    }

    pub(crate) fn decode(self) -> Result<ServiceRecord> {
        Ok(ServiceRecord {
            project: parse("project name", self.project)?,
            name: parse("service name", self.name)?,
            traffic: json("traffic", &self.traffic)?,
            ingress: parse("ingress", self.ingress)?,
            invoker_iam_check: self.invoker_iam_check,
            custom_audiences: json("custom audiences", &self.custom_audiences)?,
            end_user_auth: self
                .end_user_auth
                .map(|s| json("end-user auth", &s))
                .transpose()?,
            cache: self.cache.map(|s| json("cache setting", &s)).transpose()?,
            latest_created: self
                .latest_created
                .map(|s| parse("revision name", s))
                .transpose()?,
            latest_ready: self
                .latest_ready
                .map(|s| parse("revision name", s))
                .transpose()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
            id_block: self.id_block,
        })
    }
}

pub(crate) struct RawRevision {
    project: String,
    service: String,
    name: String,
    seq: u32,
    template: String,
    state: String,
    message: Option<String>,
    log_tail: Option<String>,
    pending_tag: Option<String>,
    created_at: String,
    ready_at: Option<String>,
    image_digest: Option<String>,
    creator: Option<String>,
}

impl RawRevision {
    pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            project: r.get(0)?,
            service: r.get(1)?,
            name: r.get(2)?,
            seq: r.get(3)?,
            template: r.get(4)?,
            state: r.get(5)?,
            message: r.get(6)?,
            log_tail: r.get(7)?,
            pending_tag: r.get(8)?,
            created_at: r.get(9)?,
            ready_at: r.get(10)?,
            image_digest: r.get(11)?,
            creator: r.get(12)?,
        })
    }

    pub(crate) fn decode(self) -> Result<RevisionRecord> {
        Ok(RevisionRecord {
            project: parse("project name", self.project)?,
            service: parse("service name", self.service)?,
            name: parse("revision name", self.name)?,
            seq: self.seq,
            template: json("revision template", &self.template)?,
            state: parse_state(&self.state)?,
            message: self.message,
            log_tail: match self.log_tail {
                Some(t) => json("log tail", &t)?,
                None => Vec::new(),
            },
            pending_tag: self.pending_tag.map(|t| parse("tag", t)).transpose()?,
            created_at: self.created_at,
            ready_at: self.ready_at,
            image_digest: self.image_digest,
            creator: self.creator,
        })
    }
}

pub(crate) fn project_in(conn: &Connection, name: &ProjectName) -> Result<Option<ProjectRecord>> {
    Ok(conn
        .query_row(
            "SELECT hash FROM projects WHERE name = ?1",
            [name.as_str()],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .map(|hash| ProjectRecord {
            name: name.clone(),
            hash,
        }))
}

pub(crate) fn service_in(
    conn: &Connection,
    project: &ProjectName,
    name: &ServiceName,
) -> Result<Option<ServiceRecord>> {
    let sql = format!("SELECT {SERVICE_COLS} FROM services WHERE project = ?1 AND name = ?2");
    conn.query_row(
        &sql,
        params![project.as_str(), name.as_str()],
        RawService::from_row,
    )
    .optional()?
    .map(RawService::decode)
    .transpose()
}

pub(crate) fn revision_in(
    conn: &Connection,
    project: &ProjectName,
    name: &RevisionName,
) -> Result<Option<RevisionRecord>> {
    let sql = format!("SELECT {REVISION_COLS} FROM revisions WHERE project = ?1 AND name = ?2");
    conn.query_row(
        &sql,
        params![project.as_str(), name.as_str()],
        RawRevision::from_row,
    )
    .optional()?
    .map(RawRevision::decode)
    .transpose()
}

pub(crate) fn revisions_in(
    conn: &Connection,
    project: &ProjectName,
    service: Option<&ServiceName>,
) -> Result<Vec<RevisionRecord>> {
    let sql = format!(
        "SELECT {REVISION_COLS} FROM revisions WHERE project = ?1 AND (?2 IS NULL OR service = ?2) \
         ORDER BY service, seq DESC"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(
        params![project.as_str(), service.map(|s| s.as_str())],
        RawRevision::from_row,
    )?;
    rows.map(|r| r?.decode()).collect()
}
