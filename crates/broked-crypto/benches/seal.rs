//! Seal and open of a 32-byte password (target: ≤ 1 µs each).
//!
//! `cargo bench -p broked-crypto --bench seal -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use broked_crypto::{Aad, Keyring};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn seal_open(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (ring, _) = Keyring::open_or_create(&dir.path().join("bench.db.key")).unwrap();
    let aad = Aad::new("warehouse", "password");
    let password = [b'p'; 32];
    let blob = ring.seal(aad, &password).unwrap();

    let mut group = c.benchmark_group("password_32B");
    group.throughput(Throughput::Bytes(password.len() as u64));
    group.bench_function("seal", |b| {
        b.iter(|| ring.seal(black_box(aad), black_box(&password)).unwrap())
    });
    group.bench_function("open", |b| {
        b.iter(|| ring.open_sealed(black_box(aad), black_box(&blob)).unwrap())
    });
    group.bench_function("reseal", |b| {
        b.iter(|| ring.reseal(black_box(aad), black_box(&blob)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
