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
