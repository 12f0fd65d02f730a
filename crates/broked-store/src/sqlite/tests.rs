//! SQLite-only behaviour: the file, its pragmas and migrations. The behaviour both backends
//! share is in `crate::tests`.

use std::os::unix::fs::PermissionsExt;

use broked_testenv::holds_dms_lock;

use super::*;
use crate::tests::{Backend, Sqlite, conn, del, with_key};
use crate::{Sealed, Store};

fn temp() -> (Sqlite, SqliteStore) {
    let b = Sqlite::new();
    let store = b.open();
    (b, store)
}

#[test]
fn a_new_file_gets_the_schema_and_the_settings() {
    let (b, store) = temp();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let c = store.lock();
    let pragma = |name: &str| -> String {
        c.query_row(&format!("PRAGMA {name}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| format!("{v:?}"))
        .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
    assert_eq!(pragma("synchronous"), "Integer(2)", "FULL");
    assert_eq!(pragma("foreign_keys"), "Integer(1)");
    assert_eq!(pragma("secure_delete"), "Integer(1)");
    assert_eq!(pragma("busy_timeout"), "Integer(10000)");
    drop(c);
    let mode = std::fs::metadata(b.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "database readable by others: {mode:o}");
}

#[test]
fn an_empty_sqlite_file_from_before_any_migration_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE unrelated (x); PRAGMA user_version = 0;")
            .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert!(store.list_connections(None).unwrap().is_empty());
}

/// Opening a migrated database reads its version and takes no lock (issue 19): a long write
/// of another process (an import of a million rows) does not make an open wait for it, and
/// reads go on beside it.
#[test]
fn opening_a_migrated_database_does_not_wait_for_a_writer() {
    let b = Sqlite::new();
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    drop(store);
    let writer = Connection::open(b.path()).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM connections;")
        .unwrap();
    // Before, the open's migration check began a write transaction: Busy after 100 ms.
    let store = SqliteStore::open_with_timeout(&b.path(), Duration::from_millis(100)).unwrap();
    assert_eq!(
        store.list_connections(None).unwrap().len(),
        1,
        "the commit before"
    );
    // A write still waits for the writer (here: gives up after the busy timeout).
    assert!(matches!(
        store.insert_connection(&conn("b")),
        Err(crate::StoreError::Busy)
    ));
    writer.execute_batch("ROLLBACK").unwrap();
    store.insert_connection(&conn("b")).unwrap();
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    {
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("newer version"), "{err}");
}

#[test]
fn deleted_secrets_do_not_linger_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let marker = b"LINGERING-SEALED-BYTES-7f3a9c".to_vec();
    {
        let store = SqliteStore::open(&path).unwrap();
        with_key(&store);
        let mut c = conn("a");
        c.password = Some(Sealed {
            key_id: 1,
            blob: marker.repeat(20),
        });
        store.insert_connection(&c).unwrap();
        store.delete_connection("a", &del(false)).unwrap();
        // A delete keeps the row in the history (issue 17); purging it removes it.
        assert_eq!(store.purge_history("a").unwrap(), crate::Purged::Done(2));
        store
            .lock()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_slice()),
            "deleted bytes found on disk"
        );
    }
}

#[test]
fn debug_of_a_sealed_value_shows_no_bytes() {
    let s = Sealed {
        key_id: 3,
        blob: b"abc".to_vec(),
    };
    assert_eq!(format!("{s:?}"), "Sealed { key_id: 3, 3 bytes }");
}

#[test]
fn reopening_migrates_nothing_twice() {
    let (b, store) = temp();
    with_key(&store);
    drop(store);
    let store = b.open();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.key_checks().unwrap().len(), 1);
}

#[test]
fn the_rotation_lock_is_a_file_beside_the_database() {
    let (b, store) = temp();
    assert_eq!(
        store.rotation_lock_path(),
        b.dir.path().join("broked.db.rotate.lock")
    );
    let held = store.lock_rotation().unwrap();
    let mode = std::fs::metadata(store.rotation_lock_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    drop(held);
}

#[test]
fn named_locks_are_files_in_a_private_directory_beside_the_database() {
    let (b, store) = temp();
    assert_eq!(
        store.named_lock_path("password-rotation.pg-a"),
        b.dir.path().join("broked.db.locks/password-rotation.pg-a")
    );
    assert_eq!(
        store.named_lock_path("../x/.y"),
        b.dir.path().join("broked.db.locks/_._x_.y")
    );
    let held = store.lock_named("password-rotation.pg-a").unwrap();
    let meta = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode();
    let dir = meta(b.dir.path().join("broked.db.locks"));
    assert_eq!(dir & 0o077, 0, "{dir:o}");
    let file = meta(store.named_lock_path("password-rotation.pg-a"));
    assert_eq!(file & 0o077, 0, "{file:o}");
    drop(held);
}

#[test]
fn the_generation_changes_with_every_commit_of_any_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let one = SqliteStore::open(&path).unwrap();
    let two = SqliteStore::open(&path).unwrap();
    with_key(&one);
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let writer = if i % 2 == 0 { &one } else { &two };
        writer.insert_connection(&conn(&format!("c{i}"))).unwrap();
        let g = one.generation().unwrap();
        assert!(seen.insert(g), "generation repeated after commit {i}");
        assert_eq!(one.generation().unwrap(), g, "reads do not change it");
        assert!(
            fresh::read_header(&one.fresh_lock().watch.as_ref().unwrap().handle)
                .unwrap()
                .is_some(),
            "the fast path is used once the WAL index exists"
        );
    }
    // After a full checkpoint that resets the WAL, a new commit still changes it.
    one.lock()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let before = one.generation().unwrap();
    two.insert_connection(&conn("after-checkpoint")).unwrap();
    assert!(one.generation().unwrap() > before);
}

#[test]
fn dropping_a_second_store_keeps_sqlites_locks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let shm = dir.path().join("broked.db-shm");
    let one = SqliteStore::open(&path).unwrap();
    one.generation().unwrap();
    assert!(holds_dms_lock(&shm), "SQLite holds its DMS lock");
    for _ in 0..3 {
        let two = SqliteStore::open(&path).unwrap();
        two.generation().unwrap();
        drop(two);
        assert!(holds_dms_lock(&shm), "dropping another store dropped it");
    }
    one.generation().unwrap();
    assert!(holds_dms_lock(&shm));
}

#[test]
fn a_database_replaced_by_a_copy_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let copy = dir.path().join("copy.db");
    let store = SqliteStore::open(&path).unwrap();
    with_key(&store);
    store.insert_connection(&conn("old")).unwrap();
    {
        let other = Connection::open(&path).unwrap();
        other
            .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        let c = Connection::open(&copy).unwrap();
        c.execute(
            "UPDATE connections SET host = 'copied' WHERE conn_id = 'old'",
            [],
        )
        .unwrap();
    }
    let host = || store.get_connection("old").unwrap().unwrap().host;
    let g = store.generation().unwrap();
    assert_eq!(host().as_deref(), Some("db.example.com"));
    store
        .lock()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    std::fs::rename(&copy, &path).unwrap();
    assert!(
        store.generation().unwrap() > g,
        "a replaced file is a change"
    );
    assert_eq!(
        host().as_deref(),
        Some("copied"),
        "reads come from the file the path names now"
    );
}

#[test]
fn a_removed_wal_index_is_a_change_and_the_store_reconnects() {
    let (b, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let g = store.generation().unwrap();
    std::fs::remove_file(b.dir.path().join("broked.db-shm")).unwrap();
    assert!(store.generation().unwrap() > g);
    assert!(store.get_connection("a").unwrap().is_some());
    assert!(holds_dms_lock(&b.dir.path().join("broked.db-shm")));
}

#[test]
fn a_replaced_file_under_two_stores_of_one_process_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let one = SqliteStore::open(&path).unwrap();
    let two = SqliteStore::open(&path).unwrap();
    let copy = dir.path().join("copy.db");
    Connection::open(&path)
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    std::fs::rename(&copy, &path).unwrap();
    let err = one.generation().unwrap_err();
    assert!(matches!(err, StoreError::Replaced { .. }), "{err}");
    assert!(err.to_string().contains("replaced"), "{err}");
    drop(two);
    // Alone now: it reopens.
    one.generation().unwrap();
    assert!(one.list_connections(None).unwrap().is_empty());
}

#[test]
fn a_torn_or_invalid_header_is_never_unchanged() {
    let mut header = [0u8; 96];
    assert_eq!(read_torn(&header), None, "not initialised");
    // A valid header: isInit and the checksum of bytes 0..40.
    header[12] = 1;
    header[16] = 7; // mxFrame
    let word = |h: &[u8], at: usize| u32::from_ne_bytes(h[at..at + 4].try_into().unwrap());
    let (mut s1, mut s2) = (0u32, 0u32);
    for at in (0..40).step_by(8) {
        s1 = s1.wrapping_add(word(&header, at)).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&header, at + 4)).wrapping_add(s1);
    }
    header[40..44].copy_from_slice(&s1.to_ne_bytes());
    header[44..48].copy_from_slice(&s2.to_ne_bytes());
    let (first, second) = header.split_at_mut(48);
    second.copy_from_slice(first);
    assert!(read_torn(&header).is_some());
    let mut torn = header;
    torn[48 + 8] ^= 1; // only the second copy changed
    assert_eq!(read_torn(&torn), None);
    let mut bad = header;
    bad[16] ^= 1;
    bad[48 + 16] ^= 1; // both copies, checksum not updated
    assert_eq!(read_torn(&bad), None);

    let mut fresh = Fresh {
        watch: None,
        seen: None,
        generation: 0,
    };
    let valid = read_torn(&header);
    let g = fresh.observe(valid);
    assert_eq!(fresh.observe(valid), g);
    assert!(fresh.observe(None) > g);
    assert!(
        fresh.observe(None) > g + 1,
        "an invalid header is a change each time"
    );
}

fn read_torn(bytes: &[u8; 96]) -> Option<[u8; 48]> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x-shm");
    std::fs::write(&path, bytes).unwrap();
    fresh::read_header(&std::fs::File::open(&path).unwrap()).unwrap()
}

#[test]
fn the_directory_watch_spares_the_stats_and_still_sees_a_replaced_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let store = SqliteStore::open(&path).unwrap();
    with_key(&store);
    let watched = store.fresh_lock().watch.as_ref().unwrap().dir.is_some();
    assert_eq!(watched, cfg!(target_os = "linux"), "inotify in use");
    // Unrelated entries in the directory only cost a stat.
    std::fs::write(dir.path().join("unrelated"), "x").unwrap();
    let g = store.generation().unwrap();
    assert_eq!(store.generation().unwrap(), g);
    let copy = dir.path().join("copy.db");
    Connection::open(&path)
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    Connection::open(&copy)
        .unwrap()
        .execute(
            "INSERT INTO keys (key_id, check_value) VALUES (9, 'c9')",
            [],
        )
        .unwrap();
    store
        .lock()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    std::fs::rename(&copy, &path).unwrap();
    assert!(store.generation().unwrap() > g);
    assert_eq!(store.key_checks().unwrap().len(), 2, "reads the copy");
}

#[test]
fn through_a_symlink_every_check_stats_and_sees_a_replaced_file() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let store = SqliteStore::open(&link.join("broked.db")).unwrap();
    assert!(
        store.fresh_lock().watch.as_ref().unwrap().dir.is_none(),
        "the watched directory would not be the file's"
    );
    let g = store.generation().unwrap();
    let copy = real.join("copy.db");
    Connection::open(real.join("broked.db"))
        .unwrap()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    store
        .lock()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    std::fs::rename(&copy, real.join("broked.db")).unwrap();
    assert!(store.generation().unwrap() > g);
}

#[test]
fn a_wal_index_replaced_by_another_file_is_a_change_and_the_store_reconnects() {
    let (b, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let g = store.generation().unwrap();
    let shm = b.dir.path().join("broked.db-shm");
    let copy = b.dir.path().join("copy-shm");
    std::fs::copy(&shm, &copy).unwrap();
    std::fs::rename(&copy, &shm).unwrap();
    assert!(
        store.generation().unwrap() > g,
        "a replaced -shm is a change"
    );
    // Reads and writes go through a connection on the -shm the path names now.
    store.insert_connection(&conn("b")).unwrap();
    assert_eq!(store.list_connections(None).unwrap().len(), 2);
    assert!(holds_dms_lock(&shm));
    let other = SqliteStore::open(&b.path()).unwrap();
    other.delete_connection("a", &del(false)).unwrap();
    assert_eq!(store.list_connections(None).unwrap().len(), 1);
}

#[test]
fn shipped_migrations_are_never_edited() {
    // A changed migration would leave existing databases with another schema than new ones:
    // add a migration instead, and pin it here.
    let pinned = [
        (1500, 0x7e9d_802c_5c64_a12a),
        (100, 0xa315_94f5_44e0_dea0),
        (244, 0x9643_3f68_373a_2c46),
        (1026, 0xb2e9_90d0_fa9f_1542),
        (399, 0xcc11_4a81_46db_cc5d),
        (390, 0x4dab_9fe2_6964_b11b),
        (1021, 0xdbb3_f5bf_1a1c_2449),
    ];
    assert_eq!(MIGRATIONS.len(), pinned.len(), "pin every migration");
    for (i, (len, hash)) in pinned.into_iter().enumerate() {
        assert_eq!(
            (MIGRATIONS[i].len(), crate::tests::fnv1a(MIGRATIONS[i])),
            (len, hash),
            "migration {}",
            i + 1
        );
    }
}

/// Waits until `n` threads wait for `store`'s write connection.
fn wait_for_queued(store: &SqliteStore, n: usize) {
    while store.writer.queued() < n {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn writes_that_wait_for_the_writer_share_one_commit_and_keep_their_own_results() {
    let (_b, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("taken")).unwrap();
    let mut current = conn("current");
    current.version = store.insert_connection(&current).unwrap();
    let before = store.writer.groups();
    let held = store.lock();
    // Reads go to the read-only connections: they never wait for the writer.
    assert!(store.get_connection("taken").unwrap().is_some());
    let results = std::thread::scope(|s| {
        let store = &store;
        let mut stale = current.clone();
        stale.version += 5;
        let mut unknown_key = conn("unknown-key");
        unknown_key.password = Some(Sealed {
            key_id: 9,
            blob: vec![1],
        });
        let mut bad_port = conn("bad-port");
        bad_port.port = Some(0);
        let threads = vec![
            s.spawn(move || format!("{:?}", store.insert_connection(&conn("new")))),
            s.spawn(move || format!("{:?}", store.insert_connection(&conn("taken")))),
            s.spawn(move || format!("{:?}", store.insert_connection(&unknown_key))),
            s.spawn(move || {
                let rows = [conn("half"), bad_port];
                let e = store.put_connections(&rows, true, 10).unwrap_err();
                format!("{}", matches!(e, StoreError::Sqlite { .. }))
            }),
            s.spawn(move || format!("{:?}", store.update_connection(&stale, 10))),
            s.spawn(move || format!("{:?}", store.set_meta("m", "v"))),
        ];
        wait_for_queued(store, threads.len());
        drop(held);
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        results,
        [
            "Ok(1)",
            "Err(AlreadyExists(\"taken\"))",
            "Err(UnknownKey(9))",
            "true",
            "Ok(Stale)",
            "Ok(())",
        ]
    );
    assert_eq!(store.writer.groups(), before + 1, "one transaction for all");
    let ids: Vec<String> = store
        .list_connections(None)
        .unwrap()
        .into_iter()
        .map(|c| c.conn_id)
        .collect();
    assert_eq!(ids, ["current", "new", "taken"]);
    assert_eq!(store.meta("m").unwrap().as_deref(), Some("v"));
    // Everything acknowledged is in the file, as another handle sees it.
    let other = SqliteStore::open(store.path()).unwrap();
    assert!(other.get_connection("new").unwrap().is_some());
    assert_eq!(other.meta("m").unwrap().as_deref(), Some("v"));
}

#[test]
fn a_write_that_panics_is_rolled_back_and_its_group_commits_the_others() {
    let (_b, store) = temp();
    with_key(&store);
    let held = store.lock();
    let (kept, panicked) = std::thread::scope(|s| {
        let store = &store;
        let kept = s.spawn(move || store.insert_connection(&conn("kept")));
        let panicked = s.spawn(move || {
            store.write::<()>(|c| {
                c.execute("INSERT INTO meta (name, value) VALUES ('boom', 'x')", [])
                    .unwrap();
                panic!("a write panics after writing");
            })
        });
        wait_for_queued(store, 2);
        drop(held);
        (kept.join(), panicked.join())
    });
    assert_eq!(kept.unwrap().unwrap(), 1);
    assert!(panicked.is_err(), "the closure panicked");
    assert_eq!(store.meta("boom").unwrap(), None, "its row was rolled back");
    assert!(store.get_connection("kept").unwrap().is_some());
    // The connection is clean: the next write commits on its own.
    store.set_meta("after", "1").unwrap();
    let other = SqliteStore::open(store.path()).unwrap();
    assert_eq!(other.meta("after").unwrap().as_deref(), Some("1"));
    assert!(other.get_connection("kept").unwrap().is_some());
}

#[test]
fn reads_see_only_committed_writes_and_never_wait_for_the_writer() {
    let (_b, store) = temp();
    let mut held = store.lock();
    held.join().unwrap();
    held.savepoint(|c| {
        c.execute("INSERT INTO meta (name, value) VALUES ('open', 'x')", [])
            .map_err(sql("meta"))
    })
    .unwrap();
    // From the same thread that holds the writer, with its transaction open.
    assert_eq!(store.meta("open").unwrap(), None, "not committed yet");
    drop(held);
    assert_eq!(store.meta("open").unwrap().as_deref(), Some("x"));
}

/// A poll that returns has counted every event queued before it was called — also while
/// other threads poll and drain at the same time (a poll that finds the queue empty because
/// another thread took the event waits until that thread has counted it), and the store's
/// check then sees a file replaced just before (issue 19: polls no longer take the lock
/// when nothing is pending).
#[cfg(target_os = "linux")]
#[test]
fn a_poll_never_misses_an_event_another_thread_is_draining() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let store = SqliteStore::open(&path).unwrap();
    with_key(&store);
    let count = fresh::dirs::watch(&path).expect("inotify on a plain path");
    let stop = AtomicBool::new(false);
    /// Stops the pollers when the checks end, also when one fails (or the scope waits).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = Stop(&stop);
        for _ in 0..3 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    fresh::dirs::poll();
                    let _ = store.generation().unwrap();
                }
            });
        }
        for i in 0..300 {
            let before = count.load(Ordering::Acquire);
            std::fs::write(dir.path().join(format!("other-{i}")), b"x").unwrap();
            fresh::dirs::poll();
            assert!(
                count.load(Ordering::Acquire) > before,
                "a file created before the poll is counted after it (round {i})"
            );
        }
        // A database replaced while the others poll is seen by the next check.
        let g = store.generation().unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        std::fs::rename(&copy, &path).unwrap();
        assert!(
            store.generation().unwrap() > g,
            "a replaced file is a change"
        );
    });
}

/// Migration 7 counts the connections a database already holds, and from then on its
/// triggers keep the counts for every writer — a `DELETE` in `sqlite3` included.
#[test]
fn migration_7_counts_what_is_there_and_keeps_counting() {
    use crate::{ConnQuery, Total};
    let (b, store) = temp();
    with_key(&store);
    crate::tests::insert_typed(
        &store,
        &[("a", "postgres"), ("b", "postgres"), ("c", "http")],
    );
    drop(store);
    // The database as schema 6 left it, rows and all.
    let c = rusqlite::Connection::open(b.path()).unwrap();
    c.execute_batch(
        "DROP TRIGGER connection_counts_insert; DROP TRIGGER connection_counts_delete;
         DROP TRIGGER connection_counts_retype; DROP TABLE connection_counts;
         PRAGMA user_version = 6;",
    )
    .unwrap();
    drop(c);
    let store = b.open();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let total = |t: Option<&str>| {
        store
            .page_connections(&ConnQuery {
                conn_type: t.map(str::to_owned),
                limit: Some(1),
                count_up_to: Some(100),
                ..ConnQuery::default()
            })
            .unwrap()
            .total
    };
    assert_eq!(total(None), Some(Total::Exact(3)));
    assert_eq!(total(Some("postgres")), Some(Total::Exact(2)));
    assert_eq!(total(Some("http")), Some(Total::Exact(1)));
    store.delete_connection("a", &del(true)).unwrap();
    assert_eq!(total(Some("postgres")), Some(Total::Exact(1)));
    // Another writer, outside this code.
    let c = rusqlite::Connection::open(b.path()).unwrap();
    c.execute("DELETE FROM connections WHERE conn_id = 'c'", [])
        .unwrap();
    drop(c);
    assert_eq!(total(Some("http")), Some(Total::Exact(0)));
    assert_eq!(total(None), Some(Total::Exact(1)));
}
