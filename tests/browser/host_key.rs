//! Issue 16: an SFTP test against an unpinned host shows the fingerprint with a "Trust this
//! host key" action that puts it into extra; the saved connection is pinned only with its
//! password typed again, and then tests as verified.

use super::*;

#[test]
fn trust_this_host_key_pins_the_fingerprint_with_the_password_typed_again() {
    let Some(sftp) = env::sftp() else { return };
    let password = sftp.get("PASSWORD").to_owned();
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "files", "type": "sftp", "host": sftp.get("HOST"),
            "port": sftp.port(), "login": sftp.get("USER"), "password": password}),
    );
    run(async {
        let c = ui.browser().await;
        open_form(&c, server, "#/connections/files", "Edit files").await;

        // The saved, unpinned connection: a failure naming the fingerprint, and the action.
        click(&c, "#test").await;
        let result = wait_text(&c, "#test-result", "host key not pinned").await;
        assert!(result.contains("Failed"), "{result}");
        let fp = result
            .split(|ch: char| ch.is_whitespace() || ch == ';' || ch == '"')
            .find(|w| w.starts_with("SHA256:") && w.len() > 40)
            .unwrap_or_else(|| panic!("no fingerprint in {result}"))
            .to_owned();
        find(&c, "#test-result button.trust-host-key").await;
        axe(&c, "an unpinned host key with the trust action").await;

        click(&c, "#test-result button.trust-host-key").await;
        let note = wait_text(&c, "#trust-note", "Type the password again").await;
        assert!(note.contains(&fp), "{note}");
        let extra: Value = serde_json::from_str(&value(&c, "#f-extra").await).expect("extra");
        assert_eq!(extra, json!({ "host_key": fp }));
        assert_eq!(
            active_id(&c).await,
            "f-password",
            "the focus waits in the password field"
        );

        // Saved with the kept password: refused by the server (a securing key changed).
        click(&c, "#save").await;
        wait_text(&c, "#e-password", "password").await;
        let stored = call(server, "GET", "/api/connections/files", None);
        assert_eq!(stored.json["extra"], Value::Null, "nothing was saved");

        // With the password typed again: saved, and the test is a verified success.
        fill(&c, "#f-password", &password).await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved files").await;
        let stored = call(server, "GET", "/api/connections/files", None);
        assert_eq!(stored.json["extra"], "********", "{}", stored.text);
        click(&c, "#test").await;
        let result = wait_text(&c, "#test-result", "Success").await;
        assert!(result.contains("TLS, verified"), "{result}");
    });
    let r = server.post("/api/connections/files/test", "");
    assert_eq!(r.json["tls"], "verified", "{}", r.text);
}
