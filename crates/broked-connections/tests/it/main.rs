//! The library end to end, on real files in a temporary directory.

use std::path::{Path, PathBuf};

use broked_connections::{
    ConnType, ConnectionInput, ConnectionUpdate, Connections, Error, Options, PipelineDef,
    SecretUpdate, Source, UpdateMode,
};
use serde_json::json;

mod audit;
mod dialect;
mod freshness;
mod history;
mod import;
mod key_rotation;
mod rotation;
mod rotation_roles;

mod target;
mod tokens;
mod tunnel;

/// A password no test output, error or file may contain.
const PASSWORD: &str = "Zebra-Pw-4417@:/#";
const EXTRA_VALUE: &str = "Xtra-Token-9931";

struct Db {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Db {
    fn new() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broked.db");
        Db { _dir: dir, path }
    }
    fn open(&self) -> Connections {
        Connections::open(&self.path).unwrap()
    }
    fn key(&self) -> PathBuf {
        key_path(&self.path)
    }
}

fn key_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

fn pg(id: &str) -> ConnectionInput {
    ConnectionInput {
        conn_id: Some(id.into()),
        conn_type: Some("postgres".into()),
        host: Some("db.example.com".into()),
        port: Some(5432),
        schema: Some("mydb".into()),
        login: Some("etl_user".into()),
        password: Some(PASSWORD.into()),
        extra: Some(format!(r#"{{"sslmode":"require","token":"{EXTRA_VALUE}"}}"#).into()),
        description: Some("prod".into()),
    }
}

fn pipeline(conn_ids: &[&str]) -> PipelineDef {
    let nodes: Vec<_> = conn_ids
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"id": format!("n{i}"), "type": "source_db", "config": {"conn_id": c, "query": "SELECT 1"}}))
        .collect();
    PipelineDef::from_value(json!({"name": "users sync", "nodes": nodes})).unwrap()
}

fn assert_no_secret(text: &str) {
    assert!(!text.contains(PASSWORD), "password leaked: {text}");
    assert!(!text.contains(EXTRA_VALUE), "extra leaked: {text}");
}

fn files_contain(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .collect()
}

#[test]
fn first_open_creates_database_and_key_file() {
    let db = Db::new();
    let c = db.open();
    assert!(db.path.exists());
    assert!(db.key().exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(db.key()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(c.key_path(), db.key());
}

#[test]
fn crud_masks_secrets_and_keeps_them_encrypted_at_rest() {
    let db = Db::new();
    let c = db.open();
    let created = c.create(pg("prod-postgres")).unwrap();
    assert!(created.has_password && created.has_extra);
    assert_no_secret(&format!("{created:?}"));
    assert!(matches!(
        c.create(pg("prod-postgres")),
        Err(Error::AlreadyExists(_))
    ));

    let mut my = pg("a-mysql");
    my.conn_type = Some("mysql".into());
    my.port = None;
    c.create(my).unwrap();
    let all = c.list(None).unwrap();
    assert_eq!(
        all.iter().map(|i| i.conn_id.as_str()).collect::<Vec<_>>(),
        ["a-mysql", "prod-postgres"]
    );
    assert_eq!(c.list(Some(ConnType::Mysql)).unwrap().len(), 1);

    let conn = c.connection("prod-postgres").unwrap();
    assert_eq!(conn.password.as_ref().unwrap().expose(), PASSWORD);
    assert_no_secret(&format!("{conn:?}"));
    drop(c);
    // Neither the database, its WAL, nor anything beside it holds a plaintext secret.
    let dir = db.path.parent().unwrap();
    assert_eq!(
        files_contain(dir, PASSWORD.as_bytes()),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_contain(dir, EXTRA_VALUE.as_bytes()),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn patch_and_put_follow_the_masking_rules() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    let patch = ConnectionUpdate {
        description: Some(Some("new".into())),
        ..Default::default()
    };
    let info = c.update("pg", patch, UpdateMode::Merge).unwrap();
    assert_eq!(info.description.as_deref(), Some("new"));
    assert_eq!(
        c.connection("pg").unwrap().password.unwrap().expose(),
        PASSWORD
    );

    // PUT with every plain field the same and the password masked: kept. (Issue 13: clearing
    // the extra would remove `sslmode`, which secures the target, while the password is kept:
    // refused, naming the password and the key; with the password given again it is fine.)
    let put = |password: SecretUpdate| ConnectionUpdate {
        conn_type: Some("postgres".into()),
        host: Some(Some("db.example.com".into())),
        port: Some(Some(5432)),
        login: Some(Some("etl_user".into())),
        password,
        extra: SecretUpdate::Clear,
        ..Default::default()
    };
    let err = c
        .update(
            "pg",
            put(SecretUpdate::from_field(Some(Some("********".into())))),
            UpdateMode::Replace,
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.errors()[0].field == "password"
            && e.errors()[0].message.contains("sslmode")),
        "{err}"
    );
    assert!(
        c.get("pg").unwrap().has_extra,
        "a refused update changes nothing"
    );
    let info = c
        .update(
            "pg",
            put(SecretUpdate::Set(PASSWORD.into())),
            UpdateMode::Replace,
        )
        .unwrap();
    assert_eq!(info.description, None, "PUT replaces absent plain fields");
    assert!(info.has_password && !info.has_extra);
    assert_eq!(
        c.connection("pg").unwrap().password.unwrap().expose(),
        PASSWORD
    );

    // A new host with the password kept: refused, naming the password, changing nothing —
    // else the stored password could be sent to any host by editing it and pressing Test.
    let moved = ConnectionUpdate {
        host: Some(Some("attacker.example".into())),
        ..Default::default()
    };
    let err = c.update("pg", moved, UpdateMode::Merge).unwrap_err();
    assert!(
        matches!(&err, Error::Invalid(e) if e.errors()[0].field == "password"),
        "{err}"
    );
    assert_eq!(c.get("pg").unwrap().host.as_deref(), Some("db.example.com"));
    // Given again, the move is fine.
    let put = ConnectionUpdate {
        conn_type: Some("postgres".into()),
        host: Some(Some("other.example.com".into())),
        login: Some(Some("etl_user".into())),
        password: SecretUpdate::Set(PASSWORD.into()),
        ..Default::default()
    };
    let info = c.update("pg", put, UpdateMode::Replace).unwrap();
    assert_eq!(info.host.as_deref(), Some("other.example.com"));
    assert_eq!(info.description, None, "PUT replaces absent plain fields");
    assert!(info.has_password && !info.has_extra);
    assert_eq!(
        c.connection("pg").unwrap().password.unwrap().expose(),
        PASSWORD
    );

    let rename = ConnectionUpdate {
        conn_id: Some("other".into()),
        ..Default::default()
    };
    let err = c.update("pg", rename, UpdateMode::Merge).unwrap_err();
    assert!(
        err.to_string().contains("conn_id cannot be changed"),
        "{err}"
    );
    let bad_port = ConnectionUpdate {
        port: Some(Some(70000)),
        ..Default::default()
    };
    assert!(matches!(
        c.update("pg", bad_port, UpdateMode::Merge),
        Err(Error::Invalid(_))
    ));
    assert_eq!(
        c.get("pg").unwrap().host.as_deref(),
        Some("other.example.com"),
        "a refused update changes nothing"
    );
    assert!(matches!(
        c.update("nope", ConnectionUpdate::default(), UpdateMode::Merge),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn concurrent_patches_of_one_connection_lose_nothing() {
    let db = Db::new();
    db.open().create(pg("pg")).unwrap();
    // Two "processes" (separate handles) each append to the description 20 times.
    let handles: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|tag| {
            let path = db.path.clone();
            std::thread::spawn(move || {
                let c = Connections::open(&path).unwrap();
                for i in 0..20 {
                    loop {
                        let cur = c.get("pg").unwrap().description.unwrap_or_default();
                        // Read-modify-write through the library's own retry is per call; here
                        // the test checks that each PATCH lands (no error, no Busy).
                        let patch = ConnectionUpdate {
                            description: Some(Some(format!("{cur}{tag}{i},"))),
                            ..Default::default()
                        };
                        if c.update("pg", patch, UpdateMode::Merge).is_ok() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let c = db.open();
    let desc = c.get("pg").unwrap().description.unwrap();
    assert!(desc.contains("a19,") || desc.contains("b19,"), "{desc}");
    assert_eq!(
        c.connection("pg").unwrap().password.unwrap().expose(),
        PASSWORD
    );
}

#[test]
fn delete_is_refused_while_used_and_lists_the_pipelines() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("prod-postgres")).unwrap();
    c.create(pg("other")).unwrap();
    c.put_pipeline(
        "users-sync",
        pipeline(&["prod-postgres", "prod-postgres", "other"]),
    )
    .unwrap();
    let usage = c.used_by("prod-postgres").unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].pipeline_id.as_str(), "users-sync");
    assert_eq!(usage[0].name, "users sync");
    assert_eq!(usage[0].nodes, ["n0", "n1"]);
    let err = c.delete("prod-postgres", false).unwrap_err();
    assert!(
        matches!(&err, Error::InUse { pipelines, .. } if pipelines.len() == 1),
        "{err}"
    );
    assert!(err.to_string().contains("users-sync"), "{err}");
    assert!(c.get("prod-postgres").is_ok());
    c.delete("prod-postgres", true).unwrap();
    assert!(matches!(c.get("prod-postgres"), Err(Error::NotFound(_))));
    assert!(matches!(
        c.used_by("prod-postgres"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        c.delete("prod-postgres", false),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn pipelines_naming_unknown_connections_are_refused() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    let err = c
        .put_pipeline("p1", pipeline(&["pg", "ghost", "ghost2"]))
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownConnIds(ids) if ids == &["ghost", "ghost2"]),
        "{err}"
    );
    assert!(matches!(
        c.get_pipeline("p1"),
        Err(Error::PipelineNotFound(_))
    ));
    let info = c.put_pipeline("p1", pipeline(&["pg"])).unwrap();
    assert_eq!(info.definition, pipeline(&["pg"]));
    assert_eq!(c.list_pipelines().unwrap().len(), 1);
    c.delete_pipeline("p1").unwrap();
    assert!(c.used_by("pg").unwrap().is_empty());
    assert!(matches!(
        c.delete_pipeline("p1"),
        Err(Error::PipelineNotFound(_))
    ));
    assert!(matches!(
        c.put_pipeline("bad id!", pipeline(&[])),
        Err(Error::InvalidPipeline(_))
    ));
}

#[test]
fn resolve_builds_the_uri_and_sees_writes_of_other_processes() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("prod-postgres")).unwrap();
    let r = c.resolve("prod-postgres").unwrap();
    assert_eq!(r.source, Source::Store);
    assert!(
        r.uri
            .expose()
            .starts_with("postgres://etl_user:Zebra-Pw-4417%40%3A%2F%23@db.example.com:5432/mydb?")
    );
    assert_no_secret(&format!("{r:?}"));
    // Another process changes it: the cache must not serve the old value.
    let other = db.open();
    let patch = ConnectionUpdate {
        host: Some(Some("new-host".into())),
        password: SecretUpdate::Set(PASSWORD.into()),
        extra: SecretUpdate::Clear,
        ..Default::default()
    };
    other
        .update("prod-postgres", patch, UpdateMode::Merge)
        .unwrap();
    assert_eq!(
        c.resolve("prod-postgres")
            .unwrap()
            .connection
            .host
            .as_deref(),
        Some("new-host")
    );
    assert!(matches!(c.resolve("nope"), Err(Error::NotFound(_))));
}

#[test]
fn resolve_looks_at_the_environment_first() {
    // Setting a variable is `unsafe` in edition 2024 (and unsafe code is forbidden here), so
    // the test re-runs itself in a child process with the variables set.
    if std::env::var_os("BROKED_IT_ENV_CHILD").is_none() {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "resolve_looks_at_the_environment_first",
                "--nocapture",
            ])
            .env("BROKED_IT_ENV_CHILD", "1")
            .env(
                "BROKED_CONN_ENV_CONN",
                "mysql://u:p%40ss@envhost:3307/envdb",
            )
            .env("BROKED_CONN_ENV_BAD", "mysql://u:Zebra-Pw-4417@h:99999");
        let (status, text) = broked_testenv::run_output(&mut child);
        assert!(status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    let db = Db::new();
    let c = db.open();
    c.create(pg("env-conn")).unwrap();
    let r = c.resolve("env-conn").unwrap();
    assert_eq!(
        r.source,
        Source::Environment {
            var: "BROKED_CONN_ENV_CONN".into()
        }
    );
    assert_eq!(r.connection.conn_type, ConnType::Mysql);
    assert_eq!(r.connection.password.as_ref().unwrap().expose(), "p@ss");
    assert_eq!(r.uri.expose(), "mysql://u:p%40ss@envhost:3307/envdb");
    // The store's copy is untouched and still reachable through connection().
    assert_eq!(
        c.connection("env-conn").unwrap().conn_type,
        ConnType::Postgres
    );
    let err = c.resolve("env-bad").unwrap_err();
    assert!(err.to_string().contains("BROKED_CONN_ENV_BAD"), "{err}");
    assert_no_secret(&err.to_string());
}

#[test]
fn a_missing_or_wrong_key_file_is_a_clear_error_and_never_replaced() {
    let db = Db::new();
    db.open().create(pg("pg")).unwrap();
    let original = std::fs::read(db.key()).unwrap();

    std::fs::rename(db.key(), db.path.with_extension("moved")).unwrap();
    let err = Connections::open(&db.path).unwrap_err();
    assert!(matches!(err, Error::KeyMissing { .. }), "{err}");
    assert!(err.to_string().contains("broked.db.key"), "{err}");
    assert!(
        !db.key().exists(),
        "a new key was generated over existing secrets"
    );

    // Another database's key file.
    let other = Db::new();
    other.open();
    std::fs::copy(other.key(), db.key()).unwrap();
    let err = Connections::open(&db.path).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("broked.db.key"), "{err}");

    std::fs::write(db.key(), &original).unwrap();
    let c = db.open();
    assert_eq!(
        c.connection("pg").unwrap().password.unwrap().expose(),
        PASSWORD
    );
}

#[test]
fn rotation_reseals_everything_and_prune_drops_old_keys() {
    let db = Db::new();
    let c = db.open();
    for i in 0..25 {
        c.create(pg(&format!("c{i}"))).unwrap();
    }
    // A second process opened before the rotation keeps working after it.
    let other = db.open();
    let mut calls = 0;
    let report = c
        .rotate(|done, total| {
            calls += 1;
            assert!(done <= total);
        })
        .unwrap();
    assert_eq!(report.active_key, "k2");
    assert_eq!(report.resealed, 50);
    assert_eq!(calls, 50);
    let keys = c.keys().unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| (k.id.as_str(), k.active, k.secrets))
            .collect::<Vec<_>>(),
        [("k1", false, 0), ("k2", true, 50)]
    );
    assert_eq!(c.prune().unwrap(), ["k1"]);
    assert_eq!(c.keys().unwrap().len(), 1);
    let report = c.check().unwrap();
    assert_eq!((report.checked, report.failures.len()), (50, 0));
    // The other handle still believes k1 is active: it reads k2 values and its writes land.
    assert_eq!(
        other.connection("c3").unwrap().password.unwrap().expose(),
        PASSWORD
    );
    other.create(pg("after-prune")).unwrap();
    let patch = ConnectionUpdate {
        password: SecretUpdate::Set("changed".into()),
        ..Default::default()
    };
    other.update("c4", patch, UpdateMode::Merge).unwrap();
    let fresh = db.open();
    assert_eq!(
        fresh
            .connection("after-prune")
            .unwrap()
            .password
            .unwrap()
            .expose(),
        PASSWORD
    );
    assert_eq!(
        fresh.connection("c4").unwrap().password.unwrap().expose(),
        "changed"
    );
    assert!(fresh.check().unwrap().failures.is_empty());
}

#[test]
fn keys_rotate_automatically_at_the_usage_bound() {
    let db = Db::new();
    let mut options = Options::default();
    options.rotate_after_seals = 5;
    let c = Connections::open_with(&db.path, options).unwrap();
    for i in 0..3 {
        c.create(pg(&format!("c{i}"))).unwrap(); // two seals each
    }
    let keys = c.keys().unwrap();
    assert!(
        keys.len() >= 2,
        "no rotation after 6 seals with a bound of 5: {keys:?}"
    );
    assert!(c.check().unwrap().failures.is_empty());
}

#[test]
fn check_reports_a_value_that_does_not_open() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("good")).unwrap();
    c.create(pg("bad")).unwrap();
    drop(c);
    // Move bad's sealed password onto good: the associated data must make it fail.
    swap_sealed_password(&db.path);
    let c = db.open();
    let report = c.check().unwrap();
    assert_eq!(report.checked, 4);
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(report.failures[0].conn_id, "good");
    assert_eq!(report.failures[0].field, "password");
    let err = c.connection("good").unwrap_err();
    assert!(matches!(err, Error::Decrypt { .. }), "{err}");
}

/// Copies bad's sealed password over good's, as an attacker with write access to the file could.
fn swap_sealed_password(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "UPDATE connections SET password = (SELECT password FROM connections WHERE conn_id = 'bad') WHERE conn_id = 'good'",
        [],
    )
    .unwrap();
}

#[test]
fn export_and_import_round_trip_every_field() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("pg")).unwrap();
    let mut s3 = ConnectionInput {
        conn_id: Some("bucket".into()),
        conn_type: Some("s3".into()),
        ..Default::default()
    };
    s3.schema = Some("my-bucket".into());
    c.create(s3).unwrap();

    let masked = c.export(false).unwrap();
    assert_no_secret(&masked.to_string());
    let fresh = Db::new();
    let f = fresh.open();
    let err = f.import(masked, false).unwrap_err();
    assert!(err.to_string().contains("masked"), "{err}");
    assert!(f.list(None).unwrap().is_empty());

    let full = c.export(true).unwrap();
    assert_eq!(f.import(full.clone(), false).unwrap(), 2);
    for id in ["pg", "bucket"] {
        assert_eq!(f.connection(id).unwrap(), c.connection(id).unwrap());
    }
    // Again without overwrite: refused as a whole, naming the rows.
    let err = f.import(full.clone(), false).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(f.import(full, true).unwrap(), 2);
}

#[test]
fn an_import_with_one_bad_row_changes_nothing_and_names_every_bad_row() {
    let db = Db::new();
    let c = db.open();
    let doc = json!([
        {"conn_id": "ok1", "type": "postgres", "host": "h", "password": PASSWORD},
        {"conn_id": "bad port", "type": "postgres", "host": "h", "port": 70000},
        {"conn_id": "ok2", "type": "generic", "host": "h"},
        "not an object",
        {"conn_id": "ok1", "type": "postgres", "host": "h"},
    ]);
    let err = c.import(doc, false).unwrap_err();
    let Error::Import(rows) = &err else {
        panic!("{err}")
    };
    assert_eq!(
        rows.iter().map(|r| r.row).collect::<Vec<_>>(),
        [2, 3, 4, 5],
        "{err}"
    );
    assert_no_secret(&err.to_string());
    assert!(c.list(None).unwrap().is_empty());
}

#[test]
fn errors_never_contain_secrets() {
    let db = Db::new();
    let c = db.open();
    let mut bad = pg("x");
    bad.port = Some(0);
    bad.extra = Some(format!("[\"{EXTRA_VALUE}\"]").into());
    let err = c.create(bad).unwrap_err();
    assert_no_secret(&err.to_string());
    assert_no_secret(&format!("{err:?}"));
}

#[tokio::test]
async fn every_type_has_its_probe_built_in() {
    let db = Db::new();
    let c = db.open();
    // A closed port on loopback: every probe runs and fails with "refused", none says
    // "not built in".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for t in ConnType::ALL {
        let id = format!("probe-{}", t.as_str());
        let input = ConnectionInput {
            conn_id: Some(id.clone()),
            conn_type: Some(t.as_str().into()),
            host: Some(if t == ConnType::Sqlite {
                "/nonexistent/broked-test.db".into()
            } else {
                "127.0.0.1".into()
            }),
            port: (t != ConnType::Sqlite).then_some(i64::from(port)),
            schema: (t == ConnType::S3).then(|| "bucket".into()),
            login: (t != ConnType::Sqlite).then(|| "user".into()),
            password: (t != ConnType::Sqlite).then(|| PASSWORD.into()),
            ..Default::default()
        };
        c.create(input).unwrap();
        let outcome = c.test(&id).await.unwrap();
        assert!(!outcome.success, "{t}: {outcome:?}");
        assert!(
            !outcome.driver.is_empty(),
            "{t}: no probe built in: {outcome:?}"
        );
        assert_no_secret(&outcome.message);
    }
}

/// Issue 4: a process killed with SIGKILL at random points of a 10,000-secret rotation, 20
/// times, leaves a database where every secret opens.
#[test]
fn rotation_killed_at_random_points_leaves_every_secret_readable() {
    if let Some(db) = std::env::var_os("BROKED_IT_ROTATE_CHILD") {
        let c = Connections::open(&db).unwrap();
        c.rotate(|_, _| {}).unwrap();
        return;
    }
    let db = Db::new();
    let c = db.open();
    let rows: Vec<_> = (0..5_000)
        .map(|i| {
            json!({"conn_id": format!("c{i:05}"), "type": "postgres", "host": "db",
            "login": "u", "password": format!("{PASSWORD}-{i}"), "extra": {"token": EXTRA_VALUE}})
        })
        .collect();
    c.import(serde_json::Value::Array(rows), false).unwrap();
    drop(c);
    let rotate = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "rotation_killed_at_random_points_leaves_every_secret_readable",
            ])
            .env("BROKED_IT_ROTATE_CHILD", &db.path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one whole rotation takes here: the fastest of three, since a loaded machine
    // (CI runs every test binary at once) can slow one down, and a long estimate would make
    // most kills below come after the rotation ended.
    let whole = (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            assert!(rotate().wait().unwrap().success());
            start.elapsed()
        })
        .min()
        .unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut killed = 0;
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = whole.mul_f64((seed % 1000) as f64 / 1000.0);
        let mut child = rotate();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        let c = db.open();
        let report = c.check().unwrap();
        assert_eq!(report.checked, 10_000);
        assert!(
            report.failures.is_empty(),
            "after a kill at {delay:?}: {:?}",
            &report.failures[..3.min(report.failures.len())]
        );
        assert_eq!(
            c.connection("c04321").unwrap().password.unwrap().expose(),
            format!("{PASSWORD}-4321")
        );
    }
    assert!(
        killed >= 10,
        "only {killed} of 20 runs were killed mid-rotation"
    );
}

// A fresh schema in the test PostgreSQL database, dropped on drop; its URL reaches only it.
use broked_testenv::PgSchema;

/// Issue 10: replicas share one PostgreSQL database and one key file.
#[test]
fn replicas_share_a_postgres_store_and_its_key_file() {
    let Some(pg) = PgSchema::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("shared.key");

    // No key file option: a clear error that says which option, never the password.
    let err = Connections::open(&pg.url).unwrap_err();
    assert!(err.to_string().contains("--key-file"), "{err}");
    assert!(!err.to_string().contains(&pg.password), "{err}");

    let opts = || {
        let mut o = Options::default();
        o.key_file = Some(key.clone());
        o
    };
    let one = Connections::open_with(&pg.url, opts()).unwrap();
    let two = Connections::open_with(&pg.url, opts()).unwrap();
    assert!(!one.db_path().to_string_lossy().contains(&pg.password));
    one.create(pg_input("shared")).unwrap();
    assert_eq!(
        two.connection("shared").unwrap().password.unwrap().expose(),
        PASSWORD
    );
    assert_eq!(
        two.resolve("shared").unwrap().connection.host.as_deref(),
        Some("db.example.com")
    );
    let patch = ConnectionUpdate {
        description: Some(Some("from two".into())),
        ..Default::default()
    };
    two.update("shared", patch, UpdateMode::Merge).unwrap();
    assert_eq!(
        one.resolve("shared")
            .unwrap()
            .connection
            .description
            .as_deref(),
        Some("from two")
    );

    // Rotation on one while two serves: two meets a key it does not know and re-reads the file.
    for i in 0..20 {
        one.create(pg_input(&format!("r{i}"))).unwrap();
    }
    let report = one.rotate(|_, _| {}).unwrap();
    // 21 connections' password and extra, and the version of `shared` that two's update
    // replaced (issue 17: kept versions are re-sealed too).
    assert_eq!(report.resealed, 44);
    assert_eq!(
        two.connection("r7").unwrap().password.unwrap().expose(),
        PASSWORD
    );
    one.prune().unwrap();
    two.create(pg_input("after-rotation")).unwrap();
    assert!(one.check().unwrap().failures.is_empty());
    assert!(two.check().unwrap().failures.is_empty());

    // A replica started with another key file is refused.
    let other_key = dir.path().join("other.key");
    let mut o = Options::default();
    o.key_file = Some(other_key.clone());
    std::fs::copy(Db::new().open().key_path(), &other_key).unwrap();
    let err = Connections::open_with(&pg.url, o).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    assert!(!err.to_string().contains(&pg.password), "{err}");
}

fn pg_input(id: &str) -> ConnectionInput {
    pg(id)
}

/// A damaged secret does not lock its connection or block a rotation.
#[test]
fn a_secret_that_does_not_open_can_be_replaced_and_does_not_block_rotation() {
    let db = Db::new();
    let c = db.open();
    c.create(pg("good")).unwrap();
    c.create(pg("bad")).unwrap();
    drop(c);
    swap_sealed_password_of(&db.path, "bad", "good");
    let c = db.open();
    // Keeping it: a clear error. Replacing or clearing it: works.
    let keep = ConnectionUpdate {
        description: Some(Some("x".into())),
        ..Default::default()
    };
    assert!(matches!(
        c.update("good", keep, UpdateMode::Merge),
        Err(Error::Decrypt { .. })
    ));
    let report = c.rotate(|_, _| {}).unwrap();
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert_eq!(
        (
            report.failures[0].conn_id.as_str(),
            report.failures[0].field
        ),
        ("good", "password")
    );
    assert_eq!(report.resealed, 3);
    assert!(
        c.prune().unwrap().is_empty(),
        "the old key still seals the damaged value"
    );
    let uris = c.export_uris(false).unwrap();
    assert_eq!(uris.len(), 2, "a masked export needs no password to open");
    let set = ConnectionUpdate {
        password: SecretUpdate::Set("fresh-pw".into()),
        ..Default::default()
    };
    c.update("good", set, UpdateMode::Merge).unwrap();
    assert_eq!(
        c.connection("good").unwrap().password.unwrap().expose(),
        "fresh-pw"
    );
    // The current rows all open; the damaged value lives on only as the version the update
    // replaced (issue 17 keeps it in the history until pruned or purged; key check names it).
    let failures: Vec<_> = c
        .check()
        .unwrap()
        .failures
        .into_iter()
        .map(|f| (f.conn_id, f.version, f.field))
        .collect();
    assert_eq!(failures, [("good".to_owned(), Some(1), "password")]);
}

/// A process that did not rotate seals under the key another process made active.
#[test]
fn writes_after_another_process_rotated_use_the_new_key() {
    let db = Db::new();
    let server = db.open();
    server.create(pg("before")).unwrap();
    db.open().rotate(|_, _| {}).unwrap();
    server.create(pg("after")).unwrap();
    let cli = db.open();
    let keys = cli.keys().unwrap();
    assert_eq!(
        keys.iter()
            .map(|k| (k.id.as_str(), k.secrets))
            .collect::<Vec<_>>(),
        [("k1", 0), ("k2", 4)]
    );
    assert_eq!(cli.prune().unwrap(), ["k1"]);
}

fn swap_sealed_password_of(db: &Path, from: &str, to: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(
        "UPDATE connections SET password = (SELECT password FROM connections WHERE conn_id = ?1) WHERE conn_id = ?2",
        [from, to],
    )
    .unwrap();
}
