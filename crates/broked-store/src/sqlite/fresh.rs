//! Has the database changed since the last look? The resolve cache asks on every call, so the
//! answer must be cheap — and it must never be a wrong "no" (issue 14).
//!
//! **What is read.** The WAL-index header at the start of `{db}-shm`: two 48-byte copies that a
//! committing writer updates (copy 2, then copy 1) after its frames are in the WAL, so every
//! commit any process can see has reached it. We keep the *whole* header — change counter,
//! `mxFrame`, the running frame checksum, both salts and the header's own checksum — and call
//! the database unchanged only when all 48 bytes are identical, both copies agree and the
//! checksum holds. A header rebuilt by recovery (a writer died between the two copies) has its
//! change counter back at zero but the same or a later `mxFrame`/checksum, and a WAL restart
//! draws new random salts, so no later state repeats an earlier header (up to a 2⁻³² salt
//! collision). Copies that differ or a bad checksum mean "changed": the caller reads through
//! SQLite, which runs recovery itself.
//!
//! **Locks.** POSIX record locks belong to the process and the inode: closing *any* descriptor
//! of `-shm` in this process drops the locks SQLite holds on it (its DMS lock among them), after
//! which another process rebuilds the file and every generation repeats (SQLite's "How To
//! Corrupt", §2.2). So this process opens each `-shm` inode once ([`shm_handle`]), shares that
//! handle between stores, and closes it only when no store of this process uses the inode
//! (every `SqliteStore` closes its SQLite connection before its handle).
//!
//! **Replaced files.** A database or `-shm` renamed over, deleted or rebuilt while this process
//! runs leaves SQLite reading the old inode. Every check compares the device and inode the
//! paths name now with those the connection opened; on a difference the store reconnects (when
//! no other store of this process shares the old files) or fails with
//! [`StoreError::Replaced`](crate::StoreError::Replaced).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// A file's identity: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// What `path` names now.
pub(super) fn file_id(path: &Path) -> io::Result<FileId> {
    std::fs::metadata(path).map(|m| FileId::of(&m))
}

/// The `-shm` handles this process holds, one per inode. An entry whose stores are all gone
/// is dead (its `Weak` no longer upgrades) and its descriptor closed.
static SHM_HANDLES: Mutex<Vec<(FileId, Weak<File>)>> = Mutex::new(Vec::new());

/// This process's read-only handle on the `-shm` file at `path` (opened if no store of this
/// process holds one for that inode), with the inode it is for.
pub(super) fn shm_handle(path: &Path) -> io::Result<(FileId, Arc<File>)> {
    let mut handles = SHM_HANDLES.lock().unwrap_or_else(|e| e.into_inner());
    handles.retain(|(_, h)| h.strong_count() > 0);
    let live = |handles: &[(FileId, Weak<File>)], id: FileId| {
        handles
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, h)| h.upgrade())
    };
    let id = file_id(path)?;
    if let Some(h) = live(&handles, id) {
        return Ok((id, h));
    }
    let file = File::open(path)?;
    let opened = FileId::of(&file.metadata()?);
    if let Some(h) = live(&handles, opened) {
        // The path changed between stat and open, to an inode a store of this process
        // already holds: closing this second descriptor would drop that store's locks.
        std::mem::forget(file);
        return Ok((opened, h));
    }
    let h = Arc::new(file);
    handles.push((opened, Arc::downgrade(&h)));
    Ok((opened, h))
}

/// Size of one copy of the WAL-index header.
pub(super) const HEADER: usize = 48;

/// The WAL-index header, if both copies agree, it is initialised and its checksum holds;
/// `None` while a writer is between the two copies, after one died there, or before the
/// index exists.
pub(super) fn read_header(shm: &File) -> io::Result<Option<[u8; HEADER]>> {
    let mut both = [0u8; 2 * HEADER];
    match shm.read_exact_at(&mut both, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (first, second) = both.split_at(HEADER);
    // isInit (byte 12) is 1 once the header is valid.
    if first != second || first[12] != 1 {
        return Ok(None);
    }
    let word =
        |at: usize| u32::from_ne_bytes([first[at], first[at + 1], first[at + 2], first[at + 3]]);
    // aCksum (bytes 40..48): SQLite's walChecksumBytes over bytes 0..40, native byte order.
    let (mut s1, mut s2) = (0u32, 0u32);
    for at in (0..40).step_by(8) {
        s1 = s1.wrapping_add(word(at)).wrapping_add(s2);
        s2 = s2.wrapping_add(word(at + 4)).wrapping_add(s1);
    }
    if (s1, s2) != (word(40), word(44)) {
        return Ok(None);
    }
    let mut header = [0u8; HEADER];
    header.copy_from_slice(first);
    Ok(Some(header))
}

/// A store's reference to this process's `-shm` handle: the `Arc<File>` inside is shared by
/// the stores on that inode, its count is theirs.
pub(super) struct StoreShm(pub(super) Arc<File>);

impl std::ops::Deref for StoreShm {
    type Target = File;
    fn deref(&self) -> &File {
        &self.0
    }
}

/// What the store's connection has open.
pub(super) struct Watch {
    pub(super) db: FileId,
    pub(super) shm: FileId,
    /// Dropped only after the SQLite connection that used it is closed. The inner `Arc` is
    /// shared by the stores of this process on that inode (its count is theirs:
    /// [`SqliteStore::reconnect`](super::SqliteStore::reconnect)); the outer one is this
    /// store's, cloned by a check that reads the header outside the lock.
    pub(super) handle: Arc<StoreShm>,
    /// The change count of the database's directory ([`dirs`]), `None`: `stat` every time.
    pub(super) dir: Option<Arc<std::sync::atomic::AtomicU64>>,
    /// The count at which `db` and `shm` were last found at their paths.
    pub(super) verified: u64,
}

#[cfg(not(target_os = "linux"))]
pub(super) mod dirs {
    pub(in crate::sqlite) const LOST: u64 = u64::MAX;
    pub(in crate::sqlite) fn watch(
        _db: &std::path::Path,
    ) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        None
    }
    pub(in crate::sqlite) fn poll() {}
}

/// The store's view of its files: `None` between closing a connection and opening the next.
pub(super) struct Fresh {
    pub(super) watch: Option<Watch>,
    /// The header behind `generation`; `None` forces the next look to count a change.
    pub(super) seen: Option<[u8; HEADER]>,
    /// Counts every change seen; never repeats, never goes back.
    pub(super) generation: u64,
}

impl Fresh {
    /// Counts a change unless `header` is the one seen last.
    pub(super) fn observe(&mut self, header: Option<[u8; HEADER]>) -> u64 {
        if header.is_none() || header != self.seen {
            self.generation += 1;
            self.seen = header;
        }
        self.generation
    }
}

/// Whether the files at a database's paths may have been replaced, without a `stat` of each
/// on every call: one inotify instance for the whole process watches the directory of every
/// open database for entries created, deleted or renamed (the only ways to put another file
/// under a path), and counts them per directory. A check reads the pending events (one
/// non-blocking `read`, which sees every rename that finished before it) and compares the
/// directory's count with the one it last verified; only on a difference does it `stat`.
/// Where inotify is unavailable, or the path goes through a symbolic link (whose target
/// directory is not watched), every check `stat`s.
#[cfg(target_os = "linux")]
pub(super) mod dirs {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, OnceLock, Weak};

    use nix::errno::Errno;
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

    /// A directory's count once its watch is gone (deleted, moved, or an overflow): `stat`
    /// from then on.
    pub(in crate::sqlite) const LOST: u64 = u64::MAX;

    struct Watcher {
        inotify: Arc<Inotify>,
        dirs: Vec<(WatchDescriptor, PathBuf, Weak<AtomicU64>)>,
    }

    /// `None` until first used; stays `None` if inotify cannot be had.
    static WATCHER: Mutex<Option<Watcher>> = Mutex::new(None);

    /// The watcher's instance, for [`poll`]'s first look without the lock (set with the
    /// watcher, once).
    static INSTANCE: OnceLock<Arc<Inotify>> = OnceLock::new();

    /// Drains running ([`drain`]): the events one has read may not be counted yet, so a
    /// poll that finds the queue empty meanwhile waits for it under the lock.
    static DRAINING: AtomicUsize = AtomicUsize::new(0);

    /// The change count of the directory holding `db`, or `None` (then `stat` every time).
    pub(in crate::sqlite) fn watch(db: &Path) -> Option<Arc<AtomicU64>> {
        let absolute = std::path::absolute(db).ok()?;
        if std::fs::canonicalize(db).ok()? != absolute {
            return None;
        }
        let dir = absolute.parent()?.to_owned();
        let mut guard = WATCHER.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let inotify =
                Arc::new(Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?);
            let _ = INSTANCE.set(inotify.clone());
            *guard = Some(Watcher {
                inotify,
                dirs: Vec::new(),
            });
        }
        let w = guard.as_mut()?;
        drain(w);
        if let Some(count) = w
            .dirs
            .iter()
            .find(|(_, d, _)| *d == dir)
            .and_then(|(_, _, c)| c.upgrade())
            .filter(|c| c.load(Ordering::Acquire) != LOST)
        {
            return Some(count);
        }
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        let wd = w.inotify.add_watch(&dir, mask).ok()?;
        let count = Arc::new(AtomicU64::new(0));
        // One watch descriptor per directory: a second add_watch returns the same one.
        w.dirs
            .retain(|(d, path, c)| *d != wd && *path != dir && c.strong_count() > 0);
        w.dirs.push((wd, dir, Arc::downgrade(&count)));
        Some(count)
    }

    /// Reads every pending event and counts it for its directory: when it returns, every
    /// event queued before it was called is counted.
    ///
    /// The common case — nothing pending, `read` fails with EAGAIN at once (a zero length
    /// buffer is EINVAL when an event is waiting) — takes no lock: every read and token
    /// check of the server polls, and two workers polling under one lock queued on it
    /// (issue 19). An empty queue is only trusted when no drain runs: a drain may have read
    /// an event before this poll and not counted it yet (it counts `DRAINING` up before it
    /// reads and down after it counted, so either this load sees it running, or its counts
    /// are visible).
    pub(in crate::sqlite) fn poll() {
        let Some(inotify) = INSTANCE.get() else {
            return;
        };
        if nix::unistd::read(inotify.as_ref(), &mut []) == Err(Errno::EAGAIN)
            && DRAINING.load(Ordering::SeqCst) == 0
        {
            return;
        }
        let mut guard = WATCHER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = guard.as_mut() {
            drain(w);
        }
    }

    fn drain(w: &mut Watcher) {
        DRAINING.fetch_add(1, Ordering::SeqCst);
        read_all(w);
        DRAINING.fetch_sub(1, Ordering::SeqCst);
    }

    fn read_all(w: &mut Watcher) {
        loop {
            match w.inotify.read_events() {
                Ok(events) if !events.is_empty() => {
                    for e in events {
                        let lost = e.mask.intersects(
                            AddWatchFlags::IN_Q_OVERFLOW
                                | AddWatchFlags::IN_IGNORED
                                | AddWatchFlags::IN_DELETE_SELF
                                | AddWatchFlags::IN_MOVE_SELF,
                        );
                        for (wd, _, count) in &w.dirs {
                            if *wd != e.wd && !e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                                continue;
                            }
                            if let Some(count) = count.upgrade() {
                                if lost {
                                    count.store(LOST, Ordering::Release);
                                } else {
                                    let _ = count.fetch_update(
                                        Ordering::AcqRel,
                                        Ordering::Acquire,
                                        |n| (n != LOST).then_some(n + 1),
                                    );
                                }
                            }
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                // EAGAIN: drained. Any other error: the instance is unusable, so every
                // directory is lost (stat from now on).
                Ok(_) | Err(Errno::EAGAIN) => return,
                Err(_) => {
                    for (_, _, count) in &w.dirs {
                        if let Some(count) = count.upgrade() {
                            count.store(LOST, Ordering::Release);
                        }
                    }
                    return;
                }
            }
        }
    }
}
