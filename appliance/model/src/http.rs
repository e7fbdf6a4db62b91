use std::net::SocketAddr;

use serde::Serialize;

use crate::{BackendTls, Cors, Hostname, ListenerId, Mirror, ObjectId, RulePolicy};

/// An HTTP route (Gateway API HTTPRoute semantics) and the listeners it attached to.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpRoute {
    pub id: ObjectId,
    /// Creation time in Unix seconds, for precedence ties; `None` sorts after every time,
    /// then ties fall to namespace/name order.
    pub created: Option<i64>,
    /// Hostnames of the route; empty means every hostname its listeners accept.
    pub hostnames: Vec<Hostname>,
    /// Listeners this route is attached to (already filtered by allowedRoutes, parentRefs).
    pub listeners: Vec<ListenerId>,
    pub rules: Vec<HttpRule>,
}

/// One rule: any of its matches selects it; then filters run and a backend is picked.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpRule {
    /// Optional rule name, for metrics and debugging.
    pub name: Option<String>,
    /// Empty means a single match of path prefix `/`.
    pub matches: Vec<HttpMatch>,
    pub filters: Vec<HttpFilter>,
    /// Empty with no redirect filter means 500 (spec: no backends → 500).
    pub backends: Vec<WeightedBackend>,
    /// Timeouts and retries.
    pub policy: RulePolicy,
}

/// Conditions that must all hold for a request to match.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpMatch {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    /// Upper-case HTTP method.
    pub method: Option<String>,
}

impl Default for HttpMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query: Vec::new(),
            method: None,
        }
    }
}

/// Path match; `Prefix` matches whole path segments (`/foo` matches `/foo/bar`, not `/foobar`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    /// Rust `regex` syntax, matched against the whole path.
    Regex(String),
}

/// How a header or query value is compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum StringMatch {
    Exact(String),
    /// Rust `regex` syntax, matched against the whole value.
    Regex(String),
}

/// Header match; `name` is compared case-insensitively (stored lower-case).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

/// Query parameter match; `name` is compared exactly (case-sensitive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: StringMatch,
}

/// Filters of a rule or of a backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum HttpFilter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(Redirect),
    UrlRewrite(Rewrite),
    /// Runs the named proxy-wasm plugin ([`crate::WasmPlugin`]) on requests and responses.
    Wasm {
        plugin: String,
    },
    /// Sends a copy of the request to another backend; several may be set.
    RequestMirror(Mirror),
    /// Answers CORS preflights and adds CORS headers to responses.
    Cors(Cors),
}

/// Set, add and remove headers (Gateway API HTTPHeaderFilter).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HeaderModifier {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// A redirect answered by the proxy (Gateway API HTTPRequestRedirectFilter).
///
/// Port rules follow the spec: with no `port`, a set `scheme` implies that scheme's well-known
/// port, otherwise the listener's port; a well-known port for the scheme is left out of `Location`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
}

/// Rewrite before forwarding (Gateway API HTTPURLRewriteFilter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

/// How a redirect or rewrite changes the path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the part matched by the rule's `PathMatch::Prefix`.
    ReplacePrefixMatch(String),
}

/// A backend with its weight and per-backend filters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightedBackend {
    /// Relative weight; 0 never receives traffic. All-zero rule → 500.
    pub weight: u32,
    pub backend: Backend,
    pub filters: Vec<HttpFilter>,
}

/// Where a backend's traffic goes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Backend {
    /// Resolved endpoints (a Service's ready EndpointSlice addresses, or static addresses).
    /// An empty list answers 503.
    Endpoints(BackendEndpoints),
    /// A DNS name resolved by the proxy when connecting.
    Dns { name: String, host: String, port: u16, protocol: BackendProtocol },
    /// A reference that did not resolve; requests picking it get 500.
    Unresolved(UnresolvedBackend),
}

/// A named set of endpoint addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendEndpoints {
    /// Human name for logs and metrics, e.g. `default/echo:8080`.
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    /// TLS to the endpoints (a BackendTLSPolicy); `None` is cleartext.
    pub tls: Option<BackendTls>,
    pub protocol: BackendProtocol,
}

/// How the proxy speaks HTTP to a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum BackendProtocol {
    /// HTTP/1.1 (a WebSocket `Upgrade` becomes a byte tunnel after the backend's 101).
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (h2c): gRPC backends, Service ports with
    /// `appProtocol: kubernetes.io/h2c`.
    H2c,
}

/// A backend reference that could not be used, with the reason for logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnresolvedBackend {
    pub name: String,
    pub reason: String,
}
