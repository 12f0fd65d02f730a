//! What the two backends share about rows: the column lists, the statements that write a
//! connection (built once per placeholder style, so insert, upsert and update take the same
//! parameters from one binder per backend), and one reader per row shape — columns read by
//! name through [`Columns`], which each backend implements for its row type — with the checks
//! a value read back must pass.

use crate::{
    AuditRecord, PipelineRef, Result, Sealed, SealedField, SecretField, StoreError,
    StoredConnection, StoredPipeline, StoredToken, StoredVersion,
};

/// The columns of a connection row. The first 15 are the parameters of every connection
/// statement, in this order (`$1`/`?1` is `conn_id`); `version` is set by the statements.
pub(crate) const CONN_COLUMNS: &str = "conn_id, conn_type, host, port, schema_name, login, \
     password, password_key, extra, extra_key, description, created_at, updated_at, \
     updated_by, changed, version";

/// The columns of a kept version (`connection_versions`): a connection row and whether it
/// is a deleted marker.
pub(crate) const VERSION_COLUMNS: &str = "conn_id, conn_type, host, port, schema_name, login, \
     password, password_key, extra, extra_key, description, created_at, updated_at, \
     updated_by, changed, version, deleted";

/// The bound columns, in parameter order ([`CONN_COLUMNS`] without `version`; a test keeps
/// the two lists the same).
const BOUND: [&str; 15] = [
    "conn_id",
    "conn_type",
    "host",
    "port",
    "schema_name",
    "login",
    "password",
    "password_key",
    "extra",
    "extra_key",
    "description",
    "created_at",
    "updated_at",
    "updated_by",
    "changed",
];

/// The columns an update or an overwriting import replaces: all but the id and `created_at`.
fn replaced() -> impl Iterator<Item = (usize, &'static str)> {
    (1..)
        .zip(BOUND)
        .filter(|(_, c)| !matches!(*c, "conn_id" | "created_at"))
}

pub(crate) const PIPELINE_COLUMNS: &str = "pipeline_id, name, definition, created_at, updated_at";

pub(crate) const AUDIT_COLUMNS: &str = "seq, at, actor, action, conn_id, fields, outcome, \
     request_id, value_hashes, detail, mac";

pub(crate) const TOKEN_COLUMNS: &str =
    "name, hash, scopes, conns, created_at, expires_at, last_used_at";

/// The statements that write a connection row. Each takes the 15 parameters of
/// [`CONN_COLUMNS`]; `update` also a 16th, the version the caller read. The statements
/// of the history take the conn_id as parameter 1.
pub(crate) struct ConnSql {
    /// A new row: version 1, or one more than the newest kept version of its conn_id (a
    /// connection created again after a delete continues its history).
    pub(crate) insert: String,
    /// `insert`, or on an existing id, its columns replaced and its version bumped.
    pub(crate) upsert: String,
    /// The row replaced if it still has the version `p16`; its version bumped.
    pub(crate) update: String,
    /// The current row of `p1` copied into the history.
    pub(crate) keep: String,
    /// `keep`, only if the row has the version `p2`.
    pub(crate) keep_if: String,
    /// The deleted marker of `p1`: version one more than the row's, its plain fields, no
    /// secrets, deleted at `p2` by `p3`.
    pub(crate) mark_deleted: String,
    /// All but the `p2` newest kept versions of `p1` removed.
    pub(crate) prune: String,
}

impl ConnSql {
    /// The statements with parameters written `{prefix}n` (`?` for SQLite, `$` for PostgreSQL).
    pub(crate) fn new(prefix: &str) -> ConnSql {
        let p = |n: usize| format!("{prefix}{n}");
        let params: Vec<String> = (1..=BOUND.len()).map(p).collect();
        let insert = format!(
            "INSERT INTO connections ({CONN_COLUMNS}) VALUES ({}, \
             COALESCE((SELECT max(version) FROM connection_versions WHERE conn_id = {}), 0) + 1)",
            params.join(", "),
            p(1)
        );
        let excluded: Vec<String> = replaced()
            .map(|(_, c)| format!("{c} = excluded.{c}"))
            .collect();
        let upsert = format!(
            "{insert} ON CONFLICT (conn_id) DO UPDATE SET {}, \
             version = connections.version + 1",
            excluded.join(", ")
        );
        let set: Vec<String> = replaced().map(|(n, c)| format!("{c} = {}", p(n))).collect();
        let update = format!(
            "UPDATE connections SET {}, version = version + 1 WHERE conn_id = {} AND version = {}",
            set.join(", "),
            p(1),
            p(BOUND.len() + 1)
        );
        let keep = format!(
            "INSERT INTO connection_versions ({VERSION_COLUMNS}) \
             SELECT {CONN_COLUMNS}, 0 FROM connections WHERE conn_id = {}",
            p(1)
        );
        let keep_if = format!("{keep} AND version = {}", p(2));
        let mark_deleted = format!(
            "INSERT INTO connection_versions (conn_id, conn_type, host, port, schema_name, \
             login, description, created_at, updated_at, updated_by, version, deleted) \
             SELECT conn_id, conn_type, host, port, schema_name, login, description, \
             created_at, {}, {}, version + 1, 1 FROM connections WHERE conn_id = {}",
            p(2),
            p(3),
            p(1)
        );
        let prune = format!(
            "DELETE FROM connection_versions WHERE conn_id = {one} AND version <= (\
             SELECT version FROM connection_versions WHERE conn_id = {one} \
             ORDER BY version DESC LIMIT 1 OFFSET {})",
            p(2),
            one = p(1)
        );
        ConnSql {
            insert,
            upsert,
            update,
            keep,
            keep_if,
            mark_deleted,
            prune,
        }
    }
}

/// A row found by its key, for `SELECT EXISTS`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keyed {
    /// `connections.conn_id`
    Connection,
    /// `keys.key_id`
    Key,
    /// `tokens.name`
    Token,
}

impl Keyed {
    /// The table, also the context of an error.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Keyed::Connection => "connections",
            Keyed::Key => "keys",
            Keyed::Token => "tokens",
        }
    }

    /// `SELECT EXISTS (…)` with the key as parameter 1, written `{prefix}1`.
    pub(crate) fn exists_sql(self, prefix: &str) -> String {
        let column = match self {
            Keyed::Connection => "conn_id",
            Keyed::Key => "key_id",
            Keyed::Token => "name",
        };
        format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {column} = {prefix}1)",
            self.table()
        )
    }
}

/// A key id read back from `table`. Neither backend writes one outside `u32`, so another
/// value is corruption, not a key to wrap around to.
pub(crate) fn key_id(table: &'static str, key: i64) -> Result<u32> {
    u32::try_from(key).map_err(|_| StoreError::Corrupt {
        table,
        reason: format!("key id {key} out of range"),
    })
}

/// A sealed column and its key column of a connection row (both set or both null).
pub(crate) fn sealed(blob: Option<Vec<u8>>, key: Option<i64>) -> Result<Option<Sealed>> {
    Ok(match (blob, key) {
        (Some(blob), Some(key)) => Some(Sealed {
            key_id: key_id("connections", key)?,
            blob,
        }),
        _ => None,
    })
}

/// A result row of either backend, its columns read by name. `NULL` is `None`; a value of
/// another type is an error with `table` as its context.
pub(crate) trait Columns {
    fn text(&self, table: &'static str, column: &str) -> Result<Option<String>>;
    fn int(&self, table: &'static str, column: &str) -> Result<Option<i64>>;
    fn blob(&self, table: &'static str, column: &str) -> Result<Option<Vec<u8>>>;
}

/// A row of `table`, with the `NOT NULL` columns checked.
struct Row<'r> {
    row: &'r dyn Columns,
    table: &'static str,
}

impl Row<'_> {
    fn opt(&self, column: &str) -> Result<Option<String>> {
        self.row.text(self.table, column)
    }

    fn text(&self, column: &str) -> Result<String> {
        self.opt(column)?.ok_or_else(|| self.null(column))
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        self.row.int(self.table, column)
    }

    fn int(&self, column: &str) -> Result<i64> {
        self.opt_int(column)?.ok_or_else(|| self.null(column))
    }

    fn blob(&self, column: &str) -> Result<Option<Vec<u8>>> {
        self.row.blob(self.table, column)
    }

    fn null(&self, column: &str) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            reason: format!("{column} is NULL"),
        }
    }
}

/// A row of [`CONN_COLUMNS`].
pub(crate) fn connection(row: &dyn Columns) -> Result<StoredConnection> {
    connection_of(row, "connections")
}

/// A row of [`VERSION_COLUMNS`].
pub(crate) fn version(row: &dyn Columns) -> Result<StoredVersion> {
    let table = "connection_versions";
    Ok(StoredVersion {
        conn: connection_of(row, table)?,
        deleted: Row { row, table }.int("deleted")? != 0,
    })
}

/// The names a version changed, as the `changed` column holds them (comma-separated;
/// `NULL` for none).
pub(crate) fn changed_column(names: &[String]) -> Option<String> {
    (!names.is_empty()).then(|| names.join(","))
}

fn connection_of(row: &dyn Columns, table: &'static str) -> Result<StoredConnection> {
    let r = Row { row, table };
    Ok(StoredConnection {
        conn_id: r.text("conn_id")?,
        conn_type: r.text("conn_type")?,
        host: r.opt("host")?,
        port: r.opt_int("port")?.and_then(|p| u16::try_from(p).ok()),
        schema: r.opt("schema_name")?,
        login: r.opt("login")?,
        password: sealed(r.blob("password")?, r.opt_int("password_key")?)?,
        extra: sealed(r.blob("extra")?, r.opt_int("extra_key")?)?,
        description: r.opt("description")?,
        created_at: r.text("created_at")?,
        updated_at: r.text("updated_at")?,
        updated_by: r.opt("updated_by")?,
        changed: r
            .opt("changed")?
            .map(|c| c.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        version: r.int("version")?,
    })
}

/// Sealed fields — of current rows (version `NULL`) and of kept versions — not sealed by
/// key `{prefix}1`, at most `{prefix}2`, in conn_id order: rows for [`sealed_field`].
pub(crate) fn sealed_not_under_sql(prefix: &str) -> String {
    format!(
        "SELECT conn_id, CAST(NULL AS BIGINT) AS version, 0 AS field, password AS blob, password_key AS key_id
           FROM connections WHERE password_key IS NOT NULL AND password_key != {prefix}1
         UNION ALL
         SELECT conn_id, CAST(NULL AS BIGINT), 1, extra, extra_key FROM connections
           WHERE extra_key IS NOT NULL AND extra_key != {prefix}1
         UNION ALL
         SELECT conn_id, version, 0, password, password_key FROM connection_versions
           WHERE password_key IS NOT NULL AND password_key != {prefix}1
         UNION ALL
         SELECT conn_id, version, 1, extra, extra_key FROM connection_versions
           WHERE extra_key IS NOT NULL AND extra_key != {prefix}1
         ORDER BY 1, 2 NULLS FIRST, 3 LIMIT {prefix}2"
    )
}

/// The re-seal of one field of `{prefix}1` (compare-and-swap on the old value `{prefix}2`;
/// new value `{prefix}3` under key `{prefix}4`): in the current row, or (`{prefix}5`) in
/// that kept version.
pub(crate) fn reseal_sql(prefix: &str, field: SecretField, kept: bool) -> String {
    let (blob, key) = match field {
        SecretField::Password => ("password", "password_key"),
        SecretField::Extra => ("extra", "extra_key"),
    };
    let (table, version) = if kept {
        ("connection_versions", format!(" AND version = {prefix}5"))
    } else {
        ("connections", String::new())
    };
    format!(
        "UPDATE {table} SET {blob} = {prefix}3, {key} = {prefix}4
         WHERE conn_id = {prefix}1 AND {blob} = {prefix}2{version}"
    )
}

/// Deletes key `{prefix}1` if it seals nothing, in current rows or kept versions.
pub(crate) fn key_unused_sql(prefix: &str) -> String {
    format!(
        "DELETE FROM keys WHERE key_id = {prefix}1
           AND NOT EXISTS (SELECT 1 FROM connections
                           WHERE password_key = {prefix}1 OR extra_key = {prefix}1)
           AND NOT EXISTS (SELECT 1 FROM connection_versions
                           WHERE password_key = {prefix}1 OR extra_key = {prefix}1)"
    )
}

/// A row of [`sealed_not_under_sql`].
pub(crate) fn sealed_field(row: &dyn Columns) -> Result<SealedField> {
    let r = Row {
        row,
        table: "connections",
    };
    Ok(SealedField {
        conn_id: r.text("conn_id")?,
        version: r.opt_int("version")?,
        field: if r.int("field")? == 0 {
            SecretField::Password
        } else {
            SecretField::Extra
        },
        sealed: Sealed {
            blob: r.blob("blob")?.ok_or_else(|| r.null("blob"))?,
            key_id: key_id("connections", r.int("key_id")?)?,
        },
    })
}

/// Every registered key and its check value: rows for [`key_check`].
pub(crate) const KEY_CHECKS: &str = "SELECT key_id, check_value FROM keys ORDER BY key_id";

/// A row of [`KEY_CHECKS`].
pub(crate) fn key_check(row: &dyn Columns) -> Result<(u32, String)> {
    let r = Row { row, table: "keys" };
    Ok((key_id("keys", r.int("key_id")?)?, r.text("check_value")?))
}

/// How many sealed values each key seals: rows for [`key_count`].
pub(crate) const SEALED_PER_KEY: &str = "SELECT k, count(*) AS n FROM (
       SELECT password_key AS k FROM connections WHERE password_key IS NOT NULL
       UNION ALL
       SELECT extra_key FROM connections WHERE extra_key IS NOT NULL
       UNION ALL
       SELECT password_key FROM connection_versions WHERE password_key IS NOT NULL
       UNION ALL
       SELECT extra_key FROM connection_versions WHERE extra_key IS NOT NULL) AS s
     GROUP BY k ORDER BY k";

/// The kept versions of `{prefix}1` (of every connection when it is `NULL`), newest first
/// per connection: rows for [`version`].
pub(crate) fn history_sql(prefix: &str, cast: &str) -> String {
    format!(
        "SELECT {VERSION_COLUMNS} FROM connection_versions
         WHERE {prefix}1{cast} IS NULL OR conn_id = {prefix}1
         ORDER BY conn_id, version DESC"
    )
}

/// Version `{prefix}2` of `{prefix}1`: the current row if it has it, else the kept one.
pub(crate) fn get_version_sql(prefix: &str) -> String {
    format!(
        "SELECT {CONN_COLUMNS}, 0 AS deleted FROM connections
           WHERE conn_id = {prefix}1 AND version = {prefix}2
         UNION ALL
         SELECT {VERSION_COLUMNS} FROM connection_versions
           WHERE conn_id = {prefix}1 AND version = {prefix}2"
    )
}

/// A row of [`SEALED_PER_KEY`].
pub(crate) fn key_count(row: &dyn Columns) -> Result<(u32, u64)> {
    let r = Row {
        row,
        table: "connections",
    };
    Ok((key_id("connections", r.int("k")?)?, r.int("n")? as u64))
}

/// A row of [`PIPELINE_COLUMNS`].
pub(crate) fn pipeline(row: &dyn Columns) -> Result<StoredPipeline> {
    let r = Row {
        row,
        table: "pipelines",
    };
    Ok(StoredPipeline {
        pipeline_id: r.text("pipeline_id")?,
        name: r.text("name")?,
        definition: r.text("definition")?,
        created_at: r.text("created_at")?,
        updated_at: r.text("updated_at")?,
    })
}

/// The columns of [`PipelineRef`]: a reference and its pipeline's name.
pub(crate) const REF_COLUMNS: &str =
    "r.pipeline_id AS pipeline_id, p.name AS name, r.node_id AS node_id, r.conn_id AS conn_id";

/// A row of [`REF_COLUMNS`].
pub(crate) fn pipeline_ref(row: &dyn Columns) -> Result<PipelineRef> {
    let r = Row {
        row,
        table: "pipeline_refs",
    };
    Ok(PipelineRef {
        pipeline_id: r.text("pipeline_id")?,
        name: r.text("name")?,
        node_id: r.text("node_id")?,
        conn_id: r.text("conn_id")?,
    })
}

/// A row of [`TOKEN_COLUMNS`].
pub(crate) fn token(row: &dyn Columns) -> Result<StoredToken> {
    let r = Row {
        row,
        table: "tokens",
    };
    Ok(StoredToken {
        name: r.text("name")?,
        hash: r.text("hash")?,
        scopes: r.text("scopes")?,
        conns: r.opt("conns")?,
        created_at: r.text("created_at")?,
        expires_at: r.opt("expires_at")?,
        last_used_at: r.opt("last_used_at")?,
    })
}

/// A row of [`AUDIT_COLUMNS`].
pub(crate) fn audit(row: &dyn Columns) -> Result<AuditRecord> {
    let r = Row {
        row,
        table: "audit",
    };
    Ok(AuditRecord {
        seq: r.int("seq")?,
        at: r.text("at")?,
        actor: r.text("actor")?,
        action: r.text("action")?,
        conn_id: r.opt("conn_id")?,
        fields: r.text("fields")?,
        outcome: r.text("outcome")?,
        request_id: r.opt("request_id")?,
        value_hashes: r.text("value_hashes")?,
        detail: r.text("detail")?,
        mac: r.text("mac")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_statements() {
        assert_eq!(CONN_COLUMNS, format!("{}, version", BOUND.join(", ")));
        let sql = ConnSql::new("?");
        assert_eq!(
            sql.insert,
            "INSERT INTO connections (conn_id, conn_type, host, port, schema_name, login, password, password_key, extra, extra_key, description, created_at, updated_at, updated_by, changed, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, COALESCE((SELECT max(version) FROM connection_versions WHERE conn_id = ?1), 0) + 1)"
        );
        assert_eq!(
            sql.upsert,
            "INSERT INTO connections (conn_id, conn_type, host, port, schema_name, login, password, password_key, extra, extra_key, description, created_at, updated_at, updated_by, changed, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, COALESCE((SELECT max(version) FROM connection_versions WHERE conn_id = ?1), 0) + 1) ON CONFLICT (conn_id) DO UPDATE SET conn_type = excluded.conn_type, host = excluded.host, port = excluded.port, schema_name = excluded.schema_name, login = excluded.login, password = excluded.password, password_key = excluded.password_key, extra = excluded.extra, extra_key = excluded.extra_key, description = excluded.description, updated_at = excluded.updated_at, updated_by = excluded.updated_by, changed = excluded.changed, version = connections.version + 1"
        );
        assert_eq!(
            sql.update,
            "UPDATE connections SET conn_type = ?2, host = ?3, port = ?4, schema_name = ?5, login = ?6, password = ?7, password_key = ?8, extra = ?9, extra_key = ?10, description = ?11, updated_at = ?13, updated_by = ?14, changed = ?15, version = version + 1 WHERE conn_id = ?1 AND version = ?16"
        );
    }

    #[test]
    fn key_ids_outside_u32_are_corrupt() {
        assert_eq!(key_id("keys", 7).unwrap(), 7);
        for bad in [-1, 1 << 32] {
            let err = key_id("keys", bad).unwrap_err();
            assert!(
                matches!(err, StoreError::Corrupt { table: "keys", .. }),
                "{err}"
            );
        }
    }
}
