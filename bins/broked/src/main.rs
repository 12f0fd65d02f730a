//! `broked`: the admin CLI of broked connections (SPEC §6).
//!
//! Works on the database directly (`--db`/`BROKED_DB`, default `broked.db`), also while
//! `broked-server` runs on it. Passwords come from a prompt without echo or from
//! `--password-stdin`, never from argv. Only `get --uri` and `export --decrypted` print secrets.
//!
//! Exit codes: 0 success, 1 failure (a failed test included), 2 usage error.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use broked_connections::{ConnectionUpdate, Connections, SecretUpdate, UpdateMode};
use broked_core::{ConnId, ConnType, Connection, ConnectionInput, Secret};
use clap::{Args, Parser, Subcommand};

mod output;
mod transfer;

use output::Output;

const EXAMPLES: &str = "\
Examples:
  broked connections add prod-postgres --type postgres --host db.example.com \\
      --schema mydb --login etl_user                      # asks for the password
  echo \"$PW\" | broked connections add prod-postgres --type postgres --host db --password-stdin
  broked connections add cache --uri 'generic://:pw@127.0.0.1:6379'
  broked connections list --type postgres
  broked connections get prod-postgres --output json
  broked connections test --all --concurrency 8
  broked connections export --format yaml > connections.yaml
  broked key rotate";

/// Manage broked connections: credentials for databases, APIs and file services, encrypted at rest.
#[derive(Parser, Debug)]
#[command(version, about, after_help = EXAMPLES)]
struct Cli {
    /// The database file (its key file is the same path plus `.key`).
    #[arg(long, global = true, env = "BROKED_DB", default_value = "broked.db")]
    db: PathBuf,

    /// Output format of read commands.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Create, read, update, delete, test, export and import connections.
    #[command(subcommand)]
    Connections(ConnectionsCmd),
    /// Manage the encryption keys in the key file.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Subcommand, Debug)]
enum ConnectionsCmd {
    /// Add a connection. The password is asked for without echo, or read from stdin.
    #[command(after_help = "Examples:
  broked connections add prod-postgres --type postgres --host db.example.com --port 5432 \\
      --schema mydb --login etl_user
  printf %s \"$PW\" | broked connections add api --type http --host https://api.example.com \\
      --login bot --password-stdin --extra '{\"headers\": {\"Accept\": \"application/json\"}}'
  broked connections add local --uri 'sqlite:///var/lib/app.db'")]
    Add {
        conn_id: String,
        #[command(flatten)]
        fields: FieldArgs,
        /// Read the whole connection from a URI (docs/uri.md) instead of the field flags.
        #[arg(long, conflicts_with_all = ["conn_type", "host", "port", "schema", "login", "extra"])]
        uri: Option<String>,
        /// Do not ask for a password.
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// List connections (secrets masked).
    #[command(
        after_help = "Examples:\n  broked connections list\n  broked connections list --type postgres --output json"
    )]
    List {
        /// Only connections of this type.
        #[arg(long = "type")]
        conn_type: Option<String>,
    },
    /// Show one connection (secrets masked), or its full URI with --uri.
    #[command(
        after_help = "Examples:\n  broked connections get prod-postgres\n  broked connections get prod-postgres --uri   # prints the password"
    )]
    Get {
        conn_id: String,
        /// Print the full URI, password included: the one command that shows a secret.
        #[arg(long)]
        uri: bool,
    },
    /// Change the given fields of a connection; the others stay.
    #[command(
        after_help = "Examples:\n  broked connections update prod-postgres --host db2.example.com\n  broked connections update prod-postgres --password-stdin < pw.txt\n  broked connections update prod-postgres --clear-extra"
    )]
    Update {
        conn_id: String,
        #[command(flatten)]
        fields: FieldArgs,
        /// Ask for a new password without echo.
        #[arg(long, conflicts_with_all = ["password_stdin", "clear_password"])]
        password_prompt: bool,
        /// Remove the password.
        #[arg(long, conflicts_with = "password_stdin")]
        clear_password: bool,
        /// Remove the extra field.
        #[arg(long, conflicts_with = "extra")]
        clear_extra: bool,
    },
    /// Delete a connection; refused while pipelines use it unless --force.
    #[command(
        after_help = "Examples:\n  broked connections delete old-db\n  broked connections delete old-db --force"
    )]
    Delete {
        conn_id: String,
        #[arg(long)]
        force: bool,
    },
    /// Test connections with their real drivers.
    #[command(
        after_help = "Examples:\n  broked connections test prod-postgres\n  broked connections test --all --concurrency 8 --output json"
    )]
    Test {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        conn_id: Option<String>,
        /// Test every connection.
        #[arg(long)]
        all: bool,
        /// How many tests run at once with --all.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
    },
    /// The pipelines that use a connection.
    #[command(
        name = "used-by",
        after_help = "Example:\n  broked connections used-by prod-postgres"
    )]
    UsedBy { conn_id: String },
    /// Export every connection (secrets masked unless --decrypted).
    #[command(
        after_help = "Examples:\n  broked connections export > backup.json\n  broked connections export --format env\n  broked connections export --decrypted --format yaml > secrets.yaml   # protect this file"
    )]
    Export {
        #[arg(long, value_enum, default_value_t = transfer::Format::Json)]
        format: transfer::Format,
        /// Include passwords and extra values in clear text.
        #[arg(long)]
        decrypted: bool,
    },
    /// Import connections from a JSON or YAML export: all or nothing, every bad row reported.
    #[command(
        after_help = "Examples:\n  broked connections import backup.json\n  broked connections import secrets.yaml --overwrite"
    )]
    Import {
        file: PathBuf,
        /// Replace connections that already exist (otherwise they are errors).
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Args, Debug, Default)]
struct FieldArgs {
    /// postgres, mysql, sqlite, http, sftp, s3 or generic.
    #[arg(long = "type")]
    conn_type: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<i64>,
    #[arg(long)]
    schema: Option<String>,
    #[arg(long)]
    login: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// A JSON object, e.g. '{"sslmode": "require"}'. Stored encrypted.
    #[arg(long)]
    extra: Option<String>,
    /// Read the password from standard input (one line, or all of it without the final newline).
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Add a new active key and re-encrypt every secret with it, in one transaction.
    Rotate,
    /// Remove keys that no secret uses any more (never the active key).
    Prune,
    /// Open every secret; exit 1 if any cannot be decrypted.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("broked: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = cli.output;
    let open = || {
        Connections::open(&cli.db)
            .with_context(|| format!("cannot open the database {}", cli.db.display()))
    };
    match cli.command {
        Command::Connections(cmd) => connections(cmd, out, open()?),
        Command::Key(cmd) => key(cmd, out, open()?),
    }
}

fn connections(cmd: ConnectionsCmd, out: Output, c: Connections) -> anyhow::Result<ExitCode> {
    match cmd {
        ConnectionsCmd::Add {
            conn_id,
            fields,
            uri,
            no_password,
        } => {
            let input = match uri {
                Some(uri) => {
                    let id = ConnId::new(conn_id.clone())?;
                    let parsed = Connection::from_uri(id, &uri)?;
                    let mut input = input_of(parsed);
                    if fields.description.is_some() {
                        input.description = fields.description;
                    }
                    if fields.password_stdin {
                        input.password = Some(read_password_stdin()?);
                    }
                    input
                }
                None => {
                    let conn_type = fields
                        .conn_type
                        .clone()
                        .context("--type is required (or give --uri)")?;
                    let uses_password = conn_type.parse::<ConnType>().is_ok_and(|t| {
                        t.field_use(broked_core::Field::Password) != broked_core::FieldUse::Unused
                    });
                    let password = if fields.password_stdin {
                        Some(read_password_stdin()?)
                    } else if !no_password && uses_password && std::io::stdin().is_terminal() {
                        prompt_password(&format!("Password for {conn_id} (empty for none): "))?
                    } else {
                        None
                    };
                    ConnectionInput {
                        conn_id: Some(conn_id),
                        conn_type: Some(conn_type),
                        host: fields.host,
                        port: fields.port,
                        schema: fields.schema,
                        login: fields.login,
                        password,
                        extra: fields.extra.map(Secret::from),
                        description: fields.description,
                    }
                }
            };
            let info = c.create(input)?;
            output::connection(out, &info);
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::List { conn_type } => {
            let filter = conn_type.map(|t| t.parse::<ConnType>()).transpose()?;
            output::connection_list(out, &c.list(filter)?);
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::Get { conn_id, uri } => {
            if uri {
                let connection = c.connection(&conn_id)?;
                output::uri(out, &conn_id, &connection.to_uri());
            } else {
                output::connection(out, &c.get(&conn_id)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::Update {
            conn_id,
            fields,
            password_prompt,
            clear_password,
            clear_extra,
        } => {
            let password = if fields.password_stdin {
                SecretUpdate::from_field(Some(Some(read_password_stdin()?)))
            } else if password_prompt {
                SecretUpdate::from_field(Some(prompt_password("New password (empty for none): ")?))
            } else if clear_password {
                SecretUpdate::Clear
            } else {
                SecretUpdate::Keep
            };
            let extra = match (fields.extra, clear_extra) {
                (Some(e), _) => SecretUpdate::Set(Secret::from(e)),
                (None, true) => SecretUpdate::Clear,
                (None, false) => SecretUpdate::Keep,
            };
            let update = ConnectionUpdate {
                conn_id: None,
                conn_type: fields.conn_type,
                host: fields.host.map(Some),
                port: fields.port.map(Some),
                schema: fields.schema.map(Some),
                login: fields.login.map(Some),
                password,
                extra,
                description: fields.description.map(Some),
            };
            let info = c.update(&conn_id, update, UpdateMode::Merge)?;
            output::connection(out, &info);
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::Delete { conn_id, force } => {
            c.delete(&conn_id, force)?;
            output::done(out, &format!("deleted {conn_id}"));
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::UsedBy { conn_id } => {
            let usage = c.used_by(&conn_id)?;
            output::used_by(out, &conn_id, &usage);
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::Test {
            conn_id,
            all,
            concurrency,
        } => output::run_tests(out, c, conn_id, all, usize::from(concurrency)),
        ConnectionsCmd::Export { format, decrypted } => {
            transfer::export(&c, format, decrypted)?;
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::Import { file, overwrite } => {
            let count = transfer::import(&c, &file, overwrite)?;
            output::done(out, &format!("imported {count} connections"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn key(cmd: KeyCmd, out: Output, c: Connections) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCmd::Rotate => {
            let bar = output::progress_bar("re-encrypting");
            let report = c.rotate(|done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            output::done(
                out,
                &format!(
                    "rotated: key {} is active; {} secrets re-encrypted; run `broked key prune` \
                     once every replica has the new key file",
                    report.active_key, report.resealed
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Prune => {
            let pruned = c.prune()?;
            let ids: Vec<String> = pruned.iter().map(|k| k.to_string()).collect();
            output::done(
                out,
                &format!("pruned {} keys: {}", ids.len(), ids.join(", ")),
            );
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Check => {
            let report = c.check()?;
            output::check(out, &report);
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The fields of a parsed connection as an input (for `add --uri`).
fn input_of(c: Connection) -> ConnectionInput {
    ConnectionInput {
        conn_id: Some(c.conn_id.as_str().to_owned()),
        conn_type: Some(c.conn_type.as_str().to_owned()),
        host: c.host.clone(),
        port: c.port.map(i64::from),
        schema: c.schema.clone(),
        login: c.login.clone(),
        password: c.password.clone(),
        extra: c.extra.clone(),
        description: c.description.clone(),
    }
}

fn read_password_stdin() -> anyhow::Result<Secret> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the password from stdin")?;
    let secret = Secret::new(
        text.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&text),
    );
    zeroize_string(text);
    if secret.is_empty() {
        bail!("--password-stdin read an empty password");
    }
    Ok(secret)
}

fn prompt_password(prompt: &str) -> anyhow::Result<Option<Secret>> {
    let text = rpassword::prompt_password(prompt).context("cannot read the password")?;
    let secret = Secret::new(text.as_str());
    zeroize_string(text);
    Ok((!secret.is_empty()).then_some(secret))
}

fn zeroize_string(s: String) {
    // Secret zeroizes on drop; moving the text in and dropping it wipes this copy.
    drop(Secret::new(s));
}
