//! `Connection`, the input it is made from, and validation.

use std::fmt;

use crate::secret::MASK;
use crate::{ConnId, ConnType, Field, FieldUse, Secret};

/// A valid connection: what a pipeline needs to reach an external system.
///
/// Values come from [`ConnectionInput::validate`] or [`Connection::from_uri`], which check the
/// rules of SPEC §2 and bring the fields to their canonical form (see [`Connection::validated`]).
/// The fields are public for reading and for building by hand; a connection built by hand
/// should go through [`Connection::validated`] before it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub conn_id: ConnId,
    pub conn_type: ConnType,
    /// Host name, IP address, URL prefix (`https://` for http, `http://`/`https://` for s3),
    /// a socket path (postgres, mysql), or the database file path (sqlite).
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Database (postgres, mysql), bucket (s3), base path (sftp, http).
    pub schema: Option<String>,
    pub login: Option<String>,
    pub password: Option<Secret>,
    /// A JSON object, in compact form with its keys sorted; never `{}` (that is `None`).
    pub extra: Option<Secret>,
    pub description: Option<String>,
}

/// A connection as a user typed it: strings and numbers not yet checked.
///
/// Empty strings mean "not set". [`ConnectionInput::validate`] returns every problem at once.
#[derive(Clone, Debug, Default)]
pub struct ConnectionInput {
    pub conn_id: Option<String>,
    pub conn_type: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub schema: Option<String>,
    pub login: Option<String>,
    pub password: Option<Secret>,
    /// A JSON object as a string.
    pub extra: Option<Secret>,
    pub description: Option<String>,
}

/// One problem with one field. The message never contains a password or an extra value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

/// Every problem found in a connection, each naming its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    fn push(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push(FieldError {
            field,
            message: message.into(),
        });
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid connection: ")?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// `Some(s)` unless `s` is empty.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn non_empty_secret(s: Option<Secret>) -> Option<Secret> {
    s.filter(|s| !s.is_empty())
}

impl ConnectionInput {
    /// Checks every field and returns the canonical [`Connection`], or all problems at once.
    pub fn validate(self) -> Result<Connection, ValidationErrors> {
        let mut errors = ValidationErrors(Vec::new());

        let conn_id = match non_empty(self.conn_id) {
            None => {
                errors.push("conn_id", "conn_id is required");
                None
            }
            Some(id) => match ConnId::new(id) {
                Ok(id) => Some(id),
                Err(e) => {
                    errors.push("conn_id", e.to_string());
                    None
                }
            },
        };
        let conn_type = match non_empty(self.conn_type) {
            None => {
                errors.push("type", "type is required");
                None
            }
            Some(t) => match t.parse::<ConnType>() {
                Ok(t) => Some(t),
                Err(e) => {
                    errors.push("type", e.to_string());
                    None
                }
            },
        };
        let port = match self.port {
            None => None,
            Some(p) => match u16::try_from(p) {
                Ok(p) if p != 0 => Some(p),
                _ => {
                    errors.push("port", PORT_RULE);
                    None
                }
            },
        };

        let connection = Connection {
            // Placeholders when id or type are invalid: the other checks still run, and the
            // errors already say what is wrong with these two.
            conn_id: conn_id
                .clone()
                .unwrap_or_else(|| ConnId::new("x").expect("valid")),
            conn_type: conn_type.unwrap_or(ConnType::Generic),
            host: non_empty(self.host.map(|h| h.trim().to_owned())),
            port,
            schema: non_empty(self.schema),
            login: non_empty(self.login),
            password: non_empty_secret(self.password),
            extra: non_empty_secret(self.extra),
            description: non_empty(self.description),
        };
        let connection = if conn_type.is_some() {
            connection.check(&mut errors, self.port.is_some())
        } else {
            let mut c = connection;
            c.extra = canonical_extra(c.extra.take(), &mut errors);
            c
        };
        if errors.0.is_empty() {
            Ok(connection)
        } else {
            Err(errors)
        }
    }
}

const PORT_RULE: &str = "port must be an integer from 1 to 65535";

impl Connection {
    /// Checks the rules of the connection's type and brings the fields to canonical form:
    /// empty strings become `None`, the extra object is compacted with sorted keys (`{}`
    /// becomes `None`), an `http://` prefix on an http host is dropped (it is the default),
    /// IPv6 literals lose their brackets (`[::1]` → `::1`; kept after a scheme).
    pub fn validated(self) -> Result<Connection, ValidationErrors> {
        let mut errors = ValidationErrors(Vec::new());
        let mut c = self;
        c.host = non_empty(c.host);
        c.schema = non_empty(c.schema);
        c.login = non_empty(c.login);
        c.password = non_empty_secret(c.password);
        c.extra = non_empty_secret(c.extra);
        c.description = non_empty(c.description);
        let had_port = c.port.is_some();
        if c.port == Some(0) {
            errors.push("port", PORT_RULE);
            c.port = None;
        }
        let c = c.check(&mut errors, had_port);
        if errors.0.is_empty() {
            Ok(c)
        } else {
            Err(errors)
        }
    }

    /// The port a client connects to: `port`, else the type's default (443 for an https host).
    pub fn effective_port(&self) -> Option<u16> {
        effective_port(self.conn_type, self.host.as_deref(), self.port)
    }

    /// Whether `self` and `other` send their secrets to the same place, secured alike: same
    /// type, host, effective port and login, and the same values of the extra keys that
    /// secure the target (TLS mode, trusted certificates, host key: see
    /// [`ConnType::extra_key_role`]). Compares the extra of both as given (decrypted).
    pub fn same_target(&self, other: &Connection) -> bool {
        self.same_endpoint(other)
            && crate::securing_extra(self.conn_type, self.extra.as_ref().map(Secret::expose))
                == crate::securing_extra(other.conn_type, other.extra.as_ref().map(Secret::expose))
    }

    /// Same type, host, effective port and login (the extra is not compared).
    pub fn same_endpoint(&self, other: &Connection) -> bool {
        self.conn_type == other.conn_type
            && self.host == other.host
            && self.effective_port() == other.effective_port()
            && self.login == other.login
    }
}

/// The port a client of type `t` connects to for `host` and `port`: `port`, else the type's
/// default (443 for an https host, 80 for an s3 `http://` endpoint).
pub fn effective_port(t: ConnType, host: Option<&str>, port: Option<u16>) -> Option<u16> {
    port.or_else(|| match t {
        ConnType::Http if host.is_some_and(is_https) => Some(443),
        ConnType::S3 if host.is_some_and(|h| h.starts_with("http://")) => Some(80),
        t => t.default_port(),
    })
}

/// What a sealed password or extra is bound to (part of its associated data): the type,
/// host, effective port and login of its connection, as a JSON array. A row whose target was
/// changed outside broked (in the database directly, or a tampered backup) no longer opens.
pub fn target_binding(
    t: ConnType,
    host: Option<&str>,
    port: Option<u16>,
    login: Option<&str>,
) -> String {
    serde_json::json!([t.as_str(), host, effective_port(t, host, port), login]).to_string()
}

impl Connection {
    /// [`target_binding`] of this connection.
    pub fn target_binding(&self) -> String {
        target_binding(
            self.conn_type,
            self.host.as_deref(),
            self.port,
            self.login.as_deref(),
        )
    }

    fn check(mut self, errors: &mut ValidationErrors, had_port: bool) -> Connection {
        let t = self.conn_type;
        // The host first: a URL in it may name the port and schema (crate::endpoint).
        let mut url_port = false;
        let had_host = self.host.is_some();
        if let Some(host) = self.host.take() {
            match crate::endpoint::split(t, &host) {
                Ok(parts) => {
                    self.host = Some(parts.host);
                    url_port = parts.port.is_some();
                    self.take_url_parts(parts.port, parts.schema, had_port, errors);
                }
                Err(message) => errors.push("host", message),
            }
        }
        let present = [
            had_host,
            had_port || url_port,
            self.schema.is_some(),
            self.login.is_some(),
            self.password.is_some(),
            self.extra.is_some(),
        ];
        for (field, present) in Field::ALL.into_iter().zip(present) {
            match (t.field_use(field), present) {
                (FieldUse::Required, false) => {
                    errors.push(
                        field.name(),
                        format!("{} is required for {t} connections", field.name()),
                    );
                }
                (FieldUse::Unused, true) => {
                    errors.push(
                        field.name(),
                        format!("{t} connections do not use {}", field.name()),
                    );
                }
                _ => {}
            }
        }
        if self.port.is_some() && self.host.is_none() && t == ConnType::S3 {
            errors.push("port", "a port needs a host (the endpoint)");
        }
        for (name, value) in [("schema", &self.schema), ("description", &self.description)] {
            if value.as_deref().is_some_and(|v| v.contains('\0')) {
                errors.push(name, format!("{name} must not contain NUL characters"));
            }
        }
        for (name, value) in [("password", &self.password), ("extra", &self.extra)] {
            if value.as_ref().is_some_and(|v| v.expose() == MASK) {
                errors.push(
                    name,
                    format!(
                        "{MASK} is how a stored {name} is shown, not a {name}: enter the real \
                         value (or leave the field out to keep a stored one)"
                    ),
                );
            }
        }
        if self.extra.as_ref().is_some_and(|v| v.expose() == MASK) {
            self.extra = None;
        } else {
            self.extra = canonical_extra(self.extra.take(), errors);
        }
        if let Some(extra) = &self.extra {
            if let Ok(serde_json::Value::Object(map)) =
                serde_json::from_str::<serde_json::Value>(extra.expose())
            {
                for (key, use_instead) in crate::target::naming_keys(t, &map) {
                    let instead = match use_instead {
                        Some(field) => format!("put it in {field}"),
                        None => "broked has no such setting".to_owned(),
                    };
                    errors.push(
                        "extra",
                        format!(
                            "extra key {key:?} would name the target a stored secret is sent \
                             to, overriding the connection's fields: {instead}"
                        ),
                    );
                }
                // Password rotation's keys (docs/rotation.md): well formed, the login one of
                // extra.rotation_roles.
                for (field, message) in crate::target::rotation_errors(self.login.as_deref(), &map)
                {
                    errors.push(field, message);
                }
            }
        }
        self
    }
}

impl Connection {
    /// Fills `port` and `schema` from what a URL in `host` named, when they are empty or
    /// equal; a disagreement is an error on both fields (values of `schema` are not repeated).
    fn take_url_parts(
        &mut self,
        port: Option<u16>,
        schema: Option<String>,
        had_port: bool,
        errors: &mut ValidationErrors,
    ) {
        if let Some(p) = port {
            match self.port {
                None if !had_port => self.port = Some(p),
                None => {} // the port field was given but invalid: already reported
                Some(q) if q == p => {}
                Some(q) => {
                    let both = format!(
                        "host and port disagree: the URL in host names port {p}, port is {q}; \
                         make them agree, or leave port empty"
                    );
                    errors.push("host", both.clone());
                    errors.push("port", both);
                }
            }
        }
        if let Some(s) = schema {
            match &self.schema {
                None => self.schema = Some(s),
                Some(current) if *current == s => {}
                Some(_) => {
                    let both = "host and schema disagree: the path of the URL in host names \
                                another schema than the schema field; make them agree, or leave \
                                schema empty";
                    errors.push("host", both);
                    errors.push("schema", both);
                }
            }
        }
    }
}

fn is_https(host: &str) -> bool {
    host.starts_with("https://")
}

/// Parses the extra object and writes it back compact with sorted keys. Never echoes the value.
fn canonical_extra(extra: Option<Secret>, errors: &mut ValidationErrors) -> Option<Secret> {
    let extra = extra?;
    match serde_json::from_str::<serde_json::Value>(extra.expose()) {
        Ok(serde_json::Value::Object(map)) if map.is_empty() => None,
        Ok(value @ serde_json::Value::Object(_)) => Some(Secret::new(value.to_string())),
        Ok(_) => {
            errors.push(
                "extra",
                "extra must be a JSON object, like {\"sslmode\": \"require\"}",
            );
            None
        }
        Err(e) => {
            // serde_json's message names line and column only, never the text.
            errors.push(
                "extra",
                format!(
                    "extra is not valid JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::canonical_host;

    fn input(conn_type: &str) -> ConnectionInput {
        ConnectionInput {
            conn_id: Some("c1".into()),
            conn_type: Some(conn_type.into()),
            host: Some("db.example.com".into()),
            ..ConnectionInput::default()
        }
    }

    #[test]
    fn seed_example_is_valid() {
        let c = ConnectionInput {
            conn_id: Some("prod-postgres".into()),
            conn_type: Some("postgres".into()),
            host: Some("db.example.com".into()),
            port: Some(5432),
            schema: Some("mydb".into()),
            login: Some("etl_user".into()),
            password: Some("secret123".into()),
            ..ConnectionInput::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.conn_id.as_str(), "prod-postgres");
        assert_eq!(c.port, Some(5432));
        assert_eq!(c.password.unwrap().expose(), "secret123");
    }

    #[test]
    fn all_problems_at_once_each_naming_its_field() {
        let errors = ConnectionInput {
            conn_id: Some("Bad Id".into()),
            conn_type: Some("postgres".into()),
            host: Some("db.example.com:5432".into()),
            port: Some(70000),
            extra: Some("[1, 2]".into()),
            ..ConnectionInput::default()
        }
        .validate()
        .unwrap_err();
        let fields: Vec<_> = errors.errors().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["conn_id", "port", "host", "extra"]);
        expect_test::expect![[r#"invalid connection: conn_id: conn_id must be 1 to 128 characters of lowercase letters, digits, '_' or '-', starting with a letter or digit (^[a-z0-9][a-z0-9_-]{0,127}$); port: port must be an integer from 1 to 65535; host: host must be a host name or IP address; put the port in port; extra: extra must be a JSON object, like {"sslmode": "require"}"#]]
        .assert_eq(&errors.to_string());
    }

    #[test]
    fn required_and_unused_fields() {
        let e = ConnectionInput {
            conn_id: Some("x".into()),
            ..ConnectionInput::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.errors()[0].field, "type");

        let e = ConnectionInput {
            host: None,
            ..input("generic")
        }
        .validate()
        .unwrap_err();
        let msgs: Vec<_> = e.errors().iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "host is required for generic connections",
                "port is required for generic connections"
            ]
        );

        let e = ConnectionInput {
            host: Some("data/app.db".into()),
            port: Some(1),
            password: Some("pw-should-not-show".into()),
            ..input("sqlite")
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid connection: port: sqlite connections do not use port; \
             password: sqlite connections do not use password"
        );
    }

    #[test]
    fn port_range() {
        for (port, ok) in [
            (0, false),
            (1, true),
            (65535, true),
            (65536, false),
            (-1, false),
        ] {
            let r = ConnectionInput {
                port: Some(port),
                ..input("postgres")
            }
            .validate();
            assert_eq!(r.is_ok(), ok, "port {port}");
        }
    }

    #[test]
    fn extra_errors_never_echo_the_value() {
        for extra in [
            "{\"token\": \"tok-SECRET-99",
            "\"tok-SECRET-99\"",
            "tok-SECRET-99",
        ] {
            let e = ConnectionInput {
                extra: Some(extra.into()),
                ..input("http")
            }
            .validate()
            .unwrap_err();
            assert_eq!(e.errors()[0].field, "extra");
            assert!(!e.to_string().contains("SECRET"), "{e}");
            assert!(!format!("{e:?}").contains("SECRET"), "{e:?}");
        }
    }

    #[test]
    fn canonical_forms() {
        let c = ConnectionInput {
            host: Some(" HTTP://api.example.com ".into()),
            extra: Some(r#"{ "b": 1, "a": {"y": [1, "2"]} }"#.into()),
            login: Some(String::new()),
            ..input("http")
        }
        .validate()
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("api.example.com"));
        assert_eq!(c.extra.unwrap().expose(), r#"{"a":{"y":[1,"2"]},"b":1}"#);
        assert_eq!(c.login, None);

        let host = |t: ConnType, h: &str| canonical_host(t, h);
        assert_eq!(
            host(ConnType::Http, "https://x.io").as_deref(),
            Ok("https://x.io")
        );
        assert_eq!(
            host(ConnType::Http, "HTTPS://[::1]").as_deref(),
            Ok("https://[::1]")
        );
        assert_eq!(host(ConnType::Postgres, "[::1]").as_deref(), Ok("::1"));
        assert_eq!(
            host(ConnType::S3, "http://127.0.0.1").as_deref(),
            Ok("http://127.0.0.1")
        );
        assert_eq!(
            host(ConnType::Postgres, "/var/run/postgresql").as_deref(),
            Ok("/var/run/postgresql")
        );
        assert!(host(ConnType::Sftp, "/tmp/sock").is_err());
        assert!(host(ConnType::Postgres, "https://db").is_err());
        assert!(
            host(ConnType::Http, "https://x.io/v1")
                .unwrap_err()
                .contains("schema")
        );
        assert!(host(ConnType::Http, "a b").is_err());
        assert_eq!(
            host(ConnType::Sqlite, "rel dir/a?b#c.db").as_deref(),
            Ok("rel dir/a?b#c.db")
        );

        let empty = ConnectionInput {
            extra: Some("{}".into()),
            ..input("postgres")
        }
        .validate()
        .unwrap();
        assert_eq!(empty.extra, None);
    }

    #[test]
    fn effective_port() {
        let c = |t: &str, h: &str| {
            ConnectionInput {
                host: Some(h.into()),
                port: (t == "generic").then_some(7),
                ..input(t)
            }
            .validate()
            .unwrap()
            .effective_port()
        };
        assert_eq!(c("postgres", "h"), Some(5432));
        assert_eq!(c("http", "h"), Some(80));
        assert_eq!(c("http", "https://h"), Some(443));
        assert_eq!(c("s3", "http://h"), Some(80));
        assert_eq!(c("generic", "h"), Some(7));
        assert_eq!(c("sqlite", "a.db"), None);
    }

    #[test]
    fn extra_keys_that_name_the_target_are_refused_naming_the_field_to_use() {
        let e = ConnectionInput {
            extra: Some(
                r#"{"HOST":"evil.example","port":6543,"sslmode":"disable","user":"x"}"#.into(),
            ),
            ..input("postgres")
        }
        .validate()
        .unwrap_err();
        expect_test::expect![[r#"invalid connection: extra: extra key "host" would name the target a stored secret is sent to, overriding the connection's fields: put it in host; extra: extra key "port" would name the target a stored secret is sent to, overriding the connection's fields: put it in port; extra: extra key "user" would name the target a stored secret is sent to, overriding the connection's fields: put it in login"#]]
        .assert_eq(&e.to_string());
        assert!(!e.to_string().contains("evil"));
        for (t, extra) in [
            ("postgres", r#"{"hostaddr":"10.0.0.1"}"#),
            ("postgres", r#"{"service":"prod"}"#),
            ("postgres", r#"{"dbname":"other"}"#),
            ("mysql", r#"{"unix_socket":"/tmp/x"}"#),
            ("mysql", r#"{"read_default_file":"/etc/evil.cnf"}"#),
            ("s3", r#"{"endpoint_url":"http://evil.example"}"#),
            ("http", r#"{"proxy":"http://evil.example:3128"}"#),
            ("sftp", r#"{"proxy_command":"nc evil 22"}"#),
            ("generic", r#"{"Password":"x"}"#),
        ] {
            let r = ConnectionInput {
                extra: Some(extra.into()),
                port: (t == "generic").then_some(1),
                ..input(t)
            }
            .validate();
            assert!(r.is_err(), "{t} {extra}");
        }
        // Options that do not name the target stay allowed.
        ConnectionInput {
            extra: Some(r#"{"sslmode":"require","application_name":"etl"}"#.into()),
            ..input("postgres")
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn the_mask_is_not_a_password() {
        for (password, extra) in [(Some("********"), None), (None, Some("********"))] {
            let e = ConnectionInput {
                password: password.map(Into::into),
                extra: extra.map(Into::into),
                ..input("postgres")
            }
            .validate()
            .unwrap_err();
            assert!(e.to_string().contains("is how a stored"), "{e}");
        }
    }

    #[test]
    fn same_target_includes_the_securing_extra_keys() {
        let c = |extra: Option<&str>| {
            ConnectionInput {
                extra: extra.map(Into::into),
                ..input("postgres")
            }
            .validate()
            .unwrap()
        };
        let base = c(Some(r#"{"sslmode":"verify-full","application_name":"a"}"#));
        assert!(base.same_target(&c(Some(
            r#"{"sslmode":"verify-full","application_name":"b"}"#
        ))));
        assert!(!base.same_target(&c(Some(r#"{"sslmode":"disable"}"#))));
        assert!(!base.same_target(&c(None)));
        let mut other_port = base.clone();
        other_port.port = Some(6543);
        assert!(!base.same_target(&other_port));
        other_port.port = Some(5432);
        assert!(base.same_target(&other_port));
        assert_eq!(
            base.target_binding(),
            r#"["postgres","db.example.com",5432,null]"#
        );
    }
}
