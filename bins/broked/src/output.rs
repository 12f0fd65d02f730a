//! What the CLI prints: a readable text form, or JSON with stable field names (`--output json`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use broked_connections::{
    CheckReport, ConnectionInfo, Connections, KeyStatus, PipelineUsage, RotateReport, TestOutcome,
    TokenInfo,
};
use broked_core::Secret;
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

pub(crate) fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}

const MASK: &str = "********";

/// The same shape as the REST API's connection.
pub(crate) fn connection_json(c: &ConnectionInfo) -> Value {
    json!({
        "conn_id": c.conn_id.as_str(),
        "type": c.conn_type.as_str(),
        "host": c.host,
        "port": c.port,
        "schema": c.schema,
        "login": c.login,
        "password": c.has_password.then_some(MASK),
        "extra": c.has_extra.then_some(MASK),
        "description": c.description,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "version": c.version,
        "updated_by": c.updated_by,
        "last_tested_at": c.last_test.as_ref().map(|t| &t.tested_at),
        "last_test_ok": c.last_test.as_ref().map(|t| t.ok),
        "last_test_message": c.last_test.as_ref().map(|t| &t.message),
    })
}

pub(crate) fn connection(out: Output, c: &ConnectionInfo) {
    match out {
        Output::Json => print_json(&connection_json(c)),
        Output::Text => {
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            let rows = [
                ("conn_id", c.conn_id.to_string()),
                ("type", c.conn_type.to_string()),
                ("host", opt(&c.host)),
                ("port", c.port.map(|p| p.to_string()).unwrap_or_default()),
                ("schema", opt(&c.schema)),
                ("login", opt(&c.login)),
                (
                    "password",
                    if c.has_password {
                        MASK.into()
                    } else {
                        String::new()
                    },
                ),
                (
                    "extra",
                    if c.has_extra {
                        MASK.into()
                    } else {
                        String::new()
                    },
                ),
                ("description", opt(&c.description)),
                ("created_at", c.created_at.clone()),
                ("updated_at", c.updated_at.clone()),
                ("version", c.version.to_string()),
                ("updated_by", opt(&c.updated_by)),
            ];
            for (k, v) in rows {
                println!("{k:<12} {v}");
            }
        }
    }
}

pub(crate) fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub(crate) fn uri(out: Output, conn_id: &str, uri: &Secret) {
    match out {
        Output::Json => print_json(&json!({"conn_id": conn_id, "uri": uri.expose()})),
        Output::Text => println!("{}", uri.expose()),
    }
}

pub(crate) fn deleted(out: Output, conn_id: &str) {
    match out {
        Output::Json => print_json(&json!({"conn_id": conn_id, "deleted": true})),
        Output::Text => println!("deleted {conn_id}"),
    }
}

pub(crate) fn imported(out: Output, count: usize) {
    match out {
        Output::Json => print_json(&json!({"imported": count})),
        Output::Text => println!("imported {count} connections"),
    }
}

pub(crate) fn rotated(out: Output, report: &RotateReport) {
    match out {
        Output::Json => print_json(&json!({
            "active_key": report.active_key,
            "resealed": report.resealed,
            "resumed": report.resumed,
            "failures": report.failures.iter().map(|f| json!({
                "conn_id": f.conn_id, "version": f.version, "field": f.field, "reason": f.reason,
            })).collect::<Vec<_>>(),
        })),
        Output::Text => {
            if report.resumed {
                println!(
                    "finished the rotation to key {} that had stopped midway",
                    report.active_key
                );
            }
            println!(
                "rotated: key {} is active; {} secrets re-encrypted; run `broked key prune` once \
                 every process using this database has read the new key file",
                report.active_key, report.resealed
            );
            for f in &report.failures {
                eprintln!(
                    "broked: the {} of {} does not open and stays under its old key: {}",
                    f.field, f.conn_id, f.reason
                );
            }
        }
    }
}

pub(crate) fn pruned(out: Output, ids: &[String]) {
    match out {
        Output::Json => print_json(&json!({"pruned": ids})),
        Output::Text if ids.is_empty() => println!("no unused keys to prune"),
        Output::Text => println!("pruned {} keys: {}", ids.len(), ids.join(", ")),
    }
}

pub(crate) fn keys(out: Output, keys: &[KeyStatus]) {
    match out {
        Output::Json => print_json(&Value::Array(
            keys.iter()
                .map(|k| {
                    json!({
                        "id": k.id, "created_at": k.created_at, "active": k.active, "secrets": k.secrets,
                    })
                })
                .collect(),
        )),
        Output::Text => {
            let rows: Vec<[String; 4]> = keys
                .iter()
                .map(|k| {
                    [
                        k.id.clone(),
                        if k.active { "yes" } else { "" }.to_owned(),
                        k.secrets.to_string(),
                        k.created_at.clone(),
                    ]
                })
                .collect();
            table(&["KEY", "ACTIVE", "SECRETS", "CREATED"], &rows);
        }
    }
}

pub(crate) fn used_by(out: Output, conn_id: &str, usage: &[PipelineUsage]) {
    match out {
        Output::Json => print_json(&json!({
            "conn_id": conn_id,
            "pipelines": usage.iter().map(|u| json!({
                "pipeline_id": u.pipeline_id.as_str(), "name": u.name, "nodes": u.nodes,
            })).collect::<Vec<_>>(),
        })),
        Output::Text => {
            if usage.is_empty() {
                println!("{conn_id} is not used by any pipeline");
            }
            for u in usage {
                println!(
                    "{}  {}  nodes: {}",
                    u.pipeline_id,
                    u.name,
                    u.nodes.join(", ")
                );
            }
        }
    }
}

pub(crate) fn check(out: Output, report: &CheckReport) {
    match out {
        Output::Json => print_json(&json!({
            "checked": report.checked,
            "failures": report.failures.iter().map(|f| json!({
                "conn_id": f.conn_id, "version": f.version, "field": f.field, "reason": f.reason,
            })).collect::<Vec<_>>(),
        })),
        Output::Text => {
            for f in &report.failures {
                match f.version {
                    Some(v) => println!("FAIL {} version {v} {}: {}", f.conn_id, f.field, f.reason),
                    None => println!("FAIL {} {}: {}", f.conn_id, f.field, f.reason),
                }
            }
            println!(
                "{} secrets checked, {} failed",
                report.checked,
                report.failures.len()
            );
        }
    }
}

/// A progress bar on stderr when it is a terminal (hidden otherwise), `len` steps long.
pub(crate) fn progress_bar(label: &'static str, len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::new(len)
        .with_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} {elapsed}").expect("template"),
        )
        .with_message(label)
}

fn outcome_json(conn_id: &str, o: &TestOutcome) -> Value {
    json!({
        "conn_id": conn_id,
        "success": o.success,
        "message": o.message,
        "driver": o.driver,
        "class": o.failure.map(|f| f.as_str()),
        "latency_ms": u64::try_from(o.latency.as_millis()).unwrap_or(u64::MAX),
        "tls": o.tls.map(|t| t.as_str()),
    })
}

/// `12 ms`, and the transport when the test reported one: `12 ms, tls: unverified`.
fn latency_and_tls(o: &TestOutcome) -> String {
    match o.tls {
        Some(tls) => format!("{} ms, tls: {tls}", o.latency.as_millis()),
        None => format!("{} ms", o.latency.as_millis()),
    }
}

/// `connections test ID` or `test --all`: concurrently, a progress bar on a terminal, a line per
/// connection; exit 1 if any test fails.
pub(crate) fn run_tests(
    out: Output,
    c: Connections,
    conn_id: Option<String>,
    all: bool,
    concurrency: usize,
) -> anyhow::Result<ExitCode> {
    let ids: Vec<String> = if all {
        c.list(None)?
            .into_iter()
            .map(|i| i.conn_id.to_string())
            .collect()
    } else {
        let id = conn_id.expect("clap requires an id without --all");
        c.get(&id)?;
        vec![id]
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let c = Arc::new(c);
    let bar = if all {
        progress_bar("testing", ids.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    let results = runtime.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut set = tokio::task::JoinSet::new();
        for (i, id) in ids.iter().cloned().enumerate() {
            let c = c.clone();
            let limit = limit.clone();
            set.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore");
                let outcome = c.acting(broked_connections::Actor::cli()).test(&id).await;
                (i, id, outcome)
            });
        }
        let mut results = Vec::with_capacity(ids.len());
        while let Some(joined) = set.join_next().await {
            let (i, id, outcome) = joined.expect("test task");
            if out == Output::Text {
                let line = match &outcome {
                    Ok(o) => format!(
                        "{} {id}: {} ({})",
                        if o.success { "ok  " } else { "FAIL" },
                        o.message,
                        latency_and_tls(o)
                    ),
                    Err(e) => format!("FAIL {id}: {e}"),
                };
                bar.suspend(|| println!("{line}"));
            }
            bar.inc(1);
            results.push((i, id, outcome));
        }
        results.sort_by_key(|(i, _, _)| *i);
        results
    });
    bar.finish_and_clear();
    let failed = results
        .iter()
        .filter(|(_, _, o)| !matches!(o, Ok(o) if o.success))
        .count();
    match out {
        Output::Json => {
            let rows: Vec<Value> = results
                .iter()
                .map(|(_, id, o)| match o {
                    Ok(o) => outcome_json(id, o),
                    Err(e) => json!({"conn_id": id, "success": false, "message": e.to_string(), "driver": null, "latency_ms": null, "tls": null}),
                })
                .collect();
            match (all, rows.as_slice()) {
                (false, [one]) => print_json(one),
                _ => print_json(&Value::Array(rows)),
            }
        }
        Output::Text if all => println!("{} tested, {failed} failed", results.len()),
        Output::Text => {}
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn token_json(t: &TokenInfo) -> Value {
    json!({
        "name": t.name,
        "scopes": t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "conns": t.conns,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "last_used_at": t.last_used_at,
    })
}

/// A new token: the one output that shows it.
pub(crate) fn token_created(out: Output, t: &TokenInfo, token: &Secret) {
    match out {
        Output::Json => {
            let mut v = token_json(t);
            v["token"] = Value::String(token.expose().to_owned());
            print_json(&v);
        }
        Output::Text => {
            println!("{}", token.expose());
            eprintln!(
                "token {} created; it is shown only now: store it (send it as \
                 Authorization: Bearer TOKEN)",
                t.name
            );
        }
    }
}

pub(crate) fn tokens(out: Output, list: &[TokenInfo]) {
    match out {
        Output::Json => print_json(&Value::Array(list.iter().map(token_json).collect())),
        Output::Text => {
            let rows: Vec<[String; 6]> = list
                .iter()
                .map(|t| {
                    [
                        t.name.clone(),
                        t.scopes
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        t.conns.as_ref().map_or("*".to_owned(), |g| g.join(",")),
                        t.created_at.clone(),
                        t.expires_at.clone().unwrap_or_else(|| "never".into()),
                        t.last_used_at.clone().unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            table(
                &["NAME", "SCOPES", "CONNS", "CREATED", "EXPIRES", "LAST USED"],
                &rows,
            );
        }
    }
}

pub(crate) fn token_revoked(out: Output, name: &str) {
    match out {
        Output::Json => print_json(&json!({"revoked": name})),
        Output::Text => println!("token {name} revoked"),
    }
}
