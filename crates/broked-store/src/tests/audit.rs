//! The audit log on both backends (see `suite!` in the parent module).

use super::*;

suite!(
    audit_records_chain_and_filter,
    concurrent_audit_appenders_keep_one_chain,
    pruning_the_audit_log_keeps_the_cut,
);

/// A stand-in for the library's HMAC: any function of the previous MAC and the record.
pub(super) fn test_mac() -> AuditMac {
    Arc::new(|prev: &str, r: &AuditRecord| {
        format!(
            "{:016x}",
            fnv1a(&format!(
                "{prev}|{}|{}|{}|{}|{:?}",
                r.seq, r.at, r.actor, r.action, r.conn_id
            ))
        )
    })
}

pub(super) fn record(actor: &str, action: &str, conn_id: Option<&str>, at: &str) -> AuditRecord {
    AuditRecord {
        at: at.into(),
        actor: actor.into(),
        action: action.into(),
        conn_id: conn_id.map(Into::into),
        fields: "host,password".into(),
        outcome: "ok".into(),
        value_hashes: String::new(),
        // Ignored: assigned by the store.
        seq: 99,
        mac: "ignored".into(),
        ..AuditRecord::default()
    }
}

/// Every record chains from the one before it (from `prev` for the first).
pub(super) fn assert_chain(records: &[AuditRecord], first_seq: i64, mut prev: String) {
    let mac = test_mac();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, first_seq + i as i64, "no gap, no fork");
        assert_eq!(r.mac, mac(&prev, r), "seq {}", r.seq);
        prev.clone_from(&r.mac);
    }
}

fn audit_records_chain_and_filter(b: &impl Backend) {
    let store = b.open();
    assert_eq!(store.audit_head().unwrap(), None);
    let mut hashed = record("ci", "reveal", Some("pg"), "2025-01-02T00:00:00Z");
    hashed.value_hashes = "hmac-sha256:aa,hmac-sha256:bb".into();
    hashed.request_id = Some("req-1".into());
    hashed.detail = "what=uri".into();
    let stored = store
        .append_audit(
            vec![
                record("cli:alice", "create", Some("pg"), "2025-01-01T00:00:00Z"),
                record("cli:alice", "create", Some("my"), "2025-01-01T00:00:01Z"),
                hashed.clone(),
            ],
            test_mac(),
        )
        .unwrap();
    store
        .append_audit(
            vec![record("ci", "key_rotate", None, "2025-01-03T00:00:00Z")],
            test_mac(),
        )
        .unwrap();
    store
        .append_audit(
            vec![record("ci", "delete", Some("pg"), "2025-01-04T00:00:00Z")],
            test_mac(),
        )
        .unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(
        (stored[2].seq, &stored[2].request_id, &stored[2].detail),
        (3, &hashed.request_id, &hashed.detail)
    );

    let all = store.audit_range(1, 100).unwrap();
    assert_eq!(all.len(), 5);
    assert_chain(&all, 1, String::new());
    assert_eq!(all[2], stored[2], "read back as written");
    assert_eq!(store.audit_head().unwrap().unwrap(), all[4]);
    assert_eq!(store.audit_range(4, 1).unwrap(), vec![all[3].clone()]);

    let list = |f: AuditFilter| -> Vec<i64> {
        store
            .list_audit(&AuditFilter { limit: 100, ..f })
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect()
    };
    assert_eq!(list(AuditFilter::default()), vec![5, 4, 3, 2, 1]);
    let conn = |id: &str| AuditFilter {
        conn_id: Some(id.into()),
        ..AuditFilter::default()
    };
    assert_eq!(list(conn("pg")), vec![5, 3, 1]);
    assert_eq!(list(conn("p")), Vec::<i64>::new(), "whole ids only");
    assert_eq!(
        list(AuditFilter {
            action: Some("create".into()),
            ..AuditFilter::default()
        }),
        vec![2, 1]
    );
    assert_eq!(
        list(AuditFilter {
            since: Some("2025-01-02T00:00:00Z".into()),
            ..AuditFilter::default()
        }),
        vec![5, 4, 3]
    );
    let hash = |h: &str| AuditFilter {
        value_hash: Some(h.into()),
        ..AuditFilter::default()
    };
    assert_eq!(list(hash("hmac-sha256:bb")), vec![3]);
    assert_eq!(list(hash("hmac-sha256:aa")), vec![3]);
    assert_eq!(
        list(hash("hmac-sha256:a")),
        Vec::<i64>::new(),
        "whole entries only"
    );
    // The cursor and the limit: pages of two.
    let page = |before: Option<i64>| {
        store
            .list_audit(&AuditFilter {
                before_seq: before,
                limit: 2,
                ..AuditFilter::default()
            })
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None), vec![5, 4]);
    assert_eq!(page(Some(4)), vec![3, 2]);
    assert_eq!(page(Some(2)), vec![1]);
    assert_eq!(page(Some(1)), Vec::<i64>::new());
    // Another handle (another process) continues the same chain.
    let other = b.open();
    let next = other
        .append_audit(
            vec![record("x", "check", None, "2025-01-05T00:00:00Z")],
            test_mac(),
        )
        .unwrap();
    assert_eq!(next[0].seq, 6);
    assert_chain(&store.audit_range(1, 100).unwrap(), 1, String::new());
}

fn concurrent_audit_appenders_keep_one_chain(b: &impl Backend) {
    const THREADS: usize = 4;
    const EACH: usize = 15;
    b.open();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                let store = b.open();
                for i in 0..EACH {
                    let n = if i % 3 == 0 { 2 } else { 1 };
                    let records = (0..n)
                        .map(|_| {
                            record(
                                &format!("t{t}"),
                                "update",
                                Some("c"),
                                "2025-01-01T00:00:00Z",
                            )
                        })
                        .collect();
                    store.append_audit(records, test_mac()).unwrap();
                }
            });
        }
    });
    let all = b.open().audit_range(1, 1000).unwrap();
    assert_eq!(all.len(), THREADS * (EACH + EACH.div_ceil(3)));
    assert_chain(&all, 1, String::new());
}

fn pruning_the_audit_log_keeps_the_cut(b: &impl Backend) {
    let store = b.open();
    assert_eq!(store.prune_audit(100).unwrap(), None, "nothing to prune");
    for i in 0..10 {
        store
            .append_audit(
                vec![record(
                    "a",
                    "update",
                    Some("c"),
                    &format!("2025-01-{:02}T00:00:00Z", i + 1),
                )],
                test_mac(),
            )
            .unwrap();
    }
    let all = store.audit_range(1, 100).unwrap();
    let cut = store.prune_audit(6).unwrap().unwrap();
    assert_eq!(
        cut,
        AuditCut {
            seq: 5,
            mac: all[4].mac.clone()
        }
    );
    assert_eq!(store.meta(AUDIT_CUT_SEQ).unwrap().as_deref(), Some("5"));
    assert_eq!(store.meta(AUDIT_CUT_MAC).unwrap(), Some(all[4].mac.clone()));
    let kept = store.audit_range(1, 100).unwrap();
    assert_eq!(kept, all[5..].to_vec());
    assert_chain(&kept, 6, cut.mac.clone());
    assert_eq!(store.prune_audit(6).unwrap(), None, "already cut there");
    // Never the newest: the next record chains from it.
    let cut = store.prune_audit(1000).unwrap().unwrap();
    assert_eq!(cut.seq, 9);
    assert_eq!(store.audit_range(1, 100).unwrap(), vec![all[9].clone()]);
    store
        .append_audit(
            vec![record("a", "check", None, "2025-02-01T00:00:00Z")],
            test_mac(),
        )
        .unwrap();
    let rest = store.audit_range(1, 100).unwrap();
    assert_chain(&rest, 10, cut.mac);
    // An empty log after a cut continues after it (the cut, not seq 1).
    b.raw("DELETE FROM audit");
    let next = store
        .append_audit(
            vec![record("a", "check", None, "2025-02-02T00:00:00Z")],
            test_mac(),
        )
        .unwrap();
    assert_eq!(next[0].seq, 10);
}
