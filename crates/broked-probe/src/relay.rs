//! A TCP connection to an address the policy approved, offered to a driver as a Unix socket.
//!
//! Database drivers that verify a TLS certificate against the host *name* (`sqlx` with
//! PostgreSQL's `verify-full` and MySQL's `verify_identity`) take that name from the same
//! field they connect to, so they would resolve it again — a second DNS lookup the policy
//! never saw, and a DNS-rebinding window. Instead the probe connects to the checked address
//! itself and hands the driver a Unix socket that relays bytes to that TCP connection, while
//! the driver's host field keeps the name for the certificate check. The driver still does the
//! whole protocol and the TLS handshake (with the name); the relay only copies bytes.
//!
//! The socket lives in a fresh directory of mode 0700, accepts exactly one connection — from
//! this process only (its peer credentials are checked) — and is unlinked at once; the
//! directory is removed when the relay is dropped.

use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpStream, UnixListener};

use crate::{Failure, ProbeError};

/// One TCP connection waiting to be relayed to one Unix-socket client.
#[derive(Debug)]
pub struct Relay {
    dir: PathBuf,
    socket: PathBuf,
    listener: Option<UnixListener>,
    stream: TcpStream,
}

impl Relay {
    /// Creates the directory and the socket `socket_name` in it for `stream`.
    pub fn new(stream: TcpStream, socket_name: &str) -> Result<Relay, ProbeError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "broked-probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A Unix socket path has room for about 100 bytes: fall back to /tmp when TMPDIR is
        // deep.
        let mut base = std::env::temp_dir();
        if base.as_os_str().len() + unique.len() + socket_name.len() > 90 {
            base = PathBuf::from("/tmp");
        }
        let dir = base.join(unique);
        let failed = |e: std::io::Error| {
            ProbeError::new(
                Failure::Other,
                format!("cannot set up the connection relay: {e}"),
            )
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(failed)?;
        let socket = dir.join(socket_name);
        let listener = match UnixListener::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(failed(e));
            }
        };
        Ok(Relay {
            dir,
            socket,
            listener: Some(listener),
            stream,
        })
    }

    /// The directory holding the socket (PostgreSQL drivers take the directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The socket itself (MySQL drivers take the file).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `work` — the driver, connecting to [`Relay::dir`] or [`Relay::socket`] — while
    /// relaying its connection, and returns what it returns. Once `work` is done the relay
    /// gets up to 200 ms more to pass on the driver's last bytes (its goodbye to the server).
    pub async fn run<T>(mut self, work: impl Future<Output = T>) -> T {
        let serve = self.serve();
        tokio::pin!(serve, work);
        let mut relaying = true;
        let result = loop {
            tokio::select! {
                biased;
                result = &mut work => break result,
                _ = &mut serve, if relaying => relaying = false,
            }
        };
        if relaying {
            let _ = tokio::time::timeout(Duration::from_millis(200), serve).await;
        }
        result
    }

    /// Accepts the one client and copies bytes both ways until both sides are closed.
    async fn serve(&mut self) -> std::io::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let mut client = loop {
            let (client, _) = listener.accept().await?;
            // Only this process: the directory's mode keeps other users out, this keeps out
            // other processes of the same user.
            let ours = client
                .peer_cred()
                .is_ok_and(|c| c.pid() == Some(std::process::id() as i32));
            if ours {
                break client;
            }
        };
        drop(listener);
        let _ = std::fs::remove_file(&self.socket);
        tokio::io::copy_bidirectional(&mut client, &mut self.stream).await?;
        Ok(())
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways_and_cleans_up() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&[buf[0] + 1, buf[1], buf[2], buf[3]])
                .await
                .unwrap();
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let relay = Relay::new(stream, ".s.PGSQL.5432").unwrap();
        let (dir, socket) = (relay.dir().to_owned(), relay.socket().to_owned());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let client = async {
            let mut c = tokio::net::UnixStream::connect(&socket).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            buf
        };
        let got = relay.run(client).await;
        assert_eq!(&got, b"qing");
        assert!(!socket.exists(), "the socket is unlinked");
        assert!(!dir.exists(), "the directory is removed");
    }
}
