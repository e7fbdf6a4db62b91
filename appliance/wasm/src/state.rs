//! What a Store carries: the plugin it belongs to, the guest's memory and allocator, and the
//! state of the HTTP context whose callback is running.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{InvalidHeaderName, InvalidHeaderValue};
use http::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::{Memory, TypedFunc};

use crate::calls::{CallResponse, PendingCall};
use crate::limits::Limiter;
use crate::plugin::PluginShared;
use crate::recent;

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

/// Values that recur in nearly every request or response, shared instead of allocated; found
/// by [`common`].
const COMMON_VALUES: [&str; 27] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "http", "https", "200", "201",
    "204", "206", "301", "302", "304", "307", "308", "400", "401", "403", "404", "429", "500",
    "502", "503", "504",
];

static COMMON: std::sync::LazyLock<Vec<Arc<str>>> =
    std::sync::LazyLock::new(|| COMMON_VALUES.into_iter().map(Arc::from).collect());

/// The index of `value` in [`COMMON_VALUES`] (a `match`: compiled to a few length and byte
/// comparisons, not a scan of the list).
fn common(value: &str) -> Option<usize> {
    Some(match value {
        "GET" => 0,
        "POST" => 1,
        "HEAD" => 2,
        "PUT" => 3,
        "DELETE" => 4,
        "PATCH" => 5,
        "OPTIONS" => 6,
        "http" => 7,
        "https" => 8,
        "200" => 9,
        "201" => 10,
        "204" => 11,
        "206" => 12,
        "301" => 13,
        "302" => 14,
        "304" => 15,
        "307" => 16,
        "308" => 17,
        "400" => 18,
        "401" => 19,
        "403" => 20,
        "404" => 21,
        "429" => 22,
        "500" => 23,
        "502" => 24,
        "503" => 25,
        "504" => 26,
        _ => return None,
    })
}

/// `value` as a shared string: a common method, scheme or status is shared, anything else is
/// allocated.
pub fn shared_str(value: &str) -> Arc<str> {
    match common(value).and_then(|i| COMMON.get(i)) {
        Some(c) => c.clone(),
        None => Arc::from(value),
    }
}

impl Head {
    /// A request head: `:method`, `:path`, `:authority`, `:scheme` and the headers. The
    /// vector and the path and authority strings are those of recent heads of this thread
    /// when it can (see [`Head::recycle`]).
    pub fn request(
        method: &str,
        path: &str,
        authority: &str,
        scheme: &str,
        headers: HeaderMap,
    ) -> Self {
        let mut pseudo = recent::vector();
        pseudo.extend([
            (":method", shared_str(method)),
            (":path", recent::path(path)),
            (":authority", recent::authority(authority)),
            (":scheme", shared_str(scheme)),
        ]);
        Self { pseudo, headers }
    }

    /// Drops the head, keeping its pseudo-header vector (emptied) for a later
    /// [`Head::request`] on this thread.
    pub fn recycle(self) {
        recent::give_back(self.pseudo);
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
    /// Makes an ended request's state that of a new request, field by field (building a new
    /// one and dropping the old cost more than the allocation this reuse saves): what is
    /// empty stays, anything else is dropped. The vector of the request's pseudo-headers is
    /// kept (emptied) for the next copy.
    pub(crate) fn refill(&mut self, info: RequestInfo) {
        // Every field, so that a new one cannot be forgotten here.
        let HttpState {
            info: old_info,
            request,
            response,
            request_trailers,
            response_trailers,
            request_body,
            response_body,
            local_response,
            continued,
            properties,
            calls_allowed,
            calls,
            calls_in_flight,
            call_response,
        } = self;
        *old_info = info;
        request.pseudo.clear();
        reset(&mut request.headers);
        if !response.pseudo.is_empty() {
            response.pseudo = Vec::new();
        }
        reset(&mut response.headers);
        reset(request_trailers);
        reset(response_trailers);
        *request_body = Bytes::new();
        *response_body = Bytes::new();
        *local_response = None;
        *continued = false;
        if !properties.is_empty() {
            *properties = HashMap::new();
        }
        *calls_allowed = false;
        calls.clear();
        *calls_in_flight = 0;
        *call_response = None;
    }

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

/// Empties a map that is not empty (releasing what it held).
fn reset(map: &mut HeaderMap) {
    if !map.is_empty() {
        *map = HeaderMap::new();
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
    /// HTTP calls of the root context.
    pub root: RootCalls,
    /// Header names and values the guest set lately.
    pub interned: Interned,
}

/// The root context's HTTP calls (from `proxy_on_tick`, `proxy_on_vm_start`,
/// `proxy_on_configure`, and its own `proxy_on_http_call_response`): queued by the guest, run
/// by the host on the async runtime, answered to this instance (see `crate::plugin`).
#[derive(Debug, Default)]
pub(crate) struct RootCalls {
    /// `proxy_http_call` may queue calls now (a root callback that may call is running).
    pub allowed: bool,
    /// Calls queued, not yet started.
    pub queued: Vec<PendingCall>,
    /// Calls started and not yet answered.
    pub in_flight: usize,
    /// The answer the root's `proxy_on_http_call_response` is reading.
    pub response: Option<CallResponse>,
}

/// Header names and values a guest set lately, shared instead of allocated again (and again
/// when the proxy copies the head): most filters set the same few headers on every request.
/// At most [`INTERNED`] of each, replaced in turn.
#[derive(Default)]
pub(crate) struct Interned {
    names: Vec<HeaderName>,
    values: Vec<HeaderValue>,
    next_name: usize,
    next_value: usize,
}

/// How many names (and values) an instance keeps.
const INTERNED: usize = 16;
/// Longer names and values are not kept.
const INTERNED_LEN: usize = 64;

impl Interned {
    /// The header name `raw` (as `HeaderName::from_bytes`).
    pub(crate) fn name(&mut self, raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
        if let Some(n) = self.names.iter().find(|n| n.as_str().as_bytes() == raw) {
            return Ok(n.clone());
        }
        let n = HeaderName::from_bytes(raw)?;
        if raw.len() <= INTERNED_LEN {
            keep(&mut self.names, &mut self.next_name, n.clone());
        }
        Ok(n)
    }

    /// The header value `raw` (as `HeaderValue::from_bytes`).
    pub(crate) fn value(&mut self, raw: &[u8]) -> Result<HeaderValue, InvalidHeaderValue> {
        if let Some(v) = self.values.iter().find(|v| v.as_bytes() == raw) {
            return Ok(v.clone());
        }
        let v = HeaderValue::from_bytes(raw)?;
        if raw.len() <= INTERNED_LEN {
            keep(&mut self.values, &mut self.next_value, v.clone());
        }
        Ok(v)
    }
}

fn keep<T>(list: &mut Vec<T>, next: &mut usize, item: T) {
    if list.len() < INTERNED {
        list.push(item);
    } else {
        list[*next % INTERNED] = item;
        *next = (*next + 1) % INTERNED;
    }
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
            root: RootCalls::default(),
            interned: Interned::default(),
        }
    }
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState").field("plugin", &self.plugin.name).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_values_are_shared() {
        for (i, v) in COMMON_VALUES.iter().enumerate() {
            assert_eq!(common(v), Some(i), "{v}");
            assert!(Arc::ptr_eq(&shared_str(v), &shared_str(v)), "{v}");
        }
        assert_eq!(common("get"), None);
        assert_eq!(&*shared_str("TRACE"), "TRACE");
    }

    #[test]
    fn interned_names_and_values_are_shared_and_bounded() {
        let mut interned = Interned::default();
        let a = interned.name(b"x-bench").unwrap();
        assert_eq!(interned.name(b"x-bench").unwrap(), a);
        assert_eq!(interned.name(b"X-Bench").unwrap(), a, "parsed as HeaderName::from_bytes does");
        assert_eq!(interned.value(b"1").unwrap(), HeaderValue::from_static("1"));
        assert_eq!(interned.value(b"1").unwrap(), "1");
        assert!(interned.name(b"bad name").is_err());
        assert!(interned.value(b"bad\nvalue").is_err());
        for i in 0..3 * INTERNED {
            let raw = format!("x-h{i}");
            assert_eq!(interned.name(raw.as_bytes()).unwrap().as_str(), raw);
            assert_eq!(interned.value(raw.as_bytes()).unwrap(), raw.as_str());
        }
        assert_eq!(interned.names.len(), INTERNED);
        assert_eq!(interned.values.len(), INTERNED);
        let long = "x".repeat(INTERNED_LEN + 1);
        assert_eq!(interned.value(long.as_bytes()).unwrap(), long.as_str());
        assert!(interned.values.iter().all(|v| v.len() <= INTERNED_LEN));
    }
}
