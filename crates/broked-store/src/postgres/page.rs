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
    let (page, count) = page::page_sql(Dialect::Postgres, q);
    // A kept total (one or two rows of counts) is a scalar subquery of the page statement:
    // one round trip. Its parameters are the page's first ones (the type, if any): the count
    // statement's are those the page had before its cursor and limit were added.
    let (page, count) = match count {
        Some(count) if page::count_is_kept(q) && page.0.starts_with("SELECT ") => {
            let columns = &page.0["SELECT ".len()..];
            (
                (
                    format!("SELECT ({}) AS kept_total, {columns}", count.0),
                    page.1,
                ),
                Counted::InPage(count),
            )
        }
        Some(count) => (page, Counted::Apart(count)),
        None => (page, Counted::No),
    };
    store.read((page, count, q.clone()), |c, (page, count, q)| {
        Box::pin(async move {
            let fetched = bind(&page.0, &page.1)
                .fetch_all(&c.pool)
                .await
                .map_err(pg(c, "list"))?;
            let rows = all(&fetched, page::listed)?;
            let total = match count {
                Counted::No => None,
                _ if page::total_from_rows(q, rows.len()).is_some() => {
                    page::total_from_rows(q, rows.len())
                }
                Counted::InPage(count) => match fetched.first() {
                    Some(first) => {
                        use sqlx::Row;
                        let n: i64 = first.try_get("kept_total").map_err(pg(c, "count"))?;
                        Some(u64::try_from(n).unwrap_or(0))
                    }
                    // No row to carry it (a cursor past the last connection).
                    None => Some(count_apart(c, count).await?),
                },
                Counted::Apart(count) => Some(count_apart(c, count).await?),
            };
            Ok(page::page_of(rows, q, total))
        })
    })
}

/// The count statement's answer.
async fn count_apart(c: &super::bridge::Ctx, (sql, params): &page::Statement) -> Result<u64> {
    use sqlx::Row;
    let row = bind(sql, params)
        .fetch_one(&c.pool)
        .await
        .map_err(pg(c, "count"))?;
    let n: i64 = row.try_get("n").map_err(pg(c, "count"))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Where a page's total comes from.
#[derive(Clone)]
enum Counted {
    /// Not asked for.
    No,
    /// The `kept_total` column of the page's rows; the count statement (the same subquery)
    /// if the page has no row.
    InPage(page::Statement),
    /// A statement of its own, run only if the page does not hold every match.
    Apart(page::Statement),
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
