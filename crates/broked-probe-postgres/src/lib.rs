//! Tests PostgreSQL connections with `sqlx` over rustls: connect, `SELECT 1`, report the
//! server version and whether the session is encrypted and the certificate verified
//! ([`Tls`]: `verify-ca`/`verify-full` verify; `disable` is plain; `allow`, `prefer` and
//! `require` ask the server, through `pg_stat_ssl`, whether this session uses TLS).
//!
//! The connect options are built from the connection's fields only. `sqlx`'s own constructors
//! read `PGPASSWORD`, `PGHOST`, `PGUSER`, `PGDATABASE`, `PGSSLMODE`, … and `~/.pgpass` from the
//! server's environment; every one of those fields is overwritten here, and a client
//! certificate from `PGSSLCERT`/`PGSSLKEY` (which cannot be unset) makes the probe refuse to
//! run, so a connection can never log in with the server's own credentials.
//! `PgConnectOptions`' `Debug` prints the password: it is never formatted or logged.
//!
//! Not here: pooling, queries beyond the check. Unix-domain sockets are not reachable: the
//! probe connects to the addresses that the probe policy approved — in `verify-full` too,
//! where `sqlx` gets the host name for the certificate check and a [`Relay`] to the approved
//! address instead of resolving the name again.

use std::net::SocketAddr;

use broked_probe::{
    ConnType, Connection, Context, Failure, Probe, ProbeError, ProbeFuture, Probed, Relay, Tls,
    extra_object, io_error, require_host, require_port,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection as _};

/// The PostgreSQL probe (`sqlx-postgres`).
#[derive(Debug, Default, Clone, Copy)]
pub struct PostgresProbe;

/// Environment variables that would hand the server's own client certificate to any target,
/// and that `sqlx` offers no way to unset.
const REFUSED_ENV: &[&str] = &["PGSSLCERT", "PGSSLKEY"];

impl Probe for PostgresProbe {
    fn conn_type(&self) -> ConnType {
        ConnType::Postgres
    }

    fn driver(&self) -> &'static str {
        "sqlx-postgres"
    }

    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a> {
        Box::pin(probe(conn, ctx))
    }
}

/// What the connection's fields and extra say, validated before any network traffic.
struct Settings {
    host: String,
    port: u16,
    user: String,
    database: String,
    ssl_mode: PgSslMode,
    extra: serde_json::Map<String, serde_json::Value>,
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
    let database = conn
        .schema
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| user.clone());
    let extra = extra_object(conn)?;
    let ssl_mode = match extra.get("sslmode") {
        None => PgSslMode::Prefer,
        Some(serde_json::Value::String(s)) => s.parse().map_err(|_| {
            ProbeError::new(
                Failure::Config,
                "extra sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full",
            )
        })?,
        Some(_) => return Err(ProbeError::new(Failure::Config, "extra sslmode must be a string")),
    };
    for key in ["sslrootcert", "sslcert", "sslkey", "application_name"] {
        if extra.get(key).is_some_and(|v| !v.is_string()) {
            return Err(ProbeError::new(
                Failure::Config,
                format!("extra {key} must be a string"),
            ));
        }
    }
    let has_own_cert = extra.contains_key("sslcert") && extra.contains_key("sslkey");
    if !has_own_cert && let Some(var) = REFUSED_ENV.iter().find(|v| std::env::var_os(v).is_some()) {
        return Err(ProbeError::new(
            Failure::Config,
            format!(
                "the server's environment sets {var}, which would present the server's own client certificate; unset it"
            ),
        ));
    }
    Ok(Settings {
        host,
        port,
        user,
        database,
        ssl_mode,
        extra,
    })
}

/// The options for one address. Every field that `sqlx` may have taken from the environment
/// is set here explicitly.
///
/// `verify-full` checks the certificate against the host *name*, and `sqlx` connects to the
/// host it verifies: so with `relay` (that mode, and `verify-ca`: see [`check`]) it gets the
/// name as host and the relay's
/// Unix socket, which carries its bytes to the approved address — no second DNS lookup.
/// Every other mode connects to the approved address itself.
fn options(
    s: &Settings,
    conn: &Connection,
    addr: SocketAddr,
    relay: Option<&Relay>,
) -> PgConnectOptions {
    let host = match relay {
        Some(_) => s
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        None => addr.ip().to_string(),
    };
    let password = conn.password.as_ref().map(|p| p.expose()).unwrap_or("");
    let str_extra = |k: &str| s.extra.get(k).and_then(|v| v.as_str());
    let mut o = PgConnectOptions::new_without_pgpass()
        .host(&host)
        .port(addr.port())
        .username(&s.user)
        .password(password)
        .database(&s.database)
        .ssl_mode(s.ssl_mode)
        .application_name(str_extra("application_name").unwrap_or("broked-connections"))
        .statement_cache_capacity(0)
        .disable_statement_logging();
    if let Some(relay) = relay {
        o = o.socket(relay.dir());
    }
    if let Some(pem) = str_extra("sslrootcert") {
        o = o.ssl_root_cert_from_pem(pem.as_bytes().to_vec());
    }
    if let (Some(cert), Some(key)) = (str_extra("sslcert"), str_extra("sslkey")) {
        o = o
            .ssl_client_cert_from_pem(cert.as_bytes())
            .ssl_client_key_from_pem(key.as_bytes());
    }
    o
}

/// Connects to one approved address and runs the check.
///
/// `verify-ca` goes through the relay with the host name too: `sqlx` 0.8.6 means to skip the
/// name check in that mode, but its verifier lets only rustls' old `NotValidForName` error
/// pass, and rustls 0.23 reports `NotValidForNameContext` — so the name is checked in fact,
/// and a certificate for the name would fail against the bare IP address.
async fn check(
    s: &Settings,
    conn: &Connection,
    addr: SocketAddr,
    ctx: &Context,
) -> Result<Probed, ProbeError> {
    if !matches!(s.ssl_mode, PgSslMode::VerifyFull | PgSslMode::VerifyCa) {
        return query(&options(s, conn, addr, None), s, addr).await;
    }
    let stream = ctx.connect_addr(addr, &s.host).await?;
    let relay = Relay::new(stream, &format!(".s.PGSQL.{}", addr.port()))?;
    let opts = options(s, conn, addr, Some(&relay));
    relay.run(query(&opts, s, addr)).await
}

async fn query(
    opts: &PgConnectOptions,
    s: &Settings,
    addr: SocketAddr,
) -> Result<Probed, ProbeError> {
    let mut c = PgConnection::connect_with(opts)
        .await
        .map_err(|e| classify(&e, s, addr))?;
    let row: Result<(i32, String), _> =
        sqlx::query_as("SELECT 1, current_setting('server_version')")
            .fetch_one(&mut c)
            .await;
    let tls = match row {
        Ok(_) => tls_state(s.ssl_mode, &mut c).await,
        Err(_) => Tls::Plaintext,
    };
    let _ = c.close().await;
    match row {
        Ok((1, version)) => Ok(Probed::new(format!("PostgreSQL {version}"), tls)),
        Ok(_) => Err(ProbeError::new(
            Failure::Protocol,
            "SELECT 1 did not return 1",
        )),
        Err(e) => Err(classify(&e, s, addr)),
    }
}

/// Whether this session is encrypted, and whether the certificate was verified.
///
/// `verify-ca` and `verify-full` connect only with a certificate that `sqlx` verified against
/// the trusted roots (extra `sslrootcert`, or the system's) — `verify-full` checks the host
/// name too. `disable` never starts TLS. For the modes in between, sqlx does not say whether
/// it fell back to plain text, so the server is asked (`pg_stat_ssl`, PostgreSQL 9.5 and
/// later); a server that cannot say (no such view) counts as plain text under `allow` and
/// `prefer` — the weaker claim — and as unverified TLS under `require`, which does not
/// connect without TLS.
async fn tls_state(mode: PgSslMode, c: &mut PgConnection) -> Tls {
    match mode {
        PgSslMode::VerifyCa | PgSslMode::VerifyFull => return Tls::Verified,
        PgSslMode::Disable => return Tls::Plaintext,
        PgSslMode::Allow | PgSslMode::Prefer | PgSslMode::Require => {}
    }
    let ssl: Result<Option<bool>, _> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_optional(&mut *c)
            .await
            .map(Option::flatten);
    match (ssl, mode) {
        (Ok(Some(true)), _) | (_, PgSslMode::Require) => Tls::Unverified,
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

/// A `sqlx` error as a failure class and an actionable message. Driver texts are included
/// only where they carry no connection string (and the registry scrubs them all the same).
fn classify(e: &sqlx::Error, s: &Settings, addr: SocketAddr) -> ProbeError {
    let target = format!("{}:{}", s.host, addr.port());
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "28P01" | "28000" => ProbeError::new(
                    Failure::Auth,
                    format!(
                        "authentication failed for user {}: check login and password",
                        s.user
                    ),
                ),
                "3D000" => ProbeError::new(
                    Failure::NotFound,
                    format!("database {} does not exist: check schema", s.database),
                ),
                "42501" => ProbeError::new(
                    Failure::Auth,
                    format!(
                        "user {} may not connect to database {}: {}",
                        s.user,
                        s.database,
                        db.message()
                    ),
                ),
                _ => ProbeError::new(
                    Failure::Other,
                    format!("server error {code}: {}", db.message()),
                ),
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
                format!("TLS error with {target}: {io} (check sslmode and sslrootcert)"),
            )
        }
        sqlx::Error::Io(io) => io_error(io, &target),
        sqlx::Error::Tls(t) => ProbeError::new(
            Failure::Tls,
            format!("TLS error with {target}: {t} (check sslmode and sslrootcert)"),
        ),
        sqlx::Error::Protocol(p) => ProbeError::new(
            Failure::Protocol,
            format!("{target} does not speak the PostgreSQL protocol as expected: {p}"),
        ),
        sqlx::Error::PoolTimedOut => {
            ProbeError::new(Failure::Timeout, format!("no answer from {target}"))
        }
        sqlx::Error::Configuration(c) => {
            ProbeError::new(Failure::Config, format!("invalid option: {c}"))
        }
        other => ProbeError::new(Failure::Other, format!("{target}: {other}")),
    }
}
