//! The MySQL probe against the real MariaDB that scripts/services/mariadb.sh prepares,
//! and against local listeners for the failure classes that need no server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use broked_core::{ConnId, Secret};
use broked_probe::{ConnType, Connection, Failure, Outcome, Policy, Registry};
use broked_probe_mysql::MysqlProbe;
use tokio::net::TcpListener;

fn registry(timeout: Duration, deny: &[&str]) -> Registry {
    let deny: Vec<String> = deny.iter().map(|s| s.to_string()).collect();
    let mut r = Registry::new(Policy::new(timeout, false, &deny).unwrap());
    r.register(Arc::new(MysqlProbe));
    r
}

fn conn(host: &str, port: u16, user: &str, password: Option<&str>, db: &str) -> Connection {
    Connection {
        conn_id: ConnId::new("mysql-test").unwrap(),
        conn_type: ConnType::Mysql,
        host: Some(host.to_owned()),
        port: Some(port),
        schema: Some(db.to_owned()),
        login: Some(user.to_owned()),
        password: password.map(Secret::from),
        extra: None,
        description: None,
    }
}

fn service_conn(s: &broked_testenv::Service) -> Connection {
    conn(
        s.get("HOST"),
        s.port(),
        s.get("USER"),
        Some(s.get("PASSWORD")),
        s.get("DB"),
    )
}

/// No secret of `c` appears anywhere in the outcome.
fn assert_clean(o: &Outcome, c: &Connection) {
    let all = format!("{o:?}");
    if let Some(p) = c.password.as_ref().filter(|p| !p.is_empty()) {
        assert!(!all.contains(p.expose()), "password leaked: {all}");
    }
}

async fn test(r: &Registry, c: &Connection) -> Outcome {
    let o = r.test(c).await;
    assert_clean(&o, c);
    o
}

/// A port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener that accepts connections and never says anything; returns its port.
async fn silent_listener() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    port
}

#[tokio::test]
async fn success_reports_version() {
    let Some(s) = broked_testenv::mysql() else {
        return;
    };
    let c = service_conn(&s);
    let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.message, "Connected successfully (sqlx-mysql)");
    assert_eq!(o.driver, "sqlx-mysql");
    assert!(
        o.detail.starts_with("MariaDB ") || o.detail.starts_with("MySQL "),
        "{o:?}"
    );
    // Also by name, and with sslmode from extra.
    let mut c = service_conn(&s);
    c.host = Some("localhost".into());
    c.extra = Some(Secret::from(r#"{"ssl_mode":"preferred"}"#));
    let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
    assert!(o.success || o.message.contains("::1"), "{o:?}");
}

#[tokio::test]
async fn wrong_password_is_auth() {
    let Some(s) = broked_testenv::mysql() else {
        return;
    };
    let mut c = service_conn(&s);
    c.password = Some(Secret::from("wrong-Pa55word-xyz"));
    let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
    assert_eq!(o.failure, Some(Failure::Auth), "{o:?}");
    assert_eq!(
        o.message,
        format!(
            "authentication failed for user {}: check login and password",
            s.get("USER")
        )
    );
}

#[tokio::test]
async fn missing_database_is_not_found() {
    let Some(s) = broked_testenv::mysql() else {
        return;
    };
    let mut c = service_conn(&s);
    c.schema = Some("broked_no_such_db".into());
    let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
    assert_eq!(o.failure, Some(Failure::NotFound), "{o:?}");
    assert!(o.message.contains("broked_no_such_db"), "{o:?}");
}

#[tokio::test]
async fn bad_sslmode_is_config() {
    let mut c = conn("127.0.0.1", 3306, "u", Some("pw-secret-1"), "d");
    c.extra = Some(Secret::from(r#"{"ssl_mode":"sometimes"}"#));
    let o = test(&registry(Duration::from_secs(2), &[]), &c).await;
    assert_eq!(o.failure, Some(Failure::Config), "{o:?}");
}

#[tokio::test]
async fn closed_port_is_refused_fast() {
    let c = conn("127.0.0.1", closed_port(), "u", Some("pw-secret-1"), "d");
    let start = Instant::now();
    let o = test(&registry(Duration::from_secs(5), &[]), &c).await;
    assert_eq!(o.failure, Some(Failure::Refused), "{o:?}");
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn silent_listener_times_out_at_the_bound() {
    let port = silent_listener().await;
    let c = conn("127.0.0.1", port, "u", Some("pw-secret-1"), "d");
    let start = Instant::now();
    let o = test(&registry(Duration::from_millis(500), &[]), &c).await;
    let took = start.elapsed();
    assert_eq!(o.failure, Some(Failure::Timeout), "{o:?}");
    assert_eq!(o.message, "no answer within 500 ms");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn denied_addresses_are_blocked_before_any_packet() {
    // A listener on the denied address: it must never see a connection.
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let r = registry(Duration::from_secs(2), &["127.0.0.2/32"]);
    for host in [
        "127.0.0.2",
        "2130706434",
        "::ffff:127.0.0.2",
        "[::ffff:127.0.0.2]",
        "0x7f000002",
    ] {
        let o = test(&r, &conn(host, port, "u", Some("pw-secret-1"), "d")).await;
        assert_eq!(o.failure, Some(Failure::Blocked), "{host}: {o:?}");
        assert_eq!(o.message, "blocked by probe policy");
    }
    // A name that resolves to a denied address.
    let r = registry(Duration::from_secs(2), &["127.0.0.0/8", "::1/128"]);
    let o = test(&r, &conn("localhost", port, "u", Some("pw-secret-1"), "d")).await;
    assert_eq!(o.failure, Some(Failure::Blocked), "{o:?}");
    let accepted = tokio::time::timeout(Duration::from_millis(50), l.accept()).await;
    assert!(accepted.is_err(), "a denied address received a connection");
}

#[tokio::test]
async fn socket_paths_and_urls_are_not_hosts() {
    let r = registry(Duration::from_secs(2), &[]);
    for host in [
        "/run/mysqld/mysqld.sock",
        "mysql://u:pw-secret-1@127.0.0.1/d",
    ] {
        let o = test(&r, &conn(host, 3306, "u", Some("pw-secret-1"), "d")).await;
        assert_eq!(o.failure, Some(Failure::Config), "{host}: {o:?}");
    }
}

#[tokio::test]
async fn blank_password_is_auth() {
    let Some(s) = broked_testenv::mysql() else {
        return;
    };
    for password in [None, Some("")] {
        let mut c = service_conn(&s);
        c.password = password.map(Secret::from);
        let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
        assert_eq!(o.failure, Some(Failure::Auth), "{o:?}");
    }
}
