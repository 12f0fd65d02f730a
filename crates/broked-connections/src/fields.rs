//! The one reader of a connection as a JSON object — for the REST API, import files and
//! `BROKED_CONN_*` variables — and the list of keys it accepts, which the server's OpenAPI
//! document is built from (so the two cannot drift).

use broked_core::{ConnectionInput, FieldError, Secret, ValidationErrors};
use serde_json::{Map, Value};

use crate::update::{ConnectionUpdate, SecretUpdate};

/// Where a connection object comes from. They differ only in a few keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonSource {
    /// A REST API body (create, PUT, PATCH, unsaved test).
    Api,
    /// A PATCH sent as `application/merge-patch+json` (RFC 7386): as [`JsonSource::Api`], but
    /// an `extra` object is merged into the stored one ([`SecretUpdate::Merge`]) instead of
    /// replacing it, so a client that changes one key keeps the others it cannot read.
    MergePatch,
    /// A row of an import file (an export): also `has_password`/`has_extra`, ignored.
    Import,
    /// A `BROKED_CONN_*` variable: `conn_type` is also read as `type` (Airflow's spelling).
    Env,
}

/// The keys of a connection object, in the order the API documents them.
pub const CONNECTION_KEYS: [&str; 9] = [
    "conn_id",
    "type",
    "host",
    "port",
    "schema",
    "login",
    "password",
    "extra",
    "description",
];

/// Keys that are accepted and ignored: what the API and an export show but nobody sets.
pub const READ_ONLY_KEYS: [&str; 7] = [
    "created_at",
    "updated_at",
    // The version and its writer (issue 17); `If-Match` makes a write conditional, not this.
    "version",
    "updated_by",
    // The last test of the connection (`listing.rs`).
    "last_tested_at",
    "last_test_ok",
    "last_test_message",
];

/// What a row of the server's list (`GET /api/connections`) shows besides
/// [`CONNECTION_KEYS`] and [`READ_ONLY_KEYS`]: its password rotation (issue 20). The API
/// accepts and ignores them too, so that a row sent back as it was listed is no error.
pub const LIST_ROW_KEYS: [&str; 4] = [
    "last_rotated_at",
    "next_due_at",
    "rotation_failing",
    "rotation_error",
];

impl JsonSource {
    /// Every key this source accepts.
    pub fn keys(self) -> Vec<&'static str> {
        let mut keys: Vec<&str> = CONNECTION_KEYS.into_iter().chain(READ_ONLY_KEYS).collect();
        match self {
            JsonSource::Api | JsonSource::MergePatch => keys.extend(LIST_ROW_KEYS),
            JsonSource::Import => keys.extend(["has_password", "has_extra"]),
            JsonSource::Env => keys.push("conn_type"),
        }
        keys
    }
}

fn wrong(errors: &mut Vec<FieldError>, field: &'static str, what: &str) {
    errors.push(FieldError {
        field,
        message: format!("{field} must be {what}"),
    });
}

impl ConnectionUpdate {
    /// Reads a connection object: every wrong field at once, each named; never a value in a
    /// message. Absent fields stay absent, `null` means "clear", `********` for a secret means
    /// "keep" ([`SecretUpdate::Masked`]).
    pub fn from_json(
        map: Map<String, Value>,
        source: JsonSource,
    ) -> Result<ConnectionUpdate, ValidationErrors> {
        let mut errors = Vec::new();
        let mut u = ConnectionUpdate::default();
        let accepted = source.keys();
        for (key, value) in map {
            let key = match key.as_str() {
                "conn_type" if source == JsonSource::Env => "type",
                k if accepted.contains(&k) => {
                    accepted[accepted.iter().position(|a| *a == k).expect("found")]
                }
                _ => {
                    errors.push(FieldError {
                        field: "body",
                        message: format!(
                            "unknown field {key:?}; the fields are {}",
                            CONNECTION_KEYS.join(", ")
                        ),
                    });
                    continue;
                }
            };
            match key {
                "conn_id" | "type" => {
                    let slot = if key == "type" {
                        &mut u.conn_type
                    } else {
                        &mut u.conn_id
                    };
                    match value {
                        Value::String(s) => *slot = Some(s),
                        Value::Null => {}
                        _ => wrong(&mut errors, key, "a string"),
                    }
                }
                "host" | "schema" | "login" | "description" => {
                    let v = match value {
                        Value::String(s) => Some(s),
                        Value::Null => None,
                        _ => {
                            wrong(&mut errors, key, "a string or null");
                            continue;
                        }
                    };
                    *match key {
                        "host" => &mut u.host,
                        "schema" => &mut u.schema,
                        "login" => &mut u.login,
                        _ => &mut u.description,
                    } = Some(v);
                }
                "port" => {
                    let rule = "an integer from 1 to 65535";
                    match value {
                        Value::Null => u.port = Some(None),
                        // JSON Schema's integer: 5432.0 is one too (the OpenAPI document says
                        // integer, so a client may send it).
                        Value::Number(n) => match n.as_i64().or_else(|| {
                            n.as_f64()
                                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                                .map(|f| f as i64)
                        }) {
                            Some(p) => u.port = Some(Some(p)),
                            None => wrong(&mut errors, "port", rule),
                        },
                        // A port typed as text: files and variables only. The API takes a
                        // number, as its document says (issue 23).
                        Value::String(s) if source != JsonSource::Api && s.is_empty() => {
                            u.port = Some(None)
                        }
                        Value::String(s) if source != JsonSource::Api => {
                            match s.trim().parse::<i64>() {
                                Ok(p) => u.port = Some(Some(p)),
                                Err(_) => wrong(&mut errors, "port", rule),
                            }
                        }
                        _ => wrong(&mut errors, "port", rule),
                    }
                }
                "password" => match value {
                    Value::String(s) => {
                        u.password = SecretUpdate::from_field(Some(Some(Secret::from(s))))
                    }
                    Value::Null => u.password = SecretUpdate::Clear,
                    _ => wrong(&mut errors, "password", "a string or null"),
                },
                "extra" => match value {
                    Value::String(s) => {
                        u.extra = SecretUpdate::from_field(Some(Some(Secret::from(s))))
                    }
                    v @ Value::Object(_) if source == JsonSource::MergePatch => {
                        u.extra = SecretUpdate::Merge(Secret::new(v.to_string()))
                    }
                    v @ Value::Object(_) => u.extra = SecretUpdate::Set(Secret::new(v.to_string())),
                    Value::Null => u.extra = SecretUpdate::Clear,
                    _ => wrong(
                        &mut errors,
                        "extra",
                        "a JSON object (or a string holding one) or null",
                    ),
                },
                _ => {} // read-only keys: ignored
            }
        }
        if errors.is_empty() {
            Ok(u)
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// A create: "keep" has nothing to keep, so it means "not set"; the mask sent for a secret
/// stays the literal mask, which validation refuses by name (it is never a secret).
impl From<ConnectionUpdate> for ConnectionInput {
    fn from(u: ConnectionUpdate) -> ConnectionInput {
        let secret = |s: SecretUpdate| match s {
            SecretUpdate::Set(s) => Some(s),
            // Nothing stored to merge into: the patch without its nulls.
            m @ SecretUpdate::Merge(_) => m.apply(None),
            SecretUpdate::Masked => Some(Secret::new(Secret::MASK)),
            SecretUpdate::Keep | SecretUpdate::Clear => None,
        };
        ConnectionInput {
            conn_id: u.conn_id,
            conn_type: u.conn_type,
            host: u.host.flatten(),
            port: u.port.flatten(),
            schema: u.schema.flatten(),
            login: u.login.flatten(),
            password: secret(u.password),
            extra: secret(u.extra),
            description: u.description.flatten(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_wrong_field_at_once_never_a_value() {
        let e = ConnectionUpdate::from_json(
            obj(
                serde_json::json!({"conn_id": 1, "port": "x-SECRET", "password": 5,
                "extra": [1], "oops": "SECRET"}),
            ),
            JsonSource::Api,
        )
        .unwrap_err();
        let fields: Vec<_> = e.errors().iter().map(|e| e.field).collect();
        assert_eq!(fields.len(), 5, "{e}");
        assert!(!e.to_string().contains("SECRET"), "{e}");
    }

    #[test]
    fn a_merge_patch_merges_extra_objects_only() {
        let body = obj(serde_json::json!({"extra": {"region": "eu-west-2"}}));
        let u = ConnectionUpdate::from_json(body.clone(), JsonSource::MergePatch).unwrap();
        assert!(matches!(u.extra, SecretUpdate::Merge(_)));
        let u = ConnectionUpdate::from_json(body, JsonSource::Api).unwrap();
        assert!(matches!(u.extra, SecretUpdate::Set(_)));
        // A string, null or the mask mean what they mean in any body.
        for (extra, want) in [
            (serde_json::json!(null), SecretUpdate::Clear),
            (serde_json::json!("********"), SecretUpdate::Masked),
        ] {
            let u = ConnectionUpdate::from_json(
                obj(serde_json::json!({ "extra": extra })),
                JsonSource::MergePatch,
            )
            .unwrap();
            assert_eq!(u.extra, want);
        }
        assert_eq!(JsonSource::MergePatch.keys(), JsonSource::Api.keys());
    }

    #[test]
    fn sources_differ_only_in_their_extra_keys() {
        let body = |k: &str| obj(serde_json::json!({ k: "x" }));
        assert!(ConnectionUpdate::from_json(body("conn_type"), JsonSource::Env).is_ok());
        assert!(ConnectionUpdate::from_json(body("conn_type"), JsonSource::Api).is_err());
        assert!(ConnectionUpdate::from_json(body("has_password"), JsonSource::Import).is_ok());
        assert!(ConnectionUpdate::from_json(body("has_password"), JsonSource::Api).is_err());
        let u = ConnectionUpdate::from_json(
            obj(serde_json::json!({"conn_type": "postgres", "port": " 5432 ", "password": "********"})),
            JsonSource::Env,
        )
        .unwrap();
        assert_eq!(u.conn_type.as_deref(), Some("postgres"));
        assert_eq!(u.port, Some(Some(5432)));
        assert_eq!(u.password, SecretUpdate::Masked);
        let input = ConnectionInput::from(u);
        assert_eq!(input.password.unwrap().expose(), Secret::MASK);
    }

    /// The API reads port as the document says: a JSON integer (5432.0 is one), or null.
    #[test]
    fn the_api_takes_a_port_as_a_number_only() {
        let port = |v: Value, source| {
            ConnectionUpdate::from_json(obj(serde_json::json!({ "port": v })), source)
                .map(|u| u.port)
                .map_err(|e| e.errors()[0].field)
        };
        assert_eq!(
            port(serde_json::json!(5432), JsonSource::Api),
            Ok(Some(Some(5432)))
        );
        assert_eq!(
            port(serde_json::json!(5432.0), JsonSource::Api),
            Ok(Some(Some(5432)))
        );
        assert_eq!(port(Value::Null, JsonSource::Api), Ok(Some(None)));
        for bad in [
            serde_json::json!("5432"),
            serde_json::json!(""),
            serde_json::json!(5432.5),
            serde_json::json!(1e300),
            serde_json::json!(true),
        ] {
            assert_eq!(port(bad.clone(), JsonSource::Api), Err("port"), "{bad}");
        }
        for source in [JsonSource::Import, JsonSource::Env] {
            assert_eq!(
                port(serde_json::json!("5432"), source),
                Ok(Some(Some(5432)))
            );
            assert_eq!(port(serde_json::json!(""), source), Ok(Some(None)));
        }
    }
}
