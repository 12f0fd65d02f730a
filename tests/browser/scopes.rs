//! Issue 16: the UI asks for a token and hides what the token may not do.

use broked_tests::{argv, broked};

use super::*;

#[test]
fn a_read_only_token_sees_no_save_test_or_delete() {
    const BOOT: &str = "ui-boot-token-91d2";
    let Some(ui) = Ui::start(&["--api-token", BOOT]) else {
        return;
    };
    let server = &ui.server;
    create(
        server,
        json!({"conn_id": "shown", "type": "generic", "host": "h", "port": 1}),
    );
    let out = broked(
        &ui.dir.path().join("broked.db"),
        &argv("token create viewer --scope read -o json"),
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let viewer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let viewer = viewer["token"].as_str().unwrap().to_owned();
    run(async {
        let c = ui.browser().await;
        open(&c, server, "").await;
        dialog_shown(&c, "the token prompt", "token-dialog").await;
        press(&c, &viewer).await;
        press(&c, ENTER).await;
        list_shown(&c).await;
        wait_text(&c, "#list-status", "1 connection").await;
        let hidden = |id: &str| format!("document.getElementById('{id}').hidden");
        wait_js(&c, "New Connection hidden", &hidden("new-connection")).await;
        wait_js(
            &c,
            "no Delete in the row, View instead of Edit",
            "document.querySelector('#conn-rows button.delete').hidden \
             && document.querySelector('#conn-rows a.button').textContent === 'View'",
        )
        .await;
        axe(&c, "the list for a read-only token").await;
        screenshot(&c, "ui-read-only-list").await;
        click(&c, "#conn-rows a.button").await;
        form_titled(&c, "Edit shown").await;
        for id in ["save", "test", "form-delete"] {
            wait_js(&c, &format!("{id} hidden"), &hidden(id)).await;
        }
        axe(&c, "the form for a read-only token").await;
    });
}
