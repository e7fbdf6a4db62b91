//! Incremental translation: a cluster event that changes one HTTPRoute (or one Service, one
//! Gateway…) retranslates the routes that depend on it, and assembles the new translation
//! from the previous one in time proportional to what changed.
//!
//! A route's outcome (before HTTPRoute/GRPCRoute hostname conflicts are settled) is a
//! function of the route, the settings, the reports of its parents and the objects it
//! reads: its parents' objects, the Services (and their EndpointSlices) its backendRefs and
//! mirrors name, the ReferenceGrants and BackendTLSPolicies of the namespaces those point
//! into, and its own namespace (labels, WasmPlugins). [`Translator`] keeps the previous index
//! (a copy of persistent maps costs O(1)), asks the new one what changed
//! ([`Index::changed`]), and retranslates exactly the routes depending on a changed object;
//! a change to the settings, a GatewayClass, a Secret, a ConfigMap or a Node retranslates
//! every route. The outcome of every other route, its report and its model route are shared
//! (`Arc` and persistent maps) with the previous translation. Same inputs, same translation
//! as [`super::translate_with_addresses`]; the tests check it over random edit sequences.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use gatehouse_model::{HttpRoute as ModelRoute, ListenerId, ObjectId, WasmPlugin};

use super::{
    GatewayReport, ListenerSetReport, RouteKind, RouteOutcome, RouteRef, Settings, Translation,
};
use crate::index::{Index, Key, SERVICE_NAME_LABEL};
use crate::object::Kind;
use crate::types::{GROUP, RouteFilter};

/// An HTTPRoute or GRPCRoute by kind, namespace and name: HTTPRoutes sort first, as the full
/// translation adds them.
type RouteKey = (RouteKind, Key);

/// Something other than the route itself that its outcome reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dep {
    /// A Service a backendRef or a mirror names (and the EndpointSlices labelled with it).
    Service(Key),
    /// A namespace a backendRef points into: its ReferenceGrants and BackendTLSPolicies.
    BackendNamespace(String),
    /// The route's own namespace: its labels (allowedRoutes) and its WasmPlugins.
    Namespace(String),
    /// A Gateway or ListenerSet a parentRef names: its object and its report.
    Parent(ObjectId),
}

/// One route's outcome before conflicts (`None`: it names none of our parents) and what it
/// read.
#[derive(Debug)]
struct Entry {
    outcome: Option<Arc<RouteOutcome>>,
    deps: Vec<Dep>,
}

/// Everything kept from the last call.
#[derive(Debug)]
struct State {
    index: Index,
    settings: Settings,
    /// Parents' reports before any route was counted.
    gateways: BTreeMap<ObjectId, GatewayReport>,
    listener_sets: BTreeMap<ObjectId, ListenerSetReport>,
    entries: HashMap<RouteKey, Entry>,
    dependents: HashMap<Dep, HashSet<RouteKey>>,
    /// Per listener, the routes (HTTP, GRPC) accepted on it before conflicts: where the two
    /// kinds meet, conflicts are settled.
    on_listener: HashMap<ListenerId, [BTreeSet<Key>; 2]>,
    /// The outcome each route contributes (after conflicts), and the parts assembled from
    /// them.
    effective: HashMap<RouteKey, Arc<RouteOutcome>>,
    /// Routes whose effective outcome went through conflict resolution.
    resolved: BTreeSet<RouteKey>,
    reports: imbl::OrdMap<ObjectId, super::RouteReport>,
    models: imbl::OrdMap<RouteKey, Arc<ModelRoute>>,
    counts: HashMap<(ObjectId, usize), u32>,
    plugins: BTreeMap<RouteKey, Vec<WasmPlugin>>,
}

impl State {
    fn new(index: &Index, settings: &Settings, out: &Translation) -> Self {
        Self {
            index: index.clone(),
            settings: settings.clone(),
            gateways: out.report.gateways.clone(),
            listener_sets: out.report.listener_sets.clone(),
            entries: HashMap::new(),
            dependents: HashMap::new(),
            on_listener: HashMap::new(),
            effective: HashMap::new(),
            resolved: BTreeSet::new(),
            reports: imbl::OrdMap::new(),
            models: imbl::OrdMap::new(),
            counts: HashMap::new(),
            plugins: BTreeMap::new(),
        }
    }

    /// The routes whose outcome may differ from the cached one, given the new index and the
    /// parents' new reports.
    fn dirty(&self, index: &Index, out: &Translation) -> BTreeSet<RouteKey> {
        let previous = &self.index;
        let mut dirty = BTreeSet::new();
        for (kind, route_kind) in
            [(Kind::HttpRoute, RouteKind::Http), (Kind::GrpcRoute, RouteKind::Grpc)]
        {
            dirty.extend(index.changed(previous, kind).into_iter().map(|k| (route_kind, k)));
        }
        let mut deps: Vec<Dep> = Vec::new();
        for key in index.changed(previous, Kind::Service) {
            deps.push(Dep::Service(key));
        }
        for (ns, name) in index.changed(previous, Kind::EndpointSlice) {
            let key = (ns.clone(), name);
            for ix in [previous, index] {
                let service = ix
                    .endpoint_slices
                    .get(&key)
                    .and_then(|s| s.metadata.labels.as_ref())
                    .and_then(|l| l.get(SERVICE_NAME_LABEL));
                if let Some(service) = service {
                    deps.push(Dep::Service((ns.clone(), service.clone())));
                }
            }
        }
        for kind in [Kind::ReferenceGrant, Kind::BackendTlsPolicy] {
            deps.extend(
                index.changed(previous, kind).into_iter().map(|(ns, _)| Dep::BackendNamespace(ns)),
            );
        }
        deps.extend(
            index
                .changed(previous, Kind::Namespace)
                .into_iter()
                .map(|(_, name)| Dep::Namespace(name)),
        );
        deps.extend(
            index.changed(previous, Kind::WasmPlugin).into_iter().map(|(ns, _)| Dep::Namespace(ns)),
        );
        // Parents: changed objects, and changed reports (which also reflect LB-IPAM).
        let mut parents: BTreeSet<ObjectId> = BTreeSet::new();
        for (ns, name) in index.changed(previous, Kind::Gateway) {
            parents.insert(ObjectId::new("Gateway", ns, name));
        }
        for (ns, name) in index.changed(previous, Kind::ListenerSet) {
            parents.insert(ObjectId::new("ListenerSet", ns, name));
        }
        changed_reports(&self.gateways, &out.report.gateways, &mut parents);
        changed_reports(&self.listener_sets, &out.report.listener_sets, &mut parents);
        // A ListenerSet's routes read its Gateway too (its listeners, its client certificate).
        let sets = self.listener_sets.iter().chain(&out.report.listener_sets);
        let children: Vec<ObjectId> =
            sets.filter(|(_, s)| parents.contains(&s.parent)).map(|(id, _)| id.clone()).collect();
        parents.extend(children);
        deps.extend(parents.into_iter().map(Dep::Parent));
        for dep in &deps {
            if let Some(routes) = self.dependents.get(dep) {
                dirty.extend(routes.iter().cloned());
            }
        }
        dirty
    }

    /// Replaces a route's cached outcome (and what it depends on).
    fn set_entry(&mut self, key: &RouteKey, entry: Option<Entry>) {
        if let Some(old) = self.entries.remove(key) {
            for dep in old.deps {
                if let Some(routes) = self.dependents.get_mut(&dep) {
                    routes.remove(key);
                    if routes.is_empty() {
                        self.dependents.remove(&dep);
                    }
                }
            }
            if let Some(outcome) = &old.outcome {
                for listener in accepted_listeners(outcome) {
                    if let Some(sets) = self.on_listener.get_mut(listener) {
                        sets[slot(key.0)].remove(&key.1);
                        if sets.iter().all(BTreeSet::is_empty) {
                            self.on_listener.remove(listener);
                        }
                    }
                }
            }
        }
        let Some(entry) = entry else { return };
        for dep in &entry.deps {
            self.dependents.entry(dep.clone()).or_default().insert(key.clone());
        }
        if let Some(outcome) = &entry.outcome {
            for listener in accepted_listeners(outcome) {
                self.on_listener.entry(listener.clone()).or_default()[slot(key.0)]
                    .insert(key.1.clone());
            }
        }
        self.entries.insert(key.clone(), entry);
    }

    /// Takes a route's contribution out of the assembled parts.
    fn remove_effective(&mut self, key: &RouteKey) {
        let Some(outcome) = self.effective.remove(key) else { return };
        for counted in &outcome.counted {
            if let Some(n) = self.counts.get_mut(counted) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(counted);
                }
            }
        }
        self.reports.remove(&outcome.id);
        self.models.remove(key);
        self.plugins.remove(key);
    }

    /// Adds a route's contribution to the assembled parts.
    fn add_effective(&mut self, key: &RouteKey, outcome: Arc<RouteOutcome>) {
        for counted in &outcome.counted {
            *self.counts.entry(counted.clone()).or_default() += 1;
        }
        self.reports.insert(outcome.id.clone(), outcome.report.clone());
        if let Some(model) = &outcome.model {
            self.models.insert(key.clone(), model.clone());
        }
        if !outcome.plugins.is_empty() {
            self.plugins.insert(key.clone(), outcome.plugins.clone());
        }
        self.effective.insert(key.clone(), outcome);
    }
}

fn slot(kind: RouteKind) -> usize {
    match kind {
        RouteKind::Http => 0,
        RouteKind::Grpc => 1,
    }
}

/// The listeners an outcome is accepted on, before conflicts.
fn accepted_listeners(outcome: &RouteOutcome) -> impl Iterator<Item = &ListenerId> {
    outcome.report.parents.iter().filter(|p| p.accepted.is_ok()).flat_map(|p| &p.listeners)
}

/// Adds to `out` the ids whose report differs between `before` and `after` (or is in one only).
fn changed_reports<R: PartialEq>(
    before: &BTreeMap<ObjectId, R>,
    after: &BTreeMap<ObjectId, R>,
    out: &mut BTreeSet<ObjectId>,
) {
    for (id, report) in before {
        if after.get(id) != Some(report) {
            out.insert(id.clone());
        }
    }
    for id in after.keys() {
        if !before.contains_key(id) {
            out.insert(id.clone());
        }
    }
}

/// What a route reads besides itself, from its spec.
fn deps(route: RouteRef<'_>) -> Vec<Dep> {
    let ns = route.namespace();
    let mut deps = vec![Dep::Namespace(ns.to_owned())];
    for p in route.parent_refs() {
        if p.group == GROUP {
            let parent_ns = p.namespace.as_deref().unwrap_or(ns);
            deps.push(Dep::Parent(ObjectId::new(p.kind.clone(), parent_ns, p.name.clone())));
        }
    }
    let mut backend = |namespace: Option<&String>, name: &str| {
        let target = namespace.map_or(ns, String::as_str);
        deps.push(Dep::Service((target.to_owned(), name.to_owned())));
        deps.push(Dep::BackendNamespace(target.to_owned()));
    };
    let mirrors = |filters: &[RouteFilter], backend: &mut dyn FnMut(Option<&String>, &str)| {
        for m in filters.iter().filter_map(|f| f.request_mirror.as_ref()) {
            backend(m.backend_ref.namespace.as_ref(), &m.backend_ref.name);
        }
    };
    let rules: Vec<(&[RouteFilter], &[crate::types::BackendRef])> = match route {
        RouteRef::Http(r) => {
            r.spec.rules.iter().map(|r| (&r.filters[..], &r.backend_refs[..])).collect()
        }
        RouteRef::Grpc(r) => {
            r.spec.rules.iter().map(|r| (&r.filters[..], &r.backend_refs[..])).collect()
        }
    };
    for (filters, refs) in rules {
        mirrors(filters, &mut backend);
        for r in refs {
            backend(r.namespace.as_ref(), &r.name);
            mirrors(&r.filters, &mut backend);
        }
    }
    deps.sort();
    deps.dedup();
    deps
}

/// Translates like [`super::translate_with_addresses`], retranslating only the routes that
/// depend on what changed since the last call.
#[derive(Debug, Default)]
pub struct Translator {
    state: Option<State>,
    /// Routes translated anew by the last call (the others came from the cache).
    translated: usize,
}

impl Translator {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes translated anew (not taken from the cache) by the last call.
    pub fn last_translated(&self) -> usize {
        self.translated
    }

    /// The translation of `index`; equal to [`super::translate_with_addresses`] of the same
    /// inputs.
    pub fn translate(
        &mut self,
        index: &Index,
        settings: &Settings,
        allocation: Option<&gatehouse_ipam::Allocation>,
    ) -> Translation {
        let mut out = super::translate_gateways(index, settings, allocation);
        let incremental = self.state.as_ref().is_some_and(|state| {
            state.settings == *settings
                && [Kind::GatewayClass, Kind::Secret, Kind::ConfigMap, Kind::Node]
                    .iter()
                    .all(|kind| index.changed(&state.index, *kind).is_empty())
        });
        let dirty: BTreeSet<RouteKey> = match self.state.as_ref() {
            Some(state) if incremental => state.dirty(index, &out),
            _ => {
                self.state = Some(State::new(index, settings, &out));
                let http = index.http_routes.keys().map(|k| (RouteKind::Http, k.clone()));
                let grpc = index.grpc_routes.keys().map(|k| (RouteKind::Grpc, k.clone()));
                http.chain(grpc).collect()
            }
        };
        let Some(state) = self.state.as_mut() else { return out };
        self.translated = 0;
        let parents = &out.report;
        for key in &dirty {
            let route = match key.0 {
                RouteKind::Http => index.http_routes.get(&key.1).map(|r| RouteRef::Http(r)),
                RouteKind::Grpc => index.grpc_routes.get(&key.1).map(|r| RouteRef::Grpc(r)),
            };
            let entry = route.map(|route| {
                self.translated += 1;
                let outcome = super::route_outcome(index, settings, route, parents).map(Arc::new);
                Entry { outcome, deps: deps(route) }
            });
            state.set_entry(key, entry);
        }

        // Conflicts between kinds: only where both kinds are accepted on one listener.
        let mut candidates: BTreeSet<RouteKey> = BTreeSet::new();
        for [http, grpc] in state.on_listener.values() {
            if !http.is_empty() && !grpc.is_empty() {
                candidates.extend(http.iter().map(|k| (RouteKind::Http, k.clone())));
                candidates.extend(grpc.iter().map(|k| (RouteKind::Grpc, k.clone())));
            }
        }
        let mut resolved: HashMap<RouteKey, Arc<RouteOutcome>> = HashMap::new();
        if !candidates.is_empty() {
            let mut outcomes: Vec<RouteOutcome> = candidates
                .iter()
                .filter_map(|k| state.entries.get(k)?.outcome.as_deref().cloned())
                .collect();
            super::conflicts::resolve(&mut outcomes, &parents.gateways);
            for (key, outcome) in candidates.iter().zip(outcomes) {
                resolved.insert(key.clone(), Arc::new(outcome));
            }
        }
        let refresh: BTreeSet<RouteKey> =
            dirty.iter().chain(&state.resolved).chain(&candidates).cloned().collect();
        for key in &refresh {
            let new = resolved
                .remove(key)
                .or_else(|| state.entries.get(key).and_then(|e| e.outcome.clone()));
            let unchanged = match (state.effective.get(key), &new) {
                (Some(old), Some(new)) => Arc::ptr_eq(old, new) || **old == **new,
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                continue;
            }
            state.remove_effective(key);
            if let Some(new) = new {
                state.add_effective(key, new);
            }
        }
        state.resolved = candidates;

        state.index = index.clone();
        state.gateways = out.report.gateways.clone();
        state.listener_sets = out.report.listener_sets.clone();
        assemble(state, &mut out);
        super::l4_routes::add(index, settings, &mut out);
        out
    }
}

/// The translation's route parts from the assembled state: shared, not copied, except the
/// list of model routes (pointers).
fn assemble(state: &State, out: &mut Translation) {
    for ((parent, i), n) in &state.counts {
        let listeners = match parent.kind.as_str() {
            "ListenerSet" => out.report.listener_sets.get_mut(parent).map(|s| &mut s.listeners),
            _ => out.report.gateways.get_mut(parent).map(|g| &mut g.listeners),
        };
        if let Some(listener) = listeners.and_then(|l| l.get_mut(*i)) {
            listener.attached_routes += n;
        }
    }
    out.desired.http_routes = state.models.values().cloned().collect();
    for plugin in state.plugins.values().flatten() {
        if out.desired.wasm_plugins.iter().all(|p| p.name != plugin.name) {
            out.desired.wasm_plugins.push(plugin.clone());
        }
    }
    out.report.routes = state.reports.clone();
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::fixtures::*;
    use crate::object::Object;
    use crate::types::{FromNamespaces, ListenersFrom};

    /// A small deterministic generator (xorshift): the edit sequences are random but the same
    /// on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn settings() -> Settings {
        Settings {
            controller_name: CONTROLLER.into(),
            default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            backend_addressing: Default::default(),
            wasm_module_dir: None,
        }
    }

    const NAMESPACES: [&str; 3] = ["infra", "team-a", "team-b"];
    const SERVICES: [&str; 3] = ["one", "two", "three"];

    /// One random edit of any kind the translation reads.
    fn edit(rng: &mut Rng, index: &mut Index) {
        let ns = NAMESPACES[rng.below(NAMESPACES.len())];
        let svc = SERVICES[rng.below(SERVICES.len())];
        match rng.below(18) {
            0..=4 => {
                let name = format!("r{}", rng.below(8));
                let gateway = if rng.below(4) == 0 { "other" } else { "web" };
                let host = ["a.example.test", "*.example.test", "b.example.test"][rng.below(3)];
                let target_ns = [None, Some("infra")][rng.below(2)];
                let port = [Some(80), Some(8080), None][rng.below(3)];
                let parent_ref = match rng.below(4) {
                    0 => set_parent(ns, "ls", [None, Some("one")][rng.below(2)]),
                    _ => parent(Some("infra"), gateway),
                };
                let mut builder = route(ns, &name)
                    .parent(parent_ref)
                    .rule(rule(vec![backend(target_ns, svc, port, 1)]));
                if rng.below(2) == 0 {
                    builder = builder.hostnames(&[host]);
                }
                index.apply(builder.created(rng.below(3) as i64).build());
            }
            5 => {
                index.delete(Kind::HttpRoute, ns, &format!("r{}", rng.below(8)));
            }
            6 => {
                index.apply(service(ns, svc, &[(None, [80, 8080][rng.below(2)])]));
            }
            7 => {
                let ip = format!("10.0.0.{}", rng.below(4));
                index.apply(endpoint_slice(
                    ns,
                    &format!("{svc}-1"),
                    svc,
                    &[("", 80)],
                    &[(ip.as_str(), None)],
                ));
            }
            8 => {
                let mut http = listener("http", 80, "HTTP");
                if rng.below(2) == 0 {
                    http = with_hostname(http, "a.example.test");
                }
                if rng.below(2) == 0 {
                    http = allow_from(http, FromNamespaces::All, None);
                }
                let alt = listener("alt", [8080, 80][rng.below(2)], "HTTP");
                let web = gateway("infra", "web", "gatehouse", vec![http, alt]);
                let from = [ListenersFrom::None, ListenersFrom::All, ListenersFrom::Same];
                index.apply(Object::Gateway(allow_listeners(web, from[rng.below(3)])));
            }
            9 => {
                index.apply(namespace(ns, &[("env", ["prod", "dev"][rng.below(2)])]));
            }
            10 => {
                let from = ("gateway.networking.k8s.io", "HTTPRoute", ns);
                index.apply(grant("infra", "allow", from, ("", "Service", None)));
            }
            11 => {
                index.delete(Kind::ReferenceGrant, "infra", "allow");
            }
            12 => {
                let one =
                    with_hostname(listener("one", [80, 8081][rng.below(2)], "HTTP"), "ls.test");
                let two = listener("two", 8082, "HTTP");
                let created = rng.below(3) as i64;
                index.apply(listener_set(ns, "ls", ("infra", "web"), created, vec![one, two]));
            }
            13 => {
                index.delete(Kind::ListenerSet, ns, "ls");
            }
            15 | 16 => {
                // A GRPCRoute: hostname conflicts with the HTTPRoutes on shared listeners.
                let host = ["a.example.test", "*.example.test", "g.example.test"][rng.below(3)];
                let hostnames = [format!("['{host}']"), "[]".to_owned()][rng.below(2)].clone();
                let yaml = format!(
                    "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g{}, namespace: {ns}, creationTimestamp: '2026-01-01T00:00:0{}Z'}}\nspec:\n  parentRefs: [{{name: web, namespace: infra}}]\n  hostnames: {hostnames}\n  rules: [{{backendRefs: [{{name: {svc}, port: 80}}]}}]\n",
                    rng.below(3),
                    rng.below(3)
                );
                let loaded = crate::loader::load_str(std::path::Path::new("g.yaml"), &yaml);
                assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
                for object in loaded.objects {
                    index.apply(object);
                }
            }
            17 => {
                index.delete(Kind::GrpcRoute, ns, &format!("g{}", rng.below(3)));
            }
            _ => {
                // An L4 route: the HTTP routes' cached outcomes stay valid.
                let yaml = format!(
                    "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {{name: t{}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: web, namespace: infra}}]\n  rules: [{{backendRefs: [{{name: {svc}, port: 80}}]}}]\n",
                    rng.below(3)
                );
                let loaded = crate::loader::load_str(std::path::Path::new("t.yaml"), &yaml);
                for object in loaded.objects {
                    index.apply(object);
                }
            }
        }
    }

    #[test]
    fn cached_equals_uncached_over_random_edits() {
        for seed in 1..=10u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut index = index([
                gateway_class("gatehouse", CONTROLLER),
                Object::Gateway(gateway(
                    "infra",
                    "web",
                    "gatehouse",
                    vec![listener("http", 80, "HTTP")],
                )),
            ]);
            let mut translator = Translator::new();
            for step in 0..150 {
                for _ in 0..=rng.below(3) {
                    edit(&mut rng, &mut index);
                }
                let cached = translator.translate(&index, &settings(), None);
                let uncached = super::super::translate(&index, &settings());
                assert_eq!(cached, uncached, "seed {seed}, step {step}");
            }
        }
    }

    #[test]
    fn a_changed_route_is_the_only_one_translated_again() {
        let mut objects = vec![
            gateway_class("gatehouse", CONTROLLER),
            Object::Gateway(gateway(
                "infra",
                "web",
                "gatehouse",
                vec![listener("http", 80, "HTTP")],
            )),
            service("infra", "one", &[(None, 80)]),
        ];
        for i in 0..50 {
            let r = route("infra", &format!("r{i}"))
                .parent(parent(None, "web"))
                .rule(rule(vec![backend(None, "one", Some(80), 1)]));
            objects.push(r.build());
        }
        let mut index = index(objects);
        let mut translator = Translator::new();
        translator.translate(&index, &settings(), None);
        assert_eq!(translator.last_translated(), 50);

        let changed = route("infra", "r7")
            .parent(parent(None, "web"))
            .hostnames(&["r7.example.test"])
            .rule(rule(vec![backend(None, "one", Some(80), 1)]));
        index.apply(changed.build());
        let t = translator.translate(&index, &settings(), None);
        assert_eq!(translator.last_translated(), 1);
        assert_eq!(t, super::super::translate(&index, &settings()));

        // A change to anything else starts over.
        index.apply(service("infra", "one", &[(None, 8080)]));
        translator.translate(&index, &settings(), None);
        assert_eq!(translator.last_translated(), 50);
        // And a clone of the index (as a reload takes) is still recognised.
        let copy = index.clone();
        translator.translate(&copy, &settings(), None);
        assert_eq!(translator.last_translated(), 0);
    }

    #[test]
    fn a_service_a_grant_or_a_gateway_retranslates_exactly_its_dependents() {
        let http = || listener("http", 80, "HTTP");
        let mut objects = vec![
            gateway_class("gatehouse", CONTROLLER),
            Object::Gateway(gateway("infra", "web", "gatehouse", vec![http()])),
            Object::Gateway(gateway("infra", "other", "gatehouse", vec![http()])),
            service("team-a", "one", &[(None, 80)]),
            service("infra", "two", &[(None, 80)]),
            service("team-a", "three", &[(None, 80)]),
            service("team-a", "unused", &[(None, 80)]),
        ];
        let mut add = |prefix: &str, n: usize, gw: &str, target: Option<&str>, svc: &str| {
            for i in 0..n {
                let r = route("team-a", &format!("{prefix}{i}"))
                    .parent(parent(Some("infra"), gw))
                    .rule(rule(vec![backend(target, svc, Some(80), 1)]));
                objects.push(r.build());
            }
        };
        add("r", 10, "web", None, "one");
        add("s", 5, "other", Some("infra"), "two");
        add("t", 3, "web", None, "three");
        let mut index = index(objects);
        let mut translator = Translator::new();
        let mut check = |index: &Index, expected: usize, what: &str| {
            let t = translator.translate(index, &settings(), None);
            assert_eq!(translator.last_translated(), expected, "{what}");
            assert_eq!(t, super::super::translate(index, &settings()), "{what}");
        };
        check(&index, 18, "first translation");
        check(&index, 0, "nothing changed");
        index.apply(service("team-a", "one", &[(None, 8080)]));
        check(&index, 10, "Service one: the routes naming it");
        index.apply(endpoint_slice(
            "team-a",
            "three-1",
            "three",
            &[("", 80)],
            &[("10.0.0.3", None)],
        ));
        check(&index, 3, "an EndpointSlice of three: the routes naming three");
        index.apply(service("team-a", "unused", &[(None, 81)]));
        check(&index, 0, "a Service no route names");
        let from = ("gateway.networking.k8s.io", "HTTPRoute", "team-a");
        index.apply(grant("infra", "allow", from, ("", "Service", None)));
        check(&index, 5, "a ReferenceGrant in infra: the routes pointing into infra");
        let wide = allow_from(http(), FromNamespaces::All, None);
        index.apply(Object::Gateway(gateway("infra", "other", "gatehouse", vec![wide])));
        check(&index, 5, "Gateway other: its routes");
        index.delete(Kind::HttpRoute, "team-a", "r3");
        check(&index, 0, "a deleted route: nothing to translate");
        index.apply(namespace("team-a", &[("env", "prod")]));
        check(&index, 17, "the routes' namespace: every route in it");
    }
}
