//! `POST /api/connections/{conn_id}/rotate-password` and `GET …/rotation` (issue 20,
//! `docs/rotation.md`), the background task that settles rotations a crashed process left
//! unfinished, and the one that runs the schedules (`extra.rotate_every`), whose failures
//! `/healthz` reports ([`health`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use broked_connections::{Connections, Error, RotationReport, RotationStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::Who;
use crate::error::{ApiError, ErrorBody};
use crate::extract::path;
use crate::state::{AppState, blocking};

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

/// A connection's rotation schedule and the state of its rotations. No secret in it.
#[derive(Serialize, ToSchema)]
pub(crate) struct RotationStatusOut {
    conn_id: String,
    /// `extra.rotate_every` (`30d`, `12h`, …), or null when the connection has no schedule.
    rotate_every: Option<String>,
    /// Why `extra.rotate_every` is not a valid interval (then nothing is scheduled).
    schedule_error: Option<String>,
    /// RFC 3339: the last successful rotation (asked for or scheduled).
    last_rotated_at: Option<String>,
    /// RFC 3339: when the next scheduled rotation is due, jitter included.
    next_due_at: Option<String>,
    /// RFC 3339: the last attempt.
    last_attempt_at: Option<String>,
    /// Why the last attempt failed; null after a success.
    last_error: Option<String>,
    /// Failed attempts since the last success.
    failures: u32,
    /// An unfinished rotation waits in the journal to be settled.
    pending: bool,
}

impl From<RotationStatus> for RotationStatusOut {
    fn from(s: RotationStatus) -> RotationStatusOut {
        RotationStatusOut {
            conn_id: s.conn_id,
            rotate_every: s.rotate_every,
            schedule_error: s.schedule_error,
            last_rotated_at: s.last_rotated_at,
            next_due_at: s.next_due_at,
            last_attempt_at: s.last_attempt_at,
            last_error: s.last_error,
            failures: s.failures,
            pending: s.pending,
        }
    }
}

/// The rotation schedule (`extra.rotate_every`) of a connection, when it was last rotated,
/// when the next rotation is due, and the last failure.
#[utoipa::path(get, path = "/api/connections/{conn_id}/rotation", tag = "connections",
    params(("conn_id" = String, Path)),
    responses((status = 200, body = RotationStatusOut), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub(crate) async fn rotation_status(
    State(state): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> Result<Json<RotationStatusOut>, ApiError> {
    let id = path(p)?;
    let status = blocking(&state, move |c| c.rotation_status(&id)).await?;
    Ok(Json(status.into()))
}

/// What the schedule task last saw, for `/healthz` (which never asks the store).
#[derive(Default)]
pub(crate) struct Health {
    /// Connections whose last rotation failed or whose schedule is invalid.
    pub(crate) failing: Vec<String>,
    /// Scheduled connections.
    pub(crate) scheduled: usize,
    /// Whether `/healthz` may name the failing connections: only when the API needs no
    /// token (a server with tokens names them in the API, to those who may see them).
    pub(crate) names_public: bool,
}

static HEALTH: Mutex<Option<Health>> = Mutex::new(None);

/// Runs `f` on what the schedule task last saw (`None` before its first scan).
pub(crate) fn health<T>(f: impl FnOnce(Option<&Health>) -> T) -> T {
    let guard = HEALTH.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.as_ref())
}

/// The longest sleep of the schedule task: how soon a new or changed `extra.rotate_every`
/// is seen.
const SCHEDULE_SCAN_EVERY: Duration = Duration::from_secs(30);

/// Runs the rotation schedules: rotates what is due, then sleeps until the next due time
/// (at least a second, at most [`SCHEDULE_SCAN_EVERY`]). Every replica runs it; the
/// library's per-connection lock and its check that a rotation is still due make one of
/// them rotate each due connection. `api_token` says whether a bootstrap token is set.
pub(crate) async fn schedule_periodically(connections: Arc<Connections>, api_token: bool) {
    loop {
        let mut sleep = SCHEDULE_SCAN_EVERY;
        match connections.rotate_due().await {
            Ok(statuses) => {
                for wait in statuses.iter().filter_map(RotationStatus::due_in) {
                    sleep = sleep.min(wait);
                }
                let c = connections.clone();
                let tokens = tokio::task::spawn_blocking(move || c.tokens_exist())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(true);
                let health = Health {
                    failing: statuses
                        .iter()
                        .filter(|s| s.failing())
                        .map(|s| s.conn_id.clone())
                        .collect(),
                    scheduled: statuses.iter().filter(|s| s.rotate_every.is_some()).count(),
                    names_public: !api_token && !tokens,
                };
                *HEALTH.lock().unwrap_or_else(|e| e.into_inner()) = Some(health);
            }
            Err(e) => tracing::warn!(error = %e, "could not run the password rotation schedules"),
        }
        tokio::time::sleep(sleep.max(Duration::from_secs(1))).await;
    }
}
