//! A private PostgreSQL cluster for one test: `initdb` under a directory the test owns, a free
//! loopback port, password (SCRAM) authentication for one user, and either TLS with a
//! certificate made by the test and only `hostssl` lines in `pg_hba.conf` (a TCP connection
//! without TLS is refused by the server itself), or no TLS at all. Stopped
//! (`pg_ctl stop -m immediate`) when dropped, also when the test fails. Never the shared
//! cluster of scripts/test.
//!
//! Used by the PostgreSQL probe's tests (what the probe reports about TLS), the end-to-end
//! tests of the store's TLS and of `verify-full` through the server, and the library's test of
//! a PostgreSQL store that goes down and comes back ([`PgCluster::stop`],
//! [`PgCluster::start_again`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::host::{chown, free_port, is_root};

/// A running private cluster; see the module docs.
pub struct PgCluster {
    bindir: PathBuf,
    data: PathBuf,
    /// Its loopback port (127.0.0.1).
    pub port: u16,
    /// `runuser -u postgres --` when the tests run as root (PostgreSQL refuses to).
    as_postgres: bool,
}

impl PgCluster {
    /// The cluster's one user, its superuser.
    pub const USER: &str = "broked_test_cluster";
    /// [`PgCluster::USER`]'s password.
    pub const PASSWORD: &str = "Pg-Cluster-Pw-6e0b";

    /// A cluster with TLS (`cert_pem`, `key_pem`) and `hostssl` lines only, under `root`
    /// (which must outlive it).
    ///
    /// `None` (the test is skipped, or fails under BROKED_TEST_REQUIRE_SERVICES=1) when no
    /// PostgreSQL server binaries are installed.
    pub fn start(root: &Path, cert_pem: &str, key_pem: &str) -> Option<PgCluster> {
        PgCluster::init(root, Some((cert_pem, key_pem)))
    }

    /// A cluster without TLS (`host` lines), under `root`; `None` as for [`PgCluster::start`].
    pub fn start_without_tls(root: &Path) -> Option<PgCluster> {
        PgCluster::init(root, None)
    }

    fn init(root: &Path, tls: Option<(&str, &str)>) -> Option<PgCluster> {
        let Some(bindir) = pg_bindir() else {
            let why = "no PostgreSQL server binaries (initdb, pg_ctl) on this machine";
            assert!(!crate::required(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let as_postgres = is_root();
        let data = root.join("pgdata");
        let pwfile = root.join("pgpass.txt");
        std::fs::write(&pwfile, PgCluster::PASSWORD).unwrap();
        if as_postgres {
            chown(root, "postgres:postgres");
        }
        let cluster = PgCluster {
            bindir,
            data,
            port: free_port(),
            as_postgres,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                cluster.data.to_str().unwrap(),
                "-U",
                PgCluster::USER,
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ],
        );
        std::fs::remove_file(&pwfile).unwrap();
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 30\nshared_buffers = 16MB\n",
            cluster.port,
            cluster.data.display()
        );
        let host = if let Some((cert_pem, key_pem)) = tls {
            cluster.write_tls(cert_pem, key_pem);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            "hostssl"
        } else {
            "host"
        };
        append(&cluster.data.join("postgresql.conf"), &conf);
        std::fs::write(
            cluster.data.join("pg_hba.conf"),
            format!("local all all trust\n{host} all all 127.0.0.1/32 scram-sha-256\n"),
        )
        .unwrap();
        cluster.start_again();
        Some(cluster)
    }

    /// `postgres://USER:PASSWORD@127.0.0.1:PORT/postgres`, then `?QUERY` unless `query` is
    /// empty.
    pub fn url(&self, query: &str) -> String {
        let url = format!(
            "postgres://{}:{}@127.0.0.1:{}/postgres",
            PgCluster::USER,
            PgCluster::PASSWORD,
            self.port
        );
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }

    /// What the server has logged so far (`server.log` in its data directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    /// Replaces the server's certificate and key and has PostgreSQL read them again.
    pub fn replace_certificate(&self, cert_pem: &str, key_pem: &str) {
        self.write_tls(cert_pem, key_pem);
        if self.as_postgres {
            chown(&self.data, "postgres:postgres");
        }
        self.run("pg_ctl", &["-D", self.data.to_str().unwrap(), "reload"]);
    }

    /// Stops the server (`pg_ctl stop -m fast`), waiting until it is down; the data stay.
    pub fn stop(&self) {
        let data = self.data.to_str().unwrap();
        self.run("pg_ctl", &["-D", data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts the server (again, after [`PgCluster::stop`]), waiting until it accepts
    /// connections, on the same port.
    pub fn start_again(&self) {
        if self.as_postgres {
            chown(&self.data, "postgres:postgres");
        }
        let log = self.data.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    fn write_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(self.data.join("server.crt"), cert_pem).unwrap();
        let key = self.data.join("server.key");
        std::fs::write(&key, key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn command(&self, tool: &str) -> std::process::Command {
        let exe = self.bindir.join(tool);
        if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .env_remove("PGPASSWORD")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.bindir.join(tool).display()));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap();
        let out = self
            .command("pg_ctl")
            .args(["-D", data, "-m", "immediate", "-w", "stop"])
            .output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("could not stop the test cluster in {data}");
        }
    }
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, Debian's newest
/// `/usr/lib/postgresql/N/bin`, or the PATH.
fn pg_bindir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").exists() && d.join("pg_ctl").exists();
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_tools(d))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Some(dir);
    }
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| has_tools(d)))
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
