//! Database passwords for password rotation (issue 20): random passwords, and the forms a
//! server stores instead of the cleartext, so that the cleartext never has to be sent in a
//! statement a server may log.
//!
//! - [`random_password`]: `len` characters of `[A-Za-z0-9]` from the system's CSPRNG —
//!   safe unquoted in a URI, a shell, a `.pgpass` line, a MySQL option file and every driver
//!   (log2 62 ≈ 5.95 bits each: 32 characters are 190 bits).
//! - [`scram_sha256_verifier`]: what `psql \password` sends for PostgreSQL
//!   (`SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`, RFC 5802/7677, PBKDF2-HMAC-SHA-256).
//! - [`mysql_native_password_hash`]: MySQL's/MariaDB's `mysql_native_password` hash
//!   (`*` and the upper-case hex of SHA1(SHA1(password))), for MariaDB's
//!   `IDENTIFIED BY PASSWORD '…'`.

use std::num::NonZeroU32;

use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use zeroize::Zeroizing;

use crate::CryptoError;

/// The characters of [`random_password`].
pub const PASSWORD_ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// PBKDF2 iterations of [`scram_sha256_verifier`]: PostgreSQL's default
/// (`scram_iterations`), what `psql \password` uses.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// `len` random characters of [`PASSWORD_ALPHABET`], uniformly (rejection sampling: a byte
/// of 248 or more is drawn again, so no character is more likely than another).
pub fn random_password(len: usize) -> Result<Zeroizing<String>, CryptoError> {
    let rng = SystemRandom::new();
    let n = PASSWORD_ALPHABET.len();
    let limit = 256 - 256 % n;
    let mut out = Zeroizing::new(String::with_capacity(len));
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < len {
        rng.fill(&mut buf[..]).map_err(|_| CryptoError::Random)?;
        for &b in buf.iter() {
            if usize::from(b) < limit && out.len() < len {
                out.push(char::from(PASSWORD_ALPHABET[usize::from(b) % n]));
            }
        }
    }
    Ok(out)
}

/// The SCRAM-SHA-256 verifier of `password` with a random 16-byte salt, as PostgreSQL stores
/// it (`pg_authid.rolpassword`) and accepts it in `ALTER ROLE … PASSWORD '…'`: the server
/// keeps it as given and never sees the cleartext.
///
/// PostgreSQL normalizes a password with SASLprep before hashing; printable ASCII is left as
/// it is, so only such passwords are accepted here: `Ok(None)` for any other.
pub fn scram_sha256_verifier(password: &str) -> Result<Option<String>, CryptoError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| CryptoError::Random)?;
    Ok(verifier_with_salt(password, &salt))
}

fn verifier_with_salt(password: &str, salt: &[u8]) -> Option<String> {
    if !password.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let mut salted = Zeroizing::new([0u8; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(SCRAM_ITERATIONS).expect("non-zero"),
        salt,
        password.as_bytes(),
        &mut salted[..],
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salted[..]);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    let b64 = base64::engine::general_purpose::STANDARD;
    Some(format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key.as_ref()),
        b64.encode(server_key.as_ref())
    ))
}

/// `*` and the upper-case hex of SHA1(SHA1(`password`)): the `mysql_native_password` hash,
/// what MySQL's `PASSWORD()` returns and MariaDB accepts in `IDENTIFIED BY PASSWORD '…'`.
/// SHA-1 here is the protocol's, not a choice: the hash is as strong as the password behind
/// it, so it is only for long random passwords ([`random_password`]).
pub fn mysql_native_password_hash(password: &str) -> String {
    let alg = &digest::SHA1_FOR_LEGACY_USE_ONLY;
    let once = digest::digest(alg, password.as_bytes());
    let twice = digest::digest(alg, once.as_ref());
    let mut out = String::with_capacity(41);
    out.push('*');
    for b in twice.as_ref() {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_passwords_are_long_alphanumeric_and_differ() {
        let a = random_password(32).unwrap();
        let b = random_password(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(*a, *b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{}", *a);
        assert_eq!(random_password(0).unwrap().len(), 0);
        assert_eq!(random_password(200).unwrap().len(), 200);
        // Every character of the alphabet turns up (62 characters, 20,000 draws).
        let many = random_password(20_000).unwrap();
        for c in PASSWORD_ALPHABET {
            assert!(many.as_bytes().contains(c), "{}", char::from(*c));
        }
    }

    #[test]
    fn the_scram_verifier_is_the_one_postgres_computes() {
        // Known answer (Python: hashlib.pbkdf2_hmac + hmac, as PostgreSQL's scram-common.c).
        let salt: Vec<u8> = (0..16).collect();
        assert_eq!(
            verifier_with_salt("Pw-0123456789abcdefABCDEF", &salt).unwrap(),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$ScopmQW2Qy0FKCRFhU4VWiRD2u9OnCaYykgML/cD+fU=:e7ChiT+OEL5dWdStBn+Y5m2aHo80ImEPUuBtheh/uvw="
        );
        let a = scram_sha256_verifier("same").unwrap().unwrap();
        let b = scram_sha256_verifier("same").unwrap().unwrap();
        assert_ne!(a, b, "a fresh salt each time");
        assert!(!a.contains("same"));
        assert_eq!(scram_sha256_verifier("pässword").unwrap(), None);
    }

    #[test]
    fn the_mysql_hash_is_mysqls_password_function() {
        // SELECT PASSWORD('password') on MySQL 5.7 / MariaDB.
        assert_eq!(
            mysql_native_password_hash("password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }
}
