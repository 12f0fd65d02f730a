//! Group commit for the writes of one connection at a time ([`Order::Rows`]), issue 19.
//!
//! Every write that changes data holds the `state` row from its generation bump to its
//! commit (`bridge.rs`): one commit and one `fsync` at a time across every replica, about
//! 750 writes a second however many clients and replicas there are. The writes that arrive at
//! one store while a group is being committed wait in a queue; the next group takes them all
//! (up to [`MAX_GROUP`]) into one transaction, runs them one after the other, then makes one
//! generation bump with all their seal counts, appends all their audit records (each write's
//! records chained after the previous write's, with its own MAC) and commits once. A write is
//! answered only after that commit: what it was told is durable. A write that arrives alone
//! runs alone, as before.
//!
//! A write that fails in a group (a conn_id taken, a deadlock) rolls the group back — there
//! are no savepoints, which would cost two round trips a write — and the group runs again
//! without it; then it runs alone and gets its own answer, as if it had come after them.
//!
//! The group runs in a task of its own, not in a caller's: a caller that stops waiting (its
//! time limit) does not roll back the others; its write is skipped if the group has not begun,
//! and otherwise commits or fails with them.
//!
//! If the group fails before its commit is sent (the connection lost, a statement of the
//! bump refused), nothing was committed and each write is run again alone, so that each gets
//! its own answer. A failed commit is not run again (it may have been applied): every write of
//! the group gets the error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgConnection;
use tokio::sync::oneshot;

use super::ATTEMPTS;
use super::bridge::{BoxFut, Ctx, Order, WriteOp, bump, pg, retryable};
use crate::{Logged, Result, StoreError, WriteLog};

/// Writes per group at most (a group's transaction holds the rows of all of them).
const MAX_GROUP: usize = 64;

/// The writes waiting for the next group of a store, and whether a group task is running.
#[derive(Default)]
pub(super) struct Groups {
    queue: Mutex<(Vec<Pending>, bool)>,
}

/// A queued write's operation with its arguments: whether it changed data (its value is kept
/// aside for its caller).
type GroupOp =
    Box<dyn for<'c> Fn(&'c Ctx, &'c mut PgConnection) -> BoxFut<'c, Result<bool>> + Send + Sync>;

/// One queued write: its operation with its arguments (run again on a retry), its log, and
/// where its answer goes.
struct Pending {
    op: GroupOp,
    log: WriteLog,
    done: oneshot::Sender<Result<Logged>>,
}

/// Runs `op` with `args` in the next group of this store; its value and what was logged.
pub(super) async fn write<A, T>(
    ctx: &Ctx,
    args: A,
    log: WriteLog,
    op: WriteOp<A, T>,
) -> Result<(T, Logged)>
where
    A: Send + Sync + 'static,
    T: Send + 'static,
{
    let args = Arc::new(args);
    let value: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let (done, answer) = oneshot::channel();
    let pending = Pending {
        op: {
            let (args, value) = (args.clone(), value.clone());
            Box::new(move |ctx, c| {
                let (args, value) = (args.clone(), value.clone());
                Box::pin(async move {
                    let (v, wrote) = op(ctx, c, &args).await?;
                    *value.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                    Ok(wrote)
                })
            })
        },
        log,
        done,
    };
    let lead = {
        let mut queue = ctx.groups.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.0.push(pending);
        !std::mem::replace(&mut queue.1, true)
    };
    if lead {
        tokio::spawn(run(ctx.clone()));
    }
    let logged = answer.await.map_err(|_| super::bridge::gone())??;
    let v = value
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(super::bridge::gone)?;
    Ok((v, logged))
}

/// The group task: groups until the queue is empty.
async fn run(ctx: Ctx) {
    // A panic in a group (an audit MAC that panics) ends this task: its writes' callers get
    // an error (their answer is dropped), and the writes queued meanwhile a new task.
    struct Leader(Ctx);
    impl Drop for Leader {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                return;
            }
            let mut queue = self
                .0
                .groups
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if queue.0.is_empty() {
                queue.1 = false;
            } else {
                tokio::spawn(run(self.0.clone()));
            }
        }
    }
    let _leader = Leader(ctx.clone());
    loop {
        let group: Vec<Pending> = {
            let mut queue = ctx.groups.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.0.is_empty() {
                queue.1 = false;
                return;
            }
            let n = queue.0.len().min(MAX_GROUP);
            queue.0.drain(..n).collect()
        };
        // Writes whose callers stopped waiting before the group began are not made.
        let group: Vec<Pending> = group.into_iter().filter(|p| !p.done.is_closed()).collect();
        if group.is_empty() {
            continue;
        }
        commit_group(&ctx, group).await;
    }
}

/// How a group ended when it did not commit.
enum Failed {
    /// A write of the group failed (at this index): the transaction is rolled back.
    Member(usize),
    /// Before the commit was sent: nothing was committed.
    Before(StoreError),
    /// The commit failed: it may or may not have been applied.
    Commit(StoreError),
}

async fn commit_group(ctx: &Ctx, mut group: Vec<Pending>) {
    let mut attempt = 1;
    // Writes that failed in the group: each runs alone once the others are committed, and
    // gets its own answer (as if it had come after them).
    let mut alone = Vec::new();
    while !group.is_empty() {
        match group_once(ctx, &group).await {
            Ok(answers) => {
                for (p, a) in group.drain(..).zip(answers) {
                    let _ = p.done.send(a);
                }
            }
            Err(Failed::Member(i)) => alone.push(group.remove(i)),
            Err(Failed::Before(e) | Failed::Commit(e)) if attempt < ATTEMPTS && retryable(&e) => {
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                attempt += 1;
            }
            Err(Failed::Before(e)) => {
                if group.len() == 1 {
                    if let Some(p) = group.pop() {
                        let _ = p.done.send(Err(e));
                    }
                } else {
                    // `e` is dropped: each write's own try says what is wrong.
                    drop(e);
                    alone.append(&mut group);
                }
            }
            Err(Failed::Commit(e)) => {
                let reason = e.to_string();
                let mut first = Some(e);
                for p in group.drain(..) {
                    let e = first.take().unwrap_or_else(|| StoreError::Connect {
                        server: ctx.server.to_string(),
                        reason: reason.clone(),
                    });
                    let _ = p.done.send(Err(e));
                }
            }
        }
    }
    for p in alone {
        // Not for a caller that stopped waiting: it was told the write failed.
        if !p.done.is_closed() {
            // A group of one: it fails with its own error.
            Box::pin(commit_group(ctx, vec![p])).await;
        }
    }
}

/// One try of a group: each write, one bump, the audit records, one commit. Each write's
/// answer, or why the group failed.
async fn group_once(
    ctx: &Ctx,
    group: &[Pending],
) -> std::result::Result<Vec<Result<Logged>>, Failed> {
    let before = Failed::Before;
    let mut tx = ctx
        .pool
        .begin_with(Order::Rows.begin())
        .await
        .map_err(|e| before(pg(ctx, "cannot begin a write")(e)))?;
    // No savepoints (two round trips a write): a write that fails rolls the group back, and
    // the group runs again without it (`commit_group`). On an error the transaction is
    // dropped, which rolls it back.
    let mut outcomes: Vec<bool> = Vec::with_capacity(group.len());
    for (i, p) in group.iter().enumerate() {
        match (p.op)(ctx, &mut tx).await {
            Ok(wrote) => outcomes.push(wrote),
            Err(e) if group.len() == 1 => return Err(before(e)),
            Err(_) => return Err(Failed::Member(i)),
        }
    }
    let wrote: Vec<&Pending> = group
        .iter()
        .zip(&outcomes)
        .filter(|(_, wrote)| **wrote)
        .map(|(p, _)| p)
        .collect();
    let mut logs: Vec<Logged> = Vec::new();
    let mut new = None;
    if !wrote.is_empty() {
        let merged = WriteLog {
            seals: wrote.iter().flat_map(|p| p.log.seals.clone()).collect(),
            ..WriteLog::none()
        };
        let (generation, all, head) = bump(ctx, &mut tx, &merged).await.map_err(before)?;
        new = Some(generation);
        let parts: Vec<_> = wrote.iter().filter_map(|p| p.log.records()).collect();
        let mut appended = if parts.is_empty() {
            Vec::new()
        } else {
            super::audit::append_parts(ctx, &mut tx, &parts, head)
                .await
                .map_err(before)?
        }
        .into_iter();
        for p in &wrote {
            logs.push(Logged {
                applied: true,
                seals: all
                    .seals
                    .iter()
                    .filter(|(key, _)| p.log.seals.iter().any(|(k, _)| k == key))
                    .copied()
                    .collect(),
                audit: if p.log.records().is_some() {
                    appended.next().unwrap_or_default()
                } else {
                    Vec::new()
                },
            });
        }
    }
    tx.commit()
        .await
        .map_err(|e| Failed::Commit(pg(ctx, "cannot commit")(e)))?;
    if let Some(new) = new {
        // Read-your-writes in this process, before our own notification comes back.
        ctx.fresh.advance(new);
        ctx.committed();
    }
    let mut logs = logs.into_iter();
    Ok(outcomes
        .into_iter()
        .map(|wrote| {
            Ok(if wrote {
                logs.next().unwrap_or_default()
            } else {
                Logged::default()
            })
        })
        .collect())
}
