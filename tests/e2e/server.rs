//! `broked-server` as the seed page and SPEC §4 describe it.

use broked_tests::{Server, column, env, files_containing, server_output};
use serde_json::{Value, json};

use super::server_contract::SEED_CREATE;

/// Distinctive values, searched for everywhere they must not be.
const PASSWORD: &str = "Zebra-Pw-9f3e!";
const EXTRA_VALUE: &str = "Okapi-Tok-77c1";

/// The seed page's connection ([`SEED_CREATE`]) with this file's password, and an extra.
fn seed_body() -> String {
    let mut body: Value = serde_json::from_str(SEED_CREATE).expect("the seed is JSON");
    body["password"] = json!(PASSWORD);
    body["extra"] = json!(json!({"application_name": EXTRA_VALUE}).to_string());
    body.to_string()
}

fn assert_no_secret_in(server: &Server) {
    for body in server.transcript.lock().unwrap().iter() {
        assert!(!body.contains(PASSWORD), "password in a response: {body}");
        assert!(
            !body.contains(EXTRA_VALUE),
            "extra value in a response: {body}"
        );
    }
    let log = server.log_text();
    assert!(!log.contains(PASSWORD), "password in the server log");
    assert!(!log.contains(EXTRA_VALUE), "extra value in the server log");
}

#[test]
fn seed_page_flow_create_get_list_update_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);

    // The seed's curl.
    let r = server.post("/api/connections", &seed_body());
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["conn_id"], "prod-postgres");
    assert_eq!(r.json["type"], "postgres");
    assert_eq!(r.json["password"], "********");
    assert_eq!(r.json["extra"], "********");
    assert_eq!(r.json["description"], Value::Null);
    assert!(r.json["created_at"].as_str().unwrap().contains('T'));

    // The key file was created beside the database, mode 0600.
    let key = dir.path().join("broked.db.key");
    assert!(key.exists(), "broked.db.key created on first run");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    assert_eq!(server.post("/api/connections", &seed_body()).status, 409);

    let other = json!({"conn_id": "a-files", "type": "sftp", "host": "files.example.com"});
    assert_eq!(
        server.post("/api/connections", &other.to_string()).status,
        201
    );

    let list = server.get("/api/connections");
    let ids = column(&list.json, "conn_id");
    assert_eq!(ids, ["a-files", "prod-postgres"], "sorted by conn_id");
    let pg = server.get("/api/connections?type=postgres");
    assert_eq!(pg.json.as_array().unwrap().len(), 1);
    assert_eq!(server.get("/api/connections?type=nope").status, 400);

    let got = server.get("/api/connections/prod-postgres");
    assert_eq!(got.status, 200);
    assert_eq!(got.json["login"], "etl_user");
    assert_eq!(got.json["password"], "********");

    // PATCH keeps the secrets; PUT with ******** keeps them too; null clears.
    let r = server.patch(
        "/api/connections/prod-postgres",
        r#"{"description": "nightly ETL"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["description"], "nightly ETL");
    assert_eq!(r.json["password"], "********");
    let mut put = got.json.clone();
    put["description"] = json!("put back as read");
    let r = server.put("/api/connections/prod-postgres", &put.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["password"], "********");
    assert_eq!(r.json["extra"], "********");
    // Another host with the secrets kept: refused, naming both — a stored password is never
    // moved to another target (else: edit the host, press Test, receive the password).
    put["host"] = json!("db2.example.com");
    let r = server.put("/api/connections/prod-postgres", &put.to_string());
    assert_eq!(r.status, 422, "{}", r.text);
    let fields = column(&r.json["error"]["fields"], "field");
    assert_eq!(fields, ["password", "extra"]);
    assert_eq!(
        server.get("/api/connections/prod-postgres").json["host"],
        "db.example.com"
    );
    put["password"] = json!("secret123");
    put["extra"] = json!(r#"{"sslmode": "require"}"#);
    let r = server.put("/api/connections/prod-postgres", &put.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["host"], "db2.example.com");
    assert_eq!(r.json["password"], "********");
    let r = server.patch("/api/connections/prod-postgres", r#"{"extra": null}"#);
    assert_eq!(r.json["extra"], Value::Null);
    let r = server.patch(
        "/api/connections/prod-postgres",
        r#"{"conn_id": "renamed"}"#,
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json["error"]["fields"][0]["field"], "conn_id");

    assert_eq!(
        server
            .call("DELETE", "/api/connections/a-files", None)
            .status,
        204
    );
    assert_eq!(
        server
            .call("DELETE", "/api/connections/a-files", None)
            .status,
        404
    );
    assert_eq!(server.get("/api/connections/a-files").status, 404);

    assert_no_secret_in(&server);
    assert!(
        files_containing(dir.path(), PASSWORD).is_empty(),
        "password on disk in plaintext"
    );
    assert!(
        files_containing(dir.path(), EXTRA_VALUE).is_empty(),
        "extra on disk in plaintext"
    );
}

#[test]
fn bad_input_is_a_clear_error_never_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let cases: &[(&str, &str, Option<String>, u16)] = &[
        ("POST", "/api/connections", Some("{not json".into()), 400),
        ("POST", "/api/connections", Some("[1,2]".into()), 400),
        ("POST", "/api/connections", Some(String::new()), 400),
        (
            "POST",
            "/api/connections",
            Some(r#"{"conn_id": "Bad Id", "type": "nope", "port": 0}"#.into()),
            422,
        ),
        (
            "POST",
            "/api/connections",
            Some(r#"{"conn_id": "x", "type": "postgres", "port": "abc", "password": 5}"#.into()),
            422,
        ),
        (
            "POST",
            "/api/connections",
            Some(r#"{"conn_id": "x", "type": "postgres", "host": "h", "extra": "[1]"}"#.into()),
            422,
        ),
        (
            "POST",
            "/api/connections",
            Some(r#"{"conn_id": "x", "type": "postgres", "host": "h", "hostname": "h"}"#.into()),
            422,
        ),
        (
            "POST",
            "/api/connections",
            Some(format!(
                r#"{{"conn_id": "x", "type": "http", "host": "h", "description": "{}"}}"#,
                "a".repeat(1_100_000)
            )),
            413,
        ),
        ("GET", "/api/connections/nope", None, 404),
        (
            "PUT",
            "/api/connections/nope",
            Some(r#"{"type": "postgres", "host": "h"}"#.into()),
            404,
        ),
        ("POST", "/api/connections/nope/test", None, 404),
        ("GET", "/api/connections/nope/used-by", None, 404),
        ("GET", "/api/no-such-route", None, 404),
        ("DELETE", "/api/connections/x?force=maybe", None, 400),
        (
            "PUT",
            "/api/pipelines/p1",
            Some(r#"{"nodes": 3}"#.into()),
            422,
        ),
        (
            "PUT",
            "/api/pipelines/bad%20id",
            Some(r#"{"name": "n", "nodes": []}"#.into()),
            422,
        ),
        ("GET", "/api/pipelines/nope", None, 404),
    ];
    for (method, path, body, status) in cases {
        let r = server.call(method, path, body.as_deref());
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text);
        assert!(
            r.json["error"]["code"].is_string(),
            "{method} {path}: error envelope: {}",
            r.text
        );
        assert!(
            r.json["error"]["message"].is_string(),
            "{method} {path}: {}",
            r.text
        );
    }
    // Validation names every bad field at once.
    let r = server.post(
        "/api/connections",
        r#"{"conn_id": "Bad Id", "type": "postgres", "port": 70000}"#,
    );
    let fields = column(&r.json["error"]["fields"], "field");
    assert_eq!(fields, ["conn_id", "port", "host"], "{}", r.text);
    // A wrongly typed password is refused without echoing it.
    let r = server.post(
        "/api/connections",
        &format!(
            r#"{{"conn_id": "x", "type": "postgres", "host": "h", "password": ["{PASSWORD}"]}}"#
        ),
    );
    assert_eq!(r.status, 422);
    assert_no_secret_in(&server);
    assert!(
        server
            .get("/api/connections")
            .json
            .as_array()
            .unwrap()
            .is_empty(),
        "bad input changed nothing"
    );
}

#[test]
fn pipelines_and_usage_tracking() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.post("/api/connections", &seed_body()).status, 201);
    let pipeline = json!({"name": "users sync", "nodes": [
        {"id": "src", "type": "source_db", "config": {"conn_id": "prod-postgres", "query": "SELECT * FROM users"}},
        {"id": "dst", "type": "sink_db", "config": {"conn_id": "prod-postgres"}},
        {"id": "log", "type": "log"}]});
    let r = server.put("/api/pipelines/users-sync", &pipeline.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["pipeline_id"], "users-sync");

    let bad = json!({"name": "b", "nodes": [{"id": "n", "type": "t", "config": {"conn_id": "missing-one"}}]});
    let r = server.call("PUT", "/api/pipelines/bad", Some(&bad.to_string()));
    assert_eq!(r.status, 422);
    assert!(
        r.text.contains("missing-one"),
        "names the unknown conn_id: {}",
        r.text
    );

    let r = server.get("/api/connections/prod-postgres/used-by");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json,
        json!({"conn_id": "prod-postgres", "pipelines": [{"pipeline_id": "users-sync", "name": "users sync", "nodes": ["dst", "src"]}]})
    );

    let r = server.call("DELETE", "/api/connections/prod-postgres", None);
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "in_use");
    assert_eq!(r.json["error"]["pipelines"][0]["pipeline_id"], "users-sync");
    assert_eq!(
        server.get("/api/connections/prod-postgres").status,
        200,
        "refused delete changed nothing"
    );

    assert_eq!(
        server.get("/api/pipelines").json.as_array().unwrap().len(),
        1
    );
    assert_eq!(
        server.get("/api/pipelines/users-sync").json["nodes"][0]["id"],
        "src"
    );
    assert_eq!(
        server
            .call("DELETE", "/api/pipelines/users-sync", None)
            .status,
        204
    );
    assert_eq!(
        server
            .call("DELETE", "/api/connections/prod-postgres", None)
            .status,
        204
    );

    // Forced delete of a used connection.
    assert_eq!(server.post("/api/connections", &seed_body()).status, 201);
    assert_eq!(
        server
            .call(
                "PUT",
                "/api/pipelines/users-sync",
                Some(&pipeline.to_string())
            )
            .status,
        200
    );
    assert_eq!(
        server
            .call("DELETE", "/api/connections/prod-postgres?force=true", None)
            .status,
        204
    );
    assert_no_secret_in(&server);
}

#[test]
fn testing_connections_against_the_real_postgres() {
    let Some(pg) = env::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let body = json!({
        "conn_id": "local-pg", "type": "postgres", "host": pg.get("HOST"), "port": pg.port(),
        "schema": pg.get("DB"), "login": pg.get("USER"), "password": pg.get("PASSWORD"),
    });
    assert_eq!(
        server.post("/api/connections", &body.to_string()).status,
        201
    );
    let r = server.post("/api/connections/local-pg/test", "");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], true, "{}", r.text);
    assert_eq!(r.json["message"], "Connected successfully (sqlx-postgres)");
    assert_eq!(r.json["driver"], "sqlx-postgres");
    assert!(r.json["latency_ms"].is_u64());

    // Unsaved, with the mask: uses the stored password.
    let mut masked = body.clone();
    masked["password"] = json!("********");
    let r = server.post("/api/connections/test", &masked.to_string());
    assert_eq!(r.json["success"], true, "stored secret used: {}", r.text);

    // Unsaved with a wrong password: a failed test, not an HTTP error; the password not echoed.
    let mut wrong = body.clone();
    wrong["conn_id"] = json!("new-one");
    wrong["password"] = json!(PASSWORD);
    let r = server.post("/api/connections/test", &wrong.to_string());
    assert_eq!(r.status, 200);
    assert_eq!(r.json["success"], false, "{}", r.text);
    assert!(!r.text.contains(PASSWORD));
    assert_no_secret_in(&server);
}

#[test]
fn token_auth() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", "tok-abc-123"]);
    assert_eq!(
        server
            .call_with("GET", "/api/connections", None, None)
            .status,
        401
    );
    assert_eq!(
        server
            .call_with("GET", "/api/connections", None, Some("wrong"))
            .status,
        401
    );
    let r = server.call_with("GET", "/api/connections", None, Some("tok-abc-123"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(server.call_with("GET", "/healthz", None, None).status, 200);
    assert!(
        !server.log_text().contains("tok-abc-123"),
        "token in the log"
    );
}

#[test]
fn refuses_non_loopback_without_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = server_output(dir.path(), &["--db", "x.db", "--listen", "0.0.0.0:0"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without an API token"), "{err}");
    assert!(!dir.path().join("x.db").exists(), "nothing created");
}

#[test]
fn missing_key_file_with_secrets_is_fatal_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    assert_eq!(server.post("/api/connections", &seed_body()).status, 201);
    assert!(server.stop(), "graceful shutdown on SIGTERM exits 0");
    let key = dir.path().join("broked.db.key");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();

    let db = dir.path().join("broked.db");
    let out = server_output(
        dir.path(),
        &["--db", db.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broked.db.key"), "names the key file: {err}");
    assert!(
        !key.exists(),
        "never creates a new key over existing secrets"
    );

    // A different key is refused too.
    let other = tempfile::tempdir().unwrap();
    let mut s2 = Server::start(other.path(), &[]);
    assert_eq!(s2.post("/api/connections", &seed_body()).status, 201);
    s2.stop();
    std::fs::copy(other.path().join("broked.db.key"), &key).unwrap();
    let out = server_output(
        dir.path(),
        &["--db", db.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[],
    );
    assert!(!out.status.success(), "wrong key accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("broked.db.key"));

    // Restoring the right key brings everything back.
    std::fs::write(&key, saved).unwrap();
    let server = Server::start(dir.path(), &[]);
    assert_eq!(
        server.get("/api/connections/prod-postgres").json["password"],
        "********"
    );
}

#[test]
fn openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let doc = server.get("/api/openapi.json");
    assert_eq!(doc.status, 200);
    assert!(doc.json["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.json["paths"].as_object().unwrap();
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    documented.sort();
    // SPEC §4's table, every route of it.
    let mut spec = vec![
        "POST /api/connections",
        "GET /api/connections",
        "GET /api/connections/{conn_id}",
        "PUT /api/connections/{conn_id}",
        "PATCH /api/connections/{conn_id}",
        "DELETE /api/connections/{conn_id}",
        "POST /api/connections/{conn_id}/test",
        "POST /api/connections/test",
        "GET /api/connections/{conn_id}/used-by",
        "PUT /api/pipelines/{pipeline_id}",
        "GET /api/pipelines",
        "GET /api/pipelines/{pipeline_id}",
        "DELETE /api/pipelines/{pipeline_id}",
        "GET /api/connection-types",
        // Issue 16: named tokens and what the presented token may do.
        "GET /api/tokens",
        "POST /api/tokens",
        "DELETE /api/tokens/{name}",
        "GET /api/whoami",
        // Issue 23: /api/connections/test also serves the connection named `test`.
        "GET /api/connections/test",
        "PUT /api/connections/test",
        "PATCH /api/connections/test",
        "DELETE /api/connections/test",
        // Issue 17: version history.
        "GET /api/connections/{conn_id}/versions",
        "DELETE /api/connections/{conn_id}/versions",
        "GET /api/connections/{conn_id}/versions/{version}",
        "POST /api/connections/{conn_id}/rollback",
        // Issue 17: the audit log.
        "GET /api/audit",
        // Issue 20: password rotation and its state.
        "POST /api/connections/{conn_id}/rotate-password",
        "GET /api/connections/{conn_id}/rotation",
    ];
    spec.sort();
    assert_eq!(documented, spec);
    // And every documented route is served (not the fallback 404, not 405).
    for route in &documented {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path
            .replace("{conn_id}", "nope")
            .replace("{pipeline_id}", "nope");
        let r = server.call(method, &path, Some("{}"));
        assert_ne!(r.status, 405, "{route}");
        assert!(
            !r.text.contains("no such API route"),
            "{route} not served: {}",
            r.text
        );
    }
    let types = server.get("/api/connection-types");
    assert_eq!(types.json.as_array().unwrap().len(), 7);
    assert_eq!(types.json[0]["label"], "PostgreSQL");
    assert_eq!(types.json[0]["default_port"], 5432);
}

#[test]
fn a_connection_named_test_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let body = json!({"conn_id": "test", "type": "generic", "host": "127.0.0.1", "port": 9});
    assert_eq!(
        server.post("/api/connections", &body.to_string()).status,
        201
    );
    assert_eq!(server.get("/api/connections/test").json["conn_id"], "test");
    assert_eq!(
        server
            .call("PATCH", "/api/connections/test", Some(r#"{"port": 10}"#))
            .json["port"],
        10
    );
    assert_eq!(
        server.call("DELETE", "/api/connections/test", None).status,
        204
    );
}

/// Without a token the API trusts loopback: a web page must not be able to use it through the
/// browser — by DNS rebinding (its own name resolving to 127.0.0.1) or a cross-site request.
#[test]
fn pages_of_other_sites_cannot_use_the_tokenless_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let body = r#"{"conn_id": "c", "type": "generic", "host": "127.0.0.1", "port": 9}"#;
    let post = |headers: &[(&str, &str)]| {
        let mut req = server
            .request("POST", "/api/connections")
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        server.send(req)
    };
    let rebound = post(&[("host", "evil.example:8080")]);
    assert_eq!(rebound.status, 403, "{}", rebound.text);
    assert_eq!(rebound.json["error"]["code"], "forbidden_host");
    let origin = post(&[("origin", "http://evil.example")]);
    assert_eq!(origin.status, 403, "{}", origin.text);
    assert_eq!(origin.json["error"]["code"], "cross_origin");
    let fetch = post(&[("sec-fetch-site", "cross-site")]);
    assert_eq!(fetch.status, 403, "{}", fetch.text);
    let test = server.send(
        server
            .request("POST", "/api/connections/c/test")
            .header("origin", "http://evil.example"),
    );
    assert_eq!(test.status, 403, "{}", test.text);
    assert_eq!(
        server.get("/api/connections").json,
        json!([]),
        "nothing was created"
    );
    // The server's own page (same origin) and plain clients work.
    let own = format!("http://127.0.0.1:{}", server.port);
    assert_eq!(
        post(&[("origin", own.as_str()), ("sec-fetch-site", "same-origin")]).status,
        201
    );
    assert_eq!(server.get("/api/connections/c").status, 200);
}
