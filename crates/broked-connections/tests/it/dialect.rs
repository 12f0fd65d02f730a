//! `Connections::resolve_as` against the real clients (issue 18): psql reads the libpq form,
//! SQLAlchemy (with psycopg and PyMySQL, from the test venv of `scripts/services/python.sh`)
//! connects with the SQLAlchemy form to the test PostgreSQL and MariaDB, as users made here
//! with a password full of what each syntax must escape. And SQLAlchemy's own URL parser reads
//! random connections' URLs back to exactly the stored login, password, host, port and
//! database. JDBC has no client here (its drivers come from Maven Central): its URL is checked
//! by a parser of pgjdbc's rules in broked-core's unit tests.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use broked_connections::{ConnectionInput, Dialect, ErrorKind, Secret};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use super::Db;

/// Quotes, backslashes, spaces, `@ : / ? # % & = +`, a `$`, non-ASCII.
const HOSTILE: &str = "Dlct-Pw 'q\" \\b@:/?#%&=+$é€😀-71";
/// The same without non-ASCII: PyMySQL sends a password as Latin-1 (`str.encode("latin1")`),
/// so a password outside ASCII cannot log in through it at all (docs/uri.md).
const HOSTILE_ASCII: &str = "Dlct-Pw 'q\" \\b@:/?#%&=+$-72";

fn input(t: &str, id: &str, svc: &broked_testenv::Service, login: &str) -> ConnectionInput {
    ConnectionInput {
        conn_id: Some(id.into()),
        conn_type: Some(t.into()),
        host: Some(svc.get("HOST").into()),
        port: Some(svc.port().into()),
        login: Some(login.into()),
        password: Some(HOSTILE.into()),
        ..ConnectionInput::default()
    }
}

/// Runs `python -c script` with `stdin`; its stdout, or a panic with its stderr (which never
/// holds the password: the scripts print only what they are asked to, and the error type).
fn python(py: &Path, script: &str, stdin: &str) -> String {
    let mut child = Command::new(py)
        .args(["-c", script])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "python failed: {stderr}");
    stdout
}

/// Connects with the URL on stdin and prints who the server says we are. Errors print only
/// their type (a driver's message may quote the URL).
const CONNECT: &str = r#"
import sys
from sqlalchemy import create_engine, text
url = sys.stdin.read()
try:
    engine = create_engine(url)
    with engine.connect() as c:
        print(c.execute(text("select current_user")).scalar())
except Exception as e:
    sys.exit("connect failed: " + type(e).__name__)
"#;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A role of the test's own in the shared PostgreSQL, with the hostile password (a member of
/// broked_rotation, which pg_hba.conf checks by password: scripts/services/postgres.sh).
struct PgRole {
    admin: String,
    name: String,
}

impl PgRole {
    fn create(pg: &broked_testenv::Service, name: &str) -> PgRole {
        let admin = format!(
            "postgres://{}:{}@{}:{}/{}",
            pg.get("USER"),
            urlencode(pg.get("PASSWORD")),
            pg.get("HOST"),
            pg.port(),
            pg.get("DB")
        );
        let role = PgRole {
            admin,
            name: name.to_owned(),
        };
        role.sql(&format!("DROP ROLE IF EXISTS {name}"));
        role.sql(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{}' IN ROLE broked_rotation",
            HOSTILE.replace('\'', "''")
        ));
        role
    }

    fn sql(&self, statement: &str) {
        use sqlx::Connection;
        rt().block_on(async {
            let mut c = sqlx::PgConnection::connect(&self.admin).await.unwrap();
            sqlx::raw_sql(statement).execute(&mut c).await.unwrap();
        });
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        self.sql(&format!("DROP ROLE IF EXISTS {}", self.name));
    }
}

/// A user of the test's own in the shared MariaDB, with the hostile password.
struct MyUser {
    admin: String,
    name: String,
}

impl MyUser {
    fn create(my: &broked_testenv::Service, name: &str) -> MyUser {
        let admin = format!(
            "mysql://{}:{}@{}:{}/{}",
            my.get("USER"),
            urlencode(my.get("PASSWORD")),
            my.get("HOST"),
            my.port(),
            my.get("DB")
        );
        let user = MyUser {
            admin,
            name: name.to_owned(),
        };
        user.sql(&format!("DROP USER IF EXISTS '{name}'@'127.0.0.1'"));
        user.sql(&format!(
            "CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{}'",
            HOSTILE_ASCII.replace('\\', "\\\\").replace('\'', "\\'")
        ));
        user
    }

    fn sql(&self, statement: &str) {
        use sqlx::Connection;
        rt().block_on(async {
            let mut c = sqlx::MySqlConnection::connect(&self.admin).await.unwrap();
            sqlx::raw_sql(statement).execute(&mut c).await.unwrap();
        });
    }
}

impl Drop for MyUser {
    fn drop(&mut self) {
        self.sql(&format!("DROP USER IF EXISTS '{}'@'127.0.0.1'", self.name));
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[test]
fn psql_reads_the_libpq_form() {
    let Some(pg) = broked_testenv::postgres() else {
        return;
    };
    let name = format!("broked_dialect_psql_{}", std::process::id());
    let _role = PgRole::create(&pg, &name);
    let db = Db::new();
    let c = db.open();
    let mut conn = input("postgres", "pg", &pg, &name);
    conn.schema = Some(pg.get("DB").into());
    conn.extra = Some(r#"{"application_name":"broked dialect","ssl_mode":"prefer"}"#.into());
    c.create(conn).unwrap();
    let conninfo = c.resolve_as("pg", Dialect::Libpq).unwrap();
    assert!(conninfo.expose().contains("sslmode='prefer'"));
    let out = Command::new("psql")
        .arg(conninfo.expose())
        .args(["-X", "-A", "-t", "-c"])
        .arg("select current_user || ' ' || current_setting('application_name')")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .expect("psql runs (postgresql-client)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "psql failed: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{name} broked dialect")
    );
}

#[test]
fn sqlalchemy_connects_with_its_form() {
    let (Some(pg), Some(my)) = (broked_testenv::postgres(), broked_testenv::mysql()) else {
        return;
    };
    let Some(py) = broked_testenv::python() else {
        return;
    };
    let db = Db::new();
    let c = db.open();

    let name = format!("broked_dialect_sa_{}", std::process::id());
    let _role = PgRole::create(&pg, &name);
    let mut conn = input("postgres", "pg", &pg, &name);
    conn.schema = Some(pg.get("DB").into());
    conn.extra = Some(r#"{"sslmode":"prefer","statement-cache-capacity":5}"#.into());
    c.create(conn).unwrap();
    let url = c.resolve_as("pg", Dialect::SqlAlchemy).unwrap();
    assert!(url.expose().starts_with("postgresql+psycopg://"));
    assert_eq!(python(&py, CONNECT, url.expose()).trim(), name);

    let _user = MyUser::create(&my, &name);
    let mut conn = input("mysql", "my", &my, &name);
    conn.password = Some(HOSTILE_ASCII.into());
    c.create(conn).unwrap();
    let url = c.resolve_as("my", Dialect::SqlAlchemy).unwrap();
    assert!(url.expose().starts_with("mysql+pymysql://"));
    // MariaDB's current_user is user@host.
    assert_eq!(
        python(&py, CONNECT, url.expose()).trim(),
        format!("{name}@127.0.0.1")
    );
}

/// `resolve_as` follows `resolve`: the environment first, then the store through the cache;
/// an unsupported pair is `Invalid`, naming the type and the dialects it has.
#[test]
fn resolve_as_follows_resolve() {
    let db = Db::new();
    let c = db.open();
    let mut conn = ConnectionInput {
        conn_id: Some("api".into()),
        conn_type: Some("http".into()),
        host: Some("api.example.com".into()),
        password: Some("Api-Dialect-Pw-3".into()),
        ..ConnectionInput::default()
    };
    c.create(conn.clone()).unwrap();
    let e = c.resolve_as("api", Dialect::Jdbc).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(
        e.to_string(),
        "a http connection has no jdbc form; http supports: uri"
    );
    assert!(!format!("{e:?}").contains("Api-Dialect-Pw-3"));
    assert_eq!(
        c.resolve_as("api", Dialect::Uri).unwrap(),
        c.resolve("api").unwrap().uri
    );
    assert_eq!(
        c.resolve_as("nope", Dialect::Libpq).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // A change is seen at once, as with resolve.
    conn.conn_id = Some("pg".into());
    conn.conn_type = Some("postgres".into());
    conn.host = Some("db1.example.com".into());
    c.create(conn).unwrap();
    let before = c.resolve_as("pg", Dialect::Libpq).unwrap();
    assert!(before.expose().starts_with("host='db1.example.com'"));
    let other = db.open();
    other
        .update(
            "pg",
            broked_connections::ConnectionUpdate {
                host: Some(Some("db2.example.com".into())),
                password: broked_connections::SecretUpdate::Set(Secret::from("New-Pw-3")),
                ..Default::default()
            },
            broked_connections::UpdateMode::Merge,
        )
        .unwrap();
    let after = c.resolve_as("pg", Dialect::Libpq).unwrap();
    assert!(
        after.expose().starts_with("host='db2.example.com'"),
        "stale after an update by another handle"
    );
}

/// For random logins, passwords, hosts, ports and databases, SQLAlchemy's `make_url` reads
/// the SQLAlchemy form back to exactly the stored fields.
#[test]
fn sqlalchemy_make_url_reads_back_the_stored_fields() {
    let Some(py) = broked_testenv::python() else {
        return;
    };
    let text = || {
        prop_oneof![
            "\\PC{1,16}",
            "[@:/#?&=%+ '\\\\\"é€😀]{1,12}",
            "[a-z]{1,4}[@:/#?&=%+ '\\\\][a-zé]{0,4}",
        ]
    };
    let host = prop_oneof![
        "[a-zA-Z0-9][a-zA-Z0-9._-]{0,20}",
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
    ];
    let strategy = (
        prop::sample::select(vec!["postgres", "mysql"]),
        host,
        prop::option::of(1u16..=65535),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(text()),
    );
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let mut runner = TestRunner::new(Config::default());
    let mut connections = Vec::new();
    for _ in 0..cases {
        let (t, host, port, schema, login, password) =
            strategy.new_tree(&mut runner).unwrap().current();
        let c = ConnectionInput {
            conn_id: Some("c".into()),
            conn_type: Some(t.into()),
            host: Some(host),
            port: port.map(i64::from),
            schema: schema.filter(|s| !s.contains('\0')),
            login,
            password: password.map(Secret::from),
            ..ConnectionInput::default()
        };
        connections.push(c.validate().expect("valid"));
    }
    let urls: Vec<String> = connections
        .iter()
        .map(|c| {
            c.to_dialect(Dialect::SqlAlchemy)
                .unwrap()
                .expose()
                .to_owned()
        })
        .collect();
    let script = r#"
import json, sys
from sqlalchemy.engine import make_url
for line in sys.stdin:
    u = make_url(json.loads(line))
    print(json.dumps([u.username, u.password, u.host, u.port, u.database]))
"#;
    let stdin: String = urls
        .iter()
        .map(|u| format!("{}\n", Value::from(u.as_str())))
        .collect();
    let out = python(&py, script, &stdin);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), connections.len());
    for (c, line) in connections.iter().zip(lines) {
        let got: Value = serde_json::from_str(line).unwrap();
        // Without a login, a password still needs the `:`: SQLAlchemy reads the login as "".
        let login = c
            .login
            .clone()
            .or_else(|| c.password.as_ref().map(|_| String::new()));
        let want = json!([
            login,
            c.password.as_ref().map(|p| p.expose()),
            c.host,
            c.port,
            c.schema
        ]);
        // Random test data, not a secret: shown to explain a failure.
        assert_eq!(got, want, "make_url read back other fields");
    }
}
