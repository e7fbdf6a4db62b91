//! Upstream side: endpoint choice, our HTTP/1.1 connection pool and error classification.
//!
//! The pool keeps idle `SendRequest` handles per endpoint (socket address, or the DNS
//! authority) and spawns one driver task per connection, never one per request. A connection
//! goes back to the pool when its response body reaches end-of-stream; a body dropped early
//! takes its connection with it. The lock is a `parking_lot` mutex held only for a push or a
//! pop, never across an `.await`.

use std::collections::HashMap;
use std::error::Error as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;

pub(crate) use crate::backend_tls::TlsEndpoint;
use crate::error::BoxError;
use crate::error::RequestError;
use crate::table::{CompiledBackend, Target};

/// Idle connections kept per endpoint; more are closed when their response ends.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Where a pooled connection goes: the idle-list key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// An endpoint address from the route table: connects without resolving.
    Addr(SocketAddr),
    /// `host:port`, resolved on each connect.
    Dns(Authority),
    /// An endpoint address spoken to over TLS ([`crate::backend_tls`]).
    Tls(TlsEndpoint),
}

/// The endpoint a request goes to, and its authority (for a missing `Host`).
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub key: Key,
    pub authority: Authority,
}

/// The next endpoint of a backend, round-robin, or its DNS authority.
pub(crate) fn endpoint(backend: &CompiledBackend) -> Result<Endpoint, RequestError> {
    match &backend.target {
        Target::Endpoints { name, addrs, authorities, tls, .. } => {
            let i = backend.next_index(addrs.len());
            let addr = *addrs.get(i).ok_or_else(|| RequestError::NoEndpoints(name.clone()))?;
            let authority = match authorities.get(i) {
                // Formatted and parsed once, when the table was compiled.
                Some(Some(a)) => a.clone(),
                _ => Authority::try_from(addr.to_string()).map_err(http::Error::from)?,
            };
            let key = match tls {
                Some(connector) => Key::Tls(TlsEndpoint { addr, connector: connector.clone() }),
                None => Key::Addr(addr),
            };
            Ok(Endpoint { key, authority })
        }
        Target::Dns { authority, .. } => {
            let authority = Authority::try_from(authority.as_str()).map_err(http::Error::from)?;
            Ok(Endpoint { key: Key::Dns(authority.clone()), authority })
        }
        Target::Unresolved { name, reason } => {
            Err(RequestError::Unresolved { name: name.clone(), reason: reason.clone() })
        }
    }
}

/// Body of an upstream request: the client's, streamed, or none. A request without a body
/// is sent with [`RequestBody::Empty`] so that it can be sent again after a keep-alive race.
#[derive(Debug)]
pub(crate) enum RequestBody {
    Stream(Incoming),
    /// A body already read in full (by a WASM filter that saw it).
    Buffered(Option<Bytes>),
    /// A body streamed through WASM filters.
    Filtered(Box<crate::wasm::Filtered<Incoming>>),
    Empty,
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Stream(body)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Stream(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Buffered(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Filtered(body) => Pin::new(body.as_mut()).poll_frame(cx),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(body) => body.is_end_stream(),
            Self::Buffered(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Self::Filtered(body) => body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(body) => body.size_hint(),
            Self::Filtered(body) => body.size_hint(),
            Self::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

type Sender = SendRequest<RequestBody>;

/// An idle connection and when it became idle.
struct Idle {
    sender: Sender,
    since: Instant,
}

struct Inner {
    /// Per endpoint, oldest first: checkout pops the most recently used.
    idle: Mutex<HashMap<Key, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    sweeping: AtomicBool,
}

/// HTTP/1.1 connections to backends, reused across requests.
#[derive(Clone)]
pub(crate) struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("idle_endpoints", &self.inner.idle.lock().len()).finish()
    }
}

/// Why the pool could not deliver a response head.
#[derive(Debug)]
enum SendError {
    ConnectTimeout,
    Connect(io::Error),
    Tls(io::Error),
    Http(hyper::Error),
}

impl Pool {
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let inner = Inner {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
            sweeping: AtomicBool::new(false),
        };
        Self { inner: Arc::new(inner) }
    }

    /// A live idle connection to `key`, if one is fresh; expired ones are dropped on the way.
    fn checkout(&self, key: &Key) -> Option<Sender> {
        let now = Instant::now();
        let mut idle = self.inner.idle.lock();
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if now.saturating_duration_since(conn.since) >= self.inner.idle_timeout {
                // Oldest first: everything below is older still.
                list.clear();
                return None;
            }
            if !conn.sender.is_closed() {
                return Some(conn.sender);
            }
        }
        None
    }

    /// A ready connection: a pooled one (`true`) or a new one (`false`).
    async fn acquire(&self, key: &Key) -> Result<(Sender, bool), SendError> {
        while let Some(mut sender) = self.checkout(key) {
            // Usually immediate; fails if the backend closed the connection meanwhile.
            if sender.ready().await.is_ok() {
                return Ok((sender, true));
            }
        }
        Ok((self.connect(key).await?, false))
    }

    /// Connects, handshakes and spawns the connection's driver (once per connection).
    async fn connect(&self, key: &Key) -> Result<Sender, SendError> {
        let stream = tokio::time::timeout(self.inner.connect_timeout, tcp_connect(key))
            .await
            .map_err(|_| SendError::ConnectTimeout)?
            .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        match key {
            Key::Tls(t) => {
                let tls = tokio::time::timeout(self.inner.connect_timeout, t.handshake(stream))
                    .await
                    .map_err(|_| SendError::ConnectTimeout)?
                    .map_err(SendError::Tls)?;
                http1_handshake(tls).await
            }
            Key::Addr(_) | Key::Dns(_) => http1_handshake(stream).await,
        }
    }

    /// Sends a request; retries once on a new connection when a reused one turned out to be
    /// closed before answering (the keep-alive race), if the request can be sent again.
    async fn request(
        &self,
        key: Key,
        req: Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let (parts, body) = req.into_parts();
        let empty = body.is_end_stream();
        let body = if empty { RequestBody::Empty } else { body };
        let req = Request::from_parts(parts, body);
        let (mut sender, reused) = self.acquire(&key).await?;
        // Only a reused connection can be stale; only a bodiless idempotent request is resent.
        let again = (reused && empty && req.method().is_idempotent()).then(|| copy_head(&req));
        let resp = match sender.try_send_request(req).await {
            Ok(resp) => resp,
            Err(mut e) if reused => {
                let retry = match e.take_message() {
                    Some(unsent) => Some(unsent),
                    None if is_stale(e.error()) => again,
                    None => None,
                };
                let Some(req) = retry else { return Err(SendError::Http(e.into_error())) };
                tracing::debug!(error = %e.error(), "reused upstream connection failed; retrying");
                sender = self.connect(&key).await?;
                sender.send_request(req).await.map_err(SendError::Http)?
            }
            Err(e) => return Err(SendError::Http(e.into_error())),
        };
        let (parts, body) = resp.into_parts();
        let mut body = UpstreamBody {
            body,
            reuse: Some(Reuse { pool: Arc::downgrade(&self.inner), key, sender }),
        };
        if body.body.is_end_stream() {
            // No body to read (HEAD, 204, 304, empty): the server may never poll it.
            body.release();
        }
        Ok(Response::from_parts(parts, body))
    }
}

impl Inner {
    fn checkin(self: &Arc<Self>, key: Key, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.idle.lock();
            let list = idle.entry(key).or_default();
            if list.len() >= MAX_IDLE_PER_ENDPOINT {
                return;
            }
            list.push(Idle { sender, since: Instant::now() });
        }
        if !self.sweeping.swap(true, Ordering::Relaxed)
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(sweep(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Closes expired and dead idle connections of every endpoint.
    fn evict(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock();
        idle.retain(|_, list| {
            list.retain(|c| {
                now.saturating_duration_since(c.since) < self.idle_timeout && !c.sender.is_closed()
            });
            !list.is_empty()
        });
    }
}

/// Evicts expired connections of endpoints no request checks out; ends with the pool.
async fn sweep(pool: Weak<Inner>, idle_timeout: Duration) {
    let mut tick = tokio::time::interval((idle_timeout / 2).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(inner) => inner.evict(),
            None => return,
        }
    }
}

/// The HTTP/1.1 handshake; spawns the connection's driver.
async fn http1_handshake<S>(stream: S) -> Result<Sender, SendError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(SendError::Http)?;
    tokio::spawn(async move {
        // With upgrades: a 101 hands the connection over to a tunnel.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

pub(crate) async fn tcp_connect(key: &Key) -> io::Result<TcpStream> {
    match key {
        Key::Addr(addr) | Key::Tls(TlsEndpoint { addr, .. }) => TcpStream::connect(*addr).await,
        Key::Dns(authority) => {
            let mut last = None;
            for addr in tokio::net::lookup_host(authority.as_str()).await? {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{authority} has no address"))
            }))
        }
    }
}

/// The head of a bodiless request, kept to send it again.
fn copy_head(req: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Whether a send on a reused connection failed before any response byte: the backend had
/// closed the connection (or reset it) while it sat idle.
fn is_stale(err: &hyper::Error) -> bool {
    if err.is_canceled() || err.is_incomplete_message() {
        return true;
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return matches!(io.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe);
        }
        source = e.source();
    }
    false
}

/// What returns a connection to the pool.
struct Reuse {
    pool: Weak<Inner>,
    key: Key,
    sender: Sender,
}

/// A response body from a pooled connection: at end-of-stream the connection goes back to
/// the pool; dropped earlier (or failed), the connection closes with it.
pub(crate) struct UpstreamBody {
    body: Incoming,
    reuse: Option<Reuse>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("reusable", &self.reuse.is_some()).finish()
    }
}

impl UpstreamBody {
    /// A body from a connection that is not pooled here (h2c: multiplexed, shared).
    pub(crate) fn unpooled(body: Incoming) -> Self {
        Self { body, reuse: None }
    }

    fn release(&mut self) {
        if let Some(Reuse { pool, key, sender }) = self.reuse.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.checkin(key, sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Err(_)) => this.reuse = None,
            // Release on the last frame: the server may not poll again once it saw the end.
            Some(Ok(_)) if this.body.is_end_stream() => this.release(),
            Some(Ok(_)) => {}
            None => this.release(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Sends a request, bounding the wait for the response head (connect included).
pub(crate) async fn send(
    pool: &Pool,
    key: Key,
    req: Request<RequestBody>,
    timeout: Duration,
    backend: &str,
) -> Result<Response<UpstreamBody>, RequestError> {
    match tokio::time::timeout(timeout, pool.request(key, req)).await {
        Err(_) | Ok(Err(SendError::ConnectTimeout)) => {
            Err(RequestError::Timeout { backend: backend.to_owned() })
        }
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(SendError::Connect(source))) => {
            Err(RequestError::Connect { backend: backend.to_owned(), source })
        }
        Ok(Err(SendError::Tls(source))) => {
            Err(RequestError::BackendTls { backend: backend.to_owned(), source })
        }
        Ok(Err(SendError::Http(source))) => {
            Err(RequestError::Upstream { backend: backend.to_owned(), source })
        }
    }
}
