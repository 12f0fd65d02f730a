//! Key rotation in pages on both backends (issue 19; see `suite!` in the parent module): the
//! scan by cursor and one batch's transaction.

use super::*;

suite!(
    the_rotation_scan_pages_by_cursor_through_rows_then_kept_versions,
    a_rotation_batch_writes_counts_and_records_its_progress_in_one_transaction,
);

/// Where a row of the scan is, as (conn_id, version).
fn at(rows: &[ResealRow]) -> Vec<(String, Option<i64>)> {
    rows.iter()
        .map(|r| (r.conn_id.clone(), r.version))
        .collect()
}

fn cursor(conn_id: &str, version: Option<i64>) -> ResealCursor {
    ResealCursor {
        conn_id: conn_id.into(),
        version,
    }
}

fn the_rotation_scan_pages_by_cursor_through_rows_then_kept_versions(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.add_key_check(2, "check-2").unwrap();
    // a: password and extra under key 1, updated twice (versions 1 and 2 kept, each with
    // its own login); b: updated once; c: no secret; d: password under key 2 already, extra
    // under key 1; e: everything under key 2; x: deleted (version 1 kept, 2 the marker).
    let mut a = conn("a");
    a.extra = sealed(1, b"extra-a");
    store.insert_connection(&a).unwrap();
    for (version, login) in [(1, "etl-2"), (2, "etl-3")] {
        a.version = version;
        a.login = Some(login.into());
        a.password = sealed(1, format!("password-a-{login}").as_bytes());
        store.update_connection(&a, 10).unwrap();
    }
    let mut b_row = conn("b");
    store.insert_connection(&b_row).unwrap();
    b_row.port = Some(6543);
    store.update_connection(&b_row, 10).unwrap();
    let mut c = conn("c");
    c.password = None;
    store.insert_connection(&c).unwrap();
    let mut d = conn("d");
    d.password = sealed(2, b"password-d");
    d.extra = sealed(1, b"extra-d");
    store.insert_connection(&d).unwrap();
    let mut e = conn("e");
    e.password = sealed(2, b"password-e");
    e.extra = sealed(2, b"extra-e");
    store.insert_connection(&e).unwrap();
    store.insert_connection(&conn("x")).unwrap();
    store.delete_connection("x", &del(false)).unwrap();

    let all = store.sealed_not_under_after(2, None, 100).unwrap();
    let order = [
        ("a", None),
        ("b", None),
        ("d", None),
        ("a", Some(1)),
        ("a", Some(2)),
        ("b", Some(1)),
        ("x", Some(1)),
    ];
    let expected: Vec<_> = order.iter().map(|(c, v)| (c.to_string(), *v)).collect();
    assert_eq!(at(&all), expected);
    // Each row comes with what its values are bound to — a kept version its own — and only
    // the values not under key 2.
    let row = |conn_id: &str, version| {
        all.iter()
            .find(|r| r.conn_id == conn_id && r.version == version)
            .unwrap()
    };
    let a_now = row("a", None);
    assert_eq!(
        (
            a_now.conn_type.as_str(),
            a_now.host.as_deref(),
            a_now.port,
            a_now.login.as_deref()
        ),
        (
            "postgres",
            Some("db.example.com"),
            Some(5432),
            Some("etl-3")
        )
    );
    assert_eq!(a_now.password, sealed(1, b"password-a-etl-3"));
    assert_eq!(a_now.extra, sealed(1, b"extra-a"));
    assert_eq!(row("a", Some(1)).login.as_deref(), Some("etl"));
    assert_eq!(row("a", Some(1)).password, sealed(1, b"sealed-password"));
    assert_eq!(row("a", Some(2)).login.as_deref(), Some("etl-2"));
    assert_eq!(row("b", None).port, Some(6543));
    assert_eq!(row("b", Some(1)).port, Some(5432));
    assert_eq!(row("d", None).password, None, "under key 2 already");
    assert_eq!(row("d", None).extra, sealed(1, b"extra-d"));
    assert_eq!(
        row("x", Some(1)).sealed(SecretField::Password),
        sealed(1, b"sealed-password").as_ref()
    );

    // Pages of 2, each after the last row of the one before: the same rows, in order, none
    // twice, and an empty page at the end.
    let mut pages = Vec::new();
    let mut after: Option<ResealCursor> = None;
    loop {
        let page = store.sealed_not_under_after(2, after.as_ref(), 2).unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        pages.push(at(&page));
    }
    assert_eq!(pages.len(), 4);
    assert_eq!(pages.concat(), expected);
    assert_eq!(
        pages[1],
        expected[2..4],
        "a page spans the current rows and the kept ones"
    );

    // A cursor is a place in the order, whether or not its row is still there.
    let from =
        |c: ResealCursor, limit| at(&store.sealed_not_under_after(2, Some(&c), limit).unwrap());
    assert_eq!(from(cursor("b0", None), 1), expected[2..3]);
    assert_eq!(from(cursor("zz", None), 2), expected[3..5]);
    assert_eq!(from(cursor("a", Some(1)), 10), expected[4..]);
    assert_eq!(from(cursor("a", Some(-5)), 1), expected[3..4]);
    assert!(from(cursor("x", Some(1)), 10).is_empty());
    assert!(store.sealed_not_under_after(2, None, 0).unwrap().is_empty());

    // 5 current rows and 5 kept versions (x's deleted marker among them).
    assert_eq!(store.count_rows().unwrap(), 10);

    // Once a value is under key 2 its row is left out; with both values, the whole row.
    let mut d = store.get_connection("d").unwrap().unwrap();
    d.extra = sealed(2, b"extra-d-2");
    store.update_connection(&d, 10).unwrap();
    let rest = at(&store.sealed_not_under_after(2, None, 100).unwrap());
    assert!(!rest.contains(&("d".to_string(), None)), "{rest:?}");
    assert!(rest.contains(&("d".to_string(), Some(1))), "{rest:?}");
}

fn a_rotation_batch_writes_counts_and_records_its_progress_in_one_transaction(b: &impl Backend) {
    let store = b.open();
    with_key(&store);
    store.add_key_check(2, "check-2").unwrap();
    let mut a = conn("a");
    a.extra = sealed(1, b"extra-a");
    store.insert_connection(&a).unwrap();
    a.login = Some("etl-2".into());
    a.password = sealed(1, b"password-a-2");
    store.update_connection(&a, 10).unwrap();
    store.insert_connection(&conn("b")).unwrap();
    let reseal = |conn_id: &str, version, field, old: &[u8]| Reseal {
        conn_id: conn_id.into(),
        version,
        field,
        old: old.to_vec(),
        new: Sealed {
            key_id: 2,
            blob: [b"k2-".as_slice(), old].concat(),
        },
    };
    let batch = [
        reseal("a", None, SecretField::Password, b"password-a-2"),
        reseal("a", None, SecretField::Extra, b"extra-a"),
        reseal("a", Some(1), SecretField::Password, b"sealed-password"),
        // Changed meanwhile: not written.
        reseal("b", None, SecretField::Password, b"not-what-b-holds"),
    ];

    // A key the database does not know: nothing at all is written, not even the progress.
    let mut unknown = batch.to_vec();
    unknown[1].new.key_id = 9;
    assert!(matches!(
        store.reseal_batch(&unknown, ("key_rotation", Some("p0"))),
        Err(StoreError::UnknownKey(9))
    ));
    assert_eq!(store.meta("key_rotation").unwrap(), None);
    assert_eq!(store.sealed_per_key().unwrap(), vec![(1, 5)]);

    let before = store.generation().unwrap();
    let seals = store.seals(2).unwrap();
    assert_eq!(
        store
            .reseal_batch(&batch, ("key_rotation", Some("p1")))
            .unwrap(),
        3
    );
    assert_ne!(b.changed_from(&store, before), before);
    assert_eq!(store.meta("key_rotation").unwrap().as_deref(), Some("p1"));
    assert_eq!(
        store.seals(2).unwrap(),
        seals + 4,
        "every value sealed counts"
    );
    let now = store.get_connection("a").unwrap().unwrap();
    assert_eq!(now.password, sealed(2, b"k2-password-a-2"));
    assert_eq!(now.extra, sealed(2, b"k2-extra-a"));
    let v1 = store.get_version("a", 1).unwrap().unwrap().conn;
    assert_eq!(v1.password, sealed(2, b"k2-sealed-password"));
    assert_eq!(v1.extra, sealed(1, b"extra-a"), "not in the batch");
    assert_eq!(
        store.get_connection("b").unwrap().unwrap().password,
        sealed(1, b"sealed-password")
    );
    assert_eq!(store.sealed_per_key().unwrap(), vec![(1, 2), (2, 3)]);

    // Written again with the same old values: nothing matches any more.
    assert_eq!(
        store
            .reseal_batch(&batch, ("key_rotation", Some("p2")))
            .unwrap(),
        0
    );
    assert_eq!(store.meta("key_rotation").unwrap().as_deref(), Some("p2"));
    // The end of a rotation: no values, the setting removed.
    assert_eq!(store.reseal_batch(&[], ("key_rotation", None)).unwrap(), 0);
    assert_eq!(store.meta("key_rotation").unwrap(), None);
    assert_eq!(store.reseal_batch(&[], ("key_rotation", None)).unwrap(), 0);
}
