//! The database layout: connection settings, the tables, and the migrations that bring a file
//! up to date, numbered by `PRAGMA user_version`.
//!
//! Every table is keyed by the session name first, so that one session's rows sit together and
//! `delete_session` is one range delete per table. Unsigned integers that are only stored and
//! read back (timestamps, expiry, the retained message's offset) keep their 64 bits in SQLite's
//! signed INTEGER; the ones SQL compares (message keys, `last_offset`) are at most `i64::MAX`.

use std::time::Duration;

use rusqlite::Connection;

use super::{SyncMode, db_error};
use crate::store::StoreError;

/// `PRAGMA application_id` of a Sealbus store (`"SBUS"`), so that another application's SQLite
/// file is refused instead of being written to.
const APPLICATION_ID: i32 = 0x5342_5553;

/// How long a connection waits for a lock held by another connection before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL file is truncated back to this size after a checkpoint (it grows while readers hold
/// old snapshots).
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The migrations in order: entry `i` takes a file from `user_version` `i` to `i + 1`. Append
/// new ones; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the first layout.
    r#"
    CREATE TABLE sessions (
        name   TEXT NOT NULL PRIMARY KEY,
        record TEXT NOT NULL                 -- SessionRecord as JSON
    ) WITHOUT ROWID;

    CREATE TABLE streams (
        session     TEXT NOT NULL PRIMARY KEY,
        epoch       TEXT NOT NULL,
        last_offset INTEGER NOT NULL
    ) WITHOUT ROWID;

    -- Stream messages (key > 0, the offset) and direct messages (key < 0, minus the sequence
    -- number): MessageKey::to_i64. Payloads can be large: a rowid table keeps them off the key.
    CREATE TABLE messages (
        session     TEXT NOT NULL,
        key         INTEGER NOT NULL,
        topic       TEXT NOT NULL,
        data        TEXT NOT NULL,           -- the Payload's wire form (JSON)
        "from"      TEXT NOT NULL,
        ts          INTEGER NOT NULL,
        mid         TEXT NOT NULL,
        qos         INTEGER NOT NULL,
        notify_dead INTEGER NOT NULL,
        PRIMARY KEY (session, key)
    );

    CREATE TABLE retained (
        session  TEXT NOT NULL,
        topic    TEXT NOT NULL,
        data     TEXT NOT NULL,              -- the Payload's wire form (JSON)
        "from"   TEXT NOT NULL,
        ts       INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        mid      TEXT NOT NULL,
        -- Retained::topic when it differs from the topic it is retained under (never, from
        -- the broker), so that the message reads back exactly as written.
        message_topic TEXT,
        PRIMARY KEY (session, topic)
    );

    CREATE TABLE clients (
        session    TEXT NOT NULL,
        client_id  TEXT NOT NULL,
        filters    TEXT NOT NULL,            -- JSON array of strings
        expires_at INTEGER,                  -- NULL while connected
        PRIMARY KEY (session, client_id)
    ) WITHOUT ROWID;

    CREATE TABLE copies (
        session   TEXT NOT NULL,
        client_id TEXT NOT NULL,
        key       INTEGER NOT NULL,
        attempts  INTEGER NOT NULL,
        PRIMARY KEY (session, client_id, key)
    ) WITHOUT ROWID;

    -- Trimming history and forgetting direct messages ask whether any copy refers to a key.
    CREATE INDEX copies_by_key ON copies (session, key);
    "#,
];

/// The schema version this build writes.
pub(super) const VERSION: usize = MIGRATIONS.len();

/// Sets up the writer's connection: checks that the file is a Sealbus store (or empty), turns
/// on WAL with the requested `synchronous` level, and applies pending migrations.
pub(super) fn prepare_writer(conn: &mut Connection, sync: SyncMode) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    // The first statement that reads the file: a file that is not a database fails here.
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(db_error)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(db_error)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(db_error)?;
    if application_id != APPLICATION_ID && (application_id != 0 || tables > 0) {
        return Err(StoreError::Database(
            "the file is an SQLite database of another application, not a Sealbus store".into(),
        ));
    }
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > VERSION {
        return Err(StoreError::Database(format!(
            "the store has schema version {version}, written by a newer Sealbus \
             (this one knows up to {VERSION})"
        )));
    }

    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(db_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "the store could not switch to WAL mode (journal_mode is {mode})"
        )));
    }
    let synchronous = match sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(db_error)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(db_error)?;
    // The writer caches one statement per kind of write and read.
    conn.set_prepared_statement_cache_capacity(64);

    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let to = from + 1;
        let tx = conn.transaction().map_err(db_error)?;
        tx.execute_batch(migration).map_err(|err| {
            StoreError::Database(format!("store migration to schema version {to}: {err}"))
        })?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(db_error)?;
        tx.pragma_update(None, "user_version", i64::try_from(to).unwrap_or(i64::MAX))
            .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
    }
    Ok(())
}

/// Sets up a connection that only reads (`load`, `sessions`).
pub(super) fn prepare_reader(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_error)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(db_error)?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(())
}
