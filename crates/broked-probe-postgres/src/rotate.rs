//! Password rotation's statement for PostgreSQL (issue 20, `docs/rotation.md`):
//! `ALTER ROLE … PASSWORD '<SCRAM-SHA-256 verifier>'`, sent over a session made exactly as
//! the probe makes it (the policy's approved addresses, the connection's TLS settings).
//!
//! The verifier is computed by the caller (`broked-crypto`), as `psql \password` does, so
//! the cleartext password never reaches the server: a statement log (`log_statement = 'all'`)
//! shows the verifier only. The statement goes by the simple query protocol with statement
//! logging of the driver off.

use std::net::SocketAddr;

use broked_probe::sql::{self, Target, TlsMode};
use broked_probe::{Connection, Context, Failure, ProbeError, Probed, Relay};
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use crate::{Settings, classify, settings};

/// Sets the password of `role` to `verifier` (a `SCRAM-SHA-256$…` verifier, never a
/// cleartext password), logged in as `admin` — the connection itself when the role changes
/// its own password, or an admin connection to the same server.
pub async fn set_password(
    admin: &Connection,
    role: &str,
    verifier: &str,
    ctx: &Context,
) -> Result<(), ProbeError> {
    if !verifier.starts_with("SCRAM-SHA-256$") || verifier.contains(['\'', '\\']) {
        return Err(ProbeError::new(
            Failure::Config,
            "the new password must be sent as a SCRAM-SHA-256 verifier",
        ));
    }
    let driver = Alter {
        inner: settings(admin)?,
        statement: format!("ALTER ROLE {} PASSWORD '{verifier}'", quote_ident(role)),
        role: role.to_owned(),
    };
    sql::run(admin, ctx, &driver).await.map(|_| ())
}

/// `"name"`, with `"` doubled: any role name as one identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The probe's settings, running `statement` instead of the check.
struct Alter {
    inner: Settings,
    statement: String,
    role: String,
}

impl sql::Driver for Alter {
    type Options = PgConnectOptions;

    const PROTOCOL: &'static str = <Settings as sql::Driver>::PROTOCOL;
    const DEFAULT_PORT: u16 = <Settings as sql::Driver>::DEFAULT_PORT;
    const SPEAKS: Option<broked_probe::sniff::Speaks> = <Settings as sql::Driver>::SPEAKS;

    fn target(&self) -> &Target {
        self.inner.target()
    }

    fn tls_mode(&self) -> TlsMode {
        self.inner.tls_mode()
    }

    fn relay_socket(addr: SocketAddr) -> String {
        Settings::relay_socket(addr)
    }

    fn options(
        &self,
        conn: &Connection,
        addr: SocketAddr,
        relay: Option<&Relay>,
    ) -> PgConnectOptions {
        self.inner.options(conn, addr, relay)
    }

    async fn query(&self, opts: PgConnectOptions, addr: SocketAddr) -> Result<Probed, ProbeError> {
        let mut c = PgConnection::connect_with(&opts)
            .await
            .map_err(|e| classify(&e, &self.inner, addr))?;
        // A plain `&str` has no arguments: sent by the simple query protocol.
        let done = sqlx::Executor::execute(&mut c, self.statement.as_str()).await;
        let _ = c.close().await;
        match done {
            Ok(_) => Ok(Probed::without_tls("")),
            // The server's message names the role or the missing right, never the statement.
            Err(sqlx::Error::Database(db)) => Err(ProbeError::new(
                Failure::Other,
                format!(
                    "the server refused to change the password of role {}: {}",
                    self.role,
                    db.message()
                ),
            )),
            Err(e) => Err(classify(&e, &self.inner, addr)),
        }
    }
}
