//! The kinds this crate reads, as one enum, and their identities.

use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::types::{
    BackendTlsPolicy, Gateway, GatewayClass, GrpcRoute, HttpRoute, ListenerSet, ReferenceGrant,
    TcpRoute, TlsRoute, UdpRoute, WasmPlugin,
};

/// One object of a kind the index holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    GatewayClass(GatewayClass),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    ReferenceGrant(ReferenceGrant),
    Namespace(Namespace),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Secret(Secret),
    /// Boxed: a Node is several times larger than the other kinds.
    Node(Box<Node>),
    /// Ours (`gatehouse.dev/v1alpha1`): a plugin that ExtensionRef filters point at.
    WasmPlugin(WasmPlugin),
    /// More listeners for a Gateway.
    ListenerSet(ListenerSet),
    TcpRoute(TcpRoute),
    UdpRoute(UdpRoute),
    TlsRoute(TlsRoute),
    BackendTlsPolicy(BackendTlsPolicy),
    /// CA certificates (`ca.crt`) that BackendTLSPolicies and frontend validation point at.
    ConfigMap(ConfigMap),
    GrpcRoute(GrpcRoute),
}

/// The kinds the index holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    GatewayClass,
    Gateway,
    HttpRoute,
    ReferenceGrant,
    Namespace,
    Service,
    EndpointSlice,
    Secret,
    /// Watched only when backends are addressed by node and nodePort.
    Node,
    WasmPlugin,
    ListenerSet,
    TcpRoute,
    UdpRoute,
    TlsRoute,
    BackendTlsPolicy,
    ConfigMap,
    GrpcRoute,
}

impl Kind {
    /// Every kind, in index order.
    pub const ALL: [Kind; 17] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::ReferenceGrant,
        Kind::Namespace,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::Node,
        Kind::WasmPlugin,
        Kind::ListenerSet,
        Kind::TcpRoute,
        Kind::UdpRoute,
        Kind::TlsRoute,
        Kind::BackendTlsPolicy,
        Kind::ConfigMap,
        Kind::GrpcRoute,
    ];

    /// The Kubernetes kind name (`HTTPRoute`, `EndpointSlice`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::Node => "Node",
            Kind::WasmPlugin => "WasmPlugin",
            Kind::ListenerSet => "ListenerSet",
            Kind::TcpRoute => "TCPRoute",
            Kind::UdpRoute => "UDPRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::BackendTlsPolicy => "BackendTLSPolicy",
            Kind::ConfigMap => "ConfigMap",
            Kind::GrpcRoute => "GRPCRoute",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace | Kind::Node)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identity of an object: kind, namespace (empty when cluster-scoped) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// Builds a reference; the namespace is dropped for cluster-scoped kinds.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let namespace = if kind.is_namespaced() { namespace.into() } else { String::new() };
        Self { kind, namespace, name: name.into() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_namespaced() {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        } else {
            write!(f, "{} {}", self.kind, self.name)
        }
    }
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
            Object::Namespace(_) => Kind::Namespace,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::Node(_) => Kind::Node,
            Object::WasmPlugin(_) => Kind::WasmPlugin,
            Object::ListenerSet(_) => Kind::ListenerSet,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::UdpRoute(_) => Kind::UdpRoute,
            Object::TlsRoute(_) => Kind::TlsRoute,
            Object::BackendTlsPolicy(_) => Kind::BackendTlsPolicy,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::GatewayClass(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::WasmPlugin(o) => &o.metadata,
            Object::ListenerSet(o) => &o.metadata,
            Object::TcpRoute(o) => &o.metadata,
            Object::UdpRoute(o) => &o.metadata,
            Object::TlsRoute(o) => &o.metadata,
            Object::BackendTlsPolicy(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
        }
    }

    /// Kind, namespace and name.
    pub fn object_ref(&self) -> ObjectRef {
        let meta = self.metadata();
        ObjectRef::new(
            self.kind(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}
