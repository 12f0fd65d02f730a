//! Pages of connections and recorded test results in SQLite (see [`crate::page`]).

use rusqlite::{Row, ToSql};

use super::{SqliteStore, sql};
use crate::Result;
use crate::page::{self, ConnPage, ConnQuery, Dialect, Param, TestStatus};
use crate::rows::Columns;

impl ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Param::Text(t) => t.to_sql(),
            Param::Int(i) => i.to_sql(),
        }
    }
}

/// A row whose columns are found by name in the statement's column list, read once per
/// statement: rusqlite's own lookup by name compares the name with every column's in turn
/// (`sqlite3_column_name`, `strlen`, a case-insensitive compare), which cost a list of 1,000
/// connections about a third of its time (docs/BENCHMARKS.md, issue 19).
struct Named<'a> {
    row: &'a Row<'a>,
    names: &'a [String],
}

impl Named<'_> {
    fn index(&self, table: &'static str, column: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| n == column)
            .ok_or_else(|| crate::StoreError::Corrupt {
                table,
                reason: format!("no column {column}"),
            })
    }
}

impl Columns for Named<'_> {
    fn text(&self, table: &'static str, column: &str) -> Result<Option<String>> {
        self.row.get(self.index(table, column)?).map_err(sql(table))
    }

    fn int(&self, table: &'static str, column: &str) -> Result<Option<i64>> {
        self.row.get(self.index(table, column)?).map_err(sql(table))
    }

    fn blob(&self, table: &'static str, column: &str) -> Result<Option<Vec<u8>>> {
        self.row.get(self.index(table, column)?).map_err(sql(table))
    }
}

pub(super) fn page_connections(store: &SqliteStore, q: &ConnQuery) -> Result<ConnPage> {
    let ((page_sql, params), count) = page::page_sql(Dialect::Sqlite, q);
    store.read(|c| {
        let mut stmt = c.prepare_cached(&page_sql).map_err(sql("list"))?;
        let names: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
        let mut found = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(sql("list"))?;
        // One more than the page says whether another follows (the statement has no LIMIT).
        let wanted = q.limit.map_or(usize::MAX, |n| n.saturating_add(1));
        let mut rows = Vec::new();
        while rows.len() < wanted {
            let Some(row) = found.next().map_err(sql("list"))? else {
                break;
            };
            rows.push(page::listed(&Named { row, names: &names })?);
        }
        let total = match &count {
            None => None,
            Some((count_sql, count_params)) => {
                let n: i64 = c
                    .prepare_cached(count_sql)
                    .map_err(sql("count"))?
                    .query_row(rusqlite::params_from_iter(count_params.iter()), |r| {
                        r.get(0)
                    })
                    .map_err(sql("count"))?;
                Some(u64::try_from(n).unwrap_or(0))
            }
        };
        Ok(page::page_of(rows, q, total))
    })
}

pub(super) fn record_test(
    store: &SqliteStore,
    conn_id: &str,
    version: i64,
    status: &TestStatus,
) -> Result<bool> {
    store.write(|tx| {
        let n = tx
            .prepare_cached(&page::record_test_sql("?"))
            .map_err(sql("record test"))?
            .execute(rusqlite::params![
                conn_id,
                version,
                status.tested_at,
                i64::from(status.ok),
                status.message
            ])
            .map_err(sql("record test"))?;
        // Not a change of any connection: the generation (the resolve cache) stays.
        Ok((n == 1, false))
    })
}
