//! API gateway tables: APIs, their configs (immutable once written: a change is a new config),
//! gateways (each serving one config of one API; switching config is one UPDATE, so a gateway always
//! names a whole config), and API keys (their SHA-256 digest and the first characters they are looked
//! up by; never the key).

use rusqlite::{OptionalExtension, params};

use crate::{Result, Store, StoreError, now};
use pier_model::ProjectName;

/// An API config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfigRecord {
    /// Project.
    pub project: ProjectName,
    /// The API it belongs to.
    pub api: String,
    /// Its name.
    pub name: String,
    /// The OpenAPI document as given.
    pub spec: String,
    /// The service account whose ID tokens its backends get.
    pub service_account: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayRecord {
    /// Project.
    pub project: ProjectName,
    /// Its name.
    pub name: String,
    /// The API it serves.
    pub api: String,
    /// The config it serves.
    pub config: String,
    /// Whether anyone may call it (else only holders of the invoker role on the project).
    pub public: bool,
    /// Its CORS setting (JSON), if any.
    pub cors: Option<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
}

/// An API key (no secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Its id.
    pub uid: String,
    /// Its project.
    pub project: ProjectName,
    /// A name for people.
    pub display_name: String,
    /// The key's first characters (what it is looked up by).
    pub prefix: String,
    /// Hex SHA-256 of the key.
    pub digest: String,
    /// APIs it is restricted to (empty: any of its project's).
    pub api_targets: Vec<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Revoked (RFC 3339), if it was.
    pub deleted_at: Option<String>,
}

fn project_of(s: String) -> Result<ProjectName> {
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("API gateway project: {e}")))
}

fn targets(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("API key targets: {e}")))
}

impl Store {
    /// Creates an API.
    pub fn create_api(&self, project: &ProjectName, name: &str) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT INTO apis (project, name, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT DO NOTHING",
                params![project.as_str(), name, now()],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "API {name} already exists in project {project}"
                )));
            }
            Ok(())
        })
    }

    /// Every API of a project: (name, created).
    pub fn apis(&self, project: &ProjectName) -> Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, created_at FROM apis WHERE project = ?1 ORDER BY name")?;
        let rows = stmt.query_map([project.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes an API that has no config left.
    pub fn delete_api(&self, project: &ProjectName, name: &str) -> Result<()> {
        self.write(|tx| {
            let configs: i64 = tx.query_row(
                "SELECT COUNT(*) FROM api_configs WHERE project = ?1 AND api = ?2",
                params![project.as_str(), name],
                |r| r.get(0),
            )?;
            if configs > 0 {
                return Err(StoreError::Conflict(format!(
                    "API {name} still has {configs} config(s): delete them first (`pier api-gateway api-configs list --api {name}`)"
                )));
            }
            let n = tx.execute(
                "DELETE FROM apis WHERE project = ?1 AND name = ?2",
                params![project.as_str(), name],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "API {name} does not exist in project {project}"
                )));
            }
            Ok(())
        })
    }

    /// Records a config (never replaced).
    pub fn create_api_config(&self, rec: &ApiConfigRecord) -> Result<()> {
        self.write(|tx| {
            let api: Option<String> = tx
                .query_row(
                    "SELECT name FROM apis WHERE project = ?1 AND name = ?2",
                    params![rec.project.as_str(), rec.api],
                    |r| r.get(0),
                )
                .optional()?;
            if api.is_none() {
                return Err(StoreError::NotFound(format!(
                    "API {} does not exist in project {}: create it with `pier api-gateway apis create {}`",
                    rec.api, rec.project, rec.api
                )));
            }
            let n = tx.execute(
                "INSERT INTO api_configs (project, api, name, spec, service_account, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    rec.project.as_str(),
                    rec.api,
                    rec.name,
                    rec.spec,
                    rec.service_account,
                    rec.created_at
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "config {} of API {} already exists: configs cannot change; create a new one",
                    rec.name, rec.api
                )));
            }
            Ok(())
        })
    }

    /// Configs of a project (of one API when given), oldest first.
    pub fn api_configs(
        &self,
        project: Option<&ProjectName>,
        api: Option<&str>,
    ) -> Result<Vec<ApiConfigRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT project, api, name, spec, service_account, created_at FROM api_configs \
             WHERE (?1 IS NULL OR project = ?1) AND (?2 IS NULL OR api = ?2) \
             ORDER BY project, api, created_at, name",
        )?;
        let rows = stmt.query_map(params![project.map(|p| p.as_str()), api], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        rows.map(|row| {
            let (p, api, name, spec, service_account, created_at) = row?;
            Ok(ApiConfigRecord {
                project: project_of(p)?,
                api,
                name,
                spec,
                service_account,
                created_at,
            })
        })
        .collect()
    }

    /// Deletes a config no gateway serves.
    pub fn delete_api_config(&self, project: &ProjectName, api: &str, name: &str) -> Result<()> {
        self.write(|tx| {
            let user: Option<String> = tx
                .query_row(
                    "SELECT name FROM gateways WHERE project = ?1 AND api = ?2 AND config = ?3",
                    params![project.as_str(), api, name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(g) = user {
                return Err(StoreError::Conflict(format!(
                    "gateway {g} serves config {name}: switch it to another config first"
                )));
            }
            let n = tx.execute(
                "DELETE FROM api_configs WHERE project = ?1 AND api = ?2 AND name = ?3",
                params![project.as_str(), api, name],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "config {name} of API {api} does not exist"
                )));
            }
            Ok(())
        })
    }

    /// Creates a gateway.
    pub fn create_gateway(&self, rec: &GatewayRecord) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT INTO gateways (project, name, api, config, public, cors, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT DO NOTHING",
                params![
                    rec.project.as_str(),
                    rec.name,
                    rec.api,
                    rec.config,
                    rec.public,
                    rec.cors,
                    now()
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "gateway {} already exists in project {}",
                    rec.name, rec.project
                )));
            }
            Ok(())
        })
    }

    /// Replaces a gateway's config, access and CORS in one statement.
    pub fn update_gateway(&self, rec: &GatewayRecord) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE gateways SET config = ?3, public = ?4, cors = ?5, updated_at = ?6 \
                 WHERE project = ?1 AND name = ?2",
                params![
                    rec.project.as_str(),
                    rec.name,
                    rec.config,
                    rec.public,
                    rec.cors,
                    now()
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "gateway {} does not exist in project {}",
                    rec.name, rec.project
                )));
            }
            Ok(())
        })
    }

    /// Gateways (of one project when given).
    pub fn gateways(&self, project: Option<&ProjectName>) -> Result<Vec<GatewayRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT project, name, api, config, public, cors, created_at, updated_at FROM gateways \
             WHERE ?1 IS NULL OR project = ?1 ORDER BY project, name",
        )?;
        let rows = stmt.query_map([project.map(|p| p.as_str())], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        rows.map(|row| {
            let (p, name, api, config, public, cors, created_at, updated_at) = row?;
            Ok(GatewayRecord {
                project: project_of(p)?,
                name,
                api,
                config,
                public,
                cors,
                created_at,
                updated_at,
            })
        })
        .collect()
    }

    /// Deletes a gateway.
    pub fn delete_gateway(&self, project: &ProjectName, name: &str) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM gateways WHERE project = ?1 AND name = ?2",
                params![project.as_str(), name],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "gateway {name} does not exist in project {project}"
                )));
            }
            Ok(())
        })
    }

    /// Records a new API key.
    pub fn create_api_key(&self, rec: &ApiKeyRecord) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO api_keys (uid, project, display_name, prefix, digest, api_targets, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    rec.uid,
                    rec.project.as_str(),
                    rec.display_name,
                    rec.prefix,
                    rec.digest,
                    serde_json::to_string(&rec.api_targets).unwrap_or_else(|_| "[]".into()),
                    rec.created_at
                ],
            )?;
            Ok(())
        })
    }

    /// API keys (of one project when given), revoked ones included.
    pub fn api_keys(&self, project: Option<&ProjectName>) -> Result<Vec<ApiKeyRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT uid, project, display_name, prefix, digest, api_targets, created_at, deleted_at \
             FROM api_keys WHERE ?1 IS NULL OR project = ?1 ORDER BY created_at, uid",
        )?;
        let rows = stmt.query_map([project.map(|p| p.as_str())], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get::<_, String>(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        rows.map(|row| {
            let (uid, p, display_name, prefix, digest, t, created_at, deleted_at) = row?;
            Ok(ApiKeyRecord {
                uid,
                project: project_of(p)?,
                display_name,
                prefix,
                digest,
                api_targets: targets(&t)?,
                created_at,
                deleted_at,
            })
        })
        .collect()
    }

    /// Changes a key: revokes it (`deleted`), restores it, restricts it, or gives it a new secret
    /// (`secret`: prefix and digest). Returns the key as it now is.
    pub fn update_api_key(
        &self,
        project: &ProjectName,
        uid: &str,
        deleted: Option<bool>,
        api_targets: Option<&[String]>,
        secret: Option<(&str, &str)>,
    ) -> Result<ApiKeyRecord> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE api_keys SET \
                   deleted_at = CASE ?3 WHEN 1 THEN COALESCE(deleted_at, ?6) WHEN 0 THEN NULL ELSE deleted_at END, \
                   api_targets = COALESCE(?4, api_targets), \
                   prefix = COALESCE(?5, prefix), digest = COALESCE(?7, digest) \
                 WHERE project = ?1 AND uid = ?2",
                params![
                    project.as_str(),
                    uid,
                    deleted,
                    api_targets.map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into())),
                    secret.map(|s| s.0),
                    now(),
                    secret.map(|s| s.1)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "API key {uid} does not exist in project {project}: `pier api-keys list` shows them"
                )));
            }
            Ok(())
        })?;
        self.api_keys(Some(project))?
            .into_iter()
            .find(|k| k.uid == uid)
            .ok_or_else(|| StoreError::NotFound(format!("API key {uid}")))
    }
}
