//! The library's speed goals (issue 4): resolve warm, create (durable), list 10,000 connections,
//! rotate 100,000 secrets. Figures go to docs/BENCHMARKS.md with the command that produced them.

use std::time::{Duration, Instant};

use broked_connections::{ConnectionInput, Connections};
use criterion::{Criterion, criterion_group, criterion_main};

fn input(id: &str) -> ConnectionInput {
    ConnectionInput {
        conn_id: Some(id.into()),
        conn_type: Some("postgres".into()),
        host: Some("db.example.com".into()),
        port: Some(5432),
        schema: Some("mydb".into()),
        login: Some("etl_user".into()),
        password: Some("bench-password-123".into()),
        extra: Some(r#"{"sslmode":"require"}"#.into()),
        description: None,
    }
}

fn fill(c: &Connections, n: usize) {
    let rows: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"conn_id": format!("c{i:06}"), "type": "postgres", "host": "db", "port": 5432,
                "login": "u", "password": "bench-password-123", "extra": {"sslmode": "require"}})
        })
        .collect();
    c.import(serde_json::Value::Array(rows), false).unwrap();
}

fn bench(cr: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let c = Connections::open(dir.path().join("broked.db")).unwrap();
    c.create(input("prod-postgres")).unwrap();
    c.resolve("prod-postgres").unwrap();
    cr.bench_function("resolve_warm", |b| {
        b.iter(|| c.resolve("prod-postgres").unwrap())
    });
    // For comparison (issue 14): the alternative change check through SQLite itself — a
    // `PRAGMA data_version` statement on a locked connection plus the two `stat`s that find a
    // replaced file — without the rest of a resolve.
    let db = dir.path().join("broked.db");
    let check = std::sync::Mutex::new(rusqlite::Connection::open(&db).unwrap());
    cr.bench_function("check_data_version_and_stat", |b| {
        b.iter(|| {
            let _ = std::fs::metadata(&db).unwrap();
            let _ = std::fs::metadata(dir.path().join("broked.db-shm")).unwrap();
            let c = check.lock().unwrap();
            c.prepare_cached("PRAGMA data_version")
                .unwrap()
                .query_row([], |r| r.get::<_, i64>(0))
                .unwrap()
        })
    });
    resolve_warm_postgres(cr);

    let mut i = 0u64;
    cr.bench_function("create_durable", |b| {
        b.iter(|| {
            i += 1;
            c.create(input(&format!("new-{i}"))).unwrap()
        })
    });

    // Issue 19: 16 threads creating at once through one handle (group commit: the creates
    // that arrive while a commit flushes share the next one). Time per create.
    let next = std::sync::atomic::AtomicU64::new(0);
    cr.bench_function("create_durable_16_clients", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..16 {
                    let (c, next) = (&c, &next);
                    s.spawn(move || {
                        for _ in 0..iters / 16 + u64::from(t < iters % 16) {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            c.create(input(&format!("many-{n}"))).unwrap();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });

    let dir10k = tempfile::tempdir().unwrap();
    let c10k = Connections::open(dir10k.path().join("broked.db")).unwrap();
    fill(&c10k, 10_000);
    let mut g = cr.benchmark_group("10k");
    g.sample_size(10);
    g.bench_function("list_10000", |b| b.iter(|| c10k.list(None).unwrap()));
    g.finish();

    let mut g = cr.benchmark_group("100k");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    // 50,000 connections with a password and an extra each = 100,000 secrets.
    let dir100k = tempfile::tempdir().unwrap();
    let c100k = Connections::open(dir100k.path().join("broked.db")).unwrap();
    fill(&c100k, 50_000);
    g.bench_function("rotate_100000_secrets", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let report = c100k.rotate(|_, _| {}).unwrap();
                total += start.elapsed();
                assert_eq!(report.resealed, 100_000);
            }
            total
        })
    });
    g.finish();
}

/// Issue 14: a warm resolve on the PostgreSQL store (the listener's counter, no round trip),
/// when the test PostgreSQL is configured (`broked_testenv::postgres()`), in a schema of its
/// own.
fn resolve_warm_postgres(cr: &mut Criterion) {
    let Some(pg) = broked_testenv::postgres() else {
        eprintln!("resolve_warm_postgres: SKIPPED, no test PostgreSQL configured");
        return;
    };
    let schema = format!("bench_{}", std::process::id());
    let psql = |sql: &str| {
        let ok = std::process::Command::new("psql")
            .args([
                "-h",
                pg.get("HOST"),
                "-p",
                pg.get("PORT"),
                "-U",
                pg.get("USER"),
            ])
            .args(["-d", pg.get("DB"), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .env("PGPASSWORD", pg.get("PASSWORD"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "psql {sql}");
    };
    psql(&format!("CREATE SCHEMA {schema}"));
    let url = format!(
        "postgres://{}:{}@{}:{}/{}?options=-c%20search_path%3D{schema}",
        pg.get("USER"),
        pg.get("PASSWORD"),
        pg.get("HOST"),
        pg.get("PORT"),
        pg.get("DB")
    );
    let dir = tempfile::tempdir().unwrap();
    let mut options = broked_connections::Options::default();
    options.key_file = Some(dir.path().join("bench.key"));
    let c = Connections::open_with(&url, options).unwrap();
    c.create(input("prod-postgres")).unwrap();
    // Until the listener is up, each resolve asks the database.
    std::thread::sleep(Duration::from_secs(1));
    c.resolve("prod-postgres").unwrap();
    cr.bench_function("resolve_warm_postgres", |b| {
        b.iter(|| c.resolve("prod-postgres").unwrap())
    });
    drop(c);
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
