//! Prometheus metrics of the data plane.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    listener: String,
    route: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    backend: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    backend: String,
    outcome: &'static str,
}

/// Mirrored requests by backend and outcome (`sent`, `error`, `dropped`, `skipped_body`);
/// a cheap handle that mirror tasks carry.
#[derive(Clone, Debug, Default)]
pub(crate) struct MirrorMetrics(Family<OutcomeLabels, Counter>);

impl MirrorMetrics {
    pub(crate) fn record(&self, backend: &str, outcome: &'static str) {
        self.0.get_or_create(&OutcomeLabels { backend: backend.to_owned(), outcome }).inc();
    }
}

type HistogramFamily = Family<ListenerLabels, Histogram, fn() -> Histogram>;

/// Metric handles; cheap to update from any task.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    upstream_errors: Family<UpstreamLabels, Counter>,
    retries: Family<UpstreamLabels, Counter>,
    pub mirrors: MirrorMetrics,
    active_connections: Gauge,
    tls_handshake_failures: Counter,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Registers every metric under the `gatehouse_proxy_` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            upstream_errors: Family::default(),
            retries: Family::default(),
            mirrors: MirrorMetrics::default(),
            active_connections: Gauge::default(),
            tls_handshake_failures: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("gatehouse_proxy");
        r.register(
            "requests",
            "HTTP requests answered, by listener, route and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to response head, by listener",
            m.duration.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed upstream requests, by backend and kind",
            m.upstream_errors.clone(),
        );
        r.register(
            "retries",
            "Backend requests sent again, by backend and the kind of failure retried",
            m.retries.clone(),
        );
        r.register(
            "mirrored_requests",
            "Mirrored request copies, by mirror backend and outcome",
            m.mirrors.0.clone(),
        );
        r.register(
            "active_connections",
            "Open downstream connections",
            m.active_connections.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "Failed or refused TLS handshakes",
            m.tls_handshake_failures.clone(),
        );
        m
    }

    /// Records a served request. The handles of a matched listener and route are resolved
    /// once per table and then reused, so the hot path neither hashes labels nor clones them.
    pub(crate) fn request(
        &self,
        listener: Option<&ListenerMetrics>,
        route: Option<&RouteMetrics>,
        status: u16,
        elapsed: Duration,
    ) {
        let class = status_class(status);
        match listener {
            Some(l) => l
                .duration
                .get_or_init(|| self.duration_for(l.label.clone()))
                .observe(elapsed.as_secs_f64()),
            None => self.duration_for(String::from(NONE)).observe(elapsed.as_secs_f64()),
        }
        match (listener, route) {
            (_, Some(r)) => r.requests[class_index(status)]
                .get_or_init(|| self.requests_for(r.listener.clone(), r.route.clone(), class))
                .inc(),
            (Some(l), None) => self.requests_for(l.label.clone(), String::from(NONE), class).inc(),
            (None, None) => self.requests_for(String::from(NONE), String::from(NONE), class).inc(),
        };
    }

    fn duration_for(&self, listener: String) -> Histogram {
        self.duration.get_or_create(&ListenerLabels { listener }).clone()
    }

    fn requests_for(&self, listener: String, route: String, status_class: &'static str) -> Counter {
        self.requests.get_or_create(&RequestLabels { listener, route, status_class }).clone()
    }

    pub(crate) fn upstream_error(&self, backend: String, kind: &'static str) {
        self.upstream_errors.get_or_create(&UpstreamLabels { backend, kind }).inc();
    }

    /// Counts a retry of a backend request; `kind` is `status`, `connect`, `timeout` or
    /// `protocol`.
    pub(crate) fn retry(&self, backend: &str, kind: &'static str) {
        self.retries.get_or_create(&UpstreamLabels { backend: backend.to_owned(), kind }).inc();
    }

    pub(crate) fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// Counts a connection as active until the guard drops.
    pub(crate) fn connection(&self) -> ConnectionGuard {
        self.active_connections.inc();
        ConnectionGuard(self.active_connections.clone())
    }
}

/// Decrements the active-connections gauge on drop.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Label value when no listener or route matched.
const NONE: &str = "none";

/// Metric handles of one listener, resolved on first use; lives in the route table.
#[derive(Debug)]
pub(crate) struct ListenerMetrics {
    /// `namespace/gateway/listener`.
    pub label: String,
    /// The same, shared with WASM filters' `RequestInfo` without an allocation per request.
    pub name: Arc<str>,
    duration: OnceLock<Histogram>,
}

impl ListenerMetrics {
    pub(crate) fn new(label: String) -> Self {
        Self { name: Arc::from(label.as_str()), label, duration: OnceLock::new() }
    }
}

/// Request counters of one route on one listener, one per status class, resolved on first
/// use; shared by every match entry of that pair in the route table.
#[derive(Debug)]
pub(crate) struct RouteMetrics {
    listener: String,
    route: String,
    requests: [OnceLock<Counter>; 5],
}

impl RouteMetrics {
    pub(crate) fn new(listener: String, route: String) -> Self {
        Self { listener, route, requests: Default::default() }
    }
}

fn class_index(status: u16) -> usize {
    match status / 100 {
        1 => 0,
        2 => 1,
        3 => 2,
        4 => 3,
        _ => 4,
    }
}

/// `2xx`-style class of a status code.
pub(crate) fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
