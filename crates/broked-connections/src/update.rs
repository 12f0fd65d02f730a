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
    /// Extra only: a JSON merge patch (RFC 7386) of the stored object, from a PATCH sent as
    /// `application/merge-patch+json` — the keys it names are set (objects merged), a key set
    /// to `null` is removed, every other stored key stays. A JSON object as text.
    Merge(Secret),
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

    /// Whether the result carries (some of) the stored value: it stays, or a merge patch
    /// keeps the keys it does not name. The stored value must then be read, and may not move
    /// to another target.
    pub fn carries_stored(&self) -> bool {
        self.keeps() || matches!(self, SecretUpdate::Merge(_))
    }

    pub(crate) fn apply(self, current: Option<&Secret>) -> Option<Secret> {
        match self {
            SecretUpdate::Keep | SecretUpdate::Masked => current.cloned(),
            SecretUpdate::Clear => None,
            SecretUpdate::Set(s) => Some(s),
            SecretUpdate::Merge(patch) => {
                let mut target = current
                    .and_then(|c| serde_json::from_str::<serde_json::Value>(c.expose()).ok())
                    .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
                let patch = serde_json::from_str::<serde_json::Value>(patch.expose())
                    .unwrap_or(serde_json::Value::Null);
                merge_patch(&mut target, patch);
                // `{}` is "not set" (validation makes it None).
                Some(Secret::new(target.to_string()))
            }
        }
    }
}

/// RFC 7386 JSON Merge Patch: an object patch sets its keys in `target` (recursively), a
/// `null` removes one; any other patch replaces `target`.
fn merge_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
    use serde_json::Value;
    let Value::Object(patch) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Value::Object(map) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(&key);
        } else {
            merge_patch(map.entry(key).or_insert(Value::Null), value);
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
        // PATCH with a URL in host (crate docs: broked_core::endpoint): the port and schema it
        // names replace the stored ones unless the patch gives those fields too (then they
        // must agree). A URL without a port or path keeps the stored port or schema.
        let (mut url_port, mut url_schema) = (false, false);
        if let (UpdateMode::Merge, Some(Some(host))) = (mode, &self.host) {
            let t = conn_type.as_deref().and_then(|t| t.parse().ok());
            if let Some(Ok(parts)) = t.map(|t| broked_core::endpoint::split(t, host.trim())) {
                url_port = parts.port.is_some() && self.port.is_none();
                url_schema = parts.schema.is_some() && self.schema.is_none();
            }
        }
        let port = match (mode, self.port) {
            (_, Some(p)) => p,
            (UpdateMode::Merge, None) if url_port => None,
            (UpdateMode::Merge, None) => current.port.map(i64::from),
            (UpdateMode::Replace, None) => None,
        };
        let schema = if url_schema {
            None
        } else {
            pick(self.schema, &current.schema)
        };
        ConnectionInput {
            conn_id: Some(id.to_owned()),
            conn_type,
            host: pick(self.host, &current.host),
            port,
            schema,
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

    /// Issue 18: PATCH host with a URL — the port and database it names replace the stored
    /// ones unless the patch gives them too; then they must agree.
    #[test]
    fn patch_with_a_url_host_takes_its_port_and_schema() {
        let patch = |host: &str, port: Option<Option<i64>>| ConnectionUpdate {
            host: Some(Some(host.into())),
            port,
            ..ConnectionUpdate::default()
        };
        let c = patch("postgres://db.internal:5433/analytics", None)
            .apply(&current(), UpdateMode::Merge)
            .unwrap();
        assert_eq!(
            (c.host.as_deref(), c.port, c.schema.as_deref()),
            (Some("db.internal"), Some(5433), Some("analytics"))
        );
        // No port or path in the URL: the stored ones stay.
        let c = patch("postgres://db2", None)
            .apply(&current(), UpdateMode::Merge)
            .unwrap();
        assert_eq!((c.port, c.schema.as_deref()), (Some(5432), Some("mydb")));
        // Given together, they must agree.
        let e = patch("postgres://db2:5433", Some(Some(5434)))
            .apply(&current(), UpdateMode::Merge)
            .unwrap_err();
        let fields: Vec<_> = e.errors().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["host", "port"]);
        patch("postgres://db2:5433", Some(Some(5433)))
            .apply(&current(), UpdateMode::Merge)
            .unwrap();
        // PUT replaces: absent fields are empty, so the URL fills them.
        let c = ConnectionUpdate {
            conn_type: Some("postgres".into()),
            ..patch("postgres://db2:5433/x", None)
        }
        .apply(&current(), UpdateMode::Replace)
        .unwrap();
        assert_eq!((c.port, c.schema.as_deref()), (Some(5433), Some("x")));
    }

    /// A merge patch of extra (RFC 7386) sets the keys it names, removes those set to null,
    /// and keeps the others — the UI's region edit keeps what it cannot read.
    #[test]
    fn a_merge_patch_of_extra_keeps_the_other_keys() {
        let mut cur = current();
        cur.extra = Some(r#"{"a":{"x":1,"y":2},"region":"eu-west-1","token":"tok-1"}"#.into());
        let c = ConnectionUpdate {
            extra: SecretUpdate::Merge(r#"{"region":"eu-west-2","a":{"y":null},"b":[1]}"#.into()),
            ..ConnectionUpdate::default()
        }
        .apply(&cur, UpdateMode::Merge)
        .unwrap();
        assert_eq!(
            c.extra.unwrap().expose(),
            r#"{"a":{"x":1},"b":[1],"region":"eu-west-2","token":"tok-1"}"#
        );
        // Removing the last key leaves no extra.
        let mut one = current();
        one.extra = Some(r#"{"region":"eu-west-1"}"#.into());
        let c = ConnectionUpdate {
            extra: SecretUpdate::Merge(r#"{"region":null}"#.into()),
            ..ConnectionUpdate::default()
        }
        .apply(&one, UpdateMode::Merge)
        .unwrap();
        assert_eq!(c.extra, None);
        assert!(SecretUpdate::Merge("{}".into()).carries_stored());
        assert!(!SecretUpdate::Merge("{}".into()).keeps());
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
