//! HTTP calls: `proxy_http_call` to one of the plugin's named upstreams. The call is only
//! queued here (the guest gets its token at once). A call from an HTTP context is run by the
//! proxy while the stream stays paused; one from the root context (ticks, start-up, its own
//! answers) by the host on the async runtime. Either way the answer comes back through
//! `proxy_on_http_call_response` (see `crate::calls` and `crate::plugin`). The answer's headers, body and trailers are read with the
//! `HTTP_CALL_RESPONSE_*` header maps and buffer.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, headers, memory};
use crate::calls::PendingCall;
use crate::state::HostState;

/// Calls one request may have queued or running at once.
pub(crate) const MAX_CALLS_PER_REQUEST: usize = 8;

/// Calls one instance's root context may have queued or running at once.
pub(crate) const MAX_CALLS_PER_ROOT: usize = 8;

/// Longest timeout a guest may ask for (0 asks for this too).
pub(crate) const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_http_call", http_call)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // the ABI's signature
fn http_call(
    mut caller: Caller<'_, HostState>,
    upstream_ptr: u32,
    upstream_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    body_ptr: u32,
    body_len: u32,
    _trailers_ptr: u32,
    _trailers_len: u32,
    timeout_ms: u32,
    token_ptr: u32,
) -> Answer {
    answer(dispatch(
        &mut caller,
        (upstream_ptr, upstream_len),
        (headers_ptr, headers_len),
        (body_ptr, body_len),
        timeout_ms,
        token_ptr,
    ))
}

/// Checks and queues one call. An unknown upstream or a malformed request is `BadArgument`;
/// a call outside a callback that can wait for it, or past the per-request (per-root) bound,
/// is `InternalFailure` (what the SDKs expect from a host that cannot take the call).
fn dispatch(
    caller: &mut Caller<'_, HostState>,
    upstream: (u32, u32),
    head: (u32, u32),
    body: (u32, u32),
    timeout_ms: u32,
    token_ptr: u32,
) -> Result<(), Status> {
    let limit = caller.data().plugin.body_limit;
    if head.1 as usize > limit || body.1 as usize > limit {
        return Err(Status::BadArgument);
    }
    let name = memory::read_str(caller, upstream.0, upstream.1)?;
    let raw_head = memory::read(caller, head.0, head.1)?;
    let body = memory::read(caller, body.0, body.1)?;
    let target = caller.data().plugin.upstreams.get(&name).cloned().ok_or_else(|| {
        tracing::debug!(target: "wasm", plugin = %caller.data().plugin.name, upstream = %name, "http call to an unknown upstream");
        Status::BadArgument
    })?;
    let (method, path, authority, headers) = request_head(&raw_head)?;
    let timeout = match timeout_ms {
        0 => MAX_CALL_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)).min(MAX_CALL_TIMEOUT),
    };
    // An HTTP context's callback queues into its request; a root callback into the root's.
    let state = caller.data();
    let room = match state.http.as_ref() {
        Some(http) => {
            http.calls_allowed && http.calls.len() + http.calls_in_flight < MAX_CALLS_PER_REQUEST
        }
        None => {
            let root = &state.root;
            root.allowed && root.queued.len() + root.in_flight < MAX_CALLS_PER_ROOT
        }
    };
    if !room {
        return Err(Status::InternalFailure);
    }
    let token = state.next_call_token;
    // The token first: a call is queued only once the guest has its token.
    memory::write_u32(caller, token_ptr, token)?;
    let state = caller.data_mut();
    // Tokens are unique per instance: SDKs map them to contexts instance-wide.
    state.next_call_token = token.wrapping_add(1).max(1);
    let call = PendingCall {
        token,
        upstream: name,
        target,
        method,
        path,
        authority,
        headers,
        body: Bytes::from(body),
        timeout,
    };
    match state.http.as_mut() {
        Some(http) => http.calls.push(call),
        None => state.root.queued.push(call),
    }
    Ok(())
}

/// `:method`, `:path`, `:authority` and the other headers of a call; the first two are
/// required, as in Envoy.
fn request_head(raw: &[u8]) -> Result<(Method, String, String, HeaderMap), Status> {
    let (mut method, mut path, mut authority) = (None, None, String::new());
    let mut map = HeaderMap::new();
    for (n, v) in headers::parse(raw)? {
        let text = || std::str::from_utf8(v).map_err(|_| Status::BadArgument);
        match n {
            b":method" => method = Some(Method::from_bytes(v).map_err(|_| Status::BadArgument)?),
            b":path" => path = Some(text()?.to_owned()),
            b":authority" => authority = text()?.to_owned(),
            b":scheme" => {}
            _ if n.first() == Some(&b':') => return Err(Status::BadArgument),
            _ => {
                let name = HeaderName::from_bytes(n).map_err(|_| Status::BadArgument)?;
                let value = HeaderValue::from_bytes(v).map_err(|_| Status::BadArgument)?;
                map.append(name, value);
            }
        }
    }
    let path = path.filter(|p| p.starts_with('/')).ok_or(Status::BadArgument)?;
    Ok((method.ok_or(Status::BadArgument)?, path, authority, map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_head_needs_method_and_path() {
        let raw = headers::serialize([
            (&b":method"[..], &b"GET"[..]),
            (b":path", b"/bytes/1"),
            (b":authority", b"auth.example"),
            (b"x-a", b"1"),
        ]);
        let (m, p, a, h) = request_head(&raw).unwrap();
        assert_eq!((m, p.as_str(), a.as_str()), (Method::GET, "/bytes/1", "auth.example"));
        assert_eq!(h["x-a"], "1");
        let no_path = headers::serialize([(&b":method"[..], &b"GET"[..])]);
        assert_eq!(request_head(&no_path).unwrap_err(), Status::BadArgument);
        let odd = headers::serialize([
            (&b":method"[..], &b"GET"[..]),
            (b":path", b"/"),
            (b":status", b"200"),
        ]);
        assert_eq!(request_head(&odd).unwrap_err(), Status::BadArgument);
        assert_eq!(request_head(b"\x01\x00").unwrap_err(), Status::SerializationFailure);
    }
}
