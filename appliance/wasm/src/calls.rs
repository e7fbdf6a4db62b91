//! Running the HTTP calls plugins dispatch (`proxy_http_call`): one HTTP/1.1 request to the
//! named upstream's backend, bounded by the call's timeout and the plugin's body limit. Any
//! failure (no endpoints, refused, timed out, answer too large) is a failed call: the plugin
//! gets `proxy_on_http_call_response` with no headers and no body, never a trap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_model::Backend;
use http::{HeaderMap, HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;

use crate::state::Head;

/// A call the guest queued, waiting for the proxy to run it.
#[derive(Debug)]
pub(crate) struct PendingCall {
    pub token: u32,
    pub upstream: String,
    pub backend: Arc<Backend>,
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

/// The HTTP client calls go through (pooled connections); cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct CallClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for CallClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .build(connector);
        Self { client }
    }
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
        let target = match &*call.backend {
            Backend::Endpoints(e) if e.tls.is_some() => {
                return Err(format!("{}: TLS upstreams are not supported for calls", e.name));
            }
            Backend::Endpoints(e) => match pick(&e.addrs) {
                Some(addr) => addr.to_string(),
                None => return Err(format!("{}: no endpoints", e.name)),
            },
            Backend::Dns { host, port, .. } => format!("{host}:{port}"),
            Backend::Unresolved(u) => return Err(format!("{}: {}", u.name, u.reason)),
        };
        let uri = format!("http://{target}{}", call.path);
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
        let response = self.client.request(request).await.map_err(|e| format!("{e}"))?;
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
