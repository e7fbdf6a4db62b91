//! The immutable route table the proxy serves from, built by [`crate::compile()`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use gatehouse_model::{
    BackendProtocol, Hostname, HttpMatch, ListenerId, ListenerProblem, ObjectId, Protocol,
    RulePolicy,
};
use http::uri::Authority;
use rustls::ServerConfig;
use serde_json::{Value, json};

use crate::filters::Filters;
use crate::matching::CompiledMatch;
use crate::metrics::{ListenerMetrics, RouteMetrics};

/// Everything the data plane needs to serve one generation: sockets, listeners, hostnames,
/// ordered matches, filters, backends and TLS configs. Immutable once compiled.
#[derive(Debug, Default)]
pub struct RouteTable {
    pub(crate) generation: u64,
    pub(crate) sockets: BTreeMap<SocketAddr, SocketRoutes>,
    pub(crate) problems: Vec<ListenerProblem>,
}

impl RouteTable {
    /// Generation of the desired state this table was compiled from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Listener problems found while compiling (conflicts, bad certificates).
    pub fn problems(&self) -> &[ListenerProblem] {
        &self.problems
    }

    /// The socket addresses this table wants bound.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.sockets.keys().copied()
    }

    /// A JSON summary for debugging (admin `GET /config`); keys are never secret.
    pub fn describe(&self) -> Value {
        json!({
            "generation": self.generation,
            "sockets": self.sockets.iter().map(|(addr, s)| json!({
                "address": addr.to_string(),
                "protocol": s.protocol.scheme(),
                "listeners": s.listeners.iter().map(|l| l.describe()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "problems": serde_json::to_value(&self.problems).unwrap_or(Value::Null),
        })
    }
}

/// One bound socket and the listeners sharing it, most specific hostname first.
#[derive(Clone, Debug)]
pub(crate) struct SocketRoutes {
    pub protocol: Protocol,
    pub listeners: Vec<Arc<ListenerRoutes>>,
}

/// One listener: its hostname, TLS config and the routes attached to it.
#[derive(Debug)]
pub(crate) struct ListenerRoutes {
    pub id: ListenerId,
    /// `namespace/gateway/listener` and the metric handles under that label.
    pub metrics: Arc<ListenerMetrics>,
    pub hostname: Option<Hostname>,
    pub port: u16,
    pub protocol: Protocol,
    pub tls: Option<Arc<ServerConfig>>,
    /// Certificate sources and their names, for [`RouteTable::describe`].
    pub cert_names: Vec<(String, Vec<String>)>,
    pub hosts: HostRoutes,
    /// WASM plugins run on every request of the listener, before the rule's.
    pub wasm: Vec<Arc<gatehouse_wasm::Plugin>>,
    /// A listener plugin that is not prepared: every request answers 500.
    pub wasm_error: Option<String>,
}

impl ListenerRoutes {
    fn describe(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "hostname": self.hostname.as_ref().map(Hostname::as_str),
            "port": self.port,
            "protocol": self.protocol.scheme(),
            "certificates": self.cert_names.iter()
                .map(|(source, names)| json!({"source": source, "names": names}))
                .collect::<Vec<_>>(),
            "hosts": self.hosts.describe(),
        })
    }
}

/// Matches of one listener grouped by the (intersected) hostname they serve. Persistent and
/// shared: the next table copies it in O(1) and replaces only the buckets of the routes that
/// changed.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostRoutes {
    pub exact: imbl::HashMap<String, Bucket>,
    /// Longest (most specific) wildcard first.
    pub wildcards: Vec<(Hostname, Bucket)>,
    /// Routes without a hostname on a listener without one.
    pub any: Bucket,
}

/// The matches of one hostname, in precedence order.
pub(crate) type Bucket = Arc<[MatchEntry]>;

impl HostRoutes {
    fn describe(&self) -> Value {
        let mut exact: Vec<_> = self.exact.iter().collect();
        exact.sort_by(|a, b| a.0.cmp(b.0));
        let bucket = |host: &str, entries: &[MatchEntry]| json!({"hostname": host, "matches": entries.iter().map(MatchEntry::describe).collect::<Vec<_>>()});
        let mut out: Vec<Value> = exact.into_iter().map(|(h, e)| bucket(h, e)).collect();
        out.extend(self.wildcards.iter().map(|(h, e)| bucket(h.as_str(), e)));
        if !self.any.is_empty() {
            out.push(bucket("*", &self.any));
        }
        Value::Array(out)
    }
}

/// One match of one rule of one route, in precedence order within its hostname.
#[derive(Clone, Debug)]
pub(crate) struct MatchEntry {
    pub route: Arc<CompiledRoute>,
    /// Counters of this route on this listener, shared by all its entries there.
    pub metrics: Arc<RouteMetrics>,
    pub rule: usize,
    pub index: usize,
}

impl MatchEntry {
    pub(crate) fn rule(&self) -> &CompiledRule {
        &self.route.rules[self.rule]
    }

    pub(crate) fn matcher(&self) -> &CompiledMatch {
        &self.rule().matches[self.index].compiled
    }

    fn describe(&self) -> Value {
        let rule = self.rule();
        json!({
            "route": self.route.id.to_string(),
            "rule": self.rule,
            "rule_name": rule.name,
            "match": serde_json::to_value(&rule.matches[self.index].source).unwrap_or(Value::Null),
            "error": rule.error,
            "backends": rule.backends.iter().map(|b| json!({
                "weight": b.weight,
                "target": b.target.describe(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// A route compiled once and shared by every listener and hostname it serves.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub id: ObjectId,
    /// `namespace/name`, for metrics.
    pub label: String,
    /// The same, shared with WASM filters' `RequestInfo` without an allocation per request.
    pub name: Arc<str>,
    pub created: Option<i64>,
    pub rules: Vec<CompiledRule>,
}

/// A rule with its compiled matches, filters and backends.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub name: Option<String>,
    pub matches: Vec<RuleMatch>,
    pub filters: Filters,
    /// A filter that could not be compiled: requests hitting the rule get 500.
    pub error: Option<String>,
    pub backends: Vec<CompiledBackend>,
    pub total_weight: u64,
    /// Timeouts and retries.
    pub policy: RulePolicy,
}

/// A compiled match next to its source, for debugging output.
#[derive(Debug)]
pub(crate) struct RuleMatch {
    pub source: HttpMatch,
    pub compiled: CompiledMatch,
}

/// A weighted backend with its filters and a round-robin cursor over its endpoints.
#[derive(Debug)]
pub(crate) struct CompiledBackend {
    pub weight: u32,
    pub target: Target,
    pub filters: Filters,
    pub cursor: AtomicUsize,
}

/// Where a backend sends traffic.
#[derive(Debug)]
pub(crate) enum Target {
    Endpoints {
        name: String,
        addrs: Vec<SocketAddr>,
        /// `addrs` as URI authorities, index for index (`None` if one does not parse).
        authorities: Vec<Option<Authority>>,
        /// TLS to the endpoints (BackendTLSPolicy); `None` is cleartext.
        tls: Option<Arc<crate::backend_tls::Connector>>,
        /// How HTTP is spoken to the endpoints.
        protocol: BackendProtocol,
    },
    /// `host:port`, resolved by the connector at connect time.
    Dns {
        name: String,
        authority: String,
        protocol: BackendProtocol,
    },
    Unresolved {
        name: String,
        reason: String,
    },
}

impl Target {
    pub(crate) fn name(&self) -> &str {
        match self {
            Target::Endpoints { name, .. }
            | Target::Dns { name, .. }
            | Target::Unresolved { name, .. } => name,
        }
    }

    /// How the backend is spoken to.
    pub(crate) fn protocol(&self) -> BackendProtocol {
        match self {
            Target::Endpoints { protocol, .. } | Target::Dns { protocol, .. } => *protocol,
            Target::Unresolved { .. } => BackendProtocol::Http1,
        }
    }

    fn describe(&self) -> Value {
        match self {
            Target::Endpoints { name, addrs, tls, protocol, .. } => json!({
                "name": name,
                "endpoints": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "tls": tls.as_ref().map(|t| json!({"policy": t.source, "sni": t.server_name()})),
                "protocol": format!("{protocol:?}"),
            }),
            Target::Dns { name, authority, .. } => json!({"name": name, "dns": authority}),
            Target::Unresolved { name, reason } => json!({"name": name, "unresolved": reason}),
        }
    }
}
