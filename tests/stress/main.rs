//! Crash safety and concurrency (issue 9): the real binaries killed with SIGKILL at random
//! moments and driven by many writers at once, then checked through the CLI.
//!
//! The normal suite runs a small version of each test. `BROKED_STRESS=1` (set by
//! `scripts/stress`) runs the full one: 60 server kills, `broked key rotate` over 10,000
//! secrets with 25 kills mid-rotation, 32 writers with 50 creates and 100 updates each.
//! `BROKED_STRESS_SEED` replays a run (every test prints its seed).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broked_tests::{bin, broked, column, free_port};
use serde_json::{Value, json};

fn stress() -> bool {
    std::env::var("BROKED_STRESS").is_ok_and(|v| v == "1")
}

/// `fast` in the normal suite, `full` under `BROKED_STRESS=1`.
fn scaled(fast: u64, full: u64) -> u64 {
    if stress() { full } else { fast }
}

/// A small xorshift generator: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("BROKED_STRESS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: BROKED_STRESS_SEED={seed}");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `lo..hi` (hi > lo).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// A `broked-server` this test owns, to be killed with SIGKILL.
struct ServerProc {
    child: Child,
    base: String,
}

impl ServerProc {
    fn spawn(db: &Path, log_name: &str) -> ServerProc {
        let port = free_port();
        let log = std::fs::File::create(db.with_file_name(log_name)).unwrap();
        let child = Command::new(bin("broked-server"))
            .arg("--db")
            .arg(db)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--probe-disabled")
            .env_remove("BROKED_API_TOKEN")
            .env_remove("BROKED_DB")
            .env("BROKED_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn broked-server");
        ServerProc {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn wait_ready(&mut self, http: &reqwest::blocking::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("broked-server exited with {status} before it was ready");
            }
            assert!(Instant::now() < deadline, "broked-server not ready in 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown handler, no flush, no checkpoint.
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON request body (the workspace's reqwest has no `json` feature).
trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::blocking::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}

fn get_json(http: &reqwest::blocking::Client, url: &str) -> Value {
    let text = http.get(url).send().unwrap().text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn cli_ok(db: &Path, args: &[&str]) -> String {
    let out = broked(db, args, None, &[]);
    assert!(
        out.status.success(),
        "broked {} failed: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `broked key check`: every secret opens. Returns how many were checked.
fn key_check(db: &Path) -> u64 {
    let out = cli_ok(db, &["key", "check", "--output", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failures"], json!([]), "key check: {out}");
    v["checked"].as_u64().unwrap()
}

/// Every connection, decrypted, by conn_id.
fn export_decrypted(db: &Path) -> BTreeMap<String, Value> {
    let out = cli_ok(db, &["connections", "export", "--decrypted"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["conn_id"].as_str().unwrap().to_owned(), c.clone()))
        .collect()
}

fn assert_no_panic_in_logs(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            assert!(!text.contains("panicked"), "{name} shows a panic:\n{text}");
        }
    }
}

/// The body of write number `n` to `id`: password, extra and description all carry `n`, so
/// a torn row (one field from another write) shows.
fn versioned(id: &str, n: u64) -> Value {
    json!({
        "password": format!("pw-{id}-{n}"),
        "extra": json!({"n": n}).to_string(),
        "description": format!("n={n}"),
    })
}

/// The version a stored row carries; panics on a torn row.
fn stored_version(id: &str, row: &Value) -> u64 {
    let n: u64 = row["description"]
        .as_str()
        .and_then(|d| d.strip_prefix("n="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{id}: description {}", row["description"]));
    assert_eq!(row["password"], format!("pw-{id}-{n}"), "{id}: torn row");
    assert_eq!(row["extra"]["n"], n, "{id}: torn row");
    n
}

/// What the writers know about one connection.
#[derive(Clone, Debug, Default)]
struct Known {
    /// The last version the API acknowledged (None: the create was never acknowledged).
    acked: Option<u64>,
    /// A version sent without an answer (the server died under it).
    in_flight: Option<u64>,
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    acknowledged_writes_survive_sigkill("every_acknowledged_write_survives_sigkill", 4);
}

/// Issue 19: with 16 writers at once most writes share a commit with others (group commit,
/// `broked-store/src/sqlite/group.rs`); a kill lands inside groups, and still every write
/// the API acknowledged is there afterwards, whole.
#[test]
fn every_acknowledged_grouped_write_survives_sigkill() {
    acknowledged_writes_survive_sigkill("every_acknowledged_grouped_write_survives_sigkill", 16);
}

/// The server killed with SIGKILL `kills` times under `writers` threads that create and
/// update; after each kill every acknowledged write is checked through the CLI.
fn acknowledged_writes_survive_sigkill(test: &str, writers: usize) {
    let kills = scaled(5, 60);
    let mut rng = Rng::new(test);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let http = client();
    let known: Arc<Mutex<BTreeMap<String, Known>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked_total = Arc::new(AtomicUsize::new(0));

    // A kill while the very first start-up creates the key file.
    let first = ServerProc::spawn(&db, "server-startup.log");
    std::thread::sleep(Duration::from_millis(rng.range(0, 60)));
    first.kill9();

    for round in 0..kills {
        let mut server = ServerProc::spawn(&db, &format!("server-{round}.log"));
        server.wait_ready(&http);
        // Online: every acknowledged create is listed.
        let list = get_json(&http, &format!("{}/api/connections", server.base));
        let listed = column(&list, "conn_id");
        for (id, k) in known.lock().unwrap().iter() {
            if k.acked.is_some() {
                assert!(listed.contains(&id.as_str()), "round {round}: {id} lost");
            }
        }

        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let (base, known, failures, stop, acked_total) = (
                    server.base.clone(),
                    known.clone(),
                    failures.clone(),
                    stop.clone(),
                    acked_total.clone(),
                );
                let seed = rng.next();
                std::thread::spawn(move || {
                    let http = client();
                    let mut rng = Rng(seed | 1);
                    let mut seq = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // Half creates, half updates of one of this writer's connections.
                        let mine: Vec<(String, Known)> = known
                            .lock()
                            .unwrap()
                            .iter()
                            .filter(|(id, k)| {
                                id.starts_with(&format!("w{w}-")) && k.acked.is_some()
                            })
                            .map(|(id, k)| (id.clone(), k.clone()))
                            .collect();
                        let (id, n, req) = if mine.is_empty() || rng.next() % 2 == 0 {
                            seq += 1;
                            let id = format!("w{w}-r{round}-{seq}");
                            let mut body = versioned(&id, 0);
                            body["conn_id"] = json!(id);
                            body["type"] = json!("postgres");
                            body["host"] = json!("db.example.com");
                            let req = http
                                .post(format!("{base}/api/connections"))
                                .json_body(&body);
                            (id, 0, req)
                        } else {
                            let (id, k) = &mine[(rng.next() % mine.len() as u64) as usize];
                            let n = k.acked.unwrap() + 1;
                            let req = http
                                .patch(format!("{base}/api/connections/{id}"))
                                .json_body(&versioned(id, n));
                            (id.clone(), n, req)
                        };
                        known
                            .lock()
                            .unwrap()
                            .entry(id.clone())
                            .or_default()
                            .in_flight = Some(n);
                        match req.send() {
                            Ok(r) if r.status().is_success() => {
                                let mut k = known.lock().unwrap();
                                let e = k.get_mut(&id).unwrap();
                                e.acked = Some(n);
                                e.in_flight = None;
                                acked_total.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                let status = r.status();
                                let text = r.text().unwrap_or_default();
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{id} v{n}: {status} {text}"));
                            }
                            // The server was killed under this request.
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.range(20, scaled(400, 700))));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let f = failures.lock().unwrap();
        assert!(f.is_empty(), "round {round}: unexpected answers: {f:?}");
        drop(f);

        // Offline, through the CLI: every secret opens, every acknowledged write is there,
        // whole.
        key_check(&db);
        let rows = export_decrypted(&db);
        let mut k = known.lock().unwrap();
        k.retain(|id, state| {
            match rows.get(id) {
                None => {
                    assert!(
                        state.acked.is_none(),
                        "round {round}: acknowledged {id} lost"
                    );
                    false // an unacknowledged create that did not happen
                }
                Some(row) => {
                    let n = stored_version(id, row);
                    let ok = Some(n) == state.acked || Some(n) == state.in_flight;
                    assert!(
                        ok,
                        "round {round}: {id} has version {n}, acknowledged {:?}, in flight {:?}",
                        state.acked, state.in_flight
                    );
                    state.acked = Some(n);
                    state.in_flight = None;
                    true
                }
            }
        });
    }
    let total = acked_total.load(Ordering::Relaxed);
    let rows = known.lock().unwrap().len();
    eprintln!("{kills} kills, {total} acknowledged writes, {rows} connections checked");
    assert!(
        total as u64 >= kills,
        "too few writes to mean anything: {total}"
    );
    assert_no_panic_in_logs(dir.path());
}

#[test]
fn key_rotate_survives_sigkill() {
    let secrets = scaled(1_000, 10_000);
    let kills = scaled(3, 25);
    let mut rng = Rng::new("key_rotate_survives_sigkill");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");

    // `secrets` connections with a password and an extra each, imported in one go.
    let rows: Vec<Value> = (0..secrets / 2)
        .map(|i| {
            json!({"conn_id": format!("rot-{i}"), "type": "postgres", "host": "db.example.com",
                "login": "u", "password": format!("rot-pw-{i}"), "extra": {"i": i}})
        })
        .collect();
    let file = dir.path().join("import.json");
    std::fs::write(
        &file,
        json!({"format": "broked-connections", "version": 1, "connections": rows}).to_string(),
    )
    .unwrap();
    cli_ok(&db, &["connections", "import", file.to_str().unwrap()]);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(key_check(&db), secrets);

    let verify = |db: &Path, when: &str| {
        assert_eq!(key_check(db), secrets, "{when}");
        let rows = export_decrypted(db);
        assert_eq!(rows.len() as u64, secrets / 2, "{when}");
        for i in 0..secrets / 2 {
            let row = &rows[&format!("rot-{i}")];
            assert_eq!(row["password"], format!("rot-pw-{i}"), "{when}");
            assert_eq!(row["extra"]["i"], i, "{when}");
        }
    };

    // How long one rotation takes here, to aim the kills inside it.
    let t = Instant::now();
    cli_ok(&db, &["key", "rotate"]);
    let full = t.elapsed();
    eprintln!("one rotation of {secrets} secrets: {full:?}");
    verify(&db, "after a full rotation");

    let mut mid = 0;
    let mut attempts = 0;
    while mid < kills {
        attempts += 1;
        assert!(
            attempts <= kills * 4,
            "could not kill mid-rotation: {mid} of {attempts}"
        );
        let mut child = Command::new(bin("broked"))
            .arg("--db")
            .arg(&db)
            .args(["key", "rotate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ms = full.as_millis() as u64;
        std::thread::sleep(Duration::from_millis(
            rng.range(ms / 20, ms.max(2) * 19 / 20 + 1),
        ));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            mid += 1;
        }
        let _ = child.wait();
        verify(&db, &format!("after kill {mid} (attempt {attempts})"));
        if attempts % 5 == 0 {
            // Old keys go once nothing uses them; a half-done rotation must not lose one in use.
            cli_ok(&db, &["key", "prune"]);
            verify(&db, "after prune");
        }
    }
    cli_ok(&db, &["key", "rotate"]);
    cli_ok(&db, &["key", "prune"]);
    verify(&db, "after the last rotation and prune");
    eprintln!("{mid} kills mid-rotation in {attempts} attempts over {secrets} secrets");
}

#[test]
fn concurrent_writers_and_the_cli_lose_nothing() {
    let writers = 32;
    let creates = scaled(3, 50);
    let updates = scaled(5, 100);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let http = client();
    let mut server = ServerProc::spawn(&db, "server.log");
    server.wait_ready(&http);
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));

    // The CLI writes the same database while the server does: creates, updates, a rotation.
    let cli_thread = {
        let (db, failures, done) = (db.clone(), failures.clone(), done.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !done.load(Ordering::Relaxed) || i < 3 {
                let id = format!("cli-{i}");
                let steps: Vec<Vec<String>> = vec![
                    vec![
                        "connections".into(),
                        "add".into(),
                        id.clone(),
                        "--type".into(),
                        "mysql".into(),
                        "--host".into(),
                        "h".into(),
                        "--no-password".into(),
                        "--extra".into(),
                        // argv refuses extra values: a file holds it.
                        {
                            let file = db.with_file_name(format!("extra-{i}.json"));
                            std::fs::write(&file, json!({"i": i}).to_string()).unwrap();
                            format!("@{}", file.display())
                        },
                        "--description".into(),
                        "n=0".into(),
                    ],
                    vec![
                        "connections".into(),
                        "update".into(),
                        "cli-0".into(),
                        "--description".into(),
                        format!("cli n={i}"),
                    ],
                    if i % 3 == 1 {
                        vec!["key".into(), "rotate".into()]
                    } else {
                        vec!["key".into(), "check".into()]
                    },
                ];
                for args in steps {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let out = broked(&db, &args, None, &[]);
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    if !out.status.success() || stderr.contains("locked") {
                        failures.lock().unwrap().push(format!(
                            "broked {}: {} {stderr}",
                            args.join(" "),
                            out.status
                        ));
                    }
                }
                i += 1;
            }
            i
        })
    };

    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (base, failures) = (server.base.clone(), failures.clone());
            std::thread::spawn(move || {
                let http = client();
                let check = |what: &str, r: reqwest::blocking::Response, want: u16| {
                    let status = r.status().as_u16();
                    let text = r.text().unwrap_or_default();
                    if status != want || text.contains("locked") {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("writer {w} {what}: {status} {text}"));
                    }
                };
                let ctr = format!("ctr-{w}");
                let mut body = versioned(&ctr, 0);
                body["conn_id"] = json!(ctr);
                body["type"] = json!("generic");
                body["host"] = json!("10.0.0.1");
                body["port"] = json!(5000 + w);
                let r = http
                    .post(format!("{base}/api/connections"))
                    .json_body(&body)
                    .send();
                check("create counter", r.unwrap(), 201);
                for i in 0..creates.max(updates) {
                    if i < creates {
                        let id = format!("c{w}-{i}");
                        let mut body = versioned(&id, 0);
                        body["conn_id"] = json!(id);
                        body["type"] = json!("postgres");
                        body["host"] = json!("db.example.com");
                        let r = http
                            .post(format!("{base}/api/connections"))
                            .json_body(&body)
                            .send();
                        check(&format!("create {id}"), r.unwrap(), 201);
                    }
                    if i < updates {
                        let r = http
                            .patch(format!("{base}/api/connections/{ctr}"))
                            .json_body(&versioned(&ctr, i + 1))
                            .send();
                        check(&format!("patch {ctr} to {}", i + 1), r.unwrap(), 200);
                        // A read between writes, as a UI would.
                        let r = http.get(format!("{base}/api/connections/{ctr}")).send();
                        check("get", r.unwrap(), 200);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let cli_rounds = cli_thread.join().unwrap();
    let f = failures.lock().unwrap();
    assert!(
        f.is_empty(),
        "{} failures: {:#?}",
        f.len(),
        &f[..f.len().min(20)]
    );
    drop(f);

    // Nothing lost: every create, every counter at its last value, the CLI's rows too.
    let list = get_json(&http, &format!("{}/api/connections", server.base));
    let n_listed = list.as_array().unwrap().len() as u64;
    drop(server);
    key_check(&db);
    let rows = export_decrypted(&db);
    assert_eq!(n_listed, rows.len() as u64);
    for w in 0..writers {
        let ctr = format!("ctr-{w}");
        assert_eq!(
            stored_version(&ctr, &rows[&ctr]),
            updates,
            "{ctr}: lost update"
        );
        for i in 0..creates {
            let id = format!("c{w}-{i}");
            let row = rows.get(&id).unwrap_or_else(|| panic!("{id} lost"));
            assert_eq!(stored_version(&id, row), 0);
        }
    }
    for i in 0..cli_rounds {
        assert!(rows.contains_key(&format!("cli-{i}")), "cli-{i} lost");
    }
    assert_eq!(
        rows["cli-0"]["description"],
        format!("cli n={}", cli_rounds - 1)
    );
    eprintln!(
        "{writers} writers x ({creates} creates + {updates} updates), {cli_rounds} CLI rounds: {} rows",
        rows.len()
    );
    assert_no_panic_in_logs(dir.path());
}
