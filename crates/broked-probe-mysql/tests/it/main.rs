//! The MySQL probe against the real MariaDB that scripts/services/mariadb.sh prepares,
//! against a private MariaDB with TLS made per test (`server`), and against local listeners
//! for the failure classes that need no server.

mod server;

use std::sync::Arc;
use std::time::Duration;

use broked_core::Secret;
use broked_probe::testkit::{relay_dirs, test};
use broked_probe::{ConnType, Connection, Failure, Tls};
use broked_probe_mysql::MysqlProbe;
use broked_testenv::TestCa;
use tokio::net::TcpListener;

// The helpers of this file's tests — registry(timeout, deny), conn(host, port, user,
// password, db), service_conn(&service) — and what every SQL probe does (wrong password,
// missing database, bad TLS mode, closed port, silent listener, denied addresses, socket paths
// and URLs as hosts).
broked_probe::sql_probe_contract! {
    probe: MysqlProbe,
    conn_type: ConnType::Mysql,
    conn_id: "mysql-test",
    service: broked_testenv::mysql,
    port: 3306,
    bad_tls_extra: r#"{"ssl_mode":"sometimes"}"#,
    not_hosts: [
        "/run/mysqld/mysqld.sock",
        "mysql://u:pw-secret-1@127.0.0.1/d",
    ],
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

/// Issue 16: the outcome says whether the session was encrypted. `disabled` is plain text;
/// the default (`preferred`) reports what the server says about this session (`Ssl_cipher`),
/// which must agree with whether the server can do TLS at all (`required` connects).
#[tokio::test]
async fn tls_state_on_the_shared_server() {
    let Some(s) = broked_testenv::mysql() else {
        return;
    };
    let r = registry(Duration::from_secs(10), &[]);
    let with = |mode: &str| {
        let mut c = service_conn(&s);
        c.extra = Some(Secret::from(
            serde_json::json!({ "ssl_mode": mode }).to_string(),
        ));
        c
    };
    let o = test(&r, &with("disabled")).await;
    assert!(o.success, "{o:?}");
    assert_eq!(o.tls, Some(Tls::Plaintext), "{o:?}");

    let server_has_tls = test(&r, &with("required")).await;
    let preferred = test(&r, &service_conn(&s)).await;
    assert!(preferred.success, "{preferred:?}");
    if server_has_tls.success {
        assert_eq!(
            server_has_tls.tls,
            Some(Tls::Unverified),
            "{server_has_tls:?}"
        );
        assert_eq!(preferred.tls, Some(Tls::Unverified), "{preferred:?}");
    } else {
        assert_eq!(preferred.tls, Some(Tls::Plaintext), "{preferred:?}");
    }
}

/// Issue 16: against a real MariaDB with TLS (a private server, certificate made here for
/// `localhost`, a user that must use TLS): `verify_identity` and `verify_ca` with the CA in
/// extra are verified; `required` and the default `preferred` are encrypted but unverified —
/// the latter as the server reports it (`Ssl_cipher`); another CA is a `tls` failure;
/// `disabled` is refused by the server.
#[tokio::test]
async fn tls_state_against_a_private_tls_mariadb() {
    let ca = TestCa::new("broked probe test CA");
    let (server_cert, server_key) = ca.issue(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    // Blocks this test's own runtime while the server starts; nothing else runs on it.
    let started = server::MariaDb::start(dir.path(), &server_cert, &server_key);
    let Some(db) = started else {
        return;
    };
    let r = registry(Duration::from_secs(10), &[]);
    let with = |host: &str, extra: serde_json::Value| {
        let mut c = conn(host, db.port, server::USER, Some(server::PASSWORD), "mysql");
        c.extra = Some(Secret::from(extra.to_string()));
        c
    };
    let ca_pem = ca.pem();
    for mode in ["verify_identity", "verify_ca"] {
        let c = with(
            "localhost",
            serde_json::json!({"ssl_mode": mode, "ssl_ca": ca_pem}),
        );
        let o = test(&r, &c).await;
        assert!(o.success, "{mode}: {o:?}");
        assert_eq!(o.tls, Some(Tls::Verified), "{mode}: {o:?}");
    }
    for extra in [
        serde_json::json!({"ssl_mode": "required"}),
        serde_json::json!({}),
    ] {
        let o = test(&r, &with("127.0.0.1", extra.clone())).await;
        assert!(o.success, "{extra}: {o:?}");
        assert_eq!(o.tls, Some(Tls::Unverified), "{extra}: {o:?}");
    }
    let other = TestCa::new("another CA");
    let c = with(
        "localhost",
        serde_json::json!({"ssl_mode": "verify_identity", "ssl_ca": other.pem()}),
    );
    let o = test(&r, &c).await;
    assert_eq!(o.failure, Some(Failure::Tls), "{o:?}");
    let o = test(
        &r,
        &with("127.0.0.1", serde_json::json!({"ssl_mode": "disabled"})),
    )
    .await;
    assert!(!o.success, "the user must use TLS: {o:?}");
    drop(db);
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

/// Issue 13.7: `verify_identity` connects to the address the policy checked — through the
/// probe's relay, not by resolving the name again — and still verifies the certificate against
/// the host name. A MySQL stand-in on 127.0.0.1 greets, takes the SSL request, completes TLS
/// with a certificate from a test CA, records the server name the client asked for, and
/// refuses the login (error 1045): an `auth` failure proves that TLS with the name succeeded.
mod verify_identity {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsAcceptor;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut p = len.to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend_from_slice(payload);
        p
    }

    async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.ok()?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        Some((head[3], payload))
    }

    /// The server greeting (protocol 10) offering TLS and mysql_native_password.
    fn greeting() -> Vec<u8> {
        let mut g = vec![10];
        g.extend_from_slice(b"8.0.36-standin\0");
        g.extend_from_slice(&7u32.to_le_bytes());
        g.extend_from_slice(b"abcdefgh\0");
        // Lower capabilities: everything but compression (SSL, PROTOCOL_41, SECURE_CONNECTION
        // included); upper: multi-statements/results and PLUGIN_AUTH.
        g.extend_from_slice(&0xFFDFu16.to_le_bytes());
        g.push(33);
        g.extend_from_slice(&2u16.to_le_bytes());
        g.extend_from_slice(&0x000Fu16.to_le_bytes());
        g.push(21);
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(b"ijklmnopqrst\0");
        g.extend_from_slice(b"mysql_native_password\0");
        g
    }

    /// The stand-in with a certificate for `names`; returns its port, the CA's PEM, and for
    /// each handshake it completed the server name (SNI) and whether it came through a relay.
    async fn tls_mysql(names: &[&str]) -> (u16, String, Arc<Mutex<Vec<String>>>) {
        let ca = TestCa::new("broked test CA");
        let acceptor = TlsAcceptor::from(ca.server_config(names));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let sni: Arc<Mutex<Vec<String>>> = Arc::default();
        let sni2 = sni.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let (acceptor, sni) = (acceptor.clone(), sni2.clone());
                tokio::spawn(async move {
                    s.write_all(&packet(0, &greeting())).await.unwrap();
                    // The SSL request: 32 bytes, CLIENT_SSL set.
                    let Some((1, req)) = read_packet(&mut s).await else {
                        return;
                    };
                    if req.len() != 32 || req[1] & 0x08 == 0 {
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let name = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                    let via = if relay_dirs() > 0 { "relay" } else { "direct" };
                    sni.lock().unwrap().push(format!("{name} via {via}"));
                    let Some((seq, _response)) = read_packet(&mut tls).await else {
                        return;
                    };
                    let mut err = vec![0xff];
                    err.extend_from_slice(&1045u16.to_le_bytes());
                    err.extend_from_slice(b"#28000Access denied for user 'etl'");
                    let _ = tls.write_all(&packet(seq + 1, &err)).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, ca.pem(), sni)
    }

    fn verify_identity(port: u16, ca: &str) -> Connection {
        let mut c = conn("localhost", port, "etl", Some("my-relay-Secret-52"), "db");
        c.extra = Some(Secret::from(
            serde_json::json!({"ssl_mode": "verify_identity", "ssl_ca": ca}).to_string(),
        ));
        c
    }

    broked_probe::sql_probe_relay_contract! {
        registry: registry,
        stand_in: tls_mysql,
        conn: verify_identity,
    }
}
