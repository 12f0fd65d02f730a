//! What handlers read from a request: a JSON body, a path segment, the query string — each
//! refused with a clear 4xx error rather than axum's own text.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request};
use axum::http::StatusCode;

use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// Request bodies larger than this are refused with 413.
pub(crate) const BODY_LIMIT: usize = 1024 * 1024;

/// A request body that is JSON by its `Content-Type` (`application/json` or `…+json`), at most
/// [`BODY_LIMIT`] bytes. An empty body passes whatever its type, for the parser to refuse with
/// a clear message; a non-empty body of another type is 415.
pub(crate) struct JsonBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody, ApiError> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|v| v.to_str().map(str::to_owned).unwrap_or_default());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than 1 MiB",
                )
            } else {
                ApiError::bad_request("the request body could not be read")
            }
        })?;
        if !bytes.is_empty() && !content_type.as_deref().is_some_and(is_json) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        Ok(JsonBody(bytes))
    }
}

pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub(crate) fn path(p: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    p.map(|Path(p)| p)
        .map_err(|_| ApiError::bad_request("the path is not valid"))
}

pub(crate) fn query(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<HashMap<String, String>> {
    q.map(|Query(q)| q)
        .map_err(|_| ApiError::bad_request("the query string is not valid"))
}
