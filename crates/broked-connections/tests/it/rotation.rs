//! Issue 20: rotating a password on the real PostgreSQL and MariaDB of the test suite, with
//! a role or user of each test's own (a distinctive initial password, dropped afterwards).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use broked_connections::{
    ConnectionInput, Connections, Error, RecoveryOutcome, SentAs, is_auth_failure_code,
};
use sqlx::Connection as _;

pub(crate) const INITIAL: &str = "Rot-Initial-Pw-7q2Zx";

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A login role of the test's own in the shared PostgreSQL (a member of `broked_rotation`,
/// whose logins pg_hba.conf checks by password), dropped on drop.
pub(crate) struct PgRole {
    admin_url: String,
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: String,
}

impl PgRole {
    fn new() -> Option<PgRole> {
        PgRole::named("rot", INITIAL)
    }

    /// A role `PREFIX_PID_NANOS` with `password`.
    pub(crate) fn named(prefix: &str, password: &str) -> Option<PgRole> {
        let pg = broked_testenv::postgres()?;
        let admin_url = format!(
            "postgres://{}:{}@{}:{}/{}",
            pg.get("USER"),
            pg.get("PASSWORD"),
            pg.get("HOST"),
            pg.port(),
            pg.get("DB")
        );
        let role = PgRole {
            admin_url,
            name: unique(prefix),
            host: pg.get("HOST").to_owned(),
            port: pg.port(),
            db: pg.get("DB").to_owned(),
        };
        role.admin(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{password}' IN ROLE broked_rotation",
            role.name
        ));
        Some(role)
    }

    pub(crate) fn admin(&self, sql: &str) {
        let url = self.admin_url.clone();
        let sql = sql.to_owned();
        rt().block_on(async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::Executor::execute(&mut c, sql.as_str()).await.unwrap();
            c.close().await.unwrap();
        });
    }

    /// Whether `password` logs in as the role now (a new session).
    pub(crate) fn logs_in(&self, password: &str) -> bool {
        let opts = sqlx::postgres::PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.name)
            .password(password)
            .database(&self.db);
        rt().block_on(async move {
            match sqlx::PgConnection::connect_with(&opts).await {
                Ok(c) => {
                    c.close().await.unwrap();
                    true
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28P01") => false,
                Err(e) => panic!("not an authentication failure: {e}"),
            }
        })
    }

    pub(crate) fn input(&self, conn_id: &str) -> ConnectionInput {
        ConnectionInput {
            conn_id: Some(conn_id.into()),
            conn_type: Some("postgres".into()),
            host: Some(self.host.clone()),
            port: Some(i64::from(self.port)),
            schema: Some(self.db.clone()),
            login: Some(self.name.clone()),
            password: Some(INITIAL.into()),
            extra: Some(r#"{"sslmode":"disable"}"#.into()),
            ..Default::default()
        }
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            rt().block_on(async move {
                if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                    let _ = sqlx::Executor::execute(
                        &mut c,
                        format!("DROP ROLE IF EXISTS {name}").as_str(),
                    )
                    .await;
                }
            })
        })
        .join();
    }
}

/// A user of the test's own in the shared MariaDB (`'name'@'127.0.0.1'`), dropped on drop.
pub(crate) struct MyUser {
    admin_url: String,
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl MyUser {
    fn new() -> Option<MyUser> {
        MyUser::named("rot", INITIAL)
    }

    /// A user `'PREFIX_PID_NANOS'@'127.0.0.1'` with `password`.
    pub(crate) fn named(prefix: &str, password: &str) -> Option<MyUser> {
        let my = broked_testenv::mysql()?;
        let user = MyUser {
            admin_url: format!(
                "mysql://{}:{}@{}:{}/{}",
                my.get("USER"),
                my.get("PASSWORD"),
                my.get("HOST"),
                my.port(),
                my.get("DB")
            ),
            name: unique(prefix),
            host: my.get("HOST").to_owned(),
            port: my.port(),
        };
        user.admin(&format!(
            "CREATE USER '{}'@'127.0.0.1' IDENTIFIED BY '{password}'",
            user.name
        ));
        Some(user)
    }

    pub(crate) fn admin(&self, sql: &str) {
        let url = self.admin_url.clone();
        let sql = sql.to_owned();
        rt().block_on(async move {
            let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
            sqlx::Executor::execute(&mut c, sql.as_str()).await.unwrap();
            c.close().await.unwrap();
        });
    }

    pub(crate) fn logs_in(&self, password: &str) -> bool {
        let opts = sqlx::mysql::MySqlConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .username(&self.name)
            .password(password);
        rt().block_on(async move {
            match sqlx::MySqlConnection::connect_with(&opts).await {
                Ok(c) => {
                    c.close().await.unwrap();
                    true
                }
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28000") => false,
                Err(e) => panic!("not an authentication failure: {e}"),
            }
        })
    }

    pub(crate) fn input(&self, conn_id: &str) -> ConnectionInput {
        ConnectionInput {
            conn_id: Some(conn_id.into()),
            conn_type: Some("mysql".into()),
            host: Some(self.host.clone()),
            port: Some(i64::from(self.port)),
            login: Some(self.name.clone()),
            password: Some(INITIAL.into()),
            extra: Some(r#"{"ssl_mode":"disabled"}"#.into()),
            ..Default::default()
        }
    }
}

impl Drop for MyUser {
    fn drop(&mut self) {
        let url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            rt().block_on(async move {
                if let Ok(mut c) = sqlx::MySqlConnection::connect(&url).await {
                    let _ = sqlx::Executor::execute(
                        &mut c,
                        format!("DROP USER IF EXISTS '{name}'@'127.0.0.1'").as_str(),
                    )
                    .await;
                }
            })
        })
        .join();
    }
}

pub(crate) fn stored_password(c: &Connections, conn_id: &str) -> String {
    c.resolve_fresh(conn_id)
        .unwrap()
        .connection
        .password
        .clone()
        .unwrap()
        .expose()
        .to_owned()
}

/// One query on a new connection to the resolved URI; an authentication failure is
/// `Err(Some(code))`.
pub(crate) async fn query_once(uri: &str) -> Result<(), Option<String>> {
    let code = |e: &sqlx::Error| match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    if uri.starts_with("mysql://") {
        let mut c = sqlx::MySqlConnection::connect(uri)
            .await
            .map_err(|e| code(&e))?;
        sqlx::query("SELECT 1")
            .execute(&mut c)
            .await
            .map_err(|e| code(&e))?;
        let _ = c.close().await;
    } else {
        let mut c = sqlx::PgConnection::connect(uri)
            .await
            .map_err(|e| code(&e))?;
        sqlx::query("SELECT 1")
            .execute(&mut c)
            .await
            .map_err(|e| code(&e))?;
        let _ = c.close().await;
    }
    Ok(())
}

/// Sets the flag when dropped: a pipeline loop stops when the test's thread ends, also by a
/// failed assertion (else a scoped thread would wait for the loop forever).
pub(crate) struct StopOnDrop<'a>(pub(crate) &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Rotates `rotations` times while a pipeline loop (another handle on the database, as
/// another process) runs about 50 queries a second, each on a new connection, through
/// `with_fresh_retry`. Every rotation is verified: the new password logs in, the old one no
/// longer does. Zero failed queries.
fn rotate_under_load(
    db: &std::path::Path,
    conn_id: &str,
    rotations: usize,
    logs_in: &(dyn Fn(&str) -> bool + Sync),
    sent_as: SentAs,
) {
    let rotator = Connections::open(db).unwrap();
    let stop = AtomicBool::new(false);
    let (ok, retried, failed) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    std::thread::scope(|s| {
        s.spawn(|| {
            let pipeline = Connections::open(db).unwrap();
            let rt = rt();
            while !stop.load(Ordering::Relaxed) {
                let mut attempts = 0;
                let result = pipeline.with_fresh_retry(
                    conn_id,
                    |resolved| {
                        attempts += 1;
                        rt.block_on(query_once(resolved.uri.expose()))
                    },
                    |e| e.as_deref().is_some_and(is_auth_failure_code),
                );
                match result {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("a pipeline query failed: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                if attempts > 1 {
                    retried.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        // A failed assertion below must stop the pipeline loop too, or the scope never ends.
        let _stop = StopOnDrop(&stop);
        let rt = rt();
        for i in 0..rotations {
            let old = stored_password(&rotator, conn_id);
            let report = rt
                .block_on(rotator.rotate_password(conn_id))
                .unwrap_or_else(|e| panic!("rotation {i}: {e}"));
            assert_eq!(report.sent_as, sent_as);
            let new = stored_password(&rotator, conn_id);
            assert_ne!(new, old, "rotation {i} stored a new password");
            assert_eq!(new.len(), 32);
            assert!(logs_in(&new), "rotation {i}: the new password logs in");
            assert!(
                !logs_in(&old),
                "rotation {i}: the old password stopped working"
            );
            // Spread the rotations over the pipeline's queries.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let (ok, retried, failed) = (ok.into_inner(), retried.into_inner(), failed.into_inner());
    eprintln!("pipeline: {ok} queries, {retried} retried after a failed login, {failed} failed");
    assert_eq!(failed, 0, "no pipeline query may fail");
    assert!(ok >= rotations, "the pipeline ran ({ok} queries)");
    assert!(rotator.pending_rotations().unwrap().is_empty());
}

#[test]
fn postgres_rotations_under_a_pipeline_loop_fail_no_query() {
    let Some(role) = PgRole::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    c.create(role.input("pg-rot")).unwrap();
    assert!(role.logs_in(INITIAL));
    rotate_under_load(
        &db,
        "pg-rot",
        20,
        &|p| role.logs_in(p),
        SentAs::ScramVerifier,
    );
}

#[test]
fn mariadb_rotations_under_a_pipeline_loop_fail_no_query() {
    let Some(user) = MyUser::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    c.create(user.input("my-rot")).unwrap();
    assert!(user.logs_in(INITIAL));
    // MariaDB's own account on mysql_native_password: only the hash is sent.
    rotate_under_load(&db, "my-rot", 5, &|p| user.logs_in(p), SentAs::NativeHash);
}

/// Through an admin connection (`extra.rotation_conn_id`), and the refusals that keep a
/// rotation on the connection's own server.
#[test]
fn an_admin_connection_rotates_a_role_on_the_same_server_only() {
    let Some(role) = PgRole::new() else { return };
    let pg = broked_testenv::postgres().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = Connections::open(dir.path().join("broked.db")).unwrap();
    c.create(ConnectionInput {
        conn_id: Some("pg-admin".into()),
        conn_type: Some("postgres".into()),
        host: Some(role.host.clone()),
        port: Some(i64::from(role.port)),
        schema: Some(role.db.clone()),
        login: Some(pg.get("USER").into()),
        password: Some(pg.get("PASSWORD").into()),
        extra: Some(r#"{"sslmode":"disable"}"#.into()),
        ..Default::default()
    })
    .unwrap();
    let mut input = role.input("pg-rot");
    input.extra = Some(r#"{"sslmode":"disable","rotation_conn_id":"pg-admin"}"#.into());
    c.create(input).unwrap();
    // The resolved URI carries no rotation key (no driver knows them).
    let uri = c.resolve("pg-rot").unwrap().uri.expose().to_owned();
    assert!(!uri.contains("rotation"), "{}", uri.replace(INITIAL, "***"));
    let report = rt().block_on(c.rotate_password("pg-rot")).unwrap();
    assert_eq!(report.via.as_deref(), Some("pg-admin"));
    assert_eq!(report.role, role.name);
    let new = stored_password(&c, "pg-rot");
    assert!(role.logs_in(&new) && !role.logs_in(INITIAL));
    // The admin's own password is unchanged.
    assert_eq!(stored_password(&c, "pg-admin"), pg.get("PASSWORD"));

    // An admin connection to another server (another port) is refused before any change.
    let mut elsewhere = role.input("pg-elsewhere");
    elsewhere.port = Some(i64::from(role.port) + 1);
    elsewhere.extra = Some(r#"{"sslmode":"disable","rotation_conn_id":"pg-admin"}"#.into());
    c.create(elsewhere).unwrap();
    let err = rt()
        .block_on(c.rotate_password("pg-elsewhere"))
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    assert!(err.to_string().contains("rotation_conn_id"), "{err}");
    assert!(role.logs_in(&new), "nothing changed");

    // Types without a server password are refused, naming the field.
    c.create(ConnectionInput {
        conn_id: Some("http-x".into()),
        conn_type: Some("http".into()),
        host: Some("https://api.example.com".into()),
        password: Some("Http-Pw-x".into()),
        ..Default::default()
    })
    .unwrap();
    let err = rt().block_on(c.rotate_password("http-x")).unwrap_err();
    assert!(err.to_string().contains("type"), "{err}");
    assert!(!err.to_string().contains("Http-Pw-x"));
    assert!(matches!(
        rt().block_on(c.rotate_password("nope")),
        Err(Error::NotFound(_))
    ));
}

/// A rotation run by this test binary as a child: `BROKED_IT_ROTATION_CHILD=db|conn_id`.
/// Prints `rotated` or `failed: <error>`.
pub(crate) fn rotation_child(
    test: &str,
    db: &std::path::Path,
    conn_id: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture"])
        .env(
            "BROKED_IT_ROTATION_CHILD",
            format!("{}|{conn_id}", db.display()),
        )
        .env_remove(broked_connections::FAULT_VAR);
    cmd
}

/// In a child: runs the rotation named by `BROKED_IT_ROTATION_CHILD`; `true` if this is the
/// child (the test then returns).
pub(crate) fn run_rotation_child() -> bool {
    let Ok(spec) = std::env::var("BROKED_IT_ROTATION_CHILD") else {
        return false;
    };
    let (db, conn_id) = spec.split_once('|').unwrap();
    let c = Connections::open(db).unwrap();
    match rt().block_on(c.rotate_password(conn_id)) {
        Ok(_) => println!("rotated"),
        Err(e) => println!("failed: {e}"),
    }
    true
}

/// A failure after ALTER ROLE and before the store write (the store write fails, three
/// times): the server is set back, the stored password logs in, nothing is pending.
#[test]
fn a_failed_store_write_after_alter_role_sets_the_server_back() {
    if run_rotation_child() {
        return;
    }
    let Some(role) = PgRole::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    c.create(role.input("pg-rot")).unwrap();
    let (status, out) = broked_testenv::run_output(
        rotation_child(
            "rotation::a_failed_store_write_after_alter_role_sets_the_server_back",
            &db,
            "pg-rot",
        )
        .env(broked_connections::FAULT_VAR, "fail-store"),
    );
    assert!(status.success(), "{out}");
    assert!(
        out.contains("failed: password rotation of \"pg-rot\" failed"),
        "{out}"
    );
    assert!(
        out.contains("the stored password is unchanged and logs in"),
        "{out}"
    );
    assert_eq!(stored_password(&c, "pg-rot"), INITIAL);
    assert!(role.logs_in(INITIAL), "the stored password logs in");
    assert!(c.pending_rotations().unwrap().is_empty());
    assert!(!out.contains(INITIAL), "{out}");
}

/// A process killed after ALTER ROLE and before the store write: the journal has the
/// entry; recovery stores the new password, which logs in.
#[test]
fn a_rotation_killed_after_alter_role_is_recovered() {
    if run_rotation_child() {
        return;
    }
    let Some(role) = PgRole::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    c.create(role.input("pg-rot")).unwrap();
    let mut child = rotation_child(
        "rotation::a_rotation_killed_after_alter_role_is_recovered",
        &db,
        "pg-rot",
    )
    .env(broked_connections::FAULT_VAR, "hold-after-alter")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the child ended before the fault point: {seen}");
        seen.push_str(&line);
        if line.contains(broked_connections::FAULT_POINT) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL, between ALTER ROLE and the store write
    child.wait().unwrap();
    assert!(
        !role.logs_in(INITIAL),
        "the server has the new password, the store still the old one"
    );
    assert_eq!(c.pending_rotations().unwrap(), vec!["pg-rot".to_owned()]);
    // A new handle (the next start) recovers it.
    let after = Connections::open(&db).unwrap();
    let recovered = rt().block_on(after.recover_rotations()).unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].outcome, RecoveryOutcome::Completed);
    let stored = stored_password(&after, "pg-rot");
    assert_ne!(stored, INITIAL);
    assert!(role.logs_in(&stored), "the stored password logs in");
    assert!(after.pending_rotations().unwrap().is_empty());
    // The journal never held a password in the clear.
    let raw = std::fs::read(&db).unwrap();
    let wal = std::fs::read(dir.path().join("broked.db-wal")).unwrap_or_default();
    for bytes in [raw, wal] {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(&stored) && !text.contains(INITIAL));
    }
}

/// Two processes rotate one connection at once: they take turns, and the stored password
/// logs in.
#[test]
fn two_rotations_at_once_take_turns() {
    if run_rotation_child() {
        return;
    }
    let Some(role) = PgRole::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let c = Connections::open(&db).unwrap();
    c.create(role.input("pg-rot")).unwrap();
    let test = "rotation::two_rotations_at_once_take_turns";
    let spawn = || {
        rotation_child(test, &db, "pg-rot")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("rotated"), "{text}");
    }
    let stored = stored_password(&c, "pg-rot");
    assert!(role.logs_in(&stored), "the final stored password logs in");
    assert!(!role.logs_in(INITIAL));
    // Two updates: two rotations, one after the other.
    let info = c.get("pg-rot").unwrap();
    assert!(info.updated_at >= info.created_at);
    assert!(c.pending_rotations().unwrap().is_empty());
}

/// A private cluster with `log_statement = 'all'`: the new password is not in its log,
/// only the SCRAM verifier.
#[test]
fn the_new_password_never_reaches_the_postgres_statement_log() {
    let root = tempfile::tempdir().unwrap();
    let Some(cluster) = broked_testenv::PgCluster::start_without_tls(root.path()) else {
        return;
    };
    let admin = cluster.url("sslmode=disable");
    let role = unique("rot");
    rt().block_on(async {
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        for sql in [
            "ALTER SYSTEM SET log_statement = 'all'".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
            format!("CREATE ROLE {role} LOGIN PASSWORD '{INITIAL}'"),
        ] {
            sqlx::Executor::execute(&mut c, sql.as_str()).await.unwrap();
        }
        c.close().await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let c = Connections::open(dir.path().join("broked.db")).unwrap();
    c.create(ConnectionInput {
        conn_id: Some("pg-logged".into()),
        conn_type: Some("postgres".into()),
        host: Some("127.0.0.1".into()),
        port: Some(i64::from(cluster.port)),
        schema: Some("postgres".into()),
        login: Some(role.clone()),
        password: Some(INITIAL.into()),
        extra: Some(r#"{"sslmode":"disable"}"#.into()),
        ..Default::default()
    })
    .unwrap();
    rt().block_on(c.rotate_password("pg-logged")).unwrap();
    let new = stored_password(&c, "pg-logged");
    let log = cluster.log();
    assert!(
        log.contains("ALTER ROLE") && log.contains("SCRAM-SHA-256$4096:"),
        "the statement was logged (as a verifier)"
    );
    assert!(
        !log.contains(&new),
        "the new password is in the server's log"
    );
}

/// `with_fresh_retry` retries once on an authentication failure, with a fresh resolve, and
/// not on other errors.
#[test]
fn with_fresh_retry_retries_once_and_only_on_auth_failures() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connections::open(dir.path().join("broked.db")).unwrap();
    c.create(ConnectionInput {
        conn_id: Some("x".into()),
        conn_type: Some("postgres".into()),
        host: Some("db.example.com".into()),
        login: Some("u".into()),
        password: Some("Pw-retry-1".into()),
        ..Default::default()
    })
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let r: Result<(), _> = c.with_fresh_retry(
        "x",
        |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            Err("28P01")
        },
        |e| is_auth_failure_code(e),
    );
    assert!(r.is_err());
    assert_eq!(calls.swap(0, Ordering::Relaxed), 2, "one retry");
    let r: Result<(), _> = c.with_fresh_retry(
        "x",
        |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            Err("08006")
        },
        |e| is_auth_failure_code(e),
    );
    assert!(r.is_err());
    assert_eq!(calls.load(Ordering::Relaxed), 1, "no retry on other errors");
    assert!(is_auth_failure_code("28000") && is_auth_failure_code("1045"));
    assert!(!is_auth_failure_code("42501"));
}
