//! The registry of probes and the per-test context.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::{ConnType, Connection, Failure, Policy, Probe, ProbeError, human_duration, scrub};

/// What a probe may use during one test: the policy and the deadline.
pub struct Context {
    policy: Arc<Policy>,
    deadline: Instant,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl Context {
    /// A context with the policy's timeout starting now. The registry makes one per test;
    /// this is public for probes' own tests.
    pub fn new(policy: Arc<Policy>) -> Context {
        let deadline = Instant::now() + policy.timeout();
        Context { policy, deadline }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The time left before the overall timeout (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Resolves `host` (a name or an IP address) and checks the name and every address it
    /// resolves to against the policy: if any one is denied the whole target is
    /// [`Failure::Blocked`], so a name cannot smuggle a denied address past the check.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ProbeError> {
        let bare = host.trim().trim_start_matches('[').trim_end_matches(']');
        if bare.is_empty() {
            return Err(ProbeError::new(Failure::Config, "host is required"));
        }
        self.policy.check_host(bare)?;
        let lookup = lookup_host(bare, port);
        let addrs: Vec<SocketAddr> = match tokio::time::timeout(self.remaining(), lookup).await {
            Err(_) => {
                return Err(ProbeError::new(
                    Failure::Timeout,
                    format!("DNS lookup of {bare} did not finish in time: check host"),
                ));
            }
            Ok(None) => return Err(dns_error(bare)),
            Ok(Some(addrs)) => addrs,
        };
        for a in &addrs {
            self.policy.check_ip(a.ip())?;
        }
        Ok(addrs)
    }

    /// Resolves `host` as [`Context::resolve`] does and opens a TCP connection to the first
    /// address that accepts, within the remaining time. Returns the stream and its address.
    pub async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), ProbeError> {
        let addrs = self.resolve(host, port).await?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.remaining(), TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok((stream, addr)),
                Ok(Err(e)) => last = Some(crate::io_error(&e, &target(host, port))),
                Err(_) => return Err(timeout_error(self.policy.timeout())),
            }
        }
        Err(last.unwrap_or_else(|| dns_error(host)))
    }

    /// Opens a TCP connection to one address that [`Context::resolve`] returned, within the
    /// remaining time; `host` names the target in messages.
    pub async fn connect_addr(
        &self,
        addr: SocketAddr,
        host: &str,
    ) -> Result<TcpStream, ProbeError> {
        match tokio::time::timeout(self.remaining(), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(crate::io_error(&e, &target(host, addr.port()))),
            Err(_) => Err(timeout_error(self.policy.timeout())),
        }
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn target(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The failure of a name that does not resolve, naming the field to check.
pub fn dns_error(host: &str) -> ProbeError {
    ProbeError::new(
        Failure::Dns,
        format!("could not resolve host {host}: check the host name in host"),
    )
}

/// Whether `name` is under `invalid`, the special-use domain that never resolves (RFC 6761
/// 6.4: resolver APIs should answer it negatively at once). No query leaves the machine for it.
pub fn never_resolves(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "invalid" || name.ends_with(".invalid")
}

/// The system resolver's addresses for `host`, or `None` when it has none. Names under
/// `.invalid` ([`never_resolves`]) are answered here, without a query.
pub async fn lookup_host(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    if never_resolves(host) {
        return None;
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await.ok()?.collect();
    (!addrs.is_empty()).then_some(addrs)
}

fn timeout_error(timeout: Duration) -> ProbeError {
    ProbeError::new(
        Failure::Timeout,
        format!(
            "no answer within {}: check host and port (a firewall may drop the packets)",
            human_duration(timeout)
        ),
    )
}

/// A probe future whose panic becomes a [`Failure::Other`] error instead of unwinding into
/// the caller (a server request, a CLI run over many connections).
struct CatchPanic<'a>(crate::ProbeFuture<'a>);

impl Future for CatchPanic<'_> {
    type Output = Result<Probed, ProbeError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                tracing::error!("a connection probe panicked");
                Poll::Ready(Err(ProbeError::new(
                    Failure::Other,
                    "the connection test failed unexpectedly (the probe panicked); see the server log",
                )))
            }
        }
    }
}

/// Whether the session a test opened was encrypted, and whether the server's identity was
/// verified: what `"tls"` says in a test response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tls {
    /// Encrypted, and the server proved its identity: a certificate checked against trusted
    /// roots (`verify-full`, `verify-ca`, `verify_identity`, `verify_ca`, https with
    /// verification on), or an SSH host key that matched `extra.host_key`.
    Verified,
    /// Encrypted, but anyone in the middle could have answered: a certificate that was not
    /// checked (`require`, `prefer` when the server offered TLS, `verify_tls: false`).
    Unverified,
    /// Not encrypted: the credentials crossed the network in clear (`sslmode=disable`,
    /// `prefer` against a server without TLS, `http://`).
    Plaintext,
}

impl Tls {
    /// The wire name: `verified`, `unverified`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tls::Verified => "verified",
            Tls::Unverified => "unverified",
            Tls::Plaintext => "none",
        }
    }
}

impl fmt::Display for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a probe learned from a successful test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probed {
    /// E.g. `PostgreSQL 15.19`; may be empty. The registry scrubs it.
    pub detail: String,
    /// The session's transport security; `None` where the type has no network session to
    /// speak of (a local SQLite file) or the probe does not speak the protocol (a bare TCP
    /// connect for `generic`).
    pub tls: Option<Tls>,
}

impl Probed {
    pub fn new(detail: impl Into<String>, tls: Tls) -> Probed {
        Probed {
            detail: detail.into(),
            tls: Some(tls),
        }
    }

    /// A result without a TLS state (see [`Probed::tls`]).
    pub fn without_tls(detail: impl Into<String>) -> Probed {
        Probed {
            detail: detail.into(),
            tls: None,
        }
    }
}

/// The result of one test, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub success: bool,
    /// `Connected successfully (DRIVER)`, or the failure's scrubbed message.
    pub message: String,
    /// The driver that did the work; empty when no probe ran (disabled, not built in).
    pub driver: &'static str,
    pub latency: Duration,
    pub failure: Option<Failure>,
    /// What the probe learned on success, scrubbed (e.g. `PostgreSQL 15.19`); may be empty.
    pub detail: String,
    /// On success, whether the session was encrypted and the server verified ([`Tls`]);
    /// `None` on failure and for types without a network session (sqlite, generic).
    pub tls: Option<Tls>,
}

impl Outcome {
    fn failed(
        err: ProbeError,
        driver: &'static str,
        latency: Duration,
        conn: &Connection,
    ) -> Outcome {
        Outcome {
            success: false,
            message: scrub(&err.message, conn),
            driver,
            latency,
            failure: Some(err.kind),
            detail: String::new(),
            tls: None,
        }
    }
}

/// The probes an application built in, by connection type, and the policy they run under.
pub struct Registry {
    policy: Arc<Policy>,
    probes: HashMap<ConnType, Arc<dyn Probe>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self
            .probes
            .iter()
            .map(|(t, p)| (t.as_str(), p.driver()))
            .collect();
        types.sort();
        f.debug_struct("Registry")
            .field("policy", &self.policy)
            .field("probes", &types)
            .finish()
    }
}

impl Registry {
    pub fn new(policy: Policy) -> Registry {
        Registry {
            policy: Arc::new(policy),
            probes: HashMap::new(),
        }
    }

    /// Adds a probe for its type, replacing any earlier one for the same type.
    pub fn register(&mut self, probe: Arc<dyn Probe>) {
        self.probes.insert(probe.conn_type(), probe);
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A context for work outside [`Registry::test`] that must follow the same policy and
    /// overall timeout (password rotation's statements), starting now.
    pub fn context(&self) -> Context {
        Context::new(self.policy.clone())
    }

    /// The driver registered for `conn_type`, if any.
    pub fn driver(&self, conn_type: ConnType) -> Option<&'static str> {
        self.probes.get(&conn_type).map(|p| p.driver())
    }

    /// Tests `conn`: never an error, always an [`Outcome`] whose message is scrubbed.
    pub async fn test(&self, conn: &Connection) -> Outcome {
        let start = Instant::now();
        if self.policy.is_disabled() {
            return Outcome::failed(
                ProbeError::new(Failure::Disabled, "connection testing is disabled"),
                "",
                start.elapsed(),
                conn,
            );
        }
        let Some(probe) = self.probes.get(&conn.conn_type) else {
            return Outcome::failed(
                ProbeError::new(
                    Failure::Config,
                    format!(
                        "testing {} connections is not built into this program (cargo feature probe-{})",
                        conn.conn_type.as_str(),
                        conn.conn_type.as_str()
                    ),
                ),
                "",
                start.elapsed(),
                conn,
            );
        };
        let driver = probe.driver();
        let ctx = Context::new(self.policy.clone());
        let run = CatchPanic(probe.probe(conn, &ctx));
        let result = tokio::time::timeout(self.policy.timeout(), run).await;
        let latency = start.elapsed();
        let outcome = match result {
            Ok(Ok(probed)) => Outcome {
                success: true,
                message: format!("Connected successfully ({driver})"),
                driver,
                latency,
                failure: None,
                detail: scrub(&probed.detail, conn),
                tls: probed.tls,
            },
            Ok(Err(err)) => Outcome::failed(err, driver, latency, conn),
            Err(_) => Outcome::failed(timeout_error(self.policy.timeout()), driver, latency, conn),
        };
        tracing::info!(
            conn_id = conn.conn_id.as_str(),
            conn_type = conn.conn_type.as_str(),
            driver,
            success = outcome.success,
            failure = outcome.failure.map(Failure::as_str),
            tls = outcome.tls.map(Tls::as_str),
            latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            "connection test"
        );
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProbeFuture;
    use broked_core::{ConnId, Secret};

    struct Fake(Result<&'static str, ProbeError>, Duration);

    struct Panics;

    impl Probe for Panics {
        fn conn_type(&self) -> ConnType {
            ConnType::Http
        }
        fn driver(&self) -> &'static str {
            "panics"
        }
        fn probe<'a>(&'a self, conn: &'a Connection, _ctx: &'a Context) -> ProbeFuture<'a> {
            Box::pin(async move {
                tokio::task::yield_now().await;
                panic!(
                    "probe bug with {}",
                    conn.password.as_ref().unwrap().expose()
                )
            })
        }
    }

    impl Probe for Fake {
        fn conn_type(&self) -> ConnType {
            ConnType::Generic
        }
        fn driver(&self) -> &'static str {
            "fake"
        }
        fn probe<'a>(&'a self, _conn: &'a Connection, _ctx: &'a Context) -> ProbeFuture<'a> {
            Box::pin(async move {
                tokio::time::sleep(self.1).await;
                self.0.clone().map(|d| Probed::new(d, Tls::Unverified))
            })
        }
    }

    fn conn(t: ConnType) -> Connection {
        Connection {
            conn_id: ConnId::new("c1").unwrap(),
            conn_type: t,
            host: Some("127.0.0.1".into()),
            port: Some(1),
            schema: None,
            login: Some("etl".into()),
            password: Some(Secret::from("s3cr3t-pass")),
            extra: Some(Secret::from(r#"{"token":"extra-value"}"#)),
            description: None,
        }
    }

    fn registry(timeout_ms: u64, disabled: bool, fake: Fake) -> Registry {
        let mut r =
            Registry::new(Policy::new(Duration::from_millis(timeout_ms), disabled, &[]).unwrap());
        r.register(Arc::new(fake));
        r
    }

    #[tokio::test]
    async fn success_message_is_exact() {
        let r = registry(1000, false, Fake(Ok("v1 s3cr3t-pass"), Duration::ZERO));
        let o = r.test(&conn(ConnType::Generic)).await;
        assert!(o.success);
        assert_eq!(o.message, "Connected successfully (fake)");
        assert_eq!(o.driver, "fake");
        assert_eq!(o.failure, None);
        assert_eq!(o.detail, "v1 ********");
        assert_eq!(o.tls, Some(Tls::Unverified));
    }

    #[tokio::test]
    async fn failure_is_scrubbed() {
        let err = ProbeError::new(
            Failure::Auth,
            "bad password s3cr3t-pass, extra-value, x://u:p@h",
        );
        let r = registry(1000, false, Fake(Err(err), Duration::ZERO));
        let o = r.test(&conn(ConnType::Generic)).await;
        assert!(!o.success);
        assert_eq!(o.failure, Some(Failure::Auth));
        assert_eq!(o.message, "bad password ********, ********, x://********@h");
        assert_eq!(o.tls, None, "a failed test reports no TLS state");
    }

    #[test]
    fn tls_wire_names() {
        let names: Vec<_> = [Tls::Verified, Tls::Unverified, Tls::Plaintext]
            .into_iter()
            .map(Tls::as_str)
            .collect();
        assert_eq!(names, ["verified", "unverified", "none"]);
    }

    #[tokio::test]
    async fn timeout_is_enforced() {
        let r = registry(200, false, Fake(Ok(""), Duration::from_secs(5)));
        let o = r.test(&conn(ConnType::Generic)).await;
        assert_eq!(o.failure, Some(Failure::Timeout));
        // Issue 18: the message names the fields to check.
        assert_eq!(
            o.message,
            "no answer within 200 ms: check host and port (a firewall may drop the packets)"
        );
        assert!(
            o.latency >= Duration::from_millis(200) && o.latency < Duration::from_millis(1000),
            "{:?}",
            o.latency
        );
        let r = Registry::new(Policy::default());
        assert_eq!(
            timeout_error(r.policy().timeout()).message,
            "no answer within 10 s: check host and port (a firewall may drop the packets)"
        );
    }

    #[tokio::test]
    async fn a_panicking_probe_is_a_failure() {
        let mut r = registry(1000, false, Fake(Ok(""), Duration::ZERO));
        r.register(Arc::new(Panics));
        let o = r.test(&conn(ConnType::Http)).await;
        assert_eq!(
            (o.success, o.failure, o.driver),
            (false, Some(Failure::Other), "panics")
        );
        assert!(!o.message.contains("s3cr3t-pass"), "{}", o.message);
        // The registry still works afterwards.
        assert!(r.test(&conn(ConnType::Generic)).await.success);
    }

    #[tokio::test]
    async fn disabled_and_missing() {
        let r = registry(1000, true, Fake(Ok(""), Duration::ZERO));
        let o = r.test(&conn(ConnType::Generic)).await;
        assert_eq!((o.success, o.failure), (false, Some(Failure::Disabled)));
        assert_eq!(o.message, "connection testing is disabled");

        let r = registry(1000, false, Fake(Ok(""), Duration::ZERO));
        let o = r.test(&conn(ConnType::Postgres)).await;
        assert_eq!(o.failure, Some(Failure::Config));
        assert!(o.message.contains("not built into"), "{}", o.message);
        assert_eq!(r.driver(ConnType::Generic), Some("fake"));
    }

    #[tokio::test]
    async fn resolve_applies_policy_to_every_spelling() {
        let deny = vec!["127.0.0.2/32".to_string()];
        let ctx = Context::new(Arc::new(
            Policy::new(Duration::from_secs(2), false, &deny).unwrap(),
        ));
        for host in [
            "127.0.0.2",
            "2130706434",
            "::ffff:127.0.0.2",
            "[::ffff:127.0.0.2]",
        ] {
            assert_eq!(
                ctx.resolve(host, 5432).await.unwrap_err().kind,
                Failure::Blocked,
                "{host}"
            );
        }
        let ok = ctx.resolve("127.0.0.1", 5432).await.unwrap();
        assert_eq!(ok, vec!["127.0.0.1:5432".parse().unwrap()]);
        let e = ctx.resolve("no-such-host.invalid", 1).await.unwrap_err();
        assert_eq!(e.kind, Failure::Dns, "{e:?}");
        assert_eq!(
            e.message,
            "could not resolve host no-such-host.invalid: check the host name in host"
        );
        for name in ["invalid", "a.INVALID.", "x.y.invalid"] {
            assert!(never_resolves(name), "{name}");
        }
        for name in ["invalid.example", "localhost", "notinvalid"] {
            assert!(!never_resolves(name), "{name}");
        }
    }

    #[tokio::test]
    async fn connect_tcp_refused_fast() {
        // Bind then drop, so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ctx = Context::new(Arc::new(Policy::default()));
        let start = Instant::now();
        let e = ctx.connect_tcp("127.0.0.1", port).await.unwrap_err();
        assert_eq!(e.kind, Failure::Refused, "{e:?}");
        assert!(start.elapsed() < Duration::from_millis(100));
    }
}
