//! `Connections::resolve`: what the engine calls on every run, and its cache.
//!
//! **The freshness guarantee** (docs/connections.md): on SQLite, a resolve never returns a
//! value older than the newest one committed when the call began, by any process; on
//! PostgreSQL, other processes' changes arrive by `LISTEN/NOTIFY` (and while the listening
//! connection is down every resolve asks the database). The cache keeps decrypted values only
//! while [`Store::generation`](broked_store::Store::generation) is unchanged, and that number
//! is read *before* the row, so a cached value is never older than the generation it is kept
//! under. Generations only grow: the cache never goes back to an older one, and of two rows
//! read under one generation it keeps the newer version, so within a process no resolve
//! returns an older value than one that returned before it began.
//!
//! When the store cannot be reached, resolve fails — unless [`Options::max_stale`] is set:
//! then the last value is returned, marked [`Resolved::stale`], with a warning, while it is
//! younger than that; after that it fails closed.
//!
//! [`Options::max_stale`]: crate::Options::max_stale

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broked_core::{ConnId, Connection, Secret};
use broked_store::Store;

use crate::env;
use crate::error::{Error, store_err};

/// The engine's lookup: the `BROKED_CONN_*` variables read at open, and the cache of
/// decrypted connections. `Connections::resolve` calls it with the store and a loader.
pub(crate) struct Resolver {
    cache: Mutex<Cache>,
    /// `BROKED_CONN_*` variables, read once at open (a process's environment is set when it
    /// starts; reading it on every resolve would cost more than the rest of a warm resolve).
    env_conns: HashMap<String, Secret>,
    max_stale: Option<Duration>,
    /// The audit log's resolve counters.
    counters: Counters,
}

/// Decrypted connections by conn_id, valid while the store's generation is unchanged.
#[derive(Default)]
struct Cache {
    generation: Option<u64>,
    /// When the store last confirmed `generation` (kept only with `max_stale`).
    verified: Option<Instant>,
    /// With the row version each value was read at, and the conn_id's resolve counter
    /// (the audit log's; a hit adds one).
    entries: HashMap<String, (i64, Arc<Resolved>, ResolveCounter)>,
}

/// Where `Connections::resolve` found a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The environment variable `BROKED_CONN_<ID>`.
    Environment { var: String },
    /// The database.
    Store,
}

/// A connection with its secrets, and its full URI — what the engine hands to a driver.
/// `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub connection: Connection,
    pub uri: Secret,
    pub source: Source,
    /// `Some` only with [`Options::max_stale`](crate::Options::max_stale) set, when the
    /// database could not be reached: this is the last value seen, not a verified one.
    pub stale: Option<Stale>,
}

/// Why and how old a [`Resolved`] value is that could not be checked against the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    /// Time since the database last confirmed the value was current.
    pub age: Duration,
    /// The error that prevented the check (never contains a secret).
    pub reason: String,
}

/// Reads a stored connection: its row version and the connection with its secrets.
pub(crate) type Load<'a> = &'a dyn Fn(&str) -> Result<(i64, Connection), Error>;

/// The counter a cache entry holds: a resolve hit adds one to it (the audit log,
/// `audit.rs`, records the counts).
pub(crate) type ResolveCounter = Arc<AtomicU64>;

/// The resolve counter of a conn_id (`audit.rs`), asked on a miss.
pub(crate) type Counters = Arc<dyn Fn(&str) -> ResolveCounter + Send + Sync>;

impl Resolver {
    pub(crate) fn new(max_stale: Option<Duration>, counters: Counters) -> Resolver {
        Resolver {
            cache: Mutex::new(Cache::default()),
            env_conns: env::snapshot(),
            max_stale,
            counters,
        }
    }

    /// See `Connections::resolve`.
    pub(crate) fn resolve(
        &self,
        store: &dyn Store,
        load: Load<'_>,
        conn_id: &str,
    ) -> Result<Arc<Resolved>, Error> {
        if !self.env_conns.is_empty() {
            return self.resolve_env_first(store, load, conn_id);
        }
        self.resolve_stored(store, load, conn_id, false)
    }

    /// [`Resolver::resolve`] that reads the row whatever the cache holds (after a failed
    /// login: `Connections::resolve_fresh`), and keeps it in the cache if it is newer.
    pub(crate) fn resolve_fresh(
        &self,
        store: &dyn Store,
        load: Load<'_>,
        conn_id: &str,
    ) -> Result<Arc<Resolved>, Error> {
        if let Some(value) = self.env_value(conn_id)? {
            return Ok(value);
        }
        self.resolve_stored(store, load, conn_id, true)
    }

    /// The connection from `BROKED_CONN_<ID>`, if that variable was set at open.
    fn env_value(&self, conn_id: &str) -> Result<Option<Arc<Resolved>>, Error> {
        if self.env_conns.is_empty() {
            return Ok(None);
        }
        let id = ConnId::new(conn_id).map_err(|_| Error::NotFound(conn_id.to_owned()))?;
        let Some(value) = self.env_conns.get(&id.env_var_name()) else {
            return Ok(None);
        };
        let connection = env::parse(&id, &id.env_var_name(), value.expose())?;
        let uri = connection.to_uri();
        Ok(Some(Arc::new(Resolved {
            connection,
            uri,
            source: Source::Environment {
                var: id.env_var_name(),
            },
            stale: None,
        })))
    }

    #[cold]
    fn resolve_env_first(
        &self,
        store: &dyn Store,
        load: Load<'_>,
        conn_id: &str,
    ) -> Result<Arc<Resolved>, Error> {
        if let Some(value) = self.env_value(conn_id)? {
            return Ok(value);
        }
        self.resolve_stored(store, load, conn_id, false)
    }

    /// The hot path: one cheap change check, one hash lookup, no allocation on a hit.
    /// `fresh`: no hit, the row is read in any case.
    fn resolve_stored(
        &self,
        store: &dyn Store,
        load: Load<'_>,
        conn_id: &str,
        fresh: bool,
    ) -> Result<Arc<Resolved>, Error> {
        let generation = match store.generation() {
            Ok(g) => g,
            Err(e) => return self.resolve_unchecked(conn_id, store_err(e)),
        };
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            // Generations only grow. A caller that read an older one than the cache holds
            // (it was slower to get here) may use the newer entries, but never moves the
            // cache back: that would let it insert a row read before the newer generation.
            if cache.generation.is_none_or(|c| generation > c) {
                cache.entries.clear();
                cache.generation = Some(generation);
            }
            if self.max_stale.is_some() {
                cache.verified = Some(Instant::now());
            }
            if let Some((_, hit, count)) = cache.entries.get(conn_id).filter(|_| !fresh) {
                crate::metrics::STATS.resolve_hit();
                count.fetch_add(1, Relaxed);
                return Ok(hit.clone());
            }
        }
        crate::metrics::STATS.resolve_miss();
        ConnId::new(conn_id).map_err(|_| Error::NotFound(conn_id.to_owned()))?;
        let (row_version, connection) = load(conn_id)?;
        // A cold path: the counter map's lock, and on the first resolve of the conn_id in
        // this process an allocation (the audit log records it in the background).
        let count = (self.counters)(conn_id);
        count.fetch_add(1, Relaxed);
        let resolved = Arc::new(Resolved {
            uri: connection.to_uri(),
            connection,
            source: Source::Store,
            stale: None,
        });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.generation == Some(generation) {
            // Two misses under one generation can read two versions of the row (on
            // PostgreSQL the generation moves when the notification arrives, after the
            // commit): keep the newer, so no caller ever sees a value go back.
            match cache.entries.get(conn_id) {
                Some((version, newer, _)) if *version > row_version => return Ok(newer.clone()),
                _ => {
                    cache
                        .entries
                        .insert(conn_id.to_owned(), (row_version, resolved.clone(), count));
                }
            }
        }
        Ok(resolved)
    }

    /// The store cannot say whether the cache is current: fail with `error`, or — with
    /// `max_stale`, while the last check is recent enough — return the cached value marked
    /// stale.
    #[cold]
    fn resolve_unchecked(&self, conn_id: &str, error: Error) -> Result<Arc<Resolved>, Error> {
        let Some(max_stale) = self.max_stale else {
            return Err(error);
        };
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (Some((_, hit, _)), Some(verified)) = (cache.entries.get(conn_id), cache.verified)
        else {
            return Err(error);
        };
        let age = verified.elapsed();
        if age > max_stale {
            tracing::error!(
                conn_id,
                age_ms = age.as_millis() as u64,
                max_stale_ms = max_stale.as_millis() as u64,
                error = %error,
                "the database cannot be reached and the last value is older than max_stale: \
                 failing closed"
            );
            return Err(error);
        }
        tracing::warn!(
            conn_id,
            age_ms = age.as_millis() as u64,
            error = %error,
            "the database cannot be reached: returning the last value, marked stale"
        );
        crate::metrics::STATS.resolve_stale();
        let mut stale = Resolved::clone(hit);
        stale.stale = Some(Stale {
            age,
            reason: error.to_string(),
        });
        Ok(Arc::new(stale))
    }
}
