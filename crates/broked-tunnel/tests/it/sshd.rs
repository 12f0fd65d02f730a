//! A test's own OpenSSH server: its own config, host key and port under a temp dir, for the
//! chain and restart tests (the suite's shared sshd is never restarted by a test). The user is
//! the suite's `broked_sftp` (scripts/services/sshd.sh made it, with its password and key).
//! Stopped, with every session process it forked, when dropped.
//!
//! Also used by broked-connections' tests (`#[path]`).

#![allow(dead_code, unreachable_pub)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct OwnSshd {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
}

impl OwnSshd {
    /// Starts a server for `user` on a free loopback port; `None` (with a note) when
    /// `/usr/sbin/sshd` is missing.
    pub fn start(user: &str) -> Option<OwnSshd> {
        if !Path::new("/usr/sbin/sshd").exists() {
            eprintln!("SKIPPED: /usr/sbin/sshd is not installed");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("host_ed25519");
        let ok = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "broked-own-sshd",
                "-f",
            ])
            .arg(&key)
            .status()
            .expect("ssh-keygen runs")
            .success();
        assert!(ok, "ssh-keygen failed");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {key}\nPidFile {pid}\nAllowUsers {user}\n\
             PermitRootLogin no\nPasswordAuthentication yes\nPermitEmptyPasswords no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AuthorizedKeysFile .ssh/authorized_keys\nUsePAM no\nX11Forwarding no\n\
             AllowTcpForwarding local\nAllowAgentForwarding no\nPermitTTY no\nPrintMotd no\n\
             LogLevel VERBOSE\n",
            key = key.display(),
            pid = dir.path().join("sshd.pid").display(),
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        let mut s = OwnSshd {
            dir,
            port,
            child: None,
        };
        s.launch();
        Some(s)
    }

    /// The public host key line (`ssh-ed25519 AAAA…`).
    pub fn host_key(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("host_ed25519.pub")).unwrap();
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    fn launch(&mut self) {
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(self.config())
            .arg("-E")
            .arg(self.dir.path().join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("sshd starts");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "own sshd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server and every process it forked (the sessions), as a crash or a reboot
    /// of the bastion would.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut pids = descendants(child.id());
        pids.push(child.id());
        for pid in pids {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        let _ = child.wait();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops and starts the server on the same port with the same host key.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for OwnSshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every process below `root` (children, grandchildren…), from `/proc/*/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may hold spaces; split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == p && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}
