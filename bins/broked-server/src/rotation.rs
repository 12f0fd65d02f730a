//! `POST /api/connections/{conn_id}/rotate-password` (issue 20, `docs/rotation.md`), and the
//! background task that settles rotations a crashed process left unfinished.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use broked_connections::{Connections, Error, RotationReport};
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::Who;
use crate::error::{ApiError, ErrorBody};
use crate::extract::path;
use crate::state::AppState;

/// How often the server looks for unfinished rotations (and once at start).
const RECOVERY_EVERY: Duration = Duration::from_secs(60);

/// A finished rotation. The new password is never in it: `GET …?uri` / the CLI's `get --uri`
/// show it to whoever may see secrets.
#[derive(Serialize, ToSchema)]
pub(crate) struct RotationOut {
    conn_id: String,
    /// The role (PostgreSQL) or account (MySQL/MariaDB) whose password changed.
    role: String,
    /// The admin connection that changed it (`extra.rotation_conn_id`), or null.
    via: Option<String>,
    /// How the new password reached the server: `scram-sha-256-verifier`,
    /// `mysql-native-hash` or `cleartext`.
    sent_as: &'static str,
    /// RFC 3339.
    rotated_at: String,
    /// Unfinished earlier rotations of this connection that were settled first:
    /// `completed`, `kept` or `unsettled`.
    recovered: Vec<&'static str>,
}

impl From<RotationReport> for RotationOut {
    fn from(r: RotationReport) -> RotationOut {
        RotationOut {
            recovered: r.recovered.iter().map(|x| x.outcome.as_str()).collect(),
            conn_id: r.conn_id,
            role: r.role,
            via: r.via,
            sent_as: r.sent_as.as_str(),
            rotated_at: r.rotated_at,
        }
    }
}

/// Rotate the password on the database server (PostgreSQL, MySQL/MariaDB): a new random
/// password is set on the server, checked with a fresh login, and stored. A failure leaves
/// the stored password one that logs in (502 `rotation_failed` says which).
#[utoipa::path(post, path = "/api/connections/{conn_id}/rotate-password", tag = "connections",
    params(("conn_id" = String, Path)),
    responses((status = 200, body = RotationOut), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 502, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub(crate) async fn rotate_password(
    State(state): State<AppState>,
    Who(actor): Who,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<RotationOut>, ApiError> {
    let id = path(p)?;
    match state.connections.acting(actor).rotate_password(&id).await {
        Ok(report) => Ok(Json(report.into())),
        Err(e @ Error::Rotation { .. }) => {
            tracing::warn!(conn_id = %id, error = %e, "password rotation failed");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "rotation_failed",
                e.to_string(),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Settles unfinished rotations at start and every [`RECOVERY_EVERY`] (each settled one is
/// logged by the library, without values).
pub(crate) async fn recover_periodically(connections: Arc<Connections>) {
    loop {
        match connections.recover_rotations().await {
            Ok(done) if !done.is_empty() => {
                tracing::info!(
                    settled = done.len(),
                    "unfinished password rotations settled"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not look for unfinished rotations"),
        }
        tokio::time::sleep(RECOVERY_EVERY).await;
    }
}
