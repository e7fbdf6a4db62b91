//! Watch events → the Gateway API index: a pure reducer, tested with hand-built events.
//!
//! A relist (the watcher's `Init`, `InitApply`…, `InitDone`) is buffered and applied at
//! `InitDone` with one `reset_kind`, so the index never holds half a relist of a kind.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_gateway::{Index, JsonError, Kind, Object, ObjectRef};
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::Value;

use crate::resources::Scope;

/// What the cluster declares, as far as the watches have seen it.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    /// The objects, in the same index the file provider fills.
    pub index: Index,
    /// Objects the cluster holds that could not be read, with why. They are not in the index.
    pub rejected: BTreeMap<ObjectRef, String>,
    /// Watches that have not completed their first list yet.
    pub(crate) unsynced: BTreeSet<Scope>,
    /// Set until the Secret watches the listeners need are known (they can only be chosen
    /// once the Gateways are listed) and added to `unsynced`.
    pub(crate) secrets_pending: bool,
}

impl ClusterState {
    /// A state waiting for the first list of every scope.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self { unsynced: scopes.into_iter().collect(), ..Self::default() }
    }

    /// As [`ClusterState::new`], and not synced until the Secret watches are chosen
    /// ([`ClusterState::choose_secret_namespaces`]).
    pub fn awaiting_secrets(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self { secrets_pending: true, ..Self::new(scopes) }
    }

    /// Whether every watch has listed at least once: before that the index is partial and
    /// translating it would route (and report) from half a cluster.
    pub fn synced(&self) -> bool {
        self.unsynced.is_empty() && !self.secrets_pending
    }

    /// Whether every watch but the Secret and ConfigMap watches has listed once: the
    /// Gateways (and BackendTLSPolicies) are known.
    pub fn gateways_synced(&self) -> bool {
        self.unsynced.iter().all(|scope| matches!(scope.kind, Kind::Secret | Kind::ConfigMap))
    }

    /// Records a new set of Secret watches (pure; the caller starts and stops the watches):
    /// Secrets of namespaces no longer watched leave the index; the first set chosen must list
    /// before the state is synced, later additions do not hold back reloads (an unreachable
    /// namespace must not freeze every other change). Returns whether the index changed.
    pub fn choose_secret_namespaces(
        &mut self,
        added: &BTreeSet<String>,
        removed: &BTreeSet<String>,
    ) -> bool {
        let scopes = |set: &BTreeSet<String>| -> BTreeSet<Scope> {
            set.iter().map(|ns| Scope { kind: Kind::Secret, namespace: Some(ns.clone()) }).collect()
        };
        self.choose_scopes(&scopes(added), &scopes(removed))
    }

    /// [`ClusterState::choose_secret_namespaces`] for per-namespace watches of any kind
    /// (Secrets and the ConfigMaps of CA certificates).
    pub fn choose_scopes(&mut self, added: &BTreeSet<Scope>, removed: &BTreeSet<Scope>) -> bool {
        let mut changed = false;
        for scope in removed {
            let Some(ns) = scope.namespace.as_deref() else { continue };
            let before = self.index.len();
            self.index.reset_kind_in(scope.kind, ns, []);
            changed |= self.index.len() != before;
            self.rejected.retain(|r, _| r.kind != scope.kind || r.namespace != ns);
            self.unsynced.remove(scope);
        }
        if self.secrets_pending {
            self.unsynced.extend(added.iter().cloned());
            self.secrets_pending = false;
            changed = true;
        }
        changed
    }
}

/// One watch's progress through a relist.
#[derive(Debug)]
pub struct WatchReducer {
    pub scope: Scope,
    /// Objects (and rejections) of a relist in progress, applied at `InitDone`.
    relist: Option<Relist>,
}

#[derive(Debug, Default)]
struct Relist {
    objects: Vec<Object>,
    rejected: Vec<(ObjectRef, String)>,
}

impl WatchReducer {
    pub fn new(scope: Scope) -> Self {
        Self { scope, relist: None }
    }

    /// Applies one watcher event; returns whether the state changed.
    pub fn apply(&mut self, state: &mut ClusterState, event: Event<DynamicObject>) -> bool {
        let kind = self.scope.kind;
        match event {
            Event::Init => {
                self.relist = Some(Relist::default());
                false
            }
            Event::InitApply(object) => {
                let relist = self.relist.get_or_insert_with(Relist::default);
                match convert(kind, object) {
                    Ok(object) => relist.objects.push(object),
                    Err(rejection) => relist.rejected.push(rejection),
                }
                false
            }
            Event::InitDone => {
                let relist = self.relist.take().unwrap_or_default();
                match &self.scope.namespace {
                    None => state.index.reset_kind(kind, relist.objects),
                    Some(ns) => state.index.reset_kind_in(kind, ns, relist.objects),
                }
                let namespace = self.scope.namespace.as_deref();
                state
                    .rejected
                    .retain(|r, _| r.kind != kind || namespace.is_some_and(|ns| r.namespace != ns));
                state.rejected.extend(relist.rejected);
                state.unsynced.remove(&self.scope);
                true
            }
            Event::Apply(object) => match convert(kind, object) {
                Ok(object) => {
                    let was_rejected = state.rejected.remove(&object.object_ref()).is_some();
                    // An equal object (our own status write comes back as MODIFIED, with only
                    // status and resourceVersion changed) changes nothing: no reload follows.
                    state.index.apply(object) || was_rejected
                }
                Err((r, why)) => {
                    // The last readable version is not kept: the cluster no longer declares it.
                    state.index.delete(kind, &r.namespace, &r.name);
                    state.rejected.insert(r, why);
                    true
                }
            },
            Event::Delete(object) => {
                let r = object_ref(kind, &object);
                let rejected = state.rejected.remove(&r).is_some();
                state.index.delete(kind, &r.namespace, &r.name) || rejected
            }
        }
    }
}

fn object_ref(kind: Kind, object: &DynamicObject) -> ObjectRef {
    ObjectRef::new(
        kind,
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Converts through the gateway crate's JSON conversion, the one YAML documents go through.
fn convert(kind: Kind, object: DynamicObject) -> Result<Object, (ObjectRef, String)> {
    let r = object_ref(kind, &object);
    let resource = crate::resources::api_resource(kind);
    let mut value = serde_json::to_value(&object).map_err(|e| (r.clone(), e.to_string()))?;
    if let Value::Object(map) = &mut value {
        // List items carry no apiVersion and kind; the watch says what they are.
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("managedFields");
            // Bumped by every write, status writes included; the translation never reads it,
            // and without it an unchanged object compares equal in the index.
            meta.remove("resourceVersion");
        }
        // Our own status is output, never input; the gateway types would only ignore it. The
        // `status.addresses` of a Gateway without `spec.addresses` is the exception: they were
        // chosen here (LB-IPAM's record of what it handed out), read back so they survive
        // restarts and leader changes. They only change when the choice does, so status
        // writes still trigger no reload (but the first one, once).
        if resource.group == gatehouse_gateway::types::GROUP {
            let chosen = kind == Kind::Gateway
                && map
                    .get("spec")
                    .and_then(|spec| spec.get("addresses"))
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            let addresses = map.remove("status").and_then(|mut status| {
                let addresses = status.get_mut("addresses")?.take();
                chosen.then(|| serde_json::json!({"addresses": addresses}))
            });
            if let Some(addresses) = addresses {
                map.insert("status".into(), addresses);
            }
        }
    }
    gatehouse_gateway::from_json(value).map_err(|e| {
        let why = match e {
            JsonError::Unsupported { message, .. } => message,
            JsonError::Invalid { field, message, .. } => format!("{field}: {message}"),
        };
        (r, why)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn route(namespace: &str, name: &str, path: &str) -> DynamicObject {
        // As in a list: no apiVersion or kind.
        object(json!({
            "metadata": {
                "name": name, "namespace": namespace, "resourceVersion": "1",
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {
                "parentRefs": [{"name": "web"}],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}]}]
            },
            "status": {"parents": []}
        }))
    }

    fn scope(kind: Kind, namespace: Option<&str>) -> Scope {
        Scope { kind, namespace: namespace.map(str::to_owned) }
    }

    fn has(state: &ClusterState, kind: Kind, namespace: &str, name: &str) -> bool {
        state.index.contains(&ObjectRef::new(kind, namespace, name))
    }

    #[test]
    fn a_relist_replaces_the_kind_at_init_done_only() {
        let routes = scope(Kind::HttpRoute, None);
        let mut state = ClusterState::new([routes.clone(), scope(Kind::Service, None)]);
        let mut stream = WatchReducer::new(routes);
        assert!(!stream.apply(&mut state, Event::Init));
        assert!(!stream.apply(&mut state, Event::InitApply(route("a", "one", "/one"))));
        assert!(state.index.is_empty(), "nothing before InitDone");
        assert!(stream.apply(&mut state, Event::InitDone));
        assert!(has(&state, Kind::HttpRoute, "a", "one"));
        assert!(!state.synced(), "the Service watch has not listed yet");

        assert!(stream.apply(&mut state, Event::Apply(route("a", "two", "/two"))));
        // A relist after 410 Gone: "one" vanished while the watch was down.
        stream.apply(&mut state, Event::Init);
        stream.apply(&mut state, Event::InitApply(route("a", "two", "/two")));
        assert!(has(&state, Kind::HttpRoute, "a", "one"), "the old state serves until InitDone");
        stream.apply(&mut state, Event::InitDone);
        assert!(!has(&state, Kind::HttpRoute, "a", "one"));
        assert!(has(&state, Kind::HttpRoute, "a", "two"));

        assert!(stream.apply(&mut state, Event::Delete(route("a", "two", "/two"))));
        assert!(!stream.apply(&mut state, Event::Delete(route("a", "two", "/two"))));
        assert!(state.index.is_empty());
    }

    #[test]
    fn every_scope_must_list_before_the_state_is_synced() {
        let a = scope(Kind::Service, Some("a"));
        let b = scope(Kind::Service, Some("b"));
        let mut state = ClusterState::new([a.clone(), b.clone()]);
        WatchReducer::new(a).apply(&mut state, Event::InitDone);
        assert!(!state.synced());
        WatchReducer::new(b).apply(&mut state, Event::InitDone);
        assert!(state.synced());
    }

    #[test]
    fn a_namespaced_relist_leaves_other_namespaces_alone() {
        let mut state = ClusterState::default();
        let mut a = WatchReducer::new(scope(Kind::HttpRoute, Some("a")));
        let mut b = WatchReducer::new(scope(Kind::HttpRoute, Some("b")));
        a.apply(&mut state, Event::Apply(route("a", "r", "/")));
        b.apply(&mut state, Event::Apply(route("b", "r", "/")));
        a.apply(&mut state, Event::Init);
        a.apply(&mut state, Event::InitDone);
        assert!(!has(&state, Kind::HttpRoute, "a", "r"));
        assert!(has(&state, Kind::HttpRoute, "b", "r"));
    }

    #[test]
    fn unreadable_objects_are_rejected_not_kept() {
        let mut state = ClusterState::default();
        let mut stream = WatchReducer::new(scope(Kind::HttpRoute, None));
        stream.apply(&mut state, Event::Apply(route("a", "r", "/")));
        let mut bad = route("a", "r", "/");
        bad.data["spec"]["bogus"] = json!(true);
        assert!(stream.apply(&mut state, Event::Apply(bad)));
        assert!(!has(&state, Kind::HttpRoute, "a", "r"));
        let why = &state.rejected[&ObjectRef::new(Kind::HttpRoute, "a", "r")];
        assert!(why.starts_with("spec.bogus: unknown field"), "{why}");

        // Fixed: readable again, no longer rejected.
        stream.apply(&mut state, Event::Apply(route("a", "r", "/")));
        assert!(state.rejected.is_empty());
        assert!(has(&state, Kind::HttpRoute, "a", "r"));
    }

    #[test]
    fn a_status_only_change_changes_nothing() {
        let mut state = ClusterState::default();
        let mut stream = WatchReducer::new(scope(Kind::HttpRoute, None));
        assert!(stream.apply(&mut state, Event::Apply(route("a", "r", "/"))));
        // Our own status write, as the watch sends it back.
        let mut written = route("a", "r", "/");
        written.metadata.resource_version = Some("2".into());
        written.data["status"] = json!({"parents": [{"controllerName": "x"}]});
        assert!(!stream.apply(&mut state, Event::Apply(written)));
        // A spec change still counts.
        assert!(stream.apply(&mut state, Event::Apply(route("a", "r", "/other"))));
    }

    #[test]
    fn a_gateway_keeps_only_its_status_addresses() {
        let gateway = |status: Value| {
            object(json!({
                "metadata": {"name": "web", "namespace": "a"},
                "spec": {"gatewayClassName": "c", "listeners": []},
                "status": status
            }))
        };
        let mut state = ClusterState::default();
        let mut stream = WatchReducer::new(scope(Kind::Gateway, None));
        let addresses = json!([{"type": "IPAddress", "value": "10.0.0.1"}]);
        let first = json!({"addresses": addresses, "conditions": [{"type": "Accepted"}]});
        assert!(stream.apply(&mut state, Event::Apply(gateway(first))));
        // Conditions change: nothing to reload.
        let conditions = json!({"addresses": addresses, "conditions": [{"type": "Programmed"}]});
        assert!(!stream.apply(&mut state, Event::Apply(gateway(conditions))));
        // The addresses change: LB-IPAM must see it.
        let moved = json!({"addresses": [{"type": "IPAddress", "value": "10.0.0.2"}]});
        assert!(stream.apply(&mut state, Event::Apply(gateway(moved))));
        let previous = gatehouse_gateway::ipam::previous_from_status(&state.index);
        let held: Vec<String> = previous
            .iter()
            .flat_map(|(id, ips)| ips.iter().map(move |ip| format!("{id} {ip}")))
            .collect();
        assert_eq!(held, ["Gateway a/web 10.0.0.2"]);
    }

    #[test]
    fn secret_namespaces_chosen_first_must_list_later_ones_need_not() {
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<BTreeSet<_>>();
        let gateways = scope(Kind::Gateway, None);
        let mut state = ClusterState::awaiting_secrets([gateways.clone()]);
        WatchReducer::new(gateways).apply(&mut state, Event::InitDone);
        assert!(state.gateways_synced() && !state.synced(), "Secrets not chosen yet");
        assert!(state.choose_secret_namespaces(&set(&["a"]), &set(&[])));
        assert!(!state.synced(), "the first Secret watch must list");
        let mut a = WatchReducer::new(scope(Kind::Secret, Some("a")));
        let secret = |ns: &str| {
            object(
                json!({"metadata": {"name": "cert", "namespace": ns}, "type": "kubernetes.io/tls",
                          "data": {"tls.crt": "", "tls.key": ""}}),
            )
        };
        a.apply(&mut state, Event::InitApply(secret("a")));
        a.apply(&mut state, Event::InitDone);
        assert!(state.synced());
        assert!(has(&state, Kind::Secret, "a", "cert"));

        // A Gateway now points into "b" instead: "a"'s Secrets leave, "b" does not hold back.
        assert!(state.choose_secret_namespaces(&set(&["b"]), &set(&["a"])));
        assert!(!has(&state, Kind::Secret, "a", "cert"));
        assert!(state.synced());
        assert!(!state.choose_secret_namespaces(&set(&[]), &set(&[])));
    }

    #[test]
    fn nodes_go_through_the_reducer_as_a_cluster_scoped_kind() {
        let node = |ready: &str| {
            object(json!({
                "metadata": {"name": "n1", "resourceVersion": "7"},
                "status": {"conditions": [{"type": "Ready", "status": ready}],
                           "addresses": [{"type": "InternalIP", "address": "10.1.0.1"}]}
            }))
        };
        let mut state = ClusterState::new([scope(Kind::Node, None)]);
        let mut stream = WatchReducer::new(scope(Kind::Node, None));
        stream.apply(&mut state, Event::Init);
        stream.apply(&mut state, Event::InitApply(node("True")));
        assert!(stream.apply(&mut state, Event::InitDone));
        assert!(state.synced());
        assert!(has(&state, Kind::Node, "", "n1"));
        assert!(stream.apply(&mut state, Event::Apply(node("False"))), "readiness counts");
        assert!(stream.apply(&mut state, Event::Delete(node("False"))));
        assert!(state.index.is_empty());
    }

    #[test]
    fn cluster_objects_convert_like_files_without_managed_fields() {
        let mut state = ClusterState::default();
        WatchReducer::new(scope(Kind::HttpRoute, None))
            .apply(&mut state, Event::Apply(route("a", "r", "/x")));
        let yaml = gatehouse_gateway::loader::load_str(
            std::path::Path::new("r.yaml"),
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: a}\nspec:\n  parentRefs: [{name: web}]\n  rules: [{matches: [{path: {type: PathPrefix, value: /x}}]}]\n",
        );
        let mut from_yaml = Index::new();
        from_yaml.reset(yaml.objects);
        // The objects, not the change stamps (which count edits, not content).
        let objects = |index: &Index| {
            let debug = format!("{index:?}");
            debug.split(", stamps:").next().map(str::to_owned)
        };
        assert_eq!(objects(&state.index), objects(&from_yaml));
    }
}
