//! Issue 18 in the browser: the form lives at `#/new`, so `#/connections/new` is the connection
//! named `new` (an old link to the form still opens it when there is none); a URL typed in host
//! is stored split and the form shows what was stored; an edit PATCHes only what changed, so
//! an S3 region edit keeps the other keys — and the secrets — of the stored extra.

use super::*;

/// `broked connections export --decrypted` of the server's database, as JSON rows by conn_id.
fn stored(server: &Server, conn_id: &str) -> Value {
    let out = broked_tests::broked(
        &server.dir.join("broked.db"),
        &["connections", "export", "--decrypted"],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("export JSON");
    doc["connections"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["conn_id"] == conn_id)
        .unwrap_or_else(|| panic!("{conn_id} not exported"))
        .clone()
}

#[test]
fn a_connection_named_new_opens_and_the_form_has_its_own_address() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    run(async {
        let c = ui.browser().await;
        // No connection `new` yet: an old link to the form still opens the form.
        open_form(&c, server, "#/connections/new", "New Connection").await;
        open_form(&c, server, "#/new", "New Connection").await;
        axe(&c, "the form at #/new").await;

        // The list's New Connection goes to #/new; a connection named `new` is created there.
        open_list(&c, server).await;
        click(&c, "#new-connection").await;
        form_titled(&c, "New Connection").await;
        assert_eq!(c.current_url().await.unwrap().fragment(), Some("/new"));
        select(&c, "#f-type", "generic").await;
        fill(&c, "#f-conn_id", "new").await;
        // A URL names the port a generic connection needs (the form does not ask for it).
        fill(&c, "#f-host", "tcp://cache.internal:6379").await;
        click(&c, "#save").await;
        form_titled(&c, "Edit new").await;
        wait_js(
            &c,
            "the connection's address",
            "location.hash === '#/connections/new'",
        )
        .await;
        // What was stored, split: the host without the URL, the port from it.
        assert_eq!(value(&c, "#f-host").await, "cache.internal");
        assert_eq!(value(&c, "#f-port").await, "6379");

        // The list links to it, and #/connections/new opens it — not the form.
        open_list(&c, server).await;
        click(&c, "tr[data-conn-id=new] a.conn-link").await;
        form_titled(&c, "Edit new").await;
        open(&c, server, "#/connections").await;
        list_shown(&c).await;
        open_form(&c, server, "#/connections/new", "Edit new").await;
        assert_eq!(value(&c, "#f-conn_id").await, "new");
        screenshot(&c, "ui-connection-named-new.png").await;
    });
    let r = server.get("/api/connections/new");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.json["host"], &r.json["port"]),
        (&json!("cache.internal"), &json!(6379))
    );
}

#[test]
fn an_s3_region_edit_keeps_the_rest_of_the_stored_extra() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    let secret_key = "Sk-Region-Test-7c1e";
    let session = "Sess-Token-Kept-4b2a";
    run(async {
        let c = ui.browser().await;
        open_form(&c, server, "#/new", "New Connection").await;
        select(&c, "#f-type", "s3").await;
        fill(&c, "#f-conn_id", "minio").await;
        // The endpoint as MinIO prints it, with the bucket: split into host, port and bucket.
        fill(&c, "#f-host", "http://127.0.0.1:9000/reports").await;
        fill(&c, "#f-login", "minio-access").await;
        fill(&c, "#f-password", secret_key).await;
        fill(&c, "#f-region", "eu-west-1").await;
        fill(
            &c,
            "#f-extra",
            &format!(r#"{{"path_style": true, "session_token": "{session}"}}"#),
        )
        .await;
        click(&c, "#save").await;
        form_titled(&c, "Edit minio").await;
        assert_eq!(value(&c, "#f-host").await, "http://127.0.0.1");
        assert_eq!(value(&c, "#f-port").await, "9000");
        assert_eq!(value(&c, "#f-schema").await, "reports");

        // Only the region is typed: the stored extra is not shown, and is kept but for it.
        fill(&c, "#f-region", "eu-west-2").await;
        click(&c, "#save").await;
        wait_text(&c, "#form-status", "Saved minio").await;
        screenshot(&c, "ui-s3-region-edit.png").await;
    });
    let row = stored(server, "minio");
    assert_eq!(
        row["extra"],
        json!({"path_style": true, "region": "eu-west-2", "session_token": session}),
        "the region changed, the other keys stayed"
    );
    assert_eq!(row["password"], secret_key, "the secret key was kept");
    assert_eq!(
        (&row["host"], &row["port"], &row["schema"]),
        (&json!("http://127.0.0.1"), &json!(9000), &json!("reports"))
    );
}
