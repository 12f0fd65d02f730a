//! Key rotation in batches on PostgreSQL (issue 19): the pages of the scan and one batch's
//! transaction ([`crate::Store::sealed_not_under_after`], [`crate::Store::reseal_batch`]).
//! A batch is one `UPDATE … FROM unnest(…)` per table, not a round trip per value.

use std::sync::LazyLock;

use sqlx::PgConnection;

use super::PgStore;
use super::bridge::{Ctx, pg};
use super::queries::exists;
use crate::reseal::{self, KEPT_START, Next, RowReseal};
use crate::rows::Keyed;
use crate::{Reseal, ResealCursor, ResealRow, Result, Sealed, StoreError};

static CURRENT_AFTER: LazyLock<String> = LazyLock::new(|| reseal::current_after_sql("$"));
static KEPT_AFTER: LazyLock<String> = LazyLock::new(|| reseal::kept_after_sql("$"));

/// The re-seal of many rows of one table, each value only if it still holds its old value:
/// arrays of conn_id, password old → new under key, extra old → new under key, and the
/// kept version (`kept`). A `NULL` old value never matches, so a field not re-sealed stays
/// as it is. Returns how many values it wrote (a new value is fresh random bytes, so equal
/// means written).
fn rows_sql(kept: bool) -> String {
    let (table, version) = if kept {
        ("connection_versions", " AND c.version = u.version")
    } else {
        ("connections", "")
    };
    format!(
        "WITH u AS (
           SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bigint[],
                                $5::bytea[], $6::bytea[], $7::bigint[], $8::bigint[])
             AS u(conn_id, old_p, new_p, key_p, old_e, new_e, key_e, version)
         ), w AS (
           UPDATE {table} c SET
             password = CASE WHEN c.password = u.old_p THEN u.new_p ELSE c.password END,
             password_key = CASE WHEN c.password = u.old_p THEN u.key_p ELSE c.password_key END,
             extra = CASE WHEN c.extra = u.old_e THEN u.new_e ELSE c.extra END,
             extra_key = CASE WHEN c.extra = u.old_e THEN u.key_e ELSE c.extra_key END
           FROM u
           WHERE c.conn_id = u.conn_id{version} AND (c.password = u.old_p OR c.extra = u.old_e)
           RETURNING ((c.password = u.new_p) IS TRUE)::int
                     + ((c.extra = u.new_e) IS TRUE)::int AS n
         )
         SELECT coalesce(sum(n), 0)::bigint FROM w"
    )
}

static CURRENT_ROWS: LazyLock<String> = LazyLock::new(|| rows_sql(false));
static KEPT_ROWS: LazyLock<String> = LazyLock::new(|| rows_sql(true));

pub(super) fn sealed_not_under_after(
    store: &PgStore,
    key_id: u32,
    after: Option<&ResealCursor>,
    limit: usize,
) -> Result<Vec<ResealRow>> {
    store.read(
        (key_id, after.cloned(), limit),
        |c, (key_id, after, limit)| {
            Box::pin(async move {
                let mut out = Vec::new();
                let mut next = reseal::next(after.as_ref());
                loop {
                    let want = limit - out.len();
                    if want == 0 {
                        return Ok(out);
                    }
                    let want_sql = i64::try_from(want).unwrap_or(i64::MAX);
                    let query = match next {
                        Next::Current(conn_id) => sqlx::query(&CURRENT_AFTER)
                            .bind(i64::from(*key_id))
                            .bind(conn_id)
                            .bind(want_sql),
                        Next::Kept(conn_id, version) => sqlx::query(&KEPT_AFTER)
                            .bind(i64::from(*key_id))
                            .bind(conn_id)
                            .bind(version)
                            .bind(want_sql),
                    };
                    let rows = query.fetch_all(&c.pool).await.map_err(pg(c, "reseal"))?;
                    for row in &rows {
                        out.push(reseal::scan_row(row, *key_id)?);
                    }
                    match next {
                        // The current rows are done: the kept versions follow.
                        Next::Current(_) if rows.len() < want => next = KEPT_START,
                        _ => return Ok(out),
                    }
                }
            })
        },
    )
}

pub(super) fn reseal_batch(
    store: &PgStore,
    batch: &[Reseal],
    (marker, value): (&str, Option<&str>),
) -> Result<usize> {
    let args = (batch.to_vec(), marker.to_owned(), value.map(str::to_owned));
    store.write(args, |ctx, c, (batch, marker, value)| {
        Box::pin(async move {
            let seals = reseal::seals_per_key(batch);
            for &(key, _) in &seals {
                if !exists(ctx, c, Keyed::Key, i64::from(key)).await? {
                    return Err(StoreError::UnknownKey(key));
                }
            }
            let mut written = 0;
            for round in reseal::rounds(reseal::by_row(batch)) {
                let (kept, current): (Vec<_>, Vec<_>) =
                    round.into_iter().partition(|r| r.version.is_some());
                written += write_rows(ctx, c, &CURRENT_ROWS, &current).await?;
                written += write_rows(ctx, c, &KEPT_ROWS, &kept).await?;
            }
            for &(key, n) in &seals {
                sqlx::query("UPDATE keys SET seals = seals + $2 WHERE key_id = $1")
                    .bind(i64::from(key))
                    .bind(n as i64)
                    .execute(&mut *c)
                    .await
                    .map_err(pg(ctx, "seals"))?;
            }
            match value {
                Some(v) => sqlx::query(
                    "INSERT INTO meta (name, value) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )
                .bind(marker.as_str())
                .bind(v.as_str()),
                None => sqlx::query("DELETE FROM meta WHERE name = $1").bind(marker.as_str()),
            }
            .execute(&mut *c)
            .await
            .map_err(pg(ctx, "meta"))?;
            Ok((written, written > 0))
        })
    })
}

/// Writes the re-sealed values of `rows` (all of one table) with one statement; returns how
/// many were written.
async fn write_rows(
    ctx: &Ctx,
    c: &mut PgConnection,
    sql: &str,
    rows: &[RowReseal<'_>],
) -> Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    type Field<'a> = Option<(&'a [u8], &'a Sealed)>;
    let old = |f: Field<'_>| f.map(|(old, _)| old.to_vec());
    let new = |f: Field<'_>| f.map(|(_, new)| new.blob.clone());
    let key = |f: Field<'_>| f.map(|(_, new)| i64::from(new.key_id));
    let n: i64 = sqlx::query_scalar(sql)
        .bind(rows.iter().map(|r| r.conn_id).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| old(r.password)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| new(r.password)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| key(r.password)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| old(r.extra)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| new(r.extra)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| key(r.extra)).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
        .fetch_one(&mut *c)
        .await
        .map_err(pg(ctx, "reseal"))?;
    Ok(n as usize)
}

pub(super) fn count_rows(store: &PgStore) -> Result<u64> {
    store.read((), |c, ()| {
        Box::pin(async move {
            let n: i64 = sqlx::query_scalar(reseal::COUNT_ROWS)
                .fetch_one(&c.pool)
                .await
                .map_err(pg(c, "reseal"))?;
            Ok(n as u64)
        })
    })
}
