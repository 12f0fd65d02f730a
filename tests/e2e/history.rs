//! Issue 17 over HTTP: the version history routes, `ETag`/`If-Match` (412 when stale), and
//! rollback — which never sends a kept password to a host it was not stored for.

use broked_tests::{Server, files_containing};
use serde_json::{Value, json};

const PASSWORD: &str = "Heron-Pw-31c7!";
const EXTRA_VALUE: &str = "Ibis-Tok-55d2";
const NEW_PASSWORD: &str = "Crane-Pw-8e04?";

fn body() -> String {
    json!({
        "conn_id": "pg",
        "type": "postgres",
        "host": "db.example.com",
        "port": 5432,
        "login": "etl",
        "password": PASSWORD,
        "extra": {"application_name": EXTRA_VALUE},
    })
    .to_string()
}

/// Status, `ETag` header, JSON body of `method path` with optional `If-Match` and body.
fn send(
    server: &Server,
    method: &str,
    path: &str,
    if_match: Option<&str>,
    body: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut req = server.request(method, path);
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().unwrap();
    server.transcript.lock().unwrap().push(text.clone());
    (
        status,
        etag,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn assert_no_secret(server: &Server, dir: &std::path::Path) {
    for body in server.transcript.lock().unwrap().iter() {
        for secret in [PASSWORD, EXTRA_VALUE, NEW_PASSWORD] {
            assert!(!body.contains(secret), "{secret} in a response: {body}");
        }
    }
    let log = server.log_text();
    for secret in [PASSWORD, EXTRA_VALUE, NEW_PASSWORD] {
        assert!(!log.contains(secret), "{secret} in the server log");
        assert!(
            files_containing(dir, secret).is_empty(),
            "{secret} in plain text in a file"
        );
    }
}

#[test]
fn versions_etags_and_if_match() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, etag, created) = send(&server, "POST", "/api/connections", None, Some(&body()));
    assert_eq!((status, etag.as_deref()), (201, Some("\"1\"")), "{created}");
    assert_eq!(created["version"], 1);
    let (status, etag, _) = send(&server, "GET", "/api/connections/pg", None, None);
    assert_eq!((status, etag.as_deref()), (200, Some("\"1\"")));

    // A conditional PATCH on the version read.
    let patch = json!({"description": "first"}).to_string();
    let (status, etag, v2) = send(
        &server,
        "PATCH",
        "/api/connections/pg",
        Some("\"1\""),
        Some(&patch),
    );
    assert_eq!((status, etag.as_deref()), (200, Some("\"2\"")), "{v2}");
    // The same ETag again is stale now: 412, with a JSON error, and nothing changes.
    let late = json!({"description": "lost update"}).to_string();
    for method in ["PATCH", "PUT"] {
        let body = if method == "PUT" {
            json!({"type": "postgres", "host": "db.example.com", "login": "etl", "description": "x"}).to_string()
        } else {
            late.clone()
        };
        let (status, _, err) = send(
            &server,
            method,
            "/api/connections/pg",
            Some("\"1\""),
            Some(&body),
        );
        assert_eq!(status, 412, "{method}: {err}");
        assert_eq!(err["error"]["code"], "precondition_failed");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("version 2"),
            "{err}"
        );
    }
    let (status, _, err) = send(
        &server,
        "DELETE",
        "/api/connections/pg",
        Some("\"1\""),
        None,
    );
    assert_eq!(status, 412, "{err}");
    // A weak tag never matches; a malformed one is a 400 naming the form.
    let (status, _, _) = send(
        &server,
        "PATCH",
        "/api/connections/pg",
        Some("W/\"2\""),
        Some(&late),
    );
    assert_eq!(status, 412);
    let (status, _, err) = send(
        &server,
        "PATCH",
        "/api/connections/pg",
        Some("two"),
        Some(&late),
    );
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("If-Match"),
        "{err}"
    );
    let (_, _, now) = send(&server, "GET", "/api/connections/pg", None, None);
    assert_eq!(
        now["description"], "first",
        "no refused write changed anything"
    );
    // `*`, and no If-Match at all, stay unconditional.
    let pw = json!({"password": NEW_PASSWORD}).to_string();
    let (status, etag, _) = send(
        &server,
        "PATCH",
        "/api/connections/pg",
        Some("*"),
        Some(&pw),
    );
    assert_eq!((status, etag.as_deref()), (200, Some("\"3\"")));

    // The history: newest first, writers and changed field names, no values.
    let (status, _, list) = send(&server, "GET", "/api/connections/pg/versions", None, None);
    assert_eq!(status, 200, "{list}");
    let rows: Vec<(i64, String, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["changed"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
                v["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (3, "password".to_owned(), true),
            (2, "description".to_owned(), false),
            (1, String::new(), false)
        ]
    );
    assert!(list[0]["updated_by"].is_string());
    let (status, _, one) = send(&server, "GET", "/api/connections/pg/versions/1", None, None);
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["version"], 1);
    assert_eq!(one["connection"]["password"], "********");
    assert_eq!(one["connection"]["extra"], "********");
    assert_eq!(one["connection"]["description"], Value::Null);
    for (path, want) in [
        ("/api/connections/pg/versions/9", 404),
        ("/api/connections/pg/versions/0", 400),
        ("/api/connections/pg/versions/x", 400),
        ("/api/connections/nope/versions", 404),
    ] {
        let (status, _, err) = send(&server, "GET", path, None, None);
        assert_eq!(status, want, "{path}: {err}");
    }

    // Rollback: a new version equal to 1, secrets too; If-Match makes it conditional.
    let to1 = json!({"version": 1}).to_string();
    let (status, _, _) = send(
        &server,
        "POST",
        "/api/connections/pg/rollback",
        Some("\"2\""),
        Some(&to1),
    );
    assert_eq!(status, 412);
    let (status, etag, back) = send(
        &server,
        "POST",
        "/api/connections/pg/rollback",
        Some("\"3\""),
        Some(&to1),
    );
    assert_eq!((status, etag.as_deref()), (200, Some("\"4\"")), "{back}");
    assert_eq!(back["description"], Value::Null);
    assert_eq!(back["password"], "********");
    for (bad, want) in [
        (json!({"version": "1"}), 422),
        (json!({"version": 0}), 422),
        (json!({}), 422),
        (json!({"version": 1, "x": 1}), 400),
        (json!({"version": 99}), 404),
        (json!({"version": 4}), 422),
    ] {
        let (status, _, err) = send(
            &server,
            "POST",
            "/api/connections/pg/rollback",
            None,
            Some(&bad.to_string()),
        );
        assert_eq!(status, want, "{bad}: {err}");
    }

    // Purge is for deleted connections; a delete keeps the history until then.
    let (status, _, err) = send(
        &server,
        "DELETE",
        "/api/connections/pg/versions",
        None,
        None,
    );
    assert_eq!(status, 409, "{err}");
    let (status, _, _) = send(
        &server,
        "DELETE",
        "/api/connections/pg",
        Some("\"4\""),
        None,
    );
    assert_eq!(status, 204);
    let (_, _, list) = send(&server, "GET", "/api/connections/pg/versions", None, None);
    assert_eq!(list[0]["version"], 5);
    assert_eq!(list[0]["deleted"], true);
    let (status, _, purged) = send(
        &server,
        "DELETE",
        "/api/connections/pg/versions",
        None,
        None,
    );
    assert_eq!(
        (status, purged["purged"].as_u64()),
        (200, Some(5)),
        "{purged}"
    );
    let (status, _, _) = send(&server, "GET", "/api/connections/pg/versions", None, None);
    assert_eq!(status, 404);
    assert_no_secret(&server, dir.path());
}

/// Someone who may edit connections but not read secrets tries to send the stored password
/// to a host of theirs through the history.
#[test]
fn rollback_never_sends_a_kept_password_to_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (status, _, _) = send(&server, "POST", "/api/connections", None, Some(&body()));
    assert_eq!(status, 201);
    // Pointing it elsewhere with the password kept is refused (as before issue 17)...
    let evil = json!({"host": "evil.example", "extra": null}).to_string();
    let (status, _, err) = send(&server, "PATCH", "/api/connections/pg", None, Some(&evil));
    assert_eq!(status, 422, "{err}");
    // ... so they clear it, and try the history: version 1 comes back whole (its own host),
    // version 2 is their host without a password.
    let cleared = json!({"host": "evil.example", "extra": null, "password": null}).to_string();
    let (status, _, _) = send(
        &server,
        "PATCH",
        "/api/connections/pg",
        None,
        Some(&cleared),
    );
    assert_eq!(status, 200);
    let (_, _, back) = send(
        &server,
        "POST",
        "/api/connections/pg/rollback",
        None,
        Some(&json!({"version": 1}).to_string()),
    );
    assert_eq!(back["host"], "db.example.com");
    assert_eq!(back["password"], "********");
    let (_, _, again) = send(
        &server,
        "POST",
        "/api/connections/pg/rollback",
        None,
        Some(&json!({"version": 2}).to_string()),
    );
    assert_eq!(again["host"], "evil.example");
    assert_eq!(again["password"], Value::Null);
    assert_no_secret(&server, dir.path());
}
