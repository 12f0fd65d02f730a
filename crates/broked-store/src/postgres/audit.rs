//! The audit log in PostgreSQL (see [`crate::Store::append_audit`]). Every append — alone
//! ([`bridge::Order::Head`]) or carried by a change ([`crate::WriteLog`]) — holds the `state`
//! row from before it reads the head to its commit (`bridge.rs`), so appenders on every
//! replica take turns: the head read and the insert of one append see no other append in
//! between, and `seq` is the primary key besides.
//!
//! [`bridge::Order::Head`]: super::bridge::Order::Head

use sqlx::PgConnection;

use super::PgStore;
use super::bridge::{Ctx, Order, pg};
use super::queries::{all, meta_value, put_meta};
use crate::rows::{self, AUDIT_COLUMNS};
use crate::{
    AUDIT_CUT_MAC, AUDIT_CUT_SEQ, AuditCut, AuditFilter, AuditMac, AuditRecord, Result, StoreError,
    WriteLog,
};

/// The filter of [`crate::Store::list_audit`], newest first: `$1` conn_id, `$2` action,
/// `$3` since, `$4` a value HMAC (a whole entry of the comma-separated list), `$5` the
/// cursor (`seq` below it), `$6` the limit; a `NULL` parameter does not filter.
const LIST_FILTER: &str = "WHERE ($1::text IS NULL OR conn_id = $1::text) \
     AND ($2::text IS NULL OR action = $2::text) AND ($3::text IS NULL OR at >= $3::text) \
     AND ($4::text IS NULL OR strpos(',' || value_hashes || ',', ',' || $4::text || ',') > 0) \
     AND ($5::bigint IS NULL OR seq < $5::bigint) ORDER BY seq DESC LIMIT $6";

/// The `(seq, mac)` the next record follows: the head, else the cut, else `(0, "")`.
async fn tail(ctx: &Ctx, c: &mut PgConnection) -> Result<(i64, String)> {
    let head = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
    ))
    .fetch_optional(&mut *c)
    .await
    .map_err(pg(ctx, "audit"))?;
    if let Some(head) = head {
        let head = rows::audit(&head)?;
        return Ok((head.seq, head.mac));
    }
    let seq = meta_value(ctx, &mut *c, AUDIT_CUT_SEQ).await?;
    let mac = meta_value(ctx, &mut *c, AUDIT_CUT_MAC).await?;
    match (seq, mac) {
        (Some(seq), Some(mac)) => Ok((
            seq.parse().map_err(|_| StoreError::Corrupt {
                table: "meta",
                reason: format!("{AUDIT_CUT_SEQ} is not a number"),
            })?,
            mac,
        )),
        _ => Ok((0, String::new())),
    }
}

pub(super) fn append(
    store: &PgStore,
    records: Vec<AuditRecord>,
    mac: AuditMac,
) -> Result<Vec<AuditRecord>> {
    // Only the chain needs an order: the `state` row, no other lock.
    let (out, _) = store.write_with(
        Order::Head,
        (records, mac),
        WriteLog::none(),
        |ctx, c, (records, mac)| {
            Box::pin(async move {
                // Not a change of connections: cached resolves stay valid.
                Ok((append_in(ctx, c, records, mac).await?, false))
            })
        },
    )?;
    Ok(out)
}

/// Appends `records` after the head inside the open transaction `c`, which holds the `state`
/// row (so no other append of any replica runs between the head read and the inserts);
/// returns them as stored.
pub(super) async fn append_in(
    ctx: &Ctx,
    c: &mut PgConnection,
    records: &[AuditRecord],
    mac: &AuditMac,
) -> Result<Vec<AuditRecord>> {
    let (mut seq, mut prev) = tail(ctx, c).await?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let mut r = r.clone();
        seq += 1;
        r.seq = seq;
        r.mac = mac(&prev, &r);
        sqlx::query(&format!(
            "INSERT INTO audit ({AUDIT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(r.seq)
        .bind(&r.at)
        .bind(&r.actor)
        .bind(&r.action)
        .bind(&r.conn_id)
        .bind(&r.fields)
        .bind(&r.outcome)
        .bind(&r.request_id)
        .bind(&r.value_hashes)
        .bind(&r.detail)
        .bind(&r.mac)
        .execute(&mut *c)
        .await
        .map_err(pg(ctx, "audit"))?;
        prev.clone_from(&r.mac);
        out.push(r);
    }
    Ok(out)
}

pub(super) fn head(store: &PgStore) -> Result<Option<AuditRecord>> {
    store.read((), |c, ()| {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
            ))
            .fetch_optional(&c.pool)
            .await
            .map_err(pg(c, "audit"))?;
            row.map(|r| rows::audit(&r)).transpose()
        })
    })
}

pub(super) fn list(store: &PgStore, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    store.read(f.clone(), |c, f| {
        Box::pin(async move {
            let rows = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audit {LIST_FILTER}"))
                .bind(&f.conn_id)
                .bind(&f.action)
                .bind(&f.since)
                .bind(&f.value_hash)
                .bind(f.before_seq)
                .bind(i64::try_from(f.limit).unwrap_or(i64::MAX))
                .fetch_all(&c.pool)
                .await
                .map_err(pg(c, "audit"))?;
            all(&rows, rows::audit)
        })
    })
}

pub(super) fn range(store: &PgStore, from_seq: i64, limit: usize) -> Result<Vec<AuditRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    store.read((from_seq, limit), |c, (from_seq, limit)| {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2"
            ))
            .bind(from_seq)
            .bind(limit)
            .fetch_all(&c.pool)
            .await
            .map_err(pg(c, "audit"))?;
            all(&rows, rows::audit)
        })
    })
}

pub(super) fn prune(store: &PgStore, before_seq: i64) -> Result<Option<AuditCut>> {
    store.write(before_seq, |ctx, c, before_seq| {
        Box::pin(async move {
            // Never the newest record: the next append chains from it.
            let last = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq < $1 \
                 AND seq < (SELECT max(seq) FROM audit) ORDER BY seq DESC LIMIT 1"
            ))
            .bind(before_seq)
            .fetch_optional(&mut *c)
            .await
            .map_err(pg(ctx, "audit"))?;
            let Some(last) = last else {
                return Ok((None, false));
            };
            let last = rows::audit(&last)?;
            sqlx::query("DELETE FROM audit WHERE seq <= $1")
                .bind(last.seq)
                .execute(&mut *c)
                .await
                .map_err(pg(ctx, "audit"))?;
            put_meta(ctx, c, AUDIT_CUT_SEQ, &last.seq.to_string()).await?;
            put_meta(ctx, c, AUDIT_CUT_MAC, &last.mac).await?;
            Ok((
                Some(AuditCut {
                    seq: last.seq,
                    mac: last.mac,
                }),
                false,
            ))
        })
    })
}
