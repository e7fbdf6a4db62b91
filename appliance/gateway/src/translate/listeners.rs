//! A Gateway's addresses and listeners: protocols, hostnames, route kinds, TLS, conflicts.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gatehouse_ipam::{Allocation, Failure};
use gatehouse_model::{
    Hostname, Listener as ModelListener, ListenerId, ListenerTls, ObjectId, Protocol,
};

use super::{GatewayReport, ListenerReport, Problem, Settings, gateway_tls, tls};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{GROUP, Gateway, Listener, RouteGroupKind, TlsMode};

/// The report of one Gateway and the listeners it contributes to the model.
pub(super) fn translate(
    index: &Index,
    settings: &Settings,
    gateway: &Gateway,
    class: &Result<(), Problem>,
    allocation: Option<&Allocation>,
) -> (GatewayReport, Vec<ModelListener>) {
    let gateway_id = ObjectId::new("Gateway", gateway.namespace(), gateway.name());
    let (addresses, unsupported, not_assigned) = match allocation {
        None => addresses(gateway, settings.default_address),
        Some(allocation) => assigned(gateway, &gateway_id, allocation),
    };
    let accepted = match (class, unsupported) {
        (Err(p), _) => Err(Problem::new(
            reason::INVALID,
            format!(
                "GatewayClass {} is not accepted: {}",
                gateway.spec.gateway_class_name, p.message
            ),
        )),
        (Ok(()), Some(p)) => Err(p),
        (Ok(()), None) => Ok(()),
    };
    let mut reports = Vec::new();
    let mut certificates = Vec::new();
    for listener in &gateway.spec.listeners {
        let id = ListenerId { gateway: gateway_id.clone(), name: listener.name.clone() };
        let (report, certs) =
            translate_listener(index, ("Gateway", gateway.namespace()), gateway, listener, id);
        reports.push(report);
        certificates.push(certs);
    }
    mark_conflicts(&gateway.spec.listeners, &mut reports);

    let mut model = Vec::new();
    for ((listener, report), certificates) in
        gateway.spec.listeners.iter().zip(&mut reports).zip(certificates)
    {
        model.extend(to_model(listener, report, certificates, accepted.is_ok(), &addresses));
    }
    let address_problem = not_assigned;
    let report = GatewayReport {
        accepted,
        addresses,
        address_problem,
        listeners: reports,
        attached_listener_sets: 0,
    };
    (report, model)
}

/// The model listener of a valid listener, and whether it is in the model
/// (`report.in_desired`): its owner accepted, itself accepted and not conflicted, with a
/// certificate if HTTPS and an address to bind.
pub(super) fn to_model(
    listener: &Listener,
    report: &mut ListenerReport,
    certificates: Vec<gatehouse_model::Certificate>,
    owner_accepted: bool,
    addresses: &[IpAddr],
) -> Option<ModelListener> {
    let protocol = match listener.protocol.as_str() {
        "HTTP" => Protocol::Http,
        _ => Protocol::Https,
    };
    // TCP, UDP and TLS listeners go to the L4 proxy (see `l4_routes`), not to the model's
    // HTTP listeners.
    let l4 = super::l4_routes::is_l4(&listener.protocol);
    let has_certs = protocol == Protocol::Http
        || !certificates.is_empty()
        || (l4 && !super::l4_routes::needs_certificates(listener));
    report.in_desired = owner_accepted
        && report.accepted.is_ok()
        && report.conflicted.is_none()
        && has_certs
        && !addresses.is_empty();
    (report.in_desired && !l4).then(|| ModelListener {
        id: report.id.clone(),
        addresses: addresses.to_vec(),
        port: listener.port,
        protocol,
        hostname: report.hostname.clone(),
        tls: (protocol == Protocol::Https).then_some(ListenerTls { certificates }),
    })
}

/// The addresses LB-IPAM handed the Gateway, and its failures as problems: a requested
/// address outside every pool (or not of type IPAddress) is `UnsupportedAddress` (not
/// accepted); anything else the allocator could not do is `AddressNotAssigned` (not
/// programmed).
fn assigned(
    gateway: &Gateway,
    id: &ObjectId,
    allocation: &Allocation,
) -> (Vec<IpAddr>, Option<Problem>, Option<Problem>) {
    let mut unsupported = Vec::new();
    for address in &gateway.spec.addresses {
        if address.kind != "IPAddress" {
            unsupported.push(format!("address type {} is not supported", address.kind));
        } else if !address.value.is_empty() && address.value.parse::<IpAddr>().is_err() {
            unsupported.push(format!("{:?} is not an IP address", address.value));
        }
    }
    let mut not_assigned = Vec::new();
    let outcome = allocation.outcome(id);
    for failure in outcome.map_or(&[][..], |o| o.failures.as_slice()) {
        match failure {
            Failure::UnsupportedAddress { .. } => unsupported.push(failure.to_string()),
            _ => not_assigned.push(failure.to_string()),
        }
    }
    let addresses = outcome.map(|o| o.ips()).unwrap_or_default();
    if addresses.is_empty() && not_assigned.is_empty() && unsupported.is_empty() {
        not_assigned.push("no address was assigned".to_owned());
    }
    let problem = |reason, list: Vec<String>| {
        (!list.is_empty()).then(|| Problem::new(reason, list.join("; ")))
    };
    (
        addresses,
        problem(reason::UNSUPPORTED_ADDRESS, unsupported),
        problem(reason::ADDRESS_NOT_ASSIGNED, not_assigned),
    )
}

/// The IPs to bind: `spec.addresses` of type IPAddress (an empty value: the default), or the
/// default when there are none. Returns them, the unsupported entries (not accepted) and the
/// unusable ones (not programmed, not bound).
///
/// Unusable: an address no listening socket can serve (unspecified, multicast, broadcast).
/// Any unicast address is bound, also one not (yet) on an interface of this host (see the
/// proxy's `IP_FREEBIND`), so traffic starts as soon as it is routed here.
fn addresses(
    gateway: &Gateway,
    default: IpAddr,
) -> (Vec<IpAddr>, Option<Problem>, Option<Problem>) {
    let mut ips = Vec::new();
    let mut problems = Vec::new();
    let mut unusable = Vec::new();
    for address in &gateway.spec.addresses {
        if address.kind != "IPAddress" {
            problems.push(format!("address type {} is not supported", address.kind));
        } else if address.value.is_empty() {
            // An empty value asks the implementation to choose.
            ips.push(default);
        } else {
            match address.value.parse::<IpAddr>() {
                Ok(ip) if !usable(ip) => {
                    unusable.push(format!("{ip} cannot be served (not a unicast address)"));
                }
                Ok(ip) => ips.push(ip),
                Err(_) => problems.push(format!("{:?} is not an IP address", address.value)),
            }
        }
    }
    if ips.is_empty() && unusable.is_empty() {
        ips.push(default);
    }
    ips.sort();
    ips.dedup();
    let problem = (!problems.is_empty())
        .then(|| Problem::new(reason::UNSUPPORTED_ADDRESS, problems.join("; ")));
    let unusable = (!unusable.is_empty())
        .then(|| Problem::new(reason::ADDRESS_NOT_USABLE, unusable.join("; ")));
    (ips, problem, unusable)
}

/// Whether a listening socket on `ip` can receive connections.
fn usable(ip: IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

/// One listener's report and certificates; `namespace` is its owner's (a Gateway or a
/// ListenerSet), where certificate refs point by default; `gateway` is the owner or the
/// set's parent (its frontend TLS settings apply by port).
pub(super) fn translate_listener(
    index: &Index,
    (owner_kind, namespace): (&'static str, &str),
    gateway: &Gateway,
    listener: &Listener,
    id: ListenerId,
) -> (ListenerReport, Vec<gatehouse_model::Certificate>) {
    let mut accepted = Ok(());
    let mut resolved = Vec::new();
    let mut certificates = Vec::new();

    let supported = matches!(listener.protocol.as_str(), "HTTP" | "HTTPS" | "TCP" | "UDP" | "TLS");
    if !supported {
        accepted = Err(Problem::new(
            reason::UNSUPPORTED_PROTOCOL,
            format!(
                "protocol {} is not supported (HTTP, HTTPS, TLS, TCP and UDP are)",
                listener.protocol
            ),
        ));
    }

    let hostname = match listener.hostname.as_deref() {
        None | Some("") => None,
        Some(raw) => match Hostname::parse(raw) {
            Ok(h) => Some(h),
            Err(e) => {
                accepted =
                    accepted.and(Err(Problem::new(reason::UNSUPPORTED_VALUE, e.to_string())));
                None
            }
        },
    };

    let route_kind = |kind: &str| RouteGroupKind { group: GROUP.to_owned(), kind: kind.to_owned() };
    // The route kinds a listener of this protocol serves (HTTP and HTTPS: both HTTP kinds).
    let http_kinds: Vec<RouteGroupKind> = match listener.protocol.as_str() {
        "TCP" => vec![route_kind("TCPRoute")],
        "UDP" => vec![route_kind("UDPRoute")],
        "TLS" => vec![route_kind("TLSRoute")],
        _ => vec![route_kind("HTTPRoute"), route_kind("GRPCRoute")],
    };
    let supported_kinds = if !supported {
        Vec::new()
    } else if listener.allowed_routes.kinds.is_empty() {
        http_kinds.clone()
    } else {
        let mut kinds = Vec::new();
        for kind in &listener.allowed_routes.kinds {
            if http_kinds.contains(kind) {
                if !kinds.contains(kind) {
                    kinds.push(kind.clone());
                }
            } else {
                resolved.push(Problem::new(
                    reason::INVALID_ROUTE_KINDS,
                    format!("route kind {}/{} is not supported", kind.group, kind.kind),
                ));
            }
        }
        kinds
    };

    if listener.protocol == "TLS" {
        let (problem, certs, problems) =
            super::l4_routes::tls_listener(index, owner_kind, namespace, listener);
        if let Some(p) = problem {
            accepted = accepted.and(Err(p));
        }
        certificates = certs;
        resolved.extend(problems);
    }

    if supported && listener.protocol == "HTTPS" {
        if let Some(frontend) = gateway_tls::frontend(index, gateway, listener) {
            if owner_kind == "ListenerSet" {
                // Refused rather than served without the validation the Gateway asks for.
                accepted = accepted.and(Err(Problem::new(
                    reason::UNSUPPORTED_VALUE,
                    "client certificate validation (the parent Gateway's spec.tls.frontend) is \
                     not supported on ListenerSet listeners",
                )));
            }
            if frontend.roots.is_empty() {
                accepted = accepted.and(Err(Problem::new(
                    reason::NO_VALID_CA_CERTIFICATE,
                    "client certificate validation has no usable CA certificate",
                )));
            }
            resolved.extend(frontend.problems);
        }
        match &listener.tls {
            None => resolved.push(Problem::new(
                reason::INVALID_CERTIFICATE_REF,
                "an HTTPS listener needs tls.certificateRefs",
            )),
            Some(tls) if tls.mode == TlsMode::Passthrough => {
                accepted = accepted.and(Err(Problem::new(
                    reason::UNSUPPORTED_VALUE,
                    "TLS mode Passthrough is not supported for HTTPS",
                )));
            }
            Some(tls) => {
                if tls.certificate_refs.is_empty() {
                    resolved.push(Problem::new(
                        reason::INVALID_CERTIFICATE_REF,
                        "an HTTPS listener needs tls.certificateRefs",
                    ));
                }
                let (certs, problems) =
                    tls::resolve(index, owner_kind, namespace, &tls.certificate_refs);
                certificates = certs;
                resolved.extend(problems);
            }
        }
    }

    let report = ListenerReport {
        id,
        supported_kinds,
        attached_routes: 0,
        accepted,
        resolved_refs: Problem::merge(&resolved).map_or(Ok(()), Err),
        conflicted: None,
        in_desired: false,
        port: listener.port,
        hostname,
    };
    (report, certificates)
}

/// Listeners that are not distinct: one port with two protocols, or the same port, protocol
/// and hostname twice. Every listener of a conflicting set is marked; none wins.
pub(super) fn mark_conflicts(listeners: &[Listener], reports: &mut [ListenerReport]) {
    // UDP listeners share port numbers with TCP-based ones without conflict.
    let mut by_port: BTreeMap<(u16, bool), Vec<usize>> = BTreeMap::new();
    for (i, report) in reports.iter().enumerate() {
        if report.accepted.is_ok() {
            let udp = listeners[i].protocol == "UDP";
            by_port.entry((report.port, udp)).or_default().push(i);
        }
    }
    for ((port, _), members) in by_port {
        let protocols: Vec<&str> =
            members.iter().map(|&i| listeners[i].protocol.as_str()).collect();
        if protocols.iter().any(|p| *p != protocols[0]) {
            for &i in &members {
                reports[i].conflicted = Some(Problem::new(
                    reason::PROTOCOL_CONFLICT,
                    format!(
                        "port {port} is used with more than one protocol ({})",
                        protocols.join(", ")
                    ),
                ));
            }
            continue;
        }
        for &i in &members {
            let same =
                members.iter().filter(|&&j| reports[j].hostname == reports[i].hostname).count();
            if same > 1 {
                let host = reports[i].hostname.as_ref().map_or("(any)", |h| h.as_str()).to_owned();
                reports[i].conflicted = Some(Problem::new(
                    reason::HOSTNAME_CONFLICT,
                    format!("another listener on port {port} has hostname {host}"),
                ));
            }
        }
    }
}
