//! The Gateway API index: a pure reducer over apply/delete/reset, with no I/O.
//!
//! The YAML loader replays `apply` calls into it; a Kubernetes watch will feed the very same
//! calls later, so file mode and cluster mode share one translation path.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::OrdMap;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::object::{Kind, Object, ObjectRef};
use crate::types::{
    BackendTlsPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, ListenerSet, ReferenceGrant,
    TcpRoute, TlsRoute, UdpRoute, WasmPlugin,
};

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Namespace and name.
pub(crate) type Key = (String, String);

/// Every object the translation reads, by kind and namespace/name.
///
/// Objects are shared (`Arc`) in persistent maps: a reload takes a copy of the index while
/// the watches go on updating theirs, and that copy costs O(1), not O(objects); two copies
/// share every node they did not change, so [`Index::changed`] finds what differs between
/// them in time proportional to the change.
#[derive(Clone, Debug, Default)]
pub struct Index {
    pub(crate) gateway_classes: OrdMap<String, Arc<GatewayClass>>,
    pub(crate) gateways: OrdMap<Key, Arc<Gateway>>,
    pub(crate) http_routes: OrdMap<Key, Arc<HttpRoute>>,
    pub(crate) reference_grants: OrdMap<Key, Arc<ReferenceGrant>>,
    pub(crate) namespaces: OrdMap<String, Arc<Namespace>>,
    pub(crate) services: OrdMap<Key, Arc<Service>>,
    pub(crate) endpoint_slices: OrdMap<Key, Arc<EndpointSlice>>,
    pub(crate) secrets: OrdMap<Key, Arc<Secret>>,
    pub(crate) nodes: OrdMap<String, Arc<Node>>,
    pub(crate) wasm_plugins: OrdMap<Key, Arc<WasmPlugin>>,
    pub(crate) listener_sets: OrdMap<Key, Arc<ListenerSet>>,
    pub(crate) tcp_routes: OrdMap<Key, Arc<TcpRoute>>,
    pub(crate) udp_routes: OrdMap<Key, Arc<UdpRoute>>,
    pub(crate) tls_routes: OrdMap<Key, Arc<TlsRoute>>,
    pub(crate) backend_tls_policies: OrdMap<Key, Arc<BackendTlsPolicy>>,
    pub(crate) config_maps: OrdMap<Key, Arc<ConfigMap>>,
    pub(crate) grpc_routes: OrdMap<Key, Arc<GrpcRoute>>,
    /// Per kind, a stamp that changes whenever objects of that kind change (see
    /// [`Index::stamp`]).
    stamps: [u64; Kind::ALL.len()],
}

/// Source of stamps: process-wide, so two indexes (or an index and a diverged clone) never
/// share a stamp unless one is a copy of the other's exact content of that kind.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

fn fresh_stamp() -> u64 {
    NEXT_STAMP.fetch_add(1, Ordering::Relaxed)
}

fn kind_slot(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// Runs `$body` with `$a` bound to the map of `$kind` in `$x`, and `$b` to the same map in
/// `$y` (mutably with `mut`).
macro_rules! kind_maps {
    (ref $kind:expr, $x:ident, $y:ident, |$a:ident, $b:ident| $body:expr) => {
        match $kind {
            Kind::GatewayClass => {
                let ($a, $b) = (&$x.gateway_classes, &$y.gateway_classes);
                $body
            }
            Kind::Gateway => {
                let ($a, $b) = (&$x.gateways, &$y.gateways);
                $body
            }
            Kind::HttpRoute => {
                let ($a, $b) = (&$x.http_routes, &$y.http_routes);
                $body
            }
            Kind::ReferenceGrant => {
                let ($a, $b) = (&$x.reference_grants, &$y.reference_grants);
                $body
            }
            Kind::Namespace => {
                let ($a, $b) = (&$x.namespaces, &$y.namespaces);
                $body
            }
            Kind::Service => {
                let ($a, $b) = (&$x.services, &$y.services);
                $body
            }
            Kind::EndpointSlice => {
                let ($a, $b) = (&$x.endpoint_slices, &$y.endpoint_slices);
                $body
            }
            Kind::Secret => {
                let ($a, $b) = (&$x.secrets, &$y.secrets);
                $body
            }
            Kind::Node => {
                let ($a, $b) = (&$x.nodes, &$y.nodes);
                $body
            }
            Kind::WasmPlugin => {
                let ($a, $b) = (&$x.wasm_plugins, &$y.wasm_plugins);
                $body
            }
            Kind::ListenerSet => {
                let ($a, $b) = (&$x.listener_sets, &$y.listener_sets);
                $body
            }
            Kind::TcpRoute => {
                let ($a, $b) = (&$x.tcp_routes, &$y.tcp_routes);
                $body
            }
            Kind::UdpRoute => {
                let ($a, $b) = (&$x.udp_routes, &$y.udp_routes);
                $body
            }
            Kind::TlsRoute => {
                let ($a, $b) = (&$x.tls_routes, &$y.tls_routes);
                $body
            }
            Kind::BackendTlsPolicy => {
                let ($a, $b) = (&$x.backend_tls_policies, &$y.backend_tls_policies);
                $body
            }
            Kind::ConfigMap => {
                let ($a, $b) = (&$x.config_maps, &$y.config_maps);
                $body
            }
            Kind::GrpcRoute => {
                let ($a, $b) = (&$x.grpc_routes, &$y.grpc_routes);
                $body
            }
        }
    };
    (mut $kind:expr, $x:ident, $y:ident, |$a:ident, $b:ident| $body:expr) => {
        match $kind {
            Kind::GatewayClass => {
                let ($a, $b) = (&$x.gateway_classes, &mut $y.gateway_classes);
                $body
            }
            Kind::Gateway => {
                let ($a, $b) = (&$x.gateways, &mut $y.gateways);
                $body
            }
            Kind::HttpRoute => {
                let ($a, $b) = (&$x.http_routes, &mut $y.http_routes);
                $body
            }
            Kind::ReferenceGrant => {
                let ($a, $b) = (&$x.reference_grants, &mut $y.reference_grants);
                $body
            }
            Kind::Namespace => {
                let ($a, $b) = (&$x.namespaces, &mut $y.namespaces);
                $body
            }
            Kind::Service => {
                let ($a, $b) = (&$x.services, &mut $y.services);
                $body
            }
            Kind::EndpointSlice => {
                let ($a, $b) = (&$x.endpoint_slices, &mut $y.endpoint_slices);
                $body
            }
            Kind::Secret => {
                let ($a, $b) = (&$x.secrets, &mut $y.secrets);
                $body
            }
            Kind::Node => {
                let ($a, $b) = (&$x.nodes, &mut $y.nodes);
                $body
            }
            Kind::WasmPlugin => {
                let ($a, $b) = (&$x.wasm_plugins, &mut $y.wasm_plugins);
                $body
            }
            Kind::ListenerSet => {
                let ($a, $b) = (&$x.listener_sets, &mut $y.listener_sets);
                $body
            }
            Kind::TcpRoute => {
                let ($a, $b) = (&$x.tcp_routes, &mut $y.tcp_routes);
                $body
            }
            Kind::UdpRoute => {
                let ($a, $b) = (&$x.udp_routes, &mut $y.udp_routes);
                $body
            }
            Kind::TlsRoute => {
                let ($a, $b) = (&$x.tls_routes, &mut $y.tls_routes);
                $body
            }
            Kind::BackendTlsPolicy => {
                let ($a, $b) = (&$x.backend_tls_policies, &mut $y.backend_tls_policies);
                $body
            }
            Kind::ConfigMap => {
                let ($a, $b) = (&$x.config_maps, &mut $y.config_maps);
                $body
            }
            Kind::GrpcRoute => {
                let ($a, $b) = (&$x.grpc_routes, &mut $y.grpc_routes);
                $body
            }
        }
    };
}

/// A namespace/name key for either kind of map key (cluster-scoped kinds: empty namespace).
trait AsKey {
    fn as_key(&self) -> Key;
}

impl AsKey for String {
    fn as_key(&self) -> Key {
        (String::new(), self.clone())
    }
}

impl AsKey for Key {
    fn as_key(&self) -> Key {
        self.clone()
    }
}

/// Keys whose value differs between two maps; shared nodes are skipped, so this costs time
/// in proportion to the difference.
fn diff_keys<K: Ord + Clone + AsKey, V: PartialEq>(
    before: &OrdMap<K, Arc<V>>,
    after: &OrdMap<K, Arc<V>>,
) -> Vec<Key> {
    before
        .diff(after)
        .map(|item| match item {
            imbl::ordmap::DiffItem::Add(k, _) | imbl::ordmap::DiffItem::Remove(k, _) => k.as_key(),
            imbl::ordmap::DiffItem::Update { old, .. } => old.0.as_key(),
        })
        .collect()
}

/// After a relist replaced `now`, gives back the `before` object (the same `Arc`) wherever
/// the relisted one is equal: what did not change keeps its identity, so caches keyed by it
/// stay valid.
fn keep_identity<K: Ord + Clone, V: PartialEq>(
    before: &OrdMap<K, Arc<V>>,
    now: &mut OrdMap<K, Arc<V>>,
) {
    let same: Vec<(K, Arc<V>)> = now
        .iter()
        .filter_map(|(k, v)| {
            let old = before.get(k)?;
            (!Arc::ptr_eq(old, v) && old == v).then(|| (k.clone(), old.clone()))
        })
        .collect();
    for (k, v) in same {
        now.insert(k, v);
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one object; returns whether the index changed. Replacing an object
    /// with an equal one changes nothing (a status-only write in the cluster, for instance,
    /// once the source has dropped status and resourceVersion).
    pub fn apply(&mut self, object: Object) -> bool {
        fn put<K: Ord + Clone, V: PartialEq>(
            map: &mut OrdMap<K, Arc<V>>,
            key: K,
            value: V,
        ) -> bool {
            if map.get(&key).is_some_and(|old| **old == value) {
                return false;
            }
            map.insert(key, Arc::new(value));
            true
        }
        let r = object.object_ref();
        let k = key(&r.namespace, &r.name);
        let kind = r.kind;
        let changed = match object {
            Object::GatewayClass(o) => put(&mut self.gateway_classes, r.name, o),
            Object::Gateway(o) => put(&mut self.gateways, k, o),
            Object::HttpRoute(o) => put(&mut self.http_routes, k, o),
            Object::ReferenceGrant(o) => put(&mut self.reference_grants, k, o),
            Object::Namespace(o) => put(&mut self.namespaces, r.name, o),
            Object::Service(o) => put(&mut self.services, k, o),
            Object::EndpointSlice(o) => put(&mut self.endpoint_slices, k, o),
            Object::Secret(o) => put(&mut self.secrets, k, o),
            Object::Node(o) => put(&mut self.nodes, r.name, *o),
            Object::WasmPlugin(o) => put(&mut self.wasm_plugins, k, o),
            Object::ListenerSet(o) => put(&mut self.listener_sets, k, o),
            Object::TcpRoute(o) => put(&mut self.tcp_routes, k, o),
            Object::UdpRoute(o) => put(&mut self.udp_routes, k, o),
            Object::TlsRoute(o) => put(&mut self.tls_routes, k, o),
            Object::BackendTlsPolicy(o) => put(&mut self.backend_tls_policies, k, o),
            Object::ConfigMap(o) => put(&mut self.config_maps, k, o),
            Object::GrpcRoute(o) => put(&mut self.grpc_routes, k, o),
        };
        if changed {
            self.touch(kind);
        }
        changed
    }

    /// A stamp of the objects of `kind`: equal stamps (of this index, a clone or an earlier
    /// state of it) mean the same objects of that kind; a change of any of them gives a new
    /// stamp. Lets the translation reuse what it derived from unchanged kinds.
    pub fn stamp(&self, kind: Kind) -> u64 {
        self.stamps[kind_slot(kind)]
    }

    fn touch(&mut self, kind: Kind) {
        self.stamps[kind_slot(kind)] = fresh_stamp();
    }

    /// Removes one object; returns whether it was there. `namespace` is ignored for
    /// cluster-scoped kinds.
    pub fn delete(&mut self, kind: Kind, namespace: &str, name: &str) -> bool {
        let k = key(namespace, name);
        let removed = match kind {
            Kind::GatewayClass => self.gateway_classes.remove(name).is_some(),
            Kind::Gateway => self.gateways.remove(&k).is_some(),
            Kind::HttpRoute => self.http_routes.remove(&k).is_some(),
            Kind::ReferenceGrant => self.reference_grants.remove(&k).is_some(),
            Kind::Namespace => self.namespaces.remove(name).is_some(),
            Kind::Service => self.services.remove(&k).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(&k).is_some(),
            Kind::Secret => self.secrets.remove(&k).is_some(),
            Kind::Node => self.nodes.remove(name).is_some(),
            Kind::WasmPlugin => self.wasm_plugins.remove(&k).is_some(),
            Kind::ListenerSet => self.listener_sets.remove(&k).is_some(),
            Kind::TcpRoute => self.tcp_routes.remove(&k).is_some(),
            Kind::UdpRoute => self.udp_routes.remove(&k).is_some(),
            Kind::TlsRoute => self.tls_routes.remove(&k).is_some(),
            Kind::BackendTlsPolicy => self.backend_tls_policies.remove(&k).is_some(),
            Kind::ConfigMap => self.config_maps.remove(&k).is_some(),
            Kind::GrpcRoute => self.grpc_routes.remove(&k).is_some(),
        };
        if removed {
            self.touch(kind);
        }
        removed
    }

    /// Replaces the whole content (a full relist, or a reload of every manifest file).
    pub fn reset(&mut self, objects: impl IntoIterator<Item = Object>) {
        *self = Self::default();
        for kind in Kind::ALL {
            self.touch(kind);
        }
        for object in objects {
            self.apply(object);
        }
    }

    /// Replaces every object of one kind (a relist by that kind's watch); objects of other
    /// kinds in `objects` are ignored.
    pub fn reset_kind(&mut self, kind: Kind, objects: impl IntoIterator<Item = Object>) {
        let before = self.clone();
        match kind {
            Kind::GatewayClass => self.gateway_classes.clear(),
            Kind::Gateway => self.gateways.clear(),
            Kind::HttpRoute => self.http_routes.clear(),
            Kind::ReferenceGrant => self.reference_grants.clear(),
            Kind::Namespace => self.namespaces.clear(),
            Kind::Service => self.services.clear(),
            Kind::EndpointSlice => self.endpoint_slices.clear(),
            Kind::Secret => self.secrets.clear(),
            Kind::Node => self.nodes.clear(),
            Kind::WasmPlugin => self.wasm_plugins.clear(),
            Kind::ListenerSet => self.listener_sets.clear(),
            Kind::TcpRoute => self.tcp_routes.clear(),
            Kind::UdpRoute => self.udp_routes.clear(),
            Kind::TlsRoute => self.tls_routes.clear(),
            Kind::BackendTlsPolicy => self.backend_tls_policies.clear(),
            Kind::ConfigMap => self.config_maps.clear(),
            Kind::GrpcRoute => self.grpc_routes.clear(),
        }
        self.touch(kind);
        for object in objects.into_iter().filter(|o| o.kind() == kind) {
            self.apply(object);
        }
        kind_maps!(mut kind, before, self, |b, n| keep_identity(b, n));
    }

    /// The objects of `kind` that differ between `previous` (an earlier state or a copy of
    /// this index) and this one, added, replaced or removed, by namespace and name (an empty
    /// namespace for cluster-scoped kinds). Costs time in proportion to the difference when
    /// the two share their history.
    pub fn changed(&self, previous: &Index, kind: Kind) -> Vec<(String, String)> {
        kind_maps!(ref kind, previous, self, |b, n| diff_keys(b, n))
    }

    /// Replaces every object of one namespaced kind in one namespace (a relist by a watch
    /// restricted to that namespace); other namespaces keep theirs. For a cluster-scoped kind
    /// this is [`Index::reset_kind`].
    pub fn reset_kind_in(
        &mut self,
        kind: Kind,
        namespace: &str,
        objects: impl IntoIterator<Item = Object>,
    ) {
        let before = self.clone();
        fn keep_others<V: Clone>(map: &mut OrdMap<Key, V>, namespace: &str) {
            let theirs: Vec<Key> = map
                .range(key(namespace, "")..)
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|(k, _)| k.clone())
                .collect();
            for k in theirs {
                map.remove(&k);
            }
        }
        match kind {
            Kind::GatewayClass | Kind::Namespace | Kind::Node => {
                return self.reset_kind(kind, objects);
            }
            Kind::Gateway => keep_others(&mut self.gateways, namespace),
            Kind::HttpRoute => keep_others(&mut self.http_routes, namespace),
            Kind::ReferenceGrant => keep_others(&mut self.reference_grants, namespace),
            Kind::Service => keep_others(&mut self.services, namespace),
            Kind::EndpointSlice => keep_others(&mut self.endpoint_slices, namespace),
            Kind::Secret => keep_others(&mut self.secrets, namespace),
            Kind::WasmPlugin => keep_others(&mut self.wasm_plugins, namespace),
            Kind::ListenerSet => keep_others(&mut self.listener_sets, namespace),
            Kind::TcpRoute => keep_others(&mut self.tcp_routes, namespace),
            Kind::UdpRoute => keep_others(&mut self.udp_routes, namespace),
            Kind::TlsRoute => keep_others(&mut self.tls_routes, namespace),
            Kind::BackendTlsPolicy => keep_others(&mut self.backend_tls_policies, namespace),
            Kind::ConfigMap => keep_others(&mut self.config_maps, namespace),
            Kind::GrpcRoute => keep_others(&mut self.grpc_routes, namespace),
        }
        self.touch(kind);
        for object in objects
            .into_iter()
            .filter(|o| o.kind() == kind && o.metadata().namespace.as_deref() == Some(namespace))
        {
            self.apply(object);
        }
        kind_maps!(mut kind, before, self, |b, n| keep_identity(b, n));
    }

    /// Whether an object is in the index.
    pub fn contains(&self, r: &ObjectRef) -> bool {
        let k = key(&r.namespace, &r.name);
        match r.kind {
            Kind::GatewayClass => self.gateway_classes.contains_key(&r.name),
            Kind::Gateway => self.gateways.contains_key(&k),
            Kind::HttpRoute => self.http_routes.contains_key(&k),
            Kind::ReferenceGrant => self.reference_grants.contains_key(&k),
            Kind::Namespace => self.namespaces.contains_key(&r.name),
            Kind::Service => self.services.contains_key(&k),
            Kind::EndpointSlice => self.endpoint_slices.contains_key(&k),
            Kind::Secret => self.secrets.contains_key(&k),
            Kind::Node => self.nodes.contains_key(&r.name),
            Kind::WasmPlugin => self.wasm_plugins.contains_key(&k),
            Kind::ListenerSet => self.listener_sets.contains_key(&k),
            Kind::TcpRoute => self.tcp_routes.contains_key(&k),
            Kind::UdpRoute => self.udp_routes.contains_key(&k),
            Kind::TlsRoute => self.tls_routes.contains_key(&k),
            Kind::BackendTlsPolicy => self.backend_tls_policies.contains_key(&k),
            Kind::ConfigMap => self.config_maps.contains_key(&k),
            Kind::GrpcRoute => self.grpc_routes.contains_key(&k),
        }
    }

    /// Number of objects held.
    pub fn len(&self) -> usize {
        self.gateway_classes.len()
            + self.gateways.len()
            + self.http_routes.len()
            + self.reference_grants.len()
            + self.namespaces.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
            + self.nodes.len()
            + self.wasm_plugins.len()
            + self.listener_sets.len()
            + self.tcp_routes.len()
            + self.udp_routes.len()
            + self.tls_routes.len()
            + self.backend_tls_policies.len()
            + self.config_maps.len()
            + self.grpc_routes.len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every Gateway, by namespace and name (read by the ACME wiring for cert-manager
    /// annotations).
    pub fn gateways(&self) -> impl Iterator<Item = &Gateway> {
        self.gateways.values().map(|g| &**g)
    }

    /// The GatewayClass named `name`, if present.
    pub fn gateway_class(&self, name: &str) -> Option<&GatewayClass> {
        self.gateway_classes.get(name).map(|c| &**c)
    }

    /// Labels of a namespace. Every namespace carries `kubernetes.io/metadata.name`; one that
    /// is referenced but not declared exists with that label only.
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(namespace)
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned());
        labels
    }

    /// Namespaces some Gateway or ListenerSet listener's `certificateRefs` point into (the
    /// owner's own when the ref names none), whatever the class and whether or not a ReferenceGrant allows it:
    /// where a source must look for Secrets so the translation can judge every ref.
    pub fn certificate_namespaces(&self) -> BTreeSet<String> {
        let mut namespaces = BTreeSet::new();
        let gateways = self.gateways.iter().map(|((ns, _), g)| (ns, &g.spec.listeners));
        let sets = self.listener_sets.iter().map(|((ns, _), s)| (ns, &s.spec.listeners));
        for (owner_ns, listeners) in gateways.chain(sets) {
            let refs = listeners
                .iter()
                .filter_map(|l| l.tls.as_ref())
                .flat_map(|tls| &tls.certificate_refs)
                .filter(|r| (r.group.is_empty() || r.group == "core") && r.kind == "Secret");
            for r in refs {
                namespaces.insert(r.namespace.clone().unwrap_or_else(|| owner_ns.clone()));
            }
        }
        namespaces
    }

    /// Namespaces holding ConfigMaps of CA certificates something points at: those of
    /// BackendTLSPolicies naming a ConfigMap (always their own), and those Gateways'
    /// frontend validation refs point into (the Gateway's own when the ref names none).
    pub fn ca_config_map_namespaces(&self) -> BTreeSet<String> {
        let config_map =
            |group: &str, kind: &str| (group.is_empty() || group == "core") && kind == "ConfigMap";
        let mut namespaces = BTreeSet::new();
        for ((ns, _), policy) in &self.backend_tls_policies {
            if policy
                .spec
                .validation
                .ca_certificate_refs
                .iter()
                .any(|r| config_map(&r.group, &r.kind))
            {
                namespaces.insert(ns.clone());
            }
        }
        for ((gateway_ns, _), gateway) in &self.gateways {
            let Some(frontend) = gateway.spec.tls.as_ref().and_then(|t| t.frontend.as_ref()) else {
                continue;
            };
            let validations = std::iter::once(&frontend.default)
                .chain(frontend.per_port.iter().map(|p| &p.tls))
                .filter_map(|t| t.validation.as_ref());
            for r in validations.flat_map(|v| &v.ca_certificate_refs) {
                if config_map(&r.group, &r.kind) {
                    namespaces.insert(r.namespace.clone().unwrap_or_else(|| gateway_ns.clone()));
                }
            }
        }
        namespaces
    }

    /// The EndpointSlices of a Service (by the `kubernetes.io/service-name` label).
    pub(crate) fn endpoint_slices_of<'a>(
        &'a self,
        namespace: &'a str,
        service: &'a str,
    ) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        self.endpoint_slices
            .range(key(namespace, "")..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(|(_, slice)| &**slice)
            .filter(move |slice| {
                slice
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .is_some_and(|s| s == service)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn apply_replaces_and_delete_removes() {
        let mut index = Index::new();
        assert!(index.apply(namespace("team", &[("env", "prod")])));
        assert!(index.apply(namespace("team", &[("env", "dev")])));
        assert!(
            !index.apply(namespace("team", &[("env", "dev")])),
            "an equal object changes nothing"
        );
        assert_eq!(index.len(), 1);
        assert_eq!(index.namespace_labels("team")["env"], "dev");
        assert!(index.delete(Kind::Namespace, "", "team"));
        assert!(!index.delete(Kind::Namespace, "", "team"));
        assert!(index.is_empty());
    }

    #[test]
    fn namespaces_carry_their_name_label_even_when_undeclared() {
        let mut index = Index::new();
        index.apply(namespace("team", &[("env", "prod")]));
        let labels = index.namespace_labels("team");
        assert_eq!(labels[NAMESPACE_NAME_LABEL], "team");
        assert_eq!(labels["env"], "prod");
        let undeclared = index.namespace_labels("ghost");
        assert_eq!(undeclared.len(), 1);
        assert_eq!(undeclared[NAMESPACE_NAME_LABEL], "ghost");
    }

    #[test]
    fn reset_replaces_everything_and_reset_kind_only_its_kind() {
        let mut index = Index::new();
        index.apply(namespace("a", &[]));
        index.apply(service("a", "svc", &[(None, 80)]));
        index.reset([namespace("b", &[])]);
        assert_eq!(index.len(), 1);
        assert!(index.contains(&ObjectRef::new(Kind::Namespace, "", "b")));

        index.apply(service("b", "svc", &[(None, 80)]));
        index.reset_kind(Kind::Namespace, [namespace("c", &[]), service("x", "y", &[])]);
        assert!(index.contains(&ObjectRef::new(Kind::Namespace, "", "c")));
        assert!(!index.contains(&ObjectRef::new(Kind::Namespace, "", "b")));
        assert!(index.contains(&ObjectRef::new(Kind::Service, "b", "svc")));
        assert!(!index.contains(&ObjectRef::new(Kind::Service, "x", "y")));
    }

    #[test]
    fn reset_kind_in_replaces_one_namespace_of_one_kind() {
        let mut index = Index::new();
        index.apply(service("a", "old", &[(None, 80)]));
        index.apply(service("b", "kept", &[(None, 80)]));
        index.apply(namespace("a", &[]));
        index.reset_kind_in(
            Kind::Service,
            "a",
            [service("a", "new", &[(None, 80)]), service("b", "ignored", &[(None, 80)])],
        );
        let svc = |ns: &str, name: &str| ObjectRef::new(Kind::Service, ns, name);
        assert!(index.contains(&svc("a", "new")));
        assert!(!index.contains(&svc("a", "old")));
        assert!(index.contains(&svc("b", "kept")));
        assert!(!index.contains(&svc("b", "ignored")));
        assert!(index.contains(&ObjectRef::new(Kind::Namespace, "", "a")));
    }

    #[test]
    fn certificate_namespaces_are_where_listeners_point() {
        let mut index = Index::new();
        assert!(index.certificate_namespaces().is_empty());
        let listeners = vec![
            listener("http", 80, "HTTP"),
            https_listener("own", 443, &[(None, "own-cert")]),
            https_listener("shared", 8443, &[(Some("certs"), "wildcard"), (Some("certs"), "b")]),
        ];
        index.apply(Object::Gateway(gateway("edge", "web", "any", listeners)));
        index.apply(Object::Gateway(gateway(
            "plain",
            "web",
            "any",
            vec![listener("h", 80, "HTTP")],
        )));
        let namespaces: Vec<String> = index.certificate_namespaces().into_iter().collect();
        assert_eq!(namespaces, ["certs", "edge"]);
    }

    #[test]
    fn endpoint_slices_are_found_by_label_in_the_namespace() {
        let mut index = Index::new();
        index.apply(endpoint_slice("a", "s-1", "svc", &[("", 80)], &[("10.0.0.1", None)]));
        index.apply(endpoint_slice("a", "s-2", "svc", &[("", 80)], &[("10.0.0.2", None)]));
        index.apply(endpoint_slice("a", "o-1", "other", &[("", 80)], &[("10.0.0.3", None)]));
        index.apply(endpoint_slice("b", "s-1", "svc", &[("", 80)], &[("10.0.0.4", None)]));
        let names: Vec<_> = index
            .endpoint_slices_of("a", "svc")
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["s-1", "s-2"]);
    }
}
