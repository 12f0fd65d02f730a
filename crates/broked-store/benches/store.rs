//! The SQLite store under concurrency (issue 19): durable creates from one and from 16
//! threads (group commit), and a single-row read while another thread writes (the read pool).
//! Figures go to docs/BENCHMARKS.md with the command that produced them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use broked_store::{Sealed, SqliteStore, Store, StoredConnection};
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

/// `iters` creates spread over `clients` threads; the time of all of them.
fn creates(store: &Arc<SqliteStore>, next: &AtomicU64, clients: u64, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..clients {
            let n = iters / clients + u64::from(t < iters % clients);
            s.spawn(move || {
                for _ in 0..n {
                    let id = format!("new-{}", next.fetch_add(1, Ordering::Relaxed));
                    store.insert_connection(&row(&id)).unwrap();
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
        b.iter_custom(|iters| creates(&store, &next, 1, iters))
    });
    g.bench_function("create_durable_16_clients", |b| {
        b.iter_custom(|iters| creates(&store, &next, 16, iters))
    });
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
