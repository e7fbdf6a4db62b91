//! Sending a prepared request to its backend: request mirrors, retries and the per-attempt
//! (backend) timeout.
//!
//! Retries and mirrors need the request body more than once. A body is replayable when the
//! request has none, when a WASM filter already buffered it, or when its declared length is
//! at most [`REPLAY_BODY_LIMIT`]; it is then read in full before the first attempt. A longer
//! or unannounced (chunked) body streams once: no retry, and mirrors get nothing (counted as
//! `skipped_body`).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;

use crate::error::RequestError;
use crate::mirror;
use crate::server::Shared;
use crate::table::{CompiledBackend, CompiledRule};
use crate::upstream::{self, Endpoint, RequestBody, UpstreamBody};

/// Largest request body kept in memory to retry or mirror the request.
pub(crate) const REPLAY_BODY_LIMIT: u64 = 64 * 1024;

/// Stands for "no bound" (the spec's `0s`); tokio saturates deadlines this far out.
const UNBOUNDED: Duration = Duration::from_secs(365 * 24 * 3600);

/// Sends `req` to `endpoint` of `backend`, mirroring and retrying as the rule says.
pub(crate) async fn send(
    shared: &Shared,
    rule: &CompiledRule,
    backend: &CompiledBackend,
    endpoint: Endpoint,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, RequestError> {
    let timeout = match rule.policy.backend_timeout {
        Some(d) if d.is_zero() => UNBOUNDED,
        Some(d) => d,
        None => shared.options.upstream_timeout,
    };
    let name = backend.target.name();
    let retry = rule.policy.retry.as_ref().filter(|r| r.attempts > 0);
    // No iterator over the mirrors lives across an `.await`: that would make the future
    // not provably `Send`.
    let mirrors = || rule.filters.mirrors.iter().chain(&backend.filters.mirrors);
    if retry.is_none() && mirrors().next().is_none() {
        return crate::h2c::send(shared, backend, endpoint.key, req, timeout, name).await;
    }
    let (parts, body) = req.into_parts();
    let bytes = match replayable(body).await? {
        Ok(bytes) => bytes,
        Err(body) => {
            for m in mirrors() {
                shared.metrics.mirrors.record(m.backend.target.name(), "skipped_body");
            }
            let req = Request::from_parts(parts, body);
            return crate::h2c::send(shared, backend, endpoint.key, req, timeout, name).await;
        }
    };
    for m in mirrors().filter(|m| m.draw()) {
        mirror::spawn(shared, m, &parts, bytes.clone(), timeout);
    }
    let Some(retry) = retry else {
        let req = mirror::copy(&parts, bytes);
        return crate::h2c::send(shared, backend, endpoint.key, req, timeout, name).await;
    };
    let mut endpoint = endpoint;
    let mut done = 0;
    loop {
        let req = mirror::copy(&parts, bytes.clone());
        let result = crate::h2c::send(shared, backend, endpoint.key, req, timeout, name).await;
        let Some(kind) = retryable(&retry.codes, &result) else { return result };
        if done >= retry.attempts {
            return result;
        }
        done += 1;
        shared.metrics.retry(name, kind);
        tracing::debug!(backend = name, kind, attempt = done, "retrying backend request");
        // The failed response (and its connection) is dropped before the pause.
        drop(result);
        tokio::time::sleep(retry.backoff).await;
        // The next endpoint of the backend, round-robin: a dead one is not hit twice in a row.
        endpoint = upstream::endpoint(backend)?;
    }
}

/// Why an attempt's outcome is retried, or `None` when it is final.
fn retryable(
    codes: &[u16],
    result: &Result<Response<UpstreamBody>, RequestError>,
) -> Option<&'static str> {
    match result {
        Ok(resp) => codes.binary_search(&resp.status().as_u16()).is_ok().then_some("status"),
        Err(RequestError::Connect { .. }) => Some("connect"),
        Err(RequestError::Timeout { .. }) => Some("timeout"),
        Err(RequestError::Upstream { .. }) => Some("protocol"),
        Err(_) => None,
    }
}

/// The whole body when it can be sent again (`Ok(Ok)`), or the body itself when it must
/// stream once (`Ok(Err)`).
async fn replayable(body: RequestBody) -> Result<Result<Option<Bytes>, RequestBody>, RequestError> {
    match body {
        RequestBody::Empty => Ok(Ok(None)),
        RequestBody::Buffered(bytes) => Ok(Ok(bytes)),
        RequestBody::Stream(s) if s.is_end_stream() => Ok(Ok(None)),
        // The plugins see each chunk once: streamed through them, it is sent once.
        filtered @ RequestBody::Filtered(_) => Ok(Err(filtered)),
        RequestBody::Stream(s) => {
            let declared = s.size_hint().exact();
            if declared.is_none_or(|n| n > REPLAY_BODY_LIMIT) {
                return Ok(Err(RequestBody::Stream(s)));
            }
            let limit = usize::try_from(REPLAY_BODY_LIMIT).unwrap_or(usize::MAX);
            #[allow(clippy::disallowed_methods, reason = "bounded by Limited")]
            let collected = Limited::new(s, limit).collect().await;
            let bytes = collected.map_err(|e| RequestError::RequestBody(e.to_string()))?;
            Ok(Ok(Some(bytes.to_bytes())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_codes_and_transport_failures_retry() {
        let resp = |status: u16| {
            let mut r = Response::new(());
            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            r
        };
        let codes = [500, 503];
        let status = |s| codes.binary_search(&resp(s).status().as_u16()).is_ok();
        assert!(status(503));
        assert!(!status(502));
        let timeout: Result<Response<UpstreamBody>, _> =
            Err(RequestError::Timeout { backend: "b".into() });
        assert_eq!(retryable(&codes, &timeout), Some("timeout"));
        let no_route: Result<Response<UpstreamBody>, _> = Err(RequestError::NoRoute);
        assert_eq!(retryable(&codes, &no_route), None);
    }
}
