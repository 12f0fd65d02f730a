//! A private PostgreSQL cluster with TLS, for the tests of what the probe reports about TLS
//! against a real server (issue 16). `initdb` under a temporary directory, a free loopback
//! port, a certificate made by the test, and only `hostssl` lines in `pg_hba.conf`. Stopped
//! (`pg_ctl stop -m immediate`) when dropped, also when the test fails. Never the shared
//! cluster of scripts/test.
//!
//! The same steps as `PgCluster` in tests/e2e/tls.rs (the store's TLS), kept here because
//! test helpers cannot be shared between the e2e binary and a crate's integration tests
//! without a library for them. tests/e2e/safe_defaults.rs includes this file (`#[path]`) for
//! the same check through the server and the CLI.

use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) const USER: &str = "broked_probe_tls";
pub(crate) const PASSWORD: &str = "Probe-Tls-Pw-91c4";

pub(crate) struct PgCluster {
    bindir: PathBuf,
    data: PathBuf,
    pub(crate) port: u16,
    /// `runuser -u postgres --` when the tests run as root (PostgreSQL refuses to).
    as_postgres: bool,
}

impl PgCluster {
    /// `None` (the test is skipped, or fails under BROKED_TEST_REQUIRE_SERVICES=1) when no
    /// PostgreSQL server binaries are installed.
    pub(crate) fn start(root: &Path, cert_pem: &str, key_pem: &str) -> Option<PgCluster> {
        let Some(bindir) = pg_bindir() else {
            let why = "no PostgreSQL server binaries (initdb, pg_ctl) on this machine";
            assert!(!broked_testenv::required(), "{why}");
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let as_postgres = is_root();
        let data = root.join("pgdata");
        let pwfile = root.join("pgpass.txt");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if as_postgres {
            chown_postgres(root);
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
                USER,
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ],
        );
        std::fs::remove_file(&pwfile).unwrap();
        cluster.write_tls(cert_pem, key_pem);
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             fsync = off\nmax_connections = 20\nshared_buffers = 16MB\n",
            cluster.port,
            cluster.data.display()
        );
        append(&cluster.data.join("postgresql.conf"), &conf);
        std::fs::write(
            cluster.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        if as_postgres {
            chown_postgres(&cluster.data);
        }
        let log = cluster.data.join("server.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                cluster.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Some(cluster)
    }

    fn write_tls(&self, cert_pem: &str, key_pem: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(self.data.join("server.crt"), cert_pem).unwrap();
        let key = self.data.join("server.key");
        std::fs::write(&key, key_pem).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bindir.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .env_remove("PGPASSWORD")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
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
        let exe = self.bindir.join("pg_ctl");
        let data = self.data.to_str().unwrap();
        let args = ["-D", data, "-m", "immediate", "-w", "stop"];
        let status = if self.as_postgres {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&exe).args(args).output()
        };
        if !status.is_ok_and(|o| o.status.success()) {
            eprintln!("could not stop the test cluster in {data}");
        }
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn chown_postgres(path: &Path) {
    let out = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chown: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
