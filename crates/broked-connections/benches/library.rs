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

    let mut i = 0u64;
    cr.bench_function("create_durable", |b| {
        b.iter(|| {
            i += 1;
            c.create(input(&format!("new-{i}"))).unwrap()
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

criterion_group!(benches, bench);
criterion_main!(benches);
