//! A prepared plugin: its compiled module, a few warm instances, the per-request HTTP
//! context the proxy drives, and its root contexts' side (ticks, their HTTP calls and
//! answers) that the host's ticker drives. Failures are handled here, per the plugin's
//! failure policy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use gatehouse_model::FailurePolicy;
use parking_lot::Mutex;
use wasmtime::{Engine, InstancePre};

use crate::abi::ACTION_PAUSE;
use crate::abi::metrics::GuestMetrics;
use crate::abi::shared_data::SharedData;
use crate::calls::{CallClient, CallResponse, CallUpstream};
use crate::error::WasmError;
use crate::instance::{Failure, FailureKind, Instance, Phase};
use crate::metrics::HostMetrics;
use crate::state::{Head, HostState, HttpState, LocalResponse, RequestInfo};

/// What every instance of one plugin shares.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub name: String,
    pub config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub memory_limit: usize,
    pub body_limit: usize,
    pub shared_data: Arc<SharedData>,
    pub metrics: Arc<GuestMetrics>,
    pub host_metrics: HostMetrics,
    /// Upstreams `proxy_http_call` may name.
    pub upstreams: HashMap<String, Arc<CallUpstream>>,
    pub calls: CallClient,
}

impl PluginShared {
    /// What the guest gets for a call's outcome (a failure is an empty answer), counted in
    /// the metrics and, when it failed, logged with the reason.
    fn call_answer(&self, upstream: &str, result: Result<CallResponse, String>) -> CallResponse {
        match result {
            Ok(response) => {
                self.host_metrics.http_call(&self.name, "ok");
                response
            }
            Err(error) => {
                tracing::warn!(target: "wasm", plugin = %self.name, %upstream, %error, "http call failed");
                self.host_metrics.http_call(&self.name, "failed");
                CallResponse::default()
            }
        }
    }
}

/// The answer to a root context's call, waiting for the ticker to hand it to the instance
/// that made the call.
struct RootAnswer {
    slot: usize,
    /// The instance that made the call; a replaced instance's answers are dropped.
    serial: u64,
    token: u32,
    response: CallResponse,
}

/// A plugin ready to serve: compiled, started once (so its configuration was accepted).
pub struct Plugin {
    shared: Arc<PluginShared>,
    engine: Engine,
    pre: InstancePre<HostState>,
    slots: Box<[Mutex<Option<Instance>>]>,
    next_slot: AtomicUsize,
    serials: AtomicU64,
    policy: FailurePolicy,
    deadline_ticks: u64,
    /// sha256 of the module.
    digest: String,
    /// Where the root contexts' HTTP calls run.
    runtime: tokio::runtime::Handle,
    /// Answers to root contexts' calls, for the ticker to deliver.
    answers: Mutex<Vec<RootAnswer>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.shared.name)
            .field("digest", &self.digest)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What the proxy should do after a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (forward the request, or the response to the client).
    Continue,
    /// Body phases before the end of the stream only: hold this chunk, and the ones after it,
    /// until a later body callback continues (proxy-wasm's StopIterationAndBuffer).
    Buffer,
    /// Answer with this response instead (a plugin's local response, or 500 on a failure
    /// under `failure_policy = "closed"`).
    Respond(LocalResponse),
    /// Request headers only: the plugin dispatched HTTP calls and paused; the stream waits
    /// in [`HttpContext::resume`] until it continues or answers.
    Wait,
}

pub(crate) struct Settings {
    pub engine: Engine,
    pub pre: InstancePre<HostState>,
    pub shared: Arc<PluginShared>,
    pub instances: usize,
    pub policy: FailurePolicy,
    pub deadline_ticks: u64,
    pub digest: String,
    pub runtime: tokio::runtime::Handle,
}

impl Plugin {
    /// Starts the first instance (proving the module and its configuration work); the other
    /// instances start on first use.
    pub(crate) fn new(s: Settings) -> Result<Arc<Self>, WasmError> {
        let first = Instance::start(&s.engine, &s.pre, s.shared.clone(), s.deadline_ticks, 1)?;
        let mut slots: Vec<Mutex<Option<Instance>>> =
            (0..s.instances.max(1)).map(|_| Mutex::new(None)).collect();
        slots[0] = Mutex::new(Some(first));
        Ok(Arc::new(Self {
            shared: s.shared,
            engine: s.engine,
            pre: s.pre,
            slots: slots.into_boxed_slice(),
            next_slot: AtomicUsize::new(0),
            serials: AtomicU64::new(2),
            policy: s.policy,
            deadline_ticks: s.deadline_ticks,
            digest: s.digest,
            runtime: s.runtime,
            answers: Mutex::default(),
        }))
    }

    /// The plugin's configured name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// sha256 of the module this plugin runs.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn failure_policy(&self) -> FailurePolicy {
        self.policy
    }

    /// Starts an HTTP context for one request. Never fails: a failure to start is reported by
    /// the first callback, per the failure policy.
    pub fn start_request(self: &Arc<Self>, info: RequestInfo) -> HttpContext {
        let n = self.slots.len();
        let first = self.next_slot.fetch_add(1, Ordering::Relaxed) % n;
        let mut guard = (0..n)
            .find_map(|i| self.slots[(first + i) % n].try_lock().map(|g| (g, (first + i) % n)))
            .unwrap_or_else(|| (self.slots[first].lock(), first));
        let slot = guard.1;
        let mut ctx = HttpContext {
            plugin: self.clone(),
            slot,
            serial: 0,
            id: 0,
            state: None,
            pending: None,
            skip: false,
            alive: false,
        };
        let instance = match self.ensure(&mut guard.0) {
            Ok(i) => i,
            Err(failure) => {
                ctx.state = Some(Box::new(HttpState::new(info)));
                ctx.pending = Some(failure);
                return ctx;
            }
        };
        ctx.state = Some(instance.request_state(info));
        ctx.serial = instance.serial;
        match instance.create_http_context() {
            Ok(id) => {
                ctx.id = id;
                ctx.alive = true;
            }
            Err(failure) => {
                self.recycle(&mut guard.0, &failure);
                ctx.pending = Some(failure);
            }
        }
        ctx
    }

    /// The slot's instance, started if the slot is empty.
    fn ensure<'a>(&self, slot: &'a mut Option<Instance>) -> Result<&'a mut Instance, Failure> {
        if slot.is_none() {
            let serial = self.serials.fetch_add(1, Ordering::Relaxed);
            let started = Instance::start(
                &self.engine,
                &self.pre,
                self.shared.clone(),
                self.deadline_ticks,
                serial,
            )
            .map_err(|e| Failure { kind: FailureKind::Start, message: e.to_string() })?;
            *slot = Some(started);
        }
        slot.as_mut()
            .ok_or_else(|| Failure { kind: FailureKind::Start, message: "no instance".into() })
    }

    /// Logs and counts a failure, and drops the instance it happened in (it may be in any
    /// state); the slot gets a fresh instance on next use.
    fn recycle(&self, slot: &mut Option<Instance>, failure: &Failure) {
        self.record(failure);
        if slot.take().is_some() {
            self.shared.host_metrics.recycled(&self.shared.name);
        }
    }

    fn record(&self, failure: &Failure) {
        tracing::warn!(
            target: "wasm",
            plugin = %self.shared.name,
            kind = failure.kind.label(),
            error = %failure.message,
            "plugin failed",
        );
        self.shared.host_metrics.failure(&self.shared.name, failure.kind.label());
    }

    /// The response a failure turns into under this plugin's policy.
    fn verdict_for_failure(&self) -> Verdict {
        match self.policy {
            FailurePolicy::Open => Verdict::Continue,
            FailurePolicy::Closed => Verdict::Respond(LocalResponse {
                status: 500,
                headers: Vec::new(),
                body: Vec::new(),
                details: format!("plugin {} failed", self.shared.name),
            }),
        }
    }

    /// The root contexts' side, driven by the host's ticker thread every round: per live
    /// instance, hands it the answers to its calls (`proxy_on_http_call_response`), calls
    /// `proxy_on_tick` when its period has passed, and starts the calls its root context
    /// queued (in those callbacks, or in `proxy_on_vm_start`/`proxy_on_configure` when it
    /// started). Busy instances are skipped until the next round (their answers wait); a
    /// failure recycles the instance as in a request.
    pub(crate) fn tick_due(self: &Arc<Self>) {
        let mut answers = std::mem::take(&mut *self.answers.lock());
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(mut guard) = slot.try_lock() else { continue };
            let mine;
            (mine, answers) = answers.into_iter().partition(|a| a.slot == index);
            if let Err(failure) = self.tend_root(index, &mut guard, mine) {
                self.recycle(&mut guard, &failure);
            }
        }
        if !answers.is_empty() {
            self.answers.lock().extend(answers);
        }
    }

    fn tend_root(
        self: &Arc<Self>,
        index: usize,
        slot: &mut Option<Instance>,
        answers: Vec<RootAnswer>,
    ) -> Result<(), Failure> {
        let Some(instance) = slot.as_mut() else { return Ok(()) };
        for answer in answers {
            if answer.serial != instance.serial {
                tracing::debug!(target: "wasm", plugin = %self.shared.name, token = answer.token, "answer dropped: the instance that called was replaced");
                continue;
            }
            instance.root_call_response(answer.token, answer.response)?;
        }
        let period = instance.tick_period_ms();
        if period != 0 && instance.last_tick.elapsed() >= Duration::from_millis(u64::from(period)) {
            instance.tick()?;
        }
        for call in instance.take_root_calls() {
            let plugin = Arc::downgrade(self);
            let shared = self.shared.clone();
            let serial = instance.serial;
            // Not awaited: the ticker never waits on I/O. A plugin gone by the time the answer
            // comes (replaced by a reload) drops it.
            drop(self.runtime.spawn(async move {
                let (token, upstream) = (call.token, call.upstream.clone());
                let result = shared.calls.run(call, shared.body_limit).await;
                let response = shared.call_answer(&upstream, result);
                if let Some(plugin) = plugin.upgrade() {
                    plugin.answers.lock().push(RootAnswer { slot: index, serial, token, response });
                }
            }));
        }
        Ok(())
    }
}

/// One request's HTTP context in one instance of a plugin. Dropping it runs `proxy_on_done`,
/// `proxy_on_log` and `proxy_on_delete`.
#[derive(Debug)]
pub struct HttpContext {
    plugin: Arc<Plugin>,
    slot: usize,
    serial: u64,
    id: u32,
    state: Option<Box<HttpState>>,
    /// A failure from start-up, answered by the first callback.
    pending: Option<Failure>,
    /// Fail-open after a failure: no more callbacks for this request.
    skip: bool,
    /// The guest holds this context (it must be finished on drop).
    alive: bool,
}

impl HttpContext {
    /// `proxy_on_request_headers`; `head` may be changed by the guest.
    pub fn on_request_headers(&mut self, head: &mut Head, end_of_stream: bool) -> Verdict {
        let count = (head.pseudo.len() + head.headers.len()) as u32;
        self.with_head(head, true, Phase::RequestHeaders { count, eos: end_of_stream })
    }

    /// `proxy_on_response_headers`; `head` (with `:status`) may be changed by the guest.
    pub fn on_response_headers(&mut self, head: &mut Head, end_of_stream: bool) -> Verdict {
        let count = (head.pseudo.len() + head.headers.len()) as u32;
        self.with_head(head, false, Phase::ResponseHeaders { count, eos: end_of_stream })
    }

    /// `proxy_on_request_body` with the body held so far (one chunk, or the chunks since the
    /// guest asked to buffer); the guest may replace it.
    pub fn on_request_body(&mut self, body: &mut Bytes, end_of_stream: bool) -> Verdict {
        let size = body.len() as u32;
        self.with_body(body, true, Phase::RequestBody { size, eos: end_of_stream })
    }

    /// `proxy_on_response_body` with the body held so far; the guest may replace it.
    pub fn on_response_body(&mut self, body: &mut Bytes, end_of_stream: bool) -> Verdict {
        let size = body.len() as u32;
        self.with_body(body, false, Phase::ResponseBody { size, eos: end_of_stream })
    }

    /// The most body bytes the plugin may hold (buffer) at once.
    pub fn body_limit(&self) -> usize {
        self.plugin.shared.body_limit
    }

    /// Whether the filter still takes part in this request (false after a fail-open failure).
    pub fn active(&self) -> bool {
        !self.skip && self.pending.is_none()
    }

    /// After [`Verdict::Wait`]: runs the HTTP calls the plugin dispatched (concurrently, each
    /// under its timeout) and hands each answer to `proxy_on_http_call_response` as it comes,
    /// with `head` as the request head the plugin sees and may change. Returns once the plugin
    /// continued, answered or failed; calls still running then are dropped.
    pub async fn resume(&mut self, head: &mut Head) -> Verdict {
        let shared = self.plugin.shared.clone();
        let mut running = FuturesUnordered::new();
        loop {
            let Some(state) = self.state.as_mut() else { return Verdict::Continue };
            for call in state.calls.drain(..) {
                let shared = shared.clone();
                running.push(async move {
                    let (token, upstream) = (call.token, call.upstream.clone());
                    let result = shared.calls.run(call, shared.body_limit).await;
                    (token, upstream, result)
                });
            }
            state.calls_in_flight = running.len();
            let Some((token, upstream, result)) = running.next().await else {
                // Nothing dispatched: `run` never asks to wait then.
                return Verdict::Continue;
            };
            let response = shared.call_answer(&upstream, result);
            let phase = Phase::HttpCallResponse {
                token,
                headers: (response.head.pseudo.len() + response.head.headers.len()) as u32,
                body: response.body.len() as u32,
                trailers: response.trailers.len() as u32,
            };
            if let Some(state) = self.state.as_mut() {
                state.calls_in_flight = running.len();
                state.call_response = Some(response);
            }
            match self.with_head(head, true, phase) {
                Verdict::Wait => continue,
                verdict => return verdict,
            }
        }
    }

    fn with_head(&mut self, head: &mut Head, request: bool, phase: Phase) -> Verdict {
        if let Some(v) = self.early() {
            return v;
        }
        // The vector the request's pseudo-headers are copied into afterwards (kept by a reused
        // state: then the copy allocates nothing).
        let mut copy = Vec::new();
        if let Some(s) = self.state.as_mut() {
            let slot = if request { &mut s.request } else { &mut s.response };
            if request {
                copy = std::mem::take(&mut slot.pseudo);
            }
            *slot = std::mem::take(head);
        }
        let verdict = self.run(phase);
        if let Some(s) = self.state.as_mut() {
            let slot = if request { &mut s.request } else { &mut s.response };
            *head = std::mem::take(slot);
            // Request properties stay readable in later phases: the pseudo-headers are shared
            // strings, so this copy allocates no string.
            if request {
                copy.clone_from(&head.pseudo);
                s.request.pseudo = copy;
            }
        }
        verdict
    }

    fn with_body(&mut self, body: &mut Bytes, request: bool, phase: Phase) -> Verdict {
        if let Some(v) = self.early() {
            return v;
        }
        if let Some(s) = self.state.as_mut() {
            let slot = if request { &mut s.request_body } else { &mut s.response_body };
            *slot = std::mem::take(body);
        }
        let verdict = self.run(phase);
        if let Some(s) = self.state.as_mut() {
            let slot = if request { &mut s.request_body } else { &mut s.response_body };
            *body = std::mem::take(slot);
        }
        verdict
    }

    /// The answer when the filter does not run: skipped, or failed at start.
    fn early(&mut self) -> Option<Verdict> {
        if self.skip {
            return Some(Verdict::Continue);
        }
        self.pending.take()?;
        self.skip = true;
        Some(self.plugin.verdict_for_failure())
    }

    fn run(&mut self, phase: Phase) -> Verdict {
        let may_buffer = matches!(
            phase,
            Phase::RequestBody { eos: false, .. } | Phase::ResponseBody { eos: false, .. }
        );
        // Borrowed, not cloned: `plugin` and the fields written below are disjoint.
        let plugin = &*self.plugin;
        let mut guard = plugin.slots[self.slot].lock();
        let result = match guard.as_mut().filter(|i| i.serial == self.serial) {
            Some(instance) => {
                if let Some(s) = self.state.as_mut() {
                    s.continued = false;
                    s.calls_allowed = phase.may_call();
                }
                instance.stream(self.id, phase, &mut self.state)
            }
            None => Err(Failure {
                kind: FailureKind::Lost,
                message: "the context's instance was recycled".into(),
            }),
        };
        match result {
            Ok(action) => {
                let Some(state) = self.state.as_mut() else { return Verdict::Continue };
                // The answer to a call is read only in its own callback.
                state.call_response = None;
                let local = state.local_response.take();
                let continued = state.continued;
                // A call queued by a callback that does not wait for it is not made.
                let paused = !continued
                    && local.is_none()
                    && (action == ACTION_PAUSE || matches!(phase, Phase::HttpCallResponse { .. }));
                if !paused && !state.calls.is_empty() {
                    tracing::debug!(target: "wasm", plugin = %plugin.shared.name, calls = state.calls.len(), "http calls dropped: the stream did not wait for them");
                    state.calls.clear();
                }
                let waiting = !state.calls.is_empty() || state.calls_in_flight > 0;
                if let Some(local) = local {
                    plugin.shared.host_metrics.local_response(&plugin.shared.name);
                    return Verdict::Respond(local);
                }
                if paused && waiting && phase.may_call() {
                    return Verdict::Wait;
                }
                if paused && may_buffer {
                    return Verdict::Buffer;
                }
                if paused {
                    // Nothing we implement could resume this stream later.
                    plugin.record(&Failure {
                        kind: FailureKind::Stalled,
                        message: "paused with nothing pending".into(),
                    });
                    self.skip = true;
                    return plugin.verdict_for_failure();
                }
                Verdict::Continue
            }
            Err(failure) => {
                if failure.kind == FailureKind::Lost {
                    plugin.record(&failure);
                } else {
                    plugin.recycle(&mut guard, &failure);
                }
                self.alive = false;
                self.skip = true;
                plugin.verdict_for_failure()
            }
        }
    }
}

impl Drop for HttpContext {
    fn drop(&mut self) {
        if !self.alive {
            return;
        }
        let plugin = &*self.plugin;
        let mut guard = plugin.slots[self.slot].lock();
        let Some(instance) = guard.as_mut().filter(|i| i.serial == self.serial) else { return };
        // Nothing waits for a call made while the context ends: it is refused, not queued.
        if let Some(s) = self.state.as_mut() {
            s.calls_allowed = false;
        }
        match instance.finish(self.id, &mut self.state) {
            Ok(()) => {
                if let Some(state) = self.state.take() {
                    instance.give_back(state);
                }
            }
            Err(failure) => plugin.recycle(&mut guard, &failure),
        }
    }
}
