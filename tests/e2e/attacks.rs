//! Issue 13, points 6–8, through the real `broked-server`: what an API user (or a page in a
//! browser) tries, and what the server must not do.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use broked_tests::{Server, server_output};
use serde_json::{Value, json};

const PASSWORD: &str = "Attack-Pw-5c9d";
const TOKEN: &str = "Attack-Tok-0b7e";

/// An unsaved test of `conn` (`POST /api/connections/test`): (success, message).
fn test_unsaved(server: &Server, conn: Value) -> (bool, String) {
    let r = server.post("/api/connections/test", &conn.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    (
        r.json["success"].as_bool().unwrap(),
        r.json["message"].as_str().unwrap().to_owned(),
    )
}

fn blocked() -> (bool, String) {
    (false, "blocked by probe policy".to_owned())
}

/// Point 8: every API answer — success, client error, the fallbacks, the body limit, the
/// token check — says `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`.
#[test]
fn api_responses_are_never_cached_or_sniffed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let created = json!({"conn_id": "c1", "type": "generic", "host": "h", "port": 1,
                         "password": PASSWORD});
    let big = "x".repeat(2 * 1024 * 1024);
    let cases: Vec<(&str, String, Option<String>, u16)> = vec![
        (
            "POST",
            "/api/connections".into(),
            Some(created.to_string()),
            201,
        ),
        ("GET", "/api/connections".into(), None, 200),
        ("GET", "/api/connections/c1".into(), None, 200),
        ("GET", "/api/connections/nope".into(), None, 404),
        ("POST", "/api/connections".into(), Some("{".into()), 400),
        (
            "POST",
            "/api/connections".into(),
            Some(json!({"conn_id": "Bad Id"}).to_string()),
            422,
        ),
        ("GET", "/api/connection-types".into(), None, 200),
        ("GET", "/api/openapi.json".into(), None, 200),
        ("GET", "/api/no-such-route".into(), None, 404),
        ("DELETE", "/api/connection-types".into(), None, 405),
        ("POST", "/api/connections/c1/test".into(), None, 200),
        ("DELETE", "/api/connections/c1".into(), None, 204),
        // Last: the server closes the connection after refusing an oversized body.
        ("POST", "/api/connections".into(), Some(big), 413),
    ];
    for (method, path, body, status) in cases {
        let mut req = server.request(method, &path);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().expect("request");
        assert_eq!(resp.status().as_u16(), status, "{method} {path}");
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store", "{method} {path}: {h:?}");
        assert_eq!(
            h["x-content-type-options"], "nosniff",
            "{method} {path}: {h:?}"
        );
        let text = resp.text().unwrap();
        assert!(!text.contains(PASSWORD), "{method} {path}: {text}");
    }

    // Behind a token, the refusal too.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", TOKEN]);
    let resp = server.request("GET", "/api/connections").send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
}

/// Point 6: a panic in a request handler is answered with a generic 500 and logged with its
/// location only — the panic message (here holding a password) reaches neither the client
/// nor the log. Debug builds add `POST /api/debug/panic` when `BROKED_DEBUG_PANIC` is set.
#[test]
fn a_panic_in_a_request_logs_its_location_not_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let panic_text = format!("postgres://etl:{PASSWORD}@db/app");
    let server = Server::start_with_env(
        dir.path(),
        &[],
        &[
            ("BROKED_DEBUG_PANIC", &panic_text),
            ("RUST_BACKTRACE", "full"),
        ],
    );
    let r = server.post("/api/debug/panic", "{}");
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "internal");
    assert!(!r.text.contains(PASSWORD));
    // The server goes on.
    assert_eq!(server.get("/api/connections").status, 200);
    let log = server.log_text();
    assert!(
        !log.contains(PASSWORD),
        "the panic message reached the log:\n{log}"
    );
    assert!(!log.contains("debug panic"), "{log}");
    assert!(
        log.contains("bins/broked-server/src/panic_hook.rs:"),
        "the location is logged:\n{log}"
    );
    // Without the variable there is no such route.
    let dir = tempfile::tempdir().unwrap();
    let plain = Server::start(dir.path(), &[]);
    assert_eq!(plain.post("/api/debug/panic", "{}").status, 404);
}

/// Point 7: with `--probe-file-root DIR` sqlite tests stay inside DIR; the server's database,
/// key file and their side files are never a target, with or without roots.
#[test]
fn sqlite_tests_stay_in_the_file_roots_and_never_open_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("app.db");
    let outside = dir.path().join("other.db");
    for db in [&inside, &outside] {
        let status = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
                 c.execute('CREATE TABLE t (x)'); c.commit()",
            ])
            .arg(db)
            .status()
            .expect("python3");
        assert!(status.success());
    }
    let store = dir.path().join("broked.db");
    let sqlite = |path: &std::path::Path| json!({"conn_id": "lite", "type": "sqlite", "host": path.display().to_string()});
    let store_files = [
        store.clone(),
        dir.path().join("broked.db.key"),
        dir.path().join("broked.db-wal"),
        dir.path().join("broked.db-shm"),
        dir.path()
            .join("..")
            .join(dir.path().file_name().unwrap())
            .join("broked.db"),
    ];

    let server = Server::start(dir.path(), &[]);
    // A write, so that the store's WAL and SHM files exist while the server runs.
    let created = json!({"conn_id": "c1", "type": "generic", "host": "h", "port": 1,
                         "password": PASSWORD});
    assert_eq!(
        server.post("/api/connections", &created.to_string()).status,
        201
    );
    assert!(test_unsaved(&server, sqlite(&inside)).0);
    assert!(test_unsaved(&server, sqlite(&outside)).0);
    for f in &store_files {
        if f.exists() {
            assert_eq!(
                test_unsaved(&server, sqlite(f)),
                blocked(),
                "{}",
                f.display()
            );
        }
    }
    assert_eq!(test_unsaved(&server, sqlite(&store)), blocked());
    assert_eq!(
        test_unsaved(&server, sqlite(&dir.path().join("broked.db.key"))),
        blocked()
    );
    drop(server);

    let root_arg = root.path().display().to_string();
    let server = Server::start(dir.path(), &["--probe-file-root", &root_arg]);
    assert!(test_unsaved(&server, sqlite(&inside)).0);
    assert_eq!(test_unsaved(&server, sqlite(&outside)), blocked());
    for f in &store_files {
        assert_eq!(
            test_unsaved(&server, sqlite(f)),
            blocked(),
            "{}",
            f.display()
        );
    }
    // A symbolic link inside the root to a file outside it.
    let link = root.path().join("link.db");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    assert_eq!(test_unsaved(&server, sqlite(&link)), blocked());
    drop(server);

    // A root that is not a directory stops the server at start-up, naming it.
    let missing = dir.path().join("no-such-dir").display().to_string();
    let out = server_output(
        dir.path(),
        &[
            "--db",
            &store.display().to_string(),
            "--listen",
            "127.0.0.1:0",
            "--probe-file-root",
            &missing,
        ],
        &[],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-dir"), "{stderr}");
}

/// Point 7: the cloud metadata addresses `fd00:ec2::23` and `fd20:ce::254` are denied by
/// default, and a deny entry written as IPv4-mapped IPv6 (`::ffff:10.0.0.0/104`) means the
/// IPv4 network — it used to underflow (a panic in debug builds, every IPv4 address denied
/// in release builds).
#[test]
fn metadata_addresses_and_ipv4_mapped_deny_entries() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--probe-deny",
            "::ffff:10.0.0.0/104",
            "--probe-timeout",
            "3",
        ],
    );
    let tcp = |host: &str, port: u16| json!({"conn_id": "t", "type": "generic", "host": host, "port": port});
    let (ok, message) = test_unsaved(&server, tcp("127.0.0.1", port));
    assert!(ok, "loopback is not in 10.0.0.0/8: {message}");
    for host in ["10.1.2.3", "::ffff:10.9.9.9", "167772161"] {
        assert_eq!(test_unsaved(&server, tcp(host, 9)), blocked(), "{host}");
    }
    for host in ["fd00:ec2::23", "fd20:ce::254", "fd00:ec2::254"] {
        assert_eq!(test_unsaved(&server, tcp(host, 80)), blocked(), "{host}");
        let http = json!({"conn_id": "h", "type": "http", "host": format!("http://[{host}]")});
        assert_eq!(test_unsaved(&server, http), blocked(), "http {host}");
    }
}

/// A one-thread HTTP responder on 127.0.0.1: answers with `answer(path)` (status and extra
/// header lines) and keeps every request head it saw.
fn responder(
    answer: impl Fn(&str) -> (u16, String) + Send + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
            seen2.lock().unwrap().push(head);
            let (status, headers) = answer(&path);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n{headers}\r\n"
            );
        }
    });
    (port, seen)
}

/// Point 7: the custom headers (extra `headers`) and basic auth of an http connection go to
/// its own origin only; a redirect to another origin gets neither.
#[test]
fn http_credentials_are_not_sent_across_origins_on_redirect() {
    let (other_port, other_seen) = responder(|_| (200, String::new()));
    let (port, seen) = responder(move |path| match path {
        "/start" => (
            302,
            format!("location: http://127.0.0.1:{other_port}/collect\r\n"),
        ),
        _ => (200, String::new()),
    });
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let conn = json!({
        "conn_id": "api", "type": "http", "host": "127.0.0.1", "port": port,
        "login": "bot", "password": PASSWORD,
        "extra": json!({"path": "/start", "headers": {"X-Api-Key": TOKEN}}).to_string(),
    });
    assert_eq!(
        server.post("/api/connections", &conn.to_string()).status,
        201
    );
    let r = server.post("/api/connections/api/test", "");
    assert_eq!(r.json["success"], true, "{}", r.text);
    let home = seen.lock().unwrap().join("\n").to_ascii_lowercase();
    assert!(
        home.contains(&format!("x-api-key: {}", TOKEN.to_ascii_lowercase())),
        "{home}"
    );
    assert!(home.contains("authorization: basic"), "{home}");
    let away = other_seen.lock().unwrap().join("\n");
    assert!(
        away.contains("GET /collect "),
        "the redirect was followed: {away}"
    );
    assert!(
        !away.contains(TOKEN),
        "extra header sent across origins:\n{away}"
    );
    assert!(
        !away.to_ascii_lowercase().contains("authorization"),
        "basic auth sent across origins:\n{away}"
    );
}

/// A TLS PostgreSQL stand-in on 127.0.0.1 with a certificate for `names` from a fresh CA:
/// it answers the SSL request, completes TLS, records the server name the client asked for
/// and whether `broked-server` (process `server_pid`) had a probe relay open at that moment,
/// then refuses the login (SQLSTATE 28P01). Returns its port, the CA's PEM and the records.
fn tls_postgres(names: &[&str], server_pid: u32) -> (u16, String, Arc<Mutex<Vec<String>>>) {
    let ca = broked_tests::env::TestCa::new("broked test CA");
    let config = ca.server_config(names);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen2 = seen.clone();
    let relay_prefix = format!("broked-probe-{server_pid}-");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut tcp) = stream else { continue };
            let mut ssl_request = [0u8; 8];
            if tcp.read_exact(&mut ssl_request).is_err()
                || ssl_request != [0, 0, 0, 8, 4, 210, 22, 47]
            {
                continue;
            }
            let _ = tcp.write_all(b"S");
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut len = [0u8; 4];
            if tls.read_exact(&mut len).is_err() {
                continue;
            }
            let name = tls.conn.server_name().unwrap_or("").to_owned();
            let relayed = ["/tmp".into(), std::env::temp_dir()]
                .iter()
                .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
                .any(|e| e.file_name().to_string_lossy().starts_with(&relay_prefix));
            let via = if relayed { "relay" } else { "direct" };
            seen2.lock().unwrap().push(format!("{name} via {via}"));
            let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
            if tls.read_exact(&mut rest).is_err() {
                continue;
            }
            let _ = tls.write_all(&broked_tests::env::pg_password_failed());
            let _ = tls.flush();
        }
    });
    (port, ca.pem(), seen)
}

/// Point 7: a `verify-full` test from the server connects to the address its policy checked
/// (through the probe's relay, no second DNS lookup) and still verifies the certificate
/// against the host name.
#[test]
fn verify_full_tests_connect_to_the_checked_address_and_verify_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--probe-timeout", "5"]);
    let pid = server.pid().unwrap();
    let pg = |port: u16, ca: &str| {
        json!({"conn_id": "tls-pg", "type": "postgres", "host": "localhost", "port": port,
               "login": "etl", "password": PASSWORD,
               "extra": json!({"sslmode": "verify-full", "sslrootcert": ca}).to_string()})
    };
    let (port, ca, seen) = tls_postgres(&["localhost"], pid);
    let (ok, message) = test_unsaved(&server, pg(port, &ca));
    assert!(!ok);
    assert!(
        message.contains("authentication failed"),
        "TLS went through: {message}"
    );
    assert_eq!(*seen.lock().unwrap(), ["localhost via relay"]);

    let (port, ca, _) = tls_postgres(&["db.other.example"], pid);
    let (ok, message) = test_unsaved(&server, pg(port, &ca));
    assert!(!ok);
    // The probe's certificate class (e516e54): the name the certificate does not hold.
    assert!(
        message.contains("is not valid for the name localhost"),
        "the name is still verified: {message}"
    );
    assert!(!server.log_text().contains(PASSWORD));
}
