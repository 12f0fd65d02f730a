//! The embedded default: one SQLite file.
//!
//! Settings, each for a reason: WAL (readers never block the writer, so the CLI and the server
//! can share a file); `synchronous=FULL` (WAL with NORMAL can lose acknowledged writes on power
//! loss); `secure_delete` (deleted or re-sealed secrets do not linger in free pages);
//! `foreign_keys`; an explicit `busy_timeout`; and write transactions that begin IMMEDIATE (a
//! deferred read-then-write transaction gets SQLITE_BUSY without the busy handler running).
//!
//! **Files.** `mod.rs`: opening, configuring and migrating; `bridge.rs`: the read and write
//! transactions every call runs in (reconnecting when the file was replaced); `pool.rs`: the
//! read-only connections; `group.rs`: the write connection and its group commit;
//! `queries.rs`: the statements of the `Store` methods; `lock.rs`: the rotation
//! lock; `fresh.rs`: the generation; `tokens.rs`: API tokens; `migrations/NNN_name.sql`: the
//! schema. Row readers, column lists and the connection statements are shared with
//! PostgreSQL (`crate::rows`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use self::fresh::Fresh;
use self::group::Writer;
use self::pool::Readers;
use crate::{Result, StoreError};

mod audit;
mod bridge;
mod fresh;
mod group;
mod lock;
mod page;
mod pool;
mod queries;
mod reseal;
mod tokens;

/// How long a write waits for another process's write to finish before giving up, unless
/// the store is opened with another limit ([`SqliteStore::open_with_timeout`]).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Migrations, in order; `user_version` is the number applied. Never edit one that shipped:
/// add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    include_str!("migrations/001_first_schema.sql"),
    // 2: named settings of the database (e.g. the format of its sealed values).
    include_str!("migrations/002_meta.sql"),
    // 3: named API tokens, stored as the SHA-256 of the token.
    include_str!("migrations/003_tokens.sql"),
    // 4: version history: who wrote a row and which fields it changed, and the previous
    // versions of every connection (deleted ones until purged).
    include_str!("migrations/004_connection_versions.sql"),
    // 5: the audit log: an HMAC chain of records, names and HMACs only (never a value).
    include_str!("migrations/005_audit.sql"),
    // 6 (5 is kept for the audit log, issue 17): the last test result of each connection.
    include_str!("migrations/006_connection_status.sql"),
    // 7: how many connections there are of each type, kept by triggers (the first page's
    // total without counting rows, issue 19).
    include_str!("migrations/007_connection_counts.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A SQLite database file.
pub struct SqliteStore {
    path: PathBuf,
    /// `{path}-shm`, SQLite's WAL index.
    shm_path: PathBuf,
    /// How long a statement waits for another process's lock.
    busy_timeout: Duration,
    /// Read-only connections (`pool.rs`). Declared before `writer`: the writer, closing
    /// last, checkpoints; and before `fresh`: every connection closes before the `-shm`
    /// handle it used.
    readers: Readers,
    /// The write connection and its group commit (`group.rs`).
    writer: Writer,
    /// The files the connection has open and the last WAL-index header seen (`fresh.rs`).
    fresh: Mutex<Fresh>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Sqlite { context, source },
    }
}

/// Opens (creating if absent, with mode 0600), configures and migrates the database at `path`.
fn connect(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    create_private(path);
    let mut conn = Connection::open(path).map_err(sql("cannot open the database"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(sql("busy_timeout"))?;
    // journal_mode needs a lock of its own; retry it under the busy timeout.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql("cannot switch to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt {
            table: "pragma",
            reason: format!("journal_mode is {mode}, WAL was requested"),
        });
    }
    // temp_store = MEMORY: a statement that writes two tables (an insert and its count,
    // migration 7) keeps a statement journal; on a temporary file it cost 8 writes per row
    // of an import (twice its time, issue 19), and put copies of pages in the temporary
    // directory, outside the database's own.
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(sql("cannot set pragmas"))?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Applies the migrations the database lacks, in one transaction. A database that lacks
/// none is only read: opening it never waits for another process's write (issue 19: the
/// CLI's `list` waited out a million-row import's transaction, up to the busy timeout).
fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql("user_version"))?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql("cannot begin the migration"))?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql("user_version"))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(step).map_err(sql("migration failed"))?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(sql("user_version"))?;
    }
    tx.commit().map_err(sql("cannot commit the migration"))
}

impl SqliteStore {
    /// Opens (creating if absent, with mode 0600) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with_timeout(path, BUSY_TIMEOUT)
    }

    /// [`SqliteStore::open`] with another limit on the wait for another process's lock
    /// (then [`StoreError::Busy`]).
    pub fn open_with_timeout(path: &Path, busy_timeout: Duration) -> Result<SqliteStore> {
        let conn = connect(path, busy_timeout)?;
        let mut shm_path = path.as_os_str().to_owned();
        shm_path.push("-shm");
        let store = SqliteStore {
            path: path.to_owned(),
            shm_path: shm_path.into(),
            busy_timeout,
            readers: Readers::new(),
            writer: Writer::new(conn),
            fresh: Mutex::new(Fresh {
                watch: None,
                seen: None,
                generation: 0,
            }),
        };
        // The migration's transaction made SQLite open the WAL index: record the files.
        let watch = store.watch()?;
        store.fresh_lock().watch = Some(watch);
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64> {
        self.read(|c| {
            c.query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(sql("user_version"))
        })
    }
}

/// Creates the file with mode 0600 if it does not exist, so the database (hosts, logins,
/// sealed secrets) is not world-readable; SQLite gives the -wal and -shm files the same mode.
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    // Errors are left for SQLite to report with its own message.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

#[cfg(test)]
mod tests;
