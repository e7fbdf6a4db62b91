//! HTTP stream control: `proxy_send_local_response`, `proxy_continue_stream` (and the 0.2.0
//! `proxy_continue_request`/`proxy_continue_response`), `proxy_set_effective_context`,
//! `proxy_done`. `proxy_http_call` is in [`super::http_call`]; gRPC calls are not implemented
//! (UNIMPLEMENTED).

use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, headers, memory, stream_type};
use crate::state::{HostState, LocalResponse};

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_send_local_response", send_local_response)?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: Caller<'_, HostState>, stream: u32| match stream {
            stream_type::REQUEST | stream_type::RESPONSE => answer(mark_continued(&mut c)),
            _ => answer(Err(Status::BadArgument)),
        },
    )?;
    linker.func_wrap("env", "proxy_continue_request", |mut c: Caller<'_, HostState>| {
        answer(mark_continued(&mut c))
    })?;
    linker.func_wrap("env", "proxy_continue_response", |mut c: Caller<'_, HostState>| {
        answer(mark_continued(&mut c))
    })?;
    // One HTTP context runs at a time per instance, so the effective context is always the
    // one being called back; accepting the call keeps SDKs that switch contexts working.
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |_c: Caller<'_, HostState>, _id: u32| answer(Ok(())),
    )?;
    linker.func_wrap("env", "proxy_done", |_c: Caller<'_, HostState>| answer(Ok(())))?;
    Ok(())
}

fn mark_continued(caller: &mut Caller<'_, HostState>) -> Result<(), Status> {
    let http = caller.data_mut().http.as_mut().ok_or(Status::NotFound)?;
    http.continued = true;
    Ok(())
}

/// Largest local response body or header block we accept.
const MAX_LOCAL: u32 = 1 << 20;

#[allow(clippy::too_many_arguments)] // the ABI's signature
fn send_local_response(
    mut caller: Caller<'_, HostState>,
    status: u32,
    details_ptr: u32,
    details_len: u32,
    body_ptr: u32,
    body_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    _grpc_status: i32,
) -> Answer {
    if body_len > MAX_LOCAL || headers_len > MAX_LOCAL || details_len > MAX_LOCAL {
        return answer(Err(Status::BadArgument));
    }
    let Ok(status) = u16::try_from(status) else { return answer(Err(Status::BadArgument)) };
    if !(200..=599).contains(&status) {
        return answer(Err(Status::BadArgument));
    }
    let read = |c: &mut Caller<'_, HostState>, p, l| memory::read(c, p, l).map_err(Status::from);
    let parts = read(&mut caller, details_ptr, details_len).and_then(|d| {
        Ok((
            d,
            read(&mut caller, body_ptr, body_len)?,
            read(&mut caller, headers_ptr, headers_len)?,
        ))
    });
    let (details, body, raw_headers) = match parts {
        Ok(p) => p,
        Err(s) => return answer(Err(s)),
    };
    let headers = match headers::parse(&raw_headers) {
        Ok(pairs) => pairs
            .into_iter()
            .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec()))
            .collect(),
        Err(s) => return answer(Err(s)),
    };
    let Some(http) = caller.data_mut().http.as_mut() else { return answer(Err(Status::NotFound)) };
    http.local_response = Some(LocalResponse {
        status,
        headers,
        body,
        details: String::from_utf8_lossy(&details).into_owned(),
    });
    answer(Ok(()))
}
