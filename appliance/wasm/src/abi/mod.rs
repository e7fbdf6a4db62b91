//! The proxy-wasm ABI 0.2.1 (and 0.2.0) host side, one module per section of the spec.
//!
//! Every host function checks its guest pointers and lengths and answers a [`Status`]; nothing
//! a guest passes makes the host trap or panic. Functions we do not implement answer
//! `UNIMPLEMENTED` (see [`unimplemented`]).

pub(crate) mod buffers;
pub(crate) mod headers;
pub(crate) mod http;
pub(crate) mod http_call;
pub(crate) mod logging;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod properties;
pub(crate) mod shared_data;
pub(crate) mod timers;
pub(crate) mod unimplemented;
pub(crate) mod wasi;

use wasmtime::Linker;

use crate::state::HostState;

/// `WasmResult` of the spec, as the guest sees it (the subset we answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    InvalidMemoryAccess = 6,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

impl Status {
    /// The number the guest receives.
    pub fn code(self) -> u32 {
        self as u32
    }
}

impl From<memory::MemoryError> for Status {
    fn from(_: memory::MemoryError) -> Self {
        Status::InvalidMemoryAccess
    }
}

/// What a host function answers: a status code, or a trap only for host-side bugs that cannot
/// happen (there are none today; every path answers a status).
pub(crate) type Answer = wasmtime::Result<u32>;

/// Folds a `Result<(), Status>` into the status code the guest receives.
pub(crate) fn answer(r: Result<(), Status>) -> Answer {
    Ok(match r {
        Ok(()) => Status::Ok.code(),
        Err(s) => s.code(),
    })
}

/// `proxy_action_t` PAUSE (CONTINUE is 0): the stream waits for `proxy_continue_stream`.
pub(crate) const ACTION_PAUSE: u32 = 1;

/// Header map types (`proxy_map_type_t`).
pub(crate) mod map_type {
    pub const REQUEST_HEADERS: u32 = 0;
    pub const REQUEST_TRAILERS: u32 = 1;
    pub const RESPONSE_HEADERS: u32 = 2;
    pub const RESPONSE_TRAILERS: u32 = 3;
    pub const HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
    pub const HTTP_CALL_RESPONSE_TRAILERS: u32 = 7;
}

/// Buffer types (`proxy_buffer_type_t`).
pub(crate) mod buffer_type {
    pub const REQUEST_BODY: u32 = 0;
    pub const RESPONSE_BODY: u32 = 1;
    pub const HTTP_CALL_RESPONSE_BODY: u32 = 4;
    pub const VM_CONFIGURATION: u32 = 6;
    pub const PLUGIN_CONFIGURATION: u32 = 7;
}

/// Stream types (`proxy_stream_type_t`).
pub(crate) mod stream_type {
    pub const REQUEST: u32 = 0;
    pub const RESPONSE: u32 = 1;
}

/// Registers every host function we implement; returns their names so that the rest of a
/// module's imports can be answered with `UNIMPLEMENTED`.
pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    logging::link(linker)?;
    timers::link(linker)?;
    buffers::link(linker)?;
    headers::link(linker)?;
    properties::link(linker)?;
    shared_data::link(linker)?;
    http::link(linker)?;
    http_call::link(linker)?;
    metrics::link(linker)?;
    wasi::link(linker)?;
    Ok(())
}
