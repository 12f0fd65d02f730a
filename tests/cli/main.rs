//! End-to-end tests of the `broked` admin CLI (SPEC §6, issue 7): the real binary on a real
//! database, next to the real `broked-server` and the real PostgreSQL where a test needs them.
//!
//! Every run goes through [`TestCli`], which keeps its arguments and output: each test ends by
//! checking that no secret appeared anywhere except in `get --uri` and `export --decrypted`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::Command;

use broked_connections::{CONNECTION_KEYS, READ_ONLY_KEYS};
use broked_tests::{Server, argv, broked, env, free_port};
use serde_json::{Value, json};

mod audit;
mod history;
mod host_url;
mod rotate_every;
mod tunnel;

/// The password used throughout: distinctive, with characters a URI must encode.
const PW: &str = "CliS3cret-7f2a:@/ é";
/// The part of [`PW`] that survives percent-encoding: what the leak check looks for.
const PW_MARK: &str = "CliS3cret";
/// A postgres connection's flags for `connections add` (the audit and history tests).
const PG_FLAGS: &[&str] = &[
    "--type",
    "postgres",
    "--host",
    "db.example.com",
    "--login",
    "etl",
];
/// A secret inside extra.
const EXTRA_MARK: &str = "ExtraT0ken9x";

/// One run of `broked`.
#[derive(Debug, Clone)]
struct Run {
    args: Vec<String>,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "broked {:?} failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        self
    }

    /// A failure: exit code `code`, a message on stderr, nothing on stdout.
    #[track_caller]
    fn fails(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "broked {:?}: expected exit code {code}\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
        assert!(!self.stderr.trim().is_empty(), "error on stderr: {self:?}");
        self
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("broked {:?}: not JSON ({e}): {}", self.args, self.stdout))
    }
}

/// A database in a temporary directory and every run of `broked` on it.
struct TestCli {
    dir: tempfile::TempDir,
    runs: RefCell<Vec<Run>>,
}

impl TestCli {
    fn new() -> TestCli {
        TestCli {
            dir: tempfile::tempdir().expect("tempdir"),
            runs: RefCell::new(Vec::new()),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("broked.db")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `broked --db DB ARGS` with nothing on stdin.
    fn run(&self, args: &[&str]) -> Run {
        self.run_stdin(args, None)
    }

    /// `broked --db DB ARGS` with `stdin` piped in.
    fn run_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let run = run_broked(&self.db(), args, stdin);
        self.runs.borrow_mut().push(run.clone());
        run
    }

    /// Adds a connection from flags; `password` goes through `--password-stdin`.
    fn add(&self, id: &str, flags: &[&str], password: Option<&str>) -> Value {
        let mut args = vec!["connections", "add", id, "--output", "json"];
        args.extend_from_slice(flags);
        if password.is_some() {
            args.push("--password-stdin");
        }
        self.run_stdin(&args, password).ok().json()
    }

    /// `connections add ID --uri - ARGS -o json` with `uri` on stdin.
    fn add_uri(&self, id: &str, args: &[&str], uri: &str) -> Value {
        let mut all = vec!["connections", "add", id, "--uri", "-"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        self.run_stdin(&all, Some(uri)).ok().json()
    }

    fn get_uri(&self, id: &str) -> String {
        self.run(&["connections", "get", id, "--uri"])
            .ok()
            .stdout
            .trim_end()
            .to_owned()
    }

    /// No run printed a secret, except `get --uri` and `export --decrypted`; no secret was
    /// ever passed in argv.
    #[track_caller]
    fn assert_no_leak(&self, secrets: &[&str]) {
        for run in self.runs.borrow().iter() {
            let argv = run.args.join(" ");
            let allowed = (run.args.iter().any(|a| a == "get")
                && run.args.iter().any(|a| a == "--uri"))
                || (run.args.iter().any(|a| a == "export")
                    && run.args.iter().any(|a| a == "--decrypted"));
            for secret in secrets {
                assert!(!argv.contains(secret), "secret in argv: {argv}");
                assert!(
                    !run.stderr.contains(secret),
                    "broked {argv} printed a secret on stderr"
                );
                if !allowed {
                    assert!(
                        !run.stdout.contains(secret),
                        "broked {argv} printed a secret on stdout"
                    );
                }
            }
        }
    }
}

fn run_broked(db: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    let out = broked(db, args, stdin, &[]);
    let mut all = vec!["--db".to_owned(), db.display().to_string()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    Run {
        args: all,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A connection's JSON without the timestamps and the other per-write metadata (its
/// version and writer, issue 17), for comparisons across databases.
fn without_times(mut v: Value) -> Value {
    let map = v.as_object_mut().expect("object");
    map.remove("created_at");
    map.remove("updated_at");
    map.remove("version");
    map.remove("updated_by");
    // The last test (issue 18): `null` until the connection is tested.
    for key in ["last_tested_at", "last_test_ok", "last_test_message"] {
        assert_eq!(map.remove(key), Some(Value::Null), "{key}: untested");
    }
    v
}

#[track_caller]
fn assert_connection_shape(v: &Value) {
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("a connection is an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    // The keys the library reads back (an export is an import file), and only those.
    let mut want: Vec<&str> = CONNECTION_KEYS.into_iter().chain(READ_ONLY_KEYS).collect();
    want.sort_unstable();
    assert_eq!(keys, want, "stable field names: {v}");
}

fn extra_json() -> String {
    format!(r#"{{"sslmode": "disable", "token": "{EXTRA_MARK}"}}"#)
}

/// `--extra @FILE` with [`extra_json`]: a secret stays out of argv.
fn extra_arg(cli: &TestCli) -> String {
    let path = cli.path("extra.json");
    std::fs::write(&path, extra_json()).unwrap();
    format!("@{}", path.display())
}

#[test]
fn add_list_get_update_delete() {
    let cli = TestCli::new();
    let extra = extra_arg(&cli);

    // add with --password-stdin and every field flag.
    let mut flags =
        argv("--type postgres --host db.example.com --port 5433 --schema mydb --login etl_user");
    flags.extend(["--extra", &extra, "--description", "production warehouse"]);
    let pg = cli.add("prod-postgres", &flags, Some(&format!("{PW}\n")));
    assert_connection_shape(&pg);
    assert_eq!(pg["conn_id"], "prod-postgres");
    assert_eq!(pg["type"], "postgres");
    assert_eq!(pg["port"], 5433);
    assert_eq!(pg["password"], "********");
    assert_eq!(pg["extra"], "********");
    assert_eq!(pg["description"], "production warehouse");

    // add --uri - (stdin: with extra, which argv refuses; then with a password).
    let api = cli.add_uri(
        "api",
        &["--description", "REST"],
        "https://bot@api.example.com/v1?timeout=30\n",
    );
    assert_eq!(
        without_times(api),
        json!({"conn_id": "api", "type": "http", "host": "https://api.example.com", "port": null,
               "schema": "v1", "login": "bot", "password": null, "extra": "********",
               "description": "REST"})
    );
    let cache = cli.add_uri("cache", &[], "generic://:CliS3cret-cache@127.0.0.1:6379\n");
    assert_eq!(cache["type"], "generic");
    assert_eq!(cache["port"], 6379);
    assert_eq!(cache["password"], "********");
    assert_eq!(
        cli.get_uri("cache"),
        "generic://:CliS3cret-cache@127.0.0.1:6379"
    );
    cli.add(
        "local",
        &["--type", "sqlite", "--host", "/var/lib/app.db"],
        None,
    );

    // A duplicate is a failure (exit 1), not a usage error.
    let dup = cli
        .run_stdin(
            &argv("connections add local --type sqlite --host x.db"),
            None,
        )
        .fails(1);
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);

    // list: a table sorted by conn_id; --type filters; --output json is the API's shape.
    let table = cli.run(&["connections", "list"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("CONN_ID"), "{table}");
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, ["api", "cache", "local", "prod-postgres"]);
    let list = cli.run(&["connections", "list", "-o", "json"]).ok().json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 4);
    list.iter().for_each(assert_connection_shape);
    let pg_only = cli
        .run(&argv("connections list --type postgres --output json"))
        .ok()
        .json();
    assert_eq!(pg_only.as_array().unwrap().len(), 1);
    assert_eq!(pg_only[0]["conn_id"], "prod-postgres");
    let pg_text = cli
        .run(&["connections", "list", "--type", "postgres"])
        .ok()
        .stdout;
    assert!(pg_text.contains("prod-postgres") && !pg_text.contains("local"));
    let none = cli.run(&["connections", "list", "--type", "mysql"]).ok();
    assert!(none.stdout.contains("(no connections)"));

    // get: masked, text and JSON; get --uri: the full URI, password percent-encoded.
    let text = cli
        .run(&["connections", "get", "prod-postgres"])
        .ok()
        .stdout;
    assert!(
        text.contains("db.example.com") && text.contains("********"),
        "{text}"
    );
    let got = cli
        .run(&["connections", "get", "prod-postgres", "-o", "json"])
        .ok()
        .json();
    assert_connection_shape(&got);
    assert_eq!(without_times(got.clone()), without_times(pg.clone()));
    let uri = cli.get_uri("prod-postgres");
    assert_eq!(
        uri,
        format!(
            "postgres://etl_user:CliS3cret-7f2a%3A%40%2F%20%C3%A9@db.example.com:5433/mydb?sslmode=disable&token={EXTRA_MARK}"
        )
    );
    let uri_json = cli
        .run(&["connections", "get", "prod-postgres", "--uri", "-o", "json"])
        .ok()
        .json();
    assert_eq!(uri_json, json!({"conn_id": "prod-postgres", "uri": uri}));

    // update: only the given fields change; the password and extra are kept.
    let updated = cli
        .run(&argv(
            "connections update prod-postgres --description nightly -o json",
        ))
        .ok()
        .json();
    let mut want = without_times(pg.clone());
    want["description"] = json!("nightly");
    assert_eq!(without_times(updated.clone()), want);
    assert_eq!(updated["created_at"], pg["created_at"]);
    assert_eq!(cli.get_uri("prod-postgres"), uri);

    // Another host with the secrets kept is refused (a stored password never moves to
    // another target); with the password given again (and extra cleared) it is fine.
    let refused = cli.run(&argv(
        "connections update prod-postgres --host db2.example.com",
    ));
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("password"), "{refused:?}");
    assert_eq!(cli.get_uri("prod-postgres"), uri);
    cli.run_stdin(
        &argv("connections update prod-postgres --host db2.example.com --password-stdin --clear-extra"),
        Some(PW),
    )
    .ok();
    assert!(cli.get_uri("prod-postgres").contains("@db2.example.com:"));

    // A new password from stdin; then clearing extra.
    cli.run_stdin(
        &["connections", "update", "prod-postgres", "--password-stdin"],
        Some("CliS3cret-new"),
    )
    .ok();
    assert!(cli.get_uri("prod-postgres").contains(":CliS3cret-new@"));
    cli.run_stdin(
        &["connections", "update", "prod-postgres", "--extra", "-"],
        Some(r#"{"token": "ExtraT0ken9x-2"}"#),
    )
    .ok();
    assert!(
        cli.get_uri("prod-postgres")
            .ends_with("?token=ExtraT0ken9x-2")
    );
    let cleared = cli
        .run(&argv(
            "connections update prod-postgres --clear-extra -o json",
        ))
        .ok()
        .json();
    assert_eq!(cleared["extra"], Value::Null);
    assert_eq!(cleared["password"], "********");
    assert_eq!(
        cli.get_uri("prod-postgres"),
        "postgres://etl_user:CliS3cret-new@db2.example.com:5433/mydb"
    );
    // An invalid update changes nothing and exits 1.
    cli.run(&["connections", "update", "prod-postgres", "--port", "70000"])
        .fails(1);
    // Nothing to update is a usage error.
    cli.run(&["connections", "update", "prod-postgres"])
        .fails(2);

    // delete.
    let deleted = cli.run(&["connections", "delete", "local"]).ok();
    assert!(deleted.stdout.contains("deleted local"));
    let missing = cli.run(&["connections", "get", "local"]).fails(1);
    assert!(missing.stdout.is_empty());
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    cli.run(&["connections", "delete", "local"]).fails(1);
    let d = cli
        .run(&["connections", "delete", "api", "-o", "json"])
        .ok()
        .json();
    assert_eq!(d, json!({"conn_id": "api", "deleted": true}));

    cli.assert_no_leak(&[PW_MARK, EXTRA_MARK]);
}

#[test]
fn delete_is_refused_while_a_pipeline_uses_the_connection() {
    let cli = TestCli::new();
    cli.add(
        "warehouse",
        &["--type", "postgres", "--host", "db", "--login", "u"],
        Some(PW),
    );
    cli.add(
        "spare",
        &["--type", "generic", "--host", "h", "--port", "1"],
        None,
    );
    // The CLI has no pipeline command: pipelines come from the engine, here through the
    // server's API on the same database.
    let server = Server::start(cli.dir.path(), &[]);
    let put = server.call(
        "PUT",
        "/api/pipelines/nightly",
        Some(
            r#"{"name": "Nightly load", "nodes": [
                {"id": "extract", "type": "sql", "config": {"conn_id": "warehouse"}},
                {"id": "load", "type": "sql", "config": {"conn_id": "warehouse"}}]}"#,
        ),
    );
    assert_eq!(put.status, 200, "{}", put.text);

    let used = cli
        .run(&["connections", "used-by", "warehouse", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        used,
        json!({"conn_id": "warehouse", "pipelines": [
            {"pipeline_id": "nightly", "name": "Nightly load", "nodes": ["extract", "load"]}]})
    );
    let text = cli
        .run(&["connections", "used-by", "warehouse"])
        .ok()
        .stdout;
    assert!(
        text.contains("nightly") && text.contains("extract, load"),
        "{text}"
    );
    let unused = cli.run(&["connections", "used-by", "spare"]).ok().stdout;
    assert!(unused.contains("not used"), "{unused}");
    cli.run(&["connections", "used-by", "nope"]).fails(1);

    let refused = cli.run(&["connections", "delete", "warehouse"]).fails(1);
    assert!(
        refused.stderr.contains("nightly")
            && refused.stderr.contains("extract, load")
            && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    cli.run(&["connections", "get", "warehouse"]).ok();

    cli.run(&["connections", "delete", "warehouse", "--force"])
        .ok();
    cli.run(&["connections", "get", "warehouse"]).fails(1);
    assert_eq!(
        server.get("/api/connections/warehouse").status,
        404,
        "the server sees the CLI's delete"
    );
    cli.assert_no_leak(&[PW_MARK]);
}

#[test]
fn test_against_the_real_postgres_and_a_closed_port() {
    let Some(pg) = env::postgres() else { return };
    let cli = TestCli::new();
    let real_pw = pg.get("PASSWORD");
    let port = pg.get("PORT");
    let good = [
        "--type",
        "postgres",
        "--host",
        pg.get("HOST"),
        "--port",
        port,
        "--login",
        pg.get("USER"),
        "--schema",
        pg.get("DB"),
    ];
    cli.add("pg-good", &good, Some(real_pw));
    cli.add("pg-good-2", &good, Some(real_pw));
    let closed = free_port().to_string();
    cli.add(
        "pg-closed",
        &[
            "--type",
            "postgres",
            "--host",
            "127.0.0.1",
            "--port",
            &closed,
            "--login",
            "x",
        ],
        Some(PW),
    );
    cli.add(
        "tcp-closed",
        &[
            "--type",
            "generic",
            "--host",
            "127.0.0.1",
            "--port",
            &closed,
        ],
        None,
    );

    let ok = cli.run(&["connections", "test", "pg-good"]).ok();
    assert!(
        ok.stdout.contains("Connected successfully"),
        "{}",
        ok.stdout
    );
    let ok = cli
        .run(&["connections", "test", "pg-good", "-o", "json"])
        .ok()
        .json();
    assert_eq!(ok["conn_id"], "pg-good");
    assert_eq!(ok["success"], true);
    assert_eq!(ok["driver"], "sqlx-postgres");
    assert!(ok["latency_ms"].is_u64());

    let bad = cli.run(&["connections", "test", "pg-closed"]);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stdout.contains("FAIL pg-closed"), "{}", bad.stdout);
    let bad = cli.run(&["connections", "test", "pg-closed", "-o", "json"]);
    assert_eq!(bad.code, 1);
    assert_eq!(bad.json()["success"], false);
    cli.run(&["connections", "test", "nope"]).fails(1);
    cli.run(&["connections", "test"]).fails(2);

    // --all: one line per connection and a summary; exit 1 because two fail.
    let all = cli.run(&["connections", "test", "--all", "--concurrency", "4"]);
    assert_eq!(all.code, 1, "{all:?}");
    for id in ["pg-good", "pg-good-2", "pg-closed", "tcp-closed"] {
        let lines = all
            .stdout
            .lines()
            .filter(|l| l.contains(&format!(" {id}: ")))
            .count();
        assert_eq!(lines, 1, "one line for {id}:\n{}", all.stdout);
    }
    assert!(all.stdout.contains("4 tested, 2 failed"), "{}", all.stdout);
    let all = cli.run(&argv("connections test --all --concurrency 4 -o json"));
    assert_eq!(all.code, 1);
    let rows = all.json();
    let summary: Vec<(&str, bool)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["conn_id"].as_str().unwrap(),
                r["success"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("pg-closed", false),
            ("pg-good", true),
            ("pg-good-2", true),
            ("tcp-closed", false)
        ]
    );

    // All passing: exit 0.
    cli.run(&["connections", "delete", "pg-closed"]).ok();
    cli.run(&["connections", "delete", "tcp-closed"]).ok();
    let all = cli
        .run(&["connections", "test", "--all", "--concurrency", "4"])
        .ok();
    assert!(all.stdout.contains("2 tested, 0 failed"), "{}", all.stdout);
    cli.run(&["connections", "test", "--all", "--concurrency", "0"])
        .fails(2);

    cli.assert_no_leak(&[PW_MARK, real_pw]);
}

/// A source database with one connection of each kind of secret.
fn seeded() -> TestCli {
    let cli = TestCli::new();
    let extra = extra_arg(&cli);
    let region_file = cli.path("region.json");
    std::fs::write(&region_file, r#"{"region": "eu-west-1"}"#).unwrap();
    let region_extra = format!("@{}", region_file.display());
    let mut flags = argv("--type postgres --host db.example.com --schema mydb --login etl_user");
    flags.extend(["--extra", &extra, "--description", "prod"]);
    cli.add("prod-postgres", &flags, Some(PW));
    cli.add(
        "shop-mysql",
        &["--type", "mysql", "--host", "::1", "--login", "root"],
        Some("CliS3cret-mysql'\"$"),
    );
    cli.add(
        "bucket",
        &[
            "--type",
            "s3",
            "--schema",
            "my-bucket",
            "--login",
            "AKIAEXAMPLE",
            "--extra",
            &region_extra,
        ],
        Some("CliS3cret/K7+MDENG"),
    );
    cli.add(
        "local",
        &["--type", "sqlite", "--host", "/var/lib/app.db"],
        None,
    );
    cli
}

const IDS: [&str; 4] = ["bucket", "local", "prod-postgres", "shop-mysql"];

#[test]
fn export_import_round_trip_and_all_or_nothing() {
    let src = seeded();

    // Masked exports: JSON, YAML and env carry no secret.
    let masked = src.run(&["connections", "export"]).ok();
    let doc = masked.json();
    assert_eq!(doc["format"], "broked-connections");
    assert_eq!(doc["connections"].as_array().unwrap().len(), 4);
    assert!(masked.stdout.contains("********"));
    let yaml = src
        .run(&["connections", "export", "--format", "yaml"])
        .ok()
        .stdout;
    assert!(
        yaml.contains("conn_id: prod-postgres") && yaml.contains("'********'"),
        "{yaml}"
    );
    let env_masked = src
        .run(&["connections", "export", "--format", "env"])
        .ok()
        .stdout;
    assert_eq!(env_masked.lines().count(), 4, "{env_masked}");
    assert!(env_masked.contains("BROKED_CONN_PROD_POSTGRES='postgres://etl_user:********@"));

    // Decrypted exports.
    let decrypted = src
        .run(&["connections", "export", "--decrypted"])
        .ok()
        .stdout;
    assert!(decrypted.contains(PW) && decrypted.contains(EXTRA_MARK));
    let dec_yaml = src
        .run(&["connections", "export", "--decrypted", "--format", "yaml"])
        .ok()
        .stdout;
    let env_dec = src
        .run(&["connections", "export", "--decrypted", "--format", "env"])
        .ok()
        .stdout;
    assert!(env_dec.contains(&format!(
        "BROKED_CONN_PROD_POSTGRES='{}'",
        src.get_uri("prod-postgres")
    )));
    assert!(env_dec.contains("CliS3cret-mysql%27%22%24@"), "{env_dec}");

    // export → import into a fresh database round-trips every field, secrets included.
    for (name, text) in [("dec.json", &decrypted), ("dec.yaml", &dec_yaml)] {
        let dst = TestCli::new();
        let file = dst.path(name);
        std::fs::write(&file, text).unwrap();
        let imported = dst
            .run(&[
                "connections",
                "import",
                file.to_str().unwrap(),
                "-o",
                "json",
            ])
            .ok()
            .json();
        assert_eq!(imported, json!({"imported": 4}));
        for id in IDS {
            assert_eq!(dst.get_uri(id), src.get_uri(id), "{name}: {id}");
            let a = src
                .run(&["connections", "get", id, "-o", "json"])
                .ok()
                .json();
            let b = dst
                .run(&["connections", "get", id, "-o", "json"])
                .ok()
                .json();
            assert_eq!(without_times(a), without_times(b), "{name}: {id}");
        }
        // Again: every row exists now; --overwrite replaces them.
        let again = dst
            .run(&["connections", "import", file.to_str().unwrap()])
            .fails(1);
        assert!(again.stderr.contains("already exists"), "{}", again.stderr);
        dst.run(&[
            "connections",
            "import",
            file.to_str().unwrap(),
            "--overwrite",
        ])
        .ok();
        dst.assert_no_leak(&[PW_MARK, EXTRA_MARK]);
    }

    // Import from stdin.
    let dst = TestCli::new();
    dst.run_stdin(&["connections", "import", "-"], Some(&decrypted))
        .ok();
    assert_eq!(dst.get_uri("bucket"), src.get_uri("bucket"));

    // A file with bad rows changes nothing and names every bad row.
    let target = TestCli::new();
    target.add(
        "keep-me",
        &["--type", "generic", "--host", "h", "--port", "9"],
        None,
    );
    let mut bad: Value = serde_json::from_str(&decrypted).unwrap();
    bad["connections"][1]["port"] = json!(70000);
    bad["connections"][3]["type"] = json!("oracle");
    let bad_file = target.path("bad.json");
    std::fs::write(&bad_file, bad.to_string()).unwrap();
    let refused = target
        .run(&["connections", "import", bad_file.to_str().unwrap()])
        .fails(1);
    assert!(
        refused.stderr.contains("row 2") && refused.stderr.contains("row 4"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("row 1") && !refused.stderr.contains("row 3"));
    let left = target
        .run(&["connections", "list", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        left.as_array().unwrap().len(),
        1,
        "nothing imported: {left}"
    );

    // A masked export cannot be imported: it holds no secrets.
    let masked_file = target.path("masked.json");
    std::fs::write(&masked_file, &masked.stdout).unwrap();
    let refused = target
        .run(&["connections", "import", masked_file.to_str().unwrap()])
        .fails(1);
    assert!(refused.stderr.contains("masked"), "{}", refused.stderr);
    assert_eq!(
        target
            .run(&["connections", "list", "-o", "json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Not JSON or YAML at all.
    let junk = target.path("junk.txt");
    std::fs::write(&junk, "{ not json").unwrap();
    target
        .run(&["connections", "import", junk.to_str().unwrap()])
        .fails(1);
    target
        .run(&["connections", "import", "/nonexistent/file.json"])
        .fails(1);

    src.assert_no_leak(&[PW_MARK, EXTRA_MARK]);
    target.assert_no_leak(&[PW_MARK, EXTRA_MARK]);
}

/// Flips the last byte of `conn_id`'s sealed password with python3's sqlite3 module.
fn corrupt_password(db: &Path, conn_id: &str) {
    let script = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
(blob,) = db.execute("SELECT password FROM connections WHERE conn_id = ?", (sys.argv[2],)).fetchone()
blob = bytes(blob)
blob = blob[:-1] + bytes([blob[-1] ^ 1])
db.execute("UPDATE connections SET password = ? WHERE conn_id = ?", (blob, sys.argv[2]))
db.commit()
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(db)
        .arg(conn_id)
        .status()
        .expect("python3");
    assert!(status.success());
}

#[test]
fn key_rotate_prune_check() {
    let cli = seeded();
    let before: Vec<String> = IDS.iter().map(|id| cli.get_uri(id)).collect();

    let keys = cli.run(&["key", "list", "-o", "json"]).ok().json();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["active"], true);
    assert_eq!(keys[0]["secrets"], 5, "4 passwords... {keys}");

    let rotated = cli.run(&["key", "rotate", "-o", "json"]).ok().json();
    assert_eq!(rotated["resealed"], 5, "{rotated}");
    let new_key = rotated["active_key"].as_str().unwrap().to_owned();
    let keys = cli.run(&["key", "list", "-o", "json"]).ok().json();
    let ids: Vec<(&str, bool, u64)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap(),
                k["active"].as_bool().unwrap(),
                k["secrets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [("k1", false, 0), (new_key.as_str(), true, 5)]);
    let after: Vec<String> = IDS.iter().map(|id| cli.get_uri(id)).collect();
    assert_eq!(before, after, "every secret still opens after rotation");
    let text = cli.run(&["key", "rotate"]).ok().stdout;
    assert!(text.contains("5 secrets re-encrypted"), "{text}");

    let pruned = cli.run(&["key", "prune", "-o", "json"]).ok().json();
    assert_eq!(pruned["pruned"].as_array().unwrap().len(), 2, "{pruned}");
    let text = cli.run(&["key", "prune"]).ok().stdout;
    assert!(text.contains("no unused keys"), "{text}");
    assert_eq!(
        cli.run(&["key", "list", "-o", "json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let check = cli.run(&["key", "check", "-o", "json"]).ok().json();
    assert_eq!(check, json!({"checked": 5, "failures": []}));
    let text = cli.run(&["key", "check"]).ok().stdout;
    assert!(text.contains("5 secrets checked, 0 failed"), "{text}");

    // A sealed value altered in the database: check fails with exit 1 and names it.
    corrupt_password(&cli.db(), "shop-mysql");
    let check = cli.run(&["key", "check", "-o", "json"]);
    assert_eq!(check.code, 1, "{check:?}");
    let report = check.json();
    assert_eq!(report["checked"], 5);
    assert_eq!(report["failures"][0]["conn_id"], "shop-mysql");
    assert_eq!(report["failures"][0]["field"], "password");
    let text = cli.run(&["key", "check"]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout.contains("FAIL shop-mysql password"),
        "{}",
        text.stdout
    );
    let broken = cli
        .run(&["connections", "get", "shop-mysql", "--uri"])
        .fails(1);
    assert!(
        broken.stderr.contains("could not be decrypted"),
        "{}",
        broken.stderr
    );
    // The others still work; the masked get does not need the secret.
    cli.run(&["connections", "get", "shop-mysql"]).ok();
    assert_eq!(cli.get_uri("bucket"), before[0]);

    // A missing key file is a clear failure naming it.
    std::fs::rename(cli.path("broked.db.key"), cli.path("moved.key")).unwrap();
    let missing = cli.run(&["connections", "list"]).fails(1);
    assert!(
        missing.stderr.contains("broked.db.key"),
        "{}",
        missing.stderr
    );

    cli.assert_no_leak(&[PW_MARK, EXTRA_MARK]);
}

/// Every command path, for the --help check.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["connections"],
    &["connections", "add"],
    &["connections", "list"],
    &["connections", "get"],
    &["connections", "update"],
    &["connections", "delete"],
    &["connections", "test"],
    &["connections", "used-by"],
    &["connections", "export"],
    &["connections", "import"],
    &["key"],
    &["key", "rotate"],
    &["key", "prune"],
    &["key", "check"],
    &["key", "list"],
];

#[test]
fn help_usage_errors_and_failures() {
    let cli = TestCli::new();
    for path in COMMANDS {
        let mut args = path.to_vec();
        args.push("--help");
        let help = cli.run(&args).ok();
        assert!(
            help.stdout.contains("Example"),
            "`broked {}` has examples:\n{}",
            args.join(" "),
            help.stdout
        );
    }

    // Usage errors: exit 2, on stderr, nothing on stdout, and no database created.
    let usage: &[&[&str]] = &[
        &[],
        &["nope"],
        &["connections", "add"],
        &["connections", "add", "x"],
        &["connections", "add", "x", "--type", "oracle"],
        &argv("connections add x --type generic --port abc"),
        &argv("connections add x --uri generic://h:1 --type mysql"),
        &["connections", "list", "--type", "oracle"],
        &["connections", "get"],
        &["connections", "export", "--format", "xml"],
        &["connections", "test", "x", "--all"],
        &["connections", "list", "--output", "xml"],
        &["key", "nope"],
    ];
    for args in usage {
        let run = cli.run(args).fails(2);
        assert!(run.stdout.is_empty(), "{run:?}");
    }
    // A password in argv is refused, without echoing it.
    let run = cli
        .run(&argv(
            "connections add x --type generic --password CliS3cret-argv",
        ))
        .fails(2);
    assert!(run.stderr.contains("--password-stdin"), "{}", run.stderr);
    assert!(!run.stderr.contains("CliS3cret-argv"));
    cli.runs.borrow_mut().pop(); // its argv holds the secret by design
    assert!(!cli.db().exists(), "usage errors create no database");

    // Failures: exit 1.
    let no_db = cli.run(&["connections", "list"]).fails(1);
    assert!(no_db.stderr.contains("no database"), "{}", no_db.stderr);
    assert!(!cli.db().exists(), "a read command creates no database");
    let invalid = cli
        .run(&[
            "connections",
            "add",
            "Bad Id",
            "--type",
            "generic",
            "--host",
            "h",
            "--port",
            "1",
        ])
        .fails(1);
    assert!(invalid.stderr.contains("conn_id"), "{}", invalid.stderr);
    let bad_extra_file = cli.path("bad-extra.json");
    std::fs::write(&bad_extra_file, "[1]").unwrap();
    let bad_extra = cli
        .run(&[
            "connections",
            "add",
            "x",
            "--type",
            "postgres",
            "--host",
            "h",
            "--extra",
            &format!("@{}", bad_extra_file.display()),
        ])
        .fails(1);
    assert!(bad_extra.stderr.contains("extra must be a JSON object"));
    let bad_uri = cli
        .run_stdin(
            &["connections", "add", "x", "--uri", "-"],
            Some("not a uri CliS3cret"),
        )
        .fails(1);
    assert!(
        bad_uri.stderr.contains("not a connection URI"),
        "{}",
        bad_uri.stderr
    );
    let empty_pw = cli
        .run_stdin(
            &argv("connections add x --type generic --host h --port 1 --password-stdin"),
            Some("\n"),
        )
        .fails(1);
    assert!(empty_pw.stderr.contains("empty"), "{}", empty_pw.stderr);
    cli.assert_no_leak(&[PW_MARK]);
}

#[test]
fn cli_writes_while_the_server_runs() {
    let cli = TestCli::new();
    cli.add(
        "seed",
        &["--type", "generic", "--host", "h", "--port", "1"],
        None,
    );
    let server = Server::start(cli.dir.path(), &[]);
    const N: usize = 25;
    let db = cli.db();
    std::thread::scope(|s| {
        let cli_side = s.spawn(|| {
            let mut runs = Vec::new();
            for i in 0..N {
                let id = format!("cli-{i}");
                runs.push(run_broked(
                    &db,
                    &[
                        "connections",
                        "add",
                        &id,
                        "--type",
                        "postgres",
                        "--host",
                        "db",
                        "--password-stdin",
                    ],
                    Some(PW),
                ));
                runs.push(run_broked(
                    &db,
                    &["connections", "update", "seed", "--description", &id],
                    None,
                ));
            }
            runs
        });
        for i in 0..N {
            let body = format!(
                r#"{{"conn_id": "api-{i}", "type": "mysql", "host": "db", "password": "x{i}"}}"#
            );
            let r = server.post("/api/connections", &body);
            assert_eq!(r.status, 201, "{}", r.text);
            let r = server.call(
                "PATCH",
                "/api/connections/seed",
                Some(&format!(r#"{{"schema": "s{i}"}}"#)),
            );
            assert_eq!(r.status, 200, "{}", r.text);
        }
        for run in cli_side.join().unwrap() {
            assert!(!run.stderr.contains("locked"), "{run:?}");
            run.ok();
        }
    });
    let list = cli.run(&["connections", "list", "-o", "json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 2 * N + 1);
    let seed = cli
        .run(&["connections", "get", "seed", "-o", "json"])
        .ok()
        .json();
    assert_eq!(seed["description"], format!("cli-{}", N - 1));
    assert_eq!(seed["schema"], format!("s{}", N - 1), "no update lost");
    assert!(cli.get_uri("cli-7").contains("CliS3cret"));
    let r = server.get("/api/connections/cli-3");
    assert_eq!(r.status, 200, "the server reads what the CLI wrote");

    // Key rotation and pruning from the CLI while the server keeps writing: every secret,
    // whichever process sealed it with whichever key, still opens.
    let post = |id: &str| {
        let body = format!(
            r#"{{"conn_id": "{id}", "type": "generic", "host": "h", "port": 2, "password": "CliS3cret-{id}"}}"#
        );
        let r = server.post("/api/connections", &body);
        assert_eq!(r.status, 201, "{}", r.text);
    };
    cli.run(&["key", "rotate"]).ok();
    post("after-rotate");
    cli.run(&["key", "prune"]).ok();
    post("after-prune");
    cli.run(&["key", "rotate"]).ok();
    cli.run(&["key", "prune"]).ok();
    post("after-second-prune");
    let check = cli.run(&["key", "check", "-o", "json"]).ok().json();
    assert_eq!(check["failures"], json!([]), "{check}");
    for id in ["after-rotate", "after-prune", "after-second-prune"] {
        assert_eq!(
            cli.get_uri(id),
            format!("generic://:CliS3cret-{id}@h:2"),
            "{id}"
        );
    }
    assert!(cli.get_uri("cli-7").contains("CliS3cret"));
    assert!(!server.log_text().contains(PW_MARK));
    cli.assert_no_leak(&[PW_MARK]);
}

/// Issue 13.6: a URI with a password or extra, and an extra value, are refused on argv like
/// `--password` (usage error, exit 2, the value not echoed, no database created); the same
/// values through stdin or a file are accepted.
#[test]
fn uri_passwords_and_extra_values_are_refused_on_argv() {
    let cli = TestCli::new();
    let secret = "CliS3cret-argv";
    let refused: &[(&[&str], &str)] = &[
        (
            &argv("connections add x --uri postgres://etl:CliS3cret-argv@db.example/app"),
            "--uri -",
        ),
        (
            &argv("connections add x --uri generic://:CliS3cret-argv@cache:6379"),
            "--uri -",
        ),
        // Percent-encoded, and a URI the parser cannot read: refused all the same.
        (
            &argv("connections add x --uri sftp://u:CliS3cret-argv%40x@files/in"),
            "--uri -",
        ),
        (
            &argv("connections add x --uri postgres://u:CliS3cret-argv@h:notaport/db"),
            "--uri -",
        ),
        // Extra in the query string.
        (
            &argv("connections add x --uri https://api.example/v1?token=CliS3cret-argv"),
            "--uri -",
        ),
        (
            &[
                "connections",
                "add",
                "x",
                "--type",
                "http",
                "--host",
                "api.example",
                "--extra",
                r#"{"headers": {"X-Api-Key": "CliS3cret-argv"}}"#,
            ],
            "@FILE",
        ),
        (
            &[
                "connections",
                "update",
                "x",
                "--extra",
                r#"{"token": "CliS3cret-argv"}"#,
            ],
            "@FILE",
        ),
        (
            &["connections", "update", "x", "--extra", "CliS3cret-argv"],
            "@FILE",
        ),
    ];
    for (args, hint) in refused {
        let run = cli.run(args).fails(2);
        assert!(run.stderr.contains(hint), "{args:?}: {}", run.stderr);
        assert!(
            !run.stderr.contains(secret),
            "{args:?} echoed: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{run:?}");
        cli.runs.borrow_mut().pop(); // its argv holds the secret by design
    }
    assert!(!cli.db().exists(), "refused commands create no database");

    // Without secrets argv is fine; with them, stdin and files are.
    let plain = cli.add("plain", &["--uri", "postgres://etl@db.example/app"], None);
    assert_eq!(plain["password"], Value::Null);
    assert_eq!(plain["extra"], Value::Null);
    let empty = cli.add(
        "empty-extra",
        &[
            "--type", "generic", "--host", "h", "--port", "1", "--extra", "{}",
        ],
        None,
    );
    assert_eq!(empty["conn_id"], "empty-extra");
    let piped = cli.add_uri(
        "piped",
        &[],
        "postgres://etl:CliS3cret-argv@db.example/app?sslmode=require\n",
    );
    assert_eq!(piped["password"], "********");
    assert_eq!(piped["extra"], "********");
    let updated = cli
        .run_stdin(
            &argv("connections update plain --extra - -o json"),
            Some(r#"{"token": "CliS3cret-argv"}"#),
        )
        .ok()
        .json();
    assert_eq!(updated["extra"], "********");
    assert!(
        cli.get_uri("plain").contains("token=CliS3cret-argv"),
        "the extra from stdin was stored"
    );
    cli.assert_no_leak(&[secret, PW_MARK]);
}

/// Issue 13.6: a panic prints where it happened, never its message (which may hold a
/// password). Debug builds of `broked` panic on purpose with `BROKED_DEBUG_PANIC=TEXT`.
#[test]
fn a_panic_prints_its_location_not_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "CliS3cret-panic-pw";
    let panic = format!("postgres://etl:{secret}@db/app");
    let out = broked(
        &dir.path().join("broked.db"),
        &["connections", "list"],
        None,
        &[("BROKED_DEBUG_PANIC", &panic), ("RUST_BACKTRACE", "full")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "a panic exits 101: {stderr}");
    assert!(
        !stderr.contains(secret),
        "the panic message reached stderr: {stderr}"
    );
    assert!(!stderr.contains("debug panic"), "{stderr}");
    assert!(
        stderr.contains("broked: internal error at bins/broked/src/panic_hook.rs:"),
        "the location is printed: {stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one line, no backtrace: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// Issue 13.7: `--probe-file-root DIR` limits sqlite tests to DIR; the database, its key file
/// and their side files are never a test target, with or without it.
#[test]
fn sqlite_tests_never_open_the_store_and_stay_in_the_file_roots() {
    let cli = TestCli::new();
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("app.db");
    let outside = cli.path("other.db");
    for db in [&inside, &outside] {
        // A one-table SQLite database (python3's sqlite3, as `corrupt_password` uses).
        let status = Command::new("python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE t (x)'); c.commit()"])
            .arg(db)
            .status()
            .expect("python3");
        assert!(status.success());
    }
    let db = cli.db().display().to_string();
    let key = format!("{db}.key");
    let wal = format!("{db}-wal");
    let targets = [
        ("inside", inside.display().to_string()),
        ("outside", outside.display().to_string()),
        ("store", db.clone()),
        ("store-key", key),
        ("store-wal", wal),
        // The store through a `..` detour.
        (
            "store-detour",
            cli.dir
                .path()
                .join("..")
                .join(cli.dir.path().file_name().unwrap())
                .join("broked.db")
                .display()
                .to_string(),
        ),
    ];
    for (id, host) in &targets {
        cli.add(id, &["--type", "sqlite", "--host", host], None);
    }
    // The store has a WAL file while the CLI writes; make sure one exists to be tested.
    if !Path::new(&targets[4].1).exists() {
        std::fs::write(&targets[4].1, b"").unwrap();
    }
    let test = |id: &str, extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["connections", "test", id, "-o", "json"]);
        let run = cli.run(&args);
        let v = run.json();
        (
            v["success"].as_bool().unwrap(),
            v["message"].as_str().unwrap().to_owned(),
        )
    };
    // Without roots: any readable database, but never the store's own files.
    assert!(test("inside", &[]).0);
    assert!(test("outside", &[]).0);
    for id in ["store", "store-key", "store-wal", "store-detour"] {
        assert_eq!(
            test(id, &[]),
            (false, "blocked by probe policy".to_owned()),
            "{id}"
        );
    }
    // With a root: only inside it.
    let root_arg = root.path().display().to_string();
    let with_root = ["--probe-file-root", root_arg.as_str()];
    assert!(test("inside", &with_root).0);
    for id in ["outside", "store", "store-key", "store-wal"] {
        assert_eq!(
            test(id, &with_root),
            (false, "blocked by probe policy".to_owned()),
            "{id} with a file root"
        );
    }
    // A root that does not exist is an error before anything runs.
    let missing = cli.path("no-such-dir").display().to_string();
    let run = cli
        .run(&[
            "--probe-file-root",
            &missing,
            "connections",
            "test",
            "inside",
        ])
        .fails(1);
    assert!(run.stderr.contains("no-such-dir"), "{}", run.stderr);
    cli.assert_no_leak(&[PW_MARK]);
}

/// `get --uri-format` (issue 18): each client's form of the stored connection, password
/// included, like `--uri`; a type a format has no form for is an error naming both.
#[test]
fn get_uri_format_prints_each_client_form() {
    const FMT_PW: &str = "Fmt'Pw\\ @x-3";
    let cli = TestCli::new();
    cli.add(
        "pg",
        &argv("--type postgres --host db.example.com --port 5432 --schema mydb --login etl"),
        Some(FMT_PW),
    );
    let get = |format: &str| {
        cli.run(&["connections", "get", "pg", "--uri-format", format])
            .ok()
            .stdout
            .trim_end()
            .to_owned()
    };
    assert_eq!(get("uri"), cli.get_uri("pg"));
    assert_eq!(
        get("sqlalchemy"),
        "postgresql+psycopg://etl:Fmt%27Pw%5C%20%40x-3@db.example.com:5432/mydb"
    );
    assert_eq!(
        get("jdbc"),
        "jdbc:postgresql://db.example.com:5432/mydb?password=Fmt%27Pw%5C%20%40x-3&user=etl"
    );
    assert_eq!(
        get("libpq"),
        r"host='db.example.com' port='5432' dbname='mydb' user='etl' password='Fmt\'Pw\\ @x-3'"
    );
    let json = cli
        .run(&[
            "connections",
            "get",
            "pg",
            "--uri-format",
            "libpq",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(json["conn_id"], "pg");
    assert_eq!(json["uri"], get("libpq"));

    cli.add(
        "api",
        &argv("--type http --host api.example.com"),
        Some(FMT_PW),
    );
    let refused = cli
        .run(&["connections", "get", "api", "--uri-format", "jdbc"])
        .fails(1);
    assert!(
        refused
            .stderr
            .contains("a http connection has no jdbc form; http supports: uri"),
        "{refused:?}"
    );
    assert!(refused.stdout.is_empty() && !refused.stderr.contains(FMT_PW));
    cli.run(&["connections", "get", "pg", "--uri-format", "odbc"])
        .fails(2);
}

/// `connections list` reads pages of 500 and prints them as they come (issue 19): every row
/// once, in order, in the table and in JSON; with `--search`, `--type`, `--status` and `--limit`.
#[test]
fn list_streams_pages_with_filters() {
    let cli = TestCli::new();
    let rows: Vec<Value> = (0..1203)
        .map(|i| {
            json!({"conn_id": format!("c-{i:04}"), "type": if i % 2 == 0 { "generic" } else { "http" },
                   "host": if i % 2 == 0 { "127.0.0.1".to_owned() } else { format!("https://api{i}.example.com") },
                   "port": if i % 2 == 0 { Some(1) } else { None },
                   "description": if i == 1001 { "the Warehouse" } else { "bulk" }})
        })
        .collect();
    let file = cli.path("many.json");
    std::fs::write(
        &file,
        json!({"format": "broked-connections", "version": 1, "connections": rows}).to_string(),
    )
    .unwrap();
    cli.run(&["connections", "import", file.to_str().unwrap()])
        .ok();
    let every: Vec<String> = (0..1203).map(|i| format!("c-{i:04}")).collect();

    let table = cli.run(&["connections", "list"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CONN_ID") && lines[0].ends_with("TEST"),
        "{}",
        lines[0]
    );
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, every);
    assert!(lines[1].ends_with(" -"), "untested: {}", lines[1]);
    let json = cli.run(&["connections", "list", "-o", "json"]).ok().json();
    let list = json.as_array().expect("an array");
    assert_eq!(list.len(), 1203);
    list.iter().for_each(assert_connection_shape);
    assert_eq!(list[1202]["conn_id"], "c-1202");

    let limited = cli
        .run(&argv("connections list --limit 7 -o json"))
        .ok()
        .json();
    assert_eq!(limited.as_array().unwrap().len(), 7);
    let found = cli
        .run(&argv("connections list --search WAREHOUSE -o json"))
        .ok()
        .json();
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["conn_id"], "c-1001");
    let http = cli
        .run(&argv(
            "connections list --type http --search api11 --limit 3",
        ))
        .ok()
        .stdout;
    let ids: Vec<&str> = http
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids, ["c-0011", "c-0111", "c-0113"]);
    let none = cli.run(&argv("connections list --search nothing")).ok();
    assert!(none.stdout.contains("(no connections)"), "{}", none.stdout);
    assert_eq!(
        cli.run(&argv("connections list --search nothing -o json"))
            .ok()
            .json(),
        json!([])
    );

    // A test is kept: --status finds it, the table shows it.
    let tested = cli.run(&["connections", "test", "c-0000"]);
    assert_eq!(tested.code, 1, "the test fails: {tested:?}");
    let failing = cli
        .run(&argv("connections list --status failing -o json"))
        .ok()
        .json();
    assert_eq!(failing.as_array().unwrap().len(), 1);
    assert_eq!(failing[0]["conn_id"], "c-0000");
    assert_eq!(failing[0]["last_test_ok"], false);
    assert!(failing[0]["last_tested_at"].is_string());
    let text = cli.run(&argv("connections list --limit 1")).ok().stdout;
    assert!(text.lines().nth(1).unwrap().ends_with(" failed"), "{text}");
    let untested = cli
        .run(&argv("connections list --status untested -o json"))
        .ok()
        .json();
    assert_eq!(untested.as_array().unwrap().len(), 1202);
    cli.run(&argv("connections list --status broken")).fails(2);
}
