//! CustomResourceDefinitions of our own kinds (group [`GROUP`]), generated from the Rust types:
//! each kind is a serde type deriving kube's `CustomResource` and schemars' `JsonSchema`, so the
//! CRD's OpenAPI schema is the one the code deserializes. `gatehouse kube manifests` prints
//! them first, and the ClusterRole grants list/watch on each.
//!
//! A kind joins with one line in [`CRDS`]. The types live beside the Gateway API types in
//! `gatehouse_gateway::types` (the file loader reads them too): `WasmPlugin`
//! (`gatehouse.dev/v1alpha1`, namespaced).

use gatehouse_gateway::types::WasmPlugin;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use serde_json::{Value, json};

/// The API group of our own kinds.
pub const GROUP: &str = gatehouse_gateway::types::OUR_GROUP;

/// Every kind of ours, as its `CustomResourceExt::crd` function.
pub const CRDS: &[fn() -> CustomResourceDefinition] = &[WasmPlugin::crd];

/// The CRDs of [`CRDS`].
pub fn crds() -> Vec<CustomResourceDefinition> {
    CRDS.iter().map(|crd| crd()).collect()
}

/// The CRDs as objects to apply.
pub fn crd_manifests(crds: &[CustomResourceDefinition]) -> Vec<Value> {
    crds.iter().filter_map(|crd| serde_json::to_value(crd).ok()).collect()
}

/// `list`/`watch` on every CRD's resource, one rule per group.
pub fn crd_rules(crds: &[CustomResourceDefinition]) -> Vec<Value> {
    let mut by_group: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for crd in crds {
        by_group.entry(&crd.spec.group).or_default().push(&crd.spec.names.plural);
    }
    by_group
        .into_iter()
        .map(|(group, mut plurals)| {
            plurals.sort_unstable();
            json!({"apiGroups": [group], "resources": plurals, "verbs": crate::WATCH_VERBS})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kube::{CustomResource, CustomResourceExt as _};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::*;

    /// A kind of ours as a test fixture, declared the way real ones are.
    #[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
    #[kube(group = "gatehouse.dev", version = "v1alpha1", kind = "Example", namespaced)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct ExampleSpec {
        url: String,
        #[serde(default)]
        fail_open: Option<bool>,
    }

    #[test]
    fn a_derived_kind_becomes_a_crd_and_a_watch_rule() {
        let crds = [Example::crd()];
        let objects = crd_manifests(&crds);
        let crd = &objects[0];
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        assert_eq!(crd["metadata"]["name"], "examples.gatehouse.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["properties"]["url"]["type"], "string");
        assert_eq!(spec["required"], json!(["url"]));
        assert_eq!(
            crd_rules(&crds),
            [json!({"apiGroups": ["gatehouse.dev"], "resources": ["examples"],
                    "verbs": ["list", "watch"]})]
        );
        assert_eq!(crd_rules(&[]), Vec::<Value>::new());
    }
}

#[cfg(test)]
mod wasm_plugin_tests {
    use super::*;

    #[test]
    fn the_wasm_plugin_crd_is_structural_and_watched() {
        let objects = crd_manifests(&crds());
        let crd = objects.iter().find(|c| c["metadata"]["name"] == "wasmplugins.gatehouse.dev");
        let crd = crd.expect("the WasmPlugin CRD");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["kind"], "WasmPlugin");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["module"]));
        assert_eq!(spec["properties"]["config"]["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(spec["properties"]["failurePolicy"]["enum"], json!(["Closed", "Open"]));
        assert_eq!(spec["properties"]["failurePolicy"]["default"], "Closed");
        assert_eq!(spec["properties"]["timeoutMs"]["maximum"], 60000.0);
        // Structural: no type lists or anyOf without a type (the API server rejects them).
        let text = crd.to_string();
        assert!(!text.contains("\"type\":[") && !text.contains("anyOf"), "{text}");
        assert_eq!(
            crd_rules(&crds()),
            [json!({"apiGroups": ["gatehouse.dev"], "resources": ["wasmplugins"],
                    "verbs": ["list", "watch"]})]
        );
    }
}
