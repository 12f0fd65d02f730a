//! A write's [`WriteLog`] (issue 19): its seal count and audit records commit with the write,
//! in its transaction, or not at all — on both backends (see `suite!` in the parent module).

use super::audit::{assert_chain, record, test_mac};
use super::*;

suite!(
    a_write_carries_its_seals_and_records_only_when_it_changes_data,
    a_fault_after_the_change_leaves_neither_the_change_nor_its_record,
    concurrent_logged_writes_of_several_handles_keep_one_chain,
    concurrent_writes_of_one_handle_each_get_their_own_answer,
    a_wrong_audit_head_hint_never_forks_the_chain,
);

/// A log of `n` seals with key 1 and one record of `action` on `conn_id`.
fn log(n: u64, action: &str, conn_id: &str) -> WriteLog {
    WriteLog {
        seals: vec![(1, n)],
        audit: vec![record("ci", action, Some(conn_id), "2026-12-02T10:00:00Z")],
        mac: Some(test_mac()),
    }
}

/// The head's seq (0: no record) and key 1's seal count.
fn state(store: &impl Store) -> (i64, u64) {
    let head = store.audit_head().unwrap().map_or(0, |r| r.seq);
    (head, store.seals(1).unwrap())
}

fn a_write_carries_its_seals_and_records_only_when_it_changes_data(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    let (version, logged) = store
        .insert_connection_logged(&conn("a"), &log(2, "create", "a"))
        .unwrap();
    assert_eq!(version, 1);
    assert!(logged.applied);
    assert_eq!(logged.seals, [(1, 2)], "the key's total after the write");
    assert_eq!(logged.audit.len(), 1);
    assert_eq!(logged.audit[0].seq, 1);
    assert_eq!(store.audit_head().unwrap().as_ref(), Some(&logged.audit[0]));
    assert_eq!(state(&store), (1, 2));

    // Writes that change nothing apply nothing.
    let err = store
        .insert_connection_logged(&conn("a"), &log(2, "create", "a"))
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    let mut stale = conn("a");
    stale.version = 7;
    let (written, logged) = store
        .update_connection_logged(&stale, 10, &log(1, "update", "a"))
        .unwrap();
    assert_eq!((written, logged), (Written::Stale, Logged::default()));
    let (deleted, logged) = store
        .delete_connection_logged("missing", &del(false), &log(0, "delete", "missing"))
        .unwrap();
    assert_eq!((deleted, logged), (Deleted::Missing, Logged::default()));
    let (put, logged) = store
        .put_pipeline_logged(
            &pipeline("p"),
            &[node("p", "n", "missing")],
            &log(0, "pipeline_put", "p"),
        )
        .unwrap();
    assert!(matches!(put, PutPipeline::UnknownConnIds(_)), "{put:?}");
    assert!(!logged.applied);
    let (put, logged) = store
        .put_connections_logged(&[conn("a")], false, 10, &log(1, "import", "a"))
        .unwrap();
    assert_eq!(
        (put, logged),
        (PutMany::Exists(vec!["a".into()]), Logged::default())
    );
    let (gone, logged) = store
        .delete_pipeline_logged("p", &log(0, "pipeline_delete", "p"))
        .unwrap();
    assert_eq!((gone, logged), (false, Logged::default()));
    assert_eq!(state(&store), (1, 2), "nothing counted, nothing recorded");

    // Writes that change data apply it, chained after records appended alone.
    store
        .append_audit(
            vec![record("ci", "reveal", Some("a"), "2026-12-02T10:00:01Z")],
            test_mac(),
        )
        .unwrap();
    let mut v2 = conn("a");
    v2.password = Some(Sealed {
        key_id: 1,
        blob: b"sealed-password-2".to_vec(),
    });
    let (written, logged) = store
        .update_connection_logged(&v2, 10, &log(1, "update", "a"))
        .unwrap();
    assert_eq!(written, Written::Done);
    assert_eq!(
        (logged.seals.as_slice(), logged.audit[0].seq),
        (&[(1, 3)][..], 3)
    );
    let (put, logged) = store
        .put_connections_logged(&[conn("b")], false, 10, &log(1, "import", "b"))
        .unwrap();
    assert_eq!((put, logged.audit[0].seq), (PutMany::Done(1), 4));
    let (put, logged) = store
        .put_pipeline_logged(
            &pipeline("p"),
            &[node("p", "n", "b")],
            &log(0, "pipeline_put", "p"),
        )
        .unwrap();
    assert_eq!((put, logged.audit[0].seq), (PutPipeline::Created, 5));
    let (gone, logged) = store
        .delete_pipeline_logged("p", &log(0, "pipeline_delete", "p"))
        .unwrap();
    assert_eq!((gone, logged.audit[0].seq), (true, 6));
    let (deleted, logged) = store
        .delete_connection_logged("a", &del(false), &log(0, "delete", "a"))
        .unwrap();
    assert_eq!((deleted, logged.audit[0].seq), (Deleted::Done, 7));
    // Seals of a key the database does not know are not counted (and fail nothing).
    let mut unknown = log(1, "create", "c");
    unknown.seals.push((9, 1));
    let (_, logged) = store
        .insert_connection_logged(&conn("c"), &unknown)
        .unwrap();
    assert_eq!(logged.seals, [(1, 5)]);
    // Without a MAC the records are not appended; the seals still are.
    let (_, logged) = store
        .insert_connection_logged(
            &conn("d"),
            &WriteLog {
                mac: None,
                ..log(1, "create", "d")
            },
        )
        .unwrap();
    assert!(logged.applied && logged.audit.is_empty());
    assert_eq!(state(&store), (8, 6));
    let all = store.audit_range(1, 100).unwrap();
    assert_eq!(
        all.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        [
            "create",
            "reveal",
            "update",
            "import",
            "pipeline_put",
            "pipeline_delete",
            "delete",
            "create"
        ]
    );
    assert_chain(&all, 1, String::new());
}

fn a_fault_after_the_change_leaves_neither_the_change_nor_its_record(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store
        .insert_connection_logged(&conn("a"), &log(1, "create", "a"))
        .unwrap();
    let before = state(&store);
    // The record's MAC fails after the row was written in the transaction (a crash there,
    // as far as the database can tell: the transaction never commits).
    let fault = |action: &str, conn_id: &str| WriteLog {
        mac: Some(Arc::new(|_: &str, _: &AuditRecord| -> String {
            panic!("a fault between the change and its record")
        })),
        ..log(1, action, conn_id)
    };
    let outcomes = [
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store
                .insert_connection_logged(&conn("b"), &fault("create", "b"))
                .map(|_| ())
        })),
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut v2 = conn("a");
            v2.host = Some("elsewhere.example.com".into());
            store
                .update_connection_logged(&v2, 10, &fault("update", "a"))
                .map(|_| ())
        })),
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store
                .delete_connection_logged("a", &del(false), &fault("delete", "a"))
                .map(|_| ())
        })),
    ];
    for outcome in outcomes {
        // SQLite: the panic comes back to the caller; PostgreSQL: the job died, an error.
        assert!(!matches!(outcome, Ok(Ok(()))), "the faulty write succeeded");
    }
    assert_eq!(store.get_connection("b").unwrap(), None, "no create");
    let a = store.get_connection("a").unwrap().unwrap();
    assert_eq!((a.version, a.host.as_deref()), (1, Some("db.example.com")));
    assert_eq!(
        versions(&store, "a"),
        [],
        "no kept version of an update or delete"
    );
    assert_eq!(state(&store), before, "no record, no seal counted");
    // The store goes on, chained after the last record that was stored.
    store
        .insert_connection_logged(&conn("b"), &log(1, "create", "b"))
        .unwrap();
    assert_eq!(state(&store), (2, 2));
    assert_chain(&store.audit_range(1, 100).unwrap(), 1, String::new());
}

fn concurrent_logged_writes_of_several_handles_keep_one_chain(b: &impl Backend) {
    const HANDLES: usize = 4;
    const EACH: usize = 12;
    let first = b.open();
    with_key(&first);
    first
        .insert_connection_logged(&conn("shared"), &log(1, "create", "shared"))
        .unwrap();
    // Each handle (a process or replica of its own): creates of its own, updates of one
    // shared row (compare-and-swap: some are stale and retried), deletes, records alone.
    let updates = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for h in 0..HANDLES {
            let updates = &updates;
            s.spawn(move || {
                let store = b.open();
                for i in 0..EACH {
                    let id = format!("h{h}-{i}");
                    store
                        .insert_connection_logged(&conn(&id), &log(1, "create", &id))
                        .unwrap();
                    loop {
                        let mut row = store.get_connection("shared").unwrap().unwrap();
                        row.description = Some(format!("{h}-{i}"));
                        let (w, logged) = store
                            .update_connection_logged(&row, 3, &log(0, "update", "shared"))
                            .unwrap();
                        assert_eq!(logged.applied, w == Written::Done);
                        if w == Written::Done {
                            updates.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    if i % 3 == 0 {
                        store
                            .delete_connection_logged(&id, &del(false), &log(0, "delete", &id))
                            .unwrap();
                    }
                    if i % 4 == 0 {
                        store
                            .append_audit(
                                vec![record("ci", "reveal", Some(&id), "2026-12-02T10:00:00Z")],
                                test_mac(),
                            )
                            .unwrap();
                    }
                }
            });
        }
    });
    let store = b.open();
    let all = store.audit_range(1, 10_000).unwrap();
    let count = |action: &str| all.iter().filter(|r| r.action == action).count();
    let n = HANDLES * EACH;
    assert_eq!(count("create"), n + 1);
    assert_eq!(count("update"), n);
    assert_eq!(updates.load(Ordering::Relaxed), n);
    assert_eq!(count("delete"), HANDLES * EACH.div_ceil(3));
    assert_eq!(count("reveal"), HANDLES * EACH.div_ceil(4));
    assert_chain(&all, 1, String::new());
    assert_eq!(store.seals(1).unwrap(), (n + 1) as u64);
    let shared = store.get_connection("shared").unwrap().unwrap();
    assert_eq!(shared.version, 1 + n as i64, "no update lost");
}

/// Writes of one handle that arrive together are committed together (group commit on both
/// backends): each still gets its own answer — a write that fails among them (a conn_id
/// taken) leaves nothing, the others are all stored with their records and seal counts.
fn concurrent_writes_of_one_handle_each_get_their_own_answer(b: &impl Backend) {
    const THREADS: usize = 16;
    const EACH: usize = 10;
    let store = b.open();
    with_key(&store);
    store
        .insert_connection_logged(&conn("taken"), &log(1, "create", "taken"))
        .unwrap();
    let refused = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, refused) = (&store, &refused);
            s.spawn(move || {
                for i in 0..EACH {
                    let id = if i == EACH / 2 {
                        "taken".to_owned()
                    } else {
                        format!("t{t}-{i}")
                    };
                    match store.insert_connection_logged(&conn(&id), &log(1, "create", &id)) {
                        Ok((_, logged)) => {
                            assert!(logged.applied, "{id}");
                            assert_eq!(logged.audit.len(), 1, "{id}: its own record");
                            assert_eq!(logged.audit[0].conn_id.as_deref(), Some(id.as_str()));
                        }
                        Err(StoreError::AlreadyExists(got)) => {
                            assert_eq!(got, "taken");
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("{id}: {e}"),
                    }
                }
            });
        }
    });
    assert_eq!(refused.load(Ordering::Relaxed), THREADS);
    let made = THREADS * (EACH - 1);
    for t in 0..THREADS {
        for i in (0..EACH).filter(|i| *i != EACH / 2) {
            assert!(
                store
                    .get_connection(&format!("t{t}-{i}"))
                    .unwrap()
                    .is_some()
            );
        }
    }
    let all = store.audit_range(1, 10_000).unwrap();
    assert_eq!(
        all.len(),
        made + 1,
        "one record per stored create, none for the refused"
    );
    assert_chain(&all, 1, String::new());
    assert_eq!(store.seals(1).unwrap(), (made + 1) as u64);
}

/// PostgreSQL keeps the audit head in `meta` (`audit_head`) as a hint a write reads with its
/// generation bump; a hint that is stale (a process of an older build appended without it),
/// gone, ahead or garbage (a hand-edited database) must never fork or gap the chain. SQLite
/// does not use it: the same steps hold there trivially.
fn a_wrong_audit_head_hint_never_forks_the_chain(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store
        .insert_connection_logged(&conn("a"), &log(1, "create", "a"))
        .unwrap();
    store
        .append_audit(
            vec![record("ci", "reveal", Some("a"), "2026-12-02T10:00:01Z")],
            test_mac(),
        )
        .unwrap();
    let hint = |value: Option<&str>| match value {
        Some(v) => b.raw(&format!(
            "INSERT INTO meta (name, value) VALUES ('audit_head', '{v}') \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value"
        )),
        None => b.raw("DELETE FROM meta WHERE name = 'audit_head'"),
    };
    for (i, value) in [Some("1 stale"), None, Some("99 ahead"), Some("garbage")]
        .into_iter()
        .enumerate()
    {
        hint(value);
        let id = format!("c{i}");
        let (_, logged) = store
            .insert_connection_logged(&conn(&id), &log(1, "create", &id))
            .unwrap();
        assert_eq!(logged.audit[0].seq, 3 + i as i64, "{value:?}");
    }
    let all = store.audit_range(1, 100).unwrap();
    assert_eq!(all.len(), 6);
    assert_chain(&all, 1, String::new());
}
