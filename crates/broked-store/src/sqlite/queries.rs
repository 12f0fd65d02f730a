//! The statements behind [`Store`]: every query of the SQLite backend, columns read by name,
//! one binder for a connection row.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, Params, Row, Statement, ToSql, params};

use super::{SqliteStore, sql, tokens};
use crate::rows::{self, CONN_COLUMNS, Columns, ConnSql, Keyed, PIPELINE_COLUMNS, REF_COLUMNS};
use crate::{
    Deleted, Deletion, Logged, PipelineRef, Purged, PutMany, PutPipeline, Reseal, Result,
    RotationGuard, SealedField, Store, StoreError, StoredConnection, StoredPipeline, StoredToken,
    StoredVersion, WriteLog, Written,
};

/// The connection statements with SQLite's `?n` parameters.
static CONN_SQL: LazyLock<ConnSql> = LazyLock::new(|| ConnSql::new("?"));

impl Columns for Row<'_> {
    fn text(&self, table: &'static str, column: &str) -> Result<Option<String>> {
        self.get(column).map_err(sql(table))
    }

    fn int(&self, table: &'static str, column: &str) -> Result<Option<i64>> {
        self.get(column).map_err(sql(table))
    }

    fn blob(&self, table: &'static str, column: &str) -> Result<Option<Vec<u8>>> {
        self.get(column).map_err(sql(table))
    }
}

/// Every row `stmt` returns for `params`, each made by `read`.
pub(super) fn all<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    read: fn(&dyn Columns) -> Result<T>,
    context: &'static str,
) -> Result<Vec<T>> {
    let mut rows = stmt.query(params).map_err(sql(context))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql(context))? {
        out.push(read(row)?);
    }
    Ok(out)
}

/// The first row `stmt` returns for `params`, made by `read`.
pub(super) fn first<T>(
    stmt: &mut Statement<'_>,
    params: impl Params,
    read: fn(&dyn Columns) -> Result<T>,
    context: &'static str,
) -> Result<Option<T>> {
    let mut rows = stmt.query(params).map_err(sql(context))?;
    rows.next()
        .map_err(sql(context))?
        .map(|r| read(r))
        .transpose()
}

/// Runs a connection statement ([`ConnSql`]) with its parameters bound (see [`bind_conn`]).
fn write_conn(tx: &Connection, sql_text: &str, conn: &StoredConnection) -> Result<usize> {
    let mut stmt = tx.prepare_cached(sql_text).map_err(sql("connections"))?;
    bind_conn(&mut stmt, conn)?;
    stmt.raw_execute().map_err(sql("connections"))
}

/// Binds the parameters of a connection statement ([`ConnSql`]): the 15 columns of `conn` in
/// [`CONN_COLUMNS`] order, then its version — as many as the statement has.
fn bind_conn(stmt: &mut Statement<'_>, conn: &StoredConnection) -> Result<()> {
    let context = "connections";
    let changed = rows::changed_column(&conn.changed);
    let values: [&dyn ToSql; 16] = [
        &conn.conn_id,
        &conn.conn_type,
        &conn.host,
        &conn.port,
        &conn.schema,
        &conn.login,
        &conn.password.as_ref().map(|s| &s.blob),
        &conn.password.as_ref().map(|s| s.key_id),
        &conn.extra.as_ref().map(|s| &s.blob),
        &conn.extra.as_ref().map(|s| s.key_id),
        &conn.description,
        &conn.created_at,
        &conn.updated_at,
        &conn.updated_by,
        &changed,
        &conn.version,
    ];
    for (i, value) in values.iter().enumerate().take(stmt.parameter_count()) {
        stmt.raw_bind_parameter(i + 1, value)
            .map_err(sql(context))?;
    }
    Ok(())
}

/// Whether the row `what` with key `key` exists.
pub(super) fn exists(c: &Connection, what: Keyed, key: impl ToSql) -> Result<bool> {
    c.prepare_cached(&what.exists_sql("?"))
        .and_then(|mut s| s.query_row([key], |r| r.get(0)))
        .map_err(sql(what.table()))
}

/// Fails with [`StoreError::UnknownKey`] unless every key that seals a field of `conn` is
/// registered: a value sealed under a pruned key would be unreadable forever.
fn check_keys(tx: &Connection, conn: &StoredConnection) -> Result<()> {
    for s in [&conn.password, &conn.extra].into_iter().flatten() {
        if !exists(tx, Keyed::Key, s.key_id)? {
            return Err(StoreError::UnknownKey(s.key_id));
        }
    }
    Ok(())
}

/// Keeps at most `keep` previous versions of `conn_id`.
fn prune(tx: &Connection, conn_id: &str, keep: u32) -> Result<()> {
    tx.prepare_cached(&CONN_SQL.prune)
        .and_then(|mut s| s.execute(params![conn_id, i64::from(keep)]))
        .map_err(sql("history"))?;
    Ok(())
}

/// The order to write `rows` in: by conn_id, so that the rows of an import fill the
/// connections' B-tree (and its type index) from left to right instead of splitting pages all
/// over it. Stable: of two rows with one conn_id, the later one is still written last. Rows
/// already in order (an export is) are not sorted.
fn write_order(rows: &[StoredConnection]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    if !rows.is_sorted_by(|a, b| a.conn_id <= b.conn_id) {
        order.sort_by(|&a, &b| rows[a].conn_id.cmp(&rows[b].conn_id));
    }
    order
}

/// The version of the row `conn_id` (none: no row).
fn version_of(tx: &Connection, conn_id: &str) -> Result<Option<i64>> {
    tx.prepare_cached("SELECT version FROM connections WHERE conn_id = ?1")
        .and_then(|mut s| s.query_row([conn_id], |r| r.get(0)).optional())
        .map_err(sql("connections"))
}

/// Adds `n` to the seals of `key_id` in the open transaction; the new total (`None`: no
/// such key).
pub(super) fn add_seals(tx: &Connection, key_id: u32, n: u64) -> Result<Option<u64>> {
    tx.prepare_cached("UPDATE keys SET seals = seals + ?2 WHERE key_id = ?1 RETURNING seals")
        .and_then(|mut s| {
            s.query_row(params![key_id, n as i64], |r| r.get::<_, i64>("seals"))
                .optional()
        })
        .map(|total| total.map(|t| t as u64))
        .map_err(sql("seals"))
}

fn refs_of(conn: &Connection, conn_id: &str) -> Result<Vec<PipelineRef>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {REF_COLUMNS} FROM pipeline_refs r JOIN pipelines p USING (pipeline_id)
             WHERE r.conn_id = ?1 ORDER BY r.pipeline_id, r.node_id"
        ))
        .map_err(sql("used_by"))?;
    all(&mut stmt, [conn_id], rows::pipeline_ref, "used_by")
}

impl Store for SqliteStore {
    fn key_checks(&self) -> Result<Vec<(u32, String)>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(rows::KEY_CHECKS).map_err(sql("keys"))?;
            all(&mut stmt, [], rows::key_check, "keys")
        })
    }

    fn meta(&self, name: &str) -> Result<Option<String>> {
        self.read(|c| {
            c.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get("value")
            })
            .optional()
            .map_err(sql("meta"))
        })
    }

    fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map_err(sql("meta"))?;
            Ok(((), true))
        })
    }

    fn add_key_check(&self, key_id: u32, check: &str) -> Result<()> {
        self.write(|tx| {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT check_value FROM keys WHERE key_id = ?1",
                    [key_id],
                    |r| r.get("check_value"),
                )
                .optional()
                .map_err(sql("keys"))?;
            match existing {
                Some(v) if v == check => Ok(((), false)),
                Some(_) => Err(StoreError::Corrupt {
                    table: "keys",
                    reason: format!("key {key_id} is registered with another check value"),
                }),
                None => {
                    tx.execute(
                        "INSERT INTO keys (key_id, check_value) VALUES (?1, ?2)",
                        params![key_id, check],
                    )
                    .map_err(sql("keys"))?;
                    Ok(((), true))
                }
            }
        })
    }

    fn remove_unused_keys(&self, key_ids: &[u32]) -> Result<Vec<u32>> {
        self.write(|tx| {
            let mut removed = Vec::new();
            for &id in key_ids {
                let n = tx
                    .execute(&rows::key_unused_sql("?"), [id])
                    .map_err(sql("keys"))?;
                if n > 0 {
                    removed.push(id);
                }
            }
            let wrote = !removed.is_empty();
            Ok((removed, wrote))
        })
    }

    fn sealed_per_key(&self) -> Result<Vec<(u32, u64)>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(rows::SEALED_PER_KEY)
                .map_err(sql("keys"))?;
            all(&mut stmt, [], rows::key_count, "keys")
        })
    }

    fn count_seals(&self, key_id: u32, n: u64) -> Result<u64> {
        // Counting is bookkeeping, not data: it does not bump the generation.
        self.write(|tx| Ok((add_seals(tx, key_id, n)?.unwrap_or(0), false)))
    }

    fn seals(&self, key_id: u32) -> Result<u64> {
        self.read(|c| {
            let total: Option<i64> = c
                .query_row("SELECT seals FROM keys WHERE key_id = ?1", [key_id], |r| {
                    r.get("seals")
                })
                .optional()
                .map_err(sql("seals"))?;
            Ok(total.unwrap_or(0) as u64)
        })
    }

    /// A number that changes with every commit of any connection in any process, and
    /// whenever the database or its `-shm` file is replaced (see `sqlite/fresh.rs`).
    ///
    /// No SQL and no lock shared with other processes: a `stat` of the database and of
    /// `-shm`, and one `pread` of the WAL-index header through this process's one handle on
    /// `-shm`. The whole header is compared with the one seen last; anything but an
    /// identical, consistent header counts as a change.
    fn generation(&self) -> Result<u64> {
        self.look()
    }

    fn insert_connection_logged(
        &self,
        conn: &StoredConnection,
        log: &WriteLog,
    ) -> Result<(i64, Logged)> {
        self.write_logged(log, |tx| {
            check_keys(tx, conn)?;
            if exists(tx, Keyed::Connection, &conn.conn_id)? {
                return Err(StoreError::AlreadyExists(conn.conn_id.clone()));
            }
            write_conn(tx, &CONN_SQL.insert, conn)?;
            let version = version_of(tx, &conn.conn_id)?.ok_or_else(|| StoreError::Corrupt {
                table: "connections",
                reason: "the inserted row is gone".into(),
            })?;
            Ok((version, true))
        })
    }

    fn get_connection(&self, conn_id: &str) -> Result<Option<StoredConnection>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {CONN_COLUMNS} FROM connections WHERE conn_id = ?1"
                ))
                .map_err(sql("get"))?;
            first(&mut stmt, [conn_id], rows::connection, "get")
        })
    }

    fn list_connections(&self, conn_type: Option<&str>) -> Result<Vec<StoredConnection>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {CONN_COLUMNS} FROM connections
                     WHERE ?1 IS NULL OR conn_type = ?1 ORDER BY conn_id"
                ))
                .map_err(sql("list"))?;
            all(&mut stmt, [conn_type], rows::connection, "list")
        })
    }

    fn update_connection_logged(
        &self,
        conn: &StoredConnection,
        keep: u32,
        log: &WriteLog,
    ) -> Result<(Written, Logged)> {
        self.write_logged(log, |tx| {
            check_keys(tx, conn)?;
            let kept = tx
                .prepare_cached(&CONN_SQL.keep_if)
                .and_then(|mut s| s.execute(params![conn.conn_id, conn.version]))
                .map_err(sql("history"))?;
            if kept == 1 && write_conn(tx, &CONN_SQL.update, conn)? == 1 {
                prune(tx, &conn.conn_id, keep)?;
                return Ok((Written::Done, true));
            }
            Ok((
                if exists(tx, Keyed::Connection, &conn.conn_id)? {
                    Written::Stale
                } else {
                    Written::Missing
                },
                false,
            ))
        })
    }

    fn delete_connection_logged(
        &self,
        conn_id: &str,
        how: &Deletion,
        log: &WriteLog,
    ) -> Result<(Deleted, Logged)> {
        self.write_logged(log, |tx| {
            let Some(version) = version_of(tx, conn_id)? else {
                return Ok((Deleted::Missing, false));
            };
            if how.expected_version.is_some_and(|v| v != version) {
                return Ok((Deleted::Stale, false));
            }
            let refs = refs_of(tx, conn_id)?;
            if !refs.is_empty() && !how.force {
                return Ok((Deleted::InUse(refs), false));
            }
            tx.prepare_cached(&CONN_SQL.keep)
                .and_then(|mut s| s.execute([conn_id]))
                .map_err(sql("history"))?;
            tx.prepare_cached(&CONN_SQL.mark_deleted)
                .and_then(|mut s| s.execute(params![conn_id, how.at, how.by]))
                .map_err(sql("history"))?;
            prune(tx, conn_id, how.keep_versions)?;
            let n = tx
                .execute("DELETE FROM connections WHERE conn_id = ?1", [conn_id])
                .map_err(sql("delete"))?;
            if n == 0 {
                return Ok((Deleted::Missing, false));
            }
            // The pipelines keep their definitions; their references to the deleted
            // connection go, so a new connection with this id does not inherit them.
            tx.execute("DELETE FROM pipeline_refs WHERE conn_id = ?1", [conn_id])
                .map_err(sql("delete"))?;
            Ok((Deleted::Done, true))
        })
    }

    fn put_connections_logged(
        &self,
        rows: &[StoredConnection],
        overwrite: bool,
        keep: u32,
        log: &WriteLog,
    ) -> Result<(PutMany, Logged)> {
        self.write_logged(log, |tx| {
            // Each key once, not once per row (an import of a million rows has one key).
            let keys: BTreeSet<u32> = rows
                .iter()
                .flat_map(|r| [&r.password, &r.extra])
                .flatten()
                .map(|s| s.key_id)
                .collect();
            for key in keys {
                if !exists(tx, Keyed::Key, key)? {
                    return Err(StoreError::UnknownKey(key));
                }
            }
            // Which rows are there: none in an empty table (a first import), else one seek
            // each, with one prepared statement.
            let mut there = vec![false; rows.len()];
            let mut existing = Vec::new();
            let empty = !tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM connections)")
                .and_then(|mut s| s.query_row([], |r| r.get::<_, bool>(0)))
                .map_err(sql("connections"))?;
            if !empty {
                let mut stmt = tx
                    .prepare_cached(&Keyed::Connection.exists_sql("?"))
                    .map_err(sql("connections"))?;
                for (i, row) in rows.iter().enumerate() {
                    if stmt
                        .query_row([&row.conn_id], |r| r.get::<_, bool>(0))
                        .map_err(sql("connections"))?
                    {
                        there[i] = true;
                        existing.push(row.conn_id.clone());
                    }
                }
            }
            if !existing.is_empty() && !overwrite {
                return Ok((PutMany::Exists(existing), false));
            }
            let order = write_order(rows);
            // A row after another of its conn_id replaces it: it has a version to keep too.
            for pair in order.windows(2) {
                if rows[pair[0]].conn_id == rows[pair[1]].conn_id {
                    there[pair[1]] = true;
                }
            }
            // Only a row that is there has a version to keep: new rows skip the history.
            let mut upsert = tx
                .prepare_cached(&CONN_SQL.upsert)
                .map_err(sql("connections"))?;
            for &i in &order {
                let conn = &rows[i];
                let kept = if there[i] {
                    tx.prepare_cached(&CONN_SQL.keep)
                        .and_then(|mut s| s.execute([&conn.conn_id]))
                        .map_err(sql("history"))?
                } else {
                    0
                };
                bind_conn(&mut upsert, conn)?;
                upsert.raw_execute().map_err(sql("connections"))?;
                if kept > 0 {
                    prune(tx, &conn.conn_id, keep)?;
                }
            }
            Ok((PutMany::Done(rows.len()), !rows.is_empty()))
        })
    }

    fn history(&self, conn_id: Option<&str>) -> Result<Vec<StoredVersion>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&rows::history_sql("?", ""))
                .map_err(sql("history"))?;
            all(&mut stmt, [conn_id], rows::version, "history")
        })
    }

    fn get_version(&self, conn_id: &str, version: i64) -> Result<Option<StoredVersion>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&rows::get_version_sql("?"))
                .map_err(sql("history"))?;
            first(
                &mut stmt,
                params![conn_id, version],
                rows::version,
                "history",
            )
        })
    }

    fn purge_history(&self, conn_id: &str) -> Result<Purged> {
        self.write(|tx| {
            if exists(tx, Keyed::Connection, conn_id)? {
                return Ok((Purged::Exists, false));
            }
            let n = tx
                .execute(
                    "DELETE FROM connection_versions WHERE conn_id = ?1",
                    [conn_id],
                )
                .map_err(sql("history"))?;
            Ok(if n == 0 {
                (Purged::Missing, false)
            } else {
                (Purged::Done(n as u64), true)
            })
        })
    }

    fn sealed_not_under(&self, key_id: u32, limit: usize) -> Result<Vec<SealedField>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&rows::sealed_not_under_sql("?"))
                .map_err(sql("reseal"))?;
            all(
                &mut stmt,
                params![key_id, limit as i64],
                rows::sealed_field,
                "reseal",
            )
        })
    }

    fn reseal(&self, batch: &[Reseal]) -> Result<usize> {
        self.write(|tx| {
            let mut written = 0;
            let mut keys = BTreeSet::new();
            for r in batch {
                keys.insert(r.new.key_id);
            }
            for key in keys {
                if !exists(tx, Keyed::Key, key)? {
                    return Err(StoreError::UnknownKey(key));
                }
            }
            for r in batch {
                let stmt = rows::reseal_sql("?", r.field, r.version.is_some());
                let mut s = tx.prepare_cached(&stmt).map_err(sql("reseal"))?;
                written += match r.version {
                    None => s.execute(params![r.conn_id, r.old, r.new.blob, r.new.key_id]),
                    Some(v) => s.execute(params![r.conn_id, r.old, r.new.blob, r.new.key_id, v]),
                }
                .map_err(sql("reseal"))?;
            }
            Ok((written, written > 0))
        })
    }

    fn put_pipeline_logged(
        &self,
        pipeline: &StoredPipeline,
        refs: &[PipelineRef],
        log: &WriteLog,
    ) -> Result<(PutPipeline, Logged)> {
        self.write_logged(log, |tx| {
            let mut unknown = BTreeSet::new();
            for r in refs {
                if !exists(tx, Keyed::Connection, &r.conn_id)? {
                    unknown.insert(r.conn_id.clone());
                }
            }
            if !unknown.is_empty() {
                return Ok((
                    PutPipeline::UnknownConnIds(unknown.into_iter().collect()),
                    false,
                ));
            }
            let replaced = tx
                .execute(
                    "UPDATE pipelines SET name = ?2, definition = ?3, updated_at = ?4
                     WHERE pipeline_id = ?1",
                    params![
                        pipeline.pipeline_id,
                        pipeline.name,
                        pipeline.definition,
                        pipeline.updated_at
                    ],
                )
                .map_err(sql("put pipeline"))?
                == 1;
            if replaced {
                tx.execute(
                    "DELETE FROM pipeline_refs WHERE pipeline_id = ?1",
                    [&pipeline.pipeline_id],
                )
                .map_err(sql("put pipeline"))?;
            } else {
                tx.execute(
                    &format!(
                        "INSERT INTO pipelines ({PIPELINE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
                    ),
                    params![
                        pipeline.pipeline_id,
                        pipeline.name,
                        pipeline.definition,
                        pipeline.created_at,
                        pipeline.updated_at
                    ],
                )
                .map_err(sql("put pipeline"))?;
            }
            for r in refs {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO pipeline_refs (pipeline_id, node_id, conn_id)
                     VALUES (?1, ?2, ?3)",
                )
                .and_then(|mut s| s.execute(params![pipeline.pipeline_id, r.node_id, r.conn_id]))
                .map_err(sql("put pipeline"))?;
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
    }

    fn get_pipeline(&self, pipeline_id: &str) -> Result<Option<StoredPipeline>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE pipeline_id = ?1"
                ))
                .map_err(sql("get pipeline"))?;
            first(&mut stmt, [pipeline_id], rows::pipeline, "get pipeline")
        })
    }

    fn list_pipelines(&self) -> Result<Vec<StoredPipeline>> {
        self.read(|c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {PIPELINE_COLUMNS} FROM pipelines ORDER BY pipeline_id"
                ))
                .map_err(sql("list pipelines"))?;
            all(&mut stmt, [], rows::pipeline, "list pipelines")
        })
    }

    fn delete_pipeline_logged(&self, pipeline_id: &str, log: &WriteLog) -> Result<(bool, Logged)> {
        self.write_logged(log, |tx| {
            let n = tx
                .execute(
                    "DELETE FROM pipelines WHERE pipeline_id = ?1",
                    [pipeline_id],
                )
                .map_err(sql("delete pipeline"))?;
            Ok((n == 1, n == 1))
        })
    }

    fn used_by(&self, conn_id: &str) -> Result<Vec<PipelineRef>> {
        self.read(|c| refs_of(c, conn_id))
    }

    delegated_store_methods!();
}
