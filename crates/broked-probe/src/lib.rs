//! Connection testing: the [`Probe`] trait every per-type crate implements, the [`Registry`]
//! that dispatches a [`Connection`] to its probe under an overall timeout and measures latency,
//! the [`Failure`] classes with short actionable messages, [`scrub`] (no password or extra value
//! ever leaves a probe), and the [`Policy`]: a deny list of networks and host names checked after
//! DNS resolution (the SSRF guard), a timeout and a switch that disables testing.
//!
//! What is not here: any driver. `broked-probe-postgres`, `-mysql`, `-sqlite`, `-http`,
//! `-sftp`, `-s3` and `-tcp` each bring one, and the application registers the ones it built.
//! Probes reach the network only through [`Context::resolve`] (or [`Context::connect_tcp`]),
//! which applies the policy to every address before any packet is sent.
//!
//! The SQL probes share [`sql`]: their target, connecting to each approved address (through a
//! [`Relay`] when the driver verifies the host name) and the failures that do not depend on
//! the driver.
//!
//! The probe crates' tests share `testkit` (cargo feature `test-kit`, only in their
//! dev-dependencies): helpers and `sql_probe_contract!`, the SQL probes' common behaviours.

mod error;
pub mod hostkey;
mod policy;
mod registry;
mod relay;
mod scrub;
pub mod sniff;
pub mod sql;
#[cfg(feature = "test-kit")]
pub mod testkit;

use std::future::Future;
use std::pin::Pin;

pub use broked_core::{ConnType, Connection};
pub use error::{Failure, ProbeError, TlsFields, classify_io, io_error, tls_error};
pub use policy::{DEFAULT_DENY, DEFAULT_TIMEOUT, KEYRING_MAGIC, Policy};
pub use registry::{
    Context, Outcome, Probed, Registry, Tls, dns_error, lookup_host, never_resolves,
};
pub use relay::Relay;
pub use scrub::scrub;

/// What a probe returns: what it learned ([`Probed`]: a detail such as `PostgreSQL 15.19`, and
/// the session's [`Tls`] state) or why it failed.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<Probed, ProbeError>> + Send + 'a>>;

/// Tests one type of connection with a real driver.
///
/// A probe resolves its target through [`Context::resolve`] and connects only to the addresses
/// that it returned. It need not enforce the overall timeout (the registry does), but should
/// bound its own blocking work with [`Context::remaining`]. Its error messages need not be
/// scrubbed (the registry scrubs them) but should not carry secrets in the first place.
pub trait Probe: Send + Sync + 'static {
    fn conn_type(&self) -> ConnType;
    /// The driver's name as the API reports it: `sqlx-postgres`, `reqwest`, `tcp`, …
    fn driver(&self) -> &'static str;
    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a>;
}

/// The connection's extra object, parsed; an empty map when there is none.
///
/// A value that is not a JSON object is a [`Failure::Config`] error that does not echo it.
pub fn extra_object(
    conn: &Connection,
) -> Result<serde_json::Map<String, serde_json::Value>, ProbeError> {
    let Some(extra) = conn.extra.as_ref() else {
        return Ok(serde_json::Map::new());
    };
    if extra.expose().trim().is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_str::<serde_json::Value>(extra.expose()) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(ProbeError::new(
            Failure::Config,
            "extra is not a JSON object",
        )),
    }
}

/// The host a network probe connects to, or a [`Failure::Config`] error.
pub fn require_host(conn: &Connection) -> Result<&str, ProbeError> {
    match conn.host.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => Ok(h),
        _ => Err(ProbeError::new(Failure::Config, "host is required")),
    }
}

/// The port a network probe connects to (the type's default when unset), or a [`Failure::Config`] error.
pub fn require_port(conn: &Connection) -> Result<u16, ProbeError> {
    conn.effective_port()
        .ok_or_else(|| ProbeError::new(Failure::Config, "port is required"))
}

/// A duration as people read it in a message: `10 s`, `1.5 s`, `250 ms`.
pub fn human_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
