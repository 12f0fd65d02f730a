//! The parsed `extra.rotate_every` of each connection, kept by row version (issue 20), so that
//! the schedule's scan and the list open a row's sealed extra only when the row changed. A leaf:
//! `rotation_schedule.rs` fills and reads it, `connections.rs` holds one per handle.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use broked_store::StoredConnection;

/// `extra.rotate_every` of a connection, parsed: `None` without one, the text and the
/// interval, or why it is invalid.
pub(crate) type Schedule = Option<Result<(String, Duration), String>>;

/// Each connection's parsed [`Schedule`], kept with the version and write time of the row it
/// was read from (a purged history may number versions from 1 again), so that a scan opens
/// only the rows that changed since. Rows without extra are not kept (nothing to open).
#[derive(Default)]
pub(crate) struct ScheduleCache {
    entries: Mutex<HashMap<String, Cached>>,
    /// Rows whose extra was opened to read the schedule: a scan of unchanged rows adds none.
    opens: AtomicU64,
    /// The number of the scan running or last begun ([`ScheduleCache::begin_scan`]).
    scan: AtomicU64,
}

struct Cached {
    version: i64,
    updated_at: String,
    schedule: Schedule,
    /// The scan that last met the connection (a lookup that found it, or the put).
    seen: u64,
}

impl ScheduleCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cached>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schedules of `rows` (conn_id, version, updated_at) that are kept, under one lock.
    pub(crate) fn lookup<'r>(
        &self,
        rows: impl Iterator<Item = (&'r str, i64, &'r str)>,
    ) -> Vec<Option<Schedule>> {
        let scan = self.scan.load(Ordering::Relaxed);
        let mut entries = self.entries();
        rows.map(|(id, version, updated_at)| {
            entries
                .get_mut(id)
                .filter(|c| c.version == version && c.updated_at == updated_at)
                .map(|c| {
                    c.seen = scan;
                    c.schedule.clone()
                })
        })
        .collect()
    }

    pub(crate) fn put(&self, row: &StoredConnection, schedule: &Schedule) {
        self.entries().insert(
            row.conn_id.clone(),
            Cached {
                version: row.version,
                updated_at: row.updated_at.clone(),
                schedule: schedule.clone(),
                seen: self.scan.load(Ordering::Relaxed),
            },
        );
    }

    /// Begins a scan of every connection (in pages): returns its number for
    /// [`ScheduleCache::end_scan`].
    pub(crate) fn begin_scan(&self) -> u64 {
        self.scan.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Forgets the connections that scan `scan` (and none after it) did not meet: deleted,
    /// or without an extra now. A list or a later scan meanwhile only keeps more.
    pub(crate) fn end_scan(&self, scan: u64) {
        self.entries().retain(|_, c| c.seen >= scan);
    }

    /// Counts a row opened to read its schedule.
    pub(crate) fn count_open(&self) {
        self.opens.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn holds(&self, conn_id: &str) -> bool {
        self.entries().contains_key(conn_id)
    }

    #[cfg(test)]
    pub(crate) fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }
}
