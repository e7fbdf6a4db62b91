//! backendRefs to Services, resolved through EndpointSlices the way Kubernetes does.

use std::net::{IpAddr, SocketAddr};

use gatehouse_model::{Backend, BackendEndpoints, UnresolvedBackend};

use super::Problem;
use super::grants::{self, From, To};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{BackendRef, GROUP};

/// The model backend for a backendRef, and the problem when it does not resolve.
pub(super) fn resolve(index: &Index, route_ns: &str, r: &BackendRef) -> (Backend, Option<Problem>) {
    let ns = r.namespace.as_deref().unwrap_or(route_ns);
    let name = match r.port {
        Some(port) => format!("{ns}/{}:{port}", r.name),
        None => format!("{ns}/{}", r.name),
    };
    match resolve_service(index, route_ns, ns, r) {
        Ok(addrs) => (Backend::Endpoints(BackendEndpoints { name, addrs }), None),
        Err(problem) => {
            let backend =
                Backend::Unresolved(UnresolvedBackend { name, reason: problem.message.clone() });
            (backend, Some(problem))
        }
    }
}

fn resolve_service(
    index: &Index,
    route_ns: &str,
    ns: &str,
    r: &BackendRef,
) -> Result<Vec<SocketAddr>, Problem> {
    if !(r.group.is_empty() || r.group == "core") || r.kind != "Service" {
        return Err(Problem::new(
            reason::INVALID_KIND,
            format!("backendRef kind {}/{} is not supported (only Service)", r.group, r.kind),
        ));
    }
    let from = From { group: GROUP, kind: "HTTPRoute", namespace: route_ns };
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
    let port_name = service_port.name.as_deref().unwrap_or_default();
    let protocol = service_port.protocol.as_deref().unwrap_or("TCP");

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
    Ok(addrs)
}
