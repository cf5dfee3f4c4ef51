//! Custom-domain tables: ownership proofs per project, domain mappings (one domain, one target), and the
//! certificates issued for mapped domains. A certificate row is replaced whole in one statement, so a
//! crash mid-renewal leaves the previous certificate in place.

use rusqlite::{OptionalExtension, params};

use crate::{Result, Store, StoreError, now};
use pier_model::ProjectName;

/// A project's claim on a domain, and whether it is proven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainVerificationRecord {
    /// The project that claims it.
    pub project: ProjectName,
    /// The domain (lowercase, no trailing dot).
    pub domain: String,
    /// The value the TXT record must hold.
    pub token: String,
    /// When it was proven (RFC 3339), if it was.
    pub verified_at: Option<String>,
    /// How: `dns` (the TXT record was found) or `owner` (an installation owner vouched for it).
    pub method: Option<String>,
}

/// One domain mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainMappingRecord {
    /// The mapped domain (lowercase, no trailing dot).
    pub domain: String,
    /// The project that holds it.
    pub project: ProjectName,
    /// What it points at: `service` today (`gateway`, `site` later).
    pub target_kind: String,
    /// The target's name.
    pub target_name: String,
    /// `AUTOMATIC`, `NONE` or `LOCAL_CA`.
    pub certificate_mode: String,
    /// With `NONE`: the certificate chain file on the server, and its key's.
    pub certificate_files: Option<(String, String)>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A certificate issued for one domain.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    /// The domain it is for.
    pub domain: String,
    /// The chain, leaf first (PEM).
    pub chain_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Who issued it (the ACME directory URL, or `local-ca`).
    pub issuer: String,
}

impl std::fmt::Debug for CertificateRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRecord")
            .field("domain", &self.domain)
            .field("not_after", &self.not_after)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

type MappingRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn mapping_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MappingRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn mapping(
    (domain, project, target_kind, target_name, certificate_mode, created_at, cert, key): MappingRow,
) -> Result<DomainMappingRecord> {
    Ok(DomainMappingRecord {
        domain,
        project: project
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("domain mapping project: {e}")))?,
        target_kind,
        target_name,
        certificate_mode,
        certificate_files: cert.zip(key),
        created_at,
    })
}

const MAPPING_COLUMNS: &str = "domain, project, target_kind, target_name, certificate_mode, \
     created_at, certificate_file, private_key_file";

impl Store {
    /// The verification record of `domain` for `project`, created with `make_token()` if absent.
    pub fn domain_verification(
        &self,
        project: &ProjectName,
        domain: &str,
        make_token: impl FnOnce() -> String,
    ) -> Result<DomainVerificationRecord> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO domain_verifications (project, domain, token, created_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (project, domain) DO NOTHING",
                params![project.as_str(), domain, make_token(), now()],
            )?;
            Ok(tx.query_row(
                "SELECT token, verified_at, method FROM domain_verifications \
                 WHERE project = ?1 AND domain = ?2",
                params![project.as_str(), domain],
                |r| {
                    Ok(DomainVerificationRecord {
                        project: project.clone(),
                        domain: domain.to_owned(),
                        token: r.get(0)?,
                        verified_at: r.get(1)?,
                        method: r.get(2)?,
                    })
                },
            )?)
        })
    }

    /// Marks `domain` proven for `project` by `method` (`dns` or `owner`).
    pub fn mark_domain_verified(
        &self,
        project: &ProjectName,
        domain: &str,
        method: &str,
    ) -> Result<()> {
        let n = self.write(|tx| {
            Ok(tx.execute(
                "UPDATE domain_verifications SET verified_at = ?3, method = ?4 \
                 WHERE project = ?1 AND domain = ?2",
                params![project.as_str(), domain, now(), method],
            )?)
        })?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "no verification of {domain} was started in project {project}"
            )));
        }
        Ok(())
    }

    /// Every domain a project has claimed or proven.
    pub fn domain_verifications(
        &self,
        project: Option<&ProjectName>,
    ) -> Result<Vec<DomainVerificationRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT project, domain, token, verified_at, method FROM domain_verifications \
             WHERE ?1 IS NULL OR project = ?1 ORDER BY domain",
        )?;
        let rows = stmt.query_map([project.map(|p| p.as_str())], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        rows.map(|row| {
            let (project, domain, token, verified_at, method) = row?;
            Ok(DomainVerificationRecord {
                project: project
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("verification project: {e}")))?,
                domain,
                token,
                verified_at,
                method,
            })
        })
        .collect()
    }

    /// Records a mapping of `m.domain`. Another project's mapping of it is a conflict while that project
    /// has proven the domain; a mapping by a project that never proved it gives way to one that has (so
    /// nobody squats on a domain they do not own). This project's mapping to another target is a
    /// conflict too, unless `force` (then it moves).
    pub fn put_domain_mapping(&self, m: &DomainMappingRecord, force: bool) -> Result<()> {
        self.write(|tx| {
            let existing = tx
                .query_row(
                    &format!("SELECT {MAPPING_COLUMNS} FROM domain_mappings WHERE domain = ?1"),
                    [&m.domain],
                    mapping_row,
                )
                .optional()?
                .map(mapping)
                .transpose()?;
            if let Some(e) = existing {
                if e.project != m.project {
                    let proven = |p: &ProjectName| -> Result<bool> {
                        Ok(tx
                            .query_row(
                                "SELECT 1 FROM domain_verifications WHERE project = ?1 \
                                 AND verified_at IS NOT NULL \
                                 AND (domain = ?2 OR ?2 LIKE '%.' || domain) LIMIT 1",
                                params![p.as_str(), m.domain],
                                |_| Ok(()),
                            )
                            .optional()?
                            .is_some())
                    };
                    if proven(&e.project)? || !proven(&m.project)? {
                        return Err(StoreError::Conflict(format!(
                            "domain {} is mapped by another project: it must delete its mapping first (a project that has not verified the domain gives it up to one that has: `pier domains verify {}`)",
                            m.domain, m.domain
                        )));
                    }
                    tx.execute("DELETE FROM domain_mappings WHERE domain = ?1", [&m.domain])?;
                    tx.execute("DELETE FROM certificates WHERE domain = ?1", [&m.domain])?;
                } else if !force
                    && (e.target_kind != m.target_kind || e.target_name != m.target_name)
                {
                    return Err(StoreError::Conflict(format!(
                        "domain {} already maps to {} {}: pass --force-override to move it",
                        m.domain, e.target_kind, e.target_name
                    )));
                }
            }
            tx.execute(
                "INSERT INTO domain_mappings (domain, project, target_kind, target_name, certificate_mode, \
                 created_at, certificate_file, private_key_file) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (domain) DO UPDATE SET \
                 target_kind = excluded.target_kind, target_name = excluded.target_name, \
                 certificate_mode = excluded.certificate_mode, \
                 certificate_file = excluded.certificate_file, private_key_file = excluded.private_key_file",
                params![
                    m.domain,
                    m.project.as_str(),
                    m.target_kind,
                    m.target_name,
                    m.certificate_mode,
                    m.created_at,
                    m.certificate_files.as_ref().map(|f| &f.0),
                    m.certificate_files.as_ref().map(|f| &f.1),
                ],
            )?;
            Ok(())
        })
    }

    /// Every mapping, of one project or of all.
    pub fn domain_mappings(
        &self,
        project: Option<&ProjectName>,
    ) -> Result<Vec<DomainMappingRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {MAPPING_COLUMNS} FROM domain_mappings WHERE ?1 IS NULL OR project = ?1 ORDER BY domain"
        ))?;
        let rows = stmt.query_map([project.map(|p| p.as_str())], mapping_row)?;
        rows.map(|r| mapping(r?)).collect()
    }

    /// Deletes a project's mapping of `domain` and its certificate; false if it had none.
    pub fn delete_domain_mapping(&self, project: &ProjectName, domain: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM domain_mappings WHERE project = ?1 AND domain = ?2",
                params![project.as_str(), domain],
            )?;
            if n > 0 {
                tx.execute("DELETE FROM certificates WHERE domain = ?1", [domain])?;
            }
            Ok(n > 0)
        })
    }

    /// Stores (or replaces) the certificate of a domain, if the domain is still mapped; returns whether
    /// it was stored (a mapping deleted while its order ran keeps no certificate).
    pub fn put_certificate(&self, c: &CertificateRecord) -> Result<bool> {
        self.write(|tx| {
            let mapped = tx
                .query_row(
                    "SELECT 1 FROM domain_mappings WHERE domain = ?1",
                    [&c.domain],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !mapped {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO certificates (domain, chain_pem, key_pem, not_before, not_after, issuer, issued_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (domain) DO UPDATE SET \
                 chain_pem = excluded.chain_pem, key_pem = excluded.key_pem, not_before = excluded.not_before, \
                 not_after = excluded.not_after, issuer = excluded.issuer, issued_at = excluded.issued_at",
                params![c.domain, c.chain_pem, c.key_pem, c.not_before, c.not_after, c.issuer, now()],
            )?;
            Ok(true)
        })
    }

    /// Every stored certificate.
    pub fn certificates(&self) -> Result<Vec<CertificateRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT domain, chain_pem, key_pem, not_before, not_after, issuer FROM certificates ORDER BY domain",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(CertificateRecord {
                domain: r.get(0)?,
                chain_pem: r.get(1)?,
                key_pem: r.get(2)?,
                not_before: r.get(3)?,
                not_after: r.get(4)?,
                issuer: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores `value` under `key` in the installation's key-value table (ACME account credentials).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
    }
}
