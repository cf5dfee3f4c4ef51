//! Hosting tables: sites, the files each project has uploaded (by digest), versions, channels and
//! releases. A version is written once with its files named by digest and becomes `FINALIZED` when it is
//! first released, which the store allows only when every digest it names is uploaded; a channel serves
//! the version of its newest release, so a release (and a rollback, and a clone) is one INSERT.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction, params};

use crate::{Result, Store, StoreError, now};
use pier_model::ProjectName;

/// The channel every site has, served at the site's own host.
pub const LIVE: &str = "live";

/// A site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteRecord {
    /// Project.
    pub project: ProjectName,
    /// Its name (the first label of its hosts).
    pub name: String,
    /// The service account its rewrites call services as.
    pub service_account: String,
    /// Created (RFC 3339).
    pub created_at: String,
}

/// A version of a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteVersionRecord {
    /// Project.
    pub project: ProjectName,
    /// Site.
    pub site: String,
    /// Its number, from 1.
    pub version: i64,
    /// The hosting entry (JSON).
    pub config: String,
    /// Path to digest.
    pub files: BTreeMap<String, String>,
    /// `CREATED` until first released, then `FINALIZED`.
    pub status: String,
    /// The revision each `pinTag` rewrite's service is pinned to (service to revision), once fixed.
    pub pins: Option<BTreeMap<String, String>>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Who created it.
    pub created_by: String,
}

/// A channel and what it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteChannelRecord {
    /// Project.
    pub project: ProjectName,
    /// Site.
    pub site: String,
    /// Its name (`live`, or a preview's).
    pub name: String,
    /// When it expires (Unix seconds); `None` for `live` and channels without expiry.
    pub expires_at: Option<i64>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// The version its newest release serves, if any.
    pub version: Option<i64>,
    /// When that release was made (RFC 3339).
    pub released_at: Option<String>,
}

/// A release: a channel starts serving a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteReleaseRecord {
    /// Channel.
    pub channel: String,
    /// Its number in the channel, from 1.
    pub seq: i64,
    /// The version served.
    pub version: i64,
    /// `DEPLOY`, `ROLLBACK` or `CLONE`.
    pub kind: String,
    /// A message for people.
    pub message: String,
    /// Made (RFC 3339).
    pub created_at: String,
    /// By whom.
    pub created_by: String,
}

/// A release to make.
#[derive(Clone, Debug)]
pub struct NewRelease<'a> {
    /// Project.
    pub project: &'a ProjectName,
    /// Site.
    pub site: &'a str,
    /// Channel (created when missing).
    pub channel: &'a str,
    /// The version to serve.
    pub version: i64,
    /// `DEPLOY`, `ROLLBACK`, `CLONE`.
    pub kind: &'a str,
    /// A message.
    pub message: &'a str,
    /// Who.
    pub by: &'a str,
    /// The channel's new expiry (Unix seconds), when it changes; ignored for `live`.
    pub expires_at: Option<i64>,
}

fn project_of(s: String) -> Result<ProjectName> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("site project: {e}")))
}

fn no_site(project: &ProjectName, site: &str) -> StoreError {
    StoreError::NotFound(format!(
        "site {site} does not exist in project {project}: deploy it first with `pier hosting deploy --site {site}`"
    ))
}

impl Store {
    /// Creates the site when missing; `account` replaces its service account when given. Returns it.
    pub fn ensure_site(
        &self,
        project: &ProjectName,
        name: &str,
        account: Option<&str>,
        default_account: &str,
    ) -> Result<SiteRecord> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO sites (project, name, service_account, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT DO NOTHING",
                params![project.as_str(), name, account.unwrap_or(default_account), now()],
            )?;
            tx.execute(
                "INSERT INTO site_channels (project, site, name, expires_at, created_at) \
                 VALUES (?1, ?2, ?3, NULL, ?4) ON CONFLICT DO NOTHING",
                params![project.as_str(), name, LIVE, now()],
            )?;
            if let Some(a) = account {
                tx.execute(
                    "UPDATE sites SET service_account = ?3 WHERE project = ?1 AND name = ?2",
                    params![project.as_str(), name, a],
                )?;
            }
            site_in(tx, project, name)?.ok_or_else(|| no_site(project, name))
        })
    }

    /// Sites, of one project when given.
    pub fn sites(&self, project: Option<&ProjectName>) -> Result<Vec<SiteRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT project, name, service_account, created_at FROM sites \
             WHERE (?1 IS NULL OR project = ?1) ORDER BY project, name",
        )?;
        let rows = stmt.query_map(params![project.map(|p| p.as_str())], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.map(|row| {
            let (p, name, service_account, created_at) = row?;
            Ok(SiteRecord {
                project: project_of(p)?,
                name,
                service_account,
                created_at,
            })
        })
        .collect()
    }

    /// One site.
    pub fn site(&self, project: &ProjectName, name: &str) -> Result<SiteRecord> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        site_in(&tx, project, name)?.ok_or_else(|| no_site(project, name))
    }

    /// Deletes a site with its channels, releases and versions (its files stay: other versions may
    /// name them).
    pub fn delete_site(&self, project: &ProjectName, name: &str) -> Result<()> {
        self.write(|tx| {
            site_in(tx, project, name)?.ok_or_else(|| no_site(project, name))?;
            for table in ["site_releases", "site_channels", "site_versions"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE project = ?1 AND site = ?2"),
                    params![project.as_str(), name],
                )?;
            }
            tx.execute(
                "DELETE FROM sites WHERE project = ?1 AND name = ?2",
                params![project.as_str(), name],
            )?;
            Ok(())
        })
    }

    /// Which of `digests` the project has not uploaded.
    pub fn missing_site_files(
        &self,
        project: &ProjectName,
        digests: &[&str],
    ) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT 1 FROM site_blobs WHERE project = ?1 AND digest = ?2")?;
        let mut out = Vec::new();
        for d in digests {
            if !stmt.exists(params![project.as_str(), d])? {
                out.push((*d).to_owned());
            }
        }
        Ok(out)
    }

    /// Whether a version of the site not yet released names `digest` (uploads are accepted only then).
    pub fn site_wants_file(&self, project: &ProjectName, site: &str, digest: &str) -> Result<bool> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT 1 FROM site_versions WHERE project = ?1 AND site = ?2 AND status = 'CREATED' \
             AND instr(files, ?3) > 0 LIMIT 1",
        )?;
        Ok(stmt.exists(params![project.as_str(), site, format!("\"{digest}\"")])?)
    }

    /// Records that the project uploaded `digest` (its bytes are stored).
    pub fn add_site_file(&self, project: &ProjectName, digest: &str, size: u64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO site_blobs (project, digest, size) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![project.as_str(), digest, size as i64],
            )?;
            Ok(())
        })
    }

    /// Records a new version (numbered after the site's last) and returns its number.
    pub fn create_site_version(
        &self,
        project: &ProjectName,
        site: &str,
        config: &str,
        files: &BTreeMap<String, String>,
        by: &str,
    ) -> Result<i64> {
        let files = serde_json::to_string(files)
            .map_err(|e| StoreError::Invalid(format!("site files: {e}")))?;
        self.write(|tx| {
            site_in(tx, project, site)?.ok_or_else(|| no_site(project, site))?;
            let n: i64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM site_versions WHERE project = ?1 AND site = ?2",
                params![project.as_str(), site],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO site_versions (project, site, version, config, files, status, created_at, created_by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'CREATED', ?6, ?7)",
                params![project.as_str(), site, n, config, files, now(), by],
            )?;
            Ok(n)
        })
    }

    /// One version.
    pub fn site_version(
        &self,
        project: &ProjectName,
        site: &str,
        version: i64,
    ) -> Result<SiteVersionRecord> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        version_in(&tx, project, site, version)?
            .ok_or_else(|| StoreError::NotFound(format!("site {site} has no version {version}")))
    }

    /// Makes a release: the version must be the site's and every file it names uploaded (it is then
    /// `FINALIZED`); the channel is created when missing. Returns the release.
    pub fn release_site_version(&self, r: &NewRelease<'_>) -> Result<SiteReleaseRecord> {
        self.write(|tx| release_in(tx, r))
    }

    /// The version a rollback of `live` would serve: the newest it served before its current one.
    pub fn rollback_target(&self, project: &ProjectName, site: &str) -> Result<i64> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        previous_live(&tx, project, site).map(|(_, previous)| previous)
    }

    /// Makes `live` serve `to`, the version it served before its current one (a new `ROLLBACK`
    /// release); refused if another release came meanwhile.
    pub fn rollback_site(
        &self,
        project: &ProjectName,
        site: &str,
        to: i64,
        by: &str,
    ) -> Result<SiteReleaseRecord> {
        self.write(|tx| {
            let (current, previous) = previous_live(tx, project, site)?;
            if previous != to {
                return Err(StoreError::Conflict(format!(
                    "site {site} was released meanwhile: roll back again"
                )));
            }
            release_in(
                tx,
                &NewRelease {
                    project,
                    site,
                    channel: LIVE,
                    version: previous,
                    kind: "ROLLBACK",
                    message: &format!("rolled back from version {current}"),
                    by,
                    expires_at: None,
                },
            )
        })
    }

    /// Fixes the revisions a version's `pinTag` rewrites go to, unless fixed already; returns what is
    /// fixed.
    pub fn pin_site_version(
        &self,
        project: &ProjectName,
        site: &str,
        version: i64,
        pins: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>> {
        let text = serde_json::to_string(pins)
            .map_err(|e| StoreError::Invalid(format!("site pins: {e}")))?;
        self.write(|tx| {
            tx.execute(
                "UPDATE site_versions SET pins = ?4 WHERE project = ?1 AND site = ?2 AND version = ?3 \
                 AND pins IS NULL",
                params![project.as_str(), site, version, text],
            )?;
            version_in(tx, project, site, version)?
                .and_then(|v| v.pins)
                .ok_or_else(|| StoreError::NotFound(format!("site {site} has no version {version}")))
        })
    }
}

/// The live channel's current version and the newest it served before it.
fn previous_live(tx: &Transaction<'_>, project: &ProjectName, site: &str) -> Result<(i64, i64)> {
    site_in(tx, project, site)?.ok_or_else(|| no_site(project, site))?;
    let versions: Vec<i64> = {
        let mut stmt = tx.prepare(
            "SELECT version FROM site_releases WHERE project = ?1 AND site = ?2 AND channel = ?3 \
             ORDER BY seq DESC",
        )?;
        let rows = stmt.query_map(params![project.as_str(), site, LIVE], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let current = versions
        .first()
        .copied()
        .ok_or_else(|| StoreError::Conflict(format!("site {site} has no release to roll back")))?;
    let previous = versions
        .iter()
        .copied()
        .find(|v| *v != current)
        .ok_or_else(|| {
            StoreError::Conflict(format!(
                "site {site} has served only version {current}: there is nothing to roll back to"
            ))
        })?;
    Ok((current, previous))
}

impl Store {
    /// Serves what `from` serves on `to` (sites of one project): the same version within a site, a copy
    /// of it (a new version) on another.
    pub fn clone_site_release(
        &self,
        project: &ProjectName,
        from: (&str, &str),
        to: (&str, &str),
        by: &str,
        expires_at: Option<i64>,
    ) -> Result<SiteReleaseRecord> {
        self.write(|tx| {
            let current = channel_version(tx, project, from.0, from.1)?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "channel {} of site {} serves nothing to clone",
                    from.1, from.0
                ))
            })?;
            site_in(tx, project, to.0)?.ok_or_else(|| no_site(project, to.0))?;
            let version = if from.0 == to.0 {
                current
            } else {
                let src = version_in(tx, project, from.0, current)?
                    .ok_or_else(|| StoreError::Corrupt("a released version is gone".into()))?;
                let n: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM site_versions WHERE project = ?1 AND site = ?2",
                    params![project.as_str(), to.0],
                    |r| r.get(0),
                )?;
                let files = serde_json::to_string(&src.files)
                    .map_err(|e| StoreError::Invalid(format!("site files: {e}")))?;
                let pins = src
                    .pins
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| StoreError::Invalid(format!("site pins: {e}")))?;
                tx.execute(
                    "INSERT INTO site_versions (project, site, version, config, files, status, pins, created_at, created_by) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 'CREATED', ?6, ?7, ?8)",
                    params![project.as_str(), to.0, n, src.config, files, pins, now(), by],
                )?;
                n
            };
            release_in(
                tx,
                &NewRelease {
                    project,
                    site: to.0,
                    channel: to.1,
                    version,
                    kind: "CLONE",
                    message: &format!("cloned from {}:{}", from.0, from.1),
                    by,
                    expires_at,
                },
            )
        })
    }

    /// A site's channels with what they serve, of one project (and site) when given.
    pub fn site_channels(
        &self,
        project: Option<&ProjectName>,
        site: Option<&str>,
    ) -> Result<Vec<SiteChannelRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT c.project, c.site, c.name, c.expires_at, c.created_at, r.version, r.created_at \
             FROM site_channels c LEFT JOIN site_releases r \
               ON r.project = c.project AND r.site = c.site AND r.channel = c.name \
              AND r.seq = (SELECT MAX(seq) FROM site_releases x \
                           WHERE x.project = c.project AND x.site = c.site AND x.channel = c.name) \
             WHERE (?1 IS NULL OR c.project = ?1) AND (?2 IS NULL OR c.site = ?2) \
             ORDER BY c.project, c.site, c.name",
        )?;
        let rows = stmt.query_map(params![project.map(|p| p.as_str()), site], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?;
        rows.map(|row| {
            let (p, site, name, expires_at, created_at, version, released_at) = row?;
            Ok(SiteChannelRecord {
                project: project_of(p)?,
                site,
                name,
                expires_at,
                created_at,
                version,
                released_at,
            })
        })
        .collect()
    }

    /// Deletes a preview channel and its releases.
    pub fn delete_site_channel(&self, project: &ProjectName, site: &str, name: &str) -> Result<()> {
        if name == LIVE {
            return Err(StoreError::Invalid(
                "the live channel cannot be deleted; delete the site instead".into(),
            ));
        }
        self.write(|tx| {
            tx.execute(
                "DELETE FROM site_releases WHERE project = ?1 AND site = ?2 AND channel = ?3",
                params![project.as_str(), site, name],
            )?;
            let n = tx.execute(
                "DELETE FROM site_channels WHERE project = ?1 AND site = ?2 AND name = ?3",
                params![project.as_str(), site, name],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "site {site} has no channel {name}"
                )));
            }
            Ok(())
        })
    }

    /// A channel's releases, newest first.
    pub fn site_releases(
        &self,
        project: &ProjectName,
        site: &str,
        channel: &str,
    ) -> Result<Vec<SiteReleaseRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT channel, seq, version, kind, message, created_at, created_by FROM site_releases \
             WHERE project = ?1 AND site = ?2 AND channel = ?3 ORDER BY seq DESC",
        )?;
        let rows = stmt.query_map(params![project.as_str(), site, channel], |r| {
            Ok(SiteReleaseRecord {
                channel: r.get(0)?,
                seq: r.get(1)?,
                version: r.get(2)?,
                kind: r.get(3)?,
                message: r.get(4)?,
                created_at: r.get(5)?,
                created_by: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn site_in(tx: &Transaction<'_>, project: &ProjectName, name: &str) -> Result<Option<SiteRecord>> {
    let row: Option<(String, String, String)> = tx
        .query_row(
            "SELECT name, service_account, created_at FROM sites WHERE project = ?1 AND name = ?2",
            params![project.as_str(), name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.map(|(name, service_account, created_at)| SiteRecord {
        project: project.clone(),
        name,
        service_account,
        created_at,
    }))
}

fn version_in(
    tx: &Transaction<'_>,
    project: &ProjectName,
    site: &str,
    version: i64,
) -> Result<Option<SiteVersionRecord>> {
    type Row = (String, String, String, Option<String>, String, String);
    let row: Option<Row> = tx
        .query_row(
            "SELECT config, files, status, pins, created_at, created_by FROM site_versions \
             WHERE project = ?1 AND site = ?2 AND version = ?3",
            params![project.as_str(), site, version],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .optional()?;
    row.map(|(config, files, status, pins, created_at, created_by)| {
        Ok(SiteVersionRecord {
            project: project.clone(),
            site: site.to_owned(),
            version,
            config,
            files: serde_json::from_str(&files)
                .map_err(|e| StoreError::Corrupt(format!("site version files: {e}")))?,
            status,
            pins: pins
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("site version pins: {e}")))?,
            created_at,
            created_by,
        })
    })
    .transpose()
}

fn channel_version(
    tx: &Transaction<'_>,
    project: &ProjectName,
    site: &str,
    channel: &str,
) -> Result<Option<i64>> {
    Ok(tx
        .query_row(
            "SELECT version FROM site_releases WHERE project = ?1 AND site = ?2 AND channel = ?3 \
             ORDER BY seq DESC LIMIT 1",
            params![project.as_str(), site, channel],
            |r| r.get(0),
        )
        .optional()?)
}

fn release_in(tx: &Transaction<'_>, r: &NewRelease<'_>) -> Result<SiteReleaseRecord> {
    let v = version_in(tx, r.project, r.site, r.version)?.ok_or_else(|| {
        StoreError::NotFound(format!("site {} has no version {}", r.site, r.version))
    })?;
    if v.status != "FINALIZED" {
        let mut stmt = tx.prepare("SELECT 1 FROM site_blobs WHERE project = ?1 AND digest = ?2")?;
        let mut missing = 0usize;
        for d in v.files.values() {
            if !stmt.exists(params![r.project.as_str(), d])? {
                missing += 1;
            }
        }
        if missing > 0 {
            return Err(StoreError::Conflict(format!(
                "version {} of site {} names {missing} file(s) not uploaded yet: upload them, then release",
                r.version, r.site
            )));
        }
        tx.execute(
            "UPDATE site_versions SET status = 'FINALIZED' WHERE project = ?1 AND site = ?2 AND version = ?3",
            params![r.project.as_str(), r.site, r.version],
        )?;
    }
    let expires = if r.channel == LIVE {
        None
    } else {
        r.expires_at
    };
    tx.execute(
        "INSERT INTO site_channels (project, site, name, expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT DO NOTHING",
        params![r.project.as_str(), r.site, r.channel, expires, now()],
    )?;
    if let Some(e) = expires {
        tx.execute(
            "UPDATE site_channels SET expires_at = ?4 WHERE project = ?1 AND site = ?2 AND name = ?3",
            params![r.project.as_str(), r.site, r.channel, e],
        )?;
    }
    let seq: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM site_releases WHERE project = ?1 AND site = ?2 AND channel = ?3",
        params![r.project.as_str(), r.site, r.channel],
        |row| row.get(0),
    )?;
    let created_at = now();
    tx.execute(
        "INSERT INTO site_releases (project, site, channel, seq, version, kind, message, created_at, created_by) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            r.project.as_str(),
            r.site,
            r.channel,
            seq,
            r.version,
            r.kind,
            r.message,
            created_at,
            r.by
        ],
    )?;
    Ok(SiteReleaseRecord {
        channel: r.channel.to_owned(),
        seq,
        version: r.version,
        kind: r.kind.to_owned(),
        message: r.message.to_owned(),
        created_at,
        created_by: r.by.to_owned(),
    })
}
