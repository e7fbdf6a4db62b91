//! The server: sockets, connections, TLS handshakes, reload (`apply`) and drain (`shutdown`).

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use gatehouse_model::{
    DataPlaneReport, ListenerId, ListenerProblem, ListenerProblemKind, Protocol,
};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;
use crate::service::{self, ConnInfo};
use crate::table::RouteTable;
use crate::upstream::Pool;
use crate::wasm;

/// Limits and timeouts of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    /// Bound for a TLS handshake and for reading a request head (HTTP/1.1; also idle keep-alive).
    pub header_read_timeout: Duration,
    /// Upper bound for request headers (HTTP/1.1 read buffer, at least 8 KiB; HTTP/2 header list).
    pub max_header_bytes: usize,
    pub upstream_connect_timeout: Duration,
    /// Bound for the upstream response head; the body then streams without a bound.
    pub upstream_timeout: Duration,
    /// Idle pooled upstream connections are closed after this.
    pub upstream_idle_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Life phase, broadcast to every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish in-flight requests, accept no new ones.
    Draining,
    /// Grace is over: drop connections.
    Stopped,
}

/// State shared by the accept loops, connections and requests.
pub(crate) struct Shared {
    pub table: ArcSwap<RouteTable>,
    pub metrics: Metrics,
    pub pool: Pool,
    /// Multiplexed HTTP/2 (h2c) connections, for backends that speak it.
    pub h2c: crate::h2c::H2cPool,
    pub options: ProxyOptions,
    /// Bounds the request mirrors in flight ([`crate::mirror`]).
    pub mirror_permits: Arc<Semaphore>,
    http: auto::Builder<TokioExecutor>,
    phase: watch::Sender<Phase>,
    ready: AtomicBool,
}

/// Reload-side state; only `apply` and `shutdown` touch it, never a request.
#[derive(Debug, Default)]
struct Control {
    sockets: HashMap<SocketAddr, JoinHandle<()>>,
    shut_down: bool,
}

/// The HTTP data plane: serves the current [`RouteTable`] on the sockets it asks for.
pub struct Proxy {
    shared: Arc<Shared>,
    control: Mutex<Control>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("generation", &self.shared.table.load().generation())
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy with default options and an empty table; registers its metrics.
    pub fn new(metrics: &mut Registry) -> Self {
        Self::with_options(metrics, ProxyOptions::default())
    }

    /// A proxy with explicit limits; serves nothing until [`Proxy::apply`].
    pub fn with_options(metrics: &mut Registry, options: ProxyOptions) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_buf_size(options.max_header_bytes.max(8 * 1024));
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX));
        let shared = Shared {
            table: ArcSwap::from_pointee(RouteTable::default()),
            metrics: Metrics::register(metrics),
            pool: Pool::new(options.upstream_connect_timeout, options.upstream_idle_timeout),
            h2c: crate::h2c::H2cPool::new(options.upstream_connect_timeout),
            options,
            mirror_permits: Arc::new(Semaphore::new(crate::mirror::MAX_MIRRORS_IN_FLIGHT)),
            http,
            phase: watch::Sender::new(Phase::Serving),
            ready: AtomicBool::new(false),
        };
        Self { shared: Arc::new(shared), control: Mutex::new(Control::default()) }
    }

    /// Publishes a table: binds sockets it newly needs, swaps the table in one atomic store,
    /// then closes sockets it no longer needs. Sockets present before and after stay open.
    ///
    /// The report holds only what applying found: one `PortUnavailable` per listener whose
    /// socket could not be bound. Callers merge the problems [`crate::compile()`] returned
    /// (also in [`RouteTable::problems`]). A socket that failed to bind is retried on the
    /// next apply.
    pub async fn apply(&self, table: Arc<RouteTable>, generation: u64) -> DataPlaneReport {
        let mut control = self.control.lock().await;
        let mut problems = Vec::new();
        if control.shut_down {
            return DataPlaneReport { generation, listener_problems: problems };
        }
        let wanted: BTreeSet<SocketAddr> = table.addresses().collect();
        let mut fresh = Vec::new();
        for addr in wanted.iter().filter(|a| !control.sockets.contains_key(a)) {
            match bind(*addr) {
                Ok(listener) => fresh.push((*addr, listener)),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot bind listener socket");
                    for l in
                        table.sockets.get(addr).map(|s| s.listeners.as_slice()).unwrap_or_default()
                    {
                        problems.push(ListenerProblem {
                            listener: l.id.clone(),
                            kind: ListenerProblemKind::PortUnavailable,
                            message: format!("cannot listen on {addr}: {e}"),
                        });
                    }
                }
            }
        }

        self.shared.table.store(table);

        for (addr, listener) in fresh {
            tracing::info!(%addr, "listening");
            let task = tokio::spawn(accept_loop(self.shared.clone(), addr, listener));
            control.sockets.insert(addr, task);
        }
        let gone: Vec<SocketAddr> =
            control.sockets.keys().filter(|a| !wanted.contains(a)).copied().collect();
        for addr in gone {
            if let Some(task) = control.sockets.remove(&addr) {
                task.abort();
                let _ = task.await;
                tracing::info!(%addr, "stopped listening");
            }
        }
        self.shared.ready.store(true, Ordering::Release);
        DataPlaneReport { generation, listener_problems: problems }
    }

    /// True once a table was applied, until shutdown starts.
    pub fn ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// The table currently served (for the admin `/config` endpoint).
    pub fn table(&self) -> Arc<RouteTable> {
        self.shared.table.load_full()
    }

    /// Stops accepting, lets in-flight requests finish for up to `grace`, then drops the rest.
    pub async fn shutdown(&self, grace: Duration) {
        let mut control = self.control.lock().await;
        control.shut_down = true;
        self.shared.ready.store(false, Ordering::Release);
        for (_, task) in control.sockets.drain() {
            task.abort();
            let _ = task.await;
        }
        self.shared.phase.send_replace(Phase::Draining);
        if tokio::time::timeout(grace, self.shared.phase.closed()).await.is_err() {
            tracing::warn!(?grace, "drain grace expired; closing remaining connections");
            self.shared.phase.send_replace(Phase::Stopped);
            let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.phase.closed()).await;
        }
    }
}

/// Binds a listening socket with `SO_REUSEADDR` (and `IP_FREEBIND` where it works).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    // Best effort: lets a gateway address bind before it is assigned to an interface.
    let _ = if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)
    } else {
        socket.set_freebind_v4(true)
    };
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(shared: Arc<Shared>, socket: SocketAddr, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(shared.clone(), socket, stream, peer));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) => {}
            Err(e) => {
                // Out of file descriptors or memory: back off instead of spinning.
                tracing::warn!(%socket, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    socket: SocketAddr,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let _active = shared.metrics.connection();
    let phase = shared.phase.subscribe();
    if *phase.borrow() != Phase::Serving {
        return;
    }
    let _ = stream.set_nodelay(true);
    let Some(protocol) = shared.table.load().sockets.get(&socket).map(|s| s.protocol) else {
        return;
    };
    let mut info = ConnInfo::new(socket, peer, protocol);
    match protocol {
        Protocol::Http => serve_http(&shared, TokioIo::new(stream), info, phase).await,
        Protocol::Https => match handshake(&shared, socket, stream).await {
            Some((tls, listener)) => {
                info.tls_listener = Some(listener);
                serve_http(&shared, TokioIo::new(tls), info, phase).await;
            }
            None => shared.metrics.tls_handshake_failed(),
        },
    }
}

/// Terminates TLS: the server name picks the listener (isolation rules), whose config in the
/// current table picks the certificate. Bounded by the header read timeout.
async fn handshake(
    shared: &Shared,
    socket: SocketAddr,
    stream: TcpStream,
) -> Option<(TlsStream<TcpStream>, ListenerId)> {
    let run = async {
        let start =
            LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream).await.ok()?;
        let sni = start
            .client_hello()
            .server_name()
            .map(|name| service::host_of(name).into_owned())
            .unwrap_or_default();
        let (config, id) = {
            let table = shared.table.load();
            let listener = table.sockets.get(&socket)?.listener_for(&sni)?;
            (listener.tls.clone()?, listener.id.clone())
        };
        match start.into_stream(config).await {
            Ok(tls) => Some((tls, id)),
            Err(e) => {
                tracing::debug!(%socket, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    tokio::time::timeout(shared.options.header_read_timeout, run).await.ok().flatten()
}

async fn serve_http<I>(
    shared: &Arc<Shared>,
    io: I,
    info: ConnInfo,
    mut phase: watch::Receiver<Phase>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(service::handle(&shared, &info, req).await) }
    });
    let conn = shared.http.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            res = wasm::EndAfterPoll(conn.as_mut()) => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = phase.changed() => {
                let now = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Draining };
                match now {
                    Phase::Serving => {}
                    Phase::Draining => {
                        conn.as_mut().graceful_shutdown();
                        if changed.is_err() {
                            let _ = wasm::EndAfterPoll(conn.as_mut()).await;
                            return;
                        }
                    }
                    Phase::Stopped => return,
                }
            }
        }
    }
}
