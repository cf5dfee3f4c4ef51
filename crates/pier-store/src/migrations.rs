//! Numbered schema migrations, applied in order at open; `PRAGMA user_version` records how far a database
//! has come. A migration is never edited once released: add a new one.

use rusqlite::Connection;

use crate::StoreError;

/// Each entry moves the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
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
    // 2: identity and IAM. Public services become an allUsers invoker binding.
    r#"
    CREATE TABLE users (
        email         TEXT PRIMARY KEY,
        uid           TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at    TEXT NOT NULL
    ) STRICT;

    CREATE TABLE sessions (
        digest     TEXT PRIMARY KEY,
        email      TEXT NOT NULL REFERENCES users (email) ON DELETE CASCADE,
        created_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE service_accounts (
        email        TEXT PRIMARY KEY,
        project      TEXT NOT NULL REFERENCES projects (name),
        name         TEXT NOT NULL,
        uid          TEXT NOT NULL UNIQUE,
        display_name TEXT,
        disabled     INTEGER NOT NULL DEFAULT 0,
        created_at   TEXT NOT NULL
    ) STRICT;

    CREATE TABLE service_account_keys (
        id         TEXT PRIMARY KEY,
        email      TEXT NOT NULL REFERENCES service_accounts (email) ON DELETE CASCADE,
        n          BLOB NOT NULL,
        e          BLOB NOT NULL,
        disabled   INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE iam_policies (
        resource TEXT PRIMARY KEY,
        policy   TEXT NOT NULL,
        etag     TEXT NOT NULL
    ) STRICT;

    INSERT INTO iam_policies (resource, policy, etag)
        SELECT 'projects/' || project || '/services/' || name,
               '{"version":1,"bindings":[{"role":"roles/run.invoker","members":["allUsers"]}],"etag":""}',
               lower(hex(randomblob(8)))
        FROM services WHERE public = 1;

    ALTER TABLE services DROP COLUMN public;
    ALTER TABLE services ADD COLUMN ingress TEXT NOT NULL DEFAULT 'all';
    ALTER TABLE services ADD COLUMN invoker_iam_check INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE services ADD COLUMN custom_audiences TEXT NOT NULL DEFAULT '[]';
    "#,
    // 3: container images: what a revision's image resolved to, the images pulled, registry credentials.
    r#"
    ALTER TABLE revisions ADD COLUMN image_digest TEXT;

    CREATE TABLE images (
        digest    TEXT PRIMARY KEY,
        name      TEXT NOT NULL,
        size      INTEGER NOT NULL,
        pulled_at TEXT NOT NULL
    ) STRICT;

    CREATE TABLE registry_credentials (
        registry   TEXT PRIMARY KEY,
        username   TEXT NOT NULL,
        secret     TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) STRICT;
    "#,
    // 4: every service owns a block of host ids for its instances (the lowest free one at creation).
    r#"
    ALTER TABLE services ADD COLUMN id_block INTEGER NOT NULL DEFAULT -1;
    UPDATE services SET id_block = (
        SELECT COUNT(*) FROM services AS older WHERE older.rowid < services.rowid
    );
    CREATE UNIQUE INDEX services_by_id_block ON services (id_block);
    "#,
    // 5: custom domains: who proved ownership of which domain, which domain maps to what, and the
    // certificates issued for them (with their private keys: the database file is the server's alone).
    r#"
    CREATE TABLE domain_verifications (
        project     TEXT NOT NULL REFERENCES projects (name),
        domain      TEXT NOT NULL,
        token       TEXT NOT NULL,
        verified_at TEXT,
        method      TEXT,
        created_at  TEXT NOT NULL,
        PRIMARY KEY (project, domain)
    ) STRICT;

    CREATE TABLE domain_mappings (
        domain           TEXT PRIMARY KEY,
        project          TEXT NOT NULL REFERENCES projects (name),
        target_kind      TEXT NOT NULL,
        target_name      TEXT NOT NULL,
        certificate_mode TEXT NOT NULL,
        certificate_file TEXT,
        private_key_file TEXT,
        created_at       TEXT NOT NULL
    ) STRICT;

    CREATE TABLE certificates (
        domain    TEXT PRIMARY KEY,
        chain_pem TEXT NOT NULL,
        key_pem   TEXT NOT NULL,
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        issuer    TEXT NOT NULL,
        issued_at TEXT NOT NULL
    ) STRICT;
    "#,
    // 6: API gateways: APIs, their immutable configs (the OpenAPI text as given), gateways serving one
    // config each, and API keys (only their SHA-256 digest; the key itself is shown once).
    r#"
    CREATE TABLE apis (
        project    TEXT NOT NULL REFERENCES projects (name),
        name       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (project, name)
    ) STRICT;

    CREATE TABLE api_configs (
        project         TEXT NOT NULL,
        api             TEXT NOT NULL,
        name            TEXT NOT NULL,
        spec            TEXT NOT NULL,
        service_account TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        PRIMARY KEY (project, api, name),
        FOREIGN KEY (project, api) REFERENCES apis (project, name)
    ) STRICT;

    CREATE TABLE gateways (
        project    TEXT NOT NULL REFERENCES projects (name),
        name       TEXT NOT NULL,
        api        TEXT NOT NULL,
        config     TEXT NOT NULL,
        public     INTEGER NOT NULL,
        cors       TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (project, name),
        FOREIGN KEY (project, api, config) REFERENCES api_configs (project, api, name)
    ) STRICT;

    ALTER TABLE services ADD COLUMN end_user_auth TEXT;

    CREATE TABLE api_keys (
        uid          TEXT PRIMARY KEY,
        project      TEXT NOT NULL REFERENCES projects (name),
        display_name TEXT NOT NULL,
        prefix       TEXT NOT NULL,
        digest       TEXT NOT NULL UNIQUE,
        api_targets  TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        deleted_at   TEXT
    ) STRICT;
    "#,
    // 7: hosting: sites (each with the service account its rewrites call services as), the files a
    // project has uploaded (content-addressed; the bytes live in the data directory), versions (the
    // hosting entry and the path -> digest map, immutable once finalized), channels (`live` and
    // previews with an expiry) and their releases, the newest being what a channel serves.
    r#"
    CREATE TABLE sites (
        project         TEXT NOT NULL REFERENCES projects (name),
        name            TEXT NOT NULL,
        service_account TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        PRIMARY KEY (project, name)
    ) STRICT;

    CREATE TABLE site_blobs (
        project TEXT NOT NULL REFERENCES projects (name),
        digest  TEXT NOT NULL,
        size    INTEGER NOT NULL,
        PRIMARY KEY (project, digest)
    ) STRICT;

    CREATE TABLE site_versions (
        project    TEXT NOT NULL,
        site       TEXT NOT NULL,
        version    INTEGER NOT NULL,
        config     TEXT NOT NULL,
        files      TEXT NOT NULL,
        status     TEXT NOT NULL,
        pins       TEXT,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (project, site, version),
        FOREIGN KEY (project, site) REFERENCES sites (project, name)
    ) STRICT;

    CREATE TABLE site_channels (
        project    TEXT NOT NULL,
        site       TEXT NOT NULL,
        name       TEXT NOT NULL,
        expires_at INTEGER,
        created_at TEXT NOT NULL,
        PRIMARY KEY (project, site, name),
        FOREIGN KEY (project, site) REFERENCES sites (project, name)
    ) STRICT;

    CREATE TABLE site_releases (
        project    TEXT NOT NULL,
        site       TEXT NOT NULL,
        channel    TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        version    INTEGER NOT NULL,
        kind       TEXT NOT NULL,
        message    TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (project, site, channel, seq),
        FOREIGN KEY (project, site, channel) REFERENCES site_channels (project, site, name),
        FOREIGN KEY (project, site, version) REFERENCES site_versions (project, site, version)
    ) STRICT;

    ALTER TABLE services ADD COLUMN cache TEXT;
    "#,
    // Who deployed each revision (Cloud Run's `serving.knative.dev/creator`); older ones say nothing.
    r#"
    ALTER TABLE revisions ADD COLUMN creator TEXT;
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
