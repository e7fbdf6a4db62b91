//! The per-request path: select, filter, forward. Reads the current table once per request.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use gatehouse_model::{ListenerId, Protocol, Redirect};
use gatehouse_wasm::RequestInfo;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use crate::error::{ProxyBody, RequestError, full};
use crate::filters::modify_path;
use crate::forward;
use crate::matching::RequestView;
use crate::redirect::{RedirectInput, location};
use crate::server::Shared;
use crate::table::{ListenerRoutes, MatchEntry, RouteTable};
use crate::tunnel;
use crate::upstream::{self, RequestBody};
use crate::wasm;

/// What the request path knows about its connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The bound socket address (the route table key), not the accepted local address.
    pub socket: SocketAddr,
    pub peer: SocketAddr,
    pub protocol: Protocol,
    /// The listener the TLS server name selected, for 421.
    pub tls_listener: Option<ListenerId>,
    /// The peer's IP as an `X-Forwarded-For` value, formatted once per connection.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    pub(crate) fn new(socket: SocketAddr, peer: SocketAddr, protocol: Protocol) -> Self {
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Self { socket, peer, protocol, tls_listener: None, peer_ip }
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// What a request matched, for metrics and logs; borrowed from the table it loaded.
#[derive(Default)]
struct Matched<'t> {
    listener: Option<&'t ListenerRoutes>,
    entry: Option<&'t MatchEntry>,
}

/// Serves one request; never fails (errors become responses here, and only here).
pub(crate) async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let grpc = crate::error::is_grpc(req.headers());
    let table = shared.table.load_full();
    let mut matched = Matched::default();
    let resp = match proxy(shared, &table, conn, req, &mut matched).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::debug!(
                error = %err,
                listener = matched.listener.map_or("none", |l| l.metrics.label.as_str()),
                route = matched.entry.map_or("none", |e| e.route.label.as_str()),
                "request failed"
            );
            if let Some(kind) = err.upstream_kind() {
                shared.metrics.upstream_error(backend_label(&err), kind);
            }
            err.into_response_for(grpc)
        }
    };
    shared.metrics.request(
        matched.listener.map(|l| &*l.metrics),
        matched.entry.map(|e| &*e.metrics),
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

fn backend_label(err: &RequestError) -> String {
    match err {
        RequestError::Connect { backend, .. }
        | RequestError::BackendTls { backend, .. }
        | RequestError::Timeout { backend }
        | RequestError::Upstream { backend, .. }
        | RequestError::NoEndpoints(backend) => backend.clone(),
        _ => String::new(),
    }
}

async fn proxy<'t>(
    shared: &Shared,
    table: &'t RouteTable,
    conn: &ConnInfo,
    req: Request<Incoming>,
    matched: &mut Matched<'t>,
) -> Result<Response<ProxyBody>, RequestError> {
    let socket = table.sockets.get(&conn.socket).ok_or(RequestError::NoRoute)?;
    let authority = request_authority(&req);
    let host = authority.as_ref().and_then(|a| a.to_str().ok()).map(host_of).unwrap_or_default();
    let listener = socket.listener_for(&host).ok_or(RequestError::NoRoute)?;
    matched.listener = Some(listener);
    if conn.tls_listener.as_ref().is_some_and(|id| *id != listener.id) {
        return Err(RequestError::Misdirected);
    }
    let view = RequestView {
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
    };
    let entry = listener.route(&host, &view).ok_or(RequestError::NoRoute)?;
    matched.entry = Some(entry);
    let rule = entry.rule();
    if let Some(err) = rule.error.as_ref().or(listener.wasm_error.as_ref()) {
        return Err(RequestError::InvalidRule(err.clone()));
    }
    if let Some(cors) = &rule.filters.cors
        && let Some(resp) = cors.preflight(req.method(), req.headers())
    {
        return Ok(resp);
    }
    let origin =
        rule.filters.cors.as_ref().and_then(|_| req.headers().get(header::ORIGIN).cloned());
    let forwarded = forward_matched(shared, conn, listener, entry, &host, authority.clone(), req);
    let mut resp = match rule.policy.request_timeout.filter(|t| !t.is_zero()) {
        Some(limit) => tokio::time::timeout(limit, forwarded)
            .await
            .map_err(|_| RequestError::RequestTimeout)??,
        None => forwarded.await?,
    };
    if let Some(cors) = &rule.filters.cors {
        cors.decorate(origin.as_ref(), resp.headers_mut());
    }
    Ok(resp)
}

/// Everything after the match: redirect, rewrite, header filters, WASM, then the backend.
async fn forward_matched(
    shared: &Shared,
    conn: &ConnInfo,
    listener: &ListenerRoutes,
    entry: &MatchEntry,
    host: &str,
    authority: Option<HeaderValue>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, RequestError> {
    let rule = entry.rule();
    if let Some(r) = &rule.filters.redirect {
        return Ok(redirect(r, conn, listener, host, entry, req.uri()));
    }
    let backend = rule.pick_backend().ok_or(RequestError::NoBackend)?;
    if let Some(r) = &backend.filters.redirect {
        return Ok(redirect(r, conn, listener, host, entry, req.uri()));
    }
    let endpoint = upstream::endpoint(backend)?;

    let mut req = req;
    // A WebSocket (or other) upgrade becomes a tunnel after the backend's 101; only HTTP/1.1
    // backends can take one.
    let upgrade = tunnel::requested(req.version(), req.headers())
        .filter(|_| backend.target.protocol() == gatehouse_model::BackendProtocol::Http1)
        .map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
    let (mut parts, body) = req.into_parts();
    let client_version = parts.version;
    // Backend-level rewrite fields override the rule's; both apply to the original path.
    let rewrites = [backend.filters.rewrite.as_ref(), rule.filters.rewrite.as_ref()];
    let new_host = rewrites.iter().flatten().find_map(|r| r.hostname.as_deref());
    let path_modifier = rewrites.iter().flatten().find_map(|r| r.path.as_ref());
    let path_and_query = match (path_modifier, parts.uri.path_and_query()) {
        // Unchanged path: share the parsed one instead of formatting and parsing it again.
        (None, Some(pq)) => pq.clone(),
        (modifier, _) => {
            let path = match modifier {
                Some(m) => modify_path(m, &entry.matcher().path, parts.uri.path()),
                None => parts.uri.path().to_owned(),
            };
            let raw = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            PathAndQuery::try_from(raw).map_err(http::Error::from)?
        }
    };
    // Origin form: the connection already names the endpoint.
    parts.uri = if path_and_query.as_str().is_empty() {
        Uri::from_static("/")
    } else {
        Uri::from(path_and_query)
    };
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some((protocol, _)) = &upgrade {
        tunnel::restore(&mut parts.headers, protocol);
    }
    add_forwarded(&mut parts.headers, conn, listener.port, authority.as_ref());
    for ops in rule.filters.request_headers.iter().chain(&backend.filters.request_headers) {
        ops.apply(&mut parts.headers);
    }
    let host_header = match new_host {
        Some(h) => HeaderValue::from_str(h).ok(),
        None => authority,
    };
    match host_header {
        Some(v) => {
            parts.headers.insert(header::HOST, v);
        }
        // HTTP/1.1 requires a Host: name the endpoint, as a client would.
        None => {
            parts.headers.insert(header::HOST, endpoint_host(&endpoint.authority)?);
        }
    }

    let plugins = [&listener.wasm[..], &rule.filters.wasm, &backend.filters.wasm];
    let (chain, body) = if plugins.iter().all(|p| p.is_empty()) {
        (None, RequestBody::from(body))
    } else {
        let info = RequestInfo {
            source: conn.peer,
            destination: conn.socket,
            server_name: None,
            route_name: entry.route.name.clone(),
            listener_name: listener.metrics.name.clone(),
            protocol: if client_version == Version::HTTP_2 { "HTTP/2" } else { "HTTP/1.1" },
            tls: conn.protocol == Protocol::Https,
        };
        match wasm::request(&plugins, info, conn.protocol.scheme(), &mut parts, body).await {
            Ok((chain, body)) => (Some(chain), body),
            Err(local) => return Ok(*local),
        }
    };
    let upstream_req = Request::from_parts(parts, body);
    let sent = forward::send(shared, rule, backend, endpoint, upstream_req).await;
    // A filter that answered while the request body streamed overrides the upstream.
    if let Some(answer) = chain.as_ref().and_then(wasm::Chain::take_answer) {
        return Ok(answer);
    }
    let mut resp = sent?;
    let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgraded = match upgrade {
        Some((protocol, client)) if switched => {
            tunnel::spawn(client, hyper::upgrade::on(&mut resp));
            Some(protocol)
        }
        _ => None,
    };
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &upgraded {
        tunnel::restore(&mut parts.headers, protocol);
    }
    for ops in rule.filters.response_headers.iter().chain(&backend.filters.response_headers) {
        ops.apply(&mut parts.headers);
    }
    let body = match chain {
        None => ProxyBody::Upstream(body),
        Some(chain) => match chain.response(&mut parts, body) {
            Ok(body) => body,
            Err(local) => return Ok(*local),
        },
    };
    Ok(Response::from_parts(parts, body))
}

/// `Host` for an endpoint authority: without the port when it is HTTP's default.
fn endpoint_host(authority: &Authority) -> Result<HeaderValue, RequestError> {
    let value = match authority.port_u16() {
        Some(80) => HeaderValue::from_str(authority.host()),
        _ => HeaderValue::from_str(authority.as_str()),
    };
    Ok(value.map_err(http::Error::from)?)
}

fn redirect(
    r: &Redirect,
    conn: &ConnInfo,
    listener: &ListenerRoutes,
    host: &str,
    entry: &MatchEntry,
    uri: &Uri,
) -> Response<ProxyBody> {
    let input = RedirectInput {
        scheme: conn.protocol.scheme(),
        host,
        listener_port: listener.port,
        path: uri.path(),
        query: uri.query(),
        matched: &entry.matcher().path,
    };
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::from_u16(r.status)
        .ok()
        .filter(StatusCode::is_redirection)
        .unwrap_or(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(&location(r, &input)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// The authority the client addressed: the URI's (HTTP/2, absolute-form), else `Host`; always
/// visible ASCII. The `Host` value is shared with the request, not copied.
fn request_authority<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    req.headers().get(header::HOST).filter(|v| v.to_str().is_ok()).cloned()
}

/// Lower-case host of an authority, without port or trailing dot; borrowed when already so.
pub(crate) fn host_of(authority: &str) -> Cow<'_, str> {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Connection-specific headers that are never forwarded.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || *name == KEEP_ALIVE || *name == PROXY_CONNECTION
}

/// Removes connection-specific headers (RFC 9110 §7.6.1), including those `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the few names present beats nine removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
}

/// Appends the peer to `X-Forwarded-For` and sets `X-Forwarded-Proto/Host/Port`.
fn add_forwarded(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    port: u16,
    authority: Option<&HeaderValue>,
) {
    let prior: Vec<&str> =
        headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
    let xff = if prior.is_empty() {
        Some(conn.peer_ip.clone())
    } else {
        let peer = conn.peer.ip();
        HeaderValue::from_str(&format!("{}, {peer}", prior.join(", "))).ok()
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(conn.protocol.scheme()));
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(port));
    match authority {
        Some(v) => {
            headers.insert(X_FORWARDED_HOST.clone(), v.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_case_and_dot() {
        assert_eq!(host_of("Example.COM:8080"), "example.com");
        assert_eq!(host_of("example.com."), "example.com");
        assert_eq!(host_of("[::1]:80"), "[::1]");
        assert_eq!(host_of("[::1]"), "[::1]");
        assert_eq!(host_of("example.com:"), "example.com:");
    }

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn forwarded_headers_append_and_set() {
        let conn = ConnInfo::new(
            "127.0.0.1:80".parse().unwrap(),
            "10.0.0.9:5555".parse().unwrap(),
            Protocol::Https,
        );
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, "1.2.3.4".parse().unwrap());
        h.insert(&X_FORWARDED_PROTO, "gopher".parse().unwrap());
        add_forwarded(&mut h, &conn, 443, Some(&HeaderValue::from_static("a.example.com")));
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_PORT], "443");
        assert_eq!(h[&X_FORWARDED_HOST], "a.example.com");
    }
}
