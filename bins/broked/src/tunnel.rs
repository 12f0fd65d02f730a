//! `broked connections tunnel ID`: keeps a connection's SSH tunnel open in the foreground for
//! the user's own client, until Ctrl-C or SIGTERM (docs/tunnels.md).
//!
//! Prints the local URI without the password (and without extra, which may hold tokens);
//! `--show-password` prints the full URI, the way `get --uri` does.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use broked_connections::Connections;
use broked_core::Connection;
use serde_json::json;

use crate::output::Output;

pub(crate) fn run(
    out: Output,
    c: Connections,
    conn_id: &str,
    show_password: bool,
) -> anyhow::Result<ExitCode> {
    let guard = c
        .acting(broked_connections::Actor::cli())
        .open_tunnel(conn_id)?;
    let Some(local) = guard.local_addr() else {
        bail!(
            "connection {conn_id:?} has no extra.ssh_tunnel: connect to it directly \
             (`broked connections get {conn_id} --uri`)"
        );
    };
    let plain = Connection {
        password: None,
        extra: None,
        ..guard.connection().clone()
    };
    let uri = if show_password {
        guard.uri().expose().to_owned()
    } else {
        plain.to_uri().expose().to_owned()
    };
    let via = guard.bastions().join(" → ");
    match out {
        Output::Text => {
            println!("{uri}");
            eprintln!(
                "tunnel to {conn_id} via {via} open on {local}{}; Ctrl-C to close",
                if show_password {
                    ""
                } else {
                    " (password and extra options not shown: --show-password prints the full URI)"
                }
            );
        }
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "conn_id": conn_id,
                "local_host": local.ip().to_string(),
                "local_port": local.port(),
                "bastions": guard.bastions(),
                "uri": uri,
            }))?
        ),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal handler")?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut last_error: Option<String> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    // Say when a bastion goes down or comes back (it is retried on the next
                    // connection to the local port).
                    let now = guard.health().err().map(|e| e.to_string());
                    if now != last_error {
                        match &now {
                            Some(e) => eprintln!("tunnel down: {e}"),
                            None if last_error.is_some() => eprintln!("tunnel up again"),
                            None => {}
                        }
                        last_error = now;
                    }
                }
            }
        }
        Ok::<(), std::io::Error>(())
    })?;
    drop(guard);
    eprintln!("tunnel closed");
    Ok(ExitCode::SUCCESS)
}
