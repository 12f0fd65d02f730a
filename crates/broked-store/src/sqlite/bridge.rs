//! The connections behind a store: every call goes through [`SqliteStore::read`] (a pooled
//! read-only connection, `pool.rs`) or [`SqliteStore::write`] (the one writer, grouped
//! commits, `group.rs`), which first make sure the connections are on the files the paths
//! name now (`fresh.rs`), reconnecting when they were replaced.

use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::config::DbConfig;

use super::fresh::{self, Fresh, Watch};
use super::group::WriterGuard;
use super::{SqliteStore, connect, sql};
use crate::{Logged, Result, StoreError, WriteLog};

impl SqliteStore {
    /// The write connection (whose open group of writes, if any, is committed when the guard
    /// goes and no other write waits).
    pub(super) fn lock(&self) -> WriterGuard<'_> {
        self.writer.lock()
    }

    pub(super) fn fresh_lock(&self) -> std::sync::MutexGuard<'_, Fresh> {
        self.fresh.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    }

    /// The files the paths name now, with this process's handle on the `-shm`.
    pub(super) fn watch(&self) -> Result<Watch> {
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
            handle: Arc::new(fresh::StoreShm(handle)),
            dir,
            verified,
        })
    }

    /// The `-shm` handle of the connections, if they are on the files the paths name now;
    /// `None`: reconnect ([`SqliteStore::reconnect`] checks again under its locks). One poll
    /// of the directory watch, and `stat`s only when something in the directory was
    /// created, deleted or renamed since they last matched ([`fresh::dirs`]).
    ///
    /// The lock on [`Fresh`] is held only to copy what the check needs and to record its
    /// result, never across a system call: every read and every token check of the server
    /// makes this check, and with the syscalls under the lock the async workers queued on it
    /// (issue 19: a futex wait and a context switch per request).
    pub(super) fn current_handle(&self) -> Result<Option<Arc<fresh::StoreShm>>> {
        let (handle, dir, verified) = {
            let fresh = self.fresh_lock();
            let Some(w) = &fresh.watch else {
                return Ok(None);
            };
            (w.handle.clone(), w.dir.clone(), w.verified)
        };
        // The directory's count first, before the stats: a file replaced after them is
        // counted.
        let count = match &dir {
            None => fresh::dirs::LOST,
            Some(count) => {
                fresh::dirs::poll();
                let now = count.load(std::sync::atomic::Ordering::Acquire);
                if now != fresh::dirs::LOST && now == verified {
                    return Ok(Some(handle));
                }
                now
            }
        };
        let db = fresh::file_id(&self.path).map_err(self.io(&self.path))?;
        let shm = fresh::file_id(&self.shm_path).ok();
        let mut fresh = self.fresh_lock();
        match &mut fresh.watch {
            // Still the watch the handle came from (no reconnect meanwhile).
            Some(w) if Arc::ptr_eq(&w.handle, &handle) => {
                if db == w.db && shm == Some(w.shm) {
                    w.verified = count;
                    Ok(Some(handle))
                } else {
                    Ok(None)
                }
            }
            _ => Ok(None),
        }
    }

    /// The generation ([`crate::Store::generation`]): the WAL-index header, read from this
    /// process's handle on the `-shm` once the connections are known to be on the current
    /// files, counted by [`Fresh::observe`]. The header is read outside the lock; two looks
    /// that record their headers in the other order only count a change more (a header
    /// never comes back, `fresh.rs`), never one less.
    pub(super) fn look(&self) -> Result<u64> {
        loop {
            if let Some(handle) = self.current_handle()? {
                let header = fresh::read_header(&handle).map_err(self.io(&self.shm_path))?;
                return Ok(self.fresh_lock().observe(header));
            }
            self.reconnect()?;
        }
    }

    /// Whether the paths still name the files the connection has open (`false` also when
    /// the `-shm` is gone); an unreadable database path is an error.
    pub(super) fn same_files(&self, watch: &Watch) -> Result<bool> {
        let db = fresh::file_id(&self.path).map_err(self.io(&self.path))?;
        Ok(db == watch.db && fresh::file_id(&self.shm_path).ok() == Some(watch.shm))
    }

    /// Makes sure the connection is on the files the paths name now, reconnecting if the
    /// database or its `-shm` was replaced. Called before every statement.
    pub(super) fn ensure_current(&self) -> Result<()> {
        if self.current_handle()?.is_some() {
            return Ok(());
        }
        self.reconnect()
    }

    /// Closes the connections and opens the database the path names now — unless another
    /// store of this process still uses the old files: its SQLite connection shares our
    /// locks and WAL index, and reopening under it could hand out its stale pages.
    #[cold]
    pub(super) fn reconnect(&self) -> Result<()> {
        let mut conn = self.lock();
        // The writes already done in the open group were made on the old file; they end as
        // they would have without the replacement.
        conn.finish();
        // Every reader is closed (waiting for running reads) before the handle may go, and
        // none opens until the new connection is in place.
        let _readers = self.readers.close_all();
        let mut fresh = self.fresh_lock();
        if let Some(w) = &fresh.watch {
            if self.same_files(w)? {
                return Ok(());
            }
            // Other stores of this process on these files (a check of this store holding
            // its handle for a moment counts on the outer `Arc`, not here).
            if Arc::strong_count(&w.handle.0) > 1 {
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

    /// Runs `f` as one write: in a savepoint of the writer's open transaction, committed
    /// together with the writes that arrived meanwhile (`group.rs`); bumps the generation if
    /// `f` says it wrote. Returns once the commit is durable; a failed `f` leaves nothing.
    pub(super) fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<(T, bool)>) -> Result<T> {
        self.ensure_current()?;
        let mut conn = self.lock();
        let group = conn.join()?;
        let result = conn.savepoint(|c| {
            let (value, wrote) = f(c)?;
            if wrote {
                c.prepare_cached("UPDATE state SET generation = generation + 1 WHERE id = 1")
                    .and_then(|mut s| s.execute([]))
                    .map_err(sql("generation"))?;
            }
            Ok(value)
        });
        drop(conn);
        self.writer.wait(group)?;
        result
    }

    /// [`SqliteStore::write`] carrying `log`: if `f` says it wrote, the seals are counted and
    /// the audit records appended in the same savepoint — they commit with the change, in its
    /// group, or not at all.
    pub(super) fn write_logged<T>(
        &self,
        log: &WriteLog,
        f: impl FnOnce(&Connection) -> Result<(T, bool)>,
    ) -> Result<(T, Logged)> {
        self.write(|tx| {
            let (value, wrote) = f(tx)?;
            if !wrote {
                return Ok(((value, Logged::default()), false));
            }
            let mut logged = Logged {
                applied: true,
                ..Logged::default()
            };
            for &(key_id, n) in &log.seals {
                if let Some(total) = super::queries::add_seals(tx, key_id, n)? {
                    logged.seals.push((key_id, total));
                }
            }
            if let Some((records, mac)) = log.records() {
                logged.audit = super::audit::append_in(tx, records, mac)?;
            }
            Ok(((value, logged), true))
        })
    }

    /// Runs `f` on a read-only connection: it sees every write acknowledged before.
    pub(super) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.ensure_current()?;
        self.readers.read(&self.path, self.busy_timeout, f)
    }
}
