//! Group commit: the one write connection, shared by every write of the handle so that the
//! writes that arrive while a commit is flushing (`synchronous = FULL`: an `fsync` per commit)
//! go into the next transaction together, and share its one commit and `fsync`.
//!
//! **How.** A write takes the connection ([`Writer::lock`]), opens the group's transaction if
//! none is open (`BEGIN IMMEDIATE`), and runs inside a savepoint of its own: a write that
//! fails (`AlreadyExists`, a constraint, a panic) is rolled back to its savepoint and leaves
//! the others' rows alone. It then gives the connection up. Whoever gives it up while no other
//! thread is waiting for it commits the group (so a lone writer commits at once, as before);
//! a group is also committed once it holds [`MAX_GROUP`] writes. Every write waits until its
//! group's `COMMIT` has returned and only then answers: an acknowledged write is durable, and
//! if the commit fails, every write of the group fails with that error (none of them is in
//! the database).
//!
//! Each caller runs its own closure on its own thread (the connection moves between threads
//! under the mutex), so results never cross threads and closures may borrow.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

use super::sql;
use crate::Result;

/// The most writes one transaction takes before it is committed even though more wait.
pub(super) const MAX_GROUP: usize = 256;

/// The write connection and the group being built on it.
pub(super) struct Writer {
    open: Mutex<Open>,
    /// Threads waiting in [`Writer::lock`]: the last one to give the connection up commits.
    queued: AtomicUsize,
    outcomes: Mutex<Outcomes>,
    committed: Condvar,
}

pub(super) struct Open {
    pub(super) conn: Connection,
    /// The group whose transaction is open on `conn`.
    group: Option<Group>,
    /// The id the next group gets (ids grow; groups commit in id order).
    next: u64,
}

struct Group {
    id: u64,
    /// Writes that wait for this group's commit.
    members: usize,
    /// A write's rollback to its savepoint failed: the group must not commit.
    doomed: bool,
}

/// What became of the committed groups.
struct Outcomes {
    /// Every group up to this id has committed or failed.
    finished: u64,
    /// The groups whose commit failed, until each of their writes has seen it.
    failed: Vec<Failed>,
}

struct Failed {
    id: u64,
    code: Option<rusqlite::ffi::Error>,
    message: String,
    unseen: usize,
}

impl Writer {
    pub(super) fn new(conn: Connection) -> Writer {
        Writer {
            open: Mutex::new(Open {
                conn,
                group: None,
                next: 1,
            }),
            queued: AtomicUsize::new(0),
            outcomes: Mutex::new(Outcomes {
                finished: 0,
                failed: Vec::new(),
            }),
            committed: Condvar::new(),
        }
    }

    /// The connection. When the guard goes and no other thread waits for it, the open group
    /// (if any) is committed.
    pub(super) fn lock(&self) -> WriterGuard<'_> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        // A panic while holding the lock leaves no half-done write behind (its savepoint is
        // rolled back on unwinding), so the connection is still usable.
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        self.queued.fetch_sub(1, Ordering::AcqRel);
        WriterGuard {
            writer: self,
            open: Some(open),
        }
    }

    /// Commits (or, if doomed, rolls back) the open group and tells its writes.
    fn finish(&self, open: &mut Open) {
        let Some(group) = open.group.take() else {
            return;
        };
        let result = if group.doomed {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("a write of the group could not be rolled back to its savepoint".into()),
            ))
        } else {
            open.conn.execute_batch("COMMIT")
        };
        if result.is_err() && !open.conn.is_autocommit() {
            let _ = open.conn.execute_batch("ROLLBACK");
        }
        let mut outcomes = self.outcomes();
        outcomes.finished = group.id;
        if let Err(e) = result {
            outcomes.failed.push(Failed {
                id: group.id,
                code: e.sqlite_error().copied(),
                message: e.to_string(),
                unseen: group.members,
            });
        }
        drop(outcomes);
        self.committed.notify_all();
    }

    /// How many threads wait for the connection.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// How many groups have begun.
    #[cfg(test)]
    pub(super) fn groups(&self) -> u64 {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).next - 1
    }

    fn outcomes(&self) -> MutexGuard<'_, Outcomes> {
        self.outcomes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until group `id` has committed; its error if it did not.
    pub(super) fn wait(&self, id: u64) -> Result<()> {
        let mut outcomes = self.outcomes();
        while outcomes.finished < id {
            outcomes = self
                .committed
                .wait(outcomes)
                .unwrap_or_else(|e| e.into_inner());
        }
        let Some(at) = outcomes.failed.iter().position(|f| f.id == id) else {
            return Ok(());
        };
        let failed = &mut outcomes.failed[at];
        failed.unseen -= 1;
        let error = rusqlite::Error::SqliteFailure(
            failed
                .code
                .unwrap_or(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR)),
            Some(failed.message.clone()),
        );
        if failed.unseen == 0 {
            outcomes.failed.remove(at);
        }
        Err(sql("cannot commit")(error))
    }
}

/// The write connection, held; see [`Writer::lock`].
pub(super) struct WriterGuard<'a> {
    writer: &'a Writer,
    /// `None` only inside `drop`.
    open: Option<MutexGuard<'a, Open>>,
}

impl WriterGuard<'_> {
    fn open(&mut self) -> &mut Open {
        self.open.as_mut().expect("held until dropped")
    }

    /// Makes sure a group's transaction is open and counts one more write in it; returns the
    /// group's id, which the write passes to [`Writer::wait`] once it has given the
    /// connection up. A full group is committed first.
    pub(super) fn join(&mut self) -> Result<u64> {
        let writer = self.writer;
        let open = self.open();
        if open.group.as_ref().is_some_and(|g| g.members >= MAX_GROUP) {
            writer.finish(open);
        }
        if open.group.is_none() {
            open.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(sql("cannot begin a write"))?;
            open.group = Some(Group {
                id: open.next,
                members: 0,
                doomed: false,
            });
            open.next += 1;
        }
        let group = open.group.as_mut().expect("just opened");
        group.members += 1;
        Ok(group.id)
    }

    /// Runs `f` inside a savepoint of the open group: kept if `f` succeeds, rolled back if it
    /// fails or panics.
    pub(super) fn savepoint<T>(&mut self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let open = self.open();
        open.conn
            .execute_batch("SAVEPOINT write")
            .map_err(sql("cannot begin a write"))?;
        let mut undo = Undo { open, armed: true };
        let value = f(&undo.open.conn)?;
        undo.open
            .conn
            .execute_batch("RELEASE write")
            .map_err(sql("cannot end a write"))?;
        undo.armed = false;
        Ok(value)
    }

    /// Commits the open group now (and tells its writes), e.g. before the connection is
    /// closed.
    pub(super) fn finish(&mut self) {
        let writer = self.writer;
        writer.finish(self.open());
    }
}

impl std::ops::Deref for WriterGuard<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.open.as_ref().expect("held until dropped").conn
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.open().conn
    }
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        // Another thread waiting for the connection will join the group and commit it (or
        // hand it on); the last one commits.
        if open.group.is_some() && self.writer.queued.load(Ordering::Acquire) == 0 {
            self.writer.finish(&mut open);
        }
    }
}

/// Rolls a write back to its savepoint unless disarmed.
struct Undo<'a> {
    open: &'a mut Open,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let undone = self
            .open
            .conn
            .execute_batch("ROLLBACK TO write; RELEASE write");
        if undone.is_err() {
            if let Some(g) = &mut self.open.group {
                g.doomed = true;
            }
        }
    }
}
