//! `connections export` and `import`: JSON, YAML or env files.

use std::path::Path;

use anyhow::Context;
use broked_connections::{Actor, Connections};
use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Json,
    Yaml,
    /// `BROKED_CONN_<ID>='URI'` lines, the form `resolve` reads from the environment.
    Env,
}

pub(crate) fn export(c: &Connections, format: Format, decrypted: bool) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            let rows = c.acting(Actor::cli()).export(decrypted)?;
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        Format::Yaml => {
            let rows = c.acting(Actor::cli()).export(decrypted)?;
            print!("{}", serde_yaml::to_string(&rows)?);
        }
        Format::Env => {
            for (id, uri) in c.acting(Actor::cli()).export_uris(decrypted)? {
                // Single-quoted for a POSIX shell: ' becomes '\''.
                println!(
                    "{}='{}'",
                    id.env_var_name(),
                    uri.expose().replace('\'', "'\\''")
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn import(c: &Connections, file: &Path, overwrite: bool) -> anyhow::Result<usize> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("cannot read the import from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let rows: Value = if text.trim_start().starts_with(['[', '{']) {
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} is not valid JSON (line {}, column {})",
                file.display(),
                e.line(),
                e.column()
            )
        })?
    } else {
        serde_yaml::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            anyhow::anyhow!("{} is not valid JSON or YAML{at}", file.display())
        })?
    };
    Ok(c.acting(Actor::cli()).import(rows, overwrite)?)
}
