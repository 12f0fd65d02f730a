use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use super::*;

fn temp() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("broked.db")).unwrap();
    (dir, store)
}

fn conn(id: &str) -> StoredConnection {
    StoredConnection {
        conn_id: id.into(),
        conn_type: "postgres".into(),
        host: Some("db.example.com".into()),
        port: Some(5432),
        schema: Some("mydb".into()),
        login: Some("etl".into()),
        password: Some(Sealed {
            key_id: 1,
            blob: b"sealed-password".to_vec(),
        }),
        extra: None,
        description: Some("d".into()),
        created_at: "2026-11-26T10:00:00Z".into(),
        updated_at: "2026-11-26T10:00:00Z".into(),
        version: 1,
    }
}

fn with_key(store: &SqliteStore) {
    store.add_key_check(1, "check-1").unwrap();
}

fn pipeline(id: &str) -> StoredPipeline {
    StoredPipeline {
        pipeline_id: id.into(),
        name: format!("{id} name"),
        definition: "{}".into(),
        created_at: "2026-11-26T10:00:00Z".into(),
        updated_at: "2026-11-26T10:00:00Z".into(),
    }
}

fn node(p: &str, node: &str, conn: &str) -> PipelineRef {
    PipelineRef {
        pipeline_id: p.into(),
        name: format!("{p} name"),
        node_id: node.into(),
        conn_id: conn.into(),
    }
}

#[test]
fn a_new_file_gets_the_schema_and_the_settings() {
    let (dir, store) = temp();
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
    let mode = std::fs::metadata(dir.path().join("broked.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "database readable by others: {mode:o}");
}

#[test]
fn reopening_keeps_data_and_migrates_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        with_key(&store);
        store.insert_connection(&conn("a")).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.get_connection("a").unwrap().unwrap().conn_id, "a");
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
fn connections_round_trip_sorted_and_filtered() {
    let (_dir, store) = temp();
    with_key(&store);
    let mut b = conn("b");
    b.conn_type = "mysql".into();
    b.extra = Some(Sealed {
        key_id: 1,
        blob: vec![1, 2, 3],
    });
    b.port = None;
    store.insert_connection(&b).unwrap();
    store.insert_connection(&conn("a")).unwrap();
    let all = store.list_connections(None).unwrap();
    assert_eq!(
        all.iter().map(|c| c.conn_id.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(all[1], b);
    let mysql = store.list_connections(Some("mysql")).unwrap();
    assert_eq!(mysql.len(), 1);
    assert_eq!(mysql[0].conn_id, "b");
    assert!(store.get_connection("zzz").unwrap().is_none());
}

#[test]
fn a_duplicate_id_is_refused_and_changes_nothing() {
    let (_dir, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let mut again = conn("a");
    again.host = Some("other".into());
    let err = store.insert_connection(&again).unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists(ref id) if id == "a"),
        "{err}"
    );
    assert_eq!(
        store.get_connection("a").unwrap().unwrap().host.as_deref(),
        Some("db.example.com")
    );
}

#[test]
fn a_secret_sealed_under_an_unregistered_key_is_refused() {
    let (_dir, store) = temp();
    let err = store.insert_connection(&conn("a")).unwrap_err();
    assert!(matches!(err, StoreError::UnknownKey(1)), "{err}");
    assert!(store.get_connection("a").unwrap().is_none());
}

#[test]
fn updates_are_compare_and_swap_on_the_version() {
    let (_dir, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let read = store.get_connection("a").unwrap().unwrap();
    assert_eq!(read.version, 1);
    let mut first = read.clone();
    first.description = Some("first".into());
    assert_eq!(store.update_connection(&first).unwrap(), Written::Done);
    let mut second = read;
    second.description = Some("second".into());
    assert_eq!(store.update_connection(&second).unwrap(), Written::Stale);
    let now = store.get_connection("a").unwrap().unwrap();
    assert_eq!(now.description.as_deref(), Some("first"));
    assert_eq!(now.version, 2);
    assert_eq!(
        store.update_connection(&conn("nope")).unwrap(),
        Written::Missing
    );
}

#[test]
fn delete_is_refused_while_pipelines_use_the_connection_unless_forced() {
    let (_dir, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("pg")).unwrap();
    store.insert_connection(&conn("other")).unwrap();
    let refs = [
        node("etl", "load", "pg"),
        node("etl", "extract", "pg"),
        node("etl", "x", "other"),
    ];
    assert_eq!(
        store.put_pipeline(&pipeline("etl"), &refs).unwrap(),
        PutPipeline::Created
    );
    let Deleted::InUse(using) = store.delete_connection("pg", false).unwrap() else {
        panic!("delete of a used connection was not refused")
    };
    assert_eq!(
        using,
        vec![node("etl", "extract", "pg"), node("etl", "load", "pg")]
    );
    assert!(store.get_connection("pg").unwrap().is_some());
    assert_eq!(store.delete_connection("pg", true).unwrap(), Deleted::Done);
    assert!(store.get_connection("pg").unwrap().is_none());
    assert!(store.used_by("pg").unwrap().is_empty());
    assert_eq!(store.used_by("other").unwrap().len(), 1);
    assert_eq!(
        store.delete_connection("pg", false).unwrap(),
        Deleted::Missing
    );
}

#[test]
fn a_pipeline_naming_unknown_connections_is_refused_whole() {
    let (_dir, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("pg")).unwrap();
    let refs = [
        node("etl", "a", "pg"),
        node("etl", "b", "nope2"),
        node("etl", "c", "nope1"),
    ];
    assert_eq!(
        store.put_pipeline(&pipeline("etl"), &refs).unwrap(),
        PutPipeline::UnknownConnIds(vec!["nope1".into(), "nope2".into()])
    );
    assert!(store.get_pipeline("etl").unwrap().is_none());
    assert!(store.used_by("pg").unwrap().is_empty());
}

#[test]
fn replacing_a_pipeline_replaces_its_references() {
    let (_dir, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    store.insert_connection(&conn("b")).unwrap();
    store
        .put_pipeline(&pipeline("p"), &[node("p", "n1", "a")])
        .unwrap();
    let mut replaced = pipeline("p");
    replaced.name = "renamed".into();
    assert_eq!(
        store
            .put_pipeline(&replaced, &[node("p", "n2", "b")])
            .unwrap(),
        PutPipeline::Replaced
    );
    assert!(store.used_by("a").unwrap().is_empty());
    assert_eq!(store.used_by("b").unwrap()[0].name, "renamed");
    assert_eq!(store.list_pipelines().unwrap().len(), 1);
    assert!(store.delete_pipeline("p").unwrap());
    assert!(!store.delete_pipeline("p").unwrap());
    assert!(
        store.used_by("b").unwrap().is_empty(),
        "references go with the pipeline"
    );
}

#[test]
fn reseal_writes_only_fields_that_did_not_change_meanwhile() {
    let (_dir, store) = temp();
    with_key(&store);
    store.add_key_check(2, "check-2").unwrap();
    let mut a = conn("a");
    a.extra = Some(Sealed {
        key_id: 1,
        blob: b"extra-a".to_vec(),
    });
    store.insert_connection(&a).unwrap();
    store.insert_connection(&conn("b")).unwrap();
    let todo = store.sealed_not_under(2, 100).unwrap();
    assert_eq!(todo.len(), 3);
    let batch: Vec<Reseal> = todo
        .iter()
        .map(|f| Reseal {
            conn_id: f.conn_id.clone(),
            field: f.field,
            old: if f.conn_id == "b" {
                b"changed meanwhile".to_vec()
            } else {
                f.sealed.blob.clone()
            },
            new: Sealed {
                key_id: 2,
                blob: [b"new-".as_slice(), &f.sealed.blob].concat(),
            },
        })
        .collect();
    assert_eq!(store.reseal(&batch).unwrap(), 2);
    let left = store.sealed_not_under(2, 100).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].conn_id, "b");
    assert_eq!(store.sealed_per_key().unwrap(), vec![(1, 1), (2, 2)]);
    let a = store.get_connection("a").unwrap().unwrap();
    assert_eq!(
        a.extra.unwrap(),
        Sealed {
            key_id: 2,
            blob: b"new-extra-a".to_vec()
        }
    );
}

#[test]
fn keys_in_use_are_never_removed() {
    let (_dir, store) = temp();
    with_key(&store);
    store.add_key_check(2, "check-2").unwrap();
    store.add_key_check(3, "check-3").unwrap();
    store.insert_connection(&conn("a")).unwrap();
    assert_eq!(store.remove_unused_keys(&[1, 2]).unwrap(), vec![2]);
    assert_eq!(
        store.key_checks().unwrap(),
        vec![(1, "check-1".to_string()), (3, "check-3".to_string())]
    );
    let err = store.add_key_check(1, "another").unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}

#[test]
fn seals_are_counted_per_key() {
    let (_dir, store) = temp();
    with_key(&store);
    assert_eq!(store.count_seals(1, 3).unwrap(), 3);
    assert_eq!(store.count_seals(1, 2).unwrap(), 5);
    assert_eq!(store.seals(1).unwrap(), 5);
    assert_eq!(store.seals(9).unwrap(), 0);
}

#[test]
fn the_generation_changes_with_writes_of_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    let one = SqliteStore::open(&path).unwrap();
    let two = SqliteStore::open(&path).unwrap();
    let before = one.generation().unwrap();
    with_key(&two);
    two.insert_connection(&conn("a")).unwrap();
    let after = one.generation().unwrap();
    assert!(after > before, "{before} -> {after}");
    assert_eq!(one.generation().unwrap(), after, "reads do not change it");
}

#[test]
fn concurrent_writers_on_separate_handles_never_see_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broked.db");
    with_key(&SqliteStore::open(&path).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let store = Arc::new(SqliteStore::open(&path).unwrap());
                for i in 0..50 {
                    store
                        .insert_connection(&conn(&format!("t{t}-{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        SqliteStore::open(&path)
            .unwrap()
            .list_connections(None)
            .unwrap()
            .len(),
        200
    );
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
fn put_connections_is_all_or_nothing() {
    let (_dir, store) = temp();
    with_key(&store);
    store.insert_connection(&conn("b")).unwrap();
    let rows = [conn("a"), conn("b"), conn("c")];
    assert_eq!(
        store.put_connections(&rows, false).unwrap(),
        PutMany::Exists(vec!["b".into()])
    );
    assert_eq!(
        store.list_connections(None).unwrap().len(),
        1,
        "nothing was written"
    );
    let mut bad = conn("d");
    bad.password = Some(Sealed {
        key_id: 9,
        blob: vec![1],
    });
    let err = store.put_connections(&[conn("a"), bad], true).unwrap_err();
    assert!(matches!(err, StoreError::UnknownKey(9)), "{err}");
    assert_eq!(
        store.list_connections(None).unwrap().len(),
        1,
        "nothing was written"
    );
    let mut b = conn("b");
    b.description = Some("replaced".into());
    assert_eq!(
        store
            .put_connections(&[conn("a"), b, conn("c")], true)
            .unwrap(),
        PutMany::Done(3)
    );
    let b = store.get_connection("b").unwrap().unwrap();
    assert_eq!(b.description.as_deref(), Some("replaced"));
    assert_eq!(b.version, 2);
}
