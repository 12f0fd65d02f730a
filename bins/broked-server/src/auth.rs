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

/// Whether a `Host` header (`name[:port]`) names this machine's loopback interface.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses what a web page on another site could make a browser send:
/// - without an API token, a `Host` that is not a loopback name (a DNS-rebinding page
///   reaches 127.0.0.1 under its own name);
/// - an `Origin` other than this server's own, or `Sec-Fetch-Site: cross-site` (a page
///   posting to http://127.0.0.1:8080 from elsewhere).
fn cross_site(state: &AppState, headers: &axum::http::HeaderMap) -> Option<ApiError> {
    use axum::http::StatusCode;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header("host").unwrap_or("");
    if state.token.is_none() && !loopback_host(host) {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_host",
            "without an API token this server answers only for a loopback host name \
             (localhost, 127.0.0.1, [::1]); set BROKED_API_TOKEN to serve other names",
        ));
    }
    let foreign_origin = header("origin").is_some_and(|origin| {
        origin
            .split_once("://")
            .is_none_or(|(_, authority)| !authority.eq_ignore_ascii_case(host))
    });
    if foreign_origin || header("sec-fetch-site") == Some("cross-site") {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "requests from another site's pages are refused",
        ));
    }
    None
}

pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(refused) = cross_site(&state, request.headers()) {
        return refused.into_response();
    }
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

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:8080",
            "[::1]",
            "LOCALHOST:1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for no in [
            "",
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "[::2]:80",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
        ] {
            assert!(!loopback_host(no), "{no}");
        }
    }
}
