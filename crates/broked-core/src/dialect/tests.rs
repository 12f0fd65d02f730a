use std::collections::BTreeMap;

use expect_test::expect;
use proptest::prelude::*;

use super::*;
use crate::{ConnId, ConnectionInput};

fn conn(t: &str, f: impl FnOnce(&mut ConnectionInput)) -> Connection {
    let mut input = ConnectionInput {
        conn_id: Some("c".into()),
        conn_type: Some(t.into()),
        ..ConnectionInput::default()
    };
    f(&mut input);
    input.validate().expect("valid")
}

fn pg(extra: &str) -> Connection {
    conn("postgres", |c| {
        c.host = Some("db.example.com".into());
        c.port = Some(5433);
        c.schema = Some("mydb".into());
        c.login = Some("etl".into());
        c.password = Some("p@ss w'd\\".into());
        c.extra = (!extra.is_empty()).then(|| extra.into());
    })
}

fn my(extra: &str) -> Connection {
    conn("mysql", |c| {
        c.host = Some("127.0.0.1".into());
        c.port = Some(3306);
        c.schema = Some("shop".into());
        c.login = Some("root".into());
        c.password = Some("pw".into());
        c.extra = (!extra.is_empty()).then(|| extra.into());
    })
}

fn form(c: &Connection, d: Dialect) -> String {
    match c.to_dialect(d) {
        Ok(s) => s.expose().to_owned(),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn names_are_the_cli_values() {
    let names: Vec<&str> = Dialect::ALL.iter().map(|d| d.as_str()).collect();
    assert_eq!(names, ["uri", "sqlalchemy", "jdbc", "libpq"]);
    for d in Dialect::ALL {
        assert_eq!(d.as_str().parse::<Dialect>(), Ok(d));
        assert_eq!(d.to_string(), d.as_str());
    }
    assert_eq!("SQLAlchemy".parse::<Dialect>(), Ok(Dialect::SqlAlchemy));
    expect!["unknown URI format; expected one of uri, sqlalchemy, jdbc, libpq"]
        .assert_eq(&"odbc".parse::<Dialect>().unwrap_err().to_string());
}

/// One row per form of docs/uri.md's "Client dialects".
#[test]
fn every_form() {
    let socket = conn("postgres", |c| {
        c.host = Some("/var/run/postgresql".into());
        c.port = Some(5433);
        c.schema = Some("mydb".into());
        c.login = Some("etl".into());
    });
    let v6 = conn("postgres", |c| {
        c.host = Some("::1".into());
        c.schema = Some("a/b c".into());
    });
    let my_socket = conn("mysql", |c| {
        c.host = Some("/run/mysqld/mysqld.sock".into());
        c.port = Some(3307);
        c.login = Some("app".into());
        c.password = Some("pw".into());
        c.schema = Some("shop".into());
    });
    let lite = conn("sqlite", |c| c.host = Some("/var/lib/my app.db".into()));
    let lite_rel = conn("sqlite", |c| c.host = Some("data/app.db".into()));
    let mut out = String::new();
    for (name, c) in [
        (
            "pg",
            pg(r#"{"sslmode":"verify-full","ssl_ca":"/etc/ca.pem"}"#),
        ),
        ("pg socket", socket),
        ("pg v6", v6),
        (
            "mysql",
            my(r#"{"ssl_mode":"VERIFY_IDENTITY","ssl_ca":"/ca.pem"}"#),
        ),
        ("mysql socket", my_socket),
        ("sqlite", lite),
        ("sqlite relative", lite_rel),
    ] {
        out.push_str(&format!("{name}:\n"));
        for d in Dialect::ALL {
            out.push_str(&format!("  {d}: {}\n", form(&c, d)));
        }
    }
    expect![[r#"
        pg:
          uri: postgres://etl:p%40ss%20w%27d%5C@db.example.com:5433/mydb?ssl_ca=%2Fetc%2Fca.pem&sslmode=verify-full
          sqlalchemy: postgresql+psycopg://etl:p%40ss%20w%27d%5C@db.example.com:5433/mydb?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem
          jdbc: jdbc:postgresql://db.example.com:5433/mydb?password=p%40ss%20w%27d%5C&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&user=etl
          libpq: host='db.example.com' port='5433' dbname='mydb' user='etl' password='p@ss w\'d\\' sslmode='verify-full' sslrootcert='/etc/ca.pem'
        pg socket:
          uri: postgres://etl@%2Fvar%2Frun%2Fpostgresql:5433/mydb
          sqlalchemy: postgresql+psycopg://etl@:5433/mydb?host=%2Fvar%2Frun%2Fpostgresql
          jdbc: error: a postgres connection has no jdbc form here: the host is a Unix socket path, which JDBC drivers reach only through a socket factory of their own; use a TCP host
          libpq: host='/var/run/postgresql' port='5433' dbname='mydb' user='etl'
        pg v6:
          uri: postgres://[::1]/a/b%20c
          sqlalchemy: postgresql+psycopg://[::1]/a%2Fb%20c
          jdbc: jdbc:postgresql://[::1]/a%2Fb%20c
          libpq: host='::1' dbname='a/b c'
        mysql:
          uri: mysql://root:pw@127.0.0.1:3306/shop?ssl_ca=%2Fca.pem&ssl_mode=VERIFY_IDENTITY
          sqlalchemy: mysql+pymysql://root:pw@127.0.0.1:3306/shop?ssl_ca=%2Fca.pem&ssl_check_hostname=true
          jdbc: error: extra key ssl_ca of a mysql connection has no jdbc form (MySQL Connector/J reads certificates from Java key stores (trustCertificateKeyStoreUrl), not PEM files, and the TLS mode from sslMode; set the TLS mode with ssl_mode); change the connection's extra, or use a dialect that supports it
          libpq: error: a mysql connection has no libpq form; mysql supports: uri, sqlalchemy, jdbc
        mysql socket:
          uri: mysql://app:pw@%2Frun%2Fmysqld%2Fmysqld.sock:3307/shop
          sqlalchemy: mysql+pymysql://app:pw@/shop?unix_socket=%2Frun%2Fmysqld%2Fmysqld.sock
          jdbc: error: a mysql connection has no jdbc form here: the host is a Unix socket path, which JDBC drivers reach only through a socket factory of their own; use a TCP host
          libpq: error: a mysql connection has no libpq form; mysql supports: uri, sqlalchemy, jdbc
        sqlite:
          uri: sqlite:///var/lib/my%20app.db
          sqlalchemy: sqlite:////var/lib/my%20app.db
          jdbc: jdbc:sqlite:/var/lib/my app.db
          libpq: error: a sqlite connection has no libpq form; sqlite supports: uri, sqlalchemy, jdbc
        sqlite relative:
          uri: sqlite://data/app.db
          sqlalchemy: sqlite:///data/app.db
          jdbc: jdbc:sqlite:data/app.db
          libpq: error: a sqlite connection has no libpq form; sqlite supports: uri, sqlalchemy, jdbc
    "#]]
    .assert_eq(&out);
}

#[test]
fn other_types_have_only_the_uri() {
    for t in ["http", "sftp", "s3", "generic"] {
        let c = conn(t, |c| {
            c.host = Some("h.example".into());
            c.port = Some(1);
            c.password = Some("Unsupported-Pw-1".into());
        });
        assert!(c.to_dialect(Dialect::Uri).is_ok());
        for d in [Dialect::SqlAlchemy, Dialect::Jdbc, Dialect::Libpq] {
            let e = c.to_dialect(d).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("a {t} connection has no {d} form; {t} supports: uri"),
            );
        }
    }
}

/// Securing keys carry over in each client's spelling; other options only where the client has
/// them; `ssh_tunnel` never.
#[test]
fn securing_keys_in_each_dialect() {
    let c = pg(concat!(
        r#"{"SSL-Mode":"verify-ca","sslcert":"/c.pem","ssl_key":"/k.pem","channel_binding":"require","#,
        r#""gssencmode":"disable","application_name":"etl job","connect_timeout":5,"#,
        r#""statement-cache-capacity":10,"ssh_tunnel":"bastion"}"#
    ));
    expect![[r#"postgresql+psycopg://etl:p%40ss%20w%27d%5C@db.example.com:5433/mydb?application_name=etl%20job&channel_binding=require&connect_timeout=5&gssencmode=disable&sslcert=%2Fc.pem&sslkey=%2Fk.pem&sslmode=verify-ca"#]]
    .assert_eq(&form(&c, Dialect::SqlAlchemy));
    expect![[r#"jdbc:postgresql://db.example.com:5433/mydb?ApplicationName=etl%20job&channelBinding=require&connectTimeout=5&gssEncMode=disable&password=p%40ss%20w%27d%5C&sslcert=%2Fc.pem&sslkey=%2Fk.pem&sslmode=verify-ca&user=etl"#]]
    .assert_eq(&form(&c, Dialect::Jdbc));
    expect![[r#"host='db.example.com' port='5433' dbname='mydb' user='etl' password='p@ss w\'d\\' application_name='etl job' channel_binding='require' connect_timeout='5' gssencmode='disable' sslcert='/c.pem' sslkey='/k.pem' sslmode='verify-ca'"#]]
    .assert_eq(&form(&c, Dialect::Libpq));

    // A securing key the client has no form for fails, naming the key as the table spells it.
    expect!["error: extra key sslcrl of a postgres connection has no jdbc form (pgjdbc has no such property); change the connection's extra, or use a dialect that supports it"]
        .assert_eq(&form(&pg(r#"{"SSLCRL":"/crl.pem"}"#), Dialect::Jdbc));
    // Two spellings of one key must agree.
    expect!["error: a postgres connection has no libpq form here: two extra keys set the same client parameter to different values"]
        .assert_eq(&form(&pg(r#"{"ssl_mode":"disable","sslmode":"require"}"#), Dialect::Libpq));
    assert!(
        form(
            &pg(r#"{"ssl_mode":"require","sslmode":"require"}"#),
            Dialect::Libpq
        )
        .contains("sslmode='require'")
    );
}

#[test]
fn mysql_tls_modes() {
    let rows = [
        r#"{"ssl_mode":"DISABLED"}"#,
        r#"{"sslmode":"preferred"}"#,
        r#"{"ssl-mode":"REQUIRED"}"#,
        r#"{"ssl_mode":"VERIFY_CA","sslca":"/ca.pem","ssl_cert":"/c.pem","ssl_key":"/k.pem"}"#,
        r#"{"ssl_mode":"VERIFY_CA"}"#,
        r#"{"ssl_mode":"VERIFY_IDENTITY","ssl_capath":"/etc/ssl/certs"}"#,
        r#"{"ssl_mode":"sometimes"}"#,
        r#"{"ssl_mode":"REQUIRED","sslmode":"DISABLED"}"#,
        r#"{"ssl_verify_identity":true}"#,
        r#"{"tls_version":"TLSv1.3","ssl_mode":"REQUIRED","charset":"utf8mb4","socket_timeout":3}"#,
    ];
    let mut out = String::new();
    for extra in rows {
        let c = my(extra);
        out.push_str(&format!("{extra}\n"));
        for d in [Dialect::SqlAlchemy, Dialect::Jdbc] {
            out.push_str(&format!("  {d}: {}\n", form(&c, d)));
        }
    }
    expect![[r#"
        {"ssl_mode":"DISABLED"}
          sqlalchemy: mysql+pymysql://root:pw@127.0.0.1:3306/shop?ssl_disabled=true
          jdbc: jdbc:mysql://127.0.0.1:3306/shop?password=pw&sslMode=DISABLED&user=root
        {"sslmode":"preferred"}
          sqlalchemy: mysql+pymysql://root:pw@127.0.0.1:3306/shop
          jdbc: jdbc:mysql://127.0.0.1:3306/shop?password=pw&sslMode=PREFERRED&user=root
        {"ssl-mode":"REQUIRED"}
          sqlalchemy: mysql+pymysql://root:pw@127.0.0.1:3306/shop?ssl_check_hostname=false
          jdbc: jdbc:mysql://127.0.0.1:3306/shop?password=pw&sslMode=REQUIRED&user=root
        {"ssl_mode":"VERIFY_CA","sslca":"/ca.pem","ssl_cert":"/c.pem","ssl_key":"/k.pem"}
          sqlalchemy: mysql+pymysql://root:pw@127.0.0.1:3306/shop?ssl_ca=%2Fca.pem&ssl_cert=%2Fc.pem&ssl_check_hostname=false&ssl_key=%2Fk.pem
          jdbc: error: extra key ssl_cert of a mysql connection has no jdbc form (MySQL Connector/J reads certificates from Java key stores (trustCertificateKeyStoreUrl), not PEM files, and the TLS mode from sslMode; set the TLS mode with ssl_mode); change the connection's extra, or use a dialect that supports it
        {"ssl_mode":"VERIFY_CA"}
          sqlalchemy: error: extra key ssl_mode of a mysql connection has no sqlalchemy form (PyMySQL verifies a certificate only against ssl_ca or ssl_capath; add one to the extra); change the connection's extra, or use a dialect that supports it
          jdbc: jdbc:mysql://127.0.0.1:3306/shop?password=pw&sslMode=VERIFY_CA&user=root
        {"ssl_mode":"VERIFY_IDENTITY","ssl_capath":"/etc/ssl/certs"}
          sqlalchemy: mysql+pymysql://root:pw@127.0.0.1:3306/shop?ssl_capath=%2Fetc%2Fssl%2Fcerts&ssl_check_hostname=true
          jdbc: error: extra key ssl_capath of a mysql connection has no jdbc form (MySQL Connector/J reads certificates from Java key stores (trustCertificateKeyStoreUrl), not PEM files, and the TLS mode from sslMode; set the TLS mode with ssl_mode); change the connection's extra, or use a dialect that supports it
        {"ssl_mode":"sometimes"}
          sqlalchemy: error: extra key ssl_mode of a mysql connection has no sqlalchemy form (its value must be one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY); change the connection's extra, or use a dialect that supports it
          jdbc: error: extra key ssl_mode of a mysql connection has no jdbc form (its value must be one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY); change the connection's extra, or use a dialect that supports it
        {"ssl_mode":"REQUIRED","sslmode":"DISABLED"}
          sqlalchemy: error: a mysql connection has no sqlalchemy form here: two extra keys set the TLS mode to different values
          jdbc: error: a mysql connection has no jdbc form here: two extra keys set the TLS mode to different values
        {"ssl_verify_identity":true}
          sqlalchemy: error: extra key ssl_verify_identity of a mysql connection has no sqlalchemy form (SQLAlchemy's PyMySQL URL reads only ssl_ca, ssl_capath, ssl_cert, ssl_key and ssl_cipher; set the TLS mode with ssl_mode); change the connection's extra, or use a dialect that supports it
          jdbc: error: extra key ssl_verify_identity of a mysql connection has no jdbc form (MySQL Connector/J reads certificates from Java key stores (trustCertificateKeyStoreUrl), not PEM files, and the TLS mode from sslMode; set the TLS mode with ssl_mode); change the connection's extra, or use a dialect that supports it
        {"tls_version":"TLSv1.3","ssl_mode":"REQUIRED","charset":"utf8mb4","socket_timeout":3}
          sqlalchemy: error: extra key tls_version of a mysql connection has no sqlalchemy form (SQLAlchemy's PyMySQL URL reads only ssl_ca, ssl_capath, ssl_cert, ssl_key and ssl_cipher; set the TLS mode with ssl_mode); change the connection's extra, or use a dialect that supports it
          jdbc: jdbc:mysql://127.0.0.1:3306/shop?password=pw&sslMode=REQUIRED&tlsVersions=TLSv1.3&user=root
    "#]]
    .assert_eq(&out);
}

#[test]
fn sqlite_with_extra_or_a_question_mark() {
    let c = conn("sqlite", |c| {
        c.host = Some("/tmp/a.db".into());
        c.extra = Some(r#"{"mode":"ro"}"#.into());
    });
    expect!["error: a sqlite connection has no sqlalchemy form here: its extra holds sqlx options (such as mode), which this client does not read; remove the extra, or use the uri form"]
        .assert_eq(&form(&c, Dialect::SqlAlchemy));
    let q = conn("sqlite", |c| c.host = Some("/tmp/a?.db".into()));
    expect!["error: a sqlite connection has no jdbc form here: the host (the file path) contains ?, where sqlite-jdbc's options begin"]
        .assert_eq(&form(&q, Dialect::Jdbc));
    assert_eq!(form(&q, Dialect::SqlAlchemy), "sqlite:////tmp/a%3F.db");
}

/// A row stored before the naming rule (built by hand, not validated) still cannot steer a
/// secret: no dialect writes a key that names a target.
#[test]
fn no_dialect_writes_a_key_that_names_the_target() {
    for t in [ConnType::Postgres, ConnType::Mysql] {
        let c = Connection {
            conn_id: ConnId::new("old").unwrap(),
            conn_type: t,
            host: Some("db.example.com".into()),
            port: None,
            schema: None,
            login: Some("u".into()),
            password: Some("Old-Row-Pw".into()),
            extra: Some(
                r#"{"dbname":"evil","host":"evil.example","hostaddr":"6.6.6.6","port":1,"user":"evil","service":"x","unix_socket":"/evil"}"#
                    .into(),
            ),
            description: None,
        };
        for d in Dialect::supported_by(t) {
            let s = form(&c, d);
            assert!(
                !s.contains("evil") && !s.contains("6.6.6.6"),
                "{t} {d}: {s}"
            );
        }
    }
}

/// Password rotation's settings (`docs/rotation.md`) are broked's, never a client's parameter:
/// no dialect writes them, in any spelling, and they never make a form fail.
#[test]
fn no_dialect_writes_a_rotation_key() {
    // rotation_roles holds the login (pg: etl, mysql: root) and another role.
    let extra = |login: &str| {
        format!(
            r#"{{"rotation_conn_id":"pg-admin-Rot1","Rotate-Every":"30d","rotation_account_host":"rot-host-7","rotation_roles":["{login}","etl_rot_b"],"rotation_allowed_roles":["etl_rot_c"],"options":"-c x=1"}}"#
        )
    };
    for (c, t) in [
        (pg(&extra("etl")), ConnType::Postgres),
        (my(&extra("root")), ConnType::Mysql),
    ] {
        for d in Dialect::supported_by(t) {
            let s = form(&c, d);
            assert!(!s.starts_with("error"), "{t} {d}: {s}");
            for needle in [
                "rotat",
                "Rotat",
                "30d",
                "pg-admin-Rot1",
                "rot-host-7",
                "etl_rot",
            ] {
                assert!(!s.contains(needle), "{t} {d}: {needle} in {s}");
            }
        }
    }
    // The filter itself, beside the allow-lists: a rotation key is never an extra entry.
    let c = pg(r#"{"rotate_every":"30d","application_name":"a"}"#);
    let b = Builder {
        c: &c,
        dialect: Dialect::Libpq,
        extra: c.extra_map(),
    };
    let keys: Vec<String> = b.extra_entries().into_iter().map(|(k, ..)| k).collect();
    assert_eq!(keys, ["application_name"]);
}

#[test]
fn errors_and_debug_never_show_a_secret() {
    let c = my(r#"{"ssl_mode":"Secret-Mode-Val-77","ssl_ca":"/x"}"#);
    let e = c.to_dialect(Dialect::SqlAlchemy).unwrap_err();
    assert!(!format!("{e} {e:?}").contains("Secret-Mode-Val-77"));
    let ok = pg("").to_dialect(Dialect::Libpq).unwrap();
    assert_eq!(format!("{ok:?} {ok}"), "******** ********");
}

// -------------------------------------------------------------------------------------------
// Parsers of the clients' rules, to read the forms back.

/// Java's `URLDecoder.decode(s, "UTF-8")`: `+` is a space, `%XX` bytes are UTF-8.
fn java_url_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => bytes.push(c),
        }
        i += 1;
    }
    String::from_utf8(bytes).ok()
}

/// What a JDBC URL tells the driver, read by pgjdbc's rules (`Driver.parseURL`): the part
/// before the first `?` is `jdbc:SUBPROTOCOL://HOST[:PORT]/[DATABASE]` with exactly one `/`
/// after the authority, the port after the last `:` that follows any `]`, the database
/// URL-decoded; the rest is `&`-separated `name=value` properties, names as they are, values
/// URL-decoded. MySQL Connector/J reads these URLs alike.
#[derive(Debug, PartialEq, Eq)]
struct Jdbc {
    subprotocol: String,
    host: String,
    port: Option<u16>,
    database: Option<String>,
    props: BTreeMap<String, String>,
}

fn parse_jdbc(url: &str) -> Option<Jdbc> {
    let (server, args) = url.split_once('?').unwrap_or((url, ""));
    let rest = server.strip_prefix("jdbc:")?;
    let (subprotocol, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("//")?;
    if rest.matches('/').count() != 1 {
        return None;
    }
    let (address, db) = rest.split_once('/')?;
    let database = if db.is_empty() {
        None
    } else {
        Some(java_url_decode(db)?)
    };
    let (host, port) = match address.rfind(':') {
        Some(i) if address.rfind(']').is_none_or(|j| j < i) => {
            (&address[..i], Some(address[i + 1..].parse().ok()?))
        }
        _ => (address, None),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let mut props = BTreeMap::new();
    for token in args.split('&').filter(|t| !t.is_empty()) {
        let (name, value) = token.split_once('=').unwrap_or((token, ""));
        props.insert(name.to_owned(), java_url_decode(value)?);
    }
    Some(Jdbc {
        subprotocol: subprotocol.to_owned(),
        host: host.to_owned(),
        port,
        database,
        props,
    })
}

/// A libpq keyword/value string read by libpq's rules (`conninfo_parse`): keywords end at
/// whitespace or `=`; a value is quoted with `'` (a backslash escapes the next character) or
/// runs to the next whitespace (a backslash escapes there too).
fn parse_conninfo(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next()? != '=' {
            return None;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        if out.insert(key, value).is_some() {
            return None;
        }
    }
}

#[test]
fn jdbc_golden_cases() {
    let cases = [
        (
            "jdbc:postgresql://db.example.com:5433/mydb?password=p%40ss%20w%27d%5C&user=etl",
            Some((
                "db.example.com",
                Some(5433),
                Some("mydb"),
                "etl",
                "p@ss w'd\\",
            )),
        ),
        // `+` is a space to URLDecoder: a literal plus must be %2B.
        (
            "jdbc:postgresql://h/d?user=a+b&password=%2B",
            Some(("h", None, Some("d"), "a b", "+")),
        ),
        (
            "jdbc:mysql://[::1]:3306/?user=%C3%A9&password=x%3D%26%3F",
            Some(("::1", Some(3306), None, "é", "x=&?")),
        ),
        // Two slashes after the authority: pgjdbc refuses the URL.
        ("jdbc:postgresql://h/a/b?user=u", None),
        // No slash after the authority: refused.
        ("jdbc:postgresql://h:5432?user=u", None),
    ];
    for (url, want) in cases {
        let got = parse_jdbc(url).map(|j| {
            (
                j.host.clone(),
                j.port,
                j.database.clone(),
                j.props.get("user").cloned().unwrap_or_default(),
                j.props.get("password").cloned().unwrap_or_default(),
            )
        });
        let want = want.map(|(h, p, d, u, pw)| {
            (
                h.to_owned(),
                p,
                d.map(str::to_owned),
                u.to_owned(),
                pw.to_owned(),
            )
        });
        assert_eq!(got, want, "{url}");
    }
}

#[test]
fn conninfo_golden_cases() {
    let parsed = parse_conninfo(r"host='a b' password='x\'y\\z' port=5432 user=me\ too").unwrap();
    assert_eq!(parsed["host"], "a b");
    assert_eq!(parsed["password"], r"x'y\z");
    assert_eq!(parsed["port"], "5432");
    assert_eq!(parsed["user"], "me too");
    assert_eq!(parse_conninfo("host='unterminated"), None);
}

/// Passwords, logins and databases from all of Unicode, with the characters each syntax cares
/// about mixed in.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{1,16}",
        "[@:/#?&=%+ '\\\\\"é€😀\t]{1,12}",
        "[a-z]{1,4}[@:/#?&=%+ '\\\\][a-zé]{0,4}",
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}",
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
    ]
}

fn db_conn(t: &'static str) -> impl Strategy<Value = Connection> {
    (
        host(),
        prop::option::of(1u16..=65535),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
    )
        .prop_map(move |(h, port, schema, login, password)| {
            conn(t, |c| {
                c.host = Some(h);
                c.port = port.map(i64::from);
                c.schema = schema.filter(|s| !s.contains('\0'));
                c.login = login;
                c.password = password.map(Secret::from);
            })
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// The libpq string, read back by libpq's rules, gives exactly the stored fields.
    #[test]
    fn libpq_round_trip(c in db_conn("postgres")) {
        let s = c.to_dialect(Dialect::Libpq).unwrap();
        let p = parse_conninfo(s.expose()).expect("parses");
        prop_assert_eq!(p.get("host"), c.host.as_ref());
        prop_assert_eq!(p.get("port").cloned(), c.port.map(|p| p.to_string()));
        prop_assert_eq!(p.get("dbname"), c.schema.as_ref());
        prop_assert_eq!(p.get("user"), c.login.as_ref());
        prop_assert_eq!(p.get("password").map(String::as_str), c.password.as_ref().map(|p| p.expose()));
    }

    /// The JDBC URL, read back by pgjdbc's rules, gives exactly the stored fields.
    #[test]
    fn jdbc_round_trip(c in prop_oneof![db_conn("postgres"), db_conn("mysql")]) {
        let s = c.to_dialect(Dialect::Jdbc).unwrap();
        let j = parse_jdbc(s.expose()).expect("parses");
        prop_assert_eq!(&j.subprotocol, if c.conn_type == ConnType::Postgres { "postgresql" } else { "mysql" });
        prop_assert_eq!(Some(&j.host), c.host.as_ref());
        prop_assert_eq!(j.port, c.port);
        prop_assert_eq!(j.database.as_ref(), c.schema.as_ref());
        prop_assert_eq!(j.props.get("user"), c.login.as_ref());
        prop_assert_eq!(j.props.get("password").map(String::as_str), c.password.as_ref().map(|p| p.expose()));
    }
}
