//! The library the broked pipeline engine links: connections stored with their secrets
//! encrypted at rest, resolved by `conn_id` to a full URI.
//!
//! ```no_run
//! # fn main() -> Result<(), broked_connections::Error> {
//! let connections = broked_connections::Connections::open("broked.db")?;
//! let resolved = connections.resolve("prod-postgres")?;
//! // resolved.uri is a Secret: its Debug and Display print ********.
//! let _driver_url: &str = resolved.uri.expose();
//! # Ok(()) }
//! ```
//!
//! [`Connections`] composes the layers below it: `broked-core` (model, validation, URIs),
//! `broked-crypto` (sealing with the keyring file `{db_path}.key`), `broked-store` (the SQLite
//! file) and `broked-probe` with one probe crate per type, each behind a cargo feature of the
//! same name (`postgres`, `mysql`, `sqlite`, `http`, `sftp`, `s3`, `tcp`; all on by default).
//! The server and the CLI are thin over it.
//!
//! Not here: HTTP, JSON wire shapes, terminal output.

mod acting;
mod actor;
mod audit;
mod auditing;
mod connections;
mod env;
mod error;
mod fields;
mod history;
mod info;
mod listing;
mod metrics;
mod pipeline;
mod probes;
mod resolve;
mod rotate_password;
mod rotation_schedule;
mod schedule_cache;
mod sealer;
mod tokens;
mod transfer;
mod tunnel;
mod update;

use std::time::Duration;

pub use broked_core::{
    ConnId, ConnType, Connection, ConnectionInput, Dialect, DialectError, Secret,
};
pub use broked_probe::{Failure, Outcome as TestOutcome};

pub use crate::acting::Acting;
pub use crate::actor::Actor;
pub use crate::audit::{
    AuditEntry, AuditFinding, AuditPruned, AuditQuery, AuditReport, CHECKPOINT_EVERY, FindingKind,
    checkpoint_path, parse_since,
};
pub use crate::connections::{Authorization, Connections, describe_db, is_postgres_url};
pub use crate::env::EnvConnError;
pub use crate::error::{Error, ErrorKind, ImportRowError};
pub use crate::fields::{CONNECTION_KEYS, JsonSource, LIST_ROW_KEYS, READ_ONLY_KEYS};
pub use crate::info::{
    ConnectionInfo, ConnectionVersion, PipelineInfo, PipelineUsage, VersionInfo,
};
pub use crate::listing::{
    ConnectionPage, Generation, IfChanged, LastTest, ListQuery, StatusFilter, Total,
};
pub use crate::metrics::{Histogram, KeyUsage, LATENCY_BUCKETS, Metrics, StoreOpMetrics};
pub use crate::pipeline::{Node, PipelineDef, PipelineError, PipelineId};
pub use crate::resolve::{Resolved, Source, Stale};
pub use crate::rotate_password::{
    FAULT_POINT, FAULT_VAR, JOURNAL as ROTATION_JOURNAL, PASSWORD_LEN, ROTATION_ACCOUNT_HOST_KEY,
    ROTATION_CONN_KEY, Recovery, RecoveryOutcome, RetryError, RotationReport, SentAs,
    is_auth_failure_code,
};
pub use crate::rotation_schedule::{
    ROTATE_EVERY_KEY, RotationStatus, RotationSummary, SCHEDULE as ROTATION_SCHEDULE,
    parse_rotate_every,
};
pub use crate::sealer::{CheckFailure, CheckReport, KeyStatus, RotateReport};
pub use crate::tokens::{Grant, Scope, TokenInfo, glob_match, parse_duration};
pub use crate::transfer::{EXPORT_FORMAT, Importer};
pub use crate::tunnel::{MAX_HOPS, TunnelGuard, ssh_tunnel_refs};
pub use crate::update::{ConnectionUpdate, SecretUpdate, UpdateMode};
pub use broked_tunnel::TunnelError;

/// How [`Connections::open_with`] behaves. `Options::default()` is what `open` uses.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// The overall time limit of one connection test.
    pub probe_timeout: Duration,
    /// Networks (CIDR) or host names connection tests may not reach, added to the default
    /// list (link-local and cloud metadata addresses).
    pub probe_deny: Vec<String>,
    /// Turns connection testing off.
    pub probe_disabled: bool,
    /// Directories sqlite connection tests are limited to (after resolving `..` and symbolic
    /// links); each must exist. Empty: any file the process can read. The key file, the
    /// store's database and their side files are never a test target either way.
    pub probe_file_roots: Vec<std::path::PathBuf>,
    /// Seals made with one key before it is rotated automatically (the AES-GCM usage bound).
    pub rotate_after_seals: u64,
    /// The keyring file. Default: `{db_path}.key` beside a SQLite database. Required for a
    /// PostgreSQL database (`postgres://…`), where every replica must use the same file.
    pub key_file: Option<std::path::PathBuf>,
    /// When the database cannot be reached (PostgreSQL down, the SQLite file unreadable),
    /// [`Connections::resolve`] fails — unless this is set: then it returns the last value
    /// it saw, marked [`Resolved::stale`] and logged as a warning, as long as the database
    /// confirmed that value less than `max_stale` ago; after that it fails again (closed).
    /// Default `None`: never a value the database did not just confirm.
    pub max_stale: Option<Duration>,
    /// The longest a call waits for the store: for a pooled PostgreSQL connection (while the
    /// server is down or refusing), for a statement, and for another process's SQLite lock.
    /// Past it the call fails with [`ErrorKind::Unavailable`] or [`ErrorKind::Busy`].
    /// Default 10 s; the server uses 3 s (`--store-timeout`).
    pub store_timeout: Duration,
    /// Previous versions kept per connection (`--keep-versions`): every update keeps the
    /// version it replaces, and older ones beyond this many are removed in the same
    /// transaction. A delete keeps the deleted row and a deleted marker (they count) until
    /// [`Connections::purge`]. 0 keeps no history. Default [`DEFAULT_KEEP_VERSIONS`].
    pub keep_versions: u32,
    /// How often the audit log records the resolves of each conn_id (`resolve` records with
    /// `count=N`; the first resolve of a conn_id in a process is recorded at once), and signs
    /// its head into the checkpoint file. Default 60 s.
    pub audit_interval: Duration,
}

/// How many previous versions of a connection are kept by default ([`Options::keep_versions`]).
pub const DEFAULT_KEEP_VERSIONS: u32 = 10;

impl Default for Options {
    fn default() -> Options {
        Options {
            probe_timeout: Duration::from_secs(10),
            probe_deny: Vec::new(),
            probe_disabled: false,
            probe_file_roots: Vec::new(),
            rotate_after_seals: broked_crypto::ROTATE_AFTER_SEALS,
            key_file: None,
            max_stale: None,
            store_timeout: Duration::from_secs(10),
            keep_versions: DEFAULT_KEEP_VERSIONS,
            audit_interval: Duration::from_secs(60),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
