//! The pure step `Desired` → [`RouteTable`]: conflicts, certificates, hostnames, precedence.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use gatehouse_model::{
    Backend, Desired, Hostname, HttpMatch, HttpRoute, HttpRule, Listener, ListenerId,
    ListenerProblem, ListenerProblemKind, ObjectId, Protocol, WeightedBackend,
};
use gatehouse_wasm::Plugins;
use http::uri::Authority;

use crate::filters::Filters;
use crate::matching::CompiledMatch;
use crate::metrics::{ListenerMetrics, RouteMetrics};
use crate::table::{
    CompiledBackend, CompiledRoute, CompiledRule, HostRoutes, ListenerRoutes, MatchEntry,
    RouteTable, RuleMatch, SocketRoutes, Target,
};
use crate::tls;

/// Compiles the desired state into an immutable route table.
///
/// Pure: no I/O, same input gives the same table. The returned problems (also kept in
/// [`RouteTable::problems`]) are not repeated by [`crate::Proxy::apply`], whose report holds
/// bind failures only: the caller merges both lists.
pub fn compile(desired: &Desired) -> (RouteTable, Vec<ListenerProblem>) {
    compile_with_plugins(desired, &Plugins::default())
}

/// [`compile()`] with the WASM plugins prepared for this generation (by
/// `gatehouse_wasm::Host::prepare`, before the swap); a `wasm` filter naming a plugin that is
/// not among them makes its rule answer 500.
pub fn compile_with_plugins(
    desired: &Desired,
    plugins: &Plugins,
) -> (RouteTable, Vec<ListenerProblem>) {
    build(desired, plugins, None)
}

/// Compiles like [`compile_with_plugins`], reusing the compiled form (and the metric handles)
/// of every route that did not change since the previous call: a cluster event that changes
/// one route compiles one route, and when the listeners are the same the previous table's
/// hostname tables are patched where the changed routes are, not rebuilt (see
/// [`patch`]). The table is equal to what [`compile_with_plugins`] builds.
#[derive(Debug, Default)]
pub struct Compiler {
    routes: HashMap<ObjectId, CachedRoute>,
    compiled: usize,
    last: Option<patch::Last>,
}

/// A route's compiled form, next to the model route it was compiled from.
#[derive(Debug)]
struct CachedRoute {
    source: Arc<HttpRoute>,
    compiled: Arc<CompiledRoute>,
    metrics: HashMap<ListenerId, Arc<RouteMetrics>>,
}

impl Compiler {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles `desired` into a new table, reusing unchanged routes.
    pub fn compile(
        &mut self,
        desired: &Desired,
        plugins: &Plugins,
    ) -> (RouteTable, Vec<ListenerProblem>) {
        self.compiled = 0;
        if let Some(out) = self.patch(desired, plugins) {
            return out;
        }
        let out = build(desired, plugins, Some(self));
        self.last = patch::Last::of(desired, &out);
        if self.routes.len() > desired.http_routes.len() {
            let live: std::collections::HashSet<&ObjectId> =
                desired.http_routes.iter().map(|r| &r.id).collect();
            self.routes.retain(|id, _| live.contains(id));
        }
        out
    }

    /// Routes compiled anew (not reused) by the last call.
    pub fn last_compiled(&self) -> usize {
        self.compiled
    }

    /// The compiled route, reused when the route is unchanged. Routes with WASM filters are
    /// always compiled anew: they depend on the plugins prepared for this generation.
    fn route(&mut self, route: &Arc<HttpRoute>, plugins: &Plugins) -> Arc<CompiledRoute> {
        if let Some(cached) = self.routes.get(&route.id)
            && (Arc::ptr_eq(&cached.source, route) || cached.source == *route)
            && !uses_wasm(route)
        {
            return cached.compiled.clone();
        }
        self.compiled += 1;
        let compiled = Arc::new(compile_route(route, plugins));
        let cached = CachedRoute {
            source: route.clone(),
            compiled: compiled.clone(),
            metrics: HashMap::new(),
        };
        self.routes.insert(route.id.clone(), cached);
        compiled
    }

    /// The route's metric handles on a listener: kept across tables so that counters resolved
    /// once stay resolved.
    fn metrics(&mut self, route: &ObjectId, listener: &ListenerId) -> Option<Arc<RouteMetrics>> {
        let cached = self.routes.get_mut(route)?;
        let label = &cached.compiled.label;
        Some(
            cached
                .metrics
                .entry(listener.clone())
                .or_insert_with(|| {
                    Arc::new(RouteMetrics::new(listener_label(listener), label.clone()))
                })
                .clone(),
        )
    }
}

fn uses_wasm(route: &HttpRoute) -> bool {
    let wasm = |filters: &[gatehouse_model::HttpFilter]| {
        filters.iter().any(|f| matches!(f, gatehouse_model::HttpFilter::Wasm { .. }))
    };
    route.rules.iter().any(|r| wasm(&r.filters) || r.backends.iter().any(|b| wasm(&b.filters)))
}

fn build(
    desired: &Desired,
    plugins: &Plugins,
    mut cache: Option<&mut Compiler>,
) -> (RouteTable, Vec<ListenerProblem>) {
    let mut problems = Vec::new();
    let listeners = compile_listeners(desired, &mut problems);

    let mut hosts: HashMap<ListenerId, Buckets> = HashMap::new();
    for route in &desired.http_routes {
        let compiled = match cache.as_deref_mut() {
            Some(cache) => cache.route(route, plugins),
            None => Arc::new(compile_route(route, plugins)),
        };
        for id in &route.listeners {
            let Some(listener) = listeners.get(id) else { continue };
            let buckets = hosts.entry(id.clone()).or_default();
            let metrics = cache.as_deref_mut().and_then(|c| c.metrics(&route.id, id));
            let metrics = metrics.unwrap_or_else(|| {
                Arc::new(RouteMetrics::new(listener_label(id), compiled.label.clone()))
            });
            for host in route_hostnames(route, listener.listener.hostname.as_ref()) {
                let bucket = buckets.entry(host).or_default();
                for (rule, r) in compiled.rules.iter().enumerate() {
                    for index in 0..r.matches.len() {
                        bucket.push(MatchEntry {
                            route: compiled.clone(),
                            metrics: metrics.clone(),
                            rule,
                            index,
                        });
                    }
                }
            }
        }
    }

    let mut sockets: BTreeMap<SocketAddr, SocketRoutes> = BTreeMap::new();
    for (id, built) in listeners {
        let l = built.listener;
        let (wasm, wasm_error) = listener_plugins(desired, &id, plugins);
        let routes = Arc::new(ListenerRoutes {
            wasm,
            wasm_error,
            metrics: Arc::new(ListenerMetrics::new(listener_label(&id))),
            hostname: l.hostname.clone(),
            port: l.port,
            protocol: l.protocol,
            tls: built.tls,
            cert_names: built.cert_names,
            hosts: host_routes(hosts.remove(&id).unwrap_or_default()),
            id,
        });
        for addr in built.sockets {
            sockets
                .entry(addr)
                .or_insert_with(|| SocketRoutes { protocol: l.protocol, listeners: Vec::new() })
                .listeners
                .push(routes.clone());
        }
    }
    for socket in sockets.values_mut() {
        socket.listeners.sort_by(|a, b| {
            hostname_order(a.hostname.as_ref(), b.hostname.as_ref()).then_with(|| a.id.cmp(&b.id))
        });
    }

    let table = RouteTable { generation: desired.generation, sockets, problems: problems.clone() };
    (table, problems)
}

/// The WASM plugins of a whole listener; a missing plugin is an error every request of the
/// listener answers with 500 (never a silently skipped filter).
fn listener_plugins(
    desired: &Desired,
    id: &ListenerId,
    plugins: &Plugins,
) -> (Vec<Arc<gatehouse_wasm::Plugin>>, Option<String>) {
    let mut out = Vec::new();
    for lf in desired.listener_filters.iter().filter(|lf| lf.listener == *id) {
        match Filters::compile(&lf.filters, plugins) {
            Ok(f) => out.extend(f.wasm),
            Err(e) => return (Vec::new(), Some(e.to_string())),
        }
    }
    (out, None)
}

/// `namespace/gateway/listener`, the listener's metrics label.
fn listener_label(id: &ListenerId) -> String {
    format!("{}/{}/{}", id.gateway.namespace, id.gateway.name, id.name)
}

/// A listener's TLS config and, for debugging, its certificates' sources and names.
type TlsSetup = (Arc<rustls::ServerConfig>, Vec<(String, Vec<String>)>);

/// A listener that survived validation, with the sockets it is placed on.
struct BuiltListener<'a> {
    listener: &'a Listener,
    sockets: Vec<SocketAddr>,
    tls: Option<Arc<rustls::ServerConfig>>,
    cert_names: Vec<(String, Vec<String>)>,
}

/// Routes of one listener keyed by served hostname (`None` = any).
type Buckets = HashMap<Option<Hostname>, Vec<MatchEntry>>;

fn problem(l: &Listener, kind: ListenerProblemKind, message: String) -> ListenerProblem {
    ListenerProblem { listener: l.id.clone(), kind, message }
}

fn compile_listeners<'a>(
    desired: &'a Desired,
    problems: &mut Vec<ListenerProblem>,
) -> BTreeMap<ListenerId, BuiltListener<'a>> {
    let mut ordered: Vec<&Listener> = desired.listeners.iter().collect();
    ordered.sort_by(|a, b| a.id.cmp(&b.id));
    // Per socket: its protocol and the hostnames already taken.
    let mut taken: HashMap<SocketAddr, (Protocol, Vec<Option<Hostname>>)> = HashMap::new();
    let mut out = BTreeMap::new();
    for l in ordered {
        if out.contains_key(&l.id) {
            continue;
        }
        if l.addresses.is_empty() {
            let msg = "listener has no address to bind".to_owned();
            problems.push(problem(l, ListenerProblemKind::PortUnavailable, msg));
            continue;
        }
        let (tls, cert_names) = match l.protocol {
            Protocol::Http => (None, Vec::new()),
            Protocol::Https => match listener_tls(l, client_validation(desired, &l.id), problems) {
                Some((config, names)) => (Some(config), names),
                None => continue,
            },
        };
        let sockets: Vec<SocketAddr> =
            l.addresses.iter().map(|ip| SocketAddr::new(*ip, l.port)).collect();
        let conflict = sockets.iter().find_map(|addr| {
            let (protocol, hosts) = taken.get(addr)?;
            if *protocol != l.protocol {
                Some((
                    ListenerProblemKind::ProtocolConflict,
                    format!("{addr} is already served with protocol {}", protocol.scheme()),
                ))
            } else if hosts.contains(&l.hostname) {
                let host = l.hostname.as_ref().map_or("(any)", Hostname::as_str);
                Some((
                    ListenerProblemKind::HostnameConflict,
                    format!("hostname {host} is already served on {addr}"),
                ))
            } else {
                None
            }
        });
        if let Some((kind, message)) = conflict {
            problems.push(problem(l, kind, message));
            continue;
        }
        for addr in &sockets {
            taken
                .entry(*addr)
                .or_insert_with(|| (l.protocol, Vec::new()))
                .1
                .push(l.hostname.clone());
        }
        out.insert(l.id.clone(), BuiltListener { listener: l, sockets, tls, cert_names });
    }
    out
}

/// The client certificate validation of a listener, if it asks for one.
fn client_validation<'a>(
    desired: &'a Desired,
    id: &ListenerId,
) -> Option<&'a gatehouse_model::ClientValidation> {
    desired.client_validation.iter().find(|v| v.listener == *id)
}

/// Loads the certificates of an HTTPS listener; `None` when none is usable.
fn listener_tls(
    l: &Listener,
    validation: Option<&gatehouse_model::ClientValidation>,
    problems: &mut Vec<ListenerProblem>,
) -> Option<TlsSetup> {
    let certs = l.tls.as_ref().map(|t| t.certificates.as_slice()).unwrap_or_default();
    if certs.is_empty() {
        let msg = "HTTPS listener has no certificate".to_owned();
        problems.push(problem(l, ListenerProblemKind::InvalidCertificate, msg));
        return None;
    }
    let mut loaded = Vec::new();
    for cert in certs {
        match tls::load(cert) {
            Ok(c) => loaded.push(c),
            Err(e) => {
                problems.push(problem(l, ListenerProblemKind::InvalidCertificate, e.to_string()))
            }
        }
    }
    if loaded.is_empty() {
        return None;
    }
    let names = loaded.iter().map(|c| (c.source.clone(), c.names.clone())).collect();
    match tls::server_config(loaded, validation) {
        Ok(config) => Some((config, names)),
        Err(e) => {
            problems.push(problem(l, ListenerProblemKind::InvalidCertificate, e.to_string()));
            None
        }
    }
}

/// Hostnames a route serves on a listener: the intersections of its hostnames with the
/// listener's; a side without hostnames takes the other side's.
fn route_hostnames(route: &HttpRoute, listener: Option<&Hostname>) -> Vec<Option<Hostname>> {
    if route.hostnames.is_empty() {
        return vec![listener.cloned()];
    }
    let mut out: Vec<Option<Hostname>> = Vec::new();
    for h in &route.hostnames {
        let served = match listener {
            Some(l) => h.intersect(l),
            None => Some(h.clone()),
        };
        if let Some(served) = served.map(Some)
            && !out.contains(&served)
        {
            out.push(served);
        }
    }
    out
}

fn compile_route(route: &HttpRoute, plugins: &Plugins) -> CompiledRoute {
    CompiledRoute {
        id: route.id.clone(),
        label: format!("{}/{}", route.id.namespace, route.id.name),
        name: Arc::from(format!("{}/{}", route.id.namespace, route.id.name)),
        created: route.created,
        rules: route.rules.iter().map(|r| compile_rule(route, r, plugins)).collect(),
    }
}

fn compile_rule(route: &HttpRoute, rule: &HttpRule, plugins: &Plugins) -> CompiledRule {
    let default = [HttpMatch::default()];
    let sources = if rule.matches.is_empty() { &default[..] } else { &rule.matches[..] };
    let matches = sources
        .iter()
        .filter_map(|m| match CompiledMatch::compile(m) {
            Ok(compiled) => Some(RuleMatch { source: m.clone(), compiled }),
            Err(e) => {
                tracing::warn!(route = %route.id, error = %e, "match never matches");
                None
            }
        })
        .collect();
    let (filters, error) = match Filters::compile(&rule.filters, plugins) {
        Ok(f) => (f, None),
        Err(e) => (Filters::default(), Some(e.to_string())),
    };
    let backends: Vec<CompiledBackend> =
        rule.backends.iter().map(|b| compile_backend(b, plugins)).collect();
    let total_weight = backends.iter().map(|b| u64::from(b.weight)).sum();
    CompiledRule {
        name: rule.name.clone(),
        matches,
        filters,
        error,
        backends,
        total_weight,
        policy: rule.policy.clone(),
    }
}

fn compile_backend(b: &WeightedBackend, plugins: &Plugins) -> CompiledBackend {
    let target = target(&b.backend);
    let (target, filters) = match Filters::compile(&b.filters, plugins) {
        Ok(f) => (target, f),
        Err(e) => (
            Target::Unresolved { name: target.name().to_owned(), reason: e.to_string() },
            Filters::default(),
        ),
    };
    CompiledBackend { weight: b.weight, target, filters, cursor: AtomicUsize::new(0) }
}

/// Where a model backend sends traffic, with authorities parsed once.
pub(crate) fn target(backend: &Backend) -> Target {
    match backend {
        Backend::Endpoints(e) => {
            let tls = match e.tls.as_ref().map(crate::backend_tls::Connector::new).transpose() {
                Ok(tls) => tls.map(Arc::new),
                Err(err) => {
                    return Target::Unresolved { name: e.name.clone(), reason: err.to_string() };
                }
            };
            Target::Endpoints {
                name: e.name.clone(),
                addrs: e.addrs.clone(),
                authorities: e
                    .addrs
                    .iter()
                    .map(|a| Authority::try_from(a.to_string()).ok())
                    .collect(),
                tls,
                protocol: e.protocol,
            }
        }
        Backend::Dns { name, host, port, protocol } => {
            let authority = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Target::Dns { name: name.clone(), authority, protocol: *protocol }
        }
        Backend::Unresolved(u) => {
            Target::Unresolved { name: u.name.clone(), reason: u.reason.clone() }
        }
    }
}

/// Exact hostnames first, then wildcards longest first, then no hostname.
fn hostname_order(a: Option<&Hostname>, b: Option<&Hostname>) -> Ordering {
    let key = |h: Option<&Hostname>| match h {
        Some(h) if !h.is_wildcard() => (0, 0),
        Some(h) => (1, usize::MAX - h.as_str().len()),
        None => (2, 0),
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(&b))
}

/// The spec's precedence: match specificity, then oldest route, then namespace/name, then
/// rule and match order.
fn entry_order(a: &MatchEntry, b: &MatchEntry) -> Ordering {
    let created = |e: &MatchEntry| (e.route.created.is_none(), e.route.created);
    a.matcher()
        .specificity()
        .cmp(&b.matcher().specificity())
        .then_with(|| created(a).cmp(&created(b)))
        .then_with(|| a.route.id.namespace.cmp(&b.route.id.namespace))
        .then_with(|| a.route.id.name.cmp(&b.route.id.name))
        .then_with(|| a.rule.cmp(&b.rule))
        .then_with(|| a.index.cmp(&b.index))
}

fn host_routes(buckets: Buckets) -> HostRoutes {
    let mut out = HostRoutes::default();
    for (host, mut entries) in buckets {
        entries.sort_by(entry_order);
        match host {
            Some(h) if h.is_wildcard() => out.wildcards.push((h, entries.into())),
            Some(h) => {
                out.exact.insert(h.as_str().to_owned(), entries.into());
            }
            None => out.any = entries.into(),
        }
    }
    out.wildcards.sort_by(|a, b| hostname_order(Some(&a.0), Some(&b.0)));
    out
}

mod patch;
#[cfg(test)]
mod tests;
