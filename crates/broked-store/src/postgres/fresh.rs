//! How a `PgStore` learns that the database changed, without a round trip per resolve.
//!
//! Every write sets `state.generation` to a new value — a sequence number in the high 32 bits
//! (every write holds the `state` row from this update to its commit, so it follows commit
//! order) and 32 random bits
//! below (so a restore to an older snapshot followed by as many writes repeats a generation
//! some process cached only with probability 2⁻³²) — and, in the same transaction,
//! `pg_notify`s it on the schema's channel `broked_<md5(schema)>`; PostgreSQL delivers the
//! notification to every listening session when the transaction commits.
//!
//! Each store runs one listening connection on its background runtime ([`listen`]). While it
//! is connected and listening, `generation` is a local counter that each notification (and
//! each write of this process) advances — an atomic load, no round trip. The listener also
//! checks the database's generation every [`HEARTBEAT`] on its own connection, so a lost
//! notification or a half-open TCP connection costs at most that long. The moment the
//! listening connection fails, the store stops trusting the counter: every `generation` call
//! asks the database (within [`CHECK_TIMEOUT`]) until the listener is back, and the listener
//! re-reads the generation after its `LISTEN` before it is trusted again.
//!
//! **No value goes back.** A notification arrives a little after its commit, so a row read
//! can be *ahead* of the counter: a resolve reads version 452 while the counter still stands
//! for 450. Another thread, under the same or the next counter value, may read 451 and cache
//! it. So every row read also returns the generation of its snapshot, and one that is newer
//! (by sequence number) than the newest known moves the counter on at once ([`Fresh::advance`]):
//! every later resolve in the process then reads again, from a snapshot at least as new.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// How long a generation check may take before resolve reports the database unreachable.
pub(super) const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// After a check failed (the server unreachable), later checks fail at once for this long
/// with the same reason, so that during an outage one resolve per interval waits for
/// [`CHECK_TIMEOUT`], not every one.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the listener checks the generation on its own connection.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Pause between attempts to listen again.
const RECONNECT: Duration = Duration::from_millis(100);

/// The `UPDATE` of the `state` row that sets a write's generation: the next sequence number
/// and 32 random bits (of a v4 UUID); `RETURNING generation`.
macro_rules! set_generation {
    () => {
        "UPDATE state
        SET generation = ((((generation >> 32) + 1) & 2147483647) << 32)
            | ('x' || left(gen_random_uuid()::text, 8))::bit(32)::bigint
        WHERE id = 1 RETURNING generation"
    };
}

/// The notification of the new generation `g.generation`, sent when the transaction commits.
macro_rules! notify {
    () => {
        "pg_notify('broked_' || md5(current_schema()), g.generation::text)"
    };
}

/// The audit log's head as the last append left it in `meta` (`postgres/audit.rs`,
/// `AUDIT_HEAD`), read — and locked — after the `state` row, so it is the newest committed
/// value even when the statement waited for the lock (a locking read follows the row's
/// updates).
macro_rules! audit_head {
    () => {
        "h AS (SELECT m.value FROM meta m, g WHERE m.name = 'audit_head' FOR UPDATE OF m)"
    };
}

/// A write's generation bump (its first statement under the `state` row): the new
/// generation, the notification, and the audit head (`audit_head`, null if unknown).
pub(super) const BUMP: &str = concat!(
    "WITH g AS (",
    set_generation!(),
    "), ",
    audit_head!(),
    " SELECT g.generation, ",
    notify!(),
    ", (SELECT value FROM h) AS audit_head FROM g"
);

/// [`BUMP`] and the seal counts of the write in one statement: `$1` key ids, `$2` how many
/// seals each; also returns each known key's total (`keys`, `totals`, in key order). The
/// `keys` rows are locked only after the `state` row — they join the bump's result — the
/// order every write takes them in.
pub(super) const BUMP_COUNTING: &str = concat!(
    "WITH g AS (",
    set_generation!(),
    "), ",
    audit_head!(),
    ", s AS (UPDATE keys SET seals = keys.seals + x.n \
     FROM unnest($1::bigint[], $2::bigint[]) AS x (key_id, n), g \
     WHERE keys.key_id = x.key_id RETURNING keys.key_id, keys.seals) \
     SELECT g.generation, ",
    notify!(),
    ", (SELECT value FROM h) AS audit_head, \
     ARRAY(SELECT key_id FROM s ORDER BY key_id) AS keys, \
     ARRAY(SELECT seals FROM s ORDER BY key_id) AS totals FROM g"
);

/// Whether generation `a` was written after `b`: its sequence number is ahead (mod 2³¹).
fn after(a: i64, b: i64) -> bool {
    let seq = |g: i64| ((g >> 32) & 0x7fff_ffff) as u32;
    let ahead = seq(a).wrapping_sub(seq(b)) & 0x7fff_ffff;
    ahead != 0 && ahead < 1 << 30
}

const GENERATION: &str = "SELECT generation FROM state WHERE id = 1";

/// What `PgStore::generation` answers from.
#[derive(Default)]
pub(super) struct Fresh {
    /// True while the listener is connected, listening, and has read the generation since.
    listening: AtomicBool,
    /// Counts the changes seen; only grows.
    counter: AtomicU64,
    /// The newest database generation the counter stands for.
    known: Mutex<Option<i64>>,
    /// When and why the last check from `generation` failed (see [`RETRY_AFTER`]).
    failed: Mutex<Option<(std::time::Instant, String)>>,
    /// The backend process of the listening connection (tests terminate it).
    pub(super) listener_pid: AtomicI32,
    /// Tests: keep the listener down.
    #[cfg(test)]
    pub(super) paused: AtomicBool,
}

impl Fresh {
    /// The counter, if it can be trusted (the listener is up).
    pub(super) fn listening(&self) -> Option<u64> {
        if self.listening.load(Ordering::Acquire) {
            Some(self.counter.load(Ordering::Acquire))
        } else {
            None
        }
    }

    /// The reason of a check that failed less than [`RETRY_AFTER`] ago.
    pub(super) fn recent_failure(&self) -> Option<String> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let (when, reason) = failed.as_ref()?;
        let ago = when.elapsed();
        (ago < RETRY_AFTER).then(|| format!("{reason} (checked {} ms ago)", ago.as_millis()))
    }

    /// Records the outcome of a check: `Some(reason)` if it could not reach the server.
    pub(super) fn checked(&self, failure: Option<String>) {
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) =
            failure.map(|r| (std::time::Instant::now(), r));
    }

    fn changed(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The counter for `current`, the database's generation just read: advanced unless it
    /// is the one the counter stands for. (A current read is the truth even when its
    /// sequence number is behind: the database was restored.)
    pub(super) fn observe(&self, current: i64) -> u64 {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if *known != Some(current) {
            *known = Some(current);
            self.changed()
        } else {
            self.counter.load(Ordering::Acquire)
        }
    }

    /// `seen` came with a notification, a row read or a write of this process: the counter
    /// moves on if it is newer than what the counter stands for. An older one (a
    /// notification that arrives after a read already saw past it) changes nothing.
    pub(super) fn advance(&self, seen: i64) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.is_none_or(|k| after(seen, k)) {
            *known = Some(seen);
            self.changed();
        }
    }

    fn set_listening(&self, on: bool) {
        if !on {
            self.listening.store(false, Ordering::Release);
        }
        self.changed();
        if on {
            self.listening.store(true, Ordering::Release);
        }
    }
}

/// The listener task: listen, and whenever the connection fails, mark the counter untrusted
/// and listen again. Ends when the pool is closed (the store was dropped).
pub(super) async fn listen(pool: PgPool, fresh: std::sync::Arc<Fresh>) {
    loop {
        #[cfg(test)]
        while fresh.paused.load(Ordering::Acquire) {
            tokio::time::sleep(RECONNECT).await;
        }
        let _ = listen_once(&pool, &fresh).await;
        fresh.set_listening(false);
        if pool.is_closed() {
            return;
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// One listening connection, until it fails.
async fn listen_once(pool: &PgPool, fresh: &Fresh) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection must reach us at once, not after a reconnect attempt.
    listener.eager_reconnect(false);
    // Named, so an operator (or a test) can tell it in pg_stat_activity.
    sqlx::query("SET application_name = 'broked-listener'")
        .execute(&mut listener)
        .await?;
    let (pid, channel): (i32, String) =
        sqlx::query_as("SELECT pg_backend_pid(), 'broked_' || md5(current_schema())")
            .fetch_one(&mut listener)
            .await?;
    listener.listen(&channel).await?;
    // Changes before the LISTEN took effect are in this read; later ones are notified.
    let current: i64 = sqlx::query_scalar(GENERATION)
        .fetch_one(&mut listener)
        .await?;
    fresh.observe(current);
    fresh.listener_pid.store(pid, Ordering::Release);
    fresh.set_listening(true);
    loop {
        match tokio::time::timeout(HEARTBEAT, listener.try_recv()).await {
            Ok(Ok(Some(n))) => notified(fresh, n.payload()),
            // The connection was lost.
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_quiet) => {
                let now = tokio::time::timeout(
                    CHECK_TIMEOUT,
                    sqlx::query_scalar::<_, i64>(GENERATION).fetch_one(&mut listener),
                )
                .await;
                let Ok(now) = now else { return Ok(()) };
                let now = now?;
                // Notifications that arrived while the query ran, then the truth.
                while let Some(n) = listener.next_buffered() {
                    notified(fresh, n.payload());
                }
                fresh.observe(now);
            }
        }
    }
}

/// A notification: its payload is the new generation.
fn notified(fresh: &Fresh, payload: &str) {
    match payload.parse() {
        Ok(g) => fresh.advance(g),
        // Not ours, or garbled: count it as a change.
        Err(_) => {
            fresh.changed();
        }
    }
}
