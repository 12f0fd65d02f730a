//! Tunnels through real OpenSSH servers on loopback: the suite's sshd
//! (scripts/services/sshd.sh, `AllowTcpForwarding local`) and, for chains and restarts, a
//! test's own sshd (`sshd.rs`). The target is an echo server made here, so every byte that
//! comes back crossed the tunnel twice.

mod sshd;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use broked_core::{ConnId, ConnType, Connection, Secret};
use broked_testenv::{Service, free_port, is_root};
use broked_tunnel::{Failure, Hop, Policy, Timeouts, Tunnel, TunnelError};

fn bastion(svc: &Service, id: &str, extra: serde_json::Value) -> Connection {
    Connection {
        conn_id: ConnId::new(id).unwrap(),
        conn_type: ConnType::Sftp,
        host: Some(svc.get("HOST").to_owned()),
        port: Some(svc.port()),
        schema: None,
        login: Some(svc.get("USER").to_owned()),
        password: Some(Secret::new(svc.get("PASSWORD"))),
        extra: Some(Secret::new(extra.to_string())),
        description: None,
    }
}

fn pinned(svc: &Service, id: &str) -> Connection {
    bastion(
        svc,
        id,
        serde_json::json!({"host_key": svc.get("HOST_KEY")}),
    )
}

fn hop(c: &Connection) -> Hop {
    Hop::from_connection(c).unwrap()
}

/// A bastion on the test's own sshd `own`, its host key pinned.
fn own_bastion(svc: &Service, own: &sshd::OwnSshd, id: &str) -> Connection {
    let mut c = bastion(svc, id, serde_json::json!({"host_key": own.host_key()}));
    c.port = Some(own.port);
    c
}

/// Opens a tunnel through `hops` to `127.0.0.1:port` under the default policy.
fn open(hops: Vec<Hop>, port: u16) -> Result<Tunnel, TunnelError> {
    Tunnel::open(hops, "127.0.0.1", port, &Policy::default(), timeouts())
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(5),
        ..Timeouts::default()
    }
}

/// An echo server on a free loopback port; each connection is echoed by its own thread.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 8192];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Sends `data` through `addr` and reads the echo back.
fn round_trip(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(data)?;
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

fn no_secret(e: &TunnelError, svc: &Service) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(svc.get("PASSWORD")), "{text}");
}

#[test]
fn forwards_to_the_target_through_the_bastion() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let echo = echo_server();
    let t = open(vec![hop(&pinned(&svc, "bastion"))], echo.port()).unwrap();
    let local = t.local_addr();
    assert!(local.ip().is_loopback() && local.port() != echo.port());
    assert_eq!(t.target(), format!("127.0.0.1:{}", echo.port()));
    // Several connections at once, each with its own channel, and a payload bigger than one
    // SSH window.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let data = if i == 0 {
                big.clone()
            } else {
                format!("hello {i}").into_bytes()
            };
            std::thread::spawn(move || (round_trip(local, &data).unwrap(), data))
        })
        .collect();
    for h in handles {
        let (back, data) = h.join().unwrap();
        assert!(back == data, "echo differs ({} bytes)", data.len());
    }
    assert!(t.health().is_ok());
    drop(t);
    // The listener's thread closes the port as it ends: give it a moment on a loaded machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while TcpStream::connect(local).is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        TcpStream::connect(local).is_err(),
        "the local port closes with the tunnel"
    );
}

#[test]
fn private_key_auth_works() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let key = std::fs::read_to_string(svc.get("KEY")).unwrap();
    let mut c = bastion(
        &svc,
        "bastion-key",
        serde_json::json!({"host_key": svc.get("HOST_KEY"), "private_key": key}),
    );
    c.password = None;
    let echo = echo_server();
    let t = open(vec![hop(&c)], echo.port()).unwrap();
    assert_eq!(round_trip(t.local_addr(), b"key").unwrap(), b"key");
}

#[test]
fn wrong_password_names_the_hop() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let mut c = pinned(&svc, "bastion-a");
    c.password = Some(Secret::new("wrong-Pw-7d1X-never-right"));
    let e = open(vec![hop(&c)], echo_server().port()).unwrap_err();
    assert_eq!(e.kind, Failure::Auth, "{e}");
    assert_eq!(e.hop, Some((1, 1)));
    assert_eq!(e.bastion.as_deref(), Some("bastion-a"));
    assert!(
        e.message
            .starts_with("SSH tunnel hop 1 of 1 (bastion \"bastion-a\" at 127.0.0.1:")
            && e.message
                .contains("rejected the password for user broked_sftp"),
        "{e}"
    );
    assert!(!e.message.contains("wrong-Pw-7d1X"), "{e}");
    no_secret(&e, &svc);
}

#[test]
fn an_unpinned_host_key_is_refused_before_any_credential() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let c = bastion(&svc, "bastion-u", serde_json::json!({}));
    let e = open(vec![hop(&c)], echo_server().port()).unwrap_err();
    assert_eq!(e.kind, Failure::Tls, "{e}");
    assert!(
        e.message.contains("host key not pinned") && e.message.contains("SHA256:"),
        "{e}"
    );
    assert!(e.message.contains("no password or key was sent"), "{e}");
    no_secret(&e, &svc);
}

#[test]
fn a_changed_host_key_is_refused() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let c = bastion(
        &svc,
        "bastion-c",
        serde_json::json!({"host_key": "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}),
    );
    let e = open(vec![hop(&c)], echo_server().port()).unwrap_err();
    assert_eq!(e.kind, Failure::Tls, "{e}");
    assert!(e.message.contains("host key mismatch"), "{e}");
    assert!(e.message.contains("bastion-c"), "{e}");
    no_secret(&e, &svc);
}

#[test]
fn a_closed_target_port_behind_the_bastion_is_its_own_failure() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let port = free_port();
    let start = Instant::now();
    let e = open(vec![hop(&pinned(&svc, "bastion"))], port).unwrap_err();
    assert_eq!(e.kind, Failure::Refused, "{e}");
    assert!(
        e.message.contains(&format!(
            "the bastion could not connect to 127.0.0.1:{port}"
        )),
        "{e}"
    );
    assert_eq!(e.hop, Some((1, 1)));
    assert!(start.elapsed() < Duration::from_secs(5));
    no_secret(&e, &svc);
}

#[test]
fn a_bastion_that_is_down_is_refused_naming_it() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let mut c = pinned(&svc, "bastion-down");
    c.port = Some(free_port());
    let e = open(vec![hop(&c)], 1).unwrap_err();
    assert_eq!(e.kind, Failure::Refused, "{e}");
    assert!(
        e.message.contains("bastion \"bastion-down\"") && e.message.contains("connection refused"),
        "{e}"
    );
}

#[test]
fn the_policy_is_checked_for_the_target_and_every_hop_before_anything_is_sent() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    // A "bastion" that records whether anyone connected.
    let watch = TcpListener::bind("127.0.0.1:0").unwrap();
    watch.set_nonblocking(true).unwrap();
    let mut c = pinned(&svc, "bastion-w");
    c.port = Some(watch.local_addr().unwrap().port());
    let policy = Policy::new(
        Duration::from_secs(5),
        false,
        &["10.0.0.0/8".into(), "db.internal".into()],
    )
    .unwrap();
    for target in [
        "10.1.2.3",
        "db.internal",
        "x.db.internal",
        "169.254.169.254",
    ] {
        let e = Tunnel::open(vec![hop(&c)], target, 5432, &policy, timeouts()).unwrap_err();
        assert_eq!(e.kind, Failure::Blocked, "{target}: {e}");
        assert!(e.message.contains("the tunnel's target"), "{e}");
    }
    // A later hop is checked by its name too.
    let mut second = pinned(&svc, "jump-2");
    second.host = Some("10.9.9.9".into());
    let e = Tunnel::open(
        vec![hop(&c), hop(&second)],
        "127.0.0.1",
        5432,
        &policy,
        timeouts(),
    )
    .unwrap_err();
    assert_eq!((e.kind, e.hop), (Failure::Blocked, Some((2, 2))), "{e}");
    // And the first bastion by its address.
    let deny_lo = Policy::new(Duration::from_secs(5), false, &["127.0.0.0/8".into()]).unwrap();
    let e = Tunnel::open(vec![hop(&c)], "db", 5432, &deny_lo, timeouts()).unwrap_err();
    assert_eq!((e.kind, e.hop), (Failure::Blocked, Some((1, 1))), "{e}");
    assert!(
        watch.accept().is_err(),
        "nothing may reach the bastion when the policy refuses the tunnel"
    );
}

#[test]
fn a_chain_of_two_hops() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let Some(own) = sshd::OwnSshd::start(svc.get("USER")) else {
        return;
    };
    let echo = echo_server();
    // Hop 2 as the first bastion sees it: 127.0.0.1:<own port>, its own host key.
    let mut second = own_bastion(&svc, &own, "jump-2");
    let t = open(
        vec![hop(&pinned(&svc, "jump-1")), hop(&second)],
        echo.port(),
    )
    .unwrap();
    assert_eq!(
        round_trip(t.local_addr(), b"two hops").unwrap(),
        b"two hops"
    );
    drop(t);

    // A failure on hop 2 names hop 2.
    second.password = Some(Secret::new("wrong-Pw-hop2"));
    let e = open(
        vec![hop(&pinned(&svc, "jump-1")), hop(&second)],
        echo.port(),
    )
    .unwrap_err();
    assert_eq!((e.kind, e.hop), (Failure::Auth, Some((2, 2))), "{e}");
    assert!(e.message.contains("hop 2 of 2 (bastion \"jump-2\""), "{e}");
    // A closed target behind hop 2 names hop 2.
    second.password = Some(Secret::new(svc.get("PASSWORD")));
    let e = open(
        vec![hop(&pinned(&svc, "jump-1")), hop(&second)],
        free_port(),
    )
    .unwrap_err();
    assert_eq!((e.kind, e.hop), (Failure::Refused, Some((2, 2))), "{e}");
    // Hop 2 down: hop 1 cannot reach it, and the error names hop 2.
    drop(own);
    let e = open(
        vec![hop(&pinned(&svc, "jump-1")), hop(&second)],
        echo.port(),
    )
    .unwrap_err();
    assert_eq!((e.kind, e.hop), (Failure::Refused, Some((2, 2))), "{e}");
    assert!(
        e.message.contains("hop 2 of 2 (bastion \"jump-2\"")
            && e.message
                .contains("not reachable from the previous bastion \"jump-1\""),
        "{e}"
    );
}

#[test]
fn a_restarted_bastion_is_reconnected_on_the_next_use() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let Some(mut own) = sshd::OwnSshd::start(svc.get("USER")) else {
        return;
    };
    let c = own_bastion(&svc, &own, "bastion-r");
    let echo = echo_server();
    let t = open(vec![hop(&c)], echo.port()).unwrap();
    let local = t.local_addr();
    assert_eq!(round_trip(local, b"before").unwrap(), b"before");

    own.stop();
    // While the bastion is down a use fails, and the tunnel says why, naming the hop.
    assert!(round_trip(local, b"down").is_err());
    let e = t.health().unwrap_err();
    assert!(e.message.contains("bastion \"bastion-r\""), "{e}");
    assert_eq!(t.local_addr(), local, "the local port stays");

    own.restart();
    let start = Instant::now();
    loop {
        match round_trip(local, b"after") {
            Ok(back) => {
                assert_eq!(back, b"after");
                break;
            }
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "no reconnect within 5 s: {e}; tunnel: {:?}",
                    t.health()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert!(t.health().is_ok(), "{:?}", t.health());
}

#[test]
fn a_bastion_must_be_an_sftp_connection_with_credentials() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let mut c = pinned(&svc, "not-ssh");
    c.conn_type = ConnType::Postgres;
    let e = Hop::from_connection(&c).unwrap_err();
    assert_eq!(e.kind, Failure::Config);
    assert!(e.message.contains("must be an sftp connection"), "{e}");
    let mut c = pinned(&svc, "no-creds");
    c.password = None;
    let e = Hop::from_connection(&c).unwrap_err();
    assert!(e.message.contains("set a password"), "{e}");
    let c = bastion(&svc, "bad-pin", serde_json::json!({"host_key": "trust me"}));
    let e = Hop::from_connection(&c).unwrap_err();
    assert!(e.message.contains("extra.host_key must be"), "{e}");
    assert!(!e.message.contains("trust me"));
    let debug = format!("{:?}", hop(&pinned(&svc, "dbg")));
    assert!(!debug.contains(svc.get("PASSWORD")), "{debug}");
}

#[test]
fn another_users_process_cannot_use_the_local_port() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    if !std::path::Path::new("/usr/sbin/runuser").exists() || !is_root() {
        eprintln!("SKIPPED: needs root and runuser to connect as another user");
        return;
    }
    let echo = echo_server();
    let t = open(vec![hop(&pinned(&svc, "bastion"))], echo.port()).unwrap();
    let port = t.local_addr().port();
    // The test user (not root) sends a line and prints what comes back.
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'ping\\n' >&3 && timeout 3 head -c 5 <&3"
    );
    let other = std::process::Command::new("/usr/sbin/runuser")
        .args(["-u", svc.get("USER"), "--", "bash", "-c", &script])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&other.stdout).contains("ping"),
        "another user got through the tunnel"
    );
    // The same script as this user works.
    let mine = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mine.stdout), "ping\n");
}

/// Every log line of this test binary (all threads), once a test asked for it.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<&'static std::sync::Mutex<Vec<u8>>> =
        std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static std::sync::Mutex<Vec<u8>> =
            Box::leak(Box::new(std::sync::Mutex::new(Vec::new())));
        struct Sink(&'static std::sync::Mutex<Vec<u8>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || Sink(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        logs
    })
}

#[test]
fn the_logs_name_the_hop_and_hold_no_secret() {
    let Some(svc) = broked_testenv::sftp() else {
        return;
    };
    let Some(mut own) = sshd::OwnSshd::start(svc.get("USER")) else {
        return;
    };
    let logs = captured_logs();
    let c = own_bastion(&svc, &own, "bastion-log");
    let echo = echo_server();
    let t = open(vec![hop(&c)], echo.port()).unwrap();
    assert_eq!(round_trip(t.local_addr(), b"x").unwrap(), b"x");
    // The bastion goes away: the session is lost, and reconnects fail.
    own.stop();
    for _ in 0..2 {
        assert!(round_trip(t.local_addr(), b"y").is_err());
    }
    drop(t);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        text.contains("SSH tunnel: session lost") || text.contains("SSH tunnel: reconnect failed"),
        "{text}"
    );
    assert!(text.contains("bastion \"bastion-log\""), "{text}");
    assert!(
        !text.contains(svc.get("PASSWORD")),
        "a password in the log: {text}"
    );
}
