//! Upstream side: the pooled HTTP/1.1 client, endpoint choice and error classification.

use std::error::Error as _;
use std::io;
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::RequestError;
use crate::table::{CompiledBackend, Target};

/// Pooled HTTP/1.1 client to backends; DNS names resolve when connecting.
pub(crate) type UpstreamClient = Client<HttpConnector, Incoming>;

pub(crate) fn client(connect_timeout: Duration, idle_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .build(connector)
}

/// The `host:port` to send to: the next endpoint round-robin, or the DNS authority.
pub(crate) fn authority(backend: &CompiledBackend) -> Result<Authority, RequestError> {
    match &backend.target {
        Target::Endpoints { name, addrs, authorities } => {
            let i = backend.next_index(addrs.len());
            match (authorities.get(i), addrs.get(i)) {
                // Formatted and parsed once, when the table was compiled.
                (Some(Some(a)), _) => Ok(a.clone()),
                (_, Some(addr)) => {
                    Ok(Authority::try_from(addr.to_string()).map_err(http::Error::from)?)
                }
                (_, None) => Err(RequestError::NoEndpoints(name.clone())),
            }
        }
        Target::Dns { authority, .. } => {
            Ok(Authority::try_from(authority.as_str()).map_err(http::Error::from)?)
        }
        Target::Unresolved { name, reason } => {
            Err(RequestError::Unresolved { name: name.clone(), reason: reason.clone() })
        }
    }
}

/// Sends a request, bounding the wait for the response head.
pub(crate) async fn send(
    client: &UpstreamClient,
    req: Request<Incoming>,
    timeout: Duration,
    backend: &str,
) -> Result<Response<Incoming>, RequestError> {
    match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => Err(RequestError::Timeout { backend: backend.to_owned() }),
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) if is_timeout(&e) => Err(RequestError::Timeout { backend: backend.to_owned() }),
        Ok(Err(source)) if source.is_connect() => {
            Err(RequestError::Connect { backend: backend.to_owned(), source })
        }
        Ok(Err(source)) => Err(RequestError::Upstream { backend: backend.to_owned(), source }),
    }
}

/// Whether the connector gave up on a connect timeout.
fn is_timeout(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source = err.source();
    while let Some(e) = source {
        if e.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::TimedOut) {
            return true;
        }
        source = e.source();
    }
    false
}
