//! What a Store carries: the plugin it belongs to, the guest's memory and allocator, and the
//! state of the HTTP context whose callback is running.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use wasmtime::{Memory, TypedFunc};

use crate::calls::{CallResponse, PendingCall};
use crate::limits::Limiter;
use crate::plugin::PluginShared;

/// Request or response headers as the guest sees them: pseudo-headers (`:method`, `:path`,
/// `:authority`, `:scheme`; `:status` on responses) and the header map. Pseudo-header values
/// are shared strings: a context keeps a copy of the request's for later property reads
/// without allocating a string. (Inline storage was tried: it made the per-request state
/// ~250 bytes larger, and moving it cost more than the allocation it saved.)
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub pseudo: Vec<(&'static str, Arc<str>)>,
    pub headers: HeaderMap,
}

/// Pseudo-header names a guest may read and write.
pub(crate) const PSEUDO: [&str; 5] = [":method", ":path", ":authority", ":scheme", ":status"];

/// Values that recur in nearly every request or response, shared instead of allocated.
static COMMON: std::sync::LazyLock<Vec<Arc<str>>> = std::sync::LazyLock::new(|| {
    [
        "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "http", "https", "200", "201",
        "204", "206", "301", "302", "304", "307", "308", "400", "401", "403", "404", "429", "500",
        "502", "503", "504",
    ]
    .into_iter()
    .map(Arc::from)
    .collect()
});

/// `value` as a shared string: a common method, scheme or status is shared, anything else is
/// allocated.
pub fn shared_str(value: &str) -> Arc<str> {
    match COMMON.iter().find(|c| ***c == *value) {
        Some(c) => c.clone(),
        None => Arc::from(value),
    }
}

impl Head {
    /// A request head: `:method`, `:path`, `:authority`, `:scheme` and the headers.
    pub fn request(
        method: &str,
        path: &str,
        authority: &str,
        scheme: &str,
        headers: HeaderMap,
    ) -> Self {
        let pseudo = [
            (":method", shared_str(method)),
            (":path", Arc::from(path)),
            (":authority", Arc::from(authority)),
            (":scheme", shared_str(scheme)),
        ];
        Self { pseudo: Vec::from(pseudo), headers }
    }

    /// A response head: `:status` and the headers.
    pub fn response(status: &str, headers: HeaderMap) -> Self {
        Self { pseudo: vec![(":status", shared_str(status))], headers }
    }

    /// The value of a pseudo-header, if set.
    pub fn pseudo(&self, name: &str) -> Option<&str> {
        self.pseudo.iter().find(|(n, _)| *n == name).map(|(_, v)| &**v)
    }

    /// Sets a pseudo-header; `false` when `name` is not one we know.
    pub fn set_pseudo(&mut self, name: &str, value: impl Into<Arc<str>>) -> bool {
        let Some(known) = PSEUDO.iter().find(|p| **p == name) else { return false };
        let value = value.into();
        match self.pseudo.iter_mut().find(|(n, _)| n == known) {
            Some(slot) => slot.1 = value,
            None => self.pseudo.push((known, value)),
        }
        true
    }
}

/// Facts about the request's connection and route, read by `proxy_get_property`.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// TLS server name the client sent, if any.
    pub server_name: Option<Arc<str>>,
    /// `namespace/name` of the route that matched.
    pub route_name: Arc<str>,
    /// `namespace/gateway/listener` of the listener.
    pub listener_name: Arc<str>,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    pub tls: bool,
}

/// A response the guest asked the host to send instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The status code details string the guest gave (for logs).
    pub details: String,
}

/// Per-request state moved into the Store for the duration of one callback.
#[derive(Debug)]
pub(crate) struct HttpState {
    pub info: RequestInfo,
    pub request: Head,
    pub response: Head,
    pub request_trailers: HeaderMap,
    pub response_trailers: HeaderMap,
    pub request_body: Bytes,
    pub response_body: Bytes,
    pub local_response: Option<LocalResponse>,
    /// `proxy_continue_stream` was called during the callback.
    pub continued: bool,
    /// Properties the guest set for this request.
    pub properties: HashMap<String, Vec<u8>>,
    /// `proxy_http_call` may queue calls in this callback (the proxy can wait for them).
    pub calls_allowed: bool,
    /// Calls queued by the running callback.
    pub calls: Vec<PendingCall>,
    /// Calls of this request that are running.
    pub calls_in_flight: usize,
    /// The answer `proxy_on_http_call_response` is reading.
    pub call_response: Option<CallResponse>,
}

impl HttpState {
    pub(crate) fn new(info: RequestInfo) -> Self {
        Self {
            info,
            request: Head::default(),
            response: Head::default(),
            request_trailers: HeaderMap::new(),
            response_trailers: HeaderMap::new(),
            request_body: Bytes::new(),
            response_body: Bytes::new(),
            local_response: None,
            continued: false,
            properties: HashMap::new(),
            calls_allowed: false,
            calls: Vec::new(),
            calls_in_flight: 0,
            call_response: None,
        }
    }
}

/// The data of one Store (one instance of one plugin).
pub(crate) struct HostState {
    pub limits: Limiter,
    pub plugin: Arc<PluginShared>,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<u32, u32>>,
    pub http: Option<Box<HttpState>>,
    /// Tick period the root context asked for, in ms; 0 = none.
    pub tick_period_ms: u32,
    /// Properties set outside any request (by the root context).
    pub root_properties: HashMap<String, Vec<u8>>,
    /// The token of the next `proxy_http_call` (unique within the instance).
    pub next_call_token: u32,
}

impl HostState {
    pub(crate) fn new(plugin: Arc<PluginShared>) -> Self {
        Self {
            limits: Limiter { memory_limit: plugin.memory_limit, refused: false },
            plugin,
            memory: None,
            alloc: None,
            http: None,
            tick_period_ms: 0,
            root_properties: HashMap::new(),
            next_call_token: 1,
        }
    }
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState").field("plugin", &self.plugin.name).finish_non_exhaustive()
    }
}
