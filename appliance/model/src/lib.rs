//! The source-agnostic desired state of the appliance.
//!
//! Every config source (the TOML file's native form, Gateway API YAML files, and later the
//! Kubernetes watch) converts into [`Desired`]. Data planes never see a source: the proxy
//! compiles a `Desired` into its immutable route table, and reports back what it applied as a
//! [`DataPlaneReport`]. This crate depends on no source crate (no TOML, YAML or kube types).

pub mod acme;
mod backend_tls;
mod client_auth;
mod http;
mod id;
mod l4;
mod listener;
mod policy;
mod wasm;

pub use backend_tls::{BackendTls, CaBundle, SubjectAltName, TrustRoots};
pub use client_auth::{ClientValidation, ClientValidationMode};
pub use http::{
    Backend, BackendEndpoints, BackendProtocol, HeaderMatch, HeaderModifier, HttpFilter, HttpMatch,
    HttpRoute, HttpRule, PathMatch, PathModifier, QueryMatch, Redirect, Rewrite, StringMatch,
    UnresolvedBackend, WeightedBackend,
};
pub use id::{ListenerId, ObjectId};
pub use l4::{L4Backend, L4Limits, L4Listener, L4Mode, L4Protocol, L4Route, L4Service};
pub use listener::{
    Certificate, CertificateError, DataPlaneReport, Hostname, HostnameError, Listener,
    ListenerProblem, ListenerProblemKind, ListenerTls, Protocol, certified_key,
};

pub use policy::{Cors, Mirror, Retry, RulePolicy, is_cors_origin};
pub use wasm::{
    FailurePolicy, ListenerFilters, ModuleSource, UpstreamTls, WasmPlugin, WasmUpstream,
};

use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

/// Everything the data planes should serve, from every source, at one generation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Desired {
    /// Monotonic number of this desired state; bumped on every successful (re)load.
    pub generation: u64,
    /// Every listener of every accepted gateway, flattened.
    pub listeners: Vec<Listener>,
    /// Every accepted HTTP route with the listeners it attached to. Shared (`Arc`): a new
    /// generation shares every route that did not change with the previous one, and a
    /// compiler tells unchanged routes by pointer.
    pub http_routes: Vec<Arc<HttpRoute>>,
    /// Addresses the appliance owns on its network (handed out by LB-IPAM), with the object
    /// each serves; shared addresses appear once per owner. Data planes that answer for
    /// addresses (ARP/NDP) read this; the proxy binds listener addresses instead.
    pub owned_addresses: Vec<OwnedAddress>,
    /// Every proxy-wasm plugin that filters may refer to (by name).
    pub wasm_plugins: Vec<WasmPlugin>,
    /// Filters that run on every request of a listener, before the route's.
    pub listener_filters: Vec<ListenerFilters>,
    /// L4 services (VIPs balanced without looking into the stream).
    pub l4_services: Vec<L4Service>,
    /// Gateway listeners of protocol TCP, UDP and TLS with their routes (the L4 proxy).
    pub l4_listeners: Vec<L4Listener>,
    /// HTTPS listeners that validate client certificates.
    pub client_validation: Vec<ClientValidation>,
}

/// An address the appliance owns, and the object it was handed to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct OwnedAddress {
    pub address: IpAddr,
    pub owner: ObjectId,
}

impl Desired {
    /// Merges another source's state into this one (listeners and routes are appended).
    pub fn merge(&mut self, other: Desired) {
        self.listeners.extend(other.listeners);
        self.http_routes.extend(other.http_routes);
        self.owned_addresses.extend(other.owned_addresses);
        self.wasm_plugins.extend(other.wasm_plugins);
        self.listener_filters.extend(other.listener_filters);
        self.l4_services.extend(other.l4_services);
        self.l4_listeners.extend(other.l4_listeners);
        self.client_validation.extend(other.client_validation);
    }
}
