//! ListenerSets: the listeners other teams attach to a Gateway that allows them.
//!
//! The Gateway's merged listener list is its own listeners, then each attached ListenerSet's,
//! oldest first (creation time, then `namespace/name`). A ListenerSet listener that is not
//! distinct from one earlier in that list (same port with another protocol, or same port and
//! hostname) is conflicted and left out; the earlier one keeps serving.

use gatehouse_model::{Hostname, Listener as ModelListener, ListenerId, ObjectId};

use super::listeners::{mark_conflicts, to_model, translate_listener};
use super::{GatewayReport, ListenerSetReport, Problem};
use crate::conditions::reason;
use crate::index::Index;
use crate::types::{GROUP, Gateway, ListenerSet, ListenersFrom};

/// A listener already in the merged list: port, protocol, hostname.
type Taken = (u16, String, Option<Hostname>);

/// The reports of the ListenerSets whose parentRef names `gateway`, and the listeners they
/// add to the model. Counts the attached ones in `report.attached_listener_sets`.
pub(super) fn translate(
    index: &Index,
    gateway: &Gateway,
    report: &mut GatewayReport,
) -> (Vec<(ObjectId, ListenerSetReport)>, Vec<ModelListener>) {
    let gateway_id = ObjectId::new("Gateway", gateway.namespace(), gateway.name());
    let mut sets: Vec<&ListenerSet> =
        index.listener_sets.values().map(|s| &**s).filter(|s| names(s, gateway)).collect();
    sets.sort_by_key(|s| {
        let created = s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (created.is_none(), created, s.namespace().to_owned(), s.name().to_owned())
    });

    let mut taken: Vec<Taken> = gateway
        .spec
        .listeners
        .iter()
        .zip(&report.listeners)
        .filter(|(_, r)| r.accepted.is_ok() && r.conflicted.is_none())
        .map(|(l, r)| (l.port, l.protocol.clone(), r.hostname.clone()))
        .collect();

    let mut reports = Vec::new();
    let mut model = Vec::new();
    for set in sets {
        let id = ObjectId::new("ListenerSet", set.namespace(), set.name());
        let parent = gateway_id.clone();
        if let Err(p) = allowed(index, gateway, set) {
            reports.push((id, ListenerSetReport { parent, accepted: Err(p), listeners: vec![] }));
            continue;
        }
        if let Err(p) = &report.accepted {
            let p = Problem::new(
                reason::PARENT_NOT_ACCEPTED,
                format!("Gateway {} is not accepted: {}", gateway.name(), p.message),
            );
            reports.push((id, ListenerSetReport { parent, accepted: Err(p), listeners: vec![] }));
            continue;
        }

        let mut listeners = Vec::new();
        let mut certificates = Vec::new();
        for listener in &set.spec.listeners {
            let lid = ListenerId { gateway: id.clone(), name: listener.name.clone() };
            let owner = ("ListenerSet", set.namespace());
            let (mut r, certs) = translate_listener(index, owner, gateway, listener, lid);
            if super::l4_routes::is_l4(&listener.protocol) {
                // Refused rather than reported as programmed: the L4 proxy takes its listeners
                // from Gateways only, for now.
                r.accepted = Err(Problem::new(
                    reason::UNSUPPORTED_PROTOCOL,
                    format!(
                        "protocol {} is not supported on ListenerSet listeners (use the Gateway's)",
                        listener.protocol
                    ),
                ));
                r.in_desired = false;
            }
            listeners.push(r);
            certificates.push(certs);
        }
        mark_conflicts(&set.spec.listeners, &mut listeners);
        for (listener, r) in set.spec.listeners.iter().zip(&mut listeners) {
            if r.accepted.is_err() || r.conflicted.is_some() {
                continue;
            }
            match conflict(&taken, listener.port, &listener.protocol, r.hostname.as_ref()) {
                Some(p) => r.conflicted = Some(p),
                None => taken.push((listener.port, listener.protocol.clone(), r.hostname.clone())),
            }
        }
        for ((listener, r), certs) in
            set.spec.listeners.iter().zip(&mut listeners).zip(certificates)
        {
            model.extend(to_model(listener, r, certs, true, &report.addresses));
        }

        let valid = listeners.iter().filter(|r| r.accepted.is_ok() && r.conflicted.is_none());
        let accepted = if valid.count() == 0 {
            Err(Problem::new(reason::LISTENERS_NOT_VALID, "no listener is valid"))
        } else {
            report.attached_listener_sets += 1;
            Ok(())
        };
        reports.push((id, ListenerSetReport { parent, accepted, listeners }));
    }
    (reports, model)
}

/// Whether the set's parentRef names this Gateway.
fn names(set: &ListenerSet, gateway: &Gateway) -> bool {
    let p = &set.spec.parent_ref;
    p.group == GROUP
        && p.kind == "Gateway"
        && p.name == gateway.name()
        && p.namespace.as_deref().unwrap_or(set.namespace()) == gateway.namespace()
}

/// Whether the Gateway's `allowedListeners` admits the set's namespace.
fn allowed(index: &Index, gateway: &Gateway, set: &ListenerSet) -> Result<(), Problem> {
    let namespaces = gateway.spec.allowed_listeners.as_ref().map(|a| &a.namespaces);
    let from = namespaces.map_or(ListenersFrom::None, |n| n.from);
    let ok = match from {
        ListenersFrom::None => false,
        ListenersFrom::All => true,
        ListenersFrom::Same => set.namespace() == gateway.namespace(),
        ListenersFrom::Selector => namespaces
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|s| s.matches(&index.namespace_labels(set.namespace()))),
    };
    if ok {
        return Ok(());
    }
    Err(Problem::new(
        reason::NOT_ALLOWED,
        format!(
            "Gateway {}/{} does not allow ListenerSets from namespace {} (allowedListeners from {from:?})",
            gateway.namespace(),
            gateway.name(),
            set.namespace()
        ),
    ))
}

/// Why a listener is not distinct from one already in the merged list.
fn conflict(
    taken: &[Taken],
    port: u16,
    protocol: &str,
    hostname: Option<&Hostname>,
) -> Option<Problem> {
    let on_port = || taken.iter().filter(move |t| t.0 == port);
    if let Some(t) = on_port().find(|t| t.1 != protocol) {
        return Some(Problem::new(
            reason::PROTOCOL_CONFLICT,
            format!("port {port} is already used with protocol {} on the Gateway", t.1),
        ));
    }
    on_port().any(|t| t.2.as_ref() == hostname).then(|| {
        let host = hostname.map_or("(any)", Hostname::as_str);
        Problem::new(
            reason::HOSTNAME_CONFLICT,
            format!("hostname {host} on port {port} is already served by the Gateway"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use gatehouse_model::{ListenerId, ObjectId};

    use super::super::{Settings, Translation, translate};
    use crate::fixtures::*;
    use crate::object::Object;
    use crate::types::{FromNamespaces, GROUP, LabelSelector, ListenerNamespaces, ListenersFrom};

    fn settings() -> Settings {
        Settings {
            controller_name: CONTROLLER.into(),
            default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            backend_addressing: Default::default(),
            wasm_module_dir: None,
        }
    }

    fn run(objects: Vec<Object>) -> Translation {
        translate(&index(objects), &settings())
    }

    fn web(from: Option<ListenersFrom>) -> Object {
        let listeners = vec![with_hostname(listener("http", 80, "HTTP"), "gw.example")];
        let g = gateway("infra", "web", "gatehouse", listeners);
        Object::Gateway(match from {
            Some(from) => allow_listeners(g, from),
            None => g,
        })
    }

    fn set_id(ns: &str, name: &str) -> ObjectId {
        ObjectId::new("ListenerSet", ns, name)
    }

    fn host(name: &str, port: u16, hostname: &str) -> crate::types::Listener {
        allow_from(with_hostname(listener(name, port, "HTTP"), hostname), FromNamespaces::All, None)
    }

    fn reason(t: &Translation, ns: &str, name: &str) -> &'static str {
        t.report.listener_sets[&set_id(ns, name)].accepted.as_ref().err().map_or("ok", |p| p.reason)
    }

    fn attached_sets(t: &Translation) -> u32 {
        t.report.gateways[&ObjectId::new("Gateway", "infra", "web")].attached_listener_sets
    }

    #[test]
    fn gateways_allow_no_listener_set_unless_they_say_so() {
        let team =
            || listener_set("team", "ls", ("infra", "web"), 1, vec![host("a", 80, "a.example")]);
        let same =
            || listener_set("infra", "ls", ("infra", "web"), 1, vec![host("a", 80, "a.example")]);
        for (from, team_reason, same_reason) in [
            (None, "NotAllowed", "NotAllowed"),
            (Some(ListenersFrom::None), "NotAllowed", "NotAllowed"),
            (Some(ListenersFrom::Same), "NotAllowed", "ok"),
            (Some(ListenersFrom::All), "ok", "ok"),
        ] {
            let t = run(vec![gateway_class("gatehouse", CONTROLLER), web(from), team()]);
            assert_eq!(reason(&t, "team", "ls"), team_reason, "{from:?}");
            let t = run(vec![gateway_class("gatehouse", CONTROLLER), web(from), same()]);
            assert_eq!(reason(&t, "infra", "ls"), same_reason, "{from:?}");
            assert_eq!(attached_sets(&t), u32::from(same_reason == "ok"));
            let served = t.desired.listeners.iter().any(|l| l.id.gateway.kind == "ListenerSet");
            assert_eq!(served, same_reason == "ok", "{from:?}");
        }
    }

    #[test]
    fn selector_admits_labelled_namespaces_only() {
        let Object::Gateway(mut g) = web(Some(ListenersFrom::Selector)) else { unreachable!() };
        let selector = LabelSelector {
            match_labels: [("edge".to_owned(), "yes".to_owned())].into(),
            match_expressions: vec![],
        };
        g.spec.allowed_listeners.as_mut().unwrap().namespaces =
            ListenerNamespaces { from: ListenersFrom::Selector, selector: Some(selector) };
        let t = run(vec![
            gateway_class("gatehouse", CONTROLLER),
            Object::Gateway(g),
            namespace("in", &[("edge", "yes")]),
            namespace("out", &[("edge", "no")]),
            listener_set("in", "ls", ("infra", "web"), 1, vec![host("a", 80, "a.example")]),
            listener_set("out", "ls", ("infra", "web"), 1, vec![host("b", 80, "b.example")]),
        ]);
        assert_eq!(reason(&t, "in", "ls"), "ok");
        assert_eq!(reason(&t, "out", "ls"), "NotAllowed");
        assert_eq!(attached_sets(&t), 1);
    }

    #[test]
    fn l4_listeners_in_a_set_are_refused_not_reported_as_served() {
        let mut tcp = host("tcp", 9000, "t.example");
        tcp.protocol = "TCP".into();
        tcp.hostname = None;
        let t = run(vec![
            gateway_class("gatehouse", CONTROLLER),
            web(Some(ListenersFrom::All)),
            listener_set(
                "a",
                "mixed",
                ("infra", "web"),
                10,
                vec![host("web", 81, "a.example"), tcp],
            ),
        ]);
        let set = &t.report.listener_sets[&set_id("a", "mixed")];
        assert!(set.accepted.is_ok(), "the HTTP listener keeps the set attached");
        assert!(set.listeners[0].in_desired);
        let refused = &set.listeners[1];
        assert_eq!(refused.accepted.as_ref().err().map(|p| p.reason), Some("UnsupportedProtocol"));
        assert!(!refused.in_desired);
    }

    #[test]
    fn conflicts_follow_the_gateway_then_oldest_set_precedence() {
        let t = run(vec![
            gateway_class("gatehouse", CONTROLLER),
            web(Some(ListenersFrom::All)),
            // Newer, but alphabetically first: loses to the older set.
            listener_set(
                "a",
                "newer",
                ("infra", "web"),
                20,
                vec![host("same-as-older", 80, "b.example")],
            ),
            listener_set(
                "m",
                "third",
                ("infra", "web"),
                30,
                vec![{
                    let mut l = host("tls-on-80", 80, "c.example");
                    l.protocol = "HTTPS".into();
                    l
                }],
            ),
            listener_set(
                "z",
                "older",
                ("infra", "web"),
                10,
                vec![host("same-as-gateway", 80, "gw.example"), host("own", 80, "b.example")],
            ),
        ]);
        let older = &t.report.listener_sets[&set_id("z", "older")];
        assert!(older.accepted.is_ok());
        let conflict = |r: &super::super::ListenerReport| r.conflicted.as_ref().map(|p| p.reason);
        assert_eq!(conflict(&older.listeners[0]), Some("HostnameConflict"));
        assert_eq!(conflict(&older.listeners[1]), None);
        let newer = &t.report.listener_sets[&set_id("a", "newer")];
        assert_eq!(reason(&t, "a", "newer"), "ListenersNotValid");
        assert_eq!(conflict(&newer.listeners[0]), Some("HostnameConflict"));
        let third = &t.report.listener_sets[&set_id("m", "third")];
        assert_eq!(conflict(&third.listeners[0]), Some("ProtocolConflict"));
        assert_eq!(attached_sets(&t), 1);
        let ids: Vec<&ListenerId> = t.desired.listeners.iter().map(|l| &l.id).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.iter().any(|id| id.gateway == set_id("z", "older") && id.name == "own"));
    }

    #[test]
    fn routes_attach_to_a_set_by_parent_ref_and_section_name() {
        let t = run(vec![
            gateway_class("gatehouse", CONTROLLER),
            web(Some(ListenersFrom::All)),
            service("team", "echo", &[(None, 80)]),
            listener_set(
                "team",
                "ls",
                ("infra", "web"),
                1,
                vec![host("one", 80, "one.example"), host("two", 80, "two.example")],
            ),
            route("team", "whole")
                .parent(set_parent("team", "ls", None))
                .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
                .build(),
            route("team", "section")
                .parent(set_parent("team", "ls", Some("two")))
                .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
                .build(),
            route("team", "missing")
                .parent(set_parent("team", "ls", Some("three")))
                .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
                .build(),
            // A Gateway parentRef reaches the Gateway's own listeners only (which allow
            // routes from the Gateway's namespace only).
            route("team", "via-gateway")
                .parent(parent(Some("infra"), "web"))
                .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
                .build(),
        ]);
        let set = &t.report.listener_sets[&set_id("team", "ls")];
        assert_eq!(set.listeners[0].attached_routes, 1);
        assert_eq!(set.listeners[1].attached_routes, 2);
        let parent_reason = |name: &str| {
            let r = &t.report.routes[&ObjectId::new("HTTPRoute", "team", name)];
            r.parents[0].accepted.as_ref().err().map_or("ok", |p| p.reason)
        };
        assert_eq!(parent_reason("whole"), "ok");
        assert_eq!(parent_reason("section"), "ok");
        assert_eq!(parent_reason("missing"), "NoMatchingParent");
        assert_eq!(parent_reason("via-gateway"), "NotAllowedByListeners");
        let served = t.desired.http_routes.iter().find(|r| r.id.name == "section").unwrap();
        assert_eq!(
            served.listeners,
            [ListenerId { gateway: set_id("team", "ls"), name: "two".into() }]
        );
        // The set's listeners bind the Gateway's addresses.
        let l = t.desired.listeners.iter().find(|l| l.id.name == "two").unwrap();
        assert_eq!(l.addresses, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }

    #[test]
    fn routes_to_an_unattached_set_are_not_accepted() {
        let t = run(vec![
            gateway_class("gatehouse", CONTROLLER),
            web(None),
            listener_set("team", "ls", ("infra", "web"), 1, vec![host("one", 80, "one.example")]),
            route("team", "r").parent(set_parent("team", "ls", None)).rule(rule(vec![])).build(),
        ]);
        let r = &t.report.routes[&ObjectId::new("HTTPRoute", "team", "r")];
        let p = r.parents[0].accepted.as_ref().unwrap_err();
        assert_eq!(p.reason, "NotAllowedByListeners");
        assert!(p.message.contains("not attached"), "{}", p.message);
        assert!(t.desired.http_routes.is_empty());
    }

    #[test]
    fn certificate_refs_resolve_in_the_set_namespace_and_grants_name_the_set_kind() {
        let tls = || https_listener("tls", 443, &[(Some("certs"), "wild")]);
        let own = || https_listener("own", 8443, &[(None, "mine")]);
        let base = || {
            vec![
                gateway_class("gatehouse", CONTROLLER),
                web(Some(ListenersFrom::All)),
                tls_secret("certs", "wild", EC_CRT, EC_KEY),
                tls_secret("team", "mine", EC_CRT, EC_KEY),
                listener_set("team", "ls", ("infra", "web"), 1, vec![tls(), own()]),
            ]
        };
        let resolved = |t: &Translation, i: usize| {
            let set = &t.report.listener_sets[&set_id("team", "ls")];
            set.listeners[i].resolved_refs.as_ref().err().map_or("ok", |p| p.reason)
        };
        // A grant to Gateways is not inherited by ListenerSets.
        let mut objects = base();
        objects.push(grant("certs", "gw", (GROUP, "Gateway", "team"), ("", "Secret", None)));
        let t = run(objects);
        assert_eq!(resolved(&t, 0), "RefNotPermitted");
        assert_eq!(resolved(&t, 1), "ok", "a Secret in the set's own namespace needs no grant");
        let mut objects = base();
        objects.push(grant("certs", "ls", (GROUP, "ListenerSet", "team"), ("", "Secret", None)));
        let t = run(objects);
        assert_eq!(resolved(&t, 0), "ok");
        let served = t.desired.listeners.iter().filter(|l| l.id.gateway == set_id("team", "ls"));
        assert_eq!(served.count(), 2);
    }
}
