//! SSH tunnels (`extra.ssh_tunnel`, docs/tunnels.md): which bastions a connection goes through,
//! the rules a reference must keep, [`Connections::open_tunnel`] for the engine (shared,
//! reference-counted tunnels) and connection tests through a tunnel.
//!
//! `ssh_tunnel` names an `sftp` connection (the bastion) or a list of them (jump hosts, in
//! order). A bastion may have an `ssh_tunnel` of its own: the chain of a connection is its
//! bastions' chains, each followed by the bastion. The rules, checked on create and update:
//! the bastions exist, are `sftp` connections with a login, a password or a private key and a
//! pinned `host_key`; no connection appears twice in a chain (no cycles); at most
//! [`MAX_HOPS`] hops. A bastion named by another connection's `ssh_tunnel` is deleted only
//! with force.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use broked_core::{
    ConnId, ConnType, Connection, FieldError, SSH_TUNNEL_KEY, Secret, ValidationErrors,
};
use broked_probe::Failure;
use broked_tunnel::{Hop, Timeouts, Tunnel, TunnelError};
use serde_json::Value;

use crate::TestOutcome;
use crate::actor::Actor;
use crate::audit::Event;
use crate::connections::Connections;
use crate::error::Error;

/// The longest chain of bastions.
pub const MAX_HOPS: usize = 8;

/// A connection's URI through its SSH tunnel, valid while this guard lives: host and port
/// are `127.0.0.1:<local port>`. Tunnels to the same target through the same bastions are
/// shared between guards and closed when the last one is dropped. `Debug` shows no secret.
pub struct TunnelGuard {
    tunnel: Option<Arc<Tunnel>>,
    connection: Connection,
    uri: Secret,
    bastions: Vec<String>,
}

impl fmt::Debug for TunnelGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelGuard")
            .field("conn_id", &self.connection.conn_id)
            .field("local", &self.local_addr())
            .field("bastions", &self.bastions)
            .finish()
    }
}

impl TunnelGuard {
    /// The full URI to connect with (credentials included): through the tunnel, or the
    /// connection's own URI when it has no `ssh_tunnel`.
    pub fn uri(&self) -> &Secret {
        &self.uri
    }

    /// The connection as a driver should use it: host and port of the local end, extra
    /// without `ssh_tunnel`.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The local end, `127.0.0.1:<port>`; `None` for a connection without a tunnel.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tunnel.as_ref().map(|t| t.local_addr())
    }

    /// The bastions, in the order they are crossed.
    pub fn bastions(&self) -> &[String] {
        &self.bastions
    }

    /// Ok while the tunnel's sessions are up; when a bastion is down, the error of the first
    /// one that is (it is retried on the next use of the local port).
    pub fn health(&self) -> Result<(), Error> {
        match &self.tunnel {
            Some(t) => t.health().map_err(Error::Tunnel),
            None => Ok(()),
        }
    }
}

/// The conn_ids `extra` names in `ssh_tunnel` (any spelling of the key); empty without one.
/// An error names what is wrong, never a value.
pub fn ssh_tunnel_refs(extra: Option<&str>) -> Result<Vec<String>, String> {
    let Some(Ok(Value::Object(map))) = extra.map(serde_json::from_str::<Value>) else {
        return Ok(Vec::new());
    };
    let mut refs = Vec::new();
    for (key, value) in &map {
        if !broked_core::is_tunnel_key(key) {
            continue;
        }
        let bad = || {
            format!(
                "extra.{SSH_TUNNEL_KEY} must be the conn_id of an sftp connection (the SSH \
                 bastion) or a list of them, in the order they are crossed"
            )
        };
        let names: Vec<&Value> = match value {
            Value::String(_) => vec![value],
            Value::Array(items) if !items.is_empty() => items.iter().collect(),
            Value::Null => continue,
            _ => return Err(bad()),
        };
        for n in names {
            let Value::String(s) = n else {
                return Err(bad());
            };
            let id = ConnId::new(s.trim()).map_err(|_| bad())?;
            refs.push(id.as_str().to_owned());
        }
    }
    Ok(refs)
}

fn invalid(message: String) -> Error {
    Error::Invalid(ValidationErrors(vec![FieldError {
        field: "extra",
        message,
    }]))
}

/// Where a driver connects: the host without an `http(s)://` prefix, and the effective port.
fn target_of(conn: &Connection) -> Result<(String, u16), String> {
    let host = conn.host.as_deref().unwrap_or("").trim();
    let bare = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if bare.is_empty() || bare.starts_with('/') {
        return Err("an SSH tunnel needs a host name or IP address to forward to".into());
    }
    let port = conn
        .effective_port()
        .ok_or_else(|| "an SSH tunnel needs a port to forward to".to_owned())?;
    Ok((bare.to_owned(), port))
}

/// `conn` as a driver uses it through a tunnel whose local end is `local`.
fn through(conn: &Connection, local: SocketAddr) -> Connection {
    let host = conn.host.as_deref().unwrap_or("");
    let scheme = ["https://", "http://"]
        .into_iter()
        .find(|s| host.starts_with(s))
        .unwrap_or("");
    Connection {
        host: Some(format!("{scheme}{}", local.ip())),
        port: Some(local.port()),
        ..without_tunnel(conn)
    }
}

/// `conn` with `extra.ssh_tunnel` removed (it is routing, not a driver option, and names
/// conn_ids, which are no secret).
fn without_tunnel(conn: &Connection) -> Connection {
    let extra = conn
        .extra
        .as_ref()
        .and_then(|e| match serde_json::from_str::<Value>(e.expose()) {
            Ok(Value::Object(mut map)) => {
                map.retain(|k, _| !broked_core::is_tunnel_key(k));
                (!map.is_empty()).then(|| Secret::new(Value::Object(map).to_string()))
            }
            _ => Some(e.clone()),
        });
    Connection {
        extra,
        ..conn.clone()
    }
}

impl Connections {
    /// The bastion connections `conn` goes through, in order, each read with `read`
    /// (expanding bastions' own `ssh_tunnel`). Empty without a tunnel.
    fn chain_with(
        &self,
        conn: &Connection,
        read: &dyn Fn(&str) -> Result<Option<Connection>, Error>,
    ) -> Result<Vec<Connection>, Error> {
        fn walk(
            conn: &Connection,
            read: &dyn Fn(&str) -> Result<Option<Connection>, Error>,
            path: &mut Vec<String>,
            out: &mut Vec<Connection>,
        ) -> Result<(), Error> {
            let refs = ssh_tunnel_refs(conn.extra.as_ref().map(Secret::expose)).map_err(invalid)?;
            for name in refs {
                if path.contains(&name) || out.iter().any(|c| c.conn_id.as_str() == name) {
                    return Err(invalid(format!(
                        "extra.{SSH_TUNNEL_KEY}: {name:?} appears twice in the chain {} → \
                         {name}: a tunnel cannot go through a connection twice (a cycle)",
                        path.join(" → ")
                    )));
                }
                let bastion = read(&name)?.ok_or_else(|| {
                    invalid(format!(
                        "extra.{SSH_TUNNEL_KEY} names {name:?}, which does not exist"
                    ))
                })?;
                if bastion.conn_type != ConnType::Sftp {
                    return Err(invalid(format!(
                        "extra.{SSH_TUNNEL_KEY} names {name:?}, a {} connection: a bastion must \
                         be an sftp connection (an SSH server)",
                        bastion.conn_type
                    )));
                }
                path.push(name);
                walk(&bastion, read, path, out)?;
                path.pop();
                out.push(bastion);
                if out.len() > MAX_HOPS {
                    return Err(invalid(format!(
                        "extra.{SSH_TUNNEL_KEY}: more than {MAX_HOPS} bastions in the chain"
                    )));
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(
            conn,
            read,
            &mut vec![conn.conn_id.as_str().to_owned()],
            &mut out,
        )?;
        Ok(out)
    }

    /// The chain of stored bastions of `conn`.
    fn stored_chain(&self, conn: &Connection) -> Result<Vec<Connection>, Error> {
        self.chain_with(conn, &|id| match self.store.get_connection(id) {
            Ok(Some(row)) => self.decrypt(&row).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(crate::error::store_err(e)),
        })
    }

    /// Checks `extra.ssh_tunnel` of a connection about to be written: the bastions exist,
    /// are sftp connections that can log in with a pinned host key, and there is no cycle.
    pub(crate) fn check_tunnel(&self, conn: &Connection) -> Result<(), Error> {
        let refs = ssh_tunnel_refs(conn.extra.as_ref().map(Secret::expose)).map_err(invalid)?;
        if refs.is_empty() {
            return Ok(());
        }
        if conn.conn_type == ConnType::Sqlite {
            return Err(invalid(format!(
                "extra.{SSH_TUNNEL_KEY}: a sqlite connection is a file on this machine; it \
                 cannot go through an SSH tunnel"
            )));
        }
        target_of(conn).map_err(|m| invalid(format!("extra.{SSH_TUNNEL_KEY}: {m}")))?;
        for bastion in self.stored_chain(conn)? {
            let name = bastion.conn_id.as_str();
            let pinned = broked_probe::extra_object(&bastion)
                .ok()
                .and_then(|m| m.get("host_key").and_then(Value::as_str).map(str::to_owned))
                .is_some_and(|k| !k.trim().is_empty());
            if !pinned {
                return Err(invalid(format!(
                    "extra.{SSH_TUNNEL_KEY} names {name:?}, whose host key is not pinned: set \
                     extra.host_key of {name:?} first (test it to see the fingerprint); a \
                     secret is never sent through an unverified hop"
                )));
            }
            Hop::from_connection(&bastion).map_err(|e| {
                invalid(format!(
                    "extra.{SSH_TUNNEL_KEY} names {name:?}, which cannot be a bastion: {}",
                    e.message
                ))
            })?;
        }
        Ok(())
    }

    /// The conn_ids a stored connection's `extra.ssh_tunnel` names (none without one): its
    /// bastions. Not a reveal — only names leave the library — so nothing is recorded.
    pub fn ssh_tunnel_of(&self, conn_id: &str) -> Result<Vec<String>, Error> {
        let row = self.stored(conn_id)?;
        if row.extra.is_none() {
            return Ok(Vec::new());
        }
        let conn = self.decrypt_some(&row, false, true)?;
        ssh_tunnel_refs(conn.extra.as_ref().map(Secret::expose)).map_err(invalid)
    }

    /// The connections whose `ssh_tunnel` names `conn_id`, sorted. A connection whose extra
    /// does not open is skipped. Read in pages, opening only the extras that changed since
    /// they were last read (`Connections::tunnel_users`, `rotation_schedule.rs`).
    pub fn tunneled_through(&self, conn_id: &str) -> Result<Vec<String>, Error> {
        self.tunnel_users(conn_id)
    }

    /// Refuses to delete a bastion that other connections go through (unless `force`).
    ///
    /// Only an `sftp` connection can be a bastion (`Hop::from_connection`, checked whenever an
    /// `ssh_tunnel` is written): for any other type the other connections are not read at all
    /// — at a million connections that walk costs a second or two of CPU per delete (issue
    /// 19). A connection whose type was changed after a tunnel was set through it is no
    /// bastion any more: the tunnel already fails when it is opened (docs/tunnels.md).
    pub(crate) fn check_bastion_delete(&self, conn_id: &str, force: bool) -> Result<(), Error> {
        if force {
            return Ok(());
        }
        match self.store.get_connection(conn_id) {
            Ok(Some(row)) if row.conn_type == ConnType::Sftp.as_str() => {}
            // Not a bastion; or missing, which the delete itself reports.
            Ok(_) => return Ok(()),
            Err(e) => return Err(crate::error::store_err(e)),
        }
        let users = self.tunneled_through(conn_id)?;
        if users.is_empty() {
            Ok(())
        } else {
            Err(Error::BastionInUse {
                conn_id: conn_id.to_owned(),
                connections: users,
            })
        }
    }

    /// What the engine calls for a connection that may sit behind SSH bastions: a guard
    /// holding the URI to use while it lives. With `extra.ssh_tunnel` the URI points at a
    /// local loopback port forwarded through the bastions (`127.0.0.1:<port>`); without,
    /// it is the connection's own URI and nothing is opened.
    ///
    /// Tunnels to the same target through the same bastions are shared and closed when the
    /// last guard is dropped. A lost SSH session is re-established on the next use of the
    /// port. The probe policy applies to every bastion and to the target. Blocks for the SSH
    /// handshakes: in async code call it from `spawn_blocking`.
    pub fn open_tunnel(&self, conn_id: &str) -> Result<TunnelGuard, Error> {
        self.open_tunnel_as(&Actor::library(), conn_id)
    }

    /// The guard holds the connection's URI: recorded as a reveal (`tunnel`).
    pub(crate) fn open_tunnel_as(
        &self,
        actor: &Actor,
        conn_id: &str,
    ) -> Result<TunnelGuard, Error> {
        let result = self.open_tunnel_recorded(conn_id);
        let mut event = Event::new("tunnel").conn(conn_id);
        if let Ok(g) = &result {
            event = event
                .fields(crate::audit::secret_fields(&g.connection))
                .value(g.connection.password.as_ref())
                .detail(format!("bastions={}", g.bastions.join(",")));
        }
        self.record_reveal(actor, event, result)
    }

    fn open_tunnel_recorded(&self, conn_id: &str) -> Result<TunnelGuard, Error> {
        let resolved = self.resolve(conn_id)?;
        let conn = &resolved.connection;
        let chain = self.chain_with(conn, &|id| match self.resolve(id) {
            Ok(r) => Ok(Some(r.connection.clone())),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        })?;
        if chain.is_empty() {
            return Ok(TunnelGuard {
                tunnel: None,
                connection: conn.clone(),
                uri: resolved.uri.clone(),
                bastions: Vec::new(),
            });
        }
        let (host, port) = target_of(conn).map_err(|m| {
            Error::Tunnel(TunnelError {
                kind: Failure::Config,
                hop: None,
                bastion: None,
                message: m,
            })
        })?;
        let hops = chain
            .iter()
            .map(Hop::from_connection)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::Tunnel)?;
        // The key names the chain and everything that decides where it goes; a changed
        // bastion opens a new tunnel, the old one closes with its last guard.
        let key = serde_json::json!([
            chain
                .iter()
                .map(|b| [
                    b.conn_id.as_str().to_owned(),
                    b.target_binding(),
                    serde_json::to_string(&broked_core::securing_extra(
                        b.conn_type,
                        b.extra.as_ref().map(Secret::expose)
                    ))
                    .unwrap_or_default()
                ])
                .collect::<Vec<_>>(),
            host,
            port
        ])
        .to_string();
        let tunnel = self
            .tunnels
            .get_or_open(&key, || {
                Tunnel::open(
                    hops,
                    &host,
                    port,
                    self.registry.policy(),
                    Timeouts {
                        connect: self.options.probe_timeout,
                        ..Timeouts::default()
                    },
                )
            })
            .map_err(|e| Error::Tunnel(scrubbed(e, conn, &chain)))?;
        let connection = through(conn, tunnel.local_addr());
        Ok(TunnelGuard {
            uri: connection.to_uri(),
            connection,
            tunnel: Some(tunnel),
            bastions: chain
                .iter()
                .map(|b| b.conn_id.as_str().to_owned())
                .collect(),
        })
    }

    /// Tests `conn` through its SSH tunnel, or `None` when it has none: a fresh tunnel (the
    /// policy checked for every bastion and the target), then the type's probe against the
    /// local end. A failure of the tunnel names the hop; its driver is `ssh2`.
    pub(crate) async fn test_tunneled(&self, conn: &Connection) -> Option<TestOutcome> {
        let refs = ssh_tunnel_refs(conn.extra.as_ref().map(Secret::expose));
        if refs.as_ref().is_ok_and(Vec::is_empty) || self.registry.policy().is_disabled() {
            return None;
        }
        let start = Instant::now();
        let failed = |kind: Failure, message: String| TestOutcome {
            success: false,
            message,
            driver: "ssh2",
            latency: start.elapsed(),
            failure: Some(kind),
            detail: String::new(),
            tls: None,
        };
        let chain = match self.stored_chain(conn) {
            Ok(c) => c,
            Err(e) => return Some(failed(Failure::Config, scrub(&e.to_string(), conn, &[]))),
        };
        let target = target_of(conn).and_then(|(h, p)| {
            chain
                .iter()
                .map(Hop::from_connection)
                .collect::<Result<Vec<_>, _>>()
                .map(|hops| (hops, h, p))
                .map_err(|e| e.message)
        });
        let (hops, host, port) = match target {
            Ok(t) => t,
            Err(m) => return Some(failed(Failure::Config, scrub(&m, conn, &chain))),
        };
        let timeouts = Timeouts {
            connect: self.registry.policy().timeout(),
            ..Timeouts::default()
        };
        let tunnel =
            match Tunnel::open_async(hops, &host, port, self.registry.policy(), timeouts).await {
                Ok(t) => t,
                Err(e) => {
                    let e = scrubbed(e, conn, &chain);
                    tracing::info!(
                        conn_id = conn.conn_id.as_str(),
                        bastion = e.bastion.as_deref(),
                        failure = e.kind.as_str(),
                        "connection test: the SSH tunnel failed"
                    );
                    return Some(failed(e.kind, e.message));
                }
            };
        let local = through(conn, tunnel.local_addr());
        // The full policy again: the local end is on loopback, so a deny list that holds
        // loopback blocks tests through tunnels too (never a way around the policy, e.g. for
        // an HTTP redirect that leaves the tunnel).
        let mut outcome = self.registry.test(&local).await;
        drop(tunnel);
        outcome.latency = start.elapsed();
        let via = chain
            .iter()
            .map(|b| format!("{:?}", b.conn_id.as_str()))
            .collect::<Vec<_>>()
            .join(" → ");
        outcome.message = scrub(&outcome.message, conn, &chain);
        outcome.detail = scrub(&outcome.detail, conn, &chain);
        if outcome.success {
            outcome.detail = if outcome.detail.is_empty() {
                format!("through the SSH tunnel via {via}")
            } else {
                format!("{} (through the SSH tunnel via {via})", outcome.detail)
            };
        } else {
            outcome.message = format!("{} (through the SSH tunnel via {via})", outcome.message);
        }
        Some(outcome)
    }
}

/// `text` with every secret of the connection and of its bastions masked (the conn_ids in
/// their `ssh_tunnel` are no secret, and the messages name them).
fn scrub(text: &str, conn: &Connection, chain: &[Connection]) -> String {
    chain
        .iter()
        .fold(broked_probe::scrub(text, &without_tunnel(conn)), |t, b| {
            broked_probe::scrub(&t, &without_tunnel(b))
        })
}

fn scrubbed(mut e: TunnelError, conn: &Connection, chain: &[Connection]) -> TunnelError {
    e.message = scrub(&e.message, conn, chain);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_a_conn_id_or_a_list() {
        assert_eq!(ssh_tunnel_refs(None), Ok(vec![]));
        assert_eq!(ssh_tunnel_refs(Some(r#"{"sslmode":"x"}"#)), Ok(vec![]));
        assert_eq!(
            ssh_tunnel_refs(Some(r#"{"ssh_tunnel":"jump"}"#)),
            Ok(vec!["jump".to_owned()])
        );
        assert_eq!(
            ssh_tunnel_refs(Some(r#"{"SSH-Tunnel":["a","b"]}"#)),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        for bad in [
            r#"{"ssh_tunnel":[]}"#,
            r#"{"ssh_tunnel":1}"#,
            r#"{"ssh_tunnel":["a",2]}"#,
            r#"{"ssh_tunnel":"Not An Id!"}"#,
        ] {
            let e = ssh_tunnel_refs(Some(bad)).unwrap_err();
            assert!(e.contains("conn_id of an sftp connection"), "{bad}: {e}");
            assert!(!e.contains("Not An Id"), "{e}");
        }
    }

    #[test]
    fn the_local_copy_points_at_the_forward_and_drops_the_key() {
        let conn = Connection {
            conn_id: ConnId::new("api").unwrap(),
            conn_type: ConnType::Http,
            host: Some("https://api.internal".into()),
            port: None,
            schema: Some("v1".into()),
            login: Some("bot".into()),
            password: Some(Secret::new("pw")),
            extra: Some(Secret::new(r#"{"ssh_tunnel":"jump","verify_tls":false}"#)),
            description: None,
        };
        assert_eq!(target_of(&conn), Ok(("api.internal".to_owned(), 443)));
        let local = through(&conn, "127.0.0.1:40001".parse().unwrap());
        assert_eq!(local.host.as_deref(), Some("https://127.0.0.1"));
        assert_eq!(local.port, Some(40001));
        assert_eq!(local.extra.unwrap().expose(), r#"{"verify_tls":false}"#);
        let socket = Connection {
            host: Some("/var/run/postgresql".into()),
            conn_type: ConnType::Postgres,
            ..conn
        };
        assert!(target_of(&socket).is_err());
    }
}
