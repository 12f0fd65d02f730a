//! Password rotation on the database server itself (issue 20, `docs/rotation.md`):
//! [`Connections::rotate_password`] makes a new random password, sets it on the server,
//! checks that a fresh login works with it, and stores it through the normal update path
//! (a new version, an audit record); [`Connections::resolve_fresh`] and
//! [`Connections::with_fresh_retry`] let an engine ride through a rotation without a failed
//! run.
//!
//! **Never inconsistent.** Before the server is changed, a journal entry (the old and the
//! new password, sealed by the keyring, never plaintext) goes into the store's `meta`
//! setting [`JOURNAL`]; it is removed once the new password is stored. Any failure after
//! that point ends in [`Connections::settle`]: whichever of the stored, new or old password
//! logs in is made the stored one, and the server is set back to the stored password when
//! only that can be arranged. A process that dies in between leaves the entry; the next
//! rotation of that connection, [`Connections::recover_rotations`] (the server runs it at
//! start and every minute) or the CLI settles it, and reports what it did.
//!
//! **Dual-role mode** (`extra.rotation_roles = ["etl_a", "etl_b"]`, the alternating users of
//! Vault and AWS): the login is one of the two roles; a rotation sets the new password on the
//! other role through the admin connection, checks a login as that role, and stores the other
//! role and its password as the connection's login and password in one new version. The role
//! in use keeps its password, so sessions and URIs resolved before the switch keep working
//! until that role's own next rotation.
//!
//! **Whose password an admin changes.** Through an admin connection (`extra.rotation_conn_id`)
//! only a role the admin connection lists in its `extra.rotation_allowed_roles`, or — one role
//! rotated as the connection's own login — a role whose stored password logs in first (the
//! connection proves it holds the role). Never the admin's own login. See `docs/security.md`.
//!
//! **One at a time.** Rotations of one connection are serialized across processes and
//! replicas by the store's named lock `password-rotation.<conn_id>`
//! ([`broked_store::Store::lock_named`]); the journal's read-modify-write has its own lock.
//!
//! Not here: the SQL (in `broked-probe-postgres` and `broked-probe-mysql`, over the probes'
//! sessions: the same policy, TLS and timeouts), the random password and the verifiers
//! (`broked-crypto`).

use std::sync::Arc;
use std::time::Duration;

use broked_core::{ConnType, Connection, Secret};
use serde_json::{Map, Value, json};

use crate::actor::Actor;
use crate::connections::Connections;
use crate::error::{Error, store_err};
use crate::info::now;
use crate::resolve::Resolved;
use crate::update::{ConnectionUpdate, SecretUpdate, UpdateMode};

/// The `meta` setting that holds the journal: a JSON object of conn_id → entry.
pub const JOURNAL: &str = "password_rotation.journal";

/// The named lock around the journal's read-modify-write.
const JOURNAL_LOCK: &str = "password-rotation.journal";

/// Length of a generated password: 32 characters of `[A-Za-z0-9]` (190 bits), for every
/// type — short enough for MySQL (32 is its historical limit for user names, not passwords,
/// and MariaDB's native hash has no limit) and within PostgreSQL's.
pub const PASSWORD_LEN: usize = 32;

/// The `extra` key naming an admin connection (same type, host and port) that sets the
/// password, for a role that may not change its own.
pub const ROTATION_CONN_KEY: &str = "rotation_conn_id";

/// The `extra` key with the host part of a MySQL/MariaDB account changed through an admin
/// connection (`'login'@'HOST'`); default `%`.
pub const ROTATION_ACCOUNT_HOST_KEY: &str = "rotation_account_host";

/// A test hook (`docs/rotation.md`): `fail-store` makes the store write fail as if the store
/// were down; `hold-after-alter` prints [`FAULT_POINT`] to standard error after the server
/// accepted the new password and waits 60 s, so a test can kill the process there. Read only
/// in a build with the cargo feature `test-hooks` (the tests' dev-dependencies); any other
/// build ignores the variable.
pub const FAULT_VAR: &str = "BROKED_TEST_ROTATION_FAULT";

/// What `hold-after-alter` prints (no value in it).
pub const FAULT_POINT: &str = "broked: rotation fault point reached";

/// How many times the store write is tried before the server is set back.
const STORE_ATTEMPTS: u32 = 3;

/// A finished rotation. No secret in it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RotationReport {
    pub conn_id: String,
    /// The role (PostgreSQL) or account (MySQL/MariaDB) whose password changed: the
    /// connection's login now.
    pub role: String,
    /// Dual-role mode (`extra.rotation_roles`): the role the connection logged in as before
    /// the switch, whose password was left as it was. `None` in single-role mode.
    pub previous_role: Option<String>,
    /// The admin connection that changed it (`extra.rotation_conn_id`), if any.
    pub via: Option<String>,
    /// How the new password reached the server.
    pub sent_as: SentAs,
    /// RFC 3339.
    pub rotated_at: String,
    /// Unfinished rotations of this connection found in the journal and settled first.
    pub recovered: Vec<Recovery>,
}

/// How the new password reached the server being rotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentAs {
    /// PostgreSQL: a SCRAM-SHA-256 verifier; the cleartext never left this process.
    ScramVerifier,
    /// MariaDB (`mysql_native_password` accounts): the native hash.
    NativeHash,
    /// MySQL, and MariaDB accounts on other plugins: in cleartext inside the statement.
    Cleartext,
}

impl SentAs {
    /// `scram-sha-256-verifier`, `mysql-native-hash`, `cleartext`.
    pub fn as_str(self) -> &'static str {
        match self {
            SentAs::ScramVerifier => "scram-sha-256-verifier",
            SentAs::NativeHash => "mysql-native-hash",
            SentAs::Cleartext => "cleartext",
        }
    }
}

/// What settling an unfinished rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub conn_id: String,
    pub outcome: RecoveryOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// The new password logs in and is now the stored one.
    Completed,
    /// The stored password logs in (the server was not changed, or was set back).
    Kept,
    /// Nothing could be settled yet (the server unreachable, no password logs in); the
    /// journal entry stays for the next attempt. The reason has no secret in it.
    Unsettled(String),
}

impl RecoveryOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            RecoveryOutcome::Completed => "completed",
            RecoveryOutcome::Kept => "kept",
            RecoveryOutcome::Unsettled(_) => "unsettled",
        }
    }
}

/// One journal entry, opened.
struct Entry {
    /// The stored password when the rotation began (the password of `login`).
    old: Option<Secret>,
    /// The new password (of `role`).
    new: Secret,
    /// Dual-role mode: the role given the new password (sealed in the journal: it comes from
    /// the extra). `None`: the connection's login.
    role: Option<String>,
    /// Dual-role mode: the login when the rotation began, whose password `old` is.
    login: Option<String>,
}

/// The sealed values of a journal entry.
const LABELS: [&str; 4] = ["old", "new", "role", "login"];

/// What a rotation needs of a connection: which role, through which login.
struct Plan {
    conn: Connection,
    /// The connection that logs in to change the password: `conn` or the admin connection.
    admin: Connection,
    via: Option<String>,
    /// The role whose password changes.
    role: String,
    /// Dual-role mode: the role in use (the login), which the rotation switches away from.
    previous: Option<String>,
    /// MySQL through an admin: the account's host.
    account_host: Option<String>,
    /// Through an admin: whether it lists `role` in its `extra.rotation_allowed_roles`.
    /// Otherwise the stored password must log in as the role before the admin changes it.
    allowed: bool,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::Invalid(broked_core::ValidationErrors(vec![
        broked_core::FieldError {
            field,
            message: message.into(),
        },
    ]))
}

fn failed(conn_id: &str, reason: impl Into<String>) -> Error {
    Error::Rotation {
        conn_id: conn_id.to_owned(),
        reason: reason.into(),
    }
}

impl Connections {
    /// Rotates the password of `conn_id` on its database server (PostgreSQL, MySQL,
    /// MariaDB) and stores the new one; see the module docs. Waits while another process
    /// rotates the same connection. On success the next resolve, in every process, returns
    /// the new password (the store's generation moves with the write).
    ///
    /// Errors: [`Error::Invalid`] naming the field when the connection cannot be rotated
    /// (its type, no login, an unusable `extra.rotation_conn_id`); [`Error::Rotation`] when
    /// the server refused or the new password did not log in — then the stored password is
    /// the one that logs in, as the message says.
    pub async fn rotate_password(&self, conn_id: &str) -> Result<RotationReport, Error> {
        self.rotate_password_as(&Actor::library(), conn_id).await
    }

    pub(crate) async fn rotate_password_as(
        &self,
        actor: &Actor,
        conn_id: &str,
    ) -> Result<RotationReport, Error> {
        let result = async {
            // Checked before waiting for anyone.
            self.plan(conn_id)?;
            let _lock = self.lock_connection(conn_id, true).await?;
            self.rotate_locked(actor, conn_id).await
        }
        .await;
        self.after_rotation(actor, conn_id, false, &result);
        result
    }

    /// The rotation itself, the per-connection lock held by the caller. No bookkeeping
    /// ([`Connections::after_rotation`] does it).
    pub(crate) async fn rotate_locked(
        &self,
        actor: &Actor,
        conn_id: &str,
    ) -> Result<RotationReport, Error> {
        let recovered = match self.journal_entry(conn_id)? {
            Some(entry) => vec![Recovery {
                conn_id: conn_id.to_owned(),
                outcome: self.settle(actor, conn_id, &entry).await?,
            }],
            None => Vec::new(),
        };
        let plan = self.plan(conn_id)?;
        if plan.via.is_some() && !plan.allowed {
            self.proves_the_role(&plan).await?;
        }
        let new = Secret::new(broked_crypto::random_password(PASSWORD_LEN)?.as_str());
        let entry = Entry {
            old: plan.conn.password.clone(),
            new: new.clone(),
            role: plan.previous.as_ref().map(|_| plan.role.clone()),
            login: plan.previous.clone(),
        };
        self.write_journal(conn_id, Some(&entry))?;
        match &plan.previous {
            // The role not in use is named only once it is the login (it comes from extra).
            Some(_) => tracing::info!(
                conn_id,
                "rotating the password of the role not in use (extra.rotation_roles) on the server"
            ),
            None => {
                tracing::info!(conn_id, role = %plan.role, "rotating the password on the server")
            }
        }
        let sent_as = match self.set_on_server(&plan, &new).await {
            Ok(s) => s,
            Err(reason) => {
                // The statement may have been applied even so (an answer lost on the way).
                let outcome = self.settle(actor, conn_id, &entry).await?;
                return Err(failed(conn_id, after(&reason, &outcome)));
            }
        };
        fault_after_alter();
        let mut with_new = plan.conn.clone();
        with_new.password = Some(new.clone());
        with_new.login = Some(plan.role.clone());
        let login = self.registry.test(&with_new).await;
        if !login.success {
            let reason = format!(
                "the server accepted the new password, but a login with it failed: {}",
                login.message
            );
            let outcome = self.settle(actor, conn_id, &entry).await?;
            return Err(failed(conn_id, after(&reason, &outcome)));
        }
        let mut last = None;
        for attempt in 0..STORE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let stored = match &plan.previous {
                None => self.store_password(actor, conn_id, &new),
                Some(_) => self.store_switch(actor, conn_id, &plan.role, &new),
            };
            match stored {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            let reason = format!("the new password could not be stored ({e})");
            let outcome = self.settle(actor, conn_id, &entry).await?;
            return Err(failed(conn_id, after(&reason, &outcome)));
        }
        if let Err(e) = self.write_journal(conn_id, None) {
            // The new password is stored and logs in: the entry is settled as Completed by
            // the next recovery.
            tracing::warn!(conn_id, error = %e, "the rotation journal entry could not be removed");
        }
        tracing::info!(
            conn_id,
            role = %plan.role,
            previous_role = plan.previous.as_deref().unwrap_or(""),
            sent_as = sent_as.as_str(),
            "password rotated"
        );
        Ok(RotationReport {
            conn_id: conn_id.to_owned(),
            role: plan.role,
            previous_role: plan.previous,
            via: plan.via,
            sent_as,
            rotated_at: now(),
            recovered,
        })
    }

    /// Settles every unfinished rotation in the journal whose connection no process is
    /// rotating now (a crash between the server change and the store write), and reports
    /// each. The server calls it at start and every minute; `rotate_password` settles its
    /// own connection first.
    pub async fn recover_rotations(&self) -> Result<Vec<Recovery>, Error> {
        let actor = Actor::named("rotation-recovery");
        let mut out = Vec::new();
        for conn_id in self.pending_rotations()? {
            let Some(_lock) = self.lock_connection(&conn_id, false).await? else {
                continue;
            };
            let Some(entry) = self.journal_entry(&conn_id)? else {
                continue;
            };
            let outcome = self.settle(&actor, &conn_id, &entry).await?;
            out.push(Recovery { conn_id, outcome });
        }
        Ok(out)
    }

    /// The conn_ids with an unfinished rotation in the journal (one store read).
    pub fn pending_rotations(&self) -> Result<Vec<String>, Error> {
        Ok(self.journal()?.keys().cloned().collect())
    }

    /// [`Connections::resolve`] without the cache: waits while a rotation of `conn_id` is in
    /// progress (in any process), then reads the stored row. What an engine calls when a
    /// login with a resolved password fails ([`Connections::with_fresh_retry`]). The cache
    /// gets the row if it is newer than the cached one.
    pub fn resolve_fresh(&self, conn_id: &str) -> Result<Arc<Resolved>, Error> {
        broked_core::ConnId::new(conn_id).map_err(|_| Error::NotFound(conn_id.to_owned()))?;
        // Held for no time: only to wait for a rotation in progress to end.
        drop(
            self.store
                .lock_named(&lock_name(conn_id))
                .map_err(store_err)?,
        );
        let load = |id: &str| {
            let row = self.stored(id)?;
            Ok((row.version, self.decrypt(&row)?))
        };
        self.resolver
            .resolve_fresh(self.store.as_ref(), &load, conn_id)
    }

    /// Runs `work` with the resolved `conn_id`; if it fails with an error that `is_auth`
    /// calls an authentication failure, resolves again with [`Connections::resolve_fresh`]
    /// (waiting for a rotation in progress) and runs `work` once more. What an engine wraps
    /// each connect in so that a password rotation never fails a run:
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let connections = broked_connections::Connections::open("broked.db")?;
    /// # fn connect(_: &str) -> Result<(), std::io::Error> { Ok(()) }
    /// let rows = connections.with_fresh_retry(
    ///     "prod-postgres",
    ///     |resolved| connect(resolved.uri.expose()),
    ///     |e| e.kind() == std::io::ErrorKind::PermissionDenied,
    /// )?;
    /// # Ok(()) }
    /// ```
    ///
    /// For SQL drivers, [`is_auth_failure_code`] tells authentication failures by their
    /// SQLSTATE or error number.
    pub fn with_fresh_retry<T, E>(
        &self,
        conn_id: &str,
        mut work: impl FnMut(&Resolved) -> Result<T, E>,
        is_auth: impl Fn(&E) -> bool,
    ) -> Result<T, RetryError<E>> {
        let resolved = self.resolve(conn_id).map_err(RetryError::Resolve)?;
        match work(&resolved) {
            Err(e) if is_auth(&e) => {
                tracing::info!(
                    conn_id,
                    "login failed with the resolved password: resolving again (a rotation?)"
                );
                let fresh = self.resolve_fresh(conn_id).map_err(RetryError::Resolve)?;
                work(&fresh).map_err(RetryError::Work)
            }
            other => other.map_err(RetryError::Work),
        }
    }

    // ---- internals ----

    /// Checks that `conn_id` can be rotated and reads what it takes.
    fn plan(&self, conn_id: &str) -> Result<Plan, Error> {
        let conn = self.decrypt(&self.stored(conn_id)?)?;
        // The new password is stored through today's rules, after the server took it: a row
        // they refuse (saved before a rule, as extra.rotate_every's check on save) is refused
        // here, before anything changes.
        revalidate(&conn)?;
        if !matches!(conn.conn_type, ConnType::Postgres | ConnType::Mysql) {
            return Err(invalid(
                "type",
                format!(
                    "password rotation works on postgres and mysql connections, not {}",
                    conn.conn_type.as_str()
                ),
            ));
        }
        let role = match conn.login.as_deref().map(str::trim) {
            Some(l) if !l.is_empty() => l.to_owned(),
            _ => {
                return Err(invalid(
                    "login",
                    "the connection has no login: set the role whose password is rotated",
                ));
            }
        };
        if self.registry.policy().is_disabled() {
            return Err(invalid(
                "type",
                "connection testing is disabled, and a rotation must check the new password \
                 with a login: enable testing to rotate passwords",
            ));
        }
        let extra = extra_map(&conn);
        if crate::ssh_tunnel_refs(conn.extra.as_ref().map(Secret::expose))
            .is_ok_and(|r| !r.is_empty())
        {
            return Err(invalid(
                "extra",
                "password rotation through an SSH tunnel (extra.ssh_tunnel) is not supported yet",
            ));
        }
        let key = |name: &'static str| {
            broked_core::rotation_key(&extra, name).map_err(|e| invalid("extra", e))
        };
        let account_host = match key(ROTATION_ACCOUNT_HOST_KEY)? {
            None => None,
            Some(Value::String(h)) if !h.is_empty() => Some(h.clone()),
            Some(_) => {
                return Err(invalid(
                    "extra",
                    format!("extra.{ROTATION_ACCOUNT_HOST_KEY} must be a non-empty string"),
                ));
            }
        };
        let (admin, via) = match key(ROTATION_CONN_KEY)? {
            None => (conn.clone(), None),
            Some(Value::String(id)) => (self.admin_for(&conn, id)?, Some(id.clone())),
            Some(_) => {
                return Err(invalid(
                    "extra",
                    format!("extra.{ROTATION_CONN_KEY} must be the conn_id of a connection"),
                ));
            }
        };
        if via.is_none() && conn.password.is_none() {
            return Err(invalid(
                "password",
                format!(
                    "the connection has no password to log in with and change: set one, or \
                     name an admin connection in extra.{ROTATION_CONN_KEY}"
                ),
            ));
        }
        // Dual-role mode: the role not in use gets the new password.
        let roles = broked_core::rotation_roles(&extra).map_err(|e| invalid("extra", e))?;
        let (role, previous) = match roles {
            None => (role, None),
            Some(roles) => {
                if !roles.contains(&role) {
                    return Err(invalid(
                        "login",
                        format!(
                            "the login is not one of the two roles in extra.{ROLES}: set the \
                             login to the role in use",
                            ROLES = broked_core::ROTATION_ROLES_KEY
                        ),
                    ));
                }
                if via.is_none() {
                    return Err(invalid(
                        "extra",
                        format!(
                            "dual-role rotation (extra.{ROLES}) sets the password of the role \
                             not in use, which the role in use may not do: name an admin \
                             connection in extra.{ROTATION_CONN_KEY}",
                            ROLES = broked_core::ROTATION_ROLES_KEY
                        ),
                    ));
                }
                let other = if roles[0] == role {
                    &roles[1]
                } else {
                    &roles[0]
                };
                (other.clone(), Some(role))
            }
        };
        let allowed = match &via {
            None => false,
            Some(id) => self.admin_allows(id, &admin, &role, previous.is_some())?,
        };
        let account_host = match (conn.conn_type, &via) {
            (ConnType::Mysql, Some(_)) => Some(account_host.unwrap_or_else(|| "%".into())),
            _ => None,
        };
        Ok(Plan {
            conn,
            admin,
            via,
            role,
            previous,
            account_host,
            allowed,
        })
    }

    /// Whether the admin connection `id` (`admin`) lists `role` in its
    /// `extra.rotation_allowed_roles`. Refused: the admin's own login, an unusable list, and
    /// in dual-role mode (`dual`) a role the list does not hold — nothing else proves that
    /// whoever set up the connection may have the other role's password changed.
    fn admin_allows(
        &self,
        id: &str,
        admin: &Connection,
        role: &str,
        dual: bool,
    ) -> Result<bool, Error> {
        let allow = broked_core::ROTATION_ALLOWED_ROLES_KEY;
        if admin.login.as_deref() == Some(role) {
            return Err(invalid(
                "extra",
                format!(
                    "extra.{ROTATION_CONN_KEY}: the admin connection {id:?} would change the \
                     password of its own login: rotate {id:?} itself instead"
                ),
            ));
        }
        let listed = broked_core::rotation_allowed_roles(&extra_map(admin)).map_err(|_| {
            invalid(
                "extra",
                format!(
                    "extra.{ROTATION_CONN_KEY}: the admin connection {id:?} has an unusable \
                     extra.{allow} (a list of role names): fix it there"
                ),
            )
        })?;
        let allowed = listed.is_some_and(|l| l.iter().any(|r| r == role));
        if dual && !allowed {
            return Err(invalid(
                "extra",
                format!(
                    "extra.{ROTATION_CONN_KEY}: the admin connection {id:?} does not list the \
                     role not in use in its extra.{allow}: list both roles of extra.{ROLES} \
                     there (entering {id:?}'s password again) — an admin connection changes the \
                     password of another role only when it says so",
                    ROLES = broked_core::ROTATION_ROLES_KEY
                ),
            ));
        }
        Ok(allowed)
    }

    /// Through an admin that does not list the role: the stored password must log in as the
    /// role first, so that the connection proves it holds the role whose password the admin
    /// is to change (a connection made with any login and a made-up password must not get a
    /// role's password changed: `docs/security.md`).
    async fn proves_the_role(&self, plan: &Plan) -> Result<(), Error> {
        let probe = self.registry.test(&plan.conn).await;
        if probe.success {
            return Ok(());
        }
        let via = plan.via.as_deref().unwrap_or_default();
        let allow = broked_core::ROTATION_ALLOWED_ROLES_KEY;
        if probe.failure == Some(broked_probe::Failure::Auth) {
            return Err(invalid(
                "password",
                format!(
                    "the stored password does not log in as {role}, and the admin connection \
                     {via:?} does not list {role} in its extra.{allow}: through an admin \
                     connection only a role whose stored password logs in, or one the admin \
                     connection lists, is rotated — enter the role's password, or list the role \
                     on {via:?}",
                    role = plan.role
                ),
            ));
        }
        Err(failed(
            plan.conn.conn_id.as_str(),
            format!(
                "a login with the stored password, which must work before the admin connection \
                 {via:?} changes it, failed: {}; nothing was changed",
                probe.message
            ),
        ))
    }

    /// The admin connection `id` for `conn`: it must be another connection of the same type
    /// to the same server (host and port), so that a rotation never changes a role on a
    /// server the connection does not point at.
    fn admin_for(&self, conn: &Connection, id: &str) -> Result<Connection, Error> {
        let field = "extra";
        if id == conn.conn_id.as_str() {
            return Err(invalid(
                field,
                format!("extra.{ROTATION_CONN_KEY} names the connection itself: leave it out"),
            ));
        }
        let admin = match self.store.get_connection(id).map_err(store_err)? {
            Some(row) => self.decrypt(&row)?,
            None => {
                return Err(invalid(
                    field,
                    format!("extra.{ROTATION_CONN_KEY}: there is no connection {id:?}"),
                ));
            }
        };
        let same_host = admin
            .host
            .as_deref()
            .map(str::trim)
            .zip(conn.host.as_deref().map(str::trim))
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b));
        if admin.conn_type != conn.conn_type
            || !same_host
            || admin.effective_port() != conn.effective_port()
        {
            return Err(invalid(
                field,
                format!(
                    "extra.{ROTATION_CONN_KEY}: connection {id:?} is not of the same type, host \
                     and port: an admin connection must reach the same server"
                ),
            ));
        }
        Ok(admin)
    }

    /// Sets `password` as the role's password, as the plan says.
    async fn set_on_server(&self, plan: &Plan, password: &Secret) -> Result<SentAs, String> {
        let ctx = self.registry.context();
        // Without the admin's secrets, nor the connection's (the role not in use comes from
        // its extra).
        let message = |e: broked_probe::ProbeError| {
            broked_probe::scrub(&broked_probe::scrub(&e.message, &plan.admin), &plan.conn)
        };
        match plan.conn.conn_type {
            #[cfg(feature = "postgres")]
            ConnType::Postgres => {
                let verifier = broked_crypto::scram_sha256_verifier(password.expose())
                    .map_err(|e| e.to_string())?
                    .ok_or("the new password is not printable ASCII")?;
                let run =
                    broked_probe_postgres::set_password(&plan.admin, &plan.role, &verifier, &ctx);
                within(&ctx, run).await.map_err(message)?;
                Ok(SentAs::ScramVerifier)
            }
            #[cfg(feature = "mysql")]
            ConnType::Mysql => {
                let hash = broked_crypto::mysql_native_password_hash(password.expose());
                let account = plan
                    .account_host
                    .as_deref()
                    .map(|host| (plan.role.as_str(), host));
                let run = broked_probe_mysql::set_password(
                    &plan.admin,
                    account,
                    password.expose(),
                    &hash,
                    &ctx,
                );
                let sent = within(&ctx, run).await.map_err(message)?;
                Ok(match sent {
                    broked_probe_mysql::Sent::Hash => SentAs::NativeHash,
                    broked_probe_mysql::Sent::Cleartext => SentAs::Cleartext,
                })
            }
            other => Err(format!(
                "this build cannot rotate {} passwords (cargo feature)",
                other.as_str()
            )),
        }
    }

    /// Stores `password` as the connection's password, through the normal update path.
    fn store_password(&self, actor: &Actor, conn_id: &str, password: &Secret) -> Result<(), Error> {
        if fault("fail-store") {
            return Err(Error::Store(broked_store::StoreError::Connect {
                server: "the store".into(),
                reason: format!("failed on purpose ({FAULT_VAR}=fail-store)"),
            }));
        }
        let update = ConnectionUpdate {
            password: SecretUpdate::Set(password.clone()),
            ..Default::default()
        };
        self.update_as(actor, conn_id, update, UpdateMode::Merge)
            .map(|_| ())
    }

    /// Dual-role mode: stores `role` and `password` as the connection's login and password,
    /// in one new version, on top of the stored row as it is now (a concurrent edit of another
    /// field is kept; a concurrent write in between is retried by the caller). The extra is
    /// given again: the row's sealed values are bound to the login.
    fn store_switch(
        &self,
        actor: &Actor,
        conn_id: &str,
        role: &str,
        password: &Secret,
    ) -> Result<(), Error> {
        if fault("fail-store") {
            return Err(Error::Store(broked_store::StoreError::Connect {
                server: "the store".into(),
                reason: format!("failed on purpose ({FAULT_VAR}=fail-store)"),
            }));
        }
        let row = self.stored(conn_id)?;
        let current = self.decrypt(&row)?;
        let update = ConnectionUpdate {
            login: Some(Some(role.to_owned())),
            password: SecretUpdate::Set(password.clone()),
            extra: match current.extra {
                Some(extra) => SecretUpdate::Set(extra),
                None => SecretUpdate::Clear,
            },
            ..Default::default()
        };
        self.update_expecting_as(actor, conn_id, update, UpdateMode::Merge, Some(row.version))
            .map(|_| ())
    }

    /// Stores `login` and `password` (settling): the password alone when `login` is the
    /// stored one, else the switch of dual-role mode.
    fn store_login(
        &self,
        actor: &Actor,
        conn_id: &str,
        stored: &Connection,
        login: Option<&str>,
        password: &Secret,
    ) -> Result<(), Error> {
        match login {
            Some(l) if stored.login.as_deref() != Some(l) => {
                self.store_switch(actor, conn_id, l, password)
            }
            _ => self.store_password(actor, conn_id, password),
        }
    }

    /// Settles an unfinished rotation of `conn_id` (its lock held): makes the stored
    /// password one that logs in, and removes the journal entry when that is done.
    ///
    /// 1. The stored login and password log in: the server was not changed (or was set back),
    ///    or — dual-role mode — only the role not in use was. Kept.
    /// 2. Else the new password logs in (as the entry's role in dual-role mode): the server
    ///    was changed and the store not — store it (and switch the login). Completed.
    /// 3. Else the old one logs in as the entry's login (changed by someone meanwhile?):
    ///    store it. Kept.
    ///
    /// A failed store write in 2 sets the server back to the stored password instead.
    async fn settle(
        &self,
        actor: &Actor,
        conn_id: &str,
        entry: &Entry,
    ) -> Result<RecoveryOutcome, Error> {
        let outcome = self.settle_inner(actor, conn_id, entry).await;
        match &outcome {
            RecoveryOutcome::Unsettled(reason) => tracing::error!(
                conn_id,
                reason = %reason,
                "an unfinished password rotation could not be settled; it is tried again later"
            ),
            done => {
                self.write_journal(conn_id, None)?;
                tracing::warn!(
                    conn_id,
                    outcome = done.as_str(),
                    "an unfinished password rotation was settled"
                );
            }
        }
        Ok(outcome)
    }

    async fn settle_inner(&self, actor: &Actor, conn_id: &str, entry: &Entry) -> RecoveryOutcome {
        let stored = match self.stored(conn_id).and_then(|r| self.decrypt(&r)) {
            Ok(c) => c,
            // Deleted meanwhile: nothing to keep consistent.
            Err(Error::NotFound(_)) => return RecoveryOutcome::Kept,
            Err(e) => return RecoveryOutcome::Unsettled(format!("reading the connection: {e}")),
        };
        let logs_in = |login: Option<String>, password: Option<Secret>| {
            let mut c = stored.clone();
            c.login = login;
            c.password = password;
            async move { self.registry.test(&c).await }
        };
        let now_stored = logs_in(stored.login.clone(), stored.password.clone()).await;
        if now_stored.success {
            return RecoveryOutcome::Kept;
        }
        if now_stored.failure != Some(broked_probe::Failure::Auth) {
            return RecoveryOutcome::Unsettled(format!(
                "a login with the stored password failed: {}",
                now_stored.message
            ));
        }
        let candidates = [
            (
                entry.role.clone().or_else(|| stored.login.clone()),
                Some(entry.new.clone()),
                RecoveryOutcome::Completed,
            ),
            (
                entry.login.clone().or_else(|| stored.login.clone()),
                entry.old.clone(),
                RecoveryOutcome::Kept,
            ),
        ];
        for (login, password, outcome) in candidates {
            if password.is_none() || (login == stored.login && password == stored.password) {
                continue;
            }
            if !logs_in(login.clone(), password.clone()).await.success {
                continue;
            }
            let password = password.expect("checked");
            match self.store_login(actor, conn_id, &stored, login.as_deref(), &password) {
                Ok(()) => return outcome,
                Err(e) => {
                    // The store cannot take it: set the server back to what is stored.
                    let back = self.set_back(conn_id, &stored, &password).await;
                    return match back {
                        Ok(()) => RecoveryOutcome::Kept,
                        Err(reason) => RecoveryOutcome::Unsettled(format!(
                            "the password that logs in could not be stored ({e}) and the \
                             server could not be set back ({reason})"
                        )),
                    };
                }
            }
        }
        RecoveryOutcome::Unsettled(
            "neither the stored, the new nor the old password logs in".into(),
        )
    }

    /// Sets the server's password back to the stored one (after a failed store write);
    /// `current` is the password that logs in now.
    async fn set_back(
        &self,
        conn_id: &str,
        stored: &Connection,
        current: &Secret,
    ) -> Result<(), String> {
        let Some(password) = stored.password.clone() else {
            return Err("the connection stores no password".into());
        };
        let mut plan = self.plan(conn_id).map_err(|e| e.to_string())?;
        plan.conn = stored.clone();
        // The stored login's password, also in dual-role mode (whose plan names the other).
        if let Some(login) = &stored.login {
            plan.role = login.clone();
        }
        if plan.via.is_none() {
            // The role changes its own password: it logs in with the one that works now.
            plan.admin = stored.clone();
            plan.admin.password = Some(current.clone());
        }
        self.set_on_server(&plan, &password).await?;
        if self.registry.test(stored).await.success {
            Ok(())
        } else {
            Err("the stored password still does not log in".into())
        }
    }

    /// The per-connection lock, waiting (`wait`) or not; the wait polls, so that an async
    /// worker is never blocked while another process rotates.
    pub(crate) async fn lock_connection(
        &self,
        conn_id: &str,
        wait: bool,
    ) -> Result<Option<broked_store::RotationGuard>, Error> {
        let name = lock_name(conn_id);
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(guard) = self.store.try_lock_named(&name).map_err(store_err)? {
                return Ok(Some(guard));
            }
            if !wait {
                return Ok(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    fn journal(&self) -> Result<Map<String, Value>, Error> {
        let text = self.store.meta(JOURNAL).map_err(store_err)?;
        Ok(match text.as_deref().map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(map))) => map,
            Some(_) => {
                tracing::error!("the password rotation journal is not a JSON object: ignored");
                Map::new()
            }
            None => Map::new(),
        })
    }

    /// The entry of `conn_id`, opened.
    fn journal_entry(&self, conn_id: &str) -> Result<Option<Entry>, Error> {
        let journal = self.journal()?;
        let Some(entry) = journal.get(conn_id) else {
            return Ok(None);
        };
        let open = |label: &str| -> Result<Option<Secret>, Error> {
            match entry.get(label).and_then(Value::as_str) {
                None => Ok(None),
                Some(hex) => {
                    let blob = unhex(hex).ok_or_else(|| crate::sealer::corrupt("meta"))?;
                    self.sealer.open_note(conn_id, label, &blob).map(Some)
                }
            }
        };
        let new = open("new")?.ok_or_else(|| crate::sealer::corrupt("meta"))?;
        let text = |s: Option<Secret>| s.map(|s| s.expose().to_owned());
        Ok(Some(Entry {
            old: open("old")?,
            new,
            role: text(open("role")?),
            login: text(open("login")?),
        }))
    }

    /// Writes (`Some`) or removes (`None`) the entry of `conn_id`, under the journal lock.
    fn write_journal(&self, conn_id: &str, entry: Option<&Entry>) -> Result<(), Error> {
        let value = match entry {
            None => None,
            Some(e) => {
                let seal = |label: &str, s: &Secret| -> Result<String, Error> {
                    Ok(hex(&self.sealer.seal_note(conn_id, label, s)?))
                };
                let mut v = json!({
                    "started_at": now(),
                    "pid": std::process::id(),
                    "new": seal("new", &e.new)?,
                });
                if let Some(old) = &e.old {
                    v["old"] = Value::String(seal("old", old)?);
                }
                for (label, value) in [("role", &e.role), ("login", &e.login)] {
                    if let Some(value) = value {
                        v[label] = Value::String(seal(label, &Secret::new(value.as_str()))?);
                    }
                }
                Some(v)
            }
        };
        let _lock = self.store.lock_named(JOURNAL_LOCK).map_err(store_err)?;
        let mut journal = self.journal()?;
        match value {
            Some(v) => {
                journal.insert(conn_id.to_owned(), v);
            }
            None => {
                if journal.remove(conn_id).is_none() {
                    return Ok(());
                }
            }
        }
        self.store
            .set_meta(JOURNAL, &Value::Object(journal).to_string())
            .map_err(store_err)
    }
}

impl Connections {
    /// The key ids that seal journal entries (`broked key prune` keeps them).
    pub(crate) fn rotation_journal_keys(&self) -> Result<Vec<u32>, Error> {
        let mut ids = Vec::new();
        for entry in self.journal()?.values() {
            for label in LABELS {
                if let Some(text) = entry.get(label).and_then(Value::as_str) {
                    let blob = unhex(text).ok_or_else(|| crate::sealer::corrupt("meta"))?;
                    let id = broked_crypto::sealed_key_id(&blob)?.get();
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Re-seals every journal entry with the active key (`broked key rotate`), under the
    /// journal lock; returns how many values it re-sealed. A value that does not open is
    /// left as it is (and logged): `broked key prune` keeps its key.
    pub(crate) fn reseal_rotation_journal(&self) -> Result<usize, Error> {
        let _lock = self.store.lock_named(JOURNAL_LOCK).map_err(store_err)?;
        let mut journal = self.journal()?;
        let mut resealed = 0;
        for (conn_id, entry) in journal.iter_mut() {
            for label in LABELS {
                let Some(text) = entry.get(label).and_then(Value::as_str) else {
                    continue;
                };
                let blob = unhex(text).ok_or_else(|| crate::sealer::corrupt("meta"))?;
                match self.sealer.open_note(conn_id, label, &blob) {
                    Ok(value) => {
                        let sealed = self.sealer.seal_note(conn_id, label, &value)?;
                        entry[label] = Value::String(hex(&sealed));
                        resealed += 1;
                    }
                    Err(e) => tracing::error!(conn_id = %conn_id, error = %e,
                        "a password rotation journal entry does not open: left under its key"),
                }
            }
        }
        if resealed > 0 {
            self.store
                .set_meta(JOURNAL, &Value::Object(journal).to_string())
                .map_err(store_err)?;
        }
        Ok(resealed)
    }
}

impl crate::acting::Acting<'_> {
    /// [`Connections::rotate_password`], recorded as this actor's.
    pub async fn rotate_password(&self, conn_id: &str) -> Result<RotationReport, Error> {
        self.connections()
            .rotate_password_as(self.actor(), conn_id)
            .await
    }
}

/// Why [`Connections::with_fresh_retry`] failed.
#[derive(Debug)]
pub enum RetryError<E> {
    /// The connection could not be resolved.
    Resolve(Error),
    /// `work` failed (the second time, after an authentication failure).
    Work(E),
}

impl<E: std::fmt::Display> std::fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryError::Resolve(e) => e.fmt(f),
            RetryError::Work(e) => e.fmt(f),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for RetryError<E> {}

/// Whether a SQL driver's error code means that the credentials were refused — what
/// [`Connections::with_fresh_retry`]'s `is_auth` checks for a SQL connection: PostgreSQL
/// SQLSTATE `28P01` (wrong password) or `28000` (invalid authorization), MySQL/MariaDB
/// SQLSTATE `28000` or error number `1045` (access denied).
pub fn is_auth_failure_code(code: &str) -> bool {
    matches!(code, "28P01" | "28000" | "1045")
}

pub(crate) fn lock_name(conn_id: &str) -> String {
    format!("password-rotation.{conn_id}")
}

pub(crate) fn extra_map(conn: &Connection) -> Map<String, Value> {
    match conn
        .extra
        .as_ref()
        .map(|e| serde_json::from_str::<Value>(e.expose()))
    {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    }
}

/// `conn` checked as every write checks it (a write of it as it is would be refused).
fn revalidate(conn: &Connection) -> Result<(), Error> {
    broked_core::ConnectionInput {
        conn_id: Some(conn.conn_id.as_str().to_owned()),
        conn_type: Some(conn.conn_type.as_str().to_owned()),
        host: conn.host.clone(),
        port: conn.port.map(i64::from),
        schema: conn.schema.clone(),
        login: conn.login.clone(),
        password: conn.password.clone(),
        extra: conn.extra.clone(),
        description: conn.description.clone(),
    }
    .validate()?;
    Ok(())
}

/// A server call within the probe policy's overall timeout.
async fn within<T>(
    ctx: &broked_probe::Context,
    fut: impl std::future::Future<Output = Result<T, broked_probe::ProbeError>>,
) -> Result<T, broked_probe::ProbeError> {
    match tokio::time::timeout(ctx.remaining(), fut).await {
        Ok(r) => r,
        Err(_) => Err(broked_probe::ProbeError::new(
            broked_probe::Failure::Timeout,
            "the server did not answer in time",
        )),
    }
}

/// The failure's reason and what settling it left.
fn after(reason: &str, outcome: &RecoveryOutcome) -> String {
    match outcome {
        RecoveryOutcome::Kept => format!("{reason}; the stored password is unchanged and logs in"),
        RecoveryOutcome::Completed => {
            format!("{reason}; the new password logs in and was stored after all")
        }
        RecoveryOutcome::Unsettled(why) => format!(
            "{reason}; the rotation is unfinished ({why}) and is settled again by the next \
             rotation or the server's recovery"
        ),
    }
}

/// Whether the test hook [`FAULT_VAR`] asks for `which`: only in a build with the cargo
/// feature `test-hooks`.
#[cfg(feature = "test-hooks")]
fn fault(which: &str) -> bool {
    std::env::var(FAULT_VAR).is_ok_and(|v| v == which)
}

/// A build without the cargo feature `test-hooks` (every production build) ignores
/// [`FAULT_VAR`].
#[cfg(not(feature = "test-hooks"))]
fn fault(_which: &str) -> bool {
    false
}

/// The `hold-after-alter` test hook.
fn fault_after_alter() {
    if fault("hold-after-alter") {
        eprintln!("{FAULT_POINT}");
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "JournalOldPw5Tq";
    const NEW: &str = "JournalNewPw9Lm";

    fn open(dir: &std::path::Path) -> Connections {
        Connections::open(dir.join("broked.db")).unwrap()
    }

    fn entry() -> Entry {
        Entry {
            old: Some(Secret::new(OLD)),
            new: Secret::new(NEW),
            role: None,
            login: None,
        }
    }

    fn opens(c: &Connections) {
        let e = c.journal_entry("pg").unwrap().expect("the entry");
        assert_eq!(e.old.unwrap().expose(), OLD);
        assert_eq!(e.new.expose(), NEW);
    }

    /// `broked key rotate` moves an unfinished rotation's journal entry to the new key, and
    /// `broked key prune` then removes the old key: the entry still opens.
    #[test]
    fn key_rotate_reseals_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        c.write_journal("pg", Some(&entry())).unwrap();
        let before = c.rotation_journal_keys().unwrap();
        assert_eq!(before.len(), 1);
        let report = c.rotate(|_, _| {}).unwrap();
        assert_eq!(report.resealed, 2, "old and new of the one entry");
        let after = c.rotation_journal_keys().unwrap();
        assert_ne!(after, before, "re-sealed under the new key");
        let removed = c.prune().unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        opens(&c);
        // Another process, reading the key file afresh, opens it too.
        drop(c);
        opens(&open(dir.path()));
    }

    /// Dual-role mode: the entry also holds the role given the new password and the login of
    /// the old one — sealed like the passwords (the role comes from the extra), re-sealed by
    /// `broked key rotate`.
    #[test]
    fn a_dual_role_entry_seals_its_roles() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        let entry = Entry {
            role: Some("JournalRoleB7".into()),
            login: Some("JournalLoginA3".into()),
            ..entry()
        };
        c.write_journal("pg", Some(&entry)).unwrap();
        let raw = c.store.meta(JOURNAL).unwrap().unwrap();
        for value in [OLD, NEW, "JournalRoleB7", "JournalLoginA3"] {
            assert!(!raw.contains(value), "{value} in the journal");
        }
        let report = c.rotate(|_, _| {}).unwrap();
        assert_eq!(report.resealed, 4, "old, new, role and login");
        c.prune().unwrap();
        let e = c.journal_entry("pg").unwrap().expect("the entry");
        assert_eq!(e.role.as_deref(), Some("JournalRoleB7"));
        assert_eq!(e.login.as_deref(), Some("JournalLoginA3"));
        assert_eq!(e.new.expose(), NEW);
    }

    /// An entry under an old key (written before a rotation that did not re-seal it, as by an
    /// older version) keeps that key through `broked key prune`.
    #[test]
    fn key_prune_keeps_a_key_that_seals_a_journal_entry() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path());
        c.write_journal("pg", Some(&entry())).unwrap();
        let journal = c.store.meta(JOURNAL).unwrap().unwrap();
        c.rotate(|_, _| {}).unwrap();
        // Put the entry back as the old key sealed it.
        c.store.set_meta(JOURNAL, &journal).unwrap();
        assert!(c.prune().unwrap().is_empty(), "the old key seals the entry");
        opens(&c);
        // Settled (removed): now the old key goes.
        c.write_journal("pg", None).unwrap();
        assert_eq!(c.prune().unwrap().len(), 1);
    }
}
