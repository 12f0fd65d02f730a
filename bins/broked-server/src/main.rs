//! `broked-server`: the REST API (SPEC §4) and the web UI of broked connections.
//!
//! A thin binary over `broked-connections`: it knows HTTP and JSON wire shapes, nothing about
//! storage or encryption. It is secure by default: loopback only unless an API token is set,
//! HTTPS off loopback unless plain HTTP is asked for by name, masked secrets in every response,
//! no secret in any log line, core dumps off.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

mod api;
mod audit;
mod auth;
mod cache;
mod error;
mod extract;
mod hardening;
mod list;
mod metrics;
mod openapi;
mod panic_hook;
mod patterns;
mod rotation;
mod state;
mod tls;
mod tokens;
mod ui;
mod versions;
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

    /// Address and port to listen on. A non-loopback address requires --api-token, and
    /// --tls-cert/--tls-key (or --insecure-http).
    #[arg(long, env = "BROKED_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Serve HTTPS with this certificate chain (PEM, the server's own certificate first).
    /// The certificate and key are read again on SIGHUP.
    #[arg(
        long,
        env = "BROKED_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "BROKED_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Serve plain HTTP on a non-loopback address (behind a TLS-terminating proxy, say): the
    /// token and every password sent to the API then cross the network in clear. The server
    /// warns at start-up and in a `Broked-Warning` header on every response (/healthz too).
    #[arg(long, env = "BROKED_INSECURE_HTTP", conflicts_with = "tls_cert")]
    insecure_http: bool,

    /// Require `Authorization: Bearer TOKEN` on every /api request.
    /// Prefer the environment variable: argv is visible to other users of the machine.
    #[arg(long, env = "BROKED_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,

    /// Overall time limit of one connection test, in seconds.
    #[arg(long, env = "BROKED_PROBE_TIMEOUT", default_value_t = 10)]
    probe_timeout: u64,

    /// When the database cannot be reached, resolve the last value seen (marked stale, with
    /// a warning) for up to this many seconds, then fail. Default: fail at once.
    #[arg(long, env = "BROKED_MAX_STALE", value_name = "SECONDS", value_parser = max_stale)]
    max_stale: Option<Duration>,

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

    /// Log format: text, or json (one object per line, for log shippers; each request's
    /// event carries its request_id).
    #[arg(long, env = "BROKED_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    /// The longest an API call waits for the store (PostgreSQL down or refusing, a SQLite
    /// lock held by another process), in seconds; then it answers 503 (store_unavailable or
    /// busy) with Retry-After. /readyz uses the same limit.
    #[arg(long, env = "BROKED_STORE_TIMEOUT", value_name = "SECONDS", default_value = "3", value_parser = store_timeout)]
    store_timeout: Duration,

    /// Previous versions kept per connection (its history, `GET …/versions`): every update
    /// keeps the version it replaces; older ones beyond N are removed. 0 keeps none.
    #[arg(long, env = "BROKED_KEEP_VERSIONS", value_name = "N", default_value_t = broked_connections::DEFAULT_KEEP_VERSIONS)]
    keep_versions: u32,

    /// Remove audit records older than this (like 90d or 12w) at start-up and every hour,
    /// keeping the chain verifiable (the cut is signed). Default: keep every record.
    #[arg(long, env = "BROKED_AUDIT_RETENTION", value_name = "DURATION", value_parser = audit_retention)]
    audit_retention: Option<Duration>,
}

fn audit_retention(s: &str) -> Result<Duration, String> {
    broked_connections::parse_duration(s).map_err(|m| format!("must be {m}"))
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
    let _log = init_tracing(&args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broked-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Log lines are written to stderr by a background thread, in batches: a request no longer
/// waits for a `write(2)` of its line (issue 19, docs/BENCHMARKS.md). The queue is bounded and
/// never drops a line — a request waits when it is full — and the returned guard writes out
/// what is queued when it is dropped, as `main` returns (also after SIGTERM/SIGINT).
fn init_tracing(format: &str) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BROKED_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    // Colour only for a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The worker flushes whenever its queue is empty: a line waits in the buffer only while
    // more are coming.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("broked-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    guard
}

/// Log lines queued for the writer at most; then a request waits for room.
const LOG_QUEUE_LINES: usize = 16_384;

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
    if !args.listen.ip().is_loopback() && args.tls_cert.is_none() && !args.insecure_http {
        bail!(
            "refusing to serve plain HTTP on {}: the API token and every password sent to the \
             API would cross the network in clear. Give --tls-cert FILE --tls-key FILE, or \
             --insecure-http if something else encrypts the traffic (a TLS proxy in front)",
            args.listen
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(tls::Tls::load(cert, key)?)),
        _ => None,
    };
    if args.insecure_http {
        tracing::warn!(
            listen = %args.listen,
            "--insecure-http: serving plain HTTP; the API token and passwords sent to the API \
             cross the network in clear"
        );
    }
    let mut options = broked_connections::Options::default();
    options.probe_timeout = Duration::from_secs(args.probe_timeout.max(1));
    options.probe_deny = args.probe_deny;
    options.probe_disabled = args.probe_disabled;
    options.probe_file_roots = args.probe_file_root.clone();
    options.key_file = args.key_file.clone();
    options.max_stale = args.max_stale;
    options.store_timeout = args.store_timeout;
    options.keep_versions = args.keep_versions;
    let _ = metrics::STORE_TIMEOUT.set(args.store_timeout);
    // A PostgreSQL address may carry a password: messages show the library's redacted form.
    let shown = broked_connections::describe_db(&args.db);
    let connections = broked_connections::Connections::open_with(&args.db, options)
        .with_context(|| format!("cannot open {shown}"))?;
    let db_shown = connections.db_path().display().to_string();

    let connections = Arc::new(connections);
    let recovering = connections.clone();
    let has_api_token = token.is_some();
    let state = state::AppState {
        connections,
        token: token.map(|t| Arc::new(auth::Token::new(t))),
        failures: Arc::default(),
        inline_reads: !broked_connections::is_postgres_url(&args.db.to_string_lossy()),
        gets: Arc::default(),
        lists: Arc::default(),
    };
    if let Some(retention) = args.audit_retention {
        audit::prune_every_hour(&state.connections, retention);
    }
    let app = api::router(state);
    let app = if args.insecure_http {
        app.layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::HeaderName::from_static("broked-warning"),
            axum::http::HeaderValue::from_static(INSECURE_HTTP_WARNING),
        ))
    } else {
        app
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Password rotations a crashed process left unfinished (docs/rotation.md).
        tokio::spawn(rotation::recover_periodically(recovering.clone()));
        // Scheduled rotations (extra.rotate_every), and what /healthz says of them.
        tokio::spawn(rotation::schedule_periodically(recovering, has_api_token));
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        if let Some(tls) = &tls {
            // Installed before the server announces itself: SIGHUP's default action is to
            // end the process.
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .context("cannot handle SIGHUP")?;
            tokio::spawn(tls::reload_on_sighup(tls.clone(), hangup));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(
            listen = %args.listen,
            db = %db_shown,
            "broked-server listening on {scheme}://{}",
            args.listen
        );
        serve(listener, app, tls).await;
        tracing::info!("shut down");
        anyhow::Ok(())
    })
}

/// The `Broked-Warning` header of every response under --insecure-http.
const INSECURE_HTTP_WARNING: &str =
    "insecure-http: plain HTTP, the API token and passwords cross the network in clear";

/// How long a client may take to send a request's head (and how long an idle keep-alive
/// connection stays open): slow-loris and idle clients cannot hold connections forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves HTTP/1.1 (over TLS with `tls`) until SIGINT/SIGTERM, then lets requests in flight
/// finish (up to 10 s).
///
/// Not `axum::serve`: it gives hyper no timer, so hyper's header-read timeout never fires.
/// The TLS handshake runs in the connection's task, bounded by [`tls::HANDSHAKE_TIMEOUT`], so
/// that a slow client holds up neither the accept loop nor the shutdown for longer.
async fn serve(listener: tokio::net::TcpListener, app: axum::Router, tls: Option<Arc<tls::Tls>>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Tells connections still in their TLS handshake to give up: they hold no request yet.
    let (closing, closing_rx) = tokio::sync::watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
        // Every request of the connection carries its client's address (for the limit on
        // failed authentications).
        let client = auth::ClientAddr(peer.ip());
        let app = app.clone().layer(axum::Extension(client));
        let watcher = graceful.watcher();
        match &tls {
            None => {
                tokio::spawn(serve_connection(stream, app, watcher));
            }
            Some(tls) => {
                let tls = tls.clone();
                let mut closing = closing_rx.clone();
                tokio::spawn(async move {
                    let stream = tokio::select! {
                        stream = tls.accept(stream) => stream,
                        _ = closing.changed() => None,
                    };
                    if let Some(stream) = stream {
                        serve_connection(stream, app, watcher).await;
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = closing.send(());
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("requests still running after 10 s; exiting");
        }
    }
}

/// One HTTP/1.1 connection, with hyper's header-read timeout, ended gracefully on shutdown.
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    let _ = watcher.watch(conn).await;
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

/// `--store-timeout`: seconds, fractions allowed, from 0.1 to 300.
fn store_timeout(s: &str) -> Result<Duration, String> {
    max_stale(s).and_then(|d| {
        (Duration::from_millis(100)..=Duration::from_secs(300))
            .contains(&d)
            .then_some(d)
            .ok_or_else(|| format!("{s:?}: give 0.1 to 300 seconds"))
    })
}

/// `--max-stale`: seconds, fractions allowed.
fn max_stale(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}
