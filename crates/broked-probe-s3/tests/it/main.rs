//! The s3 probe against a real S3-compatible server that checks signatures
//! (scripts/services/s3.sh), and against listeners made here for the closed-port,
//! silent-server and policy cases.

use std::net::TcpListener;
use std::time::Duration;

use broked_core::{ConnId, ConnType, Connection, Secret};
use broked_probe::testkit::{checked, context as ctx_with, fail};
use broked_probe::{Context, Failure, ProbeError, Tls};
use broked_probe_s3::{S3Probe, check};
use broked_testenv::Service;

/// The endpoint as a user would enter it: host with scheme, and the port in its own field.
fn conn(svc: &Service) -> Connection {
    let endpoint = svc.get("ENDPOINT");
    let (host, port) = endpoint
        .rsplit_once(':')
        .expect("ENDPOINT is http://HOST:PORT");
    Connection {
        conn_id: ConnId::new("s3-test").unwrap(),
        conn_type: ConnType::S3,
        host: Some(host.to_owned()),
        port: Some(port.parse().unwrap()),
        schema: Some(svc.get("BUCKET").to_owned()),
        login: Some(svc.get("ACCESS_KEY").to_owned()),
        password: Some(Secret::new(svc.get("SECRET_KEY"))),
        extra: Some(Secret::new(
            serde_json::json!({ "region": svc.get("REGION") }).to_string(),
        )),
        description: None,
    }
}

/// The probe's result, checked to carry none of the connection's secrets.
async fn run_with(c: &Connection, ctx: &Context) -> Result<String, ProbeError> {
    checked(c, check(c, ctx).await)
}

async fn run(c: &Connection) -> Result<String, ProbeError> {
    run_with(c, &ctx_with(Duration::from_secs(10), &[])).await
}

#[tokio::test]
async fn head_bucket_succeeds() {
    let Some(svc) = broked_testenv::s3() else {
        return;
    };
    let detail = run(&conn(&svc)).await.unwrap();
    assert!(detail.contains(svc.get("BUCKET")), "{detail}");
}

#[tokio::test]
async fn endpoint_as_one_url_in_extra() {
    let Some(svc) = broked_testenv::s3() else {
        return;
    };
    let mut c = conn(&svc);
    c.host = None;
    c.port = None;
    c.extra = Some(Secret::new(
        serde_json::json!({ "endpoint_url": svc.get("ENDPOINT"), "region": svc.get("REGION") })
            .to_string(),
    ));
    run(&c).await.unwrap();
}

#[tokio::test]
async fn through_the_registry_the_message_names_the_driver() {
    let Some(svc) = broked_testenv::s3() else {
        return;
    };
    let registry = broked_probe::testkit::registry(S3Probe, Duration::from_secs(10), &[]);
    let outcome = registry.test(&conn(&svc)).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.message, "Connected successfully (aws-sdk-s3)");
    // The test server's endpoint is http://: the keys' signatures cross in clear.
    assert_eq!(outcome.tls, Some(Tls::Plaintext), "{outcome:?}");
}

#[tokio::test]
async fn wrong_secret_is_auth_so_the_server_checks_signatures() {
    let Some(svc) = broked_testenv::s3() else {
        return;
    };
    let mut c = conn(&svc);
    c.password = Some(Secret::new("wrong-Secret-ZZ9plural-z-alpha"));
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Auth, "{e:?}");
    assert!(e.message.contains("SignatureDoesNotMatch"), "{e:?}");
    assert!(!e.message.contains("ZZ9plural"), "{e:?}");
    assert!(!e.message.contains(svc.get("SECRET_KEY")), "{e:?}");
}

#[tokio::test]
async fn unknown_access_key_is_auth() {
    let Some(svc) = broked_testenv::s3() else {
        return;
    };
    let mut c = conn(&svc);
    c.login = Some("AKIDNOTKNOWNHERE0000".into());
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Auth, "{e:?}");
    assert!(e.message.contains("access key id"), "{e:?}");
}

#[tokio::test]
async fn missing_bucket_is_not_found() {
    let Some(svc) = broked_testenv::s3() else {
        return;
    };
    let mut c = conn(&svc);
    c.schema = Some("no-such-bucket-broked".into());
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::NotFound, "{e:?}");
    assert!(e.message.contains("no-such-bucket-broked"), "{e:?}");
}

fn local_conn(host: &str, port: u16) -> Connection {
    Connection {
        conn_id: ConnId::new("s3-local").unwrap(),
        conn_type: ConnType::S3,
        host: Some(format!("http://{host}")),
        port: Some(port),
        schema: Some("bucket".into()),
        login: Some("AKIDLOCAL".into()),
        password: Some(Secret::new("secret-Never-Shown-42")),
        extra: None,
        description: None,
    }
}

// A closed port is refused at once; a silent server times out at the bound.
broked_probe::check_probe_contract! {
    run_with: run_with,
    local_conn: |port| local_conn("127.0.0.1", port),
    named_conn: |host| local_conn(host, 9000),
}

#[tokio::test]
async fn denied_endpoint_is_blocked_before_connecting() {
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ctx = ctx_with(Duration::from_secs(5), &["127.0.0.2/32"]);
    for host in ["127.0.0.2", "2130706434"] {
        let e = fail(run_with(&local_conn(host, port), &ctx).await);
        assert_eq!(e.kind, Failure::Blocked, "{host}: {e:?}");
    }
    let mut c = local_conn("127.0.0.2", port);
    c.host = None;
    c.port = None;
    c.extra = Some(Secret::new(
        serde_json::json!({ "endpoint_url": format!("http://127.0.0.2:{port}") }).to_string(),
    ));
    let e = fail(run_with(&c, &ctx).await);
    assert_eq!(e.kind, Failure::Blocked, "endpoint_url: {e:?}");
    assert!(
        listener.accept().is_err(),
        "a connection reached the denied address"
    );
}

#[tokio::test]
async fn blank_keys_never_fall_back_to_the_environment() {
    // Even with AWS keys in the environment, a connection without keys is a config error.
    let mut c = local_conn("127.0.0.1", 9);
    c.login = None;
    c.password = None;
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Config, "{e:?}");
}

/// Issue 18: the endpoint stored without its scheme means https://; the test server speaks
/// plain HTTP. The message says so, and how to store the endpoint (it said
/// "https://127.0.0.1:PORT: other error").
#[tokio::test]
async fn an_https_endpoint_that_speaks_plain_http_says_use_http() {
    let Some(svc) = broked_testenv::s3() else {
        return;
    };
    let mut c = conn(&svc);
    let port = c.port.unwrap();
    c.host = Some("127.0.0.1".into());
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Tls, "{e:?}");
    assert_eq!(
        e.message,
        format!(
            "the server at 127.0.0.1:{port} speaks plain HTTP, not TLS (HTTPS): store the \
             endpoint as http://127.0.0.1 in host (port {port})"
        )
    );
    // The same, written as https:// in extra.endpoint_url.
    c.host = None;
    c.port = None;
    c.extra = Some(Secret::new(
        serde_json::json!({ "endpoint_url": format!("https://127.0.0.1:{port}"), "region": svc.get("REGION") })
            .to_string(),
    ));
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Tls, "{e:?}");
    assert!(
        e.message.ends_with(&format!(
            "set extra.endpoint_url to http://127.0.0.1:{port}"
        )),
        "{e:?}"
    );
}

/// A TLS responder on 127.0.0.1 with a certificate for `localhost` from a fresh test CA that
/// no client trusts: answers every request with `status` and `body`.
async fn https_server(status: u16, body: &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = broked_testenv::TestCa::new("broked s3 test CA");
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"]));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/xml\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// Issue 18: an https endpoint whose certificate no trusted CA signed is `certificate`; the
/// reverse of the plain-HTTP case — an http:// endpoint that speaks TLS — is `tls` and says
/// to use https://.
#[tokio::test]
async fn certificate_and_scheme_against_a_tls_endpoint() {
    let port = https_server(200, "").await;
    let mut c = local_conn("127.0.0.1", port);
    c.host = Some("https://localhost".into());
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Certificate, "{e:?}");
    assert!(e.message.contains("is not trusted"), "{e:?}");
    assert!(e.message.contains("a public CA"), "{e:?}");
    broked_probe::testkit::assert_names(&e.message, &["host"]);

    let c = local_conn("127.0.0.1", port);
    let e = fail(run(&c).await);
    assert_eq!(e.kind, Failure::Tls, "{e:?}");
    assert_eq!(
        e.message,
        format!(
            "the server at 127.0.0.1:{port} speaks TLS (HTTPS), not plain HTTP: store the \
             endpoint as https://127.0.0.1 in host (port {port})"
        )
    );
}

/// Issue 18: keys that are valid but may not use the bucket (S3's `AccessDenied`, here from a
/// stand-in: the test server has one all-powerful key) are `authorization`, apart from wrong
/// keys (`auth`). HEAD answers carry no body, so the probe asks again with a listing.
#[tokio::test]
async fn access_denied_is_authorization() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                    <Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
                let answer = if head.starts_with(b"HEAD ") {
                    "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_owned()
                } else {
                    format!(
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    let e = fail(run(&local_conn("127.0.0.1", port)).await);
    assert_eq!(e.kind, Failure::Authorization, "{e:?}");
    assert!(e.message.contains("may not access bucket bucket"), "{e:?}");
    broked_probe::testkit::assert_names(&e.message, &["schema"]);
}

/// Issue 18: an SSH server where the endpoint should be is a protocol mismatch naming port.
#[tokio::test]
async fn an_ssh_port_is_not_s3() {
    let port = broked_probe::testkit::banner_listener(b"SSH-2.0-OpenSSH_9.2p1\r\n").await;
    let e = fail(run(&local_conn("127.0.0.1", port)).await);
    assert_eq!(e.kind, Failure::Protocol, "{e:?}");
    assert!(
        e.message
            .starts_with(&format!("127.0.0.1:{port} speaks SSH, not HTTP")),
        "{e:?}"
    );
    broked_probe::testkit::assert_names(&e.message, &["port"]);
}
