//! TCP, UDP and TLS listeners and the TCPRoutes, UDPRoutes and TLSRoutes attached to them,
//! as [`L4Listener`]s for the L4 proxy, plus the routes' reports.
//!
//! Precedence follows the Gateway API: routes are taken oldest first (then by namespace and
//! name); a TCP or UDP listener forwards to its first route only, a TLS listener picks the
//! route by SNI.

use std::collections::BTreeSet;

use gatehouse_model::{
    Backend, Certificate, Hostname, L4Backend, L4Listener, L4Mode, L4Route, ListenerId,
    ListenerTls, ObjectId,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ParentReport, Problem, RouteReport, Settings, Translation, attach, backends, tls};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{GROUP, L4Rule, Listener, ParentReference, TlsMode};

/// Whether a listener protocol is served by the L4 proxy.
pub(super) fn is_l4(protocol: &str) -> bool {
    matches!(protocol, "TCP" | "UDP" | "TLS")
}

/// Whether an L4 listener needs certificates to be served (TLS, mode Terminate).
pub(super) fn needs_certificates(listener: &Listener) -> bool {
    listener.protocol == "TLS" && listener.tls.as_ref().is_none_or(|t| t.mode == TlsMode::Terminate)
}

/// A TLS listener's problems: `Accepted=False` problem, its certificates (mode Terminate)
/// and the refs that did not resolve.
pub(super) fn tls_listener(
    index: &Index,
    owner_kind: &'static str,
    owner_ns: &str,
    listener: &Listener,
) -> (Option<Problem>, Vec<Certificate>, Vec<Problem>) {
    match &listener.tls {
        None => (
            None,
            Vec::new(),
            vec![Problem::new(
                reason::INVALID_CERTIFICATE_REF,
                "a TLS listener needs tls (mode Passthrough, or Terminate with certificateRefs)",
            )],
        ),
        // Passthrough never sees the plaintext: certificateRefs are ignored.
        Some(t) if t.mode == TlsMode::Passthrough => (None, Vec::new(), Vec::new()),
        Some(t) => {
            let (certs, mut problems) =
                tls::resolve(index, owner_kind, owner_ns, &t.certificate_refs);
            if t.certificate_refs.is_empty() {
                problems.push(Problem::new(
                    reason::INVALID_CERTIFICATE_REF,
                    "a TLS listener in mode Terminate needs tls.certificateRefs",
                ));
            }
            (None, certs, problems)
        }
    }
}

/// One L4 route of any of the three kinds, as the translation reads it.
struct RouteView<'a> {
    kind: &'static str,
    meta: &'a ObjectMeta,
    parent_refs: &'a [ParentReference],
    hostnames: &'a [String],
    rules: &'a [L4Rule],
}

impl RouteView<'_> {
    fn namespace(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }

    fn created(&self) -> Option<i64> {
        self.meta.creation_timestamp.as_ref().map(|t| t.0.as_second())
    }
}

/// Adds the L4 listeners of every Gateway of ours and every TCP/UDP/TLS route attached to
/// them (after the HTTP routes: only listener counts are shared).
pub(super) fn add(index: &Index, settings: &Settings, out: &mut Translation) {
    let mut listeners: Vec<L4Listener> = Vec::new();
    for (gateway_id, report) in &out.report.gateways {
        let Some(gateway) =
            index.gateways.get(&(gateway_id.namespace.clone(), gateway_id.name.clone()))
        else {
            continue;
        };
        for (listener, lr) in gateway.spec.listeners.iter().zip(&report.listeners) {
            if !lr.in_desired || !is_l4(&listener.protocol) {
                continue;
            }
            let mode = match listener.protocol.as_str() {
                "TCP" => L4Mode::Tcp,
                "UDP" => L4Mode::Udp,
                _ if !needs_certificates(listener) => L4Mode::TlsPassthrough,
                _ => {
                    let (_, certificates, _) =
                        tls_listener(index, "Gateway", gateway.namespace(), listener);
                    L4Mode::TlsTerminate(ListenerTls { certificates })
                }
            };
            listeners.push(L4Listener {
                id: lr.id.clone(),
                addresses: report.addresses.clone(),
                port: listener.port,
                mode,
                hostname: lr.hostname.clone(),
                routes: Vec::new(),
            });
        }
    }

    let mut views: Vec<RouteView<'_>> = Vec::new();
    for r in index.tcp_routes.values() {
        views.push(RouteView {
            kind: "TCPRoute",
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            hostnames: &[],
            rules: &r.spec.rules,
        });
    }
    for r in index.udp_routes.values() {
        views.push(RouteView {
            kind: "UDPRoute",
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            hostnames: &[],
            rules: &r.spec.rules,
        });
    }
    for r in index.tls_routes.values() {
        views.push(RouteView {
            kind: "TLSRoute",
            meta: &r.metadata,
            parent_refs: &r.spec.parent_refs,
            hostnames: &r.spec.hostnames,
            rules: &r.spec.rules,
        });
    }
    views.sort_by(|a, b| {
        (a.created().unwrap_or(i64::MAX), a.namespace(), a.name()).cmp(&(
            b.created().unwrap_or(i64::MAX),
            b.namespace(),
            b.name(),
        ))
    });
    for view in &views {
        add_route(index, settings, view, out, &mut listeners);
    }
    out.desired.l4_listeners.extend(listeners);
}

fn add_route(
    index: &Index,
    settings: &Settings,
    route: &RouteView<'_>,
    out: &mut Translation,
    listeners: &mut [L4Listener],
) {
    let route_ns = route.namespace();
    let mut parents = Vec::new();
    for parent_ref in route.parent_refs {
        let mut parent_ref = parent_ref.clone();
        let gateway_ns = parent_ref.namespace.get_or_insert_with(|| route_ns.to_owned()).clone();
        if parent_ref.group != GROUP || parent_ref.kind != "Gateway" {
            continue;
        }
        let gateway_id = ObjectId::new("Gateway", gateway_ns, parent_ref.name.clone());
        if out.report.gateways.contains_key(&gateway_id) {
            parents.push((gateway_id, parent_ref));
        }
    }
    if parents.is_empty() {
        return;
    }

    let mut hostnames = Vec::new();
    let mut route_problem = None;
    for raw in route.hostnames {
        match Hostname::parse(raw) {
            Ok(h) => hostnames.push(h),
            Err(e) => route_problem = Some(Problem::new(reason::UNSUPPORTED_VALUE, e.to_string())),
        }
    }
    let (backends, unresolved) = resolve_backends(index, settings, route);
    let resolved_refs = Problem::merge(&unresolved).map_or(Ok(()), Err);

    let id = ObjectId::new(route.kind, route_ns, route.name());
    let mut attached: BTreeSet<ListenerId> = BTreeSet::new();
    let mut reports = Vec::new();
    for (gateway_id, parent_ref) in parents {
        let Some(gateway_report) = out.report.gateways.get(&gateway_id) else { continue };
        let accepted = match &route_problem {
            Some(p) => Err(p.clone()),
            None => match attach::Parent::find(index, &out.report, &gateway_id) {
                Some(parent) => attach::attach_kind(
                    index,
                    &parent,
                    route.kind,
                    route_ns,
                    &parent_ref,
                    &hostnames,
                ),
                None => continue,
            },
        };
        let found: Vec<(usize, ListenerId)> = match &accepted {
            Ok(found) => {
                found.iter().map(|&i| (i, gateway_report.listeners[i].id.clone())).collect()
            }
            Err(_) => Vec::new(),
        };
        let parent_listeners: Vec<ListenerId> = found.iter().map(|(_, lid)| lid.clone()).collect();
        for (i, lid) in found {
            if attached.insert(lid) {
                count(out, &gateway_id, i);
            }
        }
        let accepted = accepted.map(|_| ());
        reports.push(ParentReport {
            listeners: parent_listeners,
            parent_ref,
            accepted,
            resolved_refs: resolved_refs.clone(),
            partially_invalid: None,
        });
    }
    for listener in listeners.iter_mut().filter(|l| attached.contains(&l.id)) {
        let hostnames = match &listener.hostname {
            None => hostnames.clone(),
            Some(lh) if hostnames.is_empty() => vec![lh.clone()],
            Some(lh) => hostnames.iter().filter_map(|h| lh.intersect(h)).collect(),
        };
        listener.routes.push(L4Route { id: id.clone(), hostnames, backends: backends.clone() });
    }
    out.report.routes.insert(id, RouteReport { parents: reports });
}

fn count(out: &mut Translation, gateway: &ObjectId, i: usize) {
    if let Some(l) = out.report.gateways.get_mut(gateway).and_then(|g| g.listeners.get_mut(i)) {
        l.attached_routes += 1;
    }
}

/// Every rule's backends, weighted: a backendRef's weight is shared by its endpoints (so a
/// Service with more pods does not take more than its weight).
fn resolve_backends(
    index: &Index,
    settings: &Settings,
    route: &RouteView<'_>,
) -> (Vec<L4Backend>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for r in route.rules.iter().flat_map(|rule| &rule.backend_refs) {
        let (backend, problem) = backends::resolve_from(
            index,
            settings.backend_addressing,
            route.kind,
            route.namespace(),
            &r.as_backend_ref(),
        );
        problems.extend(problem);
        if let Backend::Endpoints(e) = backend {
            let n = u32::try_from(e.addrs.len()).unwrap_or(u32::MAX).max(1);
            for addr in e.addrs {
                // Scaled so that integer shares stay close to the asked ratio.
                let weight =
                    if r.weight == 0 { 0 } else { (r.weight.saturating_mul(1000) / n).max(1) };
                out.push(L4Backend { addr, weight });
            }
        }
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::fixtures::*;
    use crate::object::Object;

    fn settings() -> Settings {
        Settings {
            controller_name: CONTROLLER.into(),
            default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            backend_addressing: Default::default(),
            wasm_module_dir: None,
        }
    }

    fn yaml(text: &str) -> Vec<Object> {
        let loaded = crate::loader::load_str(std::path::Path::new("m.yaml"), text);
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        loaded.objects
    }

    const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: tcp, port: 5432, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}
  - {name: udp, port: 5432, protocol: UDP, allowedRoutes: {namespaces: {from: All}}}
  - name: pass
    port: 443
    protocol: TLS
    hostname: "*.pass.test"
    tls: {mode: Passthrough}
    allowedRoutes: {namespaces: {from: All}}
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: infra}
spec:
  ports:
  - {name: pg, port: 5432, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: infra, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 15432, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints: [{addresses: ["10.0.0.1", "10.0.0.2"]}]
"#;

    #[test]
    fn tcp_udp_and_tls_routes_attach_to_their_listeners_only() {
        let mut text = GATEWAY.to_owned();
        text.push_str(
            r#"---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: pg, namespace: infra}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules: [{backendRefs: [{name: db, port: 5432, weight: 3}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {name: dns, namespace: infra}
spec:
  parentRefs: [{name: edge}]
  rules: [{backendRefs: [{name: db, port: 53}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: site, namespace: apps}
spec:
  parentRefs: [{name: edge, namespace: infra}]
  hostnames: ["a.pass.test", "other.test"]
  rules: [{backendRefs: [{name: db, namespace: infra, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: onhttp, namespace: infra}
spec:
  parentRefs: [{name: edge, sectionName: http}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
"#,
        );
        let index = index(yaml(&text));
        let t = super::super::translate(&index, &settings());
        let l4 = &t.desired.l4_listeners;
        assert_eq!(l4.len(), 3, "{l4:#?}");
        assert!(t.desired.listeners.iter().all(|l| l.id.name == "http"));

        let tcp = l4.iter().find(|l| l.id.name == "tcp").unwrap();
        assert_eq!(tcp.mode, L4Mode::Tcp);
        assert_eq!(tcp.routes.len(), 1);
        let b: Vec<(String, u32)> =
            tcp.routes[0].backends.iter().map(|b| (b.addr.to_string(), b.weight)).collect();
        assert_eq!(b, [("10.0.0.1:15432".into(), 1500), ("10.0.0.2:15432".into(), 1500)]);

        let udp = l4.iter().find(|l| l.id.name == "udp").unwrap();
        assert_eq!(udp.routes[0].backends[0].addr.to_string(), "10.0.0.1:5353");
        assert_eq!(udp.routes[0].id, ObjectId::new("UDPRoute", "infra", "dns"));

        let pass = l4.iter().find(|l| l.id.name == "pass").unwrap();
        assert_eq!(pass.mode, L4Mode::TlsPassthrough);
        // A cross-namespace backend without a ReferenceGrant: attached, but no backends.
        assert!(pass.routes[0].backends.is_empty());
        let names: Vec<&str> = pass.routes[0].hostnames.iter().map(|h| h.as_str()).collect();
        assert_eq!(names, ["a.pass.test"]);
        let site = &t.report.routes[&ObjectId::new("TLSRoute", "apps", "site")];
        assert_eq!(site.parents[0].accepted, Ok(()));
        assert_eq!(site.parents[0].resolved_refs.as_ref().unwrap_err().reason, "RefNotPermitted");

        // A TLSRoute on an HTTP listener is not allowed there.
        let bad = &t.report.routes[&ObjectId::new("TLSRoute", "infra", "onhttp")];
        assert_eq!(bad.parents[0].accepted.as_ref().unwrap_err().reason, "NotAllowedByListeners");

        let edge = &t.report.gateways[&ObjectId::new("Gateway", "infra", "edge")];
        let counts: Vec<(String, u32)> =
            edge.listeners.iter().map(|l| (l.id.name.clone(), l.attached_routes)).collect();
        assert_eq!(
            counts,
            [("tcp".into(), 1), ("udp".into(), 1), ("pass".into(), 1), ("http".into(), 0)]
        );
        assert!(edge.listeners.iter().all(|l| l.conflicted.is_none()), "TCP and UDP share 5432");
    }

    #[test]
    fn tls_terminate_needs_certificates_and_mixed_modes_share_a_port() {
        let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gatehouse}
spec: {controllerName: gatehouse.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: gatehouse
  listeners:
  - {name: pass, port: 443, protocol: TLS, hostname: pass.test, tls: {mode: Passthrough}}
  - {name: term, port: 443, protocol: TLS, hostname: term.test, tls: {mode: Terminate, certificateRefs: [{name: missing}]}}
  - {name: nocert, port: 8443, protocol: TLS, tls: {mode: Terminate}}
"#;
        let index = index(yaml(text));
        let t = super::super::translate(&index, &settings());
        let edge = &t.report.gateways[&ObjectId::new("Gateway", "infra", "edge")];
        let pass = &edge.listeners[0];
        assert!(pass.in_desired && pass.conflicted.is_none(), "{pass:?}");
        let term = &edge.listeners[1];
        assert!(!term.in_desired, "no usable certificate");
        assert_eq!(term.resolved_refs.as_ref().unwrap_err().reason, "InvalidCertificateRef");
        assert!(term.conflicted.is_none(), "two TLS modes on one port are not a conflict");
        assert_eq!(
            edge.listeners[2].resolved_refs.as_ref().unwrap_err().reason,
            "InvalidCertificateRef"
        );
        assert_eq!(t.desired.l4_listeners.len(), 1);
    }
}
