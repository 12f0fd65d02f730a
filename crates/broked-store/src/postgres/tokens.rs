//! API tokens in PostgreSQL (see [`crate::Store::insert_token`]).

use super::PgStore;
use super::bridge::pg;
use super::queries::{all, exists};
use crate::rows::{self, Keyed, TOKEN_COLUMNS};
use crate::{Result, StoreError, StoredToken};

pub(super) fn insert(store: &PgStore, t: &StoredToken) -> Result<()> {
    store.write(t.clone(), |ctx, c, t| {
        Box::pin(async move {
            if exists(ctx, c, Keyed::Token, t.name.as_str()).await? {
                return Err(StoreError::TokenExists(t.name.clone()));
            }
            sqlx::query(&format!(
                "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, NULL)"
            ))
            .bind(&t.name)
            .bind(&t.hash)
            .bind(&t.scopes)
            .bind(&t.conns)
            .bind(&t.created_at)
            .bind(&t.expires_at)
            .execute(&mut *c)
            .await
            .map_err(pg(ctx, "tokens"))?;
            Ok(((), true))
        })
    })
}

pub(super) fn list(store: &PgStore) -> Result<Vec<StoredToken>> {
    store.read((), |c, ()| {
        Box::pin(async move {
            let rows = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"))
                .fetch_all(&c.pool)
                .await
                .map_err(pg(c, "tokens"))?;
            all(&rows, rows::token)
        })
    })
}

pub(super) fn by_hash(store: &PgStore, hash: &str) -> Result<Option<StoredToken>> {
    store.read(hash.to_owned(), |c, hash| {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"
            ))
            .bind(hash)
            .fetch_optional(&c.pool)
            .await
            .map_err(pg(c, "tokens"))?;
            row.map(|r| rows::token(&r)).transpose()
        })
    })
}

pub(super) fn delete(store: &PgStore, name: &str) -> Result<bool> {
    store.write(name.to_owned(), |ctx, c, name| {
        Box::pin(async move {
            let n = sqlx::query("DELETE FROM tokens WHERE name = $1")
                .bind(name)
                .execute(&mut *c)
                .await
                .map_err(pg(ctx, "tokens"))?
                .rows_affected();
            Ok((n == 1, n == 1))
        })
    })
}

pub(super) fn touch(store: &PgStore, name: &str, at: &str) -> Result<()> {
    store.write((name.to_owned(), at.to_owned()), |ctx, c, (name, at)| {
        Box::pin(async move {
            sqlx::query("UPDATE tokens SET last_used_at = $2 WHERE name = $1")
                .bind(name)
                .bind(at)
                .execute(&mut *c)
                .await
                .map_err(pg(ctx, "tokens"))?;
            Ok(((), false))
        })
    })
}

pub(super) fn count(store: &PgStore) -> Result<u64> {
    store.read((), |c, ()| {
        Box::pin(async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tokens")
                .fetch_one(&c.pool)
                .await
                .map_err(pg(c, "tokens"))?;
            Ok(n as u64)
        })
    })
}
