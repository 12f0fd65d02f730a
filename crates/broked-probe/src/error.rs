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
    /// The server refused the credentials.
    Auth,
    /// TLS handshake or certificate failure.
    Tls,
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
            Failure::Tls => "tls",
            Failure::NotFound => "not_found",
            Failure::Protocol => "protocol",
            Failure::Blocked => "blocked",
            Failure::Disabled => "disabled",
            Failure::Config => "config",
            Failure::Other => "other",
        }
    }
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
        Failure::Refused => format!("{target} is unreachable: {err}"),
        Failure::Timeout => format!("no answer from {target}: check host, port and firewalls"),
        Failure::NotFound => format!("{target} not found"),
        Failure::Protocol => format!(
            "{target} closed the connection unexpectedly ({err}): check the port and the connection type"
        ),
        _ => format!("{target}: {err}"),
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
            (io::ErrorKind::PermissionDenied, Failure::Other),
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
}
