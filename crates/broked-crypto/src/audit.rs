//! The audit log's keys: one 32-byte audit secret, kept sealed by the keyring, and three keys
//! derived from it with HKDF-SHA256 (RFC 5869):
//!
//! - the chain key: each record's MAC is HMAC-SHA256(chain key, previous MAC ‖ the record's
//!   canonical encoding), so editing, removing or reordering a record breaks the chain;
//! - the value key: `hmac-sha256:<hex>` of a value (Vault's audit devices do the same), so a
//!   record can name a password without holding it, and `broked audit hash VALUE` finds it;
//! - the checkpoint key: signs the head checkpoints kept outside the database.
//!
//! Formats (a promise, pinned by known-answer tests): docs/security.md, "Audit log".

use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::{Aad, CryptoError, Keyring};

/// The length of the audit secret.
pub const AUDIT_SECRET_LEN: usize = 32;

/// The prefix of a value HMAC.
pub const VALUE_HASH_PREFIX: &str = "hmac-sha256:";

/// The associated data the audit secret is sealed with: a conn_id no connection can have
/// (`~` is outside the slug alphabet), so the sealed secret cannot pass for a connection's
/// secret or the other way round.
pub const AUDIT_SECRET_AAD: Aad<'static> = Aad {
    conn_id: "~audit",
    field: "secret",
    target: None,
};

const HKDF_SALT: &[u8] = b"broked-audit-v1";
const INFO_CHAIN: &[u8] = b"broked audit chain";
const INFO_VALUE: &[u8] = b"broked audit value";
const INFO_CHECKPOINT: &[u8] = b"broked audit checkpoint";
const RECORD_LABEL: &[u8] = b"broked-audit-record-v1";
const CHECKPOINT_LABEL: &[u8] = b"broked-audit-checkpoint-v1";

/// A record as its MAC covers it (every field of the stored row but the MAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditFields<'a> {
    pub seq: u64,
    pub at: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub conn_id: Option<&'a str>,
    pub fields: &'a str,
    pub outcome: &'a str,
    pub request_id: Option<&'a str>,
    pub value_hashes: &'a str,
    pub detail: &'a str,
}

impl AuditFields<'_> {
    /// The canonical encoding: a label, the sequence number as 8 bytes big-endian, then each
    /// field as a presence byte where it is optional and a 4-byte big-endian length before
    /// its bytes. No two records encode alike.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        put(&mut out, RECORD_LABEL);
        out.extend_from_slice(&self.seq.to_be_bytes());
        for text in [self.at, self.actor, self.action] {
            put(&mut out, text.as_bytes());
        }
        put_opt(&mut out, self.conn_id);
        for text in [self.fields, self.outcome] {
            put(&mut out, text.as_bytes());
        }
        put_opt(&mut out, self.request_id);
        for text in [self.value_hashes, self.detail] {
            put(&mut out, text.as_bytes());
        }
        out
    }
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

fn put_opt(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            put(out, t.as_bytes());
        }
    }
}

/// The three keys derived from the audit secret. `Debug` prints nothing of them.
pub struct AuditKeys {
    chain: hmac::Key,
    value: hmac::Key,
    checkpoint: hmac::Key,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKeys(********)")
    }
}

impl AuditKeys {
    /// A new random audit secret.
    pub fn new_secret() -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut secret = Zeroizing::new(vec![0u8; AUDIT_SECRET_LEN]);
        SystemRandom::new()
            .fill(&mut secret[..])
            .map_err(|_| CryptoError::Random)?;
        Ok(secret)
    }

    /// The keys of `secret` ([`AUDIT_SECRET_LEN`] bytes; `None` for any other length).
    pub fn from_secret(secret: &[u8]) -> Option<AuditKeys> {
        if secret.len() != AUDIT_SECRET_LEN {
            return None;
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
        let derive = |info: &[u8]| -> Option<hmac::Key> {
            let info = [info];
            let okm = prk.expand(&info, hmac::HMAC_SHA256).ok()?;
            Some(hmac::Key::from(okm))
        };
        Some(AuditKeys {
            chain: derive(INFO_CHAIN)?,
            value: derive(INFO_VALUE)?,
            checkpoint: derive(INFO_CHECKPOINT)?,
        })
    }

    /// The MAC of `record` following `prev_mac` (hex; empty for the first record of a
    /// chain): lower-case hex HMAC-SHA256(chain key, len ‖ prev_mac ‖ encoding).
    pub fn record_mac(&self, prev_mac: &str, record: &AuditFields<'_>) -> String {
        let mut ctx = hmac::Context::with_key(&self.chain);
        let mut prev = Vec::with_capacity(4 + prev_mac.len());
        put(&mut prev, prev_mac.as_bytes());
        ctx.update(&prev);
        ctx.update(&record.encode());
        hex(ctx.sign().as_ref())
    }

    /// Whether `mac` is the MAC of `record` after `prev_mac`, compared in constant time.
    pub fn verify_record(&self, prev_mac: &str, record: &AuditFields<'_>, mac: &str) -> bool {
        let expected = self.record_mac(prev_mac, record);
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), mac.as_bytes()).into()
    }

    /// `hmac-sha256:<hex>` of `value` with the value key.
    pub fn value_hash(&self, value: &[u8]) -> String {
        let tag = hmac::sign(&self.value, value);
        format!("{VALUE_HASH_PREFIX}{}", hex(tag.as_ref()))
    }

    /// The signature of a head checkpoint: hex HMAC-SHA256(checkpoint key, label ‖ seq ‖
    /// len ‖ mac ‖ len ‖ time).
    pub fn checkpoint_mac(&self, seq: u64, mac: &str, at: &str) -> String {
        let mut msg = Vec::with_capacity(64 + mac.len() + at.len());
        put(&mut msg, CHECKPOINT_LABEL);
        msg.extend_from_slice(&seq.to_be_bytes());
        put(&mut msg, mac.as_bytes());
        put(&mut msg, at.as_bytes());
        hex(hmac::sign(&self.checkpoint, &msg).as_ref())
    }

    /// Whether `signature` signs the checkpoint, compared in constant time.
    pub fn verify_checkpoint(&self, seq: u64, mac: &str, at: &str, signature: &str) -> bool {
        let expected = self.checkpoint_mac(seq, mac, at);
        subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), signature.as_bytes()).into()
    }
}

impl Keyring {
    /// A new audit secret sealed under the active key ([`AUDIT_SECRET_AAD`]), with its keys.
    pub fn new_audit_secret(&self) -> Result<(Vec<u8>, AuditKeys), CryptoError> {
        let secret = AuditKeys::new_secret()?;
        let sealed = self.seal(AUDIT_SECRET_AAD, &secret)?;
        let keys = AuditKeys::from_secret(&secret).ok_or(CryptoError::Random)?;
        Ok((sealed, keys))
    }

    /// Opens a sealed audit secret and derives its keys.
    pub fn open_audit_secret(&self, sealed: &[u8]) -> Result<AuditKeys, CryptoError> {
        let secret = self.open_sealed(AUDIT_SECRET_AAD, sealed)?;
        AuditKeys::from_secret(&secret).ok_or(CryptoError::Decrypt)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests;
