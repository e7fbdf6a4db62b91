use serde::{Deserialize, Serialize};

use super::{Listener, resource};

fn gateway_group() -> String {
    super::GROUP.to_owned()
}

fn gateway_kind() -> String {
    "Gateway".to_owned()
}

resource!(
    /// A ListenerSet (`gateway.networking.k8s.io/v1`, standard since Gateway API v1.5): more
    /// listeners for a Gateway that allows them, possibly from another namespace.
    ListenerSet,
    ListenerSetSpec,
    "ListenerSet"
);

/// `ListenerSet.spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerSetSpec {
    pub parent_ref: ParentGatewayReference,
    /// `ListenerEntry` has the fields of a Gateway's listener.
    pub listeners: Vec<Listener>,
}

/// The Gateway a ListenerSet attaches to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentGatewayReference {
    #[serde(default = "gateway_group")]
    pub group: String,
    #[serde(default = "gateway_kind")]
    pub kind: String,
    pub name: String,
    /// The ListenerSet's own namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
