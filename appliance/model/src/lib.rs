//! The source-agnostic desired state of the appliance.
//!
//! Every config source (the TOML file's native form, Gateway API YAML files, and later the
//! Kubernetes watch) converts into [`Desired`]. Data planes never see a source: the proxy
//! compiles a `Desired` into its immutable route table, and reports back what it applied as a
//! [`DataPlaneReport`]. This crate depends on no source crate (no TOML, YAML or kube types).

mod http;
mod id;
mod listener;
mod wasm;

pub use http::{
    Backend, BackendEndpoints, HeaderMatch, HeaderModifier, HttpFilter, HttpMatch, HttpRoute,
    HttpRule, PathMatch, PathModifier, QueryMatch, Redirect, Rewrite, StringMatch,
    UnresolvedBackend, WeightedBackend,
};
pub use id::{ListenerId, ObjectId};
pub use listener::{
    Certificate, CertificateError, DataPlaneReport, Hostname, HostnameError, Listener,
    ListenerProblem, ListenerProblemKind, ListenerTls, Protocol, certified_key,
};

pub use wasm::{FailurePolicy, ListenerFilters, ModuleSource, WasmPlugin};

use serde::Serialize;

/// Everything the data planes should serve, from every source, at one generation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Desired {
    /// Monotonic number of this desired state; bumped on every successful (re)load.
    pub generation: u64,
    /// Every listener of every accepted gateway, flattened.
    pub listeners: Vec<Listener>,
    /// Every accepted HTTP route with the listeners it attached to.
    pub http_routes: Vec<HttpRoute>,
    /// Every proxy-wasm plugin that filters may refer to (by name).
    pub wasm_plugins: Vec<WasmPlugin>,
    /// Filters that run on every request of a listener, before the route's.
    pub listener_filters: Vec<ListenerFilters>,
}

impl Desired {
    /// Merges another source's state into this one (listeners and routes are appended).
    pub fn merge(&mut self, other: Desired) {
        self.listeners.extend(other.listeners);
        self.http_routes.extend(other.http_routes);
        self.wasm_plugins.extend(other.wasm_plugins);
        self.listener_filters.extend(other.listener_filters);
    }
}
