//! Export and import of connections: one JSON document, all or nothing.
//!
//! The document is `{"format": "broked-connections", "version": 1, "connections": [...]}`;
//! each connection has the fields of the API (`conn_id`, `type`, `host`, `port`, `schema`,
//! `login`, `password`, `extra` as an object, `description`). A masked export carries
//! `"********"` for set secrets and cannot be imported back with them (the secrets are not in
//! it); `--decrypted` exports can.

use std::collections::HashSet;

use broked_core::{ConnId, Secret};
use broked_store::{Logged, PutMany, SecretField};
use serde_json::{Value, json};

use crate::actor::Actor;
use crate::audit::Event;
use crate::connections::Connections;
use crate::error::{Error, ImportRowError};
use crate::info::now;

/// The `format` field of an export document.
pub const EXPORT_FORMAT: &str = "broked-connections";

impl Connections {
    /// Every connection as an export document; secrets masked unless `decrypted`.
    pub fn export(&self, decrypted: bool) -> Result<Value, Error> {
        self.export_as(&Actor::library(), decrypted)
    }

    /// A decrypted export is a reveal of every connection: one record (`export`,
    /// `decrypted=true`, the count); a masked one is recorded too.
    pub(crate) fn export_as(&self, actor: &Actor, decrypted: bool) -> Result<Value, Error> {
        let result = self.export_recorded(decrypted);
        let count = result
            .as_ref()
            .ok()
            .and_then(|d| d.get("connections").and_then(Value::as_array))
            .map_or(0, Vec::len);
        let event = Event::new("export").detail(format!(
            "format=document decrypted={decrypted} count={count}"
        ));
        self.record_reveal(actor, event, result)
    }

    fn export_recorded(&self, decrypted: bool) -> Result<Value, Error> {
        let mut rows = Vec::new();
        for stored in self.stored_all()? {
            let conn = if decrypted {
                Some(self.decrypt(&stored)?)
            } else {
                None
            };
            let secret = |field: SecretField, plain: Option<&Secret>| -> Value {
                match (stored.sealed(field), plain) {
                    (None, _) => Value::Null,
                    (Some(_), None) => Value::String(Secret::MASK.into()),
                    (Some(_), Some(s)) if field == SecretField::Extra => {
                        serde_json::from_str(s.expose())
                            .unwrap_or_else(|_| Value::String(s.expose().into()))
                    }
                    (Some(_), Some(s)) => Value::String(s.expose().into()),
                }
            };
            rows.push(json!({
                "conn_id": stored.conn_id,
                "type": stored.conn_type,
                "host": stored.host,
                "port": stored.port,
                "schema": stored.schema,
                "login": stored.login,
                "password": secret(SecretField::Password, conn.as_ref().and_then(|c| c.password.as_ref())),
                "extra": secret(SecretField::Extra, conn.as_ref().and_then(|c| c.extra.as_ref())),
                "description": stored.description,
            }));
        }
        Ok(json!({ "format": EXPORT_FORMAT, "version": 1, "connections": rows }))
    }

    /// Every connection as `(conn_id, URI)`; the password masked unless `decrypted`.
    pub fn export_uris(&self, decrypted: bool) -> Result<Vec<(ConnId, Secret)>, Error> {
        self.export_uris_as(&Actor::library(), decrypted)
    }

    pub(crate) fn export_uris_as(
        &self,
        actor: &Actor,
        decrypted: bool,
    ) -> Result<Vec<(ConnId, Secret)>, Error> {
        let result = self.export_uris_recorded(decrypted);
        let count = result.as_ref().map_or(0, Vec::len);
        let event =
            Event::new("export").detail(format!("format=env decrypted={decrypted} count={count}"));
        self.record_reveal(actor, event, result)
    }

    fn export_uris_recorded(&self, decrypted: bool) -> Result<Vec<(ConnId, Secret)>, Error> {
        self.stored_all()?
            .iter()
            .map(|stored| {
                if decrypted {
                    let conn = self.decrypt(stored)?;
                    return Ok((conn.conn_id.clone(), conn.to_uri()));
                }
                // Masked: the password is never decrypted; extra only to show its keys, and
                // left out if it does not open.
                let mut conn = self
                    .decrypt_some(stored, false, true)
                    .or_else(|_| self.decrypt_some(stored, false, false))?;
                conn.password = stored.password.as_ref().map(|_| Secret::new(Secret::MASK));
                Ok((conn.conn_id.clone(), Secret::new(conn.to_masked_uri())))
            })
            .collect()
    }

    /// Imports an export document (or a bare array of connections). All or nothing: if any
    /// row is bad — invalid, masked secrets, a duplicate, or an existing conn_id without
    /// `overwrite` — nothing changes and [`Error::Import`] lists every bad row.
    pub fn import(&self, document: Value, overwrite: bool) -> Result<usize, Error> {
        self.import_as(&Actor::library(), document, overwrite)
    }

    /// One record for the import as a whole: overwrite or not, the count and the conn_ids.
    pub(crate) fn import_as(
        &self,
        actor: &Actor,
        document: Value,
        overwrite: bool,
    ) -> Result<usize, Error> {
        let mut ids = Vec::new();
        let result = self.import_recorded(actor, document, overwrite, &mut ids);
        self.settle_write(actor, import_event(overwrite, &ids), result)
    }

    /// The import; `ids` gets the conn_ids it writes, and its record (outcome `ok`) goes into
    /// the import's transaction.
    fn import_recorded(
        &self,
        actor: &Actor,
        document: Value,
        overwrite: bool,
        ids: &mut Vec<String>,
    ) -> Result<(usize, Logged), Error> {
        let rows = match document {
            Value::Array(rows) => rows,
            Value::Object(mut top) => match top.remove("connections") {
                Some(Value::Array(rows)) => rows,
                _ => return Err(Error::Import(vec![ImportRowError {
                    row: 0,
                    conn_id: None,
                    message: "expected an array of connections, or an object with a \"connections\" array".into(),
                }])),
            },
            _ => return Err(Error::Import(vec![ImportRowError {
                row: 0,
                conn_id: None,
                message: "expected an array of connections".into(),
            }])),
        };
        let mut errors = Vec::new();
        let mut seen = HashSet::new();
        let mut valid = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            let row_no = i + 1;
            let mut fail = |conn_id: Option<String>, message: String| {
                errors.push(ImportRowError {
                    row: row_no,
                    conn_id,
                    message,
                })
            };
            let Value::Object(map) = row else {
                fail(None, "must be an object".into());
                continue;
            };
            let id = map
                .get("conn_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let masked: Vec<&str> = ["password", "extra"]
                .into_iter()
                .filter(|f| map.get(*f).and_then(Value::as_str) == Some(Secret::MASK))
                .collect();
            if !masked.is_empty() {
                fail(
                    id,
                    format!(
                        "{} masked (********): a masked export holds no secrets; export with --decrypted",
                        masked.join(" and ")
                    ),
                );
                continue;
            }
            let input = match crate::env::input_from_object(map, crate::JsonSource::Import) {
                Ok(input) => input,
                Err(message) => {
                    fail(id, message);
                    continue;
                }
            };
            match input.validate() {
                Ok(conn) => {
                    if !seen.insert(conn.conn_id.clone()) {
                        fail(id, "appears more than once in the file".into());
                        continue;
                    }
                    valid.push((row_no, conn));
                }
                Err(e) => fail(id, e.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Import(errors));
        }
        ids.extend(valid.iter().map(|(_, c)| c.conn_id.as_str().to_owned()));
        let now = now();
        let log = self.audit_log(actor, &import_event(overwrite, ids))?;
        let (_, outcome, logged) = self.sealer.write_rows(
            None,
            &log,
            || {
                valid
                    .iter()
                    .map(|(_, c)| {
                        let mut row = self.sealer.seal_row(c, None, &now, &now, 1)?;
                        row.updated_by = Some(actor.name().to_owned());
                        Ok(row)
                    })
                    .collect()
            },
            |rows, log| {
                self.store
                    .put_connections_logged(rows, overwrite, self.options.keep_versions, log)
            },
        )?;
        match outcome {
            PutMany::Done(n) => Ok((n, logged)),
            PutMany::Exists(ids) => Err(Error::Import(
                valid
                    .iter()
                    .filter(|(_, c)| ids.iter().any(|id| id == c.conn_id.as_str()))
                    .map(|(row, c)| ImportRowError {
                        row: *row,
                        conn_id: Some(c.conn_id.as_str().to_owned()),
                        message: "already exists; import with --overwrite to replace it".into(),
                    })
                    .collect(),
            )),
        }
    }
}

/// The one record of an import: overwrite or not, the count and the conn_ids.
fn import_event(overwrite: bool, ids: &[String]) -> Event {
    let ids: Vec<String> = ids.iter().map(|i| crate::audit::printable(i)).collect();
    Event::new("import").detail(format!(
        "overwrite={overwrite} count={} conns={}",
        ids.len(),
        ids.join(",")
    ))
}
