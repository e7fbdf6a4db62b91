//! proxy-wasm filters on the request path: the plugins of the listener, the rule and the
//! backend run, in that order, on the request head (and buffered body), and in reverse order on
//! the response head (and buffered body). A plugin's local response, or a failure under
//! `failure_policy = "closed"`, answers in place of the upstream.
//!
//! Bodies are buffered for the plugins up to the plugin's body limit: a larger request body
//! (by `Content-Length`, or found while reading) is answered with 413; a larger response body
//! with a `Content-Length` streams through without body callbacks, one without a length that
//! grows past the limit is answered with 502.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_wasm::{Head, HttpContext, LocalResponse, Plugin, RequestInfo, Verdict};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Uri, request, response};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Incoming};

use crate::error::{ProxyBody, full};
use crate::upstream::{RequestBody, UpstreamBody};

/// The filter contexts of one request, in run order.
pub(crate) struct Chain {
    contexts: Vec<HttpContext>,
}

/// Runs the request phase of every plugin. `Err` is the response to send instead.
pub(crate) async fn request(
    plugins: &[&Arc<Plugin>],
    info: RequestInfo,
    scheme: &'static str,
    parts: &mut request::Parts,
    body: Incoming,
) -> Result<(Chain, RequestBody), Response<ProxyBody>> {
    let info = Arc::new(info);
    let mut contexts: Vec<HttpContext> =
        plugins.iter().map(|p| p.start_request(info.clone())).collect();
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let mut head = Head {
        pseudo: vec![
            (":method", parts.method.as_str().to_owned()),
            (":path", path),
            (":authority", authority),
            (":scheme", scheme.to_owned()),
        ],
        headers: std::mem::take(&mut parts.headers),
    };
    let eos = body.is_end_stream();
    let mut answer = None;
    for ctx in &mut contexts {
        if let Verdict::Respond(local) = ctx.on_request_headers(&mut head, eos) {
            answer = Some(local);
            break;
        }
    }
    apply_request_head(parts, head);
    if let Some(local) = answer {
        return Err(local_response(local));
    }
    if eos || !contexts.iter().any(HttpContext::active) {
        let body = if eos { RequestBody::Empty } else { RequestBody::from(body) };
        return Ok((Chain { contexts }, body));
    }
    let limit = contexts.iter().map(HttpContext::body_limit).min().unwrap_or(0);
    if body.size_hint().lower() > limit as u64 {
        return Err(status_response(StatusCode::PAYLOAD_TOO_LARGE));
    }
    #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
    let mut bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => return Err(status_response(StatusCode::PAYLOAD_TOO_LARGE)),
    };
    for ctx in &mut contexts {
        if let Verdict::Respond(local) = ctx.on_request_body(&mut bytes, true) {
            return Err(local_response(local));
        }
    }
    if let Ok(len) = HeaderValue::try_from(bytes.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, len);
        parts.headers.remove(header::TRANSFER_ENCODING);
    }
    Ok((Chain { contexts }, RequestBody::Buffered(Some(Bytes::from(bytes)))))
}

/// Writes the guest's view of the request head back: headers, method, path, authority.
fn apply_request_head(parts: &mut request::Parts, mut head: Head) {
    parts.headers = std::mem::take(&mut head.headers);
    if let Some(m) = head.pseudo(":method").and_then(|m| Method::from_bytes(m.as_bytes()).ok()) {
        parts.method = m;
    }
    if let Some(path) = head.pseudo(":path")
        && parts.uri.path_and_query().map(|pq| pq.as_str()) != Some(path)
        && let Ok(uri) = path.parse::<Uri>()
    {
        parts.uri = uri;
    }
    if let Some(a) = head.pseudo(":authority").filter(|a| !a.is_empty())
        && let Ok(v) = HeaderValue::from_str(a)
    {
        parts.headers.insert(header::HOST, v);
    }
}

impl Chain {
    /// Runs the response phase (last plugin first); `Err` is the response to send instead.
    pub(crate) async fn response(
        mut self,
        parts: &mut response::Parts,
        body: UpstreamBody,
    ) -> Result<ProxyBody, Response<ProxyBody>> {
        if !self.contexts.iter().any(HttpContext::active) {
            return Ok(ProxyBody::Upstream(body));
        }
        let mut head = Head {
            pseudo: vec![(":status", parts.status.as_str().to_owned())],
            headers: std::mem::take(&mut parts.headers),
        };
        let eos = body.is_end_stream();
        let mut answer = None;
        for ctx in self.contexts.iter_mut().rev() {
            if let Verdict::Respond(local) = ctx.on_response_headers(&mut head, eos) {
                answer = Some(local);
                break;
            }
        }
        parts.headers = std::mem::take(&mut head.headers);
        if let Some(s) = head.pseudo(":status").and_then(|s| s.parse::<u16>().ok()) {
            parts.status = StatusCode::from_u16(s).unwrap_or(parts.status);
        }
        if let Some(local) = answer {
            return Err(local_response(local));
        }
        let limit = self.contexts.iter().map(HttpContext::body_limit).min().unwrap_or(0);
        let hint = body.size_hint();
        if eos || !self.contexts.iter().any(HttpContext::active) || hint.lower() > limit as u64 {
            return Ok(ProxyBody::Upstream(body));
        }
        #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
        let mut bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(_) => return Err(status_response(StatusCode::BAD_GATEWAY)),
        };
        for ctx in self.contexts.iter_mut().rev() {
            if let Verdict::Respond(local) = ctx.on_response_body(&mut bytes, true) {
                return Err(local_response(local));
            }
        }
        if let Ok(len) = HeaderValue::try_from(bytes.len().to_string()) {
            parts.headers.insert(header::CONTENT_LENGTH, len);
            parts.headers.remove(header::TRANSFER_ENCODING);
        }
        Ok(full(bytes))
    }
}

fn status_response(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = status;
    resp
}

/// A plugin's local response; headers that are not valid HTTP are left out.
fn local_response(local: LocalResponse) -> Response<ProxyBody> {
    let mut resp = Response::new(full(local.body));
    *resp.status_mut() =
        StatusCode::from_u16(local.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers: &mut HeaderMap = resp.headers_mut();
    for (name, value) in local.headers {
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value))
        {
            headers.append(n, v);
        }
    }
    if !local.details.is_empty() {
        tracing::debug!(status = local.status, details = %local.details, "wasm local response");
    }
    resp
}
