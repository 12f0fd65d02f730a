//! Issue 17 in the browser: the History panel of a connection's page — its kept versions (who,
//! when, which fields), one version shown masked, Roll back to this version after a confirm —
//! and the page's writes sent with `If-Match`: a save or a delete over a change made meanwhile
//! is refused by the server (412), changes nothing, and says who changed it. Screenshots:
//! `ui-history.png`, `ui-rollback-confirm.png`, `ui-rolled-back.png`, `ui-stale-save.png`.

use super::*;

/// Distinctive passwords: the page never shows them; `get --uri` tells which one is stored.
const PW_OLD: &str = "HistPwOld5Kq8Vr";
const PW_NEW: &str = "HistPwNew8Zt2Lm";

/// `broked connections get ID --uri` on the server's database: the one place a password shows.
fn uri_of(server: &Server, conn_id: &str) -> String {
    let out = broked_tests::broked(
        &server.dir.join("broked.db"),
        &["connections", "get", conn_id, "--uri"],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a URI")
}

/// The visible text of the History panel's version rows, one string per row, newest first.
async fn version_rows(c: &Client) -> Vec<String> {
    let v = c
        .execute(
            "return [...document.querySelectorAll('#version-rows tr')].map((r) => r.innerText)",
            vec![],
        )
        .await
        .expect("js");
    v.as_array()
        .expect("rows")
        .iter()
        .map(|r| r.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until the History panel lists `n` versions.
async fn versions_listed(c: &Client, n: usize) {
    wait_js(
        c,
        &format!("{n} versions in the History panel"),
        &format!(
            "document.querySelectorAll('#version-rows tr').length === {n} \
             && document.getElementById('versions-status').textContent.includes('{n} version')"
        ),
    )
    .await;
}

#[test]
fn history_lists_versions_and_rolls_back_after_a_confirm() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "hist", "type": "postgres", "host": "127.0.0.1", "port": 5432,
               "schema": "app", "login": "first_user", "password": PW_OLD,
               "description": "first"}),
    );
    run(async {
        let c = ui.browser().await;
        open_form(&c, server, "#/connections/hist", "Edit hist").await;
        versions_listed(&c, 1).await;

        // Two edits through the page: the description, then the login and the password.
        fill(&c, "#f-description", "second").await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved hist").await;
        versions_listed(&c, 2).await;
        fill(&c, "#f-login", "second_user").await;
        fill(&c, "#f-password", PW_NEW).await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved hist").await;
        versions_listed(&c, 3).await;

        // Newest first: number, who (a loopback server without tokens acts as `local`), the
        // names of the fields each changed.
        let rows = version_rows(&c).await;
        assert!(
            rows[0].starts_with('3') && rows[0].contains("current"),
            "{rows:?}"
        );
        assert!(rows[0].contains("Login, Password"), "{rows:?}");
        assert!(
            rows[1].starts_with('2') && rows[1].contains("Description"),
            "{rows:?}"
        );
        assert!(!rows[1].contains("current"), "{rows:?}");
        assert!(
            rows[2].starts_with('1') && rows[2].contains("Created"),
            "{rows:?}"
        );
        for r in &rows {
            assert!(r.contains("local"), "the actor of every version: {rows:?}");
        }
        wait_text(&c, "#history-title", "History").await;
        axe(&c, "the History panel").await;

        // The current version has nothing to roll back to.
        click(&c, "tr[data-version=\"3\"] button.view-version").await;
        wait_text(&c, "#version-view-title", "Version 3 (current)").await;
        assert!(
            !find(&c, "#version-rollback")
                .await
                .is_displayed()
                .await
                .unwrap()
        );

        // Version 1, masked like the form.
        click(&c, "tr[data-version=\"1\"] button.view-version").await;
        wait_text(&c, "#version-view-title", "Version 1").await;
        let fields = wait_text(&c, "#version-fields", "first_user").await;
        assert!(fields.contains("Database\napp"), "{fields}");
        assert!(fields.contains("Password\n******** (stored)"), "{fields}");
        assert!(fields.contains("Description\nfirst"), "{fields}");
        assert_eq!(active_id(&c).await, "version-view-title");
        let page = page_text(&c).await;
        for pw in [PW_OLD, PW_NEW] {
            assert!(!page.contains(pw), "a password on the page");
        }
        screenshot(&c, "ui-history.png").await;
        axe(&c, "a version shown in the History panel").await;

        // Roll back asks first; Cancel changes nothing.
        click(&c, "#version-rollback").await;
        dialog_shown(&c, "the rollback dialog", "rollback-dialog").await;
        let body = wait_text(&c, "#rollback-body", "new version equal to version 1").await;
        assert!(body.contains("password"), "{body}");
        assert_eq!(active_id(&c).await, "rollback-cancel");
        screenshot(&c, "ui-rollback-confirm.png").await;
        axe(&c, "the rollback dialog").await;
        click(&c, "#rollback-cancel").await;
        dialog_closed(&c, "rollback-dialog").await;
        assert_eq!(active_id(&c).await, "version-rollback");
        assert_eq!(
            call(server, "GET", "/api/connections/hist", None).json["version"],
            3
        );

        // Confirmed: a new version 4 equal to version 1, shown on the page.
        click(&c, "#version-rollback").await;
        dialog_shown(&c, "the rollback dialog", "rollback-dialog").await;
        click(&c, "#rollback-confirm").await;
        dialog_closed(&c, "rollback-dialog").await;
        wait_text(
            &c,
            "#notice",
            "Rolled back hist to version 1: saved as version 4.",
        )
        .await;
        assert_eq!(value(&c, "#f-login").await, "first_user");
        assert_eq!(value(&c, "#f-description").await, "first");
        assert_eq!(active_id(&c).await, "form-title");
        versions_listed(&c, 4).await;
        let rows = version_rows(&c).await;
        assert!(
            rows[0].starts_with('4') && rows[0].contains("current"),
            "{rows:?}"
        );
        assert!(
            rows[0].contains("Login") && rows[0].contains("Password"),
            "{rows:?}"
        );
        // Beside the versions, the connection's audit records: who, what, which fields, how
        // it ended — never a value.
        let audit = wait_text(&c, "#audit-rows", "rollback").await;
        for word in [
            "create",
            "update",
            "local",
            "ok",
            "Login, Password",
            "Description",
        ] {
            assert!(audit.contains(word), "{word} in the audit records: {audit}");
        }
        assert!(find(&c, "#audit-panel").await.is_displayed().await.unwrap());
        let page = page_text(&c).await;
        for pw in [PW_OLD, PW_NEW] {
            assert!(!page.contains(pw), "a password on the page");
        }
        c.execute(
            "document.getElementById('history').scrollIntoView()",
            vec![],
        )
        .await
        .expect("scroll to the History panel");
        screenshot(&c, "ui-rolled-back.png").await;
        axe(&c, "the page after a rollback").await;

        // The form is an edit of version 4 now: a save goes through (its If-Match is "4").
        fill(&c, "#f-description", "after the rollback").await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved hist").await;
        versions_listed(&c, 5).await;
        c.close().await.expect("close the browser");
    });
    let now = server.get("/api/connections/hist");
    assert_eq!(
        (
            &now.json["login"],
            &now.json["description"],
            &now.json["version"]
        ),
        (
            &json!("first_user"),
            &json!("after the rollback"),
            &json!(5)
        )
    );
    // The password came back with version 1: the library (through the CLI) resolves the old one.
    let uri = uri_of(server, "hist");
    assert!(uri.contains(PW_OLD), "the rolled-back password is stored");
    assert!(!uri.contains(PW_NEW), "the replaced password is not");
    assert!(
        uri.starts_with("postgres://first_user:") && uri.contains("@127.0.0.1:5432/app"),
        "the login and host of version 1 ({} characters)",
        uri.len()
    );
}

#[test]
fn a_stale_save_or_delete_is_refused_and_says_who_changed_it() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "stale", "type": "generic", "host": "127.0.0.1", "port": 5000,
               "description": "original"}),
    );
    let patch = |body: Value| {
        let r = call(
            server,
            "PATCH",
            "/api/connections/stale",
            Some(&body.to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    };
    let stored = || call(server, "GET", "/api/connections/stale", None).json;
    run(async {
        let c = ui.browser().await;
        open_form(&c, server, "#/connections/stale", "Edit stale").await;
        versions_listed(&c, 1).await;
        fill(&c, "#f-description", "mine").await;

        // Meanwhile someone changes the host through the API: the page's PATCH carries
        // If-Match "1", the server answers 412 and writes nothing.
        patch(json!({"host": "127.0.0.9"}));
        click(&c, "#save").await;
        dialog_shown(&c, "the conflict dialog", "conflict-dialog").await;
        let body = wait_text(
            &c,
            "#conflict-body",
            "stale was changed by local since you opened it",
        )
        .await;
        assert!(body.contains("(changed: Host)"), "{body}");
        assert!(body.contains("reload to see the changes"), "{body}");
        assert!(body.contains("version 2"), "{body}");
        assert_eq!(active_id(&c).await, "conflict-stay");
        screenshot(&c, "ui-stale-save.png").await;
        axe(&c, "the 412 dialog").await;
        click(&c, "#conflict-stay").await;
        dialog_closed(&c, "conflict-dialog").await;
        wait_text(&c, "#form-status", "Not saved yet.").await;
        let now = stored();
        assert_eq!(
            (&now["description"], &now["host"], &now["version"]),
            (&json!("original"), &json!("127.0.0.9"), &json!(2)),
            "the stale save changed nothing"
        );
        assert_eq!(
            value(&c, "#f-description").await,
            "mine",
            "the edit is kept"
        );

        // Reload (Load the saved version): the form is then an edit of version 2, and its
        // save goes through.
        click(&c, "#save").await;
        dialog_shown(&c, "the conflict dialog", "conflict-dialog").await;
        click(&c, "#conflict-load").await;
        wait_text(&c, "#form-status", "Loaded the version saved").await;
        assert_eq!(value(&c, "#f-host").await, "127.0.0.9");
        versions_listed(&c, 2).await;
        fill(&c, "#f-description", "mine, on theirs").await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved stale").await;
        assert_eq!(stored()["description"], "mine, on theirs");

        // A stale delete: the dialog says who changed it, and nothing is deleted.
        click(&c, "#form-delete").await;
        dialog_shown(&c, "the delete dialog", "delete-dialog").await;
        wait_js(
            &c,
            "the delete button",
            "!document.getElementById('delete-confirm').hidden",
        )
        .await;
        patch(json!({"description": "theirs again"}));
        click(&c, "#delete-confirm").await;
        let error = wait_text(
            &c,
            "#delete-error",
            "Not deleted: stale was changed by local since you opened it",
        )
        .await;
        assert!(error.contains("(changed: Description)"), "{error}");
        axe(&c, "the delete dialog after a 412").await;
        click(&c, "#delete-cancel").await;
        dialog_closed(&c, "delete-dialog").await;
        c.close().await.expect("close the browser");
    });
    let now = server.get("/api/connections/stale");
    assert_eq!(now.status, 200, "not deleted: {}", now.text);
    assert_eq!(now.json["description"], "theirs again");
}
