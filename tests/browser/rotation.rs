//! Issue 20 in the browser: Rotate password on a connection's page, against the real test
//! PostgreSQL with a role of the test's own (a member of `broked_rotation`, whose logins
//! pg_hba.conf checks by password; scripts/services/postgres.sh). After the confirm dialog,
//! the stored password logs in and the old one does not (checked with `psql`); a rotation the
//! server refuses shows its secret-free message and the failure on the page. Screenshots:
//! `ui-rotate-confirm.png`, `ui-rotated.png`, `ui-rotate-failed.png`.
//!
//! The list shows each connection's rotation: when it was last rotated and is next due, and a
//! failing one in red with the server's message on hover (`ui-list-rotation.png`, and 400 px
//! wide `ui-list-rotation-narrow.png`).

use broked_tests::pg_role::{PgRole, stored_password};

use super::*;

/// Distinctive passwords: the page never shows them.
const PW_INITIAL: &str = "RotUiInitPw9x4Qz";
const PW_BEHIND: &str = "RotUiBehindPw3Kd";

async fn scroll_to_rotation(c: &Client) {
    c.execute(
        "document.getElementById('rotation').scrollIntoView({block: 'center'})",
        vec![],
    )
    .await
    .expect("js");
}

#[test]
fn rotate_password_from_the_connection_page() {
    let Some(pg) = env::postgres() else { return };
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let role = PgRole::new(pg, "rotui", PW_INITIAL);
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "rot-ui", "type": "postgres", "host": role.pg.get("HOST"),
               "port": role.pg.port(), "schema": role.pg.get("DB"), "login": role.name,
               "password": PW_INITIAL, "extra": r#"{"sslmode":"disable"}"#}),
    );
    create(
        server,
        json!({"conn_id": "web", "type": "http", "host": "https://example.com"}),
    );

    run(async {
        let c = ui.browser().await;
        // Not offered where the server cannot rotate a password.
        open_form(&c, server, "#/connections/web", "Edit web").await;
        wait_js(
            &c,
            "no rotation panel for http",
            "document.getElementById('rotation').hidden",
        )
        .await;

        open_form(&c, server, "#/connections/rot-ui", "Edit rot-ui").await;
        wait_text(&c, "#rotation-state", "Never rotated by broked.").await;
        click(&c, "#rotate").await;
        dialog_shown(&c, "the rotate dialog", "rotate-dialog").await;
        let asked = wait_text(&c, "#rotate-dialog", "on the database server").await;
        assert!(asked.contains(&role.name), "{asked}");
        assert!(asked.contains("stops working"), "{asked}");
        assert_eq!(active_id(&c).await, "rotate-cancel", "Cancel has the focus");
        axe(&c, "the rotate dialog").await;
        screenshot(&c, "ui-rotate-confirm.png").await;

        // Cancel changes nothing.
        click(&c, "#rotate-cancel").await;
        dialog_closed(&c, "rotate-dialog").await;
        assert_eq!(active_id(&c).await, "rotate");

        click(&c, "#rotate").await;
        dialog_shown(&c, "the rotate dialog", "rotate-dialog").await;
        click(&c, "#rotate-confirm").await;
        dialog_closed(&c, "rotate-dialog").await;
        let done = wait_text(&c, "#rotate-result", "Password rotated").await;
        assert!(done.contains("scram-sha-256-verifier"), "{done}");
        wait_text(&c, "#rotation-state", "Last rotated").await;
        blur(&c).await;
        scroll_to_rotation(&c).await;
        screenshot(&c, "ui-rotated.png").await;
        // The rotation's audit record is in the History panel beside it now.
        wait_text(&c, "#audit-rows", "rotate_password").await;
        axe(&c, "the page after a rotation").await;

        let page = page_text(&c).await;
        assert!(!page.contains(PW_INITIAL), "{page}");
        c.close().await.expect("close the browser");
    });

    // The stored password logs in; the old one does not.
    let stored = stored_password(server, "rot-ui");
    assert_ne!(stored, PW_INITIAL);
    assert_eq!(stored.len(), 32, "a generated password");
    assert!(role.logs_in(&stored), "the stored password logs in");
    assert!(!role.logs_in(PW_INITIAL), "the old password no longer does");

    // Someone changes the password behind broked's back: the next rotation cannot log in,
    // says so without a secret, and the page shows the failure.
    role.admin(&format!("ALTER ROLE {} PASSWORD '{PW_BEHIND}'", role.name));
    run(async {
        let c = ui.browser().await;
        open_form(&c, server, "#/connections/rot-ui", "Edit rot-ui").await;
        wait_text(&c, "#rotation-state", "Last rotated").await;
        click(&c, "#rotate").await;
        dialog_shown(&c, "the rotate dialog", "rotate-dialog").await;
        click(&c, "#rotate-confirm").await;
        let failed = wait_text(&c, "#rotate-result", "Not rotated").await;
        wait_text(&c, "#rotation-state", "failed").await;
        blur(&c).await;
        scroll_to_rotation(&c).await;
        screenshot(&c, "ui-rotate-failed.png").await;
        axe(&c, "the page after a failed rotation").await;
        let page = page_text(&c).await;
        for secret in [PW_INITIAL, PW_BEHIND, stored.as_str()] {
            assert!(!page.contains(secret), "a password on the page: {page}");
            assert!(!failed.contains(secret));
        }
    });
    // Nothing changed: the stored password is the one from the first rotation.
    assert_eq!(stored_password(server, "rot-ui"), stored);
    assert!(role.logs_in(PW_BEHIND));
    for secret in [PW_INITIAL, PW_BEHIND, stored.as_str()] {
        assert!(
            !server.log_text().contains(secret),
            "a password in the server's log"
        );
    }
}

/// The list's Rotation column (issue 20): a connection rotated on the real PostgreSQL with a
/// schedule shows when it was rotated and when it is due; one whose rotation failed shows a
/// red badge whose hover (and accessible name) is the server's message; one never rotated and
/// without a schedule shows a dash. No secret on the page.
#[test]
fn the_list_shows_when_each_connection_was_rotated_and_is_due() {
    let Some(pg) = env::postgres() else { return };
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let role = PgRole::new(pg, "rotlist", PW_INITIAL);
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "rot-list", "type": "postgres", "host": role.pg.get("HOST"),
               "port": role.pg.port(), "schema": role.pg.get("DB"), "login": role.name,
               "password": PW_INITIAL,
               "extra": r#"{"sslmode":"disable","rotate_every":"30d"}"#}),
    );
    // Nothing listens there: its rotation fails.
    create(
        server,
        json!({"conn_id": "rot-list-down", "type": "postgres", "host": "127.0.0.1",
               "port": broked_tests::free_port(), "login": "etl", "password": PW_BEHIND,
               "extra": r#"{"sslmode":"disable","rotate_every":"7d"}"#}),
    );
    create(
        server,
        json!({"conn_id": "web", "type": "http", "host": "https://example.com"}),
    );
    let r = call(
        server,
        "POST",
        "/api/connections/rot-list/rotate-password",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        server,
        "POST",
        "/api/connections/rot-list-down/rotate-password",
        None,
    );
    assert_eq!(r.status, 502, "{}", r.text);
    let message = r.json["error"]["message"].as_str().unwrap().to_owned();
    let stored = stored_password(server, "rot-list");

    run(async {
        let c = ui.browser().await;
        open_list(&c, server).await;
        let row = |id: &str| format!("#conn-rows tr[data-conn-id='{id}'] td.rotation");
        let rotated = wait_text(&c, &row("rot-list"), "Rotated").await;
        assert!(rotated.contains("Due"), "{rotated}");
        assert!(
            !rotated.contains("never") && !rotated.contains("failing"),
            "{rotated}"
        );
        let down = wait_text(&c, &row("rot-list-down"), "Rotation failing").await;
        assert!(
            down.contains("Rotated never") && down.contains("Due"),
            "{down}"
        );
        assert_eq!(
            find(&c, &row("web")).await.text().await.unwrap(),
            "—",
            "no rotation"
        );
        // The failure: red, and what the server said on hover and in its accessible name.
        let badge = find(&c, &format!("{} .status.failed", row("rot-list-down"))).await;
        let title = badge.attr("title").await.unwrap().unwrap_or_default();
        assert_eq!(title, format!("Rotation failing: {message}"));
        let label = badge.attr("aria-label").await.unwrap().unwrap_or_default();
        assert_eq!(label, title);
        let color = c
            .execute(
                &format!(
                    "return getComputedStyle(document.querySelector(\"{} .status\")).color",
                    row("rot-list-down")
                ),
                vec![],
            )
            .await
            .expect("js");
        assert_eq!(color, json!("rgb(179, 38, 30)"), "the danger red");
        // The times are the API's, as <time datetime>.
        let listed = call(server, "GET", "/api/connections", None).json;
        let due = listed[0]["next_due_at"].as_str().unwrap().to_owned();
        let at = c
            .execute(
                &format!(
                    "return [...document.querySelectorAll(\"{} time\")].map(t => t.dateTime)",
                    row("rot-list")
                ),
                vec![],
            )
            .await
            .expect("js");
        assert_eq!(
            at,
            json!([listed[0]["last_rotated_at"], due]),
            "rotated, then due"
        );
        blur(&c).await;
        axe(&c, "the list with rotations").await;
        screenshot(&c, "ui-list-rotation.png").await;

        resize(&c, 400, 900).await;
        no_sideways_scroll(&c).await;
        c.execute(
            "document.querySelector(\"tr[data-conn-id='rot-list-down']\").scrollIntoView()",
            vec![],
        )
        .await
        .expect("js");
        axe(&c, "the narrow list with rotations").await;
        screenshot(&c, "ui-list-rotation-narrow.png").await;

        let page = page_text(&c).await;
        for secret in [PW_INITIAL, PW_BEHIND, stored.as_str()] {
            assert!(!page.contains(secret), "a password on the page: {page}");
        }
        c.close().await.expect("close the browser");
    });
}
