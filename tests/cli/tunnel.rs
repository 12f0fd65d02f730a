//! `broked connections tunnel ID` (issue 21): the real binary keeps an SSH tunnel through the
//! suite's sshd to the suite's PostgreSQL open in the foreground, prints the local URI without
//! the password (with it only under --show-password), and closes on SIGTERM and on Ctrl-C.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use broked_tests::bin;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::run_broked;

/// Starts the tunnel; returns it with its stdout and the first line printed.
fn start(db: &std::path::Path, args: &[&str]) -> (Child, BufReader<ChildStdout>, String) {
    let mut child = Command::new(bin("broked"))
        .arg("--db")
        .arg(db)
        .args(["connections", "tunnel"])
        .args(args)
        .env_remove("BROKED_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn broked");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (child, out, line.trim().to_owned())
}

/// Stops the tunnel with `signal`: it exits 0 within 5 s; returns its stderr.
fn stop(mut child: Child, signal: Signal) -> String {
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the tunnel did not close on {signal}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("tunnel closed"), "{stderr}");
    stderr
}

/// PostgreSQL answers an SSLRequest with one byte, `S` or `N`: proof that the bytes crossed
/// the tunnel to a PostgreSQL server.
fn speaks_postgres(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]);
    let mut b = [0u8; 1];
    s.read_exact(&mut b).is_ok() && (b[0] == b'S' || b[0] == b'N')
}

fn port_of(uri: &str) -> u16 {
    let after = uri.split("@127.0.0.1:").nth(1).expect("a local URI");
    after
        .split(['/', '?'])
        .next()
        .unwrap()
        .parse()
        .expect("a port")
}

#[test]
fn tunnel_prints_the_local_uri_and_closes_on_sigterm_and_ctrl_c() {
    let (Some(ssh), Some(pg)) = (broked_testenv::sftp(), broked_testenv::postgres()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("broked.db");
    let extra = dir.path().join("bastion-extra.json");
    std::fs::write(
        &extra,
        serde_json::json!({"host_key": ssh.get("HOST_KEY")}).to_string(),
    )
    .unwrap();
    let port = ssh.port().to_string();
    run_broked(
        &db,
        &[
            "connections",
            "add",
            "bastion",
            "--type",
            "sftp",
            "--host",
            ssh.get("HOST"),
            "--port",
            &port,
            "--login",
            ssh.get("USER"),
            "--password-stdin",
            "--extra",
            &format!("@{}", extra.display()),
        ],
        Some(ssh.get("PASSWORD")),
    )
    .ok();
    let pg_extra = dir.path().join("pg-extra.json");
    std::fs::write(&pg_extra, r#"{"ssh_tunnel":"bastion","sslmode":"disable"}"#).unwrap();
    let pg_port = pg.port().to_string();
    run_broked(
        &db,
        &[
            "connections",
            "add",
            "pg",
            "--type",
            "postgres",
            "--host",
            pg.get("HOST"),
            "--port",
            &pg_port,
            "--schema",
            pg.get("DB"),
            "--login",
            pg.get("USER"),
            "--password-stdin",
            "--extra",
            &format!("@{}", pg_extra.display()),
        ],
        Some(pg.get("PASSWORD")),
    )
    .ok();

    let (child, _out, uri) = start(&db, &["pg"]);
    assert_eq!(
        uri,
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            pg.get("USER"),
            port_of(&uri),
            pg.get("DB")
        )
    );
    let local = port_of(&uri);
    assert!(speaks_postgres(local), "no PostgreSQL behind {uri}");
    let stderr = stop(child, Signal::SIGTERM);
    for text in [&uri, &stderr] {
        assert!(!text.contains(pg.get("PASSWORD")), "{text}");
        assert!(!text.contains(ssh.get("PASSWORD")), "{text}");
    }
    assert!(
        stderr.contains("via bastion") && stderr.contains("--show-password"),
        "{stderr}"
    );
    assert!(!speaks_postgres(local), "the port closes with the tunnel");

    // --show-password: the full URI, which a client can use as it is; Ctrl-C closes it.
    let (child, mut out, mut doc) = start(&db, &["pg", "--show-password", "--output", "json"]);
    // The JSON document spans several lines: read up to its end.
    while !doc.trim_end().ends_with('}') {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "{doc}");
        doc.push_str(&line);
    }
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["bastions"], serde_json::json!(["bastion"]));
    let uri = v["uri"].as_str().unwrap();
    assert_eq!(v["local_port"].as_u64(), Some(u64::from(port_of(uri))));
    assert!(uri.contains("sslmode=disable"), "{uri}");
    assert!(
        uri.starts_with(&format!("postgres://{}:", pg.get("USER"))),
        "the password is in the URI"
    );
    assert!(speaks_postgres(port_of(uri)));
    stop(child, Signal::SIGINT);

    // A connection without a tunnel: nothing to keep open.
    run_broked(
        &db,
        &[
            "connections",
            "add",
            "direct",
            "--type",
            "generic",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--no-password",
        ],
        None,
    )
    .ok();
    let r = run_broked(&db, &["connections", "tunnel", "direct"], None).fails(1);
    assert!(r.stderr.contains("has no extra.ssh_tunnel"), "{}", r.stderr);
}
