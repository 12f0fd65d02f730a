//! Leak scan (issue 9): drive the server and the CLI with distinctive passwords and extra
//! values through every operation that touches them, then search everything a user, an
//! operator or an attacker with read access to the data directory could see — database, WAL,
//! files beside the key, server log, CLI stdout/stderr, every HTTP response — for them.
//!
//! Only `broked connections get --uri` and `export --decrypted` may show a secret; their
//! output is kept apart and used as the positive control that the needles can be found.

mod history;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use base64::Engine as _;
use broked_tests::{Server, broked, env, files_containing};
use serde_json::json;

/// Passwords and extra values that exist nowhere else: any hit is a leak.
const PW_CREATE: &str = "LeakPwCreate7Qx3Zk";
const PW_PUT: &str = "LeakPwPut4Hn8Vw";
const PW_PATCH: &str = "LeakPwPatch2Rm5Ty";
const PW_UNSAVED: &str = "LeakPwUnsaved9Jd1Ce";
const PW_CLI: &str = "LeakPwCli6Gb2Xs";
const PW_CLI_UPDATE: &str = "LeakPwCliUpd3Lp7Nq";
const PW_HTTP: &str = "LeakPwHttp8Ws4Ke";
const PW_BAD_INPUT: &str = "LeakPwBadInput5Zu2";
const EXTRA_CREATE: &str = "LeakXtCreate1Fv6Wm";
const EXTRA_PATCH: &str = "LeakXtPatch7Dk9Ra";
const EXTRA_CLI: &str = "LeakXtCli3Pt8Yh";
const EXTRA_HEADER: &str = "LeakXtHeader4Bn1Oc";
const EXTRA_BAD: &str = "LeakXtBad6Mj3Qe";

fn needles() -> Vec<String> {
    let mut v: Vec<String> = [
        PW_CREATE,
        PW_PUT,
        PW_PATCH,
        PW_UNSAVED,
        PW_CLI,
        PW_CLI_UPDATE,
        PW_HTTP,
        PW_BAD_INPUT,
        EXTRA_CREATE,
        EXTRA_PATCH,
        EXTRA_CLI,
        EXTRA_HEADER,
        EXTRA_BAD,
    ]
    .map(str::to_owned)
    .to_vec();
    // The HTTP probe sends basic auth: its header value must not surface either.
    v.push(base64::engine::general_purpose::STANDARD.encode(format!("leak_user:{PW_HTTP}")));
    // The real services' passwords, when the tests use them.
    if let Some(pg) = env::postgres() {
        v.push(pg.get("PASSWORD").to_owned());
    }
    if let Some(my) = env::mysql() {
        v.push(my.get("PASSWORD").to_owned());
    }
    v
}

/// Every output that must be free of secrets, labelled for the failure message.
#[derive(Default)]
struct Seen {
    outputs: Vec<(String, String)>,
}

impl Seen {
    fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.outputs.push((label.into(), text.into()));
    }
}

struct CliOut {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `broked` with every log level on (whatever it logs is scanned too).
fn cli(db: &Path, args: &[&str], stdin: Option<&str>) -> CliOut {
    let out = broked(
        db,
        args,
        stdin,
        &[("BROKED_LOG", "trace"), ("RUST_LOG", "trace")],
    );
    CliOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the CLI and records both streams as output that must be clean.
fn cli_clean(seen: &mut Seen, db: &Path, args: &[&str], stdin: Option<&str>) -> CliOut {
    let out = cli(db, args, stdin);
    let label = format!("broked {}", args.join(" "));
    seen.add(format!("{label} (stdout)"), out.stdout.clone());
    seen.add(format!("{label} (stderr)"), out.stderr.clone());
    out
}

/// An HTTP server on loopback that answers 401 to everything and echoes the request head in
/// its body (as a careless API would); returns its port.
fn echo_401_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let resp = format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"{head_len}\"\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{head}",
                head.len(),
                head_len = head.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    port
}

#[test]
fn no_secret_reaches_any_output_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let mut seen = Seen::default();
    // Output that is allowed to show a secret: the positive control.
    let mut allowed = String::new();

    let mut server = Server::start(dir.path(), &["--probe-timeout", "3"]);
    let api = |server: &Server, method: &str, path: &str, body: Option<serde_json::Value>| {
        let body = body.map(|b| b.to_string());
        let r = server.call(method, path, body.as_deref());
        assert!(r.status < 500, "{method} {path}: {} {}", r.status, r.text);
        r
    };

    // --- API: create, read, update in every form, test, pipelines, bad input. ---
    let r = api(
        &server,
        "POST",
        "/api/connections",
        Some(json!({
            "conn_id": "leak-pg", "type": "postgres", "host": "127.0.0.1", "port": 1,
            "schema": "db", "login": "leak_user", "password": PW_CREATE,
            "extra": json!({"sslmode": "disable", "application_name": EXTRA_CREATE}).to_string(),
            "description": "leak scan"
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    api(&server, "GET", "/api/connections", None);
    api(&server, "GET", "/api/connections/leak-pg", None);
    api(&server, "GET", "/api/connections?type=postgres", None);
    // A failing test (connection refused) with the stored secret.
    let r = api(&server, "POST", "/api/connections/leak-pg/test", None);
    assert_eq!(r.json["success"], false, "{}", r.text);
    let r = api(
        &server,
        "PUT",
        "/api/connections/leak-pg",
        Some(json!({
            "conn_id": "leak-pg", "type": "postgres", "host": "127.0.0.1", "port": 1,
            "login": "leak_user", "password": PW_PUT, "extra": "********"
        })),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = api(
        &server,
        "PATCH",
        "/api/connections/leak-pg",
        Some(json!({"password": PW_PATCH,
            "extra": json!({"application_name": EXTRA_PATCH}).to_string()})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    api(&server, "POST", "/api/connections/leak-pg/test", None);
    // An unsaved connection, tested (the UI's Test button before Save).
    api(
        &server,
        "POST",
        "/api/connections/test",
        Some(
            json!({"conn_id": "unsaved", "type": "mysql", "host": "127.0.0.1", "port": 1,
            "login": "u", "password": PW_UNSAVED}),
        ),
    );
    // Bad input that carries secrets: the error must describe the problem, not echo the input.
    for body in [
        json!({"conn_id": "Bad Id!", "type": "postgres", "host": "h", "password": PW_BAD_INPUT,
            "extra": json!({"k": EXTRA_BAD}).to_string()}),
        json!({"conn_id": "bad-port", "type": "postgres", "host": "h", "port": 70000,
            "password": PW_BAD_INPUT}),
        json!({"conn_id": "bad-extra", "type": "postgres", "host": "h",
            "extra": format!("[\"{EXTRA_BAD}\"]")}),
        json!({"conn_id": "bad-extra2", "type": "postgres", "host": "h",
            "extra": format!("{{\"k\": \"{EXTRA_BAD}\"")}),
        json!({"conn_id": "bad-type", "type": "oracle", "host": "h", "password": PW_BAD_INPUT}),
        json!({"conn_id": "bad-pw", "type": "postgres", "host": "h", "password": 12345,
            "extra": EXTRA_BAD}),
    ] {
        let r = api(&server, "POST", "/api/connections", Some(body));
        assert!(
            (400..500).contains(&r.status),
            "bad input accepted: {}",
            r.text
        );
    }
    let r = server.call(
        "POST",
        "/api/connections",
        Some(&format!(
            "{{\"conn_id\": \"x\", \"password\": \"{PW_BAD_INPUT}\""
        )),
    );
    assert!((400..500).contains(&r.status), "{}", r.text);
    let r = api(
        &server,
        "PATCH",
        "/api/connections/leak-pg",
        Some(json!({"password": PW_BAD_INPUT, "port": "not a port"})),
    );
    assert!((400..500).contains(&r.status), "{}", r.text);
    let r = api(
        &server,
        "PATCH",
        "/api/connections/leak-pg",
        Some(json!({"password": PW_BAD_INPUT, "extra": EXTRA_BAD})),
    );
    assert!((400..500).contains(&r.status), "{}", r.text);

    // HTTP connection: basic auth and a header from extra, against a server that echoes them.
    let echo = echo_401_server();
    let r = api(
        &server,
        "POST",
        "/api/connections",
        Some(json!({"conn_id": "leak-http", "type": "http",
            "host": "http://127.0.0.1", "port": echo, "login": "leak_user", "password": PW_HTTP,
            "extra": json!({"headers": {"X-Api-Key": EXTRA_HEADER}}).to_string()})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let r = api(&server, "POST", "/api/connections/leak-http/test", None);
    assert_eq!(r.json["success"], false, "{}", r.text);

    // The real PostgreSQL, with its real password and with a wrong one.
    if let Some(pg) = env::postgres() {
        let body = |id: &str, pw: &str| {
            json!({"conn_id": id, "type": "postgres", "host": pg.get("HOST"),
                "port": pg.port(), "schema": pg.get("DB"), "login": pg.get("USER"), "password": pw})
        };
        let r = api(
            &server,
            "POST",
            "/api/connections",
            Some(body("real-pg", pg.get("PASSWORD"))),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        let r = api(&server, "POST", "/api/connections/real-pg/test", None);
        assert_eq!(r.json["success"], true, "{}", r.text);
        let r = api(
            &server,
            "POST",
            "/api/connections/test",
            Some(body("wrong-pg", PW_UNSAVED)),
        );
        assert_eq!(r.json["success"], false, "{}", r.text);
    }
    if let Some(my) = env::mysql() {
        let r = api(
            &server,
            "POST",
            "/api/connections/test",
            Some(
                json!({"conn_id": "real-my", "type": "mysql", "host": my.get("HOST"),
                "port": my.port(), "schema": my.get("DB"), "login": my.get("USER"),
                "password": my.get("PASSWORD")}),
            ),
        );
        assert_eq!(r.json["success"], true, "{}", r.text);
    }

    // Pipelines and usage.
    let r = api(
        &server,
        "PUT",
        "/api/pipelines/leak-pipe",
        Some(
            json!({"name": "leak", "nodes": [{"id": "src", "type": "source_db",
            "config": {"conn_id": "leak-pg"}}]}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    api(&server, "GET", "/api/connections/leak-pg/used-by", None);
    api(&server, "GET", "/api/pipelines", None);
    api(&server, "GET", "/api/pipelines/leak-pipe", None);
    api(&server, "GET", "/api/openapi.json", None);

    // --- CLI on the same database while the server runs. ---
    let dbp = db.as_path();
    // Extra comes from a file (argv refuses it), kept outside the scanned directory.
    let extra_dir = tempfile::tempdir().unwrap();
    let extra_file = extra_dir.path().join("extra.json");
    std::fs::write(&extra_file, json!({"charset": EXTRA_CLI}).to_string()).unwrap();
    let extra_arg = format!("@{}", extra_file.display());
    let out = cli_clean(
        &mut seen,
        dbp,
        &[
            "connections",
            "add",
            "leak-cli",
            "--type",
            "mysql",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--login",
            "leak_user",
            "--extra",
            &extra_arg,
            "--password-stdin",
        ],
        Some(&format!("{PW_CLI}\n")),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    for args in [
        &["connections", "list"][..],
        &["connections", "list", "--output", "json"],
        &["connections", "get", "leak-cli"],
        &["connections", "get", "leak-cli", "--output", "json"],
        &["connections", "get", "leak-pg", "--output", "json"],
        &["connections", "test", "leak-cli"],
        &["connections", "test", "--all", "--output", "json"],
        &["connections", "used-by", "leak-pg"],
        &["connections", "export"],
        &["connections", "export", "--format", "yaml"],
        &["connections", "export", "--format", "env"],
        &["key", "list"],
        &["key", "check", "--output", "json"],
    ] {
        cli_clean(&mut seen, dbp, args, None);
    }
    let out = cli_clean(
        &mut seen,
        dbp,
        &["connections", "update", "leak-cli", "--password-stdin"],
        Some(&format!("{PW_CLI_UPDATE}\n")),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Usage errors that carry a secret.
    cli_clean(
        &mut seen,
        dbp,
        &["connections", "update", "leak-cli", "--extra", EXTRA_BAD],
        None,
    );
    cli_clean(
        &mut seen,
        dbp,
        &[
            "connections",
            "add",
            "bad id",
            "--type",
            "postgres",
            "--host",
            "h",
            "--password-stdin",
        ],
        Some(PW_BAD_INPUT),
    );
    let out = cli_clean(&mut seen, dbp, &["key", "rotate"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli_clean(&mut seen, dbp, &["key", "check"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The two outputs allowed to show secrets; then re-import the decrypted export from stdin.
    for id in ["leak-pg", "leak-cli", "leak-http"] {
        let out = cli(dbp, &["connections", "get", id, "--uri"], None);
        assert_eq!(out.code, 0, "{}", out.stderr);
        allowed.push_str(&out.stdout);
        seen.add(
            format!("broked connections get {id} --uri (stderr)"),
            out.stderr,
        );
    }
    let export = cli(dbp, &["connections", "export", "--decrypted"], None);
    assert_eq!(export.code, 0, "{}", export.stderr);
    allowed.push_str(&export.stdout);
    seen.add("export --decrypted (stderr)", export.stderr);
    let yaml = cli(
        dbp,
        &["connections", "export", "--decrypted", "--format", "yaml"],
        None,
    );
    allowed.push_str(&yaml.stdout);
    let out = cli_clean(
        &mut seen,
        dbp,
        &["connections", "import", "-", "--overwrite"],
        Some(&export.stdout),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    // An import that fails (bad rows carrying secrets) reports rows, not values.
    let bad_import = json!([{"conn_id": "Bad Id", "type": "postgres", "host": "h",
        "password": PW_BAD_INPUT, "extra": format!("[\"{EXTRA_BAD}\"]")}])
    .to_string();
    let out = cli_clean(
        &mut seen,
        dbp,
        &["connections", "import", "-"],
        Some(&bad_import),
    );
    assert_ne!(out.code, 0, "bad import accepted: {}", out.stdout);
    let out = cli_clean(&mut seen, dbp, &["key", "prune"], None);
    assert_eq!(out.code, 0, "{}", out.stderr);

    // The server still reads everything after the CLI rotated the key under it.
    let r = api(&server, "POST", "/api/connections/leak-cli/test", None);
    assert_eq!(r.status, 200, "{}", r.text);
    api(&server, "GET", "/api/connections", None);
    // Restart: the log of a second start-up, and reads after it.
    assert!(server.stop(), "clean shutdown");
    for body in server.transcript.lock().unwrap().iter() {
        seen.add("HTTP response (first server)", body.clone());
    }
    let server2 = Server::start(dir.path(), &["--probe-timeout", "3"]);
    api(&server2, "GET", "/api/connections", None);
    api(&server2, "POST", "/api/connections/leak-pg/test", None);
    let r = api(
        &server2,
        "DELETE",
        "/api/connections/leak-pg?force=true",
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text);
    for body in server2.transcript.lock().unwrap().iter() {
        seen.add("HTTP response (second server)", body.clone());
    }
    drop(server2);

    // The audit log (issue 17): its records through the CLI and the API, `verify`, and its
    // checkpoint file (scanned with every other file below) hold names and HMACs only.
    let out = cli_clean(
        &mut seen,
        &db,
        &["audit", "list", "--limit", "1000", "-o", "json"],
        None,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("\"reveal\""),
        "the reveals were recorded: {}",
        out.stdout
    );
    let out = cli_clean(&mut seen, &db, &["audit", "verify"], None);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let server3 = Server::start(dir.path(), &["--probe-timeout", "3"]);
    let r = api(&server3, "GET", "/api/audit?limit=1000", None);
    assert_eq!(r.status, 200, "{}", r.text);
    for body in server3.transcript.lock().unwrap().iter() {
        seen.add("HTTP response (audit)", body.clone());
    }
    drop(server3);
    assert!(
        dir.path().join("broked.db.key.audit").exists(),
        "the checkpoint file is scanned"
    );

    // --- The scan. ---
    let needles = needles();
    // Positive control: the allowed outputs do carry the secrets still stored, so a leak of
    // them would be found.
    for n in [PW_CLI_UPDATE, EXTRA_CLI, PW_HTTP, EXTRA_HEADER] {
        assert!(
            allowed.contains(n),
            "control: {n} not in get --uri / export --decrypted"
        );
    }
    let mut leaks = Vec::new();
    for n in &needles {
        for (label, text) in &seen.outputs {
            if text.contains(n.as_str()) {
                leaks.push(format!("{n:?} in {label}: {text}"));
            }
        }
        for path in files_containing(dir.path(), n) {
            leaks.push(format!("{n:?} in file {}", path.display()));
        }
    }
    let listing: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets leaked ({} hits; files scanned: {listing:?}):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    assert!(
        seen.outputs.len() > 40,
        "scanned {} outputs",
        seen.outputs.len()
    );
}
