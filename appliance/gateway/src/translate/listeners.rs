//! A Gateway's addresses and listeners: protocols, hostnames, route kinds, TLS, conflicts.

use std::collections::BTreeMap;
use std::net::IpAddr;

use gatehouse_ipam::{Allocation, Failure};
use gatehouse_model::{
    Hostname, Listener as ModelListener, ListenerId, ListenerTls, ObjectId, Protocol,
};

use super::{GatewayReport, ListenerReport, Problem, Settings, tls};
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
        None => {
            let (addresses, unsupported) = addresses(gateway, settings.default_address);
            (addresses, unsupported, None)
        }
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
    let client_validation = gateway.spec.tls.as_ref().is_some_and(|t| t.frontend.is_some());

    let mut reports = Vec::new();
    let mut certificates = Vec::new();
    for listener in &gateway.spec.listeners {
        let id = ListenerId { gateway: gateway_id.clone(), name: listener.name.clone() };
        let (report, certs) = translate_listener(index, gateway, listener, id, client_validation);
        reports.push(report);
        certificates.push(certs);
    }
    mark_conflicts(&gateway.spec.listeners, &mut reports);

    let mut model = Vec::new();
    for ((listener, report), certificates) in
        gateway.spec.listeners.iter().zip(&mut reports).zip(certificates)
    {
        let protocol = match listener.protocol.as_str() {
            "HTTP" => Protocol::Http,
            _ => Protocol::Https,
        };
        let has_certs = protocol == Protocol::Http || !certificates.is_empty();
        report.in_desired = accepted.is_ok()
            && report.accepted.is_ok()
            && report.conflicted.is_none()
            && has_certs
            && !addresses.is_empty();
        if report.in_desired {
            model.push(ModelListener {
                id: report.id.clone(),
                addresses: addresses.clone(),
                port: listener.port,
                protocol,
                hostname: report.hostname.clone(),
                tls: (protocol == Protocol::Https).then_some(ListenerTls { certificates }),
            });
        }
    }
    let address_problem = not_assigned;
    (GatewayReport { accepted, addresses, address_problem, listeners: reports }, model)
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

/// The IPs to bind: `spec.addresses` of type IPAddress, else the default.
fn addresses(gateway: &Gateway, default: IpAddr) -> (Vec<IpAddr>, Option<Problem>) {
    let mut ips = Vec::new();
    let mut problems = Vec::new();
    for address in &gateway.spec.addresses {
        if address.kind != "IPAddress" {
            problems.push(format!("address type {} is not supported", address.kind));
        } else if address.value.is_empty() {
            // An empty value asks the implementation to choose.
            ips.push(default);
        } else {
            match address.value.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => problems.push(format!("{:?} is not an IP address", address.value)),
            }
        }
    }
    if ips.is_empty() {
        ips.push(default);
    }
    ips.sort();
    ips.dedup();
    let problem = (!problems.is_empty())
        .then(|| Problem::new(reason::UNSUPPORTED_ADDRESS, problems.join("; ")));
    (ips, problem)
}

fn translate_listener(
    index: &Index,
    gateway: &Gateway,
    listener: &Listener,
    id: ListenerId,
    client_validation: bool,
) -> (ListenerReport, Vec<gatehouse_model::Certificate>) {
    let mut accepted = Ok(());
    let mut resolved = Vec::new();
    let mut certificates = Vec::new();

    let supported = matches!(listener.protocol.as_str(), "HTTP" | "HTTPS");
    if !supported {
        accepted = Err(Problem::new(
            reason::UNSUPPORTED_PROTOCOL,
            format!("protocol {} is not supported (HTTP and HTTPS are)", listener.protocol),
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
    let http_kinds = [route_kind("HTTPRoute"), route_kind("GRPCRoute")];
    let supported_kinds = if !supported {
        Vec::new()
    } else if listener.allowed_routes.kinds.is_empty() {
        http_kinds.to_vec()
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

    if supported && listener.protocol == "HTTPS" {
        if client_validation {
            accepted = accepted.and(Err(Problem::new(
                reason::UNSUPPORTED_VALUE,
                "client certificate validation (spec.tls.frontend) is not supported",
            )));
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
                    tls::resolve(index, gateway.namespace(), &tls.certificate_refs);
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
fn mark_conflicts(listeners: &[Listener], reports: &mut [ListenerReport]) {
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, report) in reports.iter().enumerate() {
        if report.accepted.is_ok() {
            by_port.entry(report.port).or_default().push(i);
        }
    }
    for (port, members) in by_port {
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
