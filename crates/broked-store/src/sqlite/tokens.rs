//! API tokens in SQLite (see [`crate::Store::insert_token`]).

use rusqlite::params;

use super::queries::{all, exists, first};
use super::{SqliteStore, sql};
use crate::rows::{self, Keyed, TOKEN_COLUMNS};
use crate::{Result, StoreError, StoredToken};

pub(super) fn insert(store: &SqliteStore, t: &StoredToken) -> Result<()> {
    store.write(|tx| {
        if exists(tx, Keyed::Token, &t.name)? {
            return Err(StoreError::TokenExists(t.name.clone()));
        }
        tx.execute(
            &format!("INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)"),
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
            .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"))
            .map_err(sql("tokens"))?;
        all(&mut stmt, [], rows::token, "tokens")
    })
}

pub(super) fn by_hash(store: &SqliteStore, hash: &str) -> Result<Option<StoredToken>> {
    store.read(|c| {
        let mut stmt = c
            .prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
            ))
            .map_err(sql("tokens"))?;
        first(&mut stmt, [hash], rows::token, "tokens")
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
