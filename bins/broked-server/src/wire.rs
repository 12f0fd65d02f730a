//! HTTP wire shapes and their hand-written conversions from and to library types.
//!
//! Request bodies are read from `serde_json::Value` by hand rather than derived: every wrong
//! field is reported at once, by name, and no serde message can echo a submitted password.

use broked_connections::{
    ConnectionInfo, ConnectionUpdate, PipelineInfo, PipelineUsage, SecretUpdate, TestOutcome,
};
use broked_core::{ConnType, ConnectionInput, FieldError, FieldUse, Secret, TypeInfo};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::ApiError;

const MASK: &str = "********";

/// A connection as the API shows it: secrets masked.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionOut {
    #[schema(example = "prod-postgres")]
    conn_id: String,
    #[serde(rename = "type")]
    #[schema(example = "postgres")]
    conn_type: &'static str,
    host: Option<String>,
    port: Option<u16>,
    schema: Option<String>,
    login: Option<String>,
    /// `********` when set, `null` when not. Never the password.
    #[schema(example = "********")]
    password: Option<&'static str>,
    /// `********` when set, `null` when not. Never the value.
    #[schema(example = "********")]
    extra: Option<&'static str>,
    description: Option<String>,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
    updated_at: String,
}

impl From<ConnectionInfo> for ConnectionOut {
    fn from(c: ConnectionInfo) -> ConnectionOut {
        ConnectionOut {
            conn_id: c.conn_id.as_str().to_owned(),
            conn_type: c.conn_type.as_str(),
            host: c.host,
            port: c.port,
            schema: c.schema,
            login: c.login,
            password: c.has_password.then_some(MASK),
            extra: c.has_extra.then_some(MASK),
            description: c.description,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// The body of POST, PUT and PATCH `/api/connections…` and of `POST /api/connections/test`.
/// Unknown fields are refused; `created_at`/`updated_at` are read-only and ignored.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the request body; bodies are read by `connection_body`
pub(crate) struct ConnectionIn {
    /// Required on create; immutable afterwards.
    conn_id: Option<String>,
    /// One of postgres, mysql, sqlite, http, sftp, s3, generic. Required on create and PUT.
    #[schema(rename = "type")]
    conn_type: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    schema: Option<String>,
    login: Option<String>,
    /// Absent or `********`: keep the stored password; `null`: clear it.
    password: Option<String>,
    /// A JSON object, as a string or as an object. Absent or `********`: keep; `null`: clear.
    #[schema(value_type = Option<Object>)]
    extra: Option<String>,
    description: Option<String>,
}

/// The outcome of a connection test. A failed connect is `success: false`, not an HTTP error.
#[derive(Serialize, ToSchema)]
pub(crate) struct TestOut {
    success: bool,
    #[schema(example = "Connected successfully (sqlx-postgres)")]
    message: String,
    #[schema(example = "sqlx-postgres")]
    driver: &'static str,
    latency_ms: u64,
    /// Whether the session was encrypted and the server verified (issue 16): `verified`
    /// (a checked certificate, or an SSH host key that matched `extra.host_key`),
    /// `unverified` (encrypted, certificate not checked: postgres `prefer`/`require`),
    /// `none` (not encrypted). `null` when the test failed, and for sqlite and generic.
    tls: Option<TlsOut>,
}

/// The `tls` of a test response.
#[derive(Serialize, ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TlsOut {
    Verified,
    Unverified,
    None,
}

impl From<TestOutcome> for TestOut {
    fn from(o: TestOutcome) -> TestOut {
        TestOut {
            success: o.success,
            message: o.message,
            driver: o.driver,
            latency_ms: u64::try_from(o.latency.as_millis()).unwrap_or(u64::MAX),
            tls: o.tls.map(|t| match t.as_str() {
                "verified" => TlsOut::Verified,
                "unverified" => TlsOut::Unverified,
                _ => TlsOut::None,
            }),
        }
    }
}

/// One pipeline that uses a connection.
#[derive(Serialize, ToSchema, Debug)]
pub(crate) struct UsageOut {
    pipeline_id: String,
    name: String,
    /// The ids of the nodes that reference the connection.
    nodes: Vec<String>,
}

impl From<&PipelineUsage> for UsageOut {
    fn from(u: &PipelineUsage) -> UsageOut {
        UsageOut {
            pipeline_id: u.pipeline_id.as_str().to_owned(),
            name: u.name.clone(),
            nodes: u.nodes.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UsedByOut {
    pub(crate) conn_id: String,
    pub(crate) pipelines: Vec<UsageOut>,
}

/// A pipeline definition: `{"name", "nodes": [{"id", "type", "config": {"conn_id", …}}]}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PipelineOut {
    pipeline_id: String,
    name: String,
    #[schema(value_type = Vec<Object>)]
    nodes: Value,
    created_at: String,
    updated_at: String,
}

impl From<PipelineInfo> for PipelineOut {
    fn from(p: PipelineInfo) -> PipelineOut {
        let mut def = p.definition.to_value();
        let nodes = def
            .as_object_mut()
            .and_then(|d| d.remove("nodes"))
            .unwrap_or(Value::Array(Vec::new()));
        PipelineOut {
            pipeline_id: p.pipeline_id.as_str().to_owned(),
            name: p.definition.name,
            nodes,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// The body of `PUT /api/pipelines/{pipeline_id}`.
#[derive(ToSchema)]
#[allow(dead_code)] // documents the request body; read by `PipelineDef::from_value`
pub(crate) struct PipelineIn {
    name: String,
    #[schema(value_type = Vec<Object>)]
    nodes: Vec<Value>,
}

/// One row of the type table.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionTypeOut {
    #[serde(rename = "type")]
    conn_type: &'static str,
    label: &'static str,
    use_case: &'static str,
    default_port: Option<u16>,
    scheme: &'static str,
    /// For each of host, port, schema, login, password, extra: `required`, `optional` or `unused`.
    #[schema(value_type = Object)]
    fields: Map<String, Value>,
    host_hint: &'static str,
    schema_hint: &'static str,
}

impl From<&TypeInfo> for ConnectionTypeOut {
    fn from(t: &TypeInfo) -> ConnectionTypeOut {
        let fields = broked_core::Field::ALL
            .into_iter()
            .map(|f| {
                let usage = match t.conn_type.field_use(f) {
                    FieldUse::Required => "required",
                    FieldUse::Optional => "optional",
                    FieldUse::Unused => "unused",
                };
                (f.name().to_owned(), Value::String(usage.into()))
            })
            .collect();
        ConnectionTypeOut {
            conn_type: t.conn_type.as_str(),
            label: t.label,
            use_case: t.use_case,
            default_port: t.default_port,
            scheme: t.scheme,
            fields,
            host_hint: t.host_hint,
            schema_hint: t.schema_hint,
        }
    }
}

/// Reads a JSON object body.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) => Err(
            ApiError::bad_request("the body is empty; send a JSON object"),
        ),
        Err(e) => Err(ApiError::bad_request(format!(
            "malformed JSON at line {}, column {}",
            e.line(),
            e.column()
        ))),
    }
}

/// Reads a connection body into an update, reporting every wrong field at once.
pub(crate) fn connection_body(body: &[u8]) -> Result<ConnectionUpdate, ApiError> {
    let map = json_object(body)?;
    let mut errors = Vec::new();
    let mut update = ConnectionUpdate::default();
    let wrong = |errors: &mut Vec<FieldError>, field: &'static str, what: &str| {
        errors.push(FieldError {
            field,
            message: format!("{field} must be {what}"),
        })
    };
    for (key, value) in map {
        match key.as_str() {
            "conn_id" => match value {
                Value::String(s) => update.conn_id = Some(s),
                Value::Null => {}
                _ => wrong(&mut errors, "conn_id", "a string"),
            },
            "type" => match value {
                Value::String(s) => update.conn_type = Some(s),
                Value::Null => {}
                _ => wrong(&mut errors, "type", "a string"),
            },
            "host" | "schema" | "login" | "description" => {
                let field: &'static str = match key.as_str() {
                    "host" => "host",
                    "schema" => "schema",
                    "login" => "login",
                    _ => "description",
                };
                let v = match value {
                    Value::String(s) => Some(s),
                    Value::Null => None,
                    _ => {
                        wrong(&mut errors, field, "a string or null");
                        continue;
                    }
                };
                let slot = match field {
                    "host" => &mut update.host,
                    "schema" => &mut update.schema,
                    "login" => &mut update.login,
                    _ => &mut update.description,
                };
                *slot = Some(v);
            }
            "port" => match value {
                Value::Null => update.port = Some(None),
                Value::Number(n) => match n.as_i64() {
                    Some(p) => update.port = Some(Some(p)),
                    None => wrong(&mut errors, "port", "an integer from 1 to 65535"),
                },
                Value::String(s) if s.is_empty() => update.port = Some(None),
                Value::String(s) => match s.trim().parse::<i64>() {
                    Ok(p) => update.port = Some(Some(p)),
                    Err(_) => wrong(&mut errors, "port", "an integer from 1 to 65535"),
                },
                _ => wrong(&mut errors, "port", "an integer from 1 to 65535"),
            },
            "password" => match value {
                Value::String(s) => {
                    update.password = SecretUpdate::from_field(Some(Some(Secret::from(s))))
                }
                Value::Null => update.password = SecretUpdate::Clear,
                _ => wrong(&mut errors, "password", "a string or null"),
            },
            "extra" => match value {
                Value::String(s) => {
                    update.extra = SecretUpdate::from_field(Some(Some(Secret::from(s))))
                }
                v @ Value::Object(_) => {
                    update.extra = SecretUpdate::Set(Secret::new(v.to_string()))
                }
                Value::Null => update.extra = SecretUpdate::Clear,
                _ => wrong(
                    &mut errors,
                    "extra",
                    "a JSON object (or a string holding one) or null",
                ),
            },
            "created_at" | "updated_at" => {}
            _ => errors.push(FieldError {
                field: "body",
                message: format!(
                    "unknown field {key:?}; the fields are conn_id, type, host, port, schema, \
                     login, password, extra, description"
                ),
            }),
        }
    }
    if errors.is_empty() {
        Ok(update)
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// A create body as an input: "keep" has nothing to keep, so it means "not set".
pub(crate) fn into_input(u: ConnectionUpdate) -> ConnectionInput {
    let secret = |s: SecretUpdate| match s {
        SecretUpdate::Set(s) => Some(s),
        // The mask sent in a create: validation refuses it by name (it is no password).
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

/// `?type=` of the list.
pub(crate) fn type_filter(value: Option<&str>) -> Result<Option<ConnType>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(t) => t
            .parse::<ConnType>()
            .map(Some)
            .map_err(|e| ApiError::bad_request(e.to_string())),
    }
}

/// Reads a pipeline body: `name` and `nodes` are required, each node has only `id`, `type` and
/// `config`. The read-only fields of a GET (`pipeline_id`, `created_at`, `updated_at`) may be
/// sent back; a `pipeline_id` must then be the one in the path. Anything else is refused rather
/// than silently dropped.
pub(crate) fn pipeline_body(
    body: &[u8],
    pipeline_id: &str,
) -> Result<Map<String, Value>, ApiError> {
    let mut map = json_object(body)?;
    let mut problems = Vec::new();
    for key in map.keys() {
        match key.as_str() {
            "name" | "nodes" | "created_at" | "updated_at" | "pipeline_id" => {}
            _ => problems.push(format!(
                "unknown field {key:?}; the fields are name and nodes"
            )),
        }
    }
    match map.get("pipeline_id") {
        None => {}
        Some(Value::String(id)) if id == pipeline_id => {}
        Some(_) => problems.push("pipeline_id: must match the pipeline_id of the path".into()),
    }
    if !map.contains_key("nodes") {
        problems.push("nodes: required (an array, which may be empty)".into());
    }
    if let Some(Value::Array(nodes)) = map.get("nodes") {
        for (i, node) in nodes.iter().enumerate() {
            if let Value::Object(node) = node {
                for key in node.keys() {
                    if !matches!(key.as_str(), "id" | "type" | "config") {
                        problems.push(format!(
                            "nodes[{i}]: unknown field {key:?}; a node has id, type and config"
                        ));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("invalid pipeline: {}", problems.join("; ")),
        ));
    }
    for key in ["pipeline_id", "created_at", "updated_at"] {
        map.remove(key);
    }
    Ok(map)
}
