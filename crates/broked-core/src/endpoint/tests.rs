use super::*;
use crate::{ConnectionInput, ValidationErrors};

/// One row: type, what is typed in host, and what is stored (host, port, schema) or a piece of
/// the error.
type Row = (
    ConnType,
    &'static str,
    Result<(&'static str, Option<u16>, Option<&'static str>), &'static str>,
);

use ConnType::{Generic, Http, Mysql, Postgres, S3, Sftp, Sqlite};

const ROWS: &[Row] = &[
    // The issue's examples.
    (
        S3,
        "http://127.0.0.1:9000",
        Ok(("http://127.0.0.1", Some(9000), None)),
    ),
    (
        Http,
        "https://api.example.com:8443/v1",
        Ok(("https://api.example.com", Some(8443), Some("v1"))),
    ),
    (
        Postgres,
        "postgres://db.internal:5433/analytics",
        Ok(("db.internal", Some(5433), Some("analytics"))),
    ),
    // Every type's schemes.
    (Postgres, "postgresql://db", Ok(("db", None, None))),
    (
        Postgres,
        "POSTGRES://DB.internal/",
        Ok(("DB.internal", None, None)),
    ),
    (
        Mysql,
        "mysql://10.0.0.5:3307/shop",
        Ok(("10.0.0.5", Some(3307), Some("shop"))),
    ),
    (Mysql, "mariadb://db/shop", Ok(("db", None, Some("shop")))),
    (
        Http,
        "http://api.example.com",
        Ok(("api.example.com", None, None)),
    ),
    (
        Http,
        "HTTPS://api.example.com/v1/items/",
        Ok(("https://api.example.com", None, Some("v1/items/"))),
    ),
    (
        Sftp,
        "sftp://files.example.com:2222//upload/in",
        Ok(("files.example.com", Some(2222), Some("/upload/in"))),
    ),
    (
        Sftp,
        "ssh://files.example.com",
        Ok(("files.example.com", None, None)),
    ),
    (
        S3,
        "https://s3.example.net/my-bucket/",
        Ok(("https://s3.example.net", None, Some("my-bucket"))),
    ),
    (
        S3,
        "s3+http://minio:9000/b",
        Ok(("http://minio", Some(9000), Some("b"))),
    ),
    (
        Generic,
        "tcp://cache.internal:6379",
        Ok(("cache.internal", Some(6379), None)),
    ),
    (
        Generic,
        "generic://cache.internal:6379/0",
        Ok(("cache.internal", Some(6379), Some("0"))),
    ),
    (
        // A sqlite host is a file path, whatever it holds: no URL form.
        Sqlite,
        "sqlite:///var/lib/app%20x.db",
        Ok(("sqlite:///var/lib/app%20x.db", None, None)),
    ),
    (
        Sqlite,
        "file:///a.db?m=1#x",
        Ok(("file:///a.db?m=1#x", None, None)),
    ),
    // A socket path goes without a scheme: the URL form is not read as one.
    (
        Postgres,
        "postgres://%2Fvar%2Frun%2Fpostgresql/mydb",
        Err("without a scheme"),
    ),
    // Without a scheme: as before.
    (
        Postgres,
        "db.example.com",
        Ok(("db.example.com", None, None)),
    ),
    (Postgres, "[::1]", Ok(("::1", None, None))),
    (
        Postgres,
        "/var/run/postgresql",
        Ok(("/var/run/postgresql", None, None)),
    ),
    (Http, "https://x.io", Ok(("https://x.io", None, None))),
    (
        Sqlite,
        "rel dir/a?b#c.db",
        Ok(("rel dir/a?b#c.db", None, None)),
    ),
    // IPv6.
    (
        S3,
        "http://[::1]:9000",
        Ok(("http://[::1]", Some(9000), None)),
    ),
    (
        Postgres,
        "postgres://[::1]:5433/x",
        Ok(("::1", Some(5433), Some("x"))),
    ),
    (Http, "https://[0:0::1]", Ok(("https://[::1]", None, None))),
    (Http, "http://[::1]", Ok(("::1", None, None))),
    // Without brackets the whole authority is the address, never an address and a port:
    // http://::1:9000 is the address ::1:9000 (shown so in the answer); a port needs brackets.
    (S3, "http://::1:9000", Ok(("http://[::1:9000]", None, None))),
    (
        S3,
        "http://1:2:3:4:5:6:7:8",
        Ok(("http://[1:2:3:4:5:6:7:8]", None, None)),
    ),
    (S3, "http://::1:90000", Err("brackets")),
    (S3, "http://::1", Ok(("http://[::1]", None, None))),
    (Http, "http://::1/v1", Err("brackets")),
    (Http, "http://1:://x", Err("second scheme")),
    (Http, "http://x/a:/b://", Err("second scheme")),
    (Http, "http://x/a:/:b", Ok(("x", None, Some("a:/:b")))),
    (
        Http,
        "https://1:0:0:0:0:0:0:8",
        Ok(("https://[1::8]", None, None)),
    ),
    (Http, "https://1:0:0:0:0:0:0:8:80", Err("brackets")),
    (Postgres, "postgres://[::1", Err("brackets")),
    (Postgres, "postgres://[::1]x", Err("brackets")),
    (
        Postgres,
        "postgres://[fe80::1%25eth0]",
        Err("host name or IP"),
    ),
    (Postgres, "postgres://[]:5432", Err("names no host")),
    // Trailing dots are kept (a different name for the resolver, so a different target).
    (
        Http,
        "http://example.com.",
        Ok(("example.com.", None, None)),
    ),
    // An empty port is refused (say none, or one).
    (Http, "http://example.com:/", Err("port in the URL in host")),
    // Ports.
    (Http, "http://x:0", Err("port in the URL in host")),
    (Http, "http://x:65536", Err("port in the URL in host")),
    (Http, "http://x:+80", Err("port in the URL in host")),
    (Http, "http://x:8o", Err("port in the URL in host")),
    (Http, "http://x:-1", Err("port in the URL in host")),
    (
        Http,
        "http://x:99999999999999999999",
        Err("port in the URL in host"),
    ),
    // Logins and passwords are never read from host.
    (Http, "http://good@evil", Err("login or password")),
    (Http, "http://user:pw@host", Err("login or password")),
    (
        Postgres,
        "postgres://u:12/ss@host/db",
        Err("login or password"),
    ),
    (S3, "http://evil.com%2F@good.com", Err("login or password")),
    (Http, "http://x/path@y", Err("login or password")),
    // A host name is read as written: no percent-decoding.
    (Http, "http://%65vil.com", Err("host name or IP")),
    (Http, "http://good.com%40evil.com", Err("host name or IP")),
    (Http, "http://127.0.0.1%2F.good.com", Err("host name or IP")),
    (Http, "http://ev%00il", Err("host name or IP")),
    (Http, "http://%ff", Err("host name or IP")),
    (Http, "http://x/%ff", Err("not valid UTF-8")),
    (Http, "http://x/a%20b", Ok(("x", None, Some("a b")))),
    (Http, "http://ex%C3%A4mple.com", Err("host name or IP")),
    // Other refusals.
    (
        Postgres,
        "mysql://db:3306/x",
        Err("does not fit a postgres connection"),
    ),
    (Postgres, "https://db", Err("does not fit")),
    (Sftp, "http://files", Err("does not fit")),
    (Generic, "redis://cache:6379", Err("generic:// or tcp://")),
    (Http, "ftp://x", Err("does not fit")),
    (S3, "s3://my-bucket", Err("names a bucket")),
    (S3, "http://minio:9000/bucket/key", Err("one path segment")),
    (Http, "://x", Err("starts with")),
    (Http, "http://https://x", Err("second scheme")),
    (Http, "http://x?a=1", Err("?query")),
    (Http, "http://x/#frag", Err("?query")),
    (Http, "http://", Err("names no host")),
    (Http, "http://:80", Err("names no host")),
    (Http, "http:///v1", Err("names no host")),
    (Http, "http://a b", Err("host name or IP")),
    (Http, "http://x\\@y", Err("login or password")),
    (Http, "http://x\ty", Err("control characters")),
    // `//host` is no URL: a socket directory for postgres, refused where no path is a host.
    (Postgres, "//evil", Ok(("//evil", None, None))),
    (Http, "//evil", Err("put a path in schema")),
    (Sftp, "//evil", Err("host name or IP")),
    // host:port without a scheme stays refused.
    (Postgres, "db.example.com:5432", Err("put the port in port")),
    (S3, "127.0.0.1:9000", Err("put the port in port")),
    (Http, "localhost:8080/v1", Err("put a path in schema")),
];

#[test]
fn accepted_and_refused_hosts() {
    for (t, host, want) in ROWS {
        let got = split(*t, host);
        match (want, &got) {
            (Ok((h, p, s)), Ok(parts)) => assert_eq!(
                (parts.host.as_str(), parts.port, parts.schema.as_deref()),
                (*h, *p, *s),
                "{t} {host:?}"
            ),
            (Err(piece), Err(message)) => {
                assert!(message.contains(piece), "{t} {host:?}: {message}")
            }
            _ => panic!("{t} {host:?}: expected {want:?}, got {got:?}"),
        }
    }
}

/// Errors never repeat the input: the distinctive parts of each refused host are absent.
#[test]
fn errors_never_repeat_the_host() {
    for (t, host) in [
        (Http, "http://zebra:PW-SECRET-1@api.example.com"),
        (Http, "http://PW-SECRET-1@api.example.com"),
        (Postgres, "postgres://etl:PW-SECRET-1@db/app"),
        (Postgres, "postgres://etl:12/PW-SECRET-1@db/app"),
        (Http, "http://api.example.com/?token=PW-SECRET-1"),
        (Http, "http://api.example.com/#PW-SECRET-1"),
        (Postgres, "mysql://PW-SECRET-1"),
        (Http, "http://PW-SECRET-1:99999"),
        (S3, "s3://PW-SECRET-1"),
        (Http, "PW-SECRET-1://x"),
    ] {
        let e = split(t, host).unwrap_err();
        assert!(!e.contains("SECRET"), "{host}: {e}");
        let e = ConnectionInput {
            conn_id: Some("c".into()),
            conn_type: Some(t.as_str().into()),
            host: Some(host.into()),
            ..ConnectionInput::default()
        }
        .validate()
        .unwrap_err();
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(!format!("{e:?}").contains("SECRET"), "{e:?}");
    }
}

/// A stored host reads back as itself: validating a valid connection again changes nothing.
#[test]
fn a_stored_host_splits_to_itself() {
    for (t, host, want) in ROWS {
        if let Ok((stored, _, _)) = want {
            let again = split(*t, stored).unwrap_or_else(|e| panic!("{t} {stored:?}: {e}"));
            assert_eq!(
                (again.host.as_str(), again.port, again.schema),
                (*stored, None, None),
                "{t} {host:?} stored as {stored:?}"
            );
        }
    }
}

fn validate(
    t: &str,
    host: &str,
    port: Option<i64>,
    schema: Option<&str>,
) -> Result<crate::Connection, ValidationErrors> {
    ConnectionInput {
        conn_id: Some("c".into()),
        conn_type: Some(t.into()),
        host: Some(host.into()),
        port,
        schema: schema.map(Into::into),
        ..ConnectionInput::default()
    }
    .validate()
}

#[test]
fn the_url_fills_empty_fields_accepts_equal_ones_and_refuses_others_naming_both() {
    let c = validate(
        "postgres",
        " postgres://db.internal:5433/analytics ",
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        (c.host.as_deref(), c.port, c.schema.as_deref()),
        (Some("db.internal"), Some(5433), Some("analytics"))
    );
    let c = validate("s3", "http://127.0.0.1:9000/b", Some(9000), Some("b")).unwrap();
    assert_eq!(
        (c.host.as_deref(), c.port, c.schema.as_deref()),
        (Some("http://127.0.0.1"), Some(9000), Some("b"))
    );
    // A URL without a port leaves the port field as it is.
    let c = validate("http", "https://api.example.com", Some(8443), None).unwrap();
    assert_eq!(c.port, Some(8443));

    let e = validate("s3", "http://127.0.0.1:9000", Some(9001), None).unwrap_err();
    let fields: Vec<_> = e.errors().iter().map(|e| e.field).collect();
    assert_eq!(fields, ["host", "port"]);
    expect_test::expect![[r#"invalid connection: host: host and port disagree: the URL in host names port 9000, port is 9001; make them agree, or leave port empty; port: host and port disagree: the URL in host names port 9000, port is 9001; make them agree, or leave port empty"#]]
    .assert_eq(&e.to_string());

    let e = validate(
        "postgres",
        "postgres://db/analytics-db",
        None,
        Some("other-db"),
    )
    .unwrap_err();
    let fields: Vec<_> = e.errors().iter().map(|e| e.field).collect();
    assert_eq!(fields, ["host", "schema"]);
    assert!(!e.to_string().contains("analytics-db"), "{e}");

    // generic needs a port: one in the URL counts.
    let c = validate("generic", "tcp://cache:6379", None, None).unwrap();
    assert_eq!(c.port, Some(6379));
    let e = validate("generic", "tcp://cache", None, None).unwrap_err();
    assert_eq!(e.errors()[0].field, "port");
}

#[test]
fn a_percent_encoded_host_in_a_uri_is_not_read_as_a_url() {
    let id = crate::ConnId::new("c").unwrap();
    for uri in [
        "postgres://u:p@postgres%3A%2F%2Fevil:5/db",
        "https://http%3A%2F%2Fevil/",
        "https://evil%3A99/",
        "s3+http://evil%2Fbucket/b",
    ] {
        assert!(
            crate::Connection::from_uri(id.clone(), uri).is_err(),
            "{uri}"
        );
    }
}

proptest::proptest! {
    /// Any text: no panic; what is accepted is stored in a form that reads back as itself.
    #[test]
    fn split_never_panics_and_its_host_is_a_fixed_point(
        t in proptest::sample::select(ConnType::ALL.to_vec()),
        host in "(|https?://|postgres://|s3\\+http://|tcp://|sqlite://)[a-z0-9@:/\\[\\]%.?#_ -]{0,24}",
    ) {
        if let Ok(parts) = split(t, host.trim()) {
            let again = split(t, &parts.host).expect("the stored host is valid");
            proptest::prop_assert_eq!(again.host, parts.host);
            proptest::prop_assert_eq!((again.port, again.schema), (None, None));
        }
    }
}
