//! `ApiError`: every error response is `{"error": {"code", "message", …}}`.
//!
//! User-facing text and log text are separate: an internal error is logged with its cause and
//! reaches the client as a generic message. No message carries a secret: library errors are
//! written without input values.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use broked_connections::{Error, ErrorKind};
use broked_core::FieldError;
use serde::Serialize;
use utoipa::ToSchema;

use broked_connections::PipelineUsage;

/// `Retry-After` of a `store_unavailable` answer, in seconds.
pub(crate) const STORE_RETRY_AFTER: u32 = 5;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    body: ErrorDetail,
    /// `Retry-After` in seconds (503 answers).
    retry_after: Option<u32>,
}

/// The error envelope.
#[derive(Serialize, ToSchema, Debug)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema, Debug)]
pub(crate) struct ErrorDetail {
    /// Machine-readable: `bad_request`, `invalid`, `not_found`, `conflict`, `in_use`,
    /// `unauthorized`, `payload_too_large`, `busy`, `store_unavailable`, `internal`, …
    code: &'static str,
    /// A sentence for people. Never contains a password or an extra value.
    message: String,
    /// For `invalid`: each problem and the field it is about.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    fields: Vec<FieldProblem>,
    /// For `in_use`: the pipelines that use the connection.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pipelines: Vec<UsageOut>,
}

#[derive(Serialize, ToSchema, Debug)]
pub(crate) struct FieldProblem {
    field: String,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            body: ErrorDetail {
                code,
                message: message.into(),
                fields: Vec::new(),
                pipelines: Vec::new(),
            },
            retry_after: None,
        }
    }

    /// 503 `store_unavailable`: the store cannot be reached or read. The details (which
    /// store, why) go to the log only.
    pub(crate) fn store_unavailable() -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the credential store cannot be reached right now; try again later (the server \
             log has the details)",
        );
        e.retry_after = Some(STORE_RETRY_AFTER);
        e
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server requires an API token: send Authorization: Bearer TOKEN",
        )
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn invalid(errors: Vec<FieldError>) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        );
        e.body.fields = errors
            .into_iter()
            .map(|e| FieldProblem {
                field: e.field.to_owned(),
                message: e.message,
            })
            .collect();
        e
    }

    pub(crate) fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match &e {
            // A sealed value that does not open for its row: tampered with or moved outside
            // broked (issue 13). A state the client can fix by entering the secret again, not
            // a server bug; the message names the connection and field, never a value.
            Error::Decrypt { .. } => {
                tracing::error!(error = %e, "a stored secret does not open");
                return ApiError::new(StatusCode::CONFLICT, "tampered", e.to_string());
            }
            // The key file was swapped under the running server: nothing is written.
            Error::KeyMismatch { .. } | Error::KeyMissing { .. } => {
                tracing::error!(error = %e, "key file");
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "key_mismatch",
                    "the key file does not belong to this database (replaced while the server \
                     runs?); nothing was written — the server log names the file to restore",
                );
            }
            _ => {}
        }
        match e.kind() {
            ErrorKind::Invalid => match e {
                Error::Invalid(errors) => ApiError::invalid(errors.0),
                other => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    other.to_string(),
                ),
            },
            ErrorKind::NotFound => ApiError::not_found(e.to_string()),
            ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            // If-Match named another version than the current one (issue 17).
            ErrorKind::Stale => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                e.to_string(),
            ),
            ErrorKind::InUse => {
                let message = e.to_string();
                let pipelines = match e {
                    Error::InUse { pipelines, .. } => {
                        pipelines.iter().map(UsageOut::from).collect()
                    }
                    _ => Vec::new(),
                };
                let mut api = ApiError::new(StatusCode::CONFLICT, "in_use", message);
                api.body.pipelines = pipelines;
                api
            }
            ErrorKind::Busy => {
                tracing::warn!(error = %e, "store busy");
                let mut api = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the database is busy; try again",
                );
                api.retry_after = Some(1);
                api
            }
            ErrorKind::Unavailable => {
                tracing::error!(error = %e, "the store is unavailable");
                ApiError::store_unavailable()
            }
            ErrorKind::Internal => {
                tracing::error!(error = %e, "internal error");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, axum::Json(ErrorBody { error: self.body })).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
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
