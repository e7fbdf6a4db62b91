//! Translation of the Gateway API index into the source-agnostic model, plus the report that
//! status needs. Pure: the same index and settings always give the same translation.

mod attach;
pub(crate) mod backend_tls;
mod backends;
mod cache;
mod conflicts;
pub(crate) mod gateway_tls;
mod grants;
mod grpc;
mod l4;
mod l4_routes;
mod listener_sets;
mod listeners;
mod policy;
mod rules;
mod tls;
mod wasm;

#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_model::{Desired, Hostname, HttpRoute as ModelRoute, ListenerId, ObjectId};

use crate::conditions::reason;
use crate::index::Index;
use crate::types::{GROUP, GrpcRoute, HttpRoute, ParentReference, RouteGroupKind};

pub use cache::Translator;
pub use wasm::mark_failed_plugins;

/// What the translation needs besides the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// GatewayClasses whose `spec.controllerName` equals this are ours; all others are ignored.
    pub controller_name: String,
    /// Where listeners of Gateways without `spec.addresses` bind.
    pub default_address: IpAddr,
    /// How a Service backendRef becomes socket addresses.
    pub backend_addressing: BackendAddressing,
    /// Where WasmPlugin objects may name local modules (relative paths below it); `None`:
    /// only URLs with a sha256.
    pub wasm_module_dir: Option<PathBuf>,
}

/// How a Service backendRef becomes socket addresses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BackendAddressing {
    /// Pod addresses and target ports from the Service's EndpointSlices: the appliance can
    /// route to pods.
    #[default]
    Endpoints,
    /// Every usable Node's address (InternalIP, else ExternalIP) with the Service port's
    /// `nodePort`: the appliance reaches only nodes, and kube-proxy forwards to pods.
    NodePort,
}

/// The model to serve and the facts status is computed from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// Listeners and routes to serve; `generation` is left at 0 for the caller to set.
    pub desired: Desired,
    pub report: Report,
}

/// Why a condition is not in its positive state: a reason constant and a human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }

    /// One problem standing for several: the first reason, every message.
    pub(crate) fn merge(problems: &[Problem]) -> Option<Problem> {
        let first = problems.first()?;
        let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
        Some(Problem::new(first.reason, message))
    }
}

/// Per-object facts found while translating; only objects of our controller appear.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Our GatewayClasses by name.
    pub gateway_classes: BTreeMap<String, ClassReport>,
    /// Gateways of our classes.
    pub gateways: BTreeMap<ObjectId, GatewayReport>,
    /// HTTPRoutes, GRPCRoutes, TCPRoutes, UDPRoutes and TLSRoutes (the id's kind tells) with
    /// at least one parentRef to one of our Gateways or ListenerSets. A persistent map: a new
    /// translation shares every unchanged route's report with the previous one.
    pub routes: imbl::OrdMap<ObjectId, RouteReport>,
    /// ListenerSets whose parentRef names one of our Gateways.
    pub listener_sets: BTreeMap<ObjectId, ListenerSetReport>,
}

/// A ListenerSet whose parent is a Gateway of ours.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerSetReport {
    /// The Gateway it names.
    pub parent: ObjectId,
    /// Attached (allowed, parent accepted, at least one valid listener) or why not.
    pub accepted: Result<(), Problem>,
    /// Its listeners, when it is allowed and its parent accepted.
    pub listeners: Vec<ListenerReport>,
}

/// A GatewayClass of ours.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassReport {
    pub accepted: Result<(), Problem>,
}

/// A Gateway of ours.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayReport {
    /// Problems of the Gateway itself (its class, its addresses); listener validity is separate.
    pub accepted: Result<(), Problem>,
    /// The addresses its listeners bind.
    pub addresses: Vec<IpAddr>,
    /// Why (some of) its addresses could not be assigned (LB-IPAM): `Programmed=False`.
    pub address_problem: Option<Problem>,
    pub listeners: Vec<ListenerReport>,
    /// ListenerSets attached to it (`status.attachedListenerSets`).
    pub attached_listener_sets: u32,
}

/// One listener of a Gateway (or a ListenerSet) of ours.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerReport {
    pub id: ListenerId,
    pub supported_kinds: Vec<RouteGroupKind>,
    /// Routes accepted on this listener.
    pub attached_routes: u32,
    pub accepted: Result<(), Problem>,
    pub resolved_refs: Result<(), Problem>,
    /// Set when another listener of the same Gateway is not distinct from this one.
    pub conflicted: Option<Problem>,
    /// Whether the listener is in [`Desired`] (valid, not conflicted, with a certificate if HTTPS).
    pub in_desired: bool,
    pub(crate) port: u16,
    pub(crate) hostname: Option<Hostname>,
}

/// An HTTPRoute or GRPCRoute that names at least one of our Gateways.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteReport {
    pub parents: Vec<ParentReport>,
}

/// The route's standing with one parentRef.
#[derive(Clone, Debug, PartialEq)]
pub struct ParentReport {
    /// The parentRef as written, with group, kind and namespace defaulted.
    pub parent_ref: ParentReference,
    pub accepted: Result<(), Problem>,
    pub resolved_refs: Result<(), Problem>,
    /// Set when some, but not all, rules were dropped.
    pub partially_invalid: Option<Problem>,
    /// The listeners this parentRef attached the route to.
    pub(crate) listeners: Vec<ListenerId>,
}

/// Translates every object of ours into the model and the status report.
pub fn translate(index: &Index, settings: &Settings) -> Translation {
    translate_with_addresses(index, settings, None)
}

/// [`translate`], with Gateways' addresses from LB-IPAM: with `Some(allocation)` a Gateway
/// binds what it was handed (requested or chosen) instead of its `spec.addresses` or the
/// default, and the allocation's failures become its status.
pub fn translate_with_addresses(
    index: &Index,
    settings: &Settings,
    allocation: Option<&gatehouse_ipam::Allocation>,
) -> Translation {
    let mut out = translate_gateways(index, settings, allocation);
    let parents = &out.report;
    let outcomes: Vec<RouteOutcome> = index
        .http_routes
        .values()
        .filter_map(|route| route_outcome(index, settings, RouteRef::Http(route), parents))
        .chain(grpc_outcomes(index, settings, parents))
        .collect();
    add_routes(&mut out, outcomes);
    l4_routes::add(index, settings, &mut out);
    out
}

/// Every GRPCRoute's outcome (not memoised: they are few, and HTTPRoutes depend on them).
fn grpc_outcomes<'a>(
    index: &'a Index,
    settings: &'a Settings,
    parents: &'a Report,
) -> impl Iterator<Item = RouteOutcome> + 'a {
    index
        .grpc_routes
        .values()
        .filter_map(move |route| route_outcome(index, settings, RouteRef::Grpc(route), parents))
}

/// Settles hostname conflicts between HTTPRoutes and GRPCRoutes, then adds every outcome.
fn add_routes(out: &mut Translation, mut outcomes: Vec<RouteOutcome>) {
    conflicts::resolve(&mut outcomes, &out.report.gateways);
    for outcome in outcomes {
        add_route(out, outcome);
    }
}

/// The route kinds translated into HTTP routes of the model (HTTPRoutes sort first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    /// The Kubernetes kind name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }
}

/// An HTTPRoute or a GRPCRoute of the index.
#[derive(Clone, Copy, Debug)]
enum RouteRef<'a> {
    Http(&'a HttpRoute),
    Grpc(&'a GrpcRoute),
}

impl<'a> RouteRef<'a> {
    fn kind(self) -> RouteKind {
        match self {
            RouteRef::Http(_) => RouteKind::Http,
            RouteRef::Grpc(_) => RouteKind::Grpc,
        }
    }

    fn metadata(self) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            RouteRef::Http(r) => &r.metadata,
            RouteRef::Grpc(r) => &r.metadata,
        }
    }

    fn namespace(self) -> &'a str {
        self.metadata().namespace.as_deref().unwrap_or_default()
    }

    fn name(self) -> &'a str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    fn parent_refs(self) -> &'a [ParentReference] {
        match self {
            RouteRef::Http(r) => &r.spec.parent_refs,
            RouteRef::Grpc(r) => &r.spec.parent_refs,
        }
    }

    fn hostnames(self) -> &'a [String] {
        match self {
            RouteRef::Http(r) => &r.spec.hostnames,
            RouteRef::Grpc(r) => &r.spec.hostnames,
        }
    }

    fn has_rules(self) -> bool {
        match self {
            RouteRef::Http(r) => !r.spec.rules.is_empty(),
            RouteRef::Grpc(r) => !r.spec.rules.is_empty(),
        }
    }

    fn rules(self, index: &Index, settings: &Settings) -> rules::Rules {
        let ns = self.namespace();
        match self {
            RouteRef::Http(r) => {
                let named = r.spec.rules.iter().map(|rule| (rule.name.as_deref(), Ok(rule)));
                rules::translate(index, settings, RouteKind::Http, ns, named)
            }
            RouteRef::Grpc(r) => {
                let converted = grpc::http_rules(r);
                let named = r
                    .spec
                    .rules
                    .iter()
                    .zip(&converted)
                    .map(|(rule, c)| (rule.name.as_deref(), c.as_ref().map_err(Clone::clone)));
                rules::translate(index, settings, RouteKind::Grpc, ns, named)
            }
        }
    }
}

/// GatewayClasses and Gateways: everything but the routes, and no route counted yet.
fn translate_gateways(
    index: &Index,
    settings: &Settings,
    allocation: Option<&gatehouse_ipam::Allocation>,
) -> Translation {
    let mut out = Translation::default();

    for (name, class) in &index.gateway_classes {
        if class.spec.controller_name != settings.controller_name {
            continue;
        }
        let accepted = match &class.spec.parameters_ref {
            Some(p) => Err(Problem::new(
                reason::INVALID_PARAMETERS,
                format!(
                    "parametersRef ({} {}) is not supported by this controller",
                    p.kind, p.name
                ),
            )),
            None => Ok(()),
        };
        out.report.gateway_classes.insert(name.clone(), ClassReport { accepted });
    }

    for gateway in index.gateways.values() {
        let Some(class) = out.report.gateway_classes.get(&gateway.spec.gateway_class_name) else {
            continue;
        };
        let (mut report, listeners) =
            listeners::translate(index, settings, gateway, &class.accepted, allocation);
        out.desired.client_validation.extend(client_validation(index, gateway, &listeners));
        out.desired.listeners.extend(listeners);
        let (sets, listeners) = listener_sets::translate(index, gateway, &mut report);
        out.desired.listeners.extend(listeners);
        out.report.listener_sets.extend(sets);
        let id = ObjectId::new("Gateway", gateway.namespace(), gateway.name());
        out.report.gateways.insert(id, report);
    }
    out.desired.l4_services = l4::services(index, settings, allocation);
    out
}

/// Client certificate validation of a Gateway's HTTPS listeners that are served.
fn client_validation(
    index: &Index,
    gateway: &crate::types::Gateway,
    served: &[gatehouse_model::Listener],
) -> Vec<gatehouse_model::ClientValidation> {
    let mut out = Vec::new();
    for model in served.iter().filter(|l| l.tls.is_some()) {
        let Some(listener) = gateway.spec.listeners.iter().find(|l| l.name == model.id.name) else {
            continue;
        };
        if let Some(f) = gateway_tls::frontend(index, gateway, listener)
            && !f.roots.is_empty()
        {
            out.push(gatehouse_model::ClientValidation {
                listener: model.id.clone(),
                roots: f.roots,
                mode: f.mode,
            });
        }
    }
    out
}

/// What one HTTPRoute contributes: a function of the route, the non-route objects and the
/// Gateways' and ListenerSets' reports (before routes are counted), so it can be memoised per
/// route.
#[derive(Clone, Debug, PartialEq)]
struct RouteOutcome {
    id: ObjectId,
    kind: RouteKind,
    /// Creation time (Unix seconds), for conflicts between kinds.
    created: Option<i64>,
    /// The route's valid hostnames (empty: any).
    hostnames: Vec<Hostname>,
    /// The route to serve, when it attached to at least one listener in the model.
    model: Option<Arc<ModelRoute>>,
    /// The WASM plugins the served route's filters name.
    plugins: Vec<gatehouse_model::WasmPlugin>,
    report: RouteReport,
    /// Listeners (Gateway or ListenerSet, and index in its report) whose `attached_routes` this
    /// route counts in.
    counted: Vec<(ObjectId, usize)>,
}

/// Adds a route's outcome to the translation: its report, its model route, its counts.
fn add_route(out: &mut Translation, outcome: RouteOutcome) {
    for (parent, i) in &outcome.counted {
        let listeners = match parent.kind.as_str() {
            "ListenerSet" => out.report.listener_sets.get_mut(parent).map(|s| &mut s.listeners),
            _ => out.report.gateways.get_mut(parent).map(|g| &mut g.listeners),
        };
        if let Some(listener) = listeners.and_then(|l| l.get_mut(*i)) {
            listener.attached_routes += 1;
        }
    }
    if let Some(model) = outcome.model {
        out.desired.http_routes.push(model);
    }
    for plugin in outcome.plugins {
        if out.desired.wasm_plugins.iter().all(|p| p.name != plugin.name) {
            out.desired.wasm_plugins.push(plugin);
        }
    }
    out.report.routes.insert(outcome.id, outcome.report);
}

/// The outcome of one route; `None` when it names none of our Gateways or ListenerSets.
/// `parents` is the report before any route is counted.
fn route_outcome(
    index: &Index,
    settings: &Settings,
    route: RouteRef<'_>,
    parents_report: &Report,
) -> Option<RouteOutcome> {
    let gateways = &parents_report.gateways;
    let route_ns = route.namespace();
    let kind = route.kind();
    let mut parents = Vec::new();
    for parent_ref in route.parent_refs() {
        let mut parent_ref = parent_ref.clone();
        let parent_ns = parent_ref.namespace.get_or_insert_with(|| route_ns.to_owned()).clone();
        if parent_ref.group != GROUP {
            continue;
        }
        let id = ObjectId::new(parent_ref.kind.clone(), parent_ns, parent_ref.name.clone());
        let ours = match parent_ref.kind.as_str() {
            "Gateway" => gateways.contains_key(&id),
            "ListenerSet" => parents_report.listener_sets.contains_key(&id),
            _ => false,
        };
        if ours {
            parents.push((id, parent_ref));
        }
    }
    if parents.is_empty() {
        return None;
    }

    let mut hostnames = Vec::new();
    let mut route_problem = None;
    for raw in route.hostnames() {
        match Hostname::parse(raw) {
            Ok(h) => hostnames.push(h),
            Err(e) => route_problem = Some(Problem::new(reason::UNSUPPORTED_VALUE, e.to_string())),
        }
    }
    let mut rules = route.rules(index, settings);
    if route_problem.is_none() && route.has_rules() && rules.rules.is_empty() {
        let mut all = Problem::merge(&rules.dropped)
            .unwrap_or_else(|| Problem::new(reason::UNSUPPORTED_VALUE, "no valid rule"));
        all.message = format!("all rules are invalid: {}", all.message);
        route_problem = Some(all);
    }
    let resolved_refs = Problem::merge(&rules.unresolved).map_or(Ok(()), Err);
    let partially_invalid = (!rules.dropped.is_empty() && !rules.rules.is_empty()).then(|| {
        let merged = Problem::merge(&rules.dropped)
            .unwrap_or_else(|| Problem::new(reason::UNSUPPORTED_VALUE, ""));
        Problem::new(reason::UNSUPPORTED_VALUE, format!("Dropped Rule(s): {}", merged.message))
    });

    let route_id = ObjectId::new(kind.as_str(), route_ns, route.name());
    let mut attached: BTreeSet<ListenerId> = BTreeSet::new();
    let mut counted = Vec::new();
    let mut reports = Vec::new();
    // The model route is shared by its listeners: with parents of several Gateways, the
    // first Gateway's backend client certificate is the one presented (a ListenerSet's is
    // its parent Gateway's).
    let mut client_certificate = None;
    for (parent_id, parent_ref) in parents {
        let Some(parent) = attach::Parent::find(index, parents_report, &parent_id) else {
            continue;
        };
        if client_certificate.is_none() {
            let gateway_id = match parent_id.kind.as_str() {
                "ListenerSet" => {
                    parents_report.listener_sets.get(&parent_id).map(|s| s.parent.clone())
                }
                _ => Some(parent_id.clone()),
            };
            client_certificate = gateway_id
                .and_then(|g| index.gateways.get(&(g.namespace.clone(), g.name.clone())))
                .and_then(|g| gateway_tls::client_certificate(index, g))
                .and_then(Result::ok);
        }
        let accepted = match (&route_problem, &parent.accepted) {
            (Some(p), _) | (None, Err(p)) => Err(p.clone()),
            (None, Ok(())) => {
                attach::attach(index, &parent, kind, route_ns, &parent_ref, &hostnames)
            }
        };
        let mut parent_listeners = Vec::new();
        let accepted = accepted.map(|listeners| {
            for i in listeners {
                let listener = &parent.reports[i];
                parent_listeners.push(listener.id.clone());
                if attached.insert(listener.id.clone()) {
                    counted.push((parent_id.clone(), i));
                }
            }
        });
        reports.push(ParentReport {
            listeners: parent_listeners,
            parent_ref,
            resolved_refs: resolved_refs.clone(),
            partially_invalid: if accepted.is_ok() { partially_invalid.clone() } else { None },
            accepted,
        });
    }

    let in_desired = |id: &ListenerId| {
        let listeners = match id.gateway.kind.as_str() {
            "ListenerSet" => parents_report.listener_sets.get(&id.gateway).map(|s| &s.listeners),
            _ => gateways.get(&id.gateway).map(|g| &g.listeners),
        };
        listeners.is_some_and(|l| l.iter().any(|l| &l.id == id && l.in_desired))
    };
    let listeners: Vec<ListenerId> = attached.into_iter().filter(in_desired).collect();
    if let Some(certificate) = &client_certificate {
        backend_tls::with_client_certificate(&mut rules.rules, certificate);
    }
    // A route that serves nowhere needs none of its plugins.
    let plugins = if listeners.is_empty() { Vec::new() } else { rules.plugins };
    let created = route.metadata().creation_timestamp.as_ref().map(|t| t.0.as_second());
    let model = (!listeners.is_empty()).then(|| {
        Arc::new(ModelRoute {
            id: route_id.clone(),
            created,
            hostnames: hostnames.clone(),
            listeners,
            rules: rules.rules,
        })
    });
    Some(RouteOutcome {
        id: route_id,
        kind,
        created,
        hostnames,
        model,
        plugins,
        report: RouteReport { parents: reports },
        counted,
    })
}
