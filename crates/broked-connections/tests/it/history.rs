//! Version history (issue 17): versions listed and shown masked, rollback (secrets re-sealed,
//! never moved to another target), expected versions, purge, and the key operations over
//! every kept version.

use broked_connections::{
    Actor, ConnectionUpdate, Connections, Error, ErrorKind, Options, SecretUpdate, UpdateMode,
};

use super::{Db, PASSWORD, assert_no_secret, pg};

const OLD_PASSWORD: &str = "Hist-Old-Pw-5521";
const NEW_PASSWORD: &str = "Hist-New-Pw-7734";

fn set_password(c: &Connections, id: &str, pw: &str) {
    c.update(
        id,
        ConnectionUpdate {
            password: SecretUpdate::Set(pw.into()),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
}

fn raw(db: &Db, sql: &str) {
    rusqlite::Connection::open(&db.path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

fn password(c: &Connections, id: &str) -> Option<String> {
    c.connection(id)
        .unwrap()
        .password
        .map(|p| p.expose().to_owned())
}

#[test]
fn every_update_is_listed_with_its_writer_and_changed_fields_never_a_value() {
    let db = Db::new();
    let c = db.open();
    let created = c.acting(Actor::named("alice")).create(pg("pg")).unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.updated_by.as_deref(), Some("alice"));
    let updated = c
        .acting(Actor::token("ci-bot"))
        .update(
            "pg",
            ConnectionUpdate {
                host: Some(Some("db2.example.com".into())),
                password: SecretUpdate::Set(NEW_PASSWORD.into()),
                extra: SecretUpdate::Set(r#"{"sslmode":"require"}"#.into()),
                ..Default::default()
            },
            UpdateMode::Merge,
        )
        .unwrap();
    assert_eq!(updated.version, 2);
    c.update(
        "pg",
        ConnectionUpdate {
            description: Some(Some("third".into())),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    let versions = c.versions("pg").unwrap();
    let listed: Vec<_> = versions
        .iter()
        .map(|v| {
            (
                v.version,
                v.updated_by.as_deref().unwrap(),
                v.changed.join(","),
                v.current,
                v.deleted,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (3, "library", "description".to_owned(), true, false),
            (2, "ci-bot", "host,password,extra".to_owned(), false, false),
            (1, "alice", String::new(), false, false),
        ]
    );
    let one = c.version("pg", 1).unwrap();
    assert_eq!(one.connection.host.as_deref(), Some("db.example.com"));
    assert!(one.connection.has_password && one.connection.has_extra);
    assert_eq!(one.connection.version, 1);
    assert!(!one.summary.current);
    assert!(c.version("pg", 3).unwrap().summary.current);
    assert_no_secret(&format!("{versions:?} {one:?}"));
    assert!(!format!("{versions:?} {one:?}").contains(NEW_PASSWORD));
    let err = c.version("pg", 9).unwrap_err();
    assert!(
        matches!(err, Error::VersionNotFound { version: 9, .. }),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(matches!(c.versions("nope"), Err(Error::NotFound(_))));
}

#[test]
fn rollback_writes_a_new_version_with_the_old_secrets_sealed_again() {
    let db = Db::new();
    let c = db.open();
    let mut input = pg("pg");
    input.password = Some(OLD_PASSWORD.into());
    c.create(input).unwrap();
    set_password(&c, "pg", NEW_PASSWORD);
    let back = c.rollback("pg", 1).unwrap();
    assert_eq!(back.version, 3);
    assert_eq!(password(&c, "pg").as_deref(), Some(OLD_PASSWORD));
    assert_eq!(c.resolve("pg").unwrap().connection.host, back.host);
    let v3 = &c.versions("pg").unwrap()[0];
    assert_eq!(v3.changed, ["password"]);
    // Sealed again for the new version: not the bytes of version 1.
    let blobs: Vec<Vec<u8>> = {
        let conn = rusqlite::Connection::open(&db.path).unwrap();
        let current: Vec<u8> = conn
            .query_row(
                "SELECT password FROM connections WHERE conn_id = 'pg'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let kept: Vec<u8> = conn
            .query_row(
                "SELECT password FROM connection_versions WHERE conn_id = 'pg' AND version = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        vec![current, kept]
    };
    assert_ne!(blobs[0], blobs[1]);
    // The current version is no rollback target; nor is a version never written.
    let err = c.rollback("pg", 3).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    assert!(matches!(
        c.rollback("pg", 42),
        Err(Error::VersionNotFound { .. })
    ));
    assert!(c.check().unwrap().failures.is_empty());
}

/// An attacker who can edit connections (not read secrets) tries to use the history to send
/// the stored password to a host of theirs. A rollback restores a version whole — host and
/// password together — and a kept row edited in the database does not open.
#[test]
fn rollback_never_steers_a_kept_password_to_another_target() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    c.create(pg("other")).unwrap();
    set_password(&c, "other", OLD_PASSWORD);
    let evil = |password: SecretUpdate| ConnectionUpdate {
        host: Some(Some("evil.example".into())),
        password,
        extra: SecretUpdate::Clear,
        ..Default::default()
    };
    // Pointing the connection elsewhere with the password kept is refused, as before.
    let err = c
        .update("pg", evil(SecretUpdate::Keep), UpdateMode::Merge)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    // So the attacker clears it (v2) and rolls back: to v1 — the real host comes back with
    // its password — or to v2 — their host, with no password.
    c.update("pg", evil(SecretUpdate::Clear), UpdateMode::Merge)
        .unwrap();
    c.rollback("pg", 1).unwrap();
    let now = c.connection("pg").unwrap();
    assert_eq!(now.host.as_deref(), Some("db.example.com"));
    assert_eq!(now.password.as_ref().map(|p| p.expose()), Some(PASSWORD));
    c.rollback("pg", 2).unwrap();
    let now = c.connection("pg").unwrap();
    assert_eq!(now.host.as_deref(), Some("evil.example"));
    assert_eq!(now.password, None);
    // With write access to the database: version 1 pointed at their host does not open,
    // and the rollback writes nothing.
    raw(
        &db,
        "UPDATE connection_versions SET host = 'evil.example' WHERE conn_id = 'pg' AND version = 1",
    );
    let before = c.get("pg").unwrap().version;
    let err = c.rollback("pg", 1).unwrap_err();
    assert!(matches!(err, Error::Decrypt { .. }), "{err}");
    assert_no_secret(&err.to_string());
    assert_eq!(c.get("pg").unwrap().version, before, "nothing written");
    // Nor does another connection's sealed password copied into this history.
    raw(
        &db,
        "UPDATE connection_versions SET host = 'db.example.com', password =
           (SELECT password FROM connections WHERE conn_id = 'other')
         WHERE conn_id = 'pg' AND version = 1",
    );
    let err = c.rollback("pg", 1).unwrap_err();
    assert!(matches!(err, Error::Decrypt { .. }), "{err}");
    assert_eq!(c.get("pg").unwrap().version, before);
    // `key check` opens every kept version and names the damaged one.
    let report = c.check().unwrap();
    let bad: Vec<_> = report
        .failures
        .iter()
        .map(|f| (f.conn_id.as_str(), f.version, f.field))
        .collect();
    assert_eq!(bad, [("pg", Some(1), "password")]);
}

#[test]
fn writes_with_an_expected_version_are_refused_when_stale() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    let acting = c.acting(Actor::token("ui"));
    let describe = |d: &str| ConnectionUpdate {
        description: Some(Some(d.into())),
        ..Default::default()
    };
    let v2 = acting
        .update_expecting("pg", describe("a"), UpdateMode::Merge, Some(1))
        .unwrap();
    assert_eq!(v2.version, 2);
    let err = acting
        .update_expecting("pg", describe("b"), UpdateMode::Merge, Some(1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Stale {
                expected: 1,
                current: Some(2),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Stale);
    assert_eq!(c.get("pg").unwrap().description.as_deref(), Some("a"));
    let err = acting.delete_expecting("pg", false, Some(1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Stale, "{err}");
    assert!(c.get("pg").is_ok());
    let err = acting.rollback("pg", 1, Some(1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Stale, "{err}");
    acting.delete_expecting("pg", false, Some(2)).unwrap();
    assert!(matches!(c.get("pg"), Err(Error::NotFound(_))));
}

#[test]
fn a_deleted_connection_keeps_its_history_until_purged_and_can_be_rolled_back() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    set_password(&c, "pg", NEW_PASSWORD);
    c.acting(Actor::named("cli:ops"))
        .delete("pg", false)
        .unwrap();
    let versions = c.versions("pg").unwrap();
    let listed: Vec<_> = versions
        .iter()
        .map(|v| (v.version, v.deleted, v.current, v.updated_by.as_deref()))
        .collect();
    assert_eq!(
        listed,
        [
            (3, true, false, Some("cli:ops")),
            (2, false, false, Some("library")),
            (1, false, false, Some("library")),
        ]
    );
    assert_eq!(c.rollback("pg", 3).unwrap_err().kind(), ErrorKind::Invalid);
    // Put back: created again, the numbers going on.
    let back = c.rollback("pg", 2).unwrap();
    assert_eq!(back.version, 4);
    assert_eq!(password(&c, "pg").as_deref(), Some(NEW_PASSWORD));
    let err = c.purge("pg").unwrap_err();
    assert!(matches!(err, Error::PurgeLive(_)), "{err}");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    c.delete("pg", false).unwrap();
    assert_eq!(c.purge("pg").unwrap(), 5);
    assert!(matches!(c.versions("pg"), Err(Error::NotFound(_))));
    assert!(matches!(c.purge("pg"), Err(Error::NotFound(_))));
}

#[test]
fn keep_versions_bounds_the_history() {
    let db = Db::new();
    let mut options = Options::default();
    options.keep_versions = 2;
    let c = Connections::open_with(&db.path, options).unwrap();
    c.create(pg("pg")).unwrap();
    for i in 0..5 {
        set_password(&c, "pg", &format!("Pw-{i}-Bound"));
    }
    let numbers: Vec<i64> = c
        .versions("pg")
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(numbers, [6, 5, 4]);
    assert_eq!(
        c.keys().unwrap().iter().map(|k| k.secrets).sum::<u64>(),
        6,
        "the current row's two values and two kept versions' two each"
    );
}

/// Rotation re-seals the kept versions too (each under its own target); a kept value that
/// does not open stays under its old key, which `prune` then keeps.
#[test]
fn rotation_reseals_kept_versions_and_prune_keeps_a_key_they_use() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    set_password(&c, "pg", NEW_PASSWORD);
    c.update(
        "pg",
        ConnectionUpdate {
            host: Some(Some("db2.example.com".into())),
            password: SecretUpdate::Set(OLD_PASSWORD.into()),
            extra: SecretUpdate::Set(r#"{"sslmode":"verify-full"}"#.into()),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    // Current: password + extra; v2: password + extra; v1: password + extra.
    let report = c.rotate(|_, _| {}).unwrap();
    assert_eq!(report.resealed, 6, "{report:?}");
    assert!(report.failures.is_empty());
    assert_eq!(c.prune().unwrap(), ["k1"]);
    // Every version still opens, under its own host: roll back to each.
    c.rollback("pg", 1).unwrap();
    assert_eq!(password(&c, "pg").as_deref(), Some(PASSWORD));
    c.rollback("pg", 2).unwrap();
    assert_eq!(password(&c, "pg").as_deref(), Some(NEW_PASSWORD));
    // A damaged kept value: rotation leaves it under its key, prune keeps that key.
    raw(
        &db,
        "UPDATE connection_versions SET host = 'moved.example' WHERE conn_id = 'pg' AND version = 3",
    );
    let report = c.rotate(|_, _| {}).unwrap();
    let failed: Vec<_> = report
        .failures
        .iter()
        .map(|f| (f.version, f.field))
        .collect();
    assert_eq!(failed, [(Some(3), "password"), (Some(3), "extra")]);
    assert!(c.prune().unwrap().is_empty(), "k2 still seals version 3");
    let keys: Vec<_> = c
        .keys()
        .unwrap()
        .into_iter()
        .map(|k| (k.id, k.secrets))
        .collect();
    assert_eq!(keys, [("k2".to_owned(), 2), ("k3".to_owned(), 8)]);
    assert_no_secret(&format!("{report:?}"));
}
