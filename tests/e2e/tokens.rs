//! Issue 16: scoped API tokens through the real `broked-server` and `broked`: a role × route
//! matrix generated from the OpenAPI document, conn_id globs that hide everything outside
//! them, revocation, expiry, the bootstrap token and rate-limited failures.

use std::path::Path;

use broked_tests::{Server, broked, column};
use serde_json::{Value, json};

const BOOT: &str = "Boot-Tok-61c0a9";
const PW: &str = "Scope-Pw-77f1";

fn conn(id: &str) -> String {
    json!({"conn_id": id, "type": "generic", "host": "127.0.0.1", "port": 1, "password": PW})
        .to_string()
}

fn pipeline(conn_ids: &[&str]) -> String {
    let nodes: Vec<Value> = conn_ids
        .iter()
        .enumerate()
        .map(|(i, c)| json!({"id": format!("n{i}"), "type": "source", "config": {"conn_id": c}}))
        .collect();
    json!({"name": "p", "nodes": nodes}).to_string()
}

/// A server with the bootstrap token and: connections team-a-pg, team-b-pg; pipelines pa
/// (team-a-pg), pb (team-b-pg), mixed (both).
fn seeded(dir: &Path) -> Server {
    let server = Server::start(dir, &["--api-token", BOOT]);
    for id in ["team-a-pg", "team-b-pg"] {
        let r = server.post("/api/connections", &conn(id));
        assert_eq!(r.status, 201, "{}", r.text);
    }
    for (id, refs) in [
        ("pa", &["team-a-pg"][..]),
        ("pb", &["team-b-pg"]),
        ("mixed", &["team-a-pg", "team-b-pg"]),
    ] {
        let r = server.call(
            "PUT",
            &format!("/api/pipelines/{id}"),
            Some(&pipeline(refs)),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    server
}

/// The scope each route needs, by the rule documented in docs/api.md.
fn needed(method: &str, path: &str) -> Option<&'static str> {
    if path.starts_with("/api/tokens")
        || path == "/api/audit"
        // Purging a deleted connection's history (docs/api.md, version history).
        || (method == "delete" && path == "/api/connections/{conn_id}/versions")
    {
        Some("admin")
    } else if path == "/api/connection-types"
        || path == "/api/openapi.json"
        || path == "/api/whoami"
    {
        None
    } else if method == "post" && path.ends_with("/test") {
        Some("test")
    } else if method == "get" {
        Some("read")
    } else {
        Some("write")
    }
}

/// A request for the route that changes nothing even when allowed: path ids chosen so that
/// writes are refused by the handler (in use, invalid body) rather than carried out.
fn request_for(method: &str, path: &str) -> (String, Option<String>) {
    let p = path
        .replace("{conn_id}", "team-a-pg")
        .replace("{pipeline_id}", "no-such-pipeline")
        .replace("{name}", "no-such-token");
    let body = match method {
        "post" | "put" | "patch" => Some(
            if path == "/api/connections/{conn_id}" && method == "patch" {
                "{}".to_owned() // keeps everything
            } else {
                r#"{"unknown_field": 1}"#.to_owned() // refused by the parser
            },
        ),
        _ => None,
    };
    (p, body)
}

#[test]
fn every_route_checks_the_scope_of_the_token_generated_from_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path());
    let db = dir.path().join("broked.db");
    let doc = server.get("/api/openapi.json");
    assert_eq!(doc.status, 200);
    let scopes = ["read", "test", "write", "admin"];
    let tokens: Vec<(&str, String)> = scopes
        .iter()
        .map(|s| {
            (
                *s,
                broked_tests::create_token(&db, &format!("only-{s}"), &["--scope", s]),
            )
        })
        .collect();
    let mut checked = 0;
    for (path, ops) in doc.json["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let need = needed(method, path);
            let (url, body) = request_for(method, path);
            for (scope, token) in &tokens {
                let r =
                    server.call_with(&method.to_uppercase(), &url, body.as_deref(), Some(token));
                let allowed = need.is_none_or(|n| n == *scope || *scope == "admin");
                if allowed {
                    assert!(
                        ![401, 403].contains(&r.status),
                        "{method} {path} with {scope}: {} {}",
                        r.status,
                        r.text
                    );
                } else {
                    assert_eq!(r.status, 403, "{method} {path} with {scope}: {}", r.text);
                    assert_eq!(r.json["error"]["code"], "forbidden");
                }
                checked += 1;
            }
            // Without a token: 401, never the answer.
            let r = server.call_with(&method.to_uppercase(), &url, body.as_deref(), None);
            assert_eq!(r.status, 401, "{method} {path} without a token");
        }
    }
    assert!(
        checked >= 4 * 14,
        "the document lists the routes ({checked} checks)"
    );
    // Nothing was changed by the matrix.
    assert_eq!(
        server
            .get("/api/connections")
            .json
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_token_limited_to_some_connections_sees_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = seeded(dir.path());
    let db = dir.path().join("broked.db");
    let t = broked_tests::create_token(
        &db,
        "team-a",
        &["--scope", "read,test,write", "--conns", "team-a-*"],
    );
    let call = |m: &str, p: &str, b: Option<&str>| server.call_with(m, p, b, Some(&t));

    let list = call("GET", "/api/connections", None);
    let ids = column(&list.json, "conn_id");
    assert_eq!(ids, ["team-a-pg"]);
    // Outside the globs: exactly like a missing connection.
    let missing = call("GET", "/api/connections/team-c-none", None);
    for (m, p) in [
        ("GET", "/api/connections/team-b-pg"),
        ("PATCH", "/api/connections/team-b-pg"),
        ("DELETE", "/api/connections/team-b-pg"),
        ("POST", "/api/connections/team-b-pg/test"),
        ("GET", "/api/connections/team-b-pg/used-by"),
    ] {
        let r = call(m, p, (m == "PATCH").then_some("{}"));
        assert_eq!(r.status, 404, "{m} {p}: {}", r.text);
        assert_eq!(r.json["error"]["code"], missing.json["error"]["code"]);
        assert_eq!(
            r.text.replace("team-b-pg", "X"),
            missing.text.replace("team-c-none", "X"),
            "{m} {p} differs from a missing connection"
        );
    }
    // Pipelines that touch other connections are invisible.
    let r = call("GET", "/api/pipelines", None);
    let ids = column(&r.json, "pipeline_id");
    assert_eq!(ids, ["pa"]);
    assert_eq!(call("GET", "/api/pipelines/mixed", None).status, 404);
    assert_eq!(call("DELETE", "/api/pipelines/pb", None).status, 404);
    let r = call("GET", "/api/connections/team-a-pg/used-by", None);
    assert_eq!(
        r.json["pipelines"].as_array().unwrap().len(),
        1,
        "{}",
        r.text
    );
    assert_eq!(r.json["pipelines"][0]["pipeline_id"], "pa");
    // It cannot create outside its globs, nor point a pipeline at a connection there.
    assert_eq!(
        call("POST", "/api/connections", Some(&conn("team-b-new"))).status,
        403
    );
    let r = call(
        "PUT",
        "/api/pipelines/sneaky",
        Some(&pipeline(&["team-b-pg"])),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    // An unsaved test never reuses a stored secret outside the globs.
    let r = call(
        "POST",
        "/api/connections/test",
        Some(
            &json!({"conn_id": "team-b-pg", "type": "generic", "host": "127.0.0.1",
            "port": 1, "password": "********"})
            .to_string(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // Inside: everything works.
    assert_eq!(
        call("POST", "/api/connections", Some(&conn("team-a-new"))).status,
        201
    );
    // Nothing about team-b reached this token.
    for r in [
        call("GET", "/api/connections", None),
        call("GET", "/api/pipelines", None),
        call("GET", "/api/connections/team-a-pg/used-by", None),
    ] {
        assert!(
            !r.text.contains("team-b") && !r.text.contains("mixed"),
            "{}",
            r.text
        );
    }
    // Token management needs an admin token without conn limits.
    let admin_a =
        broked_tests::create_token(&db, "admin-a", &["--scope", "admin", "--conns", "team-a-*"]);
    let r = server.call_with("GET", "/api/tokens", None, Some(&admin_a));
    assert_eq!(r.status, 403, "{}", r.text);
}

#[test]
fn tokens_are_managed_by_cli_and_api_and_stop_working_when_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    // Tokenless on loopback, as in the seed: everything answers without a token...
    let server = Server::start(dir.path(), &[]);
    assert_eq!(server.post("/api/connections", &conn("c1")).status, 201);
    // ...but tokens cannot be made over the unauthenticated API.
    let r = server.post(
        "/api/tokens",
        &json!({"name": "x", "scopes": ["admin"]}).to_string(),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    // A token made with the CLI turns authentication on at once.
    let admin = broked_tests::create_token(&db, "ops", &["--scope", "admin"]);
    assert_eq!(server.get("/api/connections").status, 401);
    let r = server.call_with("GET", "/api/connections", None, Some(&admin));
    assert_eq!(r.status, 200, "{}", r.text);
    // The API: create (the token shown once), list (never the token), revoke.
    let r = server.call_with(
        "POST",
        "/api/tokens",
        Some(&json!({"name": "reader", "scopes": ["read"], "expires": "30d"}).to_string()),
        Some(&admin),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let reader = r.json["token"].as_str().unwrap().to_owned();
    assert!(reader.starts_with("brk_"));
    let list = server.call_with("GET", "/api/tokens", None, Some(&admin));
    assert!(!list.text.contains(&reader) && !list.text.contains(&admin));
    assert!(list.text.contains("\"reader\"") && list.text.contains("\"ops\""));
    let o = broked(&db, &["token", "list"], None, &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("reader") && !text.contains(&reader), "{text}");
    assert_eq!(
        server
            .call_with("GET", "/api/connections", None, Some(&reader))
            .status,
        200
    );
    assert_eq!(
        server
            .call_with("DELETE", "/api/connections/c1", None, Some(&reader))
            .status,
        403
    );
    let r = server.call_with(
        "POST",
        "/api/tokens",
        Some(r#"{"name": "reader", "scopes": ["read"]}"#),
        Some(&admin),
    );
    assert_eq!(r.status, 409, "{}", r.text);
    let r = server.call_with(
        "POST",
        "/api/tokens",
        Some(r#"{"name": "Bad!", "scopes": ["root"]}"#),
        Some(&admin),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    // Revoked from the CLI while the server runs: refused on the next request.
    let o = broked(&db, &["token", "revoke", "reader"], None, &[]);
    assert!(o.status.success());
    let r = server.call_with("GET", "/api/connections", None, Some(&reader));
    assert_eq!(r.status, 401);
    let unknown = server.call_with("GET", "/api/connections", None, Some("brk_nope"));
    assert_eq!(
        r.text, unknown.text,
        "a revoked token looks like any bad token"
    );
    let r = server.call_with("DELETE", "/api/tokens/ops", None, Some(&admin));
    assert_eq!(r.status, 204);
    // The last token gone: the seed's tokenless loopback API again.
    assert_eq!(server.get("/api/connections").status, 200);
    // The token never reached the database or the log in clear.
    assert!(broked_tests::files_containing(dir.path(), &admin).is_empty());
    assert!(broked_tests::files_containing(dir.path(), &reader).is_empty());
}

#[test]
fn tokens_with_an_expiry_and_rate_limited_failures() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", BOOT]);
    let r = server.call_with(
        "POST",
        "/api/tokens",
        Some(&json!({"name": "soon", "scopes": ["read"], "expires": "1m"}).to_string()),
        None,
    );
    assert_eq!(r.status, 401);
    let r = server.call(
        "POST",
        "/api/tokens",
        Some(&json!({"name": "soon", "scopes": ["read"], "expires": "1m"}).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json["expires_at"].is_string());
    // Repeated failures from one address: 429 with Retry-After, also for a good token then.
    let mut last = 0;
    for _ in 0..32 {
        last = server
            .call_with("GET", "/api/connections", None, Some("brk_wrong"))
            .status;
    }
    assert_eq!(last, 429);
    let r = server.send(server.request("GET", "/api/connections").bearer_auth(BOOT));
    assert_eq!(r.status, 429, "{}", r.text);
    // Another client address (127.0.0.2, also loopback) is not held up.
    let other = reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = other
        .get(format!("{}/api/connections", server.base))
        .bearer_auth(BOOT)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn a_limited_token_cannot_tunnel_through_a_bastion_outside_its_globs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", BOOT]);
    let db = dir.path().join("broked.db");
    let bastion = |id: &str, extra: Value| {
        json!({"conn_id": id, "type": "sftp", "host": "127.0.0.1", "port": 22,
               "login": "jump", "password": PW, "extra": extra})
        .to_string()
    };
    let pin = json!({"host_key": "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"});
    let r = server.post("/api/connections", &bastion("team-b-bastion", pin.clone()));
    assert_eq!(r.status, 201, "{}", r.text);
    // A bastion inside team-a's globs that itself goes through team-b's.
    let mut chained = pin.clone();
    chained["ssh_tunnel"] = json!("team-b-bastion");
    let r = server.post("/api/connections", &bastion("team-a-bastion", chained));
    assert_eq!(r.status, 201, "{}", r.text);
    let t = broked_tests::create_token(
        &db,
        "team-a",
        &["--scope", "read,test,write", "--conns", "team-a-*"],
    );
    let call = |m: &str, p: &str, b: &str| server.call_with(m, p, Some(b), Some(&t));
    let through = |id: &str, via: &str| {
        json!({"conn_id": id, "type": "postgres", "host": "127.0.0.1", "login": "u",
               "password": PW, "extra": {"ssh_tunnel": via}})
        .to_string()
    };
    let missing = call(
        "POST",
        "/api/connections",
        &through("team-a-db", "team-a-none"),
    );
    assert_eq!(missing.status, 422, "{}", missing.text);
    for via in ["team-b-bastion", "team-a-bastion"] {
        for (m, p, body) in [
            ("POST", "/api/connections", through("team-a-db", via)),
            ("POST", "/api/connections/test", through("team-a-db", via)),
        ] {
            let r = call(m, p, &body);
            assert_eq!(r.status, 422, "{m} {p} via {via}: {}", r.text);
            assert_eq!(r.json["error"]["fields"][0]["field"], "extra", "{}", r.text);
            assert!(
                !r.text.contains("team-b") || via == "team-b-bastion",
                "{}",
                r.text
            );
        }
    }
    // The same answer as for a bastion that does not exist.
    let r = call(
        "POST",
        "/api/connections",
        &through("team-a-db", "team-b-bastion"),
    );
    assert_eq!(
        r.text.replace("team-b-bastion", "X"),
        missing.text.replace("team-a-none", "X")
    );
    // Nothing was stored; and an update cannot do it either.
    assert_eq!(server.get("/api/connections/team-a-db").status, 404);
    let r = call("POST", "/api/connections", &conn("team-a-plain"));
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        "PATCH",
        "/api/connections/team-a-plain",
        &json!({"password": PW, "extra": {"ssh_tunnel": "team-b-bastion"}}).to_string(),
    );
    assert_eq!(r.status, 422, "{}", r.text);
    // The bootstrap token (every connection) may.
    let r = server.post("/api/connections", &through("team-a-db", "team-b-bastion"));
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Checking a limited token's bastions reads only their names: the create leaves its own
/// record and no reveal (the bastion's secrets never left the library).
#[test]
fn checking_the_bastions_of_a_limited_token_reveals_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", BOOT]);
    let db = dir.path().join("broked.db");
    let bastion = json!({"conn_id": "team-a-bastion", "type": "sftp", "host": "127.0.0.1",
        "port": 22, "login": "jump", "password": PW,
        "extra": {"host_key": "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}});
    let r = server.post("/api/connections", &bastion.to_string());
    assert_eq!(r.status, 201, "{}", r.text);
    let t = broked_tests::create_token(&db, "team-a", &["--scope", "write", "--conns", "team-a-*"]);
    let body = json!({"conn_id": "team-a-db", "type": "postgres", "host": "127.0.0.1",
        "login": "u", "password": PW, "extra": {"ssh_tunnel": "team-a-bastion"}});
    let r = server.call_with(
        "POST",
        "/api/connections",
        Some(&body.to_string()),
        Some(&t),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let audit = |action: &str| {
        let r = server.call_with(
            "GET",
            &format!("/api/audit?action={action}"),
            None,
            Some(BOOT),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r.json["records"].as_array().unwrap().clone()
    };
    let created = audit("create");
    assert!(
        created
            .iter()
            .any(|rec| rec["conn_id"] == "team-a-db" && rec["actor"] == "team-a"),
        "{created:?}"
    );
    assert_eq!(audit("reveal"), Vec::<Value>::new());
}

/// A token check that must read the database does so off the server's async workers: while
/// PostgreSQL holds the tokens table locked (another session's `LOCK TABLE`), requests whose
/// token must be looked up (the first after a commit) wait — more of them than the server has
/// workers — and `/healthz` and the bootstrap token still answer at once. Inline on the
/// workers, every worker waited for the lock with them.
#[test]
fn a_token_lookup_that_waits_for_postgres_holds_no_worker() {
    use std::time::{Duration, Instant};
    let Some(pg) = broked_tests::env::postgres() else {
        return;
    };
    let schema = broked_tests::env::PgSchema::in_service(&pg);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("shared.key");
    let envs = [
        ("BROKED_DB", schema.url.as_str()),
        ("BROKED_KEY_FILE", key.to_str().unwrap()),
    ];
    let server = Server::start_with_env(
        dir.path(),
        &["--api-token", BOOT, "--store-timeout", "10"],
        &envs,
    );
    let r = server.post(
        "/api/tokens",
        &json!({"name": "reader", "scopes": ["read"]}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let reader = r.json["token"].as_str().unwrap().to_owned();
    let ok = server.call_with("GET", "/api/connections", None, Some(&reader));
    assert_eq!(ok.status, 200, "{}", ok.text);
    // A commit: the next check of the reader's token reads the tokens table.
    assert_eq!(server.post("/api/connections", &conn("c1")).status, 201);
    std::thread::scope(|s| {
        let locked = s.spawn(|| {
            schema.psql(&format!(
                "BEGIN; LOCK TABLE {}.tokens IN ACCESS EXCLUSIVE MODE; \
                 SELECT pg_sleep(3); COMMIT;",
                schema.schema
            ))
        });
        std::thread::sleep(Duration::from_millis(500));
        let waiting: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    server
                        .call_with("GET", "/api/connections", None, Some(&reader))
                        .status
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        // The lookups wait for the lock; the workers do not.
        let start = Instant::now();
        assert_eq!(server.get("/healthz").status, 200);
        let boot = server.get("/api/connections/c1");
        assert_eq!(boot.status, 200, "{}", boot.text);
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(1500),
            "/healthz and a bootstrap GET took {took:?} while token lookups waited"
        );
        locked.join().unwrap();
        // Then they are answered.
        for w in waiting {
            assert_eq!(w.join().unwrap(), 200);
        }
    });
}
