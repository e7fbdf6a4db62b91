//! `misbehave` (tests only): fails on request, to prove the host's limits.
//!
//! The mode comes from the `x-misbehave` request header, else from the configuration
//! `{"mode": "..."}`: `trap` (panics), `loop` (never returns), `oom` (allocates until the
//! memory cap), `unimplemented` (calls a host function the host does not implement and reports
//! the status it got in the `x-unimplemented-status` response header), `call-on-log` (calls
//! the upstream `srv` from `proxy_on_log`, when nothing can wait for the answer, and keeps the
//! outcome for `x-root-dispatch` of the instance's later responses), `none`.
//!
//! Its root context can call out too, with `{"root_call": {"upstream": "srv", "from": "tick"}}`
//! (`GET /root-call` every 20 ms tick, one at a time) or `"from": "configure"` (once, from
//! `proxy_on_configure`); `"trap": true` panics in the root's `proxy_on_http_call_response`;
//! `"tick": "loop"` never returns from `proxy_on_tick`. Every response then carries what this
//! instance's root got: `x-root-id` (the instance), `x-root-answers` (how many answers),
//! `x-root-answer` (the last: `:status`, the `x-list` header and the body, or `failed`) and
//! `x-root-dispatch` (the last dispatch's outcome).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: String,
    root_call: Option<RootCall>,
    #[serde(default)]
    tick: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RootCall {
    upstream: String,
    from: String,
    #[serde(default)]
    trap: bool,
}

/// What the root context saw, shown on every response.
#[derive(Default)]
struct Seen {
    id: String,
    answers: u32,
    last: String,
    dispatch: String,
}

#[derive(Default)]
struct Root {
    mode: String,
    call: Option<RootCall>,
    tick: String,
    in_flight: Option<u32>,
    seen: Rc<RefCell<Seen>>,
}

impl Root {
    fn dispatch(&mut self) {
        let Some(call) = &self.call else { return };
        if self.in_flight.is_some() {
            return;
        }
        let headers = vec![(":method", "GET"), (":path", "/root-call"), (":authority", "srv")];
        let r =
            self.dispatch_http_call(&call.upstream, headers, None, vec![], Duration::from_secs(2));
        self.seen.borrow_mut().dispatch = match r {
            Ok(token) => {
                self.in_flight = Some(token);
                "ok".into()
            }
            Err(status) => format!("{status:?}"),
        };
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, _trailers: usize) {
        if self.call.as_ref().is_some_and(|c| c.trap) {
            panic!("misbehave: asked to trap on the root's answer");
        }
        if self.in_flight == Some(token) {
            self.in_flight = None;
        }
        let last = if headers == 0 {
            "failed".to_string()
        } else {
            let status = self.get_http_call_response_header(":status").unwrap_or_default();
            let list = self.get_http_call_response_header("x-list").unwrap_or_default();
            let body = self.get_http_call_response_body(0, body).unwrap_or_default();
            let body = String::from_utf8_lossy(&body).replace(|c: char| c.is_control(), " ");
            format!("{status} {list} {body}")
        };
        let mut seen = self.seen.borrow_mut();
        seen.answers += 1;
        seen.last = last;
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        if !raw.is_empty() {
            match serde_json::from_slice::<Config>(&raw) {
                Ok(c) => {
                    self.mode = c.mode;
                    self.call = c.root_call;
                    self.tick = c.tick;
                }
                Err(_) => return false,
            }
        }
        let now = self.get_current_time().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.seen.borrow_mut().id = now.as_nanos().to_string();
        if !self.tick.is_empty() || self.call.as_ref().is_some_and(|c| c.from == "tick") {
            self.set_tick_period(Duration::from_millis(20));
        }
        if self.call.as_ref().is_some_and(|c| c.from == "configure") {
            self.dispatch();
        }
        true
    }

    fn on_tick(&mut self) {
        if self.tick == "loop" {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if self.call.as_ref().is_some_and(|c| c.from == "tick") {
            self.dispatch();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter {
            mode: self.mode.clone(),
            unimplemented_status: None,
            seen: self.seen.clone(),
            show_seen: self.call.is_some(),
        }))
    }
}

struct Filter {
    mode: String,
    unimplemented_status: Option<u32>,
    seen: Rc<RefCell<Seen>>,
    /// The root calls out: every response shows what it saw.
    show_seen: bool,
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
        self.mode = mode.clone();
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
        let seen = self.seen.borrow();
        if self.show_seen || !seen.dispatch.is_empty() {
            self.set_http_response_header("x-root-id", Some(&seen.id));
            self.set_http_response_header("x-root-answers", Some(&seen.answers.to_string()));
            self.set_http_response_header("x-root-answer", Some(&seen.last));
            self.set_http_response_header("x-root-dispatch", Some(&seen.dispatch));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.mode == "call-on-log" {
            let headers = vec![(":method", "GET"), (":path", "/on-log"), (":authority", "srv")];
            let r = self.dispatch_http_call("srv", headers, None, vec![], Duration::from_secs(2));
            self.seen.borrow_mut().dispatch = match r {
                Ok(_) => "on_log: ok".into(),
                Err(status) => format!("on_log: {status:?}"),
            };
        }
    }
}
