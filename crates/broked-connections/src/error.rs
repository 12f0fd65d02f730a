//! The library's one error type. No message contains a password, an extra value or a URI
//! with credentials.

use std::path::PathBuf;

use broked_core::ValidationErrors;

use crate::env::EnvConnError;
use crate::info::PipelineUsage;
use crate::pipeline::PipelineError;

/// What went wrong, with kinds a server maps to HTTP statuses ([`Error::kind`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection is not valid; every problem names its field.
    #[error("{0}")]
    Invalid(ValidationErrors),
    #[error("{0}")]
    InvalidPipeline(#[from] PipelineError),
    /// The connection has no form in the client dialect asked for (`resolve_as`).
    #[error("{0}")]
    Dialect(broked_core::DialectError),
    #[error("connection {0:?} not found")]
    NotFound(String),
    /// A conditional write (HTTP `If-Match`) found another version than the caller read.
    #[error(
        "connection {conn_id:?} changed: it is at version {}, not {expected}; read it again \
         and redo the change on the current version",
        current.map_or_else(|| "none (deleted)".to_owned(), |v| v.to_string())
    )]
    Stale {
        conn_id: String,
        expected: i64,
        current: Option<i64>,
    },
    /// `purge` of a connection that exists: only a deleted connection's history is purged.
    #[error(
        "connection {0:?} exists: purge removes the kept history of a deleted connection only; \
         delete it first"
    )]
    PurgeLive(String),
    /// A version that the connection's history does not hold (never written, or pruned).
    #[error("connection {conn_id:?} has no version {version} (see its history)")]
    VersionNotFound { conn_id: String, version: i64 },
    #[error("pipeline {0:?} not found")]
    PipelineNotFound(String),
    #[error("connection {0:?} already exists")]
    AlreadyExists(String),
    #[error("a token named {0:?} already exists; revoke it first or choose another name")]
    TokenExists(String),
    #[error("token {0:?} not found")]
    TokenNotFound(String),
    #[error(
        "connection {conn_id:?} is used by {}: {}; remove it from them first, or delete with force",
        plural(pipelines.len()),
        pipelines.iter().map(|p| p.pipeline_id.as_str()).collect::<Vec<_>>().join(", ")
    )]
    InUse {
        conn_id: String,
        pipelines: Vec<PipelineUsage>,
    },
    /// A bastion that other connections go through (their `extra.ssh_tunnel`).
    #[error(
        "connection {conn_id:?} is the SSH bastion of {}; change their extra.ssh_tunnel first, \
         or delete with force",
        connections.join(", ")
    )]
    BastionInUse {
        conn_id: String,
        connections: Vec<String>,
    },
    /// An SSH tunnel could not be opened or is down; the message names the hop.
    #[error("{0}")]
    Tunnel(broked_tunnel::TunnelError),
    #[error("the pipeline references connections that do not exist: {}", .0.join(", "))]
    UnknownConnIds(Vec<String>),
    #[error("{0}")]
    Env(#[from] EnvConnError),
    /// The database holds secrets but the key file is missing.
    #[error(
        "the database {db} holds encrypted secrets, but its key file {key} is missing; restore \
         the key file from your backup (a new key is never generated over existing secrets)"
    )]
    KeyMissing { db: PathBuf, key: PathBuf },
    /// The key file does not hold the key the database was encrypted with.
    #[error(
        "the key file {key} does not match the database {db}: it does not hold the key the \
         secrets were encrypted with; restore the right key file from your backup"
    )]
    KeyMismatch { db: PathBuf, key: PathBuf },
    /// A sealed secret could not be opened (wrong key, or the data was tampered with or moved).
    #[error("the {field} of connection {conn_id:?} could not be decrypted ({reason})")]
    Decrypt {
        conn_id: String,
        field: &'static str,
        reason: String,
    },
    /// An option of [`crate::Options`] is invalid (e.g. a probe deny entry).
    #[error("invalid option: {0}")]
    Options(String),
    #[error("the database is busy; try again")]
    Busy,
    /// A password rotation failed at the server (refused, or the new password did not log
    /// in); `reason` says what the stored password is now. No secret in it.
    #[error("password rotation of {conn_id:?} failed: {reason}")]
    Rotation { conn_id: String, reason: String },
    #[error("key file: {0}")]
    Crypto(#[from] broked_crypto::CryptoError),
    #[error("database: {0}")]
    Store(broked_store::StoreError),
    /// An import refused as a whole: every bad row is listed.
    #[error(
        "import refused, nothing was changed: {}",
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Import(Vec<ImportRowError>),
}

/// One bad row of an import. Never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {row}{}: {message}", conn_id.as_deref().map(|id| format!(" ({id})")).unwrap_or_default())]
pub struct ImportRowError {
    /// 1-based.
    pub row: usize,
    pub conn_id: Option<String>,
    pub message: String,
}

/// The library's view of a store error.
pub(crate) fn store_err(e: broked_store::StoreError) -> Error {
    match e {
        broked_store::StoreError::Busy => Error::Busy,
        broked_store::StoreError::AlreadyExists(id) => Error::AlreadyExists(id),
        other => Error::Store(other),
    }
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 pipeline".into()
    } else {
        format!("{n} pipelines")
    }
}

/// How a caller should treat an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input (HTTP 400/422).
    Invalid,
    /// HTTP 404.
    NotFound,
    /// Already exists (HTTP 409).
    Conflict,
    /// Used by pipelines (HTTP 409).
    InUse,
    /// A conditional write found a newer version (HTTP 412): read again and retry.
    Stale,
    /// Try again (HTTP 503).
    Busy,
    /// The store cannot be reached or read — the database server down or refusing, the
    /// file unreadable ([`broked_store::StoreError::is_unavailable`]). Try again later
    /// (HTTP 503); nothing was changed by the failed call. An engine should retry or fail
    /// the run, not treat the connection as missing.
    Unavailable,
    /// Not the client's fault (HTTP 500).
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_)
            | Error::InvalidPipeline(_)
            | Error::Dialect(_)
            | Error::UnknownConnIds(_)
            | Error::Import(_)
            | Error::Options(_) => ErrorKind::Invalid,
            Error::NotFound(_)
            | Error::PipelineNotFound(_)
            | Error::TokenNotFound(_)
            | Error::VersionNotFound { .. } => ErrorKind::NotFound,
            Error::Stale { .. } => ErrorKind::Stale,
            Error::AlreadyExists(_) | Error::TokenExists(_) | Error::PurgeLive(_) => {
                ErrorKind::Conflict
            }
            Error::InUse { .. } | Error::BastionInUse { .. } => ErrorKind::InUse,
            Error::Tunnel(e) if matches!(e.kind, broked_probe::Failure::Config) => {
                ErrorKind::Invalid
            }
            Error::Tunnel(_) => ErrorKind::Internal,
            Error::Busy => ErrorKind::Busy,
            // A server HTTP maps it on its own (502): the database server refused.
            Error::Rotation { .. } => ErrorKind::Internal,
            Error::Store(e) if e.is_unavailable() => ErrorKind::Unavailable,
            Error::Env(_)
            | Error::KeyMissing { .. }
            | Error::KeyMismatch { .. }
            | Error::Decrypt { .. }
            | Error::Crypto(_)
            | Error::Store(_) => ErrorKind::Internal,
        }
    }
}

impl From<ValidationErrors> for Error {
    fn from(e: ValidationErrors) -> Error {
        Error::Invalid(e)
    }
}
