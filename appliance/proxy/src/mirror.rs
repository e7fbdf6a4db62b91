//! Request mirrors: fire-and-forget copies of a request to other backends.
//!
//! A mirror never delays or fails the main request: it runs in its own task, its response is
//! read and discarded, its errors are only logged and counted. At most
//! [`MAX_MIRRORS_IN_FLIGHT`] mirrors run at once over the whole proxy; beyond that, copies are
//! dropped (and counted) rather than queued.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::request::Parts;
use hyper::body::Body;

use crate::filters::CompiledMirror;
use crate::server::Shared;
use crate::upstream::{self, RequestBody};

/// Mirrored requests in flight at once, over every route.
pub(crate) const MAX_MIRRORS_IN_FLIGHT: usize = 512;

/// Starts one mirror of the request whose head is `head` and whose (replayable) body is
/// `body`, bounded by `timeout` for the whole exchange. Returns at once.
pub(crate) fn spawn(
    shared: &Shared,
    mirror: &CompiledMirror,
    head: &Parts,
    body: Option<Bytes>,
    timeout: Duration,
) {
    let (permits, metrics) = (&shared.mirror_permits, &shared.metrics.mirrors);
    let name = mirror.backend.target.name();
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        metrics.record(name, "dropped");
        tracing::debug!(backend = name, "too many mirrors in flight; mirror dropped");
        return;
    };
    let endpoint = match upstream::endpoint(&mirror.backend) {
        Ok(e) => e,
        Err(e) => {
            metrics.record(name, "error");
            tracing::debug!(backend = name, error = %e, "mirror backend unusable");
            return;
        }
    };
    let req = copy(head, body);
    let pool = shared.pool.clone();
    let h2c = shared.h2c.clone();
    let protocol = mirror.backend.target.protocol();
    let metrics = metrics.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        let _permit = permit;
        let exchange = async {
            let resp = match protocol {
                gatehouse_model::BackendProtocol::Http1 => {
                    upstream::send(&pool, endpoint.key, req, timeout, &name).await?
                }
                gatehouse_model::BackendProtocol::H2c => {
                    h2c.send(endpoint.key, req, timeout, &name).await?
                }
            };
            let mut body = resp.into_body();
            // Read to the end so the connection can be reused; the bytes are dropped.
            while let Some(frame) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                if frame.is_err() {
                    break;
                }
            }
            Ok::<_, crate::error::RequestError>(())
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(())) => metrics.record(&name, "sent"),
            Ok(Err(e)) => {
                metrics.record(&name, "error");
                tracing::debug!(backend = %name, error = %e, "mirror failed");
            }
            Err(_) => {
                metrics.record(&name, "error");
                tracing::debug!(backend = %name, "mirror timed out");
            }
        }
    });
}

/// A request with `head`'s method, URI, version and headers and the given body.
pub(crate) fn copy(head: &Parts, body: Option<Bytes>) -> Request<RequestBody> {
    let body = match body {
        Some(b) if !b.is_empty() => RequestBody::Buffered(Some(b)),
        _ => RequestBody::Empty,
    };
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    req
}
