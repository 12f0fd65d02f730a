//! Tests an SFTP connection for real with `ssh2` (libssh2): TCP connect to an address the probe
//! policy allowed, SSH handshake, host key check, authentication (password or a private key
//! from extra), the SFTP subsystem, and a `stat` of the base path (`schema`) when it is set.
//!
//! Host key policy: a password or key is never sent to a host whose key is not pinned. With
//! extra `host_key` (a public key line as in `known_hosts`, `ssh-ed25519 AAAA…`, or a
//! fingerprint `SHA256:…`), the server's key must match, and a mismatch fails before any
//! credential is sent. Without it the test stops after the handshake, before authentication,
//! and fails with the key's fingerprint and how to pin it (issue 16): trust on first use is
//! the caller's decision, made by storing the fingerprint, never the probe's.
//!
//! libssh2 blocks: the session runs in `spawn_blocking`, bounded three ways: socket read/write
//! timeouts, libssh2's session timeout, and an outer deadline that shuts the socket down when it
//! passes (libssh2's own timeout has been seen to fire late).
//!
//! What is not here: file transfers, known_hosts files on the server's disk, key files read from
//! the server's disk (a key is always passed in extra), SSH agents.

use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use broked_core::Secret;
use broked_probe::hostkey::{HOST_KEY_FORMS, HostKeyPin, blob_algo};
use broked_probe::sniff::{self, Speaks};
use broked_probe::{
    ConnType, Connection, Context, Failure, Probe, ProbeError, ProbeFuture, Probed, Tls,
    human_duration,
};
use ssh2::{ErrorCode, HashType, MethodType, Session};

/// The SFTP probe; its driver is `ssh2`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SftpProbe;

impl Probe for SftpProbe {
    fn conn_type(&self) -> ConnType {
        ConnType::Sftp
    }

    fn driver(&self) -> &'static str {
        "ssh2"
    }

    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a> {
        Box::pin(check(conn, ctx))
    }
}

/// Tests `conn` (an sftp connection) within `ctx`'s deadline and policy. On success returns a
/// detail naming the server, its host key fingerprint and the base path, with [`Tls::Verified`]
/// (the host key matched the pin; an unpinned host never gets that far).
pub async fn check(conn: &Connection, ctx: &Context) -> Result<Probed, ProbeError> {
    let params = Params::from_connection(conn)?;
    let host = broked_probe::require_host(conn)?;
    let port = broked_probe::require_port(conn)?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };

    let (stream, addr) = ctx.connect_tcp(host, port).await?;
    let stream = stream
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
        .map_err(|e| broked_probe::io_error(&e, &target))?;
    // A second handle on the socket: shutting it down unblocks libssh2 when the deadline passes,
    // or when this future is dropped (the registry's overall timeout).
    let _guard = ShutdownOnDrop(
        stream
            .try_clone()
            .map_err(|e| broked_probe::io_error(&e, &target))?,
    );

    let budget = ctx.remaining();
    let deadline = Instant::now() + budget;
    let job = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || session(stream, &params, deadline, &target))
    };
    let job = async {
        match tokio::time::timeout(budget, job).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProbeError::new(
                Failure::Other,
                "the SSH session ended unexpectedly (internal error)",
            )),
            Err(_) => Err(ProbeError::new(
                Failure::Timeout,
                format!(
                    "no complete answer from the SSH server at {target} within {}: check host \
                     and port (a firewall may drop the packets)",
                    human_duration(budget)
                ),
            )),
        }
    };
    // Something else on the port (an HTTP server waits for a request and never answers the
    // SSH banner): say what it speaks.
    let mismatch = |found: Speaks| {
        (found != Speaks::Ssh).then(|| sniff::protocol_mismatch(&target, found, "SSH", 22))
    };
    sniff::watch(ctx, addr, job, mismatch).await
}

/// Shuts the socket down (both ways) when dropped.
struct ShutdownOnDrop(TcpStream);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// What the probe needs from the connection, checked before any packet is sent.
struct Params {
    user: String,
    password: Option<Secret>,
    private_key: Option<Secret>,
    passphrase: Option<Secret>,
    host_key: Option<HostKeyPin>,
    path: Option<String>,
}

impl Params {
    fn from_connection(conn: &Connection) -> Result<Params, ProbeError> {
        let extra = broked_probe::extra_object(conn)?;
        let string = |key: &str| -> Result<Option<Secret>, ProbeError> {
            match extra.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
                Some(_) => Err(ProbeError::new(
                    Failure::Config,
                    format!("extra.{key} must be a string"),
                )),
            }
        };
        let user = conn
            .login
            .clone()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| {
                ProbeError::new(Failure::Config, "login (the SSH user name) is required")
            })?;
        let private_key = string("private_key")?;
        let password = conn.password.clone().filter(|p| !p.is_empty());
        if private_key.is_none() && password.is_none() {
            return Err(ProbeError::new(
                Failure::Config,
                "set a password, or a private key in extra.private_key",
            ));
        }
        let host_key = string("host_key")?
            .map(|s| parse_host_key(s.expose()))
            .transpose()?;
        Ok(Params {
            user,
            password,
            private_key,
            passphrase: string("passphrase")?,
            host_key,
            path: conn.schema.clone().filter(|s| !s.is_empty()),
        })
    }
}

/// `extra.host_key` read with the shared parser (`broked_probe::hostkey`): in neither form it
/// is a configuration error that never echoes the value.
fn parse_host_key(text: &str) -> Result<HostKeyPin, ProbeError> {
    HostKeyPin::parse(text).ok_or_else(|| ProbeError::new(Failure::Config, HOST_KEY_FORMS))
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// The failure of a test against a host whose key is not pinned: the fingerprint, and how to
/// pin it. Nothing secret was sent.
fn unpinned(target: &str, algo: &str, fingerprint: &str) -> ProbeError {
    ProbeError::new(
        Failure::Tls,
        format!(
            "host key not pinned: {target} presented {algo} SHA256:{fingerprint}; no password or \
             key was sent. Check the fingerprint out of band (ssh-keygen -lf on the server's \
             public host key file), then set extra.host_key to \"SHA256:{fingerprint}\" to trust it"
        ),
    )
}

/// The blocking part: handshake, host key, auth, SFTP, stat.
fn session(
    stream: TcpStream,
    p: &Params,
    deadline: Instant,
    target: &str,
) -> Result<Probed, ProbeError> {
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let io = |e: std::io::Error| broked_probe::io_error(&e, target);
    stream.set_read_timeout(Some(left())).map_err(io)?;
    stream.set_write_timeout(Some(left())).map_err(io)?;

    let mut sess = Session::new().map_err(|e| ssh_error(&e, "session setup", target))?;
    sess.set_timeout(millis(left()));
    if let Some(pref) = p.host_key.as_ref().and_then(HostKeyPin::method_pref) {
        sess.method_pref(MethodType::HostKey, pref).map_err(|_| {
            ProbeError::new(
                Failure::Config,
                "the key type of extra.host_key is not supported by this SSH client",
            )
        })?;
    }
    sess.set_tcp_stream(stream);
    sess.handshake()
        .map_err(|e| ssh_error(&e, "the SSH handshake", target))?;

    // Host key, before any credential is sent.
    let (blob, _) = sess
        .host_key()
        .ok_or_else(|| ProbeError::new(Failure::Protocol, "the server sent no host key"))?;
    let algo = blob_algo(blob).unwrap_or("unknown").to_owned();
    let fingerprint = sess
        .host_key_hash(HashType::Sha256)
        .map(|h| STANDARD_NO_PAD.encode(h))
        .ok_or_else(|| ProbeError::new(Failure::Protocol, "the server's host key is unreadable"))?;
    match &p.host_key {
        // Never a credential to a host nobody vouched for.
        None => return Err(unpinned(target, &algo, &fingerprint)),
        Some(pin) if pin.matches(blob, &fingerprint) => {}
        Some(_) => {
            return Err(ProbeError::new(
                Failure::Tls,
                format!(
                    "host key mismatch: {target} presented {algo} SHA256:{fingerprint}, which is not \
                     the key in extra.host_key; if the server's key was changed on purpose, update \
                     extra.host_key, otherwise someone may be intercepting the connection \
                     (no credentials were sent)"
                ),
            ));
        }
    }

    authenticate(&sess, p, target, &left)?;

    sess.set_timeout(millis(left()));
    let sftp = sess
        .sftp()
        .map_err(|e| ssh_error(&e, "opening the SFTP subsystem", target))?;
    let path_detail = match &p.path {
        None => String::new(),
        Some(path) => match sftp.stat(Path::new(path)) {
            Ok(st) if st.is_dir() => format!("; base path {path} is a directory"),
            Ok(_) => format!("; base path {path} exists"),
            Err(e) => return Err(path_error(&e, path, &p.user, target)),
        },
    };
    drop(sftp);
    let _ = sess.disconnect(None, "broked connection test done", None);

    let server = sess.banner().unwrap_or("SSH server").trim().to_owned();
    Ok(Probed::new(
        format!(
            "{server}; host key {algo} SHA256:{fingerprint} (matches extra.host_key){path_detail}"
        ),
        Tls::Verified,
    ))
}

fn authenticate(
    sess: &Session,
    p: &Params,
    target: &str,
    left: &dyn Fn() -> Duration,
) -> Result<(), ProbeError> {
    let user = &p.user;
    let mut key_error = None;
    if let Some(key) = &p.private_key {
        sess.set_timeout(millis(left()));
        if let Err(e) = sess.userauth_pubkey_memory(
            user,
            None,
            key.expose(),
            p.passphrase.as_ref().map(Secret::expose),
        ) {
            key_error = Some(match e.code() {
                // LIBSSH2_ERROR_FILE: the key text could not be read.
                ErrorCode::Session(-16) => ProbeError::new(
                    Failure::Config,
                    "extra.private_key could not be used: not a supported private key \
                     (OpenSSH or PEM), or a wrong or missing extra.passphrase",
                ),
                // AUTHENTICATION_FAILED, PUBLICKEY_UNVERIFIED
                ErrorCode::Session(-18 | -19) => ProbeError::new(
                    Failure::Auth,
                    format!(
                        "authentication failed: {target} did not accept the private key for user \
                         {user}: check login and extra.private_key"
                    ),
                ),
                _ => ssh_error(&e, "public key authentication", target),
            });
        }
    }
    if sess.authenticated() {
        return Ok(());
    }
    if let Some(password) = &p.password {
        sess.set_timeout(millis(left()));
        match sess.userauth_password(user, password.expose()) {
            Ok(()) if sess.authenticated() => return Ok(()),
            Ok(()) => {}
            Err(e) if matches!(e.code(), ErrorCode::Session(-18)) => {}
            Err(e) => return Err(ssh_error(&e, "password authentication", target)),
        }
        let also = if p.private_key.is_some() {
            " (the private key was not accepted either)"
        } else {
            ""
        };
        return Err(ProbeError::new(
            Failure::Auth,
            format!(
                "authentication failed: {target} rejected the password for user {user}{also}: \
                 check login and password"
            ),
        ));
    }
    Err(key_error.unwrap_or_else(|| {
        ProbeError::new(
            Failure::Auth,
            format!(
                "authentication failed for user {user}: check login, password and extra.private_key"
            ),
        )
    }))
}

/// A libssh2 error during `stage`, classified. libssh2's messages carry no secrets.
fn ssh_error(e: &ssh2::Error, stage: &str, target: &str) -> ProbeError {
    match e.code() {
        // LIBSSH2_ERROR_TIMEOUT
        ErrorCode::Session(-9) => ProbeError::new(
            Failure::Timeout,
            format!(
                "no answer from {target} during {stage}: check host and port (a firewall may drop the packets)"
            ),
        ),
        // SOCKET_NONE, BANNER_RECV, SOCKET_SEND, SOCKET_DISCONNECT, SOCKET_RECV
        ErrorCode::Session(-1 | -2 | -7 | -13 | -43) => ProbeError::new(
            Failure::Protocol,
            format!(
                "{target} closed the connection during {stage} ({}): is it an SSH server? check port",
                e.message()
            ),
        ),
        // BANNER_SEND, KEX_FAILURE, HOSTKEY_INIT, HOSTKEY_SIGN, DECRYPT, PROTO, METHOD_NOT_SUPPORTED
        ErrorCode::Session(-3 | -5 | -8 | -10 | -12 | -14 | -33) => ProbeError::new(
            Failure::Protocol,
            format!(
                "{stage} with {target} failed ({}): check port (is it an SSH server?)",
                e.message()
            ),
        ),
        _ => ProbeError::new(
            Failure::Other,
            format!("{stage} with {target} failed: {}", e.message()),
        ),
    }
}

fn path_error(e: &ssh2::Error, path: &str, user: &str, target: &str) -> ProbeError {
    match e.code() {
        // LIBSSH2_FX_NO_SUCH_FILE, LIBSSH2_FX_NO_SUCH_PATH
        ErrorCode::SFTP(2 | 10) => ProbeError::new(
            Failure::NotFound,
            format!("base path {path} not found on {target}: check schema"),
        ),
        // LIBSSH2_FX_PERMISSION_DENIED
        ErrorCode::SFTP(3) => ProbeError::new(
            Failure::Authorization,
            format!(
                "user {user} may not access base path {path} on {target} (permission denied): \
                 check schema and login, or the permissions on the server"
            ),
        ),
        _ => ssh_error(e, &format!("checking base path {path}"), target),
    }
}

#[cfg(test)]
mod tests;
