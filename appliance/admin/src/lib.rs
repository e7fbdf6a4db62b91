//! The admin HTTP API: `/healthz`, `/readyz`, `/status`, `/metrics`, `/config`.
//!
//! It sits at the end of the data flow: the daemon publishes each reload's status document and
//! compiled snapshot into an [`AdminState`], and this server only reads them. It never touches a
//! config source or a data plane.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot bind the admin API on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// What the admin API serves; written by the daemon, read by requests.
#[derive(Debug)]
pub struct AdminState {
    ready: AtomicBool,
    status: ArcSwap<Rendered>,
    config: ArcSwap<Rendered>,
    registry: Arc<Registry>,
}

/// A document rendered when it is asked for: describing a large snapshot on every reload
/// would cost the reload path time that only a debugging `GET /config` needs.
struct Rendered(Box<dyn Fn() -> serde_json::Value + Send + Sync>);

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rendered(..)")
    }
}

impl AdminState {
    /// A state that is not ready yet, serving the given metrics registry (every metric is
    /// registered at start-up, so the registry is immutable from here on).
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            status: ArcSwap::from_pointee(Rendered(Box::new(
                || serde_json::json!({"generation": 0, "objects": []}),
            ))),
            config: ArcSwap::from_pointee(Rendered(Box::new(|| serde_json::Value::Null))),
            registry,
        }
    }

    /// Marks the appliance ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Publishes the status document served on `/status`.
    pub fn publish_status(&self, status: impl Into<Arc<serde_json::Value>>) {
        let status = status.into();
        self.publish_status_with(move || status.as_ref().clone());
    }

    /// Publishes how to assemble the status document on `/status`; `render` runs per
    /// request, so a document of thousands of shared objects is not copied per publication.
    pub fn publish_status_with(
        &self,
        render: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) {
        self.status.store(Arc::new(Rendered(Box::new(render))));
    }

    /// Publishes the compiled snapshot description served on `/config`.
    pub fn publish_config(&self, config: serde_json::Value) {
        self.publish_config_with(move || config.clone());
    }

    /// Publishes how to describe the snapshot on `/config`; `render` runs per request.
    pub fn publish_config_with(
        &self,
        render: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) {
        self.config.store(Arc::new(Rendered(Box::new(render))));
    }

    fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A bound admin server, not yet serving.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    state: Arc<AdminState>,
}

impl AdminServer {
    /// Binds the admin listener.
    pub async fn bind(addr: SocketAddr, state: Arc<AdminState>) -> Result<Self, AdminError> {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self { listener, state })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` turns true, then finishes in-flight requests (bounded).
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((stream, _peer)) = accepted else { continue };
                    let state = self.state.clone();
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req)) }
                    });
                    let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(error) = conn.await {
                            tracing::debug!(%error, "admin connection ended with an error");
                        }
                    });
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        drop(self.listener);
        let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    }
}

fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/status" => json(&(state.status.load().0)()),
        "/config" => json(&(state.config.load().0)()),
        "/metrics" => match state.encode_metrics() {
            Ok(body) => response(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body.into(),
            ),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n"),
        },
        "/" => {
            text(StatusCode::OK, "gatehouse admin API: /healthz /readyz /status /metrics /config\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn json(value: &serde_json::Value) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            response(StatusCode::OK, "application/json", body.into())
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "status encoding failed\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_health_ready_status_and_metrics() {
        let mut registry = Registry::default();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("gatehouse_test", "a test counter", counter.clone());
        counter.inc();
        let state = Arc::new(AdminState::new(Arc::new(registry)));
        let server =
            AdminServer::bind("127.0.0.1:0".parse().unwrap(), state.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server.serve(stopped));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        state.set_ready(true);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        state.publish_status(serde_json::json!({"generation": 7}));
        assert!(get(addr, "/status").await.contains("\"generation\": 7"));
        assert!(get(addr, "/metrics").await.contains("gatehouse_test_total 1"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    }
}
