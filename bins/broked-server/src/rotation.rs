//! `POST /api/connections/{conn_id}/rotate-password` and `GET …/rotation` (issue 20,
//! `docs/rotation.md`), the background task that settles rotations a crashed process left
//! unfinished, and the one that runs the schedules (`extra.rotate_every`), whose failures
//! `/healthz` reports ([`health_json`]).

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
    /// Dual-role mode (`extra.rotation_roles`): the role the connection logged in as before
    /// the rotation switched its login to `role` (its password was left as it was); null in
    /// single-role mode.
    previous_role: Option<String>,
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
            previous_role: r.previous_role,
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

/// What the schedule task last saw, for `/healthz`.
#[derive(Default)]
pub(crate) struct Health {
    /// Connections whose last rotation failed or whose schedule is invalid.
    pub(crate) failing: Vec<String>,
    /// Scheduled connections.
    pub(crate) scheduled: usize,
    /// A bootstrap token (`--api-token`) is set: the API always needs a token.
    pub(crate) api_token: bool,
}

static HEALTH: Mutex<Option<Health>> = Mutex::new(None);

/// How long `/healthz` waits to learn whether named tokens exist before it names no
/// connection (it answers either way).
const TOKEN_LOOK: Duration = Duration::from_millis(500);

/// The `rotation` object of `/healthz` asked for JSON (docs/api.md): `checked`, `scheduled`,
/// `failing`, and `failing_conn_ids` only while the API needs no token. Whether it does is
/// decided now, as the API decides it for a request (no bootstrap token, and no named token
/// in the store: `Connections::tokens_exist`, the token cache's look at the store's change
/// counter) — so a token created a moment ago, by the API or the CLI, hides the names at
/// once. When that look fails or takes longer than [`TOKEN_LOOK`], no name is shown.
pub(crate) async fn health_json(connections: Arc<Connections>) -> serde_json::Value {
    let (failing, scheduled, api_token) = {
        let guard = HEALTH.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            None => return serde_json::json!({"checked": false}),
            Some(h) => (h.failing.clone(), h.scheduled, h.api_token),
        }
    };
    let mut r = serde_json::json!({
        "checked": true,
        "scheduled": scheduled,
        "failing": failing.len(),
    });
    if !failing.is_empty() && !api_token && !tokens_may_exist(connections).await {
        r["failing_conn_ids"] = serde_json::json!(failing);
    }
    r
}

/// Whether a named token exists, or it cannot be told within [`TOKEN_LOOK`].
async fn tokens_may_exist(connections: Arc<Connections>) -> bool {
    let look = tokio::task::spawn_blocking(move || connections.tokens_exist());
    !matches!(
        tokio::time::timeout(TOKEN_LOOK, look).await,
        Ok(Ok(Ok(false)))
    )
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
                let health = Health {
                    failing: statuses
                        .iter()
                        .filter(|s| s.failing())
                        .map(|s| s.conn_id.clone())
                        .collect(),
                    scheduled: statuses.iter().filter(|s| s.rotate_every.is_some()).count(),
                    api_token,
                };
                *HEALTH.lock().unwrap_or_else(|e| e.into_inner()) = Some(health);
            }
            Err(e) => tracing::warn!(error = %e, "could not run the password rotation schedules"),
        }
        tokio::time::sleep(sleep.max(Duration::from_secs(1))).await;
    }
}
