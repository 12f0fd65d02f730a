//! Issue 13: a stored secret reaches only the target it was saved for — tried as an attacker
//! with API (library) access, or with write access to the database, would.

use super::*;

fn patch(extra: &str) -> ConnectionUpdate {
    ConnectionUpdate {
        extra: SecretUpdate::Set(extra.into()),
        ..Default::default()
    }
}

fn invalid_fields(e: &Error) -> Vec<(&'static str, String)> {
    match e {
        Error::Invalid(v) => v
            .errors()
            .iter()
            .map(|e| (e.field, e.message.clone()))
            .collect(),
        other => panic!("expected a validation error, got {other}"),
    }
}

#[test]
fn extra_cannot_steer_a_kept_password_to_another_host() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("prod-postgres")).unwrap();
    // The attack of the issue: host/port in extra, password kept.
    for extra in [
        r#"{"host":"evil.example","port":6543,"sslmode":"require"}"#,
        r#"{"hostaddr":"192.0.2.1","sslmode":"require"}"#,
        r#"{"service":"evil","sslmode":"require"}"#,
        r#"{"user":"postgres","sslmode":"require"}"#,
    ] {
        let err = c
            .update("prod-postgres", patch(extra), UpdateMode::Merge)
            .unwrap_err();
        let fields = invalid_fields(&err);
        assert!(fields.iter().all(|(f, _)| *f == "extra"), "{fields:?}");
        assert!(!err.to_string().contains("evil"), "{err}");
    }
    // Nothing changed, and the engine's URI still names only the stored target.
    let uri = c.resolve("prod-postgres").unwrap().uri.expose().to_owned();
    assert!(uri.starts_with("postgres://etl_user:"), "{}", uri.len());
    assert!(!uri.contains("evil") && !uri.contains("host="));
}

#[test]
fn weakening_tls_with_a_kept_password_is_refused() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    for extra in [
        r#"{"sslmode":"disable","token":"t"}"#,
        r#"{"token":"t"}"#,
        r#"{"sslmode":"require","sslrootcert":"attacker CA","token":"t"}"#,
    ] {
        let err = c.update("pg", patch(extra), UpdateMode::Merge).unwrap_err();
        let fields = invalid_fields(&err);
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(fields[0].0, "password");
        assert!(
            fields[0].1.contains("enter the password again"),
            "{}",
            fields[0].1
        );
    }
    // Clearing the extra removes sslmode too.
    let clear = ConnectionUpdate {
        extra: SecretUpdate::Clear,
        ..Default::default()
    };
    assert!(c.update("pg", clear, UpdateMode::Merge).is_err());
    // Other options may change with the password kept; securing keys with the password.
    c.update(
        "pg",
        patch(r#"{"sslmode":"require","token":"new","application_name":"x"}"#),
        UpdateMode::Merge,
    )
    .unwrap();
    let both = ConnectionUpdate {
        password: SecretUpdate::Set("re-entered".into()),
        extra: SecretUpdate::Set(r#"{"sslmode":"verify-full"}"#.into()),
        ..Default::default()
    };
    c.update("pg", both, UpdateMode::Merge).unwrap();
    assert_eq!(
        c.connection("pg").unwrap().password.unwrap().expose(),
        "re-entered"
    );
}

#[test]
fn an_unsaved_test_never_reuses_the_password_over_weaker_tls() {
    let db = Db::new();
    let c = db.open();
    let mut input = pg("pg");
    input.host = Some("127.0.0.1".into());
    input.port = Some(1); // nothing listens: the test fails, the question is what it sent
    c.create(input).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = |extra: &str| ConnectionUpdate {
        conn_id: Some("pg".into()),
        conn_type: Some("postgres".into()),
        host: Some(Some("127.0.0.1".into())),
        port: Some(Some(1)),
        schema: Some(Some("mydb".into())),
        login: Some(Some("etl_user".into())),
        password: SecretUpdate::Masked,
        extra: SecretUpdate::Set(extra.into()),
        ..Default::default()
    };
    // A naming key in an unsaved test is refused like in a save.
    let err = rt
        .block_on(c.test_unsaved(body(r#"{"host":"evil.example"}"#)))
        .unwrap_err();
    assert_eq!(invalid_fields(&err)[0].0, "extra");
    // sslmode=disable: the stored password is not used (the probe runs without one).
    let out = rt
        .block_on(c.test_unsaved(body(r#"{"sslmode":"disable"}"#)))
        .unwrap();
    assert!(!out.success);
}

#[test]
fn a_row_moved_in_the_database_directly_no_longer_decrypts() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    c.resolve("pg").unwrap();
    // A DBA of the store (or a tampered backup) points the row elsewhere.
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    raw.execute(
        "UPDATE connections SET host = 'evil.example' WHERE conn_id = 'pg'",
        [],
    )
    .unwrap();
    drop(raw);
    let c = db.open();
    let err = c.resolve("pg").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Decrypt { .. }), "{text}");
    assert!(text.contains("\"pg\"") && text.contains("moved"), "{text}");
    assert!(!text.contains(PASSWORD));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(c.test("pg")).is_err());
    // Login and port too.
    for sql in [
        "UPDATE connections SET host = 'db.example.com', login = 'postgres'",
        "UPDATE connections SET login = 'etl_user', port = 6543",
        "UPDATE connections SET port = 5432, conn_type = 'generic'",
    ] {
        let raw = rusqlite::Connection::open(&db.path).unwrap();
        raw.execute(sql, []).unwrap();
        drop(raw);
        assert!(db.open().resolve("pg").is_err(), "{sql}");
    }
    // Put back as it was: it opens again.
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    raw.execute("UPDATE connections SET conn_type = 'postgres'", [])
        .unwrap();
    drop(raw);
    assert_eq!(
        db.open()
            .connection("pg")
            .unwrap()
            .password
            .unwrap()
            .expose(),
        PASSWORD
    );
}

/// Writes a row sealed in format 1 (as versions before issue 13 did) straight into the store.
fn insert_format_1_row(db: &Db, conn_id: &str, password: &str) {
    let ring = broked_crypto::Keyring::open(&db.key()).unwrap();
    let blob = ring
        .seal(
            broked_crypto::Aad::new(conn_id, "password"),
            password.as_bytes(),
        )
        .unwrap();
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    raw.execute(
        "INSERT INTO connections (conn_id, conn_type, host, port, login, password, password_key,
           created_at, updated_at, version)
         VALUES (?1, 'postgres', 'db.example.com', 5432, 'etl_user', ?2, ?3, 'x', 'x', 1)",
        rusqlite::params![conn_id, blob, ring.active().get()],
    )
    .unwrap();
}

#[test]
fn format_1_values_are_migrated_at_open_and_refused_after() {
    let db = Db::new();
    drop(db.open());
    // Pretend the database was never migrated, with an old-format row in it.
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    raw.execute("DELETE FROM meta", []).unwrap();
    drop(raw);
    insert_format_1_row(&db, "old", "old-format-pw");
    let c = db.open();
    assert_eq!(
        c.connection("old").unwrap().password.unwrap().expose(),
        "old-format-pw"
    );
    let raw = rusqlite::Connection::open(&db.path).unwrap();
    let (blob, format): (Vec<u8>, String) = raw
        .query_row(
            "SELECT password, (SELECT value FROM meta WHERE name = 'seal_format')
             FROM connections WHERE conn_id = 'old'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(blob[0], 2, "re-sealed in format 2");
    assert_eq!(format, "2");
    // Moving the migrated row fails like any other.
    raw.execute("UPDATE connections SET host = 'evil.example'", [])
        .unwrap();
    drop(raw);
    assert!(db.open().connection("old").is_err());
    // A format-1 value put back later (an old backup row) is refused, not migrated again.
    insert_format_1_row(&db, "replayed", "replayed-pw");
    let c = db.open();
    let err = c.connection("replayed").unwrap_err();
    assert!(err.to_string().contains("old format"), "{err}");
    let report = c.check().unwrap();
    assert!(report.failures.iter().any(|f| f.conn_id == "replayed"));
}

#[test]
fn a_key_file_swapped_under_a_running_process_is_refused() {
    let db = Db::new();
    let other = Db::new();
    let c = db.open();
    c.create(pg("before")).unwrap();
    drop(other.open()); // another database's key file
    let ours = std::fs::read(db.key()).unwrap();
    // Replaced by rename, as an operator restoring "the" key file would.
    let tmp = db.key().with_extension("swap");
    std::fs::copy(other.key(), &tmp).unwrap();
    std::fs::rename(&tmp, db.key()).unwrap();
    let err = c.create(pg("during")).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert!(c.get("during").is_err(), "nothing was written");
    // Rotation refuses it too.
    assert!(matches!(
        c.rotate(|_, _| {}),
        Err(Error::KeyMismatch { .. })
    ));
    // The right file back: writes work and every secret opens.
    let tmp = db.key().with_extension("back");
    std::fs::write(&tmp, &ours).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, db.key()).unwrap();
    c.create(pg("after")).unwrap();
    for id in ["before", "after"] {
        assert_eq!(
            c.connection(id).unwrap().password.unwrap().expose(),
            PASSWORD
        );
    }
    assert!(c.check().unwrap().failures.is_empty());
}

#[test]
fn the_mask_is_never_stored_as_a_secret() {
    let db = Db::new();
    let c = db.open();
    let mut input = pg("masked");
    input.password = Some("********".into());
    let err = c.create(input).unwrap_err();
    assert_eq!(invalid_fields(&err)[0].0, "password");
    assert!(c.get("masked").is_err());
    // PUT/PATCH with the mask for a secret the connection does not have: refused.
    let mut input = pg("nopw");
    input.password = None;
    input.extra = None;
    c.create(input).unwrap();
    for field in ["password", "extra"] {
        let mut u = ConnectionUpdate::default();
        if field == "password" {
            u.password = SecretUpdate::from_field(Some(Some("********".into())));
        } else {
            u.extra = SecretUpdate::from_field(Some(Some("********".into())));
        }
        let err = c.update("nopw", u, UpdateMode::Merge).unwrap_err();
        assert_eq!(invalid_fields(&err)[0].0, field);
    }
    // A URI whose password is the mask.
    let err = broked_connections::Connection::from_uri(
        broked_connections::ConnId::new("u").unwrap(),
        "postgres://u:%2A%2A%2A%2A%2A%2A%2A%2A@h/db",
    )
    .unwrap_err();
    assert!(err.to_string().contains("password"), "{err}");
}

mod driver_parsers {
    //! For any stored connection — also a row stored before extra keys were checked — the URI
    //! the engine gets, read by the real driver's parser, names exactly the stored host, port
    //! and login.

    use std::str::FromStr;

    use broked_connections::{ConnId, ConnType, Connection, Secret};
    use proptest::prelude::*;

    /// Keys a driver may read as the target, spelled as drivers and attackers would, and
    /// ordinary options. (Keys whose values the drivers check, such as `sslmode`, are left
    /// out: a random value would only make the parse fail, which sends nothing anywhere.)
    const KEYS: &[&str] = &[
        "host",
        "hostaddr",
        "port",
        "user",
        "dbname",
        "password",
        "service",
        "socket",
        "unix_socket",
        "Host",
        "HOSTADDR",
        "sslrootcert",
        "ssl-ca",
        "application_name",
        "options",
        "charset",
        "endpoint_url",
        "url",
        "proxy",
    ];

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5}){0,2}",
            (1u8..=254, 0u8..=255, 0u8..=255, 1u8..=254)
                .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
            Just("::1".to_owned()),
        ]
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            "[a-z0-9.:/@-]{0,12}".prop_map(serde_json::Value::from),
            (1u16..=65535).prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("evil.example")),
            Just(serde_json::Value::from("/tmp/evil.sock")),
        ]
    }

    fn stored() -> impl Strategy<Value = Connection> {
        (
            prop::sample::select(vec![ConnType::Postgres, ConnType::Mysql, ConnType::Http]),
            host(),
            prop::option::of(1u16..=65535),
            "[a-zA-Z0-9_@:/ %é-]{1,12}",
            "[ -~]{0,12}",
            prop::collection::btree_map(prop::sample::select(KEYS.to_vec()), value(), 0..6),
        )
            .prop_map(|(t, host, port, login, password, extra)| {
                let extra: serde_json::Map<String, serde_json::Value> =
                    extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                Connection {
                    conn_id: ConnId::new("c").unwrap(),
                    conn_type: t,
                    host: Some(host),
                    port,
                    schema: Some("db".into()),
                    login: Some(login),
                    password: Some(Secret::new(password)),
                    extra: (!extra.is_empty())
                        .then(|| Secret::new(serde_json::Value::Object(extra).to_string())),
                    description: None,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn the_driver_reads_exactly_the_stored_target(c in stored()) {
            let uri = c.to_uri();
            let uri = uri.expose();
            let host = c.host.as_deref().unwrap();
            let port = c.effective_port().unwrap();
            let login = c.login.as_deref().unwrap();
            let unbracket = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_owned();
            match c.conn_type {
                ConnType::Postgres => {
                    let o = sqlx::postgres::PgConnectOptions::from_str(uri).unwrap();
                    prop_assert_eq!(unbracket(o.get_host()), host);
                    prop_assert_eq!(o.get_port(), port);
                    prop_assert_eq!(o.get_username(), login);
                    prop_assert!(o.get_socket().is_none());
                }
                ConnType::Mysql => {
                    let o = sqlx::mysql::MySqlConnectOptions::from_str(uri).unwrap();
                    prop_assert_eq!(unbracket(o.get_host()), host);
                    prop_assert_eq!(o.get_port(), port);
                    prop_assert_eq!(o.get_username(), login);
                    prop_assert!(o.get_socket().is_none());
                }
                _ => {
                    let u = url::Url::parse(uri).unwrap();
                    prop_assert_eq!(unbracket(u.host_str().unwrap()), host);
                    prop_assert_eq!(u.port_or_known_default(), Some(port));
                    let user = percent_decode(u.username());
                    prop_assert_eq!(user.as_str(), login);
                }
            }
        }
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }
}

#[test]
fn an_environment_connection_cannot_name_another_target_in_its_query() {
    // The variables must be set before the process starts: re-run in a child (see
    // `resolve_looks_at_the_environment_first`).
    const NAME: &str = "target::an_environment_connection_cannot_name_another_target_in_its_query";
    if std::env::var_os("BROKED_IT_ENV_STEER").is_none() {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args(["--exact", NAME, "--nocapture"])
            .env("BROKED_IT_ENV_STEER", "1")
            .env(
                "BROKED_CONN_STEERED",
                "postgres://u:Env-Pw-991@127.0.0.1/db?host=evil.example&port=6543",
            )
            .env(
                "BROKED_CONN_STEERED_JSON",
                r#"{"type":"postgres","host":"127.0.0.1","password":"Env-Pw-991","extra":{"hostaddr":"192.0.2.1"}}"#,
            )
            ;
        let (status, text) = broked_testenv::run_output(&mut child);
        assert!(status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    let db = Db::new();
    let c = db.open();
    for id in ["steered", "steered-json"] {
        let err = c.resolve(id).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("hostaddr") || text.contains("\"host\""),
            "{text}"
        );
        assert!(
            !text.contains("Env-Pw-991") && !text.contains("evil"),
            "{text}"
        );
    }
}
