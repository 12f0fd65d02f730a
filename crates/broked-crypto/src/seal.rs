//! The sealed blob format and AES-256-GCM sealing.
//!
//! ```text
//! offset  size  field
//! 0       1     format version: 1 (bound to conn_id and field), or SEALED_VERSION (2: also
//!               bound to the connection's target)
//! 1       4     key id, big-endian u32
//! 5       12    nonce, random per seal
//! 17      n     ciphertext (n = plaintext length)
//! 17+n    16    GCM tag
//! ```
//!
//! The associated data is built by [`associated_data`] from the [`Aad`] and the 5-byte header.

use ring::aead::{self, AES_256_GCM, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::{Aad, CryptoError, KeyId};

/// The version byte of a blob sealed with a target; [`SEALED_VERSION_V1`] blobs (no target)
/// are still read.
pub const SEALED_VERSION: u8 = 2;
/// The first format: associated data without the target.
pub const SEALED_VERSION_V1: u8 = 1;

/// Bytes a sealed blob adds to its plaintext: version, key id, nonce and tag.
pub const SEALED_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

pub(crate) const KEY_LEN: usize = 32;
const HEADER_LEN: usize = 1 + 4;
const TAG_LEN: usize = 16;

/// Domain separation for the associated data; part of the format.
const AAD_LABEL: &[u8] = b"broked-connections sealed secret v1\0";
/// The same for format 2, whose associated data includes the target.
const AAD_LABEL_V2: &[u8] = b"broked-connections sealed secret v2\0";
/// The constant the key check value is an HMAC of; part of the format.
const CHECK_LABEL: &[u8] = b"broked-connections key check v1";
/// Bytes of the HMAC kept in the check value.
const CHECK_LEN: usize = 16;

/// Returns the id of the key that sealed `blob`, reading only its header. Never panics.
pub fn sealed_key_id(blob: &[u8]) -> Result<KeyId, CryptoError> {
    Ok(parse(blob)?.key_id)
}

/// Returns the format version of `blob` (1: not bound to a target; 2: bound). Never panics.
pub fn sealed_format(blob: &[u8]) -> Result<u8, CryptoError> {
    Ok(parse(blob)?.version)
}

pub(crate) struct Parsed<'a> {
    pub(crate) version: u8,
    pub(crate) key_id: KeyId,
    header: &'a [u8],
    nonce: [u8; NONCE_LEN],
    ciphertext_and_tag: &'a [u8],
}

pub(crate) fn parse(blob: &[u8]) -> Result<Parsed<'_>, CryptoError> {
    let Some((&version, rest)) = blob.split_first() else {
        return Err(CryptoError::BadBlob("empty"));
    };
    if version != SEALED_VERSION && version != SEALED_VERSION_V1 {
        return Err(CryptoError::BadBlob("unknown format version"));
    }
    if blob.len() < SEALED_OVERHEAD {
        return Err(CryptoError::BadBlob("truncated"));
    }
    let (id, rest) = rest.split_at(4);
    let (nonce, ciphertext_and_tag) = rest.split_at(NONCE_LEN);
    let id: [u8; 4] = id
        .try_into()
        .map_err(|_| CryptoError::BadBlob("truncated"))?;
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| CryptoError::BadBlob("truncated"))?;
    Ok(Parsed {
        version,
        key_id: KeyId::new(u32::from_be_bytes(id)),
        header: &blob[..HEADER_LEN],
        nonce,
        ciphertext_and_tag,
    })
}

/// Format 1: AAD = label || len(conn_id) || conn_id || len(field) || field || header.
/// Format 2: AAD = label v2 || len(conn_id) || conn_id || len(field) || field || len(target) ||
/// target || header. Lengths as u64 BE: they keep ("ab", "c") and ("a", "bc") apart; the
/// header binds version and key id. `None` when a format 2 blob is opened without a target.
fn associated_data(version: u8, aad: Aad<'_>, header: &[u8]) -> Option<Vec<u8>> {
    let target = match (version, aad.target) {
        (SEALED_VERSION_V1, _) => None,
        (_, Some(t)) => Some(t),
        (_, None) => return None,
    };
    let label = if target.is_some() {
        AAD_LABEL_V2
    } else {
        AAD_LABEL
    };
    let mut out = Vec::with_capacity(
        label.len()
            + 24
            + aad.conn_id.len()
            + aad.field.len()
            + target.map_or(0, str::len)
            + HEADER_LEN,
    );
    out.extend_from_slice(label);
    for part in [Some(aad.conn_id), Some(aad.field), target]
        .into_iter()
        .flatten()
    {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(header);
    Some(out)
}

/// One AES-256 key: its bytes (zeroized on drop) and ring's key schedule for it.
pub(crate) struct Key {
    // Boxed so that moving a `Key` (into a map, out of a function) never copies the bytes.
    material: Box<Zeroizing<[u8; KEY_LEN]>>,
    aead: LessSafeKey,
}

impl Key {
    pub(crate) fn generate(rng: &SystemRandom) -> Result<Key, CryptoError> {
        let mut material = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        rng.fill(&mut material[..])
            .map_err(|_| CryptoError::Random)?;
        Ok(Key::from_material(material))
    }

    /// `None` unless `bytes` is exactly [`KEY_LEN`] long.
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Key> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut material = Box::new(Zeroizing::new([0u8; KEY_LEN]));
        material.copy_from_slice(bytes);
        Some(Key::from_material(material))
    }

    fn from_material(material: Box<Zeroizing<[u8; KEY_LEN]>>) -> Key {
        let unbound = UnboundKey::new(&AES_256_GCM, &material[..])
            .expect("AES-256-GCM accepts every 32-byte key");
        Key {
            material,
            aead: LessSafeKey::new(unbound),
        }
    }

    pub(crate) fn material(&self) -> &[u8; KEY_LEN] {
        &self.material
    }

    /// HMAC-SHA256(key, CHECK_LABEL), first 16 bytes, lower-case hex.
    pub(crate) fn check_value(&self) -> String {
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &self.material[..]);
        let tag = hmac::sign(&mac, CHECK_LABEL);
        tag.as_ref()[..CHECK_LEN]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub(crate) fn seal(
        &self,
        id: KeyId,
        aad: Aad<'_>,
        plaintext: &[u8],
        rng: &SystemRandom,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        self.seal_with_nonce(id, aad, nonce, plaintext)
    }

    /// Sealing with a caller-chosen nonce; only [`Key::seal`] and known-answer tests use it.
    pub(crate) fn seal_with_nonce(
        &self,
        id: KeyId,
        aad: Aad<'_>,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        // Exact capacity: the plaintext copied in here is encrypted in place and the vector never
        // reallocates, so no copy of the plaintext is left behind in freed memory.
        let mut blob = Vec::with_capacity(SEALED_OVERHEAD + plaintext.len());
        let version = if aad.target.is_some() {
            SEALED_VERSION
        } else {
            SEALED_VERSION_V1
        };
        blob.push(version);
        blob.extend_from_slice(&id.get().to_be_bytes());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(plaintext);
        let ad = associated_data(version, aad, &blob[..HEADER_LEN])
            .expect("the version follows the target");
        let (_, in_out) = blob.split_at_mut(HEADER_LEN + NONCE_LEN);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&ad[..]),
                in_out,
            )
            .map_err(|_| CryptoError::BadBlob("plaintext too long"))?;
        blob.extend_from_slice(tag.as_ref());
        Ok(blob)
    }

    pub(crate) fn open(
        &self,
        aad: Aad<'_>,
        parsed: &Parsed<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let ad = associated_data(parsed.version, aad, parsed.header).ok_or(CryptoError::Decrypt)?;
        let mut buf = Zeroizing::new(parsed.ciphertext_and_tag.to_vec());
        let len = self
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(parsed.nonce),
                aead::Aad::from(&ad[..]),
                &mut buf[..],
            )
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        // Shrinking keeps the allocation; `Zeroizing<Vec>` wipes the whole capacity on drop.
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests;
