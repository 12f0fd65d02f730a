//! Issue 10: several `broked-server` replicas on one PostgreSQL database and one key file.

use std::path::Path;
use std::process::Command;

use broked_tests::{Server, bin, env};
// A fresh schema in the test database, dropped at the end; its URL reaches only it.
use env::PgSchema as Schema;
use serde_json::{Value, json};

fn cli(dir: &Path, envs: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("broked"))
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(dir)
        .output()
        .expect("broked");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn two_replicas_share_one_postgres_database() {
    let Some(pg) = env::postgres() else { return };
    let schema = Schema::in_service(&pg);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("shared.key");
    let key_s = key.to_str().unwrap();
    let envs = [
        ("BROKED_DB", schema.url.as_str()),
        ("BROKED_KEY_FILE", key_s),
    ];

    // Without the key file option: refused, saying why, without the database password.
    let out = broked_tests::server_output(dir.path(), &[], &[("BROKED_DB", schema.url.as_str())]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(text.contains("--key-file"), "{text}");
    assert!(!text.contains(&schema.password), "{text}");

    let mut a = Server::start_with_env(dir.path(), &[], &envs);
    let b = Server::start_with_env(dir.path(), &[], &envs);

    // Create on one, read and test on the other: the real PostgreSQL as the target.
    let secret = "Replica-Pw-5519";
    let body = json!({"conn_id": "target", "type": "postgres", "host": pg.get("HOST"),
        "port": pg.port(), "schema": pg.get("DB"), "login": pg.get("USER"), "password": pg.get("PASSWORD")});
    assert_eq!(a.post("/api/connections", &body.to_string()).status, 201);
    let got = b.get("/api/connections/target");
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.json["password"], "********");
    let tested = b.post("/api/connections/target/test", "");
    assert_eq!(tested.json["success"], true, "{}", tested.text);
    let patch = b.call(
        "PATCH",
        "/api/connections/target",
        Some(r#"{"description": "from b"}"#),
    );
    assert_eq!(patch.status, 200, "{}", patch.text);
    assert_eq!(
        a.get("/api/connections/target").json["description"],
        "from b"
    );

    // Concurrent writers on both replicas.
    std::thread::scope(|s| {
        for (name, server) in [("a", &a), ("b", &b)] {
            s.spawn(move || {
                for i in 0..15 {
                    let body = json!({"conn_id": format!("{name}-{i}"), "type": "generic",
                        "host": "127.0.0.1", "port": 9, "password": secret});
                    let r = server.post("/api/connections", &body.to_string());
                    assert_eq!(r.status, 201, "{}", r.text);
                }
            });
        }
    });
    let list_a = a.get("/api/connections").json;
    let list_b = b.get("/api/connections").json;
    assert_eq!(list_a.as_array().unwrap().len(), 31);
    assert_eq!(list_a, list_b);

    // Rotation from the CLI while both serve; both keep reading and writing.
    let (ok, text) = cli(dir.path(), &envs, &["key", "rotate"]);
    assert!(ok, "{text}");
    assert!(b.post("/api/connections/target/test", "").json["success"] == true);
    let body = json!({"conn_id": "after-rotate", "type": "generic", "host": "127.0.0.1", "port": 9, "password": secret});
    assert_eq!(a.post("/api/connections", &body.to_string()).status, 201);
    let (ok, text) = cli(dir.path(), &envs, &["key", "check"]);
    assert!(ok, "{text}");

    // Killing one replica loses nothing; the other deletes; a restarted one agrees.
    a.kill();
    let listed: Value = b.get("/api/connections").json;
    assert_eq!(listed.as_array().unwrap().len(), 32);
    assert_eq!(b.call("DELETE", "/api/connections/a-3", None).status, 204);
    let a2 = Server::start_with_env(dir.path(), &[], &envs);
    assert_eq!(a2.get("/api/connections/a-3").status, 404);
    assert_eq!(
        a2.get("/api/connections/after-rotate").json["password"],
        "********"
    );

    // No secret, and not the database password, in any log or response.
    for server in [&b, &a2] {
        let log = server.log_text();
        for needle in [secret, schema.password.as_str()] {
            assert!(!log.contains(needle), "log leaks a secret");
            assert!(
                server
                    .transcript
                    .lock()
                    .unwrap()
                    .iter()
                    .all(|t| !t.contains(needle))
            );
        }
    }
}
