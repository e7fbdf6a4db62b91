use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::{Backend, HttpFilter, ListenerId};

/// A proxy-wasm filter plugin: its module, configuration and limits. Routes and listeners
/// refer to it by name with [`crate::HttpFilter::Wasm`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WasmPlugin {
    /// Unique name (`namespace/name` for Gateway API `WasmPlugin` objects).
    pub name: String,
    pub module: ModuleSource,
    /// Plugin configuration handed to `proxy_on_configure`, as JSON text.
    pub config: String,
    pub failure_policy: FailurePolicy,
    /// CPU deadline of one callback.
    pub timeout: Duration,
    /// Memory cap of one instance, in bytes.
    pub memory_limit: u64,
    /// The upstreams the plugin may call with `proxy_http_call`, by the name it passes.
    pub upstreams: Vec<WasmUpstream>,
}

/// A named upstream of a plugin: `proxy_http_call("name", …)` goes to `backend`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WasmUpstream {
    /// The name the plugin's code uses (Envoy's cluster name).
    pub name: String,
    pub backend: Backend,
    /// TLS to the upstream; `None` is cleartext.
    pub tls: Option<UpstreamTls>,
}

/// TLS of a plugin's upstream: calls verify its certificate and speak HTTP/1.1 over it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// Sent as SNI; the name the upstream's certificate must be valid for.
    pub server_name: String,
    /// A PEM file of the CA certificates to trust instead of the system's trust store.
    pub ca_file: Option<PathBuf>,
}

impl WasmPlugin {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
    pub const DEFAULT_MEMORY_LIMIT: u64 = 32 << 20;
    /// Bounds every source enforces on `memory_limit` (bytes) and `timeout`.
    pub const MIN_MEMORY_LIMIT: u64 = 1 << 20;
    pub const MAX_MEMORY_LIMIT: u64 = 1 << 30;
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
}

/// Where a plugin's module comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum ModuleSource {
    /// A local file, optionally pinned by its lower-case hex sha256.
    Path { path: PathBuf, sha256: Option<String> },
    /// Fetched once over HTTP(S) and verified against the mandatory sha256.
    Url { url: String, sha256: String },
}

/// What a failing plugin (trap, timeout, memory cap) does to its request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum FailurePolicy {
    /// Answer 500.
    #[default]
    Closed,
    /// Skip the filter and go on.
    Open,
}

/// Filters of a whole listener (today: [`HttpFilter::Wasm`] only); they run before the
/// matched rule's filters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerFilters {
    pub listener: ListenerId,
    pub filters: Vec<HttpFilter>,
}
