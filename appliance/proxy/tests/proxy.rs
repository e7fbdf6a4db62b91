//! End-to-end tests of the proxy: a real `Proxy` on loopback, real hyper echo backends,
//! real HTTP/1.1, h2c and TLS (SNI + ALPN) clients. Every test is bounded by [`TEST_TIMEOUT`].

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_model::{
    Backend, BackendEndpoints, Certificate, DataPlaneReport, Desired, HeaderModifier, Hostname,
    HttpFilter, HttpMatch, HttpRoute, HttpRule, Listener, ListenerId, ListenerProblemKind,
    ListenerTls, ObjectId, PathMatch, PathModifier, Protocol, Redirect, Rewrite, UnresolvedBackend,
    WeightedBackend,
};
use gatehouse_proxy::{Proxy, ProxyOptions, compile};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs a test body with a hard time bound.
async fn bounded<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TEST_TIMEOUT, body).await.expect("test timed out");
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind((LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------- backends

/// An echo backend: answers with `x-backend`, `x-seen-path`, `x-seen-host` and the request
/// headers as body lines. Paths starting with `/slow` answer after 400 ms.
struct EchoBackend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo_backend(name: &'static str) -> EchoBackend {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    if req.uri().path().starts_with("/slow") {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                    let mut body = String::new();
                    for (k, v) in req.headers() {
                        body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                    }
                    let host = req.headers().get("host").cloned();
                    let mut resp = Response::builder()
                        .header("x-backend", name)
                        .header("x-seen-path", req.uri().path_and_query().unwrap().as_str())
                        .header("keep-alive", "timeout=5")
                        .header("x-origin", "backend");
                    if let Some(h) = host {
                        resp = resp.header("x-seen-host", h);
                    }
                    Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    EchoBackend { addr, task }
}

/// A raw HTTP/1.1 backend that counts its connections, for the upstream pool. Answers
/// `hello` with keep-alive; `/stale` closes the connection when a second request arrives on
/// it (the keep-alive race); `/partial` sends a head and part of a body, then stalls.
struct CountingBackend {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingBackend {
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

async fn counting_backend() -> CountingBackend {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (a, c) = (accepts.clone(), closed.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            let closed = c.clone();
            tokio::spawn(async move {
                let mut served = 0;
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    served += 1;
                    if path.starts_with("/stale") && served > 1 {
                        return; // closes without answering
                    }
                    if path.starts_with("/partial") {
                        let head = "HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n0123456789";
                        let _ = stream.write_all(head.as_bytes()).await;
                        continue; // the rest never comes
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                    if stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    CountingBackend { addr, accepts, closed, task }
}

// ---------------------------------------------------------------- model builders

fn listener_id(name: &str) -> ListenerId {
    ListenerId { gateway: ObjectId::new("Gateway", "default", "gw"), name: name.into() }
}

fn listener(name: &str, port: u16, host: Option<&str>) -> Listener {
    Listener {
        id: listener_id(name),
        addresses: vec![LOCALHOST],
        port,
        protocol: Protocol::Http,
        hostname: host.map(|h| Hostname::parse(h).unwrap()),
        tls: None,
    }
}

fn tls_listener(name: &str, port: u16, host: Option<&str>, cert: &Certificate) -> Listener {
    Listener {
        protocol: Protocol::Https,
        tls: Some(ListenerTls { certificates: vec![cert.clone()] }),
        ..listener(name, port, host)
    }
}

fn route(name: &str, listeners: &[&Listener], hosts: &[&str], rules: Vec<HttpRule>) -> HttpRoute {
    HttpRoute {
        id: ObjectId::new("HTTPRoute", "default", name),
        created: None,
        hostnames: hosts.iter().map(|h| Hostname::parse(h).unwrap()).collect(),
        listeners: listeners.iter().map(|l| l.id.clone()).collect(),
        rules,
    }
}

fn to(name: &str, addrs: &[SocketAddr], weight: u32) -> WeightedBackend {
    WeightedBackend {
        weight,
        backend: Backend::Endpoints(BackendEndpoints {
            name: name.into(),
            addrs: addrs.to_vec(),
            tls: None,
            protocol: Default::default(),
        }),
        filters: Vec::new(),
    }
}

fn rule(path: &str, backends: Vec<WeightedBackend>, filters: Vec<HttpFilter>) -> HttpRule {
    HttpRule {
        name: None,
        matches: vec![HttpMatch { path: PathMatch::Prefix(path.into()), ..HttpMatch::default() }],
        filters,
        backends,
        policy: Default::default(),
    }
}

struct Cert {
    model: Certificate,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn cert(names: &[&str]) -> Cert {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    Cert {
        model: Certificate {
            source: format!("test {names:?}"),
            chain_pem: ck.cert.pem(),
            key_pem: ck.signing_key.serialize_pem(),
        },
        der: ck.cert.der().clone(),
    }
}

// ---------------------------------------------------------------- proxy harness

struct Harness {
    proxy: Proxy,
    registry: Registry,
}

fn test_options() -> ProxyOptions {
    ProxyOptions {
        upstream_timeout: Duration::from_millis(250),
        upstream_connect_timeout: Duration::from_secs(1),
        ..ProxyOptions::default()
    }
}

impl Harness {
    fn new() -> Self {
        Self::with_options(test_options())
    }

    fn with_options(options: ProxyOptions) -> Self {
        let mut registry = Registry::default();
        let proxy = Proxy::with_options(&mut registry, options);
        Self { proxy, registry }
    }

    async fn apply(&self, listeners: Vec<Listener>, routes: Vec<HttpRoute>) -> DataPlaneReport {
        let desired = Desired {
            generation: 1,
            listeners,
            http_routes: routes.into_iter().map(Arc::new).collect(),
            ..Desired::default()
        };
        let (table, _) = compile(&desired);
        self.proxy.apply(Arc::new(table), desired.generation).await
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

// ---------------------------------------------------------------- clients

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }

    /// A header the backend received (from the echoed body).
    fn seen(&self, name: &str) -> Vec<&str> {
        self.body.lines().filter_map(|l| l.strip_prefix(&format!("{name}: "))).collect()
    }
}

async fn read(resp: Response<Incoming>) -> Reply {
    let (parts, mut body) = resp.into_parts();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes.extend_from_slice(&data);
        }
        assert!(bytes.len() < 1 << 20, "test bodies are small");
    }
    let body = bytes;
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into(),
    }
}

fn get(uri: &str, host: &str) -> Request<Empty<Bytes>> {
    Request::get(uri).header("host", host).body(Empty::<Bytes>::new()).unwrap()
}

/// One HTTP/1.1 request on a new connection.
async fn h1(port: u16, req: Request<Empty<Bytes>>) -> Reply {
    let stream = TcpStream::connect((LOCALHOST, port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    read(sender.send_request(req).await.unwrap()).await
}

/// An h2c (prior knowledge) connection.
async fn h2c(port: u16) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect((LOCALHOST, port)).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A TLS connection with SNI `sni` trusting `roots`; returns the stream and negotiated ALPN.
async fn tls_connect(
    port: u16,
    sni: &str,
    roots: &[&Cert],
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect((LOCALHOST, port)).await?;
    connector.connect(ServerName::try_from(sni.to_owned()).unwrap(), stream).await
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_routes_filters_and_forwarded_headers() {
    bounded(async {
        let a = echo_backend("a").await;
        let b = echo_backend("b").await;
        let port = free_port();
        let l = listener("http", port, None);
        let add_header = HttpFilter::RequestHeaderModifier(HeaderModifier {
            set: vec![("x-rule".into(), "a".into())],
            ..HeaderModifier::default()
        });
        let resp_header = HttpFilter::ResponseHeaderModifier(HeaderModifier {
            set: vec![("x-origin".into(), "gatehouse".into())],
            ..HeaderModifier::default()
        });
        let routes = vec![
            route("a", &[&l], &[], vec![rule("/a", vec![to("a", &[a.addr], 1)], vec![add_header, resp_header])]),
            route("b", &[&l], &["b.example.com"], vec![rule("/", vec![to("b", &[b.addr], 1)], vec![])]),
        ];
        let h = Harness::new();
        let report = h.apply(vec![l], routes).await;
        assert!(report.listener_problems.is_empty(), "{report:?}");
        assert!(h.proxy.ready());

        let mut req = get("/a/x?q=1", &format!("any.example.com:{port}"));
        req.headers_mut().insert("x-forwarded-for", "192.0.2.1".parse().unwrap());
        req.headers_mut().insert("connection", "x-drop".parse().unwrap());
        req.headers_mut().insert("x-drop", "1".parse().unwrap());
        let r = h1(port, req).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-backend"), "a");
        assert_eq!(r.header("x-seen-path"), "/a/x?q=1");
        assert_eq!(r.header("x-seen-host"), format!("any.example.com:{port}"));
        assert_eq!(r.seen("x-forwarded-for"), ["192.0.2.1, 127.0.0.1"]);
        assert_eq!(r.seen("x-forwarded-proto"), ["http"]);
        assert_eq!(r.seen("x-forwarded-host"), [format!("any.example.com:{port}").as_str()]);
        assert_eq!(r.seen("x-forwarded-port"), [port.to_string().as_str()]);
        assert_eq!(r.seen("x-rule"), ["a"]);
        assert!(r.seen("x-drop").is_empty(), "header named by Connection must be stripped");
        assert_eq!(r.header("x-origin"), "gatehouse");
        assert!(r.headers.get("keep-alive").is_none(), "hop-by-hop response header stripped");

        assert_eq!(h1(port, get("/", "B.Example.com")).await.header("x-backend"), "b");
        assert_eq!(h1(port, get("/nothing", "c.example.com")).await.status, StatusCode::NOT_FOUND);
        assert_eq!(h1(port, get("/ab", "c.example.com")).await.status, StatusCode::NOT_FOUND);

        let metrics = h.metrics();
        assert!(metrics.contains("gatehouse_proxy_requests_total{listener=\"default/gw/http\",route=\"default/a\",status_class=\"2xx\"} 1"), "{metrics}");
        assert!(metrics.contains("status_class=\"4xx\"} 2"), "{metrics}");
        assert!(metrics.contains("gatehouse_proxy_request_duration_seconds_count"), "{metrics}");
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge() {
    bounded(async {
        let a = echo_backend("a").await;
        let port = free_port();
        let l = listener("http", port, Some("*.example.com"));
        let routes =
            vec![route("a", &[&l], &[], vec![rule("/", vec![to("a", &[a.addr], 1)], vec![])])];
        let h = Harness::new();
        h.apply(vec![l], routes).await;
        let mut sender = h2c(port).await;
        for path in ["/one", "/two"] {
            let req = Request::get(format!("http://x.example.com{path}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let r = read(sender.send_request(req).await.unwrap()).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.header("x-backend"), "a");
            assert_eq!(r.header("x-seen-host"), "x.example.com");
            assert_eq!(r.header("x-seen-path"), path);
        }
        let req = Request::get("http://other.org/").body(Empty::<Bytes>::new()).unwrap();
        assert_eq!(
            read(sender.send_request(req).await.unwrap()).await.status,
            StatusCode::NOT_FOUND
        );
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sni_selects_certificate_and_listener_alpn_h2_and_421() {
    bounded(async {
        let a = echo_backend("a").await;
        let b = echo_backend("b").await;
        let port = free_port();
        let cert_a = cert(&["a.example.com"]);
        let cert_b = cert(&["*.b.example.com"]);
        let la = tls_listener("a", port, Some("a.example.com"), &cert_a.model);
        let lb = tls_listener("b", port, Some("*.b.example.com"), &cert_b.model);
        let routes = vec![
            route("a", &[&la], &[], vec![rule("/", vec![to("a", &[a.addr], 1)], vec![])]),
            route("b", &[&lb], &[], vec![rule("/", vec![to("b", &[b.addr], 1)], vec![])]),
        ];
        let h = Harness::new();
        let report = h.apply(vec![la, lb], routes).await;
        assert!(report.listener_problems.is_empty(), "{report:?}");

        // h2 via ALPN, SNI a.example.com; only cert A would verify for this name.
        let tls = tls_connect(port, "a.example.com", &[&cert_a, &cert_b], &[b"h2", b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let r = read(
            sender
                .send_request(
                    Request::get("https://a.example.com/").body(Empty::<Bytes>::new()).unwrap(),
                )
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-backend"), "a");
        assert_eq!(r.seen("x-forwarded-proto"), ["https"]);
        // Same connection, Host of the other listener: misdirected.
        let r = read(
            sender
                .send_request(
                    Request::get("https://x.b.example.com/").body(Empty::<Bytes>::new()).unwrap(),
                )
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);

        // HTTP/1.1 via ALPN with the wildcard certificate.
        let tls = tls_connect(port, "x.b.example.com", &[&cert_b], &[b"http/1.1"]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let r = read(sender.send_request(get("/", "x.b.example.com")).await.unwrap()).await;
        assert_eq!(r.header("x-backend"), "b");

        // A server name no listener accepts: the handshake is refused and counted.
        assert!(tls_connect(port, "other.org", &[&cert_a], &[b"h2"]).await.is_err());
        // The server counts after closing, so the client may look first: poll briefly.
        let counted = || h.metrics().contains("gatehouse_proxy_tls_handshake_failures_total 1");
        for _ in 0..100 {
            if counted() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(counted(), "{}", h.metrics());
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_catch_all_listener_serves_without_sni() {
    bounded(async {
        let a = echo_backend("a").await;
        let port = free_port();
        let c = cert(&["localhost"]);
        let l = tls_listener("any", port, None, &c.model);
        let routes =
            vec![route("a", &[&l], &[], vec![rule("/", vec![to("a", &[a.addr], 1)], vec![])])];
        let h = Harness::new();
        h.apply(vec![l], routes).await;
        // SNI "localhost" is a name no listener names explicitly: the catch-all serves it.
        let tls = tls_connect(port, "localhost", &[&c], &[b"http/1.1"]).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let r = read(sender.send_request(get("/", "localhost")).await.unwrap()).await;
        assert_eq!(r.header("x-backend"), "a");
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_follow_the_port_rules() {
    bounded(async {
        let port = free_port();
        let l = listener("http", port, None);
        let redirect = |scheme: Option<&str>, port: Option<u16>, status: u16| {
            HttpFilter::RequestRedirect(Redirect {
                scheme: scheme.map(str::to_owned),
                hostname: None,
                path: None,
                port,
                status,
            })
        };
        let prefix_redirect = HttpFilter::RequestRedirect(Redirect {
            scheme: None,
            hostname: Some("new.example.com".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
            port: None,
            status: 302,
        });
        let routes = vec![route(
            "r",
            &[&l],
            &[],
            vec![
                rule("/secure", vec![], vec![redirect(Some("https"), None, 301)]),
                rule("/explicit", vec![], vec![redirect(Some("https"), Some(8443), 308)]),
                rule("/same", vec![], vec![redirect(None, None, 307)]),
                rule("/v1", vec![], vec![prefix_redirect]),
            ],
        )];
        let h = Harness::new();
        h.apply(vec![l], routes).await;
        let host = format!("example.com:{port}");
        let r = h1(port, get("/secure/x?q=1", &host)).await;
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(r.header("location"), "https://example.com/secure/x?q=1");
        let r = h1(port, get("/explicit", &host)).await;
        assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.header("location"), "https://example.com:8443/explicit");
        let r = h1(port, get("/same", &host)).await;
        assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(r.header("location"), format!("http://example.com:{port}/same"));
        let r = h1(port, get("/v1/items", &host)).await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(r.header("location"), format!("http://new.example.com:{port}/v2/items"));
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_rewrite_and_backend_filters() {
    bounded(async {
        let a = echo_backend("a").await;
        let port = free_port();
        let l = listener("http", port, None);
        let rewrite = HttpFilter::UrlRewrite(Rewrite {
            hostname: Some("internal.svc".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/".into())),
        });
        let mut backend = to("a", &[a.addr], 1);
        backend.filters = vec![HttpFilter::RequestHeaderModifier(HeaderModifier {
            add: vec![("x-backend-filter".into(), "yes".into())],
            ..HeaderModifier::default()
        })];
        let routes = vec![route("r", &[&l], &[], vec![rule("/api", vec![backend], vec![rewrite])])];
        let h = Harness::new();
        h.apply(vec![l], routes).await;
        let r = h1(port, get("/api/users?id=3", "public.example.com")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-seen-path"), "/users?id=3");
        assert_eq!(r.header("x-seen-host"), "internal.svc");
        assert_eq!(r.seen("x-forwarded-host"), ["public.example.com"]);
        assert_eq!(r.seen("x-backend-filter"), ["yes"]);
        assert_eq!(h1(port, get("/api", "p")).await.header("x-seen-path"), "/");
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_backend_resolves_at_connect() {
    bounded(async {
        let a = echo_backend("a").await;
        let port = free_port();
        let l = listener("http", port, None);
        let dns = WeightedBackend {
            weight: 1,
            backend: Backend::Dns {
                name: "dns".into(),
                host: "localhost".into(),
                port: a.addr.port(),
                protocol: Default::default(),
            },
            filters: vec![],
        };
        let h = Harness::new();
        h.apply(vec![l.clone()], vec![route("r", &[&l], &[], vec![rule("/", vec![dns], vec![])])])
            .await;
        let r = h1(port, get("/x", "h")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-backend"), "a");
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_map_to_status_codes() {
    bounded(async {
        let a = echo_backend("a").await;
        let closed = SocketAddr::new(LOCALHOST, free_port());
        let port = free_port();
        let l = listener("http", port, None);
        let unresolved = WeightedBackend {
            weight: 1,
            backend: Backend::Unresolved(UnresolvedBackend {
                name: "default/missing".into(),
                reason: "Service not found".into(),
            }),
            filters: vec![],
        };
        let routes = vec![route(
            "r",
            &[&l],
            &[],
            vec![
                rule("/unresolved", vec![unresolved], vec![]),
                rule("/empty", vec![to("empty", &[], 1)], vec![]),
                rule("/zero", vec![to("a", &[a.addr], 0)], vec![]),
                rule("/none", vec![], vec![]),
                rule("/refused", vec![to("closed", &[closed], 1)], vec![]),
                rule("/slow", vec![to("a", &[a.addr], 1)], vec![]),
                rule("/weighted", vec![to("a", &[a.addr], 1), to("closed", &[closed], 0)], vec![]),
            ],
        )];
        let h = Harness::new();
        h.apply(vec![l], routes).await;
        let status = |path: &'static str| async move { h1(port, get(path, "h")).await.status };
        assert_eq!(status("/unresolved").await, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status("/empty").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status("/zero").await, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status("/none").await, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status("/refused").await, StatusCode::BAD_GATEWAY);
        assert_eq!(status("/slow").await, StatusCode::GATEWAY_TIMEOUT);
        for _ in 0..10 {
            assert_eq!(status("/weighted").await, StatusCode::OK, "weight 0 is never picked");
        }
        let metrics = h.metrics();
        assert!(
            metrics.contains(
                "gatehouse_proxy_upstream_errors_total{backend=\"closed\",kind=\"connect\"} 1"
            ),
            "{metrics}"
        );
        assert!(metrics.contains("kind=\"timeout\"} 1"), "{metrics}");
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_backends_share_traffic() {
    bounded(async {
        let a = echo_backend("a").await;
        let b = echo_backend("b").await;
        let port = free_port();
        let l = listener("http", port, None);
        let routes = vec![route(
            "r",
            &[&l],
            &[],
            vec![rule("/", vec![to("a", &[a.addr], 1), to("b", &[b.addr], 1)], vec![])],
        )];
        let h = Harness::new();
        h.apply(vec![l], routes).await;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..60 {
            seen.insert(h1(port, get("/", "h")).await.header("x-backend").to_owned());
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b"]);
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_routes_keeps_sockets_and_in_flight_requests() {
    bounded(async {
        let a = echo_backend("a").await;
        let b = echo_backend("b").await;
        let port = free_port();
        let extra = free_port();
        let l = listener("http", port, None);
        let l_extra = listener("extra", extra, None);
        let h = Harness::with_options(ProxyOptions {
            upstream_timeout: Duration::from_secs(5),
            ..test_options()
        });
        let to_a =
            route("r", &[&l, &l_extra], &[], vec![rule("/", vec![to("a", &[a.addr], 1)], vec![])]);
        h.apply(vec![l.clone(), l_extra.clone()], vec![to_a]).await;

        // A keep-alive connection opened before the reload, and a slow request in flight.
        let stream = TcpStream::connect((LOCALHOST, port)).await.unwrap();
        let (mut kept, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        assert_eq!(
            read(kept.send_request(get("/", "h")).await.unwrap()).await.header("x-backend"),
            "a"
        );
        let slow = tokio::spawn(h1(port, get("/slow", "h")));
        tokio::time::sleep(Duration::from_millis(50)).await;

        let to_b = route("r", &[&l], &[], vec![rule("/", vec![to("b", &[b.addr], 1)], vec![])]);
        let report = h.apply(vec![l], vec![to_b]).await;
        assert!(report.listener_problems.is_empty());

        // The in-flight request finishes on the backend the old table picked.
        let slow = slow.await.unwrap();
        assert_eq!(slow.status, StatusCode::OK);
        assert_eq!(slow.header("x-backend"), "a");
        // The old connection reads the new table on its next request.
        assert_eq!(
            read(kept.send_request(get("/", "h")).await.unwrap()).await.header("x-backend"),
            "b"
        );
        assert_eq!(h1(port, get("/", "h")).await.header("x-backend"), "b");
        // The dropped listener's socket is closed.
        assert!(TcpStream::connect((LOCALHOST, extra)).await.is_err());
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_reported_not_fatal() {
    bounded(async {
        let taken = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
        let busy = taken.local_addr().unwrap().port();
        let port = free_port();
        let h = Harness::new();
        // A compile problem (protocol conflict) is the caller's to merge: apply adds bind
        // failures only.
        let conflict = tls_listener("zz-conflict", port, None, &cert(&["localhost"]).model);
        let listeners = vec![listener("busy", busy, None), listener("ok", port, None), conflict];
        let desired = Desired { generation: 1, listeners, ..Desired::default() };
        let (table, compiled) = compile(&desired);
        assert_eq!(compiled.len(), 1);
        assert_eq!(compiled[0].kind, ListenerProblemKind::ProtocolConflict);
        let report = h.proxy.apply(Arc::new(table), 1).await;
        assert_eq!(report.generation, 1);
        assert_eq!(report.listener_problems.len(), 1, "{report:?}");
        assert_eq!(report.listener_problems[0].listener, listener_id("busy"));
        assert_eq!(report.listener_problems[0].kind, ListenerProblemKind::PortUnavailable);
        assert!(h.proxy.ready());
        assert_eq!(h1(port, get("/", "h")).await.status, StatusCode::NOT_FOUND);
        // Freed later: the next apply binds it.
        drop(taken);
        let report =
            h.apply(vec![listener("busy", busy, None), listener("ok", port, None)], vec![]).await;
        assert!(report.listener_problems.is_empty(), "{report:?}");
        assert_eq!(h1(busy, get("/", "h")).await.status, StatusCode::NOT_FOUND);
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_and_stops_accepting() {
    bounded(async {
        let a = echo_backend("a").await;
        let port = free_port();
        let l = listener("http", port, None);
        let routes =
            vec![route("r", &[&l], &[], vec![rule("/", vec![to("a", &[a.addr], 1)], vec![])])];
        let mut registry = Registry::default();
        let options = ProxyOptions { upstream_timeout: Duration::from_secs(5), ..test_options() };
        let proxy = Proxy::with_options(&mut registry, options);
        let (table, _) = compile(&Desired {
            generation: 3,
            listeners: vec![l],
            http_routes: routes.into_iter().map(Arc::new).collect(),
            ..Desired::default()
        });
        proxy.apply(Arc::new(table), 3).await;

        let slow = tokio::spawn(h1(port, get("/slow", "h")));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        proxy.shutdown(Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!proxy.ready());
        let slow = slow.await.unwrap();
        assert_eq!(slow.status, StatusCode::OK, "in-flight request completes during drain");
        assert!(TcpStream::connect((LOCALHOST, port)).await.is_err(), "no longer accepting");
    })
    .await;
}

// ---------------------------------------------------------------- upstream connection pool

async fn pool_harness(options: ProxyOptions) -> (Harness, CountingBackend, u16) {
    let b = counting_backend().await;
    let port = free_port();
    let l = listener("http", port, None);
    let h = Harness::with_options(options);
    h.apply(
        vec![l.clone()],
        vec![route("r", &[&l], &[], vec![rule("/", vec![to("b", &[b.addr], 1)], vec![])])],
    )
    .await;
    (h, b, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connection_is_reused_for_sequential_requests() {
    bounded(async {
        let (h, b, port) = pool_harness(test_options()).await;
        for _ in 0..10 {
            let r = h1(port, get("/x", "h")).await;
            assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "hello"));
        }
        assert_eq!(b.accepts(), 1, "one upstream connection for sequential requests");
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_expire() {
    bounded(async {
        let options =
            ProxyOptions { upstream_idle_timeout: Duration::from_millis(200), ..test_options() };
        let (h, b, port) = pool_harness(options).await;
        assert_eq!(h1(port, get("/x", "h")).await.status, StatusCode::OK);
        assert_eq!(h1(port, get("/x", "h")).await.status, StatusCode::OK);
        assert_eq!(b.accepts(), 1);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(b.closed(), 1, "the sweep closed the expired connection");
        assert_eq!(h1(port, get("/x", "h")).await.status, StatusCode::OK);
        assert_eq!(b.accepts(), 2, "an expired connection is not reused");
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_upstream_connection_is_retried_once_on_a_new_one() {
    bounded(async {
        let (h, b, port) = pool_harness(test_options()).await;
        assert_eq!(h1(port, get("/stale", "h")).await.status, StatusCode::OK);
        // The backend closes the reused connection on this request; a new one answers.
        let r = h1(port, get("/stale", "h")).await;
        assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "hello"));
        assert_eq!(b.accepts(), 2);
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_body_dropped_early_does_not_reuse_the_connection() {
    bounded(async {
        let (h, b, port) = pool_harness(test_options()).await;
        let stream = TcpStream::connect((LOCALHOST, port)).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        let conn = tokio::spawn(conn);
        let resp = sender.send_request(get("/partial", "h")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        // The client goes away mid-body.
        drop((resp, sender));
        conn.abort();
        let _ = conn.await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(b.closed(), 1, "the half-read upstream connection was closed");
        assert_eq!(h1(port, get("/x", "h")).await.body, "hello");
        assert_eq!(b.accepts(), 2);
        h.proxy.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}
