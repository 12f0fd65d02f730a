//! Read-only connections beside the writer (`group.rs`): in WAL mode a reader never waits for
//! a write, so reads run at once on any thread instead of queueing behind the writer's
//! `fsync` on one connection mutex. Each read is one statement or a few in autocommit, so it
//! sees every transaction committed before it began — the writer's included (a write answers
//! only after its commit).
//!
//! Connections are opened when no idle one is left and kept up to [`MAX_IDLE`]. While a read
//! runs it holds the pool's lock shared; [`Readers::close_all`] takes it exclusively, so a
//! reconnect (`bridge.rs`) closes every reader before the `-shm` handle they used can go.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use super::sql;
use crate::Result;

/// Idle readers kept for the next reads (more are opened while more run at once).
pub(super) const MAX_IDLE: usize = 8;

pub(super) struct Readers {
    idle: RwLock<Mutex<Vec<Connection>>>,
}

/// Opens a read-only connection to `path`.
fn open(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql("cannot open the database"))?;
    conn.busy_timeout(busy_timeout)
        .map_err(sql("busy_timeout"))?;
    Ok(conn)
}

impl Readers {
    pub(super) fn new() -> Readers {
        Readers {
            idle: RwLock::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs `f` on an idle reader, or on a new one.
    pub(super) fn read<T>(
        &self,
        path: &Path,
        busy_timeout: Duration,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let pool = self.idle.read().unwrap_or_else(|e| e.into_inner());
        let taken = lock(&pool).pop();
        let conn = match taken {
            Some(c) => c,
            None => open(path, busy_timeout)?,
        };
        // A reader is only put back after `f` returns normally; one a panic unwinds through
        // is closed (rusqlite resets its statements either way).
        let value = f(&conn);
        let mut idle = lock(&pool);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        } else {
            drop(idle);
            close(conn);
        }
        value
    }

    /// Waits for the reads that run and closes every reader; no read starts until the
    /// guard goes (held through a reconnect).
    pub(super) fn close_all(&self) -> RwLockWriteGuard<'_, Mutex<Vec<Connection>>> {
        let pool = self.idle.write().unwrap_or_else(|e| e.into_inner());
        for c in lock(&pool).drain(..) {
            close(c);
        }
        pool
    }
}

fn lock(pool: &Mutex<Vec<Connection>>) -> MutexGuard<'_, Vec<Connection>> {
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes a reader without a checkpoint (a read-only connection makes none; the database
/// may also have been replaced under it, `bridge.rs`).
fn close(conn: Connection) {
    let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
    drop(conn);
}
