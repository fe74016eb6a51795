//! Prometheus metrics: one registry per process, served at `/metrics` in the text
//! exposition format.
//!
//! Two kinds of metric live here. Event metrics (HTTP requests, git operations, store
//! requests, admission, maintenance) are recorded where the event happens, into
//! [`metrics()`]. State metrics (caches, retries, LFS transfers, store requests by
//! kind) are read at scrape time from the same counters `/-/stats` reads
//! ([`state::State`]): one source of truth, two views.
//!
//! No label is unbounded: repositories, users and paths go to logs and traces, never to
//! a label. Recording can be switched off (`--no-metrics`); the families stay empty.

mod state;
pub mod store;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use state::State;

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request and operation times: 1 ms to about 65 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Store request times: 0.5 ms to about 33 s.
fn store_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Admission waits: 1 ms to about 16 s.
fn wait_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub service: &'static str,
    pub version: &'static str,
    pub class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub service: &'static str,
    pub class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitLabels {
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub backend: &'static str,
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabel {
    pub scope: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: &'static str,
}

/// The event metrics of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histograms<DurationLabels>,
    pub http_first_byte: Histograms<ServiceLabel>,
    pub http_in_flight: Family<ServiceLabel, Gauge>,
    pub http_request_bytes: Family<ServiceLabel, Counter>,
    pub http_response_bytes: Family<ServiceLabel, Counter>,
    pub git_operations: Family<GitLabels, Counter>,
    pub ref_updates: Family<ResultLabel, Counter>,
    pub push_refusals: Family<ReasonLabel, Counter>,
    pub manifest_conflicts: Counter,
    pub store_requests: Histograms<StoreLabels>,
    pub admission_in_flight: Family<ScopeLabel, Gauge>,
    pub admission_queued: Family<ScopeLabel, Gauge>,
    pub admission_wait: Histograms<ScopeLabel>,
    pub admission_refused: Family<ReasonLabel, Counter>,
    pub maintenance_runs: Family<TaskLabels, Counter>,
    pub maintenance_duration: Histograms<TaskLabel>,
    pub packs_merged: Counter,
    pub bytes_deleted: Counter,
    pub webhook_attempts: Family<ResultLabel, Counter>,
    pub offload_links: Family<KindLabel, Counter>,
}

static ENABLED: AtomicBool = AtomicBool::new(true);

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics, or `None` when recording is off.
pub fn metrics() -> Option<&'static Metrics> {
    ENABLED.load(Ordering::Relaxed).then(|| &*METRICS)
}

/// Turns recording off (or on again), for `--no-metrics`.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

impl Metrics {
    fn new() -> Self {
        let mut metrics = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(seconds),
            http_first_byte: Family::new_with_constructor(seconds),
            http_in_flight: Family::default(),
            http_request_bytes: Family::default(),
            http_response_bytes: Family::default(),
            git_operations: Family::default(),
            ref_updates: Family::default(),
            push_refusals: Family::default(),
            manifest_conflicts: Counter::default(),
            store_requests: Family::new_with_constructor(store_seconds),
            admission_in_flight: Family::default(),
            admission_queued: Family::default(),
            admission_wait: Family::new_with_constructor(wait_seconds),
            admission_refused: Family::default(),
            maintenance_runs: Family::default(),
            maintenance_duration: Family::new_with_constructor(seconds),
            packs_merged: Counter::default(),
            bytes_deleted: Counter::default(),
            webhook_attempts: Family::default(),
            offload_links: Family::default(),
            registry: Registry::with_prefix("stowage"),
        };
        let r = &mut metrics.registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by service, git protocol version and status class",
            metrics.http_requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to the end of its response body",
            Unit::Seconds,
            metrics.http_duration.clone(),
        );
        r.register_with_unit(
            "http_time_to_first_byte",
            "Time from a request's arrival to the first byte of its response body",
            Unit::Seconds,
            metrics.http_first_byte.clone(),
        );
        r.register(
            "http_requests_in_flight",
            "Requests whose response has not ended",
            metrics.http_in_flight.clone(),
        );
        r.register_with_unit(
            "http_request",
            "Request body bytes received (as sent, before decompression)",
            Unit::Bytes,
            metrics.http_request_bytes.clone(),
        );
        r.register_with_unit(
            "http_response",
            "Response body bytes sent",
            Unit::Bytes,
            metrics.http_response_bytes.clone(),
        );
        r.register(
            "git_operations",
            "git operations (clone, fetch, ls_refs, push), by result",
            metrics.git_operations.clone(),
        );
        r.register(
            "git_ref_updates",
            "Ref updates asked by pushes, by result",
            metrics.ref_updates.clone(),
        );
        r.register(
            "git_push_refusals",
            "Ref updates refused, by reason",
            metrics.push_refusals.clone(),
        );
        r.register(
            "webhook_delivery_attempts",
            "Webhook delivery attempts, by result (delivered: a 2xx answer)",
            metrics.webhook_attempts.clone(),
        );
        r.register(
            "offload_links",
            "Signed links to the store given to git clients instead of bytes, by kind \
             (packfile-uri, bundle-uri)",
            metrics.offload_links.clone(),
        );
        r.register(
            "manifest_cas_conflicts",
            "Manifest compare-and-swaps that found the manifest changed and tried again",
            metrics.manifest_conflicts.clone(),
        );
        r.register_with_unit(
            "store_request_duration",
            "Store requests (each attempt), by backend, operation and outcome",
            Unit::Seconds,
            metrics.store_requests.clone(),
        );
        r.register(
            "admission_in_flight",
            "Pack-generating and pack-receiving requests running, per scope",
            metrics.admission_in_flight.clone(),
        );
        r.register(
            "admission_queued",
            "Requests waiting for a place, per scope",
            metrics.admission_queued.clone(),
        );
        r.register_with_unit(
            "admission_wait",
            "Time requests waited for a place, per scope",
            Unit::Seconds,
            metrics.admission_wait.clone(),
        );
        r.register(
            "admission_refused",
            "Requests refused by admission control, by reason",
            metrics.admission_refused.clone(),
        );
        r.register(
            "maintenance_runs",
            "Compaction and garbage collection runs, by task and result",
            metrics.maintenance_runs.clone(),
        );
        r.register_with_unit(
            "maintenance_duration",
            "Time compaction and garbage collection runs took",
            Unit::Seconds,
            metrics.maintenance_duration.clone(),
        );
        r.register(
            "maintenance_packs_merged",
            "Packs merged into others by compaction",
            metrics.packs_merged.clone(),
        );
        r.register_with_unit(
            "maintenance_deleted",
            "Bytes of packs and indexes deleted by maintenance",
            Unit::Bytes,
            metrics.bytes_deleted.clone(),
        );
        metrics
    }

    /// Counts a git operation.
    pub fn git_operation(&self, operation: &'static str, result: &'static str) {
        self.git_operations
            .get_or_create(&GitLabels { operation, result })
            .inc();
    }

    /// Counts `n` links to the store given out instead of bytes.
    pub fn offloaded(&self, kind: &'static str, n: u64) {
        self.offload_links
            .get_or_create(&KindLabel { kind })
            .inc_by(n);
    }

    /// Counts a webhook delivery attempt.
    pub fn webhook_attempt(&self, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        self.webhook_attempts
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts a compaction or garbage collection run.
    pub fn maintenance(&self, task: &'static str, result: &'static str, took: Duration) {
        self.maintenance_runs
            .get_or_create(&TaskLabels { task, result })
            .inc();
        self.maintenance_duration
            .get_or_create(&TaskLabel { task })
            .observe(took.as_secs_f64());
    }
}

/// Runs `f` on the metrics if recording is on.
pub fn record<T>(f: impl FnOnce(&Metrics) -> T) {
    if let Some(m) = metrics() {
        f(m);
    }
}

/// The text exposition of the event metrics and of `state`.
pub fn encode(state: &State) -> Result<String, std::fmt::Error> {
    use prometheus_client::encoding::text;
    let mut out = String::new();
    text::encode_registry(&mut out, &METRICS.registry)?;
    text::encode_registry(&mut out, &state.registry())?;
    text::encode_eof(&mut out)?;
    Ok(out)
}

/// The class of an HTTP status (`2xx`, ...), a bounded label.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
