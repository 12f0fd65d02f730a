//! Tests MySQL and MariaDB connections with `sqlx` over rustls: connect, `SELECT 1`, report
//! the server version and whether the session is encrypted and the certificate verified
//! ([`Tls`]: `verify_ca`/`verify_identity` verify; `disabled` is plain; `preferred` and
//! `required` ask the server (`Ssl_cipher`) whether this session uses TLS).
//!
//! The connect options are built from the connection's fields only (`sqlx`'s MySQL options read
//! no environment). Not here: pooling, queries beyond the check. Unix-domain sockets are not
//! reachable: the probe connects to the addresses that the probe policy approved — in
//! `verify_identity` too, where `sqlx` gets the host name for the certificate check and a
//! [`Relay`] to the approved address instead of resolving the name again.

mod rotate;

use std::net::SocketAddr;

use broked_probe::sniff::Speaks;
use broked_probe::sql::{self, Target, TlsMode};
use broked_probe::{
    ConnType, Connection, Context, Failure, Probe, ProbeError, ProbeFuture, Probed, Relay,
    TlsFields, extra_object,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlSslMode};
use sqlx::{ConnectOptions, Connection as _, Executor as _, Row as _};

pub use rotate::{Sent, set_password};

/// The MySQL/MariaDB probe (`sqlx-mysql`).
#[derive(Debug, Default, Clone, Copy)]
pub struct MysqlProbe;

impl Probe for MysqlProbe {
    fn conn_type(&self) -> ConnType {
        ConnType::Mysql
    }

    fn driver(&self) -> &'static str {
        "sqlx-mysql"
    }

    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a> {
        Box::pin(sql::probe(conn, ctx, settings))
    }
}

struct Settings {
    target: Target,
    database: Option<String>,
    ssl_mode: MySqlSslMode,
    ssl_ca: Option<String>,
}

fn settings(conn: &Connection) -> Result<Settings, ProbeError> {
    let target = Target::new(conn)?;
    let database = conn.schema.clone().filter(|s| !s.is_empty());
    let extra = extra_object(conn)?;
    let mode = extra.get("ssl_mode").or_else(|| extra.get("sslmode"));
    let ssl_mode = match mode {
        None => MySqlSslMode::Preferred,
        Some(serde_json::Value::String(s)) => s.replace('-', "_").parse().map_err(|_| {
            ProbeError::new(
                Failure::Config,
                "extra ssl_mode must be one of disabled, preferred, required, verify_ca, verify_identity",
            )
        })?,
        Some(_) => return Err(ProbeError::new(Failure::Config, "extra ssl_mode must be a string")),
    };
    let ssl_ca = match extra.get("ssl_ca") {
        None => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(ProbeError::new(
                Failure::Config,
                "extra ssl_ca must be a PEM string",
            ));
        }
    };
    Ok(Settings {
        target,
        database,
        ssl_mode,
        ssl_ca,
    })
}

impl sql::Driver for Settings {
    type Options = MySqlConnectOptions;

    const PROTOCOL: &'static str = "MySQL";
    const DEFAULT_PORT: u16 = 3306;
    const SPEAKS: Option<Speaks> = Some(Speaks::Mysql);

    fn target(&self) -> &Target {
        &self.target
    }

    fn tls_mode(&self) -> TlsMode {
        match self.ssl_mode {
            MySqlSslMode::Disabled => TlsMode::Off,
            MySqlSslMode::Preferred => TlsMode::Optional,
            MySqlSslMode::Required => TlsMode::Required,
            MySqlSslMode::VerifyCa | MySqlSslMode::VerifyIdentity => TlsMode::Verified,
        }
    }

    fn relay_socket(_: SocketAddr) -> String {
        "mysql.sock".to_owned()
    }

    /// The relay is the socket file.
    fn options(
        &self,
        conn: &Connection,
        addr: SocketAddr,
        relay: Option<&Relay>,
    ) -> MySqlConnectOptions {
        let host = self.target.driver_host(addr, relay.is_some());
        let mut o = MySqlConnectOptions::new()
            .host(&host)
            .port(addr.port())
            .username(&self.target.user)
            .password(sql::password(conn))
            .ssl_mode(self.ssl_mode)
            .statement_cache_capacity(0)
            .disable_statement_logging();
        if let Some(relay) = relay {
            o = o.socket(relay.socket());
        }
        if let Some(db) = &self.database {
            o = o.database(db);
        }
        if let Some(pem) = &self.ssl_ca {
            o = o.ssl_ca_from_pem(pem.as_bytes().to_vec());
        }
        o
    }

    async fn query(
        &self,
        opts: MySqlConnectOptions,
        addr: SocketAddr,
    ) -> Result<Probed, ProbeError> {
        let mut c = MySqlConnection::connect_with(&opts)
            .await
            .map_err(|e| classify(&e, self, addr))?;
        let row = sqlx::query_as("SELECT 1, VERSION()")
            .fetch_one(&mut c)
            .await
            .map(|(one, version): (i64, String)| (one, describe(&version)));
        let classify = |e: sqlx::Error| classify(&e, self, addr);
        let answer = sql::selected(row, self.tls_mode(), || uses_tls(&mut c), classify).await;
        let _ = c.close().await;
        answer
    }
}

/// Whether this session uses TLS ([`sql::tls_state`]): a non-empty `Ssl_cipher` session
/// status is TLS; `None` when the server cannot say.
async fn uses_tls(c: &mut MySqlConnection) -> Option<bool> {
    // The text protocol: SHOW is not allowed as a prepared statement everywhere.
    let cipher = c
        .fetch_optional("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get::<String, _>(1).ok());
    cipher.map(|cipher| !cipher.trim().is_empty())
}

/// `MariaDB 10.11.19` or `MySQL 8.0.36` from `VERSION()`.
fn describe(version: &str) -> String {
    if version.to_ascii_lowercase().contains("mariadb") {
        let v = version
            .split('-')
            .take_while(|p| !p.eq_ignore_ascii_case("mariadb"))
            .filter(|p| p.contains('.') && p.chars().all(|c| c.is_ascii_digit() || c == '.'))
            .last();
        format!("MariaDB {}", v.unwrap_or(version))
    } else {
        format!("MySQL {version}")
    }
}

/// The fields a TLS or certificate failure names.
const TLS_FIELDS: TlsFields = TlsFields {
    ca: Some("extra.ssl_ca"),
    mode: "extra.ssl_mode",
};

fn classify(e: &sqlx::Error, s: &Settings, addr: SocketAddr) -> ProbeError {
    let target = s.target.label(addr);
    let user = &s.target.user;
    let db = s.database.as_deref().unwrap_or("");
    match e {
        sqlx::Error::Database(d) => {
            let number = d
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(|m| m.number());
            match number {
                // ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR. The server says
                // the same to a user that must use TLS (REQUIRE SSL) and did not.
                Some(1045 | 1698) if matches!(s.ssl_mode, MySqlSslMode::Disabled) => {
                    ProbeError::new(
                        Failure::Auth,
                        format!(
                            "authentication failed for user {user}: check login and password (or \
                         the user must connect with TLS: extra.ssl_mode is disabled)"
                        ),
                    )
                }
                Some(1045 | 1698) => s.target.auth_failed(),
                // ER_BAD_DB_ERROR
                Some(1049) => ProbeError::new(
                    Failure::NotFound,
                    format!("database {db} does not exist: check schema"),
                ),
                // ER_DBACCESS_DENIED_ERROR: the server says this for a missing database too
                // when the user may not see it.
                Some(1044) => ProbeError::new(
                    Failure::NotFound,
                    format!(
                        "database {db} does not exist or user {user} has no rights on it: check \
                         schema, or GRANT user {user} access to {db}"
                    ),
                ),
                // ER_HOST_NOT_PRIVILEGED, ER_HOST_IS_BLOCKED: whoever the user is, not from
                // this host.
                Some(1130 | 1129) => ProbeError::new(
                    Failure::Authorization,
                    format!(
                        "{target} does not accept user {user} from this host ({}): check \
                         login, or ask the server's administrator",
                        d.message()
                    ),
                ),
                Some(n) => {
                    ProbeError::new(Failure::Other, format!("server error {n}: {}", d.message()))
                }
                None => ProbeError::new(Failure::Other, format!("server error: {}", d.message())),
            }
        }
        sqlx::Error::Io(io) => sql::io_failure(io, &target, &s.target.host, TLS_FIELDS),
        sqlx::Error::Tls(t) => sql::tls_failure(&target, &s.target.host, t, TLS_FIELDS),
        sqlx::Error::Protocol(p) => sql::protocol_failure(&target, "MySQL", p),
        sqlx::Error::Configuration(c) => sql::config_failure(c),
        other => sql::other_failure(&target, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(describe("10.11.19-MariaDB-0+deb12u1"), "MariaDB 10.11.19");
        assert_eq!(describe("5.5.5-10.6.1-MariaDB"), "MariaDB 10.6.1");
        assert_eq!(describe("8.0.36"), "MySQL 8.0.36");
    }
}
