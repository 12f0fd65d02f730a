//! A shared PostgreSQL database (through `sqlx`, rustls), for several server replicas.
//!
//! **The thread bridge.** [`Store`](crate::Store) is synchronous and is called from plain threads and from
//! inside tokio runtimes (the server calls it in async handlers), so a `PgStore` must never
//! `block_on` the caller's runtime. Each `PgStore` owns one background thread running a
//! current-thread tokio runtime with the `sqlx` pool. A trait call boxes its work as a job,
//! sends it over an unbounded channel and blocks on a `std` channel for the reply; the
//! background thread spawns every job as a task, so calls from several threads run
//! concurrently on the pool. Blocking inside an async handler costs that worker thread while
//! the statement runs, exactly as the SQLite backend does.
//!
//! **Writes** run in one READ COMMITTED transaction ordered by `bridge::Order`: most lock
//! the store's write lock exclusively and then the single `state` row (`SELECT … FOR
//! UPDATE`), so they queue like SQLite's `BEGIN IMMEDIATE` and each one sees every earlier
//! commit; the insert, update and delete of one connection instead share the write lock,
//! lock their row, and take the `state` row only at their end. When a write changed
//! anything, it sets `state.generation` to a new value and notifies the other stores
//! (`postgres/fresh.rs`: how `generation` answers without a round trip, and what it does
//! while it cannot listen), then counts its seals and appends its audit records
//! ([`WriteLog`](crate::WriteLog)) — in commit order, under the `state` row.
//! `lock_timeout` is 10 s (then [`StoreError::Busy`]); serialization failures and deadlocks
//! are retried.
//!
//! **Migrations** are numbered rows of `broked_schema_migrations`, applied at open in one
//! transaction under `pg_advisory_xact_lock`, so replicas starting at once apply each once.
//!
//! Advisory lock keys are `hashtext('broked.<what>.' || current_schema())`: stores in
//! different schemas of one database do not contend.
//!
//! **Files.** `mod.rs`: opening and migrating; `bridge.rs`: the thread bridge, the write
//! transaction and the mapping of sqlx errors; `queries.rs`: the statements of the `Store`
//! methods; `lock.rs`: the rotation lock; `fresh.rs`: the generation; `tokens.rs`: API
//! tokens; `migrations/NNN_name.sql`: the schema. Row readers, column lists and the
//! connection statements are shared with SQLite (`crate::rows`); redaction of the address is
//! `broked_core::redact`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use broked_core::redact::{self, url_without_credentials as redact_url};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

use self::bridge::{Job, gone, pg, serve};
use self::fresh::Fresh;
use crate::{Result, StoreError};

mod audit;
mod bridge;
mod counts;
mod fresh;
mod group;
mod lock;
mod page;
mod queries;
mod reseal;
mod tokens;

/// How long a write waits for another writer's row lock, and a call for a pooled connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per `PgStore` (per replica).
const MAX_CONNECTIONS: u32 = 8;
/// Attempts of a write that meets a serialization failure or a deadlock.
const ATTEMPTS: u32 = 5;

/// Migrations, in order; row `n` of `broked_schema_migrations` records that migration `n`
/// (1-based) ran. Never edit one that shipped: add a new one. The schema is the SQLite one
/// with PostgreSQL types; identifiers collate as `"C"` so sorting matches SQLite's bytewise
/// order.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    include_str!("migrations/001_first_schema.sql"),
    // 2: named settings of the database (e.g. the format of its sealed values).
    include_str!("migrations/002_meta.sql"),
    // 3: named API tokens, stored as the SHA-256 of the token.
    include_str!("migrations/003_tokens.sql"),
    // 4: version history: who wrote a row and which fields it changed, and the previous
    // versions of every connection (deleted ones until purged).
    include_str!("migrations/004_connection_versions.sql"),
    // 5: the audit log: an HMAC chain of records, names and HMACs only (never a value).
    include_str!("migrations/005_audit.sql"),
    // 6 (5 is kept for the audit log, issue 17): the last test result of each connection.
    include_str!("migrations/006_connection_status.sql"),
    // 7: the number of connections of each type, kept by triggers (appended as deltas,
    // folded by each store's fold task, `counts.rs`), for a page's total without a count.
    include_str!("migrations/007_connection_counts.sql"),
];

/// The schema version this build writes.
pub const PG_SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A PostgreSQL database shared by several processes. See the module docs for the thread
/// bridge; `Debug` and errors show the address without credentials.
pub struct PgStore {
    server: Arc<str>,
    jobs: mpsc::UnboundedSender<Job>,
    fresh: Arc<Fresh>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?sslmode=…`; libpq-style
    /// parameters such as `options=-c search_path=…` work), migrates the schema, and starts
    /// the background thread. A wrong address or password is [`StoreError::Connect`], whose
    /// message never holds the password.
    pub fn open(url: &str) -> Result<PgStore> {
        PgStore::open_with_timeout(url, BUSY_TIMEOUT)
    }

    /// [`PgStore::open`] with another bound on the wait for the database: a call waits at
    /// most `timeout` for a pooled connection (while the server is down or refusing, then
    /// [`StoreError::Connect`]) and a statement runs at most `timeout` on the server
    /// (`statement_timeout`, then [`StoreError::Busy`]).
    pub fn open_with_timeout(url: &str, timeout: Duration) -> Result<PgStore> {
        let server: Arc<str> = redact_url(url).into();
        let connect_err = |e: sqlx::Error| StoreError::Connect {
            server: server.to_string(),
            reason: scrub(&e.to_string(), url),
        };
        let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), Opening>>(1);
        let thread_server = server.clone();
        let fresh = Arc::new(Fresh::default());
        let thread_fresh = fresh.clone();
        std::thread::Builder::new()
            .name("broked-store-pg".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Opening::Runtime(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    // One direct connection first: the pool retries a refused connection
                    // until its timeout and then reports only "timed out".
                    let first = async {
                        let mut conn = PgConnection::connect_with(&options)
                            .await
                            .map_err(Opening::Connect)?;
                        migrate(&mut conn).await.map_err(Opening::Store)?;
                        let _ = conn.close().await;
                        Ok(())
                    };
                    if let Err(e) = first.await {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    // On the pool's connections only: the rotation lock's own session
                    // waits as long as it must.
                    let statement_timeout =
                        format!("SET statement_timeout = {}", timeout.as_millis().max(1));
                    let pool = PgPoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(timeout)
                        .after_connect(move |conn, _| {
                            let set = statement_timeout.clone();
                            Box::pin(async move {
                                sqlx::Executor::execute(conn, set.as_str()).await.map(drop)
                            })
                        })
                        .connect_lazy_with(options);
                    let _ = ready_tx.send(Ok(()));
                    serve(pool, thread_server, thread_fresh, rx).await;
                });
            })
            .map_err(|e| StoreError::Connect {
                server: server.to_string(),
                reason: format!("cannot start the database thread: {e}"),
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(PgStore {
                server,
                jobs,
                fresh,
            }),
            Ok(Err(Opening::Connect(e))) => Err(connect_err(e)),
            Ok(Err(Opening::Store(e))) => Err(e),
            Ok(Err(Opening::Runtime(e))) => Err(StoreError::Connect {
                server: server.to_string(),
                reason: format!("cannot start the database runtime: {e}"),
            }),
            Err(_) => Err(gone()),
        }
    }

    /// The database address without user information or query, as errors show it.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<i64> {
        self.read((), |c, ()| {
            Box::pin(async move {
                sqlx::query_scalar::<_, Option<i64>>(
                    "SELECT max(version) FROM broked_schema_migrations",
                )
                .fetch_one(&c.pool)
                .await
                .map(|v| v.unwrap_or(0))
                .map_err(pg(c, "schema version"))
            })
        })
    }
}

/// `text` with every password that `url` carries (user information or a `password`
/// parameter, raw or percent-decoded) replaced by `********`.
fn scrub(text: &str, url: &str) -> String {
    redact::mask(text, redact::url_passwords(url), 0)
}

enum Opening {
    Connect(sqlx::Error),
    Store(StoreError),
    Runtime(std::io::Error),
}

/// Applies the migrations this database lacks, in one transaction under an advisory lock.
async fn migrate(conn: &mut PgConnection) -> Result<()> {
    let err = |context: &'static str| move |source| StoreError::Postgres { context, source };
    let mut tx = conn
        .begin()
        .await
        .map_err(err("cannot begin the migration"))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('broked.migrate.' || current_schema()))")
        .execute(&mut *tx)
        .await
        .map_err(err("migration lock"))?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS broked_schema_migrations (
            version BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .execute(&mut *tx)
    .await
    .map_err(err("cannot create broked_schema_migrations"))?;
    let found: i64 =
        sqlx::query_scalar::<_, Option<i64>>("SELECT max(version) FROM broked_schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(err("schema version"))?
            .unwrap_or(0);
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            found,
            known: PG_SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        sqlx::raw_sql(step)
            .execute(&mut *tx)
            .await
            .map_err(err("migration failed"))?;
        sqlx::query("INSERT INTO broked_schema_migrations (version) VALUES ($1)")
            .bind(i as i64 + 1)
            .execute(&mut *tx)
            .await
            .map_err(err("migration failed"))?;
    }
    tx.commit()
        .await
        .map_err(err("cannot commit the migration"))
}

#[cfg(test)]
mod tests;
