//! `broked-server`: the REST API (SPEC §4) and the web UI of broked connections.
//!
//! A thin binary over `broked-connections`: it knows HTTP and JSON wire shapes, nothing about
//! storage or encryption. It is secure by default: loopback only unless an API token is set,
//! masked secrets in every response, no secret in any log line, core dumps off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

mod api;
mod auth;
mod error;
mod hardening;
mod panic_hook;
mod ui;
mod wire;

/// The REST API and web UI of broked connections.
///
/// Starts on 127.0.0.1:8080 with the database broked.db in the working directory and its key
/// file broked.db.key (created on first run: back it up — without it the encrypted passwords
/// cannot be recovered).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The SQLite database file. Its key file is the same path plus `.key`.
    /// A PostgreSQL database `postgres://USER:PASSWORD@HOST/DB` instead serves several
    /// replicas (then --key-file is required); give it through BROKED_DB, not argv.
    #[arg(
        long,
        env = "BROKED_DB",
        default_value = "broked.db",
        hide_env_values = true
    )]
    db: PathBuf,

    /// The key file, if not `{db}.key`. Required with a PostgreSQL database: every replica
    /// must use the same file.
    #[arg(long, env = "BROKED_KEY_FILE")]
    key_file: Option<PathBuf>,

    /// Address and port to listen on. A non-loopback address requires --api-token.
    #[arg(long, env = "BROKED_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Require `Authorization: Bearer TOKEN` on every /api request.
    /// Prefer the environment variable: argv is visible to other users of the machine.
    #[arg(long, env = "BROKED_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,

    /// Overall time limit of one connection test, in seconds.
    #[arg(long, env = "BROKED_PROBE_TIMEOUT", default_value_t = 10)]
    probe_timeout: u64,

    /// Networks or hosts connection tests may not reach, comma-separated (CIDR or host name),
    /// checked after DNS resolution. Added to the default list (link-local, cloud metadata).
    #[arg(long, env = "BROKED_PROBE_DENY", value_delimiter = ',')]
    probe_deny: Vec<String>,

    /// Turn connection testing off: every test answers "connection testing is disabled".
    #[arg(long, env = "BROKED_PROBE_DISABLED")]
    probe_disabled: bool,

    /// Limit sqlite connection tests to files inside DIR (repeat for several directories).
    /// Without it, a test may open any file the server can read. The server's own database
    /// and key file are never a test target either way.
    #[arg(long, env = "BROKED_PROBE_FILE_ROOT", value_name = "DIR")]
    probe_file_root: Vec<PathBuf>,

    /// Log format: text or json.
    #[arg(long, env = "BROKED_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn main() -> ExitCode {
    panic_hook::install();
    let args = Args::parse();
    if let Err(e) = hardening::disable_core_dumps() {
        eprintln!("broked-server: warning: could not disable core dumps: {e}");
    }
    if let Err(e) = hardening::raise_open_files_limit() {
        eprintln!("broked-server: warning: could not raise the open files limit: {e}");
    }
    init_tracing(&args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broked-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BROKED_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    // Colour only for a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let token = args.api_token.filter(|t| !t.is_empty());
    if !args.listen.ip().is_loopback() && token.is_none() {
        bail!(
            "refusing to listen on {} without an API token: anyone who can reach it could read \
             and use every stored credential. Set BROKED_API_TOKEN (or --api-token), or listen \
             on a loopback address such as 127.0.0.1",
            args.listen
        );
    }
    let mut options = broked_connections::Options::default();
    options.probe_timeout = Duration::from_secs(args.probe_timeout.max(1));
    options.probe_deny = args.probe_deny;
    options.probe_disabled = args.probe_disabled;
    options.probe_file_roots = args.probe_file_root.clone();
    options.key_file = args.key_file.clone();
    // A PostgreSQL address may carry a password: messages show the library's redacted form.
    let shown = broked_connections::describe_db(&args.db);
    let connections = broked_connections::Connections::open_with(&args.db, options)
        .with_context(|| format!("cannot open {shown}"))?;
    let db_shown = connections.db_path().display().to_string();

    let state = api::AppState {
        connections: Arc::new(connections),
        token: token.map(|t| Arc::new(auth::Token::new(t))),
        writes_in_flight: Arc::default(),
    };
    let app = api::router(state);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(
            listen = %args.listen,
            db = %db_shown,
            "broked-server listening on http://{}",
            args.listen
        );
        serve(listener, app).await;
        tracing::info!("shut down");
        anyhow::Ok(())
    })
}

/// How long a client may take to send a request's head (and how long an idle keep-alive
/// connection stays open): slow-loris and idle clients cannot hold connections forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves HTTP/1.1 until SIGINT/SIGTERM, then lets requests in flight finish (up to 10 s).
///
/// Not `axum::serve`: it gives hyper no timer, so hyper's header-read timeout never fires.
async fn serve(listener: tokio::net::TcpListener, app: axum::Router) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("requests still running after 10 s; exiting");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
