//! The WASM filter host: runs proxy-wasm (ABI 0.2.1 and 0.2.0) HTTP filters in wasmtime.
//!
//! Place in the data flow: `model::Desired::wasm_plugins` → [`Host::prepare`] (read or fetch,
//! verify, compile once with an on-disk cache, start an instance and configure it) → the
//! prepared [`Plugins`] go into the proxy's route table in the same swap as the routes that use
//! them → per request the proxy opens an [`HttpContext`] and calls it at each phase. A module
//! that fails to prepare fails the reload; the previous generation keeps serving. Off the
//! request path, the host's ticker thread drives every instance's root context: its
//! `proxy_on_tick`s and the answers to the HTTP calls it dispatched, which run on the async
//! runtime [`Host::prepare`] was called on.
//!
//! Isolation: one Store per instance, a memory cap per instance, an epoch deadline per
//! callback. A trap, a timeout or a memory blow-up ends that request per the plugin's
//! failure policy (closed → 500, open → the filter is skipped), counts in
//! `gatehouse_wasm_failures_total`, and the instance is replaced.
//!
//! This crate allows `unsafe` in exactly one place: `Module::deserialize` of the compiled-module
//! cache, which wasmtime marks unsafe because it loads machine code (see `cache.rs`).

mod abi;
mod cache;
mod calls;
mod error;
mod host;
mod instance;
mod limits;
mod metrics;
mod plugin;
mod recent;
mod source;
mod state;

pub use abi::Status;
pub use abi::headers::{parse as parse_header_map, serialize as serialize_header_map};
pub use cache::{CacheOutcome, sha256_hex};
pub use error::WasmError;
pub use host::{Host, HostOptions, Plugins};
pub use instance::{Failure, FailureKind};
pub use metrics::HostMetrics;
pub use plugin::{HttpContext, Plugin, Verdict};
pub use state::{Head, LocalResponse, RequestInfo, shared_str};
