//! The audit log in SQLite (see [`crate::Store::append_audit`]). Appends run in the store's
//! write transaction, which begins IMMEDIATE: the head read and the insert happen under the
//! database's one write lock, so processes appending at once take turns.

use rusqlite::params;

use super::queries::{all, first};
use super::{SqliteStore, sql};
use crate::rows::{self, AUDIT_COLUMNS};
use crate::{
    AUDIT_CUT_MAC, AUDIT_CUT_SEQ, AuditCut, AuditFilter, AuditMac, AuditRecord, Result, StoreError,
};

/// The filter of [`crate::Store::list_audit`], newest first: `?1` conn_id, `?2` action,
/// `?3` since, `?4` a value HMAC (a whole entry of the comma-separated list), `?5` the
/// cursor (`seq` below it), `?6` the limit; a `NULL` parameter does not filter.
const LIST_FILTER: &str = "WHERE (?1 IS NULL OR conn_id = ?1) \
     AND (?2 IS NULL OR action = ?2) AND (?3 IS NULL OR at >= ?3) \
     AND (?4 IS NULL OR instr(',' || value_hashes || ',', ',' || ?4 || ',') > 0) \
     AND (?5 IS NULL OR seq < ?5) ORDER BY seq DESC LIMIT ?6";

fn meta(tx: &rusqlite::Connection, name: &str) -> Result<Option<String>> {
    use rusqlite::OptionalExtension as _;
    tx.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get("value")
    })
    .optional()
    .map_err(sql("meta"))
}

/// The `(seq, mac)` the next record follows: the head, else the cut, else `(0, "")`.
fn tail(c: &rusqlite::Connection) -> Result<(i64, String)> {
    let mut stmt = c
        .prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
        ))
        .map_err(sql("audit"))?;
    if let Some(head) = first(&mut stmt, [], rows::audit, "audit")? {
        return Ok((head.seq, head.mac));
    }
    cut(c).map(|cut| cut.map_or((0, String::new()), |c| (c.seq, c.mac)))
}

fn cut(c: &rusqlite::Connection) -> Result<Option<AuditCut>> {
    let seq = meta(c, AUDIT_CUT_SEQ)?;
    let mac = meta(c, AUDIT_CUT_MAC)?;
    match (seq, mac) {
        (Some(seq), Some(mac)) => Ok(Some(AuditCut {
            seq: seq.parse().map_err(|_| StoreError::Corrupt {
                table: "meta",
                reason: format!("{AUDIT_CUT_SEQ} is not a number"),
            })?,
            mac,
        })),
        _ => Ok(None),
    }
}

pub(super) fn append(
    store: &SqliteStore,
    records: Vec<AuditRecord>,
    mac: AuditMac,
) -> Result<Vec<AuditRecord>> {
    // Not a change of connections: cached resolves stay valid.
    store.write(|tx| Ok((append_in(tx, &records, &mac)?, false)))
}

/// Appends `records` after the head inside the open write transaction `tx` (also the one of
/// a change that carries them, [`crate::WriteLog`]); returns them as stored.
pub(super) fn append_in(
    tx: &rusqlite::Connection,
    records: &[AuditRecord],
    mac: &AuditMac,
) -> Result<Vec<AuditRecord>> {
    let (mut seq, mut prev) = tail(tx)?;
    let mut out = Vec::with_capacity(records.len());
    let mut stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO audit ({AUDIT_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        ))
        .map_err(sql("audit"))?;
    for r in records {
        let mut r = r.clone();
        seq += 1;
        r.seq = seq;
        r.mac = mac(&prev, &r);
        stmt.execute(params![
            r.seq,
            r.at,
            r.actor,
            r.action,
            r.conn_id,
            r.fields,
            r.outcome,
            r.request_id,
            r.value_hashes,
            r.detail,
            r.mac
        ])
        .map_err(sql("audit"))?;
        prev.clone_from(&r.mac);
        out.push(r);
    }
    Ok(out)
}

pub(super) fn head(store: &SqliteStore) -> Result<Option<AuditRecord>> {
    store.read(|c| {
        let mut stmt = c
            .prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
            ))
            .map_err(sql("audit"))?;
        first(&mut stmt, [], rows::audit, "audit")
    })
}

pub(super) fn list(store: &SqliteStore, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
    let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
    store.read(|c| {
        let mut stmt = c
            .prepare_cached(&format!("SELECT {AUDIT_COLUMNS} FROM audit {LIST_FILTER}"))
            .map_err(sql("audit"))?;
        let args = params![
            f.conn_id,
            f.action,
            f.since,
            f.value_hash,
            f.before_seq,
            limit
        ];
        all(&mut stmt, args, rows::audit, "audit")
    })
}

pub(super) fn range(store: &SqliteStore, from_seq: i64, limit: usize) -> Result<Vec<AuditRecord>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    store.read(|c| {
        let mut stmt = c
            .prepare_cached(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(sql("audit"))?;
        all(&mut stmt, params![from_seq, limit], rows::audit, "audit")
    })
}

pub(super) fn prune(store: &SqliteStore, before_seq: i64) -> Result<Option<AuditCut>> {
    store.write(|tx| {
        // Never the newest record: the next append chains from it.
        let last: Option<(i64, String)> = {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq < ?1 \
                     AND seq < (SELECT max(seq) FROM audit) ORDER BY seq DESC LIMIT 1"
                ))
                .map_err(sql("audit"))?;
            first(&mut stmt, [before_seq], rows::audit, "audit")?.map(|r| (r.seq, r.mac))
        };
        let Some((seq, mac)) = last else {
            return Ok((None, false));
        };
        tx.execute("DELETE FROM audit WHERE seq <= ?1", [seq])
            .map_err(sql("audit"))?;
        for (name, value) in [
            (AUDIT_CUT_SEQ, seq.to_string()),
            (AUDIT_CUT_MAC, mac.clone()),
        ] {
            tx.execute(
                "INSERT INTO meta (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map_err(sql("meta"))?;
        }
        Ok((Some(AuditCut { seq, mac }), false))
    })
}
