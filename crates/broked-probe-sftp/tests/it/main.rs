//! The sftp probe against a real OpenSSH server (scripts/services/sshd.sh), and against
//! listeners made here for the closed-port, silent-server and policy cases.

use std::net::TcpListener;
use std::time::Duration;

use broked_core::{ConnId, ConnType, Connection, Secret};
use broked_probe::testkit::{checked, context as ctx_with, fail};
use broked_probe::{Context, Failure, ProbeError, Tls};
use broked_probe_sftp::{SftpProbe, check};
use broked_testenv::Service;

/// The test server's connection with its host key pinned: since issue 16 a test against an
/// unpinned host fails before authentication, so every test that means to log in pins it.
fn conn(svc: &Service) -> Connection {
    Connection {
        extra: pinned(svc, serde_json::json!({})),
        ..unpinned_conn(svc)
    }
}

/// `extra` with the test server's host key added.
fn pinned(svc: &Service, mut extra: serde_json::Value) -> Option<Secret> {
    extra["host_key"] = svc.get("HOST_KEY").into();
    Some(Secret::new(extra.to_string()))
}

fn unpinned_conn(svc: &Service) -> Connection {
    Connection {
        conn_id: ConnId::new("sftp-test").unwrap(),
        conn_type: ConnType::Sftp,
        host: Some(svc.get("HOST").to_owned()),
        port: Some(svc.port()),
        schema: Some(svc.get("PATH").to_owned()),
        login: Some(svc.get("USER").to_owned()),
        password: Some(Secret::new(svc.get("PASSWORD"))),
        extra: None,
        description: None,
    }
}

fn extra(value: serde_json::Value) -> Option<Secret> {
    Some(Secret::new(value.to_string()))
}

fn ctx() -> Context {
    ctx_with(Duration::from_secs(10), &[])
}

/// The probe's result, checked to carry none of the connection's secrets.
async fn run(c: &Connection) -> Result<String, ProbeError> {
    run_with(c, &ctx()).await
}

async fn run_with(c: &Connection, ctx: &Context) -> Result<String, ProbeError> {
    checked(c, check(c, ctx).await)
}

#[tokio::test]
async fn password_login_succeeds_and_reports_the_host_key() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let detail = run(&conn(&svc)).await.unwrap();
    assert!(detail.contains("OpenSSH"), "{detail}");
    assert!(detail.contains("host key ssh-ed25519 SHA256:"), "{detail}");
    // Changed by issue 16: success needs a pinned key, so the detail says it matched (it
    // said "not verified" when an unpinned host was accepted).
    assert!(detail.contains("matches extra.host_key"), "{detail}");
    assert!(detail.contains("is a directory"), "{detail}");
}

/// `ssh-keygen -lf` of the test server's host key line: `SHA256:…`, computed apart from the
/// probe.
fn fingerprint_of(key_line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.pub");
    std::fs::write(&path, format!("{key_line}\n")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-E", "sha256", "-lf"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint in {text}"))
        .to_owned()
}

/// Issue 16: a password or key is never sent to an unpinned host. The test stops after the
/// handshake and answers with the fingerprint and how to pin it; pinning exactly that
/// fingerprint then works.
#[tokio::test]
async fn an_unpinned_host_gets_no_credentials_and_a_fingerprint_to_pin() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let want = fingerprint_of(svc.get("HOST_KEY"));
    let e = fail(run(&unpinned_conn(&svc)).await);
    assert_eq!(e.kind, Failure::Tls, "{e:?}");
    assert!(e.message.starts_with("host key not pinned: "), "{e:?}");
    assert!(
        e.message.contains(&format!("ssh-ed25519 {want};")),
        "{want} in {e:?}"
    );
    assert!(e.message.contains("no password or key was sent"), "{e:?}");
    assert!(
        e.message
            .contains(&format!("set extra.host_key to \"{want}\"")),
        "{e:?}"
    );

    // Authentication was never tried: a wrong password, or a key the server does not know,
    // gets the same answer instead of an auth failure.
    let mut c = unpinned_conn(&svc);
    c.password = Some(Secret::new("wrong-Pw-unpinned-41"));
    let e = fail(run(&c).await);
    assert!(e.message.starts_with("host key not pinned: "), "{e:?}");
    let mut c = unpinned_conn(&svc);
    c.password = None;
    c.extra = extra(serde_json::json!({ "private_key": "not even a key" }));
    let e = fail(run(&c).await);
    assert!(e.message.starts_with("host key not pinned: "), "{e:?}");

    // The fingerprint as the message gave it pins the key.
    let mut c = unpinned_conn(&svc);
    c.extra = extra(serde_json::json!({ "host_key": want }));
    let detail = run(&c).await.unwrap();
    assert!(detail.contains("matches extra.host_key"), "{detail}");
}

#[tokio::test]
async fn through_the_registry_the_message_names_the_driver() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let registry = broked_probe::testkit::registry(SftpProbe, Duration::from_secs(10), &[]);
    let outcome = registry.test(&conn(&svc)).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.message, "Connected successfully (ssh2)");
    assert_eq!(outcome.driver, "ssh2");
    // A matched host key is a verified session.
    assert_eq!(outcome.tls, Some(Tls::Verified), "{outcome:?}");

    let outcome = registry.test(&unpinned_conn(&svc)).await;
    assert!(!outcome.success, "{outcome:?}");
    assert_eq!(outcome.failure, Some(Failure::Tls), "{outcome:?}");
    assert!(outcome.message.contains("SHA256:"), "{outcome:?}");
    assert_eq!(outcome.tls, None, "{outcome:?}");
}

#[tokio::test]
async fn private_key_login_succeeds() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let key = std::fs::read_to_string(svc.get("KEY")).unwrap();
    let mut c = conn(&svc);
    c.password = None;
    c.extra = pinned(&svc, serde_json::json!({ "private_key": key }));
    run(&c).await.unwrap();
}

#[tokio::test]
async fn a_key_the_server_does_not_know_is_auth() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    // A valid ed25519 key that is not in authorized_keys: made fresh by ssh-keygen.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let mut c = conn(&svc);
    c.password = None;
    c.extra = pinned(
        &svc,
        serde_json::json!({
            "private_key": std::fs::read_to_string(&path).unwrap()
        }),
    );
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Auth, "{e:?}");
    assert!(e.message.contains("private key"), "{e:?}");
}

#[tokio::test]
async fn garbage_private_key_is_config() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let mut c = conn(&svc);
    c.password = None;
    c.extra = pinned(
        &svc,
        serde_json::json!({ "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nbm9wZQ==\n-----END OPENSSH PRIVATE KEY-----\n" }),
    );
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Config, "{e:?}");
}

#[tokio::test]
async fn wrong_password_is_auth_without_the_password() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let mut c = conn(&svc);
    c.password = Some(Secret::new("wrong-Pw-ZZ9plural-z-alpha"));
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Auth, "{e:?}");
    assert!(e.message.contains("rejected the password"), "{e:?}");
    broked_probe::testkit::assert_names(&e.message, &["login", "password"]);
    assert!(!e.message.contains("ZZ9plural"), "{e:?}");
    assert!(!e.message.contains(svc.get("PASSWORD")), "{e:?}");
}

#[tokio::test]
async fn pinned_host_key_matches() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let mut c = conn(&svc);
    c.extra = extra(serde_json::json!({ "host_key": svc.get("HOST_KEY") }));
    let detail = run(&c).await.unwrap();
    assert!(detail.contains("matches extra.host_key"), "{detail}");

    // The fingerprint the success reported pins the key as well.
    let fp = detail
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap()
        .to_owned();
    c.extra = extra(serde_json::json!({ "host_key": fp }));
    let detail = run(&c).await.unwrap();
    assert!(detail.contains("matches extra.host_key"), "{detail}");
}

#[tokio::test]
async fn wrong_host_key_fails_naming_the_mismatch() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let other = [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm6FTZ6rS6b0cWvL0F4JZ9jBn5mR0x5d8JqfNw7a0Yk",
        "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
    ];
    for key in other {
        let mut c = conn(&svc);
        c.extra = extra(serde_json::json!({ "host_key": key }));
        let e = fail(run(&c).await);
        assert_eq!(e.kind, Failure::Tls, "{e:?}");
        assert!(e.message.starts_with("host key mismatch"), "{e:?}");
        assert!(e.message.contains("no credentials were sent"), "{e:?}");
    }
}

#[tokio::test]
async fn missing_base_path_is_not_found() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let mut c = conn(&svc);
    c.schema = Some(format!("{}/no-such-dir", svc.get("PATH")));
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::NotFound, "{e:?}");
    assert!(e.message.contains("no-such-dir"), "{e:?}");
    broked_probe::testkit::assert_names(&e.message, &["schema"]);
}

/// Issue 18: a base path the user may not read is `authorization` (it was `auth`): the login
/// worked. The test server's user cannot search a directory only root may enter.
#[tokio::test]
async fn a_base_path_the_user_may_not_read_is_authorization() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let private = std::path::Path::new("/root");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(private).unwrap().permissions());
    assert_eq!(
        mode & 0o005,
        0,
        "/root must be closed to others for this test"
    );
    let mut c = conn(&svc);
    c.schema = Some("/root/anything".into());
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Authorization, "{e:?}");
    assert!(e.message.contains("permission denied"), "{e:?}");
    broked_probe::testkit::assert_names(&e.message, &["schema", "login"]);
}

/// Issue 18: an HTTP server on the port (it waits for a request and never answers the SSH
/// banner) is a protocol mismatch naming port, not a timeout.
#[tokio::test]
async fn an_http_port_is_a_protocol_mismatch() {
    let port = broked_probe::testkit::http_listener().await;
    let e = fail(run(&local_conn(port)).await);
    assert_eq!(e.kind, Failure::Protocol, "{e:?}");
    assert!(
        e.message.starts_with(&format!(
            "127.0.0.1:{port} speaks HTTP, not SSH: check port (SSH listens on 22 by default)"
        )),
        "{e:?}"
    );
}

fn local_conn(port: u16) -> Connection {
    Connection {
        conn_id: ConnId::new("sftp-local").unwrap(),
        conn_type: ConnType::Sftp,
        host: Some("127.0.0.1".into()),
        port: Some(port),
        schema: None,
        login: Some("nobody".into()),
        password: Some(Secret::new("pw-Never-Shown-42")),
        extra: None,
        description: None,
    }
}

// A closed port is refused at once; a silent server times out at the bound.
broked_probe::check_probe_contract! {
    run_with: run_with,
    local_conn: local_conn,
    named_conn: |host: &str| Connection {
        host: Some(host.to_owned()),
        ..local_conn(22)
    },
}

#[tokio::test]
async fn a_server_that_is_not_ssh_is_protocol() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    });
    let e = fail(run(&local_conn(port)).await);
    assert_eq!(e.kind, Failure::Protocol, "{e:?}");
    server.join().unwrap();
}

#[tokio::test]
async fn denied_address_is_blocked_before_connecting() {
    // Something listens on 127.0.0.2, and the policy denies it: no connection is made.
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    for host in ["127.0.0.2", "2130706434"] {
        let mut c = local_conn(port);
        c.host = Some(host.into());
        let e = fail(check(&c, &ctx_with(Duration::from_secs(5), &["127.0.0.2/32"])).await);
        assert_eq!(e.kind, Failure::Blocked, "{host}: {e:?}");
    }
    assert!(
        listener.accept().is_err(),
        "a connection reached the denied address"
    );
}

#[tokio::test]
async fn login_and_credentials_are_required() {
    let mut c = local_conn(22);
    c.login = None;
    assert_eq!(fail(run(&c).await).kind, Failure::Config);
    let mut c = local_conn(22);
    c.password = None;
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Config);
    assert!(e.message.contains("private_key"), "{e:?}");
}
