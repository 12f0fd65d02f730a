//! Issue 20, the server's rotation schedules (`extra.rotate_every`, docs/rotation.md) against
//! the real PostgreSQL, with roles of the test's own: a 2-second schedule rotates the password
//! on the server again and again (each time the stored password logs in and the one before does
//! not), and a failing schedule shows in `GET …/rotation`, in the list's rows and in
//! `/healthz` — without a secret. An invalid `rotate_every` is refused on save.

use std::time::{Duration, Instant};

use broked_tests::pg_role::{PgRole, stored_password};
use broked_tests::{Server, broked, env};
use serde_json::{Value, json};

const PW_INITIAL: &str = "SchedInitPw4Rt7Yq";
const PW_WRONG: &str = "SchedWrongPw8Hn2Xc";

fn create(server: &Server, body: Value) {
    let r = server.post("/api/connections", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Waits (up to 90 s: CI shares two cores) until `f` gives `Some`.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A 422 that names `extra.rotate_every` and not the value given.
#[track_caller]
fn refused_rotate_every(r: &broked_tests::Reply) {
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.json["error"]["code"], "invalid", "{}", r.text);
    let message = r.json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("extra.rotate_every"), "{}", r.text);
    assert!(!r.text.contains("Tq4"), "{}", r.text);
}

fn healthz_json(server: &Server) -> Value {
    let r = server.send(
        server
            .request("GET", "/healthz")
            .header("accept", "application/json"),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json
}

#[test]
fn a_schedule_rotates_on_the_server_and_failures_show_in_healthz() {
    let Some(pg) = env::postgres() else { return };
    let good = PgRole::new(pg.clone(), "sched", PW_INITIAL);
    let bad = PgRole::new(pg, "schedbad", PW_INITIAL);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let conn = |id: &str, role: &PgRole, password: &str, every: &str| {
        json!({"conn_id": id, "type": "postgres", "host": role.pg.get("HOST"),
               "port": role.pg.port(), "schema": role.pg.get("DB"), "login": role.name,
               "password": password,
               "extra": json!({"sslmode": "disable", "rotate_every": every}).to_string()})
    };
    create(&server, conn("sched", &good, PW_INITIAL, "2s"));
    // The stored password is not the role's: every scheduled attempt fails.
    create(&server, conn("sched-bad", &bad, PW_WRONG, "2s"));
    // Not a valid interval: refused on save (422 naming the key, not the value), by create,
    // PUT and PATCH alike, and nothing changes.
    let r = server.post(
        "/api/connections",
        &conn("sched-typo", &good, PW_INITIAL, "soon-Tq4").to_string(),
    );
    refused_rotate_every(&r);
    assert_eq!(server.get("/api/connections/sched-typo").status, 404);
    let r = server.put(
        "/api/connections/sched-bad",
        &conn("sched-bad", &bad, PW_WRONG, "soon-Tq4").to_string(),
    );
    refused_rotate_every(&r);
    let r = server.patch(
        "/api/connections/sched-bad",
        &json!({"extra": {"sslmode": "disable", "rotate_every": "soon-Tq4"}}).to_string(),
    );
    refused_rotate_every(&r);
    assert_eq!(server.get("/api/connections/sched-bad").json["version"], 1);

    // Two scheduled rotations in a row, each verified on the server.
    let first = wait_for("the first scheduled rotation", || {
        let p = stored_password(&server, "sched");
        (p != PW_INITIAL).then_some(p)
    });
    let second = wait_for("the second scheduled rotation", || {
        let p = stored_password(&server, "sched");
        (p != first).then_some(p)
    });
    // A third may land at any moment: read the stored one once more and check it.
    let now = stored_password(&server, "sched");
    assert!(good.logs_in(&now), "the stored password logs in");
    assert!(
        !good.logs_in(PW_INITIAL),
        "the initial password no longer does"
    );
    if now == second {
        assert!(
            !good.logs_in(&first),
            "the first rotated password no longer does"
        );
    }
    let status = server.get("/api/connections/sched/rotation");
    assert_eq!(status.status, 200, "{}", status.text);
    assert_eq!(status.json["rotate_every"], "2s");
    assert!(
        status.json["last_rotated_at"].is_string(),
        "{}",
        status.text
    );
    assert!(status.json["next_due_at"].is_string(), "{}", status.text);
    assert_eq!(status.json["last_error"], Value::Null, "{}", status.text);

    // The failing schedule, in the connection's status and in /healthz.
    let failing = wait_for("the failing schedule in /healthz", || {
        let h = healthz_json(&server);
        let ids = h["rotation"]["failing_conn_ids"].as_array().cloned()?;
        ids.iter().any(|v| v == "sched-bad").then_some(h)
    });
    assert_eq!(failing["status"], "ok");
    let ids: Vec<&str> = failing["rotation"]["failing_conn_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ids.contains(&"sched-bad"), "{failing}");
    assert!(!ids.contains(&"sched"), "{failing}");
    assert_eq!(failing["rotation"]["failing"], ids.len());
    let bad_status = server.get("/api/connections/sched-bad/rotation").json;
    assert!(bad_status["failures"].as_u64() >= Some(1), "{bad_status}");
    assert!(
        bad_status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("sched-bad")),
        "{bad_status}"
    );

    // The list shows both: when each was last rotated and is due, and the failing one.
    let list = server.get("/api/connections");
    assert_eq!(list.status, 200, "{}", list.text);
    let row = |id: &str| {
        list.json
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["conn_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {}", list.text))
    };
    let (ok_row, bad_row) = (row("sched"), row("sched-bad"));
    assert!(ok_row["last_rotated_at"].is_string(), "{ok_row}");
    assert!(ok_row["next_due_at"].is_string(), "{ok_row}");
    assert_eq!(ok_row["rotation_failing"], false, "{ok_row}");
    assert_eq!(ok_row["rotation_error"], Value::Null, "{ok_row}");
    assert_eq!(bad_row["last_rotated_at"], Value::Null, "{bad_row}");
    assert!(bad_row["next_due_at"].is_string(), "{bad_row}");
    assert_eq!(bad_row["rotation_failing"], true, "{bad_row}");
    assert!(
        bad_row["rotation_error"]
            .as_str()
            .is_some_and(|e| e.contains("sched-bad")),
        "{bad_row}"
    );
    // A page has the same rows.
    let page = server.get("/api/connections?limit=10");
    assert_eq!(
        page.json["items"].as_array().unwrap().len(),
        list.json.as_array().unwrap().len()
    );
    assert_eq!(
        page.json["items"][1]["rotation_error"],
        bad_row["rotation_error"]
    );
    // A row sent back as listed is accepted: the rotation fields are read-only, ignored.
    let r = server.put("/api/connections/sched-bad", &bad_row.to_string());
    assert_eq!(r.status, 200, "{}", r.text);
    // The role of the failing connection was not touched.
    assert!(bad.logs_in(PW_INITIAL));
    // Plain /healthz keeps its contract: 200 `ok`.
    let plain = server.get("/healthz");
    assert_eq!((plain.status, plain.text.as_str()), (200, "ok"));

    // No secret anywhere the server wrote or answered.
    drop(server.get("/api/connections/sched"));
    let transcript = server.log_text()
        + &failing.to_string()
        + &bad_status.to_string()
        + &list.text
        + &page.text;
    assert!(!transcript.contains("Tq4"), "a refused value was repeated");
    for secret in [
        PW_INITIAL,
        PW_WRONG,
        first.as_str(),
        second.as_str(),
        now.as_str(),
    ] {
        assert!(!transcript.contains(secret), "a password leaked");
    }
}

/// With an API token, `/healthz` (which needs none) counts failing rotations but does not
/// name the connections.
#[test]
fn healthz_does_not_name_connections_when_the_api_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", "sched-token-Zq81"]);
    // Nothing listens on the port: every scheduled attempt fails at once. (An invalid
    // interval, the other failure, is refused on save.)
    let r = server.post(
        "/api/connections",
        &json!({"conn_id": "typo", "type": "postgres", "host": "127.0.0.1",
                "port": broked_tests::free_port(), "login": "u", "password": "pw",
                "extra": r#"{"rotate_every":"1s","sslmode":"disable"}"#})
        .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let h = wait_for("a failing rotation counted", || {
        let h = healthz_json(&server);
        (h["rotation"]["failing"] == 1).then_some(h)
    });
    assert!(h["rotation"].get("failing_conn_ids").is_none(), "{h}");
    assert!(!h.to_string().contains("typo"), "{h}");
}

/// Without a bootstrap token, `/healthz` names failing connections only while the API needs
/// no token: a named token made with the CLI (another process) hides the names at once — not
/// at the schedule's next scan, up to 30 s later — and revoking it shows them again.
#[test]
fn healthz_stops_naming_connections_as_soon_as_a_named_token_exists() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let server = Server::start(dir.path(), &[]);
    // Nothing listens on the port: the first attempt (within the jitter, at most 6 s) fails;
    // the next is a minute later, so the schedule task sleeps its longest (30 s) before it
    // looks again.
    create(
        &server,
        json!({"conn_id": "unreachable", "type": "postgres", "host": "127.0.0.1",
               "port": broked_tests::free_port(), "login": "u", "password": "pw",
               "extra": {"rotate_every": "1m", "sslmode": "disable"}}),
    );
    let names = |h: &Value| h["rotation"].get("failing_conn_ids").cloned();
    wait_for("the failing rotation named", || {
        let h = healthz_json(&server);
        (names(&h) == Some(json!(["unreachable"]))).then_some(())
    });
    let cli = |args: &[&str]| {
        let o = broked(&db, args, None, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    cli(&["token", "create", "ops", "--scope", "read"]);
    let h = healthz_json(&server);
    assert_eq!(h["rotation"]["failing"], 1, "{h}");
    assert_eq!(names(&h), None, "named after a token was made: {h}");
    assert_eq!(server.get("/api/connections").status, 401);
    cli(&["token", "revoke", "ops"]);
    let h = healthz_json(&server);
    assert_eq!(names(&h), Some(json!(["unreachable"])), "{h}");
}
