//! Issue 21: the form's "SSH bastion" select lists the SFTP connections; a connection tested
//! and saved with one goes through the suite's sshd to the suite's PostgreSQL, and a test
//! through a bastion that refuses the login names the hop that failed.

use super::*;

#[test]
fn a_connection_through_a_bastion_chosen_in_the_form() {
    let Some(sftp) = env::sftp() else { return };
    let Some(pg) = env::postgres() else { return };
    let Some(ui) = Ui::start(&[]) else {
        return;
    };
    let server = &ui.server;
    for (id, password) in [
        ("bastion", sftp.get("PASSWORD")),
        ("bad-bastion", "wrong-Bastion-Pw-ui"),
    ] {
        create(
            server,
            json!({"conn_id": id, "type": "sftp", "host": sftp.get("HOST"),
                "port": sftp.port(), "login": sftp.get("USER"), "password": password,
                "extra": {"host_key": sftp.get("HOST_KEY")}}),
        );
    }
    run(async {
        let c = ui.browser().await;
        open_form(&c, server, "#/connections/new", "New Connection").await;
        select(&c, "#f-type", "postgres").await;
        wait_js(
            &c,
            "the bastion select shown for postgres",
            "!document.querySelector('.field[data-field=ssh_tunnel]').hidden",
        )
        .await;
        let options = find(&c, "#f-ssh_tunnel")
            .await
            .text()
            .await
            .expect("options");
        assert!(
            options.contains("None")
                && options.contains("bastion")
                && options.contains("bad-bastion"),
            "{options}"
        );
        fill_postgres(&c, "behind", &pg, r#"{"sslmode": "disable"}"#).await;

        // Through the bastion that refuses the login: the result names the hop.
        select(&c, "#f-ssh_tunnel", "bad-bastion").await;
        click(&c, "#test").await;
        let result = wait_text(&c, "#test-result", "Failed").await;
        assert!(
            result.contains("hop 1 of 1 (bastion \"bad-bastion\"")
                && result.contains("rejected the password"),
            "{result}"
        );
        assert!(!result.contains("wrong-Bastion-Pw-ui") && !result.contains(pg.get("PASSWORD")));
        axe(&c, "the form with a bastion chosen and a failed tunnel").await;

        // Through the good one: a success, then saved with ssh_tunnel in extra.
        select(&c, "#f-ssh_tunnel", "bastion").await;
        click(&c, "#test").await;
        wait_text(&c, "#test-result", "Success").await;
        click(&c, "#save").await;
        wait_text(&c, "#notice", "Saved behind").await;
        // The select never lists the connection itself (editing a bastion).
        open(&c, server, "#/connections/bastion").await;
        wait_text(&c, "#form-title", "Edit bastion").await;
        wait_js(
            &c,
            "the bastion's own form lists the other bastion but not itself",
            "[...document.querySelectorAll('#f-ssh_tunnel option')].some((o) => o.value === 'bad-bastion') \
             && ![...document.querySelectorAll('#f-ssh_tunnel option')].some((o) => o.value === 'bastion')",
        )
        .await;
    });
    // The saved connection went through the bastion: the bastion is in use, and a test
    // through the API succeeds (its detail names the tunnel in the library; the message is
    // the usual one).
    let r = server.post("/api/connections/behind/test", "");
    assert_eq!(r.json["success"], true, "{}", r.text);
    let d = call(server, "DELETE", "/api/connections/bastion", None);
    assert_eq!(d.status, 409, "{}", d.text);
    assert!(d.text.contains("SSH bastion of behind"), "{}", d.text);
}
