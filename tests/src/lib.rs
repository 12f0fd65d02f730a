//! End-to-end tests of broked connections: the built binaries driven against real servers.
//!
//! [`Server`] starts the real `broked-server` on a free loopback port with a database in a
//! temporary directory and talks HTTP to it; [`broked`] runs the real `broked`. Every response
//! body and every log line is kept, so tests can assert that no secret ever appears in them.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use broked_testenv as env;

pub mod pg_role;
use serde_json::Value;

/// A built binary of this workspace, found beside the test executable (`target/debug/NAME`).
///
/// `scripts/test` builds them first; plain `cargo test --workspace` builds them too, because
/// each binary's package has an integration test of its own.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A response: status, body text, and the body as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub text: String,
    pub json: Value,
}

/// A running `broked-server`.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub token: Option<String>,
    http: reqwest::blocking::Client,
    /// Every response body this server sent to the test.
    pub transcript: Mutex<Vec<String>>,
}

impl Server {
    /// Starts the server with `--db DIR/broked.db` on a free port, plus `args`; waits for /healthz.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Server::start_with_env(dir, args, &[])
    }

    /// As [`Server::start`], with environment variables.
    pub fn start_with_env(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        Server::start_with_client(dir, args, envs, "http", http)
    }

    /// As [`Server::start_with_env`], talking to `SCHEME://127.0.0.1:PORT` with `http` (for
    /// HTTPS: a client that trusts the test's CA; see `tests/e2e/tls.rs`).
    pub fn start_with_client(
        dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        scheme: &str,
        http: reqwest::blocking::Client,
    ) -> Server {
        let port = free_port();
        let log = dir.join(format!("server-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin("broked-server"));
        // `--db` in `args` (or BROKED_DB in `envs`) replaces the default database.
        if !args.contains(&"--db") && !envs.iter().any(|(k, _)| *k == "BROKED_DB") {
            cmd.arg("--db").arg(dir.join("broked.db"));
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env_remove("BROKED_API_TOKEN")
            .env_remove("BROKED_DB")
            .env("BROKED_LOG", "debug")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let token = args
            .iter()
            .position(|a| *a == "--api-token")
            .map(|i| args[i + 1].to_owned())
            .or_else(|| {
                envs.iter()
                    .find(|(k, _)| *k == "BROKED_API_TOKEN")
                    .map(|(_, v)| (*v).to_owned())
            });
        let child = cmd.spawn().expect("spawn broked-server");
        let mut server = Server {
            child: Some(child),
            port,
            base: format!("{scheme}://127.0.0.1:{port}"),
            dir: dir.to_owned(),
            log,
            token,
            http,
            transcript: Mutex::new(Vec::new()),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.http.get(format!("{}/healthz", self.base)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "broked-server exited with {status} before it was ready:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "broked-server not ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a request; `body` is sent as JSON text when given.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call_with(method, path, body, self.token.as_deref())
    }

    /// Like [`Server::call`], with an explicit bearer token (or none).
    pub fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> Reply {
        let mut req = self.request(method, path);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        self.send(req)
    }

    /// Sends `body` as raw bytes with the given `Content-Type` (none when `None`), with the
    /// server's token: for wire-level cases `call` cannot express (wrong or missing content
    /// type, bytes that are not UTF-8).
    pub fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Reply {
        let mut req = self.request(method, path);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        self.send(req)
    }

    /// A request builder for `method path` on this server, without any header.
    pub fn request(&self, method: &str, path: &str) -> reqwest::blocking::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends a request built by the caller (any header) and records the reply like `call`.
    pub fn send(&self, req: reqwest::blocking::RequestBuilder) -> Reply {
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().expect("body");
        self.transcript.lock().unwrap().push(text.clone());
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, text, json }
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.call("POST", path, Some(body))
    }

    pub fn put(&self, path: &str, body: &str) -> Reply {
        self.call("PUT", path, Some(body))
    }

    pub fn patch(&self, path: &str, body: &str) -> Reply {
        self.call("PATCH", path, Some(body))
    }

    /// The server's log so far. The server writes its log lines from a background thread
    /// (issue 19), so a line of a request just answered may not be in the file yet: this
    /// waits until the file has not changed for 100 ms (at most 5 s), so what a test reads —
    /// or checks is absent — includes the lines of every request answered before the call.
    pub fn log_text(&self) -> String {
        let read = || std::fs::read_to_string(&self.log).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = read();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = read();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// Kills the server with SIGKILL (a crash, as far as the server can tell) and waits.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits; returns whether the server exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The string `key` of each object in the JSON array `list`: the `conn_id`s of a listing, the
/// `field`s of a validation error.
pub fn column<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {list}"))
        .iter()
        .map(|o| {
            o[key]
                .as_str()
                .unwrap_or_else(|| panic!("no string {key} in {o}"))
        })
        .collect()
}

/// A command line's words, for one written as a string (none of its words has a space).
pub fn argv(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Runs `broked --db DB ARGS` to completion, with `envs` and without the test's `BROKED_DB`;
/// `stdin` is piped in (nothing on stdin when `None`).
/// `broked token create NAME ARGS -o json` on `db`: the token.
pub fn create_token(db: &Path, name: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", name, "--output", "json"];
    all.extend_from_slice(args);
    let o = broked(db, &all, None, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

pub fn broked(db: &Path, args: &[&str], stdin: Option<&str>, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin("broked"));
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .env_remove("BROKED_DB")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn broked");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for broked")
}

/// Runs `broked-server` to completion (for start-up failures).
pub fn server_output(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin("broked-server"));
    cmd.args(args)
        .env_remove("BROKED_API_TOKEN")
        .env_remove("BROKED_DB")
        .current_dir(dir)
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run broked-server")
}

/// Every file below `dir` (database, WAL, key-adjacent files, logs), read as bytes, that
/// contains `needle` — for leak checks.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    hits.push(path);
                }
            }
        }
    }
    hits
}
