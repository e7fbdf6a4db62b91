//! Why a plugin could not be prepared.

/// A plugin that cannot serve: its module, its imports, or its start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    #[error("reading module {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("module {what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("module {what} has sha256 {actual}, expected {expected}")]
    Digest { what: String, expected: String, actual: String },
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("compiling module: {0}")]
    Compile(String),
    #[error("module import {0}")]
    Import(String),
    #[error("not a proxy-wasm module: {0}")]
    Abi(String),
    #[error("instantiating module: {0}")]
    Instantiate(String),
    #[error("plugin start-up: {0}")]
    Start(String),
    #[error("upstream {upstream:?}: {message}")]
    Upstream { upstream: String, message: String },
    #[error("wasm engine: {0}")]
    Engine(String),
}
