//! The audit log: who did what to which connection, when, and how it ended.

use broked_core::{Connection, ConnectionInput, Secret};

use crate::TestOutcome;
use crate::actor::Actor;
use crate::connections::Connections;
use crate::error::Error;
use crate::pipeline::PipelineDef;
use crate::sealer::RotateReport;
use crate::tokens::Scope;
use crate::update::ConnectionUpdate;

/// One audited call, before its outcome is known. Never a value: `fields` are names, and
/// `values` are only ever stored as their HMAC.
#[derive(Debug, Default)]
pub(crate) struct Event {
    pub(crate) action: &'static str,
    pub(crate) conn_id: Option<String>,
    pub(crate) fields: Vec<&'static str>,
    /// Values the record should be findable by (`broked audit hash VALUE`): HMAC'd.
    pub(crate) values: Vec<Secret>,
    /// Free text without values (`decrypted=true`, a client address, a count).
    pub(crate) detail: String,
}

impl Event {
    pub(crate) fn new(action: &'static str) -> Event {
        Event {
            action,
            ..Event::default()
        }
    }

    pub(crate) fn conn(mut self, conn_id: impl Into<String>) -> Event {
        self.conn_id = Some(conn_id.into());
        self
    }

    pub(crate) fn fields(mut self, fields: Vec<&'static str>) -> Event {
        self.fields = fields;
        self
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = detail.into();
        self
    }

    pub(crate) fn value(mut self, value: Option<&Secret>) -> Event {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.values.push(v.clone());
        }
        self
    }
}

impl Connections {
    /// Records `event` done by `actor` with the outcome of `result`.
    pub(crate) fn record<T>(&self, actor: &Actor, event: Event, result: &Result<T, Error>) {
        tracing::debug!(
            target: "broked_connections::audit",
            actor = actor.name(),
            request_id = actor.request_id(),
            action = event.action,
            conn_id = event.conn_id.as_deref(),
            fields = %event.fields.join(","),
            values = event.values.len(),
            detail = %event.detail,
            ok = result.is_ok(),
            "audit"
        );
    }
}

/// `text` as a detail may hold it: printable, bounded, without separators that would make a
/// detail ambiguous.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .take(128)
        .map(|c| {
            if c.is_control() || c == ' ' || c == ',' || c == '=' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// The names of the fields a new connection sets.
pub(crate) fn input_fields(input: &ConnectionInput) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut set = |name: &'static str, present: bool| {
        if present {
            fields.push(name);
        }
    };
    set("type", input.conn_type.is_some());
    set("host", input.host.as_deref().is_some_and(|v| !v.is_empty()));
    set("port", input.port.is_some());
    set(
        "schema",
        input.schema.as_deref().is_some_and(|v| !v.is_empty()),
    );
    set(
        "login",
        input.login.as_deref().is_some_and(|v| !v.is_empty()),
    );
    set(
        "password",
        input.password.as_ref().is_some_and(|v| !v.is_empty()),
    );
    set("extra", input.extra.as_ref().is_some_and(|v| !v.is_empty()));
    set(
        "description",
        input.description.as_deref().is_some_and(|v| !v.is_empty()),
    );
    fields
}

/// The names of the fields an update or an unsaved test gives.
pub(crate) fn update_fields(update: &ConnectionUpdate) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut set = |name: &'static str, present: bool| {
        if present {
            fields.push(name);
        }
    };
    set("type", update.conn_type.is_some());
    set("host", update.host.is_some());
    set("port", update.port.is_some());
    set("schema", update.schema.is_some());
    set("login", update.login.is_some());
    set("password", !update.password.keeps());
    set("extra", !update.extra.keeps());
    set("description", update.description.is_some());
    fields
}

/// The names of the fields whose values differ between `old` and `new`. A secret counts as
/// changed when the update sets or clears it and the stored value differs (a secret kept is
/// not compared: it may not even have been decrypted).
pub(crate) fn changed_fields(
    old: &Connection,
    new: &Connection,
    update: &ConnectionUpdate,
) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let mut set = |name: &'static str, changed: bool| {
        if changed {
            fields.push(name);
        }
    };
    set("type", old.conn_type != new.conn_type);
    set("host", old.host != new.host);
    set("port", old.port != new.port);
    set("schema", old.schema != new.schema);
    set("login", old.login != new.login);
    set(
        "password",
        !update.password.keeps() && old.password != new.password,
    );
    set("extra", !update.extra.keeps() && old.extra != new.extra);
    set("description", old.description != new.description);
    fields
}

/// The names of the secret fields a revealed connection has.
pub(crate) fn secret_fields(c: &Connection) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if c.password.is_some() {
        fields.push("password");
    }
    if c.extra.is_some() {
        fields.push("extra");
    }
    fields
}

/// `success=true|false driver=…`: never the probe's message (it may quote the server).
pub(crate) fn test_detail(result: &Result<TestOutcome, Error>) -> String {
    match result {
        Ok(o) => {
            let mut d = format!("success={} driver={}", o.success, printable(o.driver));
            if let Some(f) = o.failure {
                d.push_str(&format!(" failure={}", f.as_str()));
            }
            d
        }
        Err(_) => String::new(),
    }
}

pub(crate) fn pipeline_detail(pipeline_id: &str, def: &PipelineDef) -> String {
    let mut conns: Vec<String> = def
        .references()
        .into_iter()
        .map(|(_, c)| c.as_str().to_owned())
        .collect();
    conns.sort();
    conns.dedup();
    format!(
        "pipeline={} conns={}",
        printable(pipeline_id),
        conns.join(",")
    )
}

pub(crate) fn rotate_detail(r: &RotateReport) -> String {
    format!(
        "key={} resealed={} failures={}",
        printable(&r.active_key),
        r.resealed,
        r.failures.len()
    )
}

pub(crate) fn token_detail(
    name: &str,
    scopes: &[Scope],
    conns: Option<&[String]>,
    expires_in: Option<std::time::Duration>,
) -> String {
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let mut d = format!("token={} scopes={}", printable(name), scopes.join(","));
    if let Some(globs) = conns {
        let globs: Vec<String> = globs.iter().map(|g| printable(g)).collect();
        d.push_str(&format!(" conns={}", globs.join(",")));
    }
    if let Some(e) = expires_in {
        d.push_str(&format!(" expires_in={}s", e.as_secs()));
    }
    d
}
