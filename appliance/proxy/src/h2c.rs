//! HTTP/2 over cleartext with prior knowledge (h2c) to backends that ask for it (gRPC
//! backends, Service ports with `appProtocol: kubernetes.io/h2c`, native `protocol = "h2c"`).
//!
//! One multiplexed connection per endpoint, shared by every request to it; a connection that
//! closed (GOAWAY, reset, idle close by the backend) is replaced on the next request. Bodies
//! and trailers stream both ways, frame by frame: nothing is buffered here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;

use gatehouse_model::BackendProtocol;

use crate::error::RequestError;
use crate::server::Shared;
use crate::table::CompiledBackend;
use crate::upstream::{self, Key, RequestBody, UpstreamBody};

/// Sends a prepared request over the protocol the backend speaks: the HTTP/1.1 pool, or
/// h2c. Bounds the wait for the response head by `timeout`.
pub(crate) async fn send(
    shared: &Shared,
    backend: &CompiledBackend,
    key: Key,
    req: Request<RequestBody>,
    timeout: Duration,
    name: &str,
) -> Result<Response<UpstreamBody>, RequestError> {
    match backend.target.protocol() {
        BackendProtocol::Http1 => upstream::send(&shared.pool, key, req, timeout, name).await,
        BackendProtocol::H2c => shared.h2c.send(key, req, timeout, name).await,
    }
}

type Sender = SendRequest<RequestBody>;

/// h2c connections to backends, one per endpoint.
#[derive(Clone)]
pub(crate) struct H2cPool {
    conns: Arc<Mutex<HashMap<Key, Sender>>>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for H2cPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2cPool").field("endpoints", &self.conns.lock().len()).finish()
    }
}

/// Why no response head came back.
enum Failure {
    ConnectTimeout,
    Connect(std::io::Error),
    Http(hyper::Error),
}

impl H2cPool {
    pub(crate) fn new(connect_timeout: Duration) -> Self {
        Self { conns: Arc::new(Mutex::new(HashMap::new())), connect_timeout }
    }

    /// The live connection to `key`, or a new one.
    async fn sender(&self, key: &Key) -> Result<Sender, Failure> {
        let existing = self.conns.lock().get(key).cloned();
        if let Some(sender) = existing.filter(|s| !s.is_closed()) {
            return Ok(sender);
        }
        let stream = tokio::time::timeout(self.connect_timeout, upstream::tcp_connect(key))
            .await
            .map_err(|_| Failure::ConnectTimeout)?
            .map_err(Failure::Connect)?;
        stream.set_nodelay(true).map_err(Failure::Connect)?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2c connection ended with an error");
            }
        });
        self.conns.lock().insert(key.clone(), sender.clone());
        Ok(sender)
    }

    async fn request(
        &self,
        key: &Key,
        req: Request<RequestBody>,
    ) -> Result<Response<hyper::body::Incoming>, Failure> {
        let mut sender = self.sender(key).await?;
        let sent = async {
            sender.ready().await?;
            sender.send_request(req).await
        };
        match sent.await {
            Ok(resp) => Ok(resp),
            Err(e) => {
                // A connection that failed a request is not handed out again.
                let mut conns = self.conns.lock();
                if conns.get(key).is_some_and(|s| s.is_closed() || !e.is_user()) {
                    conns.remove(key);
                }
                Err(Failure::Http(e))
            }
        }
    }

    /// Sends a request prepared for HTTP/1.1 ([`prepare`] turns it into an HTTP/2 one),
    /// bounding the wait for the response head (connect included).
    pub(crate) async fn send(
        &self,
        key: Key,
        req: Request<RequestBody>,
        timeout: Duration,
        backend: &str,
    ) -> Result<Response<UpstreamBody>, RequestError> {
        let req = prepare(req);
        match tokio::time::timeout(timeout, self.request(&key, req)).await {
            Err(_) | Ok(Err(Failure::ConnectTimeout)) => {
                Err(RequestError::Timeout { backend: backend.to_owned() })
            }
            Ok(Ok(resp)) => Ok(resp.map(UpstreamBody::unpooled)),
            Ok(Err(Failure::Connect(source))) => {
                Err(RequestError::Connect { backend: backend.to_owned(), source })
            }
            Ok(Err(Failure::Http(source))) => {
                Err(RequestError::Upstream { backend: backend.to_owned(), source })
            }
        }
    }
}

/// An origin-form HTTP/1.1 request as HTTP/2: the `Host` header becomes the `:authority`
/// of an absolute URI, and `te: trailers` (the only TE HTTP/2 allows, which gRPC servers
/// expect) is set again after the hop-by-hop strip removed it.
fn prepare(mut req: Request<RequestBody>) -> Request<RequestBody> {
    let authority =
        req.headers_mut().remove(header::HOST).and_then(|h| Authority::try_from(h.as_bytes()).ok());
    let mut parts = req.uri().clone().into_parts();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    if let Some(authority) = authority {
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_2;
    req.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_becomes_the_authority_of_an_http2_request() {
        let mut req = Request::new(RequestBody::Empty);
        *req.uri_mut() = Uri::from_static("/echo.v1.Echo/Say?x=1");
        req.headers_mut().insert(header::HOST, HeaderValue::from_static("grpc.example.com:8080"));
        let req = prepare(req);
        assert_eq!(req.uri(), "http://grpc.example.com:8080/echo.v1.Echo/Say?x=1");
        assert_eq!(req.version(), Version::HTTP_2);
        assert!(req.headers().get(header::HOST).is_none());
        assert_eq!(req.headers()[header::TE], "trailers");
    }
}
