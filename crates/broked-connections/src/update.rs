//! PUT and PATCH semantics (SPEC §4): what an update keeps, sets and clears.

use broked_core::{Connection, ConnectionInput, FieldError, Secret, ValidationErrors};

/// What an update does to a secret field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SecretUpdate {
    /// Absent: the stored value stays.
    #[default]
    Keep,
    /// The mask `********` sent back: the stored value stays; an error when there is none
    /// (the mask is never a password).
    Masked,
    /// `null` (or an empty string): the stored value is removed.
    Clear,
    /// A new value.
    Set(Secret),
}

impl SecretUpdate {
    /// From a JSON-ish tri-state: `None` = absent, `Some(None)` = null, `Some(Some(s))` = a string.
    /// The mask `********` means "keep", so a client can send back what it read.
    pub fn from_field(field: Option<Option<Secret>>) -> SecretUpdate {
        match field {
            None => SecretUpdate::Keep,
            Some(None) => SecretUpdate::Clear,
            Some(Some(s)) if s.expose() == Secret::MASK => SecretUpdate::Masked,
            Some(Some(s)) if s.is_empty() => SecretUpdate::Clear,
            Some(Some(s)) => SecretUpdate::Set(s),
        }
    }

    /// Whether the stored value stays (absent or masked).
    pub fn keeps(&self) -> bool {
        matches!(self, SecretUpdate::Keep | SecretUpdate::Masked)
    }

    fn apply(self, current: Option<&Secret>) -> Option<Secret> {
        match self {
            SecretUpdate::Keep | SecretUpdate::Masked => current.cloned(),
            SecretUpdate::Clear => None,
            SecretUpdate::Set(s) => Some(s),
        }
    }
}

/// The body of a PUT or PATCH. For each plain field: `None` = absent, `Some(None)` = null,
/// `Some(Some(v))` = a value.
#[derive(Clone, Debug, Default)]
pub struct ConnectionUpdate {
    /// If present it must equal the connection's id: conn_id is immutable.
    pub conn_id: Option<String>,
    pub conn_type: Option<String>,
    pub host: Option<Option<String>>,
    pub port: Option<Option<i64>>,
    pub schema: Option<Option<String>>,
    pub login: Option<Option<String>>,
    pub password: SecretUpdate,
    pub extra: SecretUpdate,
    pub description: Option<Option<String>>,
}

/// PUT replaces the connection (absent plain fields become empty; secrets follow
/// [`SecretUpdate`]); PATCH changes only the fields present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    Replace,
    Merge,
}

impl ConnectionUpdate {
    /// The connection after this update, validated as a whole.
    pub fn apply(
        self,
        current: &Connection,
        mode: UpdateMode,
    ) -> Result<Connection, ValidationErrors> {
        let id = current.conn_id.as_str();
        if self.conn_id.as_deref().is_some_and(|new| new != id) {
            return Err(ValidationErrors(vec![FieldError {
                field: "conn_id",
                message: "conn_id cannot be changed; create a new connection instead".into(),
            }]));
        }
        let pick = |new: Option<Option<String>>, old: &Option<String>| match (mode, new) {
            (_, Some(v)) => v,
            (UpdateMode::Merge, None) => old.clone(),
            (UpdateMode::Replace, None) => None,
        };
        let conn_type = match (mode, self.conn_type) {
            (_, Some(t)) => Some(t),
            (UpdateMode::Merge, None) => Some(current.conn_type.as_str().to_owned()),
            (UpdateMode::Replace, None) => None,
        };
        let port = match (mode, self.port) {
            (_, Some(p)) => p,
            (UpdateMode::Merge, None) => current.port.map(i64::from),
            (UpdateMode::Replace, None) => None,
        };
        ConnectionInput {
            conn_id: Some(id.to_owned()),
            conn_type,
            host: pick(self.host, &current.host),
            port,
            schema: pick(self.schema, &current.schema),
            login: pick(self.login, &current.login),
            password: self.password.apply(current.password.as_ref()),
            extra: self.extra.apply(current.extra.as_ref()),
            description: pick(self.description, &current.description),
        }
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Connection {
        ConnectionInput {
            conn_id: Some("prod-postgres".into()),
            conn_type: Some("postgres".into()),
            host: Some("db.example.com".into()),
            port: Some(5432),
            schema: Some("mydb".into()),
            login: Some("etl_user".into()),
            password: Some("secret123".into()),
            extra: Some(r#"{"sslmode":"require"}"#.into()),
            description: Some("prod".into()),
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn patch_changes_only_what_is_given() {
        let c = ConnectionUpdate {
            description: Some(Some("new".into())),
            ..ConnectionUpdate::default()
        }
        .apply(&current(), UpdateMode::Merge)
        .unwrap();
        assert_eq!(c.description.as_deref(), Some("new"));
        assert_eq!(c.password.as_ref().unwrap().expose(), "secret123");
        assert_eq!(c.extra, current().extra);
        assert_eq!(c.host, current().host);
        assert_eq!(c.port, Some(5432));
    }

    #[test]
    fn put_replaces_plain_fields_and_keeps_secrets() {
        let c = ConnectionUpdate {
            conn_type: Some("postgres".into()),
            host: Some(Some("db2".into())),
            password: SecretUpdate::from_field(Some(Some("********".into()))),
            ..ConnectionUpdate::default()
        }
        .apply(&current(), UpdateMode::Replace)
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("db2"));
        assert_eq!(
            (c.port, c.schema.as_deref(), c.login.as_deref()),
            (None, None, None)
        );
        assert_eq!(c.password.as_ref().unwrap().expose(), "secret123");
        assert_eq!(c.extra, current().extra, "absent extra is kept");
    }

    #[test]
    fn null_clears_a_secret_and_a_value_sets_it() {
        let c = ConnectionUpdate {
            password: SecretUpdate::from_field(Some(None)),
            extra: SecretUpdate::from_field(Some(Some(r#"{"a": 1}"#.into()))),
            ..ConnectionUpdate::default()
        }
        .apply(&current(), UpdateMode::Merge)
        .unwrap();
        assert_eq!(c.password, None);
        assert_eq!(c.extra.unwrap().expose(), r#"{"a":1}"#);
    }

    #[test]
    fn conn_id_is_immutable_and_put_needs_a_type() {
        let e = ConnectionUpdate {
            conn_id: Some("other".into()),
            ..ConnectionUpdate::default()
        }
        .apply(&current(), UpdateMode::Merge)
        .unwrap_err();
        assert_eq!(e.errors()[0].field, "conn_id");
        let e = ConnectionUpdate::default()
            .apply(&current(), UpdateMode::Replace)
            .unwrap_err();
        let fields: Vec<_> = e.errors().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["type"]);
    }

    #[test]
    fn changing_type_to_sqlite_requires_clearing_the_password() {
        let e = ConnectionUpdate {
            conn_type: Some("sqlite".into()),
            host: Some(Some("a.db".into())),
            port: Some(None),
            schema: Some(None),
            login: Some(None),
            ..ConnectionUpdate::default()
        }
        .apply(&current(), UpdateMode::Merge)
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid connection: password: sqlite connections do not use password"
        );
    }
}
