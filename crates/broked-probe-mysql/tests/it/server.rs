//! A private MariaDB (or MySQL) server with TLS, for the tests of what the probe reports about
//! TLS against a real server (issue 16): `mariadb-install-db` under a temporary directory, a
//! free loopback port, a certificate made by the test, and a user that must use TLS
//! (`REQUIRE SSL`). The server runs in the foreground as this test's child and is killed when
//! dropped, also when the test fails. Never the shared server of scripts/test.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broked_testenv::{chown, free_port, is_root};

pub(crate) const USER: &str = "broked_probe_tls";
pub(crate) const PASSWORD: &str = "My-Tls-Pw-5d27";

pub(crate) struct MariaDb {
    child: Child,
    pub(crate) port: u16,
    root: PathBuf,
}

/// The server, its installer and its client, by the names Debian gives them.
struct Tools {
    server: PathBuf,
    install: PathBuf,
    client: PathBuf,
}

fn tools() -> Option<Tools> {
    let find = |names: &[&str]| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs: Vec<PathBuf> = std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/usr/bin".into()])
            .collect();
        names
            .iter()
            .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
            .find(|p| p.is_file())
    };
    Some(Tools {
        server: find(&["mariadbd", "mysqld"])?,
        install: find(&["mariadb-install-db", "mysql_install_db"])?,
        client: find(&["mariadb", "mysql"])?,
    })
}

impl MariaDb {
    /// `None` (the test is skipped, or fails under BROKED_TEST_REQUIRE_SERVICES=1) when no
    /// MariaDB/MySQL server binaries are installed.
    pub(crate) fn start(root: &Path, cert_pem: &str, key_pem: &str) -> Option<MariaDb> {
        let Some(tools) = tools() else {
            let why = "no MariaDB/MySQL server binaries (mariadbd, mariadb-install-db)";
            assert!(!broked_testenv::required(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let data = root.join("data");
        std::fs::write(root.join("server.pem"), cert_pem).unwrap();
        std::fs::write(root.join("server.key"), key_pem).unwrap();
        // mariadbd refuses to run as root: it runs as mysql, which must reach the directory.
        let user: &[&str] = if is_root() {
            chown(root, "mysql:mysql");
            &["--user=mysql"]
        } else {
            &[]
        };
        let out = Command::new(&tools.install)
            .arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "install: {out:?}");
        let port = free_port();
        let socket = root.join("sock");
        let log = root.join("error.log");
        let child = Command::new(&tools.server)
            .arg("--no-defaults")
            .args(user)
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", root.join("pid").display()))
            .arg(format!("--ssl-cert={}", root.join("server.pem").display()))
            .arg(format!("--ssl-key={}", root.join("server.key").display()))
            .arg(format!("--log-error={}", log.display()))
            .args(["--skip-log-bin", "--innodb-buffer-pool-size=16M"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = MariaDb {
            child,
            port,
            root: root.to_owned(),
        };
        server.wait_ready(&socket);
        let sql = format!(
            "CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}' REQUIRE SSL; \
             GRANT ALL ON *.* TO '{USER}'@'127.0.0.1';"
        );
        let out = Command::new(&tools.client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket.display()))
            .args(["-u", "root", "-e", &sql])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "create user: {out:?}");
        Some(server)
    }

    fn wait_ready(&self, socket: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(socket.exists() && TcpStream::connect(("127.0.0.1", self.port)).is_ok()) {
            assert!(
                Instant::now() < deadline,
                "the private MariaDB did not start:\n{}",
                std::fs::read_to_string(self.root.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
