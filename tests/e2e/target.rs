//! Issue 13, points 1–5, through the real `broked-server` and `broked`: an attacker with API
//! access (or write access to the store) tries to steer a stored password to another target,
//! over weaker TLS, or to make the mask or a URI's pieces stand in for a secret.

use std::process::{Command, Output};

use broked_tests::{Server, argv, broked};
use serde_json::{Value, json};

const PASSWORD: &str = "Steer-Pw-83d1";

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// 422 naming `field` (first error), and no secret in the answer.
#[track_caller]
fn refused(server: &Server, method: &str, path: &str, body: Value, field: &str) -> String {
    let r = server.call(method, path, Some(&body.to_string()));
    assert_eq!(r.status, 422, "{method} {path}: {}", r.text);
    assert_eq!(r.json["error"]["fields"][0]["field"], field, "{}", r.text);
    assert!(
        !r.text.contains(PASSWORD) && !r.text.contains("evil"),
        "{}",
        r.text
    );
    r.text
}

#[test]
fn a_stored_password_cannot_be_steered_through_any_write_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let db = dir.path().join("broked.db");
    let created = json!({"conn_id": "prod-postgres", "type": "postgres", "host": "127.0.0.1",
        "port": 5432, "schema": "acceptdb", "login": "accept_user", "password": PASSWORD,
        "extra": {"sslmode": "require"}});
    let r = server.post("/api/connections", &created.to_string());
    assert_eq!(r.status, 201, "{}", r.text);

    // The attack of the issue, and its relatives: keys that name the target in extra.
    let steer = json!({"host": "evil.example", "port": 6543, "sslmode": "require"});
    let t = refused(
        &server,
        "PATCH",
        "/api/connections/prod-postgres",
        json!({"extra": steer}),
        "extra",
    );
    assert!(t.contains("put it in host"), "{t}");
    let mut put = created.clone();
    put["password"] = json!("********");
    put["extra"] = json!({"hostaddr": "192.0.2.7", "sslmode": "require"});
    refused(
        &server,
        "PUT",
        "/api/connections/prod-postgres",
        put,
        "extra",
    );
    let mut unsaved = created.clone();
    unsaved["password"] = json!("********");
    unsaved["extra"] = json!({"user": "postgres", "sslmode": "require"});
    refused(&server, "POST", "/api/connections/test", unsaved, "extra");
    let mut other = created.clone();
    other["conn_id"] = json!("other");
    other["extra"] = json!({"service": "evil"});
    refused(&server, "POST", "/api/connections", other, "extra");

    // Weaker transport security with the password kept: refused naming the password.
    let t = refused(
        &server,
        "PATCH",
        "/api/connections/prod-postgres",
        json!({"extra": {"sslmode": "disable"}}),
        "password",
    );
    assert!(t.contains("sslmode"), "{t}");
    refused(
        &server,
        "PATCH",
        "/api/connections/prod-postgres",
        json!({"extra": null}),
        "password",
    );

    // The mask is not a password.
    let mut masked = created.clone();
    masked["conn_id"] = json!("masked");
    masked["password"] = json!("********");
    refused(&server, "POST", "/api/connections", masked, "password");
    assert_eq!(server.get("/api/connections/masked").status, 404);

    // The CLI: a URI or an import with such a key is refused, exit 1, nothing stored.
    let o = broked(
        &db,
        &["connections", "add", "cli-uri", "--uri", "-"],
        Some("postgres://accept_user@127.0.0.1:5432/acceptdb?host=evil.example\n"),
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("put it in host"), "{}", text(&o));
    let import = dir.path().join("import.json");
    std::fs::write(
        &import,
        json!([{"conn_id": "imported", "type": "postgres",
        "host": "127.0.0.1", "login": "u", "password": PASSWORD,
        "extra": {"hostaddr": "192.0.2.7"}}])
        .to_string(),
    )
    .unwrap();
    let o = broked(
        &db,
        &["connections", "import", import.to_str().unwrap()],
        None,
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!text(&o).contains(PASSWORD));
    for id in ["cli-uri", "imported"] {
        let o = broked(&db, &["connections", "get", id], None, &[]);
        assert_eq!(o.status.code(), Some(1), "{id} was stored: {}", text(&o));
    }

    // After every attempt the engine's URI names only the stored target.
    let o = broked(
        &db,
        &["connections", "get", "prod-postgres", "--uri"],
        None,
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let uri = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(uri.starts_with("postgres://accept_user:"), "{}", uri.len());
    assert!(
        uri.ends_with("@127.0.0.1:5432/acceptdb?sslmode=require"),
        "{}",
        uri.len()
    );
}

#[test]
fn a_row_moved_in_the_store_directly_is_reported_as_tampered() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let db = dir.path().join("broked.db");
    let r = server.post(
        "/api/connections",
        &json!({"conn_id": "pg", "type": "postgres",
        "host": "127.0.0.1", "port": 1, "login": "u", "password": PASSWORD})
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    // A DBA of the store points the row at their own host.
    let status = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
            c.execute(\"UPDATE connections SET host='evil.example' WHERE conn_id='pg'\"); \
            c.commit()",
            db.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let r = server.post("/api/connections/pg/test", "");
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "tampered");
    let message = r.json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"pg\"") && message.contains("tampered or moved"),
        "{message}"
    );
    let o = broked(&db, &["connections", "get", "pg", "--uri"], None, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("tampered or moved"), "{}", text(&o));
    assert!(!text(&o).contains(PASSWORD));
    let o = broked(&db, &["key", "check"], None, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // The owner enters the password again: the row is consistent once more. The moved value
    // stays in the history as the version the PATCH replaced (issue 17), and key check names
    // exactly that one (docs/security.md, "Rollback and target binding").
    let r = server.call(
        "PATCH",
        "/api/connections/pg",
        Some(&json!({"password": "new-pw"}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let o = broked(&db, &["connections", "get", "pg", "--uri"], None, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = broked(&db, &["key", "check"], None, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = text(&o);
    let failed: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(failed, ["FAIL pg version 1 password"], "{report}");
}

#[test]
fn a_key_file_swapped_under_the_server_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let key = dir.path().join("broked.db.key");
    let body = |id: &str| {
        json!({"conn_id": id, "type": "generic", "host": "h", "port": 1,
        "password": PASSWORD})
        .to_string()
    };
    assert_eq!(server.post("/api/connections", &body("before")).status, 201);
    // Another database's key file put in its place (by rename, as a restore would).
    let other = tempfile::tempdir().unwrap();
    let o = broked(
        &other.path().join("o.db"),
        &argv("connections add x --type generic --host h --port 1"),
        None,
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let ours = std::fs::read(&key).unwrap();
    let tmp = dir.path().join("swap.tmp");
    std::fs::copy(other.path().join("o.db.key"), &tmp).unwrap();
    std::fs::rename(&tmp, &key).unwrap();
    let r = server.post("/api/connections", &body("during"));
    assert_eq!(r.status, 500, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "key_mismatch", "{}", r.text);
    assert_eq!(server.get("/api/connections/during").status, 404);
    // The right file back: writes work, nothing was lost.
    std::fs::write(&tmp, &ours).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, &key).unwrap();
    assert_eq!(server.post("/api/connections", &body("after")).status, 201);
    let o = broked(&dir.path().join("broked.db"), &["key", "check"], None, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
