//! Key rotation in pages (issue 19), observed through the store calls it makes: a recorder
//! between the rotation and the store ([`Pages`]) sees every page read and batch written.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use broked_core::Secret;
use broked_store::{SqliteStore, StoreError};

use super::*;
use crate::{ConnectionInput, ConnectionUpdate, Connections, SecretUpdate, UpdateMode};

const PASSWORD: &str = "Pw-rotation-page-7Qx";

/// What the recorder saw.
#[derive(Default)]
struct Seen {
    /// Each page asked for: where it starts, its limit, how many rows came back.
    pages: Vec<(Option<ResealCursor>, usize, usize)>,
    /// Each batch written: its size and the progress it recorded.
    batches: Vec<(usize, Progress)>,
}

/// Passes every call to the store and records it; fails the batch numbered `fail_batch`
/// (from 0) before it reaches the store, as a process killed there would never write it.
struct Recorder<'a> {
    store: &'a dyn Store,
    seen: Mutex<Seen>,
    fail_batch: Option<usize>,
}

impl<'a> Recorder<'a> {
    fn new(store: &'a dyn Store, fail_batch: Option<usize>) -> Recorder<'a> {
        Recorder {
            store,
            seen: Mutex::default(),
            fail_batch,
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }
}

impl Pages for Recorder<'_> {
    fn page(
        &self,
        key_id: u32,
        after: Option<&ResealCursor>,
        limit: usize,
    ) -> Result<Vec<ResealRow>, Error> {
        let rows = StorePages(self.store).page(key_id, after, limit)?;
        self.seen().pages.push((after.cloned(), limit, rows.len()));
        Ok(rows)
    }

    fn batch(&self, batch: &[Reseal], progress: &Progress) -> Result<usize, Error> {
        if Some(self.seen().batches.len()) == self.fail_batch {
            return Err(Error::Store(StoreError::Busy));
        }
        let written = StorePages(self.store).batch(batch, progress)?;
        self.seen().batches.push((batch.len(), progress.clone()));
        Ok(written)
    }
}

/// A database of `n` connections with a password and an extra each; the first `kept` of
/// them updated once with a new login and secrets, so their first versions are kept (bound
/// to the old login).
fn database(n: usize, kept: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    for i in 0..n {
        c.create(ConnectionInput {
            conn_id: Some(format!("c{i:03}")),
            conn_type: Some("postgres".into()),
            host: Some("db.example.com".into()),
            login: Some("etl".into()),
            password: Some(Secret::new(format!("{PASSWORD}-{i}"))),
            extra: Some(Secret::new(r#"{"sslmode": "require"}"#)),
            ..Default::default()
        })
        .unwrap();
    }
    for i in 0..kept {
        let update = ConnectionUpdate {
            login: Some(Some("etl2".into())),
            password: SecretUpdate::Set(Secret::new(format!("{PASSWORD}-{i}-v2"))),
            extra: SecretUpdate::Set(Secret::new(r#"{"sslmode": "verify-full"}"#)),
            ..Default::default()
        };
        c.update(&format!("c{i:03}"), update, UpdateMode::Merge)
            .unwrap();
    }
    (dir, db)
}

fn sealer(db: &Path) -> (Arc<dyn Store>, Sealer) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db).unwrap());
    let key = Keyring::path_for_db(db);
    let sealer = Sealer::open(db, &key, store.clone(), u64::MAX).unwrap();
    (store, sealer)
}

/// The values sealed per key, as (`k1`, n) pairs.
fn per_key(store: &dyn Store) -> Vec<(String, u64)> {
    store
        .sealed_per_key()
        .unwrap()
        .into_iter()
        .map(|(k, n)| (KeyId::new(k).to_string(), n))
        .collect()
}

#[test]
fn a_rotation_reads_pages_and_writes_batches_within_the_limit() {
    // 30 current rows and 5 kept versions: 35 rows, 70 values.
    let (_dir, db) = database(30, 5);
    let (store, sealer) = sealer(&db);
    let recorder = Recorder::new(store.as_ref(), None);
    let mut calls = 0;
    let report = sealer
        .rotate_through(&recorder, 4, |done, total| {
            calls += 1;
            assert!(done <= total);
        })
        .unwrap();
    assert_eq!(
        (report.active_key.as_str(), report.resealed, calls),
        ("k2", 70, 70)
    );
    assert!(report.failures.is_empty(), "{report:?}");
    let seen = recorder.seen();
    // Pass 1: 8 full pages and one of 3 rows; pass 2: one empty page, nothing left.
    let sizes: Vec<_> = seen.pages.iter().map(|&(_, limit, n)| (limit, n)).collect();
    assert_eq!(
        sizes,
        [
            (4, 4),
            (4, 4),
            (4, 4),
            (4, 4),
            (4, 4),
            (4, 4),
            (4, 4),
            (4, 4),
            (4, 3),
            (4, 0)
        ]
    );
    // Each page starts where the one before ended, in the order of the scan (the current
    // rows, then the kept versions), and pass 2 from the beginning again.
    let cursor = |conn_id: &str, version| {
        Some(ResealCursor {
            conn_id: conn_id.into(),
            version,
        })
    };
    let starts: Vec<_> = seen.pages.iter().map(|(after, ..)| after.clone()).collect();
    assert_eq!(
        starts,
        [
            None,
            cursor("c003", None),
            cursor("c007", None),
            cursor("c011", None),
            cursor("c015", None),
            cursor("c019", None),
            cursor("c023", None),
            cursor("c027", None),
            cursor("c001", Some(1)),
            None,
        ]
    );
    // Every batch holds at most a page's values (a password and an extra per row) and records
    // the last row it covers, in the transaction that writes them.
    let ends: Vec<_> = starts[1..9]
        .iter()
        .cloned()
        .chain([cursor("c004", Some(1))])
        .collect();
    assert_eq!(seen.batches.len(), 9);
    for (i, (n, progress)) in seen.batches.iter().enumerate() {
        assert!(*n <= 8, "batch {i}: {n} values");
        assert_eq!((progress.key, progress.pass), (2, 1));
        assert_eq!(progress.after, ends[i], "batch {i}");
    }
    drop(seen);
    assert_eq!(per_key(store.as_ref()), [("k2".to_owned(), 70)]);
    assert_eq!(sealer.rotation_in_progress().unwrap(), None);
    let check = sealer.check().unwrap();
    assert_eq!((check.checked, check.failures.len()), (70, 0));
}

#[test]
fn a_rotation_stopped_midway_resumes_under_its_key_from_its_last_batch() {
    let (_dir, db) = database(20, 3);
    let (store, sealer) = sealer(&db);
    // Stopped at its third batch: two batches of 5 rows (20 values) committed.
    let first = Recorder::new(store.as_ref(), Some(2));
    let err = sealer.rotate_through(&first, 5, |_, _| {}).unwrap_err();
    assert!(matches!(err, Error::Store(StoreError::Busy)), "{err}");
    assert_eq!(
        sealer.rotation_in_progress().unwrap(),
        Some((KeyId::new(2), 1))
    );
    assert_eq!(
        per_key(store.as_ref()),
        [("k1".to_owned(), 26), ("k2".to_owned(), 20)]
    );
    // Readable throughout: every value opens, under either key.
    assert!(sealer.check().unwrap().failures.is_empty());
    let stopped_at = first.seen().batches[1].1.after.clone();
    assert_eq!(
        stopped_at,
        Some(ResealCursor {
            conn_id: "c009".into(),
            version: None
        })
    );

    // Another process finishes it: the same key, from the last committed batch on.
    let (store, again) = self::sealer(&db);
    let second = Recorder::new(store.as_ref(), None);
    let report = again.rotate_through(&second, 5, |_, _| {}).unwrap();
    assert_eq!((report.active_key.as_str(), report.resealed), ("k2", 26));
    let seen = second.seen();
    assert_eq!(seen.pages[0].0, stopped_at, "resumed after its last batch");
    // It began mid-way, so a pass from the beginning makes sure nothing was left.
    assert_eq!(seen.pages.last().unwrap(), &(None, 5, 0));
    drop(seen);
    assert_eq!(per_key(store.as_ref()), [("k2".to_owned(), 46)]);
    assert_eq!(again.rotation_in_progress().unwrap(), None);
    let keys: Vec<_> = read(&again.keyring)
        .keys()
        .iter()
        .map(|k| k.id.to_string())
        .collect();
    assert_eq!(keys, ["k1", "k2"], "no new key for a resumed rotation");
    let check = again.check().unwrap();
    assert_eq!((check.checked, check.failures.len()), (46, 0));
    // A rotation after that one is a new one.
    let report = again.rotate(|_, _| {}).unwrap();
    assert_eq!((report.active_key.as_str(), report.resealed), ("k3", 46));
}

#[test]
fn the_progress_setting_round_trips_and_a_bad_one_is_ignored() {
    let p = Progress {
        key: 7,
        pass: 2,
        after: Some(ResealCursor {
            conn_id: "a-b_c".into(),
            version: Some(3),
        }),
    };
    assert_eq!(Progress::decode(&p.encode()), Some(p.clone()));
    let current = Progress {
        after: Some(ResealCursor {
            conn_id: "x".into(),
            version: None,
        }),
        ..p.clone()
    };
    assert_eq!(Progress::decode(&current.encode()), Some(current));
    let start = Progress { after: None, ..p };
    assert_eq!(
        start.encode(),
        r#"{"after":null,"key":7,"pass":2}"#,
        "the format of the setting"
    );
    for bad in [
        "",
        "[]",
        r#"{"key":7,"pass":1}"#,
        r#"{"key":-1,"pass":1,"after":null}"#,
        r#"{"key":4294967296,"pass":1,"after":null}"#,
        r#"{"key":7,"pass":1,"after":{"conn_id":3,"version":null}}"#,
        r#"{"key":7,"pass":1,"after":{"conn_id":"a","version":"x"}}"#,
    ] {
        assert_eq!(Progress::decode(bad), None, "{bad}");
    }

    // A setting that does not parse: a new rotation replaces it.
    let (_dir, db) = database(2, 0);
    let (store, sealer) = sealer(&db);
    store.set_meta(KEY_ROTATION, "{not json").unwrap();
    assert_eq!(sealer.rotation_in_progress().unwrap(), None);
    let report = sealer.rotate(|_, _| {}).unwrap();
    assert_eq!((report.active_key.as_str(), report.resealed), ("k2", 4));
    assert_eq!(store.meta(KEY_ROTATION).unwrap(), None);
}
