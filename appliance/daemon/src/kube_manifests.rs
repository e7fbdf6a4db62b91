//! `gatehouse kube manifests`: the cluster objects cluster mode needs, as multi-document YAML.

use anyhow::Context as _;

use crate::cli::{BackendAddressingArg, ManifestsArgs};

/// The objects (from the kube crate, which derives the RBAC from what it watches and
/// writes) as YAML, after a comment with the kubeconfig recipe.
pub fn render(args: &ManifestsArgs) -> anyhow::Result<String> {
    let names = gatehouse_kube::Manifests {
        controller_name: args.controller_name.clone(),
        gateway_class: args.gateway_class.clone(),
        namespace: args.namespace.clone(),
        lease_name: args.lease_name.clone(),
        service_account: args.service_account.clone(),
        backend_addressing: match args.backend_addressing {
            BackendAddressingArg::Endpoints => gatehouse_gateway::BackendAddressing::Endpoints,
            BackendAddressingArg::Nodeport => gatehouse_gateway::BackendAddressing::NodePort,
        },
    };
    let objects = gatehouse_kube::manifests(&names);
    let yaml = serde_saphyr::to_string_multiple(&objects).context("cannot write YAML")?;
    Ok(format!("{}---\n{yaml}", recipe(&names)))
}

/// How to make a kubeconfig for the ServiceAccount, as a YAML comment.
fn recipe(names: &gatehouse_kube::Manifests) -> String {
    let ns = &names.namespace;
    let sa = &names.service_account;
    let lines = [
        "Gatehouse cluster mode. Apply with: gatehouse kube manifests | kubectl apply -f -".to_owned(),
        "The Gateway API CRDs (standard channel) must be installed first.".to_owned(),
        String::new(),
        "A kubeconfig for an appliance outside the cluster, from the ServiceAccount's token:".to_owned(),
        format!(
            "  TOKEN=$(kubectl -n {ns} get secret {sa}-token -o jsonpath='{{.data.token}}' | base64 -d)"
        ),
        format!(
            "  kubectl -n {ns} get secret {sa}-token -o jsonpath='{{.data.ca\\.crt}}' | base64 -d > ca.crt"
        ),
        "  SERVER=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')".to_owned(),
        "  export KUBECONFIG=gatehouse.kubeconfig".to_owned(),
        "  kubectl config set-cluster cluster --server=\"$SERVER\" --certificate-authority=ca.crt --embed-certs".to_owned(),
        format!("  kubectl config set-credentials {sa} --token=\"$TOKEN\""),
        format!("  kubectl config set-context {sa} --cluster=cluster --user={sa}"),
        format!("  kubectl config use-context {sa}"),
        "Then point [kubernetes] kubeconfig at gatehouse.kubeconfig. In-cluster, omit kubeconfig".to_owned(),
        format!("and run the pod with serviceAccountName: {sa}."),
    ];
    lines
        .iter()
        .map(|line| if line.is_empty() { "#\n".to_owned() } else { format!("# {line}\n") })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn args() -> ManifestsArgs {
        ManifestsArgs {
            controller_name: "example.com/edge".into(),
            gateway_class: "edge".into(),
            namespace: "infra".into(),
            lease_name: "edge".into(),
            service_account: "gatehouse".into(),
            backend_addressing: BackendAddressingArg::Endpoints,
        }
    }

    #[test]
    fn output_is_multi_document_yaml_with_the_expected_objects_and_verbs() {
        let yaml = render(&args()).expect("render");
        assert!(yaml.starts_with("# Gatehouse cluster mode"));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).expect("multi-document YAML");
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "Namespace",
                "ServiceAccount",
                "Secret",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "GatewayClass"
            ]
        );
        assert_eq!(
            docs,
            gatehouse_kube::manifests(&gatehouse_kube::Manifests {
                controller_name: "example.com/edge".into(),
                gateway_class: "edge".into(),
                namespace: "infra".into(),
                lease_name: "edge".into(),
                service_account: "gatehouse".into(),
                backend_addressing: gatehouse_gateway::BackendAddressing::Endpoints,
            })
        );
        assert_eq!(docs[0]["metadata"]["name"], "wasmplugins.gatehouse.dev");
        let cluster_role = &docs[4];
        assert_eq!(
            cluster_role["rules"],
            Value::Array(gatehouse_kube::cluster_rules(
                gatehouse_gateway::BackendAddressing::Endpoints
            ))
        );
        let verbs: Vec<&str> = docs
            .iter()
            .flat_map(|d| d["rules"].as_array().into_iter().flatten())
            .flat_map(|r| r["verbs"].as_array().into_iter().flatten().filter_map(Value::as_str))
            .collect();
        for verb in ["list", "watch", "get", "patch", "create", "update"] {
            assert!(verbs.contains(&verb), "{verb}");
        }
        for verb in ["delete", "*", "deletecollection"] {
            assert!(!verbs.contains(&verb), "{verb}");
        }
        assert_eq!(docs[8]["spec"]["controllerName"], "example.com/edge");
        assert_eq!(docs[6]["metadata"]["namespace"], "infra");
    }
}
