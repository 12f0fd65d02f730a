//! The request schemas of the OpenAPI document, built from the tables the parser uses (issue 23).
//!
//! utoipa describes the routes; this module states exactly what each body may hold, per
//! operation and per connection type, from one source each: the keys the reader accepts
//! ([`broked_connections::CONNECTION_KEYS`]), the type table ([`ConnType::field_use`]), the
//! extra keys that name a target ([`ConnType::target_keys`]), the id rules ([`ConnId::RULE`],
//! [`PipelineId::RULE`]). What the parser checks by code rather than by table — the host of
//! each type, `str::trim`'s whitespace, a NUL — is written here as a pattern, and the tests
//! below compare each pattern with the parser on generated input, so the two cannot drift.
//!
//! The document is post-processed as JSON: JSON Schema keywords utoipa's model does not carry
//! (`propertyNames`, `patternProperties`, `contentSchema`, `const`, `not`) are needed.
//!
//! What no schema can say — a conn_id that exists already (409), a kept secret whose target
//! changes (422), a pipeline naming a connection that does not exist (422) — is listed in
//! docs/api.md ("What the document cannot say"), each with the status the server answers.

use broked_connections::PipelineId;
use broked_core::{ConnId, ConnType, ExtraKeyRole, Field, FieldUse};
use serde_json::{Map, Value, json};

use crate::patterns::WS;

const MASK: &str = "********";

/// Anything but a control character (`char::is_control`: Unicode `Cc`).
const NOT_CONTROL: &str = r"[^\x00-\x1F\x7F-\x9F]";

/// Neither a control character nor whitespace.
const VISIBLE: &str = r"[^\x00-\x20\x7F-\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// One group of an IPv6 address.
const H16: &str = "[0-9A-Fa-f]{1,4}";

/// An IPv4 address as `Ipv4Addr::from_str` reads it: no leading zeros.
const IPV4: &str = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

/// Which body a connection schema is for: they differ in what is required and in `********`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Body {
    /// `POST /api/connections`: conn_id and type required; the mask is never a secret.
    Create,
    /// `POST /api/connections/test`: type required; conn_id any string (a saved one lends
    /// its secrets); the mask means "the saved secret, else none".
    Test,
    /// `PUT /api/connections/{conn_id}`: a whole connection; the mask keeps a stored secret.
    Replace,
    /// `PATCH /api/connections/{conn_id}`: any subset; the rest comes from the stored row.
    Patch,
}

impl Body {
    pub(crate) const ALL: [Body; 4] = [Body::Create, Body::Test, Body::Replace, Body::Patch];

    /// The schema's name under `components/schemas`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Body::Create => "ConnectionCreate",
            Body::Test => "ConnectionTest",
            Body::Replace => "ConnectionReplace",
            Body::Patch => "ConnectionPatch",
        }
    }

    fn branch_name(self, t: ConnType) -> String {
        format!("{}_{}", self.name(), t.as_str())
    }
}

/// A regex matching exactly the IPv6 literals `Ipv6Addr::from_str` accepts (no zone id).
fn ipv6() -> String {
    // Eight groups, or six and an IPv4 address; or `::` standing for at least one group,
    // with `head` groups before it and at most 7 - head after it (an IPv4 address counts two).
    let mut forms = vec![
        format!("(?:{H16}:){{7}}{H16}"),
        format!("(?:{H16}:){{6}}{IPV4}"),
    ];
    for head in 0..=7usize {
        let before = match head {
            0 => String::new(),
            n => format!("(?:{H16}:){{{}}}{H16}", n - 1),
        };
        let room = 7 - head;
        let after = match room {
            0 => String::new(),
            1 => format!("(?:{H16})?"),
            n => format!(
                "(?:(?:{H16}:){{0,{}}}{H16}|(?:{H16}:){{0,{}}}{IPV4})?",
                n - 1,
                n - 2
            ),
        };
        forms.push(format!("{before}::{after}"));
    }
    format!("(?:{})", forms.join("|"))
}

/// The hosts of type `t` (`canonical_host` in broked-core), trimmed of whitespace first.
/// `blank_ok`: an empty or blank host is "no host" (s3, or a field that is not required).
pub(crate) fn host_pattern(t: ConnType, blank_ok: bool) -> String {
    let body = if t == ConnType::Sqlite {
        // A file path: anything without control characters.
        format!("{NOT_CONTROL}*{VISIBLE}")
    } else {
        let ip6 = ipv6();
        let name = format!("(?:[A-Za-z0-9._-]{{1,253}}|{ip6}|\\[{ip6}\\])");
        let plain = match t {
            // A Unix socket: a path.
            ConnType::Postgres | ConnType::Mysql => format!("(?:{name}|/{NOT_CONTROL}*)"),
            _ => name,
        };
        format!("(?:{plain}|{})", url_host_pattern(t))
    };
    let body = if blank_ok {
        format!("(?:{body})?")
    } else {
        body
    };
    format!("^{WS}*{body}{WS}*$")
}

/// A port as `u16::from_str` reads it, 1 to 65535 (leading zeros allowed).
const PORT: &str =
    "0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

/// A host of type `t` written as a URL (`broked_core::endpoint::split`, issue 18): one of the
/// type's schemes in any case, then a host name or a bracketed IPv6 address with an optional
/// port, or an IPv6 address without brackets (the whole authority, no port, no path); then a
/// path, without `?`, `#`, `@` or a second `://` (for s3: one segment, the bucket). A path that
/// is not UTF-8 once percent-decoded is not stated (docs/uri.md).
fn url_host_pattern(t: ConnType) -> String {
    let schemes: Vec<String> = broked_core::endpoint::url_schemes(t)
        .into_iter()
        .map(|s| {
            s.chars()
                .map(|c| match c {
                    c if c.is_ascii_alphabetic() => {
                        format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                    }
                    c => regex_escape(c),
                })
                .collect()
        })
        .collect();
    let ip6 = ipv6();
    // After the first `/`: no control character, `?`, `#` or `@`, and no `://` (a DFA of
    // "after a colon", "after a colon and a slash" written out).
    let c = r"[^\x00-\x1F\x7F-\x9F?#@:]";
    let o = r"[^\x00-\x1F\x7F-\x9F?#@:/]";
    let no_scheme = format!("(?:{c}|:(?::|/:)*(?:{o}|/{o}))*(?::(?::|/:)*/?)?");
    let path = if t == ConnType::S3 {
        // One segment: it may end in `:` only before at most one `/`.
        let seg = r"[^\x00-\x1F\x7F-\x9F?#@/]";
        let seg_end = r"[^\x00-\x1F\x7F-\x9F?#@/:]";
        format!("(?:/|/{seg}*{seg_end}/*|/{seg}*:/?)?")
    } else {
        format!("(?:/{no_scheme})?")
    };
    format!(
        "(?:(?:{})://(?:(?:[A-Za-z0-9._-]{{1,253}}|\\[{ip6}\\])(?::{PORT})?{path}|{ip6}))",
        schemes.join("|")
    )
}

/// A key as the target table compares it: `-` and `_` alike, any ASCII case, trimmed.
fn key_pattern(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '_' | '-' => "[-_]".to_owned(),
            c if c.is_ascii_alphabetic() => {
                format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
            }
            c => regex_escape(c),
        })
        .collect()
}

fn regex_escape(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\{c}")
    }
}

fn whole_key(alternatives: &[String]) -> String {
    format!("^{WS}*(?:{}){WS}*$", alternatives.join("|"))
}

/// The extra keys that would name the target of a `t` connection, refused in `extra`.
pub(crate) fn naming_pattern(t: ConnType) -> Option<String> {
    let keys: Vec<String> = t
        .target_keys()
        .into_iter()
        .filter(|(_, role)| matches!(role, ExtraKeyRole::Names { .. }))
        .map(|(k, _)| key_pattern(k))
        .collect();
    (!keys.is_empty()).then(|| whole_key(&keys))
}

/// `extra.ssh_tunnel` in any spelling the parser reads.
pub(crate) fn tunnel_key_pattern() -> String {
    whole_key(&[key_pattern(broked_core::SSH_TUNNEL_KEY)])
}

/// `extra.rotate_every` in any spelling the parser reads.
pub(crate) fn rotate_every_key_pattern() -> String {
    whole_key(&[key_pattern(broked_core::ROTATE_EVERY_KEY)])
}

/// A value `broked_core::parse_rotate_every` reads: white space around a whole number (a `+`
/// and leading zeros allowed, as `u64` parses it) from 1 to 100,000 and `m`, `h`, `d` or
/// `w`, or from 1 to 8,640,000,000 (100,000 days) and `s`.
pub(crate) fn rotate_every_pattern() -> String {
    let units = "(?:[1-9][0-9]{0,4}|100000)[mhdw]";
    let secs = "(?:[1-9][0-9]{0,8}|[1-7][0-9]{9}|8[0-5][0-9]{8}|86[0-3][0-9]{7}|8640000000)s";
    format!("^{WS}*\\+?0*(?:{units}|{secs}){WS}*$")
}

/// The extra object of a `t` connection (`None`: a PATCH without a type, whose type is the
/// stored row's).
fn extra_object(t: Option<ConnType>) -> Value {
    let slug =
        json!({"type": "string", "pattern": format!("^{WS}*[a-z0-9][a-z0-9_-]{{0,127}}{WS}*$")});
    let tunnel = match t {
        Some(ConnType::Sqlite) => json!({"type": "null"}),
        _ => json!({"anyOf": [
            {"type": "null"},
            slug,
            {"type": "array", "minItems": 1, "items": slug},
        ]}),
    };
    let mut object = json!({
        "type": "object",
        "description": "The extra object: driver options, never keys that name the target.",
        "patternProperties": {
            tunnel_key_pattern(): tunnel,
            // Issue 20: the interval of scheduled password rotation (docs/rotation.md).
            rotate_every_key_pattern(): {"type": "string", "pattern": rotate_every_pattern()},
        },
    });
    if let Some(names) = t.and_then(naming_pattern) {
        object["propertyNames"] = json!({"not": {"pattern": names}});
    }
    object
}

/// The component schema of the extra object of type `t` (`None`: PATCH without a type).
fn extra_name(t: Option<ConnType>) -> String {
    format!("Extra_{}", t.map_or("untyped", ConnType::as_str))
}

/// The `extra` field: an object, or a string holding one (the seed's form), or null.
fn extra_field(t: Option<ConnType>, body: Body) -> Value {
    let object = json!({"$ref": format!("#/components/schemas/{}", extra_name(t))});
    // "": clear (none on a create); the mask: keep the stored one.
    let plain: Vec<&str> = if body == Body::Create {
        vec![""]
    } else {
        vec!["", MASK]
    };
    json!({
        "description": "A JSON object, or a string holding one (then its text must be such an \
            object: `contentSchema`). `null` or \"\" clears it; absent or `********` keeps the \
            stored one (not on create). Keys that would name the target (host, port, user, ...) \
            are refused: docs/uri.md.",
        "anyOf": [
            {"type": "null"},
            object,
            {"type": "string", "enum": plain},
            {"type": "string", "contentMediaType": "application/json", "contentSchema": object},
        ]
    })
}

/// The component schema of the hosts of type `t` (once each: the patterns are long).
fn host_ref(t: ConnType, blank_ok: bool) -> String {
    format!("#/components/schemas/{}", host_name(t, blank_ok))
}

fn host_name(t: ConnType, blank_ok: bool) -> String {
    let kind = if blank_ok { "HostOrBlank" } else { "Host" };
    format!("{kind}_{}", t.as_str())
}

/// One property of a connection body of type `t` (`None`: a PATCH without a type).
fn property(key: &str, t: Option<ConnType>, body: Body) -> Value {
    let no_nul = json!({"type": ["string", "null"], "pattern": "^[^\\u0000]*$"});
    let field = Field::ALL.into_iter().find(|f| f.name() == key);
    let usage = match (field, t) {
        (Some(f), Some(t)) => Some(t.field_use(f)),
        _ => None,
    };
    // A field the type does not use may be sent empty (the UI clears it with null).
    if usage == Some(FieldUse::Unused) && key == "port" {
        return json!({"type": "null", "description": "Not used by this type."});
    }
    if usage == Some(FieldUse::Unused) {
        let mut empty = vec![Value::Null, json!("")];
        if key == "password" && body != Body::Create {
            empty.push(json!(MASK));
        }
        return json!({"enum": empty, "description": "Not used by this type: null or empty."});
    }
    let required = usage == Some(FieldUse::Required);
    match key {
        "conn_id" => match body {
            Body::Create => json!({"type": "string", "pattern": ConnId::RULE, "maxLength": 128}),
            Body::Test => json!({
                "type": ["string", "null"],
                "description": "The conn_id of a saved connection lends its password and extra \
                    (sent as `********` or left out), toward its own target only; any other \
                    value is ignored.",
            }),
            Body::Replace | Body::Patch => json!({
                "type": ["string", "null"], "pattern": ConnId::RULE, "maxLength": 128,
                "description": "Optional; if sent, the conn_id of the path (it is immutable).",
            }),
        },
        "type" => match t {
            Some(t) => json!({"type": "string", "const": t.as_str()}),
            None => json!({"type": "null", "description": "Absent or null: the stored type."}),
        },
        "host" => {
            let t_host = t.unwrap_or(ConnType::Sqlite); // without a type: any type's host
            if required {
                json!({"$ref": host_ref(t_host, false)})
            } else {
                json!({"anyOf": [{"type": "null"}, {"$ref": host_ref(t_host, true)}]})
            }
        }
        "port" => {
            let kind = if required {
                json!("integer")
            } else {
                json!(["integer", "null"])
            };
            json!({"type": kind, "minimum": 1, "maximum": 65535})
        }
        "password" => {
            if body == Body::Create {
                json!({"type": ["string", "null"], "not": {"const": MASK},
                       "description": "Encrypted at rest, never returned."})
            } else {
                json!({"type": ["string", "null"],
                       "description": "Absent or `********`: keep the stored password; `null` \
                           or \"\": clear it."})
            }
        }
        "extra" => extra_field(t, body),
        "schema" | "description" => no_nul,
        "login" => json!({"type": ["string", "null"]}),
        // created_at, updated_at: what a GET shows may be sent back; ignored, whatever it is.
        _ => json!({"readOnly": true, "description": "Ignored (set by the server)."}),
    }
}

/// The body of `body` for a connection of type `t` (`None`: PATCH without a type).
fn branch(t: Option<ConnType>, body: Body) -> Value {
    let mut properties = Map::new();
    for key in broked_connections::JsonSource::Api.keys() {
        properties.insert(key.to_owned(), property(key, t, body));
    }
    let mut required: Vec<&str> = Vec::new();
    if body == Body::Create {
        required.push("conn_id");
    }
    if t.is_some() {
        required.push("type");
    }
    if let (Some(t), Body::Create | Body::Test | Body::Replace) = (t, body) {
        required.extend(
            Field::ALL
                .into_iter()
                .filter(|f| t.field_use(*f) == FieldUse::Required)
                .map(Field::name),
        );
    }
    let mut schema = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": properties,
        "required": required,
    });
    if t == Some(ConnType::S3) {
        // A port needs a host (the endpoint); without one the port is AWS's. (A PATCH that
        // leaves host out keeps the stored one.)
        let given: &[&str] = if body == Body::Patch {
            &["port", "host"]
        } else {
            &["port"]
        };
        schema["if"] = json!({"required": given, "properties": {"port": {"type": "integer"}}});
        schema["then"] = json!({
            "required": ["host"],
            "properties": {"host": {"$ref": host_ref(ConnType::S3, false)}},
        });
    }
    schema
}

/// Every connection and pipeline body schema, by component name.
pub(crate) fn schemas() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for t in ConnType::ALL.map(Some).into_iter().chain([None]) {
        out.push((extra_name(t), extra_object(t)));
    }
    for t in ConnType::ALL {
        for blank_ok in [false, true] {
            let description = format!(
                "A host of a {t} connection{} (surrounding whitespace is trimmed).",
                if blank_ok { ", or blank for none" } else { "" }
            );
            out.push((
                host_name(t, blank_ok),
                json!({"type": "string", "pattern": host_pattern(t, blank_ok), "description": description}),
            ));
        }
    }
    for body in Body::ALL {
        let mut refs = Vec::new();
        let mut mapping = Map::new();
        for t in ConnType::ALL {
            let name = body.branch_name(t);
            let reference = format!("#/components/schemas/{name}");
            mapping.insert(t.as_str().to_owned(), json!(reference));
            refs.push(json!({"$ref": reference}));
            out.push((name, branch(Some(t), body)));
        }
        let description = match body {
            Body::Create => {
                "A new connection: one schema per type (`GET /api/connection-types` says which fields each requires or does not use). Unknown fields are refused."
            }
            Body::Test => {
                "A connection to test without saving it: the body of a create, except that conn_id may be any string and `********` stands for a saved secret."
            }
            Body::Replace => {
                "The whole connection: fields left out become empty, except password and extra, which are kept when absent or `********`."
            }
            Body::Patch => {
                "The fields to change. Without `type` the stored type's rules apply (so which values pass depends on the stored row); with it, that type's."
            }
        };
        let mut schema = json!({"description": description, "oneOf": refs});
        if body == Body::Patch {
            let untyped = format!("{}_untyped", body.name());
            out.push((untyped.clone(), branch(None, body)));
            schema["oneOf"]
                .as_array_mut()
                .expect("array")
                .push(json!({"$ref": format!("#/components/schemas/{untyped}")}));
        } else {
            schema["discriminator"] = json!({"propertyName": "type", "mapping": mapping});
        }
        out.push((body.name().to_owned(), schema));
    }
    out.push(("PipelineIn".to_owned(), pipeline_in()));
    out
}

/// The body of `PUT /api/pipelines/{pipeline_id}` (`pipeline_body` and `PipelineDef::from_value`).
fn pipeline_in() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["name", "nodes"],
        "description": "A pipeline definition. Node ids must differ (JSON Schema cannot say so: 422). Every config.conn_id must name an existing connection (422 naming those that do not).",
        "properties": {
            "name": {"type": "string", "pattern": NOT_BLANK},
            "nodes": {"type": "array", "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["id", "type"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "type": {"type": "string", "minLength": 1},
                    "config": {
                        "type": ["object", "null"],
                        "properties": {"conn_id": {"type": "string", "pattern": ConnId::RULE}},
                    },
                },
            }},
            "pipeline_id": {"type": "string", "pattern": PipelineId::RULE, "description": "Optional; if sent, the pipeline_id of the path."},
            "created_at": {"readOnly": true, "description": "Ignored."},
            "updated_at": {"readOnly": true, "description": "Ignored."},
        },
    })
}

/// A name that is not blank: some character `str::trim` keeps.
const NOT_BLANK: &str =
    r"[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// The document as `/api/openapi.json` serves it: utoipa's, refined.
pub(crate) fn served(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut value = serde_json::to_value(doc).expect("an OpenAPI document is JSON");
    refine(&mut value);
    value
}

/// The request body and path parameters of each operation, and the links of the stateful
/// phase, written into the served document.
pub(crate) fn refine(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    if let Some(schemas) = schemas.as_object_mut() {
        schemas.remove("ConnectionIn");
        for (name, schema) in self::schemas() {
            schemas.insert(name, schema);
        }
        // `{"version": N}` and nothing else (versions.rs, rollback_body).
        if let Some(rollback) = schemas.get_mut("RollbackIn") {
            rollback["additionalProperties"] = json!(false);
        }
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/api/connections") => Some(Body::Create.name()),
                ("post", "/api/connections/test") => Some(Body::Test.name()),
                ("put", p) if p.starts_with("/api/connections/") => Some(Body::Replace.name()),
                ("patch", p) if p.starts_with("/api/connections/") => Some(Body::Patch.name()),
                _ => None,
            };
            if let Some(name) = body {
                op["requestBody"]["content"]["application/json"]["schema"] =
                    json!({"$ref": format!("#/components/schemas/{name}")});
            }
            let params = op.get_mut("parameters").and_then(Value::as_array_mut);
            for param in params.into_iter().flatten() {
                if param["in"] == "header" && param["name"] == "If-Match" {
                    param["schema"] =
                        json!({"type": "string", "pattern": crate::versions::IF_MATCH_PATTERN});
                    continue;
                }
                if param["in"] != "path" {
                    continue;
                }
                let rule = match param["name"].as_str() {
                    Some("conn_id") => ConnId::RULE,
                    Some("pipeline_id") => PipelineId::RULE,
                    _ => continue,
                };
                param["schema"] = json!({"type": "string", "pattern": rule});
            }
        }
    }
    links(paths);
    crate::audit::document_params(doc);
}

/// OpenAPI links: a created connection's conn_id (a registered pipeline's pipeline_id) feeds
/// every operation that takes one, so the stateful phase of schemathesis works on real rows.
/// Any operation documented later under `/api/connections/{conn_id}…` or
/// `/api/pipelines/{pipeline_id}…` is linked too.
fn links(paths: &mut Map<String, Value>) {
    let mut targets: Vec<(&str, String, String)> = Vec::new(); // (parameter, operationId, name)
    for (path, item) in paths.iter() {
        let parameter = if path.starts_with("/api/connections/{conn_id}") {
            "conn_id"
        } else if path.starts_with("/api/pipelines/{pipeline_id}") {
            "pipeline_id"
        } else {
            continue;
        };
        for (method, op) in item.as_object().into_iter().flatten() {
            if let Some(id) = op["operationId"].as_str() {
                let name = format!("{method}{}", path.replace(['{', '}'], ""))
                    .replace('/', "_")
                    .replace("_api_", "_");
                targets.push((parameter, id.to_owned(), name));
            }
        }
    }
    for (path, method, status, parameter) in [
        ("/api/connections", "post", "201", "conn_id"),
        ("/api/pipelines/{pipeline_id}", "put", "200", "pipeline_id"),
    ] {
        let Some(response) = paths
            .get_mut(path)
            .and_then(|item| item.get_mut(method))
            .and_then(|op| op.get_mut("responses"))
            .and_then(|r| r.get_mut(status))
        else {
            continue;
        };
        let mut links = Map::new();
        for (p, operation_id, name) in &targets {
            if *p != parameter {
                continue;
            }
            links.insert(
                name.clone(),
                json!({
                    "operationId": operation_id,
                    "parameters": {parameter: format!("$response.body#/{parameter}")},
                }),
            );
        }
        response["links"] = Value::Object(links);
    }
}

#[cfg(test)]
mod tests;
