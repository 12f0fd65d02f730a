//! Issue 17: the audit log through the real server — the actor of each call is its token's
//! name with its request id, refused authentications are recorded, `GET /api/audit` needs an
//! unlimited admin token, and no value appears in a record, an answer, the log or the files.

use broked_tests::{Server, broked, files_containing};
use serde_json::{Value, json};

const BOOT: &str = "Boot-Audit-Tok-3b7e";
const PW: &str = "Audit-Pw-5c81e";
const NEW_PW: &str = "Audit-NewPw-90d2";
const EXTRA: &str = "AuditXtra-77aa";

fn records(server: &Server, query: &str) -> Vec<Value> {
    let r = server.get(&format!("/api/audit{query}"));
    assert_eq!(r.status, 200, "{}", r.text);
    let v: Value = serde_json::from_str(&r.text).unwrap();
    v["records"].as_array().unwrap().clone()
}

#[test]
fn the_server_records_token_names_request_ids_and_refusals_never_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let server = Server::start(
        dir.path(),
        &["--api-token", BOOT, "--audit-retention", "90d"],
    );
    let body = json!({"conn_id": "pg", "type": "postgres", "host": "db.example.com",
                      "login": "etl", "password": PW,
                      "extra": {"application_name": EXTRA}})
    .to_string();
    let r = server.post("/api/connections", &body);
    assert_eq!(r.status, 201, "{}", r.text);
    let req = server
        .request("PATCH", "/api/connections/pg")
        .bearer_auth(BOOT)
        .header("x-request-id", "req-audit-1")
        .header("content-type", "application/json")
        .body(json!({"password": NEW_PW}).to_string());
    let r = server.send(req);
    assert_eq!(r.status, 200, "{}", r.text);
    // A wrong token: refused and recorded.
    let refused = server.call_with("GET", "/api/connections", None, Some("brk_wrong"));
    assert_eq!(refused.status, 401);
    // A named read-only token may not read the audit log; a limited admin neither.
    let o = broked(
        &db,
        &["token", "create", "reader", "--scope", "read", "-o", "json"],
        None,
        &[],
    );
    assert!(o.status.success());
    let reader: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = server.call_with("GET", "/api/audit", None, reader["token"].as_str());
    assert_eq!(r.status, 403, "{}", r.text);
    let o = broked(
        &db,
        &[
            "token", "create", "half", "--scope", "admin", "--conns", "pg", "-o", "json",
        ],
        None,
        &[],
    );
    let half: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = server.call_with("GET", "/api/audit", None, half["token"].as_str());
    assert_eq!(r.status, 403, "{}", r.text);
    // The refusal is recorded in the background: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let all = loop {
        let all = records(&server, "?limit=1000");
        if all.iter().any(|r| r["action"] == "auth") || std::time::Instant::now() > deadline {
            break all;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let find = |action: &str| -> &Value {
        all.iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {all:#?}"))
    };
    let create = find("create");
    assert_eq!(create["actor"], "bootstrap");
    assert_eq!(create["conn_id"], "pg");
    assert!(create["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(
        create["fields"],
        json!(["type", "host", "login", "password", "extra"])
    );
    let update = find("update");
    assert_eq!(update["fields"], json!(["password"]));
    assert_eq!(update["request_id"], "req-audit-1");
    let auth = find("auth");
    assert_eq!(
        (&auth["actor"], &auth["outcome"]),
        (&json!("anonymous"), &json!("denied"))
    );
    assert!(
        auth["detail"]
            .as_str()
            .unwrap()
            .contains("client=127.0.0.1"),
        "{auth}"
    );
    assert!(
        all.iter()
            .any(|r| r["action"] == "token_create"
                && r["actor"].as_str().unwrap().starts_with("cli:"))
    );
    // Filters, paging, bad input.
    assert_eq!(records(&server, "?conn_id=pg&action=update").len(), 1);
    let page = server.get("/api/audit?limit=1");
    let page: Value = serde_json::from_str(&page.text).unwrap();
    let next = page["next_cursor"].as_i64().unwrap();
    let older = records(&server, &format!("?limit=1&cursor={next}"));
    assert!(older[0]["seq"].as_i64().unwrap() < next);
    assert_eq!(server.get("/api/audit?since=soon").status, 422);
    assert_eq!(server.get("/api/audit?limit=0").status, 422);
    assert_eq!(server.get("/api/audit?bogus=1").status, 400);
    // The route is in the OpenAPI document.
    let doc: Value = serde_json::from_str(&server.get("/api/openapi.json").text).unwrap();
    assert!(doc["paths"]["/api/audit"]["get"].is_object());
    // No value anywhere: answers, the log, the database and checkpoint files.
    let text = serde_json::to_string(&all).unwrap();
    let log = server.log_text();
    drop(server);
    for value in [PW, NEW_PW, EXTRA, "brk_wrong"] {
        assert!(!text.contains(value), "{value} in a record");
        assert!(!log.contains(value), "{value} in the log");
        let found = files_containing(dir.path(), value);
        assert!(found.is_empty(), "{value} in {found:?}");
    }
    // The chain the server wrote verifies.
    let o = broked(&db, &["audit", "verify"], None, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}
