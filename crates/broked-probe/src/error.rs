//! Failure classes and the probe error.

use std::fmt;
use std::io;

/// Why a test failed, in classes a user can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The host name does not resolve.
    Dns,
    /// Nothing listens on the port.
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// The server refused the credentials (authentication: login, password, key).
    Auth,
    /// The server knows who is asking but refuses access (authorization: permission denied
    /// on the database, bucket, path or file).
    Authorization,
    /// The TLS handshake failed: no common protocol, TLS asked of a server without it, or
    /// TLS on one side only (an `https://` endpoint that speaks plain HTTP, and the reverse).
    /// An SSH host key that is not the pinned one (or not pinned) is this class too.
    Tls,
    /// The server's TLS certificate cannot be trusted: an unknown issuer, expired or not yet
    /// valid, or not valid for the host name.
    Certificate,
    /// The database, bucket, path or file does not exist.
    NotFound,
    /// The server answered, but not as the type's protocol expects.
    Protocol,
    /// The probe policy denies the target.
    Blocked,
    /// Connection testing is disabled.
    Disabled,
    /// The connection's fields cannot be used as they are (or the probe is not built in).
    Config,
    /// Anything else.
    Other,
}

impl Failure {
    /// A stable lower-case name, for logs and wire formats: `dns`, `refused`, `timeout`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Dns => "dns",
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::Auth => "auth",
            Failure::Authorization => "authorization",
            Failure::Tls => "tls",
            Failure::Certificate => "certificate",
            Failure::NotFound => "not_found",
            Failure::Protocol => "protocol",
            Failure::Blocked => "blocked",
            Failure::Disabled => "disabled",
            Failure::Config => "config",
            Failure::Other => "other",
        }
    }
}

impl Failure {
    /// Every class, in the order of the table in docs/probes.md.
    pub const ALL: [Failure; 13] = [
        Failure::Dns,
        Failure::Refused,
        Failure::Timeout,
        Failure::Tls,
        Failure::Certificate,
        Failure::Auth,
        Failure::Authorization,
        Failure::NotFound,
        Failure::Protocol,
        Failure::Blocked,
        Failure::Disabled,
        Failure::Config,
        Failure::Other,
    ];
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed probe: its class and a short, actionable message without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError {
    pub kind: Failure,
    pub message: String,
}

impl ProbeError {
    pub fn new(kind: Failure, message: impl Into<String>) -> ProbeError {
        ProbeError {
            kind,
            message: message.into(),
        }
    }

    /// The error every policy refusal carries.
    pub fn blocked() -> ProbeError {
        ProbeError::new(Failure::Blocked, "blocked by probe policy")
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProbeError {}

/// The class of an IO error from a socket or file.
pub fn classify_io(err: &io::Error) -> Failure {
    use io::ErrorKind as K;
    match err.kind() {
        K::ConnectionRefused => Failure::Refused,
        K::TimedOut | K::WouldBlock => Failure::Timeout,
        K::NotFound => Failure::NotFound,
        K::PermissionDenied => Failure::Authorization,
        K::ConnectionReset
        | K::ConnectionAborted
        | K::UnexpectedEof
        | K::InvalidData
        | K::BrokenPipe => Failure::Protocol,
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => Failure::Refused,
        _ => Failure::Other,
    }
}

/// An IO error as a [`ProbeError`] with a message that says what to check. `target` is what was
/// being reached (`host:port`, a file path); it must not contain secrets.
pub fn io_error(err: &io::Error, target: &str) -> ProbeError {
    let kind = classify_io(err);
    let message = match kind {
        Failure::Refused if err.kind() == io::ErrorKind::ConnectionRefused => {
            format!(
                "connection refused by {target}: check host and port, and that the server is running"
            )
        }
        Failure::Refused => format!("{target} is unreachable ({err}): check host"),
        Failure::Timeout => format!("no answer from {target}: check host, port and firewalls"),
        Failure::NotFound => format!("{target} not found: check host"),
        Failure::Authorization => {
            format!("permission denied for {target}: check that this program may use it")
        }
        Failure::Protocol => format!(
            "{target} closed the connection unexpectedly ({err}): check port and the connection type"
        ),
        _ => format!("{target}: {err}"),
    };
    ProbeError::new(kind, message)
}

/// The fields a TLS or certificate failure names: the extra key that holds trusted CA
/// certificates (`None` where the type has none: s3 trusts the system's roots only), and the
/// field that decides whether and how TLS is used (`extra.sslmode`, or `host` for a scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFields {
    pub ca: Option<&'static str>,
    pub mode: &'static str,
}

/// A TLS error — its text as rustls, or a driver that wraps it, prints it — with `target`
/// (`host:port`), reached by the name `host`. The certificate's problems are
/// [`Failure::Certificate`] (an unknown issuer, the validity period, another name), anything
/// else [`Failure::Tls`]; every message names the cause and the fields to check.
pub fn tls_error(target: &str, host: &str, text: &str, fields: TlsFields) -> ProbeError {
    let lower = text.to_ascii_lowercase();
    let trust = match fields.ca {
        Some(ca) => format!("put the certificate of the CA that signed it (PEM) in {ca}"),
        None => "use an endpoint whose certificate a public CA signed".to_owned(),
    };
    let (kind, message) = if lower.starts_with("invalid certificate")
        || lower.contains("no valid certificates")
    {
        let ca = fields.ca.unwrap_or("the CA");
        let message = format!("{ca} is not a PEM certificate: check {ca}");
        (Failure::Config, message)
    } else if lower.contains("not valid for name") || lower.contains("notvalidforname") {
        let message = format!(
            "the certificate of {target} is not valid for the name {host} ({text}): set host to a \
             name the certificate holds, or give the server a certificate for {host}"
        );
        (Failure::Certificate, message)
    } else if lower.contains("expired")
        || lower.contains("not valid yet")
        || lower.contains("notvalidyet")
    {
        let message = format!(
            "the certificate of {target} has expired or is not valid yet ({text}): renew the \
             server's certificate, or check this machine's clock"
        );
        (Failure::Certificate, message)
    } else if lower.contains("certificate") || lower.contains("unknownissuer") {
        let message =
            format!("the certificate of {target} is not trusted ({text}): {trust}, or check host");
        (Failure::Certificate, message)
    } else if lower.contains("does not support tls") || lower.contains("does not support ssl") {
        let message = format!(
            "{target} does not offer TLS, but {} asks for it: enable TLS on the server, or change {}",
            fields.mode, fields.mode
        );
        (Failure::Tls, message)
    } else if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        let message = format!(
            "{target} did not answer in TLS ({text}): check port, and {} (does this port speak TLS?)",
            fields.mode
        );
        (Failure::Tls, message)
    } else {
        let message = format!(
            "the TLS handshake with {target} failed ({text}): check {} and port",
            fields.mode
        );
        (Failure::Tls, message)
    };
    ProbeError::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_classes() {
        let cases = [
            (io::ErrorKind::ConnectionRefused, Failure::Refused),
            (io::ErrorKind::TimedOut, Failure::Timeout),
            (io::ErrorKind::NotFound, Failure::NotFound),
            (io::ErrorKind::ConnectionReset, Failure::Protocol),
            (io::ErrorKind::UnexpectedEof, Failure::Protocol),
            // Issue 18: permission denied is its own class (it was `other`).
            (io::ErrorKind::PermissionDenied, Failure::Authorization),
            (io::ErrorKind::Unsupported, Failure::Other),
        ];
        for (kind, want) in cases {
            assert_eq!(classify_io(&io::Error::from(kind)), want, "{kind:?}");
        }
        assert_eq!(
            classify_io(&io::Error::from_raw_os_error(111)),
            Failure::Refused
        );
    }

    #[test]
    fn refused_message_is_actionable() {
        let e = io_error(
            &io::Error::from(io::ErrorKind::ConnectionRefused),
            "127.0.0.1:1",
        );
        assert_eq!(e.kind, Failure::Refused);
        assert!(e.message.contains("127.0.0.1:1"), "{}", e.message);
        assert!(e.message.contains("check host and port"), "{}", e.message);
    }

    #[test]
    fn tls_texts_by_cause() {
        let fields = TlsFields {
            ca: Some("extra.sslrootcert"),
            mode: "extra.sslmode",
        };
        let cases = [
            (
                "invalid peer certificate: UnknownIssuer",
                Failure::Certificate,
                "put the certificate of the CA that signed it (PEM) in extra.sslrootcert",
            ),
            (
                "invalid peer certificate: certificate not valid for name \"127.0.0.1\"; \
                 certificate is only valid for DnsName(\"localhost\")",
                Failure::Certificate,
                "is not valid for the name 127.0.0.1",
            ),
            (
                "invalid peer certificate: certificate expired: verification time 2 (UNIX), but \
                 certificate is not valid after 1 (1 seconds ago)",
                Failure::Certificate,
                "has expired or is not valid yet",
            ),
            (
                "invalid peer certificate: NotValidYet",
                Failure::Certificate,
                "check this machine's clock",
            ),
            (
                "server does not support TLS",
                Failure::Tls,
                "does not offer TLS, but extra.sslmode asks for it",
            ),
            (
                "received corrupt message of type InvalidContentType",
                Failure::Tls,
                "did not answer in TLS",
            ),
            (
                "received fatal alert: HandshakeFailure",
                Failure::Tls,
                "check extra.sslmode and port",
            ),
            (
                "Invalid certificate Inline(..)",
                Failure::Config,
                "extra.sslrootcert is not a PEM certificate",
            ),
        ];
        for (text, kind, says) in cases {
            let e = tls_error("db.example:5432", "127.0.0.1", text, fields);
            assert_eq!(e.kind, kind, "{text}: {e:?}");
            assert!(e.message.contains(says), "{text}: {e:?}");
        }
        let s3 = TlsFields {
            ca: None,
            mode: "host",
        };
        let e = tls_error("x:1", "x", "invalid peer certificate: UnknownIssuer", s3);
        assert!(e.message.contains("a public CA"), "{e:?}");
    }

    /// docs/probes.md's table of failure classes holds every class (issue 18).
    #[test]
    fn every_class_is_in_the_docs() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/probes.md"))
                .unwrap();
        for class in Failure::ALL {
            let row = format!("\n| `{class}` | ");
            assert!(docs.contains(&row), "docs/probes.md has no row for {class}");
        }
    }

    #[test]
    fn every_class_has_a_distinct_name() {
        let names: std::collections::BTreeSet<_> =
            Failure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(names.len(), Failure::ALL.len());
    }
}
