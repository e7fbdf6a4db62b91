//! `misbehave` (tests only): fails on request, to prove the host's limits.
//!
//! The mode comes from the `x-misbehave` request header, else from the configuration
//! `{"mode": "..."}`: `trap` (panics), `loop` (never returns), `oom` (allocates until the
//! memory cap), `unimplemented` (calls a host function the host does not implement and reports
//! the status it got in the `x-unimplemented-status` response header), `none`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { mode: String::new() }) });
}}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    mode: String,
}

struct Root {
    mode: String,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        if !raw.is_empty() {
            match serde_json::from_slice::<Config>(&raw) {
                Ok(c) => self.mode = c.mode,
                Err(_) => return false,
            }
        }
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter { mode: self.mode.clone(), unimplemented_status: None }))
    }
}

struct Filter {
    mode: String,
    unimplemented_status: Option<u32>,
}

impl Context for Filter {}

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    /// Shared queues are part of the ABI; the host answers UNIMPLEMENTED.
    fn proxy_register_shared_queue(
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
}

impl HttpContext for Filter {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let mode = self.get_http_request_header("x-misbehave").unwrap_or_else(|| self.mode.clone());
        match mode.as_str() {
            "trap" => panic!("misbehave: asked to trap"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            "unimplemented" => {
                let name = b"q";
                let mut id = 0u32;
                // SAFETY: pointers to live locals of the sizes given.
                let status =
                    unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) };
                self.unimplemented_status = Some(status);
            }
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if let Some(status) = self.unimplemented_status {
            self.set_http_response_header("x-unimplemented-status", Some(&status.to_string()));
        }
        Action::Continue
    }
}
