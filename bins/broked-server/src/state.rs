//! The state every handler shares — the library, the bootstrap token, the limit on failed
//! authentications — and how handlers run store calls on it.

use std::sync::Arc;

use broked_connections::Connections;

use crate::auth::Token;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) connections: Arc<Connections>,
    pub(crate) token: Option<Arc<Token>>,
    /// Failed authentications per client (429 past a limit).
    pub(crate) failures: Arc<crate::auth::Failures>,
    /// Whether store reads run inline on the async workers (see [`read`]): the SQLite store.
    pub(crate) inline_reads: bool,
    /// The answers of single GETs, kept while the store does not change (`cache.rs`).
    pub(crate) gets: Arc<crate::cache::Gets>,
    /// The answers of lists for tokens that see every connection, kept likewise.
    pub(crate) lists: Arc<crate::cache::Lists>,
}

/// Runs a store write off the async workers: a write waits for its commit's `fsync`, and
/// while another process writes, for the lock (up to `--store-timeout`).
pub(crate) async fn write<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connections) -> Result<T, broked_connections::Error> + Send + 'static,
) -> ApiResult<T> {
    blocking(state, f).await
}

/// A short store read (a connection by conn_id, the token check's): inline on the async
/// worker with the SQLite store, off the workers with PostgreSQL.
///
/// `spawn_blocking` costs two cross-thread wake-ups per request, more than the read itself
/// (docs/BENCHMARKS.md). A SQLite read runs on a pool of read-only connections beside the
/// writer (WAL): it never waits for a write of this process or its `fsync` (issue 19; before
/// the pool a read went off the workers whenever a write was in flight). It waits only in
/// rare moments of another process — recovering the WAL index after a crash, or holding the
/// database exclusively (a change of journal mode) — up to `--store-timeout`, and after the
/// database file was replaced, for the reconnect. A PostgreSQL read is a round trip that can
/// take up to `--store-timeout` when the server is slow or down: never on a worker.
pub(crate) async fn read<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connections) -> Result<T, broked_connections::Error> + Send + 'static,
) -> ApiResult<T> {
    if state.inline_reads {
        f(&state.connections).map_err(ApiError::from)
    } else {
        blocking(state, f).await
    }
}

/// Runs a store call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connections) -> Result<T, broked_connections::Error> + Send + 'static,
) -> ApiResult<T> {
    let connections = state.connections.clone();
    match tokio::task::spawn_blocking(move || f(&connections)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => {
            tracing::error!(error = %e, "store task failed");
            Err(ApiError::internal())
        }
    }
}
