//! SQLite-only behaviour: the file, its pragmas and migrations. The behaviour both backends
//! share is in `crate::tests`.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::tests::{Backend, Sqlite, conn, with_key};

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
        store.delete_connection("a", false).unwrap();
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
fn the_wal_index_header_changes_with_every_commit_of_any_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let one = SqliteStore::open(&path).unwrap();
    let two = SqliteStore::open(&path).unwrap();
    with_key(&one);
    let mut seen = std::collections::HashSet::new();
    for i in 0..20 {
        let writer = if i % 2 == 0 { &one } else { &two };
        writer.insert_connection(&conn(&format!("c{i}"))).unwrap();
        let g = one
            .wal_index_version()
            .expect("the fast path is used once the WAL index exists");
        assert_eq!(one.generation().unwrap(), g);
        assert!(seen.insert(g), "generation repeated after commit {i}");
        assert_eq!(one.generation().unwrap(), g, "reads do not change it");
    }
    // After a full checkpoint that resets the WAL, a new commit still changes it.
    one.lock()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let before = one.generation().unwrap();
    two.insert_connection(&conn("after-checkpoint")).unwrap();
    assert_ne!(one.generation().unwrap(), before);
}
