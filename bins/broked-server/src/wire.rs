//! HTTP wire shapes and their hand-written conversions from and to library types.
//!
//! Request bodies are read from `serde_json::Value` by hand rather than derived: every wrong
//! field is reported at once, by name, and no serde message can echo a submitted password.

use broked_connections::{ConnectionInfo, ConnectionUpdate, JsonSource, PipelineInfo, TestOutcome};
use broked_core::{ConnType, ConnectionInput, FieldUse, TypeInfo};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::{ApiError, UsageOut};

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
    /// The version: 1 when created, one more with every change; also the `ETag` (`"7"`).
    /// Earlier versions: `GET /api/connections/{conn_id}/versions`.
    #[schema(example = 7)]
    version: i64,
    /// Who wrote this version: a token name, `cli:<user>`, `library`; `null` if unknown.
    updated_by: Option<String>,
    /// RFC 3339: when this version of the connection was last tested (through the API, the
    /// UI or the CLI); `null` if not since it was created or last changed.
    last_tested_at: Option<String>,
    /// Whether that test succeeded; `null` if not tested.
    last_test_ok: Option<bool>,
    /// What that test said (never a secret); `null` if not tested.
    last_test_message: Option<String>,
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
            version: c.version,
            updated_by: c.updated_by,
            last_tested_at: c.last_test.as_ref().map(|t| t.tested_at.clone()),
            last_test_ok: c.last_test.as_ref().map(|t| t.ok),
            last_test_message: c.last_test.map(|t| t.message),
        }
    }
}

/// The body of POST, PUT and PATCH `/api/connections…` and of `POST /api/connections/test`.
/// Its schema is built from the keys the library's one reader accepts
/// ([`JsonSource::Api`]: the connection keys, the read-only ones and a list row's), so the
/// document cannot list a field the parser refuses, or miss one it reads. Unknown fields are
/// refused (`additionalProperties: false`).
pub(crate) struct ConnectionIn;

impl utoipa::PartialSchema for ConnectionIn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        let nullable = |t: Type| SchemaType::from_iter([t, Type::Null]);
        let text = |description: &str| {
            ObjectBuilder::new()
                .schema_type(nullable(Type::String))
                .description(Some(description))
        };
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::<
                utoipa::openapi::schema::Schema,
            >::FreeForm(false)))
            .description(Some(
                "A connection. Unknown fields are refused; created_at and updated_at are \
                 read-only and ignored.",
            ));
        for key in JsonSource::Api.keys() {
            let schema = match key {
                "conn_id" => text("Required on create; immutable afterwards.")
                    .pattern(Some(broked_core::ConnId::RULE))
                    .max_length(Some(128)),
                "type" => ObjectBuilder::new()
                    .schema_type(nullable(Type::String))
                    .enum_values(Some(
                        ConnType::ALL
                            .iter()
                            .map(|t| Some(t.as_str()))
                            .chain([None])
                            .collect::<Vec<_>>(),
                    ))
                    .description(Some("Required on create and PUT.")),
                "port" => ObjectBuilder::new()
                    .schema_type(nullable(Type::Integer))
                    .minimum(Some(1))
                    .maximum(Some(65535)),
                "password" => text(
                    "Absent or `********`: keep the stored password; `null`: clear it. \
                     `********` for a connection without a password is refused.",
                ),
                "extra" => ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([
                        Type::Object,
                        Type::String,
                        Type::Null,
                    ]))
                    .description(Some(
                        "A JSON object, or a string holding one. Absent or `********`: keep; \
                         `null`: clear. Keys that name the target (host, port, user, ...) are \
                         refused (docs/uri.md).",
                    )),
                "version" => ObjectBuilder::new()
                    .schema_type(nullable(Type::Integer))
                    .read_only(Some(true)),
                "created_at" | "updated_at" | "updated_by" | "last_tested_at"
                | "last_test_message" => ObjectBuilder::new()
                    .schema_type(nullable(Type::String))
                    .read_only(Some(true)),
                "last_test_ok" => ObjectBuilder::new()
                    .schema_type(nullable(Type::Boolean))
                    .read_only(Some(true)),
                other => text(match other {
                    "host" => {
                        "Host name, IP address or URL prefix, a socket path, or the \
                               database file (sqlite)."
                    }
                    "schema" => "Database, bucket or base path.",
                    "login" => "User name or access key id.",
                    _ => "Free text.",
                }),
            };
            object = object.property(key, schema);
        }
        utoipa::openapi::RefOr::T(object.into())
    }
}

impl ToSchema for ConnectionIn {}

/// The outcome of a connection test. A failed connect is `success: false`, not an HTTP error.
#[derive(Serialize, ToSchema)]
pub(crate) struct TestOut {
    success: bool,
    #[schema(example = "Connected successfully (sqlx-postgres)")]
    message: String,
    #[schema(example = "sqlx-postgres")]
    driver: &'static str,
    /// Why the test failed, as a stable name (issue 18; docs/probes.md has the table):
    /// `dns`, `refused`, `timeout`, `tls`, `certificate`, `auth`, `authorization`,
    /// `not_found`, `protocol`, `blocked`, `disabled`, `config`, `other`. `null` on success.
    #[schema(example = "certificate")]
    class: Option<&'static str>,
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
            class: o.failure.map(|f| f.as_str()),
            latency_ms: u64::try_from(o.latency.as_millis()).unwrap_or(u64::MAX),
            tls: o.tls.map(|t| match t.as_str() {
                "verified" => TlsOut::Verified,
                "unverified" => TlsOut::Unverified,
                _ => TlsOut::None,
            }),
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
    /// How a form labels host, port, schema, login, password and extra for this type.
    #[schema(value_type = Object)]
    labels: Map<String, Value>,
    /// An example of extra for this type (may be empty).
    extra_example: &'static str,
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
            labels: broked_core::Field::ALL
                .into_iter()
                .zip(t.labels)
                .map(|(f, l)| (f.name().to_owned(), Value::String(l.into())))
                .collect(),
            extra_example: t.extra_example,
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

/// Reads a connection body into an update, reporting every wrong field at once (the
/// library's one reader of connection objects).
pub(crate) fn connection_body(body: &[u8]) -> Result<ConnectionUpdate, ApiError> {
    ConnectionUpdate::from_json(json_object(body)?, JsonSource::Api)
        .map_err(|e| ApiError::invalid(e.0))
}

/// A PATCH body. Sent as `application/merge-patch+json` (RFC 7386, `merge_patch`), an `extra`
/// object is merged into the stored one — its keys set, a `null` key removed, the others kept —
/// instead of replacing it (issue 18: the UI changes an S3 region without knowing the rest).
pub(crate) fn patch_body(body: &[u8], merge_patch: bool) -> Result<ConnectionUpdate, ApiError> {
    let source = if merge_patch {
        JsonSource::MergePatch
    } else {
        JsonSource::Api
    };
    ConnectionUpdate::from_json(json_object(body)?, source).map_err(|e| ApiError::invalid(e.0))
}

/// The form of `extra.ssh_tunnel` (conn_ids of sftp bastions; none for sqlite), which a
/// create refuses with 422: the unsaved test refuses it alike, as the document says, rather
/// than answering a failed test. Whether the bastions exist is the test's to report.
pub(crate) fn tunnel_form(u: &ConnectionUpdate) -> Result<(), ApiError> {
    let broked_connections::SecretUpdate::Set(extra) = &u.extra else {
        return Ok(());
    };
    let message = match broked_connections::ssh_tunnel_refs(Some(extra.expose())) {
        Err(message) => message,
        Ok(refs) if !refs.is_empty() && u.conn_type.as_deref() == Some("sqlite") => format!(
            "extra.{}: a sqlite connection is a file on this machine; it cannot go through \
             an SSH tunnel",
            broked_core::SSH_TUNNEL_KEY
        ),
        Ok(_) => return Ok(()),
    };
    Err(ApiError::invalid(vec![broked_core::FieldError {
        field: "extra",
        message,
    }]))
}

/// A create body as an input (see `From<ConnectionUpdate> for ConnectionInput`).
pub(crate) fn into_input(u: ConnectionUpdate) -> ConnectionInput {
    ConnectionInput::from(u)
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

/// The strong entity tag of a connection version: `"7"` (issue 17, versions.rs).
pub(crate) fn etag(version: i64) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes")
}

/// A connection answer with its `ETag`.
pub(crate) fn tagged(
    status: axum::http::StatusCode,
    info: ConnectionInfo,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let tag = etag(info.version);
    let mut response = (status, axum::Json(ConnectionOut::from(info))).into_response();
    response.headers_mut().insert(axum::http::header::ETAG, tag);
    response
}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    use super::*;

    /// The document's request body lists exactly the keys the parser accepts (issue 15).
    #[test]
    fn the_connection_schema_has_exactly_the_keys_the_parser_reads() {
        let RefOr::T(Schema::Object(object)) = ConnectionIn::schema() else {
            panic!("ConnectionIn is an object schema");
        };
        let documented: Vec<&str> = object.properties.keys().map(String::as_str).collect();
        assert_eq!(documented, JsonSource::Api.keys());
        // And the parser refuses anything else, accepting each documented key.
        for key in &documented {
            let body = serde_json::json!({ *key: null }).to_string();
            assert!(connection_body(body.as_bytes()).is_ok(), "{key}");
        }
        assert!(connection_body(br#"{"conn_type": "postgres"}"#).is_err());
    }
}
