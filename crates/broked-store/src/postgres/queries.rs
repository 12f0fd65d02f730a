//! The statements behind [`Store`]: every query of the PostgreSQL backend, columns read by
//! name, one binder for a connection row.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::bridge::{Ctx, pg};
use super::{PgStore, fresh, tokens};
use crate::rows::{self, CONN_COLUMNS, ConnSql, Keyed, PIPELINE_COLUMNS};
use crate::{
    Deleted, PipelineRef, PutMany, PutPipeline, Reseal, Result, RotationGuard, Sealed, SealedField,
    SecretField, Store, StoreError, StoredConnection, StoredPipeline, StoredToken, Written,
};

/// The connection statements with PostgreSQL's `$n` parameters.
static CONN_SQL: LazyLock<ConnSql> = LazyLock::new(|| ConnSql::new("$"));

/// A connection row, columns read by name; the outer error is a column that cannot be read,
/// the inner one a value that is corrupt.
fn conn_from_row(r: &PgRow) -> std::result::Result<Result<StoredConnection>, sqlx::Error> {
    let port: Option<i32> = r.try_get("port")?;
    let password = rows::sealed(r.try_get("password")?, r.try_get("password_key")?);
    let extra = rows::sealed(r.try_get("extra")?, r.try_get("extra_key")?);
    let conn = StoredConnection {
        conn_id: r.try_get("conn_id")?,
        conn_type: r.try_get("conn_type")?,
        host: r.try_get("host")?,
        port: port.and_then(|p| u16::try_from(p).ok()),
        schema: r.try_get("schema_name")?,
        login: r.try_get("login")?,
        password: None,
        extra: None,
        description: r.try_get("description")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        version: r.try_get("version")?,
    };
    Ok(password.and_then(|password| {
        Ok(StoredConnection {
            password,
            extra: extra?,
            ..conn
        })
    }))
}

fn conns_from_rows(
    ctx: &Ctx,
    rows: Vec<PgRow>,
    context: &'static str,
) -> Result<Vec<StoredConnection>> {
    rows.iter()
        .map(|r| conn_from_row(r).map_err(pg(ctx, context))?)
        .collect()
}

fn pipeline_from_row(r: &PgRow) -> std::result::Result<StoredPipeline, sqlx::Error> {
    Ok(StoredPipeline {
        pipeline_id: r.try_get("pipeline_id")?,
        name: r.try_get("name")?,
        definition: r.try_get("definition")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Binds the parameters of every connection statement ([`ConnSql`]): the 13 columns of
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
        .bind(conn.version)
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
/// registered.
async fn check_keys(ctx: &Ctx, c: &mut PgConnection, conn: &StoredConnection) -> Result<()> {
    for s in [&conn.password, &conn.extra].into_iter().flatten() {
        if !exists(ctx, c, Keyed::Key, i64::from(s.key_id)).await? {
            return Err(StoreError::UnknownKey(s.key_id));
        }
    }
    Ok(())
}

async fn refs_of<'e, E>(ctx: &Ctx, c: E, conn_id: &str) -> Result<Vec<PipelineRef>>
where
    E: sqlx::PgExecutor<'e>,
{
    let rows = sqlx::query(
        "SELECT r.pipeline_id, p.name, r.node_id, r.conn_id FROM pipeline_refs r
         JOIN pipelines p USING (pipeline_id)
         WHERE r.conn_id = $1 ORDER BY r.pipeline_id, r.node_id",
    )
    .bind(conn_id)
    .fetch_all(c)
    .await
    .map_err(pg(ctx, "used_by"))?;
    rows.iter()
        .map(|r| {
            Ok(PipelineRef {
                pipeline_id: r.try_get("pipeline_id")?,
                name: r.try_get("name")?,
                node_id: r.try_get("node_id")?,
                conn_id: r.try_get("conn_id")?,
            })
        })
        .collect::<std::result::Result<_, sqlx::Error>>()
        .map_err(pg(ctx, "used_by"))
}

impl Store for PgStore {
    fn key_checks(&self) -> Result<Vec<(u32, String)>> {
        self.read((), |c, ()| {
            Box::pin(async move {
                let rows: Vec<(i64, String)> =
                    sqlx::query_as("SELECT key_id, check_value FROM keys ORDER BY key_id")
                        .fetch_all(&c.pool)
                        .await
                        .map_err(pg(c, "keys"))?;
                rows.into_iter()
                    .map(|(k, v)| Ok((rows::key_id("keys", k)?, v)))
                    .collect()
            })
        })
    }

    fn meta(&self, name: &str) -> Result<Option<String>> {
        self.read(name.to_owned(), |c, name| {
            Box::pin(async move {
                sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&c.pool)
                    .await
                    .map_err(pg(c, "meta"))
            })
        })
    }

    fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.write(
            (name.to_owned(), value.to_owned()),
            |ctx, c, (name, value)| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO meta (name, value) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .bind(name)
                    .bind(value)
                    .execute(&mut *c)
                    .await
                    .map_err(pg(ctx, "meta"))?;
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
                    let n = sqlx::query(
                        "DELETE FROM keys WHERE key_id = $1 AND NOT EXISTS (
                           SELECT 1 FROM connections WHERE password_key = $1 OR extra_key = $1)",
                    )
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
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT k, count(*) FROM (
                       SELECT password_key AS k FROM connections WHERE password_key IS NOT NULL
                       UNION ALL
                       SELECT extra_key FROM connections WHERE extra_key IS NOT NULL) AS s
                     GROUP BY k ORDER BY k",
                )
                .fetch_all(&c.pool)
                .await
                .map_err(pg(c, "keys"))?;
                rows.into_iter()
                    .map(|(k, n)| Ok((rows::key_id("connections", k)?, n as u64)))
                    .collect()
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

    fn insert_connection(&self, conn: &StoredConnection) -> Result<()> {
        self.write(conn.clone(), |ctx, c, conn| {
            Box::pin(async move {
                check_keys(ctx, c, conn).await?;
                if exists(ctx, c, Keyed::Connection, conn.conn_id.as_str()).await? {
                    return Err(StoreError::AlreadyExists(conn.conn_id.clone()));
                }
                bind_conn(&CONN_SQL.insert, conn)
                    .execute(&mut *c)
                    .await
                    .map_err(pg(ctx, "insert"))?;
                Ok(((), true))
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
                    Some(_) => Ok(conns_from_rows(c, vec![row], "get")?.pop()),
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
                conns_from_rows(c, rows, "list")
            })
        })
    }

    fn update_connection(&self, conn: &StoredConnection) -> Result<Written> {
        self.write(conn.clone(), |ctx, c, conn| {
            Box::pin(async move {
                check_keys(ctx, c, conn).await?;
                let n = bind_conn(&CONN_SQL.update, conn)
                    .execute(&mut *c)
                    .await
                    .map_err(pg(ctx, "update"))?
                    .rows_affected();
                if n == 1 {
                    return Ok((Written::Done, true));
                }
                let exists = exists(ctx, c, Keyed::Connection, conn.conn_id.as_str()).await?;
                Ok((
                    if exists {
                        Written::Stale
                    } else {
                        Written::Missing
                    },
                    false,
                ))
            })
        })
    }

    fn delete_connection(&self, conn_id: &str, force: bool) -> Result<Deleted> {
        self.write((conn_id.to_string(), force), |ctx, c, (conn_id, force)| {
            Box::pin(async move {
                let refs = refs_of(ctx, &mut *c, conn_id).await?;
                if !refs.is_empty() && !force {
                    return Ok((Deleted::InUse(refs), false));
                }
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
        })
    }

    fn put_connections(&self, rows: &[StoredConnection], overwrite: bool) -> Result<PutMany> {
        self.write((rows.to_vec(), overwrite), |ctx, c, (rows, overwrite)| {
            Box::pin(async move {
                let mut existing = Vec::new();
                for row in rows {
                    check_keys(ctx, c, row).await?;
                    if exists(ctx, c, Keyed::Connection, row.conn_id.as_str()).await? {
                        existing.push(row.conn_id.clone());
                    }
                }
                if !existing.is_empty() && !overwrite {
                    return Ok((PutMany::Exists(existing), false));
                }
                for conn in rows {
                    bind_conn(&CONN_SQL.upsert, conn)
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "import"))?;
                }
                Ok((PutMany::Done(rows.len()), !rows.is_empty()))
            })
        })
    }

    fn sealed_not_under(&self, key_id: u32, limit: usize) -> Result<Vec<SealedField>> {
        self.read((key_id, limit), |c, &(under, limit)| {
            Box::pin(async move {
                let rows: Vec<(String, i32, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT conn_id, 0, password, password_key FROM connections
                       WHERE password_key IS NOT NULL AND password_key != $1
                     UNION ALL
                     SELECT conn_id, 1, extra, extra_key FROM connections
                       WHERE extra_key IS NOT NULL AND extra_key != $1
                     ORDER BY 1, 2 LIMIT $2",
                )
                .bind(i64::from(under))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&c.pool)
                .await
                .map_err(pg(c, "reseal"))?;
                rows.into_iter()
                    .map(|(conn_id, field, blob, key)| {
                        Ok(SealedField {
                            conn_id,
                            field: if field == 0 {
                                SecretField::Password
                            } else {
                                SecretField::Extra
                            },
                            sealed: Sealed {
                                key_id: rows::key_id("connections", key)?,
                                blob,
                            },
                        })
                    })
                    .collect()
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
                    let sql = match r.field {
                        SecretField::Password => {
                            "UPDATE connections SET password = $3, password_key = $4
                             WHERE conn_id = $1 AND password = $2"
                        }
                        SecretField::Extra => {
                            "UPDATE connections SET extra = $3, extra_key = $4
                             WHERE conn_id = $1 AND extra = $2"
                        }
                    };
                    written += sqlx::query(sql)
                        .bind(&r.conn_id)
                        .bind(&r.old)
                        .bind(&r.new.blob)
                        .bind(i64::from(r.new.key_id))
                        .execute(&mut *c)
                        .await
                        .map_err(pg(ctx, "reseal"))?
                        .rows_affected() as usize;
                }
                Ok((written, written > 0))
            })
        })
    }

    fn put_pipeline(&self, pipeline: &StoredPipeline, refs: &[PipelineRef]) -> Result<PutPipeline> {
        self.write((pipeline.clone(), refs.to_vec()), |ctx, c, (p, refs)| {
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
                row.as_ref()
                    .map(pipeline_from_row)
                    .transpose()
                    .map_err(pg(c, "get pipeline"))
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
                rows.iter()
                    .map(pipeline_from_row)
                    .collect::<std::result::Result<_, _>>()
                    .map_err(pg(c, "list pipelines"))
            })
        })
    }

    fn delete_pipeline(&self, pipeline_id: &str) -> Result<bool> {
        self.write(pipeline_id.to_string(), |ctx, c, pipeline_id| {
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

    fn lock_rotation(&self) -> Result<RotationGuard> {
        self.advisory_lock(true)?.ok_or(StoreError::Busy)
    }

    fn insert_token(&self, token: &StoredToken) -> Result<()> {
        tokens::insert(self, token)
    }

    fn list_tokens(&self) -> Result<Vec<StoredToken>> {
        tokens::list(self)
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<StoredToken>> {
        tokens::by_hash(self, hash)
    }

    fn delete_token(&self, name: &str) -> Result<bool> {
        tokens::delete(self, name)
    }

    fn touch_token(&self, name: &str, at: &str) -> Result<()> {
        tokens::touch(self, name, at)
    }

    fn count_tokens(&self) -> Result<u64> {
        tokens::count(self)
    }

    fn try_lock_rotation(&self) -> Result<Option<RotationGuard>> {
        self.advisory_lock(false)
    }
}
