//! What the library counts for an operator, read with `Connections::metrics` and
//! `Connections::key_usage`: resolve cache hits and misses, every store call by operation
//! with its latency and errors, and the seals made.
//!
//! Plain atomics, no exporter: a server renders them (`broked-server`'s `/metrics`). Every
//! label is from a fixed set (the store's operation names), never from input, and nothing here
//! holds a secret. The counters are per process, like a Prometheus client's.
//!
//! The warm resolve stays cheap: a hit costs one relaxed atomic add, and the store's change
//! check (`generation`, called on every resolve) is counted only when it fails, not timed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use broked_store::{AuditCut, AuditFilter, AuditMac, AuditRecord};
use broked_store::{
    Deleted, Deletion, Logged, PipelineRef, Purged, PutMany, PutPipeline, Reseal, Result,
    RotationGuard, SealedField, Store, StoreError, StoredConnection, StoredPipeline, StoredToken,
    StoredVersion, WriteLog, Written,
};

/// Upper bounds (seconds) of the latency histograms' buckets; one more bucket is `+Inf`.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram: per-bucket counts (not cumulative) for [`LATENCY_BUCKETS`] and a
/// last one for everything slower.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub counts: Vec<u64>,
    /// Seconds.
    pub sum: f64,
    pub count: u64,
}

struct Histo {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histo {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        Histogram {
            count: counts.iter().sum(),
            counts,
            sum: self.sum_ns.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// One store operation: calls, failed calls (of them: the store unavailable), latency.
struct OpStats {
    calls: AtomicU64,
    errors: AtomicU64,
    unavailable: AtomicU64,
    latency: Histo,
}

impl OpStats {
    const fn new() -> OpStats {
        OpStats {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
            latency: Histo {
                buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
                sum_ns: AtomicU64::new(0),
            },
        }
    }
}

/// The counters of this process: every `Connections` it opened adds to them (a server
/// opens one).
pub(crate) struct Stats {
    resolve_hits: AtomicU64,
    resolve_misses: AtomicU64,
    resolve_stale: AtomicU64,
    seals: AtomicU64,
    ops: [OpStats; OPS.len()],
}

pub(crate) static STATS: Stats = Stats {
    resolve_hits: AtomicU64::new(0),
    resolve_misses: AtomicU64::new(0),
    resolve_stale: AtomicU64::new(0),
    seals: AtomicU64::new(0),
    ops: [const { OpStats::new() }; OPS.len()],
};

impl Stats {
    pub(crate) fn resolve_hit(&self) {
        self.resolve_hits.fetch_add(1, Relaxed);
    }

    pub(crate) fn resolve_miss(&self) {
        self.resolve_misses.fetch_add(1, Relaxed);
    }

    pub(crate) fn resolve_stale(&self) {
        self.resolve_stale.fetch_add(1, Relaxed);
    }

    /// `n` values sealed by a write that counted them in its own transaction (a
    /// [`WriteLog`]); [`Store::count_seals`] through [`Timed`] counts the others.
    pub(crate) fn sealed(&self, n: u64) {
        self.seals.fetch_add(n, Relaxed);
    }

    fn op(&self, i: usize, start: Option<Instant>, failed: Option<&StoreError>) {
        let op = &self.ops[i];
        op.calls.fetch_add(1, Relaxed);
        if let Some(start) = start {
            op.latency.observe(start.elapsed());
        }
        if let Some(e) = failed {
            op.errors.fetch_add(1, Relaxed);
            if e.is_unavailable() {
                op.unavailable.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A snapshot of the library's counters in this process (every
/// [`Connections`](crate::Connections) it opened).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// Resolves answered from the cache.
    pub resolve_hits: u64,
    /// Resolves that read the store.
    pub resolve_misses: u64,
    /// Resolves answered with a stale value ([`Options::max_stale`](crate::Options)).
    pub resolve_stale: u64,
    /// Values sealed by this process.
    pub seals: u64,
    /// Every store operation that was called at least once.
    pub store: Vec<StoreOpMetrics>,
}

/// Calls of one store operation (`get_connection`, `generation`, …).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOpMetrics {
    pub op: &'static str,
    pub calls: u64,
    pub errors: u64,
    /// Of `errors`: the store was unavailable ([`ErrorKind::Unavailable`](crate::ErrorKind)).
    pub unavailable: u64,
    /// Empty for `generation`, which is not timed (it runs on every resolve).
    pub latency: Histogram,
}

/// How much the active key has been used, against the bound at which it is rotated.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KeyUsage {
    /// The active key (`k2`).
    pub active_key: String,
    /// Seals made with the active key, by every process.
    pub active_seals: u64,
    /// The active key is rotated when `active_seals` reaches this.
    pub seal_limit: u64,
    /// Sealed values per key id now: after a rotation, the old keys' counts fall to 0.
    pub sealed_values: Vec<(String, u64)>,
}

/// The library's counters in this process ([`Connections::metrics`](crate::Connections)).
pub(crate) fn snapshot() -> Metrics {
    let s = &STATS;
    let store = OPS
        .iter()
        .zip(&s.ops)
        .filter(|(_, o)| o.calls.load(Relaxed) > 0)
        .map(|(name, o)| StoreOpMetrics {
            op: name,
            calls: o.calls.load(Relaxed),
            errors: o.errors.load(Relaxed),
            unavailable: o.unavailable.load(Relaxed),
            latency: o.latency.snapshot(),
        })
        .collect();
    Metrics {
        resolve_hits: s.resolve_hits.load(Relaxed),
        resolve_misses: s.resolve_misses.load(Relaxed),
        resolve_stale: s.resolve_stale.load(Relaxed),
        seals: s.seals.load(Relaxed),
        store,
    }
}

/// A [`Store`] that counts and times every call into [`STATS`].
pub(crate) struct Timed(pub(crate) Box<dyn Store>);

/// The label of an operation: its method's name, or the one given after `as` (a write
/// that carries a [`broked_store::WriteLog`] counts as the write it is).
macro_rules! op_label {
    ($name:ident) => {
        stringify!($name)
    };
    ($name:ident $label:literal) => {
        $label
    };
}

macro_rules! timed_store {
    ($( $i:literal $name:ident $(as $label:literal)? ( $($arg:ident : $ty:ty),* ) -> $ret:ty; )*) => {
        /// The operations, in the order of [`Stats::ops`]: the timed ones, then the two
        /// written out below.
        const OPS: [&str; [$($i),*].len() + 2] =
            [$(op_label!($name $($label)?),)* "generation", "count_seals"];
        const GENERATION: usize = OPS.len() - 2;
        const COUNT_SEALS: usize = OPS.len() - 1;
        // The numbers index `Stats::ops`: 0, 1, 2, … in order, so no two operations share
        // counters (checked when compiling).
        const _: () = {
            let mut next = 0;
            $(
                assert!($i == next, "timed_store!: number the operations 0, 1, 2, … in order");
                next += 1;
            )*
            let _ = next;
        };

        impl Store for Timed {
            $(
                fn $name(&self, $($arg: $ty),*) -> $ret {
                    let start = Instant::now();
                    let r = self.0.$name($($arg),*);
                    STATS.op($i, Some(start), r.as_ref().err());
                    r
                }
            )*

            fn generation(&self) -> Result<u64> {
                let r = self.0.generation();
                if let Err(e) = &r {
                    STATS.op(GENERATION, None, Some(e));
                }
                r
            }

            fn generation_cached(&self) -> Result<Option<u64>> {
                let r = self.0.generation_cached();
                if let Err(e) = &r {
                    STATS.op(GENERATION, None, Some(e));
                }
                r
            }

            fn count_seals(&self, key_id: u32, n: u64) -> Result<u64> {
                let start = Instant::now();
                let r = self.0.count_seals(key_id, n);
                STATS.op(COUNT_SEALS, Some(start), r.as_ref().err());
                if r.is_ok() {
                    STATS.seals.fetch_add(n, Relaxed);
                }
                r
            }
        }
    };
}

timed_store! {
    0 key_checks() -> Result<Vec<(u32, String)>>;
    1 meta(name: &str) -> Result<Option<String>>;
    2 set_meta(name: &str, value: &str) -> Result<()>;
    3 add_key_check(key_id: u32, check: &str) -> Result<()>;
    4 remove_unused_keys(key_ids: &[u32]) -> Result<Vec<u32>>;
    5 sealed_per_key() -> Result<Vec<(u32, u64)>>;
    6 seals(key_id: u32) -> Result<u64>;
    7 insert_connection_logged as "insert_connection" (conn: &StoredConnection, log: &WriteLog) -> Result<(i64, Logged)>;
    8 get_connection(conn_id: &str) -> Result<Option<StoredConnection>>;
    9 list_connections(conn_type: Option<&str>) -> Result<Vec<StoredConnection>>;
    10 update_connection_logged as "update_connection" (conn: &StoredConnection, keep_versions: u32, log: &WriteLog) -> Result<(Written, Logged)>;
    11 delete_connection_logged as "delete_connection" (conn_id: &str, how: &Deletion, log: &WriteLog) -> Result<(Deleted, Logged)>;
    12 put_connections_logged as "put_connections" (rows: &[StoredConnection], overwrite: bool, keep_versions: u32, log: &WriteLog) -> Result<(PutMany, Logged)>;
    13 sealed_not_under(key_id: u32, limit: usize) -> Result<Vec<SealedField>>;
    14 reseal(batch: &[Reseal]) -> Result<usize>;
    15 put_pipeline_logged as "put_pipeline" (pipeline: &StoredPipeline, refs: &[PipelineRef], log: &WriteLog) -> Result<(PutPipeline, Logged)>;
    16 get_pipeline(pipeline_id: &str) -> Result<Option<StoredPipeline>>;
    17 list_pipelines() -> Result<Vec<StoredPipeline>>;
    18 delete_pipeline_logged as "delete_pipeline" (pipeline_id: &str, log: &WriteLog) -> Result<(bool, Logged)>;
    19 used_by(conn_id: &str) -> Result<Vec<PipelineRef>>;
    20 insert_token(token: &StoredToken) -> Result<()>;
    21 list_tokens() -> Result<Vec<StoredToken>>;
    22 token_by_hash(hash: &str) -> Result<Option<StoredToken>>;
    23 delete_token(name: &str) -> Result<bool>;
    24 touch_token(name: &str, at: &str) -> Result<()>;
    25 count_tokens() -> Result<u64>;
    26 lock_rotation() -> Result<RotationGuard>;
    27 try_lock_rotation() -> Result<Option<RotationGuard>>;
    28 history(conn_id: Option<&str>) -> Result<Vec<StoredVersion>>;
    29 get_version(conn_id: &str, version: i64) -> Result<Option<StoredVersion>>;
    30 purge_history(conn_id: &str) -> Result<Purged>;
    31 lock_named(name: &str) -> Result<RotationGuard>;
    32 try_lock_named(name: &str) -> Result<Option<RotationGuard>>;
    33 page_connections(query: &broked_store::ConnQuery) -> Result<broked_store::ConnPage>;
    34 record_test(conn_id: &str, version: i64, status: &broked_store::TestStatus) -> Result<bool>;
    35 append_audit(records: Vec<AuditRecord>, mac: AuditMac) -> Result<Vec<AuditRecord>>;
    36 audit_head() -> Result<Option<AuditRecord>>;
    37 list_audit(filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    38 audit_range(from_seq: i64, limit: usize) -> Result<Vec<AuditRecord>>;
    39 prune_audit(before_seq: i64) -> Result<Option<AuditCut>>;
    40 sealed_not_under_after(key_id: u32, after: Option<&broked_store::ResealCursor>, limit: usize) -> Result<Vec<broked_store::ResealRow>>;
    41 reseal_batch(batch: &[Reseal], marker: (&str, Option<&str>)) -> Result<usize>;
    42 count_rows() -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectionInput, Connections, Error, ErrorKind};

    fn open() -> (tempfile::TempDir, std::path::PathBuf, Connections) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("broked.db");
        let c = Connections::open(&db).unwrap();
        c.create(ConnectionInput {
            conn_id: Some("c".into()),
            conn_type: Some("postgres".into()),
            host: Some("db.example.com".into()),
            login: Some("etl".into()),
            password: Some("Pw-metrics-1".into()),
            ..Default::default()
        })
        .unwrap();
        (dir, db, c)
    }

    #[test]
    fn histograms_put_each_latency_in_its_bucket() {
        let h = Histo {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len() + 1],
            sum_ns: AtomicU64::new(0),
        };
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.counts.len(), LATENCY_BUCKETS.len() + 1);
        assert_eq!(s.counts[0], 1, "100 µs ≤ 0.5 ms");
        assert_eq!(s.counts[1], 1, "1 ms ≤ 1 ms");
        assert_eq!(s.counts[LATENCY_BUCKETS.len()], 1, "60 s in +Inf");
        assert!((s.sum - 60.0011).abs() < 1e-6, "{}", s.sum);
    }

    /// The counters are per process and tests run in parallel: only growth is checked.
    #[test]
    fn resolves_store_calls_and_seals_are_counted() {
        let (_dir, _db, c) = open();
        let before = c.metrics();
        c.resolve("c").unwrap();
        c.resolve("c").unwrap();
        c.get("c").unwrap();
        assert!(c.get("missing").is_err());
        let after = c.metrics();
        assert!(after.resolve_misses > before.resolve_misses);
        assert!(after.resolve_hits > before.resolve_hits);
        assert!(after.seals >= 1, "the create sealed the password");
        let calls =
            |m: &Metrics, op: &str| m.store.iter().find(|o| o.op == op).map_or(0, |o| o.calls);
        // resolve's miss reads the stored row; get reads the listed row (a page of one).
        assert!(calls(&after, "get_connection") > calls(&before, "get_connection"));
        assert!(calls(&after, "page_connections") >= calls(&before, "page_connections") + 2);
        for name in ["get_connection", "page_connections"] {
            let op = after.store.iter().find(|o| o.op == name).unwrap();
            assert_eq!(op.latency.count, op.calls, "every call timed");
        }
        let usage = c.key_usage().unwrap();
        assert_eq!(usage.active_key, "k1");
        assert!(usage.active_seals >= 1);
        assert_eq!(usage.seal_limit, broked_crypto::ROTATE_AFTER_SEALS);
        assert_eq!(usage.sealed_values, [("k1".to_owned(), 1)]);
    }

    /// The engine's error kind when the database cannot be read: Unavailable, for every
    /// call; and `ready` says so too. Put back, the same handle works again.
    #[test]
    fn an_unreadable_database_is_unavailable_and_recovers() {
        let (dir, db, c) = open();
        c.ready().unwrap();
        let aside = dir.path().join("aside");
        std::fs::create_dir(&aside).unwrap();
        let side = |suffix: &str| std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        for suffix in ["", "-wal", "-shm"] {
            std::fs::rename(side(suffix), aside.join(format!("db{suffix}"))).unwrap();
        }
        std::fs::create_dir(&db).unwrap();
        assert_eq!(c.get("c").unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(c.list(None).unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(c.resolve("c").unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(c.ready().unwrap_err().kind(), ErrorKind::Unavailable);
        let failed = c.metrics();
        assert!(
            failed
                .store
                .iter()
                .any(|o| o.op == "page_connections" && o.unavailable > 0),
            "{failed:?}"
        );
        std::fs::remove_dir(&db).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            std::fs::rename(aside.join(format!("db{suffix}")), side(suffix)).unwrap();
        }
        assert_eq!(c.get("c").unwrap().conn_id.as_str(), "c");
        c.ready().unwrap();
    }

    /// `ready` checks the key file on disk: another database's key file is a mismatch.
    #[test]
    fn ready_fails_on_a_key_file_that_is_not_the_databases() {
        let (_dir, db, c) = open();
        let (_other_dir, other_db, _other) = open();
        let key = broked_crypto::Keyring::path_for_db(&db);
        std::fs::copy(broked_crypto::Keyring::path_for_db(&other_db), &key).unwrap();
        assert!(matches!(c.ready(), Err(Error::KeyMismatch { .. })));
    }
}
