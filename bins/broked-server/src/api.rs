//! The routes of SPEC §4, documented with OpenAPI from the same code (utoipa-axum registers a
//! handler and its documentation together, so the document cannot miss a route).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json};
use broked_connections::{Grant, IfChanged, PipelineDef, UpdateMode};
use broked_core::ConnType;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::Who;
use crate::error::{ApiError, ErrorBody, UsageOut};
use crate::extract::{BODY_LIMIT, JsonBody, is_json, path, query};
pub(crate) use crate::state::AppState;
use crate::state::{blocking, read, write};
use crate::wire::{
    self, ConnectionIn, ConnectionOut, ConnectionTypeOut, PipelineIn, PipelineOut, TestOut,
    UsedByOut,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "broked connections",
        description = "Credentials for databases, APIs and file services, encrypted at rest. \
                       Passwords and extra values are never returned: they read `********`."
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn router(state: AppState) -> axum::Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(crate::list::list_connections, create_connection))
        .routes(routes!(
            get_connection,
            put_connection,
            patch_connection,
            delete_connection
        ))
        .routes(routes!(test_saved))
        .routes(routes!(
            crate::versions::list_versions,
            crate::versions::purge_versions
        ))
        .routes(routes!(crate::versions::get_version))
        .routes(routes!(crate::versions::rollback))
        .routes(routes!(crate::rotation::rotate_password))
        .routes(routes!(crate::rotation::rotation_status))
        .routes(routes!(used_by))
        .routes(routes!(list_pipelines))
        .routes(routes!(get_pipeline, put_pipeline, delete_pipeline))
        .routes(routes!(connection_types))
        .routes(routes!(
            crate::tokens::list_tokens,
            crate::tokens::create_token
        ))
        .routes(routes!(crate::tokens::revoke_token))
        .routes(routes!(crate::tokens::whoami))
        .routes(routes!(crate::audit::list_audit))
        .split_for_parts();
    // `POST /api/connections/test` is routed by the alias below; only its documentation
    // comes from here.
    let mut doc = doc;
    doc.merge(
        OpenApiRouter::<AppState>::new()
            .routes(routes!(test_unsaved))
            .split_for_parts()
            .1,
    );
    document_test_alias(&mut doc);
    document_type_filter(&mut doc);
    crate::list::document_params(&mut doc);
    // Every request schema, path rule and link (openapi.rs), written on the document as JSON.
    let doc = Arc::new(crate::openapi::served(&doc));
    // `/api/connections/test` is a static route, so it would shadow a connection named `test`
    // for every other method: send those to the connection handlers.
    let test_alias = axum::routing::post(test_unsaved)
        .get(|s, seen| get_connection(s, seen, test_id()))
        .put(|s, g, w, h, b| put_connection(s, g, w, test_id(), h, b))
        .patch(|s, g, w, h, b| patch_connection(s, g, w, test_id(), h, b))
        .delete(|s, w, h, q| delete_connection(s, w, test_id(), h, q));
    let api = api
        .route("/api/connections/test", test_alias)
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json(doc.as_ref().clone()) }
            }),
        )
        .merge(crate::panic_hook::debug_routes().unwrap_or_default())
        // Unknown /api routes answer behind the token check too (401 before 404), rather than
        // falling through to the router's general fallback.
        // Behind the token check like the API: any valid token may read it (auth.rs).
        .route("/metrics", get(metrics))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .fallback(api_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(crate::auth::RequireTokenLayer::new(crate::auth::Guard {
            connections: state.connections.clone(),
            token: state.token.clone(),
            failures: state.failures.clone(),
            gets: state.gets.clone(),
        }));
    axum::Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // One layer made of the five (outermost first), not five `Router::layer`s: axum boxes
        // each of those around every route, and a boxed route clones everything inside it
        // on every call — 37 allocations per API request, a tenth of a kept GET (issue 19).
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn(log_request))
                .layer(axum::middleware::from_fn(no_store))
                // A bug must not drop the connection: a JSON 500 with a generic message (the
                // panic text, which could hold anything, goes nowhere but the log's
                // "panicked" line).
                .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                    panic_response,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    Duration::from_secs(120),
                ))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
        .with_state(state)
}

/// One INFO event per request: its id, method, matched route, status, latency in
/// microseconds; the same counted in `/metrics`. The id (`X-Request-Id` from a proxy when it
/// is plain, else a new one) is sent back in `X-Request-Id`.
///
/// The route is the template (`/api/connections/{conn_id}`), not the path: no id and no query
/// string is logged. One flat event rather than a span plus an event (tower-http's
/// `TraceLayer`): the span cost as much CPU as the store read of a GET (docs/BENCHMARKS.md).
async fn log_request(mut req: Request, next: axum::middleware::Next) -> axum::response::Response {
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let id = crate::metrics::RequestId::for_request(req.headers());
    req.extensions_mut().insert(id.clone());
    let start = std::time::Instant::now();
    let mut response = next.run(req).await;
    let elapsed = start.elapsed();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    tracing::info!(
        target: "broked_server::request",
        request_id = %id.0,
        method = %method,
        route,
        status = response.status().as_u16(),
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    crate::metrics::METRICS.request(route, &method, response.status().as_u16(), elapsed);
    if let Ok(v) = axum::http::HeaderValue::from_str(&id.0) {
        response
            .headers_mut()
            .insert(crate::metrics::X_REQUEST_ID, v);
    }
    response
}

/// Every `/api` answer and every JSON answer (errors of the fallbacks, the body limit, the
/// timeout and a caught panic included) gets `Cache-Control: no-store` — connection data must
/// not stay in a browser's or a proxy's cache — and `X-Content-Type-Options: nosniff`, so a
/// browser never reads JSON as anything else.
async fn no_store(req: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let api = req.uri().path().starts_with("/api");
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json);
    if api || json {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// `/api/connections/test` also serves the connection named `test` for GET, PUT, PATCH and
/// DELETE (see the alias in [`router`]): the document says so, so that it lists exactly the
/// methods the route has (and a 405's `Allow` matches it).
fn document_test_alias(doc: &mut utoipa::openapi::OpenApi) {
    let Some(item) = doc.paths.paths.get("/api/connections/{conn_id}").cloned() else {
        return;
    };
    let without_id = |op: Option<utoipa::openapi::path::Operation>| {
        op.map(|mut op| {
            if let Some(params) = &mut op.parameters {
                params.retain(|p| p.name != "conn_id");
            }
            if let Some(id) = &mut op.operation_id {
                id.push_str("_named_test");
            }
            op
        })
    };
    if let Some(alias) = doc.paths.paths.get_mut("/api/connections/test") {
        alias.get = without_id(item.get);
        alias.put = without_id(item.put);
        alias.patch = without_id(item.patch);
        alias.delete = without_id(item.delete);
    }
}

/// `?type=` takes only the names of the type table, or nothing (anything else is a 400).
fn document_type_filter(doc: &mut utoipa::openapi::OpenApi) {
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
        if param.name == "type" {
            param.schema = Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    // The empty value is "every type", as an empty filter in the UI sends.
                    .enum_values(Some(ConnType::ALL.iter().map(|t| t.as_str()).chain([""])))
                    .into(),
            );
        }
    }
}

fn test_id() -> Result<Path<String>, PathRejection> {
    Ok(Path("test".to_owned()))
}

/// Create a connection. The password and extra are encrypted before they are stored.
#[utoipa::path(post, path = "/api/connections", tag = "connections", request_body = ConnectionIn,
    responses((status = 201, body = ConnectionOut), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_connection(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Who(actor): Who,
    b: JsonBody,
) -> ApiResult<axum::response::Response> {
    let input = wire::into_input(wire::connection_body(&b.0)?);
    if let Some(id) = &input.conn_id {
        if !grant.sees(id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token may not create that connection: its conn_id is outside the \
                 token's connections",
            ));
        }
    }
    let extra = match &input.extra {
        Some(e) => broked_connections::SecretUpdate::Set(e.clone()),
        None => broked_connections::SecretUpdate::Keep,
    };
    tunnel_in_scope(&state, &grant, &extra).await?;
    rotation_admin_in_scope(&grant, &extra)?;
    let created = write(&state, move |c| c.acting(actor).create(input)).await?;
    Ok(crate::versions::tagged(StatusCode::CREATED, created))
}

/// One connection, secrets masked. Its `ETag` is its version (`"7"`): send it back in
/// `If-Match` to make a PUT, PATCH, DELETE or rollback conditional.
#[utoipa::path(get, path = "/api/connections/{conn_id}", tag = "connections",
    params(("conn_id" = String, Path)),
    responses((status = 200, body = ConnectionOut,
               headers(("ETag" = String, description = "The version, as a strong tag: \"7\""))),
              (status = 404, body = ErrorBody)))]
async fn get_connection(
    State(state): State<AppState>,
    seen: Option<Extension<crate::cache::Seen>>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<axum::response::Response> {
    let id = path(p)?;
    // One store call either way: with a kept answer it says whether that is still current
    // (cache.rs) — none when the token check of this request already saw the generation the
    // answer was kept at (for `/api/connections/{conn_id}` the check then answered itself;
    // here for the `/api/connections/test` alias).
    let kept = state.gets.get(&id);
    if let (Some(k), Some(Extension(crate::cache::Seen(g)))) = (&kept, seen) {
        if k.generation == Some(g) {
            return Ok(k.response());
        }
    }
    let since = kept.as_ref().and_then(|k| k.generation);
    let asked = id.clone();
    match (
        read(&state, move |c| c.get_if_changed(&asked, since)).await?,
        kept,
    ) {
        (IfChanged::Unchanged, Some(kept)) => Ok(kept.response()),
        // Not asked for (no generation was given), never answered: read as any GET.
        (IfChanged::Unchanged, None) => {
            let info = read(&state, move |c| c.get(&id)).await?;
            Ok(crate::versions::tagged(StatusCode::OK, info))
        }
        (IfChanged::Read { info, generation }, _) => {
            let kept = crate::cache::Kept::new(info, generation);
            let response = kept.response();
            state.gets.keep(id, kept);
            Ok(response)
        }
    }
}

// The request's parts each handler extracted, passed on as they are (PUT and PATCH share it).
#[allow(clippy::too_many_arguments)]
async fn update(
    state: AppState,
    grant: Grant,
    actor: broked_connections::Actor,
    p: Result<Path<String>, PathRejection>,
    b: JsonBody,
    mode: UpdateMode,
    merge_patch: bool,
    headers: &axum::http::HeaderMap,
) -> ApiResult<axum::response::Response> {
    let expected = crate::versions::if_match(headers)?;
    let id = path(p)?;
    let update = match mode {
        UpdateMode::Merge => wire::patch_body(&b.0, merge_patch)?,
        UpdateMode::Replace => wire::connection_body(&b.0)?,
    };
    tunnel_in_scope(&state, &grant, &update.extra).await?;
    rotation_admin_in_scope(&grant, &update.extra)?;
    let updated = write(&state, move |c| {
        c.acting(actor)
            .update_expecting(&id, update, mode, expected)
    })
    .await?;
    Ok(crate::versions::tagged(StatusCode::OK, updated))
}

/// Replace a connection. `password`/`extra` absent or `********` keep the stored value; `null` clears it.
#[utoipa::path(put, path = "/api/connections/{conn_id}", tag = "connections",
    params(("conn_id" = String, Path), ("If-Match" = Option<String>, Header, description = "The ETag a GET returned (\"7\"): the write happens only on that version (412 otherwise)")), request_body = ConnectionIn,
    responses((status = 200, body = ConnectionOut), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn put_connection(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
    headers: axum::http::HeaderMap,
    b: JsonBody,
) -> ApiResult<axum::response::Response> {
    update(
        state,
        grant,
        actor,
        p,
        b,
        UpdateMode::Replace,
        false,
        &headers,
    )
    .await
}

/// Change some fields of a connection, with the same rules for secrets as PUT. Sent as
/// `application/merge-patch+json` (RFC 7386), an `extra` object is merged into the stored one
/// (a key set to `null` is removed, the others are kept) instead of replacing it.
#[utoipa::path(patch, path = "/api/connections/{conn_id}", tag = "connections",
    params(("conn_id" = String, Path), ("If-Match" = Option<String>, Header, description = "The ETag a GET returned (\"7\"): the write happens only on that version (412 otherwise)")), request_body = ConnectionIn,
    responses((status = 200, body = ConnectionOut), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 412, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn patch_connection(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
    headers: axum::http::HeaderMap,
    b: JsonBody,
) -> ApiResult<axum::response::Response> {
    let merge_patch = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/merge-patch+json")
        });
    update(
        state,
        grant,
        actor,
        p,
        b,
        UpdateMode::Merge,
        merge_patch,
        &headers,
    )
    .await
}

/// Delete a connection; refused with 409 and the pipelines using it unless `force=true`.
#[utoipa::path(delete, path = "/api/connections/{conn_id}", tag = "connections",
    params(("conn_id" = String, Path), ("force" = Option<bool>, Query), ("If-Match" = Option<String>, Header, description = "The ETag a GET returned (\"7\"): the write happens only on that version (412 otherwise)")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)))]
async fn delete_connection(
    State(state): State<AppState>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
    headers: axum::http::HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let id = path(p)?;
    let expected = crate::versions::if_match(&headers)?;
    let force = match query(q)?.get("force").map(String::as_str) {
        // Exactly the document's boolean (issue 23): no 1/0 or empty spellings.
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("force must be true or false")),
    };
    write(&state, move |c| {
        c.acting(actor).delete_expecting(&id, force, expected)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Test a saved connection with its real driver.
#[utoipa::path(post, path = "/api/connections/{conn_id}/test", tag = "testing",
    params(("conn_id" = String, Path)),
    responses((status = 200, body = TestOut), (status = 404, body = ErrorBody)))]
async fn test_saved(
    State(state): State<AppState>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TestOut>> {
    let id = path(p)?;
    let outcome = state.connections.acting(actor).test(&id).await?;
    // The type for the metrics (the saved row, read again; a test takes far longer).
    let conn_type = read(&state, move |c| c.get(&id))
        .await
        .map_or("unknown", |c| c.conn_type.as_str());
    crate::metrics::METRICS.test(conn_type, &outcome);
    Ok(Json(outcome.into()))
}

/// Test an unsaved connection (the body of a create). With `"password": "********"` and the
/// conn_id of a saved connection, the stored secret is used.
#[utoipa::path(post, path = "/api/connections/test", tag = "testing", request_body = ConnectionIn,
    responses((status = 200, body = TestOut), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn test_unsaved(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Who(actor): Who,
    b: JsonBody,
) -> ApiResult<Json<TestOut>> {
    let mut update = wire::connection_body(&b.0)?;
    // A malformed extra.ssh_tunnel is refused as on a create, not answered as a failed test.
    wire::tunnel_form(&update)?;
    // A stored secret is reused only for a connection the token may see.
    if update.conn_id.as_deref().is_some_and(|id| !grant.sees(id)) {
        update.conn_id = None;
    }
    tunnel_in_scope(&state, &grant, &update.extra).await?;
    // A valid type (the test refuses any other) for the metrics.
    let conn_type = update
        .conn_type
        .as_deref()
        .and_then(|t| t.parse::<ConnType>().ok())
        .map_or("unknown", ConnType::as_str);
    let outcome = state.connections.acting(actor).test_unsaved(update).await?;
    crate::metrics::METRICS.test(conn_type, &outcome);
    Ok(Json(outcome.into()))
}

/// The pipelines that use a connection.
#[utoipa::path(get, path = "/api/connections/{conn_id}/used-by", tag = "connections",
    params(("conn_id" = String, Path)),
    responses((status = 200, body = UsedByOut), (status = 404, body = ErrorBody)))]
async fn used_by(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<UsedByOut>> {
    let id = path(p)?;
    let usage = blocking(&state, {
        let id = id.clone();
        move |c| c.used_by(&id)
    })
    .await?;
    // A pipeline that also uses connections outside the token's globs is not shown.
    let pipelines = if grant.is_limited() {
        let all = blocking(&state, |c| c.list_pipelines()).await?;
        usage
            .iter()
            .filter(|u| {
                all.iter()
                    .find(|p| p.pipeline_id == u.pipeline_id)
                    .is_some_and(|p| pipeline_visible(&grant, p))
            })
            .map(UsageOut::from)
            .collect()
    } else {
        usage.iter().map(UsageOut::from).collect()
    };
    Ok(Json(UsedByOut {
        conn_id: id,
        pipelines,
    }))
}

/// All pipeline definitions.
#[utoipa::path(get, path = "/api/pipelines", tag = "pipelines",
    responses((status = 200, body = Vec<PipelineOut>)))]
async fn list_pipelines(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
) -> ApiResult<Json<Vec<PipelineOut>>> {
    let list = blocking(&state, |c| c.list_pipelines()).await?;
    Ok(Json(
        list.into_iter()
            .filter(|p| pipeline_visible(&grant, p))
            .map(PipelineOut::from)
            .collect(),
    ))
}

/// A token limited to some connections may not route a connection through a bastion outside
/// them (its SSH credentials would be used): every bastion of a new `extra.ssh_tunnel`, and
/// the bastions those go through, must be in the token's globs. One outside them answers
/// like a missing one.
async fn tunnel_in_scope(
    state: &AppState,
    grant: &Grant,
    extra: &broked_connections::SecretUpdate,
) -> ApiResult<()> {
    let (broked_connections::SecretUpdate::Set(extra)
    | broked_connections::SecretUpdate::Merge(extra)) = extra
    else {
        return Ok(());
    };
    if !grant.is_limited() {
        return Ok(());
    }
    let Ok(first) = broked_connections::ssh_tunnel_refs(Some(extra.expose())) else {
        return Ok(()); // malformed: the library refuses it with its own message
    };
    let grant = grant.clone();
    blocking(state, move |c| {
        let missing = |name: &str| {
            broked_connections::Error::Invalid(broked_core::ValidationErrors(vec![
                broked_core::FieldError {
                    field: "extra",
                    message: format!(
                        "extra.{} names {name:?}, which does not exist",
                        broked_core::SSH_TUNNEL_KEY
                    ),
                },
            ]))
        };
        for top in &first {
            // Every bastion reached through this one, transitively.
            let mut todo = vec![top.clone()];
            let mut seen: Vec<String> = Vec::new();
            while let Some(id) = todo.pop() {
                if seen.contains(&id) {
                    continue;
                }
                if !grant.sees(&id) {
                    return Err(missing(top));
                }
                // Only the names of its own bastions: no secret leaves the library, so this
                // is no reveal (and none is recorded).
                if let Ok(next) = c.ssh_tunnel_of(&id) {
                    todo.extend(next);
                }
                seen.push(id);
            }
        }
        Ok(())
    })
    .await
}

/// A token limited to some connections may not name an admin connection outside them in
/// `extra.rotation_conn_id` (a rotation would use that admin's authority on the server:
/// docs/security.md); one outside them answers like a missing one, as the rotation would.
fn rotation_admin_in_scope(
    grant: &Grant,
    extra: &broked_connections::SecretUpdate,
) -> ApiResult<()> {
    let (broked_connections::SecretUpdate::Set(extra)
    | broked_connections::SecretUpdate::Merge(extra)) = extra
    else {
        return Ok(());
    };
    if !grant.is_limited() {
        return Ok(());
    }
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(extra.expose()) else {
        return Ok(()); // malformed: the library refuses it with its own message
    };
    let key = broked_connections::ROTATION_CONN_KEY;
    // Every spelling (a key given twice is the library's to refuse).
    for (_, value) in map
        .iter()
        .filter(|(k, _)| k.trim().to_ascii_lowercase().replace('-', "_") == key)
    {
        if let Some(id) = value.as_str().filter(|id| !grant.sees(id)) {
            return Err(ApiError::invalid(vec![broked_core::FieldError {
                field: "extra",
                message: format!("extra.{key}: there is no connection {id:?}"),
            }]));
        }
    }
    Ok(())
}

/// Whether every connection a pipeline references is one the token may see.
fn pipeline_visible(grant: &Grant, p: &broked_connections::PipelineInfo) -> bool {
    !grant.is_limited()
        || p.definition
            .references()
            .iter()
            .all(|(_, id)| grant.sees(id.as_str()))
}

/// The pipeline, or a 404 like a missing one if the token may not see all it references.
async fn visible_pipeline(
    state: &AppState,
    grant: &Grant,
    id: &str,
) -> ApiResult<Option<broked_connections::PipelineInfo>> {
    let id = id.to_owned();
    match blocking(state, move |c| c.get_pipeline(&id)).await {
        Ok(p) if pipeline_visible(grant, &p) => Ok(Some(p)),
        Ok(p) => Err(ApiError::from(broked_connections::Error::PipelineNotFound(
            p.pipeline_id.as_str().to_owned(),
        ))),
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

/// One pipeline definition.
#[utoipa::path(get, path = "/api/pipelines/{pipeline_id}", tag = "pipelines",
    params(("pipeline_id" = String, Path)),
    responses((status = 200, body = PipelineOut), (status = 404, body = ErrorBody)))]
async fn get_pipeline(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<PipelineOut>> {
    let id = path(p)?;
    match visible_pipeline(&state, &grant, &id).await? {
        Some(p) => Ok(Json(p.into())),
        None => Err(ApiError::from(broked_connections::Error::PipelineNotFound(
            id,
        ))),
    }
}

/// Register or replace a pipeline definition; 422 naming any conn_id that does not exist.
#[utoipa::path(put, path = "/api/pipelines/{pipeline_id}", tag = "pipelines",
    params(("pipeline_id" = String, Path)), request_body = PipelineIn,
    responses((status = 200, body = PipelineOut), (status = 400, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn put_pipeline(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
    b: JsonBody,
) -> ApiResult<Json<PipelineOut>> {
    let id = path(p)?;
    let map = wire::pipeline_body(&b.0, &id)?;
    let def = PipelineDef::from_value(serde_json::Value::Object(map))
        .map_err(|e| ApiError::from(broked_connections::Error::from(e)))?;
    if grant.is_limited() {
        // Connections outside the token's globs are "missing" to it; a pipeline it may not
        // see cannot be replaced either.
        let mut outside: Vec<String> = def
            .references()
            .into_iter()
            .filter(|(_, c)| !grant.sees(c.as_str()))
            .map(|(_, c)| c.as_str().to_owned())
            .collect();
        if !outside.is_empty() {
            outside.sort();
            outside.dedup();
            return Err(ApiError::from(broked_connections::Error::UnknownConnIds(
                outside,
            )));
        }
        visible_pipeline(&state, &grant, &id).await?;
    }
    Ok(Json(
        write(&state, move |c| c.acting(actor).put_pipeline(&id, def))
            .await?
            .into(),
    ))
}

/// Delete a pipeline definition.
#[utoipa::path(delete, path = "/api/pipelines/{pipeline_id}", tag = "pipelines",
    params(("pipeline_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_pipeline(
    State(state): State<AppState>,
    Extension(grant): Extension<Grant>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    let id = path(p)?;
    if grant.is_limited() {
        visible_pipeline(&state, &grant, &id).await?;
    }
    write(&state, move |c| c.acting(actor).delete_pipeline(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The connection types: label, use case, default port, URI scheme and the fields each uses.
#[utoipa::path(get, path = "/api/connection-types", tag = "connections",
    responses((status = 200, body = Vec<ConnectionTypeOut>)))]
async fn connection_types() -> Json<Vec<ConnectionTypeOut>> {
    Json(
        ConnType::table()
            .iter()
            .map(ConnectionTypeOut::from)
            .collect(),
    )
}

/// Liveness: the process serves HTTP. Always 200 `ok`, without asking the store; a client
/// that asks for JSON (`Accept: application/json`) gets `{"status": "ok", "rotation": …}`
/// with the password rotations that fail, as the schedule task last saw them, named only
/// while the API needs no token (`rotation::health_json`, docs/api.md).
async fn healthz(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let wants_json = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if !wants_json {
        return "ok".into_response();
    }
    let rotation = crate::rotation::health_json(state.connections.clone()).await;
    Json(serde_json::json!({"status": "ok", "rotation": rotation})).into_response()
}

/// Readiness: 200 when the store answers a trivial query within `--store-timeout` and the
/// key file matches the store's key check values; otherwise 503 with the reason. The body
/// names no store, file or address (this route needs no token); the log has the details.
async fn readyz(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let limit = crate::metrics::store_timeout();
    let c = state.connections.clone();
    let checked = tokio::time::timeout(
        limit + Duration::from_millis(500),
        tokio::task::spawn_blocking(move || c.ready()),
    )
    .await;
    let (reason, message) = match checked {
        Ok(Ok(Ok(()))) => {
            return Json(serde_json::json!({"status": "ready"})).into_response();
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "not ready");
            match (&e, e.kind()) {
                (broked_connections::Error::KeyMismatch { .. }, _)
                | (broked_connections::Error::KeyMissing { .. }, _)
                | (broked_connections::Error::Crypto(_), _) => (
                    "key_mismatch",
                    "the key file does not match the store's key check",
                ),
                (_, broked_connections::ErrorKind::Unavailable) => {
                    ("store_unavailable", "the store cannot be reached")
                }
                (_, broked_connections::ErrorKind::Busy) => (
                    "store_busy",
                    "the store did not answer within the time limit",
                ),
                _ => ("store_error", "the store answered with an error"),
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "readiness check failed");
            ("internal", "the readiness check failed")
        }
        Err(_) => {
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "not ready: the store did not answer in time"
            );
            (
                "store_unavailable",
                "the store did not answer within the time limit",
            )
        }
    };
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "unavailable", "reason": reason, "message": message})),
    )
        .into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(crate::error::STORE_RETRY_AFTER),
    );
    r
}

/// `/metrics`: the Prometheus text format (metrics.rs). The key usage needs the store; when
/// it cannot say, those series are left out and the rest is served.
async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let c = state.connections.clone();
    let keys = tokio::time::timeout(
        crate::metrics::store_timeout() + Duration::from_millis(500),
        tokio::task::spawn_blocking(move || c.key_usage()),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .and_then(Result::ok);
    let text = crate::metrics::METRICS.render(&state.connections, keys);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API route; see /api/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /api/openapi.json",
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("not found")
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    tracing::error!("a request handler panicked; answered 500");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({"error": {"code": "internal", "message": "internal error; see the server log"}})),
    )
        .into_response()
}
