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
use broked_connections::{Actor, ConnectionUpdate, Connections, Error, SecretUpdate, UpdateMode};
use broked_core::{ConnId, ConnType, Connection, ConnectionInput, Dialect, Secret};
use clap::builder::PossibleValuesParser;
use clap::{Args, CommandFactory, Parser, Subcommand};

mod audit;
mod history;
mod list;
mod output;
mod panic_hook;
mod rotation;
mod transfer;
mod tunnel;

use output::Output;

const EXAMPLES: &str = "\
Examples:
  broked connections add prod-postgres --type postgres --host db.example.com \\
      --schema mydb --login etl_user                      # asks for the password
  echo \"$PW\" | broked connections add prod-postgres --type postgres --host db --password-stdin
  printf %s \"$REDIS_URI\" | broked connections add cache --uri -   # keeps the password out of argv
  broked connections list --type postgres
  broked connections get prod-postgres --output json
  broked connections test --all --concurrency 8
  broked connections export --format yaml > connections.yaml
  broked key rotate";

/// Manage broked connections: credentials for databases, APIs and file services, encrypted at rest.
#[derive(Parser, Debug)]
#[command(version, about, after_help = EXAMPLES)]
struct Cli {
    /// The database: a SQLite file (its key file is the same path plus `.key`), or a shared
    /// PostgreSQL database `postgres://USER:PASSWORD@HOST/DB` (then --key-file is required;
    /// prefer BROKED_DB for it: argv is visible to other users).
    #[arg(
        long,
        global = true,
        env = "BROKED_DB",
        default_value = "broked.db",
        hide_env_values = true
    )]
    db: PathBuf,

    /// The key file, if not `{db}.key` (required with a PostgreSQL database).
    #[arg(long, global = true, env = "BROKED_KEY_FILE")]
    key_file: Option<PathBuf>,

    /// When the database cannot be reached, resolve the last value seen (marked stale, with
    /// a warning) for up to this many seconds, then fail. Default: fail at once.
    #[arg(long, global = true, env = "BROKED_MAX_STALE", value_name = "SECONDS", value_parser = max_stale)]
    max_stale: Option<std::time::Duration>,

    /// Limit sqlite connection tests (`connections test`) to files inside DIR (repeat for
    /// several directories). The database and its key file are never a test target.
    #[arg(
        long,
        global = true,
        env = "BROKED_PROBE_FILE_ROOT",
        value_name = "DIR"
    )]
    probe_file_root: Vec<PathBuf>,

    /// Previous versions kept per connection when this command changes one (its history,
    /// `connections history`); older ones are removed. 0 keeps none.
    #[arg(long, global = true, env = "BROKED_KEEP_VERSIONS", value_name = "N", default_value_t = broked_connections::DEFAULT_KEEP_VERSIONS)]
    keep_versions: u32,

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
    #[command(
        subcommand,
        after_help = "Examples:\n  broked connections list\n  broked connections get prod-postgres --output json\n  broked connections test --all"
    )]
    Connections(ConnectionsCmd),
    /// Manage the encryption keys in the key file.
    #[command(
        subcommand,
        after_help = "Examples:\n  broked key check\n  broked key rotate\n  broked key prune"
    )]
    Key(KeyCmd),
    /// Named API tokens for the server: scopes and the connections they may see.
    #[command(
        subcommand,
        after_help = "Examples:\n  broked token create ci --scope read,test --conns 'team-a-*' --expires 30d\n  broked token list\n  broked token revoke ci"
    )]
    Token(TokenCmd),
    /// The audit log: list records, verify the chain, find a value by its HMAC, prune.
    #[command(
        subcommand,
        after_help = "Examples:\n  broked audit list --conn prod-postgres\n  broked audit verify\n  printf %s \"$PW\" | broked audit hash -\n  broked audit prune --older-than 90d"
    )]
    Audit(audit::AuditCmd),
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create a token and print it — the only time it is shown. Once any token exists, the
    /// server requires a token on every API request.
    #[command(
        after_help = "Scopes: read (list/get, masked), test, write (create/update/delete), admin (tokens; implies the others).\nExamples:\n  broked token create ci --scope read,test\n  broked token create team-a --scope read,write --conns 'team-a-*' --expires 90d"
    )]
    Create {
        /// Name of the token (lowercase letters, digits, _ and -).
        name: String,
        /// Comma-separated scopes: read, test, write, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scope: Vec<String>,
        /// Comma-separated conn_id globs (`*`, `?`) the token is limited to; default: all.
        #[arg(long, value_delimiter = ',')]
        conns: Option<Vec<String>>,
        /// Lifetime, like 30d, 12h, 90m or 2w; default: never expires.
        #[arg(long)]
        expires: Option<String>,
    },
    /// The tokens: name, scopes, globs, created, expires, last used — never the token.
    #[command(after_help = "Examples:\n  broked token list\n  broked token list --output json")]
    List,
    /// Revoke a token: it stops working at once, in every server.
    #[command(after_help = "Example:\n  broked token revoke ci")]
    Revoke { name: String },
}

#[derive(Subcommand, Debug)]
enum ConnectionsCmd {
    /// Add a connection. The password is asked for without echo, or read from stdin.
    #[command(after_help = "Examples:
  broked connections add prod-postgres --type postgres --host db.example.com --port 5432 \\
      --schema mydb --login etl_user
  printf %s \"$PW\" | broked connections add api --type http --host https://api.example.com \\
      --login bot --password-stdin --extra @api-extra.json
  broked connections add vendor --type http --host https://vendor.example.com \\
      --extra @vendor-extra.json   # extra from a file: tokens stay out of argv
  broked connections add local --uri 'sqlite:///var/lib/app.db'")]
    Add {
        conn_id: String,
        #[command(flatten)]
        fields: FieldArgs,
        /// Read the whole connection from a URI (docs/uri.md) instead of the field flags.
        /// A URI with a password or query parameters (extra) is refused on argv: `--uri -`
        /// reads it from stdin.
        #[arg(long, conflicts_with_all = ["conn_type", "host", "port", "schema", "login", "extra"])]
        uri: Option<String>,
        /// Do not ask for a password.
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// List connections (secrets masked).
    #[command(
        after_help = "Examples:\n  broked connections list\n  broked connections list --type postgres --output json\n  broked connections list --search warehouse --status failing\n  broked connections list --limit 20"
    )]
    List {
        /// Only connections of this type.
        #[arg(long = "type", value_parser = conn_types())]
        conn_type: Option<String>,
        /// Only connections whose conn_id, host or description contains this text (ASCII
        /// letters in either case).
        #[arg(long, value_name = "TEXT")]
        search: Option<String>,
        /// Only connections whose last test failed (failing), succeeded (ok), or that were
        /// not tested since created or changed (untested).
        #[arg(long, value_name = "STATUS", value_parser = list::status)]
        status: Option<broked_connections::StatusFilter>,
        /// Show at most this many.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show one connection (secrets masked), or its full URI with --uri.
    #[command(
        after_help = "Examples:\n  broked connections get prod-postgres\n  broked connections get prod-postgres --uri   # prints the password\n  broked connections get prod-postgres --uri-format sqlalchemy   # postgresql+psycopg://...\n  psql \"$(broked connections get prod-postgres --uri-format libpq)\""
    )]
    Get {
        conn_id: String,
        /// Print the full URI, password included: the one command that shows a secret.
        #[arg(long)]
        uri: bool,
        /// Print the full connection string in a client's form, password included (implies
        /// --uri): uri (as --uri), sqlalchemy, jdbc or libpq (docs/uri.md).
        #[arg(long, value_name = "FORMAT", value_parser = PossibleValuesParser::new(["uri", "sqlalchemy", "jdbc", "libpq"]))]
        uri_format: Option<String>,
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
    /// Keep a connection's SSH tunnel (extra.ssh_tunnel) open in the foreground and print
    /// its local URI, without the password; Ctrl-C or SIGTERM closes it.
    #[command(
        after_help = "Examples:\n  broked connections tunnel prod-postgres   # prints postgres://etl@127.0.0.1:PORT/db, runs until Ctrl-C\n  broked connections tunnel prod-postgres --output json"
    )]
    Tunnel {
        conn_id: String,
        /// Print the full URI, password and extra options included.
        #[arg(long)]
        show_password: bool,
    },
    /// Change the password on the database server itself (PostgreSQL, MySQL/MariaDB) to a
    /// new random one, check a login with it, and store it (docs/rotation.md).
    #[command(
        name = "rotate-password",
        after_help = "Examples:\n  broked connections rotate-password prod-postgres\n  broked connections rotate-password prod-mysql --output json"
    )]
    RotatePassword { conn_id: String },
    /// The kept versions of a connection: number, time, who wrote it, the fields it changed
    /// (never a value); one version, masked, with --version.
    #[command(
        after_help = "Examples:\n  broked connections history prod-postgres\n  broked connections history prod-postgres --version 3 --output json"
    )]
    History {
        conn_id: String,
        /// Show this version (secrets masked).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        version: Option<i64>,
    },
    /// Write a new version equal to an old one, secrets included (re-encrypted). Also puts
    /// back a deleted connection.
    #[command(after_help = "Example:\n  broked connections rollback prod-postgres --to 3")]
    Rollback {
        conn_id: String,
        /// The version to restore (see `connections history`).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(1..))]
        to: i64,
    },
    /// Remove the kept history of a deleted connection (refused while it exists).
    #[command(
        after_help = "Example:\n  broked connections delete old-db && broked connections purge old-db"
    )]
    Purge { conn_id: String },
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
        /// The file, or `-` for stdin.
        file: PathBuf,
        /// Replace connections that already exist (otherwise they are errors).
        #[arg(long)]
        overwrite: bool,
    },
}

#[derive(Args, Debug, Default)]
struct FieldArgs {
    /// postgres, mysql, sqlite, http, sftp, s3 or generic.
    #[arg(long = "type", value_parser = conn_types())]
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
    /// A JSON object such as {"sslmode": "require"}, stored encrypted: `@FILE` reads it from
    /// a file, `-` from stdin. Since it may hold tokens it is never taken from argv itself.
    #[arg(long, value_name = "@FILE|-")]
    extra: Option<String>,
    /// Read the password from standard input (one line, or all of it without the final newline).
    #[arg(long)]
    password_stdin: bool,
    /// Refused: a password on the command line shows in `ps` and the shell history.
    #[arg(long, hide = true, num_args = 0..=1, value_name = "REFUSED")]
    password: Option<Option<String>>,
}

#[derive(Subcommand, Debug)]
enum KeyCmd {
    /// Add a new active key and re-encrypt every secret with it, in batches; finishes a
    /// rotation that stopped midway instead, if there is one.
    #[command(
        after_help = "Examples:\n  broked key rotate\n  broked key rotate && broked key prune   # once every replica has the new key file"
    )]
    Rotate,
    /// Remove keys that no secret uses any more (never the active key).
    #[command(after_help = "Example:\n  broked key prune")]
    Prune,
    /// Open every secret; exit 1 if any cannot be decrypted.
    #[command(after_help = "Examples:\n  broked key check\n  broked key check --output json")]
    Check,
    /// The keys of the key file, which one is active, and how many secrets each seals.
    #[command(after_help = "Examples:\n  broked key list\n  broked key list --output json")]
    List,
}

/// The `--type` values, from the type table.
fn conn_types() -> PossibleValuesParser {
    PossibleValuesParser::new(ConnType::ALL.map(ConnType::as_str))
}

/// A usage error: printed by clap, exit code 2.
fn usage(message: impl std::fmt::Display) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

/// The exit code when the store cannot be reached or read (sysexits' EX_UNAVAILABLE).
const EXIT_STORE_UNAVAILABLE: u8 = 69;

fn main() -> ExitCode {
    panic_hook::install();
    let cli = Cli::parse();
    panic_hook::debug_trigger();
    // A PostgreSQL address may carry a password: never print it.
    let shown = broked_connections::describe_db(&cli.db);
    match run(cli) {
        Ok(code) => code,
        Err(e) if store_unavailable(&e) => {
            eprintln!("broked: error: the store {shown} is unavailable: {e:#}");
            ExitCode::from(EXIT_STORE_UNAVAILABLE)
        }
        Err(e) => {
            eprintln!("broked: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether the library said the store cannot be reached or read.
fn store_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<broked_connections::Error>()
            .is_some_and(|e| e.kind() == broked_connections::ErrorKind::Unavailable)
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = cli.output;
    if let Command::Connections(cmd) = &cli.command {
        check_usage(cmd);
    }
    // Only `add` and `import` may create a database: a mistyped --db must not leave an empty
    // database and a fresh key file behind and report "no connections".
    let creates = matches!(
        cli.command,
        Command::Connections(ConnectionsCmd::Add { .. } | ConnectionsCmd::Import { .. })
    );
    let postgres = broked_connections::is_postgres_url(&cli.db.to_string_lossy());
    if !creates && !postgres && !cli.db.exists() {
        bail!(
            "no database at {} (give --db or BROKED_DB; `broked connections add` creates one)",
            cli.db.display()
        );
    }
    // A PostgreSQL address may carry a password: never print it.
    let shown = broked_connections::describe_db(&cli.db);
    let open = || {
        let mut options = broked_connections::Options::default();
        options.key_file = cli.key_file.clone();
        options.max_stale = cli.max_stale;
        options.probe_file_roots = cli.probe_file_root.clone();
        options.keep_versions = cli.keep_versions;
        Connections::open_with(&cli.db, options).with_context(|| format!("cannot open {shown}"))
    };
    match cli.command {
        Command::Connections(cmd) => connections(cmd, out, open()?),
        Command::Key(cmd) => key(cmd, out, open()?),
        Command::Token(cmd) => token(cmd, out, open()?),
        Command::Audit(cmd) => audit::run(cmd, out, open()?),
    }
}

/// Usage errors clap's attributes cannot express; they exit with 2 before the database opens.
fn check_usage(cmd: &ConnectionsCmd) {
    let fields = match cmd {
        ConnectionsCmd::Add { fields, .. } | ConnectionsCmd::Update { fields, .. } => fields,
        _ => return,
    };
    if fields.password.is_some() {
        usage(
            "passwords are not taken from the command line (they would show in `ps` and the \
             shell history); use --password-stdin or the prompt",
        );
    }
    if let Some(extra) = fields.extra.as_deref()
        && !extra_kept_off_argv(extra)
    {
        usage(
            "extra is not taken from the command line (it may hold tokens, and argv shows in \
             `ps` and the shell history); give it as --extra @FILE, or --extra - to read stdin",
        );
    }
    if let ConnectionsCmd::Add { uri: Some(uri), .. } = cmd
        && uri != "-"
    {
        let (password, extra) = uri_secrets(uri);
        if password {
            usage(
                "a URI with a password is not taken from the command line (it would show in \
                 `ps` and the shell history); give the URI on stdin with --uri -, or leave \
                 the password out of it and add --password-stdin",
            );
        }
        if extra {
            usage(
                "a URI with query parameters (extra, which may hold tokens) is not taken from \
                 the command line; give the URI on stdin with --uri -",
            );
        }
    }
    match cmd {
        ConnectionsCmd::Add {
            uri: None, fields, ..
        } if fields.conn_type.is_none() => {
            usage("the following required arguments were not provided: --type <TYPE> (or --uri)")
        }
        ConnectionsCmd::Add {
            uri: Some(uri),
            fields,
            ..
        } if uri == "-" && fields.password_stdin => {
            usage("--uri - and --password-stdin both read stdin; give the password in the URI")
        }
        ConnectionsCmd::Add { fields, .. } | ConnectionsCmd::Update { fields, .. }
            if fields.extra.as_deref() == Some("-") && fields.password_stdin =>
        {
            usage("--extra - and --password-stdin both read stdin; give extra as @FILE")
        }
        ConnectionsCmd::Update {
            fields,
            password_prompt,
            clear_password,
            clear_extra,
            ..
        } => {
            let FieldArgs {
                conn_type,
                host,
                port,
                schema,
                login,
                description,
                extra,
                password_stdin,
                password: _,
            } = fields;
            let any = conn_type.is_some()
                || host.is_some()
                || port.is_some()
                || schema.is_some()
                || login.is_some()
                || description.is_some()
                || extra.is_some()
                || *password_stdin
                || *password_prompt
                || *clear_password
                || *clear_extra;
            if !any {
                usage("nothing to update: give at least one field, e.g. --host or --password-stdin")
            }
        }
        _ => {}
    }
}

/// Whether an `--extra` argument keeps the value itself off argv: `@FILE`, `-` (stdin), or a
/// value with nothing secret in it (empty, or the empty object `{}`).
fn extra_kept_off_argv(arg: &str) -> bool {
    let arg = arg.trim();
    arg == "-"
        || arg.starts_with('@')
        || arg.is_empty()
        || serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(arg)
            .is_ok_and(|m| m.is_empty())
}

/// Whether a URI given on argv carries a password, and whether it carries extra (query
/// parameters). What `Connection::from_uri` reads decides; a URI it cannot read is judged by
/// its text (`user:pw@` before the last `@`, any `?`), so a malformed URI with a password is
/// refused here too rather than only failing later with the password already in argv.
fn uri_secrets(uri: &str) -> (bool, bool) {
    let id = ConnId::new("argv-check").expect("a valid conn_id");
    if let Ok(parsed) = Connection::from_uri(id, uri) {
        let password = parsed.password.as_ref().is_some_and(|p| !p.is_empty());
        let extra = parsed.extra.as_ref().is_some_and(|e| !e.is_empty());
        return (password, extra);
    }
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let password = before_query
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, pw)| !pw.is_empty());
    (password, query.is_some_and(|q| !q.is_empty()))
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
                    let uri = if uri == "-" {
                        read_password_stdin().context("cannot read the URI from stdin")?
                    } else {
                        Secret::from(uri)
                    };
                    let parsed = Connection::from_uri(id, uri.expose())?;
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
                    let conn_type = fields.conn_type.clone().unwrap_or_default();
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
                        extra: fields.extra.map(read_extra).transpose()?,
                        description: fields.description,
                    }
                }
            };
            let info = c.acting(Actor::cli()).create(input)?;
            output::connection(out, &info);
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::List {
            conn_type,
            search,
            status,
            limit,
        } => {
            let filters = list::Filters {
                conn_type: conn_type.map(|t| t.parse::<ConnType>()).transpose()?,
                search,
                status,
                limit,
            };
            list::run(out, &c, filters)?;
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::Get {
            conn_id,
            uri,
            uri_format,
        } => {
            if uri || uri_format.is_some() {
                let dialect = match uri_format {
                    Some(f) => f.parse::<Dialect>()?,
                    None => Dialect::Uri,
                };
                let uri = c.acting(Actor::cli()).uri_in(&conn_id, dialect)?;
                output::uri(out, &conn_id, &uri);
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
                (Some(e), _) => SecretUpdate::Set(read_extra(e)?),
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
            let info = c
                .acting(Actor::cli())
                .update(&conn_id, update, UpdateMode::Merge)?;
            output::connection(out, &info);
            Ok(ExitCode::SUCCESS)
        }
        ConnectionsCmd::Delete { conn_id, force } => {
            match c.acting(Actor::cli()).delete(&conn_id, force) {
                Ok(()) => {
                    output::deleted(out, &conn_id);
                    Ok(ExitCode::SUCCESS)
                }
                Err(Error::InUse { pipelines, .. }) => {
                    let list: Vec<String> = pipelines
                        .iter()
                        .map(|p| {
                            format!(
                                "{} ({}; nodes: {})",
                                p.pipeline_id,
                                p.name,
                                p.nodes.join(", ")
                            )
                        })
                        .collect();
                    bail!(
                        "connection {conn_id:?} is used by {} pipeline(s): {}; remove it from them \
                     first, or delete with --force",
                        pipelines.len(),
                        list.join(", ")
                    )
                }
                Err(e) => Err(e.into()),
            }
        }
        ConnectionsCmd::Tunnel {
            conn_id,
            show_password,
        } => tunnel::run(out, c, &conn_id, show_password),
        ConnectionsCmd::RotatePassword { conn_id } => rotation::run(out, c, &conn_id),
        ConnectionsCmd::History { conn_id, version } => {
            history::history(out, &c, &conn_id, version)
        }
        ConnectionsCmd::Rollback { conn_id, to } => history::rollback(out, &c, &conn_id, to),
        ConnectionsCmd::Purge { conn_id } => history::purge(out, &c, &conn_id),
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
            output::imported(out, count);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn key(cmd: KeyCmd, out: Output, c: Connections) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCmd::Rotate => {
            let bar = output::progress_bar("re-encrypting", 0);
            let report = c.acting(Actor::cli()).rotate(|done, total| {
                // Called once per value: millions of calls, so the bar moves every 4,096.
                if done % 4096 == 0 || done == total {
                    bar.set_length(total);
                    bar.set_position(done);
                }
            })?;
            bar.finish_and_clear();
            output::rotated(out, &report);
            // Values that do not open were left alone: the rotation is incomplete.
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        KeyCmd::Prune => {
            output::pruned(out, &c.acting(Actor::cli()).prune()?);
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::List => {
            output::keys(out, &c.keys()?);
            Ok(ExitCode::SUCCESS)
        }
        KeyCmd::Check => {
            let report = c.acting(Actor::cli()).check()?;
            output::check(out, &report);
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn token(cmd: TokenCmd, out: Output, c: Connections) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Create {
            name,
            scope,
            conns,
            expires,
        } => {
            let scopes = scope
                .iter()
                .map(|s| s.parse::<broked_connections::Scope>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| anyhow::anyhow!("--scope: {m}"))?;
            let expires = expires
                .as_deref()
                .map(broked_connections::parse_duration)
                .transpose()
                .map_err(|m| anyhow::anyhow!("--expires must be {m}"))?;
            let (info, secret) = c
                .acting(Actor::cli())
                .create_token(&name, &scopes, conns, expires)?;
            output::token_created(out, &info, &secret);
        }
        TokenCmd::List => output::tokens(out, &c.list_tokens()?),
        TokenCmd::Revoke { name } => {
            c.acting(Actor::cli()).revoke_token(&name)?;
            output::token_revoked(out, &name);
        }
    }
    Ok(ExitCode::SUCCESS)
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

/// `--extra`: the JSON itself, `@FILE`, or `-` for stdin.
fn read_extra(arg: String) -> anyhow::Result<Secret> {
    if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read extra from stdin")?;
        Ok(Secret::from(text))
    } else if let Some(path) = arg.strip_prefix('@') {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read extra from {path}"))?;
        Ok(Secret::from(text))
    } else {
        Ok(Secret::from(arg))
    }
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

/// `--max-stale`: seconds, fractions allowed.
fn max_stale(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| std::time::Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}
