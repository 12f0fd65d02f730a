//! Issue 18, "the UI shows the state of every connection": the last test per connection with
//! its message on hover, the failing-only filter, "Test all" with its progress and Cancel,
//! the pipelines that use a connection and why Delete is refused, search, and pages from the
//! server. Screenshots: `ui-list-pages.png`, `ui-search.png`, `ui-test-all.png`,
//! `ui-failing-only.png`, `ui-test-all-cancelled.png`, `ui-used-by.png`.

use super::*;

/// A distinctive password: it must not reach the page.
const PASSWORD: &str = "Wombat-Pw-3e71!";

/// The row of `id`'s status badge.
fn badge(id: &str) -> String {
    format!("tr[data-conn-id=\"{id}\"] td.last-test .status")
}

#[test]
fn the_list_shows_each_connections_state_and_pages_on_the_server() {
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    // 103 connections that fill the first page (pages of 100) …
    for i in 0..103 {
        create(
            server,
            json!({"conn_id": format!("bulk-{i:03}"), "type": "generic", "host": "h", "port": 1,
                   "description": if i == 42 { "the Answer" } else { "bulk" }}),
        );
    }
    // … one that works (the server's own port), one that does not (a closed port) and is
    // used by a pipeline, and six whose tests hang until cancelled (a port that never answers).
    create(
        server,
        json!({"conn_id": "t-ok", "type": "generic", "host": "127.0.0.1", "port": server.port}),
    );
    let closed = free_port();
    create(
        server,
        json!({"conn_id": "t-down", "type": "postgres", "host": "127.0.0.1", "port": closed,
               "schema": "db", "login": "etl", "password": PASSWORD}),
    );
    let pipeline = r#"{"name": "nightly load", "nodes": [{"id": "extract", "type": "source_db",
        "config": {"conn_id": "t-down", "query": "SELECT 1"}}]}"#;
    let put = call(server, "PUT", "/api/pipelines/nightly", Some(pipeline));
    assert_eq!(put.status, 200, "{}", put.text);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for i in 0..6 {
        create(
            server,
            json!({"conn_id": format!("slow-{i}"), "type": "postgres", "host": "127.0.0.1",
                   "port": silent_port, "schema": "db", "login": "etl", "password": PASSWORD}),
        );
    }

    run(async {
        let c = ui.browser().await;
        open_list(&c, server).await;

        // Pages from the server: 111 connections, 100 a page.
        wait_text(&c, "#list-status", "Showing 1–100 of 111 connections.").await;
        wait_js(
            &c,
            "100 rows",
            "document.querySelectorAll('#conn-rows tr').length === 100",
        )
        .await;
        wait_js(
            &c,
            "Previous disabled",
            "document.getElementById('page-prev').disabled",
        )
        .await;
        wait_text(&c, "#page-text", "Page 1").await;
        // Every row says it was not tested yet.
        wait_text(&c, &badge("bulk-000"), "Not tested").await;
        click(&c, "#page-next").await;
        wait_text(&c, "#list-status", "Showing 101–111 of 111 connections.").await;
        wait_js(
            &c,
            "11 rows",
            "document.querySelectorAll('#conn-rows tr').length === 11",
        )
        .await;
        wait_js(
            &c,
            "Next disabled",
            "document.getElementById('page-next').disabled",
        )
        .await;
        wait_text(&c, "#page-text", "Page 2").await;
        axe(&c, "the second page of the list").await;
        screenshot(&c, "ui-list-pages.png").await;
        click(&c, "#page-prev").await;
        wait_text(&c, "#list-status", "Showing 1–100 of 111 connections.").await;

        // Search, on the server: the description, the conn_id, either case.
        fill(&c, "#search", "ANSWER").await;
        wait_text(&c, "#list-status", "1 connection match.").await;
        wait_js(
            &c,
            "bulk-042 found",
            "document.querySelector('#conn-rows tr').dataset.connId === 'bulk-042'",
        )
        .await;
        wait_js(
            &c,
            "no pages for one row",
            "document.getElementById('pager').hidden",
        )
        .await;
        fill(&c, "#search", "t-").await;
        wait_text(&c, "#list-status", "2 connections match.").await;
        screenshot(&c, "ui-search.png").await;

        // Test all (what the search shows): progress, results filling in, kept by the server.
        click(&c, "#test-all").await;
        wait_js(
            &c,
            "the progress panel",
            "!document.getElementById('test-all-panel').hidden",
        )
        .await;
        wait_text(&c, "#test-all-text", "Done: 2 tested, 1 failed.").await;
        wait_js(&c, "a full bar", "document.getElementById('test-all-progress').value === 2 && document.getElementById('test-all-progress').max === 2").await;
        wait_text(&c, &badge("t-ok"), "OK").await;
        wait_text(&c, &badge("t-down"), "Failed").await;
        // The message on hover (and in the label screen readers read), without the password.
        let title = find(&c, &badge("t-down"))
            .await
            .attr("title")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(title.starts_with("Failed, "), "{title}");
        let kept = call(server, "GET", "/api/connections/t-down", None);
        let message = kept.json["last_test_message"].as_str().unwrap().to_owned();
        assert!(
            !message.is_empty() && title.ends_with(&message),
            "{title} / {message}"
        );
        assert!(!title.contains(PASSWORD) && !page_text(&c).await.contains(PASSWORD));
        axe(&c, "the list after Test all").await;
        screenshot(&c, "ui-test-all.png").await;

        // Failing only: the server's filter, after a reload of the page.
        fill(&c, "#search", "").await;
        open_list(&c, server).await;
        select(&c, "#status-filter", "failing").await;
        wait_text(&c, "#list-status", "1 connection match.").await;
        wait_js(
            &c,
            "only t-down",
            "document.querySelector('#conn-rows tr').dataset.connId === 't-down'",
        )
        .await;
        wait_text(&c, &badge("t-down"), "Failed").await;
        screenshot(&c, "ui-failing-only.png").await;
        select(&c, "#status-filter", "ok").await;
        wait_text(&c, "#list-status", "1 connection match.").await;
        wait_text(&c, &badge("t-ok"), "OK").await;
        select(&c, "#status-filter", "").await;

        // Test all, cancelled while the tests hang: it stops, and says how far it got.
        fill(&c, "#search", "slow-").await;
        wait_text(&c, "#list-status", "6 connections match.").await;
        click(&c, "#test-all").await;
        wait_text(&c, "#test-all-text", "0 of 6 tested").await;
        wait_text(&c, &badge("slow-0"), "Testing…").await;
        click(&c, "#test-all-cancel").await;
        let text = wait_text(&c, "#test-all-text", "Cancelled:").await;
        assert!(text.contains("0 tested"), "{text}");
        wait_text(&c, "#test-all-label", "Test all cancelled").await;
        wait_js(
            &c,
            "Test all usable again",
            "!document.getElementById('test-all').disabled",
        )
        .await;
        wait_text(&c, &badge("slow-5"), "Not tested").await;
        screenshot(&c, "ui-test-all-cancelled.png").await;

        // The connection page: its last test, the pipelines that use it, why Delete is refused.
        open_form(&c, server, "#/connections/t-down", "Edit t-down").await;
        wait_text(&c, "#last-test", "Failed").await;
        let used = wait_text(&c, "#used-by", "nightly load").await;
        assert!(
            used.contains("(nightly)") && used.contains("node extract"),
            "{used}"
        );
        let why = wait_text(
            &c,
            "#delete-refused",
            "Delete is refused while pipelines use t-down",
        )
        .await;
        assert!(why.contains("409"), "{why}");
        axe(&c, "the connection page with its pipelines").await;
        screenshot(&c, "ui-used-by.png").await;
        // Delete from there: the dialog says the same and offers to delete anyway.
        click(&c, "#form-delete").await;
        dialog_shown(&c, "the delete dialog", "delete-dialog").await;
        wait_text(&c, "#delete-body", "nightly").await;
        wait_text(&c, "#delete-confirm", "Delete anyway").await;
        click(&c, "#delete-cancel").await;
        dialog_closed(&c, "delete-dialog").await;
        // A connection no pipeline uses says so.
        open_form(&c, server, "#/connections/t-ok", "Edit t-ok").await;
        wait_text(&c, "#used-by", "No pipeline uses t-ok.").await;
        wait_text(&c, "#last-test", "OK").await;
        c.close().await.expect("close the browser");
    });
    drop(silent);
}
