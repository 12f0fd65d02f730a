//! Encryption at rest for broked connections.
//!
//! This crate seals the secret fields of a connection (`password`, `extra`) with AES-256-GCM
//! (through `ring`) and manages the keyring file `{db_path}.key` that holds the keys:
//!
//! - [`Keyring`] reads, creates (race-safe), rotates and prunes the key file;
//! - [`Keyring::seal`] / [`Keyring::open_sealed`] / [`Keyring::reseal`] turn a plaintext into a
//!   self-describing sealed blob bound to its connection and field ([`Aad`]), and back;
//! - [`Keyring::check_value`] derives the key check value that the store keeps, so that a wrong
//!   or missing key file is detected when the database is opened;
//! - [`ROTATE_AFTER_SEALS`] is the usage bound per key.
//!
//! What it is not: it stores nothing in the database, counts no seals and decides nothing about
//! "first run" — that is `broked-store`'s job. `ring` is an implementation detail: no `ring` type
//! appears in this API. The formats are documented in `docs/crypto.md` and are a promise: the
//! golden fixture under `tests/fixtures/` must keep opening.

mod audit;
mod error;
mod keyfile;
mod keyring;
mod password;
mod seal;
mod token;

use std::fmt;

pub use crate::audit::{
    AUDIT_SECRET_AAD, AUDIT_SECRET_LEN, AuditFields, AuditKeys, VALUE_HASH_PREFIX,
};
pub use crate::error::CryptoError;
pub use crate::keyring::{Keyring, Nonces};
pub use crate::password::{
    PASSWORD_ALPHABET, SCRAM_ITERATIONS, mysql_native_password_hash, random_password,
    scram_sha256_verifier,
};
pub use crate::seal::{
    SEALED_OVERHEAD, SEALED_VERSION, SEALED_VERSION_V1, sealed_format, sealed_key_id,
};
pub use crate::token::{TOKEN_PREFIX, new_token, token_hash};

/// Seals per key after which the key must be rotated.
///
/// With random 96-bit nonces NIST SP 800-38D allows at most 2^32 encryptions under one key. The
/// store counts seals per key and calls [`Keyring::rotate`] when a key reaches this bound, which
/// is half of that limit (Vault uses 3,865,470,566, i.e. 90 %).
pub const ROTATE_AFTER_SEALS: u64 = 1 << 31;

/// Whether a key that has sealed `seals` values must be rotated ([`ROTATE_AFTER_SEALS`]).
pub fn needs_rotation(seals: u64) -> bool {
    seals >= ROTATE_AFTER_SEALS
}

/// The id of a key in the keyring; shown as `k1`, `k2`, ...
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct KeyId(u32);

impl KeyId {
    pub fn new(id: u32) -> KeyId {
        KeyId(id)
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// Parses the `k7` form written by [`fmt::Display`]. `None` for anything else.
    pub fn parse(text: &str) -> Option<KeyId> {
        let digits = text.strip_prefix('k')?;
        if digits.is_empty()
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return None;
        }
        digits.parse().ok().map(KeyId)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", self.0)
    }
}

/// What the keyring tells about one key. Holds no key material.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct KeyInfo {
    pub id: KeyId,
    pub created_at: time::OffsetDateTime,
    pub active: bool,
}

/// The associated data a sealed value is bound to: a blob sealed for one connection and field
/// fails to open for any other; a blob sealed with a `target` (format 2) also fails to open
/// once the connection's target (type, host, port, login) differs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Aad<'a> {
    pub conn_id: &'a str,
    /// `"password"` or `"extra"`.
    pub field: &'a str,
    /// The connection's target as `broked_core::target_binding` writes it. `None` seals in
    /// format 1 (no target), which only old data and tests use.
    pub target: Option<&'a str>,
}

impl<'a> Aad<'a> {
    /// Associated data without a target (sealed format 1).
    pub fn new(conn_id: &'a str, field: &'a str) -> Aad<'a> {
        Aad {
            conn_id,
            field,
            target: None,
        }
    }

    /// Associated data bound to the connection's target (sealed format 2).
    pub fn bound(conn_id: &'a str, field: &'a str, target: &'a str) -> Aad<'a> {
        Aad {
            conn_id,
            field,
            target: Some(target),
        }
    }
}

#[cfg(test)]
mod tests;
