//! Where the test services are, and the fixtures several test binaries share. Test-only: a
//! dev-dependency (or a dependency of the end-to-end test package), never linked into a product.
//!
//! `scripts/test` starts PostgreSQL, MariaDB, OpenSSH (SFTP) and an S3-compatible server on
//! loopback ports and exports their addresses as `BROKED_TEST_<SERVICE>_<FIELD>` variables (see
//! `docs/testing.md`). It also sets `BROKED_TEST_REQUIRE_SERVICES=1`, which turns a missing
//! service from "skip, saying so" into a test failure, so CI never skips silently.
//!
//! Beside the services, the fixtures that several test binaries need: [`PgSchema`], a schema of
//! a test's own in the test PostgreSQL; [`PgCluster`], a private PostgreSQL cluster (initdb on a
//! free port, with or without TLS); [`free_port`], [`is_root`], [`chown`] for private
//! servers; [`run_output`], a child's status and output as text; [`holds_dms_lock`], whether
//! this process holds SQLite's lock on a WAL index; [`pg_password_failed`], the bytes a
//! PostgreSQL stand-in refuses a login with; and with the cargo feature `tls`, `TestCa`: a CA of
//! a test's own, the certificates it signs and a rustls server configuration that presents one.
//!
//! Not here: test helpers of one crate only (probe test helpers are `broked_probe::testkit`),
//! and no dependency on the workspace's crates.

mod host;
mod pg_cluster;
mod pg_schema;
#[cfg(feature = "tls")]
mod tls;
mod wire;

use std::collections::HashMap;

pub use host::{chown, free_port, holds_dms_lock, is_root, run_output};
pub use pg_cluster::PgCluster;
pub use pg_schema::PgSchema;
#[cfg(feature = "tls")]
pub use tls::TestCa;
pub use wire::pg_password_failed;

/// The flag that makes a missing service a failure.
pub const REQUIRE_FLAG: &str = "BROKED_TEST_REQUIRE_SERVICES";

/// The variables of one service: `BROKED_TEST_{SERVICE}_{FIELD}` for each field.
#[derive(Debug, Clone)]
pub struct Service {
    name: &'static str,
    vars: HashMap<&'static str, String>,
}

impl Service {
    /// One field's value; the fields were all checked to be present by [`service`].
    pub fn get(&self, field: &str) -> &str {
        self.vars
            .get(field)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("test asked {} for undeclared field {field}", self.name))
    }

    pub fn port(&self) -> u16 {
        self.get("PORT")
            .parse()
            .unwrap_or_else(|_| panic!("BROKED_TEST_{}_PORT is not a port", self.name))
    }
}

/// The service `name` (e.g. `PG`) with all of `fields` (e.g. `["HOST", "PORT"]`), or `None`
/// after printing why the test is skipped. Panics instead when [`REQUIRE_FLAG`] is `1`.
pub fn service(name: &'static str, fields: &[&'static str]) -> Option<Service> {
    let mut vars = HashMap::new();
    let mut missing = Vec::new();
    for &field in fields {
        let var = format!("BROKED_TEST_{name}_{field}");
        match std::env::var(&var) {
            Ok(value) => {
                vars.insert(field, value);
            }
            Err(_) => missing.push(var),
        }
    }
    if missing.is_empty() {
        return Some(Service { name, vars });
    }
    let why = format!(
        "service {name} not configured (missing {}); run scripts/test to start the test services",
        missing.join(", ")
    );
    if required() {
        panic!("{why}, and {REQUIRE_FLAG}=1 makes that a failure");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// Whether missing services are failures (`BROKED_TEST_REQUIRE_SERVICES=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_FLAG).is_ok_and(|v| v == "1")
}

/// PostgreSQL with a password-authenticated test user.
pub fn postgres() -> Option<Service> {
    service("PG", &["HOST", "PORT", "USER", "PASSWORD", "DB"])
}

/// MariaDB/MySQL with a password-authenticated test user.
pub fn mysql() -> Option<Service> {
    service("MYSQL", &["HOST", "PORT", "USER", "PASSWORD", "DB"])
}

/// OpenSSH with the SFTP subsystem: a user with a password and a private key file (`KEY`),
/// an existing directory (`PATH`) and the server's public host key line (`HOST_KEY`).
pub fn sftp() -> Option<Service> {
    service(
        "SFTP",
        &[
            "HOST", "PORT", "USER", "PASSWORD", "KEY", "PATH", "HOST_KEY",
        ],
    )
}

/// An S3-compatible server that checks request signatures.
pub fn s3() -> Option<Service> {
    service(
        "S3",
        &["ENDPOINT", "ACCESS_KEY", "SECRET_KEY", "BUCKET", "REGION"],
    )
}

/// The Python of a virtual environment with SQLAlchemy, psycopg and PyMySQL
/// (`BROKED_TEST_PYTHON`, made by `scripts/services/python.sh`), for the tests that hand
/// connection strings to the real clients. `None` after printing why the test is skipped;
/// panics instead when [`REQUIRE_FLAG`] is `1`.
pub fn python() -> Option<std::path::PathBuf> {
    match std::env::var_os("BROKED_TEST_PYTHON") {
        Some(p) if !p.is_empty() => Some(p.into()),
        _ => {
            let why = "BROKED_TEST_PYTHON not configured; run scripts/test (scripts/services/python.sh) \
                       to make the test venv";
            if required() {
                panic!("{why}, and {REQUIRE_FLAG}=1 makes that a failure");
            }
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_service_is_none_unless_required() {
        // A name no script sets.
        if required() {
            let r = std::panic::catch_unwind(|| service("NOPE", &["HOST"]));
            assert!(
                r.is_err(),
                "required flag must turn a missing service into a panic"
            );
        } else {
            assert!(service("NOPE", &["HOST"]).is_none());
        }
    }
}
