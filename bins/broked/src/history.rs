//! `broked connections history|rollback|purge` (issue 17): a connection's kept versions —
//! who wrote each and which fields it changed, never a value — putting one back, and
//! removing a deleted connection's history.

use std::process::ExitCode;

use broked_connections::{Actor, ConnectionVersion, Connections, VersionInfo};
use serde_json::{Value, json};

use crate::output::{self, Output};

fn version_json(v: &VersionInfo) -> Value {
    json!({
        "version": v.version,
        "updated_at": v.updated_at,
        "updated_by": v.updated_by,
        "changed": v.changed,
        "deleted": v.deleted,
        "current": v.current,
    })
}

/// `history ID`: every kept version, newest first; `history ID --version N`: one, masked.
pub(crate) fn history(
    out: Output,
    c: &Connections,
    conn_id: &str,
    version: Option<i64>,
) -> anyhow::Result<ExitCode> {
    if let Some(n) = version {
        let v = c.version(conn_id, n)?;
        one(out, &v);
        return Ok(ExitCode::SUCCESS);
    }
    let list = c.versions(conn_id)?;
    match out {
        Output::Json => output::print_json(&Value::Array(list.iter().map(version_json).collect())),
        Output::Text => {
            let rows: Vec<[String; 4]> = list
                .iter()
                .map(|v| {
                    let mark = if v.current {
                        " (current)"
                    } else if v.deleted {
                        " (deleted)"
                    } else {
                        ""
                    };
                    [
                        format!("{}{mark}", v.version),
                        v.updated_at.clone(),
                        v.updated_by.clone().unwrap_or_default(),
                        v.changed.join(","),
                    ]
                })
                .collect();
            output::table(&["VERSION", "TIME", "BY", "CHANGED"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn one(out: Output, v: &ConnectionVersion) {
    match out {
        Output::Json => {
            let mut value = version_json(&v.summary);
            value["connection"] = output::connection_json(&v.connection);
            output::print_json(&value);
        }
        Output::Text => {
            println!(
                "version {} by {} at {}{}",
                v.summary.version,
                v.summary.updated_by.as_deref().unwrap_or("(unknown)"),
                v.summary.updated_at,
                if v.summary.deleted {
                    " (deleted here)"
                } else {
                    ""
                }
            );
            if !v.summary.changed.is_empty() {
                println!("changed      {}", v.summary.changed.join(", "));
            }
            if !v.summary.deleted {
                output::connection(Output::Text, &v.connection);
            }
        }
    }
}

/// `rollback ID --to N`: a new version equal to N (its secrets too).
pub(crate) fn rollback(
    out: Output,
    c: &Connections,
    conn_id: &str,
    to: i64,
) -> anyhow::Result<ExitCode> {
    let info = c.acting(Actor::cli()).rollback(conn_id, to, None)?;
    if out == Output::Text {
        println!(
            "rolled {conn_id} back to version {to}: now version {}",
            info.version
        );
    }
    output::connection(out, &info);
    Ok(ExitCode::SUCCESS)
}

/// `purge ID`: the kept history of a deleted connection.
pub(crate) fn purge(out: Output, c: &Connections, conn_id: &str) -> anyhow::Result<ExitCode> {
    let n = c.acting(Actor::cli()).purge(conn_id)?;
    match out {
        Output::Json => output::print_json(&json!({"conn_id": conn_id, "purged": n})),
        Output::Text => println!("purged {n} kept versions of {conn_id}"),
    }
    Ok(ExitCode::SUCCESS)
}
