//! Operating the server (issue 22): a store that cannot be reached answers 503
//! `store_unavailable` with `Retry-After` within `--store-timeout`, `/healthz` stays a
//! liveness check while `/readyz` says why the server cannot serve, the server recovers by
//! itself when the store is back, `/metrics` parses as the Prometheus text format and moves
//! with the requests, and `--log-format json` carries a request id.
//!
//! PostgreSQL: a private cluster of this test (initdb on a free loopback port, password
//! authentication), stopped and started by the test; never the shared one. SQLite: the
//! database file replaced by a directory or by a file that is not a database (the tests run
//! as root in CI, where `chmod 000` would not stop the server from reading).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use broked_tests::env::PgCluster;
use broked_tests::{Server, argv, bin, column, free_port};
use serde_json::{Value, json};

const TOKEN: &str = "Operate-Token-0c4d9e";
/// The connection's secrets, and the database password, searched for in every output.
const PASSWORD: &str = "Heron-Pw-51ab";
const EXTRA_VALUE: &str = "Ibis-Extra-2d7f";
/// The private cluster's user and password (broked_testenv's).
const PG_USER: &str = PgCluster::USER;
const PG_PASSWORD: &str = PgCluster::PASSWORD;

/// A response with the headers this file checks.
struct Answer {
    status: u16,
    json: Value,
    text: String,
    retry_after: Option<String>,
    request_id: Option<String>,
    took: Duration,
}

fn send(server: &Server, method: &str, path: &str, body: Option<&str>, token: bool) -> Answer {
    let mut req = server.request(method, path);
    if token {
        req = req.bearer_auth(TOKEN);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let start = Instant::now();
    let resp = req.send().expect("request");
    let took = start.elapsed();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after");
    let request_id = header("x-request-id");
    let status = resp.status().as_u16();
    let text = resp.text().expect("body");
    server.transcript.lock().unwrap().push(text.clone());
    Answer {
        status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        retry_after,
        request_id,
        took,
    }
}

/// Creates the connection `id` ([`connection_body`]) with the token; it must succeed.
fn create(server: &Server, id: &str) {
    let a = send(
        server,
        "POST",
        "/api/connections",
        Some(&connection_body(id)),
        true,
    );
    assert_eq!(a.status, 201, "{}", a.text);
}

fn connection_body(id: &str) -> String {
    json!({
        "conn_id": id,
        "type": "postgres",
        "host": "db.example.com",
        "login": "etl",
        "password": PASSWORD,
        "extra": json!({"application_name": EXTRA_VALUE}).to_string(),
        "description": "v1",
    })
    .to_string()
}

/// Every API route, with a body where it takes one.
fn every_route() -> Vec<(&'static str, &'static str, Option<String>)> {
    let pipeline = json!({"name": "p", "nodes": [{"id": "n1", "type": "extract",
        "config": {"conn_id": "c1"}}]})
    .to_string();
    vec![
        ("GET", "/api/connections", None),
        ("POST", "/api/connections", Some(connection_body("c9"))),
        ("GET", "/api/connections/c1", None),
        ("PUT", "/api/connections/c1", Some(connection_body("c1"))),
        (
            "PATCH",
            "/api/connections/c1",
            Some(json!({"description": "x"}).to_string()),
        ),
        ("DELETE", "/api/connections/c2", None),
        ("POST", "/api/connections/c1/test", None),
        (
            "POST",
            "/api/connections/test",
            Some(
                json!({"conn_id": "c1", "type": "postgres", "host": "127.0.0.1",
                "port": free_port(), "login": "etl", "password": "********"})
                .to_string(),
            ),
        ),
        ("GET", "/api/connections/c1/used-by", None),
        ("GET", "/api/pipelines", None),
        ("GET", "/api/pipelines/p1", None),
        ("PUT", "/api/pipelines/p2", Some(pipeline)),
        ("DELETE", "/api/pipelines/p1", None),
    ]
}

/// The store is down: every route answers 503 store_unavailable with Retry-After within the
/// limit (plus scheduling slack), `/readyz` 503, `/healthz` 200.
fn assert_unavailable_everywhere(server: &Server, limit: Duration) {
    let bound = limit + Duration::from_secs(2);
    for (method, path, body) in every_route() {
        let a = send(server, method, path, body.as_deref(), true);
        assert_eq!(a.status, 503, "{method} {path}: {}", a.text);
        assert_eq!(
            a.json["error"]["code"], "store_unavailable",
            "{method} {path}: {}",
            a.text
        );
        assert!(a.retry_after.is_some(), "{method} {path}: no Retry-After");
        assert!(a.took < bound, "{method} {path} took {:?}", a.took);
    }
    let ready = send(server, "GET", "/readyz", None, false);
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.json["reason"], "store_unavailable", "{}", ready.text);
    assert!(ready.retry_after.is_some());
    assert!(ready.took < bound, "/readyz took {:?}", ready.took);
    let health = send(server, "GET", "/healthz", None, false);
    assert_eq!(health.status, 200);
}

/// No secret, extra value, database password or credentialed URL in `text`.
fn assert_no_leak(what: &str, text: &str) {
    for needle in [PASSWORD, EXTRA_VALUE, PG_PASSWORD, TOKEN] {
        assert!(!text.contains(needle), "{needle:?} in {what}:\n{text}");
    }
    assert!(
        !text.contains(&format!("{PG_USER}:")),
        "a URL with user information in {what}:\n{text}"
    );
}

// ---------------------------------------------------------------------------------------
// A strict parser of the Prometheus text format (the OpenMetrics flavour the server sends).

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `text` strictly: `# HELP`/`# TYPE`/`# UNIT` lines, samples `name{l="v",…} value`
/// of a declared family with the suffixes its type allows, escaped label values, one
/// `# EOF` at the end. Panics on anything else.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "a line after # EOF: {line:?}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("a metric name");
            assert!(valid_name(name), "bad metric name {name:?}");
            match kind {
                "HELP" | "UNIT" => {}
                "TYPE" => {
                    let t = parts.next().expect("a type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "unknown",
                            "summary"
                        ]
                        .contains(&t),
                        "type {t:?}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.to_owned()).is_none(),
                        "{name} declared twice"
                    );
                }
                other => panic!("unknown comment {other:?}: {line:?}"),
            }
            continue;
        }
        let (name, labels, rest) = parse_series(line);
        let value_text = rest.split(' ').next().unwrap();
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
        };
        let family = types
            .keys()
            .filter(|f| {
                name == **f
                    || ["_total", "_bucket", "_count", "_sum", "_created", "_info"]
                        .iter()
                        .any(|s| name == format!("{f}{s}"))
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample of an undeclared family: {line:?}"));
        let t = &types[family];
        let suffix = &name[family.len()..];
        let allowed: &[&str] = match t.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &["", "_count", "_sum"],
        };
        assert!(allowed.contains(&suffix), "{name} in a {t}: {line:?}");
        if suffix == "_bucket" {
            assert!(labels.contains_key("le"), "a bucket without le: {line:?}");
        }
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    assert!(eof, "no # EOF at the end");
    check_histograms(&samples);
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{labels} rest` → (name, labels, rest).
fn parse_series(line: &str) -> (String, BTreeMap<String, String>, &str) {
    let end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line:?}"));
    let name = &line[..end];
    assert!(valid_name(name), "bad sample name in {line:?}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut s = inner;
        loop {
            if let Some(after) = s.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = s
                .find('=')
                .unwrap_or_else(|| panic!("label without =: {line:?}"));
            let key = &s[..eq];
            assert!(
                valid_name(key) && !key.contains(':'),
                "bad label name {key:?}"
            );
            let mut chars = s[eq + 1..].char_indices();
            assert_eq!(chars.next().map(|c| c.1), Some('"'), "unquoted: {line:?}");
            let mut value = String::new();
            let mut closed = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|c| c.1) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    '"' => {
                        closed = Some(eq + 1 + i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let after = closed.unwrap_or_else(|| panic!("unterminated value: {line:?}"));
            assert!(
                labels.insert(key.to_owned(), value).is_none(),
                "label twice: {line:?}"
            );
            s = &s[after..];
            s = s.strip_prefix(',').unwrap_or(s);
        }
    }
    let rest = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value: {line:?}"));
    (name.to_owned(), labels, rest)
}

/// Every histogram series: cumulative buckets that never fall, ending in `+Inf` equal to
/// `_count`.
fn check_histograms(samples: &[Sample]) {
    type Series = (String, Vec<(String, String)>);
    let mut series: BTreeMap<Series, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let family = s.name.trim_end_matches("_bucket").to_owned();
        let mut others: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        others.sort();
        let le: f64 = match s.labels["le"].as_str() {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        series
            .entry((family, others))
            .or_default()
            .push((le, s.value));
    }
    for ((family, labels), buckets) in series {
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        let (last_le, last) = *buckets.last().unwrap();
        assert!(last_le.is_infinite(), "{family} {labels:?}: no +Inf bucket");
        let count = samples
            .iter()
            .find(|s| {
                s.name == format!("{family}_count")
                    && s.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Vec<_>>()
                        == labels
            })
            .unwrap_or_else(|| panic!("{family} {labels:?}: no _count"));
        assert_eq!(count.value, last, "{family} {labels:?}");
    }
}

/// The value of the sample `name` with (at least) these labels; 0 when absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn scrape(server: &Server) -> (Vec<Sample>, String) {
    let a = send(server, "GET", "/metrics", None, true);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_no_leak("/metrics", &a.text);
    (parse_metrics(&a.text), a.text)
}

#[test]
fn the_metrics_parser_refuses_what_is_not_the_text_format() {
    let good = "# TYPE a counter\na_total{x=\"1\"} 2\n# EOF\n";
    assert_eq!(parse_metrics(good).len(), 1);
    for bad in [
        "# TYPE a counter\na_total 2\n",                // no EOF
        "a_total 2\n# EOF\n",                           // undeclared
        "# TYPE a counter\na 2\n# EOF\n",               // a counter without _total
        "# TYPE a counter\na_total{x=1} 2\n# EOF\n",    // unquoted label
        "# TYPE a counter\na_total{x=\"1\"}2\n# EOF\n", // no space
        "# TYPE a counter\na_total two\n# EOF\n",       // not a number
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n# EOF\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_metrics(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}

/// `/metrics`: the text format, protected by the token, counters that move with the
/// requests made, label values only from fixed sets, nothing secret.
#[test]
fn metrics_parse_and_move_with_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", TOKEN]);
    let no_token = send(&server, "GET", "/metrics", None, false);
    assert_eq!(no_token.status, 401, "{}", no_token.text);
    // A proxy's plain request id is kept; anything else is replaced by a new one.
    let ids = |given: &str| {
        let r = server
            .request("GET", "/healthz")
            .header("x-request-id", given)
            .send()
            .unwrap();
        r.headers()["x-request-id"].to_str().unwrap().to_owned()
    };
    assert_eq!(ids("proxy-42.a_b"), "proxy-42.a_b");
    for bad in ["with space", "quote\"", &"x".repeat(65)] {
        let got = ids(bad);
        assert_ne!(got, bad);
        assert!(got.len() <= 64 && !got.contains(' '), "{got}");
    }
    let first = send(&server, "GET", "/healthz", None, false)
        .request_id
        .unwrap();
    let second = send(&server, "GET", "/healthz", None, false)
        .request_id
        .unwrap();
    assert_ne!(first, second);

    create(&server, "c1");
    let (before, _) = scrape(&server);
    let route = "/api/connections/{conn_id}";
    let got = |s: &[Sample]| {
        value(
            s,
            "broked_http_requests_total",
            &[("route", route), ("method", "GET"), ("status", "200")],
        )
    };
    for _ in 0..3 {
        assert_eq!(
            send(&server, "GET", "/api/connections/c1", None, true).status,
            200
        );
    }
    let missing = send(
        &server,
        "GET",
        "/api/connections/no-such-id-4e1f",
        None,
        true,
    );
    assert_eq!(missing.status, 404);
    // A method no route has: counted as "other", not under its own name.
    assert_eq!(
        send(&server, "FROBNICATE", "/api/connections", None, true).status,
        405
    );
    // A test of a sqlite connection whose file does not exist: a failed test, counted.
    let test = send(
        &server,
        "POST",
        "/api/connections/test",
        Some(&json!({"type": "sqlite", "host": dir.path().join("absent.db")}).to_string()),
        true,
    );
    assert_eq!(test.status, 200, "{}", test.text);
    let (after, text) = scrape(&server);

    assert_eq!(got(&after) - got(&before), 3.0);
    assert_eq!(
        value(
            &after,
            "broked_http_requests_total",
            &[("route", route), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "broked_http_requests_total", &[("method", "other")]),
        1.0
    );
    assert!(!text.contains("no-such-id-4e1f"), "a path in a label");
    assert!(!text.contains("FROBNICATE"), "a method in a label");
    assert!(
        value(
            &after,
            "broked_http_request_duration_seconds_count",
            &[("route", route), ("method", "GET")]
        ) >= 3.0
    );
    // The library's store calls: four reads of the row (three 200, one 404), each a page
    // of one since issue 19.
    let reads = |s: &[Sample]| value(s, "broked_store_calls_total", &[("op", "page_connections")]);
    assert!(reads(&after) - reads(&before) >= 4.0, "{text}");
    assert!(
        value(
            &after,
            "broked_store_call_duration_seconds_count",
            &[("op", "page_connections")]
        ) >= 4.0
    );
    assert_eq!(
        value(
            &after,
            "broked_connection_test_duration_seconds_count",
            &[("type", "sqlite")]
        ) - value(
            &before,
            "broked_connection_test_duration_seconds_count",
            &[("type", "sqlite")]
        ),
        1.0,
        "{text}"
    );
    // The create sealed the password and the extra with the active key.
    assert!(value(&after, "broked_seals_total", &[]) >= 2.0, "{text}");
    assert!(
        value(&after, "broked_key_active_seals", &[]) >= 2.0,
        "{text}"
    );
    assert_eq!(
        value(&after, "broked_key_seal_limit", &[]),
        2f64.powi(31),
        "{text}"
    );
    assert_eq!(
        value(&after, "broked_key_sealed_values", &[("key", "k1")]),
        2.0,
        "{text}"
    );
    for name in [
        "broked_resolve_cache_hits_total",
        "broked_resolve_cache_misses_total",
    ] {
        assert!(after.iter().any(|s| s.name == name), "{name} missing");
    }
    // Only fixed label names.
    for s in &after {
        for k in s.labels.keys() {
            assert!(
                [
                    "route", "method", "status", "op", "type", "result", "key", "le"
                ]
                .contains(&k.as_str()),
                "label {k} on {}",
                s.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// SQLite

/// The database file replaced by a directory, then by a file that is not a database: 503
/// store_unavailable, /readyz 503, /healthz 200, the CLI exits 69; restored: 200 with every
/// acknowledged write. A key file of another database: /readyz 503 key_mismatch.
#[test]
fn a_sqlite_file_that_cannot_be_read_answers_503_then_200_when_restored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let limit = Duration::from_secs(1);
    let server = Server::start(dir.path(), &["--api-token", TOKEN, "--store-timeout", "1"]);
    create(&server, "c1");
    let ok = send(
        &server,
        "PATCH",
        "/api/connections/c1",
        Some(&json!({"description": "v2"}).to_string()),
        true,
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(send(&server, "GET", "/readyz", None, false).status, 200);

    // Moved aside with its -wal and -shm (a stale WAL beside a foreign file would be read
    // as the database's pages, and a process closing it last would checkpoint into it).
    let side = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let aside = dir.path().join("aside");
    std::fs::create_dir(&aside).unwrap();
    type Breaker = fn(&Path);
    let breakers: [(&str, Breaker); 2] = [
        ("a directory", |p| std::fs::create_dir(p).unwrap()),
        ("not a database", |p| {
            std::fs::write(p, "this is not a database\n".repeat(200)).unwrap()
        }),
    ];
    for (what, break_it) in breakers {
        for suffix in ["", "-wal", "-shm"] {
            let from = side(suffix);
            if from.exists() {
                std::fs::rename(&from, aside.join(format!("db{suffix}"))).unwrap();
            }
        }
        break_it(&db);
        assert_unavailable_everywhere(&server, limit);
        let cli = Command::new(bin("broked"))
            .args(["--db"])
            .arg(&db)
            .args(["connections", "list"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&cli.stderr);
        assert_eq!(cli.status.code(), Some(69), "{what}: {stderr}");
        assert!(stderr.contains("broked.db"), "{what}: {stderr}");
        assert!(stderr.contains("unavailable"), "{what}: {stderr}");

        if db.is_dir() {
            std::fs::remove_dir(&db).unwrap();
        } else {
            std::fs::remove_file(&db).unwrap();
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(side(suffix));
            let kept = aside.join(format!("db{suffix}"));
            if kept.exists() {
                std::fs::rename(&kept, side(suffix)).unwrap();
            }
        }
        let back = send(&server, "GET", "/api/connections/c1", None, true);
        assert_eq!(back.status, 200, "{what}: {}", back.text);
        assert_eq!(back.json["description"], "v2");
        assert_eq!(back.json["password"], "********");
        assert_eq!(send(&server, "GET", "/readyz", None, false).status, 200);
    }

    // Another database's key file in place of ours: not ready, and says why.
    let other = tempfile::tempdir().unwrap();
    let other_db = other.path().join("other.db");
    let made = Command::new(bin("broked"))
        .arg("--db")
        .arg(&other_db)
        .args(argv(
            "connections add x --type generic --host h --port 1 --no-password",
        ))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = dir.path().join("broked.db.key");
    let saved = std::fs::read(&key).unwrap();
    std::fs::copy(other.path().join("other.db.key"), &key).unwrap();
    let ready = send(&server, "GET", "/readyz", None, false);
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert_eq!(ready.json["reason"], "key_mismatch", "{}", ready.text);
    std::fs::write(&key, saved).unwrap();
    assert_eq!(send(&server, "GET", "/readyz", None, false).status, 200);

    for body in server.transcript.lock().unwrap().iter() {
        assert_no_leak("a response", body);
    }
    assert_no_leak("the server log", &server.log_text());
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// A private cluster under `root` where the PostgreSQL service is configured (scripts/test
/// installs it); `None` when the test is skipped.
fn private_cluster(root: &Path) -> Option<PgCluster> {
    if broked_tests::env::postgres().is_none() {
        eprintln!("SKIPPED: PostgreSQL not configured");
        return None;
    }
    PgCluster::start_without_tls(root)
}

/// The key file of a server on PostgreSQL, in its directory.
const KEY_FILE: &str = "keyring.key";

/// The server on the PostgreSQL database `url` with [`KEY_FILE`] in `dir`, the token,
/// `--store-timeout 1` and `args`.
fn start_on_postgres(dir: &Path, url: &str, args: &[&str]) -> Server {
    let key = dir.join(KEY_FILE);
    let mut all = vec!["--api-token", TOKEN, "--store-timeout", "1"];
    all.extend_from_slice(args);
    all.extend(["--key-file", key.to_str().unwrap()]);
    Server::start_with_env(dir, &all, &[("BROKED_DB", url)])
}

/// Stops the cluster for the length of a scope and starts it again when the scope ends,
/// also when an assertion in it fails.
struct Outage<'a>(&'a PgCluster, bool);

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.start_again();
        }
    }
}

impl Outage<'_> {
    fn end(mut self) {
        self.1 = true;
        self.0.start_again();
    }
}

/// PostgreSQL stopped under a running server: every route answers 503 store_unavailable
/// within `--store-timeout`, /readyz 503 and /healthz 200, the CLI exits 69 naming the store
/// without its password, /metrics still answers and counts the failures; started again,
/// reads and writes succeed within 5 s with every acknowledged write there, without a
/// restart. JSON logs carry the request id the response sent.
#[test]
fn a_stopped_postgres_answers_503_fast_and_the_server_recovers_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let Some(cluster) = private_cluster(root.path()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join(KEY_FILE);
    let url = cluster.url("");
    let limit = Duration::from_secs(1);
    let server = start_on_postgres(dir.path(), &url, &["--log-format", "json"]);
    for id in ["c1", "c2"] {
        create(&server, id);
    }
    let pipeline = json!({"name": "p", "nodes": [{"id": "n1", "type": "extract",
        "config": {"conn_id": "c1"}}]})
    .to_string();
    assert_eq!(
        send(&server, "PUT", "/api/pipelines/p1", Some(&pipeline), true).status,
        200
    );
    let acked = send(
        &server,
        "PATCH",
        "/api/connections/c1",
        Some(&json!({"description": "acknowledged"}).to_string()),
        true,
    );
    assert_eq!(acked.status, 200, "{}", acked.text);
    assert_eq!(send(&server, "GET", "/readyz", None, false).status, 200);

    let outage = Outage(&cluster, false);
    cluster.stop();
    assert_unavailable_everywhere(&server, limit);
    // Metrics still answer (the bootstrap token needs no store) and count the failures.
    let (samples, _) = scrape(&server);
    assert!(
        value(&samples, "broked_store_unavailable_total", &[]) >= 13.0,
        "{samples:?}"
    );
    assert!(
        value(
            &samples,
            "broked_http_requests_total",
            &[("route", "/api/connections/{conn_id}"), ("status", "503")]
        ) >= 4.0
    );
    // The CLI: a distinct exit code, the store named without its password.
    let cli = Command::new(bin("broked"))
        .args(["--key-file", key.to_str().unwrap(), "connections", "list"])
        .env("BROKED_DB", &url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!("postgres://127.0.0.1:{}/postgres", cluster.port)),
        "{stderr}"
    );
    assert_no_leak("the CLI's error", &stderr);
    outage.end();

    // Back: within 5 s reads and writes succeed, and nothing acknowledged is lost.
    let back = Instant::now();
    loop {
        let a = send(&server, "GET", "/api/connections/c1", None, true);
        if a.status == 200 {
            assert_eq!(a.json["description"], "acknowledged", "{}", a.text);
            break;
        }
        assert_eq!(a.status, 503, "{}", a.text);
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "not back after 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let write = send(
        &server,
        "PATCH",
        "/api/connections/c2",
        Some(&json!({"description": "after"}).to_string()),
        true,
    );
    assert_eq!(write.status, 200, "{}", write.text);
    assert!(back.elapsed() < Duration::from_secs(5));
    let list = send(&server, "GET", "/api/connections", None, true);
    let ids = column(&list.json, "conn_id");
    assert_eq!(ids, ["c1", "c2"]);
    let used = send(&server, "GET", "/api/connections/c1/used-by", None, true);
    assert_eq!(
        used.json["pipelines"][0]["pipeline_id"], "p1",
        "{}",
        used.text
    );
    let ready = send(&server, "GET", "/readyz", None, false);
    assert_eq!(ready.status, 200, "{}", ready.text);
    // The secrets are intact: the CLI resolves the full URI.
    let uri = Command::new(bin("broked"))
        .args([
            "--key-file",
            key.to_str().unwrap(),
            "connections",
            "get",
            "c1",
            "--uri",
        ])
        .env("BROKED_DB", &url)
        .output()
        .unwrap();
    assert!(
        uri.status.success(),
        "{}",
        String::from_utf8_lossy(&uri.stderr)
    );
    assert!(String::from_utf8_lossy(&uri.stdout).contains(PASSWORD));

    // JSON logs, one object a line; the request event carries the id the response sent.
    let id = send(&server, "GET", "/api/connections/c2", None, true)
        .request_id
        .expect("X-Request-Id");
    let log = server.log_text();
    let mut found = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if event["fields"]["request_id"] == id.as_str() {
            assert_eq!(event["fields"]["route"], "/api/connections/{conn_id}");
            assert_eq!(event["fields"]["status"], 200);
            found = true;
        }
    }
    assert!(found, "no log event with request id {id}");
    for body in server.transcript.lock().unwrap().iter() {
        assert_no_leak("a response", body);
    }
    assert_no_leak("the server log", &log);
}

/// A SQLite write lock held by another process past `--store-timeout`: a write answers 503
/// `busy` with `Retry-After` within the limit while reads go on; released, the write works.
#[test]
fn a_sqlite_lock_held_past_the_limit_is_503_busy_within_the_limit() {
    use std::io::Write;
    let Ok(sqlite3) = which("sqlite3") else {
        // scripts/test installs it: there a missing one is a failure.
        assert!(
            !broked_tests::env::required(),
            "no sqlite3 command to hold the lock"
        );
        eprintln!("SKIPPED: no sqlite3 command to hold the lock");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--api-token", TOKEN, "--store-timeout", "1"]);
    create(&server, "c1");
    let mut holder = Command::new(sqlite3)
        .arg(dir.path().join("broked.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = holder.stdin.take().unwrap();
    stdin
        .write_all(
            b".timeout 5000\nBEGIN IMMEDIATE;\nUPDATE state SET generation = generation WHERE id = 1;\n",
        )
        .unwrap();
    stdin.flush().unwrap();
    let patch = json!({"description": "during"}).to_string();
    let start = Instant::now();
    let busy = loop {
        let a = send(&server, "PATCH", "/api/connections/c1", Some(&patch), true);
        if a.status == 503 {
            break a;
        }
        assert_eq!(a.status, 200, "{}", a.text);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the lock was never held"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(busy.json["error"]["code"], "busy", "{}", busy.text);
    assert_eq!(busy.retry_after.as_deref(), Some("1"));
    assert!(busy.took < Duration::from_millis(2500), "{:?}", busy.took);
    assert_eq!(
        send(&server, "GET", "/api/connections/c1", None, true).status,
        200
    );
    stdin.write_all(b"ROLLBACK;\n.quit\n").unwrap();
    drop(stdin);
    holder.wait().unwrap();
    let after = send(&server, "PATCH", "/api/connections/c1", Some(&patch), true);
    assert_eq!(after.status, 200, "{}", after.text);
}

/// `name` on the PATH.
fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

/// A TCP relay from a loopback port to `target` that can be frozen: while frozen it keeps
/// every connection open and passes nothing on — a network that silently drops packets.
struct Relay {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (frozen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (f, s) = (f.clone(), s.clone());
                    std::thread::spawn(move || pipe(from, to, &f, &s));
                }
            }
        });
        Relay { port, frozen, stop }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.freeze(false);
    }
}

/// Copies `from` to `to`; while `frozen`, reads nothing and sends nothing.
fn pipe(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    frozen: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = [0u8; 16384];
    while !stop.load(Ordering::Relaxed) {
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// The network to PostgreSQL goes silent (no refusal, no reset: a relay that holds every
/// connection open and passes nothing): new requests still answer 503 store_unavailable
/// within `--store-timeout` — the pool's acquire timeout covers the check of an idle
/// connection and the connect of a new one — and when the network is back, so is the server.
#[test]
fn a_silent_network_to_postgres_answers_503_within_the_limit() {
    let root = tempfile::tempdir().unwrap();
    let Some(cluster) = private_cluster(root.path()) else {
        return;
    };
    let relay = Relay::start(cluster.port);
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{}/postgres",
        relay.port
    );
    let server = start_on_postgres(dir.path(), &url, &[]);
    create(&server, "c1");
    assert_eq!(
        send(&server, "GET", "/api/connections/c1", None, true).status,
        200
    );

    relay.freeze(true);
    // A read is abandoned after twice the limit plus 1 s, a write after three times plus
    // 2 s (crates/broked-store/src/postgres/bridge.rs); a request that starts while the
    // network is silent mostly fails sooner, at the pool's acquire timeout. Plus slack.
    let read_bound = Duration::from_millis(3000 + 1500);
    let write_bound = Duration::from_millis(5000 + 1500);
    for (method, path, body, bound) in [
        ("GET", "/api/connections/c1", None, read_bound),
        ("GET", "/api/connections", None, read_bound),
        (
            "PATCH",
            "/api/connections/c1",
            Some(json!({"description": "x"}).to_string()),
            write_bound,
        ),
        ("GET", "/api/pipelines", None, read_bound),
        ("GET", "/api/connections/c1", None, read_bound),
    ] {
        let a = send(&server, method, path, body.as_deref(), true);
        assert_eq!(a.status, 503, "{method} {path}: {}", a.text);
        assert_eq!(a.json["error"]["code"], "store_unavailable", "{}", a.text);
        assert!(a.took < bound, "{method} {path} took {:?}", a.took);
    }
    let bound = read_bound;
    let ready = send(&server, "GET", "/readyz", None, false);
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(ready.took < bound, "/readyz took {:?}", ready.took);
    assert_eq!(send(&server, "GET", "/healthz", None, false).status, 200);

    relay.freeze(false);
    let back = Instant::now();
    loop {
        let a = send(&server, "GET", "/api/connections/c1", None, true);
        if a.status == 200 {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "{}", a.text);
        std::thread::sleep(Duration::from_millis(100));
    }
    let write = send(
        &server,
        "PATCH",
        "/api/connections/c1",
        Some(&json!({"description": "after"}).to_string()),
        true,
    );
    assert_eq!(write.status, 200, "{}", write.text);
    for body in server.transcript.lock().unwrap().iter() {
        assert_no_leak("a response", body);
    }
}
