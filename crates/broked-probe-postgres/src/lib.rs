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

mod rotate;

use std::net::SocketAddr;

use broked_probe::sniff::Speaks;
use broked_probe::sql::{self, Target, TlsMode};
use broked_probe::{
    ConnType, Connection, Context, Failure, Probe, ProbeError, ProbeFuture, Probed, Relay,
    TlsFields, extra_object,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection as _};

pub use rotate::set_password;

/// The PostgreSQL probe (`sqlx-postgres`).
#[derive(Debug, Default, Clone, Copy)]
pub struct PostgresProbe;

impl Probe for PostgresProbe {
    fn conn_type(&self) -> ConnType {
        ConnType::Postgres
    }

    fn driver(&self) -> &'static str {
        "sqlx-postgres"
    }

    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a> {
        Box::pin(sql::probe(conn, ctx, settings))
    }
}

/// What the connection's fields and extra say, validated before any network traffic.
struct Settings {
    target: Target,
    database: String,
    ssl_mode: PgSslMode,
    extra: serde_json::Map<String, serde_json::Value>,
}

/// Environment variables that would hand the server's own client certificate to any target,
/// and that `sqlx` offers no way to unset.
const REFUSED_ENV: &[&str] = &["PGSSLCERT", "PGSSLKEY"];

fn settings(conn: &Connection) -> Result<Settings, ProbeError> {
    let target = Target::new(conn)?;
    let database = conn
        .schema
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| target.user.clone());
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
        target,
        database,
        ssl_mode,
        extra,
    })
}

impl sql::Driver for Settings {
    type Options = PgConnectOptions;

    const PROTOCOL: &'static str = "PostgreSQL";
    const DEFAULT_PORT: u16 = 5432;
    /// A PostgreSQL server says nothing first and nothing recognisable to `HEAD /`.
    const SPEAKS: Option<Speaks> = None;

    fn target(&self) -> &Target {
        &self.target
    }

    fn tls_mode(&self) -> TlsMode {
        match self.ssl_mode {
            PgSslMode::Disable => TlsMode::Off,
            PgSslMode::Allow | PgSslMode::Prefer => TlsMode::Optional,
            PgSslMode::Require => TlsMode::Required,
            PgSslMode::VerifyCa | PgSslMode::VerifyFull => TlsMode::Verified,
        }
    }

    fn relay_socket(addr: SocketAddr) -> String {
        format!(".s.PGSQL.{}", addr.port())
    }

    /// Every field that `sqlx` may have taken from the environment is set here explicitly.
    /// The relay is the socket's directory.
    fn options(
        &self,
        conn: &Connection,
        addr: SocketAddr,
        relay: Option<&Relay>,
    ) -> PgConnectOptions {
        let host = self.target.driver_host(addr, relay.is_some());
        let str_extra = |k: &str| self.extra.get(k).and_then(|v| v.as_str());
        let mut o = PgConnectOptions::new_without_pgpass()
            .host(&host)
            .port(addr.port())
            .username(&self.target.user)
            .password(sql::password(conn))
            .database(&self.database)
            .ssl_mode(self.ssl_mode)
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

    async fn query(&self, opts: PgConnectOptions, addr: SocketAddr) -> Result<Probed, ProbeError> {
        let mut c = PgConnection::connect_with(&opts)
            .await
            .map_err(|e| classify(&e, self, addr))?;
        let row = sqlx::query_as("SELECT 1, current_setting('server_version')")
            .fetch_one(&mut c)
            .await
            .map(|(one, version): (i32, String)| (one.into(), format!("PostgreSQL {version}")));
        let classify = |e: sqlx::Error| classify(&e, self, addr);
        let answer = sql::selected(row, self.tls_mode(), || uses_tls(&mut c), classify).await;
        let _ = c.close().await;
        answer
    }
}

/// Whether this session uses TLS ([`sql::tls_state`]), as `pg_stat_ssl` says (PostgreSQL 9.5
/// and later); `None` when the server cannot say (no such view).
async fn uses_tls(c: &mut PgConnection) -> Option<bool> {
    let ssl: Result<Option<Option<bool>>, _> =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_optional(c)
            .await;
    ssl.ok().flatten().flatten()
}

/// The fields a TLS or certificate failure names.
const TLS_FIELDS: TlsFields = TlsFields {
    ca: Some("extra.sslrootcert"),
    mode: "extra.sslmode",
};

/// A `sqlx` error as a failure class and an actionable message. Driver texts are included
/// only where they carry no connection string (and the registry scrubs them all the same).
fn classify(e: &sqlx::Error, s: &Settings, addr: SocketAddr) -> ProbeError {
    let target = s.target.label(addr);
    let (user, database) = (&s.target.user, &s.database);
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let text = db.message();
            match code.as_str() {
                // A pg_hba.conf rule: no line for a session without TLS, or none at all.
                "28000" if text.contains("pg_hba.conf") && text.contains("no encryption") => {
                    ProbeError::new(
                        Failure::Tls,
                        format!(
                            "{target} lets user {user} in only over TLS (pg_hba.conf has no rule \
                             for this host without encryption): set extra.sslmode to require or \
                             verify-full"
                        ),
                    )
                }
                "28000" if text.contains("pg_hba.conf") => ProbeError::new(
                    Failure::Authorization,
                    format!(
                        "{target} does not let user {user} connect to database {database} from \
                         this host (pg_hba.conf): check login and schema, or ask the server's \
                         administrator for a rule"
                    ),
                ),
                "28P01" | "28000" => s.target.auth_failed(),
                "3D000" => ProbeError::new(
                    Failure::NotFound,
                    format!("database {database} does not exist: check schema"),
                ),
                "42501" => ProbeError::new(
                    Failure::Authorization,
                    format!(
                        "user {user} may not connect to database {database} ({text}): check \
                         login and schema, or GRANT CONNECT ON DATABASE {database} TO {user}"
                    ),
                ),
                _ => ProbeError::new(Failure::Other, format!("server error {code}: {text}")),
            }
        }
        sqlx::Error::Io(io) => sql::io_failure(io, &target, &s.target.host, TLS_FIELDS),
        sqlx::Error::Tls(t) => sql::tls_failure(&target, &s.target.host, t, TLS_FIELDS),
        sqlx::Error::Protocol(p) => sql::protocol_failure(&target, "PostgreSQL", p),
        sqlx::Error::PoolTimedOut => ProbeError::new(
            Failure::Timeout,
            format!("no answer from {target}: check host and port"),
        ),
        sqlx::Error::Configuration(c) => sql::config_failure(c),
        other => sql::other_failure(&target, other),
    }
}
