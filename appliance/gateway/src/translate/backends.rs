//! backendRefs to Services, resolved through EndpointSlices the way Kubernetes does, or to
//! every usable node and the Service port's nodePort (see [`BackendAddressing`]).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use gatehouse_model::{Backend, BackendEndpoints, BackendProtocol, UnresolvedBackend};
use k8s_openapi::api::core::v1::Node;

use super::grants::{self, From, To};
use super::{BackendAddressing, Problem, RouteKind};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{BackendRef, GROUP};

/// The Service port `appProtocol` that asks for HTTP/2 with prior knowledge (GEP-1911).
pub const APP_PROTOCOL_H2C: &str = "kubernetes.io/h2c";

/// The model backend for a backendRef of a route of `kind`, and the problem when it does not
/// resolve. GRPCRoute backends are spoken to over h2c; HTTPRoute backends over h2c when the
/// Service port's `appProtocol` is [`APP_PROTOCOL_H2C`], else HTTP/1.1 (which also carries
/// WebSocket upgrades, `kubernetes.io/ws`).
pub(super) fn resolve(
    index: &Index,
    addressing: BackendAddressing,
    kind: RouteKind,
    route_ns: &str,
    r: &BackendRef,
) -> (Backend, Option<Problem>) {
    resolve_from(index, addressing, kind.as_str(), route_ns, r)
}

/// [`resolve`] for a backendRef of a route of `route_kind` (what ReferenceGrants name).
pub(super) fn resolve_from(
    index: &Index,
    addressing: BackendAddressing,
    route_kind: &str,
    route_ns: &str,
    r: &BackendRef,
) -> (Backend, Option<Problem>) {
    let ns = r.namespace.as_deref().unwrap_or(route_ns);
    let name = match r.port {
        Some(port) => format!("{ns}/{}:{port}", r.name),
        None => format!("{ns}/{}", r.name),
    };
    match resolve_service(index, addressing, route_kind, route_ns, ns, r) {
        Ok((addrs, port_name, app_protocol)) => {
            // A policy that cannot be used fails the backend's requests (5xx) rather than
            // falling back to cleartext; its own status says why, not the route's.
            let tls = match super::backend_tls::for_backend(index, ns, &r.name, &port_name) {
                None => None,
                Some(Ok(tls)) => Some(tls),
                Some(Err(p)) => {
                    let backend =
                        Backend::Unresolved(UnresolvedBackend { name, reason: p.message });
                    return (backend, None);
                }
            };
            let h2c = route_kind == RouteKind::Grpc.as_str()
                || app_protocol.as_deref() == Some(APP_PROTOCOL_H2C);
            let protocol = if h2c { BackendProtocol::H2c } else { BackendProtocol::Http1 };
            (Backend::Endpoints(BackendEndpoints { name, addrs, tls, protocol }), None)
        }
        Err(problem) => {
            let backend =
                Backend::Unresolved(UnresolvedBackend { name, reason: problem.message.clone() });
            (backend, Some(problem))
        }
    }
}

/// The addresses of a Service backendRef and its port's `appProtocol`.
fn resolve_service(
    index: &Index,
    addressing: BackendAddressing,
    route_kind: &str,
    route_ns: &str,
    ns: &str,
    r: &BackendRef,
) -> Result<(Vec<SocketAddr>, String, Option<String>), Problem> {
    if !(r.group.is_empty() || r.group == "core") || r.kind != "Service" {
        return Err(Problem::new(
            reason::INVALID_KIND,
            format!("backendRef kind {}/{} is not supported (only Service)", r.group, r.kind),
        ));
    }
    let from = From { group: GROUP, kind: route_kind, namespace: route_ns };
    let to = To { group: "", kind: "Service", namespace: ns, name: &r.name };
    if !grants::permits(index, &from, &to) {
        return Err(Problem::new(
            reason::REF_NOT_PERMITTED,
            format!(
                "Service {ns}/{} is in another namespace and no ReferenceGrant allows it",
                r.name
            ),
        ));
    }
    let not_found = |message: String| Problem::new(reason::BACKEND_NOT_FOUND, message);
    let port = r
        .port
        .ok_or_else(|| not_found(format!("backendRef to Service {ns}/{} needs a port", r.name)))?;
    let service = index
        .services
        .get(&(ns.to_owned(), r.name.clone()))
        .ok_or_else(|| not_found(format!("Service {ns}/{} does not exist", r.name)))?;
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Err(not_found(format!(
            "Service {ns}/{} is of type ExternalName, which is not supported",
            r.name
        )));
    }
    let service_port = spec
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.port == i32::from(port)))
        .ok_or_else(|| not_found(format!("Service {ns}/{} has no port {port}", r.name)))?;
    let port_name = service_port.name.clone().unwrap_or_default();
    let port_name = port_name.as_str();
    let app_protocol = service_port.app_protocol.clone();
    let protocol = service_port.protocol.as_deref().unwrap_or("TCP");

    if addressing == BackendAddressing::NodePort {
        let node_port = service_port
            .node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                let type_ = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
                not_found(format!(
                    "Service {ns}/{} port {port} has no nodePort (type {type_}); \
                     backend_addressing = \"nodeport\" needs a NodePort or LoadBalancer Service",
                    r.name
                ))
            })?;
        // With externalTrafficPolicy Local a node forwards only to its own pods: only nodes
        // that run a ready endpoint of the Service answer.
        let local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
        let hosting = local.then(|| nodes_with_ready_endpoints(index, ns, &r.name));
        let mut addrs: Vec<SocketAddr> = index
            .nodes
            .values()
            .filter(|node| usable(node))
            .filter(|node| {
                hosting.as_ref().is_none_or(|h| {
                    node.metadata.name.as_deref().is_some_and(|name| h.contains(name))
                })
            })
            .flat_map(|node| node_addresses(node))
            .map(|ip| SocketAddr::new(ip, node_port))
            .collect();
        addrs.sort();
        addrs.dedup();
        return Ok((addrs, port_name.to_owned(), app_protocol));
    }

    let mut addrs = Vec::new();
    for slice in index.endpoint_slices_of(ns, &r.name) {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        // The slice port is matched by the Service port's name ("" when unnamed).
        let Some(target) = slice.ports.iter().flatten().find_map(|p| {
            let same_name = p.name.as_deref().unwrap_or_default() == port_name;
            let same_protocol = p.protocol.as_deref().unwrap_or("TCP") == protocol;
            (same_name && same_protocol).then_some(p.port).flatten()
        }) else {
            continue;
        };
        let Ok(target) = u16::try_from(target) else { continue };
        for endpoint in slice.endpoints.iter().flatten() {
            // A missing `ready` counts as ready.
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    addrs.push(SocketAddr::new(ip, target));
                }
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    Ok((addrs, port_name.to_owned(), app_protocol))
}

/// The label that keeps a node out of external load balancers' backends.
pub const EXCLUDE_FROM_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Whether traffic may be sent to a node: Ready, not cordoned (`spec.unschedulable`, so that
/// cordoning before maintenance drains the appliance's traffic too), not being deleted, and
/// not labelled [`EXCLUDE_FROM_LB_LABEL`].
fn usable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let excluded =
        node.metadata.labels.as_ref().is_some_and(|l| l.contains_key(EXCLUDE_FROM_LB_LABEL));
    ready && !cordoned && !excluded && node.metadata.deletion_timestamp.is_none()
}

/// A node's InternalIPs, or its ExternalIPs when it has no InternalIP.
fn node_addresses(node: &Node) -> Vec<IpAddr> {
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_deref()).unwrap_or_default();
    let of = |type_: &str| -> Vec<IpAddr> {
        addresses
            .iter()
            .filter(|a| a.type_ == type_)
            .filter_map(|a| a.address.parse().ok())
            .collect()
    };
    let internal = of("InternalIP");
    if internal.is_empty() { of("ExternalIP") } else { internal }
}

/// Nodes (by name) that run a ready endpoint of the Service.
fn nodes_with_ready_endpoints(index: &Index, ns: &str, service: &str) -> BTreeSet<String> {
    index
        .endpoint_slices_of(ns, service)
        .flat_map(|slice| slice.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.clone())
        .collect()
}
