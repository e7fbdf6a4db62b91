//! `WasmPlugin` (`gatehouse.dev/v1alpha1`, namespaced): our own kind, a proxy-wasm plugin that
//! an HTTPRoute's `ExtensionRef` filter points at. It carries the fields of a TOML
//! `[[plugins]]` entry; its CRD is generated from this type (`gatehouse kube manifests`).

use kube_derive::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Our API group.
pub const OUR_GROUP: &str = "gatehouse.dev";

/// `WasmPlugin.spec`: where the module is, its configuration and its limits.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "gatehouse.dev",
    version = "v1alpha1",
    kind = "WasmPlugin",
    namespaced,
    derive = "PartialEq",
    crates(kube_core = "::kube_core"),
    doc = "A proxy-wasm filter plugin, run by HTTPRoute rules whose ExtensionRef filter names it."
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPluginSpec {
    /// An `https://` (or `http://`) URL, fetched once and verified against `sha256`; or a
    /// relative path under the appliance's `wasm_module_dir`.
    pub module: String,
    /// Lower- or upper-case hex sha256 of the module; required for a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Any JSON object, handed to the plugin's `proxy_on_configure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub config: Option<serde_json::Value>,
    /// `Closed` (default): a failing plugin answers 500; `Open`: the filter is skipped.
    #[serde(default)]
    pub failure_policy: WasmFailurePolicy,
    /// CPU deadline of one callback, 1 to 60000 ms (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: Option<u64>,
    /// Memory cap of one instance: bytes, or with a `Ki`/`Mi`/`Gi` (or `KiB`/`MiB`/`GiB`)
    /// suffix; 1Mi to 1Gi (default 32Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// Upstreams the plugin may call with `proxy_http_call`, by the name it passes: each a
    /// Service port in the WasmPlugin's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<WasmUpstreamRef>,
}

/// One named upstream of a WasmPlugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmUpstreamRef {
    /// The name the plugin's code passes to `proxy_http_call`.
    pub name: String,
    /// The Service (in the WasmPlugin's namespace) and its port.
    pub service: WasmServicePort,
    /// Calls speak TLS to the Service, verifying its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<WasmUpstreamTls>,
}

/// TLS to a WasmPlugin's upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmUpstreamTls {
    /// Sent as SNI; the name the Service's certificate must be valid for.
    pub server_name: String,
    /// A PEM file of the CA certificates to trust, relative to the appliance's
    /// `wasm_module_dir`; without it, the system's trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// A Service port by the Service's name and the port number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmServicePort {
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
}

/// What a failing plugin does to its request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WasmFailurePolicy {
    #[default]
    Closed,
    Open,
}

/// A schema for free-form JSON objects (structural: the API server keeps unknown fields).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl WasmPlugin {
    /// The Kubernetes kind.
    pub const KIND: &'static str = "WasmPlugin";

    /// Namespace (`default` once loaded).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or_default()
    }

    /// Name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
}
