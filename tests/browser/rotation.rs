//! Issue 20 in the browser: Rotate password on a connection's page, against the real test
//! PostgreSQL with a role of the test's own (a member of `broked_rotation`, whose logins
//! pg_hba.conf checks by password; scripts/services/postgres.sh). After the confirm dialog,
//! the stored password logs in and the old one does not (checked with `psql`); a rotation the
//! server refuses shows its secret-free message and the failure on the page. Screenshots:
//! `ui-rotate-confirm.png`, `ui-rotated.png`, `ui-rotate-failed.png`.

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
