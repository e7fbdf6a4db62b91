//! Serde types for the Gateway API kinds we read (v1.6 standard channel: GatewayClass,
//! Gateway, HTTPRoute, GRPCRoute, ReferenceGrant), and our own
//! `WasmPlugin` kind (group `gatehouse.dev`).
//!
//! Spec types reject unknown fields, so a typo in a manifest is an error with its field path
//! rather than a silently ignored setting. Defaults follow the CRDs.

mod backend_tls_policy;
mod common;
mod gateway;
mod gateway_class;
mod grpc_route;
mod http_route;
mod l4_route;
mod listener_set;
mod reference_grant;
mod wasm_plugin;

pub use backend_tls_policy::{
    BackendTlsPolicy, BackendTlsPolicySpec, BackendTlsValidation, PolicyTargetReference,
    SubjectAltName,
};
pub use common::{
    GROUP, LabelSelector, LabelSelectorRequirement, LocalObjectReference, ParentReference,
    RouteGroupKind, SecretObjectReference,
};
pub use gateway::{
    AllowedListeners, AllowedRoutes, FromNamespaces, FrontendTlsConfig, FrontendValidation,
    FrontendValidationMode, Gateway, GatewayBackendTls, GatewayInfrastructure, GatewaySpec,
    GatewaySpecAddress, GatewayTlsConfig, Listener, ListenerNamespaces, ListenerTls, ListenersFrom,
    ObjectReference, RouteNamespaces, TlsConfig, TlsMode, TlsPortConfig,
};
pub use gateway_class::{GatewayClass, GatewayClassSpec, ParametersReference};
pub use grpc_route::{GrpcMethodMatch, GrpcRoute, GrpcRouteMatch, GrpcRouteSpec, GrpcRule};
pub use http_route::{
    BackendObjectReference, BackendRef, CorsFilter, Fraction, HeaderFilter, HeaderMatch,
    HeaderValue, HttpRoute, HttpRouteSpec, HttpRule, MatchType, MirrorFilter, PathMatch,
    PathMatchType, PathModifier, PathModifierType, QueryParamMatch, RedirectFilter, RewriteFilter,
    RouteFilter, RouteMatch, RouteRetry, RouteTimeouts,
};
pub use l4_route::{L4BackendRef, L4RouteSpec, L4Rule, TcpRoute, TlsRoute, TlsRouteSpec, UdpRoute};
pub use listener_set::{ListenerSet, ListenerSetSpec, ParentGatewayReference};
pub use reference_grant::{
    ReferenceGrant, ReferenceGrantFrom, ReferenceGrantSpec, ReferenceGrantTo,
};
pub use wasm_plugin::{
    OUR_GROUP, WasmFailurePolicy, WasmPlugin, WasmPluginSpec, WasmServicePort, WasmUpstreamRef,
    WasmUpstreamTls,
};

/// Defines a namespaced or cluster-scoped Gateway API object with `metadata` and `spec`.
///
/// `status` is accepted (manifests exported from a cluster carry it) and ignored.
macro_rules! resource {
    ($(#[$doc:meta])* $name:ident, $spec:ty, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// `gateway.networking.k8s.io/v1` or `/v1beta1`.
            #[serde(default)]
            pub api_version: String,
            #[serde(default)]
            pub kind: String,
            #[serde(default)]
            pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            pub spec: $spec,
            #[serde(default, skip_serializing)]
            pub status: Option<serde_json::Value>,
        }

        impl $name {
            /// The Kubernetes kind.
            pub const KIND: &'static str = $kind;

            /// Namespace (empty for cluster-scoped kinds).
            pub fn namespace(&self) -> &str {
                self.metadata.namespace.as_deref().unwrap_or_default()
            }

            /// Name.
            pub fn name(&self) -> &str {
                self.metadata.name.as_deref().unwrap_or_default()
            }
        }
    };
}
pub(crate) use resource;

/// Deserializes a port number, rejecting 0 (the CRDs require 1..=65535).
pub(crate) mod port {
    use serde::{Deserialize, Deserializer, de::Error};

    pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        let port = u16::deserialize(d)?;
        if port == 0 {
            return Err(D::Error::custom("port must be between 1 and 65535"));
        }
        Ok(port)
    }

    pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        required(d).map(Some)
    }
}
