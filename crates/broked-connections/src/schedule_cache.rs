//! The parsed `extra.rotate_every` and `extra.ssh_tunnel` of each connection, kept by row
//! version (issues 19, 20), so that the schedule's scan, the list and the check of a bastion's
//! users open a row's sealed extra only when the row changed. A leaf:
//! `rotation_schedule.rs` fills and reads it, `connections.rs` holds one per handle.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use broked_store::StoredConnection;

/// `extra.rotate_every` of a connection, parsed: `None` without one, the text and the
/// interval, or why it is invalid.
pub(crate) type Schedule = Option<Result<(String, Duration), String>>;

/// What a scan needs of a row's sealed extra: its [`Schedule`] and the bastions its
/// `ssh_tunnel` names (empty without one, or when it is not a valid list).
pub(crate) type Facts = (Schedule, Vec<String>);

/// Each connection's parsed [`Facts`], kept with the version and write time of the row it
/// was read from (a purged history may number versions from 1 again), so that a scan opens
/// only the rows that changed since. Rows without extra are not kept (nothing to open).
///
/// Most rows with an extra have neither a schedule nor a tunnel: of those only a 96-bit
/// fingerprint of (conn_id, version, write time) is kept, 16 bytes — a million connections hold ≈ 36 MB here instead
/// of ≈ 190 MB with their conn_ids and times (issue 19, "memory of the server bounded"). The
/// fingerprint is keyed with this process's random keys, so nobody can choose rows that
/// collide; a collision (≈ 2⁻⁵⁷ for a million rows) would only hide a changed row's new
/// schedule until it changes again.
#[derive(Default)]
pub(crate) struct ScheduleCache {
    entries: Mutex<Entries>,
    keys: Keys,
    /// Rows whose extra was opened to read the schedule: a scan of unchanged rows adds none.
    opens: AtomicU64,
    /// The number of the scan running or last begun ([`ScheduleCache::begin_scan`]).
    scan: AtomicU64,
    /// What the last whole scan found, with the store's generation before it began.
    scanned: Mutex<Option<Scanned>>,
}

/// The rows a scan reported — a schedule, a rotation record or a pending rotation — each
/// with its schedule and whether a rotation was pending (few, whatever the number of
/// connections); valid while the store's generation has not moved.
pub(crate) type Scanned = (u64, Vec<(String, Schedule, bool)>);

#[derive(Default)]
struct Entries {
    /// Rows with a `rotate_every` (valid or not) or an `ssh_tunnel`, by conn_id.
    noted: HashMap<String, Cached>,
    /// Rows whose extra has neither, by fingerprint: the scan that last met each.
    plain: HashMap<Fingerprint, u32, BuildHasherDefault<Spread>>,
}

struct Cached {
    version: i64,
    updated_at: String,
    schedule: Schedule,
    /// The bastions its `extra.ssh_tunnel` names (`tunnel.rs`).
    tunnel: Vec<String>,
    /// The scan that last met the connection (a lookup that found it, or the put).
    seen: u64,
}

/// A row's (conn_id, version, updated_at), hashed with two keys of this process.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Fingerprint(u64, u32);

/// The hash keys of the fingerprints, drawn when the cache is made.
#[derive(Default)]
struct Keys(RandomState, RandomState);

impl Keys {
    fn of(&self, conn_id: &str, version: i64, updated_at: &str) -> Fingerprint {
        let row = (conn_id, version, updated_at);
        Fingerprint(self.0.hash_one(row), self.1.hash_one(row) as u32)
    }
}

/// The map's hasher for fingerprints, which are already random: their first word as is.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    fn write_u32(&mut self, _: u32) {}
}

impl ScheduleCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schedules of `rows` (conn_id, version, updated_at) that are kept, under one lock.
    pub(crate) fn lookup<'r>(
        &self,
        rows: impl Iterator<Item = (&'r str, i64, &'r str)>,
    ) -> Vec<Option<Facts>> {
        let scan = self.scan.load(Ordering::Relaxed);
        let mut entries = self.entries();
        rows.map(|(id, version, updated_at)| {
            let fingerprint = self.keys.of(id, version, updated_at);
            if let Some(seen) = entries.plain.get_mut(&fingerprint) {
                *seen = scan as u32;
                return Some((None, Vec::new()));
            }
            entries
                .noted
                .get_mut(id)
                .filter(|c| c.version == version && c.updated_at == updated_at)
                .map(|c| {
                    c.seen = scan;
                    (c.schedule.clone(), c.tunnel.clone())
                })
        })
        .collect()
    }

    pub(crate) fn put(&self, row: &StoredConnection, (schedule, tunnel): &Facts) {
        let scan = self.scan.load(Ordering::Relaxed);
        let mut entries = self.entries();
        if schedule.is_none() && tunnel.is_empty() {
            // A schedule it had is gone with this version.
            entries.noted.remove(&row.conn_id);
            let fingerprint = self.keys.of(&row.conn_id, row.version, &row.updated_at);
            entries.plain.insert(fingerprint, scan as u32);
            return;
        }
        entries.noted.insert(
            row.conn_id.clone(),
            Cached {
                version: row.version,
                updated_at: row.updated_at.clone(),
                schedule: schedule.clone(),
                tunnel: tunnel.clone(),
                seen: scan,
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
        let mut entries = self.entries();
        entries.noted.retain(|_, c| c.seen >= scan);
        // Scan numbers wrap at 2³² here: after four billion scans (four thousand years
        // at one every 30 s) a row may be kept one scan too long.
        let scan = scan as u32;
        entries
            .plain
            .retain(|_, seen| seen.wrapping_sub(scan) < u32::MAX / 2);
    }

    /// What the last whole scan reported, if the store is still at `generation`.
    pub(crate) fn scanned(&self, generation: u64) -> Option<Vec<(String, Schedule, bool)>> {
        let scanned = self.scanned.lock().unwrap_or_else(|e| e.into_inner());
        scanned
            .as_ref()
            .filter(|(g, _)| *g == generation)
            .map(|(_, rows)| rows.clone())
    }

    /// Keeps what a whole scan begun at `generation` reported.
    pub(crate) fn keep_scanned(&self, scanned: Scanned) {
        *self.scanned.lock().unwrap_or_else(|e| e.into_inner()) = Some(scanned);
    }

    /// Counts a row opened to read its schedule.
    pub(crate) fn count_open(&self) {
        self.opens.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a schedule is kept for `conn_id`.
    #[cfg(test)]
    pub(crate) fn holds(&self, conn_id: &str) -> bool {
        self.entries().noted.contains_key(conn_id)
    }

    /// Rows kept, with a schedule or without.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let entries = self.entries();
        entries.noted.len() + entries.plain.len()
    }

    /// Whole scans begun.
    #[cfg(test)]
    pub(crate) fn scans(&self) -> u64 {
        self.scan.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }
}
