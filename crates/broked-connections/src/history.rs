//! Version history (issue 17): every update keeps the version it replaces (`broked-store`
//! writes it in the same transaction); here the library lists them, shows one masked, rolls
//! a connection back to one, purges a deleted connection's history, and checks an expected
//! version (HTTP `If-Match`).
//!
//! **Rollback and target binding.** A kept version's secrets are sealed bound to *that
//! version's* conn_id, field and target (type, host, port, login). A rollback restores a
//! version whole: its secrets are opened under its own binding and sealed again for the new
//! version, whose target is the same — so a password only ever returns with the host it was
//! stored for. A kept row edited in the database (its host pointed elsewhere, a sealed value
//! copied from another connection) does not open, and the rollback fails without writing.
//!
//! [`changed_field_names`] is the one comparison of two versions by field name, used for
//! the history's `changed` column and the audit log.

use broked_core::{Connection, ConnectionInput};
use broked_store::{Logged, Purged, StoreError, StoredConnection, StoredVersion, Written};

use crate::UpdateMode;
use crate::acting::Acting;
use crate::actor::Actor;
use crate::audit::Event;
use crate::connections::{Connections, expect_version, info, stale};
use crate::error::{Error, store_err};
use crate::info::{ConnectionInfo, ConnectionVersion, VersionInfo, now};
use crate::update::ConnectionUpdate;

/// How many times a rollback is retried when another writer changed the row first.
const WRITE_ATTEMPTS: usize = 16;

/// The names of the fields whose values differ between two versions of a connection, in the
/// order of the connection's fields (`type host port schema login password extra
/// description`). A secret is compared only where its value is known on both sides
/// (`password_known`, `extra_known`); otherwise it counts as changed when either side has
/// one. Names only, never values.
pub(crate) fn changed_field_names(
    old: &Connection,
    new: &Connection,
    password_known: bool,
    extra_known: bool,
) -> Vec<&'static str> {
    let secret = |known: bool, a: &Option<broked_core::Secret>, b: &Option<broked_core::Secret>| {
        if known {
            a != b
        } else {
            a.is_some() || b.is_some()
        }
    };
    [
        ("type", old.conn_type != new.conn_type),
        ("host", old.host != new.host),
        ("port", old.port != new.port),
        ("schema", old.schema != new.schema),
        ("login", old.login != new.login),
        (
            "password",
            secret(password_known, &old.password, &new.password),
        ),
        ("extra", secret(extra_known, &old.extra, &new.extra)),
        ("description", old.description != new.description),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

fn summary(row: &StoredConnection, deleted: bool, current: bool) -> VersionInfo {
    VersionInfo {
        version: row.version,
        updated_at: row.updated_at.clone(),
        updated_by: row.updated_by.clone(),
        changed: row.changed.clone(),
        deleted,
        current,
    }
}

impl Connections {
    /// The versions of a connection, newest first: the current one (if it is not deleted)
    /// and the kept previous ones, with who wrote each and which fields it changed — never a
    /// value. A deleted connection's history is listed until it is purged.
    pub fn versions(&self, conn_id: &str) -> Result<Vec<VersionInfo>, Error> {
        let current = self.store.get_connection(conn_id).map_err(store_err)?;
        let kept = self.store.history(Some(conn_id)).map_err(store_err)?;
        if current.is_none() && kept.is_empty() {
            return Err(Error::NotFound(conn_id.to_owned()));
        }
        let mut out: Vec<VersionInfo> = current.iter().map(|c| summary(c, false, true)).collect();
        // A write between the two reads may list a version twice: the current one wins.
        out.extend(
            kept.iter()
                .filter(|v| current.as_ref().is_none_or(|c| c.version > v.conn.version))
                .map(|v| summary(&v.conn, v.deleted, false)),
        );
        Ok(out)
    }

    /// Version `version` of a connection, masked as [`Connections::get`] masks it.
    pub fn version(&self, conn_id: &str, version: i64) -> Result<ConnectionVersion, Error> {
        let found = self.kept_version(conn_id, version)?;
        let current = !found.deleted
            && self
                .store
                .get_connection(conn_id)
                .map_err(store_err)?
                .is_some_and(|c| c.version == version);
        Ok(ConnectionVersion {
            summary: summary(&found.conn, found.deleted, current),
            connection: info(&found.conn)?,
        })
    }

    fn kept_version(&self, conn_id: &str, version: i64) -> Result<StoredVersion, Error> {
        if let Some(v) = self
            .store
            .get_version(conn_id, version)
            .map_err(store_err)?
        {
            return Ok(v);
        }
        self.versions(conn_id)?;
        Err(Error::VersionNotFound {
            conn_id: conn_id.to_owned(),
            version,
        })
    }

    /// Writes a new version equal to version `version`: every field, the secrets too
    /// (opened under that version's own binding and sealed again). A deleted connection is
    /// created again this way. The version before the rollback is kept in the history like
    /// any other.
    pub fn rollback(&self, conn_id: &str, version: i64) -> Result<ConnectionInfo, Error> {
        self.rollback_as(&Actor::library(), conn_id, version, None)
    }

    pub(crate) fn rollback_as(
        &self,
        actor: &Actor,
        conn_id: &str,
        version: i64,
        expected: Option<i64>,
    ) -> Result<ConnectionInfo, Error> {
        let mut event = Event::new("rollback")
            .conn(conn_id)
            .detail(format!("to={version}"));
        let result = self.rollback_recorded(actor, &mut event, conn_id, version, expected);
        self.settle_write(actor, event, result)
    }

    fn rollback_recorded(
        &self,
        actor: &Actor,
        event: &mut Event,
        conn_id: &str,
        version: i64,
        expected: Option<i64>,
    ) -> Result<(ConnectionInfo, Logged), Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let target = self.kept_version(conn_id, version)?;
            if target.deleted {
                return Err(invalid(format!(
                    "version {version} is where connection {conn_id:?} was deleted: it holds no \
                     connection; roll back to a version before it"
                )));
            }
            let current = self.store.get_connection(conn_id).map_err(store_err)?;
            match &current {
                Some(cur) => {
                    expect_version(cur, expected)?;
                    if cur.version == version {
                        return Err(invalid(format!(
                            "version {version} is the current version of {conn_id:?}: nothing to \
                             roll back"
                        )));
                    }
                }
                None if expected.is_some() => {
                    return Err(stale(self, conn_id, expected));
                }
                None => {}
            }
            // Opened under the kept version's own (conn_id, field, target): a row edited in
            // the database does not open, and nothing is written.
            let restored = self.sealer.open_row(&target.conn, true, true)?;
            let restored = revalidate(restored)?;
            self.check_tunnel(&restored)?;
            let changed = match &current {
                Some(cur) => match self.sealer.open_row(cur, true, true) {
                    Ok(open) => changed_field_names(&open, &restored, true, true),
                    Err(_) => {
                        let plain = crate::sealer::without_secrets(cur)?;
                        changed_field_names(&plain, &restored, false, false)
                    }
                },
                None => Vec::new(),
            };
            event.fields = changed.clone();
            // The record goes into the write's transaction (`Connections::settle_write`).
            let log = self.audit_log(actor, event)?;
            let now = now();
            let created_at = current
                .as_ref()
                .map_or(now.clone(), |c| c.created_at.clone());
            let build = |checked: &crate::sealer::KeyChecked| {
                let mut row = self.sealer.seal_row(
                    checked,
                    &restored,
                    None,
                    &created_at,
                    &now,
                    current.as_ref().map_or(1, |c| c.version),
                )?;
                row.updated_by = Some(actor.name().to_owned());
                row.changed = changed.iter().map(|f| (*f).to_owned()).collect();
                Ok(vec![row])
            };
            let Some(cur) = &current else {
                // Deleted: created again, its numbers going on after the kept history.
                let written = self.sealer.write_rows(None, &log, build, |rows, log| {
                    self.store.insert_connection_logged(&rows[0], log)
                });
                return match written {
                    Ok((mut rows, v, logged)) => {
                        rows[0].version = v;
                        Ok((info(&rows[0])?, logged))
                    }
                    Err(Error::AlreadyExists(_)) => continue,
                    Err(e) => Err(e),
                };
            };
            let written = self.sealer.write_rows(Some(cur), &log, build, |rows, log| {
                self.store
                    .update_connection_logged(&rows[0], self.options.keep_versions, log)
            });
            let (rows, outcome, logged) = match written {
                Ok(w) => w,
                Err(Error::Store(StoreError::UnknownKey(_))) => continue,
                Err(e) => return Err(e),
            };
            match outcome {
                Written::Done => {
                    let mut row = rows.into_iter().next().expect("one row");
                    row.version += 1;
                    return Ok((info(&row)?, logged));
                }
                Written::Stale | Written::Missing => continue,
            }
        }
        Err(Error::Busy)
    }

    /// Removes the kept history of a deleted connection (its versions and the deleted
    /// marker); returns how many versions went. A connection that exists is refused
    /// ([`Error::PurgeLive`]): its history is bounded by
    /// [`Options::keep_versions`](crate::Options::keep_versions), and purging it would erase
    /// what an incident review needs.
    pub fn purge(&self, conn_id: &str) -> Result<u64, Error> {
        self.purge_as(&Actor::library(), conn_id)
    }

    pub(crate) fn purge_as(&self, actor: &Actor, conn_id: &str) -> Result<u64, Error> {
        let result = match self.store.purge_history(conn_id).map_err(store_err) {
            Ok(Purged::Done(n)) => Ok(n),
            Ok(Purged::Exists) => Err(Error::PurgeLive(conn_id.to_owned())),
            Ok(Purged::Missing) => Err(Error::NotFound(conn_id.to_owned())),
            Err(e) => Err(e),
        };
        let detail = match &result {
            Ok(n) => format!("versions={n}"),
            Err(_) => String::new(),
        };
        self.record(
            actor,
            Event::new("purge").conn(conn_id).detail(detail),
            &result,
        );
        result
    }
}

/// A restored version checked against today's rules (they may have tightened since).
fn revalidate(c: Connection) -> Result<Connection, Error> {
    Ok(ConnectionInput {
        conn_id: Some(c.conn_id.as_str().to_owned()),
        conn_type: Some(c.conn_type.as_str().to_owned()),
        host: c.host,
        port: c.port.map(i64::from),
        schema: c.schema,
        login: c.login,
        password: c.password,
        extra: c.extra,
        description: c.description,
    }
    .validate()?)
}

fn invalid(message: String) -> Error {
    Error::Invalid(broked_core::ValidationErrors(vec![
        broked_core::FieldError {
            field: "version",
            message,
        },
    ]))
}

/// The history calls on behalf of an actor (see [`Connections::acting`]).
impl Acting<'_> {
    /// [`Connections::rollback`]; with `expected`, only while the connection is at that
    /// version ([`Error::Stale`] otherwise).
    pub fn rollback(
        &self,
        conn_id: &str,
        version: i64,
        expected: Option<i64>,
    ) -> Result<ConnectionInfo, Error> {
        self.connections()
            .rollback_as(self.actor(), conn_id, version, expected)
    }

    /// [`Connections::purge`].
    pub fn purge(&self, conn_id: &str) -> Result<u64, Error> {
        self.connections().purge_as(self.actor(), conn_id)
    }

    /// [`Connections::update`] only while the connection is at version `expected` (HTTP
    /// `If-Match`); [`Error::Stale`] otherwise, and nothing changes.
    pub fn update_expecting(
        &self,
        conn_id: &str,
        update: ConnectionUpdate,
        mode: UpdateMode,
        expected: Option<i64>,
    ) -> Result<ConnectionInfo, Error> {
        self.connections()
            .update_expecting_as(self.actor(), conn_id, update, mode, expected)
    }

    /// [`Connections::delete`] only while the connection is at version `expected`.
    pub fn delete_expecting(
        &self,
        conn_id: &str,
        force: bool,
        expected: Option<i64>,
    ) -> Result<(), Error> {
        self.connections()
            .delete_expecting_as(self.actor(), conn_id, force, expected)
    }
}
