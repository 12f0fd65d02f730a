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

use std::net::SocketAddr;

use broked_probe::{
    ConnType, Connection, Context, Failure, Probe, ProbeError, ProbeFuture, Probed, Relay, Tls,
    extra_object, io_error, require_host, require_port,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlSslMode};
use sqlx::{ConnectOptions, Connection as _, Executor as _, Row as _};

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
        Box::pin(probe(conn, ctx))
    }
}

struct Settings {
    host: String,
    port: u16,
    user: String,
    database: Option<String>,
    ssl_mode: MySqlSslMode,
    ssl_ca: Option<String>,
}

fn settings(conn: &Connection) -> Result<Settings, ProbeError> {
    let host = require_host(conn)?.to_owned();
    if host.starts_with('/') || host.contains("://") {
        return Err(ProbeError::new(
            Failure::Config,
            "host must be a host name or IP address (no socket path, no URL)",
        ));
    }
    let port = require_port(conn)?;
    let user = conn
        .login
        .clone()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ProbeError::new(Failure::Config, "login is required"))?;
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
        host,
        port,
        user,
        database,
        ssl_mode,
        ssl_ca,
    })
}

/// The options for one address.
///
/// `verify_identity` checks the certificate against the host *name*, and `sqlx` connects to
/// the host it verifies: so with `relay` (that mode, and `verify_ca`: see [`check`]) it gets
/// the name as host and the relay's
/// Unix socket, which carries its bytes to the approved address — no second DNS lookup.
/// Every other mode connects to the approved address itself.
fn options(
    s: &Settings,
    conn: &Connection,
    addr: SocketAddr,
    relay: Option<&Relay>,
) -> MySqlConnectOptions {
    let host = match relay {
        Some(_) => s
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        None => addr.ip().to_string(),
    };
    let mut o = MySqlConnectOptions::new()
        .host(&host)
        .port(addr.port())
        .username(&s.user)
        .password(conn.password.as_ref().map(|p| p.expose()).unwrap_or(""))
        .ssl_mode(s.ssl_mode)
        .statement_cache_capacity(0)
        .disable_statement_logging();
    if let Some(relay) = relay {
        o = o.socket(relay.socket());
    }
    if let Some(db) = &s.database {
        o = o.database(db);
    }
    if let Some(pem) = &s.ssl_ca {
        o = o.ssl_ca_from_pem(pem.as_bytes().to_vec());
    }
    o
}

/// Connects to one approved address and runs the check.
///
/// `verify_ca` goes through the relay with the host name too: `sqlx` 0.8.6 means to skip the
/// name check in that mode, but its verifier lets only rustls' old `NotValidForName` error
/// pass, and rustls 0.23 reports `NotValidForNameContext` — so the name is checked in fact,
/// and a certificate for the name would fail against the bare IP address.
async fn check(
    s: &Settings,
    conn: &Connection,
    addr: SocketAddr,
    ctx: &Context,
) -> Result<Probed, ProbeError> {
    if !matches!(
        s.ssl_mode,
        MySqlSslMode::VerifyIdentity | MySqlSslMode::VerifyCa
    ) {
        return query(&options(s, conn, addr, None), s, addr).await;
    }
    let stream = ctx.connect_addr(addr, &s.host).await?;
    let relay = Relay::new(stream, "mysql.sock")?;
    let opts = options(s, conn, addr, Some(&relay));
    relay.run(query(&opts, s, addr)).await
}

async fn query(
    opts: &MySqlConnectOptions,
    s: &Settings,
    addr: SocketAddr,
) -> Result<Probed, ProbeError> {
    let mut c = MySqlConnection::connect_with(opts)
        .await
        .map_err(|e| classify(&e, s, addr))?;
    let row: Result<(i64, String), _> = sqlx::query_as("SELECT 1, VERSION()")
        .fetch_one(&mut c)
        .await;
    let tls = match row {
        Ok(_) => tls_state(s.ssl_mode, &mut c).await,
        Err(_) => Tls::Plaintext,
    };
    let _ = c.close().await;
    match row {
        Ok((1, version)) => Ok(Probed::new(describe(&version), tls)),
        Ok(_) => Err(ProbeError::new(
            Failure::Protocol,
            "SELECT 1 did not return 1",
        )),
        Err(e) => Err(classify(&e, s, addr)),
    }
}

/// Whether this session is encrypted, and whether the certificate was verified.
///
/// `verify_ca` and `verify_identity` connect only with a certificate that `sqlx` verified
/// against the trusted roots (extra `ssl_ca`, or the system's) — `verify_identity` checks the
/// host name too. `disabled` never starts TLS. For `preferred` (which falls back to plain
/// text when the server has no TLS) and `required`, the server is asked: a non-empty
/// `Ssl_cipher` session status is TLS. A server that cannot say counts as plain text under
/// `preferred` — the weaker claim — and as unverified TLS under `required`.
async fn tls_state(mode: MySqlSslMode, c: &mut MySqlConnection) -> Tls {
    match mode {
        MySqlSslMode::VerifyCa | MySqlSslMode::VerifyIdentity => return Tls::Verified,
        MySqlSslMode::Disabled => return Tls::Plaintext,
        MySqlSslMode::Preferred | MySqlSslMode::Required => {}
    }
    // The text protocol: SHOW is not allowed as a prepared statement everywhere.
    let cipher = c
        .fetch_optional("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get::<String, _>(1).ok());
    match (cipher, mode) {
        (Some(cipher), _) if !cipher.trim().is_empty() => Tls::Unverified,
        (_, MySqlSslMode::Required) => Tls::Unverified,
        _ => Tls::Plaintext,
    }
}

async fn probe(conn: &Connection, ctx: &Context) -> Result<Probed, ProbeError> {
    let s = settings(conn)?;
    let addrs = ctx.resolve(&s.host, s.port).await?;
    let mut last = None;
    for addr in addrs {
        match check(&s, conn, addr, ctx).await {
            Ok(detail) => return Ok(detail),
            // Another address may answer; any other failure is the server's answer.
            Err(err) if err.kind == Failure::Refused => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| ProbeError::new(Failure::Dns, "no address to connect to")))
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

fn classify(e: &sqlx::Error, s: &Settings, addr: SocketAddr) -> ProbeError {
    let target = format!("{}:{}", s.host, addr.port());
    let db = s.database.as_deref().unwrap_or("");
    match e {
        sqlx::Error::Database(d) => {
            let number = d
                .try_downcast_ref::<MySqlDatabaseError>()
                .map(|m| m.number());
            match number {
                // ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR
                Some(1045 | 1698) => ProbeError::new(
                    Failure::Auth,
                    format!(
                        "authentication failed for user {}: check login and password",
                        s.user
                    ),
                ),
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
                        "database {db} does not exist or user {} has no rights on it: check schema",
                        s.user
                    ),
                ),
                // ER_HOST_NOT_PRIVILEGED, ER_HOST_IS_BLOCKED
                Some(1130 | 1129) => ProbeError::new(
                    Failure::Auth,
                    format!(
                        "the server does not accept user {} from this host: {}",
                        s.user,
                        d.message()
                    ),
                ),
                Some(n) => {
                    ProbeError::new(Failure::Other, format!("server error {n}: {}", d.message()))
                }
                None => ProbeError::new(Failure::Other, format!("server error: {}", d.message())),
            }
        }
        // rustls reports a failed handshake (a certificate for another name, an unknown
        // issuer) as an IO error of kind InvalidData.
        sqlx::Error::Io(io)
            if io.kind() == std::io::ErrorKind::InvalidData
                && io.to_string().contains("certificate") =>
        {
            ProbeError::new(
                Failure::Tls,
                format!("TLS error with {target}: {io} (check ssl_mode and ssl_ca)"),
            )
        }
        sqlx::Error::Io(io) => io_error(io, &target),
        sqlx::Error::Tls(t) => ProbeError::new(
            Failure::Tls,
            format!("TLS error with {target}: {t} (check ssl_mode and ssl_ca)"),
        ),
        sqlx::Error::Protocol(p) => ProbeError::new(
            Failure::Protocol,
            format!("{target} does not speak the MySQL protocol as expected: {p}"),
        ),
        sqlx::Error::Configuration(c) => {
            ProbeError::new(Failure::Config, format!("invalid option: {c}"))
        }
        other => ProbeError::new(Failure::Other, format!("{target}: {other}")),
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
