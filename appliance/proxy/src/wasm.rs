//! proxy-wasm filters on the request path: the plugins of the listener, the rule and the
//! backend run, in that order, on the request head and body, and in reverse order on the
//! response head and body. A plugin's local response, or a failure under
//! `failure_policy = "closed"`, answers in place of the upstream.
//!
//! Bodies stream through the plugins chunk by chunk (`proxy_on_request_body` /
//! `proxy_on_response_body`, `end_of_stream` on the last call). A plugin that answers PAUSE to
//! a chunk holds it, and the chunks after it, until a later body callback continues; what it
//! holds is bounded by its body limit. A request body held past the limit is answered with 413;
//! a response body held past it ends the response early (its head has gone to the client).
//! Headers are left as the plugins set them: a plugin that changes a body's length removes
//! `Content-Length` itself, as with any proxy-wasm host.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use gatehouse_wasm::{Head, HttpContext, LocalResponse, Plugin, RequestInfo, Verdict};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, Uri, request, response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use parking_lot::Mutex;

use crate::error::{BoxError, ProxyBody, full};
use crate::upstream::{RequestBody, UpstreamBody};

/// The filter contexts of one request, in run order. Shared by the request body (which may
/// still stream while the response arrives) and the response phase; when the last holder goes,
/// the contexts are ended (`proxy_on_done`, `proxy_on_log`, `proxy_on_delete`) off the
/// response's path: see [`Contexts`]'s `Drop`.
#[derive(Clone)]
pub(crate) struct Chain {
    shared: Arc<Mutex<Contexts>>,
}

struct Contexts {
    list: List,
    /// An answer decided while the request body streamed (a local response, or 413): it
    /// replaces whatever the upstream said.
    answer: Option<Answer>,
    /// The request head's pseudo-header vector, reused for the response's `:status`.
    pseudo: Vec<(&'static str, Arc<str>)>,
}

enum Answer {
    Local(LocalResponse),
    Status(StatusCode),
}

/// The contexts of a request. Most requests run one plugin: kept inline, no allocation.
#[derive(Default)]
enum List {
    #[default]
    Empty,
    One(HttpContext),
    Many(Vec<HttpContext>),
}

impl List {
    fn new(mut contexts: impl Iterator<Item = HttpContext>) -> Self {
        let Some(first) = contexts.next() else { return List::Empty };
        match contexts.next() {
            None => List::One(first),
            Some(second) => List::Many([first, second].into_iter().chain(contexts).collect()),
        }
    }

    fn as_slice(&self) -> &[HttpContext] {
        match self {
            List::Empty => &[],
            List::One(ctx) => std::slice::from_ref(ctx),
            List::Many(list) => list,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [HttpContext] {
        match self {
            List::Empty => &mut [],
            List::One(ctx) => std::slice::from_mut(ctx),
            List::Many(list) => list,
        }
    }
}

impl Drop for Contexts {
    /// Ends the contexts (three guest calls each) after the response is written: hyper drops a
    /// finished response body before it writes the response out, so ending them here would put
    /// those calls on the response's latency. Inside a connection's poll ([`EndAfterPoll`])
    /// they end when that poll returns, after hyper's flush; elsewhere (HTTP/2 streams run in
    /// their own tasks), in a task.
    fn drop(&mut self) {
        let pseudo = std::mem::take(&mut self.pseudo);
        Head { pseudo, headers: HeaderMap::new() }.recycle();
        let list = std::mem::take(&mut self.list);
        if matches!(list, List::Empty) {
            return;
        }
        if POLLING.get() > 0 {
            PENDING.set(true);
            DEFERRED.with_borrow_mut(|deferred| match list {
                List::Empty => {}
                List::One(ctx) => deferred.push(ctx),
                List::Many(list) => deferred.extend(list),
            });
        } else {
            match list {
                List::Empty => {}
                List::One(ctx) => end_later(vec![ctx]),
                List::Many(list) => end_later(list),
            }
        }
    }
}

thread_local! {
    /// How many [`EndAfterPoll`] polls are running on this thread (more than one only if one
    /// connection's future polls another's).
    static POLLING: Cell<u32> = const { Cell::new(0) };
    /// [`DEFERRED`] has contexts (a plain cell: checked after every poll).
    static PENDING: Cell<bool> = const { Cell::new(false) };
    /// Contexts dropped during those polls, ended when the outermost returns; the vector's
    /// capacity is kept, so a busy thread allocates it once.
    static DEFERRED: RefCell<Vec<HttpContext>> = const { RefCell::new(Vec::new()) };
}

/// A connection's future (pinned by its owner) whose requests' filter contexts end when each
/// poll of it returns — hyper has flushed what it wrote by then — inline, without a task per
/// request.
pub(crate) struct EndAfterPoll<F>(pub(crate) F);

impl<F: Future + Unpin> Future for EndAfterPoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        POLLING.set(POLLING.get() + 1);
        // Ends what was deferred even if the inner poll unwinds.
        let _end = EndDeferred;
        Pin::new(&mut self.get_mut().0).poll(cx)
    }
}

/// Leaves an [`EndAfterPoll`] poll: the outermost ends the deferred contexts, in the order
/// they were dropped.
struct EndDeferred;

impl Drop for EndDeferred {
    fn drop(&mut self) {
        let depth = POLLING.get().saturating_sub(1);
        POLLING.set(depth);
        if depth > 0 || !PENDING.get() {
            return;
        }
        PENDING.set(false);
        let mut batch = DEFERRED.take();
        batch.clear();
        // Keep the capacity for the next batch.
        DEFERRED.with_borrow_mut(|deferred| {
            if deferred.is_empty() {
                *deferred = batch;
            }
        });
    }
}

/// Contexts waiting to be ended, from every connection.
static ENDING: Mutex<Vec<Vec<HttpContext>>> = Mutex::new(Vec::new());

/// Queues `list` to be ended by a task of the current runtime; the first context queued spawns
/// the task, which lets the runtime's other ready tasks (other connections' responses) run
/// first and then ends everything queued by then, so a busy proxy spawns one task per batch.
/// Without a runtime the contexts end at once.
fn end_later(list: Vec<HttpContext>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let first = {
        let mut queue = ENDING.lock();
        queue.push(list);
        queue.len() == 1
    };
    if first {
        // The guard ends the queue even if the runtime drops the task without running it.
        let guard = EndQueued;
        runtime.spawn(async move {
            tokio::task::yield_now().await;
            drop(guard);
        });
    }
}

/// Ends every queued context when dropped.
struct EndQueued;

impl Drop for EndQueued {
    fn drop(&mut self) {
        let batch = std::mem::take(&mut *ENDING.lock());
        drop(batch);
    }
}

impl Chain {
    /// The answer a plugin decided while the request body streamed, if any.
    pub(crate) fn take_answer(&self) -> Option<Response<ProxyBody>> {
        match self.shared.lock().answer.take()? {
            Answer::Local(local) => Some(local_response(local)),
            Answer::Status(status) => Some(status_response(status)),
        }
    }
}

/// Runs the request-head phase of every plugin and puts the body behind the plugins' body
/// callbacks. `plugins`: the listener's, the rule's and the backend's. `Err` is the response
/// to send instead.
pub(crate) async fn request(
    plugins: &[&[Arc<Plugin>]],
    info: RequestInfo,
    scheme: &'static str,
    parts: &mut request::Parts,
    body: Incoming,
) -> Result<(Chain, RequestBody), Box<Response<ProxyBody>>> {
    // Each context gets its own copy of the facts (shared strings, no allocation).
    let mut list =
        List::new(plugins.iter().flat_map(|p| p.iter()).map(|p| p.start_request(info.clone())));
    let contexts = list.as_mut_slice();
    let authority =
        parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut head = Head::request(parts.method.as_str(), path, authority, scheme, HeaderMap::new());
    head.headers = std::mem::take(&mut parts.headers);
    let eos = body.is_end_stream();
    let mut answer = None;
    for ctx in contexts.iter_mut() {
        let mut verdict = ctx.on_request_headers(&mut head, eos);
        if verdict == Verdict::Wait {
            // The plugin made HTTP calls: the request waits for their answers.
            verdict = ctx.resume(&mut head).await;
        }
        if let Verdict::Respond(local) = verdict {
            answer = Some(local);
            break;
        }
    }
    let pseudo = apply_request_head(parts, head);
    if let Some(local) = answer {
        Head { pseudo, headers: HeaderMap::new() }.recycle();
        return Err(Box::new(local_response(local)));
    }
    let active = contexts.iter().any(HttpContext::active);
    let plugins = contexts.len();
    let chain = Chain { shared: Arc::new(Mutex::new(Contexts { list, answer: None, pseudo })) };
    if eos {
        return Ok((chain, RequestBody::Empty));
    }
    if !active {
        return Ok((chain, RequestBody::from(body)));
    }
    let filtered = Filtered::new(body, chain.clone(), Direction::Request, plugins);
    Ok((chain, RequestBody::Filtered(Box::new(filtered))))
}

/// Writes the guest's view of the request head back: headers, method, path, authority.
/// Returns the emptied pseudo-header vector, for reuse.
fn apply_request_head(parts: &mut request::Parts, mut head: Head) -> Vec<(&'static str, Arc<str>)> {
    parts.headers = std::mem::take(&mut head.headers);
    // Only what the plugins changed is parsed again (the common case: nothing; comparing the
    // short method and path costs less than keeping copies to tell a set value by address).
    if let Some(m) = head.pseudo(":method").filter(|m| *m != parts.method.as_str())
        && let Ok(m) = Method::from_bytes(m.as_bytes())
    {
        parts.method = m;
    }
    if let Some(path) = head.pseudo(":path")
        && parts.uri.path_and_query().map(|pq| pq.as_str()) != Some(path)
        && let Ok(uri) = path.parse::<Uri>()
    {
        parts.uri = uri;
    }
    // `Host` follows `:authority` even when only the headers changed.
    if let Some(a) = head.pseudo(":authority").filter(|a| !a.is_empty())
        && parts.headers.get(header::HOST).map(HeaderValue::as_bytes) != Some(a.as_bytes())
        && let Ok(v) = HeaderValue::from_str(a)
    {
        parts.headers.insert(header::HOST, v);
    }
    head.pseudo.clear();
    head.pseudo
}

impl Chain {
    /// Runs the response-head phase (last plugin first) and puts the body behind the plugins'
    /// body callbacks; `Err` is the response to send instead.
    pub(crate) fn response(
        self,
        parts: &mut response::Parts,
        body: UpstreamBody,
    ) -> Result<ProxyBody, Box<Response<ProxyBody>>> {
        // One lock for the whole head phase: it is taken once per request.
        let mut guard = self.shared.lock();
        let Contexts { list, pseudo, .. } = &mut *guard;
        let contexts = list.as_mut_slice();
        if !contexts.iter().any(HttpContext::active) {
            return Ok(ProxyBody::Upstream(body));
        }
        let mut pseudo = std::mem::take(pseudo);
        pseudo.push((":status", gatehouse_wasm::shared_str(parts.status.as_str())));
        let mut head = Head { pseudo, headers: std::mem::take(&mut parts.headers) };
        let eos = body.is_end_stream();
        let mut answer = None;
        for ctx in contexts.iter_mut().rev() {
            if let Verdict::Respond(local) = ctx.on_response_headers(&mut head, eos) {
                answer = Some(local);
                break;
            }
        }
        let active = contexts.iter().any(HttpContext::active);
        let plugins = contexts.len();
        drop(guard);
        parts.headers = std::mem::take(&mut head.headers);
        if let Some(s) = head.pseudo(":status").and_then(|s| s.parse::<u16>().ok()) {
            parts.status = StatusCode::from_u16(s).unwrap_or(parts.status);
        }
        head.recycle();
        if let Some(local) = answer {
            return Err(Box::new(local_response(local)));
        }
        if eos || !active {
            return Ok(ProxyBody::Upstream(body));
        }
        let filtered = Filtered::new(body, self, Direction::Response, plugins);
        Ok(ProxyBody::Filtered(Box::new(filtered)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// A body streamed through the plugins' body callbacks.
pub(crate) struct Filtered<B> {
    inner: B,
    chain: Chain,
    direction: Direction,
    /// What each plugin holds after answering PAUSE, by position in the direction's order;
    /// grown on the first PAUSE (most bodies never need it).
    held: Vec<Vec<u8>>,
    /// How many contexts the chain holds.
    plugins: usize,
    /// The plugins saw the end of the stream.
    ended: bool,
    /// Trailers to send after the data the end of the body released.
    trailers: Option<HeaderMap>,
}

impl<B> std::fmt::Debug for Filtered<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filtered")
            .field("direction", &self.direction)
            .field("held", &self.held.iter().map(Vec::len).collect::<Vec<_>>())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// Why a filtered body stopped.
#[derive(Debug, thiserror::Error)]
enum FilterStop {
    #[error("a WASM filter answered during the request body")]
    Answered,
    #[error("a WASM filter held more than its body limit of {0} bytes")]
    OverLimit(usize),
    #[error("a WASM filter failed during the response body")]
    Failed,
}

impl<B> Filtered<B> {
    /// `plugins`: how many contexts the chain holds.
    fn new(inner: B, chain: Chain, direction: Direction, plugins: usize) -> Self {
        Self { inner, chain, direction, held: Vec::new(), plugins, ended: false, trailers: None }
    }

    /// Runs one chunk through the plugins; `Some` is what goes on, `None` that a plugin holds
    /// it for now.
    fn pass(&mut self, chunk: Bytes, eos: bool) -> Result<Option<Bytes>, FilterStop> {
        let mut guard = self.chain.shared.lock();
        let contexts = &mut *guard;
        let n = contexts.list.as_slice().len();
        let mut data = chunk;
        for k in 0..n {
            let i = match self.direction {
                Direction::Request => k,
                Direction::Response => n - 1 - k,
            };
            let ctx = &mut contexts.list.as_mut_slice()[i];
            if !ctx.active() {
                continue;
            }
            // What the plugin sees: what it holds, then this chunk (no copy when it holds
            // nothing, the common case).
            let mut seen = match self.held.get_mut(k) {
                Some(held) if !held.is_empty() => {
                    held.extend_from_slice(&data);
                    Bytes::from(std::mem::take(held))
                }
                _ => data,
            };
            if seen.len() > ctx.body_limit() {
                let limit = ctx.body_limit();
                if self.direction == Direction::Request {
                    contexts.answer = Some(Answer::Status(StatusCode::PAYLOAD_TOO_LARGE));
                }
                return Err(FilterStop::OverLimit(limit));
            }
            let verdict = match self.direction {
                Direction::Request => ctx.on_request_body(&mut seen, eos),
                Direction::Response => ctx.on_response_body(&mut seen, eos),
            };
            match verdict {
                // Calls are only waited for in the request-head phase.
                Verdict::Continue | Verdict::Wait => data = seen,
                Verdict::Buffer => {
                    if self.held.len() < self.plugins {
                        self.held.resize_with(self.plugins, Vec::new);
                    }
                    if let Some(held) = self.held.get_mut(k) {
                        *held = Vec::from(seen);
                    }
                    return Ok(None);
                }
                Verdict::Respond(local) => {
                    return Err(match self.direction {
                        Direction::Request => {
                            contexts.answer = Some(Answer::Local(local));
                            FilterStop::Answered
                        }
                        Direction::Response => FilterStop::Failed,
                    });
                }
            }
        }
        Ok(Some(data))
    }
}

impl<B> Body for Filtered<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let (chunk, eos) = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let eos = this.inner.is_end_stream();
                        (data, eos)
                    }
                    Err(frame) => {
                        // Trailers end the body: the plugins see its end first.
                        this.trailers = frame.into_trailers().ok();
                        (Bytes::new(), true)
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => (Bytes::new(), true),
            };
            this.ended = eos;
            match this.pass(chunk, eos) {
                Ok(Some(out)) if !out.is_empty() => return Poll::Ready(Some(Ok(Frame::data(out)))),
                Ok(_) => continue,
                Err(stop) => {
                    tracing::debug!(direction = ?this.direction, error = %stop, "wasm body stopped");
                    this.ended = true;
                    this.trailers = None;
                    return Poll::Ready(Some(Err(stop.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Plugins may change the body's length.
        SizeHint::default()
    }
}

fn status_response(status: StatusCode) -> Response<ProxyBody> {
    let mut resp = Response::new(full(""));
    *resp.status_mut() = status;
    resp
}

/// A plugin's local response; headers that are not valid HTTP are left out.
fn local_response(local: LocalResponse) -> Response<ProxyBody> {
    let mut resp = Response::new(full(local.body));
    *resp.status_mut() =
        StatusCode::from_u16(local.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers: &mut HeaderMap = resp.headers_mut();
    for (name, value) in local.headers {
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(&value))
        {
            headers.append(n, v);
        }
    }
    if !local.details.is_empty() {
        tracing::debug!(status = local.status, details = %local.details, "wasm local response");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> request::Parts {
        let req = http::Request::builder()
            .method("GET")
            .uri("/a?b=1")
            .header(header::HOST, "example.com")
            .body(())
            .unwrap();
        req.into_parts().0
    }

    /// The head as `request` builds it.
    fn head(parts: &mut request::Parts) -> Head {
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
        let mut head =
            Head::request(parts.method.as_str(), &path, "example.com", "http", HeaderMap::new());
        head.headers = std::mem::take(&mut parts.headers);
        head
    }

    #[test]
    fn pseudo_headers_a_plugin_set_are_applied_and_host_follows_the_authority() {
        // Untouched: nothing changes.
        let mut p = parts();
        let h = head(&mut p);
        assert!(apply_request_head(&mut p, h).is_empty());
        assert_eq!((p.method.as_str(), p.uri.to_string()), ("GET", "/a?b=1".to_owned()));
        assert_eq!(p.headers[header::HOST], "example.com");

        // Only the Host header changed (or went): it follows `:authority`, as before.
        for host in [Some("other.example"), None] {
            let mut p = parts();
            let mut h = head(&mut p);
            match host {
                Some(v) => h.headers.insert(header::HOST, HeaderValue::from_static(v)),
                None => h.headers.remove(header::HOST),
            };
            apply_request_head(&mut p, h);
            assert_eq!(p.headers[header::HOST], "example.com");
        }

        // A plugin set the same text again: a new string, compared and kept as it was.
        let mut p = parts();
        let mut h = head(&mut p);
        assert!(h.set_pseudo(":path", "/a?b=1"));
        apply_request_head(&mut p, h);
        assert_eq!(p.uri.to_string(), "/a?b=1");

        // Method, path and authority set by a plugin.
        let mut p = parts();
        let mut h = head(&mut p);
        assert!(h.set_pseudo(":method", "POST"));
        assert!(h.set_pseudo(":path", "/b"));
        assert!(h.set_pseudo(":authority", "new.example"));
        apply_request_head(&mut p, h);
        assert_eq!((p.method.as_str(), p.uri.to_string()), ("POST", "/b".to_owned()));
        assert_eq!(p.headers[header::HOST], "new.example");
    }
}
