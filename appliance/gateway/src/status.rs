//! Status of every object of ours, in the Gateway API status schema. Pure: the caller passes
//! the time, and writes the result (admin `GET /status` in file mode, the API server later).

use std::collections::BTreeMap;

use gatehouse_model::{
    DataPlaneReport, Listener, ListenerId, ListenerProblem, ListenerProblemKind, ObjectId,
};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::conditions::{self as c, reason};
use crate::index::Index;
use crate::object::Kind;
use crate::translate::{
    ListenerReport, ListenerSetReport, Problem, Report, RouteReport, Settings, Translation,
};
use crate::types::{GROUP, Gateway, ListenersFrom, ParentReference, RouteGroupKind};

/// The API version status objects are written as.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// The API version of TCPRoute and UDPRoute (experimental channel).
pub const API_VERSION_ALPHA2: &str = "gateway.networking.k8s.io/v1alpha2";

/// One object's status: `{"apiVersion", "kind", "metadata", "status"}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub api_version: String,
    pub kind: String,
    pub metadata: StatusMetadata,
    pub status: Status,
}

/// Identity and generation of the object a status is about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub generation: i64,
}

/// The `status` of one of the kinds we report on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Status {
    GatewayClass(GatewayClassStatus),
    Gateway(GatewayStatus),
    /// Also TCPRoute, UDPRoute and TLSRoute: every route kind's status has this shape.
    HttpRoute(HttpRouteStatus),
    ListenerSet(ListenerSetStatus),
    /// A LoadBalancer Service's addresses (LB-IPAM).
    Service(crate::ipam::ServiceStatus),
    /// A policy's standing per ancestor (BackendTLSPolicy).
    Policy(crate::policy_status::PolicyStatus),
}

/// A `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub observed_generation: i64,
    /// RFC 3339.
    pub last_transition_time: String,
}

/// `GatewayClass.status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassStatus {
    pub conditions: Vec<Condition>,
    /// [`crate::features::SUPPORTED_FEATURES`], for accepted classes only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub supported_features: Vec<SupportedFeature>,
}

/// One entry of `GatewayClass.status.supportedFeatures`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SupportedFeature {
    pub name: String,
}

/// `Gateway.status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub addresses: Vec<GatewayStatusAddress>,
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
    /// ListenerSets attached; present when the Gateway allows ListenerSets or one names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_listener_sets: Option<u32>,
}

/// `ListenerSet.status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerSetStatus {
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

/// A bound address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GatewayStatusAddress {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub value: String,
}

/// One listener's status.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<RouteGroupKind>,
    pub attached_routes: u32,
    pub conditions: Vec<Condition>,
}

/// `HTTPRoute.status` and `GRPCRoute.status` (the same schema).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpRouteStatus {
    pub parents: Vec<RouteParentStatus>,
}

/// The route's status for one parentRef.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentReference,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

/// Builds conditions for one object generation at one time.
pub(crate) struct Conditions<'a> {
    generation: i64,
    now: &'a str,
    pub(crate) list: Vec<Condition>,
}

impl<'a> Conditions<'a> {
    pub(crate) fn new(generation: i64, now: &'a str) -> Self {
        Self { generation, now, list: Vec::new() }
    }

    fn push(
        &mut self,
        type_: &'static str,
        ok: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.list.push(Condition {
            type_,
            status: if ok { "True" } else { "False" },
            reason,
            message: message.into(),
            observed_generation: self.generation,
            last_transition_time: self.now.to_owned(),
        });
    }

    /// `True` with `ok_reason` when `result` is Ok, else `False` with the problem.
    pub(crate) fn push_result(
        &mut self,
        type_: &'static str,
        result: &Result<(), Problem>,
        ok_reason: &'static str,
        ok_message: &str,
    ) {
        match result {
            Ok(()) => self.push(type_, true, ok_reason, ok_message),
            Err(p) => self.push(type_, false, p.reason, p.message.clone()),
        }
    }
}

/// Objects without `metadata.generation` (typical in files) count as generation 1, the one the
/// API server gives a new object.
fn supported_features(accepted: bool) -> Vec<SupportedFeature> {
    if !accepted {
        return Vec::new();
    }
    crate::features::SUPPORTED_FEATURES
        .iter()
        .map(|name| SupportedFeature { name: (*name).to_owned() })
        .collect()
}

pub(crate) fn generation(meta: &ObjectMeta) -> i64 {
    meta.generation.unwrap_or(1)
}

pub(crate) fn metadata(meta: &ObjectMeta, namespaced: bool) -> StatusMetadata {
    StatusMetadata {
        namespace: if namespaced { meta.namespace.clone() } else { None },
        name: meta.name.clone().unwrap_or_default(),
        generation: generation(meta),
    }
}

/// Status of every GatewayClass, Gateway, ListenerSet and route of ours (HTTPRoute, GRPCRoute,
/// TCPRoute, UDPRoute, TLSRoute), in that order (routes by kind, then namespace/name).
///
/// `Programmed` is only `True` once the data plane acknowledged the translation's generation.
pub fn status(
    index: &Index,
    settings: &Settings,
    translation: &Translation,
    data_plane: &DataPlaneReport,
    now: Timestamp,
) -> Vec<ObjectStatus> {
    let mut out = status_head(index, translation, data_plane, now);
    let stamp = now.to_string();
    out.extend(
        translation.report.routes.iter().filter_map(|(id, route_report)| {
            route_status(index, settings, id, route_report, &stamp)
        }),
    );
    out.extend(status_tail(index, settings, translation, now));
    out
}

/// The part of [`status`] after the routes: BackendTLSPolicies.
pub fn status_tail(
    index: &Index,
    settings: &Settings,
    translation: &Translation,
    now: Timestamp,
) -> Vec<ObjectStatus> {
    crate::policy_status::backend_tls_policies(index, settings, translation, &now.to_string())
}

/// One route's status (any route kind): it reads only the route's report, its metadata in
/// `index` and the controller name, so a caller may keep it for as long as none of them
/// changes (see [`routes_changed`]). `now` is RFC 3339. `None` when `index` lacks the route.
pub fn route_status(
    index: &Index,
    settings: &Settings,
    id: &ObjectId,
    route_report: &RouteReport,
    now: &str,
) -> Option<ObjectStatus> {
    let key = (id.namespace.clone(), id.name.clone());
    let (meta, api_version) = match id.kind.as_str() {
        "HTTPRoute" => (index.http_routes.get(&key).map(|r| &r.metadata), API_VERSION),
        "GRPCRoute" => (index.grpc_routes.get(&key).map(|r| &r.metadata), API_VERSION),
        "TCPRoute" => (index.tcp_routes.get(&key).map(|r| &r.metadata), API_VERSION_ALPHA2),
        "UDPRoute" => (index.udp_routes.get(&key).map(|r| &r.metadata), API_VERSION_ALPHA2),
        "TLSRoute" => (index.tls_routes.get(&key).map(|r| &r.metadata), API_VERSION),
        _ => (None, API_VERSION),
    };
    let meta = meta?;
    let generation = generation(meta);
    let parents = route_report
        .parents
        .iter()
        .map(|parent| {
            let mut conds = Conditions::new(generation, now);
            conds.push_result(c::ACCEPTED, &parent.accepted, reason::ACCEPTED, "accepted");
            conds.push_result(
                c::RESOLVED_REFS,
                &parent.resolved_refs,
                reason::RESOLVED_REFS,
                "all references resolved",
            );
            if let Some(p) = &parent.partially_invalid {
                conds.push(c::PARTIALLY_INVALID, true, p.reason, p.message.clone());
            }
            RouteParentStatus {
                parent_ref: parent.parent_ref.clone(),
                controller_name: settings.controller_name.clone(),
                conditions: conds.list,
            }
        })
        .collect();
    Some(ObjectStatus {
        api_version: api_version.into(),
        kind: id.kind.clone(),
        metadata: metadata(meta, true),
        status: Status::HttpRoute(HttpRouteStatus { parents }),
    })
}

/// The routes kinds whose objects carry a route status.
const ROUTE_KINDS: [Kind; 5] =
    [Kind::HttpRoute, Kind::GrpcRoute, Kind::TcpRoute, Kind::UdpRoute, Kind::TlsRoute];

/// The routes whose [`route_status`] may differ between two translations (with the same
/// controller name): their report changed, or their object in the index did. Both are
/// persistent maps, so this costs time in proportion to the change when the two states share
/// their history.
pub fn routes_changed(
    before: (&Index, &Report),
    after: (&Index, &Report),
) -> std::collections::BTreeSet<ObjectId> {
    let mut out: std::collections::BTreeSet<ObjectId> = before
        .1
        .routes
        .diff(&after.1.routes)
        .map(|item| match item {
            imbl::ordmap::DiffItem::Add(id, _) | imbl::ordmap::DiffItem::Remove(id, _) => {
                id.clone()
            }
            imbl::ordmap::DiffItem::Update { old, .. } => old.0.clone(),
        })
        .collect();
    for kind in ROUTE_KINDS {
        for (namespace, name) in after.0.changed(before.0, kind) {
            out.insert(ObjectId::new(kind.as_str(), namespace, name));
        }
    }
    out
}

/// The part of [`status`] before the routes: every GatewayClass, Gateway and ListenerSet of
/// ours. `Programmed` is only `True` once the data plane acknowledged the generation.
pub fn status_head(
    index: &Index,
    translation: &Translation,
    data_plane: &DataPlaneReport,
    now: Timestamp,
) -> Vec<ObjectStatus> {
    let now = now.to_string();
    let report = &translation.report;
    let acked = data_plane.generation >= translation.desired.generation;
    let mut problems: BTreeMap<&ListenerId, Vec<&ListenerProblem>> = BTreeMap::new();
    for p in &data_plane.listener_problems {
        problems.entry(&p.listener).or_default().push(p);
    }
    let mut out = Vec::new();

    for (name, class_report) in &report.gateway_classes {
        let Some(class) = index.gateway_classes.get(name) else { continue };
        let mut conds = Conditions::new(generation(&class.metadata), &now);
        conds.push_result(
            c::ACCEPTED,
            &class_report.accepted,
            reason::ACCEPTED,
            "accepted by gatehouse",
        );
        out.push(ObjectStatus {
            api_version: API_VERSION.into(),
            kind: "GatewayClass".into(),
            metadata: metadata(&class.metadata, false),
            status: Status::GatewayClass(GatewayClassStatus {
                conditions: conds.list,
                supported_features: supported_features(class_report.accepted.is_ok()),
            }),
        });
    }

    let mut programmed_gateways: BTreeMap<ObjectId, bool> = BTreeMap::new();
    for (id, gateway_report) in &report.gateways {
        let Some(gateway) = index.gateways.get(&(id.namespace.clone(), id.name.clone())) else {
            continue;
        };
        let generation = generation(&gateway.metadata);
        let mut listeners = Vec::new();
        let mut invalid = Vec::new();
        let mut programmed = 0;
        for lr in &gateway_report.listeners {
            let found: &[&ListenerProblem] = problems.get(&lr.id).map_or(&[], Vec::as_slice);
            let view = listener_status(lr, found, generation, &now, acked);
            if !view.valid {
                invalid.push(lr.id.name.clone());
            }
            if view.programmed {
                programmed += 1;
            }
            listeners.push(view.status);
        }

        let mut conds = Conditions::new(generation, &now);
        let accepted = match &gateway_report.accepted {
            Err(p) => {
                conds.push(c::ACCEPTED, false, p.reason, p.message.clone());
                false
            }
            Ok(()) if invalid.len() == listeners.len() => {
                conds.push(c::ACCEPTED, false, reason::LISTENERS_NOT_VALID, "no listener is valid");
                false
            }
            Ok(()) if !invalid.is_empty() => {
                let msg = format!("invalid listeners: {}", invalid.join(", "));
                conds.push(c::ACCEPTED, true, reason::LISTENERS_NOT_VALID, msg);
                true
            }
            Ok(()) => {
                conds.push(c::ACCEPTED, true, reason::ACCEPTED, "accepted");
                true
            }
        };
        if !accepted {
            conds.push(c::PROGRAMMED, false, reason::INVALID, "the Gateway is not accepted");
        } else if let Some(p) = &gateway_report.address_problem {
            conds.push(c::PROGRAMMED, false, p.reason, p.message.clone());
        } else if programmed == 0 {
            conds.push(c::PROGRAMMED, false, reason::INVALID, "no listener is programmed");
        } else if !acked {
            conds.push(c::PROGRAMMED, false, reason::PENDING, "waiting for the data plane");
        } else {
            conds.push(c::PROGRAMMED, true, reason::PROGRAMMED, "programmed");
        }
        let gateway_programmed = conds.list.last().is_some_and(|c| c.status == "True");
        programmed_gateways.insert(id.clone(), gateway_programmed);
        // Gateway-level refs (spec.tls.backend.clientCertificateRef) have their own condition.
        if let Some(cert) = crate::translate::gateway_tls::client_certificate(index, gateway) {
            let resolved = cert.map(drop);
            conds.push_result(c::RESOLVED_REFS, &resolved, reason::RESOLVED_REFS, "resolved");
        }
        out.push(ObjectStatus {
            api_version: API_VERSION.into(),
            kind: "Gateway".into(),
            metadata: metadata(&gateway.metadata, true),
            status: Status::Gateway(GatewayStatus {
                addresses: gateway_report
                    .addresses
                    .iter()
                    .map(|ip| GatewayStatusAddress { type_: "IPAddress", value: ip.to_string() })
                    .collect(),
                conditions: conds.list,
                listeners,
                attached_listener_sets: attached_listener_sets(report, id, gateway),
            }),
        });
    }

    for (id, set_report) in &report.listener_sets {
        let Some(set) = index.listener_sets.get(&(id.namespace.clone(), id.name.clone())) else {
            continue;
        };
        let generation = generation(&set.metadata);
        let parent_programmed = programmed_gateways.get(&set_report.parent).copied();
        out.push(ObjectStatus {
            api_version: API_VERSION.into(),
            kind: "ListenerSet".into(),
            metadata: metadata(&set.metadata, true),
            status: Status::ListenerSet(listener_set_status(
                set_report,
                &problems,
                parent_programmed,
                generation,
                &now,
                acked,
            )),
        });
    }

    out
}

/// Status of a listener that no Gateway object declares (the TOML file's native form): the
/// same conditions and reasons a Gateway's listener gets, from what the data plane reported.
/// Returns the status and whether the listener is programmed.
pub fn native_listener_status(
    listener: &Listener,
    attached_routes: u32,
    data_plane: &DataPlaneReport,
    generation: u64,
    now: Timestamp,
) -> (ListenerStatus, bool) {
    let report = ListenerReport {
        id: listener.id.clone(),
        supported_kinds: vec![RouteGroupKind { group: GROUP.to_owned(), kind: "HTTPRoute".into() }],
        attached_routes,
        accepted: Ok(()),
        resolved_refs: Ok(()),
        conflicted: None,
        in_desired: true,
        port: listener.port,
        hostname: listener.hostname.clone(),
    };
    let problems: Vec<&ListenerProblem> =
        data_plane.listener_problems.iter().filter(|p| p.listener == listener.id).collect();
    let acked = data_plane.generation >= generation;
    let generation = i64::try_from(generation).unwrap_or(i64::MAX);
    let view = listener_status(&report, &problems, generation, &now.to_string(), acked);
    (view.status, view.programmed && acked)
}

/// `attachedListenerSets`: the count when the Gateway allows ListenerSets or one names it.
fn attached_listener_sets(report: &Report, id: &ObjectId, gateway: &Gateway) -> Option<u32> {
    let gateway_report = report.gateways.get(id)?;
    let allows = gateway
        .spec
        .allowed_listeners
        .as_ref()
        .is_some_and(|a| a.namespaces.from != ListenersFrom::None);
    let named = report.listener_sets.values().any(|s| &s.parent == id);
    (allows || named).then_some(gateway_report.attached_listener_sets)
}

/// A ListenerSet's conditions and its listeners' status. `parent_programmed` is whether its
/// Gateway's `Programmed` is True.
fn listener_set_status(
    set: &ListenerSetReport,
    problems: &BTreeMap<&ListenerId, Vec<&ListenerProblem>>,
    parent_programmed: Option<bool>,
    generation: i64,
    now: &str,
    acked: bool,
) -> ListenerSetStatus {
    let mut listeners = Vec::new();
    let mut programmed = 0;
    for lr in &set.listeners {
        let found: &[&ListenerProblem] = problems.get(&lr.id).map_or(&[], Vec::as_slice);
        let view = listener_status(lr, found, generation, now, acked);
        programmed += usize::from(view.programmed);
        listeners.push(view.status);
    }
    let mut conds = Conditions::new(generation, now);
    match &set.accepted {
        Err(p) => {
            conds.push(c::ACCEPTED, false, p.reason, p.message.clone());
            conds.push(c::PROGRAMMED, false, p.reason, p.message.clone());
        }
        Ok(()) => {
            let invalid: Vec<&str> = set
                .listeners
                .iter()
                .zip(&listeners)
                .filter(|(_, s)| s.conditions.first().is_some_and(|c| c.status != "True"))
                .map(|(lr, _)| lr.id.name.as_str())
                .collect();
            if invalid.is_empty() {
                conds.push(c::ACCEPTED, true, reason::ACCEPTED, "accepted");
            } else {
                let msg = format!("invalid listeners: {}", invalid.join(", "));
                conds.push(c::ACCEPTED, true, reason::LISTENERS_NOT_VALID, msg);
            }
            if programmed == 0 {
                conds.push(c::PROGRAMMED, false, reason::INVALID, "no listener is programmed");
            } else if parent_programmed == Some(false) && acked {
                conds.push(
                    c::PROGRAMMED,
                    false,
                    reason::PARENT_NOT_PROGRAMMED,
                    "the parent Gateway is not programmed",
                );
            } else if !acked {
                conds.push(c::PROGRAMMED, false, reason::PENDING, "waiting for the data plane");
            } else {
                conds.push(c::PROGRAMMED, true, reason::PROGRAMMED, "programmed");
            }
        }
    }
    ListenerSetStatus { conditions: conds.list, listeners }
}

struct ListenerView {
    status: ListenerStatus,
    /// Accepted and not conflicted.
    valid: bool,
    programmed: bool,
}

fn listener_status(
    lr: &ListenerReport,
    data_plane: &[&ListenerProblem],
    generation: i64,
    now: &str,
    acked: bool,
) -> ListenerView {
    let dp = |kind: ListenerProblemKind| data_plane.iter().find(|p| p.kind == kind);
    let conflict = lr.conflicted.clone().or_else(|| {
        dp(ListenerProblemKind::ProtocolConflict)
            .map(|p| Problem::new(reason::PROTOCOL_CONFLICT, p.message.clone()))
            .or_else(|| {
                dp(ListenerProblemKind::HostnameConflict)
                    .map(|p| Problem::new(reason::HOSTNAME_CONFLICT, p.message.clone()))
            })
    });
    let mut accepted = lr.accepted.clone();
    if accepted.is_ok() {
        if let Some(p) = &conflict {
            accepted = Err(p.clone());
        } else if let Some(p) = dp(ListenerProblemKind::PortUnavailable) {
            accepted = Err(Problem::new(reason::PORT_UNAVAILABLE, p.message.clone()));
        }
    }
    let mut resolved = lr.resolved_refs.clone();
    if let (Ok(()), Some(p)) = (&resolved, dp(ListenerProblemKind::InvalidCertificate)) {
        resolved = Err(Problem::new(reason::INVALID_CERTIFICATE_REF, p.message.clone()));
    }

    let mut conds = Conditions::new(generation, now);
    conds.push_result(c::ACCEPTED, &accepted, reason::ACCEPTED, "accepted");
    match &conflict {
        Some(p) => conds.push(c::CONFLICTED, true, p.reason, p.message.clone()),
        None => conds.push(c::CONFLICTED, false, reason::NO_CONFLICTS, "no conflicts"),
    }
    conds.push_result(
        c::RESOLVED_REFS,
        &resolved,
        reason::RESOLVED_REFS,
        "all references resolved",
    );
    let programmed = lr.in_desired && data_plane.is_empty();
    if !programmed {
        let why = data_plane
            .first()
            .map(|p| p.message.clone())
            .or_else(|| accepted.as_ref().err().map(|p| p.message.clone()))
            .or_else(|| resolved.as_ref().err().map(|p| p.message.clone()))
            .unwrap_or_else(|| "the Gateway is not accepted".into());
        conds.push(c::PROGRAMMED, false, reason::INVALID, why);
    } else if !acked {
        conds.push(c::PROGRAMMED, false, reason::PENDING, "waiting for the data plane");
    } else {
        conds.push(c::PROGRAMMED, true, reason::PROGRAMMED, "programmed");
    }
    ListenerView {
        status: ListenerStatus {
            name: lr.id.name.clone(),
            supported_kinds: lr.supported_kinds.clone(),
            attached_routes: lr.attached_routes,
            conditions: conds.list,
        },
        valid: accepted.is_ok(),
        programmed,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use gatehouse_model::{
        DataPlaneReport, ListenerId, ListenerProblem, ListenerProblemKind, ObjectId,
    };
    use serde_json::json;

    use super::*;
    use crate::fixtures::*;
    use crate::object::Object;
    use crate::translate::translate;

    fn settings() -> Settings {
        Settings {
            controller_name: CONTROLLER.into(),
            default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            backend_addressing: Default::default(),
            wasm_module_dir: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn run(objects: Vec<Object>, data_plane: &DataPlaneReport) -> Vec<serde_json::Value> {
        let index = index(objects);
        let mut translation = translate(&index, &settings());
        translation.desired.generation = 3;
        status(&index, &settings(), &translation, data_plane, now())
            .iter()
            .map(|s| serde_json::to_value(s).unwrap())
            .collect()
    }

    fn acked() -> DataPlaneReport {
        DataPlaneReport { generation: 3, listener_problems: vec![] }
    }

    /// `type -> (status, reason)` of a condition list.
    fn conds(v: &serde_json::Value) -> Vec<(String, String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().into(),
                    c["status"].as_str().unwrap().into(),
                    c["reason"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    fn c(t: &str, s: &str, r: &str) -> (String, String, String) {
        (t.into(), s.into(), r.into())
    }

    fn base() -> Vec<Object> {
        vec![
            gateway_class("gatehouse", CONTROLLER),
            gateway_class("other", "example.com/other"),
            Object::Gateway(gateway(
                "infra",
                "web",
                "gatehouse",
                vec![listener("http", 80, "HTTP"), listener("tcp", 9000, "SCTP")],
            )),
            service("infra", "echo", &[(None, 80)]),
            route("infra", "ok")
                .parent(parent(None, "web"))
                .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
                .build(),
            route("infra", "missing")
                .parent(parent(None, "web"))
                .rule(rule(vec![backend(None, "nope", Some(80), 1)]))
                .build(),
        ]
    }

    #[test]
    fn full_status_documents() {
        let out = run(base(), &acked());
        let kinds: Vec<_> = out
            .iter()
            .map(|o| (o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("GatewayClass", "gatehouse"),
                ("Gateway", "web"),
                ("HTTPRoute", "missing"),
                ("HTTPRoute", "ok")
            ]
        );

        let class = &out[0];
        assert_eq!(class["apiVersion"], "gateway.networking.k8s.io/v1");
        assert!(class["metadata"].get("namespace").is_none());
        assert_eq!(conds(&class["status"]["conditions"]), [c("Accepted", "True", "Accepted")]);
        let cond = &class["status"]["conditions"][0];
        assert_eq!(cond["observedGeneration"], 1);
        assert_eq!(cond["lastTransitionTime"], "2023-11-14T22:13:20Z");

        let gw = &out[1];
        assert_eq!(gw["metadata"], json!({"namespace": "infra", "name": "web", "generation": 1}));
        assert_eq!(gw["status"]["addresses"], json!([{"type": "IPAddress", "value": "127.0.0.1"}]));
        assert_eq!(
            conds(&gw["status"]["conditions"]),
            [c("Accepted", "True", "ListenersNotValid"), c("Programmed", "True", "Programmed")]
        );
        let http = &gw["status"]["listeners"][0];
        assert_eq!(http["name"], "http");
        assert_eq!(http["attachedRoutes"], 2);
        assert_eq!(
            http["supportedKinds"],
            json!([
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
            ])
        );
        assert_eq!(
            conds(&http["conditions"]),
            [
                c("Accepted", "True", "Accepted"),
                c("Conflicted", "False", "NoConflicts"),
                c("ResolvedRefs", "True", "ResolvedRefs"),
                c("Programmed", "True", "Programmed"),
            ]
        );
        let tcp = &gw["status"]["listeners"][1];
        assert_eq!(tcp["supportedKinds"], json!([]));
        assert_eq!(conds(&tcp["conditions"])[0], c("Accepted", "False", "UnsupportedProtocol"));
        assert_eq!(conds(&tcp["conditions"])[3], c("Programmed", "False", "Invalid"));

        let missing = &out[2]["status"]["parents"][0];
        assert_eq!(
            missing["parentRef"],
            json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "infra", "name": "web"})
        );
        assert_eq!(missing["controllerName"], CONTROLLER);
        assert_eq!(
            conds(&missing["conditions"]),
            [c("Accepted", "True", "Accepted"), c("ResolvedRefs", "False", "BackendNotFound")]
        );
        let ok = &out[3]["status"]["parents"][0];
        assert_eq!(
            conds(&ok["conditions"]),
            [c("Accepted", "True", "Accepted"), c("ResolvedRefs", "True", "ResolvedRefs")]
        );
    }

    #[test]
    fn programmed_waits_for_the_data_plane() {
        let out = run(base(), &DataPlaneReport { generation: 2, listener_problems: vec![] });
        let gw = &out[1];
        assert_eq!(conds(&gw["status"]["conditions"])[1], c("Programmed", "False", "Pending"));
        assert_eq!(
            conds(&gw["status"]["listeners"][0]["conditions"])[3],
            c("Programmed", "False", "Pending")
        );
    }

    #[test]
    fn data_plane_problems_become_listener_conditions() {
        let id =
            ListenerId { gateway: ObjectId::new("Gateway", "infra", "web"), name: "http".into() };
        let report = DataPlaneReport {
            generation: 3,
            listener_problems: vec![ListenerProblem {
                listener: id,
                kind: ListenerProblemKind::PortUnavailable,
                message: "address in use".into(),
            }],
        };
        let out = run(base(), &report);
        let gw = &out[1];
        let l = conds(&gw["status"]["listeners"][0]["conditions"]);
        assert_eq!(l[0], c("Accepted", "False", "PortUnavailable"));
        assert_eq!(l[3], c("Programmed", "False", "Invalid"));
        assert_eq!(
            conds(&gw["status"]["conditions"]),
            [c("Accepted", "False", "ListenersNotValid"), c("Programmed", "False", "Invalid")]
        );

        let report = DataPlaneReport {
            generation: 3,
            listener_problems: vec![ListenerProblem {
                listener: ListenerId {
                    gateway: ObjectId::new("Gateway", "infra", "web"),
                    name: "http".into(),
                },
                kind: ListenerProblemKind::HostnameConflict,
                message: "same hostname as Gateway other/gw listener http".into(),
            }],
        };
        let out = run(base(), &report);
        let l = conds(&out[1]["status"]["listeners"][0]["conditions"]);
        assert_eq!(l[1], c("Conflicted", "True", "HostnameConflict"));
    }

    #[test]
    fn a_generation_the_serving_data_plane_refused_is_accepted_but_not_programmed() {
        let report = DataPlaneReport {
            generation: 3,
            listener_problems: vec![ListenerProblem {
                listener: ListenerId {
                    gateway: ObjectId::new("Gateway", "infra", "web"),
                    name: "http".into(),
                },
                kind: ListenerProblemKind::NotApplied,
                message: "XDP plan of generation 3 not applied: no IPv6 source address".into(),
            }],
        };
        let out = run(base(), &report);
        let listener = &out[1]["status"]["listeners"][0]["conditions"];
        let l = conds(listener);
        assert_eq!(l[0], c("Accepted", "True", "Accepted"));
        assert_eq!(l[3], c("Programmed", "False", "Invalid"));
        let message = listener[3]["message"].as_str().unwrap_or_default();
        assert!(message.contains("no IPv6 source address"), "{message}");
    }

    #[test]
    fn route_rejections_and_class_parameters() {
        let mut class = gateway_class("gatehouse", CONTROLLER);
        if let Object::GatewayClass(gc) = &mut class {
            gc.spec.parameters_ref = Some(crate::types::ParametersReference {
                group: "example.com".into(),
                kind: "Config".into(),
                name: "x".into(),
                namespace: None,
            });
        }
        let mut objects = base();
        objects[0] = class;
        let out = run(objects, &acked());
        assert_eq!(
            conds(&out[0]["status"]["conditions"]),
            [c("Accepted", "False", "InvalidParameters")]
        );
        assert_eq!(
            conds(&out[1]["status"]["conditions"]),
            [c("Accepted", "False", "Invalid"), c("Programmed", "False", "Invalid")]
        );

        let out = run(
            vec![
                gateway_class("gatehouse", CONTROLLER),
                Object::Gateway(gateway(
                    "infra",
                    "web",
                    "gatehouse",
                    vec![listener("http", 80, "HTTP")],
                )),
                route("apps", "r").parent(parent(Some("infra"), "web")).build(),
            ],
            &acked(),
        );
        let parent = &out[2]["status"]["parents"][0];
        assert_eq!(
            conds(&parent["conditions"])[0],
            c("Accepted", "False", "NotAllowedByListeners")
        );
        assert_eq!(out[1]["status"]["listeners"][0]["attachedRoutes"], 0);
    }

    #[test]
    fn listener_sets_report_their_listeners_and_gateways_count_them() {
        let allowed = allow_listeners(
            gateway("infra", "web", "gatehouse", vec![listener("http", 80, "HTTP")]),
            crate::types::ListenersFrom::Same,
        );
        let host = |name: &str, h: &str| with_hostname(listener(name, 80, "HTTP"), h);
        let objects = vec![
            gateway_class("gatehouse", CONTROLLER),
            Object::Gateway(allowed),
            listener_set("infra", "ok", ("infra", "web"), 1, vec![host("a", "a.example")]),
            listener_set("team", "far", ("infra", "web"), 2, vec![host("b", "b.example")]),
            route("infra", "r")
                .parent(set_parent("infra", "ok", Some("a")))
                .rule(rule(vec![]))
                .build(),
        ];
        let out = run(objects, &acked());
        let find = |kind: &str, ns: &str, name: &str| {
            out.iter()
                .find(|o| {
                    o["kind"] == kind
                        && o["metadata"]["namespace"] == ns
                        && o["metadata"]["name"] == name
                })
                .unwrap_or_else(|| panic!("no status for {kind} {ns}/{name}"))
                .clone()
        };
        let gw = find("Gateway", "infra", "web");
        assert_eq!(gw["status"]["attachedListenerSets"], 1);
        let ok = find("ListenerSet", "infra", "ok");
        assert_eq!(ok["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            conds(&ok["status"]["conditions"]),
            [c("Accepted", "True", "Accepted"), c("Programmed", "True", "Programmed")]
        );
        let l = &ok["status"]["listeners"][0];
        assert_eq!(l["name"], "a");
        assert_eq!(l["attachedRoutes"], 1);
        assert_eq!(
            l["supportedKinds"],
            json!([
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
                {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"}
            ])
        );
        assert_eq!(conds(&l["conditions"])[0], c("Accepted", "True", "Accepted"));
        let far = find("ListenerSet", "team", "far");
        assert_eq!(
            conds(&far["status"]["conditions"]),
            [c("Accepted", "False", "NotAllowed"), c("Programmed", "False", "NotAllowed")]
        );
        assert_eq!(far["status"]["listeners"], json!([]));

        // A listener the data plane could not bind: the set is not programmed.
        let problem = ListenerProblem {
            listener: ListenerId {
                gateway: ObjectId::new("ListenerSet", "infra", "ok"),
                name: "a".into(),
            },
            kind: ListenerProblemKind::PortUnavailable,
            message: "address in use".into(),
        };
        let dp = DataPlaneReport { generation: 3, listener_problems: vec![problem] };
        let out = run(
            vec![
                gateway_class("gatehouse", CONTROLLER),
                Object::Gateway(allow_listeners(
                    gateway("infra", "web", "gatehouse", vec![listener("http", 80, "HTTP")]),
                    crate::types::ListenersFrom::Same,
                )),
                listener_set("infra", "ok", ("infra", "web"), 1, vec![host("a", "a.example")]),
            ],
            &dp,
        );
        let ok = out.iter().find(|o| o["kind"] == "ListenerSet").unwrap();
        let listener_conds = conds(&ok["status"]["listeners"][0]["conditions"]);
        assert_eq!(listener_conds[0], c("Accepted", "False", "PortUnavailable"));
        assert_eq!(conds(&ok["status"]["conditions"])[1], c("Programmed", "False", "Invalid"));
    }
}
