use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// An HTTP/1.1 + h2c server on 127.0.0.1 that answers every request with a JSON description of
/// it: `{"backend", "method", "path", "host", "version", "headers": {name: value}, "body_len"}`.
/// A `sleep_ms=N` query parameter delays the answer (for drain and reload tests).
#[derive(Debug)]
pub struct EchoBackend {
    pub name: String,
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoBackend {
    /// Starts a backend on an ephemeral loopback port.
    pub async fn start(name: &str) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), name).await
    }

    /// Starts a backend on the given address.
    pub async fn start_on(addr: SocketAddr, name: &str) -> Self {
        let listener = TcpListener::bind(addr).await.expect("bind echo backend");
        let addr = listener.local_addr().expect("local addr");
        let backend = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let backend = backend.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let backend = backend.clone();
                        async move { Ok::<_, Infallible>(echo(&backend, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { name: name.to_owned(), addr, task }
    }

    /// The backend's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn echo(backend: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, 64 << 20);
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let body_len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    if let Some(ms) = parts
        .uri
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sleep_ms=")))
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(30_000))).await;
    }
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<&str> =
            parts.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let doc = serde_json::json!({
        "backend": backend,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "host": host,
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    let mut response = Response::new(Full::new(Bytes::from(doc.to_string())));
    response
        .headers_mut()
        .insert("content-type", http::HeaderValue::from_static("application/json"));
    response.headers_mut().insert(
        "x-echo-backend",
        http::HeaderValue::from_str(backend).unwrap_or(http::HeaderValue::from_static("?")),
    );
    response
}
