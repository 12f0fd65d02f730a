//! The web UI in a real headless Chromium, driven over WebDriver (`chromedriver` + `fantoccini`),
//! against the real `broked-server` and, for connection tests, the local PostgreSQL.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/services/chromium.sh` installs them
//! and exports `BROKED_TEST_CHROMIUM`/`BROKED_TEST_CHROMEDRIVER`). Without them the tests skip,
//! saying why — or fail when `BROKED_TEST_REQUIRE_SERVICES=1`, as in CI.
//!
//! Every page the tests reach is checked with axe-core's WCAG 2.1 A/AA rules (`a11y::axe`;
//! `BROKED_TEST_AXE` names its `axe.min.js`, which `scripts/services/chromium.sh` vendors).
//!
//! Screenshots go to `tests/artifacts/` (git-ignored): `ui-list.png`, `ui-form.png`,
//! `ui-delete.png`, and at 400 px wide `ui-list-narrow.png`, `ui-form-narrow.png`; `a11y`
//! adds the error summary, forced colours, a stale test result, the discard dialog and the
//! phone layout (docs/ui.md lists them).

mod a11y;
mod history;
mod host_key;
mod rotation;
mod routes_and_patch;
mod scopes;
mod status;
mod tunnel;

use std::future::Future;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use a11y::axe;
use broked_tests::{Reply, Server, env, free_port};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const TAB: &str = "\u{e004}";
const ENTER: &str = "\u{e007}";
/// How long any one step may take: generous, because CI shares two cores among many tests.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Chromium and chromedriver

/// The browser and its driver, or `None` after printing why the test is skipped.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    let var = |name: &str, default: &str| {
        PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.into()))
    };
    let chromium = var("BROKED_TEST_CHROMIUM", "/usr/bin/chromium");
    let driver = var("BROKED_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<String> = [&chromium, &driver]
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    let why = format!(
        "browser tests need Chromium and chromedriver, and {} is missing; install Debian's \
         `chromium chromium-driver` (scripts/services/chromium.sh does) or set \
         BROKED_TEST_CHROMIUM/BROKED_TEST_CHROMEDRIVER",
        missing.join(" and ")
    );
    if env::required() {
        panic!("{why}, and {}=1 makes that a failure", env::REQUIRE_FLAG);
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// A running chromedriver in its own process group, so that dropping it also ends the
/// Chromium it started, whatever state a failed test left it in.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
    profile: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free port and waits until it says it started there. The port
    /// can be taken by another test's process between `free_port` and chromedriver's bind
    /// (seen once under load: the port answered, chromedriver had not bound it, and the
    /// session failed to connect): a driver whose bind failed, or that exited, is stopped and
    /// started again on another port.
    fn start(driver: &Path) -> Driver {
        use std::os::unix::process::CommandExt;
        for _ in 0..3 {
            let profile = tempfile::tempdir().expect("profile dir");
            let port = free_port();
            let log = profile.path().join("chromedriver.log");
            let mut child = Command::new(driver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
            let deadline = Instant::now() + WAIT;
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let exited = child.try_wait().ok().flatten().is_some();
                if exited || text.contains("bind() failed") {
                    let group = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait();
                    break;
                }
                if text.contains("started successfully")
                    && TcpStream::connect(("127.0.0.1", port)).is_ok()
                {
                    return Driver {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                        log,
                        profile,
                    };
                }
                assert!(
                    Instant::now() < deadline,
                    "chromedriver did not start on {port}:\n{text}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("chromedriver could not bind a port (three tried)");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

async fn open_browser(chromium: &Path, driver: &Driver) -> Client {
    let user_data = driver.profile.path().join("chromium");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,900", "--lang=en-US",
                format!("--user-data-dir={}", user_data.display()),
            ],
        },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session: {e}\n{}", driver.log_text()))
}

/// Runs the browser part of a test on a current-thread runtime. The server is started and
/// stopped outside it: its blocking HTTP client must not live inside an async context.
fn run<F: Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f);
}

/// A blocking API call from inside the async test, on a thread of its own.
fn call(server: &Server, method: &str, path: &str, body: Option<&str>) -> Reply {
    std::thread::scope(|s| {
        s.spawn(|| server.call(method, path, body))
            .join()
            .expect("api call")
    })
}

// ---------------------------------------------------------------------------------------------
// Page helpers

async fn page_text(c: &Client) -> String {
    c.execute("return document.body.innerText", vec![])
        .await
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn find(c: &Client, css: &str) -> Element {
    match c.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => panic!("no element {css}: {e}\npage:\n{}", page_text(c).await),
    }
}

/// Waits until a JavaScript expression is true.
async fn wait_js(c: &Client, what: &str, expr: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = c
            .execute(&format!("return Boolean({expr})"), vec![])
            .await
            .expect("execute");
        if v == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what} ({expr})\npage:\n{}",
                page_text(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the element's visible text contains `needle`; returns the text.
async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(needle) {
            return text;
        }
        if Instant::now() > deadline {
            panic!(
                "{css} never showed {needle:?}; it shows {text:?}\npage:\n{}",
                page_text(c).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(c: &Client, css: &str, value: &str) {
    let e = find(c, css).await;
    e.clear().await.expect("clear");
    if !value.is_empty() {
        e.send_keys(value).await.expect("type");
    }
}

async fn click(c: &Client, css: &str) {
    find(c, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn value(c: &Client, css: &str) -> String {
    find(c, css)
        .await
        .prop("value")
        .await
        .expect("value")
        .unwrap_or_default()
}

async fn active_id(c: &Client) -> String {
    let v = c
        .execute(
            "return document.activeElement ? document.activeElement.id : ''",
            vec![],
        )
        .await;
    v.ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn press(c: &Client, key: &str) {
    c.active_element()
        .await
        .expect("active element")
        .send_keys(key)
        .await
        .expect("key");
}

/// Presses Tab until the element with `id` has focus; panics after `max` presses.
async fn tab_to(c: &Client, id: &str, max: usize) {
    let mut seen = Vec::new();
    for _ in 0..max {
        if active_id(c).await == id {
            return;
        }
        press(c, TAB).await;
        seen.push(active_id(c).await);
    }
    assert_eq!(
        active_id(c).await,
        id,
        "Tab never reached #{id}; focus went through {seen:?}"
    );
}

async fn form_shown(c: &Client) {
    wait_js(
        c,
        "the connection form",
        "!document.getElementById('view-form').hidden && document.body.classList.contains('ready')",
    )
    .await;
}

async fn list_shown(c: &Client) {
    wait_js(c, "the list", "!document.getElementById('view-list').hidden && document.getElementById('list-status').textContent.endsWith('.')").await;
}

async fn screenshot(c: &Client, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

/// Opens `route` of the server's UI (`#/connections`, `#/connections/new`, or `""` for the
/// start page).
async fn open(c: &Client, server: &Server, route: &str) {
    c.goto(&format!("{}/{route}", server.base))
        .await
        .unwrap_or_else(|e| panic!("open the UI at /{route}: {e}"));
}

/// Opens the list of connections and waits until it is shown.
async fn open_list(c: &Client, server: &Server) {
    open(c, server, "#/connections").await;
    list_shown(c).await;
}

/// Opens `route` and waits for the connection form under the heading `title`.
async fn open_form(c: &Client, server: &Server, route: &str, title: &str) {
    open(c, server, route).await;
    form_titled(c, title).await;
}

/// Waits for the connection form under the heading `title`.
async fn form_titled(c: &Client, title: &str) {
    form_shown(c).await;
    wait_text(c, "#form-title", title).await;
}

/// Chooses the option `value` of the select `css`.
async fn select(c: &Client, css: &str, value: &str) {
    find(c, css)
        .await
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("select {value:?} in {css}: {e}"));
}

/// Waits until the dialog `id` is open; `what` names it in the failure.
async fn dialog_shown(c: &Client, what: &str, id: &str) {
    wait_js(c, what, &format!("document.getElementById('{id}').open")).await;
}

/// Waits until the dialog `id` is closed.
async fn dialog_closed(c: &Client, id: &str) {
    wait_js(
        c,
        "the dialog closed",
        &format!("!document.getElementById('{id}').open"),
    )
    .await;
}

/// Waits until the page does not scroll sideways.
async fn no_sideways_scroll(c: &Client) {
    wait_js(
        c,
        "no horizontal scroll",
        "document.documentElement.scrollWidth <= window.innerWidth",
    )
    .await;
}

async fn resize(c: &Client, width: u32, height: u32) {
    c.set_window_size(width, height).await.expect("resize");
}

/// Takes the focus from whatever has it (for a screenshot without a focus ring).
async fn blur(c: &Client) {
    c.execute(
        "document.activeElement && document.activeElement.blur()",
        vec![],
    )
    .await
    .expect("js");
}

/// Empties the test result, so that the next one is seen to arrive.
async fn clear_test_result(c: &Client) {
    c.execute(
        "document.getElementById('test-result').replaceChildren()",
        vec![],
    )
    .await
    .expect("js");
}

/// Fills in the form for the test PostgreSQL `pg` under `conn_id`, with `extra`.
async fn fill_postgres(c: &Client, conn_id: &str, pg: &env::Service, extra: &str) {
    fill(c, "#f-conn_id", conn_id).await;
    for (field, var) in [
        ("host", "HOST"),
        ("port", "PORT"),
        ("schema", "DB"),
        ("login", "USER"),
        ("password", "PASSWORD"),
    ] {
        fill(c, &format!("#f-{field}"), pg.get(var)).await;
    }
    fill(c, "#f-extra", extra).await;
}

/// Creates a connection through the API (outside the browser's runtime).
fn create(server: &Server, body: Value) {
    let r = call(server, "POST", "/api/connections", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.text);
}

/// What a browser test runs against: the server on a database of its own, and Chromium with
/// its chromedriver.
struct Ui {
    server: Server,
    chromium: PathBuf,
    driver: Driver,
    dir: tempfile::TempDir,
}

impl Ui {
    /// Starts the server with `args` (as [`Server::start`]) and chromedriver; `None` when the
    /// test is skipped.
    fn start(args: &[&str]) -> Option<Ui> {
        let (chromium, driver_bin) = browser_tools()?;
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(dir.path(), args);
        let driver = Driver::start(&driver_bin);
        Some(Ui {
            server,
            chromium,
            driver,
            dir,
        })
    }

    /// A new browser session.
    async fn browser(&self) -> Client {
        open_browser(&self.chromium, &self.driver).await
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Create a Postgres connection through the form, Test it before and after Save, edit it
/// without touching the password, refuse invalid extra, and delete it while a pipeline uses it.
#[test]
fn connection_lifecycle_in_the_browser() {
    let Some(pg) = env::postgres() else { return };
    let (pg_host, pg_port, pg_password) = (pg.get("HOST"), pg.get("PORT"), pg.get("PASSWORD"));
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    run(async {
        let c = ui.browser().await;
        open_list(&c, server).await;
        wait_text(&c, "#list-status", "No connections yet").await;
        axe(&c, "the empty list").await;

        // New Connection: the type select comes from /api/connection-types, the port from its default.
        click(&c, "#new-connection").await;
        form_titled(&c, "New Connection").await;
        let types = find(&c, "#f-type").await.text().await.expect("options");
        for label in [
            "PostgreSQL",
            "MySQL",
            "SQLite",
            "HTTP / REST API",
            "SFTP / SSH",
            "Amazon S3",
            "Generic",
        ] {
            assert!(types.contains(label), "type select lacks {label}: {types}");
        }
        select(&c, "#f-type", "postgres").await;
        assert_eq!(
            value(&c, "#f-port").await,
            "5432",
            "the port is filled with the type's default"
        );
        wait_text(&c, ".field[data-field=schema] label", "Database").await;

        // Labels follow the type: sqlite asks for a file path and hides the port; s3 for a bucket.
        select(&c, "#f-type", "sqlite").await;
        wait_text(&c, ".field[data-field=host] label", "Database file path").await;
        wait_js(
            &c,
            "port hidden for sqlite",
            "document.querySelector('.field[data-field=port]').hidden",
        )
        .await;
        select(&c, "#f-type", "s3").await;
        wait_text(&c, ".field[data-field=schema] label", "Bucket").await;
        wait_text(&c, ".field[data-field=host] label", "Endpoint").await;
        wait_js(
            &c,
            "region shown for s3",
            "!document.querySelector('.field[data-field=region]').hidden",
        )
        .await;
        assert_eq!(
            value(&c, "#f-port").await,
            "443",
            "an untouched port follows the type"
        );
        select(&c, "#f-type", "postgres").await;
        assert_eq!(value(&c, "#f-port").await, "5432");

        fill_postgres(
            &c,
            "ui-pg",
            &pg,
            r#"{"application_name": "broked-ui-test"}"#,
        )
        .await;
        fill(&c, "#f-description", "created in the browser").await;
        resize(&c, 1280, 1500).await; // the whole form in one picture
        screenshot(&c, "ui-form.png").await;
        axe(&c, "the filled-in New Connection form").await;
        resize(&c, 1280, 900).await;

        // Test before Save: POST /api/connections/test with the form.
        click(&c, "#test").await;
        let result = wait_text(&c, "#test-result", "Success").await;
        axe(&c, "a test result").await;
        assert!(
            result.contains("sqlx-postgres"),
            "the driver is shown: {result}"
        );
        assert!(result.contains(" ms"), "the latency is shown: {result}");
        assert_eq!(
            call(server, "GET", "/api/connections/ui-pg", None).status,
            404,
            "Test saves nothing"
        );

        click(&c, "#save").await;
        // After a create the confirmation shows beside the heading that gets the focus.
        wait_text(&c, "#notice", "Saved ui-pg").await;
        wait_text(&c, "#form-title", "Edit ui-pg").await;
        axe(&c, "the edit form").await;
        let saved = call(server, "GET", "/api/connections/ui-pg", None);
        assert_eq!(saved.status, 200, "{}", saved.text);
        assert_eq!(saved.json["description"], "created in the browser");
        assert_eq!(saved.json["password"], "********");
        assert_eq!(saved.json["extra"], "********");
        assert_eq!(saved.json["port"].as_u64(), pg_port.parse::<u64>().ok());

        // The edit form: conn_id read-only, the password never shown.
        assert_eq!(
            find(&c, "#f-conn_id")
                .await
                .prop("readOnly")
                .await
                .expect("prop")
                .as_deref(),
            Some("true")
        );
        assert_eq!(
            value(&c, "#f-password").await,
            "",
            "a stored password is never put in the page"
        );
        assert_eq!(
            find(&c, "#f-password")
                .await
                .attr("placeholder")
                .await
                .expect("attr")
                .as_deref(),
            Some("********")
        );
        assert!(
            !c.source().await.expect("source").contains(pg_password),
            "the password is not in the page"
        );

        // Test after Save: POST /api/connections/ui-pg/test.
        clear_test_result(&c).await;
        click(&c, "#test").await;
        wait_text(&c, "#test-result", "Success").await;

        // Edit the description only: Test (unsaved, with the mask) and Save keep the password.
        fill(&c, "#f-description", "edited without the password").await;
        clear_test_result(&c).await;
        click(&c, "#test").await;
        wait_text(&c, "#test-result", "Success").await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved ui-pg").await;
        let edited = call(server, "GET", "/api/connections/ui-pg", None);
        assert_eq!(edited.json["description"], "edited without the password");
        assert_eq!(
            edited.json["password"], "********",
            "the stored password was kept"
        );
        let probe = call(server, "POST", "/api/connections/ui-pg/test", None);
        assert_eq!(
            probe.json["success"], true,
            "the kept password still works: {}",
            probe.text
        );
        clear_test_result(&c).await;
        click(&c, "#test").await;
        wait_text(&c, "#test-result", "Success").await;

        // "Clear the stored password" sends null; a test then fails, and says so.
        click(&c, "#f-clear-password").await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved ui-pg").await;
        let cleared = call(server, "GET", "/api/connections/ui-pg", None);
        assert_eq!(cleared.json["password"], Value::Null, "{}", cleared.text);
        assert_eq!(cleared.json["extra"], "********", "extra is kept");
        clear_test_result(&c).await;
        click(&c, "#test").await;
        let failed = wait_text(&c, "#test-result", "Failed").await;
        assert!(
            failed.contains("sqlx-postgres"),
            "a failure names the driver too: {failed}"
        );

        // Invalid extra: an error beside the field, and nothing saved.
        open_form(&c, server, "#/connections/new", "New Connection").await;
        fill(&c, "#f-conn_id", "ui-bad").await;
        fill(&c, "#f-host", "127.0.0.1").await;
        fill(&c, "#f-extra", "{not json").await;
        click(&c, "#save").await;
        wait_text(&c, "#e-extra", "not valid JSON").await;
        axe(&c, "an invalid extra").await;
        assert_eq!(
            active_id(&c).await,
            "f-extra",
            "focus goes to the field to fix"
        );
        fill(&c, "#f-extra", "[1, 2]").await;
        click(&c, "#save").await;
        wait_text(&c, "#e-extra", "must be a JSON object").await;
        assert_eq!(
            call(server, "GET", "/api/connections/ui-bad", None).status,
            404,
            "nothing saved"
        );
        let all = call(server, "GET", "/api/connections", None);
        assert_eq!(
            all.json.as_array().map(Vec::len),
            Some(1),
            "only ui-pg exists: {}",
            all.text
        );

        // An error the server finds is shown beside the field it names.
        fill(&c, "#f-extra", "").await;
        fill(&c, "#f-conn_id", "Not A Slug").await;
        click(&c, "#save").await;
        wait_js(
            &c,
            "the conn_id error",
            "!document.getElementById('e-conn_id').hidden",
        )
        .await;
        assert_eq!(
            call(server, "GET", "/api/connections", None)
                .json
                .as_array()
                .map(Vec::len),
            Some(1)
        );

        // The list, filtered by type. The refused form is not saved: leaving asks first.
        click(&c, "#nav-connections").await;
        dialog_shown(&c, "the discard dialog", "leave-dialog").await;
        click(&c, "#leave-discard").await;
        list_shown(&c).await;
        let row = wait_text(&c, "tr[data-conn-id=ui-pg]", "PostgreSQL").await;
        assert!(
            row.contains(pg_host) && row.contains(pg_port),
            "the row shows host and port: {row}"
        );
        select(&c, "#type-filter", "mysql").await;
        wait_text(&c, "#list-status", "No MySQL connections").await;
        select(&c, "#type-filter", "postgres").await;
        wait_text(&c, "#list-status", "1 PostgreSQL connection").await;
        select(&c, "#type-filter", "").await;
        wait_text(&c, "#list-status", "1 connection").await;
        blur(&c).await;
        screenshot(&c, "ui-list.png").await;
        axe(&c, "the list").await;
        resize(&c, 400, 800).await;
        no_sideways_scroll(&c).await;
        screenshot(&c, "ui-list-narrow.png").await;
        axe(&c, "the list 400 px wide").await;
        resize(&c, 1280, 900).await;

        // Delete while a pipeline uses it: the dialog lists the pipeline and explains the 409.
        let pipeline = r#"{"name": "users sync", "nodes": [{"id": "src", "type": "source_db",
            "config": {"conn_id": "ui-pg", "query": "SELECT 1"}}]}"#;
        let put = call(server, "PUT", "/api/pipelines/users-sync", Some(pipeline));
        assert_eq!(put.status, 200, "{}", put.text);
        click(&c, "tr[data-conn-id=ui-pg] button.delete").await;
        dialog_shown(&c, "the delete dialog", "delete-dialog").await;
        let body = wait_text(&c, "#delete-body", "users-sync").await;
        assert!(
            body.contains("users sync") && body.contains("src"),
            "the pipeline and its node: {body}"
        );
        assert!(body.contains("409"), "the refusal is explained: {body}");
        wait_text(&c, "#delete-confirm", "Delete anyway").await;
        screenshot(&c, "ui-delete.png").await;
        axe(&c, "the delete dialog").await;
        click(&c, "#delete-cancel").await;
        dialog_closed(&c, "delete-dialog").await;
        assert_eq!(
            call(server, "GET", "/api/connections/ui-pg", None).status,
            200,
            "Cancel deletes nothing"
        );
        click(&c, "tr[data-conn-id=ui-pg] button.delete").await;
        wait_text(&c, "#delete-confirm", "Delete anyway").await;
        click(&c, "#delete-confirm").await;
        wait_text(&c, "#notice", "Deleted ui-pg").await;
        wait_text(&c, "#list-status", "No connections yet").await;
        assert_eq!(
            call(server, "GET", "/api/connections/ui-pg", None).status,
            404
        );

        // A narrow window: no sideways scrolling.
        resize(&c, 400, 800).await;
        click(&c, "#new-connection").await;
        form_shown(&c).await;
        no_sideways_scroll(&c).await;
        screenshot(&c, "ui-form-narrow.png").await;
        axe(&c, "the form 400 px wide").await;

        c.close().await.expect("close the browser");
    });
    drop(ui.driver);
    let log = server.log_text();
    assert!(
        !log.contains(pg_password),
        "the server log never holds the password"
    );
}

/// With an API token the page asks for it once and keeps it for the tab; then New Connection
/// and Save are reached with the keyboard alone.
#[test]
fn token_prompt_and_keyboard_only() {
    const TOKEN: &str = "ui-test-token-4f2a";
    let Some(ui) = Ui::start(&["--api-token", TOKEN]) else {
        return;
    };
    let server = &ui.server;
    run(async {
        let c = ui.browser().await;
        open(&c, server, "").await;
        dialog_shown(&c, "the token prompt", "token-dialog").await;
        assert_eq!(active_id(&c).await, "token-input", "the prompt has focus");
        axe(&c, "the token prompt").await;
        press(&c, "wrong-token").await;
        press(&c, ENTER).await;
        wait_js(&c, "the prompt again, saying the token was refused", "document.getElementById('token-dialog').open && !document.getElementById('token-error').hidden").await;
        press(&c, TOKEN).await;
        press(&c, ENTER).await;
        list_shown(&c).await;
        wait_text(&c, "#list-status", "No connections yet").await;
        let stored = c
            .execute(
                "return [sessionStorage.getItem('broked.apiToken'), localStorage.length]",
                vec![],
            )
            .await
            .expect("js");
        assert_eq!(
            stored,
            json!([TOKEN, 0]),
            "the token is kept for the tab only"
        );

        // Keyboard only: Tab to New Connection, Enter, fill in, Tab to Save, Enter.
        blur(&c).await;
        tab_to(&c, "new-connection", 10).await;
        press(&c, ENTER).await;
        form_titled(&c, "New Connection").await;
        tab_to(&c, "f-conn_id", 5).await;
        press(&c, "kbd-conn").await;
        press(&c, TAB).await;
        assert_eq!(active_id(&c).await, "f-type");
        press(&c, TAB).await;
        assert_eq!(active_id(&c).await, "f-host");
        press(&c, "db.example.com").await;
        tab_to(&c, "save", 20).await;
        press(&c, ENTER).await;
        wait_text(&c, "#notice", "Saved kbd-conn").await;
        // The edit page loads the saved connection before its heading takes the focus: on a
        // loaded machine that can come after the notice shows.
        wait_js(
            &c,
            "focus on the new page's heading",
            "document.activeElement && document.activeElement.id === 'form-title'",
        )
        .await;
        assert_eq!(
            active_id(&c).await,
            "form-title",
            "focus on the new page's heading"
        );
        axe(&c, "the edit form reached with the keyboard").await;
        let saved = call(server, "GET", "/api/connections/kbd-conn", None);
        assert_eq!(saved.status, 200, "{}", saved.text);
        assert_eq!(saved.json["type"], "postgres");
        assert_eq!(saved.json["host"], "db.example.com");
        assert_eq!(saved.json["port"], 5432, "the default port was filled in");

        // The token was asked for once: reloading the tab keeps it.
        c.refresh().await.expect("reload");
        form_titled(&c, "Edit kbd-conn").await;
        let open = c
            .execute(
                "return document.getElementById('token-dialog').open",
                vec![],
            )
            .await
            .expect("js");
        assert_eq!(open, Value::Bool(false), "no second prompt");
        c.close().await.expect("close the browser");
    });
    drop(ui.driver);
    assert!(
        !server.log_text().contains(TOKEN),
        "the server log never holds the token"
    );
}
