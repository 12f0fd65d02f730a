//! The connection string of a connection in the form a client expects: [`Dialect`].
//!
//! The engine and users hand the resolved connection to clients that do not read broked's own
//! URI (`docs/uri.md`): SQLAlchemy refuses `postgres://` and needs `mysql+pymysql://`, JDBC
//! drivers want `jdbc:…` with the credentials as properties, libpq tools take a keyword/value
//! string. One builder per dialect, each from the validated [`Connection`]; the forms and the
//! type × dialect table are in `docs/uri.md` ("Client dialects").
//!
//! The rules every builder keeps:
//! - the target is exactly the stored one: an extra key that names a target is never written
//!   (as in the URI), and `ssh_tunnel` is left out (the direct address, as `to_uri`);
//! - every extra key that **secures** the target (`target.rs`) is carried over in the dialect's
//!   own syntax, or the call fails naming the key: a security setting is never dropped;
//! - errors name the type, the dialect and table keys only — never a value or the input's text.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::{ConnType, Connection, ExtraKeyRole, Secret};

/// Everything but RFC 3986's unreserved characters (as in `uri.rs`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// The same, but a path keeps its slashes.
const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// A client's form of a connection string. The names are the CLI's `--uri-format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// broked's own URI (`docs/uri.md`), what [`Connection::to_uri`] returns.
    Uri,
    /// A SQLAlchemy URL: `postgresql+psycopg://`, `mysql+pymysql://`, `sqlite:///`.
    SqlAlchemy,
    /// A JDBC URL with the credentials as properties: `jdbc:postgresql://…?user=…&password=…`.
    Jdbc,
    /// A libpq keyword/value connection string: `host='…' port='…' dbname='…' …` (postgres).
    Libpq,
}

impl Dialect {
    pub const ALL: [Dialect; 4] = [
        Dialect::Uri,
        Dialect::SqlAlchemy,
        Dialect::Jdbc,
        Dialect::Libpq,
    ];

    /// The name the CLI and the docs use: `uri`, `sqlalchemy`, `jdbc`, `libpq`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Uri => "uri",
            Dialect::SqlAlchemy => "sqlalchemy",
            Dialect::Jdbc => "jdbc",
            Dialect::Libpq => "libpq",
        }
    }

    /// Whether a connection of type `t` has a form in this dialect.
    pub fn supports(self, t: ConnType) -> bool {
        match self {
            Dialect::Uri => true,
            Dialect::SqlAlchemy | Dialect::Jdbc => {
                matches!(t, ConnType::Postgres | ConnType::Mysql | ConnType::Sqlite)
            }
            Dialect::Libpq => t == ConnType::Postgres,
        }
    }

    /// The dialects a type has a form in, in [`Dialect::ALL`] order.
    pub fn supported_by(t: ConnType) -> Vec<Dialect> {
        Dialect::ALL.into_iter().filter(|d| d.supports(t)).collect()
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dialect name that is not one of `uri`, `sqlalchemy`, `jdbc`, `libpq`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown URI format; expected one of uri, sqlalchemy, jdbc, libpq")]
pub struct UnknownDialect;

impl FromStr for Dialect {
    type Err = UnknownDialect;

    fn from_str(s: &str) -> Result<Dialect, UnknownDialect> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownDialect)
    }
}

/// Why a connection has no form in a dialect. No variant carries a value or the input's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialectError {
    #[error(
        "a {conn_type} connection has no {dialect} form; {conn_type} supports: {}",
        supported(*conn_type)
    )]
    Unsupported {
        conn_type: ConnType,
        dialect: Dialect,
    },
    /// A securing extra key the dialect's client cannot be given: dropping it would weaken the
    /// connection, so there is no form. `key` is spelled as broked's table spells it.
    #[error(
        "extra key {key} of a {conn_type} connection has no {dialect} form ({hint}); \
         change the connection's extra, or use a dialect that supports it"
    )]
    ExtraKey {
        conn_type: ConnType,
        dialect: Dialect,
        key: &'static str,
        hint: &'static str,
    },
    /// Another field the dialect cannot express; `what` is fixed text naming the field.
    #[error("a {conn_type} connection has no {dialect} form here: {what}")]
    Field {
        conn_type: ConnType,
        dialect: Dialect,
        what: &'static str,
    },
}

fn supported(t: ConnType) -> String {
    Dialect::supported_by(t)
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Connection {
    /// The connection string in `dialect`, credentials included (so a [`Secret`]).
    ///
    /// [`Dialect::Uri`] is [`Connection::to_uri`]. A type the dialect has no form for, or an
    /// extra key that secures the target and that the dialect's client cannot be given, is a
    /// [`DialectError`] naming the type, the dialect and the key.
    pub fn to_dialect(&self, dialect: Dialect) -> Result<Secret, DialectError> {
        if !dialect.supports(self.conn_type) {
            return Err(DialectError::Unsupported {
                conn_type: self.conn_type,
                dialect,
            });
        }
        let b = Builder {
            c: self,
            dialect,
            extra: self.extra_map(),
        };
        let text = match dialect {
            Dialect::Uri => return Ok(self.to_uri()),
            Dialect::SqlAlchemy => b.sqlalchemy()?,
            Dialect::Jdbc => b.jdbc()?,
            Dialect::Libpq => b.libpq()?,
        };
        Ok(Secret::new(text))
    }

    fn extra_map(&self) -> Map<String, Value> {
        match self
            .extra
            .as_ref()
            .map(|e| serde_json::from_str::<Value>(e.expose()))
        {
            Some(Ok(Value::Object(map))) => map,
            _ => Map::new(),
        }
    }
}

struct Builder<'a> {
    c: &'a Connection,
    dialect: Dialect,
    extra: Map<String, Value>,
}

/// A key as the target table compares it: lower case, `-` as `_`.
fn normalize(key: &str) -> String {
    key.trim()
        .chars()
        .map(|c| match c {
            '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The text of an extra value in a client's parameter; `None` for JSON `null` (left out).
fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// libpq's keyword for a postgres securing key (normalized). Every one has one.
fn libpq_securing(key: &str) -> Option<&'static str> {
    Some(match key {
        "sslmode" | "ssl_mode" => "sslmode",
        "sslrootcert" | "ssl_root_cert" | "ssl_ca" => "sslrootcert",
        "sslcert" | "ssl_cert" => "sslcert",
        "sslkey" | "ssl_key" => "sslkey",
        "sslcrl" => "sslcrl",
        "sslcrldir" => "sslcrldir",
        "sslpassword" => "sslpassword",
        "sslsni" => "sslsni",
        "sslnegotiation" => "sslnegotiation",
        "sslcompression" => "sslcompression",
        "ssl_min_protocol_version" => "ssl_min_protocol_version",
        "ssl_max_protocol_version" => "ssl_max_protocol_version",
        "channel_binding" => "channel_binding",
        "require_auth" => "require_auth",
        "requirepeer" => "requirepeer",
        "gssencmode" => "gssencmode",
        "krbsrvname" => "krbsrvname",
        "gsslib" => "gsslib",
        "gssdelegation" => "gssdelegation",
        _ => return None,
    })
}

/// pgjdbc's property for a postgres securing key (normalized), where pgjdbc has one.
fn pgjdbc_securing(key: &str) -> Option<&'static str> {
    Some(match key {
        "sslmode" | "ssl_mode" => "sslmode",
        "sslrootcert" | "ssl_root_cert" | "ssl_ca" => "sslrootcert",
        "sslcert" | "ssl_cert" => "sslcert",
        "sslkey" | "ssl_key" => "sslkey",
        "sslpassword" => "sslpassword",
        "sslnegotiation" => "sslNegotiation",
        "channel_binding" => "channelBinding",
        "require_auth" => "requireAuth",
        "gssencmode" => "gssEncMode",
        "krbsrvname" => "kerberosServerName",
        "gsslib" => "gsslib",
        _ => return None,
    })
}

/// The options (extra keys that neither name nor secure the target) libpq reads, by the
/// normalized key; any other is left out of the libpq and SQLAlchemy (psycopg) forms.
fn libpq_option(key: &str) -> Option<&'static str> {
    Some(match key {
        "application_name" => "application_name",
        "fallback_application_name" => "fallback_application_name",
        "connect_timeout" => "connect_timeout",
        "client_encoding" => "client_encoding",
        "options" => "options",
        "keepalives" => "keepalives",
        "keepalives_idle" => "keepalives_idle",
        "keepalives_interval" => "keepalives_interval",
        "keepalives_count" => "keepalives_count",
        "tcp_user_timeout" => "tcp_user_timeout",
        "target_session_attrs" => "target_session_attrs",
        _ => return None,
    })
}

/// The options pgjdbc has under another name (the same meaning and value format).
fn pgjdbc_option(key: &str) -> Option<&'static str> {
    Some(match key {
        "application_name" => "ApplicationName",
        "connect_timeout" => "connectTimeout",
        "options" => "options",
        _ => return None,
    })
}

/// The options SQLAlchemy's PyMySQL dialect passes to `pymysql.connect` (typed by SQLAlchemy).
fn pymysql_option(key: &str) -> Option<&'static str> {
    Some(match key {
        "charset" => "charset",
        "connect_timeout" => "connect_timeout",
        "read_timeout" => "read_timeout",
        "write_timeout" => "write_timeout",
        _ => return None,
    })
}

/// The table's spelling of a securing key of type `t` (for messages: never the input's text).
fn table_key(t: ConnType, normalized: &str) -> &'static str {
    t.target_keys()
        .into_iter()
        .find(|(k, _)| *k == normalized)
        .map_or("(a securing key)", |(k, _)| k)
}

/// The MySQL TLS modes (sqlx's and the MySQL client's `ssl-mode`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum MysqlMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl MysqlMode {
    fn parse(value: &Value) -> Option<MysqlMode> {
        let s = value
            .as_str()?
            .trim()
            .to_ascii_uppercase()
            .replace('-', "_");
        Some(match s.as_str() {
            "DISABLED" => MysqlMode::Disabled,
            "PREFERRED" => MysqlMode::Preferred,
            "REQUIRED" => MysqlMode::Required,
            "VERIFY_CA" => MysqlMode::VerifyCa,
            "VERIFY_IDENTITY" => MysqlMode::VerifyIdentity,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            MysqlMode::Disabled => "DISABLED",
            MysqlMode::Preferred => "PREFERRED",
            MysqlMode::Required => "REQUIRED",
            MysqlMode::VerifyCa => "VERIFY_CA",
            MysqlMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }
}

const MYSQL_MODE_HINT: &str =
    "its value must be one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY";

/// Parameters by name, in name order.
type Params = BTreeMap<&'static str, String>;

impl Builder<'_> {
    fn t(&self) -> ConnType {
        self.c.conn_type
    }

    fn key_error(&self, normalized: &str, hint: &'static str) -> DialectError {
        DialectError::ExtraKey {
            conn_type: self.t(),
            dialect: self.dialect,
            key: table_key(self.t(), normalized),
            hint,
        }
    }

    fn field_error(&self, what: &'static str) -> DialectError {
        DialectError::Field {
            conn_type: self.t(),
            dialect: self.dialect,
            what,
        }
    }

    /// The extra as `(normalized key, value, role)`; keys that name a target, the tunnel and
    /// password rotation's settings are left out, as the URI builder leaves them out.
    fn extra_entries(&self) -> Vec<(String, &Value, Option<ExtraKeyRole>)> {
        self.extra
            .iter()
            .filter_map(|(k, v)| {
                let role = self.t().extra_key_role(k);
                if matches!(role, Some(ExtraKeyRole::Names { .. }))
                    || crate::is_tunnel_key(k)
                    || crate::is_rotation_key(k)
                {
                    return None;
                }
                Some((normalize(k), v, role))
            })
            .collect()
    }

    /// Adds a parameter, refusing two keys that would set it to different values.
    fn put(
        &self,
        params: &mut Params,
        name: &'static str,
        value: String,
    ) -> Result<(), DialectError> {
        match params.get(name) {
            Some(old) if *old != value => Err(self
                .field_error("two extra keys set the same client parameter to different values")),
            _ => {
                params.insert(name, value);
                Ok(())
            }
        }
    }

    /// The extra's parameters: a securing key under the name `securing` gives it (`None`: the
    /// caller writes it), or the call fails with its hint; another key under the name `option`
    /// gives it, or it is left out.
    fn params(
        &self,
        securing: impl Fn(&str) -> Result<Option<&'static str>, &'static str>,
        option: impl Fn(&str) -> Option<&'static str>,
    ) -> Result<Params, DialectError> {
        let mut params = Params::new();
        for (norm, value, role) in self.extra_entries() {
            let name = match role {
                Some(ExtraKeyRole::Secures) => {
                    match securing(&norm).map_err(|hint| self.key_error(&norm, hint))? {
                        Some(name) => name,
                        None => continue,
                    }
                }
                _ => match option(&norm) {
                    Some(name) => name,
                    None => continue,
                },
            };
            if let Some(text) = value_text(value) {
                self.put(&mut params, name, text)?;
            }
        }
        Ok(params)
    }

    /// A postgres connection's parameters for libpq (and psycopg, which hands them to libpq).
    fn libpq_params(&self) -> Result<Params, DialectError> {
        self.params(
            |norm| {
                libpq_securing(norm)
                    .map(Some)
                    .ok_or("libpq has no such keyword")
            },
            libpq_option,
        )
    }

    /// A mysql connection's TLS mode (`ssl_mode`/`sslmode`), and its other parameters with
    /// the securing keys under the names `securing` gives.
    fn mysql_params(
        &self,
        securing: impl Fn(&str) -> Result<&'static str, &'static str>,
        option: impl Fn(&str) -> Option<&'static str>,
    ) -> Result<(Option<MysqlMode>, Params), DialectError> {
        let mut mode = None;
        for (norm, value, _) in self.extra_entries() {
            if norm == "ssl_mode" || norm == "sslmode" {
                let m = MysqlMode::parse(value)
                    .ok_or_else(|| self.key_error(&norm, MYSQL_MODE_HINT))?;
                if mode.is_some_and(|old| old != m) {
                    return Err(
                        self.field_error("two extra keys set the TLS mode to different values")
                    );
                }
                mode = Some(m);
            }
        }
        let params = self.params(
            |norm| match norm {
                "ssl_mode" | "sslmode" => Ok(None),
                _ => securing(norm).map(Some),
            },
            option,
        )?;
        Ok((mode, params))
    }

    /// A plain host (not a socket path), IPv6 in brackets, for a URL authority.
    fn url_host(&self, host: &str) -> String {
        if host.parse::<Ipv6Addr>().is_ok() {
            format!("[{host}]")
        } else {
            enc(host)
        }
    }

    /// `LOGIN:PASSWORD@`, percent-encoded, or nothing without either.
    fn userinfo(&self) -> String {
        let mut s = String::new();
        if self.c.login.is_some() || self.c.password.is_some() {
            s.push_str(&enc(self.c.login.as_deref().unwrap_or("")));
            if let Some(p) = &self.c.password {
                s.push(':');
                s.push_str(&enc(p.expose()));
            }
            s.push('@');
        }
        s
    }

    /// sqlite's extra holds sqlx's options (`mode=ro`...): dropping one could turn a read-only
    /// connection into a writable one, so a sqlite connection with an extra has no form.
    fn sqlite_without_extra(&self) -> Result<(), DialectError> {
        if self.extra.is_empty() {
            Ok(())
        } else {
            Err(self.field_error(
                "its extra holds sqlx options (such as mode), which this client does not read; \
                 remove the extra, or use the uri form",
            ))
        }
    }

    // ---------------------------------------------------------------------------------------
    // SQLAlchemy

    fn sqlalchemy(&self) -> Result<String, DialectError> {
        let host = self.c.host.as_deref().unwrap_or("");
        let socket = host.starts_with('/');
        let (scheme, params) = match self.t() {
            ConnType::Sqlite => {
                self.sqlite_without_extra()?;
                // sqlite:/// then the path: four slashes for an absolute one. SQLAlchemy
                // percent-decodes it.
                return Ok(format!("sqlite:///{}", utf8_percent_encode(host, PATH)));
            }
            ConnType::Postgres => {
                let mut params = self.libpq_params()?;
                if socket {
                    // SQLAlchemy does not decode a host in the authority: a socket directory
                    // goes in libpq's host parameter (the stored host, not another target).
                    self.put(&mut params, "host", host.to_owned())?;
                }
                ("postgresql+psycopg", params)
            }
            ConnType::Mysql => {
                let mut params = self.pymysql_params()?;
                if socket {
                    self.put(&mut params, "unix_socket", host.to_owned())?;
                }
                ("mysql+pymysql", params)
            }
            _ => unreachable!("checked by Dialect::supports"),
        };
        let mut s = format!("{scheme}://{}", self.userinfo());
        if !socket {
            s.push_str(&self.url_host(host));
        }
        // A mysql socket has no port (PyMySQL and sqlx ignore it); a postgres socket directory
        // holds one socket per port.
        if let Some(port) = self
            .c
            .port
            .filter(|_| !(socket && self.t() == ConnType::Mysql))
        {
            s.push_str(&format!(":{port}"));
        }
        if let Some(db) = &self.c.schema {
            s.push('/');
            s.push_str(&enc(db));
        }
        push_query(&mut s, &params);
        Ok(s)
    }

    /// A mysql connection's parameters for SQLAlchemy's PyMySQL dialect. SQLAlchemy reads
    /// `ssl_ca`, `ssl_capath`, `ssl_cert`, `ssl_key`, `ssl_cipher` and `ssl_check_hostname`
    /// into PyMySQL's `ssl` dict, which makes TLS required; without one PyMySQL prefers TLS.
    /// With a CA PyMySQL verifies the certificate, and the host name unless
    /// `ssl_check_hostname` is false; without one it verifies nothing.
    fn pymysql_params(&self) -> Result<Params, DialectError> {
        let (mode, mut params) = self.mysql_params(
            |norm| match norm {
                "ssl_ca" | "sslca" => Ok("ssl_ca"),
                "ssl_capath" => Ok("ssl_capath"),
                "ssl_cert" | "sslcert" => Ok("ssl_cert"),
                "ssl_key" | "sslkey" => Ok("ssl_key"),
                "ssl_cipher" => Ok("ssl_cipher"),
                _ => Err(
                    "SQLAlchemy's PyMySQL URL reads only ssl_ca, ssl_capath, ssl_cert, \
                          ssl_key and ssl_cipher; set the TLS mode with ssl_mode",
                ),
            },
            pymysql_option,
        )?;
        let has_ca = params.contains_key("ssl_ca") || params.contains_key("ssl_capath");
        let needs_ca = "PyMySQL verifies a certificate only against ssl_ca or ssl_capath; add \
                        one to the extra";
        match mode {
            None | Some(MysqlMode::Preferred) => {}
            // PyMySQL tests the string for truth: only "true" is ever written.
            Some(MysqlMode::Disabled) => self.put(&mut params, "ssl_disabled", "true".into())?,
            Some(MysqlMode::Required) => {
                self.put(&mut params, "ssl_check_hostname", "false".into())?
            }
            Some(MysqlMode::VerifyCa) if has_ca => {
                self.put(&mut params, "ssl_check_hostname", "false".into())?
            }
            Some(MysqlMode::VerifyIdentity) if has_ca => {
                self.put(&mut params, "ssl_check_hostname", "true".into())?
            }
            Some(MysqlMode::VerifyCa | MysqlMode::VerifyIdentity) => {
                return Err(self.key_error("ssl_mode", needs_ca));
            }
        }
        Ok(params)
    }

    // ---------------------------------------------------------------------------------------
    // JDBC

    fn jdbc(&self) -> Result<String, DialectError> {
        let host = self.c.host.as_deref().unwrap_or("");
        if self.t() == ConnType::Sqlite {
            self.sqlite_without_extra()?;
            // sqlite-jdbc (xerial) takes the path as it is, up to a `?` (its own options).
            if host.contains('?') {
                return Err(self.field_error(
                    "the host (the file path) contains ?, where sqlite-jdbc's options begin",
                ));
            }
            return Ok(format!("jdbc:sqlite:{host}"));
        }
        if host.starts_with('/') {
            return Err(self.field_error(
                "the host is a Unix socket path, which JDBC drivers reach only through a socket \
                 factory of their own; use a TCP host",
            ));
        }
        let (scheme, mut params) = match self.t() {
            ConnType::Postgres => (
                "postgresql",
                self.params(
                    |norm| {
                        pgjdbc_securing(norm)
                            .map(Some)
                            .ok_or("pgjdbc has no such property")
                    },
                    pgjdbc_option,
                )?,
            ),
            ConnType::Mysql => ("mysql", self.connector_j_params()?),
            _ => unreachable!("checked by Dialect::supports"),
        };
        let mut s = format!("jdbc:{scheme}://{}", self.url_host(host));
        if let Some(port) = self.c.port {
            s.push_str(&format!(":{port}"));
        }
        // pgjdbc needs the `/` even without a database, and refuses a second `/`: the name is
        // percent-encoded whole (both drivers URL-decode it).
        s.push('/');
        if let Some(db) = &self.c.schema {
            s.push_str(&enc(db));
        }
        // The credentials are properties: JDBC drivers do not all read LOGIN:PASSWORD@.
        if let Some(login) = &self.c.login {
            params.insert("user", login.clone());
        }
        if let Some(password) = &self.c.password {
            params.insert("password", password.expose().to_owned());
        }
        push_query(&mut s, &params);
        Ok(s)
    }

    /// MySQL Connector/J: `sslMode` and `tlsVersions`. Its trusted certificates and client
    /// keys come from Java key stores, not PEM files, so those keys have no form.
    fn connector_j_params(&self) -> Result<Params, DialectError> {
        let (mode, mut params) = self.mysql_params(
            |norm| match norm {
                "tls_version" => Ok("tlsVersions"),
                _ => Err("MySQL Connector/J reads certificates from Java key stores \
                          (trustCertificateKeyStoreUrl), not PEM files, and the TLS mode from \
                          sslMode; set the TLS mode with ssl_mode"),
            },
            |_| None,
        )?;
        if let Some(mode) = mode {
            params.insert("sslMode", mode.as_str().to_owned());
        }
        Ok(params)
    }

    // ---------------------------------------------------------------------------------------
    // libpq

    /// `host='…' port='…' dbname='…' user='…' password='…' KEY='…'`: every value quoted, `\`
    /// and `'` escaped with a backslash (libpq's rules), so any text survives.
    fn libpq(&self) -> Result<String, DialectError> {
        let mut parts: Vec<(&str, String)> = Vec::new();
        if let Some(host) = &self.c.host {
            parts.push(("host", host.clone()));
        }
        if let Some(port) = self.c.port {
            parts.push(("port", port.to_string()));
        }
        if let Some(db) = &self.c.schema {
            parts.push(("dbname", db.clone()));
        }
        if let Some(login) = &self.c.login {
            parts.push(("user", login.clone()));
        }
        if let Some(password) = &self.c.password {
            parts.push(("password", password.expose().to_owned()));
        }
        parts.extend(self.libpq_params()?);
        let mut s = String::new();
        for (key, value) in &parts {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(key);
            s.push_str("='");
            for ch in value.chars() {
                if ch == '\'' || ch == '\\' {
                    s.push('\\');
                }
                s.push(ch);
            }
            s.push('\'');
        }
        Ok(s)
    }
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// `?k=v&k=v`, keys and values percent-encoded (a space is `%20`, `+` is `%2B`: Python's
/// and Java's URL decoders both give the text back).
fn push_query(s: &mut String, params: &Params) {
    for (i, (k, v)) in params.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(&enc(k));
        s.push('=');
        s.push_str(&enc(v));
    }
}

#[cfg(test)]
mod tests;
