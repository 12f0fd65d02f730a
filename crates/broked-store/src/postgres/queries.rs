//! The statements behind [`Store`]: every query of the PostgreSQL backend, columns read by
//! name, one binder for a connection row.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::bridge::{Ctx, Order, pg};
use super::{PgStore, fresh, tokens};
use crate::rows::{self, CONN_COLUMNS, Columns, ConnSql, Keyed, PIPELINE_COLUMNS, REF_COLUMNS};
use crate::{
    Deleted, Deletion, Logged, PipelineRef, Purged, PutMany, PutPipeline, Reseal, Result,
    RotationGuard, SealedField, Store, StoreError, StoredConnection, StoredPipeline, StoredToken,
    StoredVersion, WriteLog, Written,
};

/// The connection statements with PostgreSQL's `$n` parameters.
static CONN_SQL: LazyLock<ConnSql> = LazyLock::new(|| ConnSql::new("$"));

/// `insert` that inserts nothing on an existing id, and returns the new row's version.
static INSERT_NEW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} ON CONFLICT (conn_id) DO NOTHING RETURNING version",
        CONN_SQL.insert
    )
});

impl Columns for PgRow {
    fn text(&self, table: &'static str, column: &str) -> Result<Option<String>> {
        self.try_get(column).map_err(read_error(table))
    }

    /// `BIGINT` or `INTEGER` (the port, a literal).
    fn int(&self, table: &'static str, column: &str) -> Result<Option<i64>> {
        use sqlx::{TypeInfo, ValueRef};
        let int4 = self
            .try_get_raw(column)
            .map_err(read_error(table))?
            .type_info()
            .name()
            == "INT4";
        if int4 {
            let v: Option<i32> = self.try_get(column).map_err(read_error(table))?;
            Ok(v.map(i64::from))
        } else {
            self.try_get(column).map_err(read_error(table))
        }
    }

    fn blob(&self, table: &'static str, column: &str) -> Result<Option<Vec<u8>>> {
        self.try_get(column).map_err(read_error(table))
    }
}

/// A column that cannot be read as the type the store wrote.
fn read_error(table: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Postgres {
        context: table,
        source,
    }
}

/// Every row, made by `read`.
pub(super) fn all<T>(rows: &[PgRow], read: fn(&dyn Columns) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(|r| read(r)).collect()
}

/// Binds the parameters of every connection statement ([`ConnSql`]): the 15 columns of
/// `conn` in [`CONN_COLUMNS`] order, then its version (read by `update` only).
fn bind_conn<'q>(
    sql: &'q str,
    conn: &'q StoredConnection,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(&conn.conn_id)
        .bind(&conn.conn_type)
        .bind(&conn.host)
        .bind(conn.port.map(i32::from))
        .bind(&conn.schema)
        .bind(&conn.login)
        .bind(conn.password.as_ref().map(|s| &s.blob))
        .bind(conn.password.as_ref().map(|s| i64::from(s.key_id)))
        .bind(conn.extra.as_ref().map(|s| &s.blob))
        .bind(conn.extra.as_ref().map(|s| i64::from(s.key_id)))
        .bind(&conn.description)
        .bind(&conn.created_at)
        .bind(&conn.updated_at)
        .bind(&conn.updated_by)
        .bind(rows::changed_column(&conn.changed))
        .bind(conn.version)
}

/// Rows per statement of an import (`put_connections`): a round trip per 5,000 rows, not
/// per row.
const IMPORT_BATCH: usize = 5_000;

/// [`ConnSql::insert`] for many new rows in one statement: each column as an array, and each
/// row's version one more than the newest kept version of its conn_id (1 without history).
static INSERT_BATCH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO connections ({CONN_COLUMNS}) \
         SELECT t.*, COALESCE((SELECT max(v.version) FROM connection_versions v \
         WHERE v.conn_id = t.conn_id), 0) + 1 \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], \
         $7::bytea[], $8::bigint[], $9::bytea[], $10::bigint[], $11::text[], $12::text[], \
         $13::text[], $14::text[], $15::text[]) \
         AS t(conn_id, conn_type, host, port, schema_name, login, password, password_key, \
         extra, extra_key, description, created_at, updated_at, updated_by, changed)"
    )
});

/// Inserts `rows`, none of which is there, in one statement ([`INSERT_BATCH`]).
async fn insert_batch(ctx: &Ctx, c: &mut PgConnection, rows: &[&StoredConnection]) -> Result<()> {
    fn column<'r, T>(
        rows: &[&'r StoredConnection],
        f: impl Fn(&'r StoredConnection) -> T,
    ) -> Vec<T> {
        rows.iter().map(|r| f(r)).collect()
    }
    sqlx::query(&INSERT_BATCH)
        .bind(column(rows, |r| r.conn_id.as_str()))
        .bind(column(rows, |r| r.conn_type.as_str()))
        .bind(column(rows, |r| r.host.as_deref()))
        .bind(column(rows, |r| r.port.map(i32::from)))
        .bind(column(rows, |r| r.schema.as_deref()))
        .bind(column(rows, |r| r.login.as_deref()))
        .bind(column(rows, |r| {
            r.password.as_ref().map(|s| s.blob.as_slice())
        }))
        .bind(column(rows, |r| {
            r.password.as_ref().map(|s| i64::from(s.key_id))
        }))
        .bind(column(rows, |r| {
            r.extra.as_ref().map(|s| s.blob.as_slice())
        }))
        .bind(column(rows, |r| {
            r.extra.as_ref().map(|s| i64::from(s.key_id))
        }))
        .bind(column(rows, |r| r.description.as_deref()))
        .bind(column(rows, |r| r.created_at.as_str()))
        .bind(column(rows, |r| r.updated_at.as_str()))
        .bind(column(rows, |r| r.updated_by.as_deref()))
        .bind(column(rows, |r| rows::changed_column(&r.changed)))
        .execute(c)
        .await
        .map_err(pg(ctx, "import"))?;
    Ok(())
}

/// Keeps at most `keep` previous versions of `conn_id`.
async fn prune(ctx: &Ctx, c: &mut PgConnection, conn_id: &str, keep: u32) -> Result<()> {
    sqlx::query(&CONN_SQL.prune)
        .bind(conn_id)
        .bind(i64::from(keep))
        .execute(c)
        .await
        .map_err(pg(ctx, "history"))?;
    Ok(())
}

/// Copies the current row of `conn_id` into the history (if it has version `version`, when
/// given); returns how many rows were copied.
async fn keep(ctx: &Ctx, c: &mut PgConnection, conn_id: &str, version: Option<i64>) -> Result<u64> {
    let q = match version {
        None => sqlx::query(&CONN_SQL.keep).bind(conn_id),
        Some(v) => sqlx::query(&CONN_SQL.keep_if).bind(conn_id).bind(v),
    };
    Ok(q.execute(c)
        .await
        .map_err(pg(ctx, "history"))?
        .rows_affected())
}

/// Whether the row `what` with key `key` exists.
pub(super) async fn exists<T>(ctx: &Ctx, c: &mut PgConnection, what: Keyed, key: T) -> Result<bool>
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
{
    sqlx::query_scalar(&what.exists_sql("$"))
        .bind(key)
        .fetch_one(c)
        .await
        .map_err(pg(ctx, what.table()))
}

/// Fails with [`StoreError::UnknownKey`] unless every key that seals a field of `conn` is
/// registered (one round trip).
async fn check_keys(ctx: &Ctx, c: &mut PgConnection, conn: &StoredConnection) -> Result<()> {
    let keys = [&conn.password, &conn.extra]
        .into_iter()
        .flatten()
        .map(|s| s.key_id);
    check_key_ids(ctx, c, keys).await
}

/// Fails with [`StoreError::UnknownKey`] unless every key of `keys` is registered (one round
/// trip; none without keys).
async fn check_key_ids(
    ctx: &Ctx,
    c: &mut PgConnection,
    keys: impl IntoIterator<Item = u32>,
) -> Result<()> {
    let keys: Vec<i64> = keys.into_iter().map(i64::from).collect();
    if keys.is_empty() {
        return Ok(());
    }
    let unknown: Option<i64> = sqlx::query_scalar(
        "SELECT k FROM unnest($1::bigint[]) AS k \
         WHERE NOT EXISTS (SELECT 1 FROM keys WHERE key_id = k) LIMIT 1",
    )
    .bind(keys)
    .fetch_optional(&mut *c)
    .await
    .map_err(pg(ctx, "keys"))?;
    match unknown {
        Some(k) => Err(StoreError::UnknownKey(rows::key_id("keys", k)?)),
        None => Ok(()),
    }
}

/// The version of the row `conn_id`, locked until the commit (`None`: no row). Taken first
/// by a write in [`Order::Rows`]: a concurrent write of the same row waits here, and every
/// later statement sees the row as the last writer committed it.
async fn lock_row(ctx: &Ctx, c: &mut PgConnection, conn_id: &str) -> Result<Option<i64>> {
    sqlx::query_scalar("SELECT version FROM connections WHERE conn_id = $1 FOR UPDATE")
        .bind(conn_id)
        .fetch_optional(&mut *c)
        .await
        .map_err(pg(ctx, "connections"))
}

/// A setting of `meta` read with `c` (the pool, or a transaction).
pub(super) async fn meta_value<'e, E>(ctx: &Ctx, c: E, name: &str) -> Result<Option<String>>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
        .bind(name)
        .fetch_optional(c)
        .await
        .map_err(pg(ctx, "meta"))
}

/// Sets a setting of `meta` inside the transaction `c`.
pub(super) async fn put_meta(
    ctx: &Ctx,
    c: &mut PgConnection,
    name: &str,
    value: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO meta (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(name)
    .bind(value)
    .execute(c)
    .await
    .map_err(pg(ctx, "meta"))?;
    Ok(())
}

async fn refs_of<'e, E>(ctx: &Ctx, c: E, conn_id: &str) -> Result<Vec<PipelineRef>>
where
    E: sqlx::PgExecutor<'e>,
{
    let rows = sqlx::query(&format!(
        "SELECT {REF_COLUMNS} FROM pipeline_refs r JOIN pipelines p USING (pipeline_id)
         WHERE r.conn_id = $1 ORDER BY r.pipeline_id, r.node_id"
    ))
    .bind(conn_id)
    .fetch_all(c)
    .await
    .map_err(pg(ctx, "used_by"))?;
    all(&rows, rows::pipeline_ref)
}

impl Store for PgStore {
    fn key_checks(&self) -> Result<Vec<(u32, String)>> {
        self.read((), |c, ()| {
            Box::pin(async move {
                let rows = sqlx::query(rows::KEY_CHECKS)
                    .fetch_all(&c.pool)
                    .await
                    .map_err(pg(c, "keys"))?;
                all(&rows, rows::key_check)
            })
        })
    }

    fn meta(&self, name: &str) -> Result<Option<String>> {
        self.read(name.to_owned(), |c, name| {
            Box::pin(async move { meta_value(c, &c.pool, name).await })
        })
    }

    fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.write(
            (name.to_owned(), value.to_owned()),
            |ctx, c, (name, value)| {
                Box::pin(async move {
                    put_meta(ctx, c, name, value).await?;
                    Ok(((), true))
                })
            },
        )
    }

    fn add_key_check(&self, key_id: u32, check: &str) -> Result<()> {
        self.write((key_id, check.to_string()), |ctx, c, (key_id, check)| {
            Box::pin(async move {
                let existing: Option<String> =
                    sqlx::query_scalar("SELECT check_value FROM keys WHERE key_id = $1")
                        .bind(i64::from(*key_id))
                        .fetch_optional(&mut *c)
                        .await
                        .map_err(pg(ctx, "keys"))?;
                match existing {
                    Some(v) if v == *check => Ok(((), false)),
                    Some(_) => Err(StoreError::Corrupt {
                        table: "keys",
                        reason: format!("key {key_id} is registered with another check value"),
                    }),
                    None => {
                        sqlx::query("INSERT INTO keys (key_id, check_value) VALUES ($1, $2)")
                            .bind(i64::from(*key_id))
                            .bind(check)
                            .execute(&mut *c)
                            .await
                            .map_err(pg(ctx, "keys"))?;
                        Ok(((), true))
                    }
                }
            })
        })
    }

    fn remove_unused_keys(&self, key_ids: &[u32]) -> Result<Vec<u32>> {
        self.write(key_ids.to_vec(), |ctx, c, key_ids| {
            Box::pin(async move {
                let mut removed = Vec::new();
                for &id in key_ids {
                    let n = sqlx::query(&rows::key_unused_sql("$"))
                        .bind(i64::from(id))
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "keys"))?
                        .rows_affected();
                    if n > 0 {
                        removed.push(id);
                    }
                }
                let wrote = !removed.is_empty();
                Ok((removed, wrote))
            })
        })
    }

    fn sealed_per_key(&self) -> Result<Vec<(u32, u64)>> {
        self.read((), |c, ()| {
            Box::pin(async move {
                let rows = sqlx::query(rows::SEALED_PER_KEY)
                    .fetch_all(&c.pool)
                    .await
                    .map_err(pg(c, "keys"))?;
                all(&rows, rows::key_count)
            })
        })
    }

    fn count_seals(&self, key_id: u32, n: u64) -> Result<u64> {
        // Counting is bookkeeping, not data: one atomic statement, no generation bump.
        self.read((key_id, n), |c, &(key_id, n)| {
            Box::pin(async move {
                let total: Option<i64> = sqlx::query_scalar(
                    "UPDATE keys SET seals = seals + $2 WHERE key_id = $1 RETURNING seals",
                )
                .bind(i64::from(key_id))
                .bind(n as i64)
                .fetch_optional(&c.pool)
                .await
                .map_err(pg(c, "seals"))?;
                Ok(total.unwrap_or(0) as u64)
            })
        })
    }

    fn seals(&self, key_id: u32) -> Result<u64> {
        self.read(key_id, |c, &key_id| {
            Box::pin(async move {
                let total: Option<i64> =
                    sqlx::query_scalar("SELECT seals FROM keys WHERE key_id = $1")
                        .bind(i64::from(key_id))
                        .fetch_optional(&c.pool)
                        .await
                        .map_err(pg(c, "seals"))?;
                Ok(total.unwrap_or(0) as u64)
            })
        })
    }

    /// While this store listens for the database's change notifications: a counter of the
    /// notifications (and of this process's own writes) — no round trip. While it does not
    /// (the listening connection is down or reconnecting): the database's generation, asked
    /// every time, within [`fresh::CHECK_TIMEOUT`]; after a check that could not reach the
    /// server, the same error at once for [`fresh::RETRY_AFTER`].
    fn generation_cached(&self) -> Result<Option<u64>> {
        if let Some(g) = self.fresh.listening() {
            return Ok(Some(g));
        }
        // Failing fast, as `generation` would, is not waiting either.
        match self.fresh.recent_failure() {
            Some(reason) => Err(StoreError::Connect {
                server: self.server.to_string(),
                reason,
            }),
            None => Ok(None),
        }
    }

    fn generation(&self) -> Result<u64> {
        if let Some(g) = self.fresh.listening() {
            return Ok(g);
        }
        if let Some(reason) = self.fresh.recent_failure() {
            return Err(StoreError::Connect {
                server: self.server.to_string(),
                reason,
            });
        }
        let db = self.read((), |c, ()| {
            Box::pin(async move {
                tokio::time::timeout(
                    fresh::CHECK_TIMEOUT,
                    sqlx::query_scalar::<_, i64>("SELECT generation FROM state WHERE id = 1")
                        .fetch_one(&c.pool),
                )
                .await
                .map_err(|_| StoreError::Connect {
                    server: c.server.to_string(),
                    reason: format!("no answer within {} s", fresh::CHECK_TIMEOUT.as_secs_f32()),
                })?
                .map_err(pg(c, "generation"))
            })
        });
        match db {
            Ok(db) => {
                self.fresh.checked(None);
                Ok(self.fresh.observe(db))
            }
            Err(e) => {
                if let StoreError::Connect { reason, .. } = &e {
                    self.fresh.checked(Some(reason.clone()));
                }
                Err(e)
            }
        }
    }

    fn insert_connection_logged(
        &self,
        conn: &StoredConnection,
        log: &WriteLog,
    ) -> Result<(i64, Logged)> {
        self.write_with(Order::Rows, conn.clone(), log.clone(), |ctx, c, conn| {
            Box::pin(async move {
                check_keys(ctx, c, conn).await?;
                // The primary key orders inserts of one id: a second one waits for the first
                // to commit and then inserts nothing.
                let version: Option<i64> = bind_conn(&INSERT_NEW, conn)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(pg(ctx, "insert"))?
                    .map(|row| row.try_get("version"))
                    .transpose()
                    .map_err(pg(ctx, "insert"))?;
                let Some(version) = version else {
                    return Err(StoreError::AlreadyExists(conn.conn_id.clone()));
                };
                // A delete of this id that committed while the insert waited for it is not in
                // the insert's snapshot, nor is its history: number the row after the history
                // as it is now (the row is ours until the commit).
                let renumbered: Option<i64> = sqlx::query_scalar(
                    "UPDATE connections SET version = v.next \
                     FROM (SELECT COALESCE(max(version), 0) + 1 AS next \
                           FROM connection_versions WHERE conn_id = $1) AS v \
                     WHERE conn_id = $1 AND version < v.next RETURNING version",
                )
                .bind(&conn.conn_id)
                .fetch_optional(&mut *c)
                .await
                .map_err(pg(ctx, "insert"))?;
                Ok((renumbered.unwrap_or(version), true))
            })
        })
    }

    fn get_connection(&self, conn_id: &str) -> Result<Option<StoredConnection>> {
        self.read(conn_id.to_string(), |c, conn_id| {
            Box::pin(async move {
                // The row and the generation it belongs to, from one snapshot: a read that
                // is ahead of the notifications received so far moves the generation on
                // (see `postgres/fresh.rs`), so no later resolve in this process serves an
                // older value from its cache.
                let row = sqlx::query(&format!(
                    "SELECT {CONN_COLUMNS}, s.generation FROM state s
                     LEFT JOIN connections ON conn_id = $1 WHERE s.id = 1"
                ))
                .bind(conn_id)
                .fetch_one(&c.pool)
                .await
                .map_err(pg(c, "get"))?;
                let seen: i64 = row.try_get("generation").map_err(pg(c, "get"))?;
                c.fresh.advance(seen);
                let found: Option<String> = row.try_get("conn_id").map_err(pg(c, "get"))?;
                match found {
                    None => Ok(None),
                    Some(_) => rows::connection(&row).map(Some),
                }
            })
        })
    }

    fn list_connections(&self, conn_type: Option<&str>) -> Result<Vec<StoredConnection>> {
        self.read(conn_type.map(str::to_string), |c, conn_type| {
            Box::pin(async move {
                let rows = sqlx::query(&format!(
                    "SELECT {CONN_COLUMNS} FROM connections
                     WHERE $1::text IS NULL OR conn_type = $1 ORDER BY conn_id"
                ))
                .bind(conn_type)
                .fetch_all(&c.pool)
                .await
                .map_err(pg(c, "list"))?;
                all(&rows, rows::connection)
            })
        })
    }

    fn update_connection_logged(
        &self,
        conn: &StoredConnection,
        keep_versions: u32,
        log: &WriteLog,
    ) -> Result<(Written, Logged)> {
        self.write_with(
            Order::Rows,
            (conn.clone(), keep_versions),
            log.clone(),
            |ctx, c, (conn, keep_versions)| {
                Box::pin(async move {
                    check_keys(ctx, c, conn).await?;
                    match lock_row(ctx, c, &conn.conn_id).await? {
                        None => return Ok((Written::Missing, false)),
                        Some(v) if v != conn.version => return Ok((Written::Stale, false)),
                        Some(_) => {}
                    }
                    keep(ctx, c, &conn.conn_id, None).await?;
                    let n = bind_conn(&CONN_SQL.update, conn)
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "update"))?
                        .rows_affected();
                    if n != 1 {
                        return Err(StoreError::Corrupt {
                            table: "connections",
                            reason: "the locked row changed".into(),
                        });
                    }
                    prune(ctx, c, &conn.conn_id, *keep_versions).await?;
                    Ok((Written::Done, true))
                })
            },
        )
    }

    fn delete_connection_logged(
        &self,
        conn_id: &str,
        how: &Deletion,
        log: &WriteLog,
    ) -> Result<(Deleted, Logged)> {
        self.write_with(
            Order::Rows,
            (conn_id.to_string(), how.clone()),
            log.clone(),
            |ctx, c, (conn_id, how)| {
                Box::pin(async move {
                    // References are added only by writes in `Order::Alone`, which never run
                    // beside this one: the check below holds until the commit.
                    let Some(version) = lock_row(ctx, c, conn_id).await? else {
                        return Ok((Deleted::Missing, false));
                    };
                    if how.expected_version.is_some_and(|v| v != version) {
                        return Ok((Deleted::Stale, false));
                    }
                    let refs = refs_of(ctx, &mut *c, conn_id).await?;
                    if !refs.is_empty() && !how.force {
                        return Ok((Deleted::InUse(refs), false));
                    }
                    keep(ctx, c, conn_id, None).await?;
                    sqlx::query(&CONN_SQL.mark_deleted)
                        .bind(conn_id)
                        .bind(&how.at)
                        .bind(&how.by)
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "history"))?;
                    prune(ctx, c, conn_id, how.keep_versions).await?;
                    let n = sqlx::query("DELETE FROM connections WHERE conn_id = $1")
                        .bind(conn_id)
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "delete"))?
                        .rows_affected();
                    if n == 0 {
                        return Ok((Deleted::Missing, false));
                    }
                    // As in SQLite: pipelines keep their definitions, lose these references.
                    sqlx::query("DELETE FROM pipeline_refs WHERE conn_id = $1")
                        .bind(conn_id)
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "delete"))?;
                    Ok((Deleted::Done, true))
                })
            },
        )
    }

    fn put_connections_logged(
        &self,
        rows: &[StoredConnection],
        overwrite: bool,
        keep_versions: u32,
        log: &WriteLog,
    ) -> Result<(PutMany, Logged)> {
        self.write_with(
            Order::Alone,
            (rows.to_vec(), overwrite, keep_versions),
            log.clone(),
            |ctx, c, (rows, overwrite, keep_versions)| {
                Box::pin(async move {
                    // Each key once (an import of a million rows has one key).
                    let keys: BTreeSet<u32> = rows
                        .iter()
                        .flat_map(|r| [&r.password, &r.extra])
                        .flatten()
                        .map(|s| s.key_id)
                        .collect();
                    check_key_ids(ctx, c, keys).await?;
                    // Which rows are there: one statement per batch of conn_ids.
                    let mut there_ids = std::collections::HashSet::new();
                    for batch in rows.chunks(IMPORT_BATCH) {
                        let ids: Vec<&str> = batch.iter().map(|r| r.conn_id.as_str()).collect();
                        let found: Vec<String> = sqlx::query_scalar(
                            "SELECT conn_id FROM connections WHERE conn_id = ANY($1::text[])",
                        )
                        .bind(ids)
                        .fetch_all(&mut *c)
                        .await
                        .map_err(pg(ctx, "import"))?;
                        there_ids.extend(found);
                    }
                    let existing: Vec<String> = rows
                        .iter()
                        .filter(|r| there_ids.contains(&r.conn_id))
                        .map(|r| r.conn_id.clone())
                        .collect();
                    if !existing.is_empty() && !overwrite {
                        return Ok((PutMany::Exists(existing), false));
                    }
                    // New rows (not there, and not after another row of their conn_id) go in
                    // by batches; the others, in order after them, one by one with their
                    // history, as an update does.
                    let mut first = std::collections::HashSet::new();
                    let (new, replacing): (Vec<&StoredConnection>, Vec<&StoredConnection>) =
                        rows.iter().partition(|r| {
                            !there_ids.contains(&r.conn_id) && first.insert(r.conn_id.as_str())
                        });
                    for batch in new.chunks(IMPORT_BATCH) {
                        insert_batch(ctx, c, batch).await?;
                    }
                    for conn in replacing {
                        let kept = keep(ctx, c, &conn.conn_id, None).await?;
                        bind_conn(&CONN_SQL.upsert, conn)
                            .execute(&mut *c)
                            .await
                            .map_err(pg(ctx, "import"))?;
                        if kept > 0 {
                            prune(ctx, c, &conn.conn_id, *keep_versions).await?;
                        }
                    }
                    Ok((PutMany::Done(rows.len()), !rows.is_empty()))
                })
            },
        )
    }

    fn history(&self, conn_id: Option<&str>) -> Result<Vec<StoredVersion>> {
        self.read(conn_id.map(str::to_owned), |c, conn_id| {
            Box::pin(async move {
                let rows = sqlx::query(&rows::history_sql("$", "::text"))
                    .bind(conn_id)
                    .fetch_all(&c.pool)
                    .await
                    .map_err(pg(c, "history"))?;
                all(&rows, rows::version)
            })
        })
    }

    fn get_version(&self, conn_id: &str, version: i64) -> Result<Option<StoredVersion>> {
        self.read((conn_id.to_owned(), version), |c, (conn_id, version)| {
            Box::pin(async move {
                let row = sqlx::query(&rows::get_version_sql("$"))
                    .bind(conn_id)
                    .bind(version)
                    .fetch_optional(&c.pool)
                    .await
                    .map_err(pg(c, "history"))?;
                row.as_ref().map(|r| rows::version(r)).transpose()
            })
        })
    }

    fn purge_history(&self, conn_id: &str) -> Result<Purged> {
        self.write(conn_id.to_owned(), |ctx, c, conn_id| {
            Box::pin(async move {
                if exists(ctx, c, Keyed::Connection, conn_id.as_str()).await? {
                    return Ok((Purged::Exists, false));
                }
                let n = sqlx::query("DELETE FROM connection_versions WHERE conn_id = $1")
                    .bind(conn_id)
                    .execute(&mut *c)
                    .await
                    .map_err(pg(ctx, "history"))?
                    .rows_affected();
                Ok(if n == 0 {
                    (Purged::Missing, false)
                } else {
                    (Purged::Done(n), true)
                })
            })
        })
    }

    fn sealed_not_under(&self, key_id: u32, limit: usize) -> Result<Vec<SealedField>> {
        self.read((key_id, limit), |c, &(under, limit)| {
            Box::pin(async move {
                let rows = sqlx::query(&rows::sealed_not_under_sql("$"))
                    .bind(i64::from(under))
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&c.pool)
                    .await
                    .map_err(pg(c, "reseal"))?;
                all(&rows, rows::sealed_field)
            })
        })
    }

    fn reseal(&self, batch: &[Reseal]) -> Result<usize> {
        self.write(batch.to_vec(), |ctx, c, batch| {
            Box::pin(async move {
                let keys: BTreeSet<u32> = batch.iter().map(|r| r.new.key_id).collect();
                for key in keys {
                    if !exists(ctx, c, Keyed::Key, i64::from(key)).await? {
                        return Err(StoreError::UnknownKey(key));
                    }
                }
                let mut written = 0;
                for r in batch {
                    let sql = rows::reseal_sql("$", r.field, r.version.is_some());
                    let mut q = sqlx::query(&sql)
                        .bind(&r.conn_id)
                        .bind(&r.old)
                        .bind(&r.new.blob)
                        .bind(i64::from(r.new.key_id));
                    if let Some(v) = r.version {
                        q = q.bind(v);
                    }
                    written += q
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "reseal"))?
                        .rows_affected() as usize;
                }
                Ok((written, written > 0))
            })
        })
    }

    fn put_pipeline_logged(
        &self,
        pipeline: &StoredPipeline,
        refs: &[PipelineRef],
        log: &WriteLog,
    ) -> Result<(PutPipeline, Logged)> {
        // Alone: no connection is deleted between the check of the references and the commit.
        let args = (pipeline.clone(), refs.to_vec());
        self.write_with(Order::Alone, args, log.clone(), |ctx, c, (p, refs)| {
            Box::pin(async move {
                let mut unknown = BTreeSet::new();
                for r in refs {
                    if !exists(ctx, c, Keyed::Connection, r.conn_id.as_str()).await? {
                        unknown.insert(r.conn_id.clone());
                    }
                }
                if !unknown.is_empty() {
                    return Ok((
                        PutPipeline::UnknownConnIds(unknown.into_iter().collect()),
                        false,
                    ));
                }
                let replaced = sqlx::query(
                    "UPDATE pipelines SET name = $2, definition = $3, updated_at = $4
                     WHERE pipeline_id = $1",
                )
                .bind(&p.pipeline_id)
                .bind(&p.name)
                .bind(&p.definition)
                .bind(&p.updated_at)
                .execute(&mut *c)
                .await
                .map_err(pg(ctx, "put pipeline"))?
                .rows_affected()
                    == 1;
                if replaced {
                    sqlx::query("DELETE FROM pipeline_refs WHERE pipeline_id = $1")
                        .bind(&p.pipeline_id)
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "put pipeline"))?;
                } else {
                    sqlx::query(
                        &format!(
                            "INSERT INTO pipelines ({PIPELINE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
                        ),
                    )
                    .bind(&p.pipeline_id)
                    .bind(&p.name)
                    .bind(&p.definition)
                    .bind(&p.created_at)
                    .bind(&p.updated_at)
                    .execute(&mut *c)
                    .await
                    .map_err(pg(ctx, "put pipeline"))?;
                }
                for r in refs {
                    sqlx::query(
                        "INSERT INTO pipeline_refs (pipeline_id, node_id, conn_id)
                         VALUES ($1, $2, $3)
                         ON CONFLICT (pipeline_id, node_id) DO UPDATE SET conn_id = excluded.conn_id",
                    )
                    .bind(&p.pipeline_id)
                    .bind(&r.node_id)
                    .bind(&r.conn_id)
                    .execute(&mut *c)
                    .await
                    .map_err(pg(ctx, "put pipeline"))?;
                }
                Ok((
                    if replaced {
                        PutPipeline::Replaced
                    } else {
                        PutPipeline::Created
                    },
                    true,
                ))
            })
        })
    }

    fn get_pipeline(&self, pipeline_id: &str) -> Result<Option<StoredPipeline>> {
        self.read(pipeline_id.to_string(), |c, pipeline_id| {
            Box::pin(async move {
                let row = sqlx::query(&format!(
                    "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE pipeline_id = $1"
                ))
                .bind(pipeline_id)
                .fetch_optional(&c.pool)
                .await
                .map_err(pg(c, "get pipeline"))?;
                row.as_ref().map(|r| rows::pipeline(r)).transpose()
            })
        })
    }

    fn list_pipelines(&self) -> Result<Vec<StoredPipeline>> {
        self.read((), |c, ()| {
            Box::pin(async move {
                let rows = sqlx::query(&format!(
                    "SELECT {PIPELINE_COLUMNS} FROM pipelines ORDER BY pipeline_id"
                ))
                .fetch_all(&c.pool)
                .await
                .map_err(pg(c, "list pipelines"))?;
                all(&rows, rows::pipeline)
            })
        })
    }

    fn delete_pipeline_logged(&self, pipeline_id: &str, log: &WriteLog) -> Result<(bool, Logged)> {
        let id = pipeline_id.to_string();
        self.write_with(Order::Alone, id, log.clone(), |ctx, c, pipeline_id| {
            Box::pin(async move {
                let n = sqlx::query("DELETE FROM pipelines WHERE pipeline_id = $1")
                    .bind(pipeline_id)
                    .execute(&mut *c)
                    .await
                    .map_err(pg(ctx, "delete pipeline"))?
                    .rows_affected();
                Ok((n == 1, n == 1))
            })
        })
    }

    fn used_by(&self, conn_id: &str) -> Result<Vec<PipelineRef>> {
        self.read(conn_id.to_string(), |c, conn_id| {
            Box::pin(async move { refs_of(c, &c.pool, conn_id).await })
        })
    }

    delegated_store_methods!();
}
