//! The proxy's compile step on a structured `Desired`: listener conflicts, hostname
//! intersection, regex/header/method matches, filters, weights and TLS material, all from
//! fuzz input. Request selection is crate-private in the proxy, so only compile is reached.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use gatehouse_model::{
    Backend, BackendEndpoints, Certificate, Desired, HeaderMatch, HeaderModifier, Hostname,
    HttpFilter, HttpMatch, HttpRoute, HttpRule, Listener, ListenerId, ListenerTls, ObjectId,
    PathMatch, PathModifier, Protocol, QueryMatch, Redirect, Rewrite, StringMatch,
    UnresolvedBackend, WeightedBackend,
};
use libfuzzer_sys::fuzz_target;

/// A valid chain and key, so the fuzzer also reaches the TLS listener paths past loading.
const CERT: &str = include_str!("../../examples/certs/site.pem");
const KEY: &str = include_str!("../../examples/certs/site.key");

/// Few gateways, listener names and addresses, so routes and listeners collide often.
const GATEWAYS: [&str; 2] = ["a", "b"];
const LISTENER_NAMES: [&str; 3] = ["http", "https", "extra"];
const ADDRESSES: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

#[derive(Arbitrary, Debug)]
struct Input {
    generation: u64,
    listeners: Vec<ListenerIn>,
    routes: Vec<RouteIn>,
}

#[derive(Arbitrary, Debug)]
struct ListenerRef {
    gateway: u8,
    name: u8,
}

impl ListenerRef {
    fn id(&self) -> ListenerId {
        let gateway = GATEWAYS[usize::from(self.gateway) % GATEWAYS.len()];
        let name = LISTENER_NAMES[usize::from(self.name) % LISTENER_NAMES.len()];
        ListenerId { gateway: ObjectId::new("Gateway", "fuzz", gateway), name: name.to_owned() }
    }
}

#[derive(Arbitrary, Debug)]
struct ListenerIn {
    id: ListenerRef,
    addresses: Vec<u8>,
    /// Few ports, so sockets are shared.
    port: u8,
    hostname: Option<String>,
    tls: Option<Vec<CertIn>>,
}

#[derive(Arbitrary, Debug)]
enum CertIn {
    Valid,
    Arbitrary { chain_pem: String, key_pem: String },
}

#[derive(Arbitrary, Debug)]
struct RouteIn {
    name: String,
    created: Option<i64>,
    hostnames: Vec<String>,
    listeners: Vec<ListenerRef>,
    rules: Vec<RuleIn>,
}

#[derive(Arbitrary, Debug)]
struct RuleIn {
    name: Option<String>,
    matches: Vec<MatchIn>,
    filters: Vec<FilterIn>,
    backends: Vec<BackendIn>,
}

#[derive(Arbitrary, Debug)]
struct MatchIn {
    path: PathIn,
    headers: Vec<(String, ValueIn)>,
    query: Vec<(String, ValueIn)>,
    method: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum PathIn {
    Exact(String),
    Prefix(String),
    Regex(String),
}

#[derive(Arbitrary, Debug)]
enum ValueIn {
    Exact(String),
    Regex(String),
}

#[derive(Arbitrary, Debug)]
enum FilterIn {
    RequestHeaders(HeadersIn),
    ResponseHeaders(HeadersIn),
    Redirect {
        scheme: Option<String>,
        hostname: Option<String>,
        path: Option<PathModifierIn>,
        port: Option<u16>,
        status: u16,
    },
    Rewrite {
        hostname: Option<String>,
        path: Option<PathModifierIn>,
    },
}

#[derive(Arbitrary, Debug)]
struct HeadersIn {
    set: Vec<(String, String)>,
    add: Vec<(String, String)>,
    remove: Vec<String>,
}

#[derive(Arbitrary, Debug)]
enum PathModifierIn {
    Full(String),
    Prefix(String),
}

#[derive(Arbitrary, Debug)]
struct BackendIn {
    weight: u32,
    target: TargetIn,
    filters: Vec<FilterIn>,
}

#[derive(Arbitrary, Debug)]
enum TargetIn {
    Endpoints(Vec<u16>),
    Dns { host: String, port: u16 },
    Unresolved,
}

fn hostname(raw: &str) -> Option<Hostname> {
    Hostname::parse(raw).ok()
}

fn listener(l: ListenerIn) -> Listener {
    let addresses =
        l.addresses.iter().map(|a| ADDRESSES[usize::from(*a) % ADDRESSES.len()]).collect();
    let tls = l.tls.map(|certs| ListenerTls {
        certificates: certs
            .into_iter()
            .map(|c| match c {
                CertIn::Valid => Certificate {
                    source: "fuzz/valid".to_owned(),
                    chain_pem: CERT.to_owned(),
                    key_pem: KEY.to_owned(),
                },
                CertIn::Arbitrary { chain_pem, key_pem } => {
                    Certificate { source: "fuzz/arbitrary".to_owned(), chain_pem, key_pem }
                }
            })
            .collect(),
    });
    Listener {
        id: l.id.id(),
        addresses,
        port: 8000 + u16::from(l.port % 4),
        protocol: if tls.is_some() { Protocol::Https } else { Protocol::Http },
        hostname: l.hostname.as_deref().and_then(hostname),
        tls,
    }
}

fn string_match(v: ValueIn) -> StringMatch {
    match v {
        ValueIn::Exact(s) => StringMatch::Exact(s),
        ValueIn::Regex(s) => StringMatch::Regex(s),
    }
}

fn http_match(m: MatchIn) -> HttpMatch {
    HttpMatch {
        path: match m.path {
            PathIn::Exact(p) => PathMatch::Exact(p),
            PathIn::Prefix(p) => PathMatch::Prefix(p),
            PathIn::Regex(p) => PathMatch::Regex(p),
        },
        headers: m
            .headers
            .into_iter()
            .map(|(name, v)| HeaderMatch { name, value: string_match(v) })
            .collect(),
        query: m
            .query
            .into_iter()
            .map(|(name, v)| QueryMatch { name, value: string_match(v) })
            .collect(),
        method: m.method,
    }
}

fn path_modifier(p: PathModifierIn) -> PathModifier {
    match p {
        PathModifierIn::Full(s) => PathModifier::ReplaceFullPath(s),
        PathModifierIn::Prefix(s) => PathModifier::ReplacePrefixMatch(s),
    }
}

fn headers(h: HeadersIn) -> HeaderModifier {
    HeaderModifier { set: h.set, add: h.add, remove: h.remove }
}

fn filter(f: FilterIn) -> HttpFilter {
    match f {
        FilterIn::RequestHeaders(h) => HttpFilter::RequestHeaderModifier(headers(h)),
        FilterIn::ResponseHeaders(h) => HttpFilter::ResponseHeaderModifier(headers(h)),
        FilterIn::Redirect { scheme, hostname, path, port, status } => {
            HttpFilter::RequestRedirect(Redirect {
                scheme,
                hostname,
                path: path.map(path_modifier),
                port,
                status,
            })
        }
        FilterIn::Rewrite { hostname, path } => {
            HttpFilter::UrlRewrite(Rewrite { hostname, path: path.map(path_modifier) })
        }
    }
}

fn backend(b: BackendIn) -> WeightedBackend {
    let backend = match b.target {
        TargetIn::Endpoints(ports) => Backend::Endpoints(BackendEndpoints {
            name: "fuzz/endpoints".to_owned(),
            addrs: ports.into_iter().map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))).collect(),
            tls: None,
            protocol: Default::default(),
        }),
        TargetIn::Dns { host, port } => Backend::Dns {
            name: "fuzz/dns".to_owned(),
            host,
            port,
            protocol: Default::default(),
        },
        TargetIn::Unresolved => Backend::Unresolved(UnresolvedBackend {
            name: "fuzz/unresolved".to_owned(),
            reason: "fuzz".to_owned(),
        }),
    };
    WeightedBackend {
        weight: b.weight,
        backend,
        filters: b.filters.into_iter().map(filter).collect(),
    }
}

fn route(r: RouteIn) -> HttpRoute {
    HttpRoute {
        id: ObjectId::new("HTTPRoute", "fuzz", r.name),
        created: r.created,
        hostnames: r.hostnames.iter().filter_map(|h| hostname(h)).collect(),
        listeners: r.listeners.iter().map(ListenerRef::id).collect(),
        rules: r
            .rules
            .into_iter()
            .map(|rule| HttpRule {
                name: rule.name,
                matches: rule.matches.into_iter().map(http_match).collect(),
                filters: rule.filters.into_iter().map(filter).collect(),
                backends: rule.backends.into_iter().map(backend).collect(),
                policy: Default::default(),
            })
            .collect(),
    }
}

fuzz_target!(|input: Input| {
    let desired = Desired {
        generation: input.generation,
        listeners: input.listeners.into_iter().map(listener).collect(),
        http_routes: input.routes.into_iter().map(route).collect(),
        ..Default::default()
    };
    let (table, problems) = gatehouse_proxy::compile(&desired);
    assert_eq!(table.problems(), problems.as_slice());
    assert_eq!(table.generation(), desired.generation);
    let _ = table.addresses().count();
    let _ = table.describe();
});
