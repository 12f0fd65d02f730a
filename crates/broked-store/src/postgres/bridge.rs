//! The thread bridge (see the module docs of `postgres`): jobs sent to a background thread
//! that owns the runtime and the pool, the write transaction every mutation runs in, and the
//! mapping of sqlx errors onto [`StoreError`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;

use super::fresh::{self, Fresh};
use super::{ATTEMPTS, BUSY_TIMEOUT, PgStore};
use crate::{Result, StoreError};

pub(super) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub(super) type Job = Box<dyn FnOnce(Ctx) -> BoxFut<'static, ()> + Send>;

/// What a job gets: the pool, and the address to name in errors.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) pool: PgPool,
    pub(super) server: Arc<str>,
    /// What `generation` answers from (see `postgres/fresh.rs`).
    pub(super) fresh: Arc<Fresh>,
    /// Held by every running job and lock holder; the background thread closes the pool
    /// once the store is dropped and every clone is gone.
    pub(super) _alive: mpsc::Sender<()>,
}

impl PgStore {
    /// Runs `job` on the background runtime and waits for its result.
    pub(super) fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(Ctx) -> BoxFut<'static, Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.call_within(None, job)
    }

    /// [`PgStore::call`], abandoned after `times` × the store's timeout plus `slack` when
    /// given: a statement whose answer never comes — the network gone silent, no refusal and
    /// no reset, so neither the pool's acquire timeout nor `statement_timeout` fires — is
    /// dropped with its connection and reported as [`StoreError::Connect`].
    fn call_within<T: Send + 'static>(
        &self,
        limit: Option<(u32, Duration)>,
        job: impl FnOnce(Ctx) -> BoxFut<'static, Result<T>> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let boxed: Job = Box::new(move |ctx| {
            Box::pin(async move {
                let Some((times, slack)) = limit else {
                    let _ = tx.send(job(ctx).await);
                    return;
                };
                let limit = ctx.pool.options().get_acquire_timeout() * times + slack;
                let server = ctx.server.clone();
                let out = tokio::time::timeout(limit, job(ctx))
                    .await
                    .unwrap_or_else(|_| {
                        Err(StoreError::Connect {
                            server: server.to_string(),
                            reason: format!(
                                "no answer from the database within {} ms",
                                limit.as_millis()
                            ),
                        })
                    });
                let _ = tx.send(out);
            })
        });
        self.jobs.send(boxed).map_err(|_| gone())?;
        // A job that panicked dropped its sender: that is an error, not a hang.
        rx.recv().map_err(|_| gone())?
    }

    pub(super) fn read<A, T>(&self, args: A, op: ReadOp<A, T>) -> Result<T>
    where
        A: Send + Sync + 'static,
        T: Send + 'static,
    {
        // The pool's wait, one statement, and some slack.
        self.call_within(Some((2, Duration::from_secs(1))), move |ctx| {
            Box::pin(async move { op(&ctx, &args).await })
        })
    }

    pub(super) fn write<A, T>(&self, args: A, op: WriteOp<A, T>) -> Result<T>
    where
        A: Send + Sync + 'static,
        T: Send + 'static,
    {
        // The pool's wait, the writers' queue, several statements: more room.
        self.call_within(Some((3, Duration::from_secs(2))), move |ctx| {
            Box::pin(async move { write_tx(&ctx, &args, op).await })
        })
    }
}

/// The background thread's loop: every job becomes a task; when the store is dropped, wait
/// for running jobs and held locks, then close the pool.
pub(super) async fn serve(
    pool: PgPool,
    server: Arc<str>,
    fresh: Arc<Fresh>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let (alive, mut all_done) = mpsc::channel::<()>(1);
    let listener = tokio::spawn(fresh::listen(pool.clone(), fresh.clone()));
    let ctx = Ctx {
        pool: pool.clone(),
        server,
        fresh,
        _alive: alive,
    };
    while let Some(job) = jobs.recv().await {
        tokio::spawn(job(ctx.clone()));
    }
    drop(ctx);
    listener.abort();
    let _ = listener.await;
    let _ = all_done.recv().await;
    pool.close().await;
}

pub(super) fn gone() -> StoreError {
    StoreError::Postgres {
        context: "the database thread has stopped",
        source: sqlx::Error::WorkerCrashed,
    }
}

/// Maps a sqlx error: lost connections to [`StoreError::Connect`], lock and statement
/// timeouts to [`StoreError::Busy`], the rest to [`StoreError::Postgres`].
pub(super) fn pg(
    ctx: &Ctx,
    context: &'static str,
) -> impl FnOnce(sqlx::Error) -> StoreError + use<> {
    let server = ctx.server.clone();
    let waited = ctx.pool.options().get_acquire_timeout();
    move |source| {
        let code = source
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        match (&source, code.as_deref()) {
            // lock_timeout, or statement_timeout (the store's bound on a statement).
            (_, Some("55P03" | "57014")) => StoreError::Busy,
            (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed, _) => {
                StoreError::Connect {
                    server: server.to_string(),
                    reason: source.to_string(),
                }
            }
            (sqlx::Error::PoolTimedOut, _) => StoreError::Connect {
                server: server.to_string(),
                reason: format!(
                    "no database connection within {} ms (server down, or every connection busy)",
                    waited.as_millis()
                ),
            },
            (_, Some(c)) if c.starts_with("08") || c.starts_with("28") || c == "57P01" => {
                StoreError::Connect {
                    server: server.to_string(),
                    reason: source.to_string(),
                }
            }
            _ => StoreError::Postgres { context, source },
        }
    }
}

/// Whether a failed transaction may simply be run again.
fn retryable(e: &StoreError) -> bool {
    let StoreError::Postgres { source, .. } = e else {
        return false;
    };
    matches!(
        source.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("40001" | "40P01")
    )
}

pub(super) type ReadOp<A, T> = for<'c> fn(&'c Ctx, &'c A) -> BoxFut<'c, Result<T>>;
pub(super) type WriteOp<A, T> =
    for<'c> fn(&'c Ctx, &'c mut PgConnection, &'c A) -> BoxFut<'c, Result<(T, bool)>>;

/// Runs `op` in one write transaction (see the module docs) and bumps the generation if `op`
/// says it wrote; retries serialization failures and deadlocks.
async fn write_tx<A: Sync, T>(ctx: &Ctx, args: &A, op: WriteOp<A, T>) -> Result<T> {
    let mut attempt = 1;
    loop {
        match write_once(ctx, args, op).await {
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn write_once<A: Sync, T>(ctx: &Ctx, args: &A, op: WriteOp<A, T>) -> Result<T> {
    let mut tx = ctx
        .pool
        .begin()
        .await
        .map_err(pg(ctx, "cannot begin a write"))?;
    sqlx::query(&format!(
        "SET LOCAL lock_timeout = '{}s'",
        BUSY_TIMEOUT.as_secs()
    ))
    .execute(&mut *tx)
    .await
    .map_err(pg(ctx, "cannot begin a write"))?;
    sqlx::query("SELECT generation FROM state WHERE id = 1 FOR UPDATE")
        .execute(&mut *tx)
        .await
        .map_err(pg(ctx, "cannot begin a write"))?;
    // On an error the transaction is dropped, which rolls it back.
    let (value, wrote) = op(ctx, &mut tx, args).await?;
    if wrote {
        // A random generation, not a counter: after a restore to an older snapshot, k more
        // writes do not bring back a generation some process has cached. Other processes
        // hear of the commit by the notification (sent when it commits).
        let new: i64 = sqlx::query_scalar(fresh::BUMP)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg(ctx, "generation"))?;
        tx.commit().await.map_err(pg(ctx, "cannot commit"))?;
        // Read-your-writes in this process, before our own notification comes back.
        ctx.fresh.advance(new);
        return Ok(value);
    }
    tx.commit().await.map_err(pg(ctx, "cannot commit"))?;
    Ok(value)
}
