//! Guest memory: bounds-checked reads and writes, and handing buffers to the guest through its
//! allocator (`proxy_on_memory_allocate`, or `malloc` in ABI 0.2.0).

use wasmtime::Caller;

use crate::abi::Status;
use crate::state::HostState;

/// A guest pointer or length that does not fit its memory.
#[derive(Debug, thiserror::Error)]
#[error("guest memory access out of bounds")]
pub(crate) struct MemoryError;

/// Copies `len` bytes at `ptr` out of the guest.
pub(crate) fn read(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> Result<Vec<u8>, MemoryError> {
    let memory = caller.data().memory.ok_or(MemoryError)?;
    let data = memory.data(&*caller);
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(MemoryError)?;
    data.get(start..end).map(<[u8]>::to_vec).ok_or(MemoryError)
}

/// Reads a UTF-8 string (names, keys, paths); invalid UTF-8 is a bad argument.
pub(crate) fn read_str(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    len: u32,
) -> Result<String, Status> {
    let bytes = read(caller, ptr, len)?;
    String::from_utf8(bytes).map_err(|_| Status::BadArgument)
}

/// Writes `bytes` at `ptr`.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    bytes: &[u8],
) -> Result<(), MemoryError> {
    let memory = caller.data().memory.ok_or(MemoryError)?;
    let data = memory.data_mut(&mut *caller);
    let start = ptr as usize;
    let end = start.checked_add(bytes.len()).ok_or(MemoryError)?;
    data.get_mut(start..end).ok_or(MemoryError)?.copy_from_slice(bytes);
    Ok(())
}

pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u32,
) -> Result<(), MemoryError> {
    write(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: u32,
    value: u64,
) -> Result<(), MemoryError> {
    write(caller, ptr, &value.to_le_bytes())
}

/// The guest's memory and the Store's state at once, so a host function can work on guest
/// bytes in place instead of copying them out first.
pub(crate) fn split<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Result<(&'a [u8], &'a mut HostState), MemoryError> {
    let memory = caller.data().memory.ok_or(MemoryError)?;
    let (data, state) = memory.data_and_store_mut(caller);
    Ok((data, state))
}

/// The `len` bytes at `ptr` of `data` (guest memory from [`split`]).
pub(crate) fn slice(data: &[u8], ptr: u32, len: u32) -> Result<&[u8], MemoryError> {
    let start = ptr as usize;
    let end = start.checked_add(len as usize).ok_or(MemoryError)?;
    data.get(start..end).ok_or(MemoryError)
}

/// Hands `bytes` to the guest: allocates with the guest's allocator, copies, and stores the
/// pointer and length at `ret_ptr`/`ret_len`. An empty value is returned as (0, 0) without an
/// allocation. A trap inside the guest's allocator is the guest's failure and propagates.
pub(crate) fn hand_over(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ret_ptr: u32,
    ret_len: u32,
) -> wasmtime::Result<Result<(), Status>> {
    hand_over_with(caller, bytes.len(), ret_ptr, ret_len, |dst, _| {
        dst.copy_from_slice(bytes);
        Ok(())
    })
}

/// As [`hand_over`] for a value of `len` bytes that `fill` writes straight into the guest's
/// allocation (no host-side buffer). `fill` gets exactly `len` bytes and the Store's state.
pub(crate) fn hand_over_with(
    caller: &mut Caller<'_, HostState>,
    len: usize,
    ret_ptr: u32,
    ret_len: u32,
    fill: impl FnOnce(&mut [u8], &mut HostState) -> Result<(), Status>,
) -> wasmtime::Result<Result<(), Status>> {
    let Ok(len) = u32::try_from(len) else { return Ok(Err(Status::InternalFailure)) };
    // Check the return slots first, so a bad pointer never leaks a guest allocation.
    if let Err(e) = write_u32(caller, ret_ptr, 0).and_then(|()| write_u32(caller, ret_len, 0)) {
        return Ok(Err(e.into()));
    }
    if len == 0 {
        return Ok(Ok(()));
    }
    let Some(alloc) = caller.data().alloc.clone() else { return Ok(Err(Status::InternalFailure)) };
    let ptr = alloc.call(&mut *caller, len)?;
    if ptr == 0 {
        return Ok(Err(Status::InternalFailure));
    }
    let Some(memory) = caller.data().memory else { return Ok(Err(Status::InternalFailure)) };
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    let start = ptr as usize;
    let Some(dst) = start.checked_add(len as usize).and_then(|end| data.get_mut(start..end)) else {
        return Ok(Err(Status::InvalidMemoryAccess));
    };
    if let Err(s) = fill(dst, state) {
        return Ok(Err(s));
    }
    let r = write_u32(caller, ret_ptr, ptr).and_then(|()| write_u32(caller, ret_len, len));
    Ok(r.map_err(Status::from))
}
