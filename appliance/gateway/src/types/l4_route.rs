//! TCPRoute and UDPRoute (`v1alpha2`) and TLSRoute (`v1` since Gateway API v1.5; `v1alpha3`
//! and `v1alpha2` read too): routes that forward a stream or datagrams without looking into
//! them, TLSRoute choosing by the ClientHello's SNI.

use serde::{Deserialize, Serialize};

use super::{ParentReference, port, resource};

resource!(
    /// A TCPRoute: TCP connections on a listener of protocol TCP forwarded to its backends.
    TcpRoute,
    L4RouteSpec,
    "TCPRoute"
);

resource!(
    /// A UDPRoute: datagrams on a listener of protocol UDP forwarded to its backends.
    UdpRoute,
    L4RouteSpec,
    "UDPRoute"
);

resource!(
    /// A TLSRoute: TLS connections on a listener of protocol TLS, chosen by SNI.
    TlsRoute,
    TlsRouteSpec,
    "TLSRoute"
);

/// `TCPRoute.spec` and `UDPRoute.spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4RouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    pub rules: Vec<L4Rule>,
}

/// `TLSRoute.spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRouteSpec {
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default)]
    pub hostnames: Vec<String>,
    pub rules: Vec<L4Rule>,
}

/// One rule: the backends a connection or flow is balanced over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub backend_refs: Vec<L4BackendRef>,
}

/// A backend of an L4 route (a Service port, weighted); no filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct L4BackendRef {
    #[serde(default)]
    pub group: String,
    #[serde(default = "service")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "port::optional", skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "one")]
    pub weight: u32,
}

fn service() -> String {
    "Service".to_owned()
}

fn one() -> u32 {
    1
}

impl L4BackendRef {
    /// As an HTTPRoute backendRef without filters (the resolution of both is shared).
    pub fn as_backend_ref(&self) -> super::BackendRef {
        super::BackendRef {
            group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            port: self.port,
            weight: self.weight,
            filters: Vec::new(),
        }
    }
}
