//! Memoised translation: a cluster event that changes one HTTPRoute retranslates that route,
//! not all of them. GRPCRoutes are not memoised (their stamp is among the inputs, since an
//! HTTPRoute's hostname conflicts depend on them).
//!
//! A route's outcome is a function of the route, the non-route objects and the Gateways'
//! reports; [`Translator`] keeps each route's outcome next to the route object it came from
//! (compared by `Arc` pointer, which the cache keeps alive so it cannot be reused) and drops
//! them all when anything else changed: a non-route kind's stamp, the settings, or a
//! Gateway's report (which also covers LB-IPAM's allocation). Same inputs, same translation
//! as [`super::translate_with_addresses`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gatehouse_model::ObjectId;

use super::{GatewayReport, ListenerSetReport, RouteOutcome, Settings, Translation};
use crate::index::{Index, Key};
use crate::object::Kind;
use crate::types::HttpRoute;

/// What every cached route outcome was derived from, besides its own route.
#[derive(Debug, PartialEq)]
struct Inputs {
    stamps: Vec<u64>,
    settings: Settings,
    gateways: BTreeMap<ObjectId, GatewayReport>,
    listener_sets: BTreeMap<ObjectId, ListenerSetReport>,
}

/// One route's cached outcome (`None`: it names none of our Gateways).
#[derive(Debug)]
struct Entry {
    route: Arc<HttpRoute>,
    outcome: Option<RouteOutcome>,
}

/// Translates like [`super::translate_with_addresses`], reusing the outcome of every route
/// that did not change since the last call when nothing else did.
#[derive(Debug, Default)]
pub struct Translator {
    inputs: Option<Inputs>,
    routes: HashMap<Key, Entry>,
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
        let inputs = Inputs {
            // An HTTPRoute's outcome depends on no route of any kind (L4 routes are
            // translated after, and only add to listener counts).
            stamps: Kind::ALL
                .iter()
                .filter(|kind| {
                    !matches!(
                        kind,
                        Kind::HttpRoute | Kind::TcpRoute | Kind::UdpRoute | Kind::TlsRoute
                    )
                })
                .map(|kind| index.stamp(*kind))
                .collect(),
            settings: settings.clone(),
            gateways: out.report.gateways.clone(),
            listener_sets: out.report.listener_sets.clone(),
        };
        if self.inputs.as_ref() != Some(&inputs) {
            self.routes.clear();
            self.inputs = Some(inputs);
        }
        self.translated = 0;
        let parents = &out.report;
        let mut outcomes = Vec::with_capacity(index.http_routes.len());
        for (key, route) in &index.http_routes {
            let fresh = match self.routes.get(key) {
                Some(entry) if Arc::ptr_eq(&entry.route, route) => None,
                _ => Some(super::route_outcome(
                    index,
                    settings,
                    super::RouteRef::Http(route),
                    parents,
                )),
            };
            match fresh {
                None => outcomes.push(self.routes.get(key).and_then(|e| e.outcome.clone())),
                Some(outcome) => {
                    self.translated += 1;
                    outcomes.push(outcome.clone());
                    self.routes.insert(key.clone(), Entry { route: route.clone(), outcome });
                }
            }
        }
        if self.routes.len() > index.http_routes.len() {
            self.routes.retain(|key, _| index.http_routes.contains_key(key));
        }
        let mut outcomes: Vec<_> = outcomes.into_iter().flatten().collect();
        outcomes.extend(super::grpc_outcomes(index, settings, parents));
        super::add_routes(&mut out, outcomes);
        super::l4_routes::add(index, settings, &mut out);
        out
    }
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
        match rng.below(15) {
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
}
