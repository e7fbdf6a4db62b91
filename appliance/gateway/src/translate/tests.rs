use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gatehouse_model::{Backend, HttpFilter, ObjectId, PathMatch, PathModifier, Protocol};

use super::*;
use crate::fixtures::*;
use crate::object::Object;
use crate::types::{
    FromNamespaces, HeaderFilter, HeaderValue, LabelSelector, LabelSelectorRequirement, MatchType,
    PathMatchType, PathModifier as SpecPathModifier, PathModifierType, QueryParamMatch,
    RedirectFilter, RouteMatch,
};

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

fn gw(listeners: Vec<crate::types::Listener>) -> Object {
    Object::Gateway(gateway("infra", "web", "gatehouse", listeners))
}

fn ours() -> Object {
    gateway_class("gatehouse", CONTROLLER)
}

fn route_id(ns: &str, name: &str) -> ObjectId {
    ObjectId::new("HTTPRoute", ns, name)
}

fn gateway_id() -> ObjectId {
    ObjectId::new("Gateway", "infra", "web")
}

fn parent_result(t: &Translation, ns: &str, name: &str) -> Result<(), Problem> {
    t.report.routes[&route_id(ns, name)].parents[0].accepted.clone()
}

fn reason_of(r: &Result<(), Problem>) -> &'static str {
    r.as_ref().err().map_or("ok", |p| p.reason)
}

fn attached(t: &Translation, listener: usize) -> u32 {
    t.report.gateways[&gateway_id()].listeners[listener].attached_routes
}

#[test]
fn only_our_controller_is_translated() {
    let t = run(vec![
        ours(),
        gateway_class("other", "example.com/other"),
        gw(vec![listener("http", 80, "HTTP")]),
        Object::Gateway(gateway("infra", "theirs", "other", vec![listener("http", 8080, "HTTP")])),
        route("infra", "mine").parent(parent(None, "web")).rule(rule(vec![])).build(),
        route("infra", "foreign").parent(parent(None, "theirs")).rule(rule(vec![])).build(),
    ]);
    assert_eq!(t.report.gateway_classes.keys().collect::<Vec<_>>(), ["gatehouse"]);
    assert_eq!(t.report.gateways.keys().cloned().collect::<Vec<_>>(), [gateway_id()]);
    assert_eq!(t.report.routes.keys().cloned().collect::<Vec<_>>(), [route_id("infra", "mine")]);
    assert_eq!(t.desired.listeners.len(), 1);
    assert_eq!(t.desired.http_routes.len(), 1);
}

#[test]
fn listeners_bind_gateway_addresses_or_the_default() {
    let mut with_addr = gateway("infra", "web", "gatehouse", vec![listener("http", 80, "HTTP")]);
    with_addr.spec.addresses = vec![crate::types::GatewaySpecAddress {
        kind: "IPAddress".into(),
        value: "192.0.2.10".into(),
    }];
    let t = run(vec![ours(), Object::Gateway(with_addr)]);
    assert_eq!(t.desired.listeners[0].addresses, ["192.0.2.10".parse::<IpAddr>().unwrap()]);

    let t = run(vec![ours(), gw(vec![listener("http", 80, "HTTP")])]);
    assert_eq!(t.desired.listeners[0].addresses, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    assert_eq!(t.desired.listeners[0].protocol, Protocol::Http);
}

#[test]
fn unsupported_address_type_rejects_the_gateway() {
    let mut g = gateway("infra", "web", "gatehouse", vec![listener("http", 80, "HTTP")]);
    g.spec.addresses = vec![crate::types::GatewaySpecAddress {
        kind: "Hostname".into(),
        value: "lb.example".into(),
    }];
    let t = run(vec![ours(), Object::Gateway(g)]);
    assert_eq!(reason_of(&t.report.gateways[&gateway_id()].accepted), "UnsupportedAddress");
    assert!(t.desired.listeners.is_empty());
}

#[test]
fn unusable_addresses_are_not_bound_and_not_programmed() {
    let addr = |value: &str| crate::types::GatewaySpecAddress {
        kind: "IPAddress".into(),
        value: value.into(),
    };
    let mut g = gateway("infra", "web", "gatehouse", vec![listener("http", 80, "HTTP")]);
    g.spec.addresses = vec![addr("224.0.0.1"), addr("127.0.80.80"), addr("255.255.255.255")];
    let t = run(vec![ours(), Object::Gateway(g.clone())]);
    let report = &t.report.gateways[&gateway_id()];
    assert!(report.accepted.is_ok());
    let problem = report.address_problem.as_ref().unwrap();
    assert_eq!(problem.reason, "AddressNotUsable");
    assert!(problem.message.contains("224.0.0.1"), "{}", problem.message);
    assert_eq!(report.addresses, ["127.0.80.80".parse::<IpAddr>().unwrap()]);
    assert_eq!(t.desired.listeners[0].addresses, report.addresses);

    // Nothing usable: nothing bound (not the default address).
    g.spec.addresses = vec![addr("0.0.0.0")];
    let t = run(vec![ours(), Object::Gateway(g.clone())]);
    assert_eq!(
        reason_of(&Err(t.report.gateways[&gateway_id()].address_problem.clone().unwrap())),
        "AddressNotUsable"
    );
    assert!(t.desired.listeners.is_empty());

    // An empty value is ours to choose: the default address.
    g.spec.addresses = vec![addr("")];
    let t = run(vec![ours(), Object::Gateway(g)]);
    assert!(t.report.gateways[&gateway_id()].address_problem.is_none());
    assert_eq!(t.desired.listeners[0].addresses, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
}

#[test]
fn unsupported_protocol_is_a_listener_condition() {
    let t =
        run(vec![ours(), gw(vec![listener("tcp", 9000, "SCTP"), listener("http", 80, "HTTP")])]);
    let listeners = &t.report.gateways[&gateway_id()].listeners;
    assert_eq!(reason_of(&listeners[0].accepted), "UnsupportedProtocol");
    assert!(listeners[0].supported_kinds.is_empty());
    assert!(!listeners[0].in_desired);
    assert!(listeners[1].in_desired);
    assert_eq!(t.desired.listeners.len(), 1);
}

#[test]
fn conflicting_listeners_are_all_excluded() {
    let t = run(vec![
        ours(),
        gw(vec![
            listener("a", 80, "HTTP"),
            https_listener("b", 80, &[(None, "cert")]),
            with_hostname(listener("c", 81, "HTTP"), "x.example.com"),
            with_hostname(listener("d", 81, "HTTP"), "x.example.com"),
            with_hostname(listener("e", 81, "HTTP"), "y.example.com"),
        ]),
        tls_secret("infra", "cert", EC_CRT, EC_KEY),
    ]);
    let l = &t.report.gateways[&gateway_id()].listeners;
    let conflicts: Vec<_> = l.iter().map(|l| l.conflicted.as_ref().map(|p| p.reason)).collect();
    assert_eq!(
        conflicts,
        [
            Some("ProtocolConflict"),
            Some("ProtocolConflict"),
            Some("HostnameConflict"),
            Some("HostnameConflict"),
            None
        ]
    );
    assert_eq!(t.desired.listeners.len(), 1);
}

#[test]
fn invalid_route_kinds_keep_the_valid_ones() {
    let mut l = listener("http", 80, "HTTP");
    l.allowed_routes.kinds = vec![
        crate::types::RouteGroupKind {
            group: crate::types::GROUP.into(),
            kind: "HTTPRoute".into(),
        },
        crate::types::RouteGroupKind { group: crate::types::GROUP.into(), kind: "TCPRoute".into() },
    ];
    let t = run(vec![ours(), gw(vec![l])]);
    let lr = &t.report.gateways[&gateway_id()].listeners[0];
    assert_eq!(lr.supported_kinds.len(), 1);
    assert_eq!(reason_of(&lr.resolved_refs), "InvalidRouteKinds");
}

#[test]
fn allowed_routes_same_all_and_selector() {
    let selector = LabelSelector {
        match_labels: [("team".to_owned(), "a".to_owned())].into(),
        match_expressions: vec![
            LabelSelectorRequirement {
                key: "env".into(),
                operator: "In".into(),
                values: vec!["prod".into(), "staging".into()],
            },
            LabelSelectorRequirement {
                key: "blocked".into(),
                operator: "DoesNotExist".into(),
                values: vec![],
            },
        ],
    };
    let objects = vec![
        ours(),
        gw(vec![
            listener("same", 80, "HTTP"),
            allow_from(listener("all", 81, "HTTP"), FromNamespaces::All, None),
            allow_from(listener("sel", 82, "HTTP"), FromNamespaces::Selector, Some(selector)),
        ]),
        namespace("good", &[("team", "a"), ("env", "prod")]),
        namespace("blocked", &[("team", "a"), ("env", "prod"), ("blocked", "yes")]),
        namespace("wrongenv", &[("team", "a"), ("env", "dev")]),
        route("infra", "r").parent(parent(Some("infra"), "web")).build(),
        route("good", "r").parent(parent(Some("infra"), "web")).build(),
        route("blocked", "r").parent(parent(Some("infra"), "web")).build(),
        route("wrongenv", "r").parent(parent(Some("infra"), "web")).build(),
        route("undeclared", "r").parent(parent(Some("infra"), "web")).build(),
    ];
    let t = run(objects);
    let listeners_of = |ns: &str| {
        let id = route_id(ns, "r");
        t.desired
            .http_routes
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.listeners.iter().map(|l| l.name.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(listeners_of("infra"), ["all", "same"]);
    assert_eq!(listeners_of("good"), ["all", "sel"]);
    assert_eq!(listeners_of("blocked"), ["all"]);
    assert_eq!(listeners_of("wrongenv"), ["all"]);
    assert_eq!(listeners_of("undeclared"), ["all"]);
    assert_eq!((attached(&t, 0), attached(&t, 1), attached(&t, 2)), (1, 5, 1));
}

#[test]
fn selector_on_the_implicit_namespace_name_label() {
    let selector = LabelSelector {
        match_labels: [("kubernetes.io/metadata.name".to_owned(), "apps".to_owned())].into(),
        match_expressions: vec![],
    };
    let t = run(vec![
        ours(),
        gw(vec![allow_from(listener("sel", 80, "HTTP"), FromNamespaces::Selector, Some(selector))]),
        route("apps", "r").parent(parent(Some("infra"), "web")).build(),
        route("other", "r").parent(parent(Some("infra"), "web")).build(),
    ]);
    assert_eq!(parent_result(&t, "apps", "r"), Ok(()));
    assert_eq!(reason_of(&parent_result(&t, "other", "r")), "NotAllowedByListeners");
}

#[test]
fn section_name_and_port_select_listeners() {
    let objects = |p: crate::types::ParentReference| {
        vec![
            ours(),
            gw(vec![listener("a", 80, "HTTP"), listener("b", 8080, "HTTP")]),
            route("infra", "r").parent(p).build(),
        ]
    };
    let mut p = parent(None, "web");
    p.section_name = Some("b".into());
    let t = run(objects(p.clone()));
    assert_eq!(t.desired.http_routes[0].listeners[0].name, "b");
    assert_eq!((attached(&t, 0), attached(&t, 1)), (0, 1));

    p.port = Some(80);
    let t = run(objects(p));
    assert_eq!(reason_of(&parent_result(&t, "infra", "r")), "NoMatchingParent");
    assert!(t.desired.http_routes.is_empty());

    let mut p = parent(None, "web");
    p.port = Some(80);
    let t = run(objects(p));
    assert_eq!(t.desired.http_routes[0].listeners[0].name, "a");
}

#[test]
fn hostname_intersection() {
    let t = run(vec![
        ours(),
        gw(vec![
            with_hostname(listener("wild", 80, "HTTP"), "*.example.com"),
            with_hostname(listener("exact", 81, "HTTP"), "foo.example.org"),
            listener("any", 82, "HTTP"),
        ]),
        route("infra", "a").parent(parent(None, "web")).hostnames(&["bar.example.com"]).build(),
        route("infra", "b").parent(parent(None, "web")).hostnames(&["*.example.org"]).build(),
        route("infra", "none").parent(parent(None, "web")).build(),
    ]);
    let names = |name: &str| {
        t.desired
            .http_routes
            .iter()
            .find(|r| r.id.name == name)
            .unwrap()
            .listeners
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("a"), ["any", "wild"]);
    assert_eq!(names("b"), ["any", "exact"]);
    assert_eq!(names("none"), ["any", "exact", "wild"]);

    let mut p = parent(None, "web");
    p.section_name = Some("exact".into());
    let t = run(vec![
        ours(),
        gw(vec![with_hostname(listener("exact", 81, "HTTP"), "foo.example.org")]),
        route("infra", "r").parent(p).hostnames(&["bar.example.org"]).build(),
    ]);
    assert_eq!(reason_of(&parent_result(&t, "infra", "r")), "NoMatchingListenerHostname");
    assert_eq!(attached(&t, 0), 0);
}

#[test]
fn endpoint_slices_resolve_like_kubernetes() {
    let t = run(vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        service("infra", "echo", &[(Some("http"), 80), (Some("admin"), 9000)]),
        service("infra", "plain", &[(None, 80)]),
        // Two slices merged; the port is found by the Service port's name.
        endpoint_slice(
            "infra",
            "echo-a",
            "echo",
            &[("http", 8080), ("admin", 9090)],
            &[("10.0.0.1", None), ("10.0.0.2", Some(false))],
        ),
        endpoint_slice(
            "infra",
            "echo-b",
            "echo",
            &[("http", 8080)],
            &[("10.0.0.3", Some(true)), ("fd00::1", Some(true))],
        ),
        endpoint_slice("infra", "plain-a", "plain", &[("", 5678)], &[("10.0.1.1", None)]),
        endpoint_slice("infra", "stranger", "other", &[("http", 8080)], &[("10.9.9.9", None)]),
        route("infra", "r")
            .parent(parent(None, "web"))
            .rule(rule(vec![
                backend(None, "echo", Some(80), 1),
                backend(None, "echo", Some(9000), 1),
                backend(None, "plain", Some(80), 0),
            ]))
            .build(),
    ]);
    let backends = &t.desired.http_routes[0].rules[0].backends;
    let addrs = |i: usize| match &backends[i].backend {
        Backend::Endpoints(e) => e.addrs.clone(),
        other => panic!("unresolved: {other:?}"),
    };
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(addrs(0), [sa("10.0.0.1:8080"), sa("10.0.0.3:8080"), sa("[fd00::1]:8080")]);
    assert_eq!(addrs(1), [sa("10.0.0.1:9090")]);
    assert_eq!(addrs(2), [sa("10.0.1.1:5678")]);
    assert_eq!(backends[2].weight, 0);
    assert_eq!(t.report.routes[&route_id("infra", "r")].parents[0].resolved_refs, Ok(()));
}

#[test]
fn service_without_endpoints_is_an_empty_backend() {
    let t = run(vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        service("infra", "echo", &[(None, 80)]),
        route("infra", "r")
            .parent(parent(None, "web"))
            .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
            .build(),
    ]);
    assert!(
        matches!(&t.desired.http_routes[0].rules[0].backends[0].backend, Backend::Endpoints(e) if e.addrs.is_empty())
    );
}

#[test]
fn unresolved_backends_and_reasons() {
    let cases: [(crate::types::BackendRef, &str); 5] = [
        (backend(None, "missing", Some(80), 1), "BackendNotFound"),
        (backend(None, "echo", Some(81), 1), "BackendNotFound"),
        (backend(None, "echo", None, 1), "BackendNotFound"),
        (backend(Some("apps"), "echo", Some(80), 1), "RefNotPermitted"),
        (
            crate::types::BackendRef {
                kind: "ServiceImport".into(),
                group: "multicluster.x-k8s.io".into(),
                ..backend(None, "echo", Some(80), 1)
            },
            "InvalidKind",
        ),
    ];
    for (b, expected) in cases {
        let t = run(vec![
            ours(),
            gw(vec![listener("http", 80, "HTTP")]),
            service("infra", "echo", &[(None, 80)]),
            service("apps", "echo", &[(None, 80)]),
            route("infra", "r").parent(parent(None, "web")).rule(rule(vec![b])).build(),
        ]);
        let parent = &t.report.routes[&route_id("infra", "r")].parents[0];
        assert_eq!(reason_of(&parent.resolved_refs), expected);
        assert_eq!(parent.accepted, Ok(()), "an unresolved backend does not reject the route");
        assert!(matches!(
            t.desired.http_routes[0].rules[0].backends[0].backend,
            Backend::Unresolved(_)
        ));
    }
}

#[test]
fn reference_grant_permits_cross_namespace_backends() {
    let objects = |grant_obj: Object| {
        vec![
            ours(),
            gw(vec![allow_from(listener("http", 80, "HTTP"), FromNamespaces::All, None)]),
            service("backends", "echo", &[(None, 80)]),
            grant_obj,
            route("apps", "r")
                .parent(parent(Some("infra"), "web"))
                .rule(rule(vec![backend(Some("backends"), "echo", Some(80), 1)]))
                .build(),
        ]
    };
    let ok = run(objects(grant(
        "backends",
        "g",
        (crate::types::GROUP, "HTTPRoute", "apps"),
        ("", "Service", None),
    )));
    assert_eq!(ok.report.routes[&route_id("apps", "r")].parents[0].resolved_refs, Ok(()));
    let named = run(objects(grant(
        "backends",
        "g",
        (crate::types::GROUP, "HTTPRoute", "apps"),
        ("", "Service", Some("echo")),
    )));
    assert_eq!(named.report.routes[&route_id("apps", "r")].parents[0].resolved_refs, Ok(()));
    for wrong in [
        grant("backends", "g", (crate::types::GROUP, "HTTPRoute", "other"), ("", "Service", None)),
        grant(
            "backends",
            "g",
            (crate::types::GROUP, "HTTPRoute", "apps"),
            ("", "Service", Some("else")),
        ),
        grant("apps", "g", (crate::types::GROUP, "HTTPRoute", "apps"), ("", "Service", None)),
    ] {
        let t = run(objects(wrong));
        assert_eq!(
            reason_of(&t.report.routes[&route_id("apps", "r")].parents[0].resolved_refs),
            "RefNotPermitted"
        );
    }
}

#[test]
fn certificate_refs_and_grants() {
    let t = run(vec![
        ours(),
        gw(vec![
            https_listener("rsa", 443, &[(None, "rsa")]),
            https_listener("ed", 444, &[(None, "ed")]),
            https_listener("broken", 445, &[(None, "broken")]),
            https_listener("missing", 446, &[(None, "nope")]),
            https_listener("foreign", 447, &[(Some("certs"), "ec")]),
            https_listener("granted", 448, &[(Some("shared"), "ec")]),
        ]),
        tls_secret("infra", "rsa", RSA_CRT, RSA_KEY),
        tls_secret("infra", "ed", ED_CRT, ED_KEY),
        tls_secret(
            "infra",
            "broken",
            EC_CRT,
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        ),
        tls_secret("certs", "ec", EC_CRT, EC_KEY),
        tls_secret("shared", "ec", EC_CRT, EC_KEY),
        grant("shared", "g", (crate::types::GROUP, "Gateway", "infra"), ("", "Secret", Some("ec"))),
    ]);
    let l = &t.report.gateways[&gateway_id()].listeners;
    let reasons: Vec<_> = l.iter().map(|l| reason_of(&l.resolved_refs)).collect();
    assert_eq!(
        reasons,
        ["ok", "ok", "InvalidCertificateRef", "InvalidCertificateRef", "RefNotPermitted", "ok"]
    );
    let in_desired: Vec<_> = l.iter().map(|l| l.in_desired).collect();
    assert_eq!(in_desired, [true, true, false, false, false, true]);
    let tls = t.desired.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].source, "Secret infra/rsa");
    assert_eq!(t.desired.listeners[0].protocol, Protocol::Https);
}

fn regex_match(path: &str) -> RouteMatch {
    RouteMatch {
        path: crate::types::PathMatch {
            kind: PathMatchType::RegularExpression,
            value: path.into(),
        },
        ..RouteMatch::default()
    }
}

#[test]
fn invalid_regex_drops_the_rule() {
    let good = crate::types::HttpRule { matches: vec![regex_match("/v[0-9]+/.*")], ..rule(vec![]) };
    let bad = crate::types::HttpRule { matches: vec![regex_match("/v[0-9")], ..rule(vec![]) };
    let bad_query = crate::types::HttpRule {
        matches: vec![RouteMatch {
            query_params: vec![QueryParamMatch {
                kind: MatchType::RegularExpression,
                name: "q".into(),
                value: "(".into(),
            }],
            ..RouteMatch::default()
        }],
        ..rule(vec![])
    };
    let t = run(vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        route("infra", "partial").parent(parent(None, "web")).rule(good).rule(bad.clone()).build(),
        route("infra", "all-bad").parent(parent(None, "web")).rule(bad).rule(bad_query).build(),
    ]);
    let partial = &t.report.routes[&route_id("infra", "partial")].parents[0];
    assert_eq!(partial.accepted, Ok(()));
    let pi = partial.partially_invalid.as_ref().unwrap();
    assert_eq!(pi.reason, "UnsupportedValue");
    assert!(pi.message.starts_with("Dropped Rule"), "{}", pi.message);
    let kept = &t.desired.http_routes.iter().find(|r| r.id.name == "partial").unwrap().rules;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].matches[0].path, PathMatch::Regex("/v[0-9]+/.*".into()));

    let all_bad = &t.report.routes[&route_id("infra", "all-bad")].parents[0];
    assert_eq!(reason_of(&all_bad.accepted), "UnsupportedValue");
    assert!(all_bad.partially_invalid.is_none());
    assert!(t.desired.http_routes.iter().all(|r| r.id.name != "all-bad"));
    assert_eq!(attached(&t, 0), 1, "a rejected route is not counted");
}

#[test]
fn filters_translate_and_unsupported_ones_drop_the_rule() {
    let mut header = filter("RequestHeaderModifier");
    header.request_header_modifier = Some(HeaderFilter {
        set: vec![HeaderValue { name: "X-A".into(), value: "1".into() }],
        add: vec![],
        remove: vec!["x-b".into()],
    });
    let mut redirect = filter("RequestRedirect");
    redirect.request_redirect = Some(RedirectFilter {
        scheme: Some("https".into()),
        hostname: None,
        path: Some(SpecPathModifier {
            kind: PathModifierType::ReplacePrefixMatch,
            replace_full_path: None,
            replace_prefix_match: Some("/new".into()),
        }),
        port: None,
        status_code: 301,
    });
    let mut backend_with_filter = backend(None, "echo", Some(80), 1);
    backend_with_filter.filters = vec![header.clone()];
    let redirect_rule = crate::types::HttpRule { filters: vec![redirect], ..rule(vec![]) };
    let header_rule =
        crate::types::HttpRule { filters: vec![header], ..rule(vec![backend_with_filter]) };
    let mirror_rule =
        crate::types::HttpRule { filters: vec![filter("RequestMirror")], ..rule(vec![]) };
    let ext_rule = crate::types::HttpRule { filters: vec![filter("ExtensionRef")], ..rule(vec![]) };
    let t = run(vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        service("infra", "echo", &[(None, 80)]),
        route("infra", "r")
            .parent(parent(None, "web"))
            .rule(redirect_rule)
            .rule(header_rule)
            .rule(mirror_rule)
            .rule(ext_rule)
            .build(),
    ]);
    let rules = &t.desired.http_routes[0].rules;
    assert_eq!(rules.len(), 3, "the RequestMirror rule is dropped");
    match &rules[0].filters[0] {
        HttpFilter::RequestRedirect(r) => {
            assert_eq!((r.scheme.as_deref(), r.status), (Some("https"), 301));
            assert_eq!(r.path, Some(PathModifier::ReplacePrefixMatch("/new".into())));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&rules[1].filters[0], HttpFilter::RequestHeaderModifier(m) if m.set == [("X-A".to_owned(), "1".to_owned())])
    );
    assert_eq!(rules[1].backends[0].filters.len(), 1);
    // ExtensionRef: kept, but every request gets 500.
    assert!(rules[2].filters.is_empty());
    assert!(matches!(rules[2].backends[0].backend, Backend::Unresolved(_)));
    let parent = &t.report.routes[&route_id("infra", "r")].parents[0];
    assert_eq!(reason_of(&parent.resolved_refs), "InvalidKind");
    assert!(parent.partially_invalid.as_ref().unwrap().message.contains("RequestMirror"));
}

#[test]
fn replace_prefix_match_needs_path_prefix_matches() {
    let mut rewrite = filter("URLRewrite");
    rewrite.url_rewrite = Some(crate::types::RewriteFilter {
        hostname: Some("Backend.Example".into()),
        path: Some(SpecPathModifier {
            kind: PathModifierType::ReplacePrefixMatch,
            replace_full_path: None,
            replace_prefix_match: Some("/".into()),
        }),
    });
    let exact = RouteMatch {
        path: crate::types::PathMatch { kind: PathMatchType::Exact, value: "/a".into() },
        ..RouteMatch::default()
    };
    let t = run(vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        route("infra", "r")
            .parent(parent(None, "web"))
            .rule(crate::types::HttpRule {
                matches: vec![exact],
                filters: vec![rewrite],
                ..rule(vec![])
            })
            .build(),
    ]);
    assert_eq!(reason_of(&parent_result(&t, "infra", "r")), "UnsupportedValue");
}

#[test]
fn redirect_with_rewrite_is_incompatible() {
    let mut redirect = filter("RequestRedirect");
    redirect.request_redirect = Some(RedirectFilter {
        scheme: None,
        hostname: None,
        path: None,
        port: None,
        status_code: 302,
    });
    let mut rewrite = filter("URLRewrite");
    rewrite.url_rewrite = Some(crate::types::RewriteFilter::default());
    let t = run(vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        route("infra", "r")
            .parent(parent(None, "web"))
            .rule(crate::types::HttpRule { filters: vec![redirect, rewrite], ..rule(vec![]) })
            .build(),
    ]);
    assert_eq!(reason_of(&parent_result(&t, "infra", "r")), "IncompatibleFilters");
}

#[test]
fn creation_timestamp_and_matches_are_carried() {
    let m = RouteMatch {
        headers: vec![
            crate::types::HeaderMatch {
                kind: MatchType::Exact,
                name: "X-Env".into(),
                value: "a".into(),
            },
            crate::types::HeaderMatch {
                kind: MatchType::Exact,
                name: "x-env".into(),
                value: "b".into(),
            },
        ],
        method: Some("get".into()),
        ..RouteMatch::default()
    };
    let t = run(vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        route("infra", "r")
            .parent(parent(None, "web"))
            .created(1_700_000_000)
            .rule(crate::types::HttpRule { matches: vec![m], ..rule(vec![]) })
            .build(),
    ]);
    let r = &t.desired.http_routes[0];
    assert_eq!(r.created, Some(1_700_000_000));
    let m = &r.rules[0].matches[0];
    assert_eq!(m.headers.len(), 1, "only the first of equivalent header names counts");
    assert_eq!(m.headers[0].name, "x-env");
    assert_eq!(m.method.as_deref(), Some("GET"));
    assert_eq!(m.path, PathMatch::Prefix("/".into()));
}

fn node(name: &str, ready: &str, addresses: &[(&str, &str)], extra: serde_json::Value) -> Object {
    let addresses: Vec<_> = addresses
        .iter()
        .map(|(type_, address)| serde_json::json!({"type": type_, "address": address}))
        .collect();
    let mut value = serde_json::json!({
        "metadata": {"name": name},
        "status": {
            "conditions": [{"type": "Ready", "status": ready}],
            "addresses": addresses
        }
    });
    if let (Some(value), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            value.insert(k.clone(), v.clone());
        }
    }
    Object::Node(Box::new(serde_json::from_value(value).unwrap()))
}

fn node_port_service(name: &str, node_port: Option<i32>, local: bool) -> Object {
    let mut port = serde_json::json!({"name": "http", "port": 80, "targetPort": 8080});
    if let Some(node_port) = node_port {
        port["nodePort"] = node_port.into();
    }
    let type_ = if node_port.is_some() { "NodePort" } else { "ClusterIP" };
    let mut spec = serde_json::json!({"type": type_, "ports": [port]});
    if local {
        spec["externalTrafficPolicy"] = "Local".into();
    }
    Object::Service(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "infra"}, "spec": spec
        }))
        .unwrap(),
    )
}

fn run_nodeport(objects: Vec<Object>) -> Translation {
    let settings = Settings { backend_addressing: BackendAddressing::NodePort, ..settings() };
    translate(&index(objects), &settings)
}

fn nodes() -> Vec<Object> {
    use serde_json::json;
    vec![
        node("a", "True", &[("InternalIP", "10.1.0.1"), ("ExternalIP", "192.0.2.1")], json!({})),
        // No InternalIP: its ExternalIP.
        node("b", "True", &[("Hostname", "b"), ("ExternalIP", "192.0.2.2")], json!({})),
        node("not-ready", "False", &[("InternalIP", "10.1.0.3")], json!({})),
        node(
            "cordoned",
            "True",
            &[("InternalIP", "10.1.0.4")],
            json!({"spec": {"unschedulable": true}}),
        ),
        node(
            "excluded",
            "True",
            &[("InternalIP", "10.1.0.5")],
            json!({"metadata": {"name": "excluded", "labels": {
                "node.kubernetes.io/exclude-from-external-load-balancers": ""}}}),
        ),
        node("dual", "True", &[("InternalIP", "10.1.0.6"), ("InternalIP", "fd00::6")], json!({})),
    ]
}

#[test]
fn nodeport_addressing_sends_to_every_usable_node_and_the_node_port() {
    let mut objects = vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        node_port_service("echo", Some(30080), false),
        // Pod endpoints are not used in this mode.
        endpoint_slice("infra", "echo-a", "echo", &[("http", 8080)], &[("10.0.0.1", None)]),
        route("infra", "r")
            .parent(parent(None, "web"))
            .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
            .build(),
    ];
    objects.extend(nodes());
    let t = run_nodeport(objects);
    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    match &t.desired.http_routes[0].rules[0].backends[0].backend {
        Backend::Endpoints(e) => assert_eq!(
            e.addrs,
            [
                sa("10.1.0.1:30080"),
                sa("10.1.0.6:30080"),
                sa("192.0.2.2:30080"),
                sa("[fd00::6]:30080")
            ]
        ),
        other => panic!("unresolved: {other:?}"),
    }
    assert_eq!(parent_result(&t, "infra", "r"), Ok(()));
}

#[test]
fn nodeport_addressing_without_a_node_port_is_an_unresolved_ref() {
    let mut objects = vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        node_port_service("echo", None, false),
        route("infra", "r")
            .parent(parent(None, "web"))
            .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
            .build(),
    ];
    objects.extend(nodes());
    let t = run_nodeport(objects);
    let resolved = &t.report.routes[&route_id("infra", "r")].parents[0].resolved_refs;
    assert_eq!(reason_of(resolved), "BackendNotFound");
    let message = &resolved.as_ref().unwrap_err().message;
    assert!(message.contains("has no nodePort (type ClusterIP)"), "{message}");
    assert!(matches!(
        &t.desired.http_routes[0].rules[0].backends[0].backend,
        Backend::Unresolved(_)
    ));
}

#[test]
fn nodeport_addressing_with_local_traffic_policy_keeps_nodes_with_ready_pods() {
    let mut slice = endpoint_slice(
        "infra",
        "echo-a",
        "echo",
        &[("http", 8080)],
        &[("10.0.0.1", Some(true)), ("10.0.0.2", Some(false))],
    );
    if let Object::EndpointSlice(slice) = &mut slice {
        let endpoints = slice.endpoints.as_mut().unwrap();
        endpoints[0].node_name = Some("b".into());
        endpoints[1].node_name = Some("a".into());
    }
    let mut objects = vec![
        ours(),
        gw(vec![listener("http", 80, "HTTP")]),
        node_port_service("echo", Some(30080), true),
        slice,
        route("infra", "r")
            .parent(parent(None, "web"))
            .rule(rule(vec![backend(None, "echo", Some(80), 1)]))
            .build(),
    ];
    objects.extend(nodes());
    let t = run_nodeport(objects);
    match &t.desired.http_routes[0].rules[0].backends[0].backend {
        Backend::Endpoints(e) => {
            assert_eq!(e.addrs, ["192.0.2.2:30080".parse::<SocketAddr>().unwrap()]);
        }
        other => panic!("unresolved: {other:?}"),
    }
}

#[test]
fn extension_refs_to_wasm_plugins_become_wasm_filters_or_500_with_a_reason() {
    use crate::types::WasmPluginSpec;
    let spec = |module: &str| WasmPluginSpec {
        module: module.into(),
        sha256: None,
        config: Some(serde_json::json!({"request": {"set": {"x-a": "1"}}})),
        failure_policy: Default::default(),
        timeout_ms: None,
        memory_limit: None,
        upstreams: Vec::new(),
    };
    let ext = |name: &str| extension_ref("gatehouse.dev", "WasmPlugin", name);
    let with = |filters: Vec<crate::types::RouteFilter>| crate::types::HttpRule {
        filters,
        ..rule(vec![backend(None, "echo", Some(80), 1)])
    };
    let mut backend_filtered = backend(None, "echo", Some(80), 1);
    backend_filtered.filters = vec![ext("hm")];
    let objects = |module_dir: bool| {
        let settings =
            Settings { wasm_module_dir: module_dir.then(|| "/srv/wasm".into()), ..settings() };
        let objects = vec![
            ours(),
            gw(vec![listener("http", 80, "HTTP")]),
            service("infra", "echo", &[(None, 80)]),
            wasm_plugin("infra", "hm", spec("hm.wasm")),
            wasm_plugin("infra", "escape", spec("../../etc/x.wasm")),
            wasm_plugin("other", "elsewhere", spec("hm.wasm")),
            wasm_plugin("infra", "unused", spec("unused.wasm")),
            route("infra", "good")
                .parent(parent(None, "web"))
                .rule(with(vec![ext("hm")]))
                .rule(crate::types::HttpRule { ..rule(vec![backend_filtered.clone()]) })
                .build(),
            route("infra", "missing")
                .parent(parent(None, "web"))
                .rule(with(vec![ext("elsewhere")]))
                .build(),
            route("infra", "kind")
                .parent(parent(None, "web"))
                .rule(with(vec![extension_ref("example.com", "Thing", "hm")]))
                .build(),
            route("infra", "escape")
                .parent(parent(None, "web"))
                .rule(with(vec![ext("escape")]))
                .build(),
        ];
        translate(&index(objects), &settings)
    };

    let t = objects(true);
    let names: Vec<&str> = t.desired.wasm_plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["infra/hm"], "only plugins of kept rules, each once");
    assert_eq!(
        t.desired.wasm_plugins[0].module,
        gatehouse_model::ModuleSource::Path { path: "/srv/wasm/hm.wasm".into(), sha256: None }
    );
    let good = t.desired.http_routes.iter().find(|r| r.id == route_id("infra", "good")).unwrap();
    assert_eq!(good.rules[0].filters, [HttpFilter::Wasm { plugin: "infra/hm".into() }]);
    assert_eq!(good.rules[1].backends[0].filters, [HttpFilter::Wasm { plugin: "infra/hm".into() }]);
    assert_eq!(t.report.routes[&route_id("infra", "good")].parents[0].resolved_refs, Ok(()));

    for (name, reason, text) in [
        ("missing", "BackendNotFound", "WasmPlugin infra/elsewhere does not exist"),
        ("kind", "InvalidKind", "example.com/Thing"),
        ("escape", "BackendNotFound", "must be relative to wasm_module_dir"),
    ] {
        let parent = &t.report.routes[&route_id("infra", name)].parents[0];
        assert_eq!(reason_of(&parent.resolved_refs), reason, "{name}");
        let message = &parent.resolved_refs.as_ref().unwrap_err().message;
        assert!(message.contains(text) && message.contains("get 500"), "{name}: {message}");
        assert_eq!(reason_of(&parent.accepted), "ok", "{name}: still accepted");
        let r = t.desired.http_routes.iter().find(|r| r.id == route_id("infra", name)).unwrap();
        assert!(r.rules[0].filters.is_empty());
        assert!(matches!(r.rules[0].backends[0].backend, Backend::Unresolved(_)), "{name}");
    }

    // Without a module directory a local path does not resolve: the rule answers 500.
    let t = objects(false);
    assert!(t.desired.wasm_plugins.is_empty());
    let parent = &t.report.routes[&route_id("infra", "good")].parents[0];
    assert!(parent.resolved_refs.as_ref().unwrap_err().message.contains("no wasm_module_dir"));
}
