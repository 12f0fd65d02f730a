//! The SQLite probe on files made by the test.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use broked_core::{ConnId, Secret};
use broked_probe::{ConnType, Connection, Failure, Outcome, Policy, Registry};
use broked_probe_sqlite::SqliteProbe;

fn registry(policy: Policy) -> Registry {
    let mut r = Registry::new(policy);
    r.register(Arc::new(SqliteProbe));
    r
}

fn conn(path: &str) -> Connection {
    Connection {
        conn_id: ConnId::new("lite").unwrap(),
        conn_type: ConnType::Sqlite,
        host: Some(path.to_owned()),
        port: None,
        schema: None,
        login: None,
        password: Some(Secret::from("never-shown-pw")),
        extra: None,
        description: None,
    }
}

async fn test(r: &Registry, path: &Path) -> Outcome {
    let o = r.test(&conn(path.to_str().unwrap())).await;
    assert!(!format!("{o:?}").contains("never-shown-pw"));
    o
}

fn make_db(path: &Path) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
}

#[tokio::test]
async fn success_and_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.db");
    make_db(&path);
    let before = std::fs::read(&path).unwrap();
    let o = test(&registry(Policy::default()), &path).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.message, "Connected successfully (rusqlite)");
    assert_eq!(o.driver, "rusqlite");
    assert!(o.detail.contains("1 table"), "{o:?}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the probe changed the file"
    );
    // No journal or WAL files appear beside it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn missing_file_is_not_found_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.db");
    let o = test(&registry(Policy::default()), &path).await;
    assert_eq!(o.failure, Some(Failure::NotFound), "{o:?}");
    // Issue 18: the message names the field to check.
    assert!(
        o.message
            .ends_with("not found: check host (the path on the server)"),
        "{o:?}"
    );
    assert!(!path.exists(), "the probe created the file");
}

#[tokio::test]
async fn non_database_is_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.db");
    std::fs::write(
        &path,
        "this is not a database, just text that is long enough to have a header ".repeat(20),
    )
    .unwrap();
    let o = test(&registry(Policy::default()), &path).await;
    assert_eq!(o.failure, Some(Failure::Protocol), "{o:?}");
    // Issue 18: the message goes on to name the field to check (it ended with "database").
    assert!(
        o.message
            .ends_with("is not a SQLite database: check host (the database file)"),
        "{o:?}"
    );
}

#[tokio::test]
async fn directories_and_fifos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = test(&registry(Policy::default()), dir.path()).await;
    assert_eq!(o.failure, Some(Failure::Config), "{o:?}");
    assert!(
        o.message
            .contains("host must be the path of a database file"),
        "{o:?}"
    );
    let fifo = dir.path().join("fifo");
    if std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let o = test(
            &registry(Policy::new(Duration::from_secs(2), false, &[]).unwrap()),
            &fifo,
        )
        .await;
        assert_eq!(o.failure, Some(Failure::Config), "{o:?}");
    }
}

#[tokio::test]
async fn memory_and_uris_are_not_files() {
    let r = registry(Policy::default());
    for host in [":memory:", "file:x.db?mode=rwc"] {
        let o = r.test(&conn(host)).await;
        assert_eq!(o.failure, Some(Failure::Config), "{host}: {o:?}");
    }
    assert!(!Path::new("x.db").exists());
}

#[tokio::test]
async fn policy_limits_directories() {
    let allowed = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    make_db(&allowed.path().join("a.db"));
    make_db(&other.path().join("b.db"));
    let policy = Policy::default().with_file_roots(vec![allowed.path().to_owned()]);
    let r = registry(policy);
    assert!(test(&r, &allowed.path().join("a.db")).await.success);
    let o = test(&r, &other.path().join("b.db")).await;
    assert_eq!(o.failure, Some(Failure::Blocked), "{o:?}");
    assert_eq!(o.message, "blocked by probe policy");
    // A path that climbs out of the allowed directory.
    let sneaky = allowed
        .path()
        .join("..")
        .join(other.path().file_name().unwrap())
        .join("b.db");
    assert_eq!(test(&r, &sneaky).await.failure, Some(Failure::Blocked));
    #[cfg(unix)]
    {
        let link = allowed.path().join("link.db");
        std::os::unix::fs::symlink(other.path().join("b.db"), &link).unwrap();
        assert_eq!(test(&r, &link).await.failure, Some(Failure::Blocked));
    }
}

#[tokio::test]
async fn disabled_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.db");
    make_db(&path);
    let r = registry(Policy::new(Duration::from_secs(1), true, &[]).unwrap());
    let o = test(&r, &path).await;
    assert_eq!(o.failure, Some(Failure::Disabled));
}

/// Issue 13: the store's database, its key file and their side files are never test targets,
/// whatever the file roots allow; a keyring or a store is recognised wherever it lies.
#[tokio::test]
async fn store_files_and_keyrings_are_never_targets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A database shaped like a broked store, its key file, and its WAL/SHM files.
    let store = d.join("broked.db");
    {
        let db = rusqlite::Connection::open(&store).unwrap();
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE state (id); CREATE TABLE keys (key_id);
             CREATE TABLE connections (conn_id, password BLOB);
             CREATE TABLE pipelines (pipeline_id); CREATE TABLE pipeline_refs (conn_id);
             INSERT INTO connections VALUES ('a', x'00');",
        )
        .unwrap();
        let held = rusqlite::Connection::open(&store).unwrap();
        held.execute_batch("INSERT INTO connections VALUES ('b', x'01');")
            .unwrap();
        std::fs::write(
            d.join("broked.db.key"),
            "# broked connections keyring: back it up\n\nbroked-keyring v1\nactive k1\nend\n",
        )
        .unwrap();
        assert!(d.join("broked.db-wal").exists() && d.join("broked.db-shm").exists());
        let r = registry(Policy::default().with_file_roots(vec![d.to_owned()]));
        for name in [
            "broked.db",
            "broked.db.key",
            "broked.db-wal",
            "broked.db-shm",
        ] {
            let o = test(&r, &d.join(name)).await;
            assert_eq!(o.failure, Some(Failure::Blocked), "{name}: {o:?}");
            assert_eq!(o.message, "blocked by probe policy", "{name}");
        }
        drop(held);
    }
    // A copy of the keyring under another name, and a copy of the store without a key file
    // beside it: recognised by their contents.
    std::fs::copy(d.join("broked.db.key"), d.join("keyring.txt")).unwrap();
    std::fs::copy(&store, d.join("copy.sqlite")).unwrap();
    // The key file named explicitly (as with --key-file), wherever it lies.
    let elsewhere = tempfile::tempdir().unwrap();
    let key = elsewhere.path().join("prod.keys");
    std::fs::write(&key, "not even a keyring yet").unwrap();
    let r = registry(Policy::default().protect_files([key.clone()]));
    for path in [d.join("keyring.txt"), d.join("copy.sqlite"), key.clone()] {
        let o = test(&r, &path).await;
        assert_eq!(
            o.failure,
            Some(Failure::Blocked),
            "{}: {o:?}",
            path.display()
        );
    }
    // Through a symbolic link and a `..` detour too.
    #[cfg(unix)]
    {
        let link = elsewhere.path().join("innocent.db");
        std::os::unix::fs::symlink(&store, &link).unwrap();
        assert_eq!(test(&r, &link).await.failure, Some(Failure::Blocked));
        let detour = d.join("..").join(d.file_name().unwrap()).join("broked.db");
        assert_eq!(test(&r, &detour).await.failure, Some(Failure::Blocked));
    }
    // An ordinary database beside them is still fine.
    make_db(&d.join("app.db"));
    assert!(test(&r, &d.join("app.db")).await.success);
}
