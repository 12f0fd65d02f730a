//! A schema of its own in the test PostgreSQL database ([`crate::postgres`]), for one test:
//! created with a unique name (`t_<pid>_<n>_<nanos>`), reached through a URL whose
//! `search_path` is that schema, and dropped with everything in it when the value is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Service;

/// See the module docs.
pub struct PgSchema {
    /// The test database, no schema set.
    pub base_url: String,
    /// `base_url` with `options=-c search_path=SCHEMA`: reaches only this schema.
    pub url: String,
    /// The schema's name.
    pub schema: String,
    /// The test user's password (tests check that it never shows).
    pub password: String,
    /// `psql`'s connection arguments, without the password.
    admin: Vec<String>,
}

impl PgSchema {
    /// A fresh schema in the test database; `None` (after saying why) when PostgreSQL is not
    /// configured, a panic when it is required.
    pub fn new() -> Option<PgSchema> {
        Some(PgSchema::in_service(&crate::postgres()?))
    }

    /// A fresh schema in the database of `pg` (the service [`crate::postgres`] returned).
    pub fn in_service(pg: &Service) -> PgSchema {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let schema = format!(
            "t_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let base_url = format!(
            "postgres://{}:{}@{}:{}/{}",
            pg.get("USER"),
            pg.get("PASSWORD"),
            pg.get("HOST"),
            pg.get("PORT"),
            pg.get("DB")
        );
        let admin = ["-h", "HOST", "-p", "PORT", "-U", "USER", "-d", "DB"]
            .chunks(2)
            .flat_map(|kv| [kv[0].to_owned(), pg.get(kv[1]).to_owned()])
            .chain(["-v", "ON_ERROR_STOP=1", "-qc"].map(String::from))
            .collect();
        let s = PgSchema {
            url: format!("{base_url}?options=-c%20search_path%3D{schema}"),
            base_url,
            password: pg.get("PASSWORD").into(),
            admin,
            schema,
        };
        s.psql(&format!("CREATE SCHEMA {}", s.schema));
        s
    }

    /// Runs `sql` with `psql` on the test database as the test user (its search path is not
    /// the schema: name it).
    pub fn psql(&self, sql: &str) {
        if let Err(e) = self.try_psql(sql) {
            panic!("psql: {e}");
        }
    }

    /// [`PgSchema::psql`], with psql's message as the error instead of a panic.
    pub fn try_psql(&self, sql: &str) -> Result<(), String> {
        let out = std::process::Command::new("psql")
            .args(&self.admin)
            .arg(sql)
            .env("PGPASSWORD", &self.password)
            .output()
            .map_err(|e| e.to_string())?;
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    }
}

impl Drop for PgSchema {
    /// Drops the schema; a failure is printed, not raised (the test may be unwinding).
    fn drop(&mut self) {
        if let Err(e) = self.try_psql(&format!("DROP SCHEMA {} CASCADE", self.schema)) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}
