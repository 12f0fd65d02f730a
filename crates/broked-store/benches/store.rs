//! The SQLite store under concurrency (issue 19): durable creates from one and from 16
//! threads (group commit) — the row alone, with its seal count and audit record in its
//! transaction, and as the three writes a create was before — and a single-row read while
//! another thread writes (the read pool).
//! Figures go to docs/BENCHMARKS.md with the command that produced them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use broked_store::{AuditMac, AuditRecord, Sealed, SqliteStore, Store, StoredConnection, WriteLog};
use criterion::{Criterion, criterion_group, criterion_main};

fn row(id: &str) -> StoredConnection {
    StoredConnection {
        conn_id: id.into(),
        conn_type: "postgres".into(),
        host: Some("db.example.com".into()),
        port: Some(5432),
        schema: Some("mydb".into()),
        login: Some("etl_user".into()),
        password: Some(Sealed {
            key_id: 1,
            blob: vec![7; 46],
        }),
        extra: Some(Sealed {
            key_id: 1,
            blob: vec![9; 52],
        }),
        description: None,
        created_at: "2026-12-10T10:00:00Z".into(),
        updated_at: "2026-12-10T10:00:00Z".into(),
        updated_by: Some("bench".into()),
        changed: Vec::new(),
        version: 1,
    }
}

fn open() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("broked.db")).unwrap();
    store.add_key_check(1, "check-1").unwrap();
    for i in 0..1000 {
        store
            .insert_connection(&row(&format!("conn-{i:04}")))
            .unwrap();
    }
    (dir, Arc::new(store))
}

/// How a create writes: the row alone; the row with its seal count and audit record in its
/// transaction (a [`WriteLog`], issue 19); or, as before issue 19, three writes — the row, the
/// seal count, the audit record.
#[derive(Clone, Copy)]
enum Create {
    Row,
    Logged,
    ThreeWrites,
}

/// A create's audit record (the store assigns seq and MAC).
fn record(id: &str) -> AuditRecord {
    AuditRecord {
        at: "2026-12-10T10:00:00Z".into(),
        actor: "bench".into(),
        action: "create".into(),
        conn_id: Some(id.into()),
        fields: "type,host,port,schema,login,password,extra".into(),
        outcome: "ok".into(),
        value_hashes: format!("hmac-sha256:{}", "ab".repeat(32)),
        ..AuditRecord::default()
    }
}

/// A stand-in for the library's HMAC-SHA256 (µs beside a commit's fsync).
fn mac() -> AuditMac {
    Arc::new(|prev: &str, r: &AuditRecord| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (prev, r.seq, &r.conn_id).hash(&mut h);
        format!("{:064x}", u128::from(h.finish()))
    })
}

fn create(store: &SqliteStore, how: Create, id: &str) {
    match how {
        Create::Row => {
            store.insert_connection(&row(id)).unwrap();
        }
        Create::Logged => {
            let log = WriteLog {
                seals: vec![(1, 2)],
                audit: vec![record(id)],
                mac: Some(mac()),
            };
            store.insert_connection_logged(&row(id), &log).unwrap();
        }
        Create::ThreeWrites => {
            store.insert_connection(&row(id)).unwrap();
            store.count_seals(1, 2).unwrap();
            store.append_audit(vec![record(id)], mac()).unwrap();
        }
    }
}

/// `iters` creates spread over `clients` threads; the time of all of them.
fn creates(
    store: &Arc<SqliteStore>,
    next: &AtomicU64,
    how: Create,
    clients: u64,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..clients {
            let n = iters / clients + u64::from(t < iters % clients);
            s.spawn(move || {
                for _ in 0..n {
                    let id = format!("new-{}", next.fetch_add(1, Ordering::Relaxed));
                    create(store, how, &id);
                }
            });
        }
    });
    start.elapsed()
}

fn bench(cr: &mut Criterion) {
    let (_dir, store) = open();
    let next = AtomicU64::new(0);
    let mut g = cr.benchmark_group("sqlite");
    g.sample_size(10);
    g.bench_function("create_durable_1_client", |b| {
        b.iter_custom(|iters| creates(&store, &next, Create::Row, 1, iters))
    });
    g.bench_function("create_durable_16_clients", |b| {
        b.iter_custom(|iters| creates(&store, &next, Create::Row, 16, iters))
    });
    // Issue 19: the seal count and the audit record in the create's transaction, against
    // the three writes they were before.
    for (name, how) in [
        ("create_logged", Create::Logged),
        ("create_three_writes", Create::ThreeWrites),
    ] {
        for clients in [1, 16] {
            g.bench_function(format!("{name}_{clients}_clients"), |b| {
                b.iter_custom(|iters| creates(&store, &next, how, clients, iters))
            });
        }
    }
    g.bench_function("get", |b| {
        b.iter(|| store.get_connection("conn-0500").unwrap().unwrap())
    });
    // A read while another thread creates durably, one after another.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                store.insert_connection(&row(&format!("bg-{i}"))).unwrap();
            }
        })
    };
    g.bench_function("get_while_writing", |b| {
        b.iter(|| store.get_connection("conn-0500").unwrap().unwrap())
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
