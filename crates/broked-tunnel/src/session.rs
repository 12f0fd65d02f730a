//! One SSH session to one hop: TCP connect, handshake, host key check, authentication; and
//! `direct-tcpip` channels over it. Blocking, bounded by a deadline.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use broked_core::Secret;
use broked_probe::Failure;
use ssh2::{Channel, ErrorCode, HashType, MethodType, Session};

use crate::{Hop, Place, Timeouts, TunnelError, host_port};
use broked_probe::hostkey::{blob_algo, fingerprint_of};

/// An authenticated session, with a second handle on its socket (to poll and to peek).
pub(crate) struct Live {
    pub(crate) sess: Session,
    pub(crate) sock: TcpStream,
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Connects to the hop through the first of `via` that accepts (the bastion's checked
/// addresses, or the previous hop's local forward), checks the host key and logs in.
pub(crate) fn connect(
    hop: &Hop,
    place: &Place,
    via: &[SocketAddr],
    timeouts: Timeouts,
) -> Result<Live, TunnelError> {
    let deadline = Instant::now() + timeouts.connect;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let mut last = None;
    let mut stream = None;
    for addr in via {
        match TcpStream::connect_timeout(addr, left()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let io = |e: &std::io::Error| {
        let pe = broked_probe::io_error(e, place.address());
        place.error(pe.kind, pe.message)
    };
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(io(&e)),
        (None, None) => return Err(place.error(Failure::Dns, "no address to connect to")),
    };
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(left())).map_err(|e| io(&e))?;
    stream.set_write_timeout(Some(left())).map_err(|e| io(&e))?;
    let sock = stream.try_clone().map_err(|e| io(&e))?;

    let mut sess = Session::new().map_err(|e| ssh_error(&e, "session setup", place))?;
    sess.set_timeout(millis(left()));
    if let Some(pref) = hop.host_key.as_ref().and_then(|p| p.method_pref()) {
        sess.method_pref(MethodType::HostKey, pref).map_err(|_| {
            place.error(
                Failure::Config,
                "the key type of extra.host_key is not supported by this SSH client",
            )
        })?;
    }
    sess.set_tcp_stream(stream);
    sess.handshake()
        .map_err(|e| ssh_error(&e, "the SSH handshake", place))?;

    // The host key, before any credential is sent.
    let (blob, _) = sess
        .host_key()
        .ok_or_else(|| place.error(Failure::Protocol, "the server sent no host key"))?;
    let algo = blob_algo(blob).unwrap_or("unknown").to_owned();
    let fingerprint = sess
        .host_key_hash(HashType::Sha256)
        .map(fingerprint_of)
        .ok_or_else(|| place.error(Failure::Protocol, "the server's host key is unreadable"))?;
    match &hop.host_key {
        None => {
            return Err(place.error(
                Failure::Tls,
                format!(
                    "host key not pinned: the bastion presented {algo} SHA256:{fingerprint}; no \
                     password or key was sent. Check the fingerprint out of band, then set \
                     extra.host_key of {:?} to \"SHA256:{fingerprint}\"",
                    hop.name
                ),
            ));
        }
        Some(pin) if pin.matches(blob, &fingerprint) => {}
        Some(_) => {
            return Err(place.error(
                Failure::Tls,
                format!(
                    "host key mismatch: the bastion presented {algo} SHA256:{fingerprint}, which \
                     is not the key in extra.host_key; if its key was changed on purpose, update \
                     extra.host_key, otherwise someone may be intercepting the connection (no \
                     credentials were sent)"
                ),
            ));
        }
    }

    authenticate(&sess, hop, place, &left)?;
    // From here on the pump decides how long to wait.
    let _ = sock.set_read_timeout(None);
    let _ = sock.set_write_timeout(None);
    sess.set_keepalive(
        false,
        u32::try_from(timeouts.keepalive.as_secs())
            .unwrap_or(15)
            .max(1),
    );
    Ok(Live { sess, sock })
}

fn authenticate(
    sess: &Session,
    hop: &Hop,
    place: &Place,
    left: &dyn Fn() -> Duration,
) -> Result<(), TunnelError> {
    let user = &hop.user;
    let mut key_error = None;
    if let Some(key) = &hop.private_key {
        sess.set_timeout(millis(left()));
        if let Err(e) = sess.userauth_pubkey_memory(
            user,
            None,
            key.expose(),
            hop.passphrase.as_ref().map(Secret::expose),
        ) {
            key_error = Some(match e.code() {
                // LIBSSH2_ERROR_FILE: the key text could not be read.
                ErrorCode::Session(-16) => place.error(
                    Failure::Config,
                    "extra.private_key could not be used: not a supported private key \
                     (OpenSSH or PEM), or a wrong or missing extra.passphrase",
                ),
                // AUTHENTICATION_FAILED, PUBLICKEY_UNVERIFIED
                ErrorCode::Session(-18 | -19) => place.error(
                    Failure::Auth,
                    format!(
                        "authentication failed: the bastion did not accept the private key for \
                         user {user}"
                    ),
                ),
                _ => ssh_error(&e, "public key authentication", place),
            });
        }
    }
    if sess.authenticated() {
        return Ok(());
    }
    if let Some(password) = &hop.password {
        sess.set_timeout(millis(left()));
        match sess.userauth_password(user, password.expose()) {
            Ok(()) if sess.authenticated() => return Ok(()),
            Ok(()) => {}
            Err(e) if matches!(e.code(), ErrorCode::Session(-18)) => {}
            Err(e) => return Err(ssh_error(&e, "password authentication", place)),
        }
        let also = if hop.private_key.is_some() {
            " (the private key was not accepted either)"
        } else {
            ""
        };
        return Err(place.error(
            Failure::Auth,
            format!(
                "authentication failed: the bastion rejected the password for user {user}{also}"
            ),
        ));
    }
    Err(key_error.unwrap_or_else(|| {
        place.error(
            Failure::Auth,
            format!("authentication failed for user {user}"),
        )
    }))
}

/// A libssh2 error during `stage`, classified. libssh2's messages carry no secrets.
pub(crate) fn ssh_error(e: &ssh2::Error, stage: &str, place: &Place) -> TunnelError {
    match e.code() {
        // LIBSSH2_ERROR_TIMEOUT, SOCKET_TIMEOUT
        ErrorCode::Session(-9 | -30) => place.error(
            Failure::Timeout,
            format!("no answer during {stage}: check the bastion's host, port and firewalls"),
        ),
        // SOCKET_NONE, BANNER_RECV, SOCKET_SEND, SOCKET_DISCONNECT, SOCKET_RECV
        ErrorCode::Session(-1 | -2 | -7 | -13 | -43) => place.error(
            Failure::Protocol,
            format!(
                "the connection was closed during {stage} ({}): is it an SSH server, and is it up?",
                e.message()
            ),
        ),
        // BANNER_SEND, KEX_FAILURE, HOSTKEY_INIT, HOSTKEY_SIGN, DECRYPT, PROTO, METHOD_NOT_SUPPORTED
        ErrorCode::Session(-3 | -5 | -8 | -10 | -12 | -14 | -33) => place.error(
            Failure::Protocol,
            format!("{stage} failed: {}", e.message()),
        ),
        _ => place.error(Failure::Other, format!("{stage} failed: {}", e.message())),
    }
}

/// Why a channel could not be opened.
pub(crate) enum ChannelFail {
    /// The session is gone (socket closed, timeout): reconnect.
    Session(TunnelError),
    /// The bastion answered, but could not (or may not) reach the destination.
    Target(TunnelError),
}

/// Opens a `direct-tcpip` channel to `host:port` in blocking mode, within `timeout`; the
/// session is left non-blocking.
pub(crate) fn open_channel(
    live: &Live,
    (host, port): (&str, u16),
    place: &Place,
    timeout: Duration,
) -> Result<Channel, ChannelFail> {
    live.sess.set_blocking(true);
    live.sess.set_timeout(millis(timeout));
    let result = live.sess.channel_direct_tcpip(host, port, None);
    live.sess.set_blocking(false);
    let dest = host_port(host, port);
    result.map_err(|e| match e.code() {
        // LIBSSH2_ERROR_CHANNEL_FAILURE: the server's SSH_MSG_CHANNEL_OPEN_FAILURE.
        ErrorCode::Session(-21) => {
            let m = e.message();
            ChannelFail::Target(if m.contains("prohibited") {
                place.error(
                    Failure::Config,
                    format!(
                        "the bastion may not forward to {dest} (its sshd has AllowTcpForwarding \
                         or PermitOpen set against it)"
                    ),
                )
            } else if m.contains("connect failed") {
                place.error(
                    Failure::Refused,
                    format!(
                        "the bastion could not connect to {dest}: the port is closed, or the host \
                         is unreachable or unknown from the bastion"
                    ),
                )
            } else {
                place.error(
                    Failure::Other,
                    format!("the bastion refused a channel to {dest}: {m}"),
                )
            })
        }
        _ => ChannelFail::Session(ssh_error(
            &e,
            &format!("opening a channel to {dest}"),
            place,
        )),
    })
}
