use expect_test::expect;
use proptest::prelude::*;

use super::*;
use crate::{ConnectionInput, Field, FieldUse};

fn conn(t: &str, f: impl FnOnce(&mut ConnectionInput)) -> Connection {
    let mut input = ConnectionInput {
        conn_id: Some("c".into()),
        conn_type: Some(t.into()),
        ..ConnectionInput::default()
    };
    f(&mut input);
    input.validate().expect("valid")
}

fn id() -> ConnId {
    ConnId::new("c").unwrap()
}

/// One row per form of docs/uri.md: the connection, its URI, its masked URI.
#[test]
fn uri_of_every_type() {
    let cases = [
        conn("postgres", |c| {
            c.host = Some("db.example.com".into());
            c.port = Some(5432);
            c.schema = Some("mydb".into());
            c.login = Some("etl_user".into());
            c.password = Some("secret123".into());
        }),
        conn("postgres", |c| {
            c.host = Some("/var/run/postgresql".into());
            c.schema = Some("mydb".into());
            c.login = Some("etl".into());
            c.extra = Some(r#"{"sslmode": "disable", "application_name": "broked etl"}"#.into());
        }),
        conn("mysql", |c| {
            c.host = Some("::1".into());
            c.port = Some(3306);
            c.schema = Some("shop".into());
            c.login = Some("root".into());
            c.password = Some("p@ss word".into());
        }),
        conn("sqlite", |c| c.host = Some("/var/lib/broked/app.db".into())),
        conn("sqlite", |c| {
            c.host = Some("data/my app.db".into());
            c.extra = Some(r#"{"mode": "ro"}"#.into());
        }),
        conn("http", |c| {
            c.host = Some("https://api.example.com".into());
            c.schema = Some("v1/items".into());
            c.login = Some("bot".into());
            c.password = Some("tok".into());
            c.extra = Some(
                r#"{"headers": {"X-Api-Key": "k"}, "timeout": 30, "verify": false, "code": "123"}"#
                    .into(),
            );
        }),
        conn("http", |c| {
            c.host = Some("localhost".into());
            c.port = Some(8080);
        }),
        conn("sftp", |c| {
            c.host = Some("files.example.com".into());
            c.port = Some(2222);
            c.schema = Some("/upload/in".into());
            c.login = Some("deploy".into());
            c.password = Some("pw".into());
        }),
        conn("s3", |c| {
            c.schema = Some("my-bucket".into());
            c.login = Some("AKIAEXAMPLE".into());
            c.password = Some("wJalr/K7+MDENG".into());
            c.extra = Some(r#"{"region": "eu-west-1"}"#.into());
        }),
        conn("s3", |c| {
            c.host = Some("http://127.0.0.1".into());
            c.port = Some(9000);
            c.schema = Some("bucket".into());
            c.login = Some("minio".into());
            c.password = Some("minio123".into());
        }),
        conn("generic", |c| {
            c.host = Some("cache.internal".into());
            c.port = Some(6379);
            c.password = Some("redis-pw".into());
        }),
    ];
    let rows: Vec<String> = cases
        .iter()
        .map(|c| {
            let uri = c.to_uri();
            let back = Connection::from_uri(c.conn_id.clone(), uri.expose()).unwrap();
            assert_eq!(&back, c, "round trip of {}", c.to_masked_uri());
            format!("{}\n    {}", uri.expose(), c.to_masked_uri())
        })
        .collect();
    expect![[r#"
        postgres://etl_user:secret123@db.example.com:5432/mydb
            postgres://etl_user:********@db.example.com:5432/mydb
        postgres://etl@%2Fvar%2Frun%2Fpostgresql/mydb?application_name=broked%20etl&sslmode=disable
            postgres://etl@%2Fvar%2Frun%2Fpostgresql/mydb?application_name=********&sslmode=********
        mysql://root:p%40ss%20word@[::1]:3306/shop
            mysql://root:********@[::1]:3306/shop
        sqlite:///var/lib/broked/app.db
            sqlite:///var/lib/broked/app.db
        sqlite://data/my%20app.db?mode=ro
            sqlite://data/my%20app.db?mode=********
        https://bot:tok@api.example.com/v1/items?code=%22123%22&headers=%7B%22X-Api-Key%22%3A%22k%22%7D&timeout=30&verify=false
            https://bot:********@api.example.com/v1/items?code=********&headers=********&timeout=********&verify=********
        http://localhost:8080
            http://localhost:8080
        sftp://deploy:pw@files.example.com:2222//upload/in
            sftp://deploy:********@files.example.com:2222//upload/in
        s3://AKIAEXAMPLE:wJalr%2FK7%2BMDENG@/my-bucket?region=eu-west-1
            s3://AKIAEXAMPLE:********@/my-bucket?region=********
        s3+http://minio:minio123@127.0.0.1:9000/bucket
            s3+http://minio:********@127.0.0.1:9000/bucket
        generic://:redis-pw@cache.internal:6379
            generic://:********@cache.internal:6379
    "#]]
    .assert_eq(&(rows.join("\n") + "\n"));
}

#[test]
fn named_case_special_characters() {
    let c = conn("postgres", |c| {
        c.host = Some("db".into());
        c.login = Some("user@corp".into());
        c.password = Some("p@ss:w/rd#?&=%+ é".into());
    });
    let uri = c.to_uri();
    assert_eq!(
        uri.expose(),
        "postgres://user%40corp:p%40ss%3Aw%2Frd%23%3F%26%3D%25%2B%20%C3%A9@db"
    );
    let back = Connection::from_uri(id(), uri.expose()).unwrap();
    assert_eq!(back.login.as_deref(), Some("user@corp"));
    assert_eq!(
        back.password.as_ref().unwrap().expose(),
        "p@ss:w/rd#?&=%+ é"
    );
    assert_eq!(back, c);
}

#[test]
fn hand_written_uris() {
    let c = Connection::from_uri(id(), "POSTGRESQL://u@[::1]/db?connect_timeout=5&x").unwrap();
    assert_eq!(c.conn_type, ConnType::Postgres);
    assert_eq!(c.host.as_deref(), Some("::1"));
    assert_eq!(c.extra.unwrap().expose(), r#"{"connect_timeout":5,"x":""}"#);
    let c = Connection::from_uri(id(), "https://api.example.com").unwrap();
    assert_eq!(c.host.as_deref(), Some("https://api.example.com"));
    let c = Connection::from_uri(id(), "http://api.example.com:").unwrap();
    assert_eq!((c.host.as_deref(), c.port), (Some("api.example.com"), None));
}

/// `extra.ssh_tunnel` is broked's routing, not a driver parameter: never in a URI (in any
/// spelling), so a driver is never handed it. Everything else round trips; a URI that names a
/// tunnel is still read (a `BROKED_CONN_*` variable may route through a bastion).
#[test]
fn the_ssh_tunnel_is_never_a_query_parameter() {
    let c = conn("postgres", |i| {
        i.host = Some("db.internal".into());
        i.login = Some("etl".into());
        i.password = Some("pw".into());
        i.extra = Some(
            r#"{"sslmode":"require","ssh_tunnel":["jump-a","jump-b"],"SSH-Tunnel":"x"}"#.into(),
        );
    });
    let uri = c.to_uri();
    assert_eq!(
        uri.expose(),
        "postgres://etl:pw@db.internal?sslmode=require"
    );
    assert_eq!(
        c.to_masked_uri(),
        "postgres://etl:********@db.internal?sslmode=********"
    );
    let back = Connection::from_uri(id(), uri.expose()).unwrap();
    assert_eq!(back.extra.unwrap().expose(), r#"{"sslmode":"require"}"#);
    assert_eq!((back.host, back.login), (c.host, c.login));
    let read = Connection::from_uri(id(), "mysql://u@h/db?ssh_tunnel=bastion").unwrap();
    assert_eq!(read.extra.unwrap().expose(), r#"{"ssh_tunnel":"bastion"}"#);
}

#[test]
fn parse_errors() {
    let cases = [
        "",
        "no scheme here",
        "ftp://h",
        "postgres://u:pw@h:0/db",
        "postgres://u:pw@h:99999/db",
        "postgres://u:pw@h:54x2/db",
        "postgres://u:pw@[::1/db",
        "postgres://u:pw@h/db#frag",
        "postgres://u:%FF@h",
        "postgres://u:pw@h/db?a=1&a=2",
        "postgres://u:pw@/db",
        "generic://h",
        "sqlite://",
        "postgres://u:pw@bad host",
    ];
    let errors: Vec<String> = cases
        .iter()
        .map(|uri| Connection::from_uri(id(), uri).unwrap_err().to_string())
        .collect();
    expect![[r#"
        [
            "not a connection URI: expected a scheme such as postgres:// (see docs/uri.md)",
            "not a connection URI: expected a scheme such as postgres:// (see docs/uri.md)",
            "unknown URI scheme; expected one of postgres, postgresql, mysql, mariadb, sqlite, http, https, sftp, s3, s3+http, s3+https, generic",
            "the port in the URI must be an integer from 1 to 65535",
            "the port in the URI must be an integer from 1 to 65535",
            "the port in the URI must be an integer from 1 to 65535",
            "an IPv6 address in a URI must be written in brackets, like [::1]:5432",
            "URI fragments are not allowed; write # as %23",
            "the password in the URI is not valid UTF-8 after percent-decoding",
            "a parameter appears twice in the URI query",
            "invalid connection: host: host is required for postgres connections",
            "invalid connection: port: port is required for generic connections",
            "invalid connection: host: host is required for sqlite connections",
            "invalid connection: host: host must be a host name or IP address (letters, digits, '.', '-', '_')",
        ]
    "#]]
    .assert_debug_eq(&errors);
}

// ---- property tests ----

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        // strings that look like other JSON values
        prop_oneof![
            Just("123"),
            Just("true"),
            Just("null"),
            Just("\"x\""),
            Just("[]"),
            Just(" 1 ")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Logins and passwords from all of Unicode, with the characters URIs care about mixed in.
fn credential() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        any::<String>(),
        "[@:/#?&=%+ é\\[\\]]{1,12}",
        "[a-z]{1,4}[@:/#?&=%+ ][a-zé]{0,4}",
    ])
}

fn network_host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}",
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
    ]
}

fn host_for(t: ConnType) -> BoxedStrategy<Option<String>> {
    match t {
        ConnType::Sqlite => "\\PC{1,30}".prop_map(Some).boxed(),
        ConnType::Postgres | ConnType::Mysql => prop_oneof![
            network_host().prop_map(Some),
            "(/[a-z .]{1,8}){1,3}".prop_map(Some),
        ]
        .boxed(),
        ConnType::Http => (prop::option::of(Just("https://")), network_host())
            .prop_map(|(s, h)| Some(format!("{}{h}", s.unwrap_or(""))))
            .boxed(),
        ConnType::S3 => prop::option::of(
            (
                prop::option::of(prop_oneof![Just("https://"), Just("http://")]),
                network_host(),
            )
                .prop_map(|(s, h)| format!("{}{h}", s.unwrap_or(""))),
        )
        .boxed(),
        ConnType::Sftp | ConnType::Generic => network_host().prop_map(Some).boxed(),
    }
}

fn valid_connection() -> impl Strategy<Value = Connection> {
    prop::sample::select(ConnType::ALL.to_vec()).prop_flat_map(|t| {
        (
            "[a-z0-9][a-z0-9_-]{0,20}",
            host_for(t),
            prop::option::of(1u16..=65535),
            prop::option::of(any::<String>()),
            credential(),
            credential(),
            prop::option::of(prop::collection::btree_map(
                any::<String>(),
                json_value(),
                0..5,
            )),
        )
            .prop_map(move |(id, host, port, schema, login, password, extra)| {
                let uses = |f: Field| t.field_use(f) != FieldUse::Unused;
                let port = match t {
                    ConnType::Generic => Some(port.unwrap_or(1)),
                    ConnType::S3 if host.is_none() => None,
                    _ => port.filter(|_| uses(Field::Port)),
                };
                let extra = extra.map(|m| Value::Object(m.into_iter().collect()).to_string());
                Connection {
                    conn_id: ConnId::new(id).unwrap(),
                    conn_type: t,
                    host,
                    port,
                    schema: schema.filter(|s| uses(Field::Schema) && !s.contains('\0')),
                    login: login.filter(|_| uses(Field::Login)),
                    password: password.filter(|_| uses(Field::Password)).map(Secret::from),
                    extra: extra.map(Secret::from),
                    description: None,
                }
                .validated()
                .expect("the strategy makes valid connections")
            })
    })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn parse_build_round_trip(c in valid_connection()) {
        let uri = c.to_uri();
        let back = Connection::from_uri(c.conn_id.clone(), uri.expose());
        prop_assert_eq!(back.as_ref(), Ok(&c), "URI (masked): {}", c.to_masked_uri());
    }

    #[test]
    fn garbage_never_panics(s in any::<String>()) {
        let _ = Connection::from_uri(id(), &s);
    }

    #[test]
    fn near_uris_never_panic(s in "(postgres|http|https|sqlite|s3|s3\\+http|generic)://[a-z@:/\\[\\]%0-9?&=#.é]{0,30}") {
        let _ = Connection::from_uri(id(), &s);
    }

    #[test]
    fn errors_never_contain_the_password(
        prefix in "(postgres|mysql|sftp|ftp|http|)(://|:/|)",
        tail in "(@[a-z ]{0,5}|:[0-9x]{0,6}|/db|\\?a=1&a=2|#f|\\[::1|%FF|)",
    ) {
        let password = "Pw-ZEBRA-4471";
        let uri = format!("{prefix}u:{password}@{tail}");
        if let Err(e) = Connection::from_uri(id(), &uri) {
            prop_assert!(!e.to_string().contains("ZEBRA"), "{}", e);
            prop_assert!(!format!("{e:?}").contains("ZEBRA"), "{:?}", e);
        }
    }
}

/// Every example URI in docs/uri.md reads and writes back to itself, so the doc stays true.
#[test]
fn docs_examples_round_trip() {
    let doc = include_str!("../../../../docs/uri.md");
    // Without the section on other clients' strings (SQLAlchemy's `postgresql+psycopg://`,
    // JDBC, libpq): those are tested with the real clients, not broked's parser.
    let (before, dialects) = doc
        .split_once("\n## Client dialects")
        .expect("docs/uri.md has its Client dialects section");
    let after = &dialects[dialects.find("\n## ").expect("a section after it")..];
    let doc = format!("{before}{after}");
    let mut checked = 0;
    for example in doc.split('`').skip(1).step_by(2) {
        let is_uri = example.split_once("://").is_some_and(|(s, _)| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'+' || b.is_ascii_digit())
        });
        // The general forms use placeholders in capitals (HOST, PORT, …).
        if !is_uri || example.ends_with("://") || example.contains("HOST") || example.contains('…')
        {
            continue;
        }
        let c = Connection::from_uri(id(), example)
            .unwrap_or_else(|e| panic!("docs/uri.md example {example} does not parse: {e}"));
        assert_eq!(c.to_uri().expose(), example, "docs/uri.md example");
        checked += 1;
    }
    assert!(
        checked >= 15,
        "only {checked} examples found in docs/uri.md"
    );
}

#[test]
fn a_second_scheme_or_a_stray_at_is_refused_and_never_stored() {
    let id = || ConnId::new("c").unwrap();
    for uri in [
        "postgres://protocol://user:pw-SECRET@host:123",
        "http://https://x",
        "mysql://u:p@h/db?x=1://",
    ] {
        let r = Connection::from_uri(id(), uri);
        if uri.ends_with("1://") {
            // In the query: a value, not a scheme.
            assert!(r.is_ok(), "{uri}");
        } else {
            assert_eq!(r, Err(UriError::NestedScheme), "{uri}");
        }
    }
    // The password's "/" ends the authority early: the rest would land in schema.
    let r = Connection::from_uri(id(), "postgres://user:123/x-SECRET@db/app");
    assert_eq!(r, Err(UriError::StrayAt));
    assert!(!UriError::StrayAt.to_string().contains("SECRET"));
}

#[test]
fn the_builder_never_writes_a_key_that_names_the_target() {
    // A row stored before the rule: built by hand, not validated.
    let c = Connection {
        conn_id: ConnId::new("c").unwrap(),
        conn_type: ConnType::Postgres,
        host: Some("127.0.0.1".into()),
        port: Some(5432),
        schema: Some("db".into()),
        login: Some("u".into()),
        password: Some("pw".into()),
        extra: Some(
            r#"{"host":"evil.example","hostaddr":"10.1.1.1","port":6543,"sslmode":"require"}"#
                .into(),
        ),
        description: None,
    };
    assert_eq!(
        c.to_uri().expose(),
        "postgres://u:pw@127.0.0.1:5432/db?sslmode=require"
    );
}
