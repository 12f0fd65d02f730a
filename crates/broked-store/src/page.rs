//! Connections a page at a time (issues 18 and 19): keyset paging on `conn_id`, filters by
//! type, by a search text and by the last test result, the masked columns only (a listed row
//! never carries a sealed value: the list is what the UI and `connections list` show), and
//! the last test result of each connection (`connection_status`, written by
//! [`Store::record_test`](crate::Store::record_test)).
//!
//! The statements are built here once for both backends ([`page_sql`]); each backend binds
//! the parameters (`sqlite/page.rs`, `postgres/page.rs`).

use crate::Result;
use crate::rows::Columns;

/// Which connections [`Store::page_connections`](crate::Store::page_connections) returns, in
/// conn_id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnQuery {
    /// Only the connection with this conn_id (a single GET without the sealed values).
    pub conn_id: Option<String>,
    /// Only this type (its name in the type table).
    pub conn_type: Option<String>,
    /// Only connections whose conn_id, host or description contains this text, ignoring the
    /// case of ASCII letters (PostgreSQL also folds other letters). Empty: no filter.
    pub search: Option<String>,
    /// Only connections whose last test had this result.
    pub status: Option<StatusFilter>,
    /// Only conn_ids after this one (byte order): the cursor of the next page.
    pub after: Option<String>,
    /// At most this many rows (`None`: all).
    pub limit: Option<usize>,
    /// Also count the matches (without `after`), up to this many; more is
    /// [`Total::MoreThan`]. `None`: not counted.
    pub count_up_to: Option<u64>,
    /// The [`ConnPage::generation`] of this query's page that the caller kept (the server's
    /// cache of single GETs, issue 19): a store that can tell that nothing was committed
    /// since answers [`ConnPage::unchanged`] instead of reading the rows again. A store that
    /// cannot tell reads them.
    pub unless_generation: Option<u64>,
}

/// The last test result a listed connection must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    /// The last test failed.
    Failing,
    /// The last test succeeded.
    Passing,
    /// Not tested since it was created or last updated.
    Untested,
}

/// The last test of a connection: when, whether it worked, and the probe's message (which
/// never holds a secret: probes scrub driver messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestStatus {
    /// RFC 3339.
    pub tested_at: String,
    pub ok: bool,
    pub message: String,
}

/// A connection as a list shows it: no sealed value, only whether one is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedConnection {
    pub conn_id: String,
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub schema: Option<String>,
    pub login: Option<String>,
    pub has_password: bool,
    pub has_extra: bool,
    pub description: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub updated_by: Option<String>,
    pub version: i64,
    /// The last test of this version; `None`: not tested since created or updated.
    pub last_test: Option<TestStatus>,
}

/// How many connections match a [`ConnQuery`] (all pages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Total {
    Exact(u64),
    /// More than this many (the count stopped there).
    MoreThan(u64),
}

/// One page of [`Store::page_connections`](crate::Store::page_connections).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnPage {
    pub rows: Vec<ListedConnection>,
    /// Whether more rows follow the last one (the next page starts after it).
    pub more: bool,
    /// `Some` when [`ConnQuery::count_up_to`] asked for it.
    pub total: Option<Total>,
    /// The store's [`generation`](crate::Store::generation), looked at before the rows were
    /// read — so the rows hold every commit the generation counts, and may hold later ones —
    /// for a caller that keeps the page until the generation moves. `None` from a store that
    /// does not say (PostgreSQL: its generation may cost a round trip of its own).
    pub generation: Option<u64>,
    /// Nothing was committed since [`ConnQuery::unless_generation`]: no rows were read (`rows`
    /// is empty) and the caller's page is still the store's.
    pub unchanged: bool,
}

/// Which SQL dialect a statement is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A parameter of a page statement, bound in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Param {
    Text(String),
    Int(i64),
}

/// A statement and its parameters.
pub(crate) type Statement = (String, Vec<Param>);

/// The columns of a listed row: the plain ones, whether the secrets are set (never the
/// sealed bytes), and the last test.
const LISTED_COLUMNS: &str = "c.conn_id, c.conn_type, c.host, c.port, c.schema_name, c.login, \
     CASE WHEN c.password IS NULL THEN 0 ELSE 1 END AS has_password, \
     CASE WHEN c.extra IS NULL THEN 0 ELSE 1 END AS has_extra, \
     c.description, c.created_at, c.updated_at, c.updated_by, c.version, \
     s.tested_at AS test_at, s.ok AS test_ok, s.message AS test_message";

/// The page statement for `q` and its parameters, and — if `q` asks for a total — the count
/// statement and its parameters. Only the filters `q` uses are in the SQL (a filter written
/// `p IS NULL OR …` would keep SQLite from seeking on the primary key), so each combination
/// is its own (cached) statement.
pub(crate) fn page_sql(d: Dialect, q: &ConnQuery) -> (Statement, Option<Statement>) {
    let prefix = match d {
        Dialect::Sqlite => "?",
        Dialect::Postgres => "$",
    };
    let mut params = Vec::new();
    let mut conds = Vec::new();
    let push = |params: &mut Vec<Param>, p: Param| {
        params.push(p);
        format!("{prefix}{}", params.len())
    };
    if let Some(id) = &q.conn_id {
        let p = push(&mut params, Param::Text(id.clone()));
        conds.push(format!("c.conn_id = {p}"));
    }
    if let Some(t) = &q.conn_type {
        let p = push(&mut params, Param::Text(t.clone()));
        conds.push(format!("c.conn_type = {p}"));
    }
    if let Some(text) = q.search.as_deref().filter(|s| !s.is_empty()) {
        conds.push(match d {
            // SQLite's LIKE ignores the case of ASCII letters only, as its lower() does; it
            // compares in place, where instr(lower(…)) made a lowered copy of every value of
            // the three columns (2.5× slower on a scan of 1,000,000 rows, docs/BENCHMARKS.md).
            Dialect::Sqlite => {
                let p = push(&mut params, Param::Text(like_pattern(text)));
                format!(
                    "(c.conn_id LIKE {p} ESCAPE '\\' OR c.host LIKE {p} ESCAPE '\\' \
                     OR c.description LIKE {p} ESCAPE '\\')"
                )
            }
            // ILIKE folds case as lower() does (the column's collation) without a lowered
            // copy of every value: 1.5× faster than strpos(lower(…)) on a scan of 1,000,000.
            Dialect::Postgres => {
                let p = push(&mut params, Param::Text(like_pattern(text)));
                format!(
                    "(c.conn_id ILIKE {p} ESCAPE '\\' OR c.host ILIKE {p} ESCAPE '\\' \
                     OR c.description ILIKE {p} ESCAPE '\\')"
                )
            }
        });
    }
    // Failing or passing: only tested connections, read in conn_id order from the index
    // `connection_status_ok (ok, conn_id)` — the join then starts from the results, and the
    // order and the cursor are on `s.conn_id` (equal to `c.conn_id`), so a page reads its
    // rows in index order instead of sorting every failing connection (a join cannot carry
    // the order of one column over to the other).
    let tested = match q.status {
        Some(StatusFilter::Failing) => Some(0),
        Some(StatusFilter::Passing) => Some(1),
        _ => None,
    };
    if let Some(ok) = tested {
        conds.push(format!("s.ok = {ok}"));
    }
    if q.status == Some(StatusFilter::Untested) {
        conds.push("s.conn_id IS NULL".into());
    }
    // A result is about the version that was tested: an update makes the connection untested.
    let (join, key) = if tested.is_some() {
        (
            "FROM connection_status s JOIN connections c \
             ON c.conn_id = s.conn_id AND c.version = s.version",
            "s.conn_id",
        )
    } else {
        (
            "FROM connections c LEFT JOIN connection_status s \
             ON s.conn_id = c.conn_id AND s.version = c.version",
            "c.conn_id",
        )
    };
    let count = q.count_up_to.map(|cap| {
        let count_params = params.clone();
        // Without a status filter the results do not matter to the count: a connection has at
        // most one (`connection_status` is keyed by conn_id), so the outer join neither adds
        // nor removes a row. Counted on the connections alone, SQLite reads the covering type
        // index instead of looking up every row: 0.4 ms instead of 5–7 ms for 10,001 of a
        // million (docs/BENCHMARKS.md).
        let from = if q.status.is_none() {
            "FROM connections c"
        } else {
            join
        };
        // With no filter but the type, the count is kept by the database itself: the
        // triggers of migration 7 keep `connection_counts` (one row per type) in step with
        // every insert, delete and change of type, by any process and any code path. One row
        // read instead of counting up to `cap` entries of an index (issue 19: the first page
        // of a million counted 10,001). On PostgreSQL the triggers append deltas, which every
        // write's generation bump folds into the counts (one count row updated once per row
        // of a big insert would be quadratic, and a count row locked before the `state` row
        // would reorder the locks of concurrent writes): the total is the counts plus the
        // deltas not folded yet, read in one snapshot (docs/storage.md).
        if count_is_kept(q) {
            let of_type = q
                .conn_type
                .as_ref()
                .map_or(String::new(), |_| format!(" WHERE conn_type = {prefix}1"));
            let sql = match d {
                Dialect::Sqlite => format!(
                    "SELECT CAST(coalesce(sum(n), 0) AS BIGINT) AS n \
                     FROM connection_counts{of_type}"
                ),
                Dialect::Postgres => format!(
                    "SELECT CAST(coalesce(sum(n), 0) AS BIGINT) AS n FROM \
                     (SELECT n FROM connection_counts{of_type} \
                     UNION ALL SELECT n FROM connection_count_deltas{of_type}) AS kept"
                ),
            };
            return (sql, count_params);
        }
        // A literal, not a parameter: SQLite prepares a statement again on every run when a
        // parameter is its LIMIT.
        let sql = format!(
            "SELECT count(*) AS n FROM (SELECT 1 {from}{} LIMIT {}) AS matched",
            where_clause(&conds),
            cap.saturating_add(1).min(i64::MAX as u64)
        );
        (sql, count_params)
    });
    // The cursor on both sides of the join: PostgreSQL carries equalities over a join, not
    // `>` — with the cursor on one side only, a merge join read the other side's primary key
    // from its first row (500,000 rows for a page in the middle of a million).
    let mut page_join = join.to_owned();
    if let Some(after) = &q.after {
        let p = push(&mut params, Param::Text(after.clone()));
        conds.push(format!("{key} > {p}"));
        if tested.is_some() {
            conds.push(format!("c.conn_id > {p}"));
        } else {
            // In the join's condition: a row without a result must still be kept (untested).
            page_join.push_str(&format!(" AND s.conn_id > {p}"));
        }
    }
    // One more than the page: whether another page follows. SQLite reads no LIMIT: it would
    // prepare the statement again on every run (a bound LIMIT expires it), and its rows come
    // in primary-key order as they are stepped, so the caller stops after `limit + 1`.
    let limit = match d {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres => {
            let n = q
                .limit
                .and_then(|n| i64::try_from(n).ok())
                .map_or(i64::MAX, |n| n.saturating_add(1));
            format!(" LIMIT {}", push(&mut params, Param::Int(n)))
        }
    };
    let sql = format!(
        "SELECT {LISTED_COLUMNS} {page_join}{} ORDER BY {key}{limit}",
        where_clause(&conds)
    );
    ((sql, params), count)
}

/// Whether `q`'s total is read from the counts the database keeps (migration 7): no filter
/// but the type. Then the count statement is one or two rows, cheap enough to run even when
/// the page turns out to hold every match — PostgreSQL runs it inside the page statement
/// (`postgres/page.rs`), one round trip instead of two.
pub(crate) fn count_is_kept(q: &ConnQuery) -> bool {
    q.conn_id.is_none() && q.status.is_none() && q.search.as_deref().is_none_or(str::is_empty)
}

/// `text` as a LIKE pattern that finds it anywhere: `%`, `_` and `\` (the escape) stand for
/// themselves.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// The rows of a page statement (one more than asked for, if there is a next page) as a page.
pub(crate) fn page_of(
    mut rows: Vec<ListedConnection>,
    q: &ConnQuery,
    total: Option<u64>,
) -> ConnPage {
    let more = q.limit.is_some_and(|n| rows.len() > n);
    if let Some(n) = q.limit {
        rows.truncate(n);
    }
    let total = match (total, q.count_up_to) {
        (Some(n), Some(cap)) if n > cap => Some(Total::MoreThan(cap)),
        (Some(n), _) => Some(Total::Exact(n)),
        (None, _) => None,
    };
    ConnPage {
        rows,
        more,
        total,
        generation: None,
        unchanged: false,
    }
}

/// The total of `q` when the rows of its page already tell it — a first page (no `after`)
/// with no page after it holds every match — so that the count statement, which reads the
/// matches again (all of them for a search text: a scan), is not run. `read`: the rows the
/// page statement returned (one more than the page when another follows).
pub(crate) fn total_from_rows(q: &ConnQuery, read: usize) -> Option<u64> {
    let more = q.limit.is_some_and(|n| read > n);
    (q.after.is_none() && !more).then(|| u64::try_from(read).unwrap_or(u64::MAX))
}

/// A row of the page statement.
pub(crate) fn listed(row: &dyn Columns) -> Result<ListedConnection> {
    const T: &str = "connections";
    let null = |column: &str| crate::StoreError::Corrupt {
        table: T,
        reason: format!("{column} is NULL"),
    };
    let text = |column: &str| row.text(T, column)?.ok_or_else(|| null(column));
    let int = |column: &str| row.int(T, column)?.ok_or_else(|| null(column));
    let last_test = match row.text("connection_status", "test_at")? {
        None => None,
        Some(tested_at) => Some(TestStatus {
            tested_at,
            ok: row.int("connection_status", "test_ok")?.unwrap_or(0) != 0,
            message: row
                .text("connection_status", "test_message")?
                .unwrap_or_default(),
        }),
    };
    Ok(ListedConnection {
        conn_id: text("conn_id")?,
        conn_type: text("conn_type")?,
        host: row.text(T, "host")?,
        port: row.int(T, "port")?.and_then(|p| u16::try_from(p).ok()),
        schema: row.text(T, "schema_name")?,
        login: row.text(T, "login")?,
        has_password: int("has_password")? != 0,
        has_extra: int("has_extra")? != 0,
        description: row.text(T, "description")?,
        created_at: text("created_at")?,
        updated_at: text("updated_at")?,
        updated_by: row.text(T, "updated_by")?,
        version: int("version")?,
        last_test,
    })
}

/// The statement of [`Store::record_test`](crate::Store::record_test): the result of testing
/// version `p2` of `p1` (at `p3`, ok `p4`, message `p5`), written only while the connection
/// still has that version — a test that raced an update or a delete records nothing.
pub(crate) fn record_test_sql(prefix: &str) -> String {
    let p = |n: u8| format!("{prefix}{n}");
    format!(
        "INSERT INTO connection_status (conn_id, version, tested_at, ok, message) \
         SELECT conn_id, version, {at}, {ok}, {msg} FROM connections \
         WHERE conn_id = {id} AND version = {v} \
         ON CONFLICT (conn_id) DO UPDATE SET version = excluded.version, \
         tested_at = excluded.tested_at, ok = excluded.ok, message = excluded.message",
        id = p(1),
        v = p(2),
        at = p(3),
        ok = p(4),
        msg = p(5),
    )
}

#[cfg(test)]
mod tests;
