//! HTTPS: the certificate and key from PEM files (`--tls-cert`, `--tls-key`), reloaded on
//! SIGHUP, and a handshake bounded in time.
//!
//! rustls on the `ring` provider: the only TLS provider compiled in (`tokio-rustls` with the
//! `ring` feature, no aws-lc), so `ServerConfig::builder()` picks it.
//!
//! Not here: client certificates, HTTP/2 (the server speaks HTTP/1.1 only, ALPN says so).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

/// How long a client may take from connecting to a finished TLS handshake. A client that
/// sends nothing, or half a ClientHello, is closed after this: the TLS counterpart of hyper's
/// header-read timeout.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of the answer to a client that speaks plain HTTP to the HTTPS port. Its request
/// is never read or routed: it reaches no handler.
const PLAIN_HTTP_BODY: &str = "this server speaks HTTPS only: use an https:// URL\n";

/// The server's TLS configuration, replaced whole by [`Tls::reload`].
pub(crate) struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads the certificate chain and key; an error names the file and what is wrong with
    /// it, never the key's content.
    pub(crate) fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads both files again. On an error the certificate in use stays.
    pub(crate) fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Completes the handshake on `stream` within [`HANDSHAKE_TIMEOUT`]. A client that fails
    /// it, is too slow, or speaks plain HTTP is closed (the last with a 400 in plain text) and
    /// `None` returned; the reason is logged at debug level only, since anyone can cause it.
    pub(crate) async fn accept(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake = async {
            let mut first = [0u8; 1];
            if stream.peek(&mut first).await? == 1 && first[0] != TLS_HANDSHAKE_RECORD {
                refuse_plain_http(stream).await;
                return Err(io::Error::other("plain HTTP on the HTTPS port"));
            }
            acceptor.accept(stream).await
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}

/// The first byte of every TLS connection: a handshake record (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Answers 400 and closes. The request's bytes are drained first (briefly, a bounded amount):
/// closing a socket with unread data sends a reset, and the client would see that instead of
/// the answer.
async fn refuse_plain_http(mut stream: TcpStream) {
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let certs = read_certs(cert)?;
    let key_der = read_key(key)?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}",
                key.display(),
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate {} is not valid PEM", path.display()))?;
    if certs.is_empty() {
        bail!(
            "no certificate (-----BEGIN CERTIFICATE-----) in {}",
            path.display()
        );
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the TLS key {}", path.display()))?;
    warn_if_others_can_read(path);
    // The parser's error is not shown: it could quote a line of the key file.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        anyhow::anyhow!(
            "no private key in {} (PEM: PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// A warning, not a refusal: Debian's convention is a key readable by the `ssl-cert` group
/// (0640), which is fine; readable by every user of the machine is not.
fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                key = %path.display(),
                "the TLS key is readable by every user of this machine: chmod 600 (or 640) it"
            );
        }
    }
}

/// Reloads `tls` on every SIGHUP, logging the outcome. The handler is installed by the caller
/// before the server announces itself, so that an early SIGHUP cannot kill the process.
pub(crate) async fn reload_on_sighup(tls: Arc<Tls>, mut hangup: tokio::signal::unix::Signal) {
    while hangup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!(cert = %tls.cert_path().display(), "TLS certificate reloaded"),
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "TLS reload failed; still serving the previous certificate"
            ),
        }
    }
}
