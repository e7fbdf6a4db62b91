//! Request-path errors and the one place where they become HTTP responses.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};

use crate::upstream::UpstreamBody;
use crate::wasm::Filtered;

/// Body of every response the proxy sends: the upstream's, streamed, or one the proxy
/// generated. An enum rather than a boxed body: no allocation or dynamic call per response.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    Upstream(UpstreamBody),
    /// An upstream body streamed through WASM filters.
    Filtered(Box<Filtered<UpstreamBody>>),
    Local(Full<Bytes>),
}

/// The error of a body the proxy sends: hyper's, or a WASM filter's.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Filtered(body) => Pin::new(body.as_mut()).poll_frame(cx),
            Self::Local(body) => Pin::new(body).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream(body) => body.is_end_stream(),
            Self::Filtered(body) => body.is_end_stream(),
            Self::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream(body) => body.size_hint(),
            Self::Filtered(body) => body.size_hint(),
            Self::Local(body) => body.size_hint(),
        }
    }
}

/// A body the proxy generates itself.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    ProxyBody::Local(Full::new(bytes.into()))
}

/// Why a request could not be proxied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("no listener or route matches the request")]
    NoRoute,
    #[error("the TLS server name selected another listener than the Host header")]
    Misdirected,
    #[error("the matched rule is invalid: {0}")]
    InvalidRule(String),
    #[error("the matched rule has no backend with a non-zero weight")]
    NoBackend,
    #[error("backend {name} is unresolved: {reason}")]
    Unresolved { name: String, reason: String },
    #[error("backend {0} has no ready endpoint")]
    NoEndpoints(String),
    #[error("cannot build the upstream request: {0}")]
    UpstreamRequest(#[from] http::Error),
    #[error("cannot connect to backend {backend}: {source}")]
    Connect {
        backend: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with backend {backend} failed: {source}")]
    BackendTls {
        backend: String,
        #[source]
        source: std::io::Error,
    },
    #[error("backend {backend} did not answer in time")]
    Timeout { backend: String },
    #[error("the route's request timeout expired")]
    RequestTimeout,
    #[error("cannot read the request body: {0}")]
    RequestBody(String),
    #[error("backend {backend} failed: {source}")]
    Upstream {
        backend: String,
        #[source]
        source: hyper::Error,
    },
}

impl RequestError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::InvalidRule(_)
            | Self::NoBackend
            | Self::Unresolved { .. }
            | Self::UpstreamRequest(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::BackendTls { .. } | Self::Upstream { .. } => {
                StatusCode::BAD_GATEWAY
            }
            Self::Timeout { .. } | Self::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RequestBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Label for the upstream-errors metric; `None` for errors that are not the upstream's.
    pub(crate) fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            Self::Connect { .. } => Some("connect"),
            Self::BackendTls { .. } => Some("tls"),
            Self::Timeout { .. } => Some("timeout"),
            Self::Upstream { .. } => Some("protocol"),
            Self::NoEndpoints(_) => Some("no_endpoints"),
            _ => None,
        }
    }

    /// The only conversion of a data-plane error into a response. The body names the status
    /// only: details go to logs, not to clients.
    pub(crate) fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let text = format!("{}\n", status.canonical_reason().unwrap_or("error"));
        let mut resp = Response::new(full(text));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

/// gRPC status codes the proxy answers with (the gRPC spec's numbering).
pub(crate) mod grpc_code {
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
}

/// Whether a request is a gRPC call (`content-type: application/grpc` or `application/grpc+…`):
/// errors are then answered as gRPC status, never as an HTTP error page.
pub(crate) fn is_grpc(headers: &header::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RequestError {
    /// The gRPC status code for a gRPC request that failed here.
    pub(crate) fn grpc_code(&self) -> u8 {
        match self {
            Self::NoRoute => grpc_code::UNIMPLEMENTED,
            Self::Timeout { .. } | Self::RequestTimeout => grpc_code::DEADLINE_EXCEEDED,
            Self::Misdirected
            | Self::NoBackend
            | Self::Unresolved { .. }
            | Self::NoEndpoints(_)
            | Self::Connect { .. }
            | Self::BackendTls { .. }
            | Self::Upstream { .. } => grpc_code::UNAVAILABLE,
            Self::InvalidRule(_) | Self::UpstreamRequest(_) | Self::RequestBody(_) => {
                grpc_code::INTERNAL
            }
        }
    }

    /// The error as the client expects it: a gRPC status for a gRPC call, else
    /// [`RequestError::into_response`].
    pub(crate) fn into_response_for(self, grpc: bool) -> Response<ProxyBody> {
        if grpc { self.into_grpc_response() } else { self.into_response() }
    }

    /// A trailers-only gRPC response: HTTP 200, `application/grpc`, `grpc-status` and
    /// `grpc-message` in the header block that ends the stream. The message names the
    /// HTTP status the error stands for; details go to logs, not to clients.
    fn into_grpc_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let message = format!(
            "gatehouse: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error")
        );
        let mut resp = Response::new(full(""));
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", header::HeaderValue::from(u16::from(self.grpc_code())));
        if let Ok(v) = header::HeaderValue::from_str(&percent_encode(&message)) {
            headers.insert("grpc-message", v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_requests_are_recognised_by_content_type() {
        let h = |v: &'static str| {
            let mut h = header::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(v));
            is_grpc(&h)
        };
        assert!(h("application/grpc"));
        assert!(h("application/grpc+proto"));
        assert!(h("Application/GRPC;charset=utf-8"));
        assert!(!h("application/grpc-web"));
        assert!(!h("application/json"));
        assert!(!is_grpc(&header::HeaderMap::new()));
    }

    #[test]
    fn errors_become_trailers_only_grpc_status() {
        let resp = RequestError::NoRoute.into_response_for(true);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], "12");
        assert_eq!(resp.headers()["grpc-message"], "gatehouse: 404 Not Found");
        assert!(resp.body().is_end_stream());
        let timeout = RequestError::Timeout { backend: "b".into() };
        assert_eq!(timeout.grpc_code(), grpc_code::DEADLINE_EXCEEDED);
        assert_eq!(RequestError::NoEndpoints("b".into()).grpc_code(), grpc_code::UNAVAILABLE);
        assert_eq!(percent_encode("a%b\nc"), "a%25b%0Ac");
        let plain = RequestError::NoRoute.into_response_for(false);
        assert_eq!(plain.status(), StatusCode::NOT_FOUND);
    }
}
