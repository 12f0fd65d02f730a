//! [`Sealer`]: the one owner of the keyring. Opening it with a key check against the store,
//! sealing and opening values bound to their connection's target, whole rows, the one write
//! path that retries on a key another process added and counts seals, rotation, pruning,
//! checking and the migration to sealed format 2.
//!
//! Locks, in the order they may be taken: `keyring` (read or write), then `key_stamp`. The
//! store's rotation lock (`Store::lock_rotation`) is taken before either.
//!
//! "First run" means "the database has no key check value", never "the key file is absent":
//! a new key is never generated for a database that holds one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use broked_core::{ConnId, ConnType, Connection, Secret};
use broked_crypto::{Aad, CryptoError, KeyId, Keyring};
use broked_store::{
    Logged, Reseal, Sealed, SecretField, Store, StoreError, StoredConnection, WriteLog,
};

use crate::error::{Error, store_err};

mod key_rotation;

/// What `key rotate` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateReport {
    /// The new active key, as `k2`.
    pub active_key: String,
    /// How many sealed values were moved to it.
    pub resealed: u64,
    /// Values that do not open (damaged, or sealed under a key the file lacks): they stay as
    /// they are, under their old key, which `prune` therefore keeps.
    pub failures: Vec<CheckFailure>,
    /// This call finished a rotation that had stopped midway (killed, crashed or failed; see
    /// docs/crypto.md) under that rotation's key, instead of adding a new one.
    pub resumed: bool,
}

/// What `key check` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// Sealed values tried.
    pub checked: u64,
    pub failures: Vec<CheckFailure>,
}

/// A sealed value that does not open. Never contains the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    pub conn_id: String,
    /// `None`: the connection's current row; `Some(n)`: version `n` kept in its history.
    pub version: Option<i64>,
    pub field: &'static str,
    pub reason: String,
}

/// One key of the keyring, as `key` commands show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    pub id: String,
    pub created_at: String,
    pub active: bool,
    /// Sealed values under this key.
    pub secrets: u64,
}

/// The keyring of one database, with the key file as last read. Every sealed value goes in
/// and out through it.
pub(crate) struct Sealer {
    /// The database as messages show it.
    db: PathBuf,
    key_path: PathBuf,
    store: Arc<dyn Store>,
    keyring: RwLock<Keyring>,
    /// The key file as last read (see [`key_file_stamp`]).
    key_stamp: Mutex<Option<KeyFileStamp>>,
    /// Rotate when the active key has sealed this many values.
    rotate_after_seals: u64,
}

impl Sealer {
    /// Opens the key file for `db` (creating it on first run), checks it against the
    /// database's key check values, and re-seals values of sealed format 1 once.
    pub(crate) fn open(
        db: &Path,
        key_path: &Path,
        store: Arc<dyn Store>,
        rotate_after_seals: u64,
    ) -> Result<Sealer, Error> {
        let keyring = open_keyring(db, key_path, store.as_ref())?;
        let sealer = Sealer {
            db: db.to_owned(),
            key_stamp: Mutex::new(key_file_stamp(key_path)),
            key_path: key_path.to_owned(),
            store,
            keyring: RwLock::new(keyring),
            rotate_after_seals,
        };
        sealer.migrate_seals()?;
        if let Some((key, pass)) = sealer.rotation_in_progress()? {
            tracing::warn!(
                key = %key,
                pass,
                "a key rotation stopped midway (every secret still opens): run `broked key \
                 rotate` to finish it"
            );
        }
        Ok(sealer)
    }

    pub(crate) fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// A connection as a row, its secrets sealed for its target. With `old` (the row and its
    /// opened connection before an update), a secret that is unchanged and whose target is
    /// unchanged keeps its sealed value as it is. Needs the proof that the key file was
    /// just looked at ([`Sealer::key_checked`]; [`Sealer::write_rows`] hands one to `build`).
    pub(crate) fn seal_row(
        &self,
        _checked: &KeyChecked,
        conn: &Connection,
        old: Option<(&StoredConnection, &Connection)>,
        created_at: &str,
        updated_at: &str,
        version: i64,
    ) -> Result<StoredConnection, Error> {
        let target = conn.target_binding();
        let same_target = old.is_some_and(|(_, c)| c.target_binding() == target);
        let seal = |field: SecretField, new: Option<&Secret>| -> Result<Option<Sealed>, Error> {
            let Some(new) = new else { return Ok(None) };
            if let Some((row, before)) = old {
                let before = match field {
                    SecretField::Password => before.password.as_ref(),
                    SecretField::Extra => before.extra.as_ref(),
                };
                if same_target && before == Some(new) {
                    return Ok(row.sealed(field).cloned());
                }
            }
            self.seal(conn.conn_id.as_str(), &target, field, new)
                .map(Some)
        };
        Ok(StoredConnection {
            conn_id: conn.conn_id.as_str().to_owned(),
            conn_type: conn.conn_type.as_str().to_owned(),
            host: conn.host.clone(),
            port: conn.port,
            schema: conn.schema.clone(),
            login: conn.login.clone(),
            password: seal(SecretField::Password, conn.password.as_ref())?,
            extra: seal(SecretField::Extra, conn.extra.as_ref())?,
            description: conn.description.clone(),
            created_at: created_at.to_owned(),
            updated_at: updated_at.to_owned(),
            updated_by: None,
            changed: Vec::new(),
            version,
        })
    }

    /// A row as a connection, with only the secrets asked for opened (the others `None`).
    pub(crate) fn open_row(
        &self,
        row: &StoredConnection,
        password: bool,
        extra: bool,
    ) -> Result<Connection, Error> {
        let target = if (password && row.password.is_some()) || (extra && row.extra.is_some()) {
            row_target(row)?
        } else {
            String::new()
        };
        let open = |field: SecretField, wanted: bool| -> Result<Option<Secret>, Error> {
            row.sealed(field)
                .filter(|_| wanted)
                .map(|s| self.open_field(&row.conn_id, &target, field, s))
                .transpose()
        };
        Ok(Connection {
            password: open(SecretField::Password, password)?,
            extra: open(SecretField::Extra, extra)?,
            ..without_secrets(row)?
        })
    }

    /// The one write path for sealed rows: builds the rows (sealing) and writes them with a
    /// [`WriteLog`] — `audit`'s records and the count of the seals that are new (values equal
    /// to `old`'s are not) — so the rows, the count and the records commit together or not at
    /// all; the store applies the log only if the write changed data. If the store does not
    /// know the key (another process rotated and pruned), re-reads the key file and seals
    /// again, once. Rotates when the count reaches the usage bound.
    pub(crate) fn write_rows<T>(
        &self,
        old: Option<&StoredConnection>,
        audit: &WriteLog,
        build: impl Fn(&KeyChecked) -> Result<Vec<StoredConnection>, Error>,
        write: impl Fn(&[StoredConnection], &WriteLog) -> Result<(T, Logged), StoreError>,
    ) -> Result<(Vec<StoredConnection>, T, Logged), Error> {
        let mut reloaded = false;
        loop {
            // One look for all the rows of the write (an import of a million looked twice
            // per row: 2,000,000 `stat`s, docs/BENCHMARKS.md).
            let rows = build(&self.key_checked()?)?;
            let log = WriteLog {
                seals: seal_counts(&rows, old),
                ..audit.clone()
            };
            match write(&rows, &log) {
                Ok((outcome, logged)) => {
                    if logged.applied {
                        self.counted(&log.seals, &logged.seals);
                    }
                    return Ok((rows, outcome, logged));
                }
                Err(StoreError::UnknownKey(_)) if !reloaded => {
                    reloaded = true;
                    self.reload_keyring()?;
                }
                Err(e) => return Err(store_err(e)),
            }
        }
    }

    /// After a write counted `made` seals in its transaction (the keys' totals now
    /// `totals`): rotates if the active key reached the usage bound. The write is committed:
    /// a rotation that fails is logged, not its error (the next write tries again).
    fn counted(&self, made: &[(u32, u64)], totals: &[(u32, u64)]) {
        crate::metrics::STATS.sealed(made.iter().map(|(_, n)| n).sum());
        let active = read(&self.keyring).active().get();
        let reached = totals
            .iter()
            .find(|(key, total)| *key == active && *total >= self.rotate_after_seals);
        if let Some((key, total)) = reached {
            tracing::info!(key, seals = total, "usage bound reached: rotating the key");
            if let Err(e) = self.rotate(|_, _| {}) {
                tracing::warn!(error = %e, "cannot rotate the key at its usage bound; the next write tries again");
            }
        }
    }
}

/// The seals of `rows` (values that differ from `old`'s), per key.
fn seal_counts(rows: &[StoredConnection], old: Option<&StoredConnection>) -> Vec<(u32, u64)> {
    let mut per_key: std::collections::BTreeMap<u32, u64> = Default::default();
    for row in rows {
        for field in SecretField::ALL {
            if let Some(s) = row.sealed(field) {
                if old.and_then(|o| o.sealed(field)) != Some(s) {
                    *per_key.entry(s.key_id).or_default() += 1;
                }
            }
        }
    }
    per_key.into_iter().collect()
}

/// A row's plain fields as a connection, its secrets left out (`None`).
pub(crate) fn without_secrets(row: &StoredConnection) -> Result<Connection, Error> {
    Ok(Connection {
        conn_id: ConnId::new(row.conn_id.as_str()).map_err(|_| corrupt("conn_id"))?,
        conn_type: row.conn_type.parse().map_err(|_| corrupt("conn_type"))?,
        host: row.host.clone(),
        port: row.port,
        schema: row.schema.clone(),
        login: row.login.clone(),
        password: None,
        extra: None,
        description: row.description.clone(),
    })
}

/// The target a row's sealed values are bound to ([`broked_core::target_binding`]).
pub(crate) fn row_target(row: &StoredConnection) -> Result<String, Error> {
    let t: ConnType = row.conn_type.parse().map_err(|_| corrupt("conn_type"))?;
    Ok(broked_core::target_binding(
        t,
        row.host.as_deref(),
        row.port,
        row.login.as_deref(),
    ))
}

pub(crate) fn corrupt(what: &str) -> Error {
    Error::Store(StoreError::Corrupt {
        table: "connections",
        reason: format!("invalid {what}"),
    })
}

/// Opens the keyring for `db` and checks it against the key check values in `store`.
fn open_keyring(db: &Path, key_path: &Path, store: &dyn Store) -> Result<Keyring, Error> {
    let key_path = key_path.to_owned();
    let checks = store.key_checks().map_err(store_err)?;
    let keyring = if checks.is_empty() {
        // First run: no key check in the database, so it holds no secret either (a sealed
        // value cannot be stored under an unregistered key).
        Keyring::open_or_create(&key_path)?.0
    } else {
        match Keyring::open(&key_path) {
            Ok(k) => k,
            Err(CryptoError::Missing { .. }) => {
                return Err(Error::KeyMissing {
                    db: db.to_owned(),
                    key: key_path,
                });
            }
            Err(e) => return Err(e.into()),
        }
    };
    verify_keyring(db, &key_path, &keyring, store, &checks)?;
    register_keys(&keyring, store, &checks)?;
    Ok(keyring)
}

/// Checks `keyring` against the key check values `checks` of the database: a key the
/// database knows must have the same check value in the file, and a key the file lacks must
/// seal nothing. Otherwise the file is not this database's ([`Error::KeyMismatch`]).
fn verify_keyring(
    db: &Path,
    key_path: &Path,
    keyring: &Keyring,
    store: &dyn Store,
    checks: &[(u32, String)],
) -> Result<(), Error> {
    let key_path = key_path.to_owned();
    // Counting sealed values per key reads every row: only done when a key is missing.
    let mut in_use: Option<Vec<(u32, u64)>> = None;
    for (id, check) in checks {
        let id = KeyId::new(*id);
        match keyring.check_value(id) {
            Some(ours) if ours == *check => {}
            Some(_) => {
                return Err(Error::KeyMismatch {
                    db: db.to_owned(),
                    key: key_path,
                });
            }
            // A key the file no longer holds: harmless if nothing is sealed under it.
            None if {
                let counts = match &in_use {
                    Some(c) => c,
                    None => in_use.insert(store.sealed_per_key().map_err(store_err)?),
                };
                counts.iter().any(|(k, n)| *k == id.get() && *n > 0)
            } =>
            {
                return Err(Error::KeyMismatch {
                    db: db.to_owned(),
                    key: key_path,
                });
            }
            None => {}
        }
    }
    Ok(())
}

/// Registers the check value of every key in the ring the database does not know yet (the
/// first key; a key added by a rotation that crashed before it reached the database).
/// `known` is what the database had registered when it was last read.
fn register_keys(
    keyring: &Keyring,
    store: &dyn Store,
    known: &[(u32, String)],
) -> Result<(), Error> {
    for info in keyring.keys() {
        if known.iter().all(|(id, _)| *id != info.id.get()) {
            let check = keyring
                .check_value(info.id)
                .expect("a key of the ring has a check value");
            store
                .add_key_check(info.id.get(), &check)
                .map_err(store_err)?;
        }
    }
    Ok(())
}

fn read(keyring: &RwLock<Keyring>) -> std::sync::RwLockReadGuard<'_, Keyring> {
    keyring.read().unwrap_or_else(|e| e.into_inner())
}

fn write(keyring: &RwLock<Keyring>) -> std::sync::RwLockWriteGuard<'_, Keyring> {
    keyring.write().unwrap_or_else(|e| e.into_inner())
}

impl Sealer {
    /// Seals `value` for `conn_id`'s `field` under the active key, bound to the connection's
    /// `target` ([`broked_core::target_binding`]).
    fn seal(
        &self,
        conn_id: &str,
        target: &str,
        field: SecretField,
        value: &Secret,
    ) -> Result<Sealed, Error> {
        let keyring = read(&self.keyring);
        let blob = keyring.seal(
            Aad::bound(conn_id, field.name(), target),
            value.expose().as_bytes(),
        )?;
        Ok(Sealed {
            key_id: keyring.active().get(),
            blob,
        })
    }

    /// Counts `n` seals made with `key_id` and rotates when the usage bound is reached.
    fn count_seals(&self, key_id: u32, n: u64) -> Result<(), Error> {
        if n == 0 {
            return Ok(());
        }
        let total = self.store.count_seals(key_id, n).map_err(store_err)?;
        if total >= self.rotate_after_seals && read(&self.keyring).active().get() == key_id {
            tracing::info!(
                key = key_id,
                seals = total,
                "usage bound reached: rotating the key"
            );
            self.rotate(|_, _| {})?;
        }
        Ok(())
    }

    /// Looks at the key file before sealing: another process may have rotated, and values
    /// are sealed under the newest active key, not a stale one (re-read, and verified).
    pub(crate) fn key_checked(&self) -> Result<KeyChecked, Error> {
        if self.key_file_changed() {
            self.reload_keyring()?;
        }
        Ok(KeyChecked(()))
    }

    /// Whether the key file is no longer the one last read (a rotation or prune by another
    /// process replaces it by rename, so its inode changes). One `stat`, on writes only.
    fn key_file_changed(&self) -> bool {
        let now = key_file_stamp(&self.key_path);
        *self.key_stamp.lock().unwrap_or_else(|e| e.into_inner()) != now
    }

    /// Re-reads the key file: another process rotated or pruned.
    pub(crate) fn reload_keyring(&self) -> Result<(), Error> {
        let mut keyring = write(&self.keyring);
        self.reload_verified(&mut keyring)
    }

    /// Replaces `keyring` by the key file as it is now — but only after checking it against
    /// the database's key check values: a file that is not this database's (swapped under a
    /// running process) is refused with [`Error::KeyMismatch`] and the keys in memory stay,
    /// so nothing is ever sealed under a foreign key.
    fn reload_verified(&self, keyring: &mut Keyring) -> Result<(), Error> {
        let stamp = key_file_stamp(&self.key_path);
        let fresh = Keyring::open(&self.key_path)?;
        let known = self.store.key_checks().map_err(store_err)?;
        verify_keyring(
            &self.db,
            &self.key_path,
            &fresh,
            self.store.as_ref(),
            &known,
        )?;
        *keyring = fresh;
        *self.key_stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        register_keys(keyring, self.store.as_ref(), &known)
    }

    /// Opens a sealed field. A key this process does not know yet (another process rotated)
    /// makes it re-read the key file once.
    fn open_field(
        &self,
        conn_id: &str,
        target: &str,
        field: SecretField,
        sealed: &Sealed,
    ) -> Result<Secret, Error> {
        let attempt = |keyring: &Keyring| open_bound(keyring, conn_id, target, field, &sealed.blob);
        // The read guard must be gone before a reload takes the write lock.
        let first = attempt(&read(&self.keyring));
        let opened = match first {
            Err(CryptoError::UnknownKey(_)) => {
                self.reload_keyring()?;
                attempt(&read(&self.keyring))
            }
            other => other,
        };
        let bytes = opened.map_err(|e| Error::Decrypt {
            conn_id: conn_id.to_owned(),
            field: field.name(),
            reason: short_reason(&e),
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::Decrypt {
            conn_id: conn_id.to_owned(),
            field: field.name(),
            reason: "not UTF-8 text".into(),
        })?;
        Ok(Secret::new(text))
    }

    /// Removes from the key file and the database the keys that seal nothing any more
    /// (never the active key, nor those in `keep`). Returns their ids (`k1`…).
    pub(crate) fn prune(&self, keep: &[u32]) -> Result<Vec<String>, Error> {
        let mut keyring = write(&self.keyring);
        self.reload_verified(&mut keyring)?;
        let active = keyring.active();
        // Never the key that seals the audit secret.
        let audit_key = self.audit_secret_key()?;
        let candidates: Vec<u32> = keyring
            .keys()
            .iter()
            .map(|k| k.id.get())
            .filter(|&id| id != active.get() && Some(id) != audit_key && !keep.contains(&id))
            .collect();
        self.store
            .remove_unused_keys(&candidates)
            .map_err(store_err)?;
        let in_use = self.store.sealed_per_key().map_err(store_err)?;
        let registered = self.store.key_checks().map_err(store_err)?;
        // A key goes from the file only once the database has let go of it: registered keys
        // are the ones a sealed value may still name.
        let removable: Vec<KeyId> = candidates
            .into_iter()
            .filter(|id| {
                registered.iter().all(|(k, _)| k != id) && in_use.iter().all(|(k, _)| k != id)
            })
            .map(KeyId::new)
            .collect();
        keyring.remove(&removable)?;
        Ok(removable.iter().map(|k| k.to_string()).collect())
    }

    /// Tries to open every sealed value: of every connection and of every version kept in
    /// the history, each under its own target.
    pub(crate) fn check(&self) -> Result<CheckReport, Error> {
        let mut report = CheckReport {
            checked: 0,
            failures: Vec::new(),
        };
        self.check_audit_secret(&mut report)?;
        let current = self
            .store
            .list_connections(None)
            .map_err(store_err)?
            .into_iter()
            .map(|c| (None, c));
        let kept = self
            .store
            .history(None)
            .map_err(store_err)?
            .into_iter()
            .map(|v| (Some(v.conn.version), v.conn));
        for (version, conn) in current.chain(kept) {
            for field in SecretField::ALL {
                let Some(sealed) = conn.sealed(field) else {
                    continue;
                };
                report.checked += 1;
                let opened = row_target(&conn)
                    .and_then(|target| self.open_field(&conn.conn_id, &target, field, sealed));
                if let Err(e) = opened {
                    let reason = match e {
                        Error::Decrypt { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    report.failures.push(CheckFailure {
                        conn_id: conn.conn_id.clone(),
                        version,
                        field: field.name(),
                        reason,
                    });
                }
            }
        }
        Ok(report)
    }

    /// The active key's seal count and bound, and the sealed values per key (metrics).
    pub(crate) fn usage(&self) -> Result<crate::KeyUsage, Error> {
        let active = read(&self.keyring).active();
        let active_seals = self.store.seals(active.get()).map_err(store_err)?;
        let sealed = self.store.sealed_per_key().map_err(store_err)?;
        Ok(crate::KeyUsage {
            active_key: active.to_string(),
            active_seals,
            seal_limit: self.rotate_after_seals,
            sealed_values: sealed
                .into_iter()
                .map(|(id, n)| (KeyId::new(id).to_string(), n))
                .collect(),
        })
    }

    /// The key file as it is on disk, checked against the store's key check values (the
    /// readiness check): nothing is loaded, registered or written.
    pub(crate) fn check_key_file(&self) -> Result<(), Error> {
        let checks = self.store.key_checks().map_err(store_err)?;
        let keyring = match Keyring::open(&self.key_path) {
            Ok(k) => k,
            Err(CryptoError::Missing { .. }) => {
                return Err(Error::KeyMissing {
                    db: self.db.clone(),
                    key: self.key_path.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        verify_keyring(
            &self.db,
            &self.key_path,
            &keyring,
            self.store.as_ref(),
            &checks,
        )
    }

    /// The keys of the keyring with how many values each seals.
    pub(crate) fn keys(&self) -> Result<Vec<KeyStatus>, Error> {
        self.reload_keyring()?;
        let in_use = self.store.sealed_per_key().map_err(store_err)?;
        let keyring = read(&self.keyring);
        Ok(keyring
            .keys()
            .into_iter()
            .map(|k| KeyStatus {
                id: k.id.to_string(),
                created_at: crate::info::rfc3339(k.created_at),
                active: k.active,
                secrets: in_use
                    .iter()
                    .find(|(id, _)| *id == k.id.get())
                    .map_or(0, |(_, n)| *n),
            })
            .collect())
    }
}

/// Opens a value bound to `target`. A value in sealed format 1 (not bound to a target) is
/// refused: after the migration at open ([`Sealer::migrate_seals`]) none is left, so one
/// found later was put back from before (an old backup, a hand-edited row).
fn open_bound(
    keyring: &Keyring,
    conn_id: &str,
    target: &str,
    field: SecretField,
    blob: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
    if broked_crypto::sealed_format(blob)? == broked_crypto::SEALED_VERSION_V1 {
        return Err(CryptoError::BadBlob(
            "sealed in the old format (not bound to its target) after the database was \
             migrated: restored from an old backup or tampered with",
        ));
    }
    keyring.open_sealed(Aad::bound(conn_id, field.name(), target), blob)
}

/// The `meta` setting that records that every value is sealed in format 2.
const SEAL_FORMAT: &str = "seal_format";

impl Sealer {
    /// Re-seals every value of sealed format 1 in format 2 (bound to its connection's target),
    /// once per database: the first open by a version that knows format 2 does it, under the
    /// rotation lock, and records it in the database. Values that do not open are reported
    /// (conn_id and field) and left as they are.
    fn migrate_seals(&self) -> Result<(), Error> {
        let done = |store: &dyn Store| -> Result<bool, Error> {
            Ok(store.meta(SEAL_FORMAT).map_err(store_err)?.as_deref() == Some("2"))
        };
        if done(self.store.as_ref())? {
            return Ok(());
        }
        let _lock = self.store.lock_rotation().map_err(store_err)?;
        if done(self.store.as_ref())? {
            return Ok(());
        }
        let mut batch = Vec::new();
        let mut failed = 0usize;
        {
            let keyring = read(&self.keyring);
            for row in self.store.list_connections(None).map_err(store_err)? {
                for field in SecretField::ALL {
                    let Some(sealed) = row.sealed(field) else {
                        continue;
                    };
                    if broked_crypto::sealed_format(&sealed.blob).ok()
                        != Some(broked_crypto::SEALED_VERSION_V1)
                    {
                        continue;
                    }
                    let moved = row_target(&row).ok().and_then(|target| {
                        let plain = keyring
                            .open_sealed(Aad::new(&row.conn_id, field.name()), &sealed.blob)
                            .ok()?;
                        keyring
                            .seal(Aad::bound(&row.conn_id, field.name(), &target), &plain)
                            .ok()
                    });
                    match moved {
                        Some(blob) => batch.push(Reseal {
                            conn_id: row.conn_id.clone(),
                            version: None,
                            field,
                            old: sealed.blob.clone(),
                            new: Sealed {
                                key_id: keyring.active().get(),
                                blob,
                            },
                        }),
                        None => {
                            failed += 1;
                            tracing::warn!(
                                conn_id = %row.conn_id,
                                field = field.name(),
                                "a sealed value does not open; left in the old format"
                            );
                        }
                    }
                }
            }
        }
        if !batch.is_empty() {
            let written = self.store.reseal(&batch).map_err(store_err)?;
            let active = batch[0].new.key_id;
            self.store
                .count_seals(active, written as u64)
                .map_err(store_err)?;
            tracing::info!(
                resealed = written,
                failed,
                "sealed values bound to their connection's target (format 2)"
            );
        }
        self.store.set_meta(SEAL_FORMAT, "2").map_err(store_err)
    }
}

/// The target in the associated data of a note ([`Sealer::seal_note`]): no connection
/// field is ever bound to it, so a note cannot be moved into a row, nor a row's value into a
/// note.
const NOTE_TARGET: &str = "~note";

impl Sealer {
    /// Seals `value` as a note about `conn_id` that is not one of its fields (the password
    /// rotation journal's `old` and `new`), under the active key, bound to `conn_id` and
    /// `label`. Counted against the key's usage bound like any seal.
    pub(crate) fn seal_note(
        &self,
        conn_id: &str,
        label: &str,
        value: &Secret,
    ) -> Result<Vec<u8>, Error> {
        if self.key_file_changed() {
            self.reload_keyring()?;
        }
        let (key_id, blob) = {
            let keyring = read(&self.keyring);
            let blob = keyring.seal(
                Aad::bound(conn_id, label, NOTE_TARGET),
                value.expose().as_bytes(),
            )?;
            (keyring.active().get(), blob)
        };
        self.count_seals(key_id, 1)?;
        Ok(blob)
    }

    /// Opens a note made by [`Sealer::seal_note`] with the same `conn_id` and `label`.
    pub(crate) fn open_note(
        &self,
        conn_id: &str,
        label: &str,
        blob: &[u8],
    ) -> Result<Secret, Error> {
        let aad = Aad::bound(conn_id, label, NOTE_TARGET);
        let first = read(&self.keyring).open_sealed(aad, blob);
        let opened = match first {
            Err(CryptoError::UnknownKey(_)) => {
                self.reload_keyring()?;
                read(&self.keyring).open_sealed(aad, blob)
            }
            other => other,
        };
        let bytes = opened.map_err(|e| Error::Decrypt {
            conn_id: conn_id.to_owned(),
            field: "rotation journal",
            reason: short_reason(&e),
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| corrupt("meta"))?;
        Ok(Secret::new(text))
    }
}

/// Proof that the key file was looked at just before sealing ([`Sealer::key_checked`], which
/// [`Sealer::write_rows`] calls once per write): rows are sealed under the newest active key
/// another process may have rotated to.
pub(crate) struct KeyChecked(());

/// What identifies one version of the key file: device, inode, size and modification time.
pub(crate) type KeyFileStamp = (u64, u64, u64, i64, i64);

pub(crate) fn key_file_stamp(path: &Path) -> Option<KeyFileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// A reason for a failed open that never carries data.
fn short_reason(e: &CryptoError) -> String {
    match e {
        CryptoError::UnknownKey(id) => {
            format!("sealed with key {id}, which the key file does not hold")
        }
        CryptoError::Decrypt => "authentication failed: tampered or moved — the value, or its \
                                 connection's type, host, port or login, was changed outside \
                                 broked (or the key is wrong)"
            .into(),
        other => other.to_string(),
    }
}

/// The `meta` setting that holds the audit secret, sealed by the keyring (hex).
const AUDIT_SECRET: &str = "audit_secret";

/// The audit secret (`audit.rs`): 32 random bytes in `meta`, sealed like a connection's
/// secret (so a copy of the database alone cannot forge or test the audit log's MACs),
/// created on first use under the rotation lock (two processes starting at once end with
/// one), re-sealed by `rotate`, opened by `check`, its key kept by `prune`.
impl Sealer {
    fn sealed_audit_secret(&self) -> Result<Option<Vec<u8>>, Error> {
        let Some(text) = self.store.meta(AUDIT_SECRET).map_err(store_err)? else {
            return Ok(None);
        };
        from_hex(&text).map(Some).ok_or_else(|| {
            Error::Store(StoreError::Corrupt {
                table: "meta",
                reason: "the audit secret is not hex".into(),
            })
        })
    }

    /// The audit log's keys; the secret is made on first use.
    pub(crate) fn audit_keys(&self) -> Result<broked_crypto::AuditKeys, Error> {
        if let Some(sealed) = self.sealed_audit_secret()? {
            return self.open_audit_secret(&sealed);
        }
        let _lock = self.store.lock_rotation().map_err(store_err)?;
        if let Some(sealed) = self.sealed_audit_secret()? {
            return self.open_audit_secret(&sealed);
        }
        if self.key_file_changed() {
            self.reload_keyring()?;
        }
        let (sealed, keys) = read(&self.keyring).new_audit_secret()?;
        self.store
            .set_meta(AUDIT_SECRET, &to_hex(&sealed))
            .map_err(store_err)?;
        Ok(keys)
    }

    fn open_audit_secret(&self, sealed: &[u8]) -> Result<broked_crypto::AuditKeys, Error> {
        let attempt = |k: &Keyring| k.open_audit_secret(sealed);
        let first = attempt(&read(&self.keyring));
        let opened = match first {
            Err(CryptoError::UnknownKey(_)) => {
                self.reload_keyring()?;
                attempt(&read(&self.keyring))
            }
            other => other,
        };
        opened.map_err(|e| Error::Decrypt {
            conn_id: "(audit log)".into(),
            field: "audit secret",
            reason: short_reason(&e),
        })
    }

    /// The key that seals the audit secret.
    fn audit_secret_key(&self) -> Result<Option<u32>, Error> {
        match self.sealed_audit_secret()? {
            Some(sealed) => Ok(Some(broked_crypto::sealed_key_id(&sealed)?.get())),
            None => Ok(None),
        }
    }

    /// Re-seals the audit secret under the active key (the caller holds the rotation lock).
    fn reseal_audit_secret(&self) -> Result<(), Error> {
        let Some(sealed) = self.sealed_audit_secret()? else {
            return Ok(());
        };
        let resealed = read(&self.keyring).reseal(broked_crypto::AUDIT_SECRET_AAD, &sealed)?;
        self.store
            .set_meta(AUDIT_SECRET, &to_hex(&resealed))
            .map_err(store_err)
    }

    fn check_audit_secret(&self, report: &mut CheckReport) -> Result<(), Error> {
        let Some(sealed) = self.sealed_audit_secret()? else {
            return Ok(());
        };
        // Not counted in `checked` (the values of connections): listed only if it fails.
        if let Err(e) = self.open_audit_secret(&sealed) {
            let reason = match e {
                Error::Decrypt { reason, .. } => reason,
                other => other.to_string(),
            };
            report.failures.push(CheckFailure {
                conn_id: "(audit log)".into(),
                version: None,
                field: "audit secret",
                reason,
            });
        }
        Ok(())
    }
}

/// Lower-case hex.
fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
