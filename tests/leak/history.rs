//! The leak scan over the version history and the audit log (issue 17): distinctive passwords
//! and extra values written, replaced several times (through the API, with and without
//! `If-Match`, and the CLI), refused as stale, rolled back (API and CLI), re-sealed by a key
//! rotation, deleted and purged must never appear in any API answer (the versions list, each
//! version, rollbacks, 412s, the audit list), any CLI output (`history`, `rollback`, `purge`,
//! `audit list`, `audit verify`), the server's log, or any file below the data directory —
//! the database and its WAL while the server runs and after, the key file, the audit
//! checkpoint file: the kept versions hold their secrets sealed, the audit log names only.
//!
//! `get --uri` is the one output allowed to show a secret: the positive control that the
//! rolled-back passwords are really stored again (so a leak of them would be found).

use super::*;

const H_PW_1: &str = "HistLeakPwOne4Tz8Qa";
const H_PW_2: &str = "HistLeakPwTwo7Mc2Wd";
const H_PW_3: &str = "HistLeakPwThree5Xe9Fh";
const H_PW_STALE: &str = "HistLeakPwStale3Jn6Kb";
const H_PW_CLI: &str = "HistLeakPwCli8Ru1Gy";
const H_PW_GONE: &str = "HistLeakPwGone2Vs7Lp";
const H_X_1: &str = "HistLeakXtOne6Hd3Nc";
const H_X_2: &str = "HistLeakXtTwo9Bq4Ze";
const H_X_CLI: &str = "HistLeakXtCli1Wk5Pm";
const H_X_GONE: &str = "HistLeakXtGone5Ya8Rt";

const NEEDLES: [&str; 10] = [
    H_PW_1, H_PW_2, H_PW_3, H_PW_STALE, H_PW_CLI, H_PW_GONE, H_X_1, H_X_2, H_X_CLI, H_X_GONE,
];

/// A write with `If-Match: "version"` (none when `None`), recorded in the transcript.
fn write(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    version: Option<i64>,
) -> broked_tests::Reply {
    let mut req = server.request(method, path);
    if let Some(v) = version {
        req = req.header("if-match", format!("\"{v}\""));
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let r = server.send(req);
    assert!(r.status < 500, "{method} {path}: {} {}", r.status, r.text);
    r
}

/// Every file below `dir` that holds a needle, as "needle in path" lines.
fn files_with_needles(dir: &Path, when: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for n in NEEDLES {
        for path in files_containing(dir, n) {
            hits.push(format!("{n:?} in file {} ({when})", path.display()));
        }
    }
    hits
}

#[test]
fn no_secret_reaches_the_version_history_or_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let mut seen = Seen::default();
    let mut allowed = String::new();
    let server = Server::start(dir.path(), &["--keep-versions", "20"]);
    let read = |server: &Server, path: &str| {
        let r = server.call("GET", path, None);
        assert!(r.status < 500, "GET {path}: {} {}", r.status, r.text);
        r
    };

    // --- Versions 1..5 of hist-pg through the API: each password and extra replaced. ---
    let r = write(
        &server,
        "POST",
        "/api/connections",
        Some(
            json!({"conn_id": "hist-pg", "type": "postgres", "host": "127.0.0.1",
            "port": 1, "schema": "db", "login": "hist_user", "password": H_PW_1,
            "extra": json!({"application_name": H_X_1}).to_string()}),
        ),
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = write(
        &server,
        "PATCH",
        "/api/connections/hist-pg",
        Some(json!({"password": H_PW_2})),
        Some(1),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = write(
        &server,
        "PUT",
        "/api/connections/hist-pg",
        Some(
            json!({"type": "postgres", "host": "127.0.0.1", "port": 1, "schema": "db",
            "login": "hist_user", "password": H_PW_3,
            "extra": json!({"application_name": H_X_2}).to_string()}),
        ),
        Some(2),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // Stale writes carrying secrets: refused, never echoed.
    for (method, body) in [
        ("PATCH", json!({"password": H_PW_STALE})),
        (
            "PUT",
            json!({"type": "postgres", "host": "127.0.0.1", "port": 1, "password": H_PW_STALE,
                "extra": json!({"k": H_PW_STALE}).to_string()}),
        ),
    ] {
        let r = write(
            &server,
            method,
            "/api/connections/hist-pg",
            Some(body),
            Some(1),
        );
        assert_eq!(r.status, 412, "{}", r.text);
    }
    let r = write(
        &server,
        "POST",
        "/api/connections/hist-pg/rollback",
        Some(json!({"version": 1})),
        Some(1),
    );
    assert_eq!(r.status, 412, "{}", r.text);
    let r = write(
        &server,
        "PATCH",
        "/api/connections/hist-pg",
        Some(json!({"description": "only the description"})),
        Some(3),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // Roll back to 1: password and extra of version 1 again (version 5).
    let r = write(
        &server,
        "POST",
        "/api/connections/hist-pg/rollback",
        Some(json!({"version": 1})),
        Some(4),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["version"], 5, "{}", r.text);
    // Refused rollbacks: the current version, one never kept, a bad body.
    for (body, status) in [
        (json!({"version": 5}), 422),
        (json!({"version": 99}), 404),
        (json!({"version": H_PW_1}), 422),
    ] {
        let r = write(
            &server,
            "POST",
            "/api/connections/hist-pg/rollback",
            Some(body),
            None,
        );
        assert_eq!(r.status, status, "{}", r.text);
    }
    let control = cli(&db, &["connections", "get", "hist-pg", "--uri"], None);
    assert_eq!(control.code, 0, "{}", control.stderr);
    assert!(
        control.stdout.contains(H_PW_1),
        "control: the rollback restored password 1"
    );
    allowed.push_str(&control.stdout);

    // --- The CLI on the same database: an update, history, a rollback, the audit log. ---
    let extra_dir = tempfile::tempdir().unwrap();
    let extra_file = extra_dir.path().join("extra.json");
    std::fs::write(
        &extra_file,
        json!({"application_name": H_X_CLI}).to_string(),
    )
    .unwrap();
    let extra_arg = format!("@{}", extra_file.display());
    let out = cli_clean(
        &mut seen,
        &db,
        &[
            "connections",
            "update",
            "hist-pg",
            "--extra",
            &extra_arg,
            "--password-stdin",
        ],
        Some(&format!("{H_PW_CLI}\n")),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for args in [
        &["connections", "history", "hist-pg"][..],
        &["connections", "history", "hist-pg", "--output", "json"],
        &["connections", "history", "hist-pg", "--version", "1"],
        &[
            "connections",
            "history",
            "hist-pg",
            "--version",
            "3",
            "--output",
            "json",
        ],
        &["connections", "get", "hist-pg", "--output", "json"],
    ] {
        let out = cli_clean(&mut seen, &db, args, None);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    let out = cli_clean(
        &mut seen,
        &db,
        &["connections", "rollback", "hist-pg", "--to", "3"],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let control = cli(&db, &["connections", "get", "hist-pg", "--uri"], None);
    assert!(
        control.stdout.contains(H_PW_3) && control.stdout.contains(H_X_2),
        "control: the CLI rollback restored version 3's password and extra"
    );
    allowed.push_str(&control.stdout);
    // A key rotation re-seals the kept versions too; check opens every one.
    for args in [&["key", "rotate"][..], &["key", "check"], &["key", "prune"]] {
        let out = cli_clean(&mut seen, &db, args, None);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }

    // --- Every read of the history through the API. ---
    let list = read(&server, "/api/connections/hist-pg/versions");
    assert_eq!(list.status, 200, "{}", list.text);
    let newest = list.json[0]["version"].as_i64().expect("a version");
    assert!(newest >= 7, "{}", list.text);
    for n in 1..=newest {
        let r = read(&server, &format!("/api/connections/hist-pg/versions/{n}"));
        assert_eq!(r.status, 200, "version {n}: {}", r.text);
    }
    read(&server, "/api/connections/hist-pg");

    // --- A second connection: written, replaced, deleted (history kept), then purged. ---
    let r = write(
        &server,
        "POST",
        "/api/connections",
        Some(
            json!({"conn_id": "hist-gone", "type": "mysql", "host": "127.0.0.1",
            "port": 1, "login": "gone_user", "password": H_PW_GONE,
            "extra": json!({"charset": H_X_GONE}).to_string()}),
        ),
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = write(
        &server,
        "PATCH",
        "/api/connections/hist-gone",
        Some(json!({"description": "replaced"})),
        Some(1),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = write(
        &server,
        "DELETE",
        "/api/connections/hist-gone",
        None,
        Some(1),
    );
    assert_eq!(r.status, 412, "a stale delete: {}", r.text);
    let r = write(
        &server,
        "DELETE",
        "/api/connections/hist-gone",
        None,
        Some(2),
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let r = read(&server, "/api/connections/hist-gone/versions");
    assert_eq!(r.status, 200, "kept after the delete: {}", r.text);
    assert_eq!(r.json[0]["deleted"], true, "{}", r.text);
    for n in 1..=2 {
        read(&server, &format!("/api/connections/hist-gone/versions/{n}"));
    }
    let out = cli_clean(
        &mut seen,
        &db,
        &["connections", "history", "hist-gone"],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let r = write(
        &server,
        "DELETE",
        "/api/connections/hist-gone/versions",
        None,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        read(&server, "/api/connections/hist-gone/versions").status,
        404
    );
    // hist-pg deleted too, its history purged by the CLI.
    let r = write(&server, "DELETE", "/api/connections/hist-pg", None, None);
    assert_eq!(r.status, 204, "{}", r.text);
    let out = cli_clean(&mut seen, &db, &["connections", "purge", "hist-pg"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // --- The audit log: API, CLI, verify. ---
    for path in [
        "/api/audit?conn_id=hist-pg",
        "/api/audit?conn_id=hist-gone",
        "/api/audit?limit=1000",
    ] {
        let r = read(&server, path);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = read(&server, "/api/audit?conn_id=hist-pg&action=rollback");
    assert!(
        r.json["records"].as_array().is_some_and(|a| !a.is_empty()),
        "the rollbacks are recorded: {}",
        r.text
    );
    for args in [
        &["audit", "list", "--conn", "hist-pg"][..],
        &["audit", "list", "--conn", "hist-pg", "--output", "json"],
        &["audit", "list", "--limit", "1000", "--output", "json"],
        &["audit", "verify"],
    ] {
        let out = cli_clean(&mut seen, &db, args, None);
        assert_eq!(out.code, 0, "{args:?}: {}{}", out.stdout, out.stderr);
    }

    // --- The scan: files while the server runs (the WAL), then everything after it stops. ---
    let mut leaks = files_with_needles(dir.path(), "server running");
    let mut server = server;
    assert!(server.stop(), "clean shutdown");
    for body in server.transcript.lock().unwrap().iter() {
        seen.add("HTTP response", body.clone());
    }
    seen.add("server log", server.log_text());
    leaks.extend(files_with_needles(dir.path(), "server stopped"));
    for n in NEEDLES {
        for (label, text) in &seen.outputs {
            if text.contains(n) {
                leaks.push(format!("{n:?} in {label}: {text}"));
            }
        }
    }
    assert!(
        dir.path().join("broked.db.key.audit").exists(),
        "the audit checkpoint file exists and was scanned"
    );
    assert!(
        allowed.contains(H_PW_1) && allowed.contains(H_PW_3),
        "control: the needles can be found"
    );
    assert!(
        leaks.is_empty(),
        "secrets leaked ({} hits):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    assert!(
        seen.outputs.len() > 40,
        "scanned {} outputs",
        seen.outputs.len()
    );
}
