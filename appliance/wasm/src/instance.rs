//! One instance of a plugin: its Store, the guest's exported callbacks, and the calls into it
//! under the plugin's CPU deadline and memory cap.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{
    Engine, Instance as WasmInstance, InstancePre, Store, Trap, TypedFunc, WasmParams, WasmResults,
};

use crate::calls::{CallResponse, PendingCall};
use crate::error::WasmError;
use crate::plugin::PluginShared;
use crate::state::{HostState, HttpState, RequestInfo};

/// The root context's id in every instance.
pub(crate) const ROOT_CONTEXT: u32 = 1;

/// How a callback failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (panic, unreachable, bad memory access, proc_exit, …).
    Trap,
    /// The callback ran past the plugin's deadline.
    Timeout,
    /// The guest tried to grow its memory past the plugin's cap.
    Memory,
    /// The guest paused a stream with nothing that could resume it.
    Stalled,
    /// A new instance could not be started.
    Start,
    /// The request's context was lost with its instance (recycled after another failure).
    Lost,
}

impl FailureKind {
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Stalled => "stalled",
            FailureKind::Start => "start",
            FailureKind::Lost => "lost",
        }
    }
}

/// A failed callback, for logs and metrics.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// An optional export of the guest, if it has the expected type.
fn export<P: WasmParams, R: WasmResults>(
    instance: &WasmInstance,
    store: &mut Store<HostState>,
    name: &str,
) -> Option<TypedFunc<P, R>> {
    instance.get_typed_func(store, name).ok()
}

/// `proxy_on_request_headers`/`…response_headers`: 3 parameters in ABI 0.2.1, 2 in 0.2.0.
#[derive(Clone)]
enum HeadersFn {
    V021(TypedFunc<(u32, u32, u32), u32>),
    V020(TypedFunc<(u32, u32), u32>),
}

impl HeadersFn {
    fn find(instance: &WasmInstance, store: &mut Store<HostState>, name: &str) -> Option<Self> {
        if let Ok(f) = instance.get_typed_func(&mut *store, name) {
            return Some(HeadersFn::V021(f));
        }
        instance.get_typed_func(&mut *store, name).ok().map(HeadersFn::V020)
    }

    fn call(
        &self,
        store: &mut Store<HostState>,
        ctx: u32,
        count: u32,
        eos: bool,
    ) -> wasmtime::Result<u32> {
        match self {
            HeadersFn::V021(f) => f.call(store, (ctx, count, u32::from(eos))),
            HeadersFn::V020(f) => f.call(store, (ctx, count)),
        }
    }
}

/// `proxy_on_http_call_response(context, token, headers, body size, trailers)`.
type CallResponseFn = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The guest's exports we call.
#[derive(Clone)]
struct Callbacks {
    context_create: TypedFunc<(u32, u32), ()>,
    on_request_headers: Option<HeadersFn>,
    on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_response_headers: Option<HeadersFn>,
    on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_log: Option<TypedFunc<u32, ()>>,
    on_done: Option<TypedFunc<u32, u32>>,
    on_delete: Option<TypedFunc<u32, ()>>,
    on_tick: Option<TypedFunc<u32, ()>>,
    on_http_call_response: Option<CallResponseFn>,
}

/// Which stream callback to run.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Phase {
    RequestHeaders {
        count: u32,
        eos: bool,
    },
    RequestBody {
        size: u32,
        eos: bool,
    },
    ResponseHeaders {
        count: u32,
        eos: bool,
    },
    ResponseBody {
        size: u32,
        eos: bool,
    },
    /// `proxy_on_http_call_response` (the answer is in the state's `call_response`).
    HttpCallResponse {
        token: u32,
        headers: u32,
        body: u32,
        trailers: u32,
    },
}

impl Phase {
    /// Whether the proxy can wait in this phase for HTTP calls the guest dispatches.
    pub(crate) fn may_call(self) -> bool {
        matches!(self, Phase::RequestHeaders { .. } | Phase::HttpCallResponse { .. })
    }
}

/// A live instance of a plugin.
pub(crate) struct Instance {
    store: Store<HostState>,
    cb: Callbacks,
    next_context: u32,
    deadline_ticks: u64,
    /// Distinguishes this instance from the one it replaced, for contexts that outlive it.
    pub serial: u64,
    pub last_tick: Instant,
    /// Request states of ended contexts, reused by the next ones: the state is too large for
    /// the allocator's fast path, so a fresh one per request costs more than refilling one.
    #[allow(clippy::vec_box, reason = "the boxes move to and from contexts, the states stay put")]
    spare: Vec<Box<HttpState>>,
}

/// The most request states an instance keeps for reuse.
const SPARE_STATES: usize = 8;

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("serial", &self.serial).finish_non_exhaustive()
    }
}

impl Instance {
    /// Instantiates, runs the module's initialiser, creates the root context and calls
    /// `proxy_on_vm_start` and `proxy_on_configure`; either returning false fails the start.
    pub(crate) fn start(
        engine: &Engine,
        pre: &InstancePre<HostState>,
        plugin: Arc<PluginShared>,
        deadline_ticks: u64,
        serial: u64,
    ) -> Result<Self, WasmError> {
        let state = HostState::new(plugin.clone());
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks);
        let start = |e: wasmtime::Error| WasmError::Start(format!("{e:#}"));
        let instance =
            pre.instantiate(&mut store).map_err(|e| WasmError::Instantiate(format!("{e:#}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| WasmError::Abi("no exported memory".into()))?;
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<u32, u32>(&mut store, "malloc"))
            .map_err(|_| {
                WasmError::Abi("exports neither proxy_on_memory_allocate nor malloc".into())
            })?;
        store.data_mut().memory = Some(memory);
        store.data_mut().alloc = Some(alloc);
        let context_create = instance
            .get_typed_func(&mut store, "proxy_on_context_create")
            .map_err(|_| WasmError::Abi("no proxy_on_context_create export".into()))?;
        let cb = Callbacks {
            context_create,
            on_request_headers: HeadersFn::find(&instance, &mut store, "proxy_on_request_headers"),
            on_request_body: export(&instance, &mut store, "proxy_on_request_body"),
            on_response_headers: HeadersFn::find(
                &instance,
                &mut store,
                "proxy_on_response_headers",
            ),
            on_response_body: export(&instance, &mut store, "proxy_on_response_body"),
            on_log: export(&instance, &mut store, "proxy_on_log"),
            on_done: export(&instance, &mut store, "proxy_on_done"),
            on_delete: export(&instance, &mut store, "proxy_on_delete"),
            on_tick: export(&instance, &mut store, "proxy_on_tick"),
            on_http_call_response: export(&instance, &mut store, "proxy_on_http_call_response"),
        };
        for init in ["_initialize", "_start"] {
            if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, init) {
                f.call(&mut store, ()).map_err(start)?;
                break;
            }
        }
        cb.context_create.call(&mut store, (ROOT_CONTEXT, 0)).map_err(start)?;
        let bool_fn = |store: &mut Store<HostState>, name: &str| {
            instance.get_typed_func::<(u32, u32), u32>(store, name).ok()
        };
        // Both may dispatch HTTP calls: they stay queued in the root's state until the
        // plugin's ticker starts them (see `crate::plugin`), so a start never waits on one.
        store.data_mut().root.allowed = true;
        if let Some(f) = bool_fn(&mut store, "proxy_on_vm_start") {
            let size = plugin.vm_config.len() as u32;
            if f.call(&mut store, (ROOT_CONTEXT, size)).map_err(start)? == 0 {
                return Err(WasmError::Start("proxy_on_vm_start returned false".into()));
            }
        }
        if let Some(f) = bool_fn(&mut store, "proxy_on_configure") {
            let size = plugin.config.len() as u32;
            if f.call(&mut store, (ROOT_CONTEXT, size)).map_err(start)? == 0 {
                return Err(WasmError::Start(
                    "proxy_on_configure returned false (the plugin rejected its configuration)"
                        .into(),
                ));
            }
        }
        store.data_mut().root.allowed = false;
        Ok(Self {
            store,
            cb,
            next_context: ROOT_CONTEXT + 1,
            deadline_ticks,
            serial,
            last_tick: Instant::now(),
            spare: Vec::new(),
        })
    }

    /// Runs `f` under a fresh deadline and maps a failure to its kind.
    fn guarded<R>(
        &mut self,
        f: impl FnOnce(&Callbacks, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.store.data_mut().limits.refused = false;
        let cb = &self.cb;
        f(cb, &mut self.store).map_err(|e| {
            let kind = if self.store.data().limits.refused {
                FailureKind::Memory
            } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                FailureKind::Timeout
            } else {
                FailureKind::Trap
            };
            Failure { kind, message: format!("{e:#}") }
        })
    }

    /// The state of a new request: a spare one refilled, or a new one.
    #[inline]
    pub(crate) fn request_state(&mut self, info: RequestInfo) -> Box<HttpState> {
        match self.spare.pop() {
            Some(mut state) => {
                state.refill(info);
                state
            }
            None => Box::new(HttpState::new(info)),
        }
    }

    /// Keeps an ended request's state for reuse (its contents go with the next refill).
    pub(crate) fn give_back(&mut self, state: Box<HttpState>) {
        if self.spare.len() < SPARE_STATES {
            self.spare.push(state);
        }
    }

    /// Creates an HTTP context; returns its id.
    #[inline]
    pub(crate) fn create_http_context(&mut self) -> Result<u32, Failure> {
        let id = self.next_context;
        // Ids are never reused within an instance; wrapping past u32 skips the root's id.
        self.next_context = self.next_context.checked_add(1).unwrap_or(ROOT_CONTEXT + 1);
        self.guarded(|cb, store| cb.context_create.call(store, (id, ROOT_CONTEXT)))?;
        Ok(id)
    }

    /// Runs one stream callback with `state` in the Store; returns the action.
    #[inline]
    pub(crate) fn stream(
        &mut self,
        ctx: u32,
        phase: Phase,
        state: &mut Option<Box<HttpState>>,
    ) -> Result<u32, Failure> {
        self.store.data_mut().http = state.take();
        let r = self.guarded(|cb, store| match phase {
            Phase::RequestHeaders { count, eos } => match &cb.on_request_headers {
                Some(f) => f.call(store, ctx, count, eos),
                None => Ok(0),
            },
            Phase::ResponseHeaders { count, eos } => match &cb.on_response_headers {
                Some(f) => f.call(store, ctx, count, eos),
                None => Ok(0),
            },
            Phase::RequestBody { size, eos } => match &cb.on_request_body {
                Some(f) => f.call(store, (ctx, size, u32::from(eos))),
                None => Ok(0),
            },
            Phase::ResponseBody { size, eos } => match &cb.on_response_body {
                Some(f) => f.call(store, (ctx, size, u32::from(eos))),
                None => Ok(0),
            },
            Phase::HttpCallResponse { token, headers, body, trailers } => {
                match &cb.on_http_call_response {
                    Some(f) => f.call(store, (ctx, token, headers, body, trailers)).map(|()| 0),
                    None => Ok(0),
                }
            }
        });
        *state = self.store.data_mut().http.take();
        r
    }

    /// Ends an HTTP context: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    #[inline]
    pub(crate) fn finish(
        &mut self,
        ctx: u32,
        state: &mut Option<Box<HttpState>>,
    ) -> Result<(), Failure> {
        self.store.data_mut().http = state.take();
        let r = self.guarded(|cb, store| {
            if let Some(f) = &cb.on_done {
                f.call(&mut *store, ctx)?;
            }
            if let Some(f) = &cb.on_log {
                f.call(&mut *store, ctx)?;
            }
            if let Some(f) = &cb.on_delete {
                f.call(&mut *store, ctx)?;
            }
            Ok(())
        });
        *state = self.store.data_mut().http.take();
        r
    }

    /// The tick period the root context asked for, in ms (0 = none).
    pub(crate) fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    /// Calls `proxy_on_tick` on the root context (which may dispatch HTTP calls).
    pub(crate) fn tick(&mut self) -> Result<(), Failure> {
        self.last_tick = Instant::now();
        self.store.data_mut().root.allowed = true;
        let r = self.guarded(|cb, store| match &cb.on_tick {
            Some(f) => f.call(store, ROOT_CONTEXT),
            None => Ok(()),
        });
        self.store.data_mut().root.allowed = false;
        r
    }

    /// Takes the HTTP calls the root context queued, counting them as running.
    pub(crate) fn take_root_calls(&mut self) -> Vec<PendingCall> {
        let root = &mut self.store.data_mut().root;
        let calls = std::mem::take(&mut root.queued);
        root.in_flight += calls.len();
        calls
    }

    /// Hands the answer to one of the root context's calls to its
    /// `proxy_on_http_call_response` (which may dispatch more calls).
    pub(crate) fn root_call_response(
        &mut self,
        token: u32,
        response: CallResponse,
    ) -> Result<(), Failure> {
        let headers = (response.head.pseudo.len() + response.head.headers.len()) as u32;
        let (body, trailers) = (response.body.len() as u32, response.trailers.len() as u32);
        let root = &mut self.store.data_mut().root;
        root.in_flight = root.in_flight.saturating_sub(1);
        root.response = Some(response);
        root.allowed = true;
        let r = self.guarded(|cb, store| match &cb.on_http_call_response {
            Some(f) => f.call(store, (ROOT_CONTEXT, token, headers, body, trailers)),
            None => Ok(()),
        });
        let root = &mut self.store.data_mut().root;
        root.response = None;
        root.allowed = false;
        r
    }
}
