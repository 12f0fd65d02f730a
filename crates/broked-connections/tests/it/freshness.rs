//! Issue 14: a warm resolve never returns a value older than the newest one committed when it
//! began — whatever other processes do to the SQLite file meanwhile.
//!
//! "Another process" is this test binary run again: [`child`] does one step (update, tear the
//! WAL-index header, checkpoint, VACUUM, backup, restore) and exits, so that every file
//! descriptor it opens and every lock it takes belong to a process of their own.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use broked_connections::{
    ConnectionInput, ConnectionUpdate, Connections, SecretUpdate, UpdateMode,
};

const CHILD: &str = "BROKED_IT_FRESH_CHILD";

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
        c.create(ConnectionInput {
            conn_id: Some("c".into()),
            conn_type: Some("postgres".into()),
            host: Some("db.example.com".into()),
            login: Some("etl".into()),
            password: Some("v0".into()),
            ..Default::default()
        })
        .unwrap();
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
            // counter again at 0; an update is two commits (the row, the seal count), so an
            // odd distance takes one plain commit first.
            let target: u32 = target.parse().unwrap();
            let shm = std::fs::File::open(&shm_path).unwrap();
            let c = Connections::open(&db).unwrap();
            if target.saturating_sub(i_change(&shm)) % 2 == 1 {
                rusqlite::Connection::open(&db)
                    .unwrap()
                    .execute_batch("INSERT OR REPLACE INTO meta (name, value) VALUES ('t', 'x')")
                    .unwrap();
            }
            let mut last = String::new();
            for i in 0..target {
                if i_change(&shm) >= target {
                    break;
                }
                last = format!("{prefix}-{i}");
                set_password(&c, &last);
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
        other => panic!("unknown step {other:?}"),
    }
}

/// `(inode, start, end)` of every POSIX lock this process holds, from `/proc/locks`.
fn own_locks() -> Vec<(u64, u64, u64)> {
    let me = std::process::id().to_string();
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) != Some(&"POSIX") || f.get(4) != Some(&me.as_str()) {
                return None;
            }
            let ino = f[5].rsplit(':').next()?.parse().ok()?;
            Some((ino, f[6].parse().ok()?, f[7].parse().ok()?))
        })
        .collect()
}

/// Whether this process holds SQLite's DMS lock (byte 128 of `-shm`), without which another
/// process rebuilds the WAL index under it.
fn holds_dms_lock(shm: &Path) -> bool {
    let ino = std::fs::metadata(shm).unwrap().ino();
    own_locks()
        .iter()
        .any(|&(i, start, end)| i == ino && start <= 128 && 128 <= end)
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
