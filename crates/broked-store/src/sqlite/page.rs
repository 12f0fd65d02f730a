//! Pages of connections and recorded test results in SQLite (see [`crate::page`]).

use std::borrow::Cow;
use std::sync::{LazyLock, OnceLock};

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
    // The generation first, then the rows: they hold every commit it counts (and maybe
    // later ones), so a caller may keep them until it moves. Its look also makes sure the
    // connections are on the files the paths name now, as every read does first.
    let generation = crate::Store::generation(store)?;
    if q.unless_generation == Some(generation) {
        return Ok(ConnPage {
            rows: Vec::new(),
            more: false,
            total: None,
            generation: Some(generation),
            unchanged: true,
        });
    }
    let one = is_single_get(q);
    let ((page_sql, params), count) = if one {
        // The statement of a single GET is the same for every conn_id: built once.
        ((String::new(), Vec::new()), None)
    } else {
        page::page_sql(Dialect::Sqlite, q)
    };
    let mut page = store.readers.read(&store.path, store.busy_timeout, |c| {
        let mut stmt = if one {
            c.prepare_cached(single_get_sql())
        } else {
            c.prepare_cached(&page_sql)
        }
        .map_err(sql("list"))?;
        let names = listed_names(&stmt);
        let mut found = if let (true, Some(id)) = (one, &q.conn_id) {
            stmt.query([id])
        } else {
            stmt.query(rusqlite::params_from_iter(params.iter()))
        }
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
            Some(_) if page::total_from_rows(q, rows.len()).is_some() => {
                page::total_from_rows(q, rows.len())
            }
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
    })?;
    page.generation = Some(generation);
    Ok(page)
}

/// Whether `q` asks for one connection by conn_id and nothing else (a single GET).
fn is_single_get(q: &ConnQuery) -> bool {
    let ConnQuery {
        conn_id,
        conn_type,
        search,
        status,
        after,
        limit: _,
        count_up_to,
        unless_generation: _,
    } = q;
    conn_id.is_some()
        && conn_type.is_none()
        && search.is_none()
        && status.is_none()
        && after.is_none()
        && count_up_to.is_none()
}

/// The page statement of a single GET, whose one parameter is the conn_id: what
/// [`page::page_sql`] builds for it, once (formatting it cost a GET as much as its read).
fn single_get_sql() -> &'static str {
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let q = ConnQuery {
            conn_id: Some(String::new()),
            ..ConnQuery::default()
        };
        page::page_sql(Dialect::Sqlite, &q).0.0
    });
    &SQL
}

/// The column names of a page statement. Every page statement selects the same columns, so
/// the first statement's names are kept and each later statement is only compared with them
/// (no copies of its names per read); a statement with other columns gets its own.
fn listed_names(stmt: &rusqlite::Statement<'_>) -> Cow<'static, [String]> {
    static FIRST: OnceLock<Vec<String>> = OnceLock::new();
    let first = FIRST.get_or_init(|| stmt.column_names().into_iter().map(str::to_owned).collect());
    let same = stmt.column_count() == first.len()
        && first
            .iter()
            .enumerate()
            .all(|(i, name)| stmt.column_name(i).is_ok_and(|n| n == name));
    if same {
        Cow::Borrowed(first.as_slice())
    } else {
        Cow::Owned(stmt.column_names().into_iter().map(str::to_owned).collect())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::page::{Param, TestStatus};
    use crate::tests::{conn, with_key};

    fn one(id: &str, unless: Option<u64>) -> ConnQuery {
        ConnQuery {
            conn_id: Some(id.to_owned()),
            unless_generation: unless,
            ..ConnQuery::default()
        }
    }

    #[test]
    fn the_single_get_statement_is_page_sqls_with_the_conn_id_as_its_one_parameter() {
        let ((sql, params), count) = page::page_sql(Dialect::Sqlite, &one("pg-1", None));
        assert_eq!(sql, single_get_sql());
        assert_eq!(params, [Param::Text("pg-1".into())]);
        assert!(count.is_none());
        assert!(is_single_get(&one("pg-1", Some(3))));
        for other in [
            ConnQuery {
                conn_type: Some("postgres".into()),
                ..one("pg-1", None)
            },
            ConnQuery {
                after: Some("a".into()),
                ..one("pg-1", None)
            },
            ConnQuery {
                count_up_to: Some(5),
                ..one("pg-1", None)
            },
            ConnQuery::default(),
        ] {
            assert!(!is_single_get(&other), "{other:?}");
        }
    }

    /// A page kept at a generation is answered `unchanged` until any commit of any handle
    /// (another process's included: a second store on the file), a recorded test too; then
    /// the rows are read again, with the new generation.
    #[test]
    fn a_kept_page_is_unchanged_until_a_commit_of_any_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broked.db");
        let store = SqliteStore::open(&path).unwrap();
        let other = SqliteStore::open(&path).unwrap();
        with_key(&store);
        store.insert_connection(&conn("c1")).unwrap();
        let first = store.page_connections(&one("c1", None)).unwrap();
        assert!(!first.unchanged);
        assert_eq!(first.rows.len(), 1);
        let g = first.generation.expect("SQLite says its generation");
        let again = store.page_connections(&one("c1", Some(g))).unwrap();
        assert!(again.unchanged && again.rows.is_empty());
        assert_eq!(again.generation, Some(g));
        // An older generation is no match: read.
        let older = store.page_connections(&one("c1", Some(g - 1))).unwrap();
        assert!(!older.unchanged && older.rows == first.rows);

        let status = TestStatus {
            tested_at: "2026-12-02T10:00:00Z".into(),
            ok: false,
            message: "refused".into(),
        };
        assert!(other.record_test("c1", 1, &status).unwrap());
        let after = store.page_connections(&one("c1", Some(g))).unwrap();
        assert!(!after.unchanged, "a test recorded by another handle");
        assert_eq!(after.rows[0].last_test.as_ref(), Some(&status));
        let g2 = after.generation.unwrap();
        assert_ne!(g2, g);

        other.insert_connection(&conn("c2")).unwrap();
        let after = store.page_connections(&one("c1", Some(g2))).unwrap();
        assert!(!after.unchanged, "a commit of another row");
        assert_eq!(after.rows, first_with_test(&first, &status));
    }

    fn first_with_test(page: &ConnPage, status: &TestStatus) -> Vec<crate::ListedConnection> {
        let mut rows = page.rows.clone();
        rows[0].last_test = Some(status.clone());
        rows
    }
}
