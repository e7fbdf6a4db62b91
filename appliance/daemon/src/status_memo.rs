//! Status objects kept from one publication to the next: each route's status JSON is
//! recomputed only when the route changed (its report, its object, the controller name), so
//! a change to one route of thousands costs one route's status, not all of them.
//!
//! The few other objects (GatewayClasses, Gateways, ListenerSets, policies, LB-IPAM Services,
//! the native TOML objects) are computed whole every time. The result equals what
//! [`gatehouse_gateway::status`] plus [`gatehouse_gateway::transitions::preserve`] against the
//! previous publication give (a unit test checks it over a sequence of changes).

use std::sync::Arc;

use gatehouse_gateway::{Index, Report, Settings, Translation};
use gatehouse_kube::StatusSet;
use gatehouse_model::{DataPlaneReport, ObjectId};
use serde_json::Value;

/// One publication's status objects, in `/status` order: `head` (GatewayClasses, Gateways,
/// ListenerSets), the routes by id, then `tail` (policies, Services, native objects).
#[derive(Clone, Debug, Default)]
pub struct StatusObjects {
    pub head: Vec<Arc<Value>>,
    pub routes: imbl::OrdMap<ObjectId, Arc<Value>>,
    pub tail: Vec<Arc<Value>>,
    /// The objects the cluster status writer takes, by identity.
    pub targets: StatusSet,
}

impl StatusObjects {
    /// Every object, in `/status` order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Value>> {
        self.head.iter().chain(self.routes.values()).chain(&self.tail)
    }
}

/// The Gateway API state one publication is computed from.
#[derive(Clone, Copy, Debug)]
pub struct ApiState<'a> {
    pub index: &'a Index,
    pub settings: &'a Settings,
    pub translation: &'a Translation,
    pub data_plane: &'a DataPlaneReport,
}

/// What the route statuses in the memo were computed from.
#[derive(Debug)]
struct Basis {
    index: Index,
    report: Report,
    controller_name: String,
}

/// The previous publication's objects and what they were computed from.
#[derive(Debug, Default)]
pub struct StatusMemo {
    basis: Option<Basis>,
    last: StatusObjects,
    /// The routes' part of `last.targets`.
    route_targets: StatusSet,
}

impl StatusMemo {
    /// The status objects of `api` (when there is a Gateway API state) followed by `others`
    /// (computed whole by the caller), with unchanged conditions keeping the time they last
    /// changed. Remembers them for the next call.
    pub fn compute(
        &mut self,
        api: Option<ApiState<'_>>,
        others: Vec<Value>,
        now: jiff::Timestamp,
    ) -> StatusObjects {
        let mut head: Vec<Value> = Vec::new();
        let mut tail: Vec<Value> = Vec::new();
        if let Some(api) = api {
            let to_values = |objects: Vec<gatehouse_gateway::ObjectStatus>| {
                objects.into_iter().filter_map(|o| serde_json::to_value(o).ok())
            };
            head.extend(to_values(gatehouse_gateway::status::status_head(
                api.index,
                api.translation,
                api.data_plane,
                now,
            )));
            tail.extend(to_values(gatehouse_gateway::status::status_tail(
                api.index,
                api.settings,
                api.translation,
                now,
            )));
            self.update_routes(api, &now.to_string());
        } else {
            self.basis = None;
            self.last.routes = imbl::OrdMap::new();
            self.route_targets = StatusSet::new();
        }
        tail.extend(others);
        // The few objects computed whole: their conditions keep the times last published.
        let before: Vec<Value> =
            self.last.head.iter().chain(&self.last.tail).map(|o| o.as_ref().clone()).collect();
        let split = head.len();
        let mut whole: Vec<Value> = head.into_iter().chain(tail).collect();
        gatehouse_gateway::transitions::preserve(&before, &mut whole);
        let tail: Vec<Arc<Value>> = whole.split_off(split).into_iter().map(Arc::new).collect();
        let head: Vec<Arc<Value>> = whole.into_iter().map(Arc::new).collect();
        let mut targets = self.route_targets.clone();
        for object in head.iter().chain(&tail) {
            if let Some(r) = gatehouse_kube::status_target(object) {
                // Unchanged objects keep their identity, so the writer's diff skips them.
                let same = self.last.targets.get(&r).filter(|last| **last == *object).cloned();
                targets.insert(r, same.unwrap_or_else(|| object.clone()));
            }
        }
        self.last = StatusObjects { head, routes: self.last.routes.clone(), tail, targets };
        self.last.clone()
    }

    /// Recomputes the statuses of the routes that changed since the basis (all of them
    /// without one, or when the controller name changed).
    fn update_routes(&mut self, api: ApiState<'_>, now: &str) {
        let report = &api.translation.report;
        let changed = match &self.basis {
            Some(basis) if basis.controller_name == api.settings.controller_name => {
                Some(gatehouse_gateway::status::routes_changed(
                    (&basis.index, &basis.report),
                    (api.index, report),
                ))
            }
            _ => None,
        };
        let ids: Vec<ObjectId> = match changed {
            Some(changed) => changed.into_iter().collect(),
            None => {
                let stale: Vec<ObjectId> = self.last.routes.keys().cloned().collect();
                stale.into_iter().chain(report.routes.keys().cloned()).collect()
            }
        };
        for id in ids {
            let status = report.routes.get(&id).and_then(|route_report| {
                gatehouse_gateway::status::route_status(
                    api.index,
                    api.settings,
                    &id,
                    route_report,
                    now,
                )
            });
            let value = status.and_then(|s| serde_json::to_value(s).ok());
            self.set_route(id, value);
        }
        self.basis = Some(Basis {
            index: api.index.clone(),
            report: report.clone(),
            controller_name: api.settings.controller_name.clone(),
        });
    }

    /// Stores one route's new status (`None`: it has none any more), keeping the times of
    /// unchanged conditions, and the previous `Arc` when nothing changed at all.
    fn set_route(&mut self, id: ObjectId, value: Option<Value>) {
        let old = self.last.routes.get(&id).cloned();
        let Some(mut value) = value else {
            if let Some(r) = old.as_deref().and_then(gatehouse_kube::status_target) {
                self.route_targets.remove(&r);
            }
            self.last.routes.remove(&id);
            return;
        };
        if let Some(old) = &old {
            gatehouse_gateway::transitions::preserve(
                std::slice::from_ref(old.as_ref()),
                std::slice::from_mut(&mut value),
            );
            if **old == value {
                return;
            }
        }
        let value = Arc::new(value);
        if let Some(r) = gatehouse_kube::status_target(&value) {
            self.route_targets.insert(r, value.clone());
        }
        self.last.routes.insert(id, value);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use gatehouse_gateway::{Kind, Translator};
    use serde_json::json;

    use super::*;

    const CONTROLLER: &str = "gatehouse.dev/gateway-controller";

    /// One edit of the cluster's objects.
    type Step = Box<dyn Fn(&mut Index)>;

    fn settings() -> Settings {
        Settings {
            controller_name: CONTROLLER.into(),
            default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            backend_addressing: Default::default(),
            wasm_module_dir: None,
        }
    }

    fn apply(index: &mut Index, value: Value) {
        index.apply(gatehouse_gateway::from_json(value).unwrap());
    }

    fn route(i: usize, gateway: &str, service: &str, generation: i64) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("r{i}"), "namespace": "default", "generation": generation},
            "spec": {
                "parentRefs": [{"name": gateway}],
                "hostnames": [format!("r{i}.example.test")],
                "rules": [{"backendRefs": [{"name": service, "port": 80}]}]
            }
        })
    }

    fn gateway(hostname: Option<&str>) -> Value {
        let mut listener = json!({"name": "http", "port": 8080, "protocol": "HTTP"});
        if let Some(hostname) = hostname {
            listener["hostname"] = hostname.into();
        }
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"gatewayClassName": "gatehouse", "listeners": [listener]}
        })
    }

    fn service() -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "svc", "namespace": "default"},
               "spec": {"ports": [{"port": 80}]}})
    }

    /// What the status task published before the memo: every object computed, then the
    /// times of unchanged conditions taken from the previous publication.
    fn full(
        index: &Index,
        translation: &Translation,
        now: jiff::Timestamp,
        before: &[Value],
    ) -> Vec<Value> {
        let report = DataPlaneReport::default();
        let mut objects: Vec<Value> =
            gatehouse_gateway::status(index, &settings(), translation, &report, now)
                .into_iter()
                .map(|o| serde_json::to_value(o).unwrap())
                .collect();
        gatehouse_gateway::transitions::preserve(before, &mut objects);
        objects
    }

    #[test]
    fn the_memo_equals_a_full_recomputation_over_a_sequence_of_changes() {
        let mut index = Index::new();
        apply(
            &mut index,
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "gatehouse"}, "spec": {"controllerName": CONTROLLER}}),
        );
        apply(&mut index, gateway(None));
        apply(&mut index, service());
        for i in 0..20 {
            apply(&mut index, route(i, "web", "svc", 1));
        }
        let steps: Vec<Step> = vec![
            Box::new(|_| {}),
            // One route's backend goes missing (ResolvedRefs turns False).
            Box::new(|index| apply(index, route(3, "web", "missing", 2))),
            // A route is deleted, another added, the first one fixed.
            Box::new(|index| {
                index.delete(Kind::HttpRoute, "default", "r5");
                apply(index, route(20, "web", "svc", 1));
                apply(index, route(3, "web", "svc", 3));
            }),
            // A route names a Gateway that does not exist (Accepted turns False).
            Box::new(|index| apply(index, route(7, "nowhere", "svc", 2))),
            // Only the generation changes: observedGeneration follows.
            Box::new(|index| apply(index, route(1, "web", "svc", 5))),
            // The listener's hostname no longer matches any route.
            Box::new(|index| apply(index, gateway(Some("other.test")))),
            Box::new(|index| apply(index, gateway(None))),
            // The Service every route points at goes, then comes back.
            Box::new(|index| {
                index.delete(Kind::Service, "default", "svc");
            }),
            Box::new(|index| apply(index, service())),
            // Nothing changed at all.
            Box::new(|_| {}),
        ];
        let mut translator = Translator::new();
        let mut memo = StatusMemo::default();
        let mut before: Vec<Value> = Vec::new();
        let start = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let report = DataPlaneReport::default();
        for (i, step) in steps.iter().enumerate() {
            step(&mut index);
            let translation = translator.translate(&index, &settings(), None);
            let now = start + jiff::SignedDuration::from_secs(i64::try_from(i).unwrap() * 10);
            let expected = full(&index, &translation, now, &before);
            let api = ApiState {
                index: &index,
                settings: &settings(),
                translation: &translation,
                data_plane: &report,
            };
            let objects = memo.compute(Some(api), Vec::new(), now);
            let got: Vec<Value> = objects.iter().map(|o| o.as_ref().clone()).collect();
            assert_eq!(got, expected, "step {i}");
            let targets: Vec<&Value> = objects.targets.values().map(AsRef::as_ref).collect();
            let mut wanted: Vec<(gatehouse_gateway::ObjectRef, &Value)> = expected
                .iter()
                .filter_map(|o| Some((gatehouse_kube::status_target(o)?, o)))
                .collect();
            wanted.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(targets, wanted.into_iter().map(|(_, o)| o).collect::<Vec<_>>(), "step {i}");
            before = expected;
        }
        assert!(before.len() > 20, "the routes have statuses");
    }
}
