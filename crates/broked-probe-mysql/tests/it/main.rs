//! The MySQL probe against the real MariaDB that scripts/services/mariadb.sh prepares,
//! against a private MariaDB with TLS made per test (`server`), and against local listeners
//! for the failure classes that need no server.

mod server;

use std::time::Duration;

use broked_core::Secret;
use broked_probe::testkit::test;
use broked_probe::{ConnType, Failure, Tls};
use broked_probe_mysql::MysqlProbe;

// The helpers of this file's tests — DETAILS, registry(timeout, deny), conn(host, port,
// user, password, db), service_conn(&service) — and what every SQL probe does (success, wrong
// password, missing database, bad TLS mode, closed port, silent listener, denied addresses,
// socket paths and URLs as hosts).
broked_probe::sql_probe_contract! {
    probe: MysqlProbe,
    conn_type: ConnType::Mysql,
    conn_id: "mysql-test",
    service: broked_testenv::mysql,
    port: 3306,
    driver: "sqlx-mysql",
    protocol: "MySQL",
    details: ["MariaDB ", "MySQL "],
    prefer_extra: r#"{"ssl_mode":"preferred"}"#,
    bad_tls_extra: r#"{"ssl_mode":"sometimes"}"#,
    not_hosts: [
        "/run/mysqld/mysqld.sock",
        "mysql://u:pw-secret-1@127.0.0.1/d",
    ],
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
        // Issue 18: TLS asked of a server without it says so, naming the mode's key.
        assert_eq!(
            server_has_tls.failure,
            Some(Failure::Tls),
            "{server_has_tls:?}"
        );
        assert!(
            server_has_tls.message.contains("does not offer TLS"),
            "{server_has_tls:?}"
        );
        broked_probe::testkit::assert_names(&server_has_tls.message, &["extra.ssl_mode"]);
    }
}

// Issue 16: against a real MariaDB with TLS (a private server, certificate made here for
// `localhost`, a user that must use TLS): `verify_identity` and `verify_ca` with the CA in
// extra are verified; `required` and the default `preferred` are encrypted but unverified —
// the latter as the server reports it (`Ssl_cipher`); another CA, or a host that is not the
// certificate's name, is a `tls` failure; `disabled` is refused by the server.
broked_probe::sql_probe_tls_server_contract! {
    name: tls_state_against_a_private_tls_mariadb,
    start: server::MariaDb::start,
    user: server::USER,
    password: server::PASSWORD,
    db: "mysql",
    mode_key: "ssl_mode",
    ca_key: "ssl_ca",
    verified: ["verify_identity", "verify_ca"],
    encrypted: "required",
    off: "disabled",
    off_failure: Failure::Auth,
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
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio_rustls::server::TlsStream;

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

    /// Greets and takes the SSL request: 32 bytes, CLIENT_SSL set.
    async fn before_tls(s: &mut TcpStream) -> bool {
        s.write_all(&packet(0, &greeting())).await.unwrap();
        let Some((1, req)) = read_packet(s).await else {
            return false;
        };
        req.len() == 32 && req[1] & 0x08 != 0
    }

    /// Refuses the login that follows (error 1045).
    async fn after_tls(tls: &mut TlsStream<TcpStream>) {
        let Some((seq, _response)) = read_packet(tls).await else {
            return;
        };
        let mut err = vec![0xff];
        err.extend_from_slice(&1045u16.to_le_bytes());
        err.extend_from_slice(b"#28000Access denied for user 'etl'");
        let _ = tls.write_all(&packet(seq + 1, &err)).await;
    }

    broked_probe::sql_probe_relay_contract! {
        registry: registry,
        conn: conn,
        before_tls: before_tls,
        after_tls: after_tls,
        verify_extra: |ca: &str| serde_json::json!({"ssl_mode": "verify_identity", "ssl_ca": ca}),
    }
}
