//! Password rotation tests' PostgreSQL roles (issue 20): a login role of the test's own in the
//! test PostgreSQL, a member of `broked_rotation`, whose logins pg_hba.conf checks by password
//! (scripts/services/postgres.sh), driven with `psql`; and the stored password of a connection.

use std::process::Command;

use crate::{Server, env};

/// A login role of the test's own in the test PostgreSQL, dropped on drop.
pub struct PgRole {
    pub pg: env::Service,
    pub name: String,
}

impl PgRole {
    /// A new role `PREFIX_PID_NANOS` with `password`.
    pub fn new(pg: env::Service, prefix: &str, password: &str) -> PgRole {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let role = PgRole {
            pg,
            name: format!("{prefix}_{}_{nanos}", std::process::id()),
        };
        role.admin(&format!(
            "CREATE ROLE {} LOGIN PASSWORD '{password}' IN ROLE broked_rotation",
            role.name
        ));
        role
    }

    fn psql(&self, user: &str, password: &str, sql: &str) -> std::process::Output {
        Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.pg.get("HOST"))
            .arg("-p")
            .arg(self.pg.get("PORT"))
            .arg("-U")
            .arg(user)
            .arg("-d")
            .arg(self.pg.get("DB"))
            .arg("-c")
            .arg(sql)
            .env("PGPASSWORD", password)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run psql")
    }

    /// Runs `sql` as the test suite's PostgreSQL user.
    pub fn admin(&self, sql: &str) {
        let out = self.psql(self.pg.get("USER"), self.pg.get("PASSWORD"), sql);
        assert!(
            out.status.success(),
            "psql as the admin: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether `password` logs in as the role now (a new session).
    pub fn logs_in(&self, password: &str) -> bool {
        let out = self.psql(&self.name, password, "SELECT 1");
        if out.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("password authentication failed"),
            "not an authentication failure: {err}"
        );
        false
    }
}

impl Drop for PgRole {
    fn drop(&mut self) {
        let out = self.psql(
            self.pg.get("USER"),
            self.pg.get("PASSWORD"),
            &format!("DROP ROLE IF EXISTS {}", self.name),
        );
        if !out.status.success() {
            eprintln!("could not drop role {}", self.name);
        }
    }
}

/// The stored password of `conn_id` (`broked connections get --uri`: the one place it shows).
pub fn stored_password(server: &Server, conn_id: &str) -> String {
    let out = crate::broked(
        &server.dir.join("broked.db"),
        &["connections", "get", conn_id, "--uri"],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uri = String::from_utf8(out.stdout).expect("a URI");
    // postgres://login:PASSWORD@host:port/db?… — a rotated password is [A-Za-z0-9].
    let userinfo = uri
        .trim()
        .strip_prefix("postgres://")
        .and_then(|rest| rest.split_once('@'))
        .map(|(userinfo, _)| userinfo.to_owned())
        .expect("credentials in the URI");
    userinfo.split_once(':').expect("a password").1.to_owned()
}
