//! Logging: `proxy_log` into our tracing (target `wasm`, field `plugin`), `proxy_get_log_level`.

use tracing::level_filters::LevelFilter;
use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, memory};
use crate::state::HostState;

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", proxy_log)?;
    linker.func_wrap("env", "proxy_get_log_level", proxy_get_log_level)?;
    Ok(())
}

/// Longest message we log; the rest is cut (a guest cannot make us log megabytes a line).
const MAX_MESSAGE: u32 = 4096;

fn proxy_log(mut caller: Caller<'_, HostState>, level: i32, ptr: u32, len: u32) -> Answer {
    let bytes = match memory::read(&mut caller, ptr, len.min(MAX_MESSAGE)) {
        Ok(b) => b,
        Err(e) => return answer(Err(e.into())),
    };
    let message = String::from_utf8_lossy(&bytes);
    let plugin = caller.data().plugin.name.as_str();
    match level {
        0 => tracing::trace!(target: "wasm", plugin, "{message}"),
        1 => tracing::debug!(target: "wasm", plugin, "{message}"),
        2 => tracing::info!(target: "wasm", plugin, "{message}"),
        3 => tracing::warn!(target: "wasm", plugin, "{message}"),
        4 | 5 => tracing::error!(target: "wasm", plugin, "{message}"),
        _ => return answer(Err(Status::BadArgument)),
    }
    answer(Ok(()))
}

/// The proxy-wasm level (trace 0 … critical 5) matching the most verbose level we record.
fn current_level() -> u32 {
    match LevelFilter::current() {
        LevelFilter::TRACE => 0,
        LevelFilter::DEBUG => 1,
        LevelFilter::INFO => 2,
        LevelFilter::WARN => 3,
        LevelFilter::ERROR => 4,
        _ => 5,
    }
}

fn proxy_get_log_level(mut caller: Caller<'_, HostState>, ret: u32) -> Answer {
    answer(memory::write_u32(&mut caller, ret, current_level()).map_err(Status::from))
}
