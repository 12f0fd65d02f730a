//! The TCP probe against listeners made by the test.

use std::time::{Duration, Instant};

use broked_core::{ConnId, Secret};
use broked_probe::{ConnType, Connection, Failure, Registry};
use broked_probe_tcp::TcpProbe;
use tokio::net::TcpListener;

fn registry(timeout: Duration, deny: &[&str]) -> Registry {
    broked_probe::testkit::registry(TcpProbe, timeout, deny)
}

fn conn(host: &str, port: Option<u16>) -> Connection {
    Connection {
        conn_id: ConnId::new("tcp").unwrap(),
        conn_type: ConnType::Generic,
        host: Some(host.to_owned()),
        port,
        schema: None,
        login: Some("u".into()),
        password: Some(Secret::from("tcp-secret-pw")),
        extra: None,
        description: None,
    }
}

#[tokio::test]
async fn success_and_refused() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let r = registry(Duration::from_secs(2), &[]);
    let o = r.test(&conn("127.0.0.1", Some(port))).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.message, "Connected successfully (tcp)");
    assert_eq!(o.driver, "tcp");
    let o = r.test(&conn("localhost", Some(port))).await;
    assert!(o.success, "{o:?}");
    drop(l);
    let start = Instant::now();
    let o = r.test(&conn("127.0.0.1", Some(port))).await;
    assert_eq!(o.failure, Some(Failure::Refused), "{o:?}");
    broked_probe::testkit::assert_names(&o.message, &["host and port"]);
    assert!(start.elapsed() < Duration::from_millis(100));
    assert!(!o.message.contains("tcp-secret-pw"));
}

#[tokio::test]
async fn config_and_dns() {
    let r = registry(Duration::from_secs(2), &[]);
    assert_eq!(
        r.test(&conn("127.0.0.1", None)).await.failure,
        Some(Failure::Config)
    );
    assert_eq!(
        r.test(&conn("http://127.0.0.1", Some(80))).await.failure,
        Some(Failure::Config)
    );
    let o = r.test(&conn("no-such-host.invalid", Some(80))).await;
    assert_eq!(o.failure, Some(Failure::Dns), "{o:?}");
    assert!(o.message.contains("no-such-host.invalid"), "{o:?}");
    broked_probe::testkit::assert_names(&o.message, &["host"]);
    let o = r.test(&conn("127.0.0.1", None)).await;
    broked_probe::testkit::assert_names(&o.message, &["port"]);
}

#[tokio::test]
async fn denied_before_any_packet() {
    let l = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let r = registry(Duration::from_secs(2), &["127.0.0.2/32"]);
    for host in ["127.0.0.2", "2130706434", "::ffff:127.0.0.2", "127.0.0.02"] {
        let o = r.test(&conn(host, Some(port))).await;
        assert_eq!(o.failure, Some(Failure::Blocked), "{host}: {o:?}");
        assert_eq!(o.message, "blocked by probe policy");
    }
    let r = registry(Duration::from_secs(2), &["localhost"]);
    assert_eq!(
        r.test(&conn("localhost", Some(port))).await.failure,
        Some(Failure::Blocked)
    );
    let r = registry(Duration::from_secs(2), &["127.0.0.0/8", "::1"]);
    assert_eq!(
        r.test(&conn("localhost", Some(port))).await.failure,
        Some(Failure::Blocked)
    );
    let accepted = tokio::time::timeout(Duration::from_millis(50), l.accept()).await;
    assert!(accepted.is_err(), "a denied address received a connection");
}
