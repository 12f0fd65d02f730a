//! `/metrics` in the Prometheus text format (OpenMetrics 1.0, through `prometheus-client`),
//! the request id, and the store time limit `/readyz` uses.
//!
//! What is counted (docs/operations.md lists every series): requests by route template,
//! method and status with their latency; connection tests by type and result with their
//! latency; and, read from the library at each scrape, resolve cache hits and misses, every
//! store call by operation with its latency and errors, seals made, and the active key's
//! usage against its bound. Every label value comes from a fixed set — a route template, a
//! standard method, a status code, a connection type, a failure class, a store operation, a
//! key id — never from a path, a query or a body; no value is a secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use broked_connections::{Connections, KeyUsage, LATENCY_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::NoLabelSet;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics`.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// The server's own series, and the library's read at each scrape.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram>,
    tests: Family<Labels, Histogram>,
    library: Arc<Library>,
}

/// The process's metrics.
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// `--store-timeout`, for `/readyz`.
pub(crate) static STORE_TIMEOUT: OnceLock<Duration> = OnceLock::new();

pub(crate) fn store_timeout() -> Duration {
    STORE_TIMEOUT
        .get()
        .copied()
        .unwrap_or(Duration::from_secs(3))
}

fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("broked");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let request_seconds =
            Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template and method",
            request_seconds.clone(),
        );
        let tests =
            Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "connection_test_duration_seconds",
            "Connection tests by connection type and result (success or the failure class)",
            tests.clone(),
        );
        let library = Arc::new(Library::default());
        registry.register_collector(Box::new(library.clone()));
        Metrics {
            registry,
            requests,
            request_seconds,
            tests,
            library,
        }
    }

    /// One answered request. `route` is the matched template (`/api/connections/{conn_id}`)
    /// or `unmatched`.
    pub(crate) fn request(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        d: Duration,
    ) {
        let method = known_method(method);
        self.requests
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        self.request_seconds
            .get_or_create(&vec![
                ("route", route.to_owned()),
                ("method", method.to_owned()),
            ])
            .observe(d.as_secs_f64());
    }

    /// One finished connection test.
    pub(crate) fn test(&self, conn_type: &'static str, outcome: &broked_connections::TestOutcome) {
        let result = match (outcome.success, outcome.failure) {
            (true, _) => "success",
            (false, Some(f)) => f.as_str(),
            (false, None) => "other",
        };
        self.tests
            .get_or_create(&vec![
                ("type", conn_type.to_owned()),
                ("result", result.to_owned()),
            ])
            .observe(outcome.latency.as_secs_f64());
    }

    /// The text of a scrape: the library's counters from `connections`, the key usage
    /// (`None` when the store could not say).
    pub(crate) fn render(&self, connections: &Connections, keys: Option<KeyUsage>) -> String {
        {
            let mut snapshot = self
                .library
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *snapshot = Some((connections.metrics(), keys));
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        text
    }
}

/// A method name from the standard set, `other` for anything else (a client may send any
/// token as a method: it must not become a label value).
fn known_method(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
}

/// The library's counters and the key usage, as the scrape in progress read them.
#[derive(Debug, Default)]
struct Library {
    snapshot: Mutex<Option<(broked_connections::Metrics, Option<KeyUsage>)>>,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Histograms from the library's bucket counts (per bucket; the last is `+Inf`).
fn histograms<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    series: impl Iterator<Item = (&'a str, &'a broked_connections::Histogram)>,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (value, h) in series {
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(h.counts.iter().copied())
            .collect();
        let labels = [(label, value)];
        family
            .encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
    }
    Ok(())
}

/// Counters with one label.
fn labelled<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    series: impl Iterator<Item = (&'a str, u64)>,
    kind: MetricType,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, kind)?;
    for (value, v) in series {
        let labels = [(label, value)];
        let mut m = family.encode_family(&labels)?;
        match kind {
            MetricType::Gauge => m.encode_gauge(&(v as i64))?,
            _ => m.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
        }
    }
    Ok(())
}

impl Collector for Library {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let Some((m, keys)) = snapshot.as_ref() else {
            return Ok(());
        };
        counter(
            &mut e,
            "resolve_cache_hits",
            "Resolves answered from the cache",
            m.resolve_hits,
        )?;
        counter(
            &mut e,
            "resolve_cache_misses",
            "Resolves that read the store",
            m.resolve_misses,
        )?;
        counter(
            &mut e,
            "resolve_stale",
            "Resolves answered with a stale value while the store was unreachable (--max-stale)",
            m.resolve_stale,
        )?;
        counter(&mut e, "seals", "Values sealed by this process", m.seals)?;
        labelled(
            &mut e,
            "store_calls",
            "Store calls by operation (generation: only the failed ones)",
            "op",
            m.store.iter().map(|o| (o.op, o.calls)),
            MetricType::Counter,
        )?;
        labelled(
            &mut e,
            "store_errors",
            "Failed store calls by operation",
            "op",
            m.store.iter().map(|o| (o.op, o.errors)),
            MetricType::Counter,
        )?;
        labelled(
            &mut e,
            "store_unavailable",
            "Store calls that failed because the store could not be reached or read",
            "op",
            m.store.iter().map(|o| (o.op, o.unavailable)),
            MetricType::Counter,
        )?;
        histograms(
            &mut e,
            "store_call_duration_seconds",
            "Store call latency by operation",
            "op",
            m.store
                .iter()
                .filter(|o| o.latency.count > 0)
                .map(|o| (o.op, &o.latency)),
        )?;
        if let Some(k) = keys {
            gauge(
                &mut e,
                "key_active_seals",
                "Seals made with the active key, by every process",
                i64::try_from(k.active_seals).unwrap_or(i64::MAX),
            )?;
            gauge(
                &mut e,
                "key_seal_limit",
                "The active key is rotated when its seals reach this (the AES-GCM usage bound)",
                i64::try_from(k.seal_limit).unwrap_or(i64::MAX),
            )?;
            labelled(
                &mut e,
                "key_sealed_values",
                "Sealed values per key now (after a rotation the old keys fall to 0)",
                "key",
                k.sealed_values.iter().map(|(id, n)| (id.as_str(), *n)),
                MetricType::Gauge,
            )?;
        }
        Ok(())
    }
}

/// The header of [`RequestId`], as a `HeaderName` (a `&str` name is parsed on every use).
pub(crate) const X_REQUEST_ID: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-request-id");

/// A request's id: the `X-Request-Id` a proxy sent when it is short and plain, or a new one
/// (random per process, then counted). Logged with the request and sent back in
/// `X-Request-Id`.
#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub(crate) String);

impl RequestId {
    pub(crate) fn for_request(headers: &axum::http::HeaderMap) -> RequestId {
        if let Some(given) = headers
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                (1..=64).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            })
        {
            return RequestId(given.to_owned());
        }
        static PREFIX: LazyLock<u32> = LazyLock::new(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32
        });
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RequestId(format!(
            "{:08x}-{:012x}",
            *PREFIX,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }
}
