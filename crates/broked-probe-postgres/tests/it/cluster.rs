//! The private PostgreSQL cluster with TLS for the tests of what the probe reports about TLS
//! against a real server (issue 16): `broked_testenv::PgCluster` (initdb under a temporary
//! directory, a free loopback port, a certificate made by the test, only `hostssl` lines),
//! with the names these tests use. tests/e2e/safe_defaults.rs includes this file (`#[path]`)
//! for the same check through the server and the CLI.

pub(crate) use broked_testenv::PgCluster;

pub(crate) const USER: &str = PgCluster::USER;
pub(crate) const PASSWORD: &str = PgCluster::PASSWORD;
