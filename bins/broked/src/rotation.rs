//! `broked connections rotate-password ID` (issue 20, `docs/rotation.md`): changes the
//! password on the database server itself and stores it; never prints it.

use std::process::ExitCode;

use broked_connections::{Actor, Connections, RecoveryOutcome};
use serde_json::json;

use crate::output::Output;

pub(crate) fn run(out: Output, c: Connections, conn_id: &str) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        // Rotations a crashed process left unfinished, settled before this one.
        for r in c.recover_rotations().await? {
            if let RecoveryOutcome::Unsettled(why) = &r.outcome {
                eprintln!(
                    "broked: an unfinished rotation of {} is still unsettled: {why}",
                    r.conn_id
                );
            } else {
                eprintln!(
                    "broked: an unfinished rotation of {} was settled ({})",
                    r.conn_id,
                    r.outcome.as_str()
                );
            }
        }
        c.acting(Actor::cli()).rotate_password(conn_id).await
    })?;
    match out {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "conn_id": report.conn_id,
                "role": report.role,
                "previous_role": report.previous_role,
                "via": report.via,
                "sent_as": report.sent_as.as_str(),
                "rotated_at": report.rotated_at,
                "recovered": report.recovered.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(),
            }))?
        ),
        Output::Text => println!(
            "rotated: the password of {} ({}) was changed on the server{} and stored{}; \
             `broked connections get {} --uri` shows it",
            report.role,
            report.conn_id,
            report
                .via
                .as_deref()
                .map(|v| format!(" through {v}"))
                .unwrap_or_default(),
            report
                .previous_role
                .as_deref()
                .map(|p| format!(
                    "; the login switched from {p}, which keeps its password until its own \
                     next rotation"
                ))
                .unwrap_or_default(),
            report.conn_id
        ),
    }
    Ok(ExitCode::SUCCESS)
}
