//! The few WASI preview 1 functions a `wasm32-wasip1` guest's standard library calls: stdout and
//! stderr into our log, clocks, randomness, empty args and environment, no files. Every other
//! WASI import answers `ENOSYS` (see `super::unimplemented`).

use rand::RngCore;
use wasmtime::{Caller, Linker};

use crate::abi::{memory, timers};
use crate::state::HostState;

pub(crate) const MODULE: &str = "wasi_snapshot_preview1";

const ESUCCESS: u32 = 0;
const EBADF: u32 = 8;
const EFAULT: u32 = 21;
const EINVAL: u32 = 28;
/// `ENOSYS`: what unimplemented WASI functions answer.
pub(crate) const ENOSYS: u32 = 52;

type Errno = wasmtime::Result<u32>;

fn errno(r: Result<(), memory::MemoryError>) -> Errno {
    Ok(if r.is_ok() { ESUCCESS } else { EFAULT })
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "fd_write", fd_write)?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut c: Caller<'_, HostState>, ptr: u32, len: u32| -> Errno {
            if len > 1 << 16 {
                return Ok(EINVAL);
            }
            let mut buf = vec![0u8; len as usize];
            rand::rng().fill_bytes(&mut buf);
            errno(memory::write(&mut c, ptr, &buf))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: Caller<'_, HostState>, _id: u32, _precision: u64, ret: u32| -> Errno {
            errno(memory::write_u64(&mut c, ret, timers::now_nanos()))
        },
    )?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            MODULE,
            name,
            |mut c: Caller<'_, HostState>, count: u32, size: u32| -> Errno {
                errno(
                    memory::write_u32(&mut c, count, 0)
                        .and_then(|()| memory::write_u32(&mut c, size, 0)),
                )
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        linker.func_wrap(MODULE, name, |_c: Caller<'_, HostState>, _a: u32, _b: u32| -> Errno {
            Ok(ESUCCESS)
        })?;
    }
    // No preopened directories.
    linker.func_wrap(
        MODULE,
        "fd_prestat_get",
        |_c: Caller<'_, HostState>, _fd: u32, _ret: u32| -> Errno { Ok(EBADF) },
    )?;
    linker
        .func_wrap(MODULE, "sched_yield", |_c: Caller<'_, HostState>| -> Errno { Ok(ESUCCESS) })?;
    // The guest ending itself is the guest's failure: the instance traps and is recycled.
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_c: Caller<'_, HostState>, code: u32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg(format!("guest called proc_exit({code})")))
        },
    )?;
    Ok(())
}

/// Longest line we log from a guest's stdout/stderr.
const MAX_LINE: usize = 4096;

/// `fd_write` to stdout (1) or stderr (2) goes to the log at debug/warn; other fds are EBADF.
fn fd_write(mut c: Caller<'_, HostState>, fd: u32, iovs: u32, iovs_len: u32, ret: u32) -> Errno {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    if iovs_len > 1024 {
        return Ok(EINVAL);
    }
    let Ok(vecs) = memory::read(&mut c, iovs, iovs_len * 8) else { return Ok(EFAULT) };
    let mut text = Vec::new();
    let mut total: u32 = 0;
    for iov in vecs.chunks_exact(8) {
        let ptr = u32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let keep = (MAX_LINE.saturating_sub(text.len()) as u32).min(len);
        let Ok(bytes) = memory::read(&mut c, ptr, keep) else { return Ok(EFAULT) };
        text.extend_from_slice(&bytes);
        total = total.saturating_add(len);
    }
    let text = String::from_utf8_lossy(&text);
    let text = text.trim_end();
    if !text.is_empty() {
        let plugin = c.data().plugin.name.as_str();
        if fd == 2 {
            tracing::warn!(target: "wasm", plugin, "stderr: {text}");
        } else {
            tracing::debug!(target: "wasm", plugin, "stdout: {text}");
        }
    }
    errno(memory::write_u32(&mut c, ret, total))
}
