//! [`Acting`]: [`Connections`] on behalf of an [`Actor`], the handle whose calls the audit
//! log records with that actor (`connections.acting(Actor::token(name))`).

use std::fmt;
use std::time::Duration;

use broked_core::{ConnType, Connection, ConnectionInput, Dialect, Secret};
use serde_json::Value;

use crate::actor::Actor;
use crate::connections::Connections;
use crate::error::Error;
use crate::info::{ConnectionInfo, PipelineInfo};
use crate::pipeline::PipelineDef;
use crate::sealer::{CheckReport, RotateReport};
use crate::tokens::{Scope, TokenInfo};
use crate::transfer::Importer;
use crate::tunnel::TunnelGuard;
use crate::update::{ConnectionUpdate, UpdateMode};
use crate::{ConnId, TestOutcome};

impl Connections {
    /// The calls of this handle made on behalf of `actor`: what the audit log records and
    /// the version history names. The plain methods of [`Connections`] act as
    /// [`Actor::library`].
    pub fn acting(&self, actor: Actor) -> Acting<'_> {
        Acting {
            connections: self,
            actor,
        }
    }
}

/// [`Connections`] on behalf of an [`Actor`] (from [`Connections::acting`]). Each method is
/// the one of the same name on [`Connections`], recorded with this actor.
pub struct Acting<'a> {
    connections: &'a Connections,
    actor: Actor,
}

impl fmt::Debug for Acting<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acting")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl<'a> Acting<'a> {
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The connections this handle acts on (for the calls that are not recorded).
    pub fn connections(&self) -> &'a Connections {
        self.connections
    }

    /// [`Connections::create`].
    pub fn create(&self, input: ConnectionInput) -> Result<ConnectionInfo, Error> {
        self.connections.create_as(&self.actor, input)
    }

    /// [`Connections::update`].
    pub fn update(
        &self,
        conn_id: &str,
        update: ConnectionUpdate,
        mode: UpdateMode,
    ) -> Result<ConnectionInfo, Error> {
        self.connections
            .update_as(&self.actor, conn_id, update, mode)
    }

    /// [`Connections::delete`].
    pub fn delete(&self, conn_id: &str, force: bool) -> Result<(), Error> {
        self.connections.delete_as(&self.actor, conn_id, force)
    }

    /// [`Connections::connection`]: a reveal (the secrets decrypted), recorded as such.
    pub fn connection(&self, conn_id: &str) -> Result<Connection, Error> {
        self.connections.connection_as(&self.actor, conn_id)
    }

    /// The full URI of a stored connection, secrets included (`get --uri`): a reveal.
    pub fn uri(&self, conn_id: &str) -> Result<Secret, Error> {
        self.connections.uri_as(&self.actor, conn_id)
    }

    /// The connection string in a client's [`Dialect`] (`get --uri-format`): like
    /// [`Acting::uri`], recorded as a reveal. Built as [`Connections::resolve_as`] builds it,
    /// from the stored connection (not the environment, as `get --uri`).
    pub fn uri_in(&self, conn_id: &str, dialect: Dialect) -> Result<Secret, Error> {
        self.connections.uri_in_as(&self.actor, conn_id, dialect)
    }

    /// [`Connections::test`].
    pub async fn test(&self, conn_id: &str) -> Result<TestOutcome, Error> {
        self.connections.test_as(&self.actor, conn_id).await
    }

    /// [`Connections::test_unsaved`].
    pub async fn test_unsaved(&self, update: ConnectionUpdate) -> Result<TestOutcome, Error> {
        self.connections.test_unsaved_as(&self.actor, update).await
    }

    /// [`Connections::put_pipeline`].
    pub fn put_pipeline(
        &self,
        pipeline_id: &str,
        definition: PipelineDef,
    ) -> Result<PipelineInfo, Error> {
        self.connections
            .put_pipeline_as(&self.actor, pipeline_id, definition)
    }

    /// [`Connections::delete_pipeline`].
    pub fn delete_pipeline(&self, pipeline_id: &str) -> Result<(), Error> {
        self.connections
            .delete_pipeline_as(&self.actor, pipeline_id)
    }

    /// [`Connections::export`]; a decrypted export is a reveal.
    pub fn export(&self, decrypted: bool) -> Result<Value, Error> {
        self.connections.export_as(&self.actor, decrypted)
    }

    /// [`Connections::export_uris`]; a decrypted export (env format) is a reveal.
    pub fn export_uris(&self, decrypted: bool) -> Result<Vec<(ConnId, Secret)>, Error> {
        self.connections.export_uris_as(&self.actor, decrypted)
    }

    /// [`Connections::import`].
    pub fn import(&self, document: Value, overwrite: bool) -> Result<usize, Error> {
        self.connections.import_as(&self.actor, document, overwrite)
    }

    /// [`Connections::importer`].
    pub fn importer(&self, overwrite: bool) -> Importer<'a> {
        self.connections.importer_as(self.actor.clone(), overwrite)
    }

    /// [`Connections::open_tunnel`]: the guard holds the URI, so it is recorded as a reveal.
    pub fn open_tunnel(&self, conn_id: &str) -> Result<TunnelGuard, Error> {
        self.connections.open_tunnel_as(&self.actor, conn_id)
    }

    /// [`Connections::rotate`].
    pub fn rotate(&self, progress: impl FnMut(u64, u64)) -> Result<RotateReport, Error> {
        self.connections.rotate_as(&self.actor, progress)
    }

    /// [`Connections::prune`].
    pub fn prune(&self) -> Result<Vec<String>, Error> {
        self.connections.prune_as(&self.actor)
    }

    /// [`Connections::check`].
    pub fn check(&self) -> Result<CheckReport, Error> {
        self.connections.check_as(&self.actor)
    }

    /// [`Connections::create_token`].
    pub fn create_token(
        &self,
        name: &str,
        scopes: &[Scope],
        conns: Option<Vec<String>>,
        expires_in: Option<Duration>,
    ) -> Result<(TokenInfo, Secret), Error> {
        self.connections
            .create_token_as(&self.actor, name, scopes, conns, expires_in)
    }

    /// [`Connections::revoke_token`].
    pub fn revoke_token(&self, name: &str) -> Result<(), Error> {
        self.connections.revoke_token_as(&self.actor, name)
    }

    /// [`Connections::audit_prune`].
    pub fn audit_prune(&self, older_than: Duration) -> Result<crate::AuditPruned, Error> {
        self.connections.audit_prune_as(&self.actor, older_than)
    }

    /// Reads that are not recorded, for convenience.
    pub fn get(&self, conn_id: &str) -> Result<ConnectionInfo, Error> {
        self.connections.get(conn_id)
    }

    /// [`Connections::list`] (not recorded).
    pub fn list(&self, conn_type: Option<ConnType>) -> Result<Vec<ConnectionInfo>, Error> {
        self.connections.list(conn_type)
    }
}
