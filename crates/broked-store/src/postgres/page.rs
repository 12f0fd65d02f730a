//! Pages of connections and recorded test results in PostgreSQL (see [`crate::page`]).

use super::PgStore;
use super::bridge::pg;
use super::queries::all;
use crate::Result;
use crate::page::{self, ConnPage, ConnQuery, Dialect, Param, TestStatus};

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The statement with its parameters bound — planned for these values on every run
/// (`persistent(false)`: an unnamed statement), not prepared once: a prepared statement
/// goes over to a generic plan after five runs, which does not know how rare the type asked
/// for is and reads the primary key past every other connection (1.5 s for a type of 2 rows
/// among 1,000,000, against 0.2 ms through `connections_type`; docs/BENCHMARKS.md).
fn bind<'q>(sql: &'q str, params: &'q [Param]) -> PgQuery<'q> {
    params
        .iter()
        .fold(sqlx::query(sql).persistent(false), |q, p| match p {
            Param::Text(t) => q.bind(t.as_str()),
            Param::Int(i) => q.bind(*i),
        })
}

pub(super) fn page_connections(store: &PgStore, q: &ConnQuery) -> Result<ConnPage> {
    let statements = page::page_sql(Dialect::Postgres, q);
    store.read((statements, q.clone()), |c, ((page, count), q)| {
        Box::pin(async move {
            let rows = bind(&page.0, &page.1)
                .fetch_all(&c.pool)
                .await
                .map_err(pg(c, "list"))?;
            let rows = all(&rows, page::listed)?;
            let total = match count {
                None => None,
                Some(_) if page::total_from_rows(q, rows.len()).is_some() => {
                    page::total_from_rows(q, rows.len())
                }
                Some((sql, params)) => {
                    use sqlx::Row;
                    let row = bind(sql, params)
                        .fetch_one(&c.pool)
                        .await
                        .map_err(pg(c, "count"))?;
                    let n: i64 = row.try_get("n").map_err(pg(c, "count"))?;
                    Some(u64::try_from(n).unwrap_or(0))
                }
            };
            Ok(page::page_of(rows, q, total))
        })
    })
}

pub(super) fn record_test(
    store: &PgStore,
    conn_id: &str,
    version: i64,
    status: &TestStatus,
) -> Result<bool> {
    let args = (conn_id.to_owned(), version, status.clone());
    store.write(args, |ctx, c, (conn_id, version, status)| {
        Box::pin(async move {
            let n = sqlx::query(&page::record_test_sql("$"))
                .bind(conn_id)
                .bind(version)
                .bind(&status.tested_at)
                .bind(i32::from(status.ok))
                .bind(&status.message)
                .execute(&mut *c)
                .await
                .map_err(pg(ctx, "record test"))?
                .rows_affected();
            // Not a change of any connection: no new generation, no notification.
            Ok((n == 1, false))
        })
    })
}
