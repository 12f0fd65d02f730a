//! Who may use a tunnel's local port: only processes of the user running this one.
//!
//! A loopback TCP port is open to every account on the machine. On Linux the kernel lists each
//! TCP socket with its owner's uid in `/proc/net/tcp`: the client end of an accepted connection
//! is the line whose local address is the peer and whose remote address is our listener.

use std::net::SocketAddr;

/// Whether the client at `peer`, connected to our `local` address, runs as our user. On
/// systems without `/proc/net/tcp` every loopback client is accepted.
pub(crate) fn same_user(peer: SocketAddr, local: SocketAddr) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
            return false;
        };
        let table = match peer {
            SocketAddr::V4(_) => "/proc/net/tcp",
            SocketAddr::V6(_) => "/proc/net/tcp6",
        };
        let Ok(text) = std::fs::read_to_string(table) else {
            return false;
        };
        owner(&text, peer, local) == Some(me)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (peer, local);
        true
    }
}

/// The uid of the socket `local_addr == peer, rem_addr == listener` in a `/proc/net/tcp` text.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn owner(text: &str, peer: SocketAddr, listener: SocketAddr) -> Option<u32> {
    let (want_local, want_remote) = (proc_addr(peer)?, proc_addr(listener)?);
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() > 7 && cols[1] == want_local && cols[2] == want_remote {
            cols[7].parse().ok()
        } else {
            None
        }
    })
}

/// An IPv4 socket address as `/proc/net/tcp` prints it: the address as the kernel's 32-bit
/// value in host byte order, then the port, both in upper-case hex.
fn proc_addr(addr: SocketAddr) -> Option<String> {
    match addr {
        SocketAddr::V4(a) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(a.ip().octets()),
            a.port()
        )),
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_client_end() {
        // 127.0.0.1:40000 -> 127.0.0.1:8080 owned by uid 1000 (as on a little-endian machine;
        // proc_addr prints the same byte order the kernel does on this machine).
        let client = proc_addr("127.0.0.1:40000".parse().unwrap()).unwrap();
        let server = proc_addr("127.0.0.1:8080".parse().unwrap()).unwrap();
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: {server} {client} 01 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
             1: {client} {server} 01 00000000:00000000 00:00000000 00000000  1000        0 2 1\n"
        );
        let peer = "127.0.0.1:40000".parse().unwrap();
        let listener = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(owner(&text, peer, listener), Some(1000));
        assert_eq!(owner(&text, listener, "127.0.0.1:1".parse().unwrap()), None);
    }

    #[test]
    fn a_connection_of_this_process_is_ours() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert!(same_user(peer, l.local_addr().unwrap()));
    }
}
