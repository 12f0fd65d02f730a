//! Who a request acts as ([`Who`]: the token's name and the request id), for the audit log
//! the library keeps.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use broked_connections::{Actor, Grant};

use crate::error::ApiError;
use crate::metrics::RequestId;

/// The actor of a request: the name of the token it presented (`bootstrap` for
/// `--api-token`, `local` on a loopback server without tokens) and its request id.
pub(crate) struct Who(pub(crate) Actor);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Who, ApiError> {
        let name = parts
            .extensions
            .get::<Grant>()
            .map_or("anonymous", |g| g.name.as_str());
        let mut actor = Actor::token(name);
        if let Some(id) = parts.extensions.get::<RequestId>() {
            actor = actor.with_request_id(&id.0);
        }
        Ok(Who(actor))
    }
}

/// One audit record. Never a value: `fields` are names, `value_hashes` HMACs.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AuditRecordOut {
    seq: i64,
    /// RFC 3339, UTC.
    at: String,
    /// A token's name, `cli:<unix user>`, `library`, or `anonymous`.
    #[schema(example = "ci")]
    actor: String,
    #[schema(example = "update")]
    action: String,
    conn_id: Option<String>,
    #[schema(example = json!(["host", "password"]))]
    fields: Vec<String>,
    /// `ok`, `denied`, or the class of the error (`not_found`, `invalid`, …).
    #[schema(example = "ok")]
    outcome: String,
    request_id: Option<String>,
    /// `hmac-sha256:…` of values the call involved (`broked audit hash VALUE` finds them).
    value_hashes: Vec<String>,
    detail: String,
}

impl From<broked_connections::AuditEntry> for AuditRecordOut {
    fn from(r: broked_connections::AuditEntry) -> AuditRecordOut {
        AuditRecordOut {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            conn_id: r.conn_id,
            fields: r.fields,
            outcome: r.outcome,
            request_id: r.request_id,
            value_hashes: r.value_hashes,
            detail: r.detail,
        }
    }
}

/// A page of audit records, newest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPageOut {
    records: Vec<AuditRecordOut>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    next_cursor: Option<i64>,
}

/// The audit log, newest first: who changed, revealed or tested what, and refused
/// authentications. Admin scope, a token not limited to some connections.
#[utoipa::path(get, path = "/api/audit", tag = "audit",
    params(
        ("conn_id" = Option<String>, Query, description = "Only records of this connection"),
        ("action" = Option<String>, Query, description = "Only records of this action (create, update, delete, reveal, test, …)"),
        ("since" = Option<String>, Query, description = "RFC 3339 time, a date (2025-01-31), or a duration back from now (24h, 7d)"),
        ("limit" = Option<u32>, Query, description = "1 to 1000; default 100"),
        ("cursor" = Option<i64>, Query, description = "Records before this seq (next_cursor of the previous page)"),
    ),
    responses((status = 200, body = AuditPageOut), (status = 400, body = crate::error::ErrorBody),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn list_audit(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
    axum::Extension(grant): axum::Extension<Grant>,
    q: Result<
        axum::extract::Query<std::collections::HashMap<String, String>>,
        axum::extract::rejection::QueryRejection,
    >,
) -> Result<axum::Json<AuditPageOut>, ApiError> {
    if grant.is_limited() {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "the audit log is read with an admin token that is not limited to some connections",
        ));
    }
    let q = crate::extract::query(q)?;
    for key in q.keys() {
        if !["conn_id", "action", "since", "limit", "cursor"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(
                "unknown query parameter; the parameters are conn_id, action, since, limit, cursor",
            ));
        }
    }
    let number = |name: &'static str| -> Result<Option<i64>, ApiError> {
        q.get(name)
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    ApiError::invalid(vec![broked_core::FieldError {
                        field: name,
                        message: format!("{name} must be a whole number of at least 1"),
                    }])
                })
            })
            .transpose()
    };
    let limit = number("limit")?.map_or(broked_connections::AuditQuery::DEFAULT_LIMIT, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let query = broked_connections::AuditQuery {
        conn_id: q.get("conn_id").cloned(),
        action: q.get("action").cloned(),
        since: q.get("since").cloned(),
        value_hash: None,
        cursor: number("cursor")?,
        limit,
    };
    let records = crate::state::blocking(&state, move |c| c.audit_list(&query)).await?;
    let next_cursor = (records.len() == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    Ok(axum::Json(AuditPageOut {
        records: records.into_iter().map(AuditRecordOut::from).collect(),
        next_cursor,
    }))
}

/// `--audit-retention`: prunes now and every hour on a thread of its own, as the actor
/// `server`, for as long as the connections are open.
pub(crate) fn prune_every_hour(
    connections: &std::sync::Arc<broked_connections::Connections>,
    retention: std::time::Duration,
) {
    let weak = std::sync::Arc::downgrade(connections);
    let spawned = std::thread::Builder::new()
        .name("broked-audit-retention".into())
        .spawn(move || {
            loop {
                let Some(c) = weak.upgrade() else { return };
                match c.acting(Actor::named("server")).audit_prune(retention) {
                    Ok(p) if p.removed > 0 => {
                        tracing::info!(
                            removed = p.removed,
                            cut_seq = p.cut_seq,
                            "audit records pruned"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot prune the audit log"),
                }
                drop(c);
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the audit retention thread");
    }
}

/// What `since` may be (`broked_connections::parse_since`): a duration back from now (1 to
/// 100000 of m, h, d or w), a date that exists, or an RFC 3339 time; blanks around are trimmed.
pub(crate) fn since_pattern() -> String {
    let ws = crate::patterns::WS;
    let y = "[0-9]{4}";
    let leap = "([0-9]{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)";
    let date = format!(
        "({y}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|{y}-(0[13-9]|1[0-2])-(29|30)\
         |{y}-(0[13578]|1[02])-31|{leap}-02-29)"
    );
    let hm = "([01][0-9]|2[0-3]):[0-5][0-9]";
    let time = format!(r"[Tt ]{hm}:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]{hm})");
    let duration = r"\+?0*(100000|[1-9][0-9]{0,4})[mhdw]";
    format!("^{ws}*({duration}|{date}({time})?){ws}*$")
}

/// The query parameters of `GET /api/audit` as the handler reads them, written into the
/// served document (openapi.rs).
pub(crate) fn document_params(doc: &mut serde_json::Value) {
    let Some(params) = doc["paths"]["/api/audit"]["get"]["parameters"].as_array_mut() else {
        return;
    };
    for param in params {
        let schema = match param["name"].as_str() {
            Some("limit") => serde_json::json!({
                "type": "integer", "minimum": 1,
                "maximum": broked_connections::AuditQuery::MAX_LIMIT,
            }),
            Some("cursor") => {
                serde_json::json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX})
            }
            Some("since") => serde_json::json!({"type": "string", "pattern": since_pattern()}),
            _ => continue,
        };
        param["schema"] = schema;
    }
}

#[cfg(test)]
mod tests {
    /// The document's pattern for `since` and the parser agree on each kind of input.
    #[test]
    fn since_takes_exactly_what_its_pattern_says() {
        let pattern = regex::Regex::new(&super::since_pattern()).unwrap();
        for text in [
            "1m",
            "24h",
            "7d",
            "2w",
            "100000w",
            "+5d",
            "007d",
            " 7d\t",
            "0d",
            "100001d",
            "7s",
            "d",
            "-1d",
            "7 d",
            "2025-01-31",
            "2025-02-28",
            "2025-02-29",
            "2024-02-29",
            "2000-02-29",
            "1900-02-29",
            "0000-02-29",
            "2025-04-30",
            "2025-04-31",
            "2025-12-31",
            "2025-13-01",
            "2025-00-10",
            "2025-1-31",
            "25-01-31",
            "2025-01-31T12:00:00Z",
            "2025-01-31t12:00:00z",
            "2025-01-31T12:00:00.123456+02:00",
            "2025-01-31T24:00:00Z",
            "2025-01-31T12:60:00Z",
            "2025-01-31T12:00:00",
            "2025-01-31T12:00Z",
            "2025-01-31 12:00:00Z",
            "2025-01-31T12:00:00+2:00",
            "2025-01-31T12:00:00.Z",
            "9999-12-31T23:59:59-23:59",
            "0000-01-01T00:00:00+23:59",
            "",
            "yesterday",
        ] {
            assert_eq!(
                pattern.is_match(text),
                broked_connections::parse_since(text).is_ok(),
                "{text:?}"
            );
        }
    }
}
