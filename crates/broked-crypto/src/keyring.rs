//! The keyring: the key file on disk and the keys in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};
use ring::aead::NONCE_LEN;
use ring::rand::{SecureRandom as _, SystemRandom};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::keyfile::{self, Contents, Entry};
use crate::seal::{self, Key};
use crate::{Aad, CryptoError, KeyId, KeyInfo};

/// A key file larger than this is refused (a thousand keys take about 100 KiB).
const MAX_FILE_LEN: u64 = 1 << 20;
/// How often a lost race (file replaced or created under us) is retried before giving up.
const RACE_RETRIES: usize = 16;

/// The keys of one database, read from its key file `{db_path}.key`.
///
/// Key bytes are zeroized when the keyring is dropped or reloaded. `Debug` shows the path and
/// the key ids, never key bytes. A `Keyring` is `Send + Sync`; sealing and opening take `&self`.
pub struct Keyring {
    path: PathBuf,
    active: KeyId,
    keys: BTreeMap<KeyId, Entry>,
    rng: SystemRandom,
}

/// Random nonces read at once for several seals ([`Keyring::nonces`]); each is handed out
/// once. Not `Clone`: a copy would hand the same nonces out twice.
pub struct Nonces {
    bytes: Vec<u8>,
    next: usize,
}

impl Nonces {
    /// The next unused nonce, if any is left.
    fn take(&mut self) -> Option<[u8; NONCE_LEN]> {
        let nonce = self.bytes.get(self.next..self.next + NONCE_LEN)?;
        self.next += NONCE_LEN;
        Some(nonce.try_into().expect("a slice of NONCE_LEN bytes"))
    }

    /// How many are left.
    pub fn left(&self) -> usize {
        (self.bytes.len() - self.next) / NONCE_LEN
    }
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nonces")
            .field("left", &self.left())
            .finish()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("active", &self.active)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// The key file of the database at `db`: `.key` appended to the full file name
    /// (`data/broked.db` → `data/broked.db.key`).
    pub fn path_for_db(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".key");
        PathBuf::from(name)
    }

    /// Reads an existing key file. A missing file is [`CryptoError::Missing`]; a symlink, a file
    /// readable or writable by group or others, or a malformed file is refused.
    pub fn open(path: &Path) -> Result<Keyring, CryptoError> {
        let mut file = open_key_file(path)?;
        let contents = read_contents(path, &mut file)?;
        Ok(Keyring::from_contents(path, contents))
    }

    /// Reads the key file, or creates it with one fresh key if it does not exist. The `bool` is
    /// true when this call created the file.
    ///
    /// Race-safe: the new file is written to a 0600 temporary file in the same directory,
    /// fsynced, then hard-linked into place, which fails if the name exists; the loser of a race
    /// reads the winner's complete file, so every process ends up with the same single key.
    ///
    /// Call this only for a database that holds no key check yet ("first run"); for a database
    /// with secrets call [`Keyring::open`], so that a lost key file is an error, not a new key.
    pub fn open_or_create(path: &Path) -> Result<(Keyring, bool), CryptoError> {
        let mut last = None;
        for _ in 0..RACE_RETRIES {
            match Keyring::open(path) {
                Ok(keyring) => return Ok((keyring, false)),
                Err(CryptoError::Missing { .. }) => {}
                Err(e) => return Err(e),
            }
            let rng = SystemRandom::new();
            let id = KeyId::new(1);
            let mut keys = BTreeMap::new();
            keys.insert(
                id,
                Entry {
                    created_at: now(),
                    key: Key::generate(&rng)?,
                },
            );
            let contents = Contents { active: id, keys };
            let temp = write_temp(path, &contents, &rng)?;
            match fs::hard_link(&temp.path, path) {
                Ok(()) => {
                    drop(temp);
                    sync_dir(path)?;
                    return Ok((Keyring::from_contents(path, contents), true));
                }
                // Another process won: read its file on the next turn.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_error(path, e)),
            }
        }
        Err(io_error(
            path,
            last.unwrap_or_else(|| io::Error::other("the key file keeps appearing and vanishing")),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the key file, e.g. after another process rotated. On error `self` is unchanged.
    pub fn reload(&mut self) -> Result<(), CryptoError> {
        let fresh = Keyring::open(&self.path)?;
        self.active = fresh.active;
        self.keys = fresh.keys;
        Ok(())
    }

    /// The key new seals use.
    pub fn active(&self) -> KeyId {
        self.active
    }

    /// All keys, by id.
    pub fn keys(&self) -> Vec<KeyInfo> {
        self.keys
            .iter()
            .map(|(&id, entry)| KeyInfo {
                id,
                created_at: entry.created_at,
                active: id == self.active,
            })
            .collect()
    }

    pub fn contains(&self, id: KeyId) -> bool {
        self.keys.contains_key(&id)
    }

    /// The key check value of key `id`: the first 16 bytes of HMAC-SHA256(key, a constant
    /// label), as 32 lower-case hex digits. It reveals nothing about the key; the store keeps it
    /// and compares it at open ([`Keyring::verify_check`]).
    pub fn check_value(&self, id: KeyId) -> Option<String> {
        self.keys.get(&id).map(|entry| entry.key.check_value())
    }

    /// Compares a stored check value with key `id`, in constant time.
    /// [`CryptoError::UnknownKey`] if the key file lacks the key, [`CryptoError::WrongKey`] if it
    /// holds a different key under that id.
    pub fn verify_check(&self, id: KeyId, expected: &str) -> Result<(), CryptoError> {
        let actual = self.check_value(id).ok_or(CryptoError::UnknownKey(id))?;
        if bool::from(actual.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(CryptoError::WrongKey {
                path: self.path.clone(),
                id,
            })
        }
    }

    /// Seals `plaintext` under the active key, bound to `aad`, with a fresh random nonce.
    pub fn seal(&self, aad: Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let entry = self
            .keys
            .get(&self.active)
            .ok_or(CryptoError::UnknownKey(self.active))?;
        entry.key.seal(self.active, aad, plaintext, &self.rng)
    }

    /// Fresh random nonces for `n` seals with [`Keyring::seal_with`], read from the OS random
    /// source at once: one `getrandom` for a batch instead of one per seal (a key rotation makes
    /// millions of seals). Each nonce is 96 bits of that output and is used once — [`Nonces`]
    /// hands each out once and cannot be copied — so every seal still has a fresh random nonce
    /// of its own, exactly as [`Keyring::seal`]'s (SPEC §3). Use them right away: do not keep
    /// them across a `fork`.
    pub fn nonces(&self, n: usize) -> Result<Nonces, CryptoError> {
        let mut bytes = vec![0u8; n * NONCE_LEN];
        self.rng.fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Ok(Nonces { bytes, next: 0 })
    }

    /// [`Keyring::seal`] with the next nonce of `nonces` (a fresh one from the OS random
    /// source if they are used up).
    pub fn seal_with(
        &self,
        nonces: &mut Nonces,
        aad: Aad<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let entry = self
            .keys
            .get(&self.active)
            .ok_or(CryptoError::UnknownKey(self.active))?;
        match nonces.take() {
            Some(nonce) => entry
                .key
                .seal_with_nonce(self.active, aad, nonce, plaintext),
            None => entry.key.seal(self.active, aad, plaintext, &self.rng),
        }
    }

    /// Opens a blob made by [`Keyring::seal`] with the same `aad`, under whichever key sealed it.
    pub fn open_sealed(
        &self,
        aad: Aad<'_>,
        blob: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let parsed = seal::parse(blob)?;
        let entry = self
            .keys
            .get(&parsed.key_id)
            .ok_or(CryptoError::UnknownKey(parsed.key_id))?;
        entry.key.open(aad, &parsed)
    }

    /// Opens `blob` and seals its plaintext again under the active key (with a new nonce).
    pub fn reseal(&self, aad: Aad<'_>, blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let plaintext = self.open_sealed(aad, blob)?;
        self.seal(aad, &plaintext)
    }

    /// The keys that may be pruned: every key but the active one that is not in `in_use` (the
    /// [`crate::sealed_key_id`]s of all stored blobs).
    pub fn unused_keys(&self, in_use: impl IntoIterator<Item = KeyId>) -> Vec<KeyId> {
        let mut unused: BTreeMap<KeyId, ()> = self
            .keys
            .keys()
            .filter(|&&id| id != self.active)
            .map(|&id| (id, ()))
            .collect();
        for id in in_use {
            unused.remove(&id);
        }
        unused.into_keys().collect()
    }

    /// Adds a new key, makes it active and returns its id (one more than the highest id).
    ///
    /// Under an exclusive lock on the key file, re-reads it (so a rotation by another process is
    /// kept), writes the new contents to a 0600 temporary file, fsyncs it, renames it over the
    /// key file and fsyncs the directory. Old keys stay, so every existing blob stays readable;
    /// a crash at any point leaves either the old or the new file, both complete.
    pub fn rotate(&mut self) -> Result<KeyId, CryptoError> {
        let mut locked = self.lock()?;
        let mut contents = read_contents(&self.path, &mut locked)?;
        let highest = contents.keys.keys().next_back().map_or(0, |id| id.get());
        let id = highest.checked_add(1).map(KeyId::new).ok_or_else(|| {
            io_error(
                &self.path,
                io::Error::other("no key id left after k4294967295"),
            )
        })?;
        contents.keys.insert(
            id,
            Entry {
                created_at: now(),
                key: Key::generate(&self.rng)?,
            },
        );
        contents.active = id;
        self.replace_file(&contents)?;
        drop(locked);
        self.active = contents.active;
        self.keys = contents.keys;
        Ok(id)
    }

    /// Removes keys from the key file (ids not in it are ignored). Refuses to remove the active
    /// key. Same locking and atomic replacement as [`Keyring::rotate`]; the keyring is reloaded.
    pub fn remove(&mut self, ids: &[KeyId]) -> Result<(), CryptoError> {
        if ids.contains(&self.active) {
            return Err(CryptoError::RemoveActive(self.active));
        }
        let mut locked = self.lock()?;
        let mut contents = read_contents(&self.path, &mut locked)?;
        if ids.contains(&contents.active) {
            return Err(CryptoError::RemoveActive(contents.active));
        }
        let before = contents.keys.len();
        contents.keys.retain(|id, _| !ids.contains(id));
        if contents.keys.len() != before {
            self.replace_file(&contents)?;
        }
        drop(locked);
        self.active = contents.active;
        self.keys = contents.keys;
        Ok(())
    }

    fn from_contents(path: &Path, contents: Contents) -> Keyring {
        Keyring {
            path: path.to_path_buf(),
            active: contents.active,
            keys: contents.keys,
            rng: SystemRandom::new(),
        }
    }

    /// An exclusive `flock` on the file currently at `self.path`. Every writer replaces the file
    /// by rename, so after locking we check that the name still refers to the locked file.
    fn lock(&self) -> Result<Flock<File>, CryptoError> {
        for _ in 0..RACE_RETRIES {
            let file = open_key_file(&self.path)?;
            let locked = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| io_error(&self.path, io::Error::from(errno)))?;
            let held = locked.metadata().map_err(|e| io_error(&self.path, e))?;
            let current = match fs::symlink_metadata(&self.path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(CryptoError::Missing {
                        path: self.path.clone(),
                    });
                }
                Err(e) => return Err(io_error(&self.path, e)),
            };
            if current.dev() == held.dev() && current.ino() == held.ino() {
                return Ok(locked);
            }
        }
        Err(io_error(
            &self.path,
            io::Error::other("the key file keeps being replaced by another process"),
        ))
    }

    fn replace_file(&self, contents: &Contents) -> Result<(), CryptoError> {
        let temp = write_temp(&self.path, contents, &self.rng)?;
        fs::rename(&temp.path, &self.path).map_err(|e| io_error(&self.path, e))?;
        temp.disarm();
        sync_dir(&self.path)
    }
}

fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn io_error(path: &Path, source: io::Error) -> CryptoError {
    CryptoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the key file for reading, refusing symlinks, non-files and modes open to others.
fn open_key_file(path: &Path) -> Result<File, CryptoError> {
    let opened = OpenOptions::new()
        .read(true)
        // No following a symlink at the last component; no blocking on a FIFO.
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) => {
            if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(CryptoError::Symlink {
                    path: path.to_path_buf(),
                });
            }
            if e.kind() == io::ErrorKind::NotFound {
                return Err(CryptoError::Missing {
                    path: path.to_path_buf(),
                });
            }
            return Err(io_error(path, e));
        }
    };
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if !meta.file_type().is_file() {
        return Err(io_error(path, io::Error::other("not a regular file")));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(file)
}

fn read_contents(path: &Path, file: &mut File) -> Result<Contents, CryptoError> {
    let len = file.metadata().map_err(|e| io_error(path, e))?.len();
    if len > MAX_FILE_LEN {
        return Err(CryptoError::Malformed {
            path: path.to_path_buf(),
            line: 1,
            reason: format!("the file is larger than {MAX_FILE_LEN} bytes"),
        });
    }
    // Sized up front so that reading never reallocates and leaves key bytes behind.
    let mut text = Zeroizing::new(Vec::with_capacity(len as usize + 64));
    file.take(MAX_FILE_LEN)
        .read_to_end(&mut text)
        .map_err(|e| io_error(path, e))?;
    keyfile::parse(path, &text)
}

/// A temporary file that is removed when dropped, unless disarmed.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Writes `contents` to a new 0600 file beside `path` and fsyncs it.
fn write_temp(
    path: &Path,
    contents: &Contents,
    rng: &SystemRandom,
) -> Result<TempFile, CryptoError> {
    let name = path
        .file_name()
        .ok_or_else(|| io_error(path, io::Error::other("the key file path has no file name")))?;
    let mut salt = [0u8; 8];
    rng.fill(&mut salt).map_err(|_| CryptoError::Random)?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".tmp-{}-{:016x}",
        std::process::id(),
        u64::from_be_bytes(salt)
    ));
    let temp_path = parent_dir(path).join(temp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&temp_path)
        .map_err(|e| io_error(path, e))?;
    let temp = TempFile { path: temp_path };
    // Exactly 0600 whatever the umask.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| io_error(path, e))?;
    let db_name = name.to_string_lossy();
    let db_name = db_name.strip_suffix(".key").unwrap_or(&db_name);
    let text = keyfile::serialize(contents, db_name);
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))?;
    Ok(temp)
}

/// Makes a rename or link in the key file's directory durable.
fn sync_dir(path: &Path) -> Result<(), CryptoError> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests;
