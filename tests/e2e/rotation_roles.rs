//! Issue 20, dual-role rotation (`extra.rotation_roles`, docs/rotation.md) through the real
//! `broked-server` and `broked` against the test PostgreSQL, with roles of the test's own: the
//! API and the CLI rotate the role not in use and report it, the login switches, the role
//! switched from keeps its password; and a writer token that cannot read secrets cannot make
//! the admin connection change a role of its choice (docs/security.md).

use broked_tests::pg_role::{PgRole, stored_password};
use broked_tests::{Server, broked, env};
use serde_json::{Value, json};

const BOOT: &str = "Dual-Boot-Tok-3f9a1c";
const PW_A: &str = "DualE2eApw4Kx9";
const PW_B: &str = "DualE2eBpw7Qm2";
const PW_VICTIM: &str = "DualE2eVictim5Ry8";
const PW_MADE_UP: &str = "DualE2eMadeUp1Wz6";

fn pg_conn(role: &PgRole, id: &str, login: &str, password: &str, extra: Value) -> String {
    let mut extra = extra;
    extra["sslmode"] = json!("disable");
    json!({"conn_id": id, "type": "postgres", "host": role.pg.get("HOST"),
           "port": role.pg.port(), "schema": role.pg.get("DB"), "login": login,
           "password": password, "extra": extra.to_string()})
    .to_string()
}

/// `pg-admin` (the suite's PostgreSQL user, listing `allowed`) and `pg-dual` (login `a`,
/// alternating with `b` through `pg-admin`), created with `token` (the server's own if none).
fn seed(server: &Server, a: &PgRole, b: &PgRole, allowed: &[&str]) {
    let admin = pg_conn(
        a,
        "pg-admin",
        a.pg.get("USER"),
        a.pg.get("PASSWORD"),
        json!({"rotation_allowed_roles": allowed}),
    );
    let r = server.post("/api/connections", &admin);
    assert_eq!(r.status, 201, "{}", r.text);
    let dual = pg_conn(
        a,
        "pg-dual",
        &a.name,
        PW_A,
        json!({"rotation_conn_id": "pg-admin", "rotation_roles": [a.name, b.name]}),
    );
    let r = server.post("/api/connections", &dual);
    assert_eq!(r.status, 201, "{}", r.text);
}

#[test]
fn the_api_and_the_cli_rotate_the_role_not_in_use_and_report_it() {
    let Some(pg) = env::postgres() else { return };
    let a = PgRole::new(pg.clone(), "e2eduala", PW_A);
    let b = PgRole::new(pg, "e2edualb", PW_B);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let db = dir.path().join("broked.db");
    seed(&server, &a, &b, &[&a.name, &b.name]);

    // The API: the role rotated is b, the login switches to it; a keeps its password.
    let r = server.post("/api/connections/pg-dual/rotate-password", "");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["role"], b.name.as_str(), "{}", r.text);
    assert_eq!(r.json["previous_role"], a.name.as_str(), "{}", r.text);
    assert_eq!(r.json["via"], "pg-admin", "{}", r.text);
    assert_eq!(r.json["sent_as"], "scram-sha-256-verifier");
    let got = server.get("/api/connections/pg-dual");
    assert_eq!(got.json["login"], b.name.as_str(), "{}", got.text);
    let b_pw = stored_password(&server, "pg-dual");
    assert!(b.logs_in(&b_pw) && !b.logs_in(PW_B));
    assert!(a.logs_in(PW_A), "the role switched from keeps its password");

    // The CLI, on the same database while the server runs: back to a.
    let o = broked(
        &db,
        &[
            "connections",
            "rotate-password",
            "pg-dual",
            "--output",
            "json",
        ],
        None,
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["role"], a.name.as_str(), "{v}");
    assert_eq!(v["previous_role"], b.name.as_str(), "{v}");
    assert_eq!(v["via"], "pg-admin", "{v}");
    let a_pw = stored_password(&server, "pg-dual");
    assert!(a.logs_in(&a_pw) && !a.logs_in(PW_A));
    assert!(
        b.logs_in(&b_pw),
        "b keeps the password of the version before"
    );
    assert_eq!(
        server.get("/api/connections/pg-dual").json["login"],
        a.name.as_str()
    );

    // The CLI's text names both roles.
    let o = broked(
        &db,
        &["connections", "rotate-password", "pg-dual"],
        None,
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains(&format!("the password of {} (pg-dual)", b.name))
            && text.contains(&format!("the login switched from {}", a.name)),
        "{text}"
    );
    let b_pw2 = stored_password(&server, "pg-dual");
    assert!(b.logs_in(&b_pw2) && !b.logs_in(&b_pw) && a.logs_in(&a_pw));

    // One version per rotation, each changing the login and the password — and writing the
    // extra again, the same value: sealed values are bound to the login.
    let versions = server.get("/api/connections/pg-dual/versions");
    assert_eq!(versions.status, 200, "{}", versions.text);
    let list = versions.json.as_array().expect("a list");
    assert_eq!(list.len(), 4, "created + 3 rotations: {}", versions.text);
    for v in &list[..3] {
        assert_eq!(
            v["changed"],
            json!(["login", "password", "extra"]),
            "{}",
            versions.text
        );
    }
    // No password in any answer, the CLI's output or the server's log.
    let log = server.log_text();
    for secret in [PW_A, PW_B, &b_pw, &a_pw, &b_pw2, a.pg.get("PASSWORD")] {
        assert!(!log.contains(secret), "a password in the server's log");
        assert!(!r.text.contains(secret) && !versions.text.contains(secret));
        assert!(!text.contains(secret) && !v.to_string().contains(secret));
    }
}

/// The attack of docs/security.md: a writer token (no secret ever readable through the API)
/// tries to have the admin connection change the password of a role of its choice, and a
/// token limited to some connections tries to use an admin outside them. Every attempt is
/// refused before anything changes on the server.
#[test]
fn a_writer_cannot_point_an_admin_at_a_role_of_their_choice() {
    let Some(pg) = env::postgres() else { return };
    let a = PgRole::new(pg.clone(), "e2eatka", PW_A);
    let b = PgRole::new(pg.clone(), "e2eatkb", PW_B);
    let victim = PgRole::new(pg, "e2evictim", PW_VICTIM);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", BOOT]);
    let db = dir.path().join("broked.db");
    seed(&server, &a, &b, &[&a.name, &b.name]);
    let writer = broked_tests::create_token(&db, "writer", &["--scope", "read,test,write"]);
    let team_b = broked_tests::create_token(
        &db,
        "team-b",
        &["--scope", "read,test,write", "--conns", "team-b-*"],
    );
    let call = |token: &str, m: &str, p: &str, body: Option<&str>| {
        server.call_with(m, p, body, Some(token))
    };
    let merge_patch = |token: &str, p: &str, body: Value| {
        server.send(
            server
                .request("PATCH", p)
                .bearer_auth(token)
                .header("content-type", "application/merge-patch+json")
                .body(body.to_string()),
        )
    };
    let unchanged = || {
        assert!(a.logs_in(PW_A) && b.logs_in(PW_B) && victim.logs_in(PW_VICTIM));
    };
    let fields = |r: &broked_tests::Reply| -> Vec<String> {
        r.json["error"]["fields"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };

    // 1. The role not in use pointed at the victim by a merge patch, the password kept: the
    //    patch is taken (it moves no secret), the rotation refused.
    let r = merge_patch(
        &writer,
        "/api/connections/pg-dual",
        json!({"extra": {"rotation_roles": [a.name, victim.name]}}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &writer,
        "POST",
        "/api/connections/pg-dual/rotate-password",
        None,
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("rotation_allowed_roles"), "{}", r.text);
    assert!(!r.text.contains(&victim.name), "{}", r.text);
    unchanged();

    // 2. A connection of the writer's own: the victim's login, a made-up password, the admin.
    let own = pg_conn(
        &a,
        "writer-own",
        &victim.name,
        PW_MADE_UP,
        json!({"rotation_conn_id": "pg-admin"}),
    );
    let r = call(&writer, "POST", "/api/connections", Some(&own));
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &writer,
        "POST",
        "/api/connections/writer-own/rotate-password",
        None,
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(fields(&r), ["password"], "{}", r.text);
    unchanged();

    // 3. Widening the admin's list with its password kept: refused naming the password.
    let r = merge_patch(
        &writer,
        "/api/connections/pg-admin",
        json!({"extra": {"rotation_allowed_roles": [a.name, b.name, victim.name]}}),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(fields(&r), ["password"], "{}", r.text);
    assert!(r.text.contains("rotation_allowed_roles"), "{}", r.text);
    let r = call(
        &writer,
        "POST",
        "/api/connections/pg-dual/rotate-password",
        None,
    );
    assert_eq!(r.status, 422, "{}", r.text);
    unchanged();

    // 4. A token limited to team-b-* may not name the admin (outside its globs): answered
    //    like a connection that does not exist, on create and on a merge patch.
    let limited = |admin: &str| {
        pg_conn(
            &a,
            "team-b-x",
            &victim.name,
            PW_MADE_UP,
            json!({"rotation_conn_id": admin}),
        )
    };
    let r = call(
        &team_b,
        "POST",
        "/api/connections",
        Some(&limited("pg-admin")),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    let r_missing = call(
        &team_b,
        "POST",
        "/api/connections",
        Some(&limited("team-b-none")),
    );
    // team-b-none is inside the globs and does not exist: the create is taken, the rotation
    // would name it; pg-admin's refusal reads like a missing connection.
    assert_eq!(r_missing.status, 201, "{}", r_missing.text);
    assert!(
        r.text.contains("there is no connection \\\"pg-admin\\\""),
        "{}",
        r.text
    );
    let r = merge_patch(
        &team_b,
        "/api/connections/team-b-x",
        json!({"extra": {"Rotation-Conn-Id": "pg-admin"}}),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    let r = call(
        &team_b,
        "POST",
        "/api/connections/team-b-x/rotate-password",
        None,
    );
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("team-b-none"), "{}", r.text);
    unchanged();

    // Nothing secret in any answer or the log.
    let log = server.log_text();
    for secret in [PW_A, PW_B, PW_VICTIM, PW_MADE_UP, a.pg.get("PASSWORD")] {
        assert!(!log.contains(secret), "a password in the server's log");
    }
}
