//! Issue 16, "safe defaults on the secret's path", through the real `broked-server` and
//! `broked`: a test response says whether the session was encrypted and verified (`tls`), in
//! the OpenAPI document too, and an SFTP password is never sent to a host whose key is not
//! pinned — the answer is the fingerprint, and pinning it needs the password again.

use broked_tests::env::{PgCluster, TestCa};
use broked_tests::{Server, broked};
use serde_json::{Value, json};

fn pg_body(s: &broked_tests::env::Service, conn_id: &str, extra: Value) -> Value {
    json!({"conn_id": conn_id, "type": "postgres", "host": s.get("HOST"), "port": s.port(),
        "schema": s.get("DB"), "login": s.get("USER"), "password": s.get("PASSWORD"),
        "extra": extra})
}

#[test]
fn the_test_response_says_whether_tls_was_verified() {
    let Some(pg) = broked_tests::env::postgres() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);

    // sslmode=disable: connected, in clear.
    let body = pg_body(&pg, "pg-plain", json!({"sslmode": "disable"}));
    let r = server.post("/api/connections/test", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], true, "{}", r.text);
    assert_eq!(r.json["tls"], "none", "{}", r.text);

    // The default (prefer) never verifies: encrypted or not, depending on the server.
    let body = pg_body(&pg, "pg-default", json!({}));
    let r = server.post("/api/connections/test", &body.to_string());
    assert_eq!(r.json["success"], true, "{}", r.text);
    assert!(
        r.json["tls"] == "unverified" || r.json["tls"] == "none",
        "{}",
        r.text
    );

    // A failed test, and a type without a session to judge: null, present.
    let mut body = pg_body(&pg, "pg-closed", json!({"sslmode": "disable"}));
    body["port"] = json!(broked_tests::free_port());
    let r = server.post("/api/connections/test", &body.to_string());
    assert_eq!(r.json["success"], false, "{}", r.text);
    assert_eq!(r.json.get("tls"), Some(&Value::Null), "{}", r.text);
    let generic = json!({"conn_id": "tcp", "type": "generic", "host": pg.get("HOST"),
        "port": pg.port()});
    let r = server.post("/api/connections/test", &generic.to_string());
    assert_eq!(r.json["success"], true, "{}", r.text);
    assert_eq!(r.json.get("tls"), Some(&Value::Null), "{}", r.text);

    // The OpenAPI document names the three values.
    let doc = server.get("/api/openapi.json").json;
    let schemas = &doc["components"]["schemas"];
    let tls = &schemas["TestOut"]["properties"]["tls"];
    let text = tls.to_string();
    let values = if text.contains("TlsOut") {
        schemas["TlsOut"]["enum"].clone()
    } else {
        tls["enum"].clone()
    };
    assert_eq!(
        values,
        json!(["verified", "unverified", "none"]),
        "TestOut.tls: {text}"
    );
    assert!(
        !schemas["TestOut"]["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("tls")))
            || text.contains("null"),
        "tls may be null: {text}"
    );

    // The CLI: a saved connection's test says the same, in JSON and in text.
    let body = pg_body(&pg, "pg-plain", json!({"sslmode": "disable"}));
    let r = server.post("/api/connections", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    let r = server.post("/api/connections/pg-plain/test", "");
    assert_eq!(r.json["tls"], "none", "{}", r.text);
    assert!(server.stop(), "{}", server.log_text());
    let db = dir.path().join("broked.db");
    let cli = |args: &[&str]| {
        let out = broked(&db, args, None, &[]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json: Value =
        serde_json::from_str(&cli(&["connections", "test", "pg-plain", "-o", "json"])).unwrap();
    assert_eq!(json["tls"], "none", "{json}");
    let text = cli(&["connections", "test", "pg-plain"]);
    assert!(text.contains(" ms, tls: none)"), "{text}");
    assert!(!text.contains(pg.get("PASSWORD")), "{text}");
}

/// The `SHA256:…` fingerprint in a message.
fn fingerprint_in(message: &str) -> String {
    message
        .split(|c: char| c.is_whitespace() || c == ';' || c == '"')
        .find(|w| w.starts_with("SHA256:") && w.len() > 40)
        .unwrap_or_else(|| panic!("no fingerprint in {message}"))
        .to_owned()
}

#[test]
fn an_unpinned_sftp_host_is_refused_with_its_fingerprint() {
    let Some(sftp) = broked_tests::env::sftp() else {
        return;
    };
    let password = sftp.get("PASSWORD");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let body = json!({"conn_id": "files", "type": "sftp", "host": sftp.get("HOST"),
        "port": sftp.port(), "login": sftp.get("USER"), "password": password,
        "schema": sftp.get("PATH")});

    // Unsaved, no pin: not a success, the fingerprint and how to pin it, nothing secret.
    let r = server.post("/api/connections/test", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], false, "{}", r.text);
    assert_eq!(r.json["tls"], Value::Null, "{}", r.text);
    let message = r.json["message"].as_str().unwrap().to_owned();
    assert!(message.starts_with("host key not pinned: "), "{message}");
    assert!(message.contains("extra.host_key"), "{message}");
    assert!(!r.text.contains(password), "{}", r.text);
    let fp = fingerprint_in(&message);

    // With that fingerprint pinned: success, verified.
    let mut pinned = body.clone();
    pinned["extra"] = json!({ "host_key": fp });
    let r = server.post("/api/connections/test", &pinned.to_string());
    assert_eq!(r.json["success"], true, "{}", r.text);
    assert_eq!(r.json["tls"], "verified", "{}", r.text);

    // Saved without a pin: the saved test answers the same way.
    let r = server.post("/api/connections", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    let r = server.post("/api/connections/files/test", "");
    assert_eq!(r.json["success"], false, "{}", r.text);
    assert_eq!(fingerprint_in(r.json["message"].as_str().unwrap()), fp);

    // Pinning a saved connection is a change of a securing extra key: with the stored
    // password kept it is refused (docs/uri.md, "The target") …
    let keep = json!({"extra": {"host_key": fp}});
    let r = server.call("PATCH", "/api/connections/files", Some(&keep.to_string()));
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("password"), "{}", r.text);
    // … and accepted with the password sent again; then the saved test succeeds, verified.
    let again = json!({"extra": {"host_key": fp}, "password": password});
    let r = server.call("PATCH", "/api/connections/files", Some(&again.to_string()));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = server.post("/api/connections/files/test", "");
    assert_eq!(r.json["success"], true, "{}", r.text);
    assert_eq!(r.json["tls"], "verified", "{}", r.text);
    let log = server.log_text();
    assert!(!log.contains(password), "password in the server log");
}

/// `sslmode=verify-full` with the CA in extra, through the server and the CLI, against a
/// real PostgreSQL with TLS: a private cluster (initdb on a free loopback port, a certificate
/// made here for `localhost`, `hostssl` only), stopped when the test ends — never the shared
/// server.
#[test]
fn verify_full_with_a_ca_in_extra_is_verified_against_a_tls_postgres() {
    let ca_cert = TestCa::new("broked e2e probe CA");
    let (server_cert, server_key) = ca_cert.issue(&["localhost"]);
    let pg_dir = tempfile::tempdir().unwrap();
    let Some(pg) = PgCluster::start(pg_dir.path(), &server_cert, &server_key) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let body = |conn_id: &str, ca_pem: &str| {
        json!({"conn_id": conn_id, "type": "postgres", "host": "localhost", "port": pg.port,
            "schema": "postgres", "login": PgCluster::USER, "password": PgCluster::PASSWORD,
            "extra": {"sslmode": "verify-full", "sslrootcert": ca_pem}})
    };

    let r = server.post(
        "/api/connections/test",
        &body("pg-tls", &ca_cert.pem()).to_string(),
    );
    assert_eq!(r.json["success"], true, "{}", r.text);
    assert_eq!(r.json["tls"], "verified", "{}", r.text);

    // Another CA: no connection, a TLS failure, no password in the answer.
    let other = TestCa::new("another CA");
    let r = server.post(
        "/api/connections/test",
        &body("pg-tls", &other.pem()).to_string(),
    );
    assert_eq!(r.json["success"], false, "{}", r.text);
    assert_eq!(r.json["class"], "certificate", "{}", r.text);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("is not trusted"),
        "{}",
        r.text
    );
    assert!(!r.text.contains(PgCluster::PASSWORD), "{}", r.text);

    // Saved, then tested by the CLI on the same database.
    let r = server.post(
        "/api/connections",
        &body("pg-tls", &ca_cert.pem()).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(server.stop(), "{}", server.log_text());
    let out = broked(
        &dir.path().join("broked.db"),
        &["connections", "test", "pg-tls", "-o", "json"],
        None,
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tls"], "verified", "{json}");
    drop(pg);
}
