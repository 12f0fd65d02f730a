//! SSH tunnels through the library (issue 21): the suite's sshd as the bastion in front of the
//! suite's PostgreSQL and MariaDB; a test's own sshd for restarts and second hops. Rules on
//! write (references, cycles, pins, kept passwords), delete of a bastion in use, tests and
//! `open_tunnel` through the tunnel with sqlx (and psql when installed).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use broked_connections::{
    ConnectionInput, ConnectionUpdate, Connections, Error, ErrorKind, Failure, Options,
    SecretUpdate, UpdateMode,
};
use broked_testenv::{Service, free_port};
use sqlx::Connection as _;

#[path = "../../../broked-tunnel/tests/it/sshd.rs"]
mod sshd;

use super::Db;

const BASTION_EXTRA_VALUE: &str = "Bastion-Xtra-8812";

fn bastion_input(svc: &Service, id: &str, host_key: Option<&str>) -> ConnectionInput {
    let mut extra = serde_json::json!({"note": BASTION_EXTRA_VALUE});
    if let Some(k) = host_key {
        extra["host_key"] = k.into();
    }
    ConnectionInput {
        conn_id: Some(id.into()),
        conn_type: Some("sftp".into()),
        host: Some(svc.get("HOST").into()),
        port: Some(svc.port().into()),
        login: Some(svc.get("USER").into()),
        password: Some(svc.get("PASSWORD").into()),
        extra: Some(extra.to_string().into()),
        ..Default::default()
    }
}

/// The suite's sshd as the bastion `id`, its host key pinned.
fn pinned(ssh: &Service, id: &str) -> ConnectionInput {
    bastion_input(ssh, id, Some(ssh.get("HOST_KEY")))
}

/// The suite's sshd as the bastion `id` behind the bastion `tunnel`: its extra is the pin and
/// the tunnel.
fn bastion_behind(ssh: &Service, id: &str, tunnel: &str) -> ConnectionInput {
    let extra = serde_json::json!({"host_key": ssh.get("HOST_KEY"), "ssh_tunnel": tunnel});
    ConnectionInput {
        extra: Some(extra.to_string().into()),
        ..pinned(ssh, id)
    }
}

/// A fresh library holding the bastion `id` ([`pinned`]).
fn with_bastion(ssh: &Service, id: &str) -> (Db, Connections) {
    let db = Db::new();
    let c = db.open();
    c.create(pinned(ssh, id)).unwrap();
    (db, c)
}

/// A fresh library holding the bastion `bastion` and the suite's PostgreSQL (`pg`) and
/// MariaDB (`my`) through it.
fn databases_through_a_bastion(ssh: &Service, pg: &Service, my: &Service) -> (Db, Connections) {
    let (db, c) = with_bastion(ssh, "bastion");
    c.create(pg_input(pg, "pg", "bastion".into())).unwrap();
    c.create(db_input(my, "my", "mysql", my.port(), "bastion".into()))
        .unwrap();
    (db, c)
}

/// The suite's PostgreSQL as `id`, through `tunnel` (the value of extra `ssh_tunnel`).
fn pg_input(pg: &Service, id: &str, tunnel: serde_json::Value) -> ConnectionInput {
    db_input(pg, id, "postgres", pg.port(), tunnel)
}

fn db_input(
    svc: &Service,
    id: &str,
    conn_type: &str,
    port: u16,
    tunnel: serde_json::Value,
) -> ConnectionInput {
    let mut extra = serde_json::json!({ "ssh_tunnel": tunnel });
    if conn_type == "postgres" {
        extra["sslmode"] = "disable".into();
    }
    ConnectionInput {
        conn_id: Some(id.into()),
        conn_type: Some(conn_type.into()),
        host: Some(svc.get("HOST").into()),
        port: Some(port.into()),
        schema: Some(svc.get("DB").into()),
        login: Some(svc.get("USER").into()),
        password: Some(svc.get("PASSWORD").into()),
        extra: Some(extra.to_string().into()),
        ..Default::default()
    }
}

/// The services, or `None` (skipped, unless services are required).
fn services() -> Option<(Service, Service, Service)> {
    Some((
        broked_testenv::sftp()?,
        broked_testenv::postgres()?,
        broked_testenv::mysql()?,
    ))
}

/// No secret of any connection in `text`.
fn clean(text: &str, secrets: &[&Service]) {
    for s in secrets {
        assert!(
            !text.contains(s.get("PASSWORD")),
            "a password leaked: {text}"
        );
    }
    assert!(
        !text.contains(BASTION_EXTRA_VALUE),
        "an extra leaked: {text}"
    );
}

#[tokio::test]
async fn tests_of_postgres_and_mysql_go_through_the_bastion() {
    let Some((ssh, pg, my)) = services() else {
        return;
    };
    let (_db, c) = databases_through_a_bastion(&ssh, &pg, &my);
    for id in ["pg", "my"] {
        let o = c.test(id).await.unwrap();
        assert!(o.success, "{id}: {o:?}");
        assert!(
            o.detail.contains("through the SSH tunnel via \"bastion\""),
            "{id}: {o:?}"
        );
        clean(&format!("{o:?}"), &[&ssh, &pg, &my]);
    }

    // Through the bastion for real: with the bastion's password wrong, the test fails at the
    // bastion (driver ssh2, class auth), naming it, while the database itself is fine.
    c.update(
        "bastion",
        ConnectionUpdate {
            password: SecretUpdate::Set("wrong-Bastion-Pw-51".into()),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    let o = c.test("pg").await.unwrap();
    assert_eq!(
        (o.success, o.failure, o.driver),
        (false, Some(Failure::Auth), "ssh2"),
        "{o:?}"
    );
    assert!(
        o.message.contains("hop 1 of 1 (bastion \"bastion\"")
            && o.message.contains("rejected the password"),
        "{o:?}"
    );
    assert!(!o.message.contains("wrong-Bastion-Pw-51"), "{o:?}");
    clean(&format!("{o:?}"), &[&ssh, &pg, &my]);
}

/// A minimal HTTP server on loopback: answers every request `204 No Content`.
fn http_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut s = s;
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            });
        }
    });
    port
}

#[tokio::test]
async fn http_generic_and_sftp_tests_go_through_the_bastion() {
    let Some((ssh, pg, _)) = services() else {
        return;
    };
    let (_db, c) = with_bastion(&ssh, "bastion");
    let http = http_server();
    c.create(ConnectionInput {
        conn_id: Some("api".into()),
        conn_type: Some("http".into()),
        host: Some("127.0.0.1".into()),
        port: Some(http.into()),
        login: Some("bot".into()),
        password: Some("api-Pw-2291".into()),
        extra: Some(r#"{"ssh_tunnel":"bastion","path":"/health"}"#.into()),
        ..Default::default()
    })
    .unwrap();
    c.create(ConnectionInput {
        conn_id: Some("tcp".into()),
        conn_type: Some("generic".into()),
        host: Some(pg.get("HOST").into()),
        port: Some(pg.port().into()),
        extra: Some(r#"{"ssh_tunnel":["bastion"]}"#.into()),
        ..Default::default()
    })
    .unwrap();
    // An SFTP server reached through a bastion (here the same server: the pin still holds).
    let mut files = bastion_behind(&ssh, "files", "bastion");
    files.schema = Some(ssh.get("PATH").into());
    c.create(files).unwrap();
    for (id, driver) in [("api", "reqwest"), ("tcp", "tcp"), ("files", "ssh2")] {
        let o = c.test(id).await.unwrap();
        assert!(o.success, "{id}: {o:?}");
        assert_eq!(o.driver, driver);
        assert!(o.detail.contains("through the SSH tunnel"), "{id}: {o:?}");
        clean(&format!("{o:?}"), &[&ssh, &pg]);
        assert!(!format!("{o:?}").contains("api-Pw-2291"));
    }
    // Nothing listens behind the bastion any more: the generic test fails there.
    let closed = free_port();
    c.update(
        "tcp",
        ConnectionUpdate {
            port: Some(Some(closed.into())),
            extra: SecretUpdate::Set(r#"{"ssh_tunnel":"bastion"}"#.into()),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    let o = c.test("tcp").await.unwrap();
    assert_eq!(
        (o.failure, o.driver),
        (Some(Failure::Refused), "ssh2"),
        "{o:?}"
    );
}

#[tokio::test]
async fn tunnel_failures_are_distinct_and_name_the_hop() {
    let Some((ssh, pg, _)) = services() else {
        return;
    };
    let (_db, c) = with_bastion(&ssh, "jump");

    // The target port closed behind the bastion.
    let closed = free_port();
    c.create(db_input(&pg, "closed", "postgres", closed, "jump".into()))
        .unwrap();
    let o = c.test("closed").await.unwrap();
    assert_eq!(
        (o.failure, o.driver),
        (Some(Failure::Refused), "ssh2"),
        "{o:?}"
    );
    assert!(
        o.message.contains("bastion \"jump\"")
            && o.message.contains(&format!(
                "the bastion could not connect to 127.0.0.1:{closed}"
            )),
        "{o:?}"
    );

    // A changed host key (the bastion's pin no longer matches).
    c.update(
        "jump",
        ConnectionUpdate {
            extra: SecretUpdate::Set(
                r#"{"host_key":"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}"#.into(),
            ),
            password: SecretUpdate::Set(ssh.get("PASSWORD").into()),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    c.create(pg_input(&pg, "pg", "jump".into())).unwrap();
    let o = c.test("pg").await.unwrap();
    assert_eq!(o.failure, Some(Failure::Tls), "{o:?}");
    assert!(o.message.contains("host key mismatch"), "{o:?}");
    assert!(o.message.contains("bastion \"jump\""), "{o:?}");

    // A host key removed after the reference was made: refused at the handshake.
    c.update(
        "jump",
        ConnectionUpdate {
            extra: SecretUpdate::Clear,
            password: SecretUpdate::Set(ssh.get("PASSWORD").into()),
            ..Default::default()
        },
        UpdateMode::Merge,
    )
    .unwrap();
    let o = c.test("pg").await.unwrap();
    assert_eq!(o.failure, Some(Failure::Tls), "{o:?}");
    assert!(o.message.contains("host key not pinned"), "{o:?}");
    for text in [&o.message, &o.detail] {
        clean(text, &[&ssh, &pg]);
    }
}

#[tokio::test]
async fn a_denied_target_is_refused_before_any_connection() {
    let Some((ssh, _, _)) = services() else {
        return;
    };
    // The "bastion" is a listener that records whether anyone came.
    let watch = TcpListener::bind("127.0.0.1:0").unwrap();
    watch.set_nonblocking(true).unwrap();
    let db = Db::new();
    let mut options = Options::default();
    options.probe_deny = vec!["db.internal".into(), "10.0.0.0/8".into()];
    let c = Connections::open_with(&db.path, options).unwrap();
    let mut b = pinned(&ssh, "watch");
    b.port = Some(watch.local_addr().unwrap().port().into());
    c.create(b).unwrap();
    for (id, host) in [("a", "db.internal"), ("b", "10.1.2.3")] {
        let input = ConnectionInput {
            conn_id: Some(id.into()),
            conn_type: Some("generic".into()),
            host: Some(host.into()),
            port: Some(5432),
            extra: Some(r#"{"ssh_tunnel":"watch"}"#.into()),
            ..Default::default()
        };
        c.create(input).unwrap();
        let o = c.test(id).await.unwrap();
        assert_eq!(o.failure, Some(Failure::Blocked), "{o:?}");
    }
    assert!(
        watch.accept().is_err(),
        "the bastion was contacted for a denied target"
    );
}

#[test]
fn references_are_checked_on_write() {
    let Some((ssh, pg, _)) = services() else {
        return;
    };
    let db = Db::new();
    let c = db.open();
    let refused = |r: Result<_, Error>, needle: &str| {
        let e = r.expect_err(needle);
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
        clean(&e.to_string(), &[&ssh, &pg]);
    };
    refused(
        c.create(pg_input(&pg, "pg", "nowhere".into())),
        "names \"nowhere\", which does not exist",
    );
    c.create(bastion_input(&ssh, "unpinned", None)).unwrap();
    refused(
        c.create(pg_input(&pg, "pg", "unpinned".into())),
        "whose host key is not pinned",
    );
    c.create(pg_input(&pg, "direct", serde_json::Value::Null))
        .unwrap();
    refused(
        c.create(pg_input(&pg, "pg", "direct".into())),
        "a bastion must be an sftp connection",
    );
    refused(
        c.create(pg_input(&pg, "pg", serde_json::json!([]))),
        "must be the conn_id of an sftp connection",
    );
    // Cycles: a bastion through itself, and two bastions through each other.
    c.create(pinned(&ssh, "b1")).unwrap();
    let b2 = bastion_behind(&ssh, "b2", "b1");
    c.create(b2).unwrap();
    let cycle = ConnectionUpdate {
        extra: SecretUpdate::Set(
            serde_json::json!({"host_key": ssh.get("HOST_KEY"), "ssh_tunnel": "b2"})
                .to_string()
                .into(),
        ),
        password: SecretUpdate::Set(ssh.get("PASSWORD").into()),
        ..Default::default()
    };
    refused(c.update("b1", cycle, UpdateMode::Merge), "a cycle");
    let own = bastion_behind(&ssh, "selfish", "selfish");
    refused(c.create(own), "a cycle");
    let sqlite = ConnectionInput {
        conn_id: Some("file".into()),
        conn_type: Some("sqlite".into()),
        host: Some("/tmp/x.db".into()),
        extra: Some(r#"{"ssh_tunnel":"b1"}"#.into()),
        ..Default::default()
    };
    refused(c.create(sqlite), "sqlite");

    // A chain through b2 (itself behind b1) is fine.
    c.create(pg_input(&pg, "pg", "b2".into())).unwrap();
    // Another bastion while the password is kept: refused like a change of host.
    let moved = ConnectionUpdate {
        extra: SecretUpdate::Set(r#"{"sslmode":"disable","ssh_tunnel":"b1"}"#.into()),
        ..Default::default()
    };
    let e = c
        .update("pg", moved.clone(), UpdateMode::Merge)
        .unwrap_err();
    assert!(
        e.to_string().contains("password") && e.to_string().contains("ssh_tunnel"),
        "{e}"
    );
    let with_password = ConnectionUpdate {
        password: SecretUpdate::Set(pg.get("PASSWORD").into()),
        ..moved
    };
    c.update("pg", with_password, UpdateMode::Merge).unwrap();
    // Removing the tunnel while the password is kept: refused too.
    let direct = ConnectionUpdate {
        extra: SecretUpdate::Set(r#"{"sslmode":"disable"}"#.into()),
        ..Default::default()
    };
    let e = c.update("pg", direct, UpdateMode::Merge).unwrap_err();
    assert!(e.to_string().contains("ssh_tunnel"), "{e}");
}

#[test]
fn a_bastion_in_use_is_deleted_only_with_force() {
    let Some((ssh, pg, _)) = services() else {
        return;
    };
    let (_db, c) = with_bastion(&ssh, "jump");
    c.create(pg_input(&pg, "pg-b", "jump".into())).unwrap();
    c.create(pg_input(&pg, "pg-a", serde_json::json!(["jump"])))
        .unwrap();
    assert_eq!(c.tunneled_through("jump").unwrap(), ["pg-a", "pg-b"]);
    let e = c.delete("jump", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InUse);
    assert!(
        matches!(&e, Error::BastionInUse { connections, .. } if connections == &["pg-a", "pg-b"]),
        "{e}"
    );
    assert!(e.to_string().contains("SSH bastion of pg-a, pg-b"), "{e}");
    assert!(c.get("jump").is_ok());
    c.delete("jump", true).unwrap();
    assert!(c.get("jump").is_err());
}

#[tokio::test]
async fn open_tunnel_gives_a_local_uri_that_sqlx_and_psql_use() {
    let Some((ssh, pg, my)) = services() else {
        return;
    };
    let (_db, c) = databases_through_a_bastion(&ssh, &pg, &my);

    let guard = c.open_tunnel("pg").unwrap();
    let local = guard.local_addr().unwrap();
    assert!(local.ip().is_loopback());
    assert_eq!(guard.bastions(), ["bastion"]);
    let uri = guard.uri().expose().to_owned();
    assert!(
        uri.starts_with(&format!("postgres://{}:", pg.get("USER")))
            && uri.contains(&format!("@127.0.0.1:{}/", local.port()))
            && !uri.contains("ssh_tunnel"),
        "{}",
        guard.connection().to_masked_uri()
    );
    clean(&format!("{guard:?}"), &[&ssh, &pg]);
    let mut conn = sqlx::PgConnection::connect(&uri).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    conn.close().await.unwrap();

    // Shared: a second guard for the same connection uses the same tunnel.
    let again = c.open_tunnel("pg").unwrap();
    assert_eq!(again.local_addr(), Some(local));

    // psql, when installed, with the password from the environment (not argv).
    if std::path::Path::new("/usr/bin/psql").exists() {
        let out = std::process::Command::new("/usr/bin/psql")
            .arg(format!(
                "postgresql://{}@127.0.0.1:{}/{}?sslmode=disable",
                pg.get("USER"),
                local.port(),
                pg.get("DB")
            ))
            .args(["-tAc", "SELECT 40 + 2"])
            .env("PGPASSWORD", pg.get("PASSWORD"))
            .env_remove("PGSERVICEFILE")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "42",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("psql is not installed: only sqlx was checked");
    }
    drop(guard);
    assert!(
        std::net::TcpStream::connect(local).is_ok(),
        "the tunnel lives while a guard does"
    );
    drop(again);
    assert!(
        std::net::TcpStream::connect(local).is_err(),
        "the last guard closes the tunnel"
    );

    // Opened at once from several threads: one tunnel for all.
    let guards: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| c.open_tunnel("pg").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ports: std::collections::BTreeSet<_> = guards.iter().map(|g| g.local_addr()).collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
    drop(guards);

    let guard = c.open_tunnel("my").unwrap();
    let mut conn = sqlx::MySqlConnection::connect(guard.uri().expose())
        .await
        .unwrap();
    let one: i64 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);

    // A connection without a tunnel: its own URI, nothing opened.
    c.create(pg_input(&pg, "direct", serde_json::Value::Null))
        .unwrap();
    let direct = c.open_tunnel("direct").unwrap();
    assert_eq!(direct.local_addr(), None);
    assert_eq!(
        direct.uri().expose(),
        c.resolve("direct").unwrap().uri.expose()
    );
}

#[tokio::test]
async fn a_chain_of_two_hops_and_a_bastion_restart() {
    let Some((ssh, pg, _)) = services() else {
        return;
    };
    let Some(mut own) = sshd::OwnSshd::start(ssh.get("USER")) else {
        return;
    };
    let (_db, c) = with_bastion(&ssh, "jump-1");
    let mut second = bastion_input(&ssh, "jump-2", Some(&own.host_key()));
    second.port = Some(own.port.into());
    c.create(second).unwrap();
    // The chain as a list...
    c.create(pg_input(
        &pg,
        "pg-list",
        serde_json::json!(["jump-1", "jump-2"]),
    ))
    .unwrap();
    let o = c.test("pg-list").await.unwrap();
    assert!(o.success, "{o:?}");
    assert!(o.detail.contains("via \"jump-1\" → \"jump-2\""), "{o:?}");

    // ...and the restart of a bastion while a guard is held (hop 2, the test's own sshd).
    let guard = c.open_tunnel("pg-list").unwrap_or_else(|e| panic!("{e}"));
    let uri = guard.uri().expose().to_owned();
    let query = |uri: String| async move {
        let mut conn = sqlx::PgConnection::connect(&uri).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
        conn.close().await?;
        Ok::<i32, sqlx::Error>(one)
    };
    assert_eq!(query(uri.clone()).await.unwrap(), 1);
    own.restart();
    let start = Instant::now();
    loop {
        match query(uri.clone()).await {
            Ok(1) => break,
            other => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "no reconnect within 5 s: {other:?}; {:?}",
                    guard.health()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(guard.health().is_ok(), "{:?}", guard.health());
    drop(guard);

    // The bastion down: a test fails naming hop 2.
    own.stop();
    let o = c.test("pg-list").await.unwrap();
    assert_eq!(o.failure, Some(Failure::Refused), "{o:?}");
    assert!(
        o.message.contains("hop 2 of 2 (bastion \"jump-2\""),
        "{o:?}"
    );
    clean(&format!("{o:?}"), &[&ssh, &pg]);
}
