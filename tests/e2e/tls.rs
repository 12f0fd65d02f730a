//! HTTPS on the server (issue 16): `--tls-cert`/`--tls-key` with certificates made at test
//! time, plain HTTP refused on the TLS port, off-loopback plain HTTP refused at start-up unless
//! `--insecure-http`, a bounded handshake, and the certificate reloaded on SIGHUP.
//!
//! Only loopback is ever contacted: `0.0.0.0` appears only in start-up refusals, which exit
//! before they listen.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use broked_tests::env::{PgCluster, TestCa};
use broked_tests::{Server, free_port, server_output};
use serde_json::json;

/// Writes a certificate from `ca` for loopback to `DIR/server.crt` and `DIR/server.key` (0600).
fn write_server_files(ca: &TestCa, dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
    write_pair(dir, &cert, &key)
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let (cert_path, key_path) = (dir.join("server.crt"), dir.join("server.key"));
    // Written beside and renamed, as a deployment tool would: the server never reads half.
    let tmp = dir.join("server.tmp");
    std::fs::write(&tmp, cert).unwrap();
    std::fs::rename(&tmp, &cert_path).unwrap();
    std::fs::write(&tmp, key).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, &key_path).unwrap();
    (cert_path, key_path)
}

/// A client that trusts `ca_pem` and nothing else, HTTPS only.
fn https_client(ca_pem: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .https_only(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `broked-server` over HTTPS with the files `cert` and `key`; `client` must trust them.
fn start_tls(dir: &Path, cert: &Path, key: &Path, ca_pem: &str, args: &[&str]) -> Server {
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut all = vec!["--tls-cert", cert, "--tls-key", key];
    all.extend_from_slice(args);
    Server::start_with_client(dir, &all, &[], "https", https_client(ca_pem))
}

/// Whether a fresh client trusting only `ca_pem` completes `GET /healthz` on `port`.
fn healthz_with(ca_pem: &str, port: u16) -> Result<u16, String> {
    https_client(ca_pem)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn a_client_that_verifies_the_generated_ca_uses_the_api_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("broked e2e CA");
    let (cert, key) = write_server_files(&ca, dir.path());
    let mut server = start_tls(dir.path(), &cert, &key, &ca.pem(), &["--probe-disabled"]);
    assert!(server.base.starts_with("https://"));

    let body = json!({
        "conn_id": "over-tls",
        "type": "postgres",
        "host": "db.example.com",
        "login": "etl",
        "password": "Tls-Pw-5d2a",
    })
    .to_string();
    let r = server.post("/api/connections", &body);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["password"], "********");
    let r = server.get("/api/connections/over-tls");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["host"], "db.example.com");
    assert!(
        server
            .log_text()
            .contains("listening on https://127.0.0.1:"),
        "{}",
        server.log_text()
    );

    // The client really verifies: one that trusts another CA is refused by its own check.
    let other = TestCa::new("another CA");
    let e = healthz_with(&other.pem(), server.port).expect_err("a client trusting another CA");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // And the name: a certificate of the same CA for another host does not pass either.
    let (cert_other, key_other) = ca.issue(&["db.example.com"]);
    let dir2 = tempfile::tempdir().unwrap();
    let (c2, k2) = write_pair(dir2.path(), &cert_other, &key_other);
    let wrong_name = start_tls_expecting_failure(dir2.path(), &c2, &k2, &ca.pem());
    assert!(
        wrong_name.to_lowercase().contains("certificate"),
        "{wrong_name}"
    );

    // Graceful shutdown works with TLS connections open.
    assert!(server.stop(), "SIGTERM: clean exit\n{}", server.log_text());
    let log = server.log_text();
    assert!(!log.contains("Tls-Pw-5d2a"), "{log}");
    assert!(!log.contains("readable by every user"), "{log}");

    // A key file every user can read: served, with a warning.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = start_tls(dir.path(), &cert, &key, &ca.pem(), &["--probe-disabled"]);
    assert!(
        server.log_text().contains("readable by every user"),
        "{}",
        server.log_text()
    );
    assert_eq!(server.get("/api/connections/over-tls").status, 200);
}

/// Starts a TLS server whose certificate the client should reject; returns the client's
/// error for `/healthz` (the server itself is up, checked over plain TCP).
fn start_tls_expecting_failure(dir: &Path, cert: &Path, key: &Path, ca_pem: &str) -> String {
    let port = free_port();
    let mut child = std::process::Command::new(broked_tests::bin("broked-server"))
        .arg("--db")
        .arg(dir.join("broked.db"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .env_remove("BROKED_API_TOKEN")
        .env_remove("BROKED_DB")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server not listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The CA is right, the name is not.
    let result = https_client(ca_pem)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send();
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(r) => panic!("a certificate for db.example.com passed for 127.0.0.1: {r:?}"),
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn plain_http_to_the_tls_port_is_refused_and_reaches_no_handler() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("broked e2e CA");
    let (cert, key) = write_server_files(&ca, dir.path());
    let server = start_tls(dir.path(), &cert, &key, &ca.pem(), &["--probe-disabled"]);

    // A plain-HTTP client: a 400 in plain text, and the request is not routed (nothing
    // created).
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let body = json!({"conn_id": "in-clear", "type": "generic", "host": "h", "port": 1});
    let r = plain
        .post(format!("http://127.0.0.1:{}/api/connections", server.port))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .expect("a plain-HTTP client gets an answer, not a hang");
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().unwrap();
    assert!(text.contains("HTTPS only"), "{text}");
    let r = server.get("/api/connections");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json,
        json!([]),
        "the plain-HTTP request created something"
    );

    // The same through a raw socket: no HTTP answer from the application, only the refusal.
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert!(!answer.contains("\r\n\r\nok"), "{answer:?}");

    // The server still serves HTTPS afterwards.
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn a_handshake_that_never_finishes_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("broked e2e CA");
    let (cert, key) = write_server_files(&ca, dir.path());
    let server = start_tls(dir.path(), &cert, &key, &ca.pem(), &["--probe-disabled"]);

    // One client says nothing; one starts a TLS record and stops.
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let mut half = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    for s in [&silent, &half] {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    // Others are served meanwhile.
    assert_eq!(server.get("/healthz").status, 200);

    // The server's handshake limit is 10 s (bins/broked-server/src/tls.rs).
    let limit = Duration::from_secs(20);
    let t = Instant::now();
    let (mut silent_closed, mut half_closed) = (None, None);
    while t.elapsed() < limit && (silent_closed.is_none() || half_closed.is_none()) {
        if silent_closed.is_none() && is_closed(&mut silent) {
            silent_closed = Some(t.elapsed());
        }
        if half_closed.is_none() && is_closed(&mut half) {
            half_closed = Some(t.elapsed());
        }
    }
    assert!(
        silent_closed.is_some() && half_closed.is_some(),
        "after {limit:?} the server still holds a silent connection ({silent_closed:?}) or a \
         half-sent ClientHello ({half_closed:?}): the handshake is not bounded"
    );
    assert_eq!(server.get("/healthz").status, 200);
}

#[test]
fn shutdown_does_not_wait_for_a_stalled_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("broked e2e CA");
    let (cert, key) = write_server_files(&ca, dir.path());
    let mut server = start_tls(dir.path(), &cert, &key, &ca.pem(), &["--probe-disabled"]);
    let mut half = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    half.write_all(&[0x16, 0x03, 0x01]).unwrap();
    // The server has accepted it (a request after it is answered).
    assert_eq!(server.get("/healthz").status, 200);
    let t = Instant::now();
    assert!(server.stop(), "SIGTERM: clean exit\n{}", server.log_text());
    // Well under the 10 s handshake limit: the half-open handshake is dropped at once.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        !server.log_text().contains("still running"),
        "{}",
        server.log_text()
    );
}

/// Whether the peer closed (or reset) the connection; waits up to the read timeout.
fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

#[test]
fn off_loopback_plain_http_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("0.0.0.0:{}", free_port());
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = server_output(dir.path(), args, envs);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // With a token but without TLS: refused, naming both ways out.
    let (code, err) = run(
        &["--listen", &listen],
        &[("BROKED_API_TOKEN", "t0ken-e2e-tls")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refusing to serve plain HTTP"), "{err}");
    assert!(
        err.contains("--tls-cert") && err.contains("--insecure-http"),
        "{err}"
    );
    assert!(!err.contains("t0ken-e2e-tls"), "{err}");
    // Nothing was created: it refused before opening the database.
    assert!(!dir.path().join("broked.db").exists());

    // --insecure-http does not lift the token rule, which is kept as it was.
    let (code, err) = run(&["--listen", &listen, "--insecure-http"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("without an API token"), "{err}");

    // Neither does TLS.
    let ca = TestCa::new("broked e2e CA");
    let (cert, key) = write_server_files(&ca, dir.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let (code, err) = run(
        &["--listen", &listen, "--tls-cert", cert, "--tls-key", key],
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("without an API token"), "{err}");

    // The flags go together, and TLS with --insecure-http is a contradiction: usage errors.
    let loopback = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["--listen", &loopback, "--tls-cert", cert],
        vec!["--listen", &loopback, "--tls-key", key],
        vec![
            "--listen",
            &loopback,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--insecure-http",
        ],
    ] {
        let (code, err) = run(&args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {err}");
    }
}

#[test]
fn bad_certificate_or_key_files_stop_the_start_up_without_showing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let ca = TestCa::new("broked e2e CA");
    let (cert_pem, _) = ca.issue(&["localhost"]);
    let (_, other_key_pem) = ca.issue(&["localhost"]);
    let cert = dir.path().join("a.crt");
    std::fs::write(&cert, &cert_pem).unwrap();
    let (cert, dir_s) = (cert.to_str().unwrap(), dir.path());

    // A key that is not the certificate's.
    let wrong_key = dir_s.join("wrong.key");
    std::fs::write(&wrong_key, &other_key_pem).unwrap();
    // A key file that is not valid PEM, with a marker that must not be echoed.
    let garbage_key = dir_s.join("garbage.key");
    std::fs::write(
        &garbage_key,
        "-----BEGIN PRIVATE KEY-----\nKeyMaterial-Marker-93c1!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir_s.join("missing.key");
    let not_a_cert = dir_s.join("not-a-cert.crt");
    std::fs::write(&not_a_cert, "hello\n").unwrap();

    let cases: [(&Path, &Path, &str); 4] = [
        (Path::new(cert), &wrong_key, "does not fit the certificate"),
        (Path::new(cert), &garbage_key, "no private key in"),
        (Path::new(cert), &missing, "cannot read the TLS key"),
        (&not_a_cert, &wrong_key, "no certificate"),
    ];
    for (cert, key, expected) in cases {
        let out = server_output(
            dir_s,
            &[
                "--listen",
                &listen,
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expected), "expected {expected:?}: {err}");
        assert!(!err.contains("KeyMaterial-Marker"), "{err}");
        assert!(
            !err.contains(other_key_pem.lines().nth(1).unwrap()),
            "{err}"
        );
    }
}

#[test]
fn insecure_http_warns_at_start_up_and_on_healthz() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback: the flag's warning is the same wherever the server listens, and tests send
    // traffic to loopback only.
    let server = Server::start(dir.path(), &["--insecure-http", "--probe-disabled"]);
    let r = server.request("GET", "/healthz").send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "load balancers keep their check");
    let warning = r
        .headers()
        .get("broked-warning")
        .expect("a Broked-Warning header on /healthz")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(warning.contains("insecure-http"), "{warning}");
    assert_eq!(r.text().unwrap(), "ok");
    let log = server.log_text();
    assert!(
        log.contains("WARN") && log.contains("--insecure-http"),
        "{log}"
    );

    // Without the flag there is no warning.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--probe-disabled"]);
    let r = server.request("GET", "/healthz").send().unwrap();
    assert!(r.headers().get("broked-warning").is_none());
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new("broked e2e CA (old)");
    let new_ca = TestCa::new("broked e2e CA (new)");
    let (cert, key) = write_server_files(&old_ca, dir.path());
    let server = start_tls(
        dir.path(),
        &cert,
        &key,
        &old_ca.pem(),
        &["--probe-disabled"],
    );
    let pid = nix::unistd::Pid::from_raw(server.pid().unwrap() as i32);
    let hup = || nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();

    assert_eq!(healthz_with(&old_ca.pem(), server.port), Ok(200));
    assert!(healthz_with(&new_ca.pem(), server.port).is_err());

    // A new certificate from another CA, then SIGHUP: a client that trusts only the new CA
    // gets through, one that trusts only the old does not.
    write_server_files(&new_ca, dir.path());
    hup();
    wait_for(&server, || {
        healthz_with(&new_ca.pem(), server.port) == Ok(200)
    });
    assert!(healthz_with(&old_ca.pem(), server.port).is_err());
    assert!(server.log_text().contains("TLS certificate reloaded"));

    // A broken certificate file: an error in the log, the current certificate kept, the
    // server alive.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hup();
    wait_for(&server, || server.log_text().contains("TLS reload failed"));
    assert_eq!(healthz_with(&new_ca.pem(), server.port), Ok(200));
    // A key that does not fit: the same.
    let (fresh_cert, _) = new_ca.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(&cert, fresh_cert).unwrap();
    let (_, unrelated_key) = new_ca.issue(&["localhost"]);
    std::fs::write(&key, &unrelated_key).unwrap();
    hup();
    wait_for(&server, || {
        server.log_text().matches("TLS reload failed").count() == 2
    });
    assert_eq!(healthz_with(&new_ca.pem(), server.port), Ok(200));
    let log = server.log_text();
    assert!(log.contains("does not fit the certificate"), "{log}");
    assert!(
        !log.contains(unrelated_key.lines().nth(1).unwrap()),
        "key in the log"
    );
    assert_eq!(server.get("/healthz").status, 200);
}

/// Polls `ok` for up to 10 s; fails with the server's log.
fn wait_for(server: &Server, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The password of the private PostgreSQL cluster with TLS (`broked_testenv::PgCluster`:
/// `initdb` on a free loopback port, a certificate made by the test, only `hostssl` lines in
/// `pg_hba.conf`, stopped when dropped).
const PG_PASSWORD: &str = PgCluster::PASSWORD;

/// The store's connection to PostgreSQL with `sslmode=verify-full&sslrootcert=CA` in the URL
/// (docs/operations.md): it verifies the CA and the name, through the server and the CLI.
#[test]
fn the_postgres_store_verifies_the_database_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("broked e2e database CA");
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let Some(pg) = PgCluster::start(dir.path(), &cert, &key) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let ca_file = work.path().join("db-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let other_ca_file = work.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, TestCa::new("another CA").pem()).unwrap();
    let key_file = work.path().join("keyring.key");
    let key_s = key_file.to_str().unwrap();
    let verify_full = pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ));

    // The server on the verified connection: create, read; the CLI on the same URL.
    let envs = [
        ("BROKED_DB", verify_full.as_str()),
        ("BROKED_KEY_FILE", key_s),
    ];
    let mut server = Server::start_with_env(work.path(), &["--probe-disabled"], &envs);
    let body = json!({"conn_id": "via-verified-tls", "type": "generic", "host": "127.0.0.1",
        "port": 9, "password": "Stored-Pw-3f8e"});
    let r = server.post("/api/connections", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(server.get("/api/connections/via-verified-tls").status, 200);
    assert!(server.stop(), "{}", server.log_text());
    let out = std::process::Command::new(broked_tests::bin("broked"))
        .args(["connections", "list", "--output", "json"])
        .envs(envs)
        .current_dir(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("via-verified-tls"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let refused = |url: &str| {
        let out = server_output(
            work.path(),
            &["--probe-disabled"],
            &[("BROKED_DB", url), ("BROKED_KEY_FILE", key_s)],
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{url}: {text}");
        assert!(!text.contains(PG_PASSWORD), "the password in: {text}");
        text.to_lowercase()
    };

    // Another CA: refused at start-up.
    let text = refused(&pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other_ca_file.display()
    )));
    assert!(
        text.contains("certificate") || text.contains("tls"),
        "{text}"
    );
    // Without TLS: the cluster itself refuses (hostssl only), so the connections above were
    // encrypted.
    let text = refused(&pg.url("sslmode=disable"));
    assert!(
        text.contains("no pg_hba.conf entry") || text.contains("no encryption"),
        "{text}"
    );

    // The right CA, another name: refused. A renewed certificate for the right name from
    // the same CA: accepted again (so the refusal was the name).
    let (cert, key) = ca.issue(&["db.example.com"]);
    pg.replace_certificate(&cert, &key);
    let text = refused(&verify_full);
    assert!(text.contains("not valid for name"), "{text}");
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    pg.replace_certificate(&cert, &key);
    let server = Server::start_with_env(work.path(), &["--probe-disabled"], &envs);
    assert_eq!(server.get("/api/connections/via-verified-tls").status, 200);
    assert!(!server.log_text().contains(PG_PASSWORD));
}
