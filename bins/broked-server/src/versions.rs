//! Version history over HTTP (issue 17): `GET /api/connections/{conn_id}/versions`,
//! `GET …/versions/{version}` (masked), `POST …/rollback`, `DELETE …/versions` (purge of a
//! deleted connection, admin scope), and optimistic concurrency: the `ETag` of a connection
//! is its version (`"7"`), `If-Match` on PUT, PATCH, DELETE and rollback answers 412 when
//! the connection has another version by now.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use broked_connections::{ConnectionVersion, VersionInfo};
use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;
use utoipa::ToSchema;

use crate::audit::Who;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{JsonBody, path};
use crate::state::{AppState, blocking, write};
use crate::wire::ConnectionOut;

// A connection answer's `ETag` lives in wire.rs, which the GET cache (cache.rs) uses too: it
// cannot import this file (this file reaches cache.rs through state.rs).
pub(crate) use crate::wire::tagged;

/// What an `If-Match` header may hold: `*`, one strong ETag `"N"` or one weak `W/"N"` (N of
/// at most 18 digits: any version number), with spaces or tabs around; or nothing, as if it
/// were not sent. The OpenAPI document serves this pattern (openapi.rs) and [`if_match`]
/// parses with it: one source.
pub(crate) const IF_MATCH_PATTERN: &str = r#"^[ \t]*((\*|(W/)?"([0-9]{1,18})")[ \t]*)?$"#;

/// The version an `If-Match` header asks for: `None` without the header, with an empty one
/// or with `*` (any current version: the write is unconditional, as without it). One strong tag `"N"` is
/// understood; a weak tag (`W/"N"`) never matches in `If-Match` (RFC 9110 §13.1.1), so it
/// answers 412 like a stale one; a list or anything else is a 400 naming the form to send.
pub(crate) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    static FORM: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(IF_MATCH_PATTERN).expect("IF_MATCH_PATTERN is a regex"));
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request("If-Match must be one ETag as a GET returned it, like \"7\" (or *)")
    };
    let form = value
        .to_str()
        .ok()
        .and_then(|text| FORM.captures(text))
        .ok_or_else(bad)?;
    if form.get(3).is_some() {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "If-Match needs the strong ETag a GET returned (\"7\"); a weak one never matches",
        ));
    }
    match form.get(4) {
        None => Ok(None), // `*` or nothing
        Some(digits) => digits.as_str().parse().map(Some).map_err(|_| bad()),
    }
}

/// One version of a connection in its history: never a value, only the names of the
/// fields it changed.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionOut {
    #[schema(example = 7)]
    version: i64,
    /// RFC 3339: when this version was written (for a deleted marker: when it was deleted).
    updated_at: String,
    /// Who wrote it: a token name, `cli:<user>`, `library`; `null` if unknown.
    #[schema(example = "ci-bot")]
    updated_by: Option<String>,
    /// The names of the fields this version changed from the one before.
    #[schema(example = json!(["host", "password"]))]
    changed: Vec<String>,
    /// The marker a delete leaves (no connection in it).
    deleted: bool,
    /// The connection's current version.
    current: bool,
}

impl From<VersionInfo> for VersionOut {
    fn from(v: VersionInfo) -> VersionOut {
        VersionOut {
            version: v.version,
            updated_at: v.updated_at,
            updated_by: v.updated_by,
            changed: v.changed,
            deleted: v.deleted,
            current: v.current,
        }
    }
}

/// One version with the connection as it was, secrets masked as a GET masks them.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionDetailOut {
    #[serde(flatten)]
    summary: VersionOut,
    connection: ConnectionOut,
}

impl From<ConnectionVersion> for VersionDetailOut {
    fn from(v: ConnectionVersion) -> VersionDetailOut {
        VersionDetailOut {
            summary: v.summary.into(),
            connection: v.connection.into(),
        }
    }
}

/// The body of a rollback.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation of the body read by `rollback_body`
pub(crate) struct RollbackIn {
    /// The version to restore (from the history).
    #[schema(example = 3, minimum = 1)]
    version: i64,
}

/// What a purge removed.
#[derive(Serialize, ToSchema)]
pub(crate) struct PurgedOut {
    conn_id: String,
    /// How many kept versions (the deleted marker included) were removed.
    purged: u64,
}

fn rollback_body(body: &[u8]) -> Result<i64, ApiError> {
    let invalid = |message: &str| {
        ApiError::invalid(vec![broked_core::FieldError {
            field: "version",
            message: message.to_owned(),
        }])
    };
    let map = crate::wire::json_object(body)?;
    if let Some(key) = map.keys().find(|k| *k != "version") {
        return Err(ApiError::bad_request(format!(
            "unknown field {key:?}: the body is {{\"version\": N}}"
        )));
    }
    match map.get("version") {
        None => Err(invalid("required: the version to roll back to")),
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid("must be a version number (an integer from 1)")),
    }
}

/// The versions of a connection, newest first (a deleted connection's until it is purged).
#[utoipa::path(get, path = "/api/connections/{conn_id}/versions", tag = "history",
    params(("conn_id" = String, Path)),
    responses((status = 200, body = Vec<VersionOut>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_versions(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<Vec<VersionOut>>, ApiError> {
    let id = path(p)?;
    let list = blocking(&state, move |c| c.versions(&id)).await?;
    Ok(Json(list.into_iter().map(VersionOut::from).collect()))
}

/// One version of a connection, secrets masked.
#[utoipa::path(get, path = "/api/connections/{conn_id}/versions/{version}", tag = "history",
    params(("conn_id" = String, Path), ("version" = i64, Path, minimum = 1)),
    responses((status = 200, body = VersionDetailOut), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn get_version(
    State(state): State<AppState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<VersionDetailOut>, ApiError> {
    let Path((id, version)) = p.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let version: i64 = version
        .parse()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::bad_request("the version must be a number from 1"))?;
    let found = blocking(&state, move |c| c.version(&id, version)).await?;
    Ok(Json(found.into()))
}

/// Write a new version equal to an old one — every field, the secrets too (re-sealed; a
/// password only ever returns with the host it was stored for). A deleted connection is
/// created again. `If-Match` with the current ETag makes it conditional (412 when stale).
#[utoipa::path(post, path = "/api/connections/{conn_id}/rollback", tag = "history",
    params(("conn_id" = String, Path),
           ("If-Match" = Option<String>, Header, description = "The ETag of the version read")),
    request_body = RollbackIn,
    responses((status = 200, body = ConnectionOut), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 412, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    Who(actor): Who,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    b: JsonBody,
) -> Result<Response, ApiError> {
    let id = path(p)?;
    let expected = if_match(&headers)?;
    let version = rollback_body(&b.0)?;
    let info = write(&state, move |c| {
        c.acting(actor).rollback(&id, version, expected)
    })
    .await?;
    Ok(tagged(StatusCode::OK, info))
}

/// Remove the kept history of a deleted connection (admin scope). A connection that exists
/// is refused with 409: delete it first.
#[utoipa::path(delete, path = "/api/connections/{conn_id}/versions", tag = "history",
    params(("conn_id" = String, Path)),
    responses((status = 200, body = PurgedOut), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn purge_versions(
    State(state): State<AppState>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<PurgedOut>, ApiError> {
    let id = path(p)?;
    let conn_id = id.clone();
    let purged = write(&state, move |c| c.acting(actor).purge(&id)).await?;
    Ok(Json(PurgedOut { conn_id, purged }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use axum::response::IntoResponse;

    fn parsed(value: &str) -> Result<Option<i64>, u16> {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        if_match(&headers).map_err(|e| e.into_response().status().as_u16())
    }

    /// The document's pattern and the parser agree: what the pattern takes is never a 400,
    /// what it refuses always is.
    #[test]
    fn if_match_takes_exactly_what_its_pattern_says() {
        let pattern = Regex::new(IF_MATCH_PATTERN).unwrap();
        for (value, expected) in [
            ("*", Ok(None)),
            ("\"7\"", Ok(Some(7))),
            (" \"7\"\t", Ok(Some(7))),
            ("\"0\"", Ok(Some(0))),
            ("\"999999999999999999\"", Ok(Some(999_999_999_999_999_999))),
            ("W/\"7\"", Err(412)),
            ("", Ok(None)),
            (" \t", Ok(None)),
            ("null", Err(400)),
            ("7", Err(400)),
            ("\"\"", Err(400)),
            ("\"-1\"", Err(400)),
            ("\"7\", \"8\"", Err(400)),
            ("W/7", Err(400)),
            ("w/\"7\"", Err(400)),
            ("\"1234567890123456789\"", Err(400)),
        ] {
            assert_eq!(parsed(value), expected, "{value:?}");
            assert_eq!(pattern.is_match(value), expected != Err(400), "{value:?}");
        }
        assert_eq!(if_match(&HeaderMap::new()).ok(), Some(None));
    }
}
