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
