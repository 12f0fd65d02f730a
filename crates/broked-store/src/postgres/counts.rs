//! The connections' counts on PostgreSQL (migration 7; docs/storage.md, "Pages").
//!
//! The triggers on `connections` append deltas to `connection_count_deltas` (one row per type
//! and statement) instead of updating `connection_counts`: an update of one count row per
//! inserted row is quadratic in one transaction, and a count row updated by a write before
//! its commit would be locked before the `state` row — two replicas writing crossing types
//! would deadlock. A page's total is the counts plus the deltas not folded yet, in one
//! snapshot.
//!
//! Each store folds the deltas into the counts in a background task ([`run`]), at most once
//! every [`FOLD_EVERY`], after this process wrote (and when it starts and every
//! [`FOLD_ANYWAY`] ticks, for the deltas of other programs): a transaction of its own,
//! outside every write, so a write's turn under the `state` row — the one thing all
//! replicas' writes wait for — is not longer for it (a fold inside each write's generation
//! bump was tried first; its cost was within the noise of the measurement, docs/BENCHMARKS.md,
//! part 8). The fold locks only delta rows (which writers insert and
//! never lock) and count rows (which only folds touch), deltas first, as the `TRUNCATE`
//! trigger does; one fold at a time across replicas (an advisory lock, skipped when
//! another holds it). It deletes the deltas it sees and adds their sums in one commit, so a
//! total read before sees the deltas, one read after the counts: never both, never neither.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;

/// How often a store may fold.
pub(super) const FOLD_EVERY: Duration = Duration::from_secs(1);
/// Ticks after which a store folds even when it wrote nothing (deltas of the CLI, `psql`).
const FOLD_ANYWAY: u32 = 30;

/// Deletes the deltas this transaction can see and adds their sums to the counts, unless
/// another fold runs (then nothing): whether it folded.
pub(super) async fn fold(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let alone: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('broked.counts.' || current_schema()))",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !alone {
        return Ok(false);
    }
    sqlx::query(
        "WITH f AS (DELETE FROM connection_count_deltas RETURNING conn_type, n) \
         INSERT INTO connection_counts AS c (conn_type, n) \
         SELECT conn_type, sum(n)::bigint FROM f GROUP BY conn_type \
         ON CONFLICT (conn_type) DO UPDATE SET n = c.n + EXCLUDED.n",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The fold task of a store: folds a second after it starts, after `wrote` was set (after
/// every commit of a write) at most every [`FOLD_EVERY`], and every [`FOLD_ANYWAY`] ticks; a
/// failed fold is tried again at the next tick. Ends when the pool is closed.
pub(super) async fn run(pool: PgPool, wrote: Arc<AtomicBool>) {
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(FOLD_EVERY).await;
        if pool.is_closed() {
            return;
        }
        ticks += 1;
        // The first tick folds what was left while no store of this process ran (the CLI's
        // writes, `psql`).
        let due = wrote.swap(false, Ordering::AcqRel) || ticks % FOLD_ANYWAY == 1;
        if due && fold(&pool).await.is_err() {
            wrote.store(true, Ordering::Release);
        }
    }
}
