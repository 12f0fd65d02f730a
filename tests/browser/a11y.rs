//! What a person meets in the UI beyond "it works" (issue 24): errors in the form's words and
//! all at once, focus and field borders one can see (also in forced colours), a confirmation
//! beside the heading, no edit lost and no stale test verdict, and a phone layout made for
//! fingers. Every page these tests reach is checked with axe-core (WCAG 2.1 A and AA).

use std::sync::OnceLock;

use super::*;

const ESCAPE: &str = "\u{e00c}";

// ---------------------------------------------------------------------------------------------
// axe-core

/// axe-core's `axe.min.js` (`BROKED_TEST_AXE`, vendored from its npm package by
/// `scripts/services/chromium.sh`), read once; `None` after saying why it is missing — a
/// failure when `BROKED_TEST_REQUIRE_SERVICES=1`.
fn axe_source() -> Option<&'static str> {
    static AXE: OnceLock<Option<String>> = OnceLock::new();
    AXE.get_or_init(|| {
        let why = match std::env::var("BROKED_TEST_AXE") {
            Ok(path) => match std::fs::read_to_string(&path) {
                Ok(js) if js.contains("axe") => return Some(js),
                Ok(_) => format!("{path} is not axe-core"),
                Err(e) => format!("cannot read {path}: {e}"),
            },
            Err(_) => "BROKED_TEST_AXE is not set".to_owned(),
        };
        let why = format!(
            "the accessibility checks need axe-core's axe.min.js, and {why} \
             (scripts/services/chromium.sh vendors it and sets BROKED_TEST_AXE)"
        );
        if env::required() {
            panic!("{why}, and {}=1 makes that a failure", env::REQUIRE_FLAG);
        }
        eprintln!("SKIPPED: {why}");
        None
    })
    .as_deref()
}

/// Runs axe-core's WCAG 2.0/2.1 A and AA rules on the page as it is now; fails on any violation.
pub(crate) async fn axe(c: &Client, page: &str) {
    let Some(source) = axe_source() else { return };
    let loaded = c
        .execute("return typeof window.axe === 'object'", vec![])
        .await
        .expect("js");
    if loaded != Value::Bool(true) {
        // Run through WebDriver, not a <script>: the page's CSP allows no script of ours.
        c.execute(&format!("{source}\n;return typeof window.axe;"), vec![])
            .await
            .expect("load axe-core");
    }
    let found = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            axe.run(document, {
              runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
              resultTypes: ['violations'],
            }).then((r) => done(r.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n`
                + v.nodes.map((n) => `    ${n.target.join(' ')}: ${n.failureSummary}`).join('\n'))))
              .catch((e) => done([`axe-core did not run: ${e}`]));"#,
            vec![],
        )
        .await
        .expect("axe.run");
    let violations: Vec<String> = found
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        violations.is_empty(),
        "axe-core (WCAG 2.1 A/AA) finds {} violation(s) on {page}:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

async fn js_str(c: &Client, script: &str) -> String {
    js(c, script).await.as_str().unwrap_or_default().to_owned()
}

/// A Chrome DevTools command through chromedriver (`goog/cdp/execute`), for what WebDriver
/// cannot do: emulating forced colours.
async fn cdp(driver: &Driver, c: &Client, cmd: &str, params: Value) {
    let session = c
        .session_id()
        .await
        .expect("session id")
        .expect("a session");
    let url = format!("{}/session/{session}/goog/cdp/execute", driver.url);
    let body = json!({ "cmd": cmd, "params": params }).to_string();
    let (status, text) = std::thread::scope(|s| {
        s.spawn(|| {
            let r = reqwest::blocking::Client::new()
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .expect("chromedriver");
            (r.status(), r.text().unwrap_or_default())
        })
        .join()
        .expect("cdp call")
    });
    assert!(status.is_success(), "{cmd}: {status} {text}");
}

/// Colour arithmetic of WCAG 2.1 (relative luminance, contrast ratio), and the colour behind an
/// element: the first ancestor with an opaque background.
const COLOUR_JS: &str = r#"
const rgba = (s) => {
  const m = /rgba?\(([^)]+)\)/.exec(s || '');
  if (!m) return null;
  const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
  return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
};
const lum = (c) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
};
const ratio = (a, b) => {
  const x = lum(a), y = lum(b);
  return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
};
const behind = (e) => {
  for (let n = e.parentElement; n; n = n.parentElement) {
    const c = rgba(getComputedStyle(n).backgroundColor);
    if (c && c.a > 0.5) return c;
  }
  return { r: 255, g: 255, b: 255, a: 1 };
};
const describe = (e) => e.id || e.getAttribute('aria-label') || (e.textContent || '').trim().slice(0, 40) || e.tagName;
"#;

/// Tabs through every control of the page from the top and checks each one's focus ring: an
/// outline at least 2 px wide with 3:1 contrast against what is behind it (WCAG 1.4.11, 2.4.7).
/// Returns the controls reached.
async fn check_focus_rings(c: &Client, page: &str) -> Vec<String> {
    // A click on the brand moves the point where Tab starts to the top of the page.
    js(c, "window.scrollTo(0, 0)").await;
    click(c, ".sidebar .brand").await;
    let probe = format!(
        "{COLOUR_JS}
        const e = document.activeElement;
        if (!e || e === document.body) return null;
        const s = getComputedStyle(e);
        const ring = rgba(s.outlineColor);
        return {{ what: describe(e), style: s.outlineStyle, width: parseFloat(s.outlineWidth) || 0,
                 ratio: ring && ring.a > 0.5 ? ratio(ring, behind(e)) : 0, colour: s.outlineColor }};"
    );
    let mut reached = Vec::new();
    let mut bad = Vec::new();
    for _ in 0..60 {
        press(c, TAB).await;
        let r = js(c, &probe).await;
        if r.is_null() {
            break;
        }
        let what = r["what"].as_str().unwrap_or_default().to_owned();
        if reached.contains(&what) {
            break; // round the page once
        }
        let width = r["width"].as_f64().unwrap_or(0.0);
        let ratio = r["ratio"].as_f64().unwrap_or(0.0);
        if r["style"] == "none" || width < 2.0 || ratio < 3.0 {
            bad.push(format!(
                "{what}: outline {} {width}px {} ({ratio:.2}:1)",
                r["style"], r["colour"]
            ));
        }
        reached.push(what);
    }
    assert!(
        bad.is_empty(),
        "on {page}, these controls have no focus ring one can see (≥ 2 px, ≥ 3:1):\n{}\nreached: {reached:?}",
        bad.join("\n")
    );
    assert!(reached.len() >= 3, "Tab reached only {reached:?} on {page}");
    reached
}

/// Every visible text field and select has a border with 3:1 contrast against what is around
/// it (WCAG 1.4.11): the border is what shows there is a field.
async fn check_field_borders(c: &Client, page: &str) {
    let bad = js(
        c,
        &format!(
            "{COLOUR_JS}
            return [...document.querySelectorAll('input, select, textarea')]
              .filter((e) => e.type !== 'checkbox' && e.type !== 'hidden' && e.getClientRects().length > 0)
              .map((e) => [describe(e), ratio(rgba(getComputedStyle(e).borderTopColor), behind(e))])
              .filter(([, r]) => !(r >= 3))
              .map(([w, r]) => `${{w}}: ${{r.toFixed(2)}}:1`);"
        ),
    )
    .await;
    assert_eq!(
        bad,
        json!([]),
        "on {page}, field borders under 3:1 against their background"
    );
}

/// Sizes of the elements `css` matches that are smaller than 44 × 44 px (WCAG 2.5.5).
async fn small_targets(c: &Client, css: &str) -> Value {
    js(
        c,
        &format!(
            "return [...document.querySelectorAll({css:?})]
              .filter((e) => e.getClientRects().length > 0)
              .map((e) => [e.id || e.getAttribute('aria-label') || e.textContent.trim(), e.getBoundingClientRect()])
              .filter(([, r]) => r.width < 44 || r.height < 44)
              .map(([w, r]) => `${{w}}: ${{Math.round(r.width)}}×${{Math.round(r.height)}}`);"
        ),
    )
    .await
}

async fn dialog_open(c: &Client, id: &str) -> bool {
    js(
        c,
        &format!("const d = document.getElementById('{id}'); return Boolean(d && d.open)"),
    )
    .await
    .as_bool()
    .unwrap_or(false)
}

async fn hash(c: &Client) -> String {
    js_str(c, "return location.hash").await
}

// ---------------------------------------------------------------------------------------------
// 1. Errors in the form's words, all at once, with a summary that links to the fields

#[test]
fn errors_use_the_labels_show_all_at_once_and_link_from_a_summary() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    run(async {
        let c = ui.browser().await;
        open_form(&c, server, "#/connections/new", "New Connection").await;
        axe(&c, "the New Connection form").await;

        // Each field's error is read before its hint.
        let order = js(
            &c,
            "return [...document.querySelectorAll('#conn-form [aria-describedby]')].map((e) => {
               const ids = e.getAttribute('aria-describedby').split(/\\s+/);
               const err = ids.findIndex((i) => i.startsWith('e-'));
               const hint = ids.findIndex((i) => i.startsWith('h-'));
               return (err < 0 || (hint >= 0 && hint < err)) ? `${e.id}: ${ids.join(' ')}` : null;
             }).filter(Boolean)",
        )
        .await;
        assert_eq!(order, json!([]), "aria-describedby names the error first");

        // Three mistakes on an HTTP connection: a bad ID, no URL, a port that is not a number.
        select(&c, "#f-type", "http").await;
        wait_text(&c, ".field[data-field=host] label", "URL").await;
        fill(&c, "#f-conn_id", "Bad ID!").await;
        fill(&c, "#f-host", "").await;
        fill(&c, "#f-port", "80x").await;
        click(&c, "#save").await;
        wait_js(
            &c,
            "the error summary",
            "!document.getElementById('banner').hidden && document.querySelectorAll('#banner-list a').length > 0",
        )
        .await;
        let errors = js(
            &c,
            "return ['conn_id', 'host', 'port'].map((f) => {
               const e = document.getElementById('e-' + f);
               return e.hidden ? null : e.textContent;
             })",
        )
        .await;
        let [id_error, host_error, port_error] = [0, 1, 2].map(|i| {
            errors[i]
                .as_str()
                .unwrap_or_else(|| panic!("all three errors show at once: {errors}"))
                .to_owned()
        });
        assert!(
            id_error.starts_with("Connection ID: use lowercase letters, digits, _ and -"),
            "{id_error}"
        );
        assert!(
            host_error.starts_with("URL: required") && !host_error.contains("host"),
            "the error names the field as the form does: {host_error}"
        );
        assert!(
            port_error.starts_with("Port:") && port_error.contains("1 to 65535"),
            "{port_error}"
        );
        for e in [&id_error, &host_error, &port_error] {
            assert!(
                !e.contains("conn_id") && !e.contains("^[") && !e.contains("is required"),
                "no API wording and no raw pattern: {e}"
            );
        }
        let summary = js(
            &c,
            "return [...document.querySelectorAll('#banner-list li')].map((li) => {
               const a = li.querySelector('a');
               return a ? [a.getAttribute('href'), a.textContent] : [null, li.textContent];
             })",
        )
        .await;
        assert_eq!(
            summary,
            json!([
                ["#f-conn_id", id_error],
                ["#f-host", host_error],
                ["#f-port", port_error]
            ]),
            "the banner lists every error, in the form's order, each a link to its field"
        );
        wait_text(&c, "#banner-text", "3 problems").await;
        assert_eq!(active_id(&c).await, "f-conn_id", "focus on the first error");
        assert_eq!(
            call(server, "GET", "/api/connections", None).json,
            json!([]),
            "nothing was sent to be saved"
        );
        blur(&c).await;
        screenshot(&c, "ui-error-summary.png").await;
        axe(&c, "the error summary").await;

        // A summary link goes to its field and leaves the page where it is.
        click(&c, "#banner-list a[href='#f-host']").await;
        assert_eq!(active_id(&c).await, "f-host");
        assert_eq!(
            hash(&c).await,
            "#/connections/new",
            "the route is unchanged"
        );
        form_shown(&c).await;

        resize(&c, 400, 800).await;
        no_sideways_scroll(&c).await;
        js(&c, "window.scrollTo(0, 0)").await;
        screenshot(&c, "ui-error-summary-narrow.png").await;
        axe(&c, "the error summary on a phone").await;
        resize(&c, 1280, 900).await;

        // What only the server finds is said in the form's words too.
        fill(&c, "#f-conn_id", "ui-http").await;
        // (A path without a scheme: since issue 18 a URL such as https://api.example.com/v1
        // is split into host and base path, so it is no longer an error.)
        fill(&c, "#f-host", "api.example.com/v1").await;
        fill(&c, "#f-port", "8443").await;
        click(&c, "#save").await;
        let host_error = wait_text(&c, "#e-host", "URL").await;
        assert!(
            host_error.contains("Base path") && !host_error.contains("schema"),
            "the server's message names the form's fields: {host_error}"
        );
        assert!(
            js(&c, "return document.getElementById('e-conn_id').hidden && document.getElementById('e-port').hidden").await == Value::Bool(true),
            "the fixed fields' errors are gone"
        );
        let links = js(
            &c,
            "return [...document.querySelectorAll('#banner-list a')].map((a) => a.getAttribute('href'))",
        )
        .await;
        assert_eq!(links, json!(["#f-host"]));
        axe(&c, "an error the server found").await;
        assert_eq!(
            call(server, "GET", "/api/connections/ui-http", None).status,
            404
        );

        // A stored password does not follow a new host: the server's refusal, in the UI's words.
        create(
            server,
            json!({"conn_id": "ui-pg", "type": "postgres", "host": "db.example.com",
                   "login": "etl", "password": "pw-kept-1"}),
        );
        open(&c, server, "#/connections/ui-pg").await;
        dialog_shown(
            &c,
            "the discard dialog (the refused form is not saved)",
            "leave-dialog",
        )
        .await;
        click(&c, "#leave-discard").await;
        form_titled(&c, "Edit ui-pg").await;
        fill(&c, "#f-host", "db2.example.com").await;
        click(&c, "#save").await;
        let pw_error = wait_text(&c, "#e-password", "Password:").await;
        assert!(
            pw_error.contains("type the password again")
                && pw_error.contains("Clear the stored password")
                && !pw_error.contains("null"),
            "{pw_error}"
        );
        assert_eq!(
            call(server, "GET", "/api/connections/ui-pg", None).json["host"],
            "db.example.com"
        );
        c.close().await.expect("close the browser");
    });
}

// ---------------------------------------------------------------------------------------------
// 2. A focus ring and field borders one can see, also in forced colours

#[test]
fn focus_rings_and_field_borders_have_contrast_also_in_forced_colours() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "focus-pg", "type": "postgres", "host": "db.example.com",
               "login": "etl", "password": "focus-secret-1", "extra": {"sslmode": "require"}}),
    );
    run(async {
        let c = ui.browser().await;
        open_list(&c, server).await;
        wait_text(&c, "#list-status", "1 connection").await;
        axe(&c, "the list").await;
        check_field_borders(&c, "the list").await;
        let list = check_focus_rings(&c, "the list").await;
        assert!(
            list.iter().any(|w| w == "nav-connections")
                && list.iter().any(|w| w == "new-connection")
                && list.iter().any(|w| w == "Delete focus-pg"),
            "Tab reaches the sidebar, New Connection and the row actions: {list:?}"
        );

        open_form(&c, server, "#/connections/focus-pg", "Edit focus-pg").await;
        axe(&c, "the edit form with stored secrets").await;
        check_field_borders(&c, "the edit form").await;
        let form = check_focus_rings(&c, "the edit form").await;
        click(&c, ".sidebar .brand").await;
        tab_to(&c, "f-host", 10).await;
        screenshot(&c, "ui-focus.png").await;
        for id in [
            "back-link",
            "f-conn_id",
            "f-host",
            "f-password",
            "f-clear-password",
            "f-extra",
            "save",
            "test",
            "cancel",
            "form-delete",
        ] {
            assert!(form.iter().any(|w| w == id), "Tab reaches #{id}: {form:?}");
        }

        // Forced colours (e.g. Windows High Contrast): the ring stays, and the read-only
        // Connection ID still looks read-only although its grey background is gone.
        cdp(
            &ui.driver,
            &c,
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "forced-colors", "value": "active"}]}),
        )
        .await;
        wait_js(
            &c,
            "forced colours",
            "matchMedia('(forced-colors: active)').matches",
        )
        .await;
        check_focus_rings(&c, "the edit form in forced colours").await;
        let look = js(
            &c,
            "const look = (id) => {
               const s = getComputedStyle(document.getElementById(id));
               return [s.borderTopStyle, s.color, s.backgroundColor].join(' / ');
             };
             return [look('f-conn_id'), look('f-host'), document.getElementById('f-conn_id').readOnly]",
        )
        .await;
        assert_eq!(look[2], true, "the ID is read-only when editing");
        assert_ne!(
            look[0], look[1],
            "in forced colours the read-only Connection ID looks unlike an editable field"
        );
        click(&c, ".sidebar .brand").await;
        tab_to(&c, "f-host", 10).await;
        screenshot(&c, "ui-forced-colors.png").await;
        c.close().await.expect("close the browser");
    });
}

// ---------------------------------------------------------------------------------------------
// 3. A confirmation one sees and hears

#[test]
fn saved_shows_beside_the_heading_and_live_regions_stay_rendered() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    run(async {
        let c = ui.browser().await;
        // Rendered while empty: a live region that is display: none is not in the
        // accessibility tree, and its first message goes unannounced.
        let rendered = |ids: &'static [&'static str]| {
            format!(
                "return {ids:?}.filter((id) => {{
                   const e = document.getElementById(id);
                   return e.hidden || e.closest('[hidden]') !== null || getComputedStyle(e).display === 'none'
                     || getComputedStyle(e).visibility === 'hidden' || !e.getAttribute('aria-live');
                 }})"
            )
        };
        open_list(&c, server).await;
        assert_eq!(
            js(&c, &rendered(&["notice", "list-status"])).await,
            json!([]),
            "the list's live regions are rendered"
        );
        click(&c, "#new-connection").await;
        form_titled(&c, "New Connection").await;
        assert_eq!(
            js(&c, "return ['notice', 'form-status', 'test-result'].map((id) => document.getElementById(id).textContent)").await,
            json!(["", "", ""]),
            "they start empty"
        );
        assert_eq!(
            js(&c, &rendered(&["notice", "form-status", "test-result"])).await,
            json!([]),
            "the form's live regions are rendered while empty"
        );
        axe(&c, "the empty New Connection form").await;

        fill(&c, "#f-conn_id", "saved-here").await;
        fill(&c, "#f-host", "db.example.com").await;
        fill(&c, "#f-description", "a long form: Save is low on the page").await;
        resize(&c, 1280, 600).await;
        click(&c, "#save").await;
        wait_text(&c, "#form-title", "Edit saved-here").await;
        wait_text(&c, "#notice", "Saved saved-here.").await;
        assert_eq!(active_id(&c).await, "form-title", "focus on the heading");
        let place = js(
            &c,
            "const n = document.getElementById('notice').getBoundingClientRect();
             const h = document.getElementById('form-title').getBoundingClientRect();
             return [n.top >= 0 && n.bottom <= innerHeight && n.height > 0, Math.round(h.top - n.bottom)]",
        )
        .await;
        assert_eq!(place[0], true, "the confirmation is on screen: {place}");
        assert!(
            place[1].as_i64().is_some_and(|gap| (0..=80).contains(&gap)),
            "the confirmation is just above the heading: {place}"
        );
        assert_eq!(
            js_str(
                &c,
                "return document.getElementById('form-status').textContent"
            )
            .await,
            "",
            "said once, not twice"
        );
        screenshot(&c, "ui-saved.png").await;
        axe(&c, "the edit form after Save").await;
        resize(&c, 1280, 900).await;
        c.close().await.expect("close the browser");
    });
}

// ---------------------------------------------------------------------------------------------
// 4. No edit lost, no stale verdict

#[test]
fn leaving_a_changed_form_asks_and_a_test_result_goes_stale() {
    // A TCP service for the generic type's probe: the kernel completes the handshake.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "tcp-svc", "type": "generic", "host": "127.0.0.1", "port": port}),
    );
    run(async {
        let c = ui.browser().await;
        open_list(&c, server).await;
        click(&c, "tr[data-conn-id=tcp-svc] a[aria-label='Edit tcp-svc']").await;
        form_titled(&c, "Edit tcp-svc").await;

        // Without changes, leaving does not ask.
        click(&c, ".crumb a").await;
        list_shown(&c).await;
        assert!(!dialog_open(&c, "leave-dialog").await);
        click(&c, "tr[data-conn-id=tcp-svc] a[aria-label='Edit tcp-svc']").await;
        wait_text(&c, "#form-title", "Edit tcp-svc").await;

        // A verdict is about the form as it was tested.
        click(&c, "#test").await;
        wait_text(&c, "#test-result", "Success").await;
        fill(&c, "#f-description", "a test does not use this").await;
        assert_eq!(
            js_str(
                &c,
                "return document.getElementById('test-result').className"
            )
            .await,
            "test-result success",
            "a change a test does not use leaves the result as it is"
        );
        fill(&c, "#f-host", "127.0.0.2").await;
        let stale = wait_text(&c, "#test-result", "Out of date").await;
        assert!(stale.contains("Test again"), "{stale}");
        let class = js_str(
            &c,
            "return document.getElementById('test-result').className",
        )
        .await;
        assert!(
            class.contains("stale") && !class.contains("success"),
            "the result no longer looks like a success: {class}"
        );
        js(
            &c,
            "document.getElementById('test-result').scrollIntoView({ block: 'center' })",
        )
        .await;
        screenshot(&c, "ui-test-stale.png").await;
        axe(&c, "a stale test result").await;

        // With changes, each way off the form asks: the back link…
        click(&c, ".crumb a").await;
        dialog_shown(&c, "the discard dialog", "leave-dialog").await;
        assert_eq!(hash(&c).await, "#/connections/tcp-svc", "still on the form");
        assert_eq!(active_id(&c).await, "leave-stay", "Keep editing has focus");
        wait_text(&c, "#leave-body", "tcp-svc").await;
        screenshot(&c, "ui-leave.png").await;
        axe(&c, "the discard dialog").await;
        click(&c, "#leave-stay").await;
        assert!(!dialog_open(&c, "leave-dialog").await);
        assert_eq!(value(&c, "#f-host").await, "127.0.0.2", "the edit is kept");
        assert_eq!(
            active_id(&c).await,
            "back-link",
            "focus returns to the link"
        );

        // …Cancel (Escape keeps editing)…
        click(&c, "#cancel").await;
        dialog_shown(&c, "the discard dialog", "leave-dialog").await;
        press(&c, ESCAPE).await;
        dialog_closed(&c, "leave-dialog").await;
        assert_eq!(hash(&c).await, "#/connections/tcp-svc");
        assert_eq!(value(&c, "#f-host").await, "127.0.0.2");

        // …the browser's Back button…
        c.back().await.expect("back");
        dialog_shown(&c, "the discard dialog after Back", "leave-dialog").await;
        assert_eq!(hash(&c).await, "#/connections/tcp-svc");
        click(&c, "#leave-stay").await;
        assert_eq!(value(&c, "#f-host").await, "127.0.0.2");

        // …and closing or reloading the tab (beforeunload).
        let unload = "const e = new Event('beforeunload', { cancelable: true });
                      window.dispatchEvent(e);
                      return e.defaultPrevented";
        assert_eq!(js(&c, unload).await, Value::Bool(true), "the browser asks");

        // The sidebar: Discard changes leaves, and nothing was saved.
        click(&c, "#nav-connections").await;
        dialog_shown(&c, "the discard dialog", "leave-dialog").await;
        click(&c, "#leave-discard").await;
        list_shown(&c).await;
        let stored = call(server, "GET", "/api/connections/tcp-svc", None);
        assert_eq!(stored.json["host"], "127.0.0.1", "{}", stored.text);
        assert_eq!(stored.json["description"], Value::Null);
        assert_eq!(js(&c, unload).await, Value::Bool(false), "nothing to lose");

        // Typing back to what was loaded is no change; a saved change is no change either.
        click(&c, "tr[data-conn-id=tcp-svc] a[aria-label='Edit tcp-svc']").await;
        wait_text(&c, "#form-title", "Edit tcp-svc").await;
        fill(&c, "#f-host", "127.0.0.9").await;
        fill(&c, "#f-host", "127.0.0.1").await;
        assert_eq!(js(&c, unload).await, Value::Bool(false));
        fill(&c, "#f-description", "saved first").await;
        assert_eq!(js(&c, unload).await, Value::Bool(true));
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved tcp-svc").await;
        assert_eq!(js(&c, unload).await, Value::Bool(false));
        click(&c, ".crumb a").await;
        list_shown(&c).await;
        assert!(!dialog_open(&c, "leave-dialog").await);

        // A new connection's form asks too.
        click(&c, "#new-connection").await;
        form_shown(&c).await;
        fill(&c, "#f-conn_id", "half-typed").await;
        click(&c, "#cancel").await;
        dialog_shown(&c, "the discard dialog", "leave-dialog").await;
        wait_text(&c, "#leave-body", "not saved").await;
        click(&c, "#leave-discard").await;
        list_shown(&c).await;
        c.close().await.expect("close the browser");
    });
    drop(listener);
}

// ---------------------------------------------------------------------------------------------
// 5. A phone

#[test]
fn phone_layout_has_44px_targets_wraps_hosts_and_ids_open_connections() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    let long_host = "https://analytics-warehouse-reporting-gateway.internal.example.com";
    create(
        server,
        json!({"conn_id": "api-reporting", "type": "http", "host": long_host}),
    );
    create(
        server,
        json!({"conn_id": "pg", "type": "postgres", "host": "db.example.com"}),
    );
    run(async {
        let c = ui.browser().await;
        resize(&c, 400, 800).await;
        open_list(&c, server).await;
        wait_text(&c, "#list-status", "2 connections").await;
        no_sideways_scroll(&c).await;
        assert_eq!(
            small_targets(
                &c,
                "#nav-connections, #new-connection, .row-actions a, .row-actions button, a.conn-link"
            )
            .await,
            json!([]),
            "touch targets of at least 44 × 44 px"
        );
        let wrap = js(
            &c,
            "const s = getComputedStyle(document.querySelector('tr[data-conn-id=api-reporting] td.host'));
             return [s.overflowWrap, s.wordBreak]",
        )
        .await;
        assert_eq!(
            wrap,
            json!(["anywhere", "normal"]),
            "a host breaks only where it must, not between any two letters"
        );
        // "db.example.com" fits on one line of its card: it is not cut.
        let lines = js(
            &c,
            "const td = document.querySelector('tr[data-conn-id=pg] td.host');
             const r = document.createRange();
             r.selectNodeContents(td);
             return new Set([...r.getClientRects()].map((q) => Math.round(q.top))).size",
        )
        .await;
        assert_eq!(lines, json!(1), "a short host is not broken");
        js(
            &c,
            "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)",
        )
        .await;
        screenshot(&c, "ui-phone-list.png").await;
        axe(&c, "the list on a phone").await;

        // The connection ID itself opens the connection.
        click(&c, "tr[data-conn-id=api-reporting] a.conn-link").await;
        form_titled(&c, "Edit api-reporting").await;
        no_sideways_scroll(&c).await;
        assert_eq!(
            small_targets(
                &c,
                "#back-link, #nav-connections, .actions button, .actions a"
            )
            .await,
            json!([]),
            "the back link and the form's buttons are 44 px targets"
        );
        js(&c, "window.scrollTo(0, 0)").await;
        screenshot(&c, "ui-phone-form.png").await;
        axe(&c, "the edit form on a phone").await;
        c.close().await.expect("close the browser");
    });
}

// ---------------------------------------------------------------------------------------------
// 4b. No edit lost to someone else's save (the client side: the API has no If-Match yet)

#[test]
fn saving_over_a_change_made_meanwhile_asks_first() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "shared", "type": "generic", "host": "127.0.0.1", "port": 5000,
               "description": "original"}),
    );
    let theirs = |host: &str, description: &str| {
        let body =
            json!({"type": "generic", "host": host, "port": 5000, "description": description});
        let r = call(
            server,
            "PUT",
            "/api/connections/shared",
            Some(&body.to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    };
    let stored =
        |field: &str| call(server, "GET", "/api/connections/shared", None).json[field].clone();
    run(async {
        let c = ui.browser().await;
        open_form(&c, server, "#/connections/shared", "Edit shared").await;
        fill(&c, "#f-description", "mine").await;

        // Someone else saves first: Save asks instead of overwriting.
        theirs("127.0.0.5", "theirs");
        click(&c, "#save").await;
        dialog_shown(&c, "the conflict dialog", "conflict-dialog").await;
        let body = wait_text(&c, "#conflict-body", "changed: Host").await;
        assert!(body.contains("Description"), "{body}");
        assert_eq!(active_id(&c).await, "conflict-stay");
        screenshot(&c, "ui-conflict.png").await;
        axe(&c, "the changed-meanwhile dialog").await;
        click(&c, "#conflict-stay").await;
        assert!(!dialog_open(&c, "conflict-dialog").await);
        assert_eq!(stored("description"), "theirs", "nothing was overwritten");
        assert_eq!(
            value(&c, "#f-description").await,
            "mine",
            "the edit is kept"
        );
        assert_eq!(active_id(&c).await, "save");

        // Load the saved version: their values, and the form counts as unchanged.
        click(&c, "#save").await;
        dialog_shown(&c, "the conflict dialog", "conflict-dialog").await;
        click(&c, "#conflict-load").await;
        wait_text(&c, "#form-status", "Loaded the version saved").await;
        assert_eq!(value(&c, "#f-host").await, "127.0.0.5");
        assert_eq!(value(&c, "#f-description").await, "theirs");

        // Save mine anyway: the form's values replace theirs.
        fill(&c, "#f-description", "mine again").await;
        theirs("127.0.0.6", "theirs again");
        click(&c, "#save").await;
        dialog_shown(&c, "the conflict dialog", "conflict-dialog").await;
        click(&c, "#conflict-overwrite").await;
        wait_text(&c, "#form-status", "Saved shared").await;
        assert_eq!(stored("description"), "mine again");
        assert_eq!(
            stored("host"),
            "127.0.0.5",
            "the form's host, as the person saw it"
        );

        // Nobody else in between: Save saves at once.
        fill(&c, "#f-description", "alone").await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved shared").await;
        assert_eq!(stored("description"), "alone");
        assert!(!dialog_open(&c, "conflict-dialog").await);

        // Deleted meanwhile: said so, and nothing is recreated behind the person's back.
        fill(&c, "#f-description", "after the delete").await;
        let r = call(server, "DELETE", "/api/connections/shared", None);
        assert_eq!(r.status, 204, "{}", r.text);
        click(&c, "#save").await;
        wait_text(&c, "#banner-text", "deleted meanwhile").await;
        assert_eq!(
            call(server, "GET", "/api/connections/shared", None).status,
            404
        );
        c.close().await.expect("close the browser");
    });
}
