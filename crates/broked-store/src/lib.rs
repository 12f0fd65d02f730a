//! Persistence of broked connections: connections with their secrets as sealed bytes,
//! pipeline definitions, the connections each pipeline references, and the key check values.
//!
//! The store never sees a plaintext secret: `password` and `extra` arrive sealed by
//! `broked-crypto`, together with the id of the key that sealed them (so that rotation and
//! pruning can ask "what is still sealed under key N" without opening anything).
//!
//! [`Store`] is the seam between the library and its backends: [`SqliteStore`] is the
//! embedded default; `PgStore` (cargo feature `postgres`, on by default) is a shared
//! PostgreSQL database for several server replicas. Every mutation is one transaction; both
//! backends pass one test suite (`src/tests.rs`). See `docs/storage.md`.
//!
//! Not here: encryption, validation, URIs. Callers validate before they store.

use std::fmt;

/// The [`Store`] methods every backend writes alike, inside its `impl Store`: the rotation
/// lock through the backend's `rotation_lock(wait)` (`lock.rs`), the tokens through its
/// `tokens` module, pages and test results through its `page` module.
macro_rules! delegated_store_methods {
    () => {
        fn lock_rotation(&self) -> Result<RotationGuard> {
            self.rotation_lock(true)?.ok_or(StoreError::Busy)
        }

        fn try_lock_rotation(&self) -> Result<Option<RotationGuard>> {
            self.rotation_lock(false)
        }

        fn lock_named(&self, name: &str) -> Result<RotationGuard> {
            self.named_lock(name, true)?.ok_or(StoreError::Busy)
        }

        fn try_lock_named(&self, name: &str) -> Result<Option<RotationGuard>> {
            self.named_lock(name, false)
        }

        fn insert_token(&self, token: &StoredToken) -> Result<()> {
            tokens::insert(self, token)
        }

        fn list_tokens(&self) -> Result<Vec<StoredToken>> {
            tokens::list(self)
        }

        fn token_by_hash(&self, hash: &str) -> Result<Option<StoredToken>> {
            tokens::by_hash(self, hash)
        }

        fn delete_token(&self, name: &str) -> Result<bool> {
            tokens::delete(self, name)
        }

        fn touch_token(&self, name: &str, at: &str) -> Result<()> {
            tokens::touch(self, name, at)
        }

        fn count_tokens(&self) -> Result<u64> {
            tokens::count(self)
        }

        fn append_audit(
            &self,
            records: Vec<crate::AuditRecord>,
            mac: crate::AuditMac,
        ) -> Result<Vec<crate::AuditRecord>> {
            super::audit::append(self, records, mac)
        }

        fn audit_head(&self) -> Result<Option<crate::AuditRecord>> {
            super::audit::head(self)
        }

        fn list_audit(&self, filter: &crate::AuditFilter) -> Result<Vec<crate::AuditRecord>> {
            super::audit::list(self, filter)
        }

        fn audit_range(&self, from_seq: i64, limit: usize) -> Result<Vec<crate::AuditRecord>> {
            super::audit::range(self, from_seq, limit)
        }

        fn prune_audit(&self, before_seq: i64) -> Result<Option<crate::AuditCut>> {
            super::audit::prune(self, before_seq)
        }

        fn page_connections(&self, query: &crate::ConnQuery) -> Result<crate::ConnPage> {
            super::page::page_connections(self, query)
        }

        fn record_test(
            &self,
            conn_id: &str,
            version: i64,
            status: &crate::TestStatus,
        ) -> Result<bool> {
            super::page::record_test(self, conn_id, version, status)
        }

        fn sealed_not_under_after(
            &self,
            key_id: u32,
            after: Option<&crate::ResealCursor>,
            limit: usize,
        ) -> Result<Vec<crate::ResealRow>> {
            super::reseal::sealed_not_under_after(self, key_id, after, limit)
        }

        fn reseal_batch(
            &self,
            batch: &[crate::Reseal],
            marker: (&str, Option<&str>),
        ) -> Result<usize> {
            super::reseal::reseal_batch(self, batch, marker)
        }

        fn count_rows(&self) -> Result<u64> {
            super::reseal::count_rows(self)
        }
    };
}

mod page;
#[cfg(feature = "postgres")]
mod postgres;
mod reseal;
mod rows;
mod sqlite;

pub use page::{ConnPage, ConnQuery, ListedConnection, StatusFilter, TestStatus, Total};

#[cfg(feature = "postgres")]
pub use postgres::{PG_SCHEMA_VERSION, PgStore};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

/// A secret column of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretField {
    Password,
    Extra,
}

impl SecretField {
    pub const ALL: [SecretField; 2] = [SecretField::Password, SecretField::Extra];

    /// The field's name, also used in the associated data of its seal.
    pub fn name(self) -> &'static str {
        match self {
            SecretField::Password => "password",
            SecretField::Extra => "extra",
        }
    }
}

/// A sealed value and the id of the key that sealed it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: u32,
    pub blob: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sealed {{ key_id: {}, {} bytes }}",
            self.key_id,
            self.blob.len()
        )
    }
}

/// A connection row. `password` and `extra` are sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConnection {
    pub conn_id: String,
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub schema: Option<String>,
    pub login: Option<String>,
    pub password: Option<Sealed>,
    pub extra: Option<Sealed>,
    pub description: Option<String>,
    /// RFC 3339, set by the caller.
    pub created_at: String,
    /// RFC 3339, set by the caller.
    pub updated_at: String,
    /// Who wrote this version (an actor as the library names it: `library`, `cli:<user>`,
    /// a token name); `None` for rows written before the store recorded it.
    pub updated_by: Option<String>,
    /// The names of the fields this version changed from the one before (never values);
    /// empty for a new connection.
    pub changed: Vec<String>,
    /// Incremented by every update; [`Store::update_connection`] writes only if the row still
    /// has the version the caller read (no lost update between processes).
    pub version: i64,
}

impl StoredConnection {
    pub fn sealed(&self, field: SecretField) -> Option<&Sealed> {
        match field {
            SecretField::Password => self.password.as_ref(),
            SecretField::Extra => self.extra.as_ref(),
        }
    }
}

/// A version of a connection kept in its history (`connection_versions`): the row as it
/// was before an update or a delete replaced it, sealed values under their own key id.
/// A `deleted` version is the marker a delete leaves: who deleted and when (`updated_by`,
/// `updated_at`), the plain fields of the deleted row, no sealed values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVersion {
    pub conn: StoredConnection,
    pub deleted: bool,
}

/// How [`Store::delete_connection`] deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// Delete even while pipelines reference the connection.
    pub force: bool,
    /// Delete only if the row still has this version ([`Deleted::Stale`] otherwise).
    pub expected_version: Option<i64>,
    /// RFC 3339: the time of the deleted marker.
    pub at: String,
    /// Who deletes (the deleted marker's `updated_by`).
    pub by: Option<String>,
    /// The previous versions kept per connection (the deleted row and its marker count).
    pub keep_versions: u32,
}

/// One record of the audit log (`audit` table). Never a value: `fields` are names,
/// `value_hashes` HMACs (`hmac-sha256:…`, comma-separated), `detail` plain words.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by [`Store::append_audit`]: one more than the head's, no gaps.
    pub seq: i64,
    /// RFC 3339, UTC.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub conn_id: Option<String>,
    /// Field names, comma-separated.
    pub fields: String,
    /// `ok`, `denied`, or the class of the error.
    pub outcome: String,
    pub request_id: Option<String>,
    pub value_hashes: String,
    pub detail: String,
    /// Computed by the caller's [`AuditMac`] from the previous record's.
    pub mac: String,
}

/// Computes a record's MAC from the previous record's MAC (the cut's after a prune, empty
/// for the first record) and the record with its `seq` assigned: the store stays free of
/// cryptography, and the MAC is taken inside the transaction that appends.
pub type AuditMac = std::sync::Arc<dyn Fn(&str, &AuditRecord) -> String + Send + Sync>;

/// Which audit records [`Store::list_audit`] returns, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub conn_id: Option<String>,
    pub action: Option<String>,
    /// RFC 3339 UTC: records at or after it.
    pub since: Option<String>,
    /// Records whose `value_hashes` hold this HMAC.
    pub value_hash: Option<String>,
    /// The cursor: records with a smaller `seq`.
    pub before_seq: Option<i64>,
    /// At most this many (0: none).
    pub limit: usize,
}

/// Where the audit log was cut by [`Store::prune_audit`]: the last removed record's `seq`
/// and MAC, which the first kept record chains from. Kept in `meta`
/// ([`AUDIT_CUT_SEQ`], [`AUDIT_CUT_MAC`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCut {
    pub seq: i64,
    pub mac: String,
}

/// The `meta` names of the audit log's cut.
pub const AUDIT_CUT_SEQ: &str = "audit_cut_seq";
pub const AUDIT_CUT_MAC: &str = "audit_cut_mac";

/// What a write carries into its own transaction (issue 19): the seals it made and its audit
/// records. Applied only if the write changes data — then in the same transaction, so the
/// change, its seal count and its record commit together or not at all; a write that
/// changes nothing (`Stale`, `Missing`, `InUse`, …) or fails applies none of it.
#[derive(Clone, Default)]
pub struct WriteLog {
    /// `(key id, n)`: `n` more seals made with the key, added as by [`Store::count_seals`].
    pub seals: Vec<(u32, u64)>,
    /// Records appended after the head, in order, as by [`Store::append_audit`].
    pub audit: Vec<AuditRecord>,
    /// Computes the MACs of `audit`; without it, `audit` is not appended.
    pub mac: Option<AuditMac>,
}

impl WriteLog {
    /// Nothing to carry.
    pub fn none() -> WriteLog {
        WriteLog::default()
    }

    /// The audit records to append, with their MAC, if there are any.
    pub(crate) fn records(&self) -> Option<(&[AuditRecord], &AuditMac)> {
        match &self.mac {
            Some(mac) if !self.audit.is_empty() => Some((&self.audit, mac)),
            _ => None,
        }
    }
}

impl fmt::Debug for WriteLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteLog")
            .field("seals", &self.seals)
            .field("audit", &self.audit)
            .field("mac", &self.mac.as_ref().map(|_| "…"))
            .finish()
    }
}

/// What became of a [`WriteLog`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logged {
    /// The write changed data, and the log was applied in its transaction.
    pub applied: bool,
    /// `(key id, seals made with it in total)` after the write, for each key of
    /// [`WriteLog::seals`] the database knows.
    pub seals: Vec<(u32, u64)>,
    /// The audit records as stored (`seq` and `mac` set).
    pub audit: Vec<AuditRecord>,
}

/// A pipeline definition (JSON text, as the caller wrote it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPipeline {
    pub pipeline_id: String,
    pub name: String,
    pub definition: String,
    pub created_at: String,
    pub updated_at: String,
}

/// One node of one pipeline that references a connection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PipelineRef {
    pub pipeline_id: String,
    pub name: String,
    pub node_id: String,
    pub conn_id: String,
}

/// One sealed field, addressed by connection, version and field, for rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedField {
    pub conn_id: String,
    /// `None`: the connection's current row; `Some(n)`: version `n` in its history.
    pub version: Option<i64>,
    pub field: SecretField,
    pub sealed: Sealed,
}

/// A re-sealed field: written only if the field still holds `old` (compare-and-swap).
#[derive(Clone, Debug)]
pub struct Reseal {
    pub conn_id: String,
    /// As [`SealedField::version`].
    pub version: Option<i64>,
    pub field: SecretField,
    pub old: Vec<u8>,
    pub new: Sealed,
}

/// Where a key rotation's scan stands ([`Store::sealed_not_under_after`]): just after the
/// current row of `conn_id` (`version: None`) or just after its kept version `version`. The
/// scan visits every current row in conn_id order, then every kept version in (conn_id,
/// version) order; a cursor is a place in that order, so the row it names may be gone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResealCursor {
    pub conn_id: String,
    pub version: Option<i64>,
}

/// A row — current or kept — with a value not sealed by the key a rotation moves to: what
/// its values are bound to (type, host, port, login) and those values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResealRow {
    pub conn_id: String,
    /// `None`: the connection's current row; `Some(n)`: version `n` in its history.
    pub version: Option<i64>,
    pub conn_type: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub login: Option<String>,
    /// `None` if the row has no password or it is sealed by the key already.
    pub password: Option<Sealed>,
    /// As `password`.
    pub extra: Option<Sealed>,
}

impl ResealRow {
    pub fn sealed(&self, field: SecretField) -> Option<&Sealed> {
        match field {
            SecretField::Password => self.password.as_ref(),
            SecretField::Extra => self.extra.as_ref(),
        }
    }

    /// The place of this row in the scan.
    pub fn cursor(&self) -> ResealCursor {
        ResealCursor {
            conn_id: self.conn_id.clone(),
            version: self.version,
        }
    }
}

/// A named API token. Only the SHA-256 of the token is stored (hex), never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    pub name: String,
    /// Lower-case hex SHA-256 of the token.
    pub hash: String,
    /// Comma-separated scopes (`read,test`).
    pub scopes: String,
    /// Comma-separated conn_id globs the token is limited to; `None`: every connection.
    pub conns: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `None`: never expires.
    pub expires_at: Option<String>,
    /// RFC 3339, updated at most once a minute per process.
    pub last_used_at: Option<String>,
}

/// What [`Store::update_connection`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The row changed since it was read (its version differs): read again and retry.
    Stale,
    Missing,
}

/// What [`Store::delete_connection`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deleted {
    Done,
    Missing,
    /// The row's version is not [`Deletion::expected_version`]; nothing was deleted.
    Stale,
    /// Refused: these pipeline nodes reference the connection.
    InUse(Vec<PipelineRef>),
}

/// What [`Store::purge_history`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purged {
    /// This many kept versions (deleted markers included) were removed.
    Done(u64),
    /// Refused: the connection exists (only a deleted connection's history is purged).
    Exists,
    /// Neither the connection nor any kept version of it exists.
    Missing,
}

/// What [`Store::put_connections`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutMany {
    /// Every row was written.
    Done(usize),
    /// Nothing was written: these conn_ids exist and overwriting was not asked for.
    Exists(Vec<String>),
}

/// What [`Store::put_pipeline`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutPipeline {
    Created,
    Replaced,
    /// Refused: these referenced connections do not exist (sorted, unique).
    UnknownConnIds(Vec<String>),
}

/// The store's one error type. Messages never contain a secret (the store holds none).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("connection {0:?} already exists")]
    AlreadyExists(String),
    #[error("a token named {0:?} already exists")]
    TokenExists(String),
    /// A sealed value names a key the database has no check value for (pruned, or a keyring
    /// this process has not reloaded).
    #[error("key {0} is not registered in the database")]
    UnknownKey(u32),
    #[error("the database is busy (locked by another process); try again")]
    Busy,
    #[error(
        "the database was written by a newer version of broked (schema {found}, this build knows {known})"
    )]
    TooNew { found: i64, known: i64 },
    #[error("{context}: {source}")]
    Sqlite {
        context: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("corrupt row in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database file or its `-shm` index was replaced or removed while this handle had
    /// it open, and another handle of this process still uses the old one, so this one
    /// cannot simply reopen.
    #[error(
        "{}: the database file (or its -shm index) was replaced while open; reopen the database",
        path.display()
    )]
    Replaced { path: std::path::PathBuf },
    /// The database server cannot be reached, refused the credentials, or the address is
    /// malformed. `server` is the address without its user information or query (never a
    /// password); `reason` has any password in it replaced by `********`.
    #[error("cannot use the database at {server}: {reason}")]
    Connect { server: String, reason: String },
    /// A PostgreSQL statement failed.
    #[cfg(feature = "postgres")]
    #[error("{context}: {source}")]
    Postgres {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// Whether the database cannot be used at all right now — the server down or refusing,
    /// the file unreadable, replaced by something that is not a database, or on a failing
    /// disk — rather than a problem of one call. Callers answer "unavailable, try later"
    /// (HTTP 503) and a readiness check fails; a later call may succeed without a restart.
    pub fn is_unavailable(&self) -> bool {
        use rusqlite::ErrorCode;
        match self {
            StoreError::Connect { .. } | StoreError::Io { .. } => true,
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    ErrorCode::CannotOpen
                        | ErrorCode::NotADatabase
                        | ErrorCode::SystemIoFailure
                        | ErrorCode::PermissionDenied
                        | ErrorCode::ReadOnly
                        | ErrorCode::DiskFull
                )
            ),
            #[cfg(feature = "postgres")]
            StoreError::Postgres { source, .. } => matches!(
                source,
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Proof that this process holds the store's rotation lock (see [`Store::lock_rotation`]);
/// dropping it releases the lock. The lock also goes if the process dies.
#[must_use = "the rotation lock is released when the guard is dropped"]
pub struct RotationGuard {
    _held: Box<dyn Send>,
}

impl RotationGuard {
    pub(crate) fn new(held: impl Send + 'static) -> RotationGuard {
        RotationGuard {
            _held: Box::new(held),
        }
    }
}

impl fmt::Debug for RotationGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotationGuard")
    }
}

/// A place to keep connections. Implementations are shared between threads; every method is
/// one transaction.
pub trait Store: Send + Sync {
    /// `(key id, check value)` of every key registered in the database.
    fn key_checks(&self) -> Result<Vec<(u32, String)>>;
    /// A named setting of the database (`None` if never set).
    fn meta(&self, name: &str) -> Result<Option<String>>;
    /// Sets a named setting.
    fn set_meta(&self, name: &str, value: &str) -> Result<()>;
    /// Registers a key's check value (no-op if the id is registered with the same value).
    fn add_key_check(&self, key_id: u32, check: &str) -> Result<()>;
    /// Forgets keys that seal nothing (in current rows or kept versions); returns the ids
    /// removed. Keys still in use stay.
    fn remove_unused_keys(&self, key_ids: &[u32]) -> Result<Vec<u32>>;
    /// How many sealed values (current rows and kept versions) each key id seals now.
    fn sealed_per_key(&self) -> Result<Vec<(u32, u64)>>;

    /// Adds `n` to the count of seals made with `key_id`; returns the new total.
    fn count_seals(&self, key_id: u32, n: u64) -> Result<u64>;
    fn seals(&self, key_id: u32) -> Result<u64>;

    /// A number that changes whenever anything is written, by any process; it only grows
    /// within one handle and never repeats. The resolve cache keeps a value only while this
    /// is unchanged, so it must never stay the same across a commit: SQLite compares the
    /// whole WAL-index header and the files' inodes (`sqlite/fresh.rs`); PostgreSQL counts
    /// notifications, or asks the database while it cannot listen (`postgres/fresh.rs`).
    fn generation(&self) -> Result<u64>;

    /// [`Store::generation`] when it can be had without waiting for the database: `None`
    /// when it would take a round trip (PostgreSQL while its listener is not trusted). An
    /// async server asks this on its workers and [`Store::generation`] off them. SQLite's
    /// look is two system calls: always answered.
    fn generation_cached(&self) -> Result<Option<u64>> {
        self.generation().map(Some)
    }

    /// Inserts a new row; returns its version (`conn.version` is ignored): 1, or — under a
    /// conn_id whose history was kept after a delete — one more than the newest kept version.
    fn insert_connection(&self, conn: &StoredConnection) -> Result<i64> {
        Ok(self.insert_connection_logged(conn, &WriteLog::none())?.0)
    }
    /// [`Store::insert_connection`], with `log` applied in its transaction.
    fn insert_connection_logged(
        &self,
        conn: &StoredConnection,
        log: &WriteLog,
    ) -> Result<(i64, Logged)>;
    fn get_connection(&self, conn_id: &str) -> Result<Option<StoredConnection>>;
    /// Sorted by conn_id.
    fn list_connections(&self, conn_type: Option<&str>) -> Result<Vec<StoredConnection>>;
    /// A page of connections without their sealed values, with their last test results
    /// (`page.rs`).
    fn page_connections(&self, query: &ConnQuery) -> Result<ConnPage>;
    /// Records the result of testing version `version` of `conn_id`, replacing the one
    /// before; nothing (`false`) if the connection is gone or has another version now.
    fn record_test(&self, conn_id: &str, version: i64, status: &TestStatus) -> Result<bool>;
    /// Writes `conn` if the stored row still has `conn.version`; the stored version becomes
    /// `conn.version + 1`. The row it replaces is kept in the history in the same
    /// transaction, which then keeps at most `keep_versions` previous versions of it.
    fn update_connection(&self, conn: &StoredConnection, keep_versions: u32) -> Result<Written> {
        Ok(self
            .update_connection_logged(conn, keep_versions, &WriteLog::none())?
            .0)
    }
    /// [`Store::update_connection`], with `log` applied in its transaction if it writes
    /// ([`Written::Done`]).
    fn update_connection_logged(
        &self,
        conn: &StoredConnection,
        keep_versions: u32,
        log: &WriteLog,
    ) -> Result<(Written, Logged)>;
    /// Deletes a connection; the row moves into the history with a deleted marker after it
    /// (kept until [`Store::purge_history`]).
    fn delete_connection(&self, conn_id: &str, how: &Deletion) -> Result<Deleted> {
        Ok(self
            .delete_connection_logged(conn_id, how, &WriteLog::none())?
            .0)
    }
    /// [`Store::delete_connection`], with `log` applied in its transaction if it deletes
    /// ([`Deleted::Done`]).
    fn delete_connection_logged(
        &self,
        conn_id: &str,
        how: &Deletion,
        log: &WriteLog,
    ) -> Result<(Deleted, Logged)>;
    /// Inserts every row, or (with `overwrite`) replaces existing ones, all in one
    /// transaction: all or nothing. A replaced row is kept in the history as by
    /// [`Store::update_connection`].
    fn put_connections(
        &self,
        rows: &[StoredConnection],
        overwrite: bool,
        keep_versions: u32,
    ) -> Result<PutMany> {
        Ok(self
            .put_connections_logged(rows, overwrite, keep_versions, &WriteLog::none())?
            .0)
    }
    /// [`Store::put_connections`], with `log` applied in its transaction if it writes.
    fn put_connections_logged(
        &self,
        rows: &[StoredConnection],
        overwrite: bool,
        keep_versions: u32,
        log: &WriteLog,
    ) -> Result<(PutMany, Logged)>;

    /// The kept previous versions of `conn_id` (every connection's with `None`), newest
    /// first per connection, connections in conn_id order. Not the current row.
    fn history(&self, conn_id: Option<&str>) -> Result<Vec<StoredVersion>>;
    /// Version `version` of `conn_id`: the current row if it has that version, else the
    /// kept one (`deleted: false` for the current row).
    fn get_version(&self, conn_id: &str, version: i64) -> Result<Option<StoredVersion>>;
    /// Removes the kept history (and deleted marker) of a deleted connection.
    fn purge_history(&self, conn_id: &str) -> Result<Purged>;

    /// Sealed fields — of current rows and of kept versions — not sealed by `key_id`, at
    /// most `limit`, in conn_id order.
    fn sealed_not_under(&self, key_id: u32, limit: usize) -> Result<Vec<SealedField>>;
    /// Writes re-sealed values in one transaction; a field that changed meanwhile is skipped
    /// (compare-and-swap per row, version and field). Returns how many were written.
    fn reseal(&self, batch: &[Reseal]) -> Result<usize>;
    /// The rows (current ones, then kept versions: the order of [`ResealCursor`]) after
    /// `after` that hold a value not sealed by `key_id`, at most `limit` — the pages of a key
    /// rotation (issue 19): each page is a range scan of a primary key, so a rotation reads
    /// every row once and holds at most one page in memory, and a stopped one continues where
    /// it was. Each row comes with what its values are bound to.
    fn sealed_not_under_after(
        &self,
        key_id: u32,
        after: Option<&ResealCursor>,
        limit: usize,
    ) -> Result<Vec<ResealRow>>;
    /// One batch of a key rotation in one transaction: the re-sealed values written as
    /// [`Store::reseal`] writes them (compare-and-swap per row, version and field; a row's
    /// values in one statement), every value of `batch` counted as a seal of its new key
    /// ([`Store::count_seals`]), and the setting `marker.0` of [`Store::meta`] set to
    /// `marker.1` (removed if `None`) — the rotation's progress commits with its values.
    /// Returns how many values were written.
    fn reseal_batch(&self, batch: &[Reseal], marker: (&str, Option<&str>)) -> Result<usize>;
    /// The current rows and kept versions, counted cheaply (through the smallest index on
    /// SQLite): at most twice as many values as a rotation can find.
    fn count_rows(&self) -> Result<u64>;

    /// Registers or replaces a pipeline and its references, if every referenced conn_id exists.
    fn put_pipeline(&self, pipeline: &StoredPipeline, refs: &[PipelineRef]) -> Result<PutPipeline> {
        Ok(self
            .put_pipeline_logged(pipeline, refs, &WriteLog::none())?
            .0)
    }
    /// [`Store::put_pipeline`], with `log` applied in its transaction if it writes.
    fn put_pipeline_logged(
        &self,
        pipeline: &StoredPipeline,
        refs: &[PipelineRef],
        log: &WriteLog,
    ) -> Result<(PutPipeline, Logged)>;
    fn get_pipeline(&self, pipeline_id: &str) -> Result<Option<StoredPipeline>>;
    /// Sorted by pipeline_id.
    fn list_pipelines(&self) -> Result<Vec<StoredPipeline>>;
    fn delete_pipeline(&self, pipeline_id: &str) -> Result<bool> {
        Ok(self
            .delete_pipeline_logged(pipeline_id, &WriteLog::none())?
            .0)
    }
    /// [`Store::delete_pipeline`], with `log` applied in its transaction if it deletes.
    fn delete_pipeline_logged(&self, pipeline_id: &str, log: &WriteLog) -> Result<(bool, Logged)>;
    /// The nodes that reference `conn_id`, sorted by pipeline and node.
    fn used_by(&self, conn_id: &str) -> Result<Vec<PipelineRef>>;

    /// Stores a new token; [`StoreError::TokenExists`] if the name is taken.
    fn insert_token(&self, token: &StoredToken) -> Result<()>;
    /// Every token, sorted by name.
    fn list_tokens(&self) -> Result<Vec<StoredToken>>;
    fn token_by_hash(&self, hash: &str) -> Result<Option<StoredToken>>;
    /// Whether a token of that name existed.
    fn delete_token(&self, name: &str) -> Result<bool>;
    /// Records a use of the token (does not change the generation).
    fn touch_token(&self, name: &str, at: &str) -> Result<()>;
    fn count_tokens(&self) -> Result<u64>;

    /// Takes the store-wide rotation lock, waiting while another process (or another handle
    /// in this one) holds it: one key rotation at a time across every process that shares
    /// the database. SQLite: an exclusive `flock` on `{db}.rotate.lock`; PostgreSQL: a
    /// session-level advisory lock on a connection of its own. Not reentrant: a second call
    /// while holding the guard waits forever.
    fn lock_rotation(&self) -> Result<RotationGuard>;
    /// [`Store::lock_rotation`] without waiting: `None` if someone else holds the lock.
    fn try_lock_rotation(&self) -> Result<Option<RotationGuard>>;

    /// Takes the lock called `name` (e.g. `password-rotation.pg-main`), waiting while another
    /// process or handle holds it: work on one thing serialized across every process that
    /// shares the database, as [`Store::lock_rotation`] does for key rotation, without
    /// excluding work on other names. SQLite: an exclusive `flock` on a file named after
    /// `name` in `{db}.locks/`; PostgreSQL: a session-level advisory lock on
    /// `hashtext(name)` (with the schema) on a connection of its own. Not reentrant. Names
    /// are compared as given; characters outside `[A-Za-z0-9._-]` may make two names share
    /// one lock (never one name two locks).
    fn lock_named(&self, name: &str) -> Result<RotationGuard>;
    /// [`Store::lock_named`] without waiting: `None` if someone else holds that lock.
    fn try_lock_named(&self, name: &str) -> Result<Option<RotationGuard>>;

    /// Appends audit records in one transaction, in order: each gets the next `seq` after the
    /// head (after the cut in an empty log) and its MAC from `mac` over the previous record's,
    /// both read inside the transaction, so appenders in several processes or replicas never
    /// fork the chain (SQLite: the write transaction begins IMMEDIATE; PostgreSQL: every
    /// append — alone or carried by a write's [`WriteLog`] — holds the `state` row lock from
    /// before it reads the head to its commit). Does not bump the generation counter (on
    /// SQLite any commit still moves [`Store::generation`]). Returns the records as stored.
    fn append_audit(&self, records: Vec<AuditRecord>, mac: AuditMac) -> Result<Vec<AuditRecord>>;
    /// The newest audit record.
    fn audit_head(&self) -> Result<Option<AuditRecord>>;
    /// Audit records matching `filter`, newest first.
    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>>;
    /// At most `limit` audit records from `from_seq` on, oldest first (for verification).
    fn audit_range(&self, from_seq: i64, limit: usize) -> Result<Vec<AuditRecord>>;
    /// Removes the audit records before `before_seq` — never the newest — and records the
    /// cut ([`AuditCut`]) in `meta` in the same transaction; returns it, or `None` if
    /// nothing was removed.
    fn prune_audit(&self, before_seq: i64) -> Result<Option<AuditCut>>;
}

#[cfg(test)]
mod tests;
