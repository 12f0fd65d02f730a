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
            print!("{}", yaml_serde::to_string(&rows)?);
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
    let acting = c.acting(Actor::cli());
    let mut importer = acting.importer(overwrite);
    if text.trim_start().starts_with(['[', '{']) {
        // Row by row (issue 19): a file of a million connections is never a parsed document
        // in memory as a whole, only its checked rows. Nothing is written unless all of it is
        // JSON (`end`: nothing but white space after the document).
        let mut json = serde_json::Deserializer::from_str(&text);
        importer
            .read(&mut json)
            .and_then(|()| json.end())
            .map_err(|e| {
                anyhow::anyhow!(
                    "{} is not valid JSON (line {}, column {})",
                    file.display(),
                    e.line(),
                    e.column()
                )
            })?;
    } else {
        let rows: Value = yaml_serde::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            anyhow::anyhow!("{} is not valid JSON or YAML{at}", file.display())
        })?;
        importer.document(rows);
    }
    Ok(importer.finish()?)
}

#[cfg(test)]
mod tests {
    /// The YAML of an export is byte for byte what serde_yaml 0.9 wrote before the move to
    /// yaml_serde (its maintained fork): files exported before read the same, and diffs of
    /// exports stay quiet. The expected text is serde_yaml 0.9.34's output for this document.
    #[test]
    fn yaml_is_what_serde_yaml_wrote() {
        // Keys in sorted order, so that the text is the same with serde_json's
        // `preserve_order` feature on or off.
        let doc = serde_json::json!({"connections": [
            {"conn_id": "prod-postgres",
             "description": "multi\nline: yes # not a comment",
             "extra": {"b": true, "n": 1.5, "nested": {"k": [1, "2", null]},
                       "sslmode": "require"},
             "host": "db.example.com", "login": "etl_user", "password": "********",
             "port": 5432, "schema": "mydb", "type": "postgres"},
            {"conn_id": "api", "description": "0755", "extra": "123", "host": "https://[::1]",
             "login": "yes", "password": "p@ss: w/rd'\"é", "port": null, "schema": "v1/items",
             "type": "http"}
        ], "format": "broked-connections", "version": 1});
        let expected = "\
connections:
- conn_id: prod-postgres
  description: |-
    multi
    line: yes # not a comment
  extra:
    b: true
    n: 1.5
    nested:
      k:
      - 1
      - '2'
      - null
    sslmode: require
  host: db.example.com
  login: etl_user
  password: '********'
  port: 5432
  schema: mydb
  type: postgres
- conn_id: api
  description: '0755'
  extra: '123'
  host: https://[::1]
  login: yes
  password: 'p@ss: w/rd''\"é'
  port: null
  schema: v1/items
  type: http
format: broked-connections
version: 1
";
        let text = yaml_serde::to_string(&doc).unwrap();
        assert_eq!(text, expected);
        let back: serde_json::Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(back, doc);
    }
}
