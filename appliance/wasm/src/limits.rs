//! Per-instance resource limits: memory (and table) growth beyond the plugin's cap is refused,
//! and remembered so that the resulting trap is reported as an out-of-memory failure.

use wasmtime::ResourceLimiter;

/// The limiter of one Store.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub memory_limit: usize,
    /// A growth was refused since the last reset.
    pub refused: bool,
}

/// Table elements one instance may have (function pointer tables of Rust guests are small).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.memory_limit;
        self.refused |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= MAX_TABLE_ELEMENTS;
        self.refused |= !ok;
        Ok(ok)
    }
}
