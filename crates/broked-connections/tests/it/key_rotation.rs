//! `key rotate` in batches (issue 19): killed midway and finished by the next one, and read and
//! written throughout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// The `meta` setting of a rotation in progress (docs/crypto.md).
const SETTING: &str = "key_rotation";

/// `n` connections with a password and an extra each.
fn many(c: &Connections, n: usize) {
    let rows: Vec<_> = (0..n)
        .map(|i| {
            json!({"conn_id": format!("c{i:05}"), "type": "postgres", "host": format!("db{}", i % 7),
            "login": "u", "password": format!("{PASSWORD}-{i}"), "extra": {"token": EXTRA_VALUE}})
        })
        .collect();
    c.import(serde_json::Value::Array(rows), false).unwrap();
}

/// The rotation's setting as another process sees it.
fn setting(db: &Path) -> Option<String> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("SELECT value FROM meta WHERE name = ?1", [SETTING], |r| {
        r.get(0)
    })
    .ok()
}

fn secrets_per_key(c: &Connections) -> Vec<(String, u64)> {
    c.keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.secrets))
        .collect()
}

/// A rotation killed with SIGKILL once it has committed some batches, not all: every secret
/// still opens (under either key), and the next `rotate` finishes that rotation — the same
/// key, only the values left — rather than starting another.
#[test]
fn a_rotation_killed_midway_is_finished_by_the_next_one() {
    if let Some(db) = std::env::var_os("BROKED_IT_KEY_ROTATION_CHILD") {
        let c = Connections::open(&db).unwrap();
        c.rotate(|_, _| {}).unwrap();
        return;
    }
    // 50,000 rows: 100,000 values in 4 batches of 16,384 rows.
    let n = 50_000;
    for attempt in 1.. {
        let db = Db::new();
        many(&db.open(), n);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "key_rotation::a_rotation_killed_midway_is_finished_by_the_next_one",
            ])
            .env("BROKED_IT_KEY_ROTATION_CHILD", &db.path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed as soon as a batch has committed (the setting names its last row).
        let start = Instant::now();
        let mut midway = None;
        while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(120) {
            if let Some(s) = setting(&db.path).filter(|s| !s.contains(r#""after":null"#)) {
                child.kill().unwrap();
                midway = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.wait().unwrap();
        let Some(stopped) = midway else {
            assert!(
                attempt < 5,
                "the rotation always ended before a batch was seen"
            );
            continue;
        };
        assert!(
            stopped.starts_with(r#"{"after":{"conn_id":"c"#),
            "{stopped}"
        );

        // Readable in between: every value opens, some under k1, some under k2.
        let c = db.open();
        let report = c.check().unwrap();
        assert_eq!((report.checked, report.failures.len()), (2 * n as u64, 0));
        assert_eq!(
            c.connection("c04321").unwrap().password.unwrap().expose(),
            format!("{PASSWORD}-4321")
        );
        let before = secrets_per_key(&c);
        let left = before
            .iter()
            .find(|(k, _)| k == "k1")
            .map_or(0, |(_, n)| *n);
        assert!(
            left > 0 && left < 2 * n as u64,
            "killed midway: {before:?} ({stopped})"
        );

        // The next rotation finishes it: k2 still, only what was left.
        let report = c.rotate(|_, _| {}).unwrap();
        assert_eq!(report.active_key, "k2");
        assert_eq!(report.resealed, left);
        assert!(report.failures.is_empty());
        assert_eq!(
            secrets_per_key(&c),
            [("k1".to_owned(), 0), ("k2".to_owned(), 2 * n as u64)]
        );
        assert_eq!(setting(&db.path), None, "the rotation is done");
        assert_eq!(c.prune().unwrap(), ["k1"]);
        let report = c.check().unwrap();
        assert_eq!((report.checked, report.failures.len()), (2 * n as u64, 0));
        assert_eq!(
            c.connection("c00007").unwrap().extra.unwrap().expose(),
            format!(r#"{{"token":"{EXTRA_VALUE}"}}"#)
        );
        return;
    }
}

/// While one thread rotates, another reads every kind of value and a third writes new and
/// changed connections through the same handle: every read opens and matches, every write
/// lands, and at the end everything is under the new key. (The writer stops halfway through
/// the first pass: an update that keeps a secret copies its sealed bytes as read, so a write
/// after the last pass could leave an old-key value behind — found by the next rotation.)
#[test]
fn reads_and_writes_go_on_during_a_rotation() {
    let db = Db::new();
    let c = db.open();
    let n = 20_000;
    many(&c, n);
    let (stop_writes, writes_stopped, rotated) = (
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    );
    let (reads, writes) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut reads = 0;
            let mut i = 0;
            while !rotated.load(Ordering::Relaxed) {
                // Even rows: the writer changes odd ones.
                i = (i + 7918) % n;
                let id = format!("c{i:05}");
                assert_eq!(
                    c.connection(&id).unwrap().password.unwrap().expose(),
                    format!("{PASSWORD}-{i}")
                );
                assert!(c.resolve(&id).unwrap().uri.expose().contains(EXTRA_VALUE));
                reads += 1;
            }
            reads
        });
        let writer = s.spawn(|| {
            let mut writes = 0;
            while !stop_writes.load(Ordering::Relaxed) {
                c.create(pg(&format!("new-{writes}"))).unwrap();
                let patch = ConnectionUpdate {
                    password: SecretUpdate::Set(format!("changed-{writes}").into()),
                    ..Default::default()
                };
                c.update(
                    &format!("c{:05}", (writes * 26 + 1) % n),
                    patch,
                    UpdateMode::Merge,
                )
                .unwrap();
                writes += 1;
            }
            writes_stopped.store(true, Ordering::Relaxed);
            writes
        });
        let report = c
            .rotate(|done, total| {
                if done * 2 >= total && !stop_writes.swap(true, Ordering::Relaxed) {
                    while !writes_stopped.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
            .unwrap();
        rotated.store(true, Ordering::Relaxed);
        assert_eq!(report.active_key, "k2");
        assert!(report.failures.is_empty());
        (reader.join().unwrap(), writer.join().unwrap())
    });
    assert!(reads > 0 && writes > 0, "{reads} reads, {writes} writes");
    let keys = secrets_per_key(&c);
    assert_eq!(keys[0], ("k1".to_owned(), 0), "{keys:?}");
    let report = c.check().unwrap();
    assert!(report.failures.is_empty(), "{:?}", &report.failures[..1]);
    for w in 0..writes {
        let i = (w * 26 + 1) % n;
        let now = c.connection(&format!("c{i:05}")).unwrap();
        assert!(now.password.unwrap().expose().starts_with("changed-"));
        assert!(c.connection(&format!("new-{w}")).is_ok());
    }
}
