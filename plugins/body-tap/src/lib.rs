//! `body-tap` (tests only): shows how the host streams bodies through a plugin.
//!
//! The mode comes from the `x-body-tap` request header:
//! - `tag`: every non-empty request and response body chunk is passed on as `[<len>]<chunk>`,
//!   so the peer sees one tag per body callback;
//! - `hold`: every request body chunk is held (`Action::Pause`) until the end of the stream,
//!   then the whole body is passed on in upper case;
//! - `refuse`: the first request body chunk is answered with a local 403 response.
//!
//! `tag` and `hold` change body lengths, so they drop `Content-Length` in the header callbacks.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Tap { mode: String::new() }))
    }
}

struct Tap {
    mode: String,
}

impl Context for Tap {}

impl HttpContext for Tap {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        self.mode = self.get_http_request_header("x-body-tap").unwrap_or_default();
        if self.mode == "tag" || self.mode == "hold" {
            self.set_http_request_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        match self.mode.as_str() {
            "tag" if size > 0 => {
                let chunk = self.get_http_request_body(0, size).unwrap_or_default();
                self.set_http_request_body(0, size, &tagged(&chunk));
                Action::Continue
            }
            "hold" if !end_of_stream => Action::Pause,
            "hold" => {
                let body = self.get_http_request_body(0, size).unwrap_or_default();
                self.set_http_request_body(0, size, &body.to_ascii_uppercase());
                Action::Continue
            }
            "refuse" => {
                self.send_http_response(
                    403,
                    vec![("x-body-tap", "refused")],
                    Some(b"refused by body-tap"),
                );
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if self.mode == "tag" {
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, _end_of_stream: bool) -> Action {
        if self.mode == "tag" && size > 0 {
            let chunk = self.get_http_response_body(0, size).unwrap_or_default();
            self.set_http_response_body(0, size, &tagged(&chunk));
        }
        Action::Continue
    }
}

fn tagged(chunk: &[u8]) -> Vec<u8> {
    let mut out = format!("[{}]", chunk.len()).into_bytes();
    out.extend_from_slice(chunk);
    out
}
