//! What a cluster needs for an appliance: `gatehouse kube manifests` prints these objects.
//!
//! The RBAC rules are derived from the tables the code itself reads — the watched kinds
//! ([`watched_kinds`] through [`api_resource`]; Nodes only in nodeport mode), the status kinds
//! ([`STATUS_KINDS`]) and the Lease — so the permissions granted are exactly those used.

use std::collections::BTreeMap;

use gatehouse_gateway::BackendAddressing;
use serde_json::{Value, json};

use crate::resources::{api_resource, watched_kinds};
use crate::status::STATUS_KINDS;

/// The names the printed objects use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifests {
    /// The GatewayClass's `spec.controllerName` (the config's `controller_name`).
    pub controller_name: String,
    /// The GatewayClass's name.
    pub gateway_class: String,
    /// Where the ServiceAccount, its token and the Lease live (the config's `lease_namespace`).
    pub namespace: String,
    /// The Lease (the config's `lease_name`).
    pub lease_name: String,
    /// The ServiceAccount, ClusterRole, Role and bindings.
    pub service_account: String,
    /// The config's `backend_addressing`: `NodePort` adds list/watch on Nodes.
    pub backend_addressing: BackendAddressing,
}

/// Verbs on every watched kind: a watcher lists, then watches.
pub const WATCH_VERBS: [&str; 2] = ["list", "watch"];
/// Verbs on `…/status` of [`STATUS_KINDS`]: read the current status, server-side apply ours.
pub const STATUS_VERBS: [&str; 2] = ["get", "patch"];
/// Verbs on the Lease: read it, create it when absent, replace it to renew or take over.
pub const LEASE_VERBS: [&str; 3] = ["get", "create", "update"];
/// Verbs on Secrets for ACME certificates (see `tls_secrets`): read one, server-side apply
/// ours (`create` because an apply may create it). Not needed without ACME issuers.
pub const SECRET_WRITE_VERBS: [&str; 3] = ["get", "create", "patch"];

/// The ClusterRole's rules: one per API group, resources sorted.
pub fn cluster_rules(addressing: BackendAddressing) -> Vec<Value> {
    let mut watched: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kind in watched_kinds(addressing) {
        let resource = api_resource(kind);
        watched.entry(resource.group).or_default().push(resource.plural);
    }
    let mut status: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kind in STATUS_KINDS {
        let resource = api_resource(kind);
        status.entry(resource.group).or_default().push(format!("{}/status", resource.plural));
    }
    let rule = |group: String, mut resources: Vec<String>, verbs: &[&str]| {
        resources.sort();
        resources.dedup();
        json!({"apiGroups": [group], "resources": resources, "verbs": verbs})
    };
    // Our CRDs' kinds are watched kinds too: one rule per group either way.
    for crd in crate::crds::crds() {
        watched.entry(crd.spec.group).or_default().push(crd.spec.names.plural);
    }
    let mut rules: Vec<Value> = Vec::new();
    rules
        .extend(watched.into_iter().map(|(group, resources)| rule(group, resources, &WATCH_VERBS)));
    rules
        .extend(status.into_iter().map(|(group, resources)| rule(group, resources, &STATUS_VERBS)));
    rules.push(rule(String::new(), vec!["secrets".to_owned()], &SECRET_WRITE_VERBS));
    rules
}

/// Every object to apply, in order: our CRDs, the namespace, …, the GatewayClass last.
pub fn manifests(m: &Manifests) -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/name": "gatehouse"});
    let subject = json!([{
        "kind": "ServiceAccount", "name": m.service_account, "namespace": m.namespace
    }]);
    let lease = api_resource_lease();
    // Our CRDs first: a kind must exist before anything of it is applied.
    let mut objects = crate::crds::crd_manifests(&crate::crds::crds());
    objects.extend([
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": m.namespace, "labels": labels},
        }),
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": m.service_account, "namespace": m.namespace, "labels": labels},
        }),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": format!("{}-token", m.service_account), "namespace": m.namespace,
                "labels": labels,
                "annotations": {"kubernetes.io/service-account.name": m.service_account},
            },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": m.service_account, "labels": labels},
            "rules": cluster_rules(m.backend_addressing),
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": m.service_account, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": m.service_account},
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": format!("{}-lease", m.service_account),
                         "namespace": m.namespace, "labels": labels},
            // `create` cannot be limited by name (the object does not exist yet).
            "rules": [
                {"apiGroups": [lease.0], "resources": [lease.1], "verbs": ["create"]},
                {"apiGroups": [lease.0], "resources": [lease.1], "resourceNames": [m.lease_name],
                 "verbs": ["get", "update"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{}-lease", m.service_account),
                         "namespace": m.namespace, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": format!("{}-lease", m.service_account)},
            "subjects": subject,
        }),
        json!({
            "apiVersion": api_resource(gatehouse_gateway::Kind::GatewayClass).api_version, "kind": "GatewayClass",
            "metadata": {"name": m.gateway_class},
            "spec": {"controllerName": m.controller_name},
        }),
    ]);
    objects
}

/// The Lease's API group and plural.
fn api_resource_lease() -> (&'static str, &'static str) {
    ("coordination.k8s.io", "leases")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_gateway::Kind;

    fn names() -> Manifests {
        Manifests {
            controller_name: "gatehouse.dev/gateway-controller".into(),
            gateway_class: "gatehouse".into(),
            namespace: "gatehouse-system".into(),
            lease_name: "gatehouse".into(),
            service_account: "gatehouse".into(),
            backend_addressing: BackendAddressing::Endpoints,
        }
    }

    #[test]
    fn every_watched_kind_is_listable_and_only_status_is_writable() {
        let rules = cluster_rules(BackendAddressing::NodePort);
        for kind in Kind::ALL {
            let resource = api_resource(kind);
            assert!(
                rules.iter().any(|r| r["apiGroups"][0] == resource.group.as_str()
                    && r["resources"]
                        .as_array()
                        .is_some_and(|rs| rs.contains(&resource.plural.clone().into()))
                    && r["verbs"] == json!(WATCH_VERBS)),
                "{kind}"
            );
        }
        let writable: Vec<(&Value, &Value)> = rules
            .iter()
            .filter(|r| r["verbs"] == json!(STATUS_VERBS))
            .map(|r| (&r["apiGroups"][0], &r["resources"]))
            .collect();
        assert_eq!(
            writable,
            [
                (&json!(""), &json!(["services/status"])),
                (
                    &json!("gateway.networking.k8s.io"),
                    &json!([
                        "backendtlspolicies/status",
                        "gatewayclasses/status",
                        "gateways/status",
                        "grpcroutes/status",
                        "httproutes/status",
                        "listenersets/status",
                        "tcproutes/status",
                        "tlsroutes/status",
                        "udproutes/status"
                    ])
                ),
            ]
        );
        // No rule grants more than list/watch, get/patch on status, or the ACME
        // certificates' Secrets.
        for rule in &rules {
            let verbs = &rule["verbs"];
            let secrets = *verbs == json!(SECRET_WRITE_VERBS)
                && rule["resources"] == json!(["secrets"])
                && rule["apiGroups"] == json!([""]);
            assert!(
                *verbs == json!(WATCH_VERBS) || *verbs == json!(STATUS_VERBS) || secrets,
                "{rule}"
            );
        }
    }

    #[test]
    fn nodes_are_listable_only_in_nodeport_mode() {
        let grants_nodes = |rules: Vec<Value>| {
            rules.iter().any(|r| {
                r["apiGroups"][0] == ""
                    && r["resources"].as_array().is_some_and(|rs| rs.contains(&json!("nodes")))
            })
        };
        assert!(!grants_nodes(cluster_rules(BackendAddressing::Endpoints)));
        assert!(grants_nodes(cluster_rules(BackendAddressing::NodePort)));
    }

    #[test]
    fn the_lease_role_matches_the_verbs_the_election_uses() {
        let objects = manifests(&names());
        let role = objects.iter().find(|o| o["kind"] == "Role").expect("a Role");
        let mut verbs: Vec<&str> = role["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["verbs"].as_array().into_iter().flatten().filter_map(Value::as_str))
            .collect();
        verbs.sort_unstable();
        let mut expected = LEASE_VERBS.to_vec();
        expected.sort_unstable();
        assert_eq!(verbs, expected);
        assert_eq!(role["metadata"]["namespace"], "gatehouse-system");
        let class = objects.last().expect("objects");
        assert_eq!(class["spec"]["controllerName"], "gatehouse.dev/gateway-controller");
    }
}
