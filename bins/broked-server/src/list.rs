//! `GET /api/connections`: every connection, or one page of them (issues 18 and 19) — filtered
//! by type, a search text and the last test result, paged by a cursor on conn_id.
//!
//! Without `limit` and `cursor` the answer is the array it always was (every match, up to
//! [`MAX_UNPAGED`]); with either, it is a page object with `next_cursor` (docs/api.md,
//! "Paging").

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse as _, Response};
use axum::{Extension, Json};
use broked_connections::{
    ConnId, ConnectionInfo, Connections, Grant, ListQuery, RotationSummary, StatusFilter, Total,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::query;
use crate::state::{AppState, blocking, read};
use crate::wire::{self, ConnectionOut};

/// The most a page may hold, and what a page holds when only `cursor` is given.
pub(crate) const MAX_LIMIT: usize = 1_000;
const DEFAULT_LIMIT: usize = 100;
/// The total is counted up to this many matches (on the first page only); more is reported
/// as `total_exact: false`.
const COUNT_UP_TO: u64 = 10_000;
/// The most connections an answer without `limit` and `cursor` (the array of every match)
/// holds; more is [`too_many`].
pub(crate) const MAX_UNPAGED: usize = 10_000;

/// 400: more than [`MAX_UNPAGED`] connections match a list without paging.
fn too_many() -> ApiError {
    ApiError::bad_request(format!(
        "more than {MAX_UNPAGED} connections match: ask for them a page at a time, with \
         limit (1 to {MAX_LIMIT}) and the next_cursor of each page as cursor, or narrow the \
         list with type, q or status"
    ))
}

/// The list of `GET /api/connections`: the array of every match, or (with `limit` or
/// `cursor`) one page.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum ConnectionListOut {
    All(Vec<ConnectionRowOut>),
    Page(ConnectionPageOut),
}

/// A connection as the list shows it: the connection, and its password rotation (issue 20,
/// `docs/rotation.md`) — all null and `false` for one never rotated and without a schedule.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionRowOut {
    #[serde(flatten)]
    connection: ConnectionOut,
    /// RFC 3339: when the password was last rotated on the database server; `null` if never.
    last_rotated_at: Option<String>,
    /// RFC 3339: when the next scheduled rotation (`extra.rotate_every`) is due; `null`
    /// without a valid schedule.
    next_due_at: Option<String>,
    /// Whether the last rotation failed, or `extra.rotate_every` is invalid.
    rotation_failing: bool,
    /// Why (never a secret); `null` when not failing.
    rotation_error: Option<String>,
}

impl ConnectionRowOut {
    fn new(info: ConnectionInfo, rotation: RotationSummary) -> ConnectionRowOut {
        ConnectionRowOut {
            connection: ConnectionOut::from(info),
            rotation_failing: rotation.failing(),
            last_rotated_at: rotation.last_rotated_at,
            next_due_at: rotation.next_due_at,
            rotation_error: rotation.error,
        }
    }
}

/// A page of the store with each row's rotation (the schedule's `meta` read once).
fn page_with_rotation(
    c: &Connections,
    query: &ListQuery,
) -> Result<(broked_connections::ConnectionPage, Vec<RotationSummary>), broked_connections::Error> {
    let page = c.list_page(query)?;
    let rotation = c.rotation_summaries(&page.items)?;
    Ok((page, rotation))
}

/// One page of connections, in conn_id order.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionPageOut {
    items: Vec<ConnectionRowOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    next_cursor: Option<String>,
    /// How many connections match, on every page together: counted on the first page
    /// (no `cursor`) up to 10,000, else `null`.
    total: Option<u64>,
    /// `false` when there are more than `total` (the count stopped at 10,000); `null`
    /// when not counted.
    total_exact: Option<bool>,
}

/// List connections, sorted by conn_id: all of them (an array, at most 10,000: more is a
/// 400), or a page (with `limit` or `cursor`).
#[utoipa::path(get, path = "/api/connections", tag = "connections",
    params(
        ("type" = Option<String>, Query, description = "Only connections of this type"),
        ("q" = Option<String>, Query,
         description = "Only connections whose conn_id, host or description contains this \
                        text (ASCII letters in either case)"),
        ("status" = Option<String>, Query,
         description = "Only connections whose last test `failing`, or was `ok`, or that are \
                        `untested` (since created or last changed)"),
        ("limit" = Option<u32>, Query,
         description = "Answer with a page of at most this many (1 to 1000)"),
        ("cursor" = Option<String>, Query,
         description = "The `next_cursor` of the page before (pages of 100 without `limit`)"),
    ),
    responses((status = 200, body = ConnectionListOut), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_connections(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    seen: Option<Extension<crate::cache::Seen>>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(q)?;
    let (list, paged) = list_query(&params)?;
    // A token that sees every connection gets the answer kept for this query while nothing
    // was committed since it was read (cache.rs, `Lists`) — SQLite only, whose generation
    // is one look at the WAL index. The generation is read before the rows: they hold every
    // commit it counts, so a kept answer is never older than it.
    if state.inline_reads && !grant.is_limited() {
        let key = format!("{paged} {list:?}");
        // The token check's look, after the request arrived, or one of our own.
        let generation = match seen {
            Some(Extension(crate::cache::Seen(g))) => g,
            None => read(&state, |c| c.generation()).await?,
        };
        if let Some(kept) = state.lists.get(&key, generation) {
            return Ok(kept);
        }
        let answer = list_answer(&state, &grant, list, paged).await?;
        // Serializing strings, numbers and options into memory cannot fail.
        let body = Bytes::from(serde_json::to_vec(&answer).expect("a list serializes"));
        state.lists.keep(key, generation, body.clone());
        return Ok(crate::cache::json_response(body));
    }
    Ok(Json(list_answer(&state, &grant, list, paged).await?).into_response())
}

/// The answer to a list: every match (up to [`MAX_UNPAGED`]) or a page, as `grant` sees them.
async fn list_answer(
    state: &AppState,
    grant: &Grant,
    mut list: ListQuery,
    paged: bool,
) -> Result<ConnectionListOut, ApiError> {
    if !paged {
        // Every match, as always — but never more than MAX_UNPAGED (issue 19): the server
        // holds one answer at a time, and a million connections are asked for by pages.
        // One read for a token that sees every connection (the array is one snapshot, as
        // before); pages of MAX_UNPAGED for one that sees some, until the end.
        list.limit = Some(MAX_UNPAGED);
        let mut items = Vec::new();
        loop {
            let query = list.clone();
            let (page, rotation) = blocking(state, move |c| page_with_rotation(c, &query)).await?;
            items.extend(
                page.items
                    .into_iter()
                    .zip(rotation)
                    .filter(|(i, _)| grant.sees(i.conn_id.as_str()))
                    .map(|(i, r)| ConnectionRowOut::new(i, r)),
            );
            if items.len() > MAX_UNPAGED {
                return Err(too_many());
            }
            match page.next_after {
                None => break,
                Some(_) if !grant.is_limited() => return Err(too_many()),
                Some(after) => list.after = Some(after),
            }
        }
        return Ok(ConnectionListOut::All(items));
    }
    let limit = list.limit.unwrap_or(DEFAULT_LIMIT);
    // A token limited to some connections sees only theirs: read on until the page is full
    // (its total is not counted: the store's count would include the others).
    if grant.is_limited() {
        list.count_up_to = None;
    }
    let mut items = Vec::new();
    let mut total = None;
    let next_cursor = 'pages: loop {
        let query = list.clone();
        let (page, rotation) = blocking(state, move |c| page_with_rotation(c, &query)).await?;
        total = total.or(page.total);
        let n = page.items.len();
        for (i, (item, rotation)) in page.items.into_iter().zip(rotation).enumerate() {
            if !grant.sees(item.conn_id.as_str()) {
                continue;
            }
            let id = item.conn_id.as_str().to_owned();
            items.push(ConnectionRowOut::new(item, rotation));
            if items.len() == limit {
                // Full: the next page starts after this one, if anything follows it.
                let more = i + 1 < n || page.next_after.is_some();
                break 'pages more.then_some(id);
            }
        }
        match page.next_after {
            Some(after) => list.after = Some(after),
            None => break None,
        }
    };
    let (total, total_exact) = match total {
        Some(Total::Exact(n)) => (Some(n), Some(true)),
        Some(Total::MoreThan(n)) => (Some(n), Some(false)),
        None => (None, None),
    };
    Ok(ConnectionListOut::Page(ConnectionPageOut {
        items,
        next_cursor,
        total,
        total_exact,
    }))
}

/// The store query of the parameters, and whether a page was asked for.
fn list_query(params: &HashMap<String, String>) -> Result<(ListQuery, bool), ApiError> {
    let get = |name: &str| params.get(name).map(String::as_str);
    let conn_type = wire::type_filter(get("type"))?;
    let status = match get("status") {
        None | Some("") => None,
        Some("failing") => Some(StatusFilter::Failing),
        Some("ok") => Some(StatusFilter::Passing),
        Some("untested") => Some(StatusFilter::Untested),
        Some(_) => {
            return Err(ApiError::bad_request(
                "status: give failing, ok or untested (or leave it out for every connection)",
            ));
        }
    };
    let search = get("q").filter(|q| !q.is_empty()).map(str::to_owned);
    if search.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(ApiError::bad_request(
            "q: give at most 200 characters to search for",
        ));
    }
    let limit = match get("limit") {
        None => None,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: give a whole number from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    let after = match get("cursor") {
        None | Some("") => None,
        Some(c) => match ConnId::new(c) {
            Ok(id) => Some(id.as_str().to_owned()),
            Err(_) => {
                return Err(ApiError::bad_request(
                    "cursor: give the next_cursor of the page before, unchanged",
                ));
            }
        },
    };
    let paged = limit.is_some() || params.contains_key("cursor");
    let query = ListQuery {
        conn_type,
        search,
        status,
        count_up_to: (paged && after.is_none()).then_some(COUNT_UP_TO),
        after,
        limit: if paged {
            Some(limit.unwrap_or(DEFAULT_LIMIT))
        } else {
            None
        },
    };
    Ok((query, paged))
}

/// What the `params` above cannot say: the values of `status`, the range of `limit`, the
/// form of `cursor` (a conn_id) and the longest `q`.
pub(crate) fn document_params(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let Some(op) = doc
        .paths
        .paths
        .get_mut("/api/connections")
        .and_then(|item| item.get.as_mut())
    else {
        return;
    };
    for param in op.parameters.iter_mut().flatten() {
        let schema = match param.name.as_str() {
            // The empty value is "every connection", as an empty filter in the UI sends.
            "status" => ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["failing", "ok", "untested", ""])),
            "limit" => ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_LIMIT as f64)),
            // Empty is the first page, as without it.
            "cursor" => ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(format!("^$|{}", broked_core::ConnId::RULE)))
                .max_length(Some(128)),
            "q" => ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(200)),
            _ => continue,
        };
        param.schema = Some(schema.into());
    }
}
