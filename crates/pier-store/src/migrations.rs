//! Numbered schema migrations, applied in order at open; `PRAGMA user_version` records how far a database
//! has come. A migration is never edited once released: add a new one.

use rusqlite::Connection;

use crate::StoreError;

/// Each entry moves the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: projects, services, revisions.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    CREATE TABLE projects (
        name       TEXT PRIMARY KEY,
        hash       TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE services (
        project        TEXT NOT NULL REFERENCES projects (name),
        name           TEXT NOT NULL,
        public         INTEGER NOT NULL DEFAULT 0,
        traffic        TEXT NOT NULL,
        next_seq       INTEGER NOT NULL DEFAULT 1,
        latest_created TEXT,
        latest_ready   TEXT,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL,
        PRIMARY KEY (project, name)
    ) STRICT;

    CREATE TABLE revisions (
        project     TEXT NOT NULL,
        service     TEXT NOT NULL,
        name        TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        template    TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('DEPLOYING', 'READY', 'FAILED')),
        message     TEXT,
        log_tail    TEXT,
        pending_tag TEXT,
        created_at  TEXT NOT NULL,
        ready_at    TEXT,
        PRIMARY KEY (project, name),
        FOREIGN KEY (project, service) REFERENCES services (project, name) ON DELETE CASCADE
    ) STRICT;

    CREATE INDEX revisions_by_service ON revisions (project, service, seq);
    "#,
];

/// Brings the schema up to date, one transaction per migration.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(usize::MAX);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database schema is version {current}, newer than this Pier knows ({}): run a newer pier",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
