//! Password rotation's statement for PostgreSQL (issue 20, `docs/rotation.md`):
//! `ALTER ROLE … PASSWORD '<SCRAM-SHA-256 verifier>'`, sent over a session made exactly as
//! the probe makes it (the policy's approved addresses, the connection's TLS settings).
//!
//! The verifier is computed by the caller (`broked-crypto`), as `psql \password` does, so
//! the cleartext password never reaches the server: a statement log (`log_statement = 'all'`)
//! shows the verifier only. The statement goes by the simple query protocol with statement
//! logging of the driver off.

use std::net::SocketAddr;

use broked_probe::sql::{self, Instead, Session};
use broked_probe::{Connection, Context, Failure, ProbeError, Probed};
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
    let driver = Instead {
        driver: settings(admin)?,
        session: Alter {
            statement: format!("ALTER ROLE {} PASSWORD '{verifier}'", quote_ident(role)),
            role: role.to_owned(),
        },
    };
    sql::run(admin, ctx, &driver).await.map(|_| ())
}

/// `"name"`, with `"` doubled: any role name as one identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `ALTER ROLE`, run over the probe's session instead of its check.
struct Alter {
    statement: String,
    role: String,
}

impl Session<Settings> for Alter {
    async fn query(
        &self,
        settings: &Settings,
        opts: PgConnectOptions,
        addr: SocketAddr,
    ) -> Result<Probed, ProbeError> {
        let mut c = PgConnection::connect_with(&opts)
            .await
            .map_err(|e| classify(&e, settings, addr))?;
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
            Err(e) => Err(classify(&e, settings, addr)),
        }
    }
}
