//! What the SQL database probes (`broked-probe-postgres`, `broked-probe-mysql`) share, apart
//! from their driver: the [`Target`] (host, port and login, checked alike), the course of a
//! probe ([`probe`]: each address the policy approved in turn, directly or through a [`Relay`]
//! when the driver verifies the certificate against the host name), the answer to `SELECT 1`,
//! and the failures that read the same for both.
//!
//! Not here: any driver type. Each probe implements [`Driver`] — its options, its query, its
//! relay socket — and maps its driver's errors, calling these for the parts that do not depend
//! on the driver.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;

use crate::sniff::{self, Speaks};
use crate::{
    Connection, Context, Failure, ProbeError, Probed, Relay, Tls, TlsFields, io_error,
    require_host, require_port, tls_error,
};

/// What a SQL probe knows of one connection, validated before any network traffic, and how
/// its driver connects and checks.
pub trait Driver: Sync {
    /// The driver's connect options.
    type Options;

    /// The protocol's name in messages: `PostgreSQL`, `MySQL`.
    const PROTOCOL: &'static str;

    /// The protocol's default port, which a protocol mismatch names.
    const DEFAULT_PORT: u16;

    /// What a server of this protocol is recognised as by [`sniff`](crate::sniff), if at all:
    /// that answer is no mismatch.
    const SPEAKS: Option<Speaks>;

    fn target(&self) -> &Target;

    /// What the connection's TLS mode asks for.
    fn tls_mode(&self) -> TlsMode;

    /// The name of the relay's socket for `addr` ([`TlsMode::Verified`]).
    fn relay_socket(addr: SocketAddr) -> String;

    /// The options for the approved address `addr`, through `relay` under
    /// [`TlsMode::Verified`].
    fn options(&self, conn: &Connection, addr: SocketAddr, relay: Option<&Relay>) -> Self::Options;

    /// Connects with `opts` and runs the check.
    fn query(
        &self,
        opts: Self::Options,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Probed, ProbeError>> + Send;
}

/// Probes `conn` with the driver its `settings` make, on each address the policy approved for
/// its host until one answers. A refused address lets the next one try; any other failure is
/// the server's answer.
pub async fn probe<D: Driver>(
    conn: &Connection,
    ctx: &Context,
    settings: fn(&Connection) -> Result<D, ProbeError>,
) -> Result<Probed, ProbeError> {
    run(conn, ctx, &settings(conn)?).await
}

/// [`probe`] with a driver already made: its [`Driver::query`] runs on the first approved
/// address that answers. Besides the probes, password rotation runs its statements this way,
/// so that they reach only the addresses the policy approved, with the same TLS handling.
pub async fn run<D: Driver>(
    conn: &Connection,
    ctx: &Context,
    driver: &D,
) -> Result<Probed, ProbeError> {
    let target = driver.target();
    let addrs = ctx.resolve(&target.host, target.port).await?;
    let mut last = None;
    for addr in addrs {
        match check(driver, conn, addr, ctx).await {
            Ok(detail) => return Ok(detail),
            Err(err) if err.kind == Failure::Refused => last = Some(err),
            Err(err) => return Err(err),
        }
    }
    Err(last.unwrap_or_else(|| ProbeError::new(Failure::Dns, "no address to connect to")))
}

/// What a session does instead of a probe's check (password rotation's statements), given the
/// probe's driver `D` (for its error mapping) and the connect options it made.
pub trait Session<D: Driver>: Sync {
    /// Connects with `opts` to the approved address `addr` and does the work.
    fn query(
        &self,
        driver: &D,
        opts: D::Options,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Probed, ProbeError>> + Send;
}

/// A probe's driver that connects exactly as the probe does — its target, TLS mode, options
/// and relay — and runs `session` instead of the check. With [`run`], password rotation's
/// statements reach only the addresses the policy approved, secured as the connection says.
pub struct Instead<D, S> {
    pub driver: D,
    pub session: S,
}

impl<D, S> Driver for Instead<D, S>
where
    D: Driver,
    D::Options: Send,
    S: Session<D>,
{
    type Options = D::Options;

    const PROTOCOL: &'static str = D::PROTOCOL;
    const DEFAULT_PORT: u16 = D::DEFAULT_PORT;
    const SPEAKS: Option<Speaks> = D::SPEAKS;

    fn target(&self) -> &Target {
        self.driver.target()
    }

    fn tls_mode(&self) -> TlsMode {
        self.driver.tls_mode()
    }

    fn relay_socket(addr: SocketAddr) -> String {
        D::relay_socket(addr)
    }

    fn options(&self, conn: &Connection, addr: SocketAddr, relay: Option<&Relay>) -> D::Options {
        self.driver.options(conn, addr, relay)
    }

    fn query(
        &self,
        opts: D::Options,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Probed, ProbeError>> + Send {
        self.session.query(&self.driver, opts, addr)
    }
}

/// Connects to one approved address and runs the check.
///
/// A driver that verifies the certificate against the host *name* connects to the host it
/// verifies: so under [`TlsMode::Verified`] it gets the name as host
/// ([`Target::driver_host`]) and a relay's Unix socket, which carries its bytes to the
/// approved address — no second DNS lookup. Under any other mode it connects to the approved
/// address itself.
async fn check<D: Driver>(
    driver: &D,
    conn: &Connection,
    addr: SocketAddr,
    ctx: &Context,
) -> Result<Probed, ProbeError> {
    let label = driver.target().label(addr);
    let mismatch = |found: Speaks| {
        (Some(found) != D::SPEAKS)
            .then(|| sniff::protocol_mismatch(&label, found, D::PROTOCOL, D::DEFAULT_PORT))
    };
    let work = async {
        if driver.tls_mode() != TlsMode::Verified {
            return driver.query(driver.options(conn, addr, None), addr).await;
        }
        let stream = ctx.connect_addr(addr, &driver.target().host).await?;
        let relay = Relay::new(stream, &D::relay_socket(addr))?;
        let opts = driver.options(conn, addr, Some(&relay));
        relay.run(driver.query(opts, addr)).await
    };
    sniff::watch(ctx, addr, work, mismatch).await
}

/// What a driver's TLS mode (PostgreSQL's `sslmode`, MySQL's `ssl_mode`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never TLS: `disable`, `disabled`.
    Off,
    /// TLS when the server offers it, else plain text: `allow`, `prefer`, `preferred`.
    Optional,
    /// TLS or no connection, the certificate not verified: `require`, `required`.
    Required,
    /// TLS with a certificate verified against the trusted roots, and the host name:
    /// `verify-ca`, `verify-full`, `verify_ca`, `verify_identity`. `verify-ca` and
    /// `verify_ca` check the name too: `sqlx` 0.8.6 means to skip the name check in that mode,
    /// but its verifier lets only rustls' old `NotValidForName` error pass, and rustls 0.23
    /// reports `NotValidForNameContext` — so a certificate for the name would fail against
    /// the bare IP address, and these modes go through the relay with the name too.
    Verified,
}

/// Whether a session under `mode` is encrypted, and whether the certificate was verified.
///
/// [`TlsMode::Verified`] connects only with a certificate the driver verified;
/// [`TlsMode::Off`] never starts TLS. For the modes in between the driver does not say
/// whether it fell back to plain text, so the server is asked (`ask`: whether this session
/// uses TLS, `None` when the server cannot say). A server that cannot say counts as plain
/// text under [`TlsMode::Optional`] — the weaker claim — and as unverified TLS under
/// [`TlsMode::Required`], which does not connect without TLS.
pub async fn tls_state<Fut>(mode: TlsMode, ask: impl FnOnce() -> Fut) -> Tls
where
    Fut: Future<Output = Option<bool>>,
{
    match mode {
        TlsMode::Verified => Tls::Verified,
        TlsMode::Off => Tls::Plaintext,
        TlsMode::Optional | TlsMode::Required => match (ask().await, mode) {
            (Some(true), _) | (_, TlsMode::Required) => Tls::Unverified,
            _ => Tls::Plaintext,
        },
    }
}

/// Where a SQL probe connects and as whom, checked before any network traffic.
#[derive(Debug)]
pub struct Target {
    /// The host as written: a name or an IP address (never a socket path or a URL).
    pub host: String,
    pub port: u16,
    pub user: String,
}

impl Target {
    /// The connection's host, port (the type's default when unset) and login, or a
    /// [`Failure::Config`] error: a socket path or a URL is not a host. Without a login the
    /// user is the OS user name of this process, libpq's default (and the MySQL clients'):
    /// what `psql -h HOST` and a driver given the resolved URI do (docs/connections.md).
    pub fn new(conn: &Connection) -> Result<Target, ProbeError> {
        let host = require_host(conn)?.to_owned();
        if host.starts_with('/') || host.contains("://") {
            return Err(ProbeError::new(
                Failure::Config,
                "host must be a host name or IP address (no socket path, no URL)",
            ));
        }
        let port = require_port(conn)?;
        let user = match conn.login.clone().filter(|l| !l.is_empty()) {
            Some(login) => login,
            None => os_user_name().ok_or_else(|| {
                ProbeError::new(
                    Failure::Config,
                    "login is empty and this process's OS user has no name to use instead \
                     (libpq's default): enter a login",
                )
            })?,
        };
        Ok(Target { host, port, user })
    }

    /// The host the driver is given for `addr`: the name, without IPv6 brackets, when it
    /// connects through a relay (`relayed`), else the address itself.
    pub fn driver_host(&self, addr: SocketAddr, relayed: bool) -> String {
        if relayed {
            self.host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        } else {
            addr.ip().to_string()
        }
    }

    /// `host:port` of `addr` as messages name it: the host as written, the port connected to.
    pub fn label(&self, addr: SocketAddr) -> String {
        format!("{}:{}", self.host, addr.port())
    }

    /// The server refused the login.
    pub fn auth_failed(&self) -> ProbeError {
        ProbeError::new(
            Failure::Auth,
            format!(
                "authentication failed for user {}: check login and password",
                self.user
            ),
        )
    }
}

/// The name of the process's effective user, from the password database: libpq's default
/// user. Never `PGUSER`, `USER` or `LOGNAME`: probes read nothing from the environment.
pub fn os_user_name() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .filter(|n| !n.is_empty())
}

/// The connection's password as the driver takes it: empty when there is none.
pub fn password(conn: &Connection) -> &str {
    conn.password.as_ref().map(|p| p.expose()).unwrap_or("")
}

/// The probe's answer to `SELECT 1, <version>`: `row` is the first column and the detail, or
/// the driver's error (mapped by `classify`). When the select succeeded the session's TLS
/// state under `mode` is asked ([`tls_state`]).
pub async fn selected<E, Fut>(
    row: Result<(i64, String), E>,
    mode: TlsMode,
    ask: impl FnOnce() -> Fut,
    classify: impl FnOnce(E) -> ProbeError,
) -> Result<Probed, ProbeError>
where
    Fut: Future<Output = Option<bool>>,
{
    match row {
        Ok((1, detail)) => Ok(Probed::new(detail, tls_state(mode, ask).await)),
        Ok(_) => Err(ProbeError::new(
            Failure::Protocol,
            "SELECT 1 did not return 1",
        )),
        Err(e) => Err(classify(e)),
    }
}

/// A driver's IO error with `target` (`host:port`), reached by the name `host`. rustls
/// reports a failed handshake (a certificate for another name, an unknown issuer) as an IO
/// error of kind `InvalidData`: that is a certificate or TLS failure naming the extra keys to
/// check (`fields`, [`tls_error`]), anything else [`io_error`].
pub fn io_failure(io: &std::io::Error, target: &str, host: &str, fields: TlsFields) -> ProbeError {
    if io.kind() == std::io::ErrorKind::InvalidData && io.to_string().contains("certificate") {
        tls_failure(target, host, io, fields)
    } else {
        io_error(io, target)
    }
}

/// A TLS error with `target`, reached by the name `host`, naming the extra keys to check
/// (`fields`): [`tls_error`].
pub fn tls_failure(target: &str, host: &str, err: impl Display, fields: TlsFields) -> ProbeError {
    tls_error(target, host, &err.to_string(), fields)
}

/// `target` answered, but not in `protocol` (`PostgreSQL`, `MySQL`) as the driver expected.
pub fn protocol_failure(target: &str, protocol: &str, err: impl Display) -> ProbeError {
    ProbeError::new(
        Failure::Protocol,
        format!(
            "{target} does not speak the {protocol} protocol as expected ({err}): check port and \
             the connection type"
        ),
    )
}

/// The driver refused an option.
pub fn config_failure(err: impl Display) -> ProbeError {
    ProbeError::new(
        Failure::Config,
        format!("invalid option: {err}: check extra"),
    )
}

/// Any other driver error with `target`.
pub fn other_failure(target: &str, err: impl Display) -> ProbeError {
    ProbeError::new(Failure::Other, format!("{target}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tls_state_by_mode_and_answer() {
        use TlsMode::*;
        let cases = [
            (Verified, None, Tls::Verified),
            (Off, Some(true), Tls::Plaintext),
            (Optional, Some(true), Tls::Unverified),
            (Optional, Some(false), Tls::Plaintext),
            (Optional, None, Tls::Plaintext),
            (Required, Some(true), Tls::Unverified),
            (Required, None, Tls::Unverified),
        ];
        for (mode, answer, want) in cases {
            let got = tls_state(mode, || async move { answer }).await;
            assert_eq!(got, want, "{mode:?} {answer:?}");
        }
    }

    #[tokio::test]
    async fn selected_asks_for_tls_only_after_a_good_select() {
        let asked = std::cell::Cell::new(0);
        let ask = || async {
            asked.set(asked.get() + 1);
            Some(true)
        };
        let other = |e: &str| ProbeError::new(Failure::Other, e);
        let ok = selected(Ok((1, "X 1".into())), TlsMode::Optional, ask, other).await;
        assert_eq!(
            ok.map(|p| (p.detail, p.tls)).unwrap(),
            ("X 1".into(), Some(Tls::Unverified))
        );
        let two = selected(Ok((2, "X 1".into())), TlsMode::Optional, ask, other).await;
        assert_eq!(two.unwrap_err().kind, Failure::Protocol);
        let err = selected(Err("down"), TlsMode::Optional, ask, other).await;
        assert_eq!(err.unwrap_err().message, "down");
        assert_eq!(asked.get(), 1);
    }

    #[test]
    fn the_driver_gets_the_name_only_through_the_relay() {
        let target = |host: &str| Target {
            host: host.into(),
            port: 5432,
            user: "u".into(),
        };
        let v4: SocketAddr = "127.0.0.1:6432".parse().unwrap();
        let v6: SocketAddr = "[::1]:6432".parse().unwrap();
        assert_eq!(target("localhost").driver_host(v4, true), "localhost");
        assert_eq!(target("localhost").driver_host(v4, false), "127.0.0.1");
        assert_eq!(target("[::1]").driver_host(v6, true), "::1");
        assert_eq!(target("localhost").label(v4), "localhost:6432");
    }
}
