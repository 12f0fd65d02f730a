//! Password rotation's statement for MySQL and MariaDB (issue 20, `docs/rotation.md`), sent
//! over a session made exactly as the probe makes it (the policy's approved addresses, the
//! connection's TLS settings), by the text protocol with the driver's statement logging off.
//!
//! - MariaDB, an account on `mysql_native_password` (MariaDB's default): `SET PASSWORD =
//!   '*<hash>'` for the login's own account, `ALTER USER account IDENTIFIED BY PASSWORD
//!   '*<hash>'` through an admin connection (the `CREATE USER` privilege is enough for it,
//!   where `SET PASSWORD FOR` needs `UPDATE` on the `mysql` database) — only the hash reaches
//!   the server, so its general log and binary log never hold the cleartext ([`Sent::Hash`]).
//!   An admin that may not read the account (`SHOW CREATE USER` needs `SELECT` on `mysql.*`)
//!   cannot tell its plugin: the native hash is sent, which makes an account on another
//!   plugin a `mysql_native_password` one.
//! - MariaDB, an account on another plugin (`ed25519`, …), where a native hash would change
//!   the plugin: `SET PASSWORD = PASSWORD('…')` for the login's own account, `ALTER USER …
//!   IDENTIFIED BY '…'` through an admin connection — the cleartext is in the statement
//!   ([`Sent::Cleartext`]).
//! - MySQL: `ALTER USER … IDENTIFIED BY '…'` ([`Sent::Cleartext`]); MySQL itself rewrites
//!   the password out of its general, slow and binary logs (unless started with `--log-raw`).

use std::net::SocketAddr;

use broked_probe::sql::{self, Instead, Session};
use broked_probe::{Connection, Context, Failure, ProbeError, Probed};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{Connection as _, Row as _};

use crate::{Settings, classify, settings};

/// How the new password reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// As its `mysql_native_password` hash: no cleartext in any server log.
    Hash,
    /// In cleartext inside the statement (see the module docs for where it may be logged).
    Cleartext,
}

/// Sets the password of `account` (`(user, host)`; `None`: the login's own account,
/// `CURRENT_USER()`) to `password`, whose `mysql_native_password` hash is `native_hash`,
/// logged in as `admin` — the connection itself, or an admin connection to the same server.
pub async fn set_password(
    admin: &Connection,
    account: Option<(&str, &str)>,
    password: &str,
    native_hash: &str,
    ctx: &Context,
) -> Result<Sent, ProbeError> {
    let driver = Instead {
        driver: settings(admin)?,
        session: SetPassword {
            account: account.map(|(u, h)| (u.to_owned(), h.to_owned())),
            password: password.to_owned(),
            native_hash: native_hash.to_owned(),
        },
    };
    let done = sql::run(admin, ctx, &driver).await?;
    Ok(if done.detail == "hash" {
        Sent::Hash
    } else {
        Sent::Cleartext
    })
}

/// Whether a server error is a missing privilege (1044 on a database, 1142 on a table, 1227
/// a global one).
fn denied(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|e| matches!(e.number(), 1044 | 1142 | 1227))
}

/// A string literal: `'…'` with `\` and `'` escaped (MySQL reads backslash escapes unless
/// `NO_BACKSLASH_ESCAPES`; doubling `'` works either way, and the generated passwords hold
/// neither character).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Setting the password, over the probe's session instead of its check.
struct SetPassword {
    account: Option<(String, String)>,
    password: String,
    native_hash: String,
}

impl SetPassword {
    fn account_sql(&self) -> String {
        match &self.account {
            None => "CURRENT_USER()".to_owned(),
            Some((user, host)) => format!("{}@{}", literal(user), literal(host)),
        }
    }

    /// The statement for this server, and how it sends the password.
    async fn statement(&self, c: &mut MySqlConnection) -> Result<(String, Sent), sqlx::Error> {
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut *c)
            .await?;
        let account = self.account_sql();
        let cleartext = literal(&self.password);
        if !version.contains("MariaDB") {
            let who = if self.account.is_none() {
                "USER()".to_owned()
            } else {
                account
            };
            return Ok((
                format!("ALTER USER {who} IDENTIFIED BY {cleartext}"),
                Sent::Cleartext,
            ));
        }
        let show = format!("SHOW CREATE USER {account}");
        let native = match sqlx::Executor::fetch_one(&mut *c, show.as_str()).await {
            Ok(row) => row
                .try_get::<String, _>(0)
                .or_else(|_| {
                    row.try_get::<Vec<u8>, _>(0)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })
                .unwrap_or_default()
                .contains("IDENTIFIED BY PASSWORD '*"),
            // An admin with `CREATE USER` alone may change another account (`ALTER USER`)
            // but not read it (`SHOW CREATE USER` needs `SELECT` on `mysql.*`): its plugin is
            // unknown, and MariaDB's default, `mysql_native_password`, is assumed — the
            // cleartext stays out of the statement either way (docs/rotation.md).
            Err(sqlx::Error::Database(db)) if self.account.is_some() && denied(db.as_ref()) => true,
            Err(e) => return Err(e),
        };
        let hash = literal(&self.native_hash);
        Ok(match (native, self.account.is_none()) {
            (true, true) => (format!("SET PASSWORD = {hash}"), Sent::Hash),
            (true, false) => (
                format!("ALTER USER {account} IDENTIFIED BY PASSWORD {hash}"),
                Sent::Hash,
            ),
            (false, true) => (
                format!("SET PASSWORD = PASSWORD({cleartext})"),
                Sent::Cleartext,
            ),
            (false, false) => (
                format!("ALTER USER {account} IDENTIFIED BY {cleartext}"),
                Sent::Cleartext,
            ),
        })
    }

    /// A server's message, without the password or its hash should it echo the statement.
    fn refused(&self, settings: &Settings, db: &dyn sqlx::error::DatabaseError) -> ProbeError {
        let message = db
            .message()
            .replace(&self.password, "********")
            .replace(&self.native_hash, "********");
        let who = match &self.account {
            None => format!("user {}", settings.target.user),
            Some((user, host)) => format!("account {user}@{host}"),
        };
        ProbeError::new(
            Failure::Other,
            format!("the server refused to change the password of {who}: {message}"),
        )
    }
}

impl Session<Settings> for SetPassword {
    async fn query(
        &self,
        settings: &Settings,
        opts: MySqlConnectOptions,
        addr: SocketAddr,
    ) -> Result<Probed, ProbeError> {
        let mut c = MySqlConnection::connect_with(&opts)
            .await
            .map_err(|e| classify(&e, settings, addr))?;
        let done = match self.statement(&mut c).await {
            Ok((statement, sent)) => sqlx::Executor::execute(&mut c, statement.as_str())
                .await
                .map(|_| sent),
            Err(e) => Err(e),
        };
        let _ = c.close().await;
        match done {
            Ok(Sent::Hash) => Ok(Probed::without_tls("hash")),
            Ok(Sent::Cleartext) => Ok(Probed::without_tls("cleartext")),
            Err(sqlx::Error::Database(db)) => Err(self.refused(settings, db.as_ref())),
            Err(e) => Err(classify(&e, settings, addr)),
        }
    }
}
