//! The API token: `Authorization: Bearer TOKEN` on every /api request when one is set.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::api::AppState;
use crate::error::ApiError;

/// The configured token. `Debug` does not print it.
pub(crate) struct Token(String);

impl Token {
    pub(crate) fn new(token: String) -> Token {
        Token(token)
    }

    /// Constant-time comparison with the bearer value of a request.
    fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(********)")
    }
}

/// The credentials of `Bearer CREDENTIALS`; the scheme name is case-insensitive (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim())
}

pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(p) if token.matches(p) => next.run(request).await,
        _ => ApiError::unauthorized().into_response(),
    }
}
