//! [`Connections`]: CRUD, resolve, test and pipeline usage over one database and its keyring.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use broked_core::{ConnId, ConnType, Connection, ConnectionInput, Dialect, Secret};
use broked_crypto::Keyring;
use broked_store::{
    Deleted, Logged, PipelineRef, PutPipeline, SqliteStore, Store, StoreError, StoredConnection,
    StoredPipeline, Written,
};

use crate::actor::Actor;
use crate::audit::{
    Event, changed_fields, input_fields, pipeline_detail, secret_fields, test_detail, update_fields,
};
use crate::error::{Error, store_err};
use crate::info::{ConnectionInfo, PipelineInfo, PipelineUsage, now};
use crate::pipeline::{PipelineDef, PipelineId};
use crate::resolve::{Resolved, Resolver};
use crate::sealer::{CheckReport, KeyStatus, RotateReport, Sealer};
use crate::tokens::{Grant, Scope, TokenInfo, Tokens};
use crate::update::{ConnectionUpdate, SecretUpdate, UpdateMode};
use crate::{Options, TestOutcome, probes};

/// How many times a write is retried when another writer changed the row first.
const WRITE_ATTEMPTS: usize = 16;

/// The stored connections of one database, with its keyring and the probes built in.
///
/// Shared between threads (`Send + Sync`); every call is one transaction. Several processes
/// (the server and the CLI) may open the same database at once.
pub struct Connections {
    /// The database as shown in messages: a file path, or a PostgreSQL address without its
    /// user information.
    pub(crate) db: PathBuf,
    pub(crate) store: Arc<dyn Store>,
    /// The keyring: every secret is sealed and opened through it.
    pub(crate) sealer: Arc<Sealer>,
    pub(crate) options: Options,
    pub(crate) registry: broked_probe::Registry,
    /// The SSH tunnels open for `open_tunnel` (`tunnel.rs`).
    pub(crate) tunnels: broked_tunnel::SharedTunnels,
    pub(crate) resolver: Resolver,
    /// Named API tokens (see `tokens.rs`).
    tokens: Tokens,
    /// The audit log (see `audit.rs`).
    pub(crate) audit: crate::audit::Audit,
    /// Each connection's parsed `extra.rotate_every` by version (`rotation_schedule.rs`).
    pub(crate) schedules: crate::schedule_cache::ScheduleCache,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// Opens the database at `db_path` (created on first run, with its key file
    /// `{db_path}.key`), with default [`Options`].
    pub fn open(db_path: impl AsRef<Path>) -> Result<Connections, Error> {
        Connections::open_with(db_path, Options::default())
    }

    /// Opens the database with `options`. A database that holds secrets and a missing or
    /// different key file is an error naming the key file; a new key is never generated
    /// over existing secrets.
    pub fn open_with(db_path: impl AsRef<Path>, options: Options) -> Result<Connections, Error> {
        let (db, key_path, store) = open_store(db_path.as_ref(), &options)?;
        let store: Arc<dyn Store> = Arc::new(crate::metrics::Timed(store));
        let tokens_store = store.clone();
        let sealer = Arc::new(Sealer::open(
            &db,
            &key_path,
            store.clone(),
            options.rotate_after_seals,
        )?);
        let audit = crate::audit::Audit::new(
            store.clone(),
            sealer.clone(),
            &key_path,
            options.audit_interval,
        );
        // The store's files and the key file are never a sqlite test target.
        let mut protected = vec![key_path.clone()];
        if !is_postgres_url(&db.to_string_lossy()) {
            protected.push(db.clone());
        }
        let registry = probes::registry(&options, protected)?;
        Ok(Connections {
            resolver: Resolver::new(options.max_stale, audit.resolve_counters()),
            db,
            store,
            sealer,
            options,
            registry,
            tunnels: broked_tunnel::SharedTunnels::default(),
            tokens: Tokens::new(Arc::clone(&tokens_store)),
            audit,
            schedules: Default::default(),
        })
    }

    /// The database: its file, or a PostgreSQL address without user information.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// The key file.
    pub fn key_path(&self) -> PathBuf {
        self.sealer.key_path().to_owned()
    }

    /// Stores a new connection; its secrets are sealed before they reach the database.
    pub fn create(&self, input: ConnectionInput) -> Result<ConnectionInfo, Error> {
        self.create_as(&Actor::library(), input)
    }

    pub(crate) fn create_as(
        &self,
        actor: &Actor,
        input: ConnectionInput,
    ) -> Result<ConnectionInfo, Error> {
        let mut event = Event::new("create")
            .fields(input_fields(&input))
            .value(input.password.as_ref());
        if let Some(id) = &input.conn_id {
            event = event.conn(id.as_str());
        }
        let result = self.create_recorded(actor, &event, input);
        self.settle_write(actor, event, result)
    }

    /// The create, its record (`event`, outcome `ok`) in the same transaction.
    fn create_recorded(
        &self,
        actor: &Actor,
        event: &Event,
        input: ConnectionInput,
    ) -> Result<(ConnectionInfo, Logged), Error> {
        let conn = input.validate()?;
        self.check_tunnel(&conn)?;
        let now = now();
        let (mut rows, version, logged) = self.sealer.write_rows(
            None,
            &self.audit_log(actor, event)?,
            |checked| {
                let mut row = self.sealer.seal_row(checked, &conn, None, &now, &now, 1)?;
                row.updated_by = Some(actor.name().to_owned());
                Ok(vec![row])
            },
            |rows, log| self.store.insert_connection_logged(&rows[0], log),
        )?;
        // Created again under a deleted conn_id, the numbers go on after its kept history.
        rows[0].version = version;
        Ok((info(&rows[0])?, logged))
    }

    /// A connection, masked.
    pub fn get(&self, conn_id: &str) -> Result<ConnectionInfo, Error> {
        // Without the sealed values, with the last test (`listing.rs`).
        self.listed(conn_id)
    }

    /// Every connection, masked, sorted by conn_id; only those of `conn_type` if given.
    pub fn list(&self, conn_type: Option<ConnType>) -> Result<Vec<ConnectionInfo>, Error> {
        let query = crate::ListQuery {
            conn_type,
            ..crate::ListQuery::default()
        };
        Ok(self.list_page(&query)?.items)
    }

    /// Updates a connection (PUT: [`UpdateMode::Replace`]; PATCH: [`UpdateMode::Merge`]).
    /// Secrets absent or `********` are kept, `null` clears them; conn_id cannot change.
    /// A concurrent update of the same connection is never lost: the write is retried on the
    /// newer row.
    pub fn update(
        &self,
        conn_id: &str,
        update: ConnectionUpdate,
        mode: UpdateMode,
    ) -> Result<ConnectionInfo, Error> {
        self.update_as(&Actor::library(), conn_id, update, mode)
    }

    pub(crate) fn update_as(
        &self,
        actor: &Actor,
        conn_id: &str,
        update: ConnectionUpdate,
        mode: UpdateMode,
    ) -> Result<ConnectionInfo, Error> {
        self.update_expecting_as(actor, conn_id, update, mode, None)
    }

    /// [`Connections::update`] only if the connection still has version `expected` (HTTP
    /// `If-Match`): otherwise [`Error::Stale`] and nothing changes.
    pub(crate) fn update_expecting_as(
        &self,
        actor: &Actor,
        conn_id: &str,
        update: ConnectionUpdate,
        mode: UpdateMode,
        expected: Option<i64>,
    ) -> Result<ConnectionInfo, Error> {
        let mut event = Event::new("update").conn(conn_id);
        let result = self.update_recorded(actor, &mut event, conn_id, update, mode, expected);
        self.settle_write(actor, event, result)
    }

    /// The update; `event` gets the names of the fields that change and the new password
    /// (for its HMAC), and its record (outcome `ok`) goes into the update's transaction.
    fn update_recorded(
        &self,
        actor: &Actor,
        event: &mut Event,
        conn_id: &str,
        update: ConnectionUpdate,
        mode: UpdateMode,
        expected: Option<i64>,
    ) -> Result<(ConnectionInfo, Logged), Error> {
        for _ in 0..WRITE_ATTEMPTS {
            let old = self.stored(conn_id)?;
            expect_version(&old, expected)?;
            // A secret the update replaces or clears is not decrypted: a value that no longer
            // opens (a damaged row) can still be overwritten.
            let mut current =
                self.decrypt_some(&old, update.password.keeps(), update.extra.carries_stored())?;
            masked_without_value(&current, &update)?;
            // The securing keys of the stored extra decide whether a kept password may stay
            // (see `moved_secrets`): read it even when the update replaces it. A stored extra
            // that does not open counts as unknown, so a kept password must be entered again.
            let mut stored_extra_unknown = false;
            if !update.extra.keeps() && update.password.keeps() && current.password.is_some() {
                match self.sealer.open_row(&old, false, true) {
                    Ok(c) => current.extra = c.extra,
                    Err(_) => stored_extra_unknown = true,
                }
            }
            let new = update.clone().apply(&current, mode)?;
            event.fields = changed_fields(&current, &new, &update);
            event.values.clear();
            if let SecretUpdate::Set(p) = &update.password {
                event.values.push(p.clone());
            }
            moved_secrets(&current, &new, &update, stored_extra_unknown)?;
            if !update.extra.keeps() {
                self.check_tunnel(&new)?;
            }
            // A stored extra read only for its securing keys is not kept as it is.
            let kept = Connection {
                extra: current.extra.clone().filter(|_| update.extra.keeps()),
                ..current.clone()
            };
            let updated_at = now();
            let written = self.sealer.write_rows(
                Some(&old),
                &self.audit_log(actor, event)?,
                |checked| {
                    let mut row = self.sealer.seal_row(
                        checked,
                        &new,
                        Some((&old, &kept)),
                        &old.created_at,
                        &updated_at,
                        old.version,
                    )?;
                    row.conn_id = old.conn_id.clone();
                    row.updated_by = Some(actor.name().to_owned());
                    row.changed = event.fields.iter().map(|f| (*f).to_owned()).collect();
                    Ok(vec![row])
                },
                |rows, log| {
                    self.store
                        .update_connection_logged(&rows[0], self.options.keep_versions, log)
                },
            );
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
                Written::Stale => continue,
                Written::Missing => return Err(Error::NotFound(conn_id.to_owned())),
            }
        }
        Err(Error::Busy)
    }

    /// Deletes a connection. Refused with [`Error::InUse`] (listing the pipelines) while a
    /// pipeline references it, unless `force`.
    pub fn delete(&self, conn_id: &str, force: bool) -> Result<(), Error> {
        self.delete_as(&Actor::library(), conn_id, force)
    }

    pub(crate) fn delete_as(&self, actor: &Actor, conn_id: &str, force: bool) -> Result<(), Error> {
        self.delete_expecting_as(actor, conn_id, force, None)
    }

    /// [`Connections::delete`] only if the connection still has version `expected` (HTTP
    /// `If-Match`): otherwise [`Error::Stale`] and nothing changes.
    pub(crate) fn delete_expecting_as(
        &self,
        actor: &Actor,
        conn_id: &str,
        force: bool,
        expected: Option<i64>,
    ) -> Result<(), Error> {
        let event =
            Event::new("delete")
                .conn(conn_id)
                .detail(if force { "force=true" } else { "" });
        let result = self.delete_recorded(actor, &event, conn_id, force, expected);
        self.settle_write(actor, event, result)
    }

    /// The delete, its record (`event`, outcome `ok`) in the same transaction.
    fn delete_recorded(
        &self,
        actor: &Actor,
        event: &Event,
        conn_id: &str,
        force: bool,
        expected: Option<i64>,
    ) -> Result<((), Logged), Error> {
        // A bastion other connections go through (extra.ssh_tunnel) stays too.
        self.check_bastion_delete(conn_id, force)?;
        let how = broked_store::Deletion {
            force,
            expected_version: expected,
            at: now(),
            by: Some(actor.name().to_owned()),
            keep_versions: self.options.keep_versions,
        };
        let (deleted, logged) = self
            .store
            .delete_connection_logged(conn_id, &how, &self.audit_log(actor, event)?)
            .map_err(store_err)?;
        match deleted {
            Deleted::Done => Ok(((), logged)),
            Deleted::Missing => Err(Error::NotFound(conn_id.to_owned())),
            Deleted::Stale => Err(stale(self, conn_id, expected)),
            Deleted::InUse(refs) => Err(Error::InUse {
                conn_id: conn_id.to_owned(),
                pipelines: usages(refs)?,
            }),
        }
    }

    /// The stored connection with its secrets decrypted. The environment is not consulted
    /// (see [`Connections::resolve`]).
    pub fn connection(&self, conn_id: &str) -> Result<Connection, Error> {
        self.connection_as(&Actor::library(), conn_id)
    }

    /// A reveal: the connection with its secrets, recorded with the password's HMAC.
    pub(crate) fn connection_as(&self, actor: &Actor, conn_id: &str) -> Result<Connection, Error> {
        self.revealed(actor, conn_id, "connection")
    }

    /// `get --uri`: the full URI with its secrets, recorded as a reveal.
    pub(crate) fn uri_as(&self, actor: &Actor, conn_id: &str) -> Result<Secret, Error> {
        Ok(self.revealed(actor, conn_id, "uri")?.to_uri())
    }

    /// `get --uri-format`: the connection string in a client's dialect, recorded as a reveal
    /// (of `uri` for broked's own form, as `get --uri`).
    pub(crate) fn uri_in_as(
        &self,
        actor: &Actor,
        conn_id: &str,
        dialect: Dialect,
    ) -> Result<Secret, Error> {
        if dialect == Dialect::Uri {
            return self.uri_as(actor, conn_id);
        }
        let what = format!("uri:{dialect}");
        self.revealed(actor, conn_id, &what)?
            .to_dialect(dialect)
            .map_err(Error::Dialect)
    }

    fn revealed(&self, actor: &Actor, conn_id: &str, what: &str) -> Result<Connection, Error> {
        let result = self.stored(conn_id).and_then(|row| self.decrypt(&row));
        let mut event = Event::new("reveal")
            .conn(conn_id)
            .detail(format!("what={what}"));
        if let Ok(c) = &result {
            event = event.fields(secret_fields(c)).value(c.password.as_ref());
        }
        self.record_reveal(actor, event, result)
    }

    /// Tests the stored connection with the probe of its type. A failed connect is an
    /// [`TestOutcome`] with `success: false`, not an error.
    pub async fn test(&self, conn_id: &str) -> Result<TestOutcome, Error> {
        self.test_as(&Actor::library(), conn_id).await
    }

    pub(crate) async fn test_as(&self, actor: &Actor, conn_id: &str) -> Result<TestOutcome, Error> {
        let result = self.test_recorded(conn_id).await;
        let event = Event::new("test")
            .conn(conn_id)
            .detail(test_detail(&result));
        self.record(actor, event, &result);
        result
    }

    async fn test_recorded(&self, conn_id: &str) -> Result<TestOutcome, Error> {
        let row = self.stored(conn_id)?;
        let conn = self.decrypt(&row)?;
        let outcome = match self.test_tunneled(&conn).await {
            Some(outcome) => outcome,
            None => self.registry.test(&conn).await,
        };
        // Kept with the connection: the list shows it (`listing.rs`).
        self.remember_test(&row, &outcome);
        Ok(outcome)
    }

    /// Tests a connection that is not saved (the UI's Test button before Save).
    ///
    /// If `update.conn_id` names a stored connection, a kept secret (absent or `********`)
    /// is the stored one — but only while type, host, port and login are those stored: a
    /// stored password is never sent to another host or account than the one it was saved for.
    pub async fn test_unsaved(&self, update: ConnectionUpdate) -> Result<TestOutcome, Error> {
        self.test_unsaved_as(&Actor::library(), update).await
    }

    pub(crate) async fn test_unsaved_as(
        &self,
        actor: &Actor,
        update: ConnectionUpdate,
    ) -> Result<TestOutcome, Error> {
        let mut event = Event::new("test_unsaved").fields(update_fields(&update));
        if let Some(id) = update.conn_id.as_deref() {
            event = event.conn(id);
        }
        if let SecretUpdate::Set(p) = &update.password {
            event.values.push(p.clone());
        }
        let result = self.test_unsaved_recorded(update).await;
        let event = event.detail(test_detail(&result));
        self.record(actor, event, &result);
        result
    }

    async fn test_unsaved_recorded(&self, update: ConnectionUpdate) -> Result<TestOutcome, Error> {
        let conn = self.unsaved(update)?;
        if let Some(outcome) = self.test_tunneled(&conn).await {
            return Ok(outcome);
        }
        Ok(self.registry.test(&conn).await)
    }

    fn unsaved(&self, update: ConnectionUpdate) -> Result<Connection, Error> {
        let stored = match update
            .conn_id
            .as_deref()
            .map(|id| self.store.get_connection(id))
        {
            Some(r) => r.map_err(store_err)?,
            None => None,
        };
        if let Some(stored) = stored {
            let current = self.decrypt(&stored)?;
            let candidate = update.clone().apply(&current, UpdateMode::Replace)?;
            // The stored secret goes only where it was saved for: same type, host, port and
            // login (not another account on the same server either).
            if candidate.same_target(&current) {
                return Ok(candidate);
            }
        }
        let secret = |s: &SecretUpdate| match s {
            SecretUpdate::Set(v) => Some(v.clone()),
            // Nothing stored to merge into (an unsaved test is a whole connection).
            m @ SecretUpdate::Merge(_) => m.clone().apply(None),
            SecretUpdate::Keep | SecretUpdate::Masked | SecretUpdate::Clear => None,
        };
        let port = update.port.flatten();
        let input = ConnectionInput {
            conn_id: Some(
                update
                    .conn_id
                    .clone()
                    .filter(|id| ConnId::new(id.as_str()).is_ok())
                    .unwrap_or_else(|| "unsaved".into()),
            ),
            conn_type: update.conn_type.clone(),
            host: update.host.clone().flatten(),
            port,
            schema: update.schema.clone().flatten(),
            login: update.login.clone().flatten(),
            password: secret(&update.password),
            extra: secret(&update.extra),
            description: update.description.clone().flatten(),
        };
        Ok(input.validate()?)
    }

    /// Registers or replaces a pipeline; every conn_id it references must exist.
    pub fn put_pipeline(
        &self,
        pipeline_id: &str,
        definition: PipelineDef,
    ) -> Result<PipelineInfo, Error> {
        self.put_pipeline_as(&Actor::library(), pipeline_id, definition)
    }

    pub(crate) fn put_pipeline_as(
        &self,
        actor: &Actor,
        pipeline_id: &str,
        definition: PipelineDef,
    ) -> Result<PipelineInfo, Error> {
        let event = Event::new("pipeline_put").detail(pipeline_detail(pipeline_id, &definition));
        let result = self.put_pipeline_recorded(actor, &event, pipeline_id, definition);
        self.settle_write(actor, event, result)
    }

    /// The put, its record (`event`, outcome `ok`) in the same transaction.
    fn put_pipeline_recorded(
        &self,
        actor: &Actor,
        event: &Event,
        pipeline_id: &str,
        definition: PipelineDef,
    ) -> Result<(PipelineInfo, Logged), Error> {
        let id = PipelineId::new(pipeline_id)?;
        let refs: Vec<PipelineRef> = definition
            .references()
            .into_iter()
            .map(|(node_id, conn_id)| PipelineRef {
                pipeline_id: id.as_str().to_owned(),
                name: definition.name.clone(),
                node_id,
                conn_id: conn_id.as_str().to_owned(),
            })
            .collect();
        let now = now();
        let row = StoredPipeline {
            pipeline_id: id.as_str().to_owned(),
            name: definition.name.clone(),
            definition: definition.to_value().to_string(),
            created_at: now.clone(),
            updated_at: now,
        };
        let (put, logged) = self
            .store
            .put_pipeline_logged(&row, &refs, &self.audit_log(actor, event)?)
            .map_err(store_err)?;
        match put {
            PutPipeline::Created | PutPipeline::Replaced => {
                Ok((self.get_pipeline(pipeline_id)?, logged))
            }
            PutPipeline::UnknownConnIds(ids) => Err(Error::UnknownConnIds(ids)),
        }
    }

    pub fn get_pipeline(&self, pipeline_id: &str) -> Result<PipelineInfo, Error> {
        match self.store.get_pipeline(pipeline_id).map_err(store_err)? {
            Some(p) => pipeline_info(p),
            None => Err(Error::PipelineNotFound(pipeline_id.to_owned())),
        }
    }

    /// Every pipeline, sorted by id.
    pub fn list_pipelines(&self) -> Result<Vec<PipelineInfo>, Error> {
        self.store
            .list_pipelines()
            .map_err(store_err)?
            .into_iter()
            .map(pipeline_info)
            .collect()
    }

    pub fn delete_pipeline(&self, pipeline_id: &str) -> Result<(), Error> {
        self.delete_pipeline_as(&Actor::library(), pipeline_id)
    }

    pub(crate) fn delete_pipeline_as(&self, actor: &Actor, pipeline_id: &str) -> Result<(), Error> {
        let event = Event::new("pipeline_delete")
            .detail(format!("pipeline={}", crate::audit::printable(pipeline_id)));
        let result = self.audit_log(actor, &event).and_then(|log| {
            match self.store.delete_pipeline_logged(pipeline_id, &log) {
                Ok((true, logged)) => Ok(((), logged)),
                Ok((false, _)) => Err(Error::PipelineNotFound(pipeline_id.to_owned())),
                Err(e) => Err(store_err(e)),
            }
        });
        self.settle_write(actor, event, result)
    }

    /// The pipelines that use a connection, with the nodes that reference it.
    pub fn used_by(&self, conn_id: &str) -> Result<Vec<PipelineUsage>, Error> {
        self.stored(conn_id)?;
        usages(self.store.used_by(conn_id).map_err(store_err)?)
    }

    // ---- internals ----

    pub(crate) fn stored(&self, conn_id: &str) -> Result<StoredConnection, Error> {
        self.store
            .get_connection(conn_id)
            .map_err(store_err)?
            .ok_or_else(|| Error::NotFound(conn_id.to_owned()))
    }

    pub(crate) fn stored_all(&self) -> Result<Vec<StoredConnection>, Error> {
        self.store.list_connections(None).map_err(store_err)
    }

    pub(crate) fn decrypt(&self, row: &StoredConnection) -> Result<Connection, Error> {
        self.decrypt_some(row, true, true)
    }

    /// The connection with only the secrets asked for decrypted (the others are `None`).
    pub(crate) fn decrypt_some(
        &self,
        row: &StoredConnection,
        password: bool,
        extra: bool,
    ) -> Result<Connection, Error> {
        self.sealer.open_row(row, password, extra)
    }

    /// What the engine calls: the connection `conn_id` with its secrets and full URI.
    ///
    /// Lookup order: the environment variable `BROKED_CONN_<ID>` (conn_id upper-cased, `-` →
    /// `_`; a URI or a JSON object) first, then the database. Results from the database are
    /// cached until any process writes to it (the guarantee: docs/connections.md).
    ///
    /// The result is shared (an `Arc`): a warm resolve copies nothing.
    pub fn resolve(&self, conn_id: &str) -> Result<Arc<Resolved>, Error> {
        let load = |id: &str| {
            let row = self.stored(id)?;
            Ok((row.version, self.decrypt(&row)?))
        };
        self.resolver.resolve(self.store.as_ref(), &load, conn_id)
    }

    /// The connection string of `conn_id` in a client's [`Dialect`]: a SQLAlchemy URL, a JDBC
    /// URL, a libpq keyword/value string, or broked's URI (`docs/uri.md`, "Client dialects").
    ///
    /// The same lookup as [`Connections::resolve`] (environment first, then the database
    /// through the cache, with its freshness guarantee and `max_stale`), then the dialect's
    /// builder in `broked-core`. A type the dialect has no form for, or an extra key that
    /// secures the target and that the client cannot be given, is [`Error::Dialect`]
    /// ([`ErrorKind::Invalid`](crate::ErrorKind::Invalid)), naming the type and the key.
    pub fn resolve_as(&self, conn_id: &str, dialect: Dialect) -> Result<Secret, Error> {
        let resolved = self.resolve(conn_id)?;
        if dialect == Dialect::Uri {
            return Ok(resolved.uri.clone());
        }
        resolved
            .connection
            .to_dialect(dialect)
            .map_err(Error::Dialect)
    }

    /// Adds a new active key, re-seals every secret under it, and keeps the old keys (until
    /// [`Connections::prune`]). `progress(done, total)` is called once per value; `total` is
    /// an upper bound (two values per connection and kept version), never below `done`.
    ///
    /// The values are re-sealed in batches, one transaction each, that also record how far
    /// the rotation got: reads and writes go on in between, and memory holds one batch. A
    /// crash at any point leaves every secret readable — the key file gains the new key
    /// (atomically) before any value is sealed with it — and the next `rotate` finishes a
    /// rotation that stopped midway, under its key ([`RotateReport::resumed`]). See
    /// docs/crypto.md.
    pub fn rotate(&self, progress: impl FnMut(u64, u64)) -> Result<RotateReport, Error> {
        self.rotate_as(&Actor::library(), progress)
    }

    pub(crate) fn rotate_as(
        &self,
        actor: &Actor,
        progress: impl FnMut(u64, u64),
    ) -> Result<RotateReport, Error> {
        // Unfinished password rotations' journal entries move to the new key too
        // (docs/rotation.md).
        let result = self.sealer.rotate(progress).and_then(|mut report| {
            report.resealed += self.reseal_rotation_journal()? as u64;
            Ok(report)
        });
        let event = Event::new("key_rotate").detail(match &result {
            Ok(r) => crate::audit::rotate_detail(r),
            Err(_) => String::new(),
        });
        self.record(actor, event, &result);
        result
    }

    /// Removes from the key file and the database the keys that seal nothing any more
    /// (never the active key). Returns their ids (`k1`…).
    pub fn prune(&self) -> Result<Vec<String>, Error> {
        self.prune_as(&Actor::library())
    }

    pub(crate) fn prune_as(&self, actor: &Actor) -> Result<Vec<String>, Error> {
        // Never a key that seals an unfinished password rotation's journal entry.
        let result = self
            .rotation_journal_keys()
            .and_then(|keep| self.sealer.prune(&keep));
        let event = Event::new("key_prune").detail(match &result {
            Ok(ids) => format!("removed={}", ids.join(",")),
            Err(_) => String::new(),
        });
        self.record(actor, event, &result);
        result
    }

    /// Tries to open every sealed value.
    pub fn check(&self) -> Result<CheckReport, Error> {
        self.check_as(&Actor::library())
    }

    pub(crate) fn check_as(&self, actor: &Actor) -> Result<CheckReport, Error> {
        let result = self.sealer.check();
        let event = Event::new("key_check").detail(match &result {
            Ok(r) => format!("failures={}", r.failures.len()),
            Err(_) => String::new(),
        });
        self.record(actor, event, &result);
        result
    }

    /// The keys of the keyring with how many values each seals.
    pub fn keys(&self) -> Result<Vec<KeyStatus>, Error> {
        self.sealer.keys()
    }

    /// Creates a named API token; returns it — the only time it is shown — with what
    /// [`Connections::list_tokens`] shows of it.
    pub fn create_token(
        &self,
        name: &str,
        scopes: &[Scope],
        conns: Option<Vec<String>>,
        expires_in: Option<std::time::Duration>,
    ) -> Result<(TokenInfo, Secret), Error> {
        self.create_token_as(&Actor::library(), name, scopes, conns, expires_in)
    }

    pub(crate) fn create_token_as(
        &self,
        actor: &Actor,
        name: &str,
        scopes: &[Scope],
        conns: Option<Vec<String>>,
        expires_in: Option<std::time::Duration>,
    ) -> Result<(TokenInfo, Secret), Error> {
        let detail = crate::audit::token_detail(name, scopes, conns.as_deref(), expires_in);
        let result = self.tokens.create_token(name, scopes, conns, expires_in);
        self.record(actor, Event::new("token_create").detail(detail), &result);
        result
    }

    /// Every named token, by name; never the token itself.
    pub fn list_tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        self.tokens.list_tokens()
    }

    /// Revokes a token: it stops working at once, in every process.
    pub fn revoke_token(&self, name: &str) -> Result<(), Error> {
        self.revoke_token_as(&Actor::library(), name)
    }

    pub(crate) fn revoke_token_as(&self, actor: &Actor, name: &str) -> Result<(), Error> {
        let result = self.tokens.revoke_token(name);
        let event =
            Event::new("token_revoke").detail(format!("token={}", crate::audit::printable(name)));
        self.record(actor, event, &result);
        result
    }

    /// The library's counters in this process (no store call; `metrics.rs`).
    pub fn metrics(&self) -> crate::Metrics {
        crate::metrics::snapshot()
    }

    /// The active key's seal count and bound, and the sealed values per key (two store reads).
    pub fn key_usage(&self) -> Result<crate::KeyUsage, Error> {
        self.sealer.usage()
    }

    /// Whether this handle can serve: the store answers a trivial query (within
    /// [`Options::store_timeout`]) and the key file on disk is the one the store's key check
    /// values belong to. The error's kind says which failed:
    /// [`ErrorKind::Unavailable`](crate::ErrorKind) for the store, `KeyMismatch`/`KeyMissing`
    /// for the key file.
    pub fn ready(&self) -> Result<(), Error> {
        self.sealer.check_key_file()
    }

    /// Whether any named token exists (then a server requires a token on every request).
    pub fn tokens_exist(&self) -> Result<bool, Error> {
        self.tokens.tokens_exist()
    }

    /// What `presented` may do, or `None` if it is no valid token (unknown, revoked or
    /// expired alike).
    pub fn authenticate(&self, presented: &str) -> Result<Option<Grant>, Error> {
        self.tokens.authenticate(presented)
    }

    /// Whether a token is required (any named token exists), and what `presented` may do:
    /// [`Connections::tokens_exist`] and [`Connections::authenticate`] in one, looking at the
    /// store's generation once — and that generation, looked at during this call: an answer
    /// kept from a read at the same generation holds every commit made before the call (the
    /// server skips its own look for a kept GET, issue 19).
    pub fn authorize(&self, presented: Option<&str>) -> Result<Authorization, Error> {
        self.tokens
            .authorize(presented)
            .map(|(any, grant, g)| (any, grant, g.map(crate::listing::generation)))
    }

    /// [`Connections::authorize`] when its answer needs no read or write of the store (the
    /// token cache holds it, and no last use of the token is due to be recorded); `None`
    /// otherwise, with nothing done — ask [`Connections::authorize`] where blocking is fine.
    /// An async server answers most requests with this on its workers, and sends the rest
    /// (the first after a commit, a use a minute per token) to a blocking thread.
    pub fn authorize_cached(
        &self,
        presented: Option<&str>,
    ) -> Result<Option<Authorization>, Error> {
        self.tokens
            .authorize_cached(presented)
            .map(|a| a.map(|(any, grant, g)| (any, grant, g.map(crate::listing::generation))))
    }

    /// [`Connections::tokens_exist`] if the token cache holds the answer, else `None`.
    pub fn tokens_exist_cached(&self) -> Result<Option<bool>, Error> {
        self.tokens.tokens_exist_cached()
    }
}

/// What [`Connections::authorize`] answers: whether named tokens exist, what the presented
/// token may do (if it is a valid one), and the store's generation it looked at.
pub type Authorization = (bool, Option<Grant>, Option<crate::Generation>);

/// Refuses the mask `********` sent back for a secret the connection does not have: there is
/// nothing to keep, and storing nothing silently would surprise the sender.
fn masked_without_value(current: &Connection, update: &ConnectionUpdate) -> Result<(), Error> {
    let mut errors = Vec::new();
    for (field, u, stored) in [
        ("password", &update.password, current.password.is_some()),
        ("extra", &update.extra, current.extra.is_some()),
    ] {
        if *u == SecretUpdate::Masked && !stored {
            errors.push(broked_core::FieldError {
                field,
                message: format!(
                    "{} is how a stored {field} is shown, and this connection has none: enter \
                     the real value, or leave the field out",
                    Secret::MASK
                ),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(broked_core::ValidationErrors(errors)))
    }
}

/// Refuses an update that would send a kept secret to another target: with the host, port,
/// type or login changed, the password and extra must be given again (or cleared); with a
/// securing extra key changed or removed (TLS mode, certificates, SSH host key), the password.
/// Otherwise anyone who can edit a connection could point it at their own server (or strip
/// its TLS), press Test, and receive the stored password.
fn moved_secrets(
    current: &Connection,
    new: &Connection,
    update: &ConnectionUpdate,
    stored_extra_unknown: bool,
) -> Result<(), Error> {
    let endpoint = current.same_endpoint(new);
    if endpoint && !stored_extra_unknown && current.same_target(new) {
        return Ok(());
    }
    let mut errors = Vec::new();
    for (field, kept, stored) in [
        ("password", &update.password, current.password.is_some()),
        ("extra", &update.extra, current.extra.is_some()),
    ] {
        if !kept.carries_stored() || !stored {
            continue;
        }
        if !endpoint {
            errors.push(broked_core::FieldError {
                field,
                message: "the type, host, port or login changes: enter it again (or send null \
                          to clear it); a stored secret is never moved to another target"
                    .into(),
            });
        } else if field == "password" {
            let changed: Vec<String> = changed_securing_keys(current, new);
            errors.push(broked_core::FieldError {
                field,
                message: if stored_extra_unknown {
                    "the stored extra cannot be read to compare its TLS and host key \
                     settings: enter the password again (or send null to clear it)"
                        .into()
                } else {
                    format!(
                        "extra {} changes how the target is secured (TLS, certificates, host \
                         key): enter the password again (or send null to clear it); a stored \
                         secret is never sent over a connection secured otherwise",
                        changed.join(", ")
                    )
                },
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(broked_core::ValidationErrors(errors)))
    }
}

/// The names of the securing extra keys whose values differ between `a` and `b`.
fn changed_securing_keys(a: &Connection, b: &Connection) -> Vec<String> {
    let sa = broked_core::securing_extra(a.conn_type, a.extra.as_ref().map(Secret::expose));
    let sb = broked_core::securing_extra(b.conn_type, b.extra.as_ref().map(Secret::expose));
    let mut keys: Vec<String> = sa
        .iter()
        .chain(&sb)
        .map(|(k, _)| k.clone())
        .filter(|k| {
            sa.iter().find(|(x, _)| x == k).map(|(_, v)| v)
                != sb.iter().find(|(x, _)| x == k).map(|(_, v)| v)
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `db` as a message may show it, before it is opened: a file path, or — since a PostgreSQL
/// address may carry a password — only the words "the PostgreSQL database".
pub fn describe_db(db: &Path) -> String {
    if is_postgres_url(&db.to_string_lossy()) {
        "the PostgreSQL database".to_owned()
    } else {
        format!("the database {}", db.display())
    }
}

/// The store for `db`, the name to show for it, and its key file.
fn open_store(db: &Path, options: &Options) -> Result<(PathBuf, PathBuf, Box<dyn Store>), Error> {
    let text = db.to_string_lossy();
    if is_postgres_url(&text) {
        #[cfg(feature = "postgres-store")]
        {
            let store = broked_store::PgStore::open_with_timeout(&text, options.store_timeout)
                .map_err(store_err)?;
            let shown = PathBuf::from(store.server());
            let key = options.key_file.clone().ok_or_else(|| {
                Error::Options(
                    "a PostgreSQL database needs a key file: set --key-file (or BROKED_KEY_FILE) \
                     to the same file on every replica"
                        .into(),
                )
            })?;
            return Ok((shown, key, Box::new(store)));
        }
        #[cfg(not(feature = "postgres-store"))]
        return Err(Error::Options(
            "this build has no PostgreSQL store (feature postgres-store)".into(),
        ));
    }
    let store = SqliteStore::open_with_timeout(db, options.store_timeout).map_err(store_err)?;
    let key = options
        .key_file
        .clone()
        .unwrap_or_else(|| Keyring::path_for_db(db));
    Ok((db.to_owned(), key, Box::new(store)))
}

pub(crate) fn info(row: &StoredConnection) -> Result<ConnectionInfo, Error> {
    let c = crate::sealer::without_secrets(row)?;
    Ok(ConnectionInfo {
        conn_id: c.conn_id,
        conn_type: c.conn_type,
        host: c.host,
        port: c.port,
        schema: c.schema,
        login: c.login,
        has_password: row.password.is_some(),
        has_extra: row.extra.is_some(),
        description: c.description,
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
        version: row.version,
        updated_by: row.updated_by.clone(),
        // A new or updated version is not tested yet (`listing.rs`).
        last_test: None,
    })
}

/// Fails with [`Error::Stale`] unless `row` has the version `expected` (when given).
pub(crate) fn expect_version(row: &StoredConnection, expected: Option<i64>) -> Result<(), Error> {
    match expected {
        Some(v) if v != row.version => Err(Error::Stale {
            conn_id: row.conn_id.clone(),
            expected: v,
            current: Some(row.version),
        }),
        _ => Ok(()),
    }
}

/// The [`Error::Stale`] of a write that expected `expected`, with the version there is now.
pub(crate) fn stale(c: &Connections, conn_id: &str, expected: Option<i64>) -> Error {
    let current = c
        .store
        .get_connection(conn_id)
        .ok()
        .flatten()
        .map(|r| r.version);
    Error::Stale {
        conn_id: conn_id.to_owned(),
        expected: expected.unwrap_or_default(),
        current,
    }
}

fn pipeline_info(row: StoredPipeline) -> Result<PipelineInfo, Error> {
    let bad = |_| {
        Error::Store(StoreError::Corrupt {
            table: "pipelines",
            reason: "invalid definition".into(),
        })
    };
    Ok(PipelineInfo {
        pipeline_id: PipelineId::new(row.pipeline_id).map_err(bad)?,
        definition: PipelineDef::from_json(&row.definition).map_err(bad)?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Groups node references by pipeline.
fn usages(refs: Vec<PipelineRef>) -> Result<Vec<PipelineUsage>, Error> {
    let mut by_pipeline: BTreeMap<String, PipelineUsage> = BTreeMap::new();
    for r in refs {
        let entry = match by_pipeline.entry(r.pipeline_id.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(PipelineUsage {
                pipeline_id: PipelineId::new(r.pipeline_id).map_err(|_| {
                    Error::Store(StoreError::Corrupt {
                        table: "pipelines",
                        reason: "invalid id".into(),
                    })
                })?,
                name: r.name,
                nodes: Vec::new(),
            }),
        };
        entry.nodes.push(r.node_id);
    }
    Ok(by_pipeline
        .into_values()
        .map(|mut u| {
            u.nodes.sort();
            u
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(c: &Connections) {
        c.create(ConnectionInput {
            conn_id: Some("pg".into()),
            conn_type: Some("postgres".into()),
            host: Some("db.example.com".into()),
            login: Some("etl".into()),
            password: Some("stored-pw".into()),
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn an_unsaved_test_uses_the_stored_secret_only_for_the_same_target() {
        let dir = tempfile::tempdir().unwrap();
        let c = Connections::open(dir.path().join("broked.db")).unwrap();
        stored(&c);
        let body = |host: &str, login: &str, port: Option<i64>| ConnectionUpdate {
            conn_id: Some("pg".into()),
            conn_type: Some("postgres".into()),
            host: Some(Some(host.into())),
            port: Some(port),
            login: Some(Some(login.into())),
            password: SecretUpdate::Keep,
            ..Default::default()
        };
        let pw = |u: ConnectionUpdate| {
            c.unsaved(u)
                .unwrap()
                .password
                .map(|p| p.expose().to_owned())
        };
        assert_eq!(
            pw(body("db.example.com", "etl", None)).as_deref(),
            Some("stored-pw")
        );
        assert_eq!(
            pw(body("db.example.com", "etl", Some(5432))).as_deref(),
            Some("stored-pw")
        );
        assert_eq!(pw(body("attacker.example", "etl", None)), None);
        assert_eq!(pw(body("db.example.com", "postgres", None)), None);
        assert_eq!(pw(body("db.example.com", "etl", Some(6543))), None);
        // Issue 13: the same host but TLS weakened in extra — the stored password stays home.
        let weaker = ConnectionUpdate {
            extra: SecretUpdate::Set(r#"{"sslmode":"disable"}"#.into()),
            ..body("db.example.com", "etl", None)
        };
        assert_eq!(pw(weaker), None);
        let same_tls = ConnectionUpdate {
            extra: SecretUpdate::Set(r#"{"application_name":"x"}"#.into()),
            ..body("db.example.com", "etl", None)
        };
        assert_eq!(pw(same_tls).as_deref(), Some("stored-pw"));
    }
}
