//! Builders for model fixtures used by the unit tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use gatehouse_model::{
    Backend, BackendEndpoints, Hostname, HttpMatch, HttpRoute, HttpRule, Listener, ListenerId,
    ListenerTls, ObjectId, PathMatch, Protocol, WeightedBackend,
};

pub(crate) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub(crate) fn listener_id(gateway: &str, name: &str) -> ListenerId {
    ListenerId { gateway: ObjectId::new("Gateway", "default", gateway), name: name.into() }
}

pub(crate) fn http_listener(gateway: &str, name: &str, port: u16, host: Option<&str>) -> Listener {
    Listener {
        id: listener_id(gateway, name),
        addresses: vec![LOCALHOST],
        port,
        protocol: Protocol::Http,
        hostname: host.map(|h| Hostname::parse(h).unwrap()),
        tls: None,
    }
}

pub(crate) fn https_listener(
    gateway: &str,
    name: &str,
    port: u16,
    host: Option<&str>,
    sans: &[&str],
) -> Listener {
    Listener {
        protocol: Protocol::Https,
        tls: Some(ListenerTls { certificates: vec![crate::tls::tests::self_signed(sans)] }),
        ..http_listener(gateway, name, port, host)
    }
}

pub(crate) fn route(
    name: &str,
    listeners: &[&Listener],
    hosts: &[&str],
    rules: Vec<HttpRule>,
) -> HttpRoute {
    HttpRoute {
        id: ObjectId::new("HTTPRoute", "default", name),
        created: None,
        hostnames: hosts.iter().map(|h| Hostname::parse(h).unwrap()).collect(),
        listeners: listeners.iter().map(|l| l.id.clone()).collect(),
        rules,
    }
}

pub(crate) fn backend(name: &str, weight: u32) -> WeightedBackend {
    WeightedBackend {
        weight,
        backend: Backend::Endpoints(BackendEndpoints {
            name: name.into(),
            addrs: vec![SocketAddr::new(LOCALHOST, 9)],
            tls: None,
            protocol: Default::default(),
        }),
        filters: Vec::new(),
    }
}

pub(crate) fn rule(matches: Vec<HttpMatch>, backend_name: &str) -> HttpRule {
    HttpRule {
        name: None,
        matches,
        filters: Vec::new(),
        backends: vec![backend(backend_name, 1)],
        policy: Default::default(),
    }
}

pub(crate) fn prefix(p: &str) -> HttpMatch {
    HttpMatch { path: PathMatch::Prefix(p.into()), ..HttpMatch::default() }
}

pub(crate) fn exact(p: &str) -> HttpMatch {
    HttpMatch { path: PathMatch::Exact(p.into()), ..HttpMatch::default() }
}

pub(crate) fn regex(p: &str) -> HttpMatch {
    HttpMatch { path: PathMatch::Regex(p.into()), ..HttpMatch::default() }
}
