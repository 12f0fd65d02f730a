//! `put_connections` (an import) on both backends (see `suite!` in the parent module): rows in
//! any order, a conn_id twice, more rows than one statement of a batch takes (issue 19).

use super::*;

suite!(
    an_import_writes_a_conn_id_twice_in_order_and_keeps_the_first,
    a_large_import_mixes_new_and_existing_rows,
);

fn described(id: &str, description: &str) -> StoredConnection {
    let mut c = conn(id);
    c.description = Some(description.into());
    c
}

/// Rows out of conn_id order, one conn_id twice: the later row is the connection, the earlier
/// one its kept version 1, as if they had been written one after the other.
fn an_import_writes_a_conn_id_twice_in_order_and_keeps_the_first(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    let rows = [
        described("b", "first"),
        described("c", "c"),
        described("a", "a"),
        described("b", "second"),
    ];
    assert_eq!(
        store.put_connections(&rows, true, 10).unwrap(),
        PutMany::Done(4)
    );
    let b_now = store.get_connection("b").unwrap().unwrap();
    assert_eq!(
        (b_now.description.as_deref(), b_now.version),
        (Some("second"), 2)
    );
    let kept = store.history(Some("b")).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        (kept[0].conn.description.as_deref(), kept[0].conn.version),
        (Some("first"), 1)
    );
    for id in ["a", "c"] {
        assert_eq!(store.get_connection(id).unwrap().unwrap().version, 1);
        assert!(store.history(Some(id)).unwrap().is_empty());
    }
    let ids: Vec<String> = store
        .list_connections(None)
        .unwrap()
        .into_iter()
        .map(|c| c.conn_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

/// 12,000 rows (more than one batch of the PostgreSQL store), 100 of them already there and
/// one deleted with its history kept: without overwrite every existing one is named, in the
/// order of the rows, and nothing is written; with it, the existing rows are replaced (their
/// old version kept), the deleted one continues its history, the others are new.
fn a_large_import_mixes_new_and_existing_rows(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    let id = |i: usize| format!("imp-{:05}", (i * 7_919) % 12_000);
    let rows: Vec<StoredConnection> = (0..12_000).map(|i| described(&id(i), "new")).collect();
    let there: Vec<String> = (0..12_000).step_by(120).map(id).collect();
    for t in &there {
        store.insert_connection(&described(t, "old")).unwrap();
    }
    let gone = id(1);
    store.insert_connection(&conn(&gone)).unwrap();
    assert_eq!(
        store.delete_connection(&gone, &del(false)).unwrap(),
        Deleted::Done
    );
    assert_eq!(
        store.put_connections(&rows, false, 10).unwrap(),
        PutMany::Exists(there.clone())
    );
    assert_eq!(store.list_connections(None).unwrap().len(), 100);
    assert_eq!(
        store.put_connections(&rows, true, 10).unwrap(),
        PutMany::Done(12_000)
    );
    let all = store.list_connections(None).unwrap();
    assert_eq!(all.len(), 12_000);
    assert!(all.iter().all(|c| c.description.as_deref() == Some("new")));
    for c in &all {
        let expected = if there.contains(&c.conn_id) {
            2
        } else if c.conn_id == gone {
            // Version 1 and its deleted marker (2) are kept.
            3
        } else {
            1
        };
        assert_eq!(c.version, expected, "{}", c.conn_id);
    }
    let kept = store.history(Some(&there[7])).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].conn.description.as_deref(), Some("old"));
    assert_eq!(store.history(Some(&gone)).unwrap().len(), 2);
}
