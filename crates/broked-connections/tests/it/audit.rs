//! The audit log (issue 17): what each call records, the tamper checks of `audit_verify`
//! on both stores, pruning, and resolve counting.

use std::time::Duration;

use broked_connections::{
    Actor, AuditEntry, AuditQuery, ConnectionInput, ConnectionUpdate, Connections, FindingKind,
    Options, PipelineDef, Secret, SecretUpdate, UpdateMode,
};
use serde_json::json;

use super::{Db, EXTRA_VALUE, PASSWORD, PgSchema};

fn input(id: &str) -> ConnectionInput {
    ConnectionInput {
        conn_id: Some(id.into()),
        conn_type: Some("postgres".into()),
        host: Some("db.example.com".into()),
        login: Some("etl".into()),
        password: Some(PASSWORD.into()),
        extra: Some(
            format!(r#"{{"application_name":"{EXTRA_VALUE}"}}"#)
                .as_str()
                .into(),
        ),
        ..Default::default()
    }
}

fn all(c: &Connections) -> Vec<AuditEntry> {
    let mut out = c
        .audit_list(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .unwrap();
    out.reverse();
    out
}

/// The one record of `action` (panics if there is not exactly one).
fn one<'a>(records: &'a [AuditEntry], action: &str) -> &'a AuditEntry {
    let found: Vec<&AuditEntry> = records.iter().filter(|r| r.action == action).collect();
    assert_eq!(found.len(), 1, "{action}: {records:#?}");
    found[0]
}

#[test]
fn every_call_is_recorded_with_its_actor_fields_and_outcome_never_a_value() {
    let db = Db::new();
    let c = db.open();
    let ci = c.acting(Actor::token("ci").with_request_id("req-7"));
    ci.create(input("pg")).unwrap();
    let new_pw = "Second-Pw-8812";
    ci.update(
        "pg",
        ConnectionUpdate {
            host: Some(Some("db.example.com".into())),
            description: Some(Some("primary".into())),
            password: SecretUpdate::Set(new_pw.into()),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    ci.update("nope", ConnectionUpdate::default(), UpdateMode::Merge)
        .unwrap_err();
    assert!(ci.uri("pg").unwrap().expose().contains(new_pw));
    ci.export(true).unwrap();
    ci.export_uris(true).unwrap();
    let def = PipelineDef::from_value(json!({
        "name": "etl",
        "nodes": [{"id": "src", "type": "source", "config": {"conn_id": "pg"}}]
    }))
    .unwrap();
    ci.put_pipeline("daily", def).unwrap();
    ci.delete_pipeline("daily").unwrap();
    ci.import(json!([input_json("imp")]), false).unwrap();
    ci.rotate(|_, _| {}).unwrap();
    ci.prune().unwrap();
    ci.check().unwrap();
    ci.create_token("robot", &[broked_connections::Scope::Read], None, None)
        .unwrap();
    ci.revoke_token("robot").unwrap();
    ci.delete("imp", false).unwrap();
    c.record_refused(
        &Actor::anonymous().with_request_id("req-9"),
        "client=192.0.2.1",
    )
    .unwrap();
    // The library's own calls act as "library".
    c.connection("pg").unwrap();

    let records = all(&c);
    let create = one(&records, "create");
    assert_eq!(create.actor, "ci");
    assert_eq!(create.request_id.as_deref(), Some("req-7"));
    assert_eq!(create.conn_id.as_deref(), Some("pg"));
    assert_eq!(create.outcome, "ok");
    assert_eq!(
        create.fields,
        ["type", "host", "login", "password", "extra"]
    );
    let first_hash = c.audit_hash(&Secret::new(PASSWORD)).unwrap();
    assert_eq!(create.value_hashes, std::slice::from_ref(&first_hash));

    let updates: Vec<&AuditEntry> = records.iter().filter(|r| r.action == "update").collect();
    assert_eq!(updates.len(), 2);
    // Only what changed: the host was sent unchanged.
    assert_eq!(updates[0].fields, ["password", "description"]);
    let second_hash = c.audit_hash(&Secret::new(new_pw)).unwrap();
    assert_eq!(updates[0].value_hashes, std::slice::from_ref(&second_hash));
    assert_eq!(
        (updates[1].conn_id.as_deref(), updates[1].outcome.as_str()),
        (Some("nope"), "not_found")
    );

    let reveals: Vec<&AuditEntry> = records.iter().filter(|r| r.action == "reveal").collect();
    assert_eq!(reveals.len(), 2);
    assert_eq!(reveals[0].actor, "ci");
    assert_eq!(reveals[0].detail, "what=uri");
    assert_eq!(reveals[0].value_hashes, std::slice::from_ref(&second_hash));
    assert_eq!(reveals[1].actor, "library");
    let exports: Vec<&AuditEntry> = records.iter().filter(|r| r.action == "export").collect();
    assert_eq!(exports.len(), 2);
    assert!(exports[0].detail.contains("decrypted=true"), "{exports:?}");
    assert!(exports[1].detail.contains("format=env"), "{exports:?}");
    assert!(one(&records, "pipeline_put").detail.contains("conns=pg"));
    one(&records, "pipeline_delete");
    assert!(one(&records, "import").detail.contains("conns=imp"));
    assert!(one(&records, "key_rotate").detail.starts_with("key=k2"));
    one(&records, "key_prune");
    one(&records, "key_check");
    assert!(one(&records, "token_create").detail.contains("token=robot"));
    one(&records, "token_revoke");
    assert_eq!(one(&records, "delete").conn_id.as_deref(), Some("imp"));
    let auth = one(&records, "auth");
    assert_eq!(
        (
            auth.actor.as_str(),
            auth.outcome.as_str(),
            auth.detail.as_str()
        ),
        ("anonymous", "denied", "client=192.0.2.1")
    );

    // Found by the value's HMAC: the create and the reveal of the first password.
    let mentions = |h: &str| -> Vec<String> {
        c.audit_list(&AuditQuery {
            value_hash: Some(h.into()),
            ..AuditQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect()
    };
    assert_eq!(mentions(&first_hash), ["create"]);
    assert_eq!(mentions(&second_hash), ["reveal", "reveal", "update"]);

    // Filters and the cursor.
    let by_conn = c
        .audit_list(&AuditQuery {
            conn_id: Some("pg".into()),
            action: Some("update".into()),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(by_conn.len(), 1);
    let page = c
        .audit_list(&AuditQuery {
            limit: 2,
            cursor: Some(records[3].seq),
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [records[2].seq, records[1].seq]
    );
    assert!(
        c.audit_list(&AuditQuery {
            since: Some("yesterday".into()),
            ..AuditQuery::default()
        })
        .unwrap_err()
        .to_string()
        .contains("since")
    );

    // No value anywhere in the records, the database file or the checkpoint file.
    drop(ci);
    drop(c);
    let text = format!("{records:?}");
    let db_bytes = std::fs::read(&db.path).unwrap();
    let mut wal = db.path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = std::fs::read(&wal).unwrap_or_default();
    let checkpoints =
        std::fs::read_to_string(broked_connections::checkpoint_path(&db.key())).unwrap();
    assert!(checkpoints.starts_with("v1 head "), "{checkpoints}");
    for value in [PASSWORD, new_pw, EXTRA_VALUE] {
        assert!(!text.contains(value), "{value} in a record");
        assert!(!checkpoints.contains(value));
        for bytes in [&db_bytes, &wal_bytes] {
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "{value} in the database file"
            );
        }
    }
    // And the chain is intact.
    let report = Connections::open(&db.path).unwrap().audit_verify().unwrap();
    assert_eq!(report.findings, []);
    assert_eq!(report.checked, records.len() as u64);
    assert!(report.checkpoints >= 1);
}

fn input_json(id: &str) -> serde_json::Value {
    json!({"conn_id": id, "type": "postgres", "host": "h.example.com", "login": "u",
           "password": PASSWORD})
}

/// Makes twelve records (ids a0..a11), checkpointed at the end (the handle is dropped).
fn twelve(c: Connections) {
    for i in 0..12 {
        c.acting(Actor::token("ci"))
            .create(ConnectionInput {
                conn_id: Some(format!("a{i}")),
                conn_type: Some("generic".into()),
                host: Some("h.example.com".into()),
                port: Some(1),
                ..Default::default()
            })
            .unwrap();
    }
}

/// `tamper` runs SQL on the database behind the library's back.
fn tampering_is_found_by_seq(open: &dyn Fn() -> Connections, tamper: &dyn Fn(&str)) {
    twelve(open());
    let clean = open().audit_verify().unwrap();
    assert_eq!(clean.findings, [], "a clean chain");
    assert_eq!((clean.first_seq, clean.head_seq), (Some(1), Some(12)));

    // An edited record: the actor changed.
    tamper("UPDATE audit SET actor = 'someone-else' WHERE seq = 4");
    let r = open().audit_verify().unwrap();
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.seq, f.kind))
            .collect::<Vec<_>>(),
        [(4, FindingKind::Edited)],
        "{r:#?}"
    );
    tamper("UPDATE audit SET actor = 'ci' WHERE seq = 4");
    assert_eq!(open().audit_verify().unwrap().findings, []);

    // A deleted record in the middle.
    tamper("DELETE FROM audit WHERE seq = 7");
    let r = open().audit_verify().unwrap();
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.seq, f.kind))
            .collect::<Vec<_>>(),
        [(7, FindingKind::Deleted)],
        "{r:#?}"
    );
    assert!(r.findings[0].message.contains("record 7"), "{r:#?}");

    // A truncated tail: the newest records gone, below the signed checkpoint.
    tamper("DELETE FROM audit WHERE seq >= 10");
    let r = open().audit_verify().unwrap();
    let kinds: Vec<_> = r.findings.iter().map(|f| (f.seq, f.kind)).collect();
    assert!(kinds.contains(&(10, FindingKind::Truncated)), "{r:#?}");
    assert!(kinds.contains(&(7, FindingKind::Deleted)), "{r:#?}");
}

#[test]
fn verify_finds_each_tampering_by_seq_on_sqlite() {
    let db = Db::new();
    let path = db.path.clone();
    tampering_is_found_by_seq(&|| Connections::open(&db.path).unwrap(), &|sql| {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.execute_batch(sql).unwrap();
    });
}

#[test]
fn verify_finds_each_tampering_by_seq_on_postgres() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("shared.key");
    let open = || {
        let mut o = Options::default();
        o.key_file = Some(key.clone());
        Connections::open_with(&pg.url, o).unwrap()
    };
    tampering_is_found_by_seq(&open, &|sql| {
        pg.psql(&format!("SET search_path TO {}; {sql}", pg.schema))
    });
}

#[test]
fn a_prune_keeps_the_chain_verifiable_and_a_faked_one_is_found() {
    let db = Db::new();
    twelve(db.open());
    let c = db.open();
    // Nothing is old enough.
    let none = c.audit_prune(Duration::from_secs(3600)).unwrap();
    assert_eq!(none.removed, 0);
    db_sql(
        &db,
        "UPDATE audit SET at = '2000-01-01T00:00:00Z' WHERE seq <= 5",
    );
    // The edit broke those MACs; a prune removes them with their cut signed.
    let pruned = c.audit_prune(Duration::from_secs(3600)).unwrap();
    assert_eq!(
        pruned,
        broked_connections::AuditPruned {
            removed: 5,
            cut_seq: Some(5)
        }
    );
    let r = c.audit_verify().unwrap();
    assert_eq!(r.findings, [], "{r:#?}");
    assert_eq!((r.cut_seq, r.first_seq), (5, Some(6)));
    assert!(c.audit_list(&AuditQuery::default()).unwrap()[0].action == "audit_prune");
    drop(c);
    // Deleting old records and writing a cut into meta by hand is no prune, even with the
    // right MAC (a database-only attacker can read it).
    db_sql(
        &db,
        "UPDATE meta SET value = '8' WHERE name = 'audit_cut_seq';
         UPDATE meta SET value = (SELECT mac FROM audit WHERE seq = 8) WHERE name = 'audit_cut_mac';
         DELETE FROM audit WHERE seq <= 8",
    );
    let r = db.open().audit_verify().unwrap();
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.seq, f.kind))
            .collect::<Vec<_>>(),
        [(8, FindingKind::Cut)],
        "{r:#?}"
    );
}

fn db_sql(db: &Db, sql: &str) {
    let c = rusqlite::Connection::open(&db.path).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute_batch(sql).unwrap();
}

#[test]
fn a_checkpoint_file_line_edited_is_found() {
    let db = Db::new();
    twelve(db.open());
    let file = broked_connections::checkpoint_path(&db.key());
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("v1 head 12 ", "v1 head 13 ")).unwrap();
    let r = db.open().audit_verify().unwrap();
    assert_eq!(
        r.findings
            .iter()
            .map(|f| (f.seq, f.kind))
            .collect::<Vec<_>>(),
        [(13, FindingKind::Checkpoint)],
        "{r:#?}"
    );
}

#[test]
fn resolves_record_the_first_of_each_conn_id_and_counts_per_interval() {
    let db = Db::new();
    db.open().create(input("pg")).unwrap();
    db.open().create(input("my")).unwrap();
    let mut o = Options::default();
    o.audit_interval = Duration::from_secs(3600);
    let c = Connections::open_with(&db.path, o).unwrap();
    for _ in 0..5 {
        c.resolve("pg").unwrap();
    }
    c.resolve("my").unwrap();
    c.flush_audit();
    let resolves = |c: &Connections| -> Vec<(String, String)> {
        all(c)
            .into_iter()
            .filter(|r| r.action == "resolve")
            .map(|r| (r.conn_id.unwrap(), r.detail))
            .collect()
    };
    // The first resolve is recorded once per conn_id (with what it counted so far; the
    // background thread may have recorded the first one alone before the loop ended).
    let got = resolves(&c);
    let firsts: Vec<&(String, String)> = got
        .iter()
        .filter(|(_, d)| d.starts_with("first=true"))
        .collect();
    assert_eq!(firsts.len(), 2, "{got:?}");
    let counted = |got: &[(String, String)], id: &str| -> u64 {
        got.iter()
            .filter(|(c, _)| c == id)
            .map(|(_, d)| {
                d.split(' ')
                    .find_map(|w| w.strip_prefix("count="))
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    assert_eq!(counted(&got, "pg"), 5, "{got:?}");
    assert_eq!(counted(&got, "my"), 1, "{got:?}");
    // Later resolves: counts only, no second "first".
    for _ in 0..3 {
        c.resolve("pg").unwrap();
    }
    c.flush_audit();
    let got = resolves(&c);
    assert_eq!(
        got.iter()
            .filter(|(_, d)| d.starts_with("first=true"))
            .count(),
        2
    );
    assert_eq!(counted(&got, "pg"), 8, "{got:?}");
    assert!(got.last().unwrap().1.starts_with("count=3 "), "{got:?}");
    // Nothing new: no record.
    c.flush_audit();
    assert_eq!(resolves(&c).len(), got.len());
}

#[test]
fn resolve_counts_are_flushed_in_the_background() {
    let db = Db::new();
    db.open().create(input("pg")).unwrap();
    let mut o = Options::default();
    o.audit_interval = Duration::from_millis(50);
    let c = Connections::open_with(&db.path, o).unwrap();
    c.resolve("pg").unwrap();
    c.resolve("pg").unwrap();
    // No flush called: the thread records within a few intervals.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let total: u64 = all(&c)
            .iter()
            .filter(|r| r.action == "resolve")
            .filter_map(|r| {
                r.detail
                    .split(' ')
                    .find_map(|w| w.strip_prefix("count="))
                    .map(|n| n.parse::<u64>().unwrap())
            })
            .sum();
        if total == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not flushed: {:?}",
            all(&c)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 19: a change and its audit record commit in one transaction. The database refuses
/// the record of one action at a time (a trigger — as a full disk or a lost connection would
/// refuse it at that point): the change is refused with it, and nothing of it stays. Before,
/// the record was appended after the change had committed, and its failure only logged.
fn a_change_whose_record_is_refused_is_not_made(
    open: &dyn Fn() -> Connections,
    sql: &dyn Fn(&str),
    refuse: &dyn Fn(&str) -> String,
    allow: &dyn Fn(&str) -> String,
) {
    let c = open();
    c.create(input("keep")).unwrap();
    c.create(input("gone")).unwrap();
    let failures = c.audit_failures();

    sql(&refuse("create"));
    assert!(
        c.create(input("new")).is_err(),
        "created without its record"
    );
    assert!(matches!(
        c.get("new"),
        Err(broked_connections::Error::NotFound(_))
    ));
    sql(&allow("create"));

    sql(&refuse("update"));
    let update = ConnectionUpdate {
        description: Some(Some("changed".into())),
        ..Default::default()
    };
    assert!(c.update("keep", update, UpdateMode::Merge).is_err());
    let keep = c.get("keep").unwrap();
    assert_eq!((keep.version, keep.description), (1, None));
    assert_eq!(c.versions("keep").unwrap().len(), 1, "no version kept");
    sql(&allow("update"));

    sql(&refuse("delete"));
    assert!(c.delete("gone", false).is_err());
    assert_eq!(c.get("gone").unwrap().version, 1);
    sql(&allow("delete"));

    c.delete("gone", false).unwrap();
    let records = all(&c);
    assert_eq!(
        records
            .iter()
            .map(|r| (r.action.as_str(), r.conn_id.as_deref(), r.outcome.as_str()))
            .collect::<Vec<_>>(),
        [
            ("create", Some("keep"), "ok"),
            ("create", Some("gone"), "ok"),
            ("delete", Some("gone"), "ok"),
        ],
        "only the changes made, each with its record"
    );
    // The refused calls' own records (their failure) were refused too, and counted.
    assert!(c.audit_failures() >= failures + 3);
    let report = c.audit_verify().unwrap();
    assert_eq!(report.findings, [], "{report:#?}");
    assert_eq!(report.head_seq, Some(3));
}

#[test]
fn a_change_whose_record_is_refused_is_not_made_on_sqlite() {
    let db = Db::new();
    a_change_whose_record_is_refused_is_not_made(
        &|| db.open(),
        &|sql| db_sql(&db, sql),
        &|action| {
            format!(
                "CREATE TRIGGER refuse_{action} BEFORE INSERT ON audit \
                 WHEN NEW.action = '{action}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        },
        &|action| format!("DROP TRIGGER refuse_{action}"),
    );
}

#[test]
fn a_change_whose_record_is_refused_is_not_made_on_postgres() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("shared.key");
    let sql = |sql: &str| pg.psql(&format!("SET search_path TO {}; {sql}", pg.schema));
    let open = || {
        let mut o = Options::default();
        o.key_file = Some(key.clone());
        Connections::open_with(&pg.url, o).unwrap()
    };
    open();
    sql(
        "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
    );
    a_change_whose_record_is_refused_is_not_made(
        &open,
        &sql,
        &|action| {
            format!(
                "CREATE TRIGGER refuse_{action} BEFORE INSERT ON audit FOR EACH ROW \
                 WHEN (NEW.action = '{action}') EXECUTE FUNCTION refuse_audit()"
            )
        },
        &|action| format!("DROP TRIGGER refuse_{action} ON audit"),
    );
}

/// The writer process of [`no_kill_leaves_a_change_without_its_record`]; does nothing in a
/// normal test run.
#[test]
fn kill_child() {
    let Ok(spec) = std::env::var("BROKED_IT_AUDIT_KILL") else {
        return;
    };
    let (db, prefix) = spec.split_once('\n').unwrap();
    let c = Connections::open(db).unwrap();
    for i in 0.. {
        c.create(input(&format!("{prefix}-{i}"))).unwrap();
    }
}

/// Issue 19: writers killed (SIGKILL) at random points while they create connections: every
/// connection that exists afterwards has its create record, and the chain verifies. Before,
/// a kill between a create's commit and its record's (the record was a transaction of its
/// own after the change) left a connection no record mentions.
#[test]
fn no_kill_leaves_a_change_without_its_record() {
    let db = Db::new();
    db.open().create(input("first")).unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("no_kill_leaves_a_change_without_its_record: seed {seed}");
    for round in 0..8 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "audit::kill_child", "--nocapture"])
            .env(
                "BROKED_IT_AUDIT_KILL",
                format!("{}\nr{round}", db.path.display()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + (seed >> 33) % 250));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let c = db.open();
    let ids: Vec<String> = c
        .list(None)
        .unwrap()
        .into_iter()
        .map(|i| i.conn_id.as_str().to_owned())
        .collect();
    assert!(
        ids.len() > 8,
        "the writers created too little to test: {ids:?}"
    );
    // Every page of the log (a quiet machine creates more than one page of 1,000 records).
    let mut created = std::collections::HashSet::new();
    let mut cursor = None;
    loop {
        let page = c
            .audit_list(&AuditQuery {
                action: Some("create".into()),
                cursor,
                limit: AuditQuery::MAX_LIMIT,
                ..AuditQuery::default()
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.seq);
        created.extend(
            page.into_iter()
                .filter(|r| r.outcome == "ok")
                .filter_map(|r| r.conn_id),
        );
    }
    let without: Vec<&String> = ids.iter().filter(|id| !created.contains(*id)).collect();
    assert_eq!(
        without,
        Vec::<&String>::new(),
        "connections without their record"
    );
    assert_eq!(
        created.len(),
        ids.len(),
        "a record of a create that is not there"
    );
    let report = c.audit_verify().unwrap();
    assert_eq!(report.findings, [], "{report:#?}");
}
