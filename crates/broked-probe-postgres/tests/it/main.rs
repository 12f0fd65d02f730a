//! The PostgreSQL probe against the real server that scripts/services/postgres.sh prepares,
//! against a private TLS cluster made per test (`broked_testenv::PgCluster`), and against local
//! listeners for the failure classes that need no server.

use std::time::Duration;

use broked_core::Secret;
use broked_probe::testkit::{assert_names, test};
use broked_probe::{ConnType, Failure, Tls};
use broked_probe_postgres::PostgresProbe;
use broked_testenv::PgCluster;

mod default_user;

// The helpers of this file's tests — DETAILS, registry(timeout, deny), conn(host, port,
// user, password, db), service_conn(&service) — and what every SQL probe does (success, wrong
// password, missing database, bad TLS mode, closed port, silent listener, denied addresses,
// socket paths and URLs as hosts).
broked_probe::sql_probe_contract! {
    probe: PostgresProbe,
    conn_type: ConnType::Postgres,
    conn_id: "pg-test",
    service: broked_testenv::postgres,
    port: 5432,
    driver: "sqlx-postgres",
    protocol: "PostgreSQL",
    details: ["PostgreSQL "],
    prefer_extra: r#"{"sslmode":"prefer"}"#,
    bad_tls_extra: r#"{"sslmode":"sometimes"}"#,
    not_hosts: [
        "/var/run/postgresql",
        "postgres://u:pw-secret-1@127.0.0.1/d",
    ],
}

/// Issue 16: the outcome says whether the session was encrypted. The shared test server may
/// or may not have TLS on; `sslmode=disable` is plain text either way, and the default
/// (`prefer`) reports what the server says about this session.
#[tokio::test]
async fn tls_state_on_the_shared_server() {
    let Some(s) = broked_testenv::postgres() else {
        return;
    };
    let r = registry(Duration::from_secs(10), &[]);
    let mut c = service_conn(&s);
    c.extra = Some(Secret::from(r#"{"sslmode":"disable"}"#));
    let o = test(&r, &c).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.tls, Some(Tls::Plaintext), "{o:?}");

    let o = test(&r, &service_conn(&s)).await;
    assert!(o.success, "{o:?}");
    assert!(
        matches!(o.tls, Some(Tls::Plaintext | Tls::Unverified)),
        "prefer never verifies: {o:?}"
    );
}

// Issue 16: `sslmode=verify-full` with the CA in extra against a real PostgreSQL with TLS (a
// private cluster, certificate made here, `hostssl` only): verified; `verify-ca` verified;
// `require` and the default `prefer` encrypted but unverified; another CA, or a host that is
// not the certificate's name, a `tls` failure; `disable` refused by the server.
broked_probe::sql_probe_tls_server_contract! {
    name: verify_full_with_a_ca_in_extra_against_a_tls_postgres,
    start: PgCluster::start,
    user: PgCluster::USER,
    password: PgCluster::PASSWORD,
    db: "postgres",
    mode_key: "sslmode",
    ca_key: "sslrootcert",
    verified: ["verify-full", "verify-ca"],
    encrypted: "require",
    off: "disable",
    off_failure: Failure::Tls,
}

/// Issue 18, against a private cluster without TLS: `sslmode=require` is `tls` naming
/// extra.sslmode ("does not offer TLS"); a user the database refuses (no CONNECT privilege)
/// is `authorization`, apart from a wrong password (`auth`).
#[tokio::test]
async fn tls_asked_of_a_plain_server_and_a_database_without_connect() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = PgCluster::start_without_tls(dir.path()) else {
        return;
    };
    let r = registry(Duration::from_secs(10), &[]);
    let mut c = conn(
        "127.0.0.1",
        cluster.port,
        PgCluster::USER,
        Some(PgCluster::PASSWORD),
        "postgres",
    );
    c.extra = Some(Secret::from(r#"{"sslmode":"require"}"#));
    let o = test(&r, &c).await;
    assert_eq!(o.failure, Some(Failure::Tls), "{o:?}");
    assert!(o.message.contains("does not offer TLS"), "{o:?}");
    assert_names(&o.message, &["extra.sslmode"]);

    let mut admin = sqlx::PgConnection::connect(&cluster.url("sslmode=disable"))
        .await
        .unwrap();
    for statement in [
        "CREATE ROLE limited_user LOGIN PASSWORD 'Limited-Pw-5c1d'",
        "CREATE DATABASE closed_db",
        "REVOKE CONNECT ON DATABASE closed_db FROM PUBLIC",
    ] {
        sqlx::raw_sql(statement).execute(&mut admin).await.unwrap();
    }
    let c = conn(
        "127.0.0.1",
        cluster.port,
        "limited_user",
        Some("Limited-Pw-5c1d"),
        "closed_db",
    );
    let o = test(&r, &c).await;
    assert_eq!(o.failure, Some(Failure::Authorization), "{o:?}");
    assert!(
        o.message
            .starts_with("user limited_user may not connect to database closed_db"),
        "{o:?}"
    );
    assert_names(&o.message, &["login", "schema"]);
    // The same user on a database it may use: the login itself is fine.
    let c = conn(
        "127.0.0.1",
        cluster.port,
        "limited_user",
        Some("Limited-Pw-5c1d"),
        "postgres",
    );
    assert!(test(&r, &c).await.success);
}

/// The server's own PG* environment and pgpass file must not lend a blank-password connection
/// their credentials. Environment variables are per process, so this test re-runs the test
/// binary with them set and `CHILD` naming the check to run there.
#[test]
fn server_environment_is_never_used() {
    let Some(s) = broked_testenv::postgres() else {
        return;
    };
    let dir = tempfile_dir();
    let pgpass = dir.join("pgpass");
    std::fs::write(
        &pgpass,
        format!("*:*:*:{}:{}\n", s.get("USER"), s.get("PASSWORD")),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for child in ["blank_password_child", "client_cert_env_child"] {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", child, "--nocapture", "--include-ignored"])
            .env("BROKED_PG_ENV_CHILD", "1")
            .env("PGPASSWORD", s.get("PASSWORD"))
            .env("PGPASSFILE", &pgpass)
            .env("HOME", &dir)
            .env("PGUSER", s.get("USER"))
            .env("PGDATABASE", s.get("DB"))
            .env("PGHOST", s.get("HOST"))
            .env("PGPORT", s.get("PORT"))
            .env("PGSSLCERT", dir.join("client.crt"));
        let (status, text) = broked_testenv::run_output(&mut cmd);
        assert!(status.success(), "{child} failed:\n{text}");
        assert!(text.contains("1 passed"), "{child} did not run:\n{text}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("broked-pg-env-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn in_child() -> bool {
    std::env::var_os("BROKED_PG_ENV_CHILD").is_some()
}

#[tokio::test]
async fn blank_password_child() {
    if !in_child() {
        return; // runs only inside server_environment_is_never_used
    }
    let Some(s) = broked_testenv::postgres() else {
        return;
    };
    // The client certificate variable is checked only without extra sslcert/sslkey; supply
    // dummies so this child reaches the server and shows PGPASSWORD/pgpass are ignored.
    let mut c = conn(s.get("HOST"), s.port(), s.get("USER"), None, s.get("DB"));
    c.extra = Some(Secret::from(
        r#"{"sslmode":"disable","sslcert":"x","sslkey":"y"}"#,
    ));
    let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
    assert!(
        !o.success,
        "a blank password logged in with the server's own credentials: {o:?}"
    );
    assert_eq!(o.failure, Some(Failure::Auth), "{o:?}");
    let mut c = conn(
        s.get("HOST"),
        s.port(),
        s.get("USER"),
        Some(""),
        s.get("DB"),
    );
    c.extra = Some(Secret::from(
        r#"{"sslmode":"disable","sslcert":"x","sslkey":"y"}"#,
    ));
    let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
    assert_eq!(o.failure, Some(Failure::Auth), "{o:?}");
}

#[tokio::test]
async fn client_cert_env_child() {
    if !in_child() {
        return;
    }
    let Some(s) = broked_testenv::postgres() else {
        return;
    };
    let c = service_conn(&s);
    let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
    assert_eq!(o.failure, Some(Failure::Config), "{o:?}");
    assert!(o.message.contains("PGSSLCERT"), "{o:?}");
}

/// Issue 13.7: `verify-full` connects to the address the policy checked — through the probe's
/// relay, not by resolving the name again — and still verifies the certificate against the
/// host name. A PostgreSQL stand-in on 127.0.0.1 answers the SSL request, completes TLS with
/// a certificate from a test CA, records the server name the client asked for, and refuses
/// the login (SQLSTATE 28P01): an `auth` failure proves that TLS with the name succeeded.
mod verify_full {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::server::TlsStream;

    /// Answers the SSL request.
    async fn before_tls(s: &mut TcpStream) -> bool {
        let mut ssl_request = [0u8; 8];
        if s.read_exact(&mut ssl_request).await.is_err()
            || ssl_request != [0, 0, 0, 8, 4, 210, 22, 47]
        {
            return false;
        }
        s.write_all(b"S").await.unwrap();
        true
    }

    /// Refuses the login in the startup message that follows (SQLSTATE 28P01).
    async fn after_tls(tls: &mut TlsStream<TcpStream>) {
        // The startup message: a length, then that many bytes minus four.
        let mut len = [0u8; 4];
        if tls.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut rest = vec![0u8; u32::from_be_bytes(len) as usize - 4];
        if tls.read_exact(&mut rest).await.is_err() {
            return;
        }
        let _ = tls.write_all(&broked_testenv::pg_password_failed()).await;
    }

    broked_probe::sql_probe_relay_contract! {
        registry: registry,
        conn: conn,
        before_tls: before_tls,
        after_tls: after_tls,
        verify_extra: |ca: &str| serde_json::json!({"sslmode": "verify-full", "sslrootcert": ca}),
    }
}
