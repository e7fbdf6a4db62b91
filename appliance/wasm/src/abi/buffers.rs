//! Buffers: request/response bodies (buffered by the host up to the plugin's cap), an HTTP
//! call's answer body (in an HTTP context's or the root context's callback), and the VM and
//! plugin configuration handed to `proxy_on_vm_start`/`proxy_on_configure`.

use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, buffer_type, memory};
use crate::state::HostState;

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_buffer_bytes", get_bytes)?;
    linker.func_wrap("env", "proxy_set_buffer_bytes", set_bytes)?;
    Ok(())
}

fn read_only(state: &HostState, buffer: u32) -> Result<&[u8], Status> {
    match buffer {
        buffer_type::VM_CONFIGURATION => Ok(&state.plugin.vm_config),
        buffer_type::PLUGIN_CONFIGURATION => Ok(&state.plugin.config),
        buffer_type::REQUEST_BODY | buffer_type::RESPONSE_BODY => {
            let http = state.http.as_ref().ok_or(Status::NotFound)?;
            Ok(if buffer == buffer_type::REQUEST_BODY {
                &http.request_body[..]
            } else {
                &http.response_body[..]
            })
        }
        buffer_type::HTTP_CALL_RESPONSE_BODY => {
            // An HTTP context's answer, or (no HTTP context running) the root context's.
            let response = match state.http.as_ref() {
                Some(http) => http.call_response.as_ref(),
                None => state.root.response.as_ref(),
            };
            Ok(&response.ok_or(Status::NotFound)?.body)
        }
        _ => Err(Status::BadArgument),
    }
}

fn get_bytes(
    mut caller: Caller<'_, HostState>,
    buffer: u32,
    start: u32,
    max: u32,
    ret_ptr: u32,
    ret_len: u32,
) -> Answer {
    let slice = match read_only(caller.data(), buffer) {
        Ok(all) => {
            let from = (start as usize).min(all.len());
            let to = from.saturating_add(max as usize).min(all.len());
            all[from..to].to_vec()
        }
        Err(s) => return answer(Err(s)),
    };
    answer(memory::hand_over(&mut caller, &slice, ret_ptr, ret_len)?)
}

/// Replaces `size` bytes at `start` of a body with the guest's data (`start` 0 and `size` ≥ the
/// body length replaces the whole body; `start` at the end appends).
fn set_bytes(
    mut caller: Caller<'_, HostState>,
    buffer: u32,
    start: u32,
    size: u32,
    ptr: u32,
    len: u32,
) -> Answer {
    let cap = caller.data().plugin.body_limit;
    if len as usize > cap {
        return answer(Err(Status::BadArgument));
    }
    let data = match memory::read(&mut caller, ptr, len) {
        Ok(d) => d,
        Err(e) => return answer(Err(e.into())),
    };
    let Some(http) = caller.data_mut().http.as_mut() else { return answer(Err(Status::NotFound)) };
    let body = match buffer {
        buffer_type::REQUEST_BODY => &mut http.request_body,
        buffer_type::RESPONSE_BODY => &mut http.response_body,
        _ => return answer(Err(Status::BadArgument)),
    };
    let from = (start as usize).min(body.len());
    let to = from.saturating_add(size as usize).min(body.len());
    if body.len() - (to - from) + data.len() > cap {
        return answer(Err(Status::BadArgument));
    }
    // Bodies are shared with the proxy (no copy on the way in); an edit builds a new one.
    let mut edited = Vec::with_capacity(body.len() - (to - from) + data.len());
    edited.extend_from_slice(&body[..from]);
    edited.extend_from_slice(&data);
    edited.extend_from_slice(&body[to..]);
    *body = edited.into();
    answer(Ok(()))
}
