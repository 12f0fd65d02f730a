//! The thread bridge (see the module docs of `postgres`): jobs sent to a background thread
//! that owns the runtime and the pool, the write transaction every mutation runs in, and the
//! mapping of sqlx errors onto [`StoreError`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::mpsc;

use super::fresh::{self, Fresh};
use super::{ATTEMPTS, BUSY_TIMEOUT, PgStore};
use crate::{Logged, Result, StoreError, WriteLog};

pub(super) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub(super) type Job = Box<dyn FnOnce(Ctx) -> BoxFut<'static, ()> + Send>;

/// What a job gets: the pool, and the address to name in errors.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) pool: PgPool,
    pub(super) server: Arc<str>,
    /// What `generation` answers from (see `postgres/fresh.rs`).
    pub(super) fresh: Arc<Fresh>,
    /// The writes waiting for the next group commit of this store (`group.rs`).
    pub(super) groups: Arc<super::group::Groups>,
    /// Set after every commit of a write that changed data: the fold task folds the
    /// counts' deltas (`counts.rs`).
    pub(super) wrote: Arc<std::sync::atomic::AtomicBool>,
    /// Held by every running job and lock holder; the background thread closes the pool
    /// once the store is dropped and every clone is gone.
    pub(super) _alive: mpsc::Sender<()>,
}

impl Ctx {
    /// A write that changed data committed: it may have appended deltas of the connections'
    /// counts, which the fold task folds next (`counts.rs`).
    pub(super) fn committed(&self) {
        self.wrote.store(true, std::sync::atomic::Ordering::Release);
    }
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

    /// Runs `op` as one write transaction in [`Order::Alone`].
    pub(super) fn write<A, T>(&self, args: A, op: WriteOp<A, T>) -> Result<T>
    where
        A: Send + Sync + 'static,
        T: Send + 'static,
    {
        self.write_with(Order::Alone, args, WriteLog::none(), op)
            .map(|(value, _)| value)
    }

    /// Runs `op` as one write transaction ordered by `order`; if it changed data, `log` is
    /// applied in the same transaction (`WriteLog`).
    pub(super) fn write_with<A, T>(
        &self,
        order: Order,
        args: A,
        log: WriteLog,
        op: WriteOp<A, T>,
    ) -> Result<(T, Logged)>
    where
        A: Send + Sync + 'static,
        T: Send + 'static,
    {
        // The pool's wait, the writers' queue, several statements: more room.
        self.call_within(Some((3, Duration::from_secs(2))), move |ctx| {
            Box::pin(async move {
                if order == Order::Rows {
                    // Committed with the writes that arrive meanwhile (`group.rs`).
                    super::group::write(&ctx, args, log, op).await
                } else {
                    write_tx(&ctx, order, &args, &log, op).await
                }
            })
        })
    }
}

/// How a write transaction takes its turn among the writes of every replica. The locks are
/// always taken in one order — the store's write lock, rows, the `state` row, `keys` rows,
/// the audit head — so writes never deadlock one another (see docs/storage.md,
/// "Concurrency").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Order {
    /// No other write at all meanwhile: the store's write lock exclusively, then the `state`
    /// row, both held to the commit — for writes that check other rows before they write
    /// (an import, a pipeline's references, pruning keys, re-sealing).
    Alone,
    /// Beside other `Rows` writes: the store's write lock shared; the write locks the rows it
    /// reads before it writes them (`SELECT … FOR UPDATE`, a primary key) and takes the
    /// `state` row only at its end, if it changed data (the generation, the seal counts and
    /// the audit records), held to the commit — a short critical section, in commit order.
    Rows,
    /// Only the `state` row, from the start: a write that touches nothing but the audit log.
    Head,
}

// `Order::begin` states the lock timeout as a literal.
const _: () = assert!(BUSY_TIMEOUT.as_secs() == 10 && BUSY_TIMEOUT.subsec_nanos() == 0);

impl Order {
    /// What begins the transaction (one round trip): `BEGIN`, the lock timeout, the locks.
    pub(super) fn begin(self) -> &'static str {
        match self {
            Order::Alone => {
                "BEGIN; SET LOCAL lock_timeout = '10s'; \
                 SELECT pg_advisory_xact_lock(hashtext('broked.write.' || current_schema())); \
                 SELECT generation FROM state WHERE id = 1 FOR UPDATE"
            }
            Order::Rows => {
                "BEGIN; SET LOCAL lock_timeout = '10s'; \
                 SELECT pg_advisory_xact_lock_shared(hashtext('broked.write.' || current_schema()))"
            }
            Order::Head => {
                "BEGIN; SET LOCAL lock_timeout = '10s'; \
                 SELECT generation FROM state WHERE id = 1 FOR UPDATE"
            }
        }
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
    let wrote = Arc::<std::sync::atomic::AtomicBool>::default();
    let folder = tokio::spawn(super::counts::run(pool.clone(), wrote.clone()));
    let ctx = Ctx {
        pool: pool.clone(),
        server,
        fresh,
        groups: Arc::default(),
        wrote,
        _alive: alive,
    };
    while let Some(job) = jobs.recv().await {
        tokio::spawn(job(ctx.clone()));
    }
    drop(ctx);
    listener.abort();
    let _ = listener.await;
    folder.abort();
    let _ = folder.await;
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
pub(super) fn retryable(e: &StoreError) -> bool {
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

/// Runs `op` in one write transaction (see the module docs) ordered by `order`; if `op` says
/// it wrote, bumps the generation and applies `log` before the commit. Retries
/// serialization failures and deadlocks.
async fn write_tx<A: Sync, T>(
    ctx: &Ctx,
    order: Order,
    args: &A,
    log: &WriteLog,
    op: WriteOp<A, T>,
) -> Result<(T, Logged)> {
    let mut attempt = 1;
    loop {
        match write_once(ctx, order, args, log, op).await {
            Err(e) if attempt < ATTEMPTS && retryable(&e) => {
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn write_once<A: Sync, T>(
    ctx: &Ctx,
    order: Order,
    args: &A,
    log: &WriteLog,
    op: WriteOp<A, T>,
) -> Result<(T, Logged)> {
    let mut tx = ctx
        .pool
        .begin_with(order.begin())
        .await
        .map_err(pg(ctx, "cannot begin a write"))?;
    // On an error the transaction is dropped, which rolls it back.
    let (value, wrote) = op(ctx, &mut tx, args).await?;
    if !wrote {
        tx.commit().await.map_err(pg(ctx, "cannot commit"))?;
        return Ok((value, Logged::default()));
    }
    // A random generation, not a counter: after a restore to an older snapshot, k more
    // writes do not bring back a generation some process has cached. Other processes
    // hear of the commit by the notification (sent when it commits). In `Order::Rows` this
    // takes the `state` row lock: from here to the commit, writes take turns — so the
    // bump, the seal counts and the audit head read are as few round trips as can be.
    let (new, mut logged, head) = bump(ctx, &mut tx, log).await?;
    if let Some((records, mac)) = log.records() {
        logged.audit = super::audit::append_in(ctx, &mut tx, records, mac, head).await?;
    }
    tx.commit().await.map_err(pg(ctx, "cannot commit"))?;
    // Read-your-writes in this process, before our own notification comes back.
    ctx.fresh.advance(new);
    ctx.committed();
    Ok((value, logged))
}

/// The generation bump of a write that changed data, with its seal counts in the same
/// statement; the new generation, the keys' totals, and the audit head as `meta` holds it.
pub(super) async fn bump(
    ctx: &Ctx,
    c: &mut PgConnection,
    log: &WriteLog,
) -> Result<(i64, Logged, Option<(i64, String)>)> {
    let mut logged = Logged {
        applied: true,
        ..Logged::default()
    };
    let mut per_key = std::collections::BTreeMap::<i64, i64>::new();
    for &(key_id, n) in &log.seals {
        *per_key.entry(i64::from(key_id)).or_default() += n as i64;
    }
    let counting = !per_key.is_empty();
    let row = if !counting {
        sqlx::query(fresh::BUMP).fetch_one(c).await
    } else {
        let (keys, counts): (Vec<i64>, Vec<i64>) = per_key.into_iter().unzip();
        sqlx::query(fresh::BUMP_COUNTING)
            .bind(keys)
            .bind(counts)
            .fetch_one(c)
            .await
    }
    .map_err(pg(ctx, "generation"))?;
    let read = |e| pg(ctx, "generation")(e);
    let new: i64 = row.try_get("generation").map_err(read)?;
    let head: Option<String> = row.try_get("audit_head").map_err(read)?;
    if counting {
        let keys: Vec<i64> = row.try_get("keys").map_err(read)?;
        let totals: Vec<i64> = row.try_get("totals").map_err(read)?;
        for (key, total) in keys.into_iter().zip(totals) {
            logged
                .seals
                .push((crate::rows::key_id("keys", key)?, total as u64));
        }
    }
    Ok((
        new,
        logged,
        head.as_deref().and_then(super::audit::parse_head),
    ))
}
