use std::path::PathBuf;

use crate::KeyId;

/// Everything that can go wrong in this crate.
///
/// Every message names the file involved (where there is one) and says how to fix the problem.
/// No message ever carries key material, a plaintext or a sealed value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error(
        "key file {} does not exist: the secrets in the database cannot be decrypted without it; \
         restore it from backup (a new key is never generated for a database that holds secrets)",
        path.display()
    )]
    Missing { path: PathBuf },

    #[error(
        "key file {} is a symbolic link, which is refused; replace the link with the file itself \
         (mode 0600)",
        path.display()
    )]
    Symlink { path: PathBuf },

    #[error(
        "key file {} has mode {mode:04o}: it is readable or writable by group or others, which is \
         refused; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions { path: PathBuf, mode: u32 },

    #[error(
        "key file {}, line {line}: {reason}; the file is damaged or not a broked keyring: \
         restore it from backup",
        path.display()
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error(
        "cannot read or write key file {}; check that it and its directory exist and belong to \
         this user",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the secret was sealed with key {0}, which is not in the key file; restore a key file that \
         holds {0} from backup"
    )]
    UnknownKey(KeyId),

    #[error(
        "a sealed secret failed to decrypt: it was altered, copied from another connection or \
         field, or the key file is not the one made for this database; restore the right key \
         file or the database from backup"
    )]
    Decrypt,

    #[error("not a sealed secret: {0}")]
    BadBlob(&'static str),

    #[error(
        "key {0} is the active key and cannot be removed; rotate first (`broked key rotate`), \
         then prune"
    )]
    RemoveActive(KeyId),

    #[error("the operating system's random number generator failed; retry, and check the system")]
    Random,

    #[error(
        "key file {} holds a key {id} that differs from the one that sealed this database's \
         secrets (the key check does not match); restore the key file made for this database \
         from backup",
        path.display()
    )]
    WrongKey { path: PathBuf, id: KeyId },
}
