//! The rotation lock and the named locks: session-level advisory locks, each on a connection
//! of its own.

use sqlx::{Connection, PgConnection, Row};
use tokio::sync::oneshot;

use super::bridge::pg;
use super::{BUSY_TIMEOUT, PgStore};
use crate::{Result, RotationGuard};

impl PgStore {
    pub(super) fn rotation_lock(&self, wait: bool) -> Result<Option<RotationGuard>> {
        self.advisory_lock(None, wait)
    }

    /// [`Store::lock_named`](crate::Store::lock_named): the advisory lock on
    /// `hashtext('broked.lock.' || current_schema() || '.' || name)`.
    pub(super) fn named_lock(&self, name: &str, wait: bool) -> Result<Option<RotationGuard>> {
        self.advisory_lock(Some(name.to_owned()), wait)
    }

    /// The store-wide rotation lock (`name` `None`) or a named one.
    fn advisory_lock(&self, name: Option<String>, wait: bool) -> Result<Option<RotationGuard>> {
        let key = if name.is_some() {
            "hashtext('broked.lock.' || current_schema() || '.' || $1)"
        } else {
            "hashtext('broked.rotation.' || current_schema())"
        };
        let held = self.call(move |ctx| {
            Box::pin(async move {
                let options = ctx.pool.connect_options();
                let mut conn = PgConnection::connect_with(&options)
                    .await
                    .map_err(pg(&ctx, "rotation lock"))?;
                let sql = if wait {
                    format!("SELECT pg_advisory_lock({key}), true AS got")
                } else {
                    format!("SELECT pg_try_advisory_lock({key}) AS got")
                };
                let mut query = sqlx::query(&sql);
                if let Some(name) = &name {
                    query = query.bind(name.clone());
                }
                let got: bool = query
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
                    let unlock = format!("SELECT pg_advisory_unlock({key})");
                    let mut query = sqlx::query(&unlock);
                    if let Some(name) = &name {
                        query = query.bind(name.clone());
                    }
                    let _ = query.execute(&mut conn).await;
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
