//! Tests generic connections: a TCP connect to `host:port` within the timeout, to an address
//! that the probe policy approved. Nothing is sent; success means something accepts
//! connections there, not that it speaks any particular protocol.

use broked_probe::{
    ConnType, Connection, Context, Failure, Probe, ProbeError, ProbeFuture, Probed, require_host,
};

/// The generic probe (`tcp`).
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpProbe;

impl Probe for TcpProbe {
    fn conn_type(&self) -> ConnType {
        ConnType::Generic
    }

    fn driver(&self) -> &'static str {
        "tcp"
    }

    fn probe<'a>(&'a self, conn: &'a Connection, ctx: &'a Context) -> ProbeFuture<'a> {
        Box::pin(async move {
            let host = require_host(conn)?;
            if host.contains("://") || host.contains('/') {
                return Err(ProbeError::new(
                    Failure::Config,
                    "host must be a host name or IP address for a generic connection",
                ));
            }
            let port = conn.port.ok_or_else(|| {
                ProbeError::new(Failure::Config, "port is required for a generic connection")
            })?;
            let (stream, addr) = ctx.connect_tcp(host, port).await?;
            drop(stream);
            // Nothing is sent, so the probe cannot tell whether the protocol spoken there
            // is encrypted: no TLS state.
            Ok(Probed::without_tls(format!("TCP connect to {addr}")))
        })
    }
}
