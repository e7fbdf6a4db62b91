//! The file as written: serde types mirroring the TOML, strict about unknown keys.
//!
//! Values validated after deserialisation are `Spanned` so that every semantic error can name
//! its line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    pub admin: Option<Admin>,
    pub runtime: Option<Runtime>,
    pub gateway_api: Option<GatewayApi>,
    pub kubernetes: Option<Spanned<Kubernetes>>,
    pub ipam: Option<Ipam>,
    pub acme: Option<crate::acme::schema::Acme>,
    #[serde(default)]
    pub gateways: Vec<Gateway>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub plugins: Vec<Plugin>,
    pub xdp: Option<Spanned<crate::xdp::schema::Xdp>>,
    #[serde(default)]
    pub l4_services: Vec<crate::xdp::schema::L4Service>,
    pub l4: Option<crate::l4::schema::L4>,
}

/// `[[plugins]]`: a proxy-wasm filter plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Plugin {
    pub name: Spanned<String>,
    /// A path (relative to the config file) or an `http(s)://` URL.
    pub module: Spanned<String>,
    pub sha256: Option<Spanned<String>>,
    /// Any TOML; handed to the plugin as JSON.
    pub config: Option<toml::Value>,
    pub failure_policy: Option<Spanned<FailurePolicy>>,
    pub timeout_ms: Option<Spanned<u64>>,
    /// Bytes, or a string with a `KiB`/`MiB`/`GiB` suffix.
    pub memory_limit: Option<Spanned<MemoryLimit>>,
    /// Upstreams the plugin may call (`proxy_http_call`), by name.
    #[serde(default)]
    pub upstreams: Vec<Spanned<PluginUpstream>>,
}

/// `{ name, address = "ip:port" }` or `{ name, dns = "host:port" }`, optionally with `tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PluginUpstream {
    pub name: Spanned<String>,
    pub address: Option<Spanned<String>>,
    pub dns: Option<Spanned<String>>,
    pub tls: Option<Spanned<UpstreamTls>>,
}

/// `tls = true` (system roots, the `dns` host as server name) or
/// `tls = { server_name = "…", ca_file = "ca.pem" }` (plain strings: `Spanned` does not
/// survive an untagged enum).
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "tls = true, false or { server_name = \"…\", ca_file = \"…\" } (no other keys)"
)]
pub(crate) enum UpstreamTls {
    On(bool),
    Settings(UpstreamTlsSettings),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpstreamTlsSettings {
    pub server_name: Option<String>,
    /// A PEM file of CA certificates, relative to the config file.
    pub ca_file: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FailurePolicy {
    Closed,
    Open,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum MemoryLimit {
    Bytes(u64),
    Text(String),
}

/// `{ wasm = { plugin = "name" } }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WasmFilter {
    pub plugin: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Runtime {
    pub shutdown_grace_ms: Option<u64>,
    pub state_dir: Option<Spanned<String>>,
    pub local_routes: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GatewayApi {
    pub controller_name: Option<Spanned<String>>,
    #[serde(default)]
    pub manifests: Vec<Spanned<String>>,
    pub default_address: Option<Spanned<String>>,
    pub wasm_module_dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Kubernetes {
    pub kubeconfig: Option<Spanned<String>>,
    pub controller_name: Option<Spanned<String>>,
    pub namespaces: Option<Spanned<Vec<Spanned<String>>>>,
    pub default_address: Option<Spanned<String>>,
    pub write_status: Option<bool>,
    pub lease_namespace: Option<Spanned<String>>,
    pub lease_name: Option<Spanned<String>>,
    pub identity: Option<Spanned<String>>,
    pub lease_duration_seconds: Option<Spanned<u64>>,
    pub backend_addressing: Option<crate::BackendAddressing>,
    pub wasm_module_dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Gateway {
    pub name: Spanned<String>,
    pub addresses: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub name: Spanned<String>,
    pub port: Spanned<u16>,
    pub protocol: Spanned<Protocol>,
    pub hostname: Option<Spanned<String>>,
    pub tls: Option<Spanned<Tls>>,
    /// Names of `[[plugins]]` run on every request of this listener.
    #[serde(default)]
    pub plugins: Vec<Spanned<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub(crate) enum Protocol {
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    #[serde(default)]
    pub certificates: Vec<CertificateFiles>,
    /// The listener's hostname certified by an ACME issuer.
    pub acme: Option<Spanned<crate::acme::schema::ListenerAcme>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateFiles {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub name: Spanned<String>,
    #[serde(default)]
    pub parents: Vec<Spanned<String>>,
    #[serde(default)]
    pub hostnames: Vec<Spanned<String>>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rule {
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub matches: Vec<Match>,
    #[serde(default)]
    pub filters: Vec<Spanned<Filter>>,
    #[serde(default)]
    pub backends: Vec<Spanned<Backend>>,
    pub timeouts: Option<Spanned<Timeouts>>,
    pub retry: Option<Retry>,
}

/// `timeouts` of a rule, in milliseconds; 0 disables one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Timeouts {
    pub request_ms: Option<u64>,
    pub backend_request_ms: Option<u64>,
}

/// `retry` of a rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Retry {
    #[serde(default)]
    pub codes: Vec<Spanned<u16>>,
    pub attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Match {
    pub path: Option<Spanned<PathMatch>>,
    pub method: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: Vec<Spanned<StringMatch>>,
    #[serde(default)]
    pub query: Vec<Spanned<StringMatch>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum PathMatch {
    Exact(Spanned<String>),
    Prefix(Spanned<String>),
    Regex(Spanned<String>),
}

/// A header or query parameter match: `name` and exactly one of `exact` / `regex`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StringMatch {
    pub name: Spanned<String>,
    pub exact: Option<String>,
    pub regex: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(Redirect),
    UrlRewrite(Rewrite),
    Wasm(WasmFilter),
    RequestMirror(Mirror),
    Cors(Cors),
}

/// `request_mirror`: a backend (exactly one of `address` / `dns`) and the share of requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mirror {
    pub address: Option<Spanned<String>>,
    pub dns: Option<Spanned<String>>,
    pub percent: Option<Spanned<u32>>,
}

/// `cors`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cors {
    #[serde(default)]
    pub allow_origins: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    pub max_age_seconds: Option<u32>,
    #[serde(default)]
    pub allow_credentials: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderModifier {
    #[serde(default)]
    pub set: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub add: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redirect {
    pub scheme: Option<Spanned<String>>,
    pub hostname: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub path: Option<PathModifier>,
    pub status: Option<Spanned<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rewrite {
    pub hostname: Option<Spanned<String>>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum PathModifier {
    ReplaceFull(Spanned<String>),
    ReplacePrefix(Spanned<String>),
}

/// A backend: exactly one of `address` / `dns`, checked semantically.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Backend {
    pub address: Option<Spanned<String>>,
    pub dns: Option<Spanned<String>>,
    pub weight: Option<Spanned<u32>>,
    /// How the proxy speaks to the backend; HTTP/1.1 when left out.
    #[serde(default)]
    pub protocol: BackendProtocol,
    #[serde(default)]
    pub filters: Vec<Spanned<Filter>>,
}

/// A backend's `protocol`: `"http1"` or `"h2c"` (HTTP/2 with prior knowledge).
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BackendProtocol {
    #[default]
    Http1,
    H2c,
}

impl From<BackendProtocol> for gatehouse_model::BackendProtocol {
    fn from(p: BackendProtocol) -> Self {
        match p {
            BackendProtocol::Http1 => Self::Http1,
            BackendProtocol::H2c => Self::H2c,
        }
    }
}

/// `[ipam]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ipam {
    #[serde(default)]
    pub pools: Vec<IpamPool>,
}

/// `[[ipam.pools]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpamPool {
    pub name: Spanned<String>,
    #[serde(default)]
    pub cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    pub ranges: Vec<Spanned<Range>>,
    pub auto_assign: Option<bool>,
    #[serde(default)]
    pub namespaces: Vec<Spanned<String>>,
    pub selector: Option<Selector>,
    pub namespace_selector: Option<Selector>,
}

/// An explicit address range, both ends included.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Range {
    pub start: Spanned<String>,
    pub end: Spanned<String>,
}

/// A Kubernetes-style label selector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<Spanned<Expression>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Expression {
    pub key: String,
    pub operator: Spanned<String>,
    #[serde(default)]
    pub values: Vec<String>,
}
