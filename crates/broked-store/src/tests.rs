//! The store's behaviour, written once and run against every backend.
//!
//! Each behaviour is a function `fn name(b: &impl Backend)`; [`suite!`] turns the list into
//! one `#[test]` per backend: `tests::sqlite::name` on a temporary file, and (feature
//! `postgres`) `tests::postgres::name` in a fresh schema of the machine's PostgreSQL
//! (`broked_testenv::postgres()`; skipped when not configured, a failure when
//! `BROKED_TEST_REQUIRE_SERVICES=1`). Backend-specific tests (files and pragmas, migrations
//! tables, connection errors) live beside each backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::*;

/// One empty database for one test.
pub(crate) trait Backend: Sync {
    type S: Store + 'static;
    /// A new handle on the test's database, as another process would open it.
    fn open(&self) -> Self::S;
    /// Waits until `store` is in its steady state for change detection (PostgreSQL: its
    /// listener is up).
    fn settle(&self, _store: &Self::S) {}
    /// The generation of `store` once it differs from `before`: at once on SQLite (every
    /// commit is visible to the next check); on PostgreSQL within the notification delay
    /// (at most 2 s here; the delay itself is measured in `postgres/tests.rs`).
    fn changed_from(&self, store: &Self::S, before: u64) -> u64 {
        store
            .generation()
            .unwrap_or_else(|e| panic!("{e}; was {before}"))
    }
    /// Runs `sql` on the test's database behind the store's back (as a damaged file or a
    /// hand-edited database would be).
    fn raw(&self, sql: &str);
}

/// A temporary SQLite file.
pub(crate) struct Sqlite {
    pub(crate) dir: tempfile::TempDir,
}

impl Sqlite {
    pub(crate) fn new() -> Sqlite {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("broked.db")
    }
}

impl Backend for Sqlite {
    type S = SqliteStore;
    fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path()).unwrap()
    }
    fn raw(&self, sql: &str) {
        let c = rusqlite::Connection::open(self.path()).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute_batch(sql).unwrap();
    }
}

/// A schema of its own in the test database (the one fixture, `broked_testenv::PgSchema`),
/// dropped afterwards; every handle reaches it through `options=-c search_path=…` in the URL.
#[cfg(feature = "postgres")]
pub(crate) struct Pg {
    fixture: broked_testenv::PgSchema,
    /// The test database, no schema set.
    pub(crate) base_url: String,
    /// `base_url` with `search_path` set to `schema`.
    pub(crate) url: String,
    pub(crate) schema: String,
}

#[cfg(feature = "postgres")]
impl Pg {
    pub(crate) fn new() -> Option<Pg> {
        let fixture = broked_testenv::PgSchema::new()?;
        Some(Pg {
            base_url: fixture.base_url.clone(),
            url: fixture.url.clone(),
            schema: fixture.schema.clone(),
            fixture,
        })
    }

    /// Runs `sql` in the schema, as the test user.
    pub(crate) fn admin(&self, sql: &str) {
        self.fixture
            .psql(&format!("SET search_path TO {}; {sql}", self.schema));
    }

    /// Runs `sql` as the test user with the default search path (not the schema: name it).
    pub(crate) fn unscoped(&self, sql: &str) {
        self.fixture.psql(sql);
    }

    /// Waits (up to 5 s) until no delta of the connections' counts is left: every store's
    /// fold task folds within a second of a write (`postgres/counts.rs`).
    pub(crate) fn until_folded(&self) {
        let start = std::time::Instant::now();
        let sql = format!(
            "SET search_path TO {}; DO $$ BEGIN IF EXISTS \
             (SELECT 1 FROM connection_count_deltas) THEN RAISE EXCEPTION 'deltas left'; \
             END IF; END $$",
            self.schema
        );
        while let Err(e) = self.fixture.try_psql(&sql) {
            assert!(start.elapsed() < Duration::from_secs(5), "not folded: {e}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(feature = "postgres")]
impl Backend for Pg {
    type S = PgStore;
    fn open(&self) -> PgStore {
        PgStore::open(&self.url).unwrap()
    }
    fn raw(&self, sql: &str) {
        self.admin(sql);
    }
    fn settle(&self, store: &PgStore) {
        store.until_listening();
        // Notifications of writes made before are delivered by now.
        std::thread::sleep(Duration::from_millis(100));
    }
    fn changed_from(&self, store: &PgStore, before: u64) -> u64 {
        let start = std::time::Instant::now();
        loop {
            let now = store.generation().unwrap();
            if now != before || start.elapsed() > Duration::from_secs(2) {
                return now;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// FNV-1a of a text (a migration's): a pinned value changes only if the text does.
pub(crate) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One `#[test]` per behaviour and backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&super::Sqlite::new());
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(b) = super::Pg::new() {
                        super::$name(&b);
                    }
                }
            )*
        }
    };
}

mod audit;
mod import;
mod reseal;
mod write_log;

suite!(
    connections_round_trip_sorted_and_filtered,
    ids_sort_bytewise,
    a_duplicate_id_is_refused_and_changes_nothing,
    a_secret_sealed_under_an_unregistered_key_is_refused,
    updates_are_compare_and_swap_on_the_version,
    delete_is_refused_while_pipelines_use_the_connection_unless_forced,
    a_pipeline_naming_unknown_connections_is_refused_whole,
    replacing_a_pipeline_replaces_its_references,
    reseal_writes_only_fields_that_did_not_change_meanwhile,
    keys_in_use_are_never_removed,
    seals_are_counted_per_key,
    put_connections_is_all_or_nothing,
    reopening_keeps_the_data,
    meta_settings_are_kept_and_replaced,
    tokens_are_stored_by_hash_listed_and_revoked,
    the_generation_changes_with_writes_of_another_handle,
    concurrent_writers_on_separate_handles_never_fail,
    concurrent_updates_of_one_row_lose_nothing,
    calls_from_inside_a_tokio_runtime_work,
    one_rotation_lock_at_a_time,
    a_waiting_rotation_lock_is_granted_on_release,
    named_locks_exclude_only_their_own_name,
    a_key_id_out_of_range_is_a_corrupt_row,
    an_update_keeps_the_previous_version_with_its_sealed_values,
    the_history_keeps_at_most_the_versions_asked_for,
    delete_moves_the_row_into_the_history_and_a_new_one_continues_its_numbers,
    delete_with_an_expected_version_is_refused_when_stale,
    key_operations_see_every_kept_version,
    an_overwriting_import_keeps_the_replaced_row,
    concurrent_writes_on_one_handle_each_get_their_own_result,
    a_write_failing_midway_leaves_nothing_beside_concurrent_writes,
);

fn versions(store: &impl Store, id: &str) -> Vec<(i64, bool)> {
    store
        .history(Some(id))
        .unwrap()
        .into_iter()
        .map(|v| (v.conn.version, v.deleted))
        .collect()
}

fn sealed(key_id: u32, blob: &[u8]) -> Option<Sealed> {
    Some(Sealed {
        key_id,
        blob: blob.to_vec(),
    })
}

fn an_update_keeps_the_previous_version_with_its_sealed_values(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    assert_eq!(store.insert_connection(&conn("a")).unwrap(), 1);
    store.insert_connection(&conn("other")).unwrap();
    let v1 = store.get_connection("a").unwrap().unwrap();
    assert_eq!(v1.updated_by.as_deref(), Some("library"));
    assert!(v1.changed.is_empty());
    let mut v2 = v1.clone();
    v2.host = Some("db2.example.com".into());
    v2.password = sealed(1, b"sealed-password-2");
    v2.updated_at = "2026-11-26T11:00:00Z".into();
    v2.updated_by = Some("ci-token".into());
    v2.changed = vec!["host".into(), "password".into()];
    assert_eq!(store.update_connection(&v2, 10).unwrap(), Written::Done);
    let now = store.get_connection("a").unwrap().unwrap();
    assert_eq!(now.version, 2);
    assert_eq!(now.updated_by.as_deref(), Some("ci-token"));
    assert_eq!(now.changed, ["host", "password"]);
    let kept = store.history(Some("a")).unwrap();
    assert_eq!(
        kept,
        vec![StoredVersion {
            conn: v1.clone(),
            deleted: false
        }],
        "version 1 whole: plain fields, sealed value under its key id, writer"
    );
    assert_eq!(
        store.get_version("a", 1).unwrap(),
        Some(StoredVersion {
            conn: v1.clone(),
            deleted: false
        })
    );
    let current = store.get_version("a", 2).unwrap().unwrap();
    assert_eq!((current.conn, current.deleted), (now.clone(), false));
    assert_eq!(store.get_version("a", 3).unwrap(), None);
    assert_eq!(store.get_version("nope", 1).unwrap(), None);
    // A stale update keeps nothing.
    assert_eq!(store.update_connection(&v2, 10).unwrap(), Written::Stale);
    assert_eq!(versions(&store, "a"), [(1, false)]);
    assert!(store.history(Some("other")).unwrap().is_empty());
    assert_eq!(store.history(None).unwrap().len(), 1);
}

fn the_history_keeps_at_most_the_versions_asked_for(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let update = |keep: u32| {
        let mut c = store.get_connection("a").unwrap().unwrap();
        c.description = Some(format!("v{}", c.version + 1));
        c.changed = vec!["description".into()];
        assert_eq!(store.update_connection(&c, keep).unwrap(), Written::Done);
    };
    for _ in 0..6 {
        update(3);
    }
    assert_eq!(versions(&store, "a"), [(6, false), (5, false), (4, false)]);
    let oldest = store.get_version("a", 4).unwrap().unwrap();
    assert_eq!(oldest.conn.description.as_deref(), Some("v4"));
    assert_eq!(store.get_version("a", 3).unwrap(), None, "pruned");
    update(10);
    assert_eq!(versions(&store, "a").len(), 4);
    update(0);
    assert!(versions(&store, "a").is_empty(), "keep 0: no history");
    assert_eq!(store.get_connection("a").unwrap().unwrap().version, 9);
}

fn delete_moves_the_row_into_the_history_and_a_new_one_continues_its_numbers(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let mut c = store.get_connection("a").unwrap().unwrap();
    c.description = Some("second".into());
    store.update_connection(&c, 10).unwrap();
    let before = store.get_connection("a").unwrap().unwrap();
    assert_eq!(
        store.delete_connection("a", &del(false)).unwrap(),
        Deleted::Done
    );
    assert_eq!(store.get_connection("a").unwrap(), None);
    assert_eq!(versions(&store, "a"), [(3, true), (2, false), (1, false)]);
    let kept = store.get_version("a", 2).unwrap().unwrap();
    assert_eq!(kept.conn, before, "the deleted row, secrets and all");
    let marker = store.get_version("a", 3).unwrap().unwrap();
    assert!(marker.deleted);
    assert_eq!(marker.conn.updated_by.as_deref(), Some("cli:ops"));
    assert_eq!(marker.conn.updated_at, "2026-11-27T10:00:00Z");
    assert_eq!(marker.conn.host, before.host);
    assert_eq!((marker.conn.password, marker.conn.extra), (None, None));
    // Created again: the numbers go on, the kept history stays.
    assert_eq!(store.insert_connection(&conn("a")).unwrap(), 4);
    assert_eq!(store.get_connection("a").unwrap().unwrap().version, 4);
    assert_eq!(versions(&store, "a").len(), 3);
    assert_eq!(store.purge_history("a").unwrap(), Purged::Exists);
    assert_eq!(
        versions(&store, "a").len(),
        3,
        "a live connection is not purged"
    );
    assert_eq!(
        store.delete_connection("a", &del(false)).unwrap(),
        Deleted::Done
    );
    assert_eq!(versions(&store, "a")[0], (5, true));
    assert_eq!(store.purge_history("a").unwrap(), Purged::Done(5));
    assert!(versions(&store, "a").is_empty());
    assert_eq!(store.purge_history("a").unwrap(), Purged::Missing);
    assert_eq!(
        store.insert_connection(&conn("a")).unwrap(),
        1,
        "purged: a new start"
    );
}

fn delete_with_an_expected_version_is_refused_when_stale(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let mut c = store.get_connection("a").unwrap().unwrap();
    c.description = Some("second".into());
    store.update_connection(&c, 10).unwrap();
    let expecting = |v: i64| Deletion {
        expected_version: Some(v),
        ..del(false)
    };
    assert_eq!(
        store.delete_connection("a", &expecting(1)).unwrap(),
        Deleted::Stale
    );
    assert!(store.get_connection("a").unwrap().is_some());
    assert_eq!(
        versions(&store, "a"),
        [(1, false)],
        "nothing kept or marked"
    );
    assert_eq!(
        store.delete_connection("a", &expecting(2)).unwrap(),
        Deleted::Done
    );
    assert_eq!(
        store.delete_connection("a", &expecting(2)).unwrap(),
        Deleted::Missing
    );
}

fn key_operations_see_every_kept_version(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.add_key_check(2, "check-2").unwrap();
    store.add_key_check(3, "check-3").unwrap();
    // v1 password under key 1; v2 keeps the same sealed bytes; v3 a new one under key 2.
    store.insert_connection(&conn("a")).unwrap();
    let mut c = store.get_connection("a").unwrap().unwrap();
    c.description = Some("v2".into());
    store.update_connection(&c, 10).unwrap();
    c.version = 2;
    c.password = sealed(2, b"sealed-under-2");
    store.update_connection(&c, 10).unwrap();
    assert_eq!(store.sealed_per_key().unwrap(), vec![(1, 2), (2, 1)]);
    assert_eq!(
        store.remove_unused_keys(&[1]).unwrap(),
        Vec::<u32>::new(),
        "key 1 seals old versions only: kept"
    );
    let todo = store.sealed_not_under(3, 100).unwrap();
    let at: Vec<_> = todo.iter().map(|f| (f.version, f.sealed.key_id)).collect();
    assert_eq!(at, [(None, 2), (Some(1), 1), (Some(2), 1)]);
    let reseal = |f: &SealedField, old: &[u8]| Reseal {
        conn_id: f.conn_id.clone(),
        version: f.version,
        field: f.field,
        old: old.to_vec(),
        new: Sealed {
            key_id: 3,
            blob: [b"k3-".as_slice(), &f.sealed.blob].concat(),
        },
    };
    // Compare-and-swap per row and version: a stale old value writes nothing; version 1
    // re-sealed leaves version 2 (same bytes before) as it was.
    assert_eq!(store.reseal(&[reseal(&todo[1], b"other")]).unwrap(), 0);
    assert_eq!(
        store
            .reseal(&[reseal(&todo[1], b"sealed-password")])
            .unwrap(),
        1
    );
    let v1 = store.get_version("a", 1).unwrap().unwrap().conn;
    assert_eq!(v1.password, sealed(3, b"k3-sealed-password"));
    let v2 = store.get_version("a", 2).unwrap().unwrap().conn;
    assert_eq!(v2.password, sealed(1, b"sealed-password"));
    assert_eq!(
        store.sealed_per_key().unwrap(),
        vec![(1, 1), (2, 1), (3, 1)]
    );
    let rest: Vec<_> = [&todo[0], &todo[2]]
        .into_iter()
        .map(|f| reseal(f, &f.sealed.blob))
        .collect();
    assert_eq!(store.reseal(&rest).unwrap(), 2);
    assert!(store.sealed_not_under(3, 100).unwrap().is_empty());
    assert_eq!(store.remove_unused_keys(&[1, 2]).unwrap(), vec![1, 2]);
    // A deleted connection's kept versions hold their keys too, until purged.
    store.add_key_check(4, "check-4").unwrap();
    let mut d = conn("d");
    d.password = sealed(4, b"d-pw");
    store.insert_connection(&d).unwrap();
    store.delete_connection("d", &del(false)).unwrap();
    assert_eq!(store.remove_unused_keys(&[4]).unwrap(), Vec::<u32>::new());
    store.purge_history("d").unwrap();
    assert_eq!(store.remove_unused_keys(&[4]).unwrap(), vec![4]);
}

fn an_overwriting_import_keeps_the_replaced_row(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let before = store.get_connection("a").unwrap().unwrap();
    let mut a = conn("a");
    a.host = Some("imported.example.com".into());
    a.changed = vec!["host".into()];
    assert_eq!(
        store.put_connections(&[a, conn("b")], true, 10).unwrap(),
        PutMany::Done(2)
    );
    assert_eq!(
        store.history(Some("a")).unwrap(),
        vec![StoredVersion {
            conn: before,
            deleted: false
        }]
    );
    assert!(store.history(Some("b")).unwrap().is_empty());
    assert_eq!(store.get_connection("a").unwrap().unwrap().version, 2);
}

/// A key id no build writes (outside `u32`) is a corrupt row on every read that meets it —
/// never a key id that wraps around to another key (2³² + 1 is not key 1).
fn a_key_id_out_of_range_is_a_corrupt_row(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    for bad in [(1_i64 << 32) + 1, -1] {
        b.raw(&format!(
            "UPDATE keys SET key_id = {bad};
             UPDATE connections SET password_key = {bad}"
        ));
        let corrupt = |e: StoreError, table: &str| {
            assert!(
                matches!(&e, StoreError::Corrupt { table: t, .. } if *t == table),
                "{bad}: {e}"
            );
        };
        corrupt(store.get_connection("a").unwrap_err(), "connections");
        corrupt(store.list_connections(None).unwrap_err(), "connections");
        corrupt(store.sealed_not_under(2, 10).unwrap_err(), "connections");
        corrupt(store.sealed_per_key().unwrap_err(), "connections");
        corrupt(store.key_checks().unwrap_err(), "keys");
    }
}

/// Inserts [`conn`]`(id)` with type `t` for each `(id, t)`.
pub(crate) fn insert_typed(store: &impl Store, rows: &[(&str, &str)]) {
    for (id, t) in rows {
        let mut c = conn(id);
        c.conn_type = (*t).into();
        store.insert_connection(&c).unwrap();
    }
}

pub(crate) fn conn(id: &str) -> StoredConnection {
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
        updated_by: Some("library".into()),
        changed: Vec::new(),
        version: 1,
    }
}

/// A plain delete (no expected version), keeping 10 versions.
pub(crate) fn del(force: bool) -> Deletion {
    Deletion {
        force,
        expected_version: None,
        at: "2026-11-27T10:00:00Z".into(),
        by: Some("cli:ops".into()),
        keep_versions: 10,
    }
}

pub(crate) fn with_key(store: &impl Store) {
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

fn connections_round_trip_sorted_and_filtered(b: &impl Backend) {
    let store = b.open();
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

fn a_duplicate_id_is_refused_and_changes_nothing(b: &impl Backend) {
    let store = b.open();
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

fn a_secret_sealed_under_an_unregistered_key_is_refused(b: &impl Backend) {
    let store = b.open();
    let err = store.insert_connection(&conn("a")).unwrap_err();
    assert!(matches!(err, StoreError::UnknownKey(1)), "{err}");
    assert!(store.get_connection("a").unwrap().is_none());
}

fn updates_are_compare_and_swap_on_the_version(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("a")).unwrap();
    let read = store.get_connection("a").unwrap().unwrap();
    assert_eq!(read.version, 1);
    let mut first = read.clone();
    first.description = Some("first".into());
    assert_eq!(store.update_connection(&first, 10).unwrap(), Written::Done);
    let mut second = read;
    second.description = Some("second".into());
    assert_eq!(
        store.update_connection(&second, 10).unwrap(),
        Written::Stale
    );
    let now = store.get_connection("a").unwrap().unwrap();
    assert_eq!(now.description.as_deref(), Some("first"));
    assert_eq!(now.version, 2);
    assert_eq!(
        store.update_connection(&conn("nope"), 10).unwrap(),
        Written::Missing
    );
}

fn delete_is_refused_while_pipelines_use_the_connection_unless_forced(b: &impl Backend) {
    let store = b.open();
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
    let Deleted::InUse(using) = store.delete_connection("pg", &del(false)).unwrap() else {
        panic!("delete of a used connection was not refused")
    };
    assert_eq!(
        using,
        vec![node("etl", "extract", "pg"), node("etl", "load", "pg")]
    );
    assert!(store.get_connection("pg").unwrap().is_some());
    assert_eq!(
        store.delete_connection("pg", &del(true)).unwrap(),
        Deleted::Done
    );
    assert!(store.get_connection("pg").unwrap().is_none());
    assert!(store.used_by("pg").unwrap().is_empty());
    assert_eq!(store.used_by("other").unwrap().len(), 1);
    assert_eq!(
        store.delete_connection("pg", &del(false)).unwrap(),
        Deleted::Missing
    );
}

fn a_pipeline_naming_unknown_connections_is_refused_whole(b: &impl Backend) {
    let store = b.open();
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

fn replacing_a_pipeline_replaces_its_references(b: &impl Backend) {
    let store = b.open();
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

fn reseal_writes_only_fields_that_did_not_change_meanwhile(b: &impl Backend) {
    let store = b.open();
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
            version: f.version,
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

fn keys_in_use_are_never_removed(b: &impl Backend) {
    let store = b.open();
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

fn seals_are_counted_per_key(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    assert_eq!(store.count_seals(1, 3).unwrap(), 3);
    assert_eq!(store.count_seals(1, 2).unwrap(), 5);
    assert_eq!(store.seals(1).unwrap(), 5);
    assert_eq!(store.seals(9).unwrap(), 0);
}

fn put_connections_is_all_or_nothing(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("b")).unwrap();
    let rows = [conn("a"), conn("b"), conn("c")];
    assert_eq!(
        store.put_connections(&rows, false, 10).unwrap(),
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
    let err = store
        .put_connections(&[conn("a"), bad], true, 10)
        .unwrap_err();
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
            .put_connections(&[conn("a"), b, conn("c")], true, 10)
            .unwrap(),
        PutMany::Done(3)
    );
    let b = store.get_connection("b").unwrap().unwrap();
    assert_eq!(b.description.as_deref(), Some("replaced"));
    assert_eq!(b.version, 2);
}

fn ids_sort_bytewise(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    for id in ["ab", "a_b", "a0", "a-b", "b"] {
        store.insert_connection(&conn(id)).unwrap();
    }
    let ids: Vec<String> = store
        .list_connections(None)
        .unwrap()
        .into_iter()
        .map(|c| c.conn_id)
        .collect();
    assert_eq!(ids, ["a-b", "a0", "a_b", "ab", "b"]);
}

fn reopening_keeps_the_data(b: &impl Backend) {
    {
        let store = b.open();
        with_key(&store);
        store.insert_connection(&conn("a")).unwrap();
    }
    let store = b.open();
    assert_eq!(store.get_connection("a").unwrap().unwrap(), conn("a"));
    assert_eq!(store.key_checks().unwrap().len(), 1);
}

fn token(name: &str, hash: &str) -> StoredToken {
    StoredToken {
        name: name.into(),
        hash: hash.into(),
        scopes: "read,test".into(),
        conns: Some("team-a-*".into()),
        created_at: "2026-12-02T00:00:00Z".into(),
        expires_at: None,
        last_used_at: None,
    }
}

fn tokens_are_stored_by_hash_listed_and_revoked(b: &impl Backend) {
    let store = b.open();
    assert_eq!(store.count_tokens().unwrap(), 0);
    store.insert_token(&token("ci", "aa")).unwrap();
    store.insert_token(&token("bot", "bb")).unwrap();
    assert!(matches!(
        store.insert_token(&token("ci", "cc")),
        Err(StoreError::TokenExists(ref n)) if n == "ci"
    ));
    assert_eq!(store.count_tokens().unwrap(), 2);
    let names: Vec<_> = store
        .list_tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["bot", "ci"]);
    assert_eq!(store.token_by_hash("aa").unwrap(), Some(token("ci", "aa")));
    assert_eq!(store.token_by_hash("zz").unwrap(), None);
    store.touch_token("ci", "2026-12-02T01:00:00Z").unwrap();
    let other = b.open();
    assert_eq!(
        other
            .token_by_hash("aa")
            .unwrap()
            .unwrap()
            .last_used_at
            .as_deref(),
        Some("2026-12-02T01:00:00Z")
    );
    assert!(store.delete_token("ci").unwrap());
    assert!(!store.delete_token("ci").unwrap());
    assert_eq!(other.token_by_hash("aa").unwrap(), None);
    assert_eq!(other.count_tokens().unwrap(), 1);
}

fn meta_settings_are_kept_and_replaced(b: &impl Backend) {
    {
        let store = b.open();
        assert_eq!(store.meta("seal_format").unwrap(), None);
        store.set_meta("seal_format", "1").unwrap();
        store.set_meta("seal_format", "2").unwrap();
        store.set_meta("other", "x").unwrap();
    }
    let store = b.open();
    assert_eq!(store.meta("seal_format").unwrap().as_deref(), Some("2"));
    assert_eq!(store.meta("other").unwrap().as_deref(), Some("x"));
    assert_eq!(store.meta("missing").unwrap(), None);
}

fn the_generation_changes_with_writes_of_another_handle(b: &impl Backend) {
    let one = b.open();
    let two = b.open();
    with_key(&two);
    b.settle(&one);
    let before = one.generation().unwrap();
    two.insert_connection(&conn("a")).unwrap();
    let after = b.changed_from(&one, before);
    assert!(after > before, "{before} -> {after}");
    assert_eq!(one.generation().unwrap(), after, "reads do not change it");
    let mut stale = conn("a");
    stale.version = 7;
    assert_eq!(two.update_connection(&stale, 10).unwrap(), Written::Stale);
    assert_eq!(one.generation().unwrap(), after, "a refused write does not");
    two.delete_connection("a", &del(false)).unwrap();
    assert!(b.changed_from(&one, after) > after);
}

fn concurrent_writers_on_separate_handles_never_fail(b: &impl Backend) {
    with_key(&b.open());
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let store = Arc::new(b.open());
                for i in 0..50 {
                    store
                        .insert_connection(&conn(&format!("t{t}-{i}")))
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(b.open().list_connections(None).unwrap().len(), 200);
}

/// Read, change, write back, retry on `Stale`: no update is lost between handles.
fn concurrent_updates_of_one_row_lose_nothing(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.insert_connection(&conn("hot")).unwrap();
    let stale = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let store = b.open();
                for _ in 0..10 {
                    loop {
                        let mut c = store.get_connection("hot").unwrap().unwrap();
                        let n: u32 = c.description.as_deref().unwrap_or("0").parse().unwrap_or(0);
                        c.description = Some((n + 1).to_string());
                        match store.update_connection(&c, 10).unwrap() {
                            Written::Done => break,
                            Written::Stale => {
                                stale.fetch_add(1, Ordering::Relaxed);
                            }
                            Written::Missing => panic!("row vanished"),
                        }
                    }
                }
            });
        }
    });
    let c = store.get_connection("hot").unwrap().unwrap();
    assert_eq!(c.description.as_deref(), Some("40"));
    assert_eq!(c.version, 41);
}

/// The server calls the store inside async handlers, on both runtime flavours.
fn calls_from_inside_a_tokio_runtime_work(b: &impl Backend) {
    let store = Arc::new(b.open());
    with_key(&*store);
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (i, rt) in [current, multi].into_iter().enumerate() {
        let store = store.clone();
        rt.block_on(async move {
            store.insert_connection(&conn(&format!("rt{i}"))).unwrap();
            let s = store.clone();
            let got = tokio::spawn(async move { s.get_connection(&format!("rt{i}")).unwrap() })
                .await
                .unwrap();
            assert!(got.is_some());
            let gen_before = store.generation().unwrap();
            store
                .delete_connection(&format!("rt{i}"), &del(false))
                .unwrap();
            assert!(store.generation().unwrap() > gen_before);
        });
    }
    assert!(store.list_connections(None).unwrap().is_empty());
}

fn one_rotation_lock_at_a_time(b: &impl Backend) {
    let one = b.open();
    let two = b.open();
    let held = one
        .try_lock_rotation()
        .unwrap()
        .expect("a free lock is granted");
    assert!(two.try_lock_rotation().unwrap().is_none(), "held by one");
    assert!(
        one.try_lock_rotation().unwrap().is_none(),
        "not reentrant, even on the same handle"
    );
    drop(held);
    let again = two.try_lock_rotation().unwrap().expect("released on drop");
    drop(again);
    drop(one.lock_rotation().unwrap());
}

fn a_waiting_rotation_lock_is_granted_on_release(b: &impl Backend) {
    let one = b.open();
    let held = one.lock_rotation().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let two = b.open();
            tx.send("waiting").unwrap();
            let guard = two.lock_rotation().unwrap();
            tx.send("granted").unwrap();
            drop(guard);
        });
        assert_eq!(rx.recv().unwrap(), "waiting");
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "a second lock was granted while the first is held"
        );
        drop(held);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(20)),
            Ok("granted"),
            "the waiter gets the lock after the release"
        );
    });
}

/// Issue 20: one password rotation per connection at a time, across processes; rotations
/// of two connections (and a key rotation) do not wait for each other.
fn named_locks_exclude_only_their_own_name(b: &impl Backend) {
    let one = b.open();
    let two = b.open();
    let a = one
        .try_lock_named("password-rotation.pg-a")
        .unwrap()
        .expect("a free lock is granted");
    assert!(
        two.try_lock_named("password-rotation.pg-a")
            .unwrap()
            .is_none(),
        "held by one"
    );
    assert!(
        one.try_lock_named("password-rotation.pg-a")
            .unwrap()
            .is_none(),
        "not reentrant, even on the same handle"
    );
    let other = two
        .try_lock_named("password-rotation.pg-b")
        .unwrap()
        .expect("another name is another lock");
    let rotation = two
        .try_lock_rotation()
        .unwrap()
        .expect("the key rotation lock is not a named one");
    drop((other, rotation));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            tx.send("waiting").unwrap();
            let guard = two.lock_named("password-rotation.pg-a").unwrap();
            tx.send("granted").unwrap();
            drop(guard);
        });
        assert_eq!(rx.recv().unwrap(), "waiting");
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a second holder was granted the lock while the first holds it"
        );
        drop(a);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(20)),
            Ok("granted"),
            "the waiter gets the lock after the release"
        );
    });
    // Any text is a name; names that differ only outside [A-Za-z0-9._-] may share a lock.
    drop(one.lock_named("../weird name/ä").unwrap());
}

/// Many writers at once on one handle (grouped into shared commits on SQLite): each gets its
/// own answer — a duplicate is refused without failing the writes beside it — and a read
/// right after an answer sees that write.
fn concurrent_writes_on_one_handle_each_get_their_own_result(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    for i in 0..8 {
        store
            .insert_connection(&conn(&format!("taken-{i}")))
            .unwrap();
    }
    let taken = |t: usize, i: usize| (t + i) % 4 == 0;
    std::thread::scope(|s| {
        for t in 0..16 {
            let store = &store;
            s.spawn(move || {
                for i in 0..10 {
                    let id = if taken(t, i) {
                        format!("taken-{}", (t + i) % 8)
                    } else {
                        format!("t{t}-{i}")
                    };
                    let mut row = conn(&id);
                    row.description = Some(format!("by {t}"));
                    match store.insert_connection(&row) {
                        Ok(version) => {
                            assert!(!taken(t, i), "{id} inserted twice");
                            assert_eq!(version, 1);
                            let got = store.get_connection(&id).unwrap();
                            assert_eq!(
                                got.and_then(|c| c.description),
                                row.description,
                                "{id}: an acknowledged write is read at once"
                            );
                        }
                        Err(StoreError::AlreadyExists(dup)) => {
                            assert!(taken(t, i), "{id} refused: {dup}");
                            assert_eq!(dup, id);
                        }
                        Err(e) => panic!("{id}: {e}"),
                    }
                }
            });
        }
    });
    let rows = store.list_connections(None).unwrap();
    let new = (0..16)
        .flat_map(|t| (0..10).map(move |i| (t, i)))
        .filter(|&(t, i)| !taken(t, i))
        .count();
    assert_eq!(rows.len(), 8 + new);
    for r in rows.iter().filter(|r| r.conn_id.starts_with("taken-")) {
        assert_eq!(
            r.description.as_deref(),
            Some("d"),
            "a refused write changed {r:?}"
        );
    }
}

/// A write that fails after it wrote part of its rows (an import whose second row breaks a
/// constraint) leaves none of them, while the writes around it — on SQLite possibly in the
/// same commit — are kept whole.
fn a_write_failing_midway_leaves_nothing_beside_concurrent_writes(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    std::thread::scope(|s| {
        for t in 0..12 {
            let store = &store;
            s.spawn(move || {
                for i in 0..5 {
                    if t % 2 == 0 {
                        let mut bad = conn(&format!("bad-{t}-{i}"));
                        bad.port = Some(0);
                        let rows = [conn(&format!("half-{t}-{i}")), bad];
                        let err = store.put_connections(&rows, true, 10).unwrap_err();
                        assert!(!err.to_string().is_empty());
                    } else {
                        let rows = [conn(&format!("a-{t}-{i}")), conn(&format!("b-{t}-{i}"))];
                        assert_eq!(
                            store.put_connections(&rows, true, 10).unwrap(),
                            PutMany::Done(2)
                        );
                    }
                }
            });
        }
    });
    let ids: Vec<String> = store
        .list_connections(None)
        .unwrap()
        .into_iter()
        .map(|c| c.conn_id)
        .collect();
    assert_eq!(ids.len(), 6 * 5 * 2, "{ids:?}");
    assert!(
        ids.iter()
            .all(|id| id.starts_with("a-") || id.starts_with("b-")),
        "{ids:?}"
    );
}
