//! What the watches did, on `/metrics` under `gatehouse_kube_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Watch metrics. Staleness is `now - last_event_timestamp_seconds` while
/// `last_error_timestamp_seconds` is newer than the last event.
#[derive(Clone, Debug, Default)]
pub struct KubeMetrics {
    pub(crate) events: Family<KindLabels, Counter>,
    pub(crate) errors: Family<KindLabels, Counter>,
    pub(crate) last_event: Gauge,
    pub(crate) last_error: Gauge,
    pub(crate) rejected: Gauge,
    pub(crate) status_writes: Family<WriteLabels, Counter>,
    /// ACME certificates written to Secrets, by result.
    pub(crate) secret_writes: Family<WriteLabels, Counter>,
    pub(crate) leader: Gauge,
    /// Watches failing now (each backing off and retrying).
    pub(crate) failing: Gauge,
    /// Unix time the current outage began (the first of the failing watches); 0 if none.
    pub(crate) outage_since: Gauge,
    /// Seconds the published state may be behind the cluster; 0 while every watch is healthy.
    pub(crate) stale: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub(crate) kind: &'static str,
}

/// `written`, `unchanged` (the cluster already showed it), `conflict` (409, read again) or
/// `error` (retried with backoff).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WriteLabels {
    pub(crate) result: &'static str,
}

impl KubeMetrics {
    /// A watch started failing: the outage begins now if it is the first.
    pub(crate) fn watch_failing(&self, now: i64) {
        if self.failing.inc() == 0 {
            self.outage_since.set(now);
        }
        self.update_staleness(now);
    }

    /// A failing watch recovered (or stopped).
    pub(crate) fn watch_recovered(&self, now: i64) {
        self.failing.dec();
        self.update_staleness(now);
    }

    /// Sets `stale_seconds` for `now`; returns it.
    pub(crate) fn update_staleness(&self, now: i64) -> i64 {
        let stale = if self.failing.get() > 0 { (now - self.outage_since.get()).max(0) } else { 0 };
        self.stale.set(stale);
        stale
    }

    /// Registers the metrics under the `kube` prefix of `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let registry = registry.sub_registry_with_prefix("kube");
        registry.register("watch_events", "Watch events received, by kind", metrics.events.clone());
        registry.register(
            "watch_errors",
            "Watch and list errors (each followed by a backoff and a retry), by kind",
            metrics.errors.clone(),
        );
        registry.register(
            "last_event_timestamp_seconds",
            "Unix time of the last watch event from the API server",
            metrics.last_event.clone(),
        );
        registry.register(
            "last_error_timestamp_seconds",
            "Unix time of the last watch or list error",
            metrics.last_error.clone(),
        );
        registry.register(
            "rejected_objects",
            "Objects in the cluster that could not be read and are not served",
            metrics.rejected.clone(),
        );
        registry.register(
            "status_writes",
            "Status write attempts by result: written, unchanged, conflict, error",
            metrics.status_writes.clone(),
        );
        registry.register(
            "secret_writes",
            "ACME certificate writes to listener Secrets by result: written, unchanged, \
             foreign (a Secret not ours, left alone), error",
            metrics.secret_writes.clone(),
        );
        registry.register(
            "failing_watches",
            "Watches failing now, each retrying with backoff while the last state keeps serving",
            metrics.failing.clone(),
        );
        registry.register(
            "stale_seconds",
            "Seconds since the oldest failing watch last worked (how stale the served state may \
             be); 0 while every watch is healthy",
            metrics.stale.clone(),
        );
        registry.register(
            "leader",
            "1 while this appliance holds the Lease and writes status, else 0",
            metrics.leader.clone(),
        );
        metrics
    }
}
