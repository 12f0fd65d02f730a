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

/// The `meta` setting that holds the audit log's head, `"{seq} {mac}"`: every append of this
/// backend updates it in its transaction, and a write reads it with its generation bump (in
/// the same statement, under the `state` row: `fresh::BUMP`), which saves the head's own
/// read inside the writes' critical section. Only a hint: an append checks it against the
/// table in the statement that inserts (a process of an older build does not keep it, a
/// hand-edited database may lie), and reads the head from the table if it does not match.
pub(super) const AUDIT_HEAD: &str = "audit_head";

/// [`AUDIT_HEAD`]'s value read back: `(seq, mac)`; `None` if it is not one.
pub(super) fn parse_head(value: &str) -> Option<(i64, String)> {
    let (seq, mac) = value.split_once(' ')?;
    Some((seq.parse().ok().filter(|s| *s > 0)?, mac.to_owned()))
}

/// Where the next record follows.
struct Tail {
    /// The head's, else the cut's, else 0.
    seq: i64,
    /// The head's MAC, else the cut's, else empty.
    mac: String,
    /// The newest record's `seq` (`None`: the table is empty).
    newest: Option<i64>,
}

/// The [`Tail`] as the table (and the cut in `meta`) has it.
async fn tail(ctx: &Ctx, c: &mut PgConnection) -> Result<Tail> {
    let head = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
    ))
    .fetch_optional(&mut *c)
    .await
    .map_err(pg(ctx, "audit"))?;
    if let Some(head) = head {
        let head = rows::audit(&head)?;
        return Ok(Tail {
            seq: head.seq,
            mac: head.mac,
            newest: Some(head.seq),
        });
    }
    let seq = meta_value(ctx, &mut *c, AUDIT_CUT_SEQ).await?;
    let mac = meta_value(ctx, &mut *c, AUDIT_CUT_MAC).await?;
    let (seq, mac) = match (seq, mac) {
        (Some(seq), Some(mac)) => (
            seq.parse().map_err(|_| StoreError::Corrupt {
                table: "meta",
                reason: format!("{AUDIT_CUT_SEQ} is not a number"),
            })?,
            mac,
        ),
        _ => (0, String::new()),
    };
    Ok(Tail {
        seq,
        mac,
        newest: None,
    })
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
                Ok((append_in(ctx, c, records, mac, None).await?, false))
            })
        },
    )?;
    Ok(out)
}

/// Appends `records` after the head inside the open transaction `c`, which holds the `state`
/// row (so no other append of any replica runs between the head read and the inserts);
/// returns them as stored. `known` is the head as [`AUDIT_HEAD`] gave it, if it did: tried
/// first, and the table's head read only if it was not the newest record.
pub(super) async fn append_in(
    ctx: &Ctx,
    c: &mut PgConnection,
    records: &[AuditRecord],
    mac: &AuditMac,
    known: Option<(i64, String)>,
) -> Result<Vec<AuditRecord>> {
    let mut parts = append_parts(ctx, c, &[(records, mac)], known).await?;
    Ok(parts.pop().unwrap_or_default())
}

/// [`append_in`] of the records of several writes committed together (`postgres/group.rs`):
/// each part chained after the one before it with its own MAC, all inserted in one
/// statement; returns each part as stored.
pub(super) async fn append_parts(
    ctx: &Ctx,
    c: &mut PgConnection,
    parts: &[(&[AuditRecord], &AuditMac)],
    known: Option<(i64, String)>,
) -> Result<Vec<Vec<AuditRecord>>> {
    let chain = |mut seq: i64, prev: &str| {
        let mut prev = prev.to_owned();
        parts
            .iter()
            .map(|(records, mac)| {
                let out = chained(records, seq, &prev, mac);
                if let Some(last) = out.last() {
                    seq = last.seq;
                    prev.clone_from(&last.mac);
                }
                out
            })
            .collect::<Vec<_>>()
    };
    if let Some((seq, prev)) = known {
        let out = chain(seq, &prev);
        if insert(ctx, c, &out.concat(), Some(seq)).await? {
            return Ok(out);
        }
    }
    let tail = tail(ctx, c).await?;
    let out = chain(tail.seq, &tail.mac);
    if insert(ctx, c, &out.concat(), tail.newest).await? {
        return Ok(out);
    }
    Err(StoreError::Corrupt {
        table: "audit",
        reason: "the head moved while this append held the state row".into(),
    })
}

/// `records` numbered after `seq` and chained after `prev`.
fn chained(records: &[AuditRecord], mut seq: i64, prev: &str, mac: &AuditMac) -> Vec<AuditRecord> {
    let mut prev = prev.to_owned();
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            seq += 1;
            r.seq = seq;
            r.mac = mac(&prev, &r);
            prev.clone_from(&r.mac);
            r
        })
        .collect()
}

/// Inserts `out` (numbered and chained) and records the new head in [`AUDIT_HEAD`], in one
/// statement — only if the newest record in the table is `newest` (`None`: the table is
/// empty); whether it did.
async fn insert(
    ctx: &Ctx,
    c: &mut PgConnection,
    out: &[AuditRecord],
    newest: Option<i64>,
) -> Result<bool> {
    let Some(last) = out.last() else {
        return Ok(true);
    };
    let column = |f: fn(&AuditRecord) -> &str| out.iter().map(f).collect::<Vec<&str>>();
    let inserted: i64 = sqlx::query_scalar(&format!(
        "WITH ok AS (SELECT 1 WHERE (SELECT max(seq) FROM audit) IS NOT DISTINCT FROM $12), \
         a AS (INSERT INTO audit ({AUDIT_COLUMNS}) SELECT r.* FROM unnest($1::bigint[], \
               $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
               $8::text[], $9::text[], $10::text[], $11::text[]) AS r, ok RETURNING seq), \
         h AS (INSERT INTO meta (name, value) SELECT $13, $14 FROM ok \
               ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value) \
         SELECT count(*) FROM a"
    ))
    .bind(out.iter().map(|r| r.seq).collect::<Vec<i64>>())
    .bind(column(|r| &r.at))
    .bind(column(|r| &r.actor))
    .bind(column(|r| &r.action))
    .bind(
        out.iter()
            .map(|r| r.conn_id.as_deref())
            .collect::<Vec<Option<&str>>>(),
    )
    .bind(column(|r| &r.fields))
    .bind(column(|r| &r.outcome))
    .bind(
        out.iter()
            .map(|r| r.request_id.as_deref())
            .collect::<Vec<Option<&str>>>(),
    )
    .bind(column(|r| &r.value_hashes))
    .bind(column(|r| &r.detail))
    .bind(column(|r| &r.mac))
    .bind(newest)
    .bind(AUDIT_HEAD)
    .bind(format!("{} {}", last.seq, last.mac))
    .fetch_one(&mut *c)
    .await
    .map_err(pg(ctx, "audit"))?;
    Ok(inserted as usize == out.len())
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
