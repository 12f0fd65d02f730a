//! Issue 20 in the browser: Rotate password on a connection's page, against the real test
//! PostgreSQL with a role of the test's own (a member of `broked_rotation`, whose logins
//! pg_hba.conf checks by password; scripts/services/postgres.sh). After the confirm dialog,
//! the stored password logs in and the old one does not (checked with `psql`); a rotation the
//! server refuses shows its secret-free message and the failure on the page. Screenshots:
//! `ui-rotate-confirm.png`, `ui-rotated.png`, `ui-rotate-failed.png`.

use std::process::Command;

use super::*;

/// Distinctive passwords: the page never shows them.
const PW_INITIAL: &str = "RotUiInitPw9x4Qz";
const PW_BEHIND: &str = "RotUiBehindPw3Kd";

/// A login role of the test's own in the test PostgreSQL, dropped on drop.
struct PgRole {
    pg: env::Service,
    name: String,
}

impl PgRole {
    fn new(pg: env::Service) -> PgRole {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let role = PgRole {
            pg,
            name: format!("rotui_{}_{nanos}", std::process::id()),
        };
        role.admin(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{PW_INITIAL}' IN ROLE broked_rotation",
            role.name
        ));
        role
    }

    fn psql(&self, user: &str, password: &str, sql: &str) -> std::process::Output {
        Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.pg.get("HOST"))
            .arg("-p")
            .arg(self.pg.get("PORT"))
            .arg("-U")
            .arg(user)
            .arg("-d")
            .arg(self.pg.get("DB"))
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run psql")
    }

    /// Runs `sql` as the test suite's PostgreSQL user.
    fn admin(&self, sql: &str) {
        let out = self.psql(self.pg.get("USER"), self.pg.get("PASSWORD"), sql);
        assert!(
            out.status.success(),
            "psql as the admin: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether `password` logs in as the role now (a new session).
    fn logs_in(&self, password: &str) -> bool {
        let out = self.psql(&self.name, password, "SELECT 1");
        if out.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("password authentication failed"),
            "not an authentication failure: {err}"
        );
        false
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let out = self.psql(
            self.pg.get("USER"),
            self.pg.get("PASSWORD"),
            &format!("DROP ROLE IF EXISTS {}", self.name),
        );
        if !out.status.success() {
            eprintln!("could not drop role {}", self.name);
        }
    }
}

/// The stored password of `conn_id` (`broked connections get --uri`: the one place it shows).
fn stored_password(server: &Server, conn_id: &str) -> String {
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
    let uri = String::from_utf8(out.stdout).expect("a URI");
    // postgres://login:PASSWORD@host:port/db?… — a rotated password is [A-Za-z0-9].
    let userinfo = uri
        .trim()
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo.to_owned())
        .expect("credentials in the URI");
    userinfo.split_once(':').expect("a password").1.to_owned()
}

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
    let role = PgRole::new(pg);
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
