//! SSH tunnels: a local loopback port (`127.0.0.1`, ephemeral) forwarded through one or more
//! SSH bastions to a target `host:port`, for connections that are only reachable from behind a
//! bastion (`extra.ssh_tunnel`, `docs/tunnels.md`).
//!
//! A [`Hop`] is a bastion, read from an `sftp` connection: host, port, login, password or
//! `extra.private_key` (+ `passphrase`), and the pinned `extra.host_key`. [`Tunnel::open`]
//! checks every hop and the target against the probe [`Policy`] first (the first bastion after
//! DNS resolution; later hops and the target by the name as written, since the previous bastion
//! resolves them), then opens one SSH session (`ssh2`) per hop. The host key is checked right
//! after the handshake, **before any password or key signature is sent**; an unpinned key is
//! refused with its fingerprint. Hop *n + 1*'s session runs over hop *n*'s local forward, so a
//! chain is a stack of single-hop forwards. The last forward is the tunnel's address.
//!
//! Every accepted local connection gets its own `direct-tcpip` channel. One thread per hop
//! pumps all of its channels (libssh2 in non-blocking mode, `poll(2)` on the sockets), sends
//! keepalives, and reconnects a lost session on the next use (bounded backoff); the local
//! port stays the same for the tunnel's lifetime. On Linux a local connection is accepted only
//! from a process of the same user (checked in `/proc/net/tcp`), so another account on the
//! machine cannot ride the tunnel.
//!
//! Errors name the failing hop (`hop 1 of 2, bastion "jump-a" at host:22`) and never carry a
//! password, key or passphrase.
//!
//! Not here: the store, which connections reference which bastion (`broked-connections`),
//! remote or dynamic (SOCKS) forwarding, agents, `known_hosts` or key files on disk.

mod forward;

mod peer;
mod session;

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use broked_core::{ConnType, Connection, Secret};
pub use broked_probe::{Failure, Policy};

use crate::forward::Forward;
use broked_probe::hostkey::{HOST_KEY_FORMS, HostKeyPin};

/// Why a tunnel could not be opened or used. The message names the hop and never contains a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TunnelError {
    /// The class of the failure, as connection tests report it.
    pub kind: Failure,
    /// The failing hop: 1-based index and the chain's length; `None` for the target's policy
    /// check and other errors not tied to one hop.
    pub hop: Option<(usize, usize)>,
    /// The conn_id of the failing bastion.
    pub bastion: Option<String>,
    pub message: String,
}

impl TunnelError {
    fn plain(kind: Failure, message: impl Into<String>) -> TunnelError {
        TunnelError {
            kind,
            hop: None,
            bastion: None,
            message: message.into(),
        }
    }
}

/// One bastion of a tunnel: where it is, how to log in, and its pinned host key. `Debug`
/// shows no secret.
#[derive(Clone)]
pub struct Hop {
    name: String,
    host: String,
    port: u16,
    user: String,
    password: Option<Secret>,
    private_key: Option<Secret>,
    passphrase: Option<Secret>,
    host_key: Option<HostKeyPin>,
}

impl fmt::Debug for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hop")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("pinned", &self.host_key.is_some())
            .finish_non_exhaustive()
    }
}

impl Hop {
    /// A hop from an `sftp` connection (the bastion). A missing `host_key` is accepted here
    /// and refused at the handshake, with the key's fingerprint, before any credential is sent.
    pub fn from_connection(conn: &Connection) -> Result<Hop, TunnelError> {
        let name = conn.conn_id.as_str().to_owned();
        let bad = |message: String| TunnelError {
            kind: Failure::Config,
            hop: None,
            bastion: Some(name.clone()),
            message: format!("SSH bastion {name:?}: {message}"),
        };
        if conn.conn_type != ConnType::Sftp {
            return Err(bad(format!(
                "a bastion must be an sftp connection (an SSH server), not {}",
                conn.conn_type
            )));
        }
        let host = broked_probe::require_host(conn)
            .map_err(|e| bad(e.message))?
            .to_owned();
        let port = broked_probe::require_port(conn).map_err(|e| bad(e.message))?;
        let extra = broked_probe::extra_object(conn).map_err(|e| bad(e.message))?;
        let string = |key: &str| -> Result<Option<Secret>, TunnelError> {
            match extra.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
                Some(_) => Err(bad(format!("extra.{key} must be a string"))),
            }
        };
        let user = conn
            .login
            .clone()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("login (the SSH user name) is required".into()))?;
        let password = conn.password.clone().filter(|p| !p.is_empty());
        let private_key = string("private_key")?;
        if password.is_none() && private_key.is_none() {
            return Err(bad(
                "set a password, or a private key in extra.private_key".into()
            ));
        }
        let host_key = match string("host_key")? {
            None => None,
            Some(text) => Some(
                HostKeyPin::parse(text.expose()).ok_or_else(|| bad(HOST_KEY_FORMS.to_owned()))?,
            ),
        };
        Ok(Hop {
            host,
            port,
            user,
            password,
            private_key,
            passphrase: string("passphrase")?,
            host_key,
            name,
        })
    }

    /// The bastion's conn_id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `host:port` as written in the connection (brackets around IPv6).
    pub fn address(&self) -> String {
        host_port(&self.host, self.port)
    }
}

/// Where a hop sits in its chain, for messages.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    index: usize,
    total: usize,
    name: String,
    address: String,
}

impl Place {
    pub(crate) fn error(&self, kind: Failure, detail: impl fmt::Display) -> TunnelError {
        TunnelError {
            kind,
            hop: Some((self.index, self.total)),
            bastion: Some(self.name.clone()),
            message: format!(
                "SSH tunnel hop {} of {} (bastion {:?} at {}): {detail}",
                self.index, self.total, self.name, self.address
            ),
        }
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// An open tunnel: a loopback port forwarded through its hops to the target. Dropping it
/// closes the port and the SSH sessions.
pub struct Tunnel {
    /// One per hop, in order; the last one forwards to the target.
    forwards: Vec<Forward>,
    target: String,
}

impl Drop for Tunnel {
    /// The last hop first: each session says goodbye over a transport that still works.
    fn drop(&mut self) {
        while let Some(forward) = self.forwards.pop() {
            drop(forward);
        }
    }
}

impl fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnel")
            .field("local", &self.local_addr())
            .field("target", &self.target)
            .field("hops", &self.forwards.len())
            .finish()
    }
}

/// How long a tunnel waits for a TCP connect, the SSH handshake, authentication or a channel.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The bound of each step of opening a session or a channel.
    pub connect: Duration,
    /// Keepalive interval of the SSH sessions.
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
        }
    }
}

impl Tunnel {
    /// Opens a tunnel through `hops` (at least one) to `target_host:target_port`.
    ///
    /// First the policy: the first bastion's name and every address it resolves to, then the
    /// name (or address) of every later hop and of the target — nothing is sent before all of
    /// them pass. Then one SSH session per hop, each checked by opening (and closing) one
    /// channel to the next hop or the target, so that a closed target port is reported now,
    /// naming the last hop. Blocks: call it from a blocking thread (or use
    /// [`Tunnel::open_async`]).
    pub fn open(
        hops: Vec<Hop>,
        target_host: &str,
        target_port: u16,
        policy: &Policy,
        timeouts: Timeouts,
    ) -> Result<Tunnel, TunnelError> {
        if hops.is_empty() {
            return Err(TunnelError::plain(
                Failure::Config,
                "an SSH tunnel needs at least one bastion",
            ));
        }
        let target_host = target_host
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let total = hops.len();
        let places: Vec<Place> = hops
            .iter()
            .enumerate()
            .map(|(i, h)| Place {
                index: i + 1,
                total,
                name: h.name.clone(),
                address: h.address(),
            })
            .collect();
        // The policy, for every hop and the target, before any packet is sent.
        for (hop, place) in hops.iter().zip(&places).skip(1) {
            policy
                .check_host(&hop.host)
                .map_err(|e| place.error(e.kind, e.message))?;
        }
        policy.check_host(&target_host).map_err(|e| {
            TunnelError::plain(
                e.kind,
                format!(
                    "the tunnel's target {}: {}",
                    host_port(&target_host, target_port),
                    e.message
                ),
            )
        })?;
        let first = &hops[0];
        policy
            .check_host(&first.host)
            .map_err(|e| places[0].error(e.kind, e.message))?;
        let addrs = resolve(first, &places[0], policy)?;

        // Where each hop forwards to: the next hop as written, the target for the last one.
        let nexts: Vec<(String, u16)> = hops
            .iter()
            .skip(1)
            .map(|h| {
                (
                    h.host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    h.port,
                )
            })
            .chain(std::iter::once((target_host.clone(), target_port)))
            .collect();
        let mut forwards: Vec<Forward> = Vec::with_capacity(total);
        for (i, (hop, next)) in hops.into_iter().zip(nexts).enumerate() {
            let via = match forwards.last() {
                None => addrs.clone(),
                Some(prev) => vec![prev.local_addr()],
            };
            forwards.push(Forward::start(
                Arc::new(hop),
                places[i].clone(),
                places.get(i + 1).cloned(),
                via,
                next,
                timeouts,
            )?);
        }
        Ok(Tunnel {
            forwards,
            target: host_port(&target_host, target_port),
        })
    }

    /// [`Tunnel::open`] on a blocking thread of the current tokio runtime.
    pub async fn open_async(
        hops: Vec<Hop>,
        target_host: &str,
        target_port: u16,
        policy: &Policy,
        timeouts: Timeouts,
    ) -> Result<Tunnel, TunnelError> {
        let policy = policy.clone();
        let target_host = target_host.to_owned();
        tokio::task::spawn_blocking(move || {
            Tunnel::open(hops, &target_host, target_port, &policy, timeouts)
        })
        .await
        .unwrap_or_else(|_| {
            Err(TunnelError::plain(
                Failure::Other,
                "opening the SSH tunnel failed unexpectedly (internal error)",
            ))
        })
    }

    /// The local end: `127.0.0.1:<port>`.
    pub fn local_addr(&self) -> SocketAddr {
        self.forwards
            .last()
            .expect("a tunnel has at least one hop")
            .local_addr()
    }

    /// The target as `host:port`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `Ok` while every hop's session is up (or was never needed since it was lost);
    /// otherwise the last error of the first hop that is down (e.g. its bastion refused the
    /// reconnect).
    pub fn health(&self) -> Result<(), TunnelError> {
        for f in &self.forwards {
            f.health()?;
        }
        Ok(())
    }
}

/// Open tunnels shared by a key (the caller's name for a chain and a target): one tunnel per
/// key while anyone holds it, closed when the last holder drops it.
#[derive(Default)]
pub struct SharedTunnels {
    open: Mutex<HashMap<String, Weak<Tunnel>>>,
}

impl fmt::Debug for SharedTunnels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("SharedTunnels")
            .field(
                "open",
                &open.values().filter(|t| t.strong_count() > 0).count(),
            )
            .finish()
    }
}

impl SharedTunnels {
    /// The open tunnel for `key`, or a new one from `open`. `open` runs without the lock
    /// (other keys need not wait for its handshakes); when two callers open the same key at
    /// once, both get the first one stored and the other closes.
    pub fn get_or_open(
        &self,
        key: &str,
        open: impl FnOnce() -> Result<Tunnel, TunnelError>,
    ) -> Result<Arc<Tunnel>, TunnelError> {
        {
            let mut map = self.open.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, t| t.strong_count() > 0);
            if let Some(t) = map.get(key).and_then(Weak::upgrade) {
                return Ok(t);
            }
        }
        let fresh = Arc::new(open()?);
        let mut map = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key).and_then(Weak::upgrade) {
            Some(theirs) => Ok(theirs),
            None => {
                map.insert(key.to_owned(), Arc::downgrade(&fresh));
                Ok(fresh)
            }
        }
    }
}

/// The first hop's addresses, each checked against the policy.
fn resolve(hop: &Hop, place: &Place, policy: &Policy) -> Result<Vec<SocketAddr>, TunnelError> {
    let bare = hop.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (bare, hop.port)
        .to_socket_addrs()
        .map_err(|_| {
            place.error(
                Failure::Dns,
                format!("could not resolve host {bare}: check the bastion's host name"),
            )
        })?
        .collect();
    if addrs.is_empty() {
        return Err(place.error(
            Failure::Dns,
            format!("could not resolve host {bare}: check the bastion's host name"),
        ));
    }
    for a in &addrs {
        policy
            .check_ip(a.ip())
            .map_err(|e| place.error(e.kind, e.message))?;
    }
    Ok(addrs)
}
