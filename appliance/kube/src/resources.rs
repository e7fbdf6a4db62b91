//! Which API resources are watched, and in which scopes.

use gatehouse_gateway::loader::TLS_SECRET_TYPE;
use gatehouse_gateway::types::GROUP;
use gatehouse_gateway::types::WasmPlugin;
use gatehouse_gateway::{BackendAddressing, Kind};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::ApiResource;

/// The API resource a kind is watched as. Gateway API kinds are read as dynamic objects and
/// converted by the gateway crate, exactly as YAML documents are.
pub fn api_resource(kind: Kind) -> ApiResource {
    let gateway_api = |version: &str, kind: &str, plural: &str| ApiResource {
        group: GROUP.to_owned(),
        version: version.to_owned(),
        api_version: format!("{GROUP}/{version}"),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    };
    match kind {
        Kind::GatewayClass => gateway_api("v1", "GatewayClass", "gatewayclasses"),
        Kind::Gateway => gateway_api("v1", "Gateway", "gateways"),
        Kind::HttpRoute => gateway_api("v1", "HTTPRoute", "httproutes"),
        Kind::GrpcRoute => gateway_api("v1", "GRPCRoute", "grpcroutes"),
        // Still v1beta1 in the standard channel's storage version.
        Kind::ReferenceGrant => gateway_api("v1beta1", "ReferenceGrant", "referencegrants"),
        Kind::Namespace => ApiResource::erase::<Namespace>(&()),
        Kind::Service => ApiResource::erase::<Service>(&()),
        Kind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        Kind::Secret => ApiResource::erase::<Secret>(&()),
        Kind::Node => ApiResource::erase::<Node>(&()),
        // Ours; its CRD comes from the same type (see `crds`).
        Kind::WasmPlugin => ApiResource::erase::<WasmPlugin>(&()),
        // Standard channel since Gateway API v1.5.
        Kind::ListenerSet => gateway_api("v1", "ListenerSet", "listenersets"),
        // Experimental channel (TLSRoute is standard since v1.5).
        Kind::TcpRoute => gateway_api("v1alpha2", "TCPRoute", "tcproutes"),
        Kind::UdpRoute => gateway_api("v1alpha2", "UDPRoute", "udproutes"),
        Kind::TlsRoute => gateway_api("v1", "TLSRoute", "tlsroutes"),
        Kind::BackendTlsPolicy => gateway_api("v1", "BackendTLSPolicy", "backendtlspolicies"),
        Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
    }
}

/// Kinds whose CRD a cluster may lack (Gateway API experimental channel, or a release before
/// TLSRoute v1): a watch answered 404 reads none of them instead of failing.
pub fn is_optional(kind: Kind) -> bool {
    matches!(kind, Kind::TcpRoute | Kind::UdpRoute | Kind::TlsRoute)
}

/// The field selector a kind is listed and watched with: only TLS Secrets are ever read.
pub fn field_selector(kind: Kind) -> Option<String> {
    (kind == Kind::Secret).then(|| format!("type={TLS_SECRET_TYPE}"))
}

/// One watch: a kind in every namespace, or in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    pub kind: Kind,
    /// `None`: cluster-wide (every namespace, or a cluster-scoped kind).
    pub namespace: Option<String>,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} in {namespace}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// The kinds watched: every kind the index holds, but Nodes only when backends are addressed
/// by node and nodePort (so the endpoints mode needs no access to Nodes).
pub fn watched_kinds(addressing: BackendAddressing) -> impl Iterator<Item = Kind> {
    Kind::ALL
        .into_iter()
        .filter(move |kind| *kind != Kind::Node || addressing == BackendAddressing::NodePort)
}

/// Every watch started at once for a namespace filter (empty: every namespace). Cluster-scoped
/// kinds are always watched cluster-wide. Secrets and ConfigMaps are not among them: they are
/// watched only in the namespaces that reference them (see `secrets`).
pub fn scopes(namespaces: &[String], addressing: BackendAddressing) -> Vec<Scope> {
    let mut scopes = Vec::new();
    for kind in watched_kinds(addressing).filter(|k| !matches!(k, Kind::Secret | Kind::ConfigMap)) {
        if !kind.is_namespaced() || namespaces.is_empty() {
            scopes.push(Scope { kind, namespace: None });
        } else {
            scopes.extend(namespaces.iter().map(|ns| Scope { kind, namespace: Some(ns.clone()) }));
        }
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_filter_splits_namespaced_kinds_only() {
        let endpoints = BackendAddressing::Endpoints;
        assert_eq!(
            scopes(&[], endpoints).len(),
            Kind::ALL.len() - 3,
            "no Nodes, Secrets, ConfigMaps"
        );
        let nodeport = scopes(&[], BackendAddressing::NodePort);
        assert!(nodeport.contains(&Scope { kind: Kind::Node, namespace: None }));
        let filtered = scopes(&["a".into(), "b".into()], endpoints);
        // GatewayClass and Namespace once, the namespaced kinds twice (Secrets and ConfigMaps
        // come later).
        let namespaced = Kind::ALL
            .iter()
            .filter(|k| k.is_namespaced() && **k != Kind::Secret && **k != Kind::ConfigMap)
            .count();
        assert_eq!(filtered.len(), 2 + namespaced * 2);
        assert!(filtered.contains(&Scope { kind: Kind::Namespace, namespace: None }));
        assert!(filtered.contains(&Scope { kind: Kind::Service, namespace: Some("b".into()) }));
        assert!(!filtered.contains(&Scope { kind: Kind::Service, namespace: None }));
    }

    #[test]
    fn resources_match_the_kinds() {
        for kind in Kind::ALL {
            assert_eq!(api_resource(kind).kind, kind.as_str());
        }
        assert_eq!(api_resource(Kind::EndpointSlice).api_version, "discovery.k8s.io/v1");
        assert_eq!(api_resource(Kind::HttpRoute).plural, "httproutes");
        assert_eq!(api_resource(Kind::GrpcRoute).plural, "grpcroutes");
        assert_eq!(api_resource(Kind::WasmPlugin).api_version, "gatehouse.dev/v1alpha1");
        assert_eq!(api_resource(Kind::WasmPlugin).plural, "wasmplugins");
        assert_eq!(api_resource(Kind::ListenerSet).api_version, "gateway.networking.k8s.io/v1");
        assert_eq!(api_resource(Kind::ListenerSet).plural, "listenersets");
        assert_eq!(field_selector(Kind::Secret).as_deref(), Some("type=kubernetes.io/tls"));
        assert_eq!(field_selector(Kind::Service), None);
    }
}
