//! Image tables: the images pulled (by manifest digest), which revision runs which, and registry
//! credentials (secrets stay in the database file, which is readable by the server's user only).

use rusqlite::{OptionalExtension, params};

use crate::{Result, Store, StoreError, now};
use pier_model::{ProjectName, RevisionName};

/// An image in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    /// Manifest digest (`sha256:...`).
    pub digest: String,
    /// What it was last pulled as (`localhost:5000/hello:1.0`).
    pub name: String,
    /// Compressed size of its config and layers.
    pub size: u64,
    /// When it was last pulled.
    pub pulled_at: String,
    /// Revisions that run it.
    pub used_by: u32,
}

/// A registry's credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentialRecord {
    /// `host[:port]`.
    pub registry: String,
    /// User name (empty with a bare token).
    pub username: String,
    /// Password or token.
    pub secret: String,
    /// When they were set.
    pub updated_at: String,
}

impl std::fmt::Debug for RegistryCredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentialRecord")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The manifest digest at the end of a pinned image (`NAME@sha256:...`).
fn digest_of(pinned: &str) -> Option<&str> {
    pinned.rsplit_once('@').map(|(_, d)| d)
}

impl Store {
    /// Records that `revision` runs the pulled image `pinned` (`NAME@sha256:...`, pulled as `name`), in
    /// one transaction with the image's row, so a concurrent prune never sees the image unused.
    pub fn set_revision_image(
        &self,
        project: &ProjectName,
        revision: &RevisionName,
        pinned: &str,
        name: &str,
        size: u64,
    ) -> Result<()> {
        let digest = digest_of(pinned)
            .ok_or_else(|| StoreError::Invalid(format!("{pinned} is not pinned to a digest")))?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO images (digest, name, size, pulled_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (digest) DO UPDATE SET name = excluded.name, pulled_at = excluded.pulled_at",
                params![digest, name, size as i64, now()],
            )?;
            let n = tx.execute(
                "UPDATE revisions SET image_digest = ?3 WHERE project = ?1 AND name = ?2",
                params![project.as_str(), revision.as_str(), pinned],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "revision {revision} does not exist"
                )));
            }
            Ok(())
        })
    }

    /// Every image, with how many revisions run it.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT i.digest, i.name, i.size, i.pulled_at, \
             (SELECT count(*) FROM revisions r WHERE r.image_digest LIKE '%@' || i.digest) \
             FROM images i ORDER BY i.pulled_at DESC",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ImageRecord {
                digest: r.get(0)?,
                name: r.get(1)?,
                size: r.get::<_, i64>(2)?.max(0) as u64,
                pulled_at: r.get(3)?,
                used_by: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Manifest digests some revision runs.
    pub fn images_in_use(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT DISTINCT image_digest FROM revisions WHERE image_digest IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out: Vec<String> = rows
            .collect::<rusqlite::Result<Vec<_>>>()?
            .iter()
            .filter_map(|p| digest_of(p).map(str::to_owned))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Forgets the images no revision runs; returns them.
    pub fn delete_unused_images(&self) -> Result<Vec<ImageRecord>> {
        let unused: Vec<ImageRecord> = self
            .images()?
            .into_iter()
            .filter(|i| i.used_by == 0)
            .collect();
        self.write(|tx| {
            for i in &unused {
                // Checked again inside the transaction: a deploy may have just started using it.
                tx.execute(
                    "DELETE FROM images WHERE digest = ?1 AND NOT EXISTS \
                     (SELECT 1 FROM revisions WHERE image_digest LIKE '%@' || ?1)",
                    [&i.digest],
                )?;
            }
            Ok(())
        })?;
        Ok(unused)
    }

    /// Sets a registry's credentials.
    pub fn set_registry_credential(
        &self,
        registry: &str,
        username: &str,
        secret: &str,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO registry_credentials (registry, username, secret, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (registry) DO UPDATE SET username = excluded.username, secret = excluded.secret, \
                 updated_at = excluded.updated_at",
                params![registry, username, secret, now()],
            )?;
            Ok(())
        })
    }

    /// A registry's credentials.
    pub fn registry_credential(&self, registry: &str) -> Result<Option<RegistryCredentialRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT registry, username, secret, updated_at FROM registry_credentials WHERE registry = ?1",
                [registry],
                |r| {
                    Ok(RegistryCredentialRecord {
                        registry: r.get(0)?,
                        username: r.get(1)?,
                        secret: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every registry with credentials (without the secrets).
    pub fn registries(&self) -> Result<Vec<(String, String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT registry, username, updated_at FROM registry_credentials ORDER BY registry",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes a registry's credentials.
    pub fn delete_registry_credential(&self, registry: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute(
                "DELETE FROM registry_credentials WHERE registry = ?1",
                [registry],
            )? == 0
            {
                return Err(StoreError::NotFound(format!(
                    "no credentials for registry {registry}"
                )));
            }
            Ok(())
        })
    }
}
