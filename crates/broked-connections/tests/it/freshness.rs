//! Issue 14: a warm resolve never returns a value older than the newest one committed when it
//! began — whatever other processes do to the SQLite file meanwhile.
//!
//! "Another process" is this test binary run again: [`child`] does one step (update, tear the
//! WAL-index header, checkpoint, VACUUM, backup, restore) and exits, so that every file
//! descriptor it opens and every lock it takes belong to a process of their own.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use broked_connections::{
    ConnectionInput, ConnectionUpdate, Connections, SecretUpdate, UpdateMode,
};
use broked_testenv::holds_dms_lock;

const CHILD: &str = "BROKED_IT_FRESH_CHILD";

/// The connection `c` whose password is `v0`.
fn connection_c() -> ConnectionInput {
    ConnectionInput {
        conn_id: Some("c".into()),
        conn_type: Some("postgres".into()),
        host: Some("db.example.com".into()),
        login: Some("etl".into()),
        password: Some("v0".into()),
        ..Default::default()
    }
}

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Db {
    /// A database with the connection `c` whose password is `v0`.
    fn new() -> (Db, Connections) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broked.db");
        let c = Connections::open(&path).unwrap();
        c.create(connection_c()).unwrap();
        (Db { _dir: dir, path }, c)
    }

    fn side(&self, suffix: &str) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    }

    /// Runs one step in a child process; returns what it printed after `RESULT `.
    fn child(&self, step: &[&str]) -> String {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "freshness::child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, step.join("\n"))
            .env("BROKED_IT_FRESH_DB", &self.path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{step:?}: {text}"
        );
        text.lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
            .unwrap_or_default()
            .to_owned()
    }
}

fn password(c: &Connections) -> String {
    let r = c.resolve("c").unwrap();
    assert!(r.stale.is_none());
    r.connection.password.as_ref().unwrap().expose().to_owned()
}

fn set_password(c: &Connections, value: &str) {
    let update = ConnectionUpdate {
        password: SecretUpdate::Set(value.into()),
        ..Default::default()
    };
    c.update("c", update, UpdateMode::Merge).unwrap();
}

/// `iChange` of the WAL-index header (copy 1), read through a descriptor that stays open
/// until this (child) process exits: closing it would drop the process's SQLite locks.
fn i_change(shm: &std::fs::File) -> u32 {
    let mut b = [0u8; 4];
    shm.read_exact_at(&mut b, 8).unwrap();
    u32::from_ne_bytes(b)
}

/// One step in a child process (see the module docs); does nothing in a normal test run.
#[test]
fn child() {
    let Ok(step) = std::env::var(CHILD) else {
        return;
    };
    let db = PathBuf::from(std::env::var_os("BROKED_IT_FRESH_DB").unwrap());
    let mut shm_path = db.as_os_str().to_owned();
    shm_path.push("-shm");
    let step: Vec<&str> = step.split('\n').collect();
    match step.as_slice() {
        ["update", values @ ..] => {
            let c = Connections::open(&db).unwrap();
            for v in values {
                set_password(&c, v);
            }
        }
        ["i_change"] => {
            let shm = std::fs::File::open(&shm_path).unwrap();
            println!("\nRESULT {}", i_change(&shm));
            std::mem::forget(shm);
        }
        ["tear"] => {
            // A writer killed between the two header copies: copy 2 written, copy 1 not.
            let shm = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&shm_path)
                .unwrap();
            let mut copy = [0u8; 48];
            shm.read_exact_at(&mut copy, 0).unwrap();
            copy[8] = copy[8].wrapping_add(1); // iChange
            copy[16] = copy[16].wrapping_add(1); // mxFrame
            shm.write_all_at(&copy, 48).unwrap();
            std::mem::forget(shm);
        }
        ["commit_until", target, prefix] => {
            // Commits until the header's change counter is back at `target`: the value the
            // cache of the parent last saw. Opening runs SQLite's recovery, which starts the
            // counter again at 0. An update is several commits (the row, the seal count, its
            // audit record): updates while a whole one fits, then plain commits to the target.
            let target: u32 = target.parse().unwrap();
            let shm = std::fs::File::open(&shm_path).unwrap();
            let c = Connections::open(&db).unwrap();
            // Each plain commit writes a new value: SQLite commits a REPLACE of an identical
            // row without dirtying a page, and such a commit does not move the counter.
            let plain = |n: u32| {
                rusqlite::Connection::open(&db)
                    .unwrap()
                    .execute(
                        "INSERT OR REPLACE INTO meta (name, value) VALUES ('t', ?1)",
                        [n.to_string()],
                    )
                    .unwrap();
            };
            let mut last = String::new();
            let mut per_update = 0;
            for i in 0..target {
                let before = i_change(&shm);
                if before + per_update.max(1) > target {
                    break;
                }
                last = format!("{prefix}-{i}");
                set_password(&c, &last);
                per_update = per_update.max(i_change(&shm) - before);
            }
            let mut n = 0;
            while i_change(&shm) < target {
                n += 1;
                plain(n);
            }
            println!("\nRESULT {last} {}", i_change(&shm));
            std::mem::forget(shm);
        }
        ["sql", statement] => {
            rusqlite::Connection::open(&db)
                .unwrap()
                .execute_batch(statement)
                .unwrap();
        }
        ["backup", to] => {
            let src = rusqlite::Connection::open(&db).unwrap();
            src.backup(rusqlite::MAIN_DB, to, None).unwrap();
        }
        ["restore", from] => {
            let mut dst = rusqlite::Connection::open(&db).unwrap();
            dst.restore(
                rusqlite::MAIN_DB,
                from,
                None::<fn(rusqlite::backup::Progress)>,
            )
            .unwrap();
        }
        ["pg_resolve", url, key, out, seconds] => pg_resolve_loop(url, key, out, seconds),
        ["stress_write", writer, stop] => {
            let c = Connections::open(&db).unwrap();
            let mut i = 0u64;
            while !Path::new(stop).exists() {
                i += 1;
                set_password(&c, &format!("{writer}-{i}"));
                if i % 100 == 0 {
                    // Reset the WAL now and then, as a checkpointing process would.
                    let _ = rusqlite::Connection::open(&db)
                        .unwrap()
                        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
                }
            }
            println!("\nRESULT {i}");
        }
        ["stress_resolve", stop, last] => stress_resolve(&db, stop, last),
        other => panic!("unknown step {other:?}"),
    }
}

#[test]
fn a_second_handle_closed_in_the_process_loses_no_lock_and_no_update() {
    let (db, a) = Db::new();
    assert_eq!(password(&a), "v0");
    let b = Connections::open(&db.path).unwrap();
    assert_eq!(password(&b), "v0");
    drop(b);
    assert!(
        holds_dms_lock(&db.side("-shm")),
        "closing B dropped the lock"
    );
    db.child(&["update", "v1", "v2"]);
    assert_eq!(password(&a), "v2");
    db.child(&["update", "v3"]);
    assert_eq!(password(&a), "v3");
    assert!(holds_dms_lock(&db.side("-shm")));
}

#[test]
fn a_torn_header_and_recovery_never_bring_back_an_old_value() {
    let (db, a) = Db::new();
    set_password(&a, "v1");
    assert_eq!(password(&a), "v1");
    let cached: u32 = db.child(&["i_change"]).parse().unwrap();
    db.child(&["tear"]);
    let out = db.child(&["commit_until", &cached.to_string(), "after-tear"]);
    let (newest, reached) = out.split_once(' ').unwrap();
    assert_eq!(
        reached,
        cached.to_string(),
        "the header's change counter came back to the cached one"
    );
    assert_eq!(password(&a), newest);
}

#[test]
fn checkpoints_and_wal_restarts_are_seen() {
    let (db, a) = Db::new();
    assert_eq!(password(&a), "v0");
    db.child(&["sql", "PRAGMA wal_checkpoint(TRUNCATE);"]);
    assert_eq!(password(&a), "v0");
    db.child(&["update", "v1"]);
    assert_eq!(password(&a), "v1");
    for i in 2..6 {
        db.child(&["sql", "PRAGMA wal_checkpoint(RESTART);"]);
        db.child(&["update", &format!("v{i}")]);
        assert_eq!(password(&a), format!("v{i}"));
    }
}

#[test]
fn a_vacuum_is_seen() {
    let (db, a) = Db::new();
    assert_eq!(password(&a), "v0");
    db.child(&["update", "v1"]);
    db.child(&["sql", "VACUUM;"]);
    assert_eq!(password(&a), "v1");
    db.child(&["update", "v2"]);
    db.child(&["sql", "VACUUM;"]);
    db.child(&["sql", "PRAGMA wal_checkpoint(TRUNCATE);"]);
    assert_eq!(password(&a), "v2");
}

#[test]
fn a_restore_with_the_backup_api_is_seen() {
    let (db, a) = Db::new();
    let backup = db.side(".bak");
    assert_eq!(password(&a), "v0");
    db.child(&["update", "v1"]);
    db.child(&["backup", backup.to_str().unwrap()]);
    db.child(&["update", "v2"]);
    assert_eq!(password(&a), "v2");
    db.child(&["restore", backup.to_str().unwrap()]);
    assert_eq!(
        password(&a),
        "v1",
        "the restored value is the newest committed"
    );
}

#[test]
fn a_database_file_replaced_by_a_copy_is_seen() {
    let (db, a) = Db::new();
    let copy = db.side(".copy");
    assert_eq!(password(&a), "v0");
    db.child(&["update", "v1"]);
    db.child(&["sql", &format!("VACUUM INTO '{}';", copy.display())]);
    db.child(&["update", "v2"]);
    assert_eq!(password(&a), "v2");
    db.child(&["sql", "PRAGMA wal_checkpoint(TRUNCATE);"]);
    std::fs::rename(&copy, &db.path).unwrap();
    // The file the path names now holds v1: that, or a clear error — never v2.
    match a.resolve("c") {
        Ok(r) => assert_eq!(r.connection.password.as_ref().unwrap().expose(), "v1"),
        Err(e) => assert!(e.to_string().contains("replaced"), "{e}"),
    }
    db.child(&["update", "v3"]);
    assert_eq!(password(&a), "v3");
    assert!(holds_dms_lock(&db.side("-shm")));
}

#[test]
fn an_unreadable_database_fails_clearly_and_max_stale_marks_the_last_value() {
    use broked_connections::Options;
    let (db, plain) = Db::new();
    let mut options = Options::default();
    options.max_stale = Some(std::time::Duration::from_millis(400));
    let tolerant = Connections::open_with(&db.path, options).unwrap();
    assert_eq!(password(&plain), "v0");
    assert_eq!(password(&tolerant), "v0");
    let moved = db.side(".moved");
    std::fs::rename(&db.path, &moved).unwrap();

    let err = plain.resolve("c").unwrap_err();
    assert!(err.to_string().contains("broked.db"), "{err}");
    let r = tolerant.resolve("c").unwrap();
    let stale = r.stale.as_ref().expect("marked stale");
    assert!(stale.age < std::time::Duration::from_millis(400));
    assert!(stale.reason.contains("broked.db"), "{}", stale.reason);
    assert_eq!(r.connection.password.as_ref().unwrap().expose(), "v0");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        tolerant.resolve("c").is_err(),
        "fails closed after max_stale"
    );

    std::fs::rename(&moved, &db.path).unwrap();
    assert_eq!(password(&tolerant), "v0");
    assert!(tolerant.resolve("c").unwrap().stale.is_none());
}

/// A resolver process on the PostgreSQL store: two threads resolve `c` until the file
/// `{out}.stop` exists (at most `seconds`), each checks that the versions it sees never go back, and records every change it
/// sees as a line `old_began old end new` in `out`: when the last resolve that returned the
/// old version began, that version, when the first one that returned the new version ended,
/// and the new version (wall-clock nanoseconds, comparable across processes).
fn pg_resolve_loop(url: &str, key: &str, out: &str, seconds: &str) {
    let mut options = broked_connections::Options::default();
    options.key_file = Some(key.into());
    let c = Connections::open_with(url, options).unwrap();
    let stop = format!("{out}.stop");
    let stop = Path::new(&stop);
    let until =
        std::time::Instant::now() + std::time::Duration::from_secs(seconds.parse().unwrap());
    let lines: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = Vec::new();
                    let (mut last, mut last_start) = (0u64, 0u128);
                    while std::time::Instant::now() < until && !stop.exists() {
                        let start = now_ns();
                        let v = version(&c);
                        let end = now_ns();
                        assert!(v >= last, "went back from v{last} to v{v}");
                        if v > last {
                            seen.push(format!("{last_start} {last} {end} {v}"));
                            last = v;
                        }
                        last_start = start;
                        std::thread::sleep(std::time::Duration::from_micros(300));
                    }
                    seen
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    std::fs::write(out, lines.join("\n")).unwrap();
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The `N` of the password `vN` that `c` resolves to.
fn version(c: &Connections) -> u64 {
    let r = c.resolve("c").unwrap();
    r.connection.password.as_ref().unwrap().expose()[1..]
        .parse()
        .unwrap()
}

/// Issue 14, PostgreSQL: a writer replica (this process) and two resolver processes on the
/// same store. 1,000 updates, then 1,000 more while the resolvers' listening connections are
/// killed every 100 updates. Every resolver sees the versions in order, and no resolve that
/// began well after a write was acknowledged (the listener's heartbeat is 1 s) returns an
/// older value. The delay until a write reaches them (goal: 100 ms at p99) is printed and
/// recorded in docs/BENCHMARKS.md.
#[test]
fn postgres_resolvers_in_other_processes_see_every_write_in_order_and_fast() {
    let Some(pg) = super::PgSchema::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("shared.key");
    let mut options = broked_connections::Options::default();
    options.key_file = Some(key.clone());
    let a = Connections::open_with(&pg.url, options).unwrap();
    a.create(connection_c()).unwrap();
    let seconds = 120;
    let resolvers: Vec<_> = (0..2)
        .map(|i| {
            let out = dir.path().join(format!("resolver-{i}.txt"));
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "freshness::child", "--nocapture"])
                .env(
                    CHILD,
                    [
                        "pg_resolve",
                        &pg.url,
                        key.to_str().unwrap(),
                        out.to_str().unwrap(),
                        &seconds.to_string(),
                    ]
                    .join("\n"),
                )
                .env("BROKED_IT_FRESH_DB", "unused")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    // Let the resolvers open, cache v0 and start listening.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut acked = vec![0u128]; // acked[i]: when the write of vI was acknowledged
    let started = std::time::Instant::now();
    for i in 1..=2000u64 {
        if i > 1000 && i % 100 == 1 {
            pg.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'broked-listener' AND pid <> pg_backend_pid()",
            );
        }
        set_password(&a, &format!("v{i}"));
        acked.push(now_ns());
    }
    let writing = started.elapsed();
    // Let the last notifications arrive, then stop the resolvers.
    std::thread::sleep(std::time::Duration::from_secs(1));
    for (_, out) in &resolvers {
        std::fs::write(format!("{}.stop", out.display()), "").unwrap();
    }
    assert!(
        writing < std::time::Duration::from_secs(seconds - 10),
        "the writes took {writing:?}: the resolvers stopped before them"
    );
    let mut delays = Vec::new();
    // The longest time a resolve that began after a write was acknowledged still returned
    // an older value: the notification delay as a resolver meets it.
    let mut max_lag = 0u128;
    for (child, out) in resolvers {
        let output = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && text.contains("1 passed"),
            "{text}"
        );
        let mut first_seen = vec![None::<u128>; acked.len()];
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            let f: Vec<u128> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let (old_began, old, new_ended, new) = (f[0], f[1] as usize, f[2], f[3] as usize);
            // Versions skipped over count as seen when a newer one is.
            for seen in first_seen.iter_mut().take(new + 1) {
                seen.get_or_insert(new_ended);
            }
            // The last resolve that returned `old` began this long after `old + 1` was
            // acknowledged.
            if old_began > 0 {
                max_lag = max_lag.max(old_began.saturating_sub(acked[old + 1]));
            }
        }
        for (i, seen) in first_seen.iter().enumerate().skip(1) {
            let seen = seen.unwrap_or_else(|| panic!("v{i} never seen by a resolver"));
            delays.push(seen.saturating_sub(acked[i]));
        }
    }
    delays.sort();
    let at = |q: usize| std::time::Duration::from_nanos(delays[delays.len() * q / 100] as u64);
    let (p50, p99) = (at(50), at(99));
    let max = std::time::Duration::from_nanos(*delays.last().unwrap() as u64);
    let max_lag = std::time::Duration::from_nanos(max_lag as u64);
    eprintln!(
        "PG freshness: {} writes in {writing:?}; from a write's acknowledgement until the \
         resolvers return it: p50 {p50:?}, p99 {p99:?}, max {max:?}; longest a resolve that \
         began after an acknowledged write still returned the older value: {max_lag:?}",
        acked.len() - 1
    );
    // The design bound is the listener's 1 s heartbeat; the margin is for a loaded CI machine
    // (two cores, every test binary at once), where a thread can wait for a core.
    assert!(
        max_lag < std::time::Duration::from_secs(3),
        "a resolve began {max_lag:?} after a newer write was acknowledged"
    );
    // The 100 ms p99 goal is a speed goal: measured and printed here, recorded in
    // docs/BENCHMARKS.md, not asserted (DEVELOPERS.md: speed is checked by benchmarks, never
    // by timed tests; seen at 106 ms once under a load average of 6.7 on two cores).
    let _ = p99;
}

/// A resolver process of the stress test: two threads resolve `c` until `stop` exists. A
/// password is `{writer}-{n}`, and one writer's `n` only grows, so a thread must never see a
/// writer's `n` go back. When `last` exists (every writer has exited; it holds the newest
/// committed password), the next resolve of every thread must return exactly that.
/// Meanwhile a third thread opens and drops a second `Connections` on the same database
/// every 50 ms, as an engine might (this once dropped SQLite's locks for the whole process).
fn stress_resolve(db: &Path, stop: &str, last: &str) {
    let c = Connections::open(db).unwrap();
    let resolves: u64 = std::thread::scope(|s| {
        s.spawn(|| {
            while !Path::new(last).exists() {
                let second = Connections::open(db).unwrap();
                second.resolve("c").unwrap();
                drop(second);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut highest = std::collections::HashMap::<String, u64>::new();
                    let mut n = 0u64;
                    loop {
                        let final_value = std::fs::read_to_string(last).ok();
                        let r = c.resolve("c").unwrap();
                        let pw = r.connection.password.as_ref().unwrap().expose().to_owned();
                        n += 1;
                        if let Some(want) = final_value.filter(|v| !v.is_empty()) {
                            assert_eq!(pw, want, "after every writer exited");
                            return n;
                        }
                        if let Some((writer, i)) = pw.split_once('-') {
                            let i: u64 = i.parse().unwrap();
                            let top = highest.entry(writer.to_owned()).or_default();
                            assert!(i >= *top, "{writer}: went back from {top} to {i}");
                            *top = i;
                        }
                        if Path::new(stop).exists() {
                            return n;
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    println!("\nRESULT {resolves}");
}

/// Issue 14: writers and resolvers in several processes on one SQLite file for a bounded
/// time (`BROKED_STRESS_SECS`, default 5 s), with WAL resets and second handles opened and
/// dropped in the resolver processes: every value each resolver thread sees is in order per
/// writer, and once the writers have exited every resolver returns the newest password at
/// once.
#[test]
fn stress_writers_and_resolvers_in_several_processes() {
    let (db, a) = Db::new();
    set_password(&a, "w0-0");
    drop(a);
    let stop = db.side(".stop");
    let last = db.side(".last");
    let secs: u64 = std::env::var("BROKED_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let spawn = |step: &[&str]| {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "freshness::child", "--nocapture"])
            .env(CHILD, step.join("\n"))
            .env("BROKED_IT_FRESH_DB", &db.path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (stop_s, last_s) = (stop.to_str().unwrap(), last.to_str().unwrap());
    let resolvers: Vec<_> = (0..3)
        .map(|_| spawn(&["stress_resolve", "/nonexistent/never", last_s]))
        .collect();
    let writers: Vec<_> = (1..=2)
        .map(|w| spawn(&["stress_write", &format!("w{w}"), stop_s]))
        .collect();
    std::thread::sleep(std::time::Duration::from_secs(secs));
    std::fs::write(&stop, "").unwrap();
    let result = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        text.lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_owned()))
            .unwrap()
    };
    let writes: Vec<u64> = writers
        .into_iter()
        .map(|w| result(w).parse().unwrap())
        .collect();
    // The writers are gone: what is committed now is final.
    let newest = Connections::open(&db.path)
        .unwrap()
        .connection("c")
        .unwrap()
        .password
        .unwrap()
        .expose()
        .to_owned();
    std::fs::write(&last, &newest).unwrap();
    let resolves: Vec<u64> = resolvers
        .into_iter()
        .map(|r| result(r).parse().unwrap())
        .collect();
    eprintln!("stress: {writes:?} writes, {resolves:?} resolves, newest {newest}");
    // SQLite serialises writers: under load one writer can starve the other for the whole
    // run (seen in CI: [840, 1] and [131, 0]); what matters is that writes happened while the
    // resolvers ran and checked every value they saw.
    assert!(writes.iter().sum::<u64>() > 10, "{writes:?}");
    assert!(resolves.iter().all(|&n| n > 100), "{resolves:?}");
}

/// A PostgreSQL cluster of the test's own (`broked_testenv::PgCluster` without TLS, in a
/// temporary directory), which the test may stop and start; removed on drop.
struct PrivateCluster {
    // Dropped in this order: the server stops before its directory is removed.
    cluster: broked_testenv::PgCluster,
    _dir: tempfile::TempDir,
}

impl PrivateCluster {
    /// `None` when the machine has no PostgreSQL server binaries.
    fn new() -> Option<PrivateCluster> {
        let dir = tempfile::tempdir().unwrap();
        let cluster = broked_testenv::PgCluster::start_without_tls(dir.path())?;
        Some(PrivateCluster { cluster, _dir: dir })
    }

    fn start(&self) {
        self.cluster.start_again();
    }

    fn stop(&self) {
        self.cluster.stop();
    }

    fn url(&self) -> String {
        self.cluster.url("")
    }
}

/// Issue 14: PostgreSQL down. By default resolve fails with a clear error; with `max_stale`
/// it returns the last value marked stale, up to that age, then fails closed; once the
/// server is back, resolves are verified (and fresh) again.
#[test]
fn postgres_down_fails_clearly_or_serves_marked_stale_values_up_to_max_stale() {
    // Only where the PostgreSQL service is configured (scripts/test installs it).
    if broked_testenv::postgres().is_none() {
        return;
    }
    let Some(cluster) = PrivateCluster::new() else {
        panic!("PostgreSQL is configured but its server binaries (initdb) are not found");
    };
    let dir = tempfile::tempdir().unwrap();
    let open = |max_stale: Option<std::time::Duration>| {
        let mut options = broked_connections::Options::default();
        options.key_file = Some(dir.path().join("key"));
        options.max_stale = max_stale;
        Connections::open_with(cluster.url(), options).unwrap()
    };
    let plain = open(None);
    let max_stale = std::time::Duration::from_secs(6);
    let tolerant = open(Some(max_stale));
    plain.create(connection_c()).unwrap();
    assert_eq!(password(&plain), "v0");
    assert_eq!(password(&tolerant), "v0");

    cluster.stop();
    let stopped = std::time::Instant::now();
    // Each check of an unreachable server takes up to 2 s (the check's time limit).
    let r = tolerant.resolve("c").unwrap();
    let stale = r.stale.as_ref().expect("marked stale");
    assert!(stale.age < max_stale, "{stale:?}");
    assert!(stale.reason.contains("127.0.0.1"), "{stale:?}");
    assert_eq!(r.connection.password.as_ref().unwrap().expose(), "v0");
    // No write can commit while the server is down; within moments every resolve fails.
    let err = loop {
        match plain.resolve("c") {
            Err(e) => break e,
            Ok(_) => assert!(stopped.elapsed() < std::time::Duration::from_secs(5)),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let text = err.to_string();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains("v0"), "{text}");
    // Right after a failed check, the next ones fail at once (no 2 s wait per resolve).
    let quick = std::time::Instant::now();
    assert!(plain.resolve("c").is_err());
    assert!(
        // Well under the 2 s a check waits, with room for a loaded machine.
        quick.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        quick.elapsed()
    );
    while stopped.elapsed() < max_stale + std::time::Duration::from_secs(1) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        tolerant.resolve("c").is_err(),
        "fails closed after max_stale"
    );

    cluster.start();
    let restarted = std::time::Instant::now();
    set_password_eventually(&plain, "v1");
    loop {
        match tolerant.resolve("c") {
            Ok(r) if r.stale.is_none() => {
                let pw = r.connection.password.as_ref().unwrap().expose().to_owned();
                if pw == "v1" {
                    break;
                }
            }
            _ => {}
        }
        assert!(
            restarted.elapsed() < std::time::Duration::from_secs(10),
            "the write after the restart was not seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The pool reconnects on demand: retry a write for a few seconds after a restart.
fn set_password_eventually(c: &Connections, value: &str) {
    let start = std::time::Instant::now();
    loop {
        let update = ConnectionUpdate {
            password: SecretUpdate::Set(value.into()),
            ..Default::default()
        };
        match c.update("c", update, UpdateMode::Merge) {
            Ok(_) => return,
            Err(e) => assert!(start.elapsed() < std::time::Duration::from_secs(10), "{e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
