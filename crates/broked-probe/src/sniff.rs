//! What a port speaks, when a probe's driver got an answer it could not read or no answer at
//! all: the port answers HTTP but the type is postgres, an `https://` endpoint speaks plain
//! HTTP, an SSH server sits where a database was expected. The driver's own error says only
//! "unexpected response" or times out; one more look at the same address tells the user what
//! to fix.
//!
//! The look ([`sniff`]) is a second TCP connection to an address the policy already approved,
//! without credentials: it waits briefly for a banner (SSH, MySQL and mail servers speak
//! first), and if none comes sends `HEAD / HTTP/1.0` and reads the first bytes of the answer.
//! [`watch`] runs a driver's work and looks only when the work fails in a way that suggests
//! another protocol, or when it has had no answer for a while (an HTTP server waits forever
//! for the end of a request that a database client never sends).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Context, Failure, ProbeError};

/// A protocol recognised at a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// Plain HTTP: the answer to `HEAD /` starts with `HTTP/`.
    Http,
    /// TLS: the answer is a TLS record (an alert, typically, for a request in clear).
    Tls,
    /// SSH: a banner `SSH-…`.
    Ssh,
    /// MySQL or MariaDB: a server greeting (protocol 10) or an error packet before it.
    Mysql,
}

impl Speaks {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Speaks::Http => "HTTP",
            Speaks::Tls => "TLS",
            Speaks::Ssh => "SSH",
            Speaks::Mysql => "the MySQL protocol",
        }
    }

    /// What the first bytes a server sent say it speaks; `None` when they say nothing known.
    pub fn identify(bytes: &[u8]) -> Option<Speaks> {
        if bytes.starts_with(b"SSH-") {
            return Some(Speaks::Ssh);
        }
        if bytes.starts_with(b"HTTP/") {
            return Some(Speaks::Http);
        }
        // A TLS record: content type alert (21) or handshake (22), version 3.x.
        if bytes.len() >= 3 && matches!(bytes[0], 21 | 22) && bytes[1] == 3 && bytes[2] <= 4 {
            return Some(Speaks::Tls);
        }
        // A MySQL packet: 3-byte length, sequence 0, then protocol version 10 (a greeting) or
        // 0xff (an error, e.g. "Host … is not allowed to connect").
        if bytes.len() >= 5 && bytes[3] == 0 && matches!(bytes[4], 10 | 0xff) {
            let len =
                usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16;
            if (5..4096).contains(&len) {
                return Some(Speaks::Mysql);
            }
        }
        None
    }
}

/// How long [`sniff`] waits for a banner before it sends its own request.
const BANNER_WAIT: Duration = Duration::from_millis(300);

/// What the server at `addr` (an address [`Context::resolve`] approved) speaks, looked at
/// within `within` (and the test's remaining time): a banner if it sends one, else its answer
/// to `HEAD / HTTP/1.0`. `None` when it says nothing recognisable in time.
pub async fn sniff(ctx: &Context, addr: SocketAddr, within: Duration) -> Option<Speaks> {
    let within = within.min(ctx.remaining());
    let look = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut buf = [0u8; 16];
        let banner = tokio::time::timeout(BANNER_WAIT.min(within / 2), s.read(&mut buf)).await;
        match banner {
            Ok(Ok(n)) if n > 0 => return Speaks::identify(&buf[..n]),
            Ok(_) => return None,
            Err(_) => {}
        }
        s.write_all(b"HEAD / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut got = Vec::new();
        while got.len() < 5 {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Speaks::identify(&got)
    };
    tokio::time::timeout(within, look).await.ok().flatten()
}

/// Runs `work`, a driver's attempt on `addr`, and looks at what `addr` speaks ([`sniff`]) when
/// the attempt fails as `protocol`, `tls` or `timeout` — or has not finished after a third of
/// the time left (at most 1 s), since some servers never answer another protocol's opening.
/// When the look finds a protocol that `mismatch` turns into an error, that error is the
/// answer (an unfinished attempt is dropped); otherwise the attempt's own result is.
pub async fn watch<T>(
    ctx: &Context,
    addr: SocketAddr,
    work: impl Future<Output = Result<T, ProbeError>>,
    mismatch: impl Fn(Speaks) -> Option<ProbeError>,
) -> Result<T, ProbeError> {
    let look = || async {
        let within = ctx.remaining().min(Duration::from_secs(2));
        sniff(ctx, addr, within).await.and_then(&mismatch)
    };
    watch_with(ctx, work, look).await
}

/// [`watch`] with the look given: `look` finds the mismatch, if any (it may resolve the
/// address first).
pub async fn watch_with<T, F>(
    ctx: &Context,
    work: impl Future<Output = Result<T, ProbeError>>,
    look: impl Fn() -> F,
) -> Result<T, ProbeError>
where
    F: Future<Output = Option<ProbeError>>,
{
    let stall = (ctx.remaining() / 3).min(Duration::from_secs(1));
    tokio::pin!(work);
    let after = |result: Result<T, ProbeError>| async {
        match result {
            Err(e) if matches!(e.kind, Failure::Protocol | Failure::Tls | Failure::Timeout) => {
                Err(look().await.unwrap_or(e))
            }
            other => other,
        }
    };
    let found = tokio::select! {
        result = &mut work => return after(result).await,
        () = tokio::time::sleep(stall) => {
            let early = look();
            tokio::pin!(early);
            tokio::select! {
                result = &mut work => return after(result).await,
                found = &mut early => found,
            }
        }
    };
    match found {
        Some(err) => Err(err),
        None => work.await,
    }
}

/// `target` speaks `found` where the type expects `expected` (`PostgreSQL`, `SSH`, …): a
/// [`Failure::Protocol`] naming port (and the type's default port) and the connection type.
pub fn protocol_mismatch(
    target: &str,
    found: Speaks,
    expected: &str,
    default_port: u16,
) -> ProbeError {
    ProbeError::new(
        Failure::Protocol,
        format!(
            "{target} speaks {}, not {expected}: check port ({expected} listens on {default_port} \
             by default) and the connection type",
            found.name()
        ),
    )
}

/// What `found` at `hostport` means for a client of HTTP over TLS (`https`) or in clear:
/// `None` when it is what the client speaks (or unknown), a [`Failure::Tls`] when the scheme
/// is the wrong one — "speaks plain HTTP, not TLS" — with `fix(scheme)` saying where to write
/// the other scheme, or a [`Failure::Protocol`] when it is not HTTP at all.
pub fn http_mismatch(
    hostport: &str,
    https: bool,
    found: Speaks,
    fix: impl Fn(&str) -> String,
) -> Option<ProbeError> {
    match (found, https) {
        (Speaks::Http, false) | (Speaks::Tls, true) => None,
        (Speaks::Http, true) => Some(ProbeError::new(
            Failure::Tls,
            format!(
                "the server at {hostport} speaks plain HTTP, not TLS (HTTPS): {}",
                fix("http")
            ),
        )),
        (Speaks::Tls, false) => Some(ProbeError::new(
            Failure::Tls,
            format!(
                "the server at {hostport} speaks TLS (HTTPS), not plain HTTP: {}",
                fix("https")
            ),
        )),
        (other, https) => Some(protocol_mismatch(
            hostport,
            other,
            if https { "HTTPS" } else { "HTTP" },
            if https { 443 } else { 80 },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes() {
        let cases: [(&[u8], Option<Speaks>); 8] = [
            (b"SSH-2.0-OpenSSH_9.2p1\r\n", Some(Speaks::Ssh)),
            (b"HTTP/1.1 400 Bad Request\r\n", Some(Speaks::Http)),
            (&[21, 3, 3, 0, 2, 2, 50], Some(Speaks::Tls)),
            (&[22, 3, 1, 0, 90], Some(Speaks::Tls)),
            (&[0x5b, 0, 0, 0, 10, b'1', b'0'], Some(Speaks::Mysql)),
            (&[0x45, 0, 0, 0, 0xff, 0x6a, 0x04], Some(Speaks::Mysql)),
            (b"220 mail.example ESMTP\r\n", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(Speaks::identify(bytes), want, "{bytes:?}");
        }
    }

    #[test]
    fn mismatch_names_port_and_type() {
        let e = protocol_mismatch("127.0.0.1:8080", Speaks::Http, "PostgreSQL", 5432);
        assert_eq!(e.kind, Failure::Protocol);
        assert_eq!(
            e.message,
            "127.0.0.1:8080 speaks HTTP, not PostgreSQL: check port (PostgreSQL listens on \
             5432 by default) and the connection type"
        );
    }

    #[test]
    fn http_scheme_mismatches() {
        let fix = |scheme: &str| format!("write host as {scheme}://h");
        assert_eq!(http_mismatch("h:1", true, Speaks::Tls, fix), None);
        assert_eq!(http_mismatch("h:1", false, Speaks::Http, fix), None);
        let e = http_mismatch("h:1", true, Speaks::Http, fix).unwrap();
        assert_eq!(e.kind, Failure::Tls);
        assert_eq!(
            e.message,
            "the server at h:1 speaks plain HTTP, not TLS (HTTPS): write host as http://h"
        );
        let e = http_mismatch("h:1", false, Speaks::Tls, fix).unwrap();
        assert!(
            e.message
                .ends_with("not plain HTTP: write host as https://h"),
            "{e:?}"
        );
        let e = http_mismatch("h:1", false, Speaks::Ssh, fix).unwrap();
        assert_eq!(e.kind, Failure::Protocol);
        assert!(e.message.starts_with("h:1 speaks SSH, not HTTP"), "{e:?}");
    }
}
