//! A fault-injecting HTTPS proxy in front of the real pebble: every request is forwarded to
//! pebble unchanged (with its `Host`, so pebble's URLs name the proxy and the client keeps
//! coming back through it) unless a fault is armed for its kind, in which case the proxy
//! answers itself: `500` with a `serverInternal` problem, or `429` with a `rateLimited`
//! problem and `Retry-After`. It can also hold requests of a kind (answer nothing until
//! released), to stop an order at a chosen step.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, MutexGuard, watch};
use tokio::task::JoinHandle;

use crate::{Pebble, TestCa};

/// Which requests a fault applies to, by pebble's paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaRequest {
    /// `POST /order-plz`: a new order.
    NewOrder,
    /// `POST /chalZ/…`: the client asks the CA to validate a challenge.
    Challenge,
    /// `POST /finalize-order/…`: the CSR.
    Finalize,
    /// Anything but the directory and nonces.
    Any,
}

impl CaRequest {
    fn matches(self, method: &http::Method, path: &str) -> bool {
        let post = method == http::Method::POST;
        match self {
            CaRequest::NewOrder => post && path.starts_with("/order-plz"),
            CaRequest::Challenge => post && path.starts_with("/chalZ/"),
            CaRequest::Finalize => post && path.starts_with("/finalize-order/"),
            CaRequest::Any => !path.starts_with("/dir") && !path.starts_with("/nonce-plz"),
        }
    }
}

/// What the proxy answers instead of pebble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaFault {
    /// 500 with an `urn:ietf:params:acme:error:serverInternal` problem.
    ServerError,
    /// 429 with an `urn:ietf:params:acme:error:rateLimited` problem and `Retry-After: secs`.
    RateLimited { retry_after_secs: u64 },
}

#[derive(Debug, Default)]
struct Faults {
    /// Armed faults, each for the next `n` requests of its kind, in order.
    armed: VecDeque<(CaRequest, CaFault, usize)>,
    /// Requests answered with a fault so far.
    injected: usize,
    /// Requests forwarded to pebble so far, by path.
    forwarded: Vec<String>,
    /// Requests of this kind wait until released.
    hold: Option<CaRequest>,
    /// Requests held so far.
    held: usize,
}

/// The proxy; dropping it stops it.
#[derive(Debug)]
pub struct FaultyCa {
    pub port: u16,
    /// The PEM file its HTTPS certificate chains to (an issuer's `ca_roots`).
    pub ca_path: PathBuf,
    faults: Arc<Mutex<Faults>>,
    released: watch::Sender<bool>,
    _dir: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl FaultyCa {
    /// Starts on 127.0.0.1 in front of `pebble` (trusting pebble's own HTTPS CA).
    pub async fn start(pebble: &Pebble) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new();
        let (chain, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        let ca_path = dir.path().join("proxy-ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).expect("proxy CA");
        let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("chain");
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("proxy TLS");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pebble.https_ca_pem.as_bytes()) {
            roots.add(cert.expect("pebble CA")).expect("root");
        }
        let client = Arc::new(
            rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth(),
        );
        let upstream = pebble.port;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let (released, _) = watch::channel(false);
        let shared = (faults.clone(), released.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, client) = (acceptor.clone(), client.clone());
                let (faults, released) = (shared.0.clone(), shared.1.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req| {
                        let (faults, client) = (faults.clone(), client.clone());
                        let released = released.subscribe();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                handle(req, &faults, released, client, upstream).await,
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self { port, ca_path, faults, released, _dir: dir, task }
    }

    /// The directory URL through the proxy.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The next `n` requests of `kind` get `fault` (after the faults armed before it).
    pub async fn fail(&self, kind: CaRequest, fault: CaFault, n: usize) {
        self.lock().await.armed.push_back((kind, fault, n));
    }

    /// How many requests were answered with a fault so far.
    pub async fn injected(&self) -> usize {
        self.lock().await.injected
    }

    /// How many requests were held so far.
    pub async fn held(&self) -> usize {
        self.lock().await.held
    }

    /// Paths forwarded to pebble so far.
    pub async fn forwarded(&self) -> Vec<String> {
        self.lock().await.forwarded.clone()
    }

    /// Requests of `kind` wait (unanswered) until [`FaultyCa::release`].
    pub async fn hold(&self, kind: CaRequest) {
        self.released.send_replace(false);
        self.lock().await.hold = Some(kind);
    }

    /// Lets held requests (and later ones) through.
    pub async fn release(&self) {
        self.lock().await.hold = None;
        self.released.send_replace(true);
    }

    async fn lock(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().await
    }
}

impl Drop for FaultyCa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = Full<Bytes>;

async fn handle(
    req: Request<Incoming>,
    faults: &Mutex<Faults>,
    mut released: watch::Receiver<bool>,
    client: Arc<rustls::ClientConfig>,
    upstream: u16,
) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let (fault, held) = {
        let mut f = faults.lock().await;
        let held = f.hold.is_some_and(|k| k.matches(&method, &path));
        f.held += usize::from(held);
        let mut fault = None;
        if let Some(armed) =
            f.armed.iter_mut().find(|(k, _, n)| *n > 0 && k.matches(&method, &path))
        {
            armed.2 -= 1;
            fault = Some(armed.1);
        }
        f.armed.retain(|(_, _, n)| *n > 0);
        if fault.is_some() {
            f.injected += 1;
        }
        (fault, held)
    };
    if held {
        while !*released.borrow_and_update() {
            if released.changed().await.is_err() {
                break;
            }
        }
    }
    match fault {
        Some(CaFault::ServerError) => {
            return problem(500, "serverInternal", "injected internal error (test proxy)", None);
        }
        Some(CaFault::RateLimited { retry_after_secs }) => {
            let detail = "too many new orders recently (injected by the test proxy)";
            return problem(429, "rateLimited", detail, Some(retry_after_secs));
        }
        None => {}
    }
    match forward(req, client, upstream).await {
        Ok(response) => {
            faults.lock().await.forwarded.push(path);
            response
        }
        Err(e) => problem(502, "serverInternal", &format!("test proxy: pebble: {e}"), None),
    }
}

fn problem(status: u16, kind: &str, detail: &str, retry_after: Option<u64>) -> Response<Body> {
    let body = format!(
        r#"{{"type":"urn:ietf:params:acme:error:{kind}","detail":"{detail}","status":{status}}}"#
    );
    let mut builder =
        Response::builder().status(status).header("content-type", "application/problem+json");
    if let Some(secs) = retry_after {
        builder = builder.header("retry-after", secs.to_string());
    }
    builder.body(Full::new(Bytes::from(body))).expect("problem response")
}

/// Sends the request to pebble on a fresh TLS connection, `Host` unchanged.
async fn forward(
    req: Request<Incoming>,
    client: Arc<rustls::ClientConfig>,
    upstream: u16,
) -> Result<Response<Body>, String> {
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, 1 << 20);
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let tcp = TcpStream::connect(("127.0.0.1", upstream)).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut upstream_req = Request::builder()
        .method(parts.method)
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned());
    for (name, value) in &parts.headers {
        upstream_req = upstream_req.header(name, value);
    }
    if !parts.headers.contains_key(http::header::HOST)
        && let Some(authority) = parts.uri.authority()
    {
        upstream_req = upstream_req.header(http::header::HOST, authority.as_str());
    }
    let upstream_req = upstream_req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = sender.send_request(upstream_req).await.map_err(|e| e.to_string())?;
    let (mut parts, body) = response.into_parts();
    // The body is handed on whole: its length is known again.
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let body = http_body_util::Limited::new(body, 16 << 20);
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
