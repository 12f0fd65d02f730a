//! The probe crates' test kit (cargo feature `test-kit`, enabled only in their
//! dev-dependencies): what every probe's tests need — a registry with one probe, a policy
//! context, a closed port, a silent listener, the no-secret check on every outcome — and the
//! behaviours that several probes share, written once: [`sql_probe_contract!`],
//! [`sql_probe_tls_server_contract!`] and [`sql_probe_relay_contract!`] for the SQL database
//! probes (`broked-probe-postgres`, `broked-probe-mysql`), [`check_probe_contract!`] for the
//! probes tested through their own `check` (`broked-probe-s3`, `broked-probe-sftp`).
//!
//! [`sql_probe_contract!`]: crate::sql_probe_contract
//! [`sql_probe_tls_server_contract!`]: crate::sql_probe_tls_server_contract
//! [`sql_probe_relay_contract!`]: crate::sql_probe_relay_contract
//! [`check_probe_contract!`]: crate::check_probe_contract
//!
//! Not here: servers (the test services are `broked-testenv`'s; private servers and the
//! protocol halves of the stand-ins stay with the probe they test) and anything a product uses.

use std::sync::Arc;
use std::time::Duration;

pub use broked_core::{ConnId, Secret};
use tokio::net::TcpListener;

use crate::{Connection, Context, Outcome, Policy, Probe, ProbeError, Probed, Registry};

/// A registry with `probe` only, under a policy with `timeout` and `deny` (after the defaults).
pub fn registry(probe: impl Probe, timeout: Duration, deny: &[&str]) -> Registry {
    let mut r = Registry::new(policy(timeout, deny));
    r.register(Arc::new(probe));
    r
}

/// A probe's context under a policy with `timeout` and `deny`, for calling a probe's own
/// `check` without the registry.
pub fn context(timeout: Duration, deny: &[&str]) -> Context {
    Context::new(Arc::new(policy(timeout, deny)))
}

fn policy(timeout: Duration, deny: &[&str]) -> Policy {
    let deny: Vec<String> = deny.iter().map(|s| s.to_string()).collect();
    Policy::new(timeout, false, &deny).unwrap()
}

/// No password of `c` appears anywhere in the outcome.
pub fn assert_clean(o: &Outcome, c: &Connection) {
    let all = format!("{o:?}");
    if let Some(p) = c.password.as_ref().filter(|p| !p.is_empty()) {
        assert!(!all.contains(p.expose()), "password leaked: {all}");
    }
}

/// Tests `c` through `r`, checking that the outcome carries no password ([`assert_clean`]).
pub async fn test(r: &Registry, c: &Connection) -> Outcome {
    let o = r.test(c).await;
    assert_clean(&o, c);
    o
}

/// The detail of a probe's own check, or its error, after asserting that neither carries the
/// password or the extra of `c`.
pub fn checked(c: &Connection, result: Result<Probed, ProbeError>) -> Result<String, ProbeError> {
    let result = result.map(|p| p.detail);
    let text = match &result {
        Ok(detail) => detail.clone(),
        Err(e) => e.message.clone(),
    };
    let secrets = [&c.password, &c.extra].into_iter().flatten();
    for secret in secrets.filter(|s| !s.is_empty()) {
        assert!(!text.contains(secret.expose()), "secret in {text:?}");
    }
    result
}

/// The error of a probe's result that must be a failure.
pub fn fail<T: std::fmt::Debug>(result: Result<T, ProbeError>) -> ProbeError {
    match result {
        Ok(detail) => panic!("expected a failure, got success: {detail:?}"),
        Err(e) => e,
    }
}

/// A port with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener that accepts connections and never says anything; returns its port.
pub async fn silent_listener() -> u16 {
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

/// A stand-in for an HTTP server on 127.0.0.1, as real ones behave towards other protocols:
/// it answers every complete request head (up to the blank line) with `400 Bad Request` and
/// waits, saying nothing, for the rest of anything else. Returns its port.
pub async fn http_listener() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer =
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// A listener on 127.0.0.1 that greets every connection with `banner` (an SSH server's
/// `SSH-2.0-OpenSSH_9.2p1\r\n`, say), then reads and ignores what it is sent. Returns its port.
pub async fn banner_listener(banner: &'static [u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if s.write_all(banner).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    port
}

/// A name that never resolves (RFC 6761's `.invalid`): the probes answer `dns` for it
/// without asking any DNS server ([`crate::never_resolves`]).
pub const UNRESOLVABLE: &str = "nonexistent.invalid";

/// Asserts that `message` names every one of `fields` (`host`, `port`, `login`, …): what a
/// user must check.
pub fn assert_names(message: &str, fields: &[&str]) {
    for field in fields {
        assert!(
            message.contains(field),
            "the message does not name {field}: {message:?}"
        );
    }
}

/// How many of this process's relay socket directories exist ([`crate::Relay`]): more than
/// zero while a probe relays a connection, and zero after every relay has been cleaned up.
pub fn relay_dirs() -> usize {
    let prefix = format!("broked-probe-{}-", std::process::id());
    ["/tmp".into(), std::env::temp_dir()]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count()
}

/// The harness and contract of a SQL database probe, expanded in the calling module (the
/// test binary's root).
///
/// It defines the helpers the module's own tests use too — `DETAILS`, `registry(timeout, deny)` (a
/// registry with `probe` only), `conn(host, port, user, password, db)` (a connection of
/// `conn_type` named `conn_id`) and `service_conn(&Service)` (the shared test service's
/// connection, from `service`, e.g. `broked_testenv::postgres`) — and one `#[tokio::test]` per
/// shared behaviour: success against the service (reported by `driver`, a detail starting with
/// one of `details`; by name too, with `prefer_extra`), the service's answers to a wrong
/// password and a missing database, a bad TLS mode (`bad_tls_extra`), a closed port, a silent
/// listener, denied addresses in every spelling, and socket paths and URLs (`not_hosts`) given
/// as hosts, with `port` the probe's default port; and the failure classes of issue 18, each
/// naming the field to check: a name that does not resolve (`dns`, host), a port that answers
/// HTTP or SSH (`protocol`, "speaks HTTP, not `protocol`", port). The caller's crate has `tokio` (macros, rt,
/// net, time) and `broked-testenv` as dev-dependencies.
///
/// ```text
/// broked_probe::sql_probe_contract! {
///     probe: PostgresProbe,
///     conn_type: ConnType::Postgres,
///     conn_id: "pg-test",
///     service: broked_testenv::postgres,
///     port: 5432,
///     driver: "sqlx-postgres",
///     protocol: "PostgreSQL",
///     details: ["PostgreSQL "],
///     prefer_extra: r#"{"sslmode":"prefer"}"#,
///     bad_tls_extra: r#"{"sslmode":"sometimes"}"#,
///     not_hosts: ["/var/run/postgresql", "postgres://u:pw-secret-1@127.0.0.1/d"],
/// }
/// ```
#[macro_export]
macro_rules! sql_probe_contract {
    (
        probe: $probe:expr,
        conn_type: $conn_type:expr,
        conn_id: $conn_id:literal,
        service: $service:path,
        port: $port:literal,
        driver: $driver:literal,
        protocol: $protocol:literal,
        details: [$($detail:literal),* $(,)?],
        prefer_extra: $prefer_extra:literal,
        bad_tls_extra: $bad_tls_extra:literal,
        not_hosts: [$($not_host:literal),* $(,)?] $(,)?
    ) => {
        /// What a success's detail starts with.
        const DETAILS: &[&str] = &[$($detail),*];

        fn registry(timeout: ::std::time::Duration, deny: &[&str]) -> $crate::Registry {
            $crate::testkit::registry($probe, timeout, deny)
        }

        fn conn(
            host: &str,
            port: u16,
            user: &str,
            password: Option<&str>,
            db: &str,
        ) -> $crate::Connection {
            $crate::Connection {
                conn_id: $crate::testkit::ConnId::new($conn_id).unwrap(),
                conn_type: $conn_type,
                host: Some(host.to_owned()),
                port: Some(port),
                schema: Some(db.to_owned()),
                login: Some(user.to_owned()),
                password: password.map($crate::testkit::Secret::from),
                extra: None,
                description: None,
            }
        }

        fn service_conn(s: &::broked_testenv::Service) -> $crate::Connection {
            conn(
                s.get("HOST"),
                s.port(),
                s.get("USER"),
                Some(s.get("PASSWORD")),
                s.get("DB"),
            )
        }

        #[::tokio::test]
        async fn success_reports_version() {
            use ::std::time::Duration;
            use $crate::testkit::{Secret, test};
            let Some(s) = $service() else {
                return;
            };
            let c = service_conn(&s);
            let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
            assert!(o.success, "{o:?}");
            assert_eq!(o.message, concat!("Connected successfully (", $driver, ")"));
            assert_eq!(o.driver, $driver);
            assert!(DETAILS.iter().any(|d| o.detail.starts_with(d)), "{o:?}");
            // Also by name, and with the TLS mode from extra.
            let mut c = service_conn(&s);
            c.host = Some("localhost".into());
            c.extra = Some(Secret::from($prefer_extra));
            let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
            assert!(o.success || o.message.contains("::1"), "{o:?}");
        }

        #[::tokio::test]
        async fn wrong_password_is_auth() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::{Secret, test};
            let Some(s) = $service() else {
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
            $crate::testkit::assert_names(&o.message, &["login", "password"]);
        }

        #[::tokio::test]
        async fn unresolvable_host_is_dns() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::{UNRESOLVABLE, assert_names, test};
            let c = conn(UNRESOLVABLE, $port, "u", Some("pw-secret-1"), "d");
            let o = test(&registry(Duration::from_secs(5), &[]), &c).await;
            assert_eq!(o.failure, Some(Failure::Dns), "{o:?}");
            assert_names(&o.message, &[UNRESOLVABLE, "host"]);
        }

        /// Issue 18: the port answers HTTP (an HTTP server waits for a request head that a
        /// database client never sends), or SSH (which speaks first).
        #[::tokio::test]
        async fn another_protocol_on_the_port_is_a_mismatch() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::{assert_names, banner_listener, http_listener, test};
            let r = registry(Duration::from_secs(5), &[]);
            let ports = [
                ("HTTP", http_listener().await),
                ("SSH", banner_listener(b"SSH-2.0-OpenSSH_9.2p1\r\n").await),
            ];
            for (speaks, port) in ports {
                let o = test(&r, &conn("127.0.0.1", port, "u", Some("pw-secret-1"), "d")).await;
                assert_eq!(o.failure, Some(Failure::Protocol), "{speaks}: {o:?}");
                let says = format!(
                    "127.0.0.1:{port} speaks {speaks}, not {}: check port ({} listens on {} by default)",
                    $protocol, $protocol, $port
                );
                assert!(o.message.starts_with(&says), "{says:?} in {o:?}");
                assert_names(&o.message, &["port", "connection type"]);
            }
        }

        #[::tokio::test]
        async fn missing_database_is_not_found() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::test;
            let Some(s) = $service() else {
                return;
            };
            let mut c = service_conn(&s);
            c.schema = Some("broked_no_such_db".into());
            let o = test(&registry(Duration::from_secs(10), &[]), &c).await;
            assert_eq!(o.failure, Some(Failure::NotFound), "{o:?}");
            assert!(o.message.contains("broked_no_such_db"), "{o:?}");
            $crate::testkit::assert_names(&o.message, &["schema"]);
        }

        #[::tokio::test]
        async fn bad_sslmode_is_config() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::{Secret, test};
            let mut c = conn("127.0.0.1", $port, "u", Some("pw-secret-1"), "d");
            c.extra = Some(Secret::from($bad_tls_extra));
            let o = test(&registry(Duration::from_secs(2), &[]), &c).await;
            assert_eq!(o.failure, Some(Failure::Config), "{o:?}");
            assert!(o.message.contains("extra"), "{o:?}");
        }

        #[::tokio::test]
        async fn closed_port_is_refused_fast() {
            use ::std::time::{Duration, Instant};
            use $crate::Failure;
            use $crate::testkit::{closed_port, test};
            let c = conn("127.0.0.1", closed_port(), "u", Some("pw-secret-1"), "d");
            let start = Instant::now();
            let o = test(&registry(Duration::from_secs(5), &[]), &c).await;
            assert_eq!(o.failure, Some(Failure::Refused), "{o:?}");
            $crate::testkit::assert_names(&o.message, &["host and port"]);
            assert!(
                start.elapsed() < Duration::from_millis(100),
                "{:?}",
                start.elapsed()
            );
        }

        #[::tokio::test]
        async fn silent_listener_times_out_at_the_bound() {
            use ::std::time::{Duration, Instant};
            use $crate::Failure;
            use $crate::testkit::{silent_listener, test};
            let port = silent_listener().await;
            let c = conn("127.0.0.1", port, "u", Some("pw-secret-1"), "d");
            let start = Instant::now();
            let o = test(&registry(Duration::from_millis(500), &[]), &c).await;
            let took = start.elapsed();
            assert_eq!(o.failure, Some(Failure::Timeout), "{o:?}");
            // Issue 18: the message names the fields to check (it was "no answer within 500 ms").
            assert_eq!(
                o.message,
                "no answer within 500 ms: check host and port (a firewall may drop the packets)"
            );
            assert!(
                took >= Duration::from_millis(500) && took < Duration::from_millis(1500),
                "{took:?}"
            );
        }

        #[::tokio::test]
        async fn denied_addresses_are_blocked_before_any_packet() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::test;
            // A listener on the denied address: it must never see a connection.
            let l = ::tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
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
            let accepted = ::tokio::time::timeout(Duration::from_millis(50), l.accept()).await;
            assert!(accepted.is_err(), "a denied address received a connection");
        }

        #[::tokio::test]
        async fn socket_paths_and_urls_are_not_hosts() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::test;
            let r = registry(Duration::from_secs(2), &[]);
            for host in [$($not_host),*] {
                let o = test(&r, &conn(host, $port, "u", Some("pw-secret-1"), "d")).await;
                assert_eq!(o.failure, Some(Failure::Config), "{host}: {o:?}");
            }
        }
    };
}

/// The contract of a SQL probe's full certificate check (issue 13.7), one `#[tokio::test]`
/// (`verifies_the_name_at_the_checked_address`) in the calling module: the probe connects to
/// the address the policy checked through its relay, not by resolving the name again, and
/// still verifies the certificate against the host name; a certificate for another name is a
/// `tls` failure; a denied name sends nothing and leaves no relay behind.
///
/// The check runs against a TLS stand-in of the protocol on 127.0.0.1 with a certificate for
/// the names asked from a fresh CA, which records each handshake it completed as
/// `"SNI via relay"` or `"SNI via direct"` and refuses the login. The caller names
/// `registry(timeout, deny)` and `conn(host, port, user, password, db)` (from
/// [`sql_probe_contract!`]), the protocol's two halves — `before_tls`, an async fn from
/// `&mut TcpStream` to whether the client asked for TLS (having answered it), and
/// `after_tls`, an async fn on the TLS stream that refuses the login — and `verify_extra`, the
/// extra (a `serde_json::Value`) that verifies the name with a CA's PEM. The caller's crate has
/// `tokio-rustls` and `broked-testenv` (feature `tls`) as dev-dependencies.
///
/// [`sql_probe_contract!`]: crate::sql_probe_contract
#[macro_export]
macro_rules! sql_probe_relay_contract {
    (
        registry: $registry:path,
        conn: $conn:path,
        before_tls: $before_tls:path,
        after_tls: $after_tls:path,
        verify_extra: $verify_extra:expr $(,)?
    ) => {
        /// The stand-in with a certificate for `names`; returns its port, the CA's PEM, and
        /// for each handshake it completed the server name (SNI) and whether it came through
        /// a relay.
        async fn stand_in(
            names: &[&str],
        ) -> (
            u16,
            String,
            ::std::sync::Arc<::std::sync::Mutex<Vec<String>>>,
        ) {
            use ::tokio::io::AsyncWriteExt;
            let ca = ::broked_testenv::TestCa::new("broked test CA");
            let acceptor = ::tokio_rustls::TlsAcceptor::from(ca.server_config(names));
            let l = ::tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap();
            let port = l.local_addr().unwrap().port();
            let sni: ::std::sync::Arc<::std::sync::Mutex<Vec<String>>> = Default::default();
            let sni2 = sni.clone();
            ::tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let (acceptor, sni) = (acceptor.clone(), sni2.clone());
                    ::tokio::spawn(async move {
                        if !$before_tls(&mut s).await {
                            return;
                        }
                        let Ok(mut tls) = acceptor.accept(s).await else {
                            return;
                        };
                        let name = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                        // Whether the client reached us through the probe's relay (its socket
                        // directory exists while it relays), not by a TCP connect of its own.
                        let relayed = $crate::testkit::relay_dirs() > 0;
                        let via = if relayed { "relay" } else { "direct" };
                        sni.lock().unwrap().push(format!("{name} via {via}"));
                        $after_tls(&mut tls).await;
                        let _ = tls.shutdown().await;
                    });
                }
            });
            (port, ca.pem(), sni)
        }

        fn verifying_conn(port: u16, ca: &str) -> $crate::Connection {
            let mut c = $conn("localhost", port, "etl", Some("sql-relay-Secret-41"), "db");
            let extra: ::serde_json::Value = ($verify_extra)(ca);
            c.extra = Some($crate::testkit::Secret::from(extra.to_string()));
            c
        }

        #[::tokio::test]
        async fn verifies_the_name_at_the_checked_address() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::{relay_dirs, test};
            let (port, ca, sni) = stand_in(&["localhost"]).await;
            let r = $registry(Duration::from_secs(5), &[]);
            let o = test(&r, &verifying_conn(port, &ca)).await;
            assert_eq!(o.failure, Some(Failure::Auth), "{o:?}");
            assert_eq!(
                *sni.lock().unwrap(),
                ["localhost via relay"],
                "TLS asked for the name, over the probe's own connection to the checked address"
            );

            // A certificate for another name fails verification, through the relay too.
            // Issue 18: a certificate failure is the class `certificate` (it was `tls`).
            let (port, ca, _) = stand_in(&["db.other.example"]).await;
            let o = test(&r, &verifying_conn(port, &ca)).await;
            assert_eq!(o.failure, Some(Failure::Certificate), "{o:?}");
            assert!(
                o.message.contains("not valid for the name localhost"),
                "{o:?}"
            );
            $crate::testkit::assert_names(&o.message, &["host"]);

            // The name's addresses are checked and only those are used: denied, nothing is
            // sent.
            let (port, ca, sni) = stand_in(&["localhost"]).await;
            let denied = $registry(Duration::from_secs(5), &["127.0.0.0/8", "::1"]);
            let o = test(&denied, &verifying_conn(port, &ca)).await;
            assert_eq!(o.failure, Some(Failure::Blocked), "{o:?}");
            assert!(sni.lock().unwrap().is_empty());
            assert_eq!(relay_dirs(), 0, "relay directories are removed");
        }
    };
}

/// The contract of a SQL probe against a private server of its kind with TLS (issue 16), one
/// `#[tokio::test]` named `name` in the calling module.
///
/// The server — `start(dir, cert_pem, key_pem)`, an `Option` of a value with a `port` field
/// that stops the server when dropped, `None` when it cannot run — gets a certificate for
/// `localhost` from a fresh CA and a user (`user`, `password`, database `db`) that must use
/// TLS. With the CA's PEM in extra `ca_key`, the `verified` modes (extra `mode_key`; the first
/// checks the name) are verified and report a detail starting with one of `DETAILS`;
/// `encrypted` and the default are encrypted but unverified; another CA, or a host that is not
/// the certificate's name, is a `certificate` failure naming the CA key or host; `off` is
/// refused by the server, as `off_failure`, with a message naming the mode key. The caller
/// names `DETAILS`, `registry(timeout, deny)` and `conn(host, port, user, password, db)` (from
/// [`sql_probe_contract!`]) and has `tempfile`, `serde_json` and `broked-testenv` (feature
/// `tls`) as dependencies.
///
/// [`sql_probe_contract!`]: crate::sql_probe_contract
#[macro_export]
macro_rules! sql_probe_tls_server_contract {
    (
        name: $name:ident,
        start: $start:path,
        user: $user:expr,
        password: $password:expr,
        db: $db:literal,
        mode_key: $mode_key:literal,
        ca_key: $ca_key:literal,
        verified: [$verify_name:literal, $verify_ca:literal],
        encrypted: $encrypted:literal,
        off: $off:literal,
        off_failure: $off_failure:expr $(,)?
    ) => {
        #[::tokio::test]
        async fn $name() {
            use ::serde_json::json;
            use ::std::time::Duration;
            use $crate::testkit::{Secret, test};
            use $crate::{Failure, Tls};
            let ca = ::broked_testenv::TestCa::new("broked probe test CA");
            let (server_cert, server_key) = ca.issue(&["localhost"]);
            let dir = ::tempfile::tempdir().unwrap();
            // Blocks this test's own runtime while the server starts; nothing else runs on it.
            let started = $start(dir.path(), &server_cert, &server_key);
            let Some(server) = started else {
                return;
            };
            let r = registry(Duration::from_secs(10), &[]);
            let with = |host: &str, extra: ::serde_json::Value| {
                let mut c = conn(host, server.port, $user, Some($password), $db);
                c.extra = Some(Secret::from(extra.to_string()));
                c
            };
            let ca_pem = ca.pem();
            for mode in [$verify_name, $verify_ca] {
                let c = with("localhost", json!({$mode_key: mode, $ca_key: ca_pem}));
                let o = test(&r, &c).await;
                assert!(o.success, "{mode}: {o:?}");
                assert!(DETAILS.iter().any(|d| o.detail.starts_with(d)), "{o:?}");
                assert_eq!(o.tls, Some(Tls::Verified), "{mode}: {o:?}");
            }
            for extra in [json!({$mode_key: $encrypted}), json!({})] {
                let o = test(&r, &with("127.0.0.1", extra.clone())).await;
                assert!(o.success, "{extra}: {o:?}");
                assert_eq!(o.tls, Some(Tls::Unverified), "{extra}: {o:?}");
            }

            // Issue 18: certificate failures are the class `certificate` (they were `tls`),
            // and say which field to check.
            // Another CA: the certificate cannot be verified.
            let other_ca = ::broked_testenv::TestCa::new("another CA");
            let c = with(
                "localhost",
                json!({$mode_key: $verify_name, $ca_key: other_ca.pem()}),
            );
            let o = test(&r, &c).await;
            assert_eq!(o.failure, Some(Failure::Certificate), "{o:?}");
            assert_eq!(o.tls, None, "{o:?}");
            assert!(o.message.contains("is not trusted"), "{o:?}");
            $crate::testkit::assert_names(&o.message, &[concat!("extra.", $ca_key), "host"]);
            // The right CA, but the host is not the certificate's name.
            let c = with(
                "127.0.0.1",
                json!({$mode_key: $verify_name, $ca_key: ca_pem}),
            );
            let o = test(&r, &c).await;
            assert_eq!(o.failure, Some(Failure::Certificate), "{o:?}");
            assert!(o.message.contains("is not valid for the name 127.0.0.1"), "{o:?}");
            $crate::testkit::assert_names(&o.message, &["host"]);
            // The user must use TLS: without, the server lets nobody in; the message points
            // at the TLS mode.
            let o = test(&r, &with("127.0.0.1", json!({$mode_key: $off}))).await;
            assert_eq!(o.failure, Some($off_failure), "{o:?}");
            $crate::testkit::assert_names(&o.message, &[concat!("extra.", $mode_key)]);
            drop(server);
        }
    };
}

/// The contract of a probe tested through its own `check` (s3, sftp), one `#[tokio::test]`
/// per behaviour in the calling module: a closed port is refused at once, and a listener that
/// never answers times out at the bound (700 ms), not before and not much later, both naming
/// host and port; a name that does not resolve ([`UNRESOLVABLE`]) is `dns` naming it and host.
///
/// The caller names `run_with(&Connection, &Context)`, its check with the result passed
/// through [`checked`], `local_conn`, a closure from a port on 127.0.0.1 to a connection
/// with credentials, and `named_conn`, a closure from a host name to one.
#[macro_export]
macro_rules! check_probe_contract {
    (run_with: $run_with:path, local_conn: $local_conn:expr, named_conn: $named_conn:expr $(,)?) => {
        #[::tokio::test]
        async fn unresolvable_host_is_dns() {
            use ::std::time::Duration;
            use $crate::Failure;
            use $crate::testkit::{UNRESOLVABLE, assert_names, context, fail};
            let c = ($named_conn)(UNRESOLVABLE);
            let e = fail($run_with(&c, &context(Duration::from_secs(5), &[])).await);
            assert_eq!(e.kind, Failure::Dns, "{e:?}");
            assert_names(&e.message, &[UNRESOLVABLE, "host"]);
        }

        #[::tokio::test]
        async fn closed_port_is_refused_quickly() {
            use ::std::time::{Duration, Instant};
            use $crate::Failure;
            use $crate::testkit::{closed_port, context, fail};
            // A port that was just free: bind, note it, close.
            let port = closed_port();
            let start = Instant::now();
            let c = ($local_conn)(port);
            let e = fail($run_with(&c, &context(Duration::from_secs(10), &[])).await);
            assert_eq!(e.kind, Failure::Refused, "{e:?}");
            $crate::testkit::assert_names(&e.message, &["host and port"]);
            assert!(
                start.elapsed() < Duration::from_millis(100),
                "{:?}",
                start.elapsed()
            );
        }

        #[::tokio::test]
        async fn silent_server_times_out_at_the_bound() {
            use ::std::time::{Duration, Instant};
            use $crate::Failure;
            use $crate::testkit::{context, fail, silent_listener};
            // Accepts and never says a word.
            let port = silent_listener().await;
            let start = Instant::now();
            let c = ($local_conn)(port);
            let e = fail($run_with(&c, &context(Duration::from_millis(700), &[])).await);
            let took = start.elapsed();
            assert_eq!(e.kind, Failure::Timeout, "{e:?}");
            $crate::testkit::assert_names(&e.message, &["host", "port"]);
            assert!(took >= Duration::from_millis(600), "{took:?}");
            assert!(took < Duration::from_millis(1500), "{took:?}");
        }
    };
}
