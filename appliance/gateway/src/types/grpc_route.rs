use serde::{Deserialize, Serialize};

use super::{BackendRef, HeaderMatch, MatchType, ParentReference, RouteFilter, resource};

resource!(
    /// A GRPCRoute: hostnames and rules matching gRPC service/method, attached to Gateway
    /// listeners.
    GrpcRoute,
    GrpcRouteSpec,
    "GRPCRoute"
);

/// `GRPCRoute.spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default = "default_rules")]
    pub rules: Vec<GrpcRule>,
}

fn default_rules() -> Vec<GrpcRule> {
    vec![GrpcRule::default()]
}

/// One rule of a GRPCRoute. Filters and backendRefs have the HTTPRoute shapes; only the
/// filter types the GRPCRoute CRD allows are accepted by the translation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Empty matches every gRPC request.
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    #[serde(default)]
    pub filters: Vec<RouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Accepted and ignored (extended, not implemented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

/// Conditions a gRPC request must meet, all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

/// A match on the gRPC service and/or method (at least one of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    #[serde(default, rename = "type")]
    pub kind: MatchType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}
