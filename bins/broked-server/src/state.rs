//! The state every handler shares — the library, the bootstrap token, the limit on failed
//! authentications — and how handlers run store calls on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// Store writes of this process started and not yet finished (see [`read_fast`]).
    pub(crate) writes_in_flight: Arc<AtomicUsize>,
}

/// Runs a store write off the async workers, counted in `writes_in_flight` until the closure
/// has finished (even when the client has gone and the handler was dropped).
pub(crate) async fn write<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connections) -> Result<T, broked_connections::Error> + Send + 'static,
) -> ApiResult<T> {
    struct InFlight(Arc<AtomicUsize>);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    state.writes_in_flight.fetch_add(1, Ordering::AcqRel);
    let in_flight = InFlight(state.writes_in_flight.clone());
    blocking(state, move |c| {
        let _in_flight = in_flight;
        f(c)
    })
    .await
}

/// A short read by primary key: inline on the async worker when no write of this process is
/// in flight, otherwise off the workers like any store call.
///
/// `spawn_blocking` costs two cross-thread wake-ups per request, more than the read itself
/// (GET of one connection: ≈ 21,000 → ≈ 33,000 req/s on two cores, docs/BENCHMARKS.md). The
/// store serialises calls on one mutex, and a write can hold it for an fsync or, while another
/// process writes, up to the busy timeout; a read must not wait for that on an async worker,
/// hence the check. A write that starts between the check and the read delays the read by
/// that one write (the library's own connection tests read inline the same way).
pub(crate) async fn read_fast<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Connections) -> Result<T, broked_connections::Error> + Send + 'static,
) -> ApiResult<T> {
    if state.writes_in_flight.load(Ordering::Acquire) == 0 {
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
