//! `broked audit list|verify|hash|prune`: the audit log (docs/cli.md, docs/security.md).

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use broked_connections::{Actor, AuditEntry, AuditQuery, Connections, Secret};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::output::Output;

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCmd {
    /// Audit records, newest first: who did what to which connection, and how it ended.
    #[command(
        after_help = "Examples:\n  broked audit list\n  broked audit list --conn prod-postgres --since 7d\n  broked audit list --action reveal --output json"
    )]
    List {
        /// Only records of this conn_id.
        #[arg(long = "conn", value_name = "ID")]
        conn_id: Option<String>,
        /// Only records at or after: an RFC 3339 time, a date (2025-01-31), or a duration
        /// back from now (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Only records of this action (create, update, delete, reveal, export, import,
        /// test, test_unsaved, resolve, key_rotate, key_prune, key_check, token_create,
        /// token_revoke, pipeline_put, pipeline_delete, tunnel, auth, audit_prune).
        #[arg(long)]
        action: Option<String>,
        /// At most this many records (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Records before this sequence number (the next page).
        #[arg(long)]
        cursor: Option<i64>,
    },
    /// Check the chain of records and the signed checkpoints; exit 1 on any finding, each
    /// named by its sequence number.
    #[command(after_help = "Examples:\n  broked audit verify\n  broked audit verify --output json")]
    Verify,
    /// Print the HMAC of a value, as records hold it, and the records that mention it.
    /// VALUE `-` reads it from stdin, so it stays out of argv and the shell history.
    #[command(
        after_help = "Examples:\n  printf %s \"$OLD_PASSWORD\" | broked audit hash -\n  broked audit hash -   # then type the value and Ctrl-D"
    )]
    Hash {
        /// The value, or `-` for stdin (recommended: argv shows in `ps` and the history).
        value: String,
    },
    /// Remove records older than a duration; the cut is signed, so `verify` still passes.
    #[command(after_help = "Example:\n  broked audit prune --older-than 90d")]
    Prune {
        /// Like 90d, 12w, 24h.
        #[arg(long)]
        older_than: String,
    },
}

pub(crate) fn run(cmd: AuditCmd, out: Output, c: Connections) -> anyhow::Result<ExitCode> {
    match cmd {
        AuditCmd::List {
            conn_id,
            since,
            action,
            limit,
            cursor,
        } => {
            let records = c.audit_list(&AuditQuery {
                conn_id,
                action,
                since,
                value_hash: None,
                cursor,
                limit,
            })?;
            print_records(out, &records);
        }
        AuditCmd::Verify => {
            let report = c.audit_verify()?;
            match out {
                Output::Json => print_json(&json!({
                    "ok": report.findings.is_empty(),
                    "checked": report.checked,
                    "first_seq": report.first_seq,
                    "head_seq": report.head_seq,
                    "cut_seq": report.cut_seq,
                    "checkpoints": report.checkpoints,
                    "checkpoint_file": report.checkpoint_file.display().to_string(),
                    "findings": report.findings.iter().map(|f| json!({
                        "seq": f.seq, "kind": f.kind.as_str(), "message": f.message,
                    })).collect::<Vec<_>>(),
                })),
                Output::Text => {
                    for f in &report.findings {
                        println!("seq {}: {}: {}", f.seq, f.kind.as_str(), f.message);
                    }
                    let range = match (report.first_seq, report.head_seq) {
                        (Some(a), Some(b)) => format!("seq {a} to {b}"),
                        _ => "no records".into(),
                    };
                    println!(
                        "{}: {} records checked ({range}), {} checkpoints in {}",
                        if report.findings.is_empty() {
                            "ok"
                        } else {
                            "TAMPERED"
                        },
                        report.checked,
                        report.checkpoints,
                        report.checkpoint_file.display()
                    );
                }
            }
            if !report.findings.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        AuditCmd::Hash { value } => {
            let value = if value == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the value from stdin")?;
                let trimmed = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text);
                let secret = Secret::new(trimmed);
                drop(Secret::new(text));
                secret
            } else {
                Secret::new(value)
            };
            let hash = c.audit_hash(&value)?;
            drop(value);
            let records = c.audit_list(&AuditQuery {
                value_hash: Some(hash.clone()),
                limit: AuditQuery::MAX_LIMIT,
                ..AuditQuery::default()
            })?;
            match out {
                Output::Json => print_json(&json!({
                    "hash": hash,
                    "records": records.iter().map(record_json).collect::<Vec<_>>(),
                })),
                Output::Text => {
                    println!("{hash}");
                    print_records(out, &records);
                }
            }
        }
        AuditCmd::Prune { older_than } => {
            let older = broked_connections::parse_duration(&older_than)
                .map_err(|m| anyhow::anyhow!("--older-than must be {m}"))?;
            let pruned = c.acting(Actor::cli()).audit_prune(older)?;
            match out {
                Output::Json => print_json(&json!({
                    "removed": pruned.removed, "cut_seq": pruned.cut_seq,
                })),
                Output::Text => match pruned.cut_seq {
                    Some(seq) => println!(
                        "removed {} audit records (up to seq {seq}); the cut is signed",
                        pruned.removed
                    ),
                    None => println!("no audit records older than {older_than}"),
                },
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}

fn record_json(r: &AuditEntry) -> Value {
    json!({
        "seq": r.seq,
        "at": r.at,
        "actor": r.actor,
        "action": r.action,
        "conn_id": r.conn_id,
        "fields": r.fields,
        "outcome": r.outcome,
        "request_id": r.request_id,
        "value_hashes": r.value_hashes,
        "detail": r.detail,
    })
}

fn print_records(out: Output, records: &[AuditEntry]) {
    match out {
        Output::Json => print_json(&Value::Array(records.iter().map(record_json).collect())),
        Output::Text => {
            let rows: Vec<[String; 7]> = records
                .iter()
                .map(|r| {
                    [
                        r.seq.to_string(),
                        r.at.clone(),
                        r.actor.clone(),
                        r.action.clone(),
                        r.conn_id.clone().unwrap_or_default(),
                        r.fields.join(","),
                        if r.detail.is_empty() {
                            r.outcome.clone()
                        } else {
                            format!("{} ({})", r.outcome, r.detail)
                        },
                    ]
                })
                .collect();
            let header = [
                "SEQ", "AT", "ACTOR", "ACTION", "CONN_ID", "FIELDS", "OUTCOME",
            ];
            let mut widths = header.map(str::len);
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            let line = |cells: &[&str]| {
                let text: Vec<String> = cells
                    .iter()
                    .zip(widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", text.join("  ").trim_end());
            };
            line(&header);
            for row in &rows {
                line(&row.each_ref().map(String::as_str));
            }
        }
    }
}
