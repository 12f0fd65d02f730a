//! One hop's forward: a loopback listener whose every accepted connection becomes a
//! `direct-tcpip` channel through the hop's SSH session to the next address, pumped by one
//! thread. The session is re-established on the next use after it is lost, with a bounded
//! backoff; the listener (and so the local port) stays the same.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use broked_probe::Failure;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use ssh2::{BlockDirections, Channel};

use crate::session::{self, ChannelFail, Live};
use crate::{Hop, Place, Timeouts, TunnelError};

/// The longest wait between two reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The first wait after a failed reconnect.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// How long a closed channel may wait for the bastion's close before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

struct Shared {
    stop: AtomicBool,
    /// Why the session is down, while it is.
    down: Mutex<Option<TunnelError>>,
}

pub(crate) struct Forward {
    local: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Forward {
    /// Connects the hop, checks that it can reach `next` (one channel, opened and closed), and
    /// starts forwarding a fresh loopback port to it. `next_hop` is the hop at `next`, if it
    /// is one: when this bastion cannot reach it, the error names that hop.
    pub(crate) fn start(
        hop: Arc<Hop>,
        place: Place,
        next_hop: Option<Place>,
        via: Vec<SocketAddr>,
        next: (String, u16),
        timeouts: Timeouts,
    ) -> Result<Forward, TunnelError> {
        let live = session::connect(&hop, &place, &via, timeouts)?;
        match session::open_channel(&live, (&next.0, next.1), &place, timeouts.connect) {
            Ok(mut ch) => {
                live.sess.set_blocking(true);
                let _ = ch.close();
                drop(ch);
                live.sess.set_blocking(false);
            }
            Err(ChannelFail::Target(e)) => {
                return Err(match next_hop {
                    Some(n) => n.error(
                        e.kind,
                        format!(
                            "not reachable from the previous bastion {:?}: {}",
                            place.name,
                            e.message
                                .split_once("): ")
                                .map_or(e.message.as_str(), |(_, m)| m)
                        ),
                    ),
                    None => e,
                });
            }
            Err(ChannelFail::Session(e)) => return Err(e),
        }
        let local_err = {
            let place = place.clone();
            move |e: std::io::Error| {
                place.error(
                    Failure::Other,
                    format!("could not open the local end of the tunnel on 127.0.0.1: {e}"),
                )
            }
        };
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(&local_err)?;
        listener.set_nonblocking(true).map_err(&local_err)?;
        let local = listener.local_addr().map_err(&local_err)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            down: Mutex::new(None),
        });
        let pump = Pump {
            hop,
            place,
            via,
            next,
            timeouts,
            listener,
            local,
            live: Some(live),
            pairs: Vec::new(),
            closing: Vec::new(),
            shared: shared.clone(),
            failures: 0,
            retry_at: Instant::now(),
            keepalive_at: Instant::now() + timeouts.keepalive,
        };
        let thread = std::thread::Builder::new()
            .name(format!("broked-tunnel-{}", pump.place.index))
            .spawn(move || pump.run())
            .map_err(&local_err)?;
        Ok(Forward {
            local,
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) fn health(&self) -> Result<(), TunnelError> {
        match &*self.shared.down.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the thread from poll(2); it sees the flag before it looks at the connection.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One local connection and its channel.
struct Pair {
    local: TcpStream,
    chan: Channel,
    to_chan: Vec<u8>,
    to_local: Vec<u8>,
    local_eof: bool,
    eof_sent: bool,
    chan_eof: bool,
    local_shut: bool,
    broken: bool,
}

impl Pair {
    /// Moves what can be moved without blocking; whether anything moved.
    fn pump(&mut self, buf: &mut [u8]) -> bool {
        let mut progress = false;
        if self.to_chan.is_empty() && !self.local_eof {
            match self.local.read(buf) {
                Ok(0) => {
                    self.local_eof = true;
                    progress = true;
                }
                Ok(n) => {
                    self.to_chan.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return self.break_off(),
            }
        }
        while !self.to_chan.is_empty() {
            match self.chan.write(&self.to_chan) {
                Ok(0) => break,
                Ok(n) => {
                    self.to_chan.drain(..n);
                    progress = true;
                }
                Err(e) if would_block(&e) => break,
                Err(_) => return self.break_off(),
            }
        }
        if self.local_eof && self.to_chan.is_empty() && !self.eof_sent {
            match self.chan.send_eof() {
                Ok(()) => {
                    self.eof_sent = true;
                    progress = true;
                }
                Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {}
                Err(_) => return self.break_off(),
            }
        }
        if self.to_local.is_empty() && !self.chan_eof {
            match self.chan.read(buf) {
                Ok(0) if self.chan.eof() => {
                    self.chan_eof = true;
                    progress = true;
                }
                Ok(0) => {}
                Ok(n) => {
                    self.to_local.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return self.break_off(),
            }
        }
        while !self.to_local.is_empty() {
            match self.local.write(&self.to_local) {
                Ok(0) => return self.break_off(),
                Ok(n) => {
                    self.to_local.drain(..n);
                    progress = true;
                }
                Err(e) if would_block(&e) => break,
                Err(_) => return self.break_off(),
            }
        }
        if self.chan_eof && self.to_local.is_empty() && !self.local_shut {
            let _ = self.local.shutdown(Shutdown::Write);
            self.local_shut = true;
            progress = true;
        }
        progress
    }

    fn break_off(&mut self) -> bool {
        self.broken = true;
        true
    }

    fn finished(&self) -> bool {
        self.broken || (self.eof_sent && self.local_shut)
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

struct Pump {
    hop: Arc<Hop>,
    place: Place,
    via: Vec<SocketAddr>,
    next: (String, u16),
    timeouts: Timeouts,
    listener: TcpListener,
    local: SocketAddr,
    live: Option<Live>,
    pairs: Vec<Pair>,
    /// Channels closed on our side, waiting for the bastion's close (libssh2 frees a channel
    /// without blocking only after that).
    closing: Vec<(Channel, Instant)>,
    shared: Arc<Shared>,
    failures: u32,
    retry_at: Instant,
    keepalive_at: Instant,
}

impl Pump {
    fn run(mut self) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                break;
            }
            let mut busy = false;
            loop {
                match self.listener.accept() {
                    Ok((stream, peer)) => {
                        if self.shared.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        busy = true;
                        self.accepted(stream, peer);
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) => {
                        tracing::warn!(hop = self.place.index, error = %e, "SSH tunnel: accept failed");
                        break;
                    }
                }
            }
            for pair in &mut self.pairs {
                busy |= pair.pump(&mut buf);
            }
            let (done, open): (Vec<Pair>, Vec<Pair>) =
                self.pairs.drain(..).partition(Pair::finished);
            self.pairs = open;
            for mut pair in done {
                let _ = pair.local.shutdown(Shutdown::Both);
                match pair.chan.close() {
                    Ok(()) => {}
                    Err(_) => self.closing.push((pair.chan, Instant::now())),
                }
            }
            self.closing
                .retain_mut(|(ch, since)| ch.close().is_err() && since.elapsed() < CLOSE_GRACE);
            if self.live.is_some() && Instant::now() >= self.keepalive_at {
                self.keepalive();
            }
            if !busy {
                self.wait();
            }
        }
        if let Some(live) = self.live.take() {
            live.sess.set_blocking(true);
            live.sess.set_timeout(500);
            self.pairs.clear();
            self.closing.clear();
            let _ = live.sess.disconnect(None, "tunnel closed", None);
        }
    }

    fn keepalive(&mut self) {
        let Some(live) = &self.live else { return };
        match live.sess.keepalive_send() {
            Ok(secs) => {
                self.keepalive_at = Instant::now() + Duration::from_secs(u64::from(secs.max(1)));
            }
            Err(e) if e.code() == ssh2::ErrorCode::Session(-37) => {
                self.keepalive_at = Instant::now() + Duration::from_secs(1);
            }
            Err(e) => {
                let reason = session::ssh_error(&e, "a keepalive", &self.place);
                self.lost(reason);
            }
        }
    }

    /// Waits until a socket is ready, or a short while.
    fn wait(&self) {
        let mut fds = Vec::with_capacity(self.pairs.len() + 2);
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        if let Some(live) = &self.live {
            if !self.pairs.is_empty() || !self.closing.is_empty() {
                let mut ev = PollFlags::POLLIN;
                if matches!(
                    live.sess.block_directions(),
                    BlockDirections::Outbound | BlockDirections::Both
                ) {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(live.sock.as_fd(), ev));
            }
        }
        for p in &self.pairs {
            let mut ev = PollFlags::empty();
            if p.to_chan.is_empty() && !p.local_eof {
                ev |= PollFlags::POLLIN;
            }
            if !p.to_local.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(p.local.as_fd(), ev));
        }
        // libssh2 may hold data for one channel that it read while serving another: with
        // several channels, look again soon even if no socket is ready.
        let ms: u16 = if self.pairs.len() > 1 || !self.closing.is_empty() {
            10
        } else {
            250
        };
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    fn accepted(&mut self, local: TcpStream, peer: SocketAddr) {
        if !crate::peer::same_user(peer, self.local) {
            tracing::warn!(
                hop = self.place.index,
                %peer,
                "SSH tunnel: refused a local connection from another user's process"
            );
            return;
        }
        if self.live.as_ref().is_some_and(gone) {
            self.lost(
                self.place
                    .error(Failure::Refused, "the bastion closed the SSH session"),
            );
        }
        let fresh = self.live.is_none();
        if fresh && !self.reconnect() {
            return;
        }
        let chan = match self.open_channel() {
            Ok(c) => c,
            Err(ChannelFail::Session(e)) if !fresh => {
                // The session died quietly: one new session, at once.
                self.lost(e);
                if !self.reconnect() {
                    return;
                }
                match self.open_channel() {
                    Ok(c) => c,
                    Err(ChannelFail::Session(e) | ChannelFail::Target(e)) => {
                        self.failed_channel(e);
                        return;
                    }
                }
            }
            Err(ChannelFail::Session(e) | ChannelFail::Target(e)) => {
                self.failed_channel(e);
                return;
            }
        };
        if local.set_nonblocking(true).is_err() {
            return;
        }
        let _ = local.set_nodelay(true);
        self.pairs.push(Pair {
            local,
            chan,
            to_chan: Vec::new(),
            to_local: Vec::new(),
            local_eof: false,
            eof_sent: false,
            chan_eof: false,
            local_shut: false,
            broken: false,
        });
    }

    fn open_channel(&self) -> Result<Channel, ChannelFail> {
        let live = self.live.as_ref().expect("a live session");
        session::open_channel(
            live,
            (&self.next.0, self.next.1),
            &self.place,
            self.timeouts.connect,
        )
    }

    fn failed_channel(&mut self, e: TunnelError) {
        tracing::warn!(hop = self.place.index, error = %e, "SSH tunnel: a connection through the tunnel failed");
    }

    /// A new session, unless the last attempt failed too recently. The local connection that
    /// asked for it is closed when it fails.
    fn reconnect(&mut self) -> bool {
        let now = Instant::now();
        if now < self.retry_at {
            return false;
        }
        match session::connect(&self.hop, &self.place, &self.via, self.timeouts) {
            Ok(live) => {
                live.sess.set_blocking(false);
                self.live = Some(live);
                self.failures = 0;
                self.keepalive_at = Instant::now() + self.timeouts.keepalive;
                *self.shared.down.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!(hop = self.place.index, "SSH tunnel: session re-established");
                true
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << self.failures.min(8).saturating_sub(1))
                    .min(MAX_BACKOFF);
                self.retry_at = Instant::now() + backoff;
                tracing::warn!(hop = self.place.index, error = %e, retry_ms = backoff.as_millis() as u64, "SSH tunnel: reconnect failed");
                *self.shared.down.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                false
            }
        }
    }

    /// The session is gone: drop it and every channel; the next use reconnects at once.
    fn lost(&mut self, reason: TunnelError) {
        tracing::warn!(hop = self.place.index, error = %reason, "SSH tunnel: session lost; it is re-established on the next use");
        self.pairs.clear();
        self.closing.clear();
        self.live = None;
        self.failures = 0;
        self.retry_at = Instant::now();
        *self.shared.down.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }
}

/// Whether the bastion closed the session's socket (a read of it would return end of file).
fn gone(live: &Live) -> bool {
    let mut byte = [0u8; 1];
    match live.sock.peek(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => !would_block(&e),
    }
}
