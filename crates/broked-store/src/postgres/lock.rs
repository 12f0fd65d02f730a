//! The rotation lock: a session-level advisory lock on a connection of its own.

use sqlx::{Connection, PgConnection, Row};
use tokio::sync::oneshot;

use super::bridge::pg;
use super::{BUSY_TIMEOUT, PgStore};
use crate::{Result, RotationGuard};

impl PgStore {
    pub(super) fn rotation_lock(&self, wait: bool) -> Result<Option<RotationGuard>> {
        let held = self.call(move |ctx| {
            Box::pin(async move {
                let options = ctx.pool.connect_options();
                let mut conn = PgConnection::connect_with(&options)
                    .await
                    .map_err(pg(&ctx, "rotation lock"))?;
                let sql = if wait {
                    "SELECT pg_advisory_lock(hashtext('broked.rotation.' || current_schema())),
                       true AS got"
                } else {
                    "SELECT pg_try_advisory_lock(hashtext('broked.rotation.' || current_schema()))
                       AS got"
                };
                let got: bool = sqlx::query(sql)
                    .fetch_one(&mut conn)
                    .await
                    .and_then(|r| r.try_get("got"))
                    .map_err(pg(&ctx, "rotation lock"))?;
                if !got {
                    let _ = conn.close().await;
                    return Ok(None);
                }
                let (release, released) = oneshot::channel::<std::sync::mpsc::SyncSender<()>>();
                let alive = ctx._alive.clone();
                tokio::spawn(async move {
                    // `Ok(ack)` when the guard is dropped; `Err` only if it vanished unsent.
                    let ack = released.await.ok();
                    // Unlock explicitly, so the lock is free when the guard's drop returns
                    // (a closing session releases its locks too, but asynchronously).
                    let _ = sqlx::query(
                        "SELECT pg_advisory_unlock(hashtext('broked.rotation.' || current_schema()))",
                    )
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                    if let Some(ack) = ack {
                        let _ = ack.send(());
                    }
                    drop(alive);
                });
                Ok(Some(PgRotationLock {
                    release: Some(release),
                }))
            })
        })?;
        Ok(held.map(RotationGuard::new))
    }
}

/// The PostgreSQL rotation lock: its session lives on the background runtime; dropping this
/// asks that task to unlock and waits (at most [`BUSY_TIMEOUT`]) until it has.
struct PgRotationLock {
    release: Option<oneshot::Sender<std::sync::mpsc::SyncSender<()>>>,
}

impl Drop for PgRotationLock {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            let (ack, acked) = std::sync::mpsc::sync_channel(1);
            if release.send(ack).is_ok() {
                let _ = acked.recv_timeout(BUSY_TIMEOUT);
            }
        }
    }
}
