//! Clocks and timers: wall-clock time and the root context's tick period (`proxy_on_tick` is
//! driven by the plugin's ticker, see `crate::plugin`).

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use crate::abi::{Answer, Status, answer, memory};
use crate::state::HostState;

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, ret: u32| -> Answer {
            answer(memory::write_u64(&mut caller, ret, now_nanos()).map_err(Status::from))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: u32| -> Answer {
            caller.data_mut().tick_period_ms = period;
            answer(Ok(()))
        },
    )?;
    Ok(())
}

/// Nanoseconds since the Unix epoch (0 before it).
pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
