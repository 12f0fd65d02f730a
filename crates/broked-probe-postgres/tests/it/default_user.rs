//! Issue 18: a postgres connection without a login (the type table marks it optional) is
//! tested as libpq would connect it — as the OS user of the process (`psql -h HOST` does the
//! same) — not refused with "login is required".

use std::time::Duration;

use broked_probe::Failure;
use broked_probe::sql::os_user_name;
use broked_probe::testkit::test;
use broked_testenv::PgCluster;
use sqlx::Connection as _;

use super::{conn, registry};

/// A private cluster gets a role named like the OS user, with a password: a connection with
/// that password and no login logs in; with another password the failure names that user.
#[tokio::test]
async fn no_login_is_the_os_user_as_for_libpq() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = PgCluster::start_without_tls(dir.path()) else {
        return;
    };
    let os_user = os_user_name().expect("the test runs as a named user");
    let password = "Os-User-Pw-51c9";
    let mut admin = sqlx::PgConnection::connect(&cluster.url("sslmode=disable"))
        .await
        .unwrap();
    let role = os_user.replace('"', "\"\"");
    for statement in [
        format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"),
        format!("CREATE DATABASE app OWNER \"{role}\""),
    ] {
        sqlx::raw_sql(&statement).execute(&mut admin).await.unwrap();
    }

    let r = registry(Duration::from_secs(10), &[]);
    let mut c = conn("127.0.0.1", cluster.port, "x", Some(password), "app");
    c.login = None;
    c.extra = Some(broked_core::Secret::from(r#"{"sslmode":"disable"}"#));
    let o = test(&r, &c).await;
    assert!(o.success, "{o:?}");

    // Another password: refused for the OS user, and the message says which user was tried.
    c.password = Some(broked_core::Secret::from("Not-The-Pw-0000"));
    let o = test(&r, &c).await;
    assert!(!o.success, "{o:?}");
    assert_eq!(o.failure, Some(Failure::Auth), "{o:?}");
    assert!(o.message.contains(&format!("user {os_user}")), "{o:?}");
    assert!(!o.message.contains("login is required"), "{o:?}");
}
