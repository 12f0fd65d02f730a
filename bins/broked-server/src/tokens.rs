//! `/api/tokens`: named API tokens for an admin token (issue 16). A token is shown once, in
//! the answer to its creation; lists never show it.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use broked_connections::{Scope, TokenInfo, parse_duration};
use broked_core::FieldError;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::audit::Who;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JsonBody;
use crate::state::AppState;

/// A token as lists show it: never the token itself.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenOut {
    #[schema(example = "ci")]
    name: String,
    /// `read`, `test`, `write`, `admin` (admin implies the others).
    #[schema(example = json!(["read", "test"]))]
    scopes: Vec<&'static str>,
    /// conn_id globs the token is limited to; `null`: every connection.
    #[schema(example = json!(["team-a-*"]))]
    conns: Option<Vec<String>>,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
}

impl From<TokenInfo> for TokenOut {
    fn from(t: TokenInfo) -> TokenOut {
        TokenOut {
            name: t.name,
            scopes: t.scopes.iter().map(|s| s.as_str()).collect(),
            conns: t.conns,
            created_at: t.created_at,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// The answer to a creation: the token, shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedTokenOut {
    /// `brk_…`: store it now; it is never shown again.
    token: String,
    #[serde(flatten)]
    info: TokenOut,
}

/// A token to create.
#[derive(ToSchema)]
#[allow(dead_code)] // documentation of the body read by `token_body`
pub(crate) struct TokenIn {
    #[schema(example = "ci", pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    name: String,
    #[schema(example = json!(["read", "test"]))]
    scopes: Vec<String>,
    #[schema(example = json!(["team-a-*"]))]
    conns: Option<Vec<String>>,
    /// `30d`, `12h`, `90m`, `2w`; absent or `null`: never.
    #[schema(example = "30d")]
    expires: Option<String>,
}

type Parsed = (
    String,
    Vec<Scope>,
    Option<Vec<String>>,
    Option<std::time::Duration>,
);

fn token_body(body: &[u8]) -> Result<Parsed, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("the body is not valid JSON"))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let mut errors = Vec::new();
    let mut push = |field: &'static str, message: &str| {
        errors.push(FieldError {
            field,
            message: message.to_owned(),
        })
    };
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    for key in map.keys() {
        if !["name", "scopes", "conns", "expires"].contains(&key.as_str()) {
            push(
                "body",
                "unknown field; the fields are name, scopes, conns, expires",
            );
        }
    }
    let name = match map.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            push("name", "name is required (a string)");
            String::new()
        }
    };
    let mut scopes = Vec::new();
    match map.get("scopes").and_then(strings) {
        Some(list) => {
            for s in list {
                match s.parse::<Scope>() {
                    Ok(s) => scopes.push(s),
                    Err(m) => push("scopes", &m),
                }
            }
        }
        None => push(
            "scopes",
            "scopes is required: a list of read, test, write, admin",
        ),
    }
    let conns = match map.get("conns") {
        None | Some(Value::Null) => None,
        Some(v) => match strings(v) {
            Some(list) => Some(list),
            None => {
                push("conns", "conns must be a list of conn_id globs, or null");
                None
            }
        },
    };
    let expires = match map.get("expires") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match parse_duration(s) {
            Ok(d) => Some(d),
            Err(m) => {
                push("expires", &format!("expires must be {m}"));
                None
            }
        },
        Some(_) => {
            push("expires", "expires must be a duration like 30d, or null");
            None
        }
    };
    if errors.is_empty() {
        Ok((name, scopes, conns, expires))
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// List the named tokens (never the tokens themselves). Admin scope.
#[utoipa::path(get, path = "/api/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenOut>), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
) -> Result<Json<Vec<TokenOut>>, ApiError> {
    let list = crate::state::blocking(&state, |c| c.list_tokens()).await?;
    Ok(Json(list.into_iter().map(TokenOut::from).collect()))
}

/// Create a named token; the answer holds the token, shown this once. Admin scope.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = TokenIn,
    responses((status = 201, body = CreatedTokenOut), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    Who(actor): Who,
    b: JsonBody,
) -> Result<(StatusCode, Json<CreatedTokenOut>), ApiError> {
    let (name, scopes, conns, expires) = token_body(&b.0)?;
    let (info, token) = crate::state::write(&state, move |c| {
        c.acting(actor).create_token(&name, &scopes, conns, expires)
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenOut {
            token: token.expose().to_owned(),
            info: info.into(),
        }),
    ))
}

/// Revoke a named token: it stops working at once. Admin scope.
#[utoipa::path(delete, path = "/api/tokens/{name}", tag = "tokens",
    params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let name = crate::extract::path(p)?;
    crate::state::write(&state, move |c| c.acting(actor).revoke_token(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the request's token may do.
#[derive(Serialize, ToSchema)]
pub(crate) struct WhoamiOut {
    /// The token's name; `bootstrap` for `--api-token`, `local` when the server needs none.
    name: String,
    scopes: Vec<&'static str>,
    /// conn_id globs the token is limited to; `null`: every connection.
    conns: Option<Vec<String>>,
}

/// The token this request presented: its name, scopes and conn_id globs (the UI hides what
/// the token may not do). Any valid token.
#[utoipa::path(get, path = "/api/whoami", tag = "tokens",
    responses((status = 200, body = WhoamiOut), (status = 401, body = ErrorBody)))]
pub(crate) async fn whoami(
    axum::Extension(grant): axum::Extension<broked_connections::Grant>,
) -> Json<WhoamiOut> {
    Json(WhoamiOut {
        name: grant.name.clone(),
        scopes: Scope::ALL
            .into_iter()
            .filter(|s| grant.allows(*s))
            .map(Scope::as_str)
            .collect(),
        conns: grant.conns.clone(),
    })
}
