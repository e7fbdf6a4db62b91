//! Builders for hand-made test objects.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::index::{Index, SERVICE_NAME_LABEL};
use crate::object::Object;
use crate::types::*;

pub(crate) const CONTROLLER: &str = "gatehouse.dev/gateway-controller";

pub(crate) fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        name: Some(name.to_owned()),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

pub(crate) fn index(objects: impl IntoIterator<Item = Object>) -> Index {
    let mut index = Index::new();
    index.reset(objects);
    index
}

pub(crate) fn namespace(name: &str, pairs: &[(&str, &str)]) -> Object {
    Object::Namespace(Namespace {
        metadata: ObjectMeta { labels: labels(pairs), ..meta("", name) },
        ..Namespace::default()
    })
}

/// A Service with `(port name, port)` entries.
pub(crate) fn service(namespace: &str, name: &str, ports: &[(Option<&str>, i32)]) -> Object {
    Object::Service(Service {
        metadata: meta(namespace, name),
        spec: Some(ServiceSpec {
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| ServicePort {
                        name: n.map(str::to_owned),
                        port: *p,
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// An EndpointSlice with `(port name, port)` entries and `(address, ready)` endpoints.
pub(crate) fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, i32)],
    endpoints: &[(&str, Option<bool>)],
) -> Object {
    let address_type = if endpoints.iter().any(|(a, _)| a.contains(':')) { "IPv6" } else { "IPv4" };
    Object::EndpointSlice(EndpointSlice {
        metadata: ObjectMeta {
            labels: labels(&[(SERVICE_NAME_LABEL, service)]),
            ..meta(namespace, name)
        },
        address_type: address_type.to_owned(),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(addr, ready)| Endpoint {
                    addresses: vec![(*addr).to_owned()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: Some((*n).to_owned()),
                    port: Some(*p),
                    ..EndpointPort::default()
                })
                .collect(),
        ),
    })
}

pub(crate) const EC_CRT: &str = include_str!("testdata/ec.crt");
pub(crate) const EC_KEY: &str = include_str!("testdata/ec.key");
pub(crate) const RSA_CRT: &str = include_str!("testdata/rsa.crt");
pub(crate) const RSA_KEY: &str = include_str!("testdata/rsa.key");
pub(crate) const ED_CRT: &str = include_str!("testdata/ed25519.crt");
pub(crate) const ED_KEY: &str = include_str!("testdata/ed25519.key");

pub(crate) fn tls_secret(namespace: &str, name: &str, crt: &str, key: &str) -> Object {
    Object::Secret(Secret {
        metadata: meta(namespace, name),
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(crt.as_bytes().to_vec())),
            ("tls.key".to_owned(), ByteString(key.as_bytes().to_vec())),
        ])),
        ..Secret::default()
    })
}

pub(crate) fn gateway_class(name: &str, controller: &str) -> Object {
    Object::GatewayClass(GatewayClass {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "GatewayClass".into(),
        metadata: meta("", name),
        spec: GatewayClassSpec {
            controller_name: controller.to_owned(),
            parameters_ref: None,
            description: None,
        },
        status: None,
    })
}

pub(crate) fn listener(name: &str, port: u16, protocol: &str) -> Listener {
    Listener {
        name: name.to_owned(),
        hostname: None,
        port,
        protocol: protocol.to_owned(),
        tls: None,
        allowed_routes: AllowedRoutes::default(),
    }
}

pub(crate) fn https_listener(name: &str, port: u16, secrets: &[(Option<&str>, &str)]) -> Listener {
    Listener {
        tls: Some(ListenerTls {
            mode: TlsMode::Terminate,
            certificate_refs: secrets
                .iter()
                .map(|(ns, n)| SecretObjectReference {
                    group: String::new(),
                    kind: "Secret".into(),
                    name: (*n).to_owned(),
                    namespace: ns.map(str::to_owned),
                })
                .collect(),
            options: BTreeMap::new(),
        }),
        ..listener(name, port, "HTTPS")
    }
}

pub(crate) fn with_hostname(mut l: Listener, hostname: &str) -> Listener {
    l.hostname = Some(hostname.to_owned());
    l
}

pub(crate) fn allow_from(
    mut l: Listener,
    from: FromNamespaces,
    selector: Option<LabelSelector>,
) -> Listener {
    l.allowed_routes.namespaces = RouteNamespaces { from, selector };
    l
}

pub(crate) fn gateway(
    namespace: &str,
    name: &str,
    class: &str,
    listeners: Vec<Listener>,
) -> Gateway {
    Gateway {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        metadata: meta(namespace, name),
        spec: GatewaySpec {
            gateway_class_name: class.to_owned(),
            listeners,
            addresses: Vec::new(),
            infrastructure: None,
            allowed_listeners: None,
            tls: None,
        },
        status: None,
    }
}

pub(crate) fn parent(namespace: Option<&str>, name: &str) -> ParentReference {
    ParentReference {
        group: GROUP.to_owned(),
        kind: "Gateway".to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
        section_name: None,
        port: None,
    }
}

pub(crate) fn backend(
    namespace: Option<&str>,
    name: &str,
    port: Option<u16>,
    weight: u32,
) -> BackendRef {
    BackendRef {
        group: String::new(),
        kind: "Service".into(),
        name: name.to_owned(),
        namespace: namespace.map(str::to_owned),
        port,
        weight,
        filters: Vec::new(),
    }
}

pub(crate) fn rule(backends: Vec<BackendRef>) -> HttpRule {
    HttpRule { backend_refs: backends, ..HttpRule::default() }
}

pub(crate) fn filter(kind: &str) -> RouteFilter {
    RouteFilter {
        kind: kind.to_owned(),
        request_header_modifier: None,
        response_header_modifier: None,
        request_redirect: None,
        url_rewrite: None,
        request_mirror: None,
        cors: None,
        extension_ref: None,
    }
}

/// An HTTPRoute builder.
pub(crate) struct RouteBuilder(HttpRoute);

pub(crate) fn route(namespace: &str, name: &str) -> RouteBuilder {
    RouteBuilder(HttpRoute {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        metadata: meta(namespace, name),
        spec: HttpRouteSpec { parent_refs: Vec::new(), hostnames: Vec::new(), rules: Vec::new() },
        status: None,
    })
}

impl RouteBuilder {
    pub(crate) fn parent(mut self, p: ParentReference) -> Self {
        self.0.spec.parent_refs.push(p);
        self
    }

    pub(crate) fn hostnames(mut self, hostnames: &[&str]) -> Self {
        self.0.spec.hostnames = hostnames.iter().map(|h| (*h).to_owned()).collect();
        self
    }

    pub(crate) fn rule(mut self, rule: HttpRule) -> Self {
        self.0.spec.rules.push(rule);
        self
    }

    pub(crate) fn created(mut self, unix: i64) -> Self {
        let ts = jiff::Timestamp::from_second(unix).expect("valid timestamp");
        self.0.metadata.creation_timestamp = Some(Time(ts));
        self
    }

    pub(crate) fn build(self) -> Object {
        Object::HttpRoute(self.0)
    }
}

pub(crate) fn grant(
    namespace: &str,
    name: &str,
    from: (&str, &str, &str),
    to: (&str, &str, Option<&str>),
) -> Object {
    Object::ReferenceGrant(ReferenceGrant {
        api_version: "gateway.networking.k8s.io/v1beta1".into(),
        kind: "ReferenceGrant".into(),
        metadata: meta(namespace, name),
        spec: ReferenceGrantSpec {
            from: vec![ReferenceGrantFrom {
                group: from.0.to_owned(),
                kind: from.1.to_owned(),
                namespace: from.2.to_owned(),
            }],
            to: vec![ReferenceGrantTo {
                group: to.0.to_owned(),
                kind: to.1.to_owned(),
                name: to.2.map(str::to_owned),
            }],
        },
        status: None,
    })
}

pub(crate) fn wasm_plugin(namespace: &str, name: &str, spec: WasmPluginSpec) -> Object {
    let mut plugin = WasmPlugin::new(name, spec);
    plugin.metadata = meta(namespace, name);
    Object::WasmPlugin(plugin)
}

/// An `ExtensionRef` filter naming `group`/`kind` `name`.
pub(crate) fn extension_ref(group: &str, kind: &str, name: &str) -> RouteFilter {
    RouteFilter {
        extension_ref: Some(LocalObjectReference {
            group: group.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        }),
        ..filter("ExtensionRef")
    }
}

/// A ListenerSet naming Gateway `gateway_ns/gateway`, created at `created` (unix seconds).
pub(crate) fn listener_set(
    namespace: &str,
    name: &str,
    (gateway_ns, gateway): (&str, &str),
    created: i64,
    listeners: Vec<Listener>,
) -> Object {
    let mut metadata = meta(namespace, name);
    let ts = jiff::Timestamp::from_second(created).expect("valid timestamp");
    metadata.creation_timestamp = Some(Time(ts));
    Object::ListenerSet(ListenerSet {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "ListenerSet".into(),
        metadata,
        spec: ListenerSetSpec {
            parent_ref: ParentGatewayReference {
                group: GROUP.to_owned(),
                kind: "Gateway".to_owned(),
                name: gateway.to_owned(),
                namespace: Some(gateway_ns.to_owned()),
            },
            listeners,
        },
        status: None,
    })
}

/// A route's parentRef to a ListenerSet, optionally to one of its listeners.
pub(crate) fn set_parent(namespace: &str, name: &str, section: Option<&str>) -> ParentReference {
    ParentReference {
        kind: "ListenerSet".to_owned(),
        namespace: Some(namespace.to_owned()),
        section_name: section.map(str::to_owned),
        ..parent(None, name)
    }
}

/// `gateway` with `allowedListeners.namespaces.from` set.
pub(crate) fn allow_listeners(mut gateway: Gateway, from: ListenersFrom) -> Gateway {
    let namespaces = ListenerNamespaces { from, selector: None };
    gateway.spec.allowed_listeners = Some(AllowedListeners { namespaces });
    gateway
}
