//! Key rotation in batches on SQLite (issue 19): the pages of the scan and one batch's
//! transaction ([`crate::Store::sealed_not_under_after`], [`crate::Store::reseal_batch`]).
//!
//! A page is read by one statement whose columns are looked up by name once, not per row; a
//! row whose password and extra are both re-sealed is written by one `UPDATE` (one B-tree
//! search and one rewrite of the row), with the single-field statements of `rows.rs` when only
//! one is, or when one of the two changed meanwhile.

use std::sync::LazyLock;

use rusqlite::{Connection, Statement, params};

use super::queries::exists;
use super::{SqliteStore, sql};
use crate::reseal::{self, KEPT_START, Next, RowReseal};
use crate::rows::{self, Keyed};
use crate::{Reseal, ResealCursor, ResealRow, Result, Sealed, SecretField, StoreError};

/// The page cache of the writer during a rotation: 32 MiB.
const BATCH_CACHE: &str = "PRAGMA cache_size = -32768";

static CURRENT_AFTER: LazyLock<String> = LazyLock::new(|| reseal::current_after_sql("?"));
static KEPT_AFTER: LazyLock<String> = LazyLock::new(|| reseal::kept_after_sql("?"));

/// Both values of a row re-sealed, only if both still hold their old values: password `?2` →
/// `?3` under key `?4`, extra `?5` → `?6` under key `?7`; of the current row, or (`?8`) of that
/// kept version.
fn both_sql(kept: bool) -> String {
    let (table, version) = if kept {
        ("connection_versions", " AND version = ?8")
    } else {
        ("connections", "")
    };
    format!(
        "UPDATE {table} SET password = ?3, password_key = ?4, extra = ?6, extra_key = ?7
         WHERE conn_id = ?1{version} AND password = ?2 AND extra = ?5"
    )
}

static BOTH_CURRENT: LazyLock<String> = LazyLock::new(|| both_sql(false));
static BOTH_KEPT: LazyLock<String> = LazyLock::new(|| both_sql(true));

/// The single-field statements ([`rows::reseal_sql`]): password, extra; current, kept.
static ONE: LazyLock<[[String; 2]; 2]> = LazyLock::new(|| {
    [SecretField::Password, SecretField::Extra]
        .map(|f| [false, true].map(|kept| rows::reseal_sql("?", f, kept)))
});

pub(super) fn sealed_not_under_after(
    store: &SqliteStore,
    key_id: u32,
    after: Option<&ResealCursor>,
    limit: usize,
) -> Result<Vec<ResealRow>> {
    store.read(|c| {
        let mut out = Vec::with_capacity(limit.min(1 << 16));
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
    let (text, conn_id, version): (&str, &str, Option<i64>) = match *next {
        Next::Current(conn_id) => (&CURRENT_AFTER, conn_id, None),
        Next::Kept(conn_id, version) => (&KEPT_AFTER, conn_id, Some(version)),
    };
    let current: [&dyn rusqlite::ToSql; 3] = [&key_id, &conn_id, &want_sql];
    let kept: [&dyn rusqlite::ToSql; 4] = [&key_id, &conn_id, &version, &want_sql];
    let params: &[&dyn rusqlite::ToSql] = if version.is_some() { &kept } else { &current };
    let mut stmt = c.prepare_cached(text).map_err(sql("reseal"))?;
    let at = Columns::of(&stmt)?;
    let mut rows = stmt.query(params).map_err(sql("reseal"))?;
    while let Some(row) = rows.next().map_err(sql("reseal"))? {
        out.push(at.read(row, key_id).map_err(sql("reseal"))??);
    }
    Ok(out.len() - before)
}

/// The positions of the scan's columns in its statement, looked up by name once per page.
struct Columns {
    conn_id: usize,
    version: usize,
    conn_type: usize,
    host: usize,
    port: usize,
    login: usize,
    password: usize,
    password_key: usize,
    extra: usize,
    extra_key: usize,
}

impl Columns {
    fn of(stmt: &Statement<'_>) -> Result<Columns> {
        let at = |name: &str| stmt.column_index(name).map_err(sql("reseal"));
        Ok(Columns {
            conn_id: at("conn_id")?,
            version: at("version")?,
            conn_type: at("conn_type")?,
            host: at("host")?,
            port: at("port")?,
            login: at("login")?,
            password: at("password")?,
            password_key: at("password_key")?,
            extra: at("extra")?,
            extra_key: at("extra_key")?,
        })
    }

    /// A row of the scan, as [`reseal::scan_row`] reads it (values sealed by `key_id` left
    /// out); the outer error is SQLite's, the inner one a corrupt row.
    fn read(&self, row: &rusqlite::Row<'_>, key_id: u32) -> rusqlite::Result<Result<ResealRow>> {
        let value = |blob: usize, key: usize| -> rusqlite::Result<Result<Option<Sealed>>> {
            let blob: Option<Vec<u8>> = row.get(blob)?;
            let key: Option<i64> = row.get(key)?;
            Ok(rows::sealed(blob, key).map(|s| s.filter(|s| s.key_id != key_id)))
        };
        let password = match value(self.password, self.password_key)? {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let extra = match value(self.extra, self.extra_key)? {
            Ok(e) => e,
            Err(e) => return Ok(Err(e)),
        };
        let port: Option<i64> = row.get(self.port)?;
        Ok(Ok(ResealRow {
            conn_id: row.get(self.conn_id)?,
            version: row.get(self.version)?,
            conn_type: row.get(self.conn_type)?,
            host: row.get(self.host)?,
            port: port.and_then(|p| u16::try_from(p).ok()),
            login: row.get(self.login)?,
            password,
            extra,
        }))
    }
}

pub(super) fn reseal_batch(
    store: &SqliteStore,
    batch: &[Reseal],
    (marker, value): (&str, Option<&str>),
) -> Result<usize> {
    let seals = reseal::seals_per_key(batch);
    let rows = reseal::by_row(batch);
    store.write(|tx| {
        // A batch rewrites more pages than SQLite's default cache (2 MB) holds: they would be
        // spilled and read back, row after row. The writer keeps this larger cache (it only
        // grows as pages are used).
        tx.execute_batch(BATCH_CACHE).map_err(sql("cache_size"))?;
        for &(key, _) in &seals {
            if !exists(tx, Keyed::Key, key)? {
                return Err(StoreError::UnknownKey(key));
            }
        }
        let mut written = 0;
        for row in &rows {
            written += write_row(tx, row)?;
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
    if let (Some((old_p, new_p)), Some((old_e, new_e))) = (row.password, row.extra) {
        let mut s = tx
            .prepare_cached(if row.version.is_some() {
                &BOTH_KEPT
            } else {
                &BOTH_CURRENT
            })
            .map_err(sql("reseal"))?;
        let (c, pk, ek) = (row.conn_id, new_p.key_id, new_e.key_id);
        let n = match row.version {
            None => s.execute(params![c, old_p, new_p.blob, pk, old_e, new_e.blob, ek]),
            Some(v) => s.execute(params![c, old_p, new_p.blob, pk, old_e, new_e.blob, ek, v]),
        }
        .map_err(sql("reseal"))?;
        if n > 0 {
            return Ok(2);
        }
        // One of the two changed meanwhile (or the row is gone): each on its own.
    }
    let mut written = 0;
    for (i, field) in [row.password, row.extra].into_iter().enumerate() {
        let Some((old, new)) = field else { continue };
        let mut s = tx
            .prepare_cached(&ONE[i][usize::from(row.version.is_some())])
            .map_err(sql("reseal"))?;
        written += match row.version {
            None => s.execute(params![row.conn_id, old, new.blob, new.key_id]),
            Some(v) => s.execute(params![row.conn_id, old, new.blob, new.key_id, v]),
        }
        .map_err(sql("reseal"))?;
    }
    Ok(written)
}

pub(super) fn count_rows(store: &SqliteStore) -> Result<u64> {
    store.read(|c| {
        c.prepare_cached(reseal::COUNT_ROWS)
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>("n")))
            .map(|n| n as u64)
            .map_err(sql("reseal"))
    })
}
