//! API tokens: made from 32 random bytes, stored only as their SHA-256.

use base64::Engine;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::CryptoError;

/// The prefix of every token this crate makes (so a leaked token is recognisable by scanners).
pub const TOKEN_PREFIX: &str = "brk_";

/// A new token: `brk_` and 32 random bytes in unpadded base64url (43 characters).
pub fn new_token() -> Result<Zeroizing<String>, CryptoError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(&mut bytes[..])
        .map_err(|_| CryptoError::Random)?;
    let mut out = Zeroizing::new(String::with_capacity(TOKEN_PREFIX.len() + 43));
    out.push_str(TOKEN_PREFIX);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&bytes[..], &mut out);
    Ok(out)
}

/// Lower-case hex SHA-256 of `token`: what the store keeps. A token has 256 random bits, so a
/// plain hash (no salt, no slow KDF) is enough: nobody can search that space.
pub fn token_hash(token: &str) -> String {
    // Two digits per byte from a table: a `format!` per byte cost ten times the SHA-256, on
    // every request that presents a token (issue 19, docs/BENCHMARKS.md).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let digest = digest::digest(&digest::SHA256, token.as_bytes());
    let mut hex = String::with_capacity(2 * digest.as_ref().len());
    for b in digest.as_ref() {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(*a, *b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 47, "{}", a.len());
        assert!(
            a[4..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        // Known answer: SHA-256("abc").
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
