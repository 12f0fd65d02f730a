//! Key rotation in batches on SQLite (issue 19): the pages of the scan and one batch's
//! transaction ([`crate::Store::sealed_not_under_after`], [`crate::Store::reseal_batch`]).

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, params};

use super::queries::exists;
use super::{SqliteStore, sql};
use crate::reseal::{self, KEPT_START, Next, RowReseal};
use crate::rows::Keyed;
use crate::{Reseal, ResealCursor, ResealRow, Result, StoreError};

static CURRENT_AFTER: LazyLock<String> = LazyLock::new(|| reseal::current_after_sql("?"));
static KEPT_AFTER: LazyLock<String> = LazyLock::new(|| reseal::kept_after_sql("?"));

/// The re-seal of a row's values, each only if it still holds its old value: password
/// `?2` → `?3` under key `?4`, extra `?5` → `?6` under key `?7` (a `NULL` old value never
/// matches, so a field not re-sealed stays as it is); of the current row, or (`?8`) of that
/// kept version. Returns how many of the two it wrote (a new value is fresh random bytes, so
/// equal means written).
fn row_sql(kept: bool) -> String {
    let (table, version) = if kept {
        ("connection_versions", " AND version = ?8")
    } else {
        ("connections", "")
    };
    format!(
        "UPDATE {table} SET
           password = CASE WHEN password = ?2 THEN ?3 ELSE password END,
           password_key = CASE WHEN password = ?2 THEN ?4 ELSE password_key END,
           extra = CASE WHEN extra = ?5 THEN ?6 ELSE extra END,
           extra_key = CASE WHEN extra = ?5 THEN ?7 ELSE extra_key END
         WHERE conn_id = ?1{version} AND (password = ?2 OR extra = ?5)
         RETURNING coalesce(password = ?3, 0) + coalesce(extra = ?6, 0) AS n"
    )
}

static CURRENT_ROW: LazyLock<String> = LazyLock::new(|| row_sql(false));
static KEPT_ROW: LazyLock<String> = LazyLock::new(|| row_sql(true));

pub(super) fn sealed_not_under_after(
    store: &SqliteStore,
    key_id: u32,
    after: Option<&ResealCursor>,
    limit: usize,
) -> Result<Vec<ResealRow>> {
    store.read(|c| {
        let mut out = Vec::new();
        let mut next = reseal::next(after);
        loop {
            let want = limit - out.len();
            if want == 0 {
                return Ok(out);
            }
            let got = page(c, key_id, &next, want, &mut out)?;
            match next {
                // The current rows are done: the kept versions follow.
                Next::Current(_) if got < want => next = KEPT_START,
                _ => return Ok(out),
            }
        }
    })
}

/// Reads at most `want` rows of the scan from `next` into `out`; returns how many.
fn page(
    c: &Connection,
    key_id: u32,
    next: &Next<'_>,
    want: usize,
    out: &mut Vec<ResealRow>,
) -> Result<usize> {
    let want_sql = i64::try_from(want).unwrap_or(i64::MAX);
    let before = out.len();
    let mut rows_of = |stmt: &str, params: &[&dyn rusqlite::ToSql]| -> Result<()> {
        let mut stmt = c.prepare_cached(stmt).map_err(sql("reseal"))?;
        let mut rows = stmt.query(params).map_err(sql("reseal"))?;
        while let Some(row) = rows.next().map_err(sql("reseal"))? {
            out.push(reseal::scan_row(row, key_id)?);
        }
        Ok(())
    };
    match *next {
        Next::Current(conn_id) => rows_of(&CURRENT_AFTER, params![key_id, conn_id, want_sql])?,
        Next::Kept(conn_id, version) => {
            rows_of(&KEPT_AFTER, params![key_id, conn_id, version, want_sql])?
        }
    }
    Ok(out.len() - before)
}

pub(super) fn reseal_batch(
    store: &SqliteStore,
    batch: &[Reseal],
    (marker, value): (&str, Option<&str>),
) -> Result<usize> {
    let seals = reseal::seals_per_key(batch);
    let rounds = reseal::by_row(batch);
    store.write(|tx| {
        for &(key, _) in &seals {
            if !exists(tx, Keyed::Key, key)? {
                return Err(StoreError::UnknownKey(key));
            }
        }
        let mut written = 0;
        for round in &rounds {
            for row in round {
                written += write_row(tx, row)?;
            }
        }
        for &(key, n) in &seals {
            tx.prepare_cached("UPDATE keys SET seals = seals + ?2 WHERE key_id = ?1")
                .and_then(|mut s| s.execute(params![key, n as i64]))
                .map_err(sql("seals"))?;
        }
        match value {
            Some(v) => tx
                .prepare_cached(
                    "INSERT INTO meta (name, value) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )
                .and_then(|mut s| s.execute(params![marker, v])),
            None => tx
                .prepare_cached("DELETE FROM meta WHERE name = ?1")
                .and_then(|mut s| s.execute([marker])),
        }
        .map_err(sql("meta"))?;
        Ok((written, written > 0))
    })
}

/// Writes one row's re-sealed values; returns how many were written.
fn write_row(tx: &Connection, row: &RowReseal<'_>) -> Result<usize> {
    let (p, e) = (row.password, row.extra);
    let (old_p, new_p, key_p) = parts(p);
    let (old_e, new_e, key_e) = parts(e);
    let mut stmt = tx
        .prepare_cached(if row.version.is_some() {
            &KEPT_ROW
        } else {
            &CURRENT_ROW
        })
        .map_err(sql("reseal"))?;
    let n: Option<i64> = match row.version {
        None => stmt.query_row(
            params![row.conn_id, old_p, new_p, key_p, old_e, new_e, key_e],
            |r| r.get("n"),
        ),
        Some(v) => stmt.query_row(
            params![row.conn_id, old_p, new_p, key_p, old_e, new_e, key_e, v],
            |r| r.get("n"),
        ),
    }
    .optional()
    .map_err(sql("reseal"))?;
    Ok(n.unwrap_or(0) as usize)
}

/// A field's old value, new value and new key (`None`s if it is not re-sealed).
fn parts<'a>(
    field: Option<(&'a [u8], &'a crate::Sealed)>,
) -> (Option<&'a [u8]>, Option<&'a [u8]>, Option<u32>) {
    match field {
        Some((old, new)) => (Some(old), Some(new.blob.as_slice()), Some(new.key_id)),
        None => (None, None, None),
    }
}
