//! API tokens in SQLite (see [`crate::Store::insert_token`]).

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, sql};
use crate::{Result, StoreError, StoredToken};

const COLUMNS: &str = "name, hash, scopes, conns, created_at, expires_at, last_used_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredToken> {
    Ok(StoredToken {
        name: r.get("name")?,
        hash: r.get("hash")?,
        scopes: r.get("scopes")?,
        conns: r.get("conns")?,
        created_at: r.get("created_at")?,
        expires_at: r.get("expires_at")?,
        last_used_at: r.get("last_used_at")?,
    })
}

pub(super) fn insert(store: &SqliteStore, t: &StoredToken) -> Result<()> {
    store.write(|tx| {
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE name = ?1)",
                [&t.name],
                |r| r.get(0),
            )
            .map_err(sql("tokens"))?;
        if exists {
            return Err(StoreError::TokenExists(t.name.clone()));
        }
        tx.execute(
            &format!("INSERT INTO tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)"),
            params![
                t.name,
                t.hash,
                t.scopes,
                t.conns,
                t.created_at,
                t.expires_at
            ],
        )
        .map_err(sql("tokens"))?;
        Ok(((), true))
    })
}

pub(super) fn list(store: &SqliteStore) -> Result<Vec<StoredToken>> {
    store.read(|c| {
        let mut stmt = c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM tokens ORDER BY name"))
            .map_err(sql("tokens"))?;
        let rows = stmt.query_map([], row).map_err(sql("tokens"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(sql("tokens"))
    })
}

pub(super) fn by_hash(store: &SqliteStore, hash: &str) -> Result<Option<StoredToken>> {
    store.read(|c| {
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE hash = ?1"))
            .map_err(sql("tokens"))?
            .query_row([hash], row)
            .optional()
            .map_err(sql("tokens"))
    })
}

pub(super) fn delete(store: &SqliteStore, name: &str) -> Result<bool> {
    store.write(|tx| {
        let n = tx
            .execute("DELETE FROM tokens WHERE name = ?1", [name])
            .map_err(sql("tokens"))?;
        Ok((n == 1, n == 1))
    })
}

pub(super) fn touch(store: &SqliteStore, name: &str, at: &str) -> Result<()> {
    // Not a change anyone caches: the generation stays.
    store.write(|tx| {
        tx.execute(
            "UPDATE tokens SET last_used_at = ?2 WHERE name = ?1",
            params![name, at],
        )
        .map_err(sql("tokens"))?;
        Ok(((), false))
    })
}

pub(super) fn count(store: &SqliteStore) -> Result<u64> {
    store.read(|c| {
        c.query_row("SELECT count(*) FROM tokens", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sql("tokens"))
    })
}
