//! Connections a page at a time, filtered, with the last test result of each (issues 18 and
//! 19); and the recording of that result after every test of a stored connection.
//!
//! A listed connection is read without its sealed values (a list is masked anyway), so a list
//! costs what its rows cost to read and show, not what their secrets weigh.

use broked_core::{ConnId, ConnType};
use broked_probe::Failure;
use broked_store::{ConnQuery, ListedConnection, StoredConnection, TestStatus};
pub use broked_store::{StatusFilter, Total};

use crate::error::{Error, store_err};
use crate::info::{ConnectionInfo, now};
use crate::{Connections, TestOutcome};

/// The longest test message kept with a connection, in characters (a driver can say a lot).
const MESSAGE_LIMIT: usize = 1_000;

/// Which connections [`Connections::list_page`] returns, in conn_id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub conn_type: Option<ConnType>,
    /// Only connections whose conn_id, host or description contains this text, ignoring the
    /// case of ASCII letters. Empty: no filter.
    pub search: Option<String>,
    /// Only connections whose last test had this result.
    pub status: Option<StatusFilter>,
    /// Only conn_ids after this one (the cursor: the last conn_id of the page before).
    pub after: Option<String>,
    /// At most this many (`None`: all).
    pub limit: Option<usize>,
    /// Also count the matches of every page, up to this many.
    pub count_up_to: Option<u64>,
}

/// One page of connections, masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionPage {
    pub items: Vec<ConnectionInfo>,
    /// The cursor of the next page (the last conn_id of this one), `None` on the last page.
    pub next_after: Option<String>,
    /// When counted ([`ListQuery::count_up_to`]).
    pub total: Option<Total>,
}

/// When a read was made, as the store counts its commits (every commit of any process
/// moves it): what a caller keeps with a copy to ask [`Connections::get_if_changed`] whether
/// the copy is still current. Opaque; meaningful only to the `Connections` that gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

/// The store's generation `n` as a caller keeps it.
pub(crate) fn generation(n: u64) -> Generation {
    Generation(n)
}

impl Generation {
    /// A generation made up, for the tests of callers that keep answers.
    #[doc(hidden)]
    pub fn for_tests(n: u64) -> Generation {
        Generation(n)
    }
}

/// What [`Connections::get_if_changed`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
// A return value, moved once: boxing the read answer would only add an allocation per GET.
#[allow(clippy::large_enum_variant)]
pub enum IfChanged {
    /// Nothing was committed since the generation given: the caller's copy is current.
    Unchanged,
    /// The connection as `get` reads it, and the generation it was read at (`None` when the
    /// store cannot say, as PostgreSQL's: then nothing should be kept).
    Read {
        info: ConnectionInfo,
        generation: Option<Generation>,
    },
}

/// The last test of a connection: when, whether it worked, and the probe's message (never a
/// secret: probes scrub what drivers say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastTest {
    /// RFC 3339.
    pub tested_at: String,
    pub ok: bool,
    pub message: String,
}

impl Connections {
    /// The store's generation now: every commit of any process moves it. What a caller
    /// keeps with an answer built from reads made *after* this call, to tell later whether
    /// that answer may still be current (the server's list cache). The PostgreSQL store
    /// counts a read here too, but its pages do not say their generation.
    pub fn generation(&self) -> Result<Generation, Error> {
        self.store.generation().map(Generation).map_err(store_err)
    }

    /// A page of connections, masked, with their last test results.
    pub fn list_page(&self, query: &ListQuery) -> Result<ConnectionPage, Error> {
        let q = ConnQuery {
            conn_id: None,
            conn_type: query.conn_type.map(|t| t.as_str().to_owned()),
            search: query.search.clone().filter(|s| !s.is_empty()),
            status: query.status,
            after: query.after.clone(),
            limit: query.limit,
            count_up_to: query.count_up_to,
            unless_generation: None,
        };
        let page = self.store.page_connections(&q).map_err(store_err)?;
        let items = page
            .rows
            .into_iter()
            .map(listed_info)
            .collect::<Result<Vec<_>, _>>()?;
        let next_after = if page.more {
            items.last().map(|i| i.conn_id.as_str().to_owned())
        } else {
            None
        };
        Ok(ConnectionPage {
            items,
            next_after,
            total: page.total,
        })
    }

    /// One connection as a list shows it (masked, with its last test), read without its
    /// sealed values.
    pub(crate) fn listed(&self, conn_id: &str) -> Result<ConnectionInfo, Error> {
        let q = ConnQuery {
            conn_id: Some(conn_id.to_owned()),
            ..ConnQuery::default()
        };
        let page = self.store.page_connections(&q).map_err(store_err)?;
        match page.rows.into_iter().next() {
            Some(row) => listed_info(row),
            None => Err(Error::NotFound(conn_id.to_owned())),
        }
    }

    /// [`Connections::get`] for a caller that keeps what it got (the server's cache of single
    /// GETs, issue 19): with the [`Generation`] of a kept copy, the store answers
    /// [`IfChanged::Unchanged`] without reading when nothing was committed since — by any
    /// process — and otherwise reads the connection as `get` does. One store call either way.
    pub fn get_if_changed(
        &self,
        conn_id: &str,
        since: Option<Generation>,
    ) -> Result<IfChanged, Error> {
        let q = ConnQuery {
            conn_id: Some(conn_id.to_owned()),
            unless_generation: since.map(|g| g.0),
            ..ConnQuery::default()
        };
        let page = self.store.page_connections(&q).map_err(store_err)?;
        if page.unchanged && since.is_some() {
            return Ok(IfChanged::Unchanged);
        }
        match page.rows.into_iter().next() {
            Some(row) => Ok(IfChanged::Read {
                info: listed_info(row)?,
                generation: page.generation.map(Generation),
            }),
            None => Err(Error::NotFound(conn_id.to_owned())),
        }
    }

    /// Keeps the result of a test of the stored `row` with the connection (a failure to
    /// write it is logged, not returned: the test itself worked). A disabled test is no
    /// result.
    pub(crate) fn remember_test(&self, row: &StoredConnection, outcome: &TestOutcome) {
        if outcome.failure == Some(Failure::Disabled) {
            return;
        }
        let status = TestStatus {
            tested_at: now(),
            ok: outcome.success,
            message: outcome.message.chars().take(MESSAGE_LIMIT).collect(),
        };
        if let Err(e) = self.store.record_test(&row.conn_id, row.version, &status) {
            tracing::warn!(conn_id = %row.conn_id, error = %e, "cannot record the test result");
        }
    }
}

fn corrupt(what: &str) -> Error {
    Error::Store(broked_store::StoreError::Corrupt {
        table: "connections",
        reason: format!("invalid {what}"),
    })
}

fn listed_info(row: ListedConnection) -> Result<ConnectionInfo, Error> {
    Ok(ConnectionInfo {
        conn_id: ConnId::new(row.conn_id).map_err(|_| corrupt("conn_id"))?,
        conn_type: row.conn_type.parse().map_err(|_| corrupt("conn_type"))?,
        host: row.host,
        port: row.port,
        schema: row.schema,
        login: row.login,
        has_password: row.has_password,
        has_extra: row.has_extra,
        description: row.description,
        created_at: row.created_at,
        updated_at: row.updated_at,
        version: row.version,
        updated_by: row.updated_by,
        last_test: row.last_test.map(|t| LastTest {
            tested_at: t.tested_at,
            ok: t.ok,
            message: t.message,
        }),
    })
}
