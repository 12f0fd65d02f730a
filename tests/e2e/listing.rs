//! `GET /api/connections` paged and filtered on the server, and the last test result of each
//! connection (issues 18 and 19), through the real binaries.

use broked_tests::{Server, broked, column, env, files_containing, free_port};
use serde_json::{Value, json};

/// A password that must appear in no answer, status message, log or file.
const PASSWORD: &str = "Quokka-Pw-51d0!";

fn create(server: &Server, body: Value) {
    let r = server.post("/api/connections", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
}

/// `c-00` … `c-29`: every third an http connection on `https://API.example.com`, the others
/// postgres on `db.example.com`; `c-07` described as "Billing WAREHOUSE".
fn seed(server: &Server) {
    for i in 0..30 {
        let id = format!("c-{i:02}");
        let mut body = if i % 3 == 0 {
            json!({"conn_id": id, "type": "http", "host": "https://API.example.com"})
        } else {
            json!({"conn_id": id, "type": "postgres", "host": "db.example.com",
                   "login": "etl", "password": "pw"})
        };
        if i == 7 {
            body["description"] = json!("Billing WAREHOUSE");
        }
        create(server, body);
    }
}

/// Every page of `query` with pages of `limit`: the conn_ids, and each page's size.
fn all_pages(server: &Server, query: &str, limit: usize) -> (Vec<String>, Vec<usize>, Value) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    let mut first = Value::Null;
    loop {
        let mut path = format!("/api/connections?limit={limit}{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = server.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let items = &r.json["items"];
        sizes.push(items.as_array().expect("items").len());
        ids.extend(column(items, "conn_id").into_iter().map(str::to_owned));
        if first.is_null() {
            first = r.json.clone();
        } else {
            assert!(r.json["total"].is_null(), "counted on the first page only");
        }
        match r.json["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(sizes.len() < 100, "pages never end");
    }
    (ids, sizes, first)
}

#[test]
fn the_list_pages_and_filters_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    seed(&server);
    let every: Vec<String> = (0..30).map(|i| format!("c-{i:02}")).collect();

    // Pages follow each other in conn_id order, with the total on the first.
    let (ids, sizes, first) = all_pages(&server, "", 7);
    assert_eq!(ids, every);
    assert_eq!(sizes, [7, 7, 7, 7, 2]);
    assert_eq!(
        (first["total"].as_u64(), first["total_exact"].as_bool()),
        (Some(30), Some(true))
    );
    // A page that ends at the last connection has no next cursor.
    let (_, sizes, _) = all_pages(&server, "", 10);
    assert_eq!(sizes, [10, 10, 10]);
    // Only a cursor: pages of 100.
    let r = server.get("/api/connections?cursor=c-25");
    assert_eq!(
        column(&r.json["items"], "conn_id"),
        ["c-26", "c-27", "c-28", "c-29"]
    );
    assert!(r.json["next_cursor"].is_null() && r.json["total"].is_null());

    // Filters: type, a search in conn_id, host and description (either case), combined.
    let (http, _, first) = all_pages(&server, "&type=http", 4);
    assert_eq!(http.len(), 10);
    assert_eq!(first["total"], 10);
    let (api, _, _) = all_pages(&server, "&q=api.EXAMPLE", 100);
    assert_eq!(api, http);
    let (billing, _, _) = all_pages(&server, "&q=warehouse", 100);
    assert_eq!(billing, ["c-07"]);
    let (both, _, _) = all_pages(&server, "&type=postgres&q=c-2", 2);
    assert_eq!(
        both,
        ["c-20", "c-22", "c-23", "c-25", "c-26", "c-28", "c-29"]
    );
    let none = server.get("/api/connections?limit=5&q=nothing-like-it");
    assert_eq!(
        none.json,
        json!({"items": [], "next_cursor": null, "total": 0, "total_exact": true})
    );

    // Without limit or cursor: the array it always was, filters included.
    let all = server.get("/api/connections");
    assert_eq!(column(&all.json, "conn_id"), every);
    let found = server.get("/api/connections?q=WAREHOUSE");
    assert_eq!(column(&found.json, "conn_id"), ["c-07"]);
    // Untested so far: the status fields are null and the filter finds them all.
    assert_eq!(all.json[1]["last_tested_at"], Value::Null);
    assert_eq!(all.json[1]["last_test_ok"], Value::Null);
    assert_eq!(
        server
            .get("/api/connections?status=untested")
            .json
            .as_array()
            .unwrap()
            .len(),
        30
    );
    assert_eq!(
        server.get("/api/connections?status=failing").json,
        json!([])
    );

    // Bad parameters: 400 naming the parameter, nothing else.
    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=Not%20An%20Id", "cursor"),
        ("status=broken", "status"),
        ("type=oracle", "type"),
    ] {
        let r = server.get(&format!("/api/connections?{query}"));
        assert_eq!(r.status, 400, "{query}: {}", r.text);
        assert!(
            r.json["error"]["message"].as_str().unwrap().contains(name),
            "{query}: {}",
            r.text
        );
    }
}

#[test]
fn every_test_is_kept_with_its_connection_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Nothing listens on this port: the test fails (refused).
    let closed = free_port();
    create(
        &server,
        json!({"conn_id": "down", "type": "postgres", "host": "127.0.0.1", "port": closed,
               "login": "etl", "password": PASSWORD, "schema": "db"}),
    );
    create(
        &server,
        json!({"conn_id": "other", "type": "http", "host": "https://api.example.com"}),
    );

    // A test through the API is kept: the list, the single GET, the failing filter.
    let r = server.post("/api/connections/down/test", "");
    assert_eq!(
        (r.status, r.json["success"].as_bool()),
        (200, Some(false)),
        "{}",
        r.text
    );
    let message = r.json["message"].as_str().unwrap().to_owned();
    let got = server.get("/api/connections/down");
    assert_eq!(got.json["last_test_ok"], false);
    assert_eq!(got.json["last_test_message"], json!(message));
    let tested_at = got.json["last_tested_at"]
        .as_str()
        .expect("a time")
        .to_owned();
    assert!(
        tested_at.ends_with('Z') && tested_at.len() == 20,
        "{tested_at}"
    );
    let failing = server.get("/api/connections?status=failing");
    assert_eq!(column(&failing.json, "conn_id"), ["down"]);
    let page = server.get("/api/connections?status=untested&limit=10");
    assert_eq!(column(&page.json["items"], "conn_id"), ["other"]);

    // A test by the CLI, on the same database while the server runs, is kept too.
    let out = broked(
        &dir.path().join("broked.db"),
        &["connections", "test", "--all"],
        None,
        &[],
    );
    assert!(!out.status.success(), "the test fails: exit 1");
    let list = server.get("/api/connections");
    assert_eq!(list.json[1]["conn_id"], "other");
    assert_eq!(list.json[1]["last_test_ok"], false, "tested by the CLI");
    let cli = broked(
        &dir.path().join("broked.db"),
        &["connections", "list", "--status", "failing", "-o", "json"],
        None,
        &[],
    );
    assert!(cli.status.success());
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(column(&cli, "conn_id"), ["down", "other"]);

    // A change makes the connection untested again: the result was about what was tested.
    let r = server.patch("/api/connections/down", r#"{"description": "moved"}"#);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["last_tested_at"], Value::Null);
    assert_eq!(
        server.get("/api/connections/down").json["last_test_ok"],
        Value::Null
    );

    // The password is in no answer, in no log line, in no file but sealed.
    for body in server.transcript.lock().unwrap().iter() {
        assert!(!body.contains(PASSWORD), "password in a response: {body}");
    }
    assert!(!server.log_text().contains(PASSWORD), "password in the log");
    assert_eq!(
        files_containing(dir.path(), PASSWORD),
        Vec::<std::path::PathBuf>::new()
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
}

/// A failing test against the real PostgreSQL — the server answers, the password is wrong —
/// keeps the driver's message, which must not carry the distinctive password.
#[test]
fn a_refused_login_keeps_a_message_without_the_password() {
    let Some(pg) = env::postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    create(
        &server,
        json!({"conn_id": "pg", "type": "postgres", "host": pg.get("HOST"), "port": pg.port(),
               "schema": pg.get("DB"), "login": pg.get("USER"), "password": PASSWORD}),
    );
    let r = server.post("/api/connections/pg/test", "");
    assert_eq!(r.json["success"], false, "{}", r.text);
    let got = server.get("/api/connections/pg");
    assert_eq!(got.json["last_test_ok"], false);
    let message = got.json["last_test_message"].as_str().unwrap();
    assert!(
        !message.is_empty() && !message.contains(PASSWORD),
        "{message}"
    );
    let r = server.get("/api/connections?status=failing&limit=5");
    assert_eq!(column(&r.json["items"], "conn_id"), ["pg"]);
    assert!(!server.log_text().contains(PASSWORD));
    assert_eq!(
        files_containing(dir.path(), PASSWORD),
        Vec::<std::path::PathBuf>::new()
    );
}

/// Without `limit` and `cursor` the answer is every match, as always — but at most 10,000
/// (issue 19: the server never holds a million connections for one answer). More is a 400
/// that says how to page; a token limited to some connections gets every one it may see,
/// the server reading past the others.
#[test]
fn a_list_without_paging_holds_at_most_10000_connections() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    // c-00000 … c-10000: 10,001 connections, c-05000 the one http.
    let rows: Vec<Value> = (0..=10_000)
        .map(|i| {
            let kind = if i == 5_000 { "http" } else { "generic" };
            json!({"conn_id": format!("c-{i:05}"), "type": kind, "host": "h.example.com",
                   "port": 1})
        })
        .collect();
    let file = dir.path().join("many.json");
    std::fs::write(&file, Value::Array(rows).to_string()).unwrap();
    let imported = broked(
        &db,
        &["connections", "import", file.to_str().unwrap()],
        None,
        &[],
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let token = |name: &str, args: &[&str]| broked_tests::create_token(&db, name, args);
    let reader = token("reader", &["--scope", "read"]);
    let team = token("team", &["--scope", "read", "--conns", "c-0000*"]);
    let server = Server::start(dir.path(), &[]);
    let get = |path: &str, t: &str| server.call_with("GET", path, None, Some(t));

    let all = get("/api/connections", &reader);
    assert_eq!(all.status, 400, "{}", &all.text[..all.text.len().min(300)]);
    assert_eq!(all.json["error"]["code"], "bad_request");
    let message = all.json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("more than 10000") && message.contains("cursor"),
        "{message}"
    );
    // Exactly 10,000 match: the array, as before.
    let generic = get("/api/connections?type=generic", &reader);
    assert_eq!(generic.status, 200);
    let ids = column(&generic.json, "conn_id");
    assert_eq!(ids.len(), 10_000);
    assert_eq!((ids[0], ids[9_999]), ("c-00000", "c-10000"));
    assert!(!ids.contains(&"c-05000"));
    assert_eq!(
        column(&get("/api/connections?type=http", &reader).json, "conn_id"),
        ["c-05000"]
    );
    // The limited token: all ten it may see, read past the 9,991 others.
    let mine = get("/api/connections", &team);
    assert_eq!(mine.status, 200, "{}", mine.text);
    let expected: Vec<String> = (0..10).map(|i| format!("c-{i:05}")).collect();
    assert_eq!(column(&mine.json, "conn_id"), expected);
    // Pages still reach every connection.
    let last = get("/api/connections?limit=1000&cursor=c-09999", &reader);
    assert_eq!(column(&last.json["items"], "conn_id"), ["c-10000"]);
    assert!(last.json["next_cursor"].is_null());
}

/// Issue 19: the server keeps a list's answer while nothing is committed (for tokens that see
/// every connection). A write of another process, a test result, a rotation record — any
/// commit — is in the very next list; a token limited to some connections never gets the
/// answer kept for one that sees all, nor the other way round; a list answered from the kept
/// bytes is the one read anew.
#[test]
fn a_kept_list_is_never_older_than_the_last_commit_nor_shown_to_a_limited_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let token = |name: &str, args: &[&str]| broked_tests::create_token(&db, name, args);
    let server = Server::start(dir.path(), &[]);
    let admin = token("admin", &["--scope", "admin"]);
    let team = token("team", &["--scope", "read", "--conns", "team-*"]);
    let call = |method: &str, path: &str, body: Option<&str>, t: &str| {
        let r = server.call_with(method, path, body, Some(t));
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text);
        r
    };
    for id in ["team-a", "other-b"] {
        let body = json!({"conn_id": id, "type": "generic", "host": "127.0.0.1", "port": 1,
                          "password": PASSWORD});
        call("POST", "/api/connections", Some(&body.to_string()), &admin);
    }
    let ids = |r: &broked_tests::Reply| -> Vec<String> {
        column(&r.json, "conn_id")
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    let page_ids = |r: &broked_tests::Reply| -> Vec<String> {
        column(&r.json["items"], "conn_id")
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    // The same list twice: the second from the kept bytes, identical.
    let first = call("GET", "/api/connections", None, &admin);
    let again = call("GET", "/api/connections", None, &admin);
    assert_eq!(first.text, again.text);
    assert_eq!(ids(&first), ["other-b", "team-a"]);
    // The limited token after the full list was kept: only its own, in lists and pages.
    assert_eq!(
        ids(&call("GET", "/api/connections", None, &team)),
        ["team-a"]
    );
    let page = call("GET", "/api/connections?limit=10", None, &admin);
    assert_eq!(page_ids(&page), ["other-b", "team-a"]);
    let mine = call("GET", "/api/connections?limit=10", None, &team);
    assert_eq!(page_ids(&mine), ["team-a"]);
    // ... and the full token after the limited one listed: everything.
    assert_eq!(
        ids(&call("GET", "/api/connections", None, &admin)),
        ["other-b", "team-a"]
    );

    // Another process writes (the CLI on the same file): the next list has it, at once.
    let added = broked(
        &db,
        &[
            "connections",
            "add",
            "team-c",
            "--type",
            "generic",
            "--host",
            "127.0.0.1",
            "--port",
            "2",
        ],
        None,
        &[],
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert_eq!(
        ids(&call("GET", "/api/connections", None, &admin)),
        ["other-b", "team-a", "team-c"]
    );
    let page = call("GET", "/api/connections?limit=10", None, &admin);
    assert_eq!(page.json["total"], 3, "{}", page.text);
    // A single GET kept (read twice), then changed by the CLI below.
    for _ in 0..2 {
        let one = call("GET", "/api/connections/other-b", None, &admin);
        assert!(one.json["description"].is_null(), "{}", one.text);
    }
    // A description changed by the CLI: seen by the next list and GET, with its new version.
    let updated = broked(
        &db,
        &[
            "connections",
            "update",
            "other-b",
            "--description",
            "changed elsewhere",
        ],
        None,
        &[],
    );
    assert!(
        updated.status.success(),
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let list = call("GET", "/api/connections", None, &admin);
    let b = &list.json.as_array().unwrap()[0];
    assert_eq!(b["description"], "changed elsewhere");
    assert_eq!(b["version"], 2);
    let one = call("GET", "/api/connections/other-b", None, &admin);
    assert_eq!(one.json["description"], "changed elsewhere", "{}", one.text);
    let one = server.call_with("GET", "/api/connections/other-b", None, Some(&team));
    assert_eq!(
        one.status, 404,
        "outside the team token's globs: {}",
        one.text
    );
    // A test result is a commit too: the list shows it at once (port 1 refuses).
    let tested = call("POST", "/api/connections/team-a/test", None, &admin);
    assert_eq!(tested.json["success"], false, "{}", tested.text);
    let list = call("GET", "/api/connections?status=failing", None, &admin);
    assert_eq!(ids(&list), ["team-a"]);
    let list = call("GET", "/api/connections", None, &admin);
    assert_eq!(list.json.as_array().unwrap()[1]["last_test_ok"], false);
    // A delete of another process.
    let deleted = broked(&db, &["connections", "delete", "team-c"], None, &[]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert_eq!(
        ids(&call("GET", "/api/connections", None, &admin)),
        ["other-b", "team-a"]
    );
    assert_eq!(
        ids(&call("GET", "/api/connections", None, &team)),
        ["team-a"]
    );
    assert!(!server.log_text().contains(PASSWORD));
}
