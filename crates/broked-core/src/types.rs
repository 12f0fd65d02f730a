//! `ConnType` and the type table.

use std::fmt;
use std::str::FromStr;

/// The seven connection types of the seed's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConnType {
    Postgres,
    Mysql,
    Sqlite,
    Http,
    Sftp,
    S3,
    Generic,
}

/// The fields of a connection that a type may use (conn_id, type and description are common to all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Host,
    Port,
    Schema,
    Login,
    Password,
    Extra,
}

impl Field {
    pub const ALL: [Field; 6] = [
        Field::Host,
        Field::Port,
        Field::Schema,
        Field::Login,
        Field::Password,
        Field::Extra,
    ];

    /// The field's name in the API and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Field::Host => "host",
            Field::Port => "port",
            Field::Schema => "schema",
            Field::Login => "login",
            Field::Password => "password",
            Field::Extra => "extra",
        }
    }
}

/// Whether a type needs, may have, or has no use for a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldUse {
    Required,
    Optional,
    Unused,
}

/// One row of the type table (served by `GET /api/connection-types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeInfo {
    pub conn_type: ConnType,
    /// The label the UI shows.
    pub label: &'static str,
    pub use_case: &'static str,
    /// The port a client uses when `port` is empty. For http it is 80, or 443 for an `https://` host.
    pub default_port: Option<u16>,
    /// The URI scheme of [`crate::Connection::to_uri`].
    pub scheme: &'static str,
    /// How the type uses each of [`Field::ALL`], in that order.
    pub fields: [FieldUse; 6],
    /// What `host` means for this type, for forms and docs.
    pub host_hint: &'static str,
    /// What `schema` means for this type, for forms and docs.
    pub schema_hint: &'static str,
    /// How a form labels each of [`Field::ALL`] for this type (`URL` for an http host, ...).
    pub labels: [&'static str; 6],
    /// An example of `extra` for this type, for forms and docs.
    pub extra_example: &'static str,
}

/// The labels most types use, in [`Field::ALL`] order.
const LABELS: [&str; 6] = [
    "Host",
    "Port",
    "Schema",
    "Login",
    "Password",
    "Extra (JSON)",
];

use FieldUse::{Optional as O, Required as R, Unused as U};

static TABLE: [TypeInfo; 7] = [
    TypeInfo {
        conn_type: ConnType::Postgres,
        label: "PostgreSQL",
        use_case: "Database source/sink nodes",
        default_port: Some(5432),
        scheme: "postgres",
        //      host port schema login password extra
        fields: [R, O, O, O, O, O],
        host_hint: "Host name or IP address, or the directory of a Unix socket",
        schema_hint: "Database name",
        labels: [
            "Host",
            "Port",
            "Database",
            "Login",
            "Password",
            "Extra (JSON)",
        ],
        extra_example: r#"{"sslmode": "require"}"#,
    },
    TypeInfo {
        conn_type: ConnType::Mysql,
        label: "MySQL",
        use_case: "Database source/sink nodes",
        default_port: Some(3306),
        scheme: "mysql",
        fields: [R, O, O, O, O, O],
        host_hint: "Host name or IP address, or the path of a Unix socket",
        schema_hint: "Database name",
        labels: [
            "Host",
            "Port",
            "Database",
            "Login",
            "Password",
            "Extra (JSON)",
        ],
        extra_example: r#"{"ssl-mode": "REQUIRED"}"#,
    },
    TypeInfo {
        conn_type: ConnType::Sqlite,
        label: "SQLite",
        use_case: "Database source/sink nodes",
        default_port: None,
        scheme: "sqlite",
        fields: [R, U, U, U, U, O],
        host_hint: "Path of the database file, absolute or relative",
        schema_hint: "",
        labels: [
            "Database file path",
            "Port",
            "Schema",
            "Login",
            "Password",
            "Extra (JSON)",
        ],
        extra_example: "",
    },
    TypeInfo {
        conn_type: ConnType::Http,
        label: "HTTP / REST API",
        use_case: "API source/sink nodes",
        default_port: Some(80),
        scheme: "http",
        fields: [R, O, O, O, O, O],
        host_hint: "Host name, optionally with https:// (http:// is the default)",
        schema_hint: "Base path",
        labels: [
            "URL",
            "Port",
            "Base path",
            "Login",
            "Password",
            "Extra (JSON)",
        ],
        extra_example: r#"{"headers": {"X-Api-Key": "…"}}"#,
    },
    TypeInfo {
        conn_type: ConnType::Sftp,
        label: "SFTP / SSH",
        use_case: "File transfers",
        default_port: Some(22),
        scheme: "sftp",
        fields: [R, O, O, O, O, O],
        host_hint: "Host name or IP address",
        schema_hint: "Base path",
        labels: [
            "Host",
            "Port",
            "Base path",
            "Login",
            "Password",
            "Extra (JSON)",
        ],
        extra_example: r#"{"private_key": "…"}"#,
    },
    TypeInfo {
        conn_type: ConnType::S3,
        label: "Amazon S3",
        use_case: "Cloud storage",
        default_port: Some(443),
        scheme: "s3",
        fields: [O, O, O, O, O, O],
        host_hint: "Endpoint of an S3-compatible store, optionally with http:// or https://; \
                    empty for AWS",
        schema_hint: "Bucket",
        labels: [
            "Endpoint",
            "Port",
            "Bucket",
            "Access key ID",
            "Secret access key",
            "Extra (JSON)",
        ],
        extra_example: r#"{"region": "eu-west-1"}"#,
    },
    TypeInfo {
        conn_type: ConnType::Generic,
        label: "Generic",
        use_case: "Any TCP service",
        default_port: None,
        scheme: "generic",
        fields: [R, R, O, O, O, O],
        host_hint: "Host name or IP address",
        schema_hint: "Free text (database, path, ...)",
        labels: LABELS,
        extra_example: "",
    },
];

/// The error of parsing an unknown type name; its message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type must be one of: postgres, mysql, sqlite, http, sftp, s3, generic")]
pub struct UnknownConnType;

impl ConnType {
    pub const ALL: [ConnType; 7] = [
        ConnType::Postgres,
        ConnType::Mysql,
        ConnType::Sqlite,
        ConnType::Http,
        ConnType::Sftp,
        ConnType::S3,
        ConnType::Generic,
    ];

    /// The type table, in the seed's order.
    pub fn table() -> &'static [TypeInfo; 7] {
        &TABLE
    }

    pub fn info(self) -> &'static TypeInfo {
        &TABLE[self as usize]
    }

    /// The type's name in the API: `postgres`, `mysql`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            ConnType::Postgres => "postgres",
            ConnType::Mysql => "mysql",
            ConnType::Sqlite => "sqlite",
            ConnType::Http => "http",
            ConnType::Sftp => "sftp",
            ConnType::S3 => "s3",
            ConnType::Generic => "generic",
        }
    }

    pub fn label(self) -> &'static str {
        self.info().label
    }

    pub fn default_port(self) -> Option<u16> {
        self.info().default_port
    }

    pub fn field_use(self, field: Field) -> FieldUse {
        self.info().fields[field as usize]
    }
}

impl fmt::Display for ConnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConnType {
    type Err = UnknownConnType;
    fn from_str(s: &str) -> Result<ConnType, UnknownConnType> {
        ConnType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(UnknownConnType)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order_and_names_round_trip() {
        for (i, t) in ConnType::ALL.into_iter().enumerate() {
            assert_eq!(ConnType::table()[i].conn_type, t);
            assert_eq!(t.as_str().parse::<ConnType>(), Ok(t));
        }
        assert_eq!("Postgres".parse::<ConnType>(), Err(UnknownConnType));
    }

    /// Issue 18: postgres and mysql take an empty login, as libpq and the MySQL clients do (the
    /// OS user name of the client); their probes test it that way (broked_probe::sql::Target).
    #[test]
    fn sql_logins_are_optional() {
        for t in [ConnType::Postgres, ConnType::Mysql] {
            assert_eq!(t.field_use(Field::Login), FieldUse::Optional, "{t}");
            let c = crate::ConnectionInput {
                conn_id: Some("c".into()),
                conn_type: Some(t.as_str().into()),
                host: Some("db".into()),
                ..crate::ConnectionInput::default()
            }
            .validate()
            .unwrap();
            assert_eq!(c.login, None);
        }
    }

    #[test]
    fn seed_table() {
        let rows: Vec<String> = ConnType::table()
            .iter()
            .map(|t| format!("{} | {} | {}", t.conn_type, t.label, t.use_case))
            .collect();
        expect_test::expect![[r#"
            [
                "postgres | PostgreSQL | Database source/sink nodes",
                "mysql | MySQL | Database source/sink nodes",
                "sqlite | SQLite | Database source/sink nodes",
                "http | HTTP / REST API | API source/sink nodes",
                "sftp | SFTP / SSH | File transfers",
                "s3 | Amazon S3 | Cloud storage",
                "generic | Generic | Any TCP service",
            ]
        "#]]
        .assert_debug_eq(&rows);
    }
}
