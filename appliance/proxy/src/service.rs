//! The per-request path: select, filter, forward. Reads the current table once per request.

use std::net::SocketAddr;
use std::time::Instant;

use gatehouse_model::{ListenerId, Protocol, Redirect};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::{ProxyBody, RequestError, full};
use crate::filters::modify_path;
use crate::matching::RequestView;
use crate::metrics::{RequestLabels, status_class};
use crate::redirect::{RedirectInput, location};
use crate::server::Shared;
use crate::table::{ListenerRoutes, MatchEntry, RouteTable};
use crate::upstream;

/// What the request path knows about its connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The bound socket address (the route table key), not the accepted local address.
    pub socket: SocketAddr,
    pub peer: SocketAddr,
    pub protocol: Protocol,
    /// The listener the TLS server name selected, for 421.
    pub tls_listener: Option<ListenerId>,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Serves one request; never fails (errors become responses here, and only here).
pub(crate) async fn handle(
    shared: &Shared,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let table = shared.table.load_full();
    let mut labels = RequestLabels {
        listener: String::from("none"),
        route: String::from("none"),
        status_class: "",
    };
    let resp = match proxy(shared, &table, conn, req, &mut labels).await {
        Ok(resp) => resp,
        Err(err) => {
            tracing::debug!(error = %err, listener = %labels.listener, route = %labels.route, "request failed");
            if let Some(kind) = err.upstream_kind() {
                shared.metrics.upstream_error(backend_label(&err), kind);
            }
            err.into_response()
        }
    };
    labels.status_class = status_class(resp.status().as_u16());
    shared.metrics.request(labels, start.elapsed());
    resp
}

fn backend_label(err: &RequestError) -> String {
    match err {
        RequestError::Connect { backend, .. }
        | RequestError::Timeout { backend }
        | RequestError::Upstream { backend, .. }
        | RequestError::NoEndpoints(backend) => backend.clone(),
        _ => String::new(),
    }
}

async fn proxy(
    shared: &Shared,
    table: &RouteTable,
    conn: &ConnInfo,
    req: Request<Incoming>,
    labels: &mut RequestLabels,
) -> Result<Response<ProxyBody>, RequestError> {
    let socket = table.sockets.get(&conn.socket).ok_or(RequestError::NoRoute)?;
    let authority = request_authority(&req);
    let host = authority.as_deref().map(host_of).unwrap_or_default();
    let listener = socket.listener_for(&host).ok_or(RequestError::NoRoute)?;
    labels.listener.clone_from(&listener.label);
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
    labels.route.clone_from(&entry.route.label);
    let rule = entry.rule();
    if let Some(err) = &rule.error {
        return Err(RequestError::InvalidRule(err.clone()));
    }
    if let Some(r) = &rule.filters.redirect {
        return Ok(redirect(r, conn, listener, &host, entry, req.uri()));
    }
    let backend = rule.pick_backend().ok_or(RequestError::NoBackend)?;
    if let Some(r) = &backend.filters.redirect {
        return Ok(redirect(r, conn, listener, &host, entry, req.uri()));
    }
    let upstream_authority = upstream::authority(backend)?;

    let (mut parts, body) = req.into_parts();
    // Backend-level rewrite fields override the rule's; both apply to the original path.
    let rewrites = [backend.filters.rewrite.as_ref(), rule.filters.rewrite.as_ref()];
    let new_host = rewrites.iter().flatten().find_map(|r| r.hostname.as_deref());
    let path_modifier = rewrites.iter().flatten().find_map(|r| r.path.as_ref());
    let path = match path_modifier {
        Some(m) => modify_path(m, &entry.matcher().path, parts.uri.path()),
        None => parts.uri.path().to_owned(),
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(upstream_authority)
        .path_and_query(path_and_query)
        .build()?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, conn, listener.port, authority.as_deref());
    for ops in rule.filters.request_headers.iter().chain(&backend.filters.request_headers) {
        ops.apply(&mut parts.headers);
    }
    match new_host.or(authority.as_deref()).map(HeaderValue::from_str) {
        Some(Ok(v)) => {
            parts.headers.insert(header::HOST, v);
        }
        _ => {
            parts.headers.remove(header::HOST);
        }
    }

    let upstream_req = Request::from_parts(parts, body);
    let name = backend.target.name();
    let resp =
        upstream::send(&shared.client, upstream_req, shared.options.upstream_timeout, name).await?;
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    for ops in rule.filters.response_headers.iter().chain(&backend.filters.response_headers) {
        ops.apply(&mut parts.headers);
    }
    Ok(Response::from_parts(parts, body.boxed_unsync()))
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

/// The authority the client addressed: the URI's (HTTP/2, absolute-form), else `Host`.
fn request_authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    req.headers().get(header::HOST)?.to_str().ok().map(str::to_owned)
}

/// Lower-case host of an authority, without port or trailing dot.
pub(crate) fn host_of(authority: &str) -> String {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Removes connection-specific headers (RFC 9110 §7.6.1), including those `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Appends the peer to `X-Forwarded-For` and sets `X-Forwarded-Proto/Host/Port`.
fn add_forwarded(headers: &mut HeaderMap, conn: &ConnInfo, port: u16, authority: Option<&str>) {
    let peer = conn.peer.ip().to_string();
    let prior: Vec<&str> =
        headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
    let xff = if prior.is_empty() { peer } else { format!("{}, {peer}", prior.join(", ")) };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(conn.protocol.scheme()));
    headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(port));
    match authority.map(HeaderValue::from_str) {
        Some(Ok(v)) => {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
        _ => {
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
        let conn = ConnInfo {
            socket: "127.0.0.1:80".parse().unwrap(),
            peer: "10.0.0.9:5555".parse().unwrap(),
            protocol: Protocol::Https,
            tls_listener: None,
        };
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, "1.2.3.4".parse().unwrap());
        h.insert(&X_FORWARDED_PROTO, "gopher".parse().unwrap());
        add_forwarded(&mut h, &conn, 443, Some("a.example.com"));
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_PORT], "443");
        assert_eq!(h[&X_FORWARDED_HOST], "a.example.com");
    }
}
