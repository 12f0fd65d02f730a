//! Issue 18: `host` as a URL through the real `broked-server` — create, PUT, PATCH (JSON and
//! merge patch) and the unsaved test all split it the same way, answer with the stored,
//! normalized connection, refuse conflicts naming both fields and userinfo without echoing it,
//! and normalize before the rule that keeps a stored password on its target.

use broked_tests::{Server, broked};
use serde_json::{Value, json};

const PASSWORD: &str = "HostUrl-Pw-5e7d";

/// The stored row as `broked connections export --decrypted` prints it.
fn stored(server: &Server, conn_id: &str) -> Value {
    let out = broked(
        &server.dir.join("broked.db"),
        &["connections", "export", "--decrypted"],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["conn_id"] == conn_id)
        .cloned()
        .unwrap_or(Value::Null)
}

fn fields(r: &broked_tests::Reply) -> Vec<String> {
    r.json["error"]["fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn endpoint(v: &Value) -> (Value, Value, Value) {
    (v["host"].clone(), v["port"].clone(), v["schema"].clone())
}

#[test]
fn a_url_in_host_is_split_on_every_api_write_and_answered_normalized() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);

    // Create: the answer is what was stored.
    let r = server.post(
        "/api/connections",
        &json!({"conn_id": "minio", "type": "s3", "host": "http://127.0.0.1:9000",
            "login": "minio-access", "password": PASSWORD,
            "extra": {"region": "eu-west-1", "session_token": "Sess-Kept-19a"}})
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        endpoint(&r.json),
        (json!("http://127.0.0.1"), json!(9000), Value::Null)
    );
    let r = server.post(
        "/api/connections",
        &json!({"conn_id": "analytics", "type": "postgres",
            "host": "postgres://db.internal:5433/analytics", "port": 5433,
            "login": "etl", "password": PASSWORD})
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        endpoint(&r.json),
        (json!("db.internal"), json!(5433), json!("analytics"))
    );
    let r = server.post(
        "/api/connections",
        &json!({"conn_id": "api", "type": "http", "host": "HTTPS://api.example.com:8443/v1"})
            .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        endpoint(&r.json),
        (json!("https://api.example.com"), json!(8443), json!("v1"))
    );
    assert_eq!(
        endpoint(&server.get("/api/connections/api").json),
        endpoint(&r.json),
        "a read shows the same"
    );

    // Conflicts name both fields; nothing is stored.
    let r = server.post(
        "/api/connections",
        &json!({"conn_id": "clash", "type": "s3", "host": "http://127.0.0.1:9000",
            "port": 9001})
        .to_string(),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(fields(&r), ["host", "port"], "{}", r.text);
    assert!(
        r.text.contains("9000") && r.text.contains("9001"),
        "{}",
        r.text
    );
    assert_eq!(server.get("/api/connections/clash").status, 404);

    // A login and password in the URL: refused, and neither is repeated anywhere.
    for host in [
        format!("http://minio:{PASSWORD}@127.0.0.1:9000"),
        format!("http://{PASSWORD}@127.0.0.1"),
        "http://good@evil.example".to_owned(),
    ] {
        let r = server.post(
            "/api/connections",
            &json!({"conn_id": "userinfo", "type": "s3", "host": host}).to_string(),
        );
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(fields(&r), ["host"], "{}", r.text);
        assert!(
            !r.text.contains(PASSWORD) && !r.text.contains("evil"),
            "{}",
            r.text
        );
        assert!(r.text.contains("login and password"), "{}", r.text);
    }
    // A scheme that does not fit the type.
    let r = server.post(
        "/api/connections",
        &json!({"conn_id": "wrong", "type": "postgres", "host": "mysql://db:3306/x"}).to_string(),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("postgres://"), "{}", r.text);

    // PUT: absent fields are empty, so the URL fills them.
    let r = server.put(
        "/api/connections/api",
        &json!({"type": "http", "host": "https://api.example.com:8443/v2"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        endpoint(&r.json),
        (json!("https://api.example.com"), json!(8443), json!("v2"))
    );

    // The unsaved test reads the URL the same way: it reaches 127.0.0.1:1 (closed), not a
    // host named "http".
    let r = server.post(
        "/api/connections/test",
        &json!({"type": "generic", "host": "tcp://127.0.0.1:1"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["success"], false, "{}", r.text);
    assert!(r.text.contains("127.0.0.1:1"), "{}", r.text);

    let log = server.log_text();
    assert!(!log.contains(PASSWORD), "the server log holds the password");
    for reply in server.transcript.lock().unwrap().iter() {
        assert!(
            !reply.contains(PASSWORD),
            "a reply holds the password: {reply}"
        );
    }
}

#[test]
fn normalization_comes_before_the_target_rule_and_a_merge_patch_keeps_extra() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let r = server.post(
        "/api/connections",
        &json!({"conn_id": "minio", "type": "s3", "host": "127.0.0.1", "port": 9000,
            "schema": "reports", "login": "minio-access", "password": PASSWORD,
            "extra": {"region": "eu-west-1", "session_token": "Sess-Kept-19a"}})
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);

    // s3://BUCKET is no endpoint.
    let r = server.patch(
        "/api/connections/minio",
        &json!({"host": "s3://127.0.0.1:9000"}).to_string(),
    );
    assert_eq!(r.status, 422, "s3:// names a bucket: {}", r.text);
    // An http:// endpoint is another target (TLS off): the password must come again.
    let r = server.patch(
        "/api/connections/minio",
        &json!({"host": "http://127.0.0.1:9000"}).to_string(),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(fields(&r).contains(&"password".to_owned()), "{}", r.text);
    let r = server.patch(
        "/api/connections/minio",
        &json!({"host": "http://127.0.0.1:9000", "password": PASSWORD,
            "extra": {"region": "eu-west-1", "session_token": "Sess-Kept-19a"}})
        .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        endpoint(&r.json),
        (json!("http://127.0.0.1"), json!(9000), json!("reports"))
    );
    // Now the URL of the stored endpoint, port and bucket included: the same target, kept.
    let r = server.patch(
        "/api/connections/minio",
        &json!({"host": "http://127.0.0.1:9000/reports", "password": "********"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(stored(&server, "minio")["password"], PASSWORD);
    // A URL naming another host or port moves the target: refused while the password is kept.
    for host in [
        "http://127.0.0.2:9000",
        "http://127.0.0.1:9001",
        "http://127.0.0.1.:9000",
    ] {
        let r = server.patch(
            "/api/connections/minio",
            &json!({ "host": host }).to_string(),
        );
        assert_eq!(r.status, 422, "{host}: {}", r.text);
        assert!(fields(&r).contains(&"password".to_owned()), "{}", r.text);
    }
    // With a port field that disagrees: both named, before anything else.
    let r = server.patch(
        "/api/connections/minio",
        &json!({"host": "http://127.0.0.1:9000", "port": 9001}).to_string(),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(fields(&r)[..2], ["host", "port"], "{}", r.text);

    // A merge patch of extra: the region changes, the session token (a secret) stays.
    let r = server.send(
        server
            .request("PATCH", "/api/connections/minio")
            .header("content-type", "application/merge-patch+json")
            .body(json!({"extra": {"region": "eu-west-2"}}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let row = stored(&server, "minio");
    assert_eq!(
        row["extra"],
        json!({"region": "eu-west-2", "session_token": "Sess-Kept-19a"})
    );
    assert_eq!(row["password"], PASSWORD);
    // null removes a key; with application/json an object still replaces the whole extra.
    let r = server.send(
        server
            .request("PATCH", "/api/connections/minio")
            .header(
                "content-type",
                "application/merge-patch+json; charset=utf-8",
            )
            .body(json!({"extra": {"session_token": null}}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        stored(&server, "minio")["extra"],
        json!({"region": "eu-west-2"})
    );
    let r = server.patch(
        "/api/connections/minio",
        &json!({"extra": {"path_style": true}}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        stored(&server, "minio")["extra"],
        json!({"path_style": true})
    );
    // A merge patch with another host carries the stored extra: refused like a kept one.
    let r = server.send(
        server
            .request("PATCH", "/api/connections/minio")
            .header("content-type", "application/merge-patch+json")
            .body(
                json!({"host": "http://127.0.0.2:9000", "password": PASSWORD,
                    "extra": {"region": "x"}})
                .to_string(),
            ),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(fields(&r), ["extra"], "{}", r.text);
}
