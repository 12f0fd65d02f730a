//! How a `PgStore` learns that the database changed, without a round trip per resolve.
//!
//! Every write sets `state.generation` to a fresh random number (so a restore to an older
//! snapshot followed by more writes never repeats a generation some process cached) and, in
//! the same transaction, `pg_notify`s the schema's channel `broked_<md5(schema)>`; PostgreSQL
//! delivers the notification to every listening session when the transaction commits.
//!
//! Each store runs one listening connection on its background runtime ([`listen`]). While it
//! is connected and listening, `generation` is a local counter that each notification (and
//! each write of this process) advances — an atomic load, no round trip. The listener also
//! checks the database's generation every [`HEARTBEAT`] on its own connection, so a lost
//! notification or a half-open TCP connection costs at most that long. The moment the
//! listening connection fails, the store stops trusting the counter: every `generation` call
//! asks the database (within [`CHECK_TIMEOUT`]) until the listener is back, and the listener
//! re-reads the generation after its `LISTEN` before it is trusted again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// How long a generation check may take before resolve reports the database unreachable.
pub(super) const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the listener checks the generation on its own connection.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Pause between attempts to listen again.
const RECONNECT: Duration = Duration::from_millis(100);

/// A write's last statement: a random 64-bit generation (60 random bits of a v4 UUID), and
/// the notification, sent when the transaction commits.
pub(super) const BUMP: &str = "WITH g AS (
        UPDATE state
        SET generation = ('x' || substr(translate(gen_random_uuid()::text, '-', ''), 1, 16))::bit(64)::bigint
        WHERE id = 1 RETURNING generation
     )
     SELECT pg_notify('broked_' || md5(current_schema()), generation::text) FROM g";

const GENERATION: &str = "SELECT generation FROM state WHERE id = 1";

/// What `PgStore::generation` answers from.
#[derive(Default)]
pub(super) struct Fresh {
    /// True while the listener is connected, listening, and has read the generation since.
    listening: AtomicBool,
    /// Counts the changes seen; only grows.
    counter: AtomicU64,
    /// The database's generation last read while not listening (`None` after every change
    /// of mode, so the first read counts as a change).
    last: Mutex<Option<i64>>,
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

    /// Something changed (a notification, or a write of this process).
    pub(super) fn changed(&self) {
        self.counter.fetch_add(1, Ordering::AcqRel);
    }

    /// The counter for a generation `db` just read from the database: advanced unless `db`
    /// is the one read last.
    pub(super) fn observe(&self, db: i64) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if *last != Some(db) {
            *last = Some(db);
            self.counter.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.counter.load(Ordering::Acquire)
        }
    }

    fn set_listening(&self, on: bool) {
        if !on {
            self.listening.store(false, Ordering::Release);
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
    let (pid, channel): (i32, String) =
        sqlx::query_as("SELECT pg_backend_pid(), 'broked_' || md5(current_schema())")
            .fetch_one(&mut listener)
            .await?;
    listener.listen(&channel).await?;
    // Changes before the LISTEN took effect are in this read; later ones are notified.
    let mut known: i64 = sqlx::query_scalar(GENERATION)
        .fetch_one(&mut listener)
        .await?;
    fresh.listener_pid.store(pid, Ordering::Release);
    fresh.set_listening(true);
    loop {
        match tokio::time::timeout(HEARTBEAT, listener.try_recv()).await {
            Ok(Ok(Some(n))) => {
                // The payload is the new generation: the heartbeat compares with it.
                if let Ok(g) = n.payload().parse() {
                    known = g;
                }
                fresh.changed();
            }
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
                // Notifications that arrived while the query ran.
                while let Some(n) = listener.next_buffered() {
                    if let Ok(g) = n.payload().parse() {
                        known = g;
                    }
                    fresh.changed();
                }
                if now != known {
                    known = now;
                    fresh.changed();
                }
            }
        }
    }
}
