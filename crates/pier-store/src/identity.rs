//! Identity tables: users and their sessions (refresh tokens, stored as digests), service accounts and
//! the public halves of their keys, and IAM policies with etags.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Result, Store, StoreError, now};

/// A user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Email (lowercase).
    pub email: String,
    /// Stable unique id (the `sub` of its tokens).
    pub uid: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// Creation time.
    pub created_at: String,
}

/// A service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountRecord {
    /// `NAME@PROJECT.iam.DOMAIN`.
    pub email: String,
    /// Its project.
    pub project: String,
    /// The NAME part.
    pub name: String,
    /// Stable unique id (`sub` and `client_id`).
    pub uid: String,
    /// Free text.
    pub display_name: Option<String>,
    /// Disabled accounts get no tokens and their tokens are refused.
    pub disabled: bool,
    /// Creation time.
    pub created_at: String,
}

/// The public half of a service-account key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// Key id (`private_key_id`, the assertions' `kid`).
    pub id: String,
    /// The service account.
    pub email: String,
    /// RSA modulus, big-endian.
    pub n: Vec<u8>,
    /// RSA exponent, big-endian.
    pub e: Vec<u8>,
    /// Disabled keys sign nothing Pier accepts.
    pub disabled: bool,
    /// Creation time.
    pub created_at: String,
}

/// Every identity record as of one instant ([`Store::identity_snapshot`]).
#[derive(Clone, Debug, Default)]
pub struct IdentitySnapshot {
    /// Every user.
    pub users: Vec<UserRecord>,
    /// Every service account, of every project.
    pub service_accounts: Vec<ServiceAccountRecord>,
    /// Every key, disabled ones included.
    pub keys: Vec<KeyRecord>,
    /// Every policy.
    pub policies: Vec<PolicyRecord>,
}

/// An IAM policy as stored: JSON and its etag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRecord {
    /// `pier`, `projects/P`, `projects/P/services/S` or `projects/P/serviceAccounts/EMAIL`.
    pub resource: String,
    /// The policy JSON (without etag).
    pub policy: String,
    /// Current etag.
    pub etag: String,
}

fn new_etag() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Store {
    /// Creates a user; a taken email is a conflict.
    pub fn create_user(&self, user: &UserRecord) -> Result<()> {
        self.write(|tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE email = ?1)",
                [&user.email],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "user {} already exists",
                    user.email
                )));
            }
            tx.execute(
                "INSERT INTO users (email, uid, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![user.email, user.uid, user.password_hash, now()],
            )?;
            Ok(())
        })
    }

    /// One user.
    pub fn user(&self, email: &str) -> Result<Option<UserRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT email, uid, password_hash, created_at FROM users WHERE email = ?1",
                [email],
                |r| {
                    Ok(UserRecord {
                        email: r.get(0)?,
                        uid: r.get(1)?,
                        password_hash: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every user.
    pub fn users(&self) -> Result<Vec<UserRecord>> {
        users_in(&self.conn())
    }

    /// Deletes a user and their sessions.
    pub fn delete_user(&self, email: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM users WHERE email = ?1", [email])? == 0 {
                return Err(StoreError::NotFound(format!("user {email} does not exist")));
            }
            Ok(())
        })
    }

    /// Replaces a user's password hash and ends their sessions.
    pub fn set_password(&self, email: &str, hash: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute(
                "UPDATE users SET password_hash = ?2 WHERE email = ?1",
                params![email, hash],
            )? == 0
            {
                return Err(StoreError::NotFound(format!("user {email} does not exist")));
            }
            tx.execute("DELETE FROM sessions WHERE email = ?1", [email])?;
            Ok(())
        })
    }

    /// Records a session (a refresh token, by digest).
    pub fn create_session(&self, digest: &str, email: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO sessions (digest, email, created_at) VALUES (?1, ?2, ?3)",
                params![digest, email, now()],
            )?;
            Ok(())
        })
    }

    /// The user a session belongs to.
    pub fn session(&self, digest: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT email FROM sessions WHERE digest = ?1",
                [digest],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Ends one session.
    pub fn delete_session(&self, digest: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM sessions WHERE digest = ?1", [digest])?;
            Ok(())
        })
    }

    /// Creates a service account; a taken email is a conflict.
    pub fn create_service_account(&self, sa: &ServiceAccountRecord) -> Result<()> {
        self.write(|tx| {
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM service_accounts WHERE email = ?1)",
                [&sa.email],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "service account {} already exists",
                    sa.email
                )));
            }
            tx.execute(
                "INSERT INTO service_accounts (email, project, name, uid, display_name, disabled, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                params![sa.email, sa.project, sa.name, sa.uid, sa.display_name, now()],
            )?;
            Ok(())
        })
    }

    fn sa_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServiceAccountRecord> {
        Ok(ServiceAccountRecord {
            email: r.get(0)?,
            project: r.get(1)?,
            name: r.get(2)?,
            uid: r.get(3)?,
            display_name: r.get(4)?,
            disabled: r.get(5)?,
            created_at: r.get(6)?,
        })
    }

    /// One service account.
    pub fn service_account(&self, email: &str) -> Result<Option<ServiceAccountRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT email, project, name, uid, display_name, disabled, created_at \
                 FROM service_accounts WHERE email = ?1",
                [email],
                Self::sa_row,
            )
            .optional()?)
    }

    /// Service accounts of a project, or of all projects.
    pub fn service_accounts(&self, project: Option<&str>) -> Result<Vec<ServiceAccountRecord>> {
        service_accounts_in(&self.conn(), project)
    }

    /// Enables or disables a service account.
    pub fn set_service_account_disabled(&self, email: &str, disabled: bool) -> Result<()> {
        self.write(|tx| {
            if tx.execute(
                "UPDATE service_accounts SET disabled = ?2 WHERE email = ?1",
                params![email, disabled],
            )? == 0
            {
                return Err(StoreError::NotFound(format!(
                    "service account {email} does not exist"
                )));
            }
            Ok(())
        })
    }

    /// Deletes a service account, its keys and its policy.
    pub fn delete_service_account(&self, email: &str) -> Result<()> {
        self.write(|tx| {
            let project: Option<String> = tx
                .query_row(
                    "SELECT project FROM service_accounts WHERE email = ?1",
                    [email],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(project) = project else {
                return Err(StoreError::NotFound(format!(
                    "service account {email} does not exist"
                )));
            };
            tx.execute("DELETE FROM service_accounts WHERE email = ?1", [email])?;
            tx.execute(
                "DELETE FROM iam_policies WHERE resource = ?1",
                [format!("projects/{project}/serviceAccounts/{email}")],
            )?;
            Ok(())
        })
    }

    /// Records a key's public half.
    pub fn create_key(&self, key: &KeyRecord) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO service_account_keys (id, email, n, e, disabled, created_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                params![key.id, key.email, key.n, key.e, now()],
            )?;
            Ok(())
        })
    }

    fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
        Ok(KeyRecord {
            id: r.get(0)?,
            email: r.get(1)?,
            n: r.get(2)?,
            e: r.get(3)?,
            disabled: r.get(4)?,
            created_at: r.get(5)?,
        })
    }

    /// One key.
    pub fn key(&self, id: &str) -> Result<Option<KeyRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, email, n, e, disabled, created_at FROM service_account_keys WHERE id = ?1",
                [id],
                Self::key_row,
            )
            .optional()?)
    }

    /// Keys of one service account, or all keys.
    pub fn keys(&self, email: Option<&str>) -> Result<Vec<KeyRecord>> {
        keys_in(&self.conn(), email)
    }

    /// Enables or disables a key of `email`.
    pub fn set_key_disabled(&self, email: &str, id: &str, disabled: bool) -> Result<()> {
        self.write(|tx| {
            if tx.execute(
                "UPDATE service_account_keys SET disabled = ?3 WHERE id = ?1 AND email = ?2",
                params![id, email, disabled],
            )? == 0
            {
                return Err(StoreError::NotFound(format!(
                    "key {id} of {email} does not exist"
                )));
            }
            Ok(())
        })
    }

    /// Deletes a key of `email`.
    pub fn delete_key(&self, email: &str, id: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute(
                "DELETE FROM service_account_keys WHERE id = ?1 AND email = ?2",
                params![id, email],
            )? == 0
            {
                return Err(StoreError::NotFound(format!(
                    "key {id} of {email} does not exist"
                )));
            }
            Ok(())
        })
    }

    /// A resource's policy, if it has one.
    pub fn policy(&self, resource: &str) -> Result<Option<PolicyRecord>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT resource, policy, etag FROM iam_policies WHERE resource = ?1",
                [resource],
                |r| {
                    Ok(PolicyRecord {
                        resource: r.get(0)?,
                        policy: r.get(1)?,
                        etag: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Every policy.
    pub fn policies(&self) -> Result<Vec<PolicyRecord>> {
        policies_in(&self.conn())
    }

    /// Users, service accounts, keys and policies as of one instant (one read transaction), for the
    /// identity directory: reading them in separate calls could mix states before and after a change.
    pub fn identity_snapshot(&self) -> Result<IdentitySnapshot> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let snapshot = IdentitySnapshot {
            users: users_in(&tx)?,
            service_accounts: service_accounts_in(&tx, None)?,
            keys: keys_in(&tx, None)?,
            policies: policies_in(&tx)?,
        };
        tx.commit()?;
        Ok(snapshot)
    }

    /// Read-modify-write of a policy in one transaction: `change` gets the current record (if any) and
    /// returns the new policy JSON, or `None` to leave it. The new etag is returned.
    pub fn update_policy(
        &self,
        resource: &str,
        change: impl FnOnce(Option<&PolicyRecord>) -> Result<Option<String>>,
    ) -> Result<PolicyRecord> {
        self.write(|tx| {
            let current = tx
                .query_row(
                    "SELECT resource, policy, etag FROM iam_policies WHERE resource = ?1",
                    [resource],
                    |r| {
                        Ok(PolicyRecord {
                            resource: r.get(0)?,
                            policy: r.get(1)?,
                            etag: r.get(2)?,
                        })
                    },
                )
                .optional()?;
            match change(current.as_ref())? {
                Some(policy) => {
                    let etag = new_etag();
                    tx.execute(
                        "INSERT INTO iam_policies (resource, policy, etag) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (resource) DO UPDATE SET policy = excluded.policy, etag = excluded.etag",
                        params![resource, policy, etag],
                    )?;
                    Ok(PolicyRecord {
                        resource: resource.to_owned(),
                        policy,
                        etag,
                    })
                }
                None => Ok(current.unwrap_or(PolicyRecord {
                    resource: resource.to_owned(),
                    policy: "{}".into(),
                    etag: String::new(),
                })),
            }
        })
    }
}

fn users_in(conn: &Connection) -> Result<Vec<UserRecord>> {
    let mut stmt =
        conn.prepare("SELECT email, uid, password_hash, created_at FROM users ORDER BY email")?;
    let rows = stmt.query_map([], |r| {
        Ok(UserRecord {
            email: r.get(0)?,
            uid: r.get(1)?,
            password_hash: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn service_accounts_in(
    conn: &Connection,
    project: Option<&str>,
) -> Result<Vec<ServiceAccountRecord>> {
    let mut stmt = conn.prepare(
        "SELECT email, project, name, uid, display_name, disabled, created_at FROM service_accounts \
         WHERE ?1 IS NULL OR project = ?1 ORDER BY email",
    )?;
    let rows = stmt.query_map([project], Store::sa_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn keys_in(conn: &Connection, email: Option<&str>) -> Result<Vec<KeyRecord>> {
    let mut stmt = conn.prepare(
        "SELECT id, email, n, e, disabled, created_at FROM service_account_keys \
         WHERE ?1 IS NULL OR email = ?1 ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([email], Store::key_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn policies_in(conn: &Connection) -> Result<Vec<PolicyRecord>> {
    let mut stmt = conn.prepare("SELECT resource, policy, etag FROM iam_policies")?;
    let rows = stmt.query_map([], |r| {
        Ok(PolicyRecord {
            resource: r.get(0)?,
            policy: r.get(1)?,
            etag: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let s = Store::open_in_memory().unwrap();
        s.ensure_project(&pier_model::ProjectName::default(), || "abc123".into())
            .unwrap();
        s
    }

    #[test]
    fn users_sessions_and_conflicts() {
        let s = store();
        let u = UserRecord {
            email: "a@x".into(),
            uid: "1".into(),
            password_hash: "h".into(),
            created_at: String::new(),
        };
        s.create_user(&u).unwrap();
        assert!(matches!(s.create_user(&u), Err(StoreError::Conflict(_))));
        s.create_session("d1", "a@x").unwrap();
        assert_eq!(s.session("d1").unwrap().as_deref(), Some("a@x"));
        s.set_password("a@x", "h2").unwrap();
        assert_eq!(
            s.session("d1").unwrap(),
            None,
            "a new password ends sessions"
        );
        s.create_session("d2", "a@x").unwrap();
        s.delete_user("a@x").unwrap();
        assert_eq!(s.session("d2").unwrap(), None, "sessions go with the user");
    }

    #[test]
    fn service_accounts_keys_and_policies_cascade() {
        let s = store();
        let sa = ServiceAccountRecord {
            email: "c@default.iam.x".into(),
            project: "default".into(),
            name: "c".into(),
            uid: "9".into(),
            display_name: None,
            disabled: false,
            created_at: String::new(),
        };
        s.create_service_account(&sa).unwrap();
        s.create_key(&KeyRecord {
            id: "k1".into(),
            email: sa.email.clone(),
            n: vec![1],
            e: vec![3],
            disabled: false,
            created_at: String::new(),
        })
        .unwrap();
        s.set_key_disabled(&sa.email, "k1", true).unwrap();
        assert!(s.key("k1").unwrap().unwrap().disabled);
        let resource = format!("projects/default/serviceAccounts/{}", sa.email);
        s.update_policy(&resource, |_| Ok(Some("{\"bindings\":[]}".into())))
            .unwrap();
        s.delete_service_account(&sa.email).unwrap();
        assert!(s.key("k1").unwrap().is_none());
        assert!(s.policy(&resource).unwrap().is_none());
    }

    #[test]
    fn policy_updates_change_the_etag_and_can_refuse() {
        let s = store();
        let a = s
            .update_policy("pier", |cur| {
                assert!(cur.is_none());
                Ok(Some("{}".into()))
            })
            .unwrap();
        let b = s
            .update_policy("pier", |cur| {
                assert_eq!(cur.unwrap().etag, a.etag);
                Ok(Some("{\"bindings\":[]}".into()))
            })
            .unwrap();
        assert_ne!(a.etag, b.etag);
        let refused = s.update_policy("pier", |_| Err(StoreError::Conflict("stale etag".into())));
        assert!(matches!(refused, Err(StoreError::Conflict(_))));
        assert_eq!(s.policy("pier").unwrap().unwrap().etag, b.etag);
    }
}
