//! Tests SQLite connections with `rusqlite`: the host field is a database file on the server.
//!
//! The file is opened read-only and never created (no `SQLITE_OPEN_CREATE`), after the probe
//! policy checked it ([`Policy::check_path`](broked_probe::Policy::check_path): it must exist,
//! and lie inside the configured directories when the policy limits them). Only regular files
//! are opened (a FIFO or device would block or read forever). `PRAGMA schema_version` and a
//! read of `sqlite_schema` prove it is a database. A relative path is relative to the server
//! process's working directory; the canonical absolute path is what gets opened, so SQLite
//! never interprets the name as a `file:` URI.
//!
//! Never a target, whatever the file roots allow: the store's database and key file and their
//! SQLite side files ([`Policy::protect_files`](broked_probe::Policy::protect_files)), any
//! `-wal`/`-shm`/`-journal` file, a database with a `{db}.key` file beside it, any keyring file
//! (by its format line), and any database with a broked store's tables (checked after
//! opening, before anything is reported). All of these fail as `blocked`.
//!
//! Not here: writes, migrations, or anything beyond the check.

use std::path::{Path, PathBuf};

use broked_probe::{
    ConnType, Connection, Context, Failure, Probe, ProbeError, ProbeFuture, Probed, require_host,
};
use rusqlite::{ErrorCode, OpenFlags};

/// The SQLite probe (`rusqlite`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SqliteProbe;

impl Probe for SqliteProbe {
    fn conn_type(&self) -> ConnType {
        ConnType::Sqlite
    }

    fn driver(&self) -> &'static str {
        "rusqlite"
    }

    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a> {
        Box::pin(async move {
            let host = require_host(conn)?;
            if host == ":memory:" || host.starts_with("file:") {
                return Err(ProbeError::new(
                    Failure::Config,
                    "host must be the path of a database file (no :memory:, no file: URI)",
                ));
            }
            let path = ctx.policy().check_path(Path::new(host))?;
            let shown = host.to_owned();
            let busy = ctx.remaining();
            match tokio::task::spawn_blocking(move || check(&path, &shown, busy)).await {
                // A local file: no network session, no TLS state.
                Ok(result) => result.map(Probed::without_tls),
                Err(_) => Err(ProbeError::new(
                    Failure::Other,
                    "the SQLite check did not complete",
                )),
            }
        })
    }
}

fn check(path: &PathBuf, shown: &str, busy: std::time::Duration) -> Result<String, ProbeError> {
    let meta = std::fs::metadata(path).map_err(|e| broked_probe::io_error(&e, shown))?;
    if !meta.is_file() {
        return Err(ProbeError::new(
            Failure::Config,
            format!("{shown} is not a regular file: host must be the path of a database file"),
        ));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = rusqlite::Connection::open_with_flags(path, flags).map_err(|e| classify(&e, shown))?;
    db.busy_timeout(busy).map_err(|e| classify(&e, shown))?;
    let version: i64 = db
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .map_err(|e| classify(&e, shown))?;
    let tables: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| classify(&e, shown))?;
    let store_tables: i64 = db
        .query_row(STORE_TABLES_SQL, [], |r| r.get(0))
        .map_err(|e| classify(&e, shown))?;
    if store_tables == STORE_TABLES {
        // A broked store (this server's or a copy): its sealed secrets are nobody's test
        // target, wherever the file lies and whatever its key file is called.
        return Err(ProbeError::blocked());
    }
    drop(db);
    Ok(format!(
        "SQLite {}, {tables} table{}, schema version {version}",
        rusqlite::version(),
        if tables == 1 { "" } else { "s" }
    ))
}

/// The tables every broked store has (`broked-store`'s first migration); a database with all
/// of them is a store and never a test target (`docs/probes.md`).
const STORE_TABLES_SQL: &str = "SELECT count(*) FROM sqlite_schema WHERE type = 'table' \
     AND name IN ('state', 'keys', 'connections', 'pipelines', 'pipeline_refs')";
const STORE_TABLES: i64 = 5;

fn classify(e: &rusqlite::Error, shown: &str) -> ProbeError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::NotADatabase => ProbeError::new(
                Failure::Protocol,
                format!("{shown} is not a SQLite database: check host (the database file)"),
            ),
            ErrorCode::DatabaseCorrupt => ProbeError::new(
                Failure::Protocol,
                format!("{shown} is a corrupt SQLite database: check host (the database file)"),
            ),
            ErrorCode::CannotOpen => ProbeError::new(
                Failure::NotFound,
                format!(
                    "cannot open {shown}: check host (the path on the server) and its read permission"
                ),
            ),
            ErrorCode::PermissionDenied => ProbeError::new(
                Failure::Authorization,
                format!(
                    "permission denied reading {shown}: the server process may not read it; check \
                     host (the path) and the file's permissions"
                ),
            ),
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => ProbeError::new(
                Failure::Timeout,
                format!("{shown} stayed locked by another process: try again later"),
            ),
            _ => ProbeError::new(Failure::Other, format!("{shown}: {e}")),
        },
        _ => ProbeError::new(Failure::Other, format!("{shown}: {e}")),
    }
}
