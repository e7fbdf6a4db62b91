//! Counters of the L4 data plane (`gatehouse_l4_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What the L4 proxy counts.
#[derive(Debug, Default)]
pub struct L4Metrics {
    /// TCP and TLS connections accepted.
    pub connections: Counter,
    /// Connections closed because no backend could be reached.
    pub connect_failures: Counter,
    /// TLS connections closed before a route was chosen (garbage, too long, too slow, no
    /// matching SNI).
    pub tls_rejected: Counter,
    /// UDP sessions open.
    pub udp_sessions: Gauge,
    /// UDP datagrams dropped: a new client beyond the session bound, a full socket buffer,
    /// no backend.
    pub udp_dropped: Counter,
}

impl L4Metrics {
    /// Registers every metric under `l4_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("l4");
        r.register("connections", "TCP and TLS connections accepted", m.connections.clone());
        r.register(
            "connect_failures",
            "Connections closed because no backend could be reached",
            m.connect_failures.clone(),
        );
        r.register(
            "tls_rejected",
            "TLS connections closed before routing (bad, oversized, slow or unrouted ClientHello)",
            m.tls_rejected.clone(),
        );
        r.register("udp_sessions", "UDP sessions open", m.udp_sessions.clone());
        r.register(
            "udp_dropped",
            "UDP datagrams dropped (session bound reached, socket buffer full, no backend)",
            m.udp_dropped.clone(),
        );
        m
    }
}
