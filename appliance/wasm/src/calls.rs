//! Running the HTTP calls plugins dispatch (`proxy_http_call`): one HTTP/1.1 request to the
//! named upstream's backend, in cleartext or over TLS, bounded by the call's timeout and the
//! plugin's body limit. Any failure (no endpoints, refused, a certificate that does not
//! verify, timed out, answer too large) is a failed call: the plugin gets
//! `proxy_on_http_call_response` with no headers and no body, never a trap.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use gatehouse_model::{Backend, UpstreamTls, WasmUpstream};
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::state::Head;

/// A call the guest queued, waiting for the proxy to run it.
#[derive(Debug)]
pub(crate) struct PendingCall {
    pub token: u32,
    pub upstream: String,
    pub target: Arc<CallUpstream>,
    pub method: Method,
    pub path: String,
    pub authority: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub timeout: Duration,
}

/// The answer to a call, as the guest reads it (`HTTP_CALL_RESPONSE_*`).
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    /// `:status` and the response headers; empty for a failed call.
    pub head: Head,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// The HTTP client cleartext calls go through (pooled connections); cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct CallClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for CallClient {
    fn default() -> Self {
        Self { client: pooled(tcp_connector()) }
    }
}

/// The connector under every call: TCP with no Nagle delay and a connect timeout.
fn tcp_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    connector.enforce_http(false);
    connector
}

/// A client that keeps connections as every call client does.
fn pooled<C>(connector: C) -> Client<C, Full<Bytes>>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        .build(connector)
}

/// Why an upstream's TLS settings cannot be used (the plugin is not prepared).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamTlsError {
    #[error("cannot read CA file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("CA file {path} is not valid PEM: {reason}")]
    Pem { path: String, reason: String },
    #[error("CA file {0} holds no usable CA certificate")]
    NoRoots(String),
    #[error("the system trust store holds no usable CA certificate")]
    NoSystemRoots,
    #[error("server name {0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("cannot build the TLS client config: {0}")]
    Config(#[from] rustls::Error),
}

/// A plugin's upstream as its calls reach it: the backend, and for a TLS upstream its own
/// pooled client (its trust anchors and server name).
#[derive(Debug)]
pub(crate) struct CallUpstream {
    pub backend: Backend,
    tls: Option<TlsClient>,
}

#[derive(Debug)]
struct TlsClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    server_name: String,
}

impl CallUpstream {
    /// Builds the upstream's TLS client, if it has TLS (at prepare, off the request path).
    pub(crate) fn new(upstream: &WasmUpstream) -> Result<Self, UpstreamTlsError> {
        let tls = upstream.tls.as_ref().map(TlsClient::new).transpose()?;
        Ok(Self { backend: upstream.backend.clone(), tls })
    }
}

impl TlsClient {
    fn new(tls: &UpstreamTls) -> Result<Self, UpstreamTlsError> {
        let roots = match &tls.ca_file {
            Some(path) => Arc::new(file_roots(path)?),
            None => system_roots().ok_or(UpstreamTlsError::NoSystemRoots)?,
        };
        let server_name = ServerName::try_from(tls.server_name.clone())
            .map_err(|_| UpstreamTlsError::ServerName(tls.server_name.clone()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(server_name))
            .enable_http1()
            .wrap_connector(tcp_connector());
        Ok(Self { client: pooled(connector), server_name: tls.server_name.clone() })
    }
}

/// The CA certificates of a PEM file.
fn file_roots(path: &std::path::Path) -> Result<RootCertStore, UpstreamTlsError> {
    let shown = || path.display().to_string();
    let pem = std::fs::read(path)
        .map_err(|e| UpstreamTlsError::Read { path: shown(), reason: e.to_string() })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UpstreamTlsError::Pem { path: shown(), reason: e.to_string() })?;
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(UpstreamTlsError::NoRoots(shown()));
    }
    Ok(store)
}

/// The system's CA certificates, read once (`SSL_CERT_FILE` and `SSL_CERT_DIR` override
/// where). `None` when none is usable.
fn system_roots() -> Option<Arc<RootCertStore>> {
    static ROOTS: OnceLock<Option<Arc<RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "cannot read some system CA certificates");
            }
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(loaded.certs);
            (!store.is_empty()).then(|| Arc::new(store))
        })
        .clone()
}

impl CallClient {
    /// Runs `call`; `Err` says why it failed (for the log).
    pub(crate) async fn run(
        &self,
        call: PendingCall,
        body_limit: usize,
    ) -> Result<CallResponse, String> {
        let timeout = call.timeout;
        tokio::time::timeout(timeout, self.send(call, body_limit))
            .await
            .unwrap_or_else(|_| Err(format!("timed out after {} ms", timeout.as_millis())))
    }

    async fn send(&self, call: PendingCall, body_limit: usize) -> Result<CallResponse, String> {
        let upstream = &*call.target;
        let target = match &upstream.backend {
            Backend::Endpoints(e) if e.tls.is_some() && upstream.tls.is_none() => {
                return Err(format!(
                    "{}: the upstream's BackendTLSPolicy is not applied to calls; give the upstream tls",
                    e.name
                ));
            }
            Backend::Endpoints(e) => match pick(&e.addrs) {
                Some(addr) => addr.to_string(),
                None => return Err(format!("{}: no endpoints", e.name)),
            },
            Backend::Dns { host, port, .. } => format!("{host}:{port}"),
            Backend::Unresolved(u) => return Err(format!("{}: {}", u.name, u.reason)),
        };
        let scheme = if upstream.tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{target}{}", call.path);
        let mut request = Request::builder()
            .method(call.method)
            .uri(uri)
            .body(Full::new(call.body))
            .map_err(|e| format!("request: {e}"))?;
        *request.headers_mut() = call.headers;
        if !call.authority.is_empty() {
            let host =
                HeaderValue::from_str(&call.authority).map_err(|e| format!(":authority: {e}"))?;
            request.headers_mut().insert(header::HOST, host);
        }
        let response = match &upstream.tls {
            None => self.client.request(request).await.map_err(|e| format!("{e}"))?,
            Some(tls) => tls.client.request(request).await.map_err(|e| {
                format!("TLS to {target} as {:?}: {}", tls.server_name, error_chain(&e))
            })?,
        };
        let (parts, body) = response.into_parts();
        #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
        let collected = Limited::new(body, body_limit)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let head = Head::response(parts.status.as_str(), parts.headers);
        Ok(CallResponse { head, body: collected.to_bytes().to_vec(), trailers })
    }
}

fn pick(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    match addrs.len() {
        0 => None,
        n => addrs.get(rand::rng().random_range(0..n)).copied(),
    }
}

/// An error and its sources, one after the other (a failed handshake's reason is deep).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
