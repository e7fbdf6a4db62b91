//! UDP listeners: one session per client address, each with its own socket connected to the
//! backend chosen when it started. The flow table is bounded and sessions expire when idle;
//! replies leave from the listener's socket. Datagrams are sent or dropped, never queued.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::compile::{Bind, Frontend, Plan};
use crate::metrics::L4Metrics;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// Drops are logged at most once per this, with the count since.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

struct Session {
    id: u64,
    upstream: Arc<UdpSocket>,
    /// Milliseconds since the listener started of the last datagram either way.
    last: Arc<AtomicU64>,
    task: tokio::task::AbortHandle,
}

/// Serves a UDP socket until the task is aborted (which ends its sessions too).
pub(crate) async fn serve(
    socket: Arc<UdpSocket>,
    bind: Bind,
    plan: Arc<ArcSwap<Plan>>,
    metrics: Arc<L4Metrics>,
) {
    let mut table = Table { sessions: HashMap::new(), metrics: metrics.clone() };
    let sessions = &mut table.sessions;
    // Each session reports its end once: at most as many messages as sessions.
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
    let start = Instant::now();
    let mut next_id = 0u64;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut dropped_since_log = 0u64;
    let mut last_log: Option<Instant> = None;
    loop {
        tokio::select! {
            Some((peer, id)) = ended_rx.recv() => {
                if sessions.get(&peer).is_some_and(|s| s.id == id) {
                    sessions.remove(&peer);
                    metrics.udp_sessions.dec();
                }
            }
            received = socket.recv_from(&mut buf) => {
                let (n, peer) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        // An ICMP error for an earlier send, or a transient failure.
                        tracing::debug!(addr = %bind.addr, "UDP receive: {e}");
                        continue;
                    }
                };
                let now_ms = millis(start);
                if let Some(session) = sessions.get(&peer) {
                    session.last.store(now_ms, Ordering::Relaxed);
                    if session.upstream.try_send(&buf[..n]).is_err() {
                        metrics.udp_dropped.inc();
                    }
                    continue;
                }
                let plan = plan.load();
                let Some(Frontend::Datagram(target)) = plan.frontends.get(&bind) else { continue };
                let limits = plan.limits;
                let mut drop_reason = None;
                if sessions.len() >= limits.udp_max_sessions {
                    drop_reason = Some("the session table is full");
                }
                let backend = crate::pick::order(&target.backends, &mut rand::rng()).first().copied();
                let upstream = match (drop_reason, backend) {
                    (None, Some(backend)) => match open(backend).await {
                        Ok(s) => Some(Arc::new(s)),
                        Err(e) => {
                            tracing::debug!(%backend, "UDP session socket: {e}");
                            drop_reason = Some("the backend socket could not be opened");
                            None
                        }
                    },
                    (None, None) => {
                        drop_reason = Some("the route has no backend");
                        None
                    }
                    _ => None,
                };
                let Some(upstream) = upstream else {
                    metrics.udp_dropped.inc();
                    dropped_since_log += 1;
                    if last_log.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
                        tracing::warn!(
                            addr = %bind.addr,
                            dropped = dropped_since_log,
                            sessions = sessions.len(),
                            "UDP datagrams of new clients dropped: {}",
                            drop_reason.unwrap_or_default()
                        );
                        dropped_since_log = 0;
                        last_log = Some(Instant::now());
                    }
                    continue;
                };
                // Awaited, not `try_send`: a socket tokio has not polled yet reports no write
                // readiness, and its buffer is empty, so this completes at once.
                if upstream.send(&buf[..n]).await.is_err() {
                    metrics.udp_dropped.inc();
                }
                next_id += 1;
                let last = Arc::new(AtomicU64::new(now_ms));
                let task = tokio::spawn(relay_replies(
                    socket.clone(),
                    upstream.clone(),
                    peer,
                    last.clone(),
                    start,
                    limits.udp_idle_timeout,
                    metrics.clone(),
                    (ended_tx.clone(), next_id),
                ));
                metrics.udp_sessions.inc();
                sessions.insert(peer, Session { id: next_id, upstream, last, task: task.abort_handle() });
            }
        }
    }
}

/// The flow table; keeps the sessions gauge true when the listener task is aborted with
/// sessions open (dropping a session ends its relay task).
struct Table {
    sessions: HashMap<SocketAddr, Session>,
    metrics: Arc<L4Metrics>,
}

impl Drop for Table {
    fn drop(&mut self) {
        let open = i64::try_from(self.sessions.len()).unwrap_or(i64::MAX);
        self.metrics.udp_sessions.dec_by(open);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn millis(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A socket of the backend's family on an ephemeral port, connected to it.
async fn open(backend: SocketAddr) -> std::io::Result<UdpSocket> {
    let any = match backend.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    socket.connect(backend).await?;
    Ok(socket)
}

/// Sends the backend's datagrams back to the client from the listener's socket until the
/// session has been idle (both ways) for `idle`.
#[allow(clippy::too_many_arguments, reason = "one session's parts, passed once")]
async fn relay_replies(
    listener: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    peer: SocketAddr,
    last: Arc<AtomicU64>,
    start: Instant,
    idle: Duration,
    metrics: Arc<L4Metrics>,
    (ended, id): (mpsc::UnboundedSender<(SocketAddr, u64)>, u64),
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            received = upstream.recv(&mut buf) => match received {
                Ok(n) => {
                    last.store(millis(start), Ordering::Relaxed);
                    if listener.try_send_to(&buf[..n], peer).is_err() {
                        metrics.udp_dropped.inc();
                    }
                }
                // ICMP port unreachable from the backend: the session goes on (the backend
                // may come back), but the datagram is lost.
                Err(e) => tracing::debug!(%peer, "UDP backend: {e}"),
            },
            () = tokio::time::sleep_until(deadline) => {
                let seen = start + Duration::from_millis(last.load(Ordering::Relaxed));
                if Instant::now().duration_since(seen) >= idle {
                    break;
                }
            }
        }
    }
    let _ = ended.send((peer, id));
}
