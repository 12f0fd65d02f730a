//! Export and import of connections: one JSON document, all or nothing.
//!
//! The document is `{"format": "broked-connections", "version": 1, "connections": [...]}`;
//! each connection has the fields of the API (`conn_id`, `type`, `host`, `port`, `schema`,
//! `login`, `password`, `extra` as an object, `description`). A masked export carries
//! `"********"` for set secrets and cannot be imported back with them (the secrets are not in
//! it); `--decrypted` exports can.

use std::collections::HashSet;

use broked_core::{ConnId, Connection, Secret};
use broked_store::{Logged, PutMany, SecretField, StoredConnection};
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
        let mut importer = self.importer_as(actor.clone(), overwrite);
        importer.document(document);
        importer.finish()
    }

    /// An import fed row by row ([`Importer`]): [`Connections::import`] without the whole
    /// document in memory.
    pub fn importer(&self, overwrite: bool) -> Importer<'_> {
        self.importer_as(Actor::library(), overwrite)
    }

    pub(crate) fn importer_as(&self, actor: Actor, overwrite: bool) -> Importer<'_> {
        Importer {
            connections: self,
            actor,
            overwrite,
            rows: 0,
            shape: None,
            errors: Vec::new(),
            valid: Vec::new(),
        }
    }
}

/// An import read a row at a time (issue 19): each row is checked as it comes, so the import
/// of a file of a million connections never holds the file parsed as a whole — only the
/// checked connections. Nothing is written before [`Importer::finish`], which writes every
/// row or none, as [`Connections::import`] does; an importer dropped unfinished (the file
/// turned out not to be JSON) changes nothing and records nothing.
pub struct Importer<'a> {
    connections: &'a Connections,
    actor: Actor,
    overwrite: bool,
    /// Rows seen so far (the number of the last one).
    rows: usize,
    /// The document is not a list of connections (the message).
    shape: Option<&'static str>,
    errors: Vec<ImportRowError>,
    /// `(row number, connection)`, in the order of the rows.
    valid: Vec<(usize, Connection)>,
}

impl std::fmt::Debug for Importer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("actor", &self.actor)
            .field("overwrite", &self.overwrite)
            .field("rows", &self.rows)
            .field("errors", &self.errors.len())
            .finish_non_exhaustive()
    }
}

const NOT_AN_ARRAY: &str = "expected an array of connections";
const NO_CONNECTIONS: &str =
    "expected an array of connections, or an object with a \"connections\" array";

impl Importer<'_> {
    /// A whole document: an array of connections, or an object with a `connections` array
    /// (other keys, such as `format` and `version`, are not read).
    pub fn document(&mut self, document: Value) {
        match document {
            Value::Array(rows) => rows.into_iter().for_each(|row| self.row(row)),
            Value::Object(mut top) => match top.remove("connections") {
                Some(Value::Array(rows)) => rows.into_iter().for_each(|row| self.row(row)),
                _ => self.not_a_list(NO_CONNECTIONS),
            },
            _ => self.not_a_list(NOT_AN_ARRAY),
        }
    }

    /// A whole document from `source` (JSON text: `serde_json::Deserializer`), row by row:
    /// the document of [`Importer::document`], each row parsed and checked before the next.
    /// An error is the source's (the text is not JSON); the rows are checked at
    /// [`Importer::finish`].
    pub fn read<'de, D: serde::Deserializer<'de>>(&mut self, source: D) -> Result<(), D::Error> {
        source.deserialize_any(Document(self))
    }

    /// The next row of the document.
    pub fn row(&mut self, row: Value) {
        self.rows += 1;
        let row_no = self.rows;
        let mut fail = |conn_id: Option<String>, message: String| {
            self.errors.push(ImportRowError {
                row: row_no,
                conn_id,
                message,
            })
        };
        let Value::Object(map) = row else {
            fail(None, "must be an object".into());
            return;
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
            return;
        }
        let input = match crate::env::input_from_object(map, crate::JsonSource::Import) {
            Ok(input) => input,
            Err(message) => {
                fail(id, message);
                return;
            }
        };
        match input.validate() {
            Ok(conn) => self.valid.push((row_no, conn)),
            Err(e) => fail(id, e.to_string()),
        }
    }

    /// The document is not a list of connections: the import fails with `message` alone.
    fn not_a_list(&mut self, message: &'static str) {
        self.shape = Some(message);
    }

    /// A second `connections` key: as in a parsed document, the last one is the list.
    fn restart(&mut self) {
        self.rows = 0;
        self.shape = None;
        self.errors.clear();
        self.valid.clear();
    }

    /// Writes every row, or none if any is bad ([`Error::Import`] names each bad row): one
    /// transaction, and one audit record for the import as a whole (overwrite or not, the
    /// count and the conn_ids).
    pub fn finish(self) -> Result<usize, Error> {
        let Importer {
            connections,
            actor,
            overwrite,
            shape,
            errors,
            valid,
            ..
        } = self;
        let mut ids = Vec::new();
        let result = import_rows(
            connections,
            &actor,
            overwrite,
            shape,
            errors,
            valid,
            &mut ids,
        );
        connections.settle_write(&actor, import_event(overwrite, &ids), result)
    }
}

/// Imports of at least this many rows are sealed on several threads.
const SEAL_IN_PARALLEL: usize = 1_024;

/// The import of checked rows; `ids` gets the conn_ids it writes, and its record (outcome
/// `ok`) goes into the import's transaction.
fn import_rows(
    c: &Connections,
    actor: &Actor,
    overwrite: bool,
    shape: Option<&'static str>,
    mut errors: Vec<ImportRowError>,
    valid: Vec<(usize, Connection)>,
    ids: &mut Vec<String>,
) -> Result<(usize, Logged), Error> {
    if let Some(message) = shape {
        return Err(Error::Import(vec![ImportRowError {
            row: 0,
            conn_id: None,
            message: message.into(),
        }]));
    }
    // The rows in conn_id order (the order the store writes them in), the first of each
    // conn_id kept and the others refused. An index sort: a connection is too big to move
    // around 20 times.
    let mut order: Vec<usize> = (0..valid.len()).collect();
    let conn_id = |i: usize| valid[i].1.conn_id.as_str();
    if !order.is_sorted_by(|&a, &b| conn_id(a) < conn_id(b)) {
        order.sort_unstable_by(|&a, &b| conn_id(a).cmp(conn_id(b)).then(a.cmp(&b)));
        order.dedup_by(|&mut later, &mut first| {
            let twice = conn_id(later) == conn_id(first);
            if twice {
                errors.push(ImportRowError {
                    row: valid[later].0,
                    conn_id: Some(conn_id(later).to_owned()),
                    message: "appears more than once in the file".into(),
                });
            }
            twice
        });
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| e.row);
        return Err(Error::Import(errors));
    }
    ids.extend(valid.iter().map(|(_, c)| c.conn_id.as_str().to_owned()));
    let now = now();
    let log = c.audit_log(actor, &import_event(overwrite, ids))?;
    let (_, outcome, logged) = c.sealer.write_rows(
        None,
        &log,
        |checked| {
            // Sealed on every core, each thread a run of the rows in order (sealing is a
            // fifth of an import's time; the store's write after it is one thread).
            let seal = |part: &[usize]| -> Result<Vec<StoredConnection>, Error> {
                part.iter()
                    .map(|&i| {
                        let mut row =
                            c.sealer
                                .seal_row(checked, &valid[i].1, None, &now, &now, 1)?;
                        row.updated_by = Some(actor.name().to_owned());
                        Ok(row)
                    })
                    .collect()
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
            if threads == 1 || order.len() < SEAL_IN_PARALLEL {
                return seal(&order);
            }
            std::thread::scope(|s| {
                let parts: Vec<_> = order
                    .chunks(order.len().div_ceil(threads))
                    .map(|part| s.spawn(move || seal(part)))
                    .collect();
                let mut rows = Vec::with_capacity(order.len());
                for part in parts {
                    rows.extend(
                        part.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
                    );
                }
                Ok(rows)
            })
        },
        |rows, log| {
            c.store
                .put_connections_logged(rows, overwrite, c.options.keep_versions, log)
        },
    )?;
    match outcome {
        PutMany::Done(n) => Ok((n, logged)),
        PutMany::Exists(there) => {
            let there: HashSet<&str> = there.iter().map(String::as_str).collect();
            Err(Error::Import(
                valid
                    .iter()
                    .filter(|(_, c)| there.contains(c.conn_id.as_str()))
                    .map(|(row, c)| ImportRowError {
                        row: *row,
                        conn_id: Some(c.conn_id.as_str().to_owned()),
                        message: "already exists; import with --overwrite to replace it".into(),
                    })
                    .collect(),
            ))
        }
    }
}

/// Reads a document for an [`Importer`]: an array of rows, or an object whose `connections`
/// is one; any other value is not a list of connections (a row error, not a syntax error).
struct Document<'i, 'a>(&'i mut Importer<'a>);

/// The value of `connections`: an array of rows, or not a list of connections.
struct Rows<'i, 'a>(&'i mut Importer<'a>);

/// Every kind of value `visit` does not take: a shape error with `message` (a map or a
/// sequence is read through to its end).
macro_rules! not_a_list {
    ($message:expr) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
            self.0.not_a_list($message);
            Ok(())
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
            self.0.not_a_list($message);
            Ok(())
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
            self.0.not_a_list($message);
            Ok(())
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
            self.0.not_a_list($message);
            Ok(())
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
            self.0.not_a_list($message);
            Ok(())
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
            self.0.not_a_list($message);
            Ok(())
        }
    };
}

impl<'de> serde::de::Visitor<'de> for Document<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(NO_CONNECTIONS)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Rows(self.0).visit_seq(seq)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "connections" {
                if found {
                    self.0.restart();
                }
                found = true;
                map.next_value_seed(Rows(&mut *self.0))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        if !found {
            self.0.not_a_list(NO_CONNECTIONS);
        }
        Ok(())
    }

    not_a_list!(NOT_AN_ARRAY);
}

impl<'de> serde::de::DeserializeSeed<'de> for Rows<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Rows<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(NO_CONNECTIONS)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(row) = seq.next_element::<Value>()? {
            self.0.row(row);
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        self.0.not_a_list(NO_CONNECTIONS);
        Ok(())
    }

    not_a_list!(NO_CONNECTIONS);
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
