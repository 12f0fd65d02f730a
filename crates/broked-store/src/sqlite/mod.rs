//! The embedded default: one SQLite file.
//!
//! Settings, each for a reason: WAL (readers never block the writer, so the CLI and the server
//! can share a file); `synchronous=FULL` (WAL with NORMAL can lose acknowledged writes on power
//! loss); `secure_delete` (deleted or re-sealed secrets do not linger in free pages);
//! `foreign_keys`; an explicit `busy_timeout`; and write transactions that begin IMMEDIATE (a
//! deferred read-then-write transaction gets SQLITE_BUSY without the busy handler running).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};

use self::fresh::{Fresh, Watch};
use crate::{
    Deleted, PipelineRef, PutMany, PutPipeline, Reseal, Result, RotationGuard, Sealed, SealedField,
    SecretField, Store, StoreError, StoredConnection, StoredPipeline, StoredToken, Written,
};

mod fresh;
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
    /// Declared before `fresh`: the connection closes before the `-shm` handle it used.
    conn: Mutex<Connection>,
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
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )
    .map_err(sql("cannot set pragmas"))?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Applies the migrations the database lacks, in one transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
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
            conn: Mutex::new(conn),
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
        self.lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql("user_version"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction behind (rusqlite
        // rolls back on drop), so the connection is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh_lock(&self) -> std::sync::MutexGuard<'_, Fresh> {
        self.fresh.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    }

    /// The files the paths name now, with this process's handle on the `-shm`.
    fn watch(&self) -> Result<Watch> {
        // The directory watch first, its count before the stats: a file replaced after
        // them is counted.
        let dir = fresh::dirs::watch(&self.path);
        let verified = dir.as_ref().map_or(fresh::dirs::LOST, |c| {
            fresh::dirs::poll();
            c.load(std::sync::atomic::Ordering::Acquire)
        });
        let db = fresh::file_id(&self.path).map_err(self.io(&self.path))?;
        let (shm, handle) = fresh::shm_handle(&self.shm_path).map_err(self.io(&self.shm_path))?;
        Ok(Watch {
            db,
            shm,
            handle,
            dir,
            verified,
        })
    }

    /// [`SqliteStore::same_files`], skipping the `stat`s while nothing in the database's
    /// directory was created, deleted or renamed since they last matched.
    fn still_current(&self, watch: &mut Watch) -> Result<bool> {
        let (must, count) = watch.must_stat();
        if !must {
            return Ok(true);
        }
        let same = self.same_files(watch)?;
        if same {
            watch.verified = count;
        }
        Ok(same)
    }

    /// Whether the paths still name the files the connection has open (`false` also when
    /// the `-shm` is gone); an unreadable database path is an error.
    fn same_files(&self, watch: &Watch) -> Result<bool> {
        let db = fresh::file_id(&self.path).map_err(self.io(&self.path))?;
        Ok(db == watch.db && fresh::file_id(&self.shm_path).ok() == Some(watch.shm))
    }

    /// Makes sure the connection is on the files the paths name now, reconnecting if the
    /// database or its `-shm` was replaced. Called before every statement.
    fn ensure_current(&self) -> Result<()> {
        {
            let mut fresh = self.fresh_lock();
            if let Some(w) = &mut fresh.watch {
                if self.still_current(w)? {
                    return Ok(());
                }
            }
        }
        self.reconnect()
    }

    /// Closes the connection and opens the database the path names now — unless another
    /// store of this process still uses the old files: its SQLite connection shares our
    /// locks and WAL index, and reopening under it could hand out its stale pages.
    #[cold]
    fn reconnect(&self) -> Result<()> {
        let mut conn = self.lock();
        let mut fresh = self.fresh_lock();
        if let Some(w) = &fresh.watch {
            if self.same_files(w)? {
                return Ok(());
            }
            if Arc::strong_count(&w.handle) > 1 {
                return Err(StoreError::Replaced {
                    path: self.path.clone(),
                });
            }
        }
        // No checkpoint on close: it would write the old WAL into the old inode and then
        // delete `-wal`/`-shm` by name — files that now belong to the new database.
        let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        let placeholder = Connection::open_in_memory().map_err(sql("cannot reopen"))?;
        drop(std::mem::replace(&mut *conn, placeholder));
        // Only now, with our SQLite connection on them closed, may the handle go.
        fresh.watch = None;
        fresh.seen = None;
        fresh.generation += 1;
        *conn = connect(&self.path, self.busy_timeout)?;
        fresh.watch = Some(self.watch()?);
        Ok(())
    }

    /// Runs `f` in one IMMEDIATE transaction and bumps the generation if `f` says it wrote.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<(T, bool)>) -> Result<T> {
        self.ensure_current()?;
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("cannot begin a write"))?;
        let (value, wrote) = f(&tx)?;
        if wrote {
            tx.execute(
                "UPDATE state SET generation = generation + 1 WHERE id = 1",
                [],
            )
            .map_err(sql("generation"))?;
        }
        tx.commit().map_err(sql("cannot commit"))?;
        Ok(value)
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.ensure_current()?;
        f(&self.lock())
    }

    /// `{db}.rotate.lock`, beside the database.
    pub fn rotation_lock_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".rotate.lock");
        PathBuf::from(name)
    }

    /// An exclusive `flock` on [`SqliteStore::rotation_lock_path`]: it excludes other
    /// processes and other open files in this one, and the kernel drops it when the process
    /// dies. The file itself is never removed (removing it would let two holders lock two
    /// different files).
    fn flock(&self, wait: bool) -> Result<Option<RotationGuard>> {
        use nix::errno::Errno;
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.rotation_lock_path();
        let io = |source: std::io::Error| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let arg = if wait {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        loop {
            match Flock::lock(file, arg) {
                Ok(held) => return Ok(Some(RotationGuard::new(held))),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, Errno::EWOULDBLOCK)) if !wait => return Ok(None),
                Err((_, e)) => return Err(io(e.into())),
            }
        }
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

/// The parameters ?1..?13 of an INSERT of [`CONN_COLUMNS`] (all but `version`).
fn insert_params(conn: &StoredConnection) -> [Box<dyn rusqlite::ToSql + '_>; 13] {
    [
        Box::new(&conn.conn_id),
        Box::new(&conn.conn_type),
        Box::new(&conn.host),
        Box::new(conn.port),
        Box::new(&conn.schema),
        Box::new(&conn.login),
        Box::new(conn.password.as_ref().map(|s| &s.blob)),
        Box::new(conn.password.as_ref().map(|s| s.key_id)),
        Box::new(conn.extra.as_ref().map(|s| &s.blob)),
        Box::new(conn.extra.as_ref().map(|s| s.key_id)),
        Box::new(&conn.description),
        Box::new(&conn.created_at),
        Box::new(&conn.updated_at),
    ]
}

const CONN_COLUMNS: &str = "conn_id, conn_type, host, port, schema_name, login, password, \
     password_key, extra, extra_key, description, created_at, updated_at, version";

fn sealed(blob: Option<Vec<u8>>, key: Option<i64>) -> rusqlite::Result<Option<Sealed>> {
    Ok(match (blob, key) {
        (Some(blob), Some(key)) => Some(Sealed {
            key_id: key as u32,
            blob,
        }),
        _ => None,
    })
}

fn conn_from_row(r: &Row<'_>) -> rusqlite::Result<StoredConnection> {
    let port: Option<i64> = r.get(3)?;
    Ok(StoredConnection {
        conn_id: r.get(0)?,
        conn_type: r.get(1)?,
        host: r.get(2)?,
        port: port.and_then(|p| u16::try_from(p).ok()),
        schema: r.get(4)?,
        login: r.get(5)?,
        password: sealed(r.get(6)?, r.get(7)?)?,
        extra: sealed(r.get(8)?, r.get(9)?)?,
        description: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        version: r.get(13)?,
    })
}

fn pipeline_from_row(r: &Row<'_>) -> rusqlite::Result<StoredPipeline> {
    Ok(StoredPipeline {
        pipeline_id: r.get(0)?,
        name: r.get(1)?,
        definition: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

/// Fails with [`StoreError::UnknownKey`] unless every key that seals a field of `conn` is
/// registered: a value sealed under a pruned key would be unreadable forever.
fn check_keys(tx: &Transaction<'_>, conn: &StoredConnection) -> Result<()> {
    for s in [&conn.password, &conn.extra].into_iter().flatten() {
        let known: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM keys WHERE key_id = ?1)",
                [s.key_id],
                |r| r.get(0),
            )
            .map_err(sql("keys"))?;
        if !known {
            return Err(StoreError::UnknownKey(s.key_id));
        }
    }
    Ok(())
}

fn refs_of(conn: &Connection, conn_id: &str) -> Result<Vec<PipelineRef>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT r.pipeline_id, p.name, r.node_id, r.conn_id FROM pipeline_refs r
             JOIN pipelines p USING (pipeline_id)
             WHERE r.conn_id = ?1 ORDER BY r.pipeline_id, r.node_id",
        )
        .map_err(sql("used_by"))?;
    let rows = stmt
        .query_map([conn_id], |r| {
            Ok(PipelineRef {
                pipeline_id: r.get(0)?,
                name: r.get(1)?,
                node_id: r.get(2)?,
                conn_id: r.get(3)?,
            })
        })
        .map_err(sql("used_by"))?;
    rows.collect::<rusqlite::Result<_>>()
        .map_err(sql("used_by"))
}

impl Store for SqliteStore {
    fn key_checks(&self) -> Result<Vec<(u32, String)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached("SELECT key_id, check_value FROM keys ORDER BY key_id")
                .map_err(sql("keys"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)? as u32, r.get(1)?)))
                .map_err(sql("keys"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql("keys"))
        })
    }

    fn meta(&self, name: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("meta"))
        })
    }

    fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map_err(sql("meta"))?;
            Ok(((), true))
        })
    }

    fn add_key_check(&self, key_id: u32, check: &str) -> Result<()> {
        self.write(|tx| {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT check_value FROM keys WHERE key_id = ?1",
                    [key_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql("keys"))?;
            match existing {
                Some(v) if v == check => Ok(((), false)),
                Some(_) => Err(StoreError::Corrupt {
                    table: "keys",
                    reason: format!("key {key_id} is registered with another check value"),
                }),
                None => {
                    tx.execute(
                        "INSERT INTO keys (key_id, check_value) VALUES (?1, ?2)",
                        params![key_id, check],
                    )
                    .map_err(sql("keys"))?;
                    Ok(((), true))
                }
            }
        })
    }

    fn remove_unused_keys(&self, key_ids: &[u32]) -> Result<Vec<u32>> {
        self.write(|tx| {
            let mut removed = Vec::new();
            for &id in key_ids {
                let n = tx
                    .execute(
                        "DELETE FROM keys WHERE key_id = ?1 AND NOT EXISTS (
                           SELECT 1 FROM connections WHERE password_key = ?1 OR extra_key = ?1)",
                        [id],
                    )
                    .map_err(sql("keys"))?;
                if n > 0 {
                    removed.push(id);
                }
            }
            let wrote = !removed.is_empty();
            Ok((removed, wrote))
        })
    }

    fn sealed_per_key(&self) -> Result<Vec<(u32, u64)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT k, count(*) FROM (
                       SELECT password_key AS k FROM connections WHERE password_key IS NOT NULL
                       UNION ALL
                       SELECT extra_key FROM connections WHERE extra_key IS NOT NULL)
                     GROUP BY k ORDER BY k",
                )
                .map_err(sql("keys"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, i64>(0)? as u32, r.get::<_, i64>(1)? as u64))
                })
                .map_err(sql("keys"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql("keys"))
        })
    }

    fn count_seals(&self, key_id: u32, n: u64) -> Result<u64> {
        // Counting is bookkeeping, not data: it does not bump the generation.
        self.write(|tx| {
            tx.execute(
                "UPDATE keys SET seals = seals + ?2 WHERE key_id = ?1",
                params![key_id, n as i64],
            )
            .map_err(sql("seals"))?;
            let total: Option<i64> = tx
                .query_row("SELECT seals FROM keys WHERE key_id = ?1", [key_id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sql("seals"))?;
            Ok((total.unwrap_or(0) as u64, false))
        })
    }

    fn seals(&self, key_id: u32) -> Result<u64> {
        self.read(|c| {
            let total: Option<i64> = c
                .query_row("SELECT seals FROM keys WHERE key_id = ?1", [key_id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sql("seals"))?;
            Ok(total.unwrap_or(0) as u64)
        })
    }

    /// A number that changes with every commit of any connection in any process, and
    /// whenever the database or its `-shm` file is replaced (see `sqlite/fresh.rs`).
    ///
    /// No SQL and no lock shared with other processes: a `stat` of the database and of
    /// `-shm`, and one `pread` of the WAL-index header through this process's one handle on
    /// `-shm`. The whole header is compared with the one seen last; anything but an
    /// identical, consistent header counts as a change.
    fn generation(&self) -> Result<u64> {
        loop {
            let mut fresh = self.fresh_lock();
            if let Some(w) = &mut fresh.watch {
                if self.still_current(w)? {
                    let header = fresh::read_header(&w.handle).map_err(self.io(&self.shm_path))?;
                    return Ok(fresh.observe(header));
                }
            }
            drop(fresh);
            self.reconnect()?;
        }
    }

    fn insert_connection(&self, conn: &StoredConnection) -> Result<()> {
        self.write(|tx| {
            check_keys(tx, conn)?;
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM connections WHERE conn_id = ?1)",
                    [&conn.conn_id],
                    |r| r.get(0),
                )
                .map_err(sql("insert"))?;
            if exists {
                return Err(StoreError::AlreadyExists(conn.conn_id.clone()));
            }
            tx.execute(
                &format!(
                    "INSERT INTO connections ({CONN_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1)"
                ),
                rusqlite::params_from_iter(insert_params(conn)),
            )
            .map_err(sql("insert"))?;
            Ok(((), true))
        })
    }

    fn get_connection(&self, conn_id: &str) -> Result<Option<StoredConnection>> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {CONN_COLUMNS} FROM connections WHERE conn_id = ?1"
            ))
            .and_then(|mut s| s.query_row([conn_id], conn_from_row).optional())
            .map_err(sql("get"))
        })
    }

    fn list_connections(&self, conn_type: Option<&str>) -> Result<Vec<StoredConnection>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {CONN_COLUMNS} FROM connections
                     WHERE ?1 IS NULL OR conn_type = ?1 ORDER BY conn_id"
                ))
                .map_err(sql("list"))?;
            let rows = stmt
                .query_map([conn_type], conn_from_row)
                .map_err(sql("list"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql("list"))
        })
    }

    fn update_connection(&self, conn: &StoredConnection) -> Result<Written> {
        self.write(|tx| {
            check_keys(tx, conn)?;
            let n = tx
                .execute(
                    "UPDATE connections SET conn_type = ?2, host = ?3, port = ?4, schema_name = ?5,
                       login = ?6, password = ?7, password_key = ?8, extra = ?9, extra_key = ?10,
                       description = ?11, updated_at = ?12, version = version + 1
                     WHERE conn_id = ?1 AND version = ?13",
                    params![
                        conn.conn_id,
                        conn.conn_type,
                        conn.host,
                        conn.port,
                        conn.schema,
                        conn.login,
                        conn.password.as_ref().map(|s| &s.blob),
                        conn.password.as_ref().map(|s| s.key_id),
                        conn.extra.as_ref().map(|s| &s.blob),
                        conn.extra.as_ref().map(|s| s.key_id),
                        conn.description,
                        conn.updated_at,
                        conn.version,
                    ],
                )
                .map_err(sql("update"))?;
            if n == 1 {
                return Ok((Written::Done, true));
            }
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM connections WHERE conn_id = ?1)",
                    [&conn.conn_id],
                    |r| r.get(0),
                )
                .map_err(sql("update"))?;
            Ok((
                if exists {
                    Written::Stale
                } else {
                    Written::Missing
                },
                false,
            ))
        })
    }

    fn delete_connection(&self, conn_id: &str, force: bool) -> Result<Deleted> {
        self.write(|tx| {
            let refs = refs_of(tx, conn_id)?;
            if !refs.is_empty() && !force {
                return Ok((Deleted::InUse(refs), false));
            }
            let n = tx
                .execute("DELETE FROM connections WHERE conn_id = ?1", [conn_id])
                .map_err(sql("delete"))?;
            if n == 0 {
                return Ok((Deleted::Missing, false));
            }
            // The pipelines keep their definitions; their references to the deleted
            // connection go, so a new connection with this id does not inherit them.
            tx.execute("DELETE FROM pipeline_refs WHERE conn_id = ?1", [conn_id])
                .map_err(sql("delete"))?;
            Ok((Deleted::Done, true))
        })
    }

    fn put_connections(&self, rows: &[StoredConnection], overwrite: bool) -> Result<PutMany> {
        self.write(|tx| {
            let mut existing = Vec::new();
            for row in rows {
                check_keys(tx, row)?;
                let exists: bool = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM connections WHERE conn_id = ?1)")
                    .and_then(|mut s| s.query_row([&row.conn_id], |r| r.get(0)))
                    .map_err(sql("import"))?;
                if exists {
                    existing.push(row.conn_id.clone());
                }
            }
            if !existing.is_empty() && !overwrite {
                return Ok((PutMany::Exists(existing), false));
            }
            for conn in rows {
                tx.prepare_cached(&format!(
                    "INSERT INTO connections ({CONN_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1)
                     ON CONFLICT (conn_id) DO UPDATE SET conn_type = excluded.conn_type,
                       host = excluded.host, port = excluded.port,
                       schema_name = excluded.schema_name, login = excluded.login,
                       password = excluded.password, password_key = excluded.password_key,
                       extra = excluded.extra, extra_key = excluded.extra_key,
                       description = excluded.description, updated_at = excluded.updated_at,
                       version = version + 1"
                ))
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(insert_params(conn))))
                .map_err(sql("import"))?;
            }
            Ok((PutMany::Done(rows.len()), !rows.is_empty()))
        })
    }

    fn sealed_not_under(&self, key_id: u32, limit: usize) -> Result<Vec<SealedField>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT conn_id, 0, password, password_key FROM connections
                       WHERE password_key IS NOT NULL AND password_key != ?1
                     UNION ALL
                     SELECT conn_id, 1, extra, extra_key FROM connections
                       WHERE extra_key IS NOT NULL AND extra_key != ?1
                     ORDER BY 1, 2 LIMIT ?2",
                )
                .map_err(sql("reseal"))?;
            let rows = stmt
                .query_map(params![key_id, limit as i64], |r| {
                    Ok(SealedField {
                        conn_id: r.get(0)?,
                        field: if r.get::<_, i64>(1)? == 0 {
                            SecretField::Password
                        } else {
                            SecretField::Extra
                        },
                        sealed: Sealed {
                            blob: r.get(2)?,
                            key_id: r.get::<_, i64>(3)? as u32,
                        },
                    })
                })
                .map_err(sql("reseal"))?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql("reseal"))
        })
    }

    fn reseal(&self, batch: &[Reseal]) -> Result<usize> {
        self.write(|tx| {
            let mut written = 0;
            let mut keys = BTreeSet::new();
            for r in batch {
                keys.insert(r.new.key_id);
            }
            for key in keys {
                let known: bool = tx
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM keys WHERE key_id = ?1)",
                        [key],
                        |r| r.get(0),
                    )
                    .map_err(sql("keys"))?;
                if !known {
                    return Err(StoreError::UnknownKey(key));
                }
            }
            for r in batch {
                let stmt = match r.field {
                    SecretField::Password => {
                        "UPDATE connections SET password = ?3, password_key = ?4
                         WHERE conn_id = ?1 AND password = ?2"
                    }
                    SecretField::Extra => {
                        "UPDATE connections SET extra = ?3, extra_key = ?4
                         WHERE conn_id = ?1 AND extra = ?2"
                    }
                };
                written += tx
                    .prepare_cached(stmt)
                    .and_then(|mut s| {
                        s.execute(params![r.conn_id, r.old, r.new.blob, r.new.key_id])
                    })
                    .map_err(sql("reseal"))?;
            }
            Ok((written, written > 0))
        })
    }

    fn put_pipeline(&self, pipeline: &StoredPipeline, refs: &[PipelineRef]) -> Result<PutPipeline> {
        self.write(|tx| {
            let mut unknown = BTreeSet::new();
            for r in refs {
                let exists: bool = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM connections WHERE conn_id = ?1)")
                    .and_then(|mut s| s.query_row([&r.conn_id], |row| row.get(0)))
                    .map_err(sql("put pipeline"))?;
                if !exists {
                    unknown.insert(r.conn_id.clone());
                }
            }
            if !unknown.is_empty() {
                return Ok((
                    PutPipeline::UnknownConnIds(unknown.into_iter().collect()),
                    false,
                ));
            }
            let replaced = tx
                .execute(
                    "UPDATE pipelines SET name = ?2, definition = ?3, updated_at = ?4
                     WHERE pipeline_id = ?1",
                    params![
                        pipeline.pipeline_id,
                        pipeline.name,
                        pipeline.definition,
                        pipeline.updated_at
                    ],
                )
                .map_err(sql("put pipeline"))?
                == 1;
            if replaced {
                tx.execute(
                    "DELETE FROM pipeline_refs WHERE pipeline_id = ?1",
                    [&pipeline.pipeline_id],
                )
                .map_err(sql("put pipeline"))?;
            } else {
                tx.execute(
                    "INSERT INTO pipelines (pipeline_id, name, definition, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        pipeline.pipeline_id,
                        pipeline.name,
                        pipeline.definition,
                        pipeline.created_at,
                        pipeline.updated_at
                    ],
                )
                .map_err(sql("put pipeline"))?;
            }
            for r in refs {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO pipeline_refs (pipeline_id, node_id, conn_id)
                     VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![pipeline.pipeline_id, r.node_id, r.conn_id]))
                .map_err(sql("put pipeline"))?;
            }
            Ok((
                if replaced {
                    PutPipeline::Replaced
                } else {
                    PutPipeline::Created
                },
                true,
            ))
        })
    }

    fn get_pipeline(&self, pipeline_id: &str) -> Result<Option<StoredPipeline>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT pipeline_id, name, definition, created_at, updated_at FROM pipelines
                 WHERE pipeline_id = ?1",
            )
            .and_then(|mut s| s.query_row([pipeline_id], pipeline_from_row).optional())
            .map_err(sql("get pipeline"))
        })
    }

    fn list_pipelines(&self) -> Result<Vec<StoredPipeline>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT pipeline_id, name, definition, created_at, updated_at FROM pipelines
                     ORDER BY pipeline_id",
                )
                .map_err(sql("list pipelines"))?;
            let rows = stmt
                .query_map([], pipeline_from_row)
                .map_err(sql("list pipelines"))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(sql("list pipelines"))
        })
    }

    fn delete_pipeline(&self, pipeline_id: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx
                .execute(
                    "DELETE FROM pipelines WHERE pipeline_id = ?1",
                    [pipeline_id],
                )
                .map_err(sql("delete pipeline"))?;
            Ok((n == 1, n == 1))
        })
    }

    fn used_by(&self, conn_id: &str) -> Result<Vec<PipelineRef>> {
        self.read(|c| refs_of(c, conn_id))
    }

    fn lock_rotation(&self) -> Result<RotationGuard> {
        self.flock(true)?.ok_or(StoreError::Busy)
    }

    fn insert_token(&self, token: &StoredToken) -> Result<()> {
        tokens::insert(self, token)
    }

    fn list_tokens(&self) -> Result<Vec<StoredToken>> {
        tokens::list(self)
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<StoredToken>> {
        tokens::by_hash(self, hash)
    }

    fn delete_token(&self, name: &str) -> Result<bool> {
        tokens::delete(self, name)
    }

    fn touch_token(&self, name: &str, at: &str) -> Result<()> {
        tokens::touch(self, name, at)
    }

    fn count_tokens(&self) -> Result<u64> {
        tokens::count(self)
    }

    fn try_lock_rotation(&self) -> Result<Option<RotationGuard>> {
        self.flock(false)
    }
}

#[cfg(test)]
mod tests;
