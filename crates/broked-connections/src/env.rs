//! Connections from the environment: `BROKED_CONN_<ID>` holds a URI or a JSON object, like
//! Airflow's `AIRFLOW_CONN_*`. Looked at before the store by `Connections::resolve`.

use std::collections::HashMap;

use broked_core::{ConnId, Connection, ConnectionInput, Secret};
use serde_json::{Map, Value};

/// Why an environment variable does not hold a connection. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {var} does not hold a valid connection: {reason}")]
pub struct EnvConnError {
    pub var: String,
    pub reason: String,
}

/// Every `BROKED_CONN_*` variable of the process environment, by name.
pub(crate) fn snapshot() -> HashMap<String, Secret> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("BROKED_CONN_")
                .then(|| (k, Secret::new(v.to_string_lossy().into_owned())))
        })
        .collect()
}

/// Reads a variable's value: a URI of docs/uri.md, or a JSON object with the connection's
/// fields (`type` or `conn_type`, `host`, `port`, `schema`, `login`, `password`, `extra` as an
/// object or a string, `description`).
pub(crate) fn parse(id: &ConnId, var: &str, value: &str) -> Result<Connection, EnvConnError> {
    let err = |reason: String| EnvConnError {
        var: var.to_owned(),
        reason,
    };
    let trimmed = value.trim_start();
    if !trimmed.starts_with('{') {
        return Connection::from_uri(id.clone(), value.trim()).map_err(|e| err(e.to_string()));
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) else {
        return Err(err("it starts with { but is not a JSON object".into()));
    };
    let mut input = input_from_object(map, crate::JsonSource::Env).map_err(err)?;
    input.conn_id = Some(id.as_str().to_owned());
    input.validate().map_err(|e| err(e.to_string()))
}

/// A JSON object with a connection's fields as an input (the one reader of
/// [`crate::JsonSource`]). Messages never contain values.
pub(crate) fn input_from_object(
    map: Map<String, Value>,
    source: crate::JsonSource,
) -> Result<ConnectionInput, String> {
    crate::ConnectionUpdate::from_json(map, source)
        .map(ConnectionInput::from)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ConnId {
        ConnId::new("prod-postgres").unwrap()
    }

    #[test]
    fn uri_and_json_forms_agree() {
        let from_uri = parse(
            &id(),
            "V",
            "postgres://etl:pw%40x@db:5432/mydb?sslmode=require",
        )
        .unwrap();
        let from_json = parse(
            &id(),
            "V",
            r#"{"conn_type": "postgres", "host": "db", "port": 5432, "schema": "mydb",
                "login": "etl", "password": "pw@x", "extra": {"sslmode": "require"}}"#,
        )
        .unwrap();
        assert_eq!(from_uri, from_json);
        assert_eq!(from_uri.password.unwrap().expose(), "pw@x");
    }

    /// Issue 18: a JSON variable's host may be a URL, read by the same parser as the API.
    #[test]
    fn a_url_host_in_a_json_variable_is_split() {
        let c = parse(
            &id(),
            "V",
            r#"{"conn_type": "postgres", "host": "postgres://db.internal:5433/analytics",
                "login": "etl", "password": "pw"}"#,
        )
        .unwrap();
        assert_eq!(
            (c.host.as_deref(), c.port, c.schema.as_deref()),
            (Some("db.internal"), Some(5433), Some("analytics"))
        );
        assert_eq!(
            c,
            parse(&id(), "V", "postgres://etl:pw@db.internal:5433/analytics").unwrap(),
            "the same connection as its URI"
        );
        let e = parse(
            &id(),
            "V",
            r#"{"type": "postgres", "host": "postgres://etl:ZEBRA-pw@db/app"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("login and password"), "{e}");
        assert!(!e.to_string().contains("ZEBRA"), "{e}");
    }

    #[test]
    fn errors_name_the_variable_never_the_value() {
        for value in [
            "postgres://u:ZEBRA-pw@h:99999",
            r#"{"type": "postgres", "host": "h", "password": "ZEBRA-pw", "port": "x"}"#,
            r#"{"type": "postgres", "password": "ZEBRA-pw"}"#,
            r#"{"type": "postgres", "host": "h", "password": "ZEBRA-pw", "oops": 1}"#,
            "{ZEBRA-pw",
        ] {
            let e = parse(&id(), "BROKED_CONN_PROD_POSTGRES", value).unwrap_err();
            let text = e.to_string();
            assert!(
                text.starts_with("environment variable BROKED_CONN_PROD_POSTGRES"),
                "{text}"
            );
            assert!(!text.contains("ZEBRA"), "{text}");
        }
    }

    /// Issue 20: validated like every write, so an invalid `extra.rotate_every` is refused
    /// (the schedule never sees variables: it runs on stored connections).
    #[test]
    fn an_invalid_rotate_every_is_refused() {
        let value = r#"{"type": "postgres", "host": "h", "extra": {"rotate_every": "ZEBRA"}}"#;
        let text = parse(&id(), "BROKED_CONN_PROD_POSTGRES", value)
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("environment variable BROKED_CONN_PROD_POSTGRES")
                && text.contains("extra.rotate_every"),
            "{text}"
        );
        assert!(!text.contains("ZEBRA"), "{text}");
        let ok = r#"{"type": "postgres", "host": "h", "extra": {"rotate_every": "30d"}}"#;
        assert!(parse(&id(), "BROKED_CONN_PROD_POSTGRES", ok).is_ok());
    }
}
