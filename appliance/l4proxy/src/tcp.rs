//! TCP listeners: accept, choose a backend by weight (the next one when it cannot be
//! reached), splice.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use gatehouse_model::L4Backend;
use tokio::net::{TcpListener, TcpStream};

use crate::compile::{Bind, Frontend, Plan};
use crate::metrics::L4Metrics;

/// Accepts connections until the task is aborted; each is served by the plan current at
/// its accept.
pub(crate) async fn serve(
    listener: TcpListener,
    bind: Bind,
    plan: Arc<ArcSwap<Plan>>,
    metrics: Arc<L4Metrics>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: pause rather than spin.
                tracing::warn!(addr = %bind.addr, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        metrics.connections.inc();
        let _ = stream.set_nodelay(true);
        let plan = plan.load_full();
        let metrics = metrics.clone();
        match plan.frontends.get(&bind) {
            Some(Frontend::Stream(target)) => {
                let backends = target.backends.clone();
                tokio::spawn(async move {
                    let limits = plan.limits;
                    let Some(upstream) =
                        connect(&backends, limits.connect_timeout, peer, &metrics).await
                    else {
                        return;
                    };
                    if let Err(e) =
                        crate::splice::splice(stream, upstream, limits.tcp_idle_timeout).await
                    {
                        tracing::debug!(%peer, "TCP connection ended: {e}");
                    }
                });
            }
            Some(Frontend::Tls(_)) => {
                tokio::spawn(crate::tls::serve(stream, peer, bind, plan, metrics));
            }
            _ => {}
        }
    }
}

/// Connects to the first backend that answers, trying them in weighted random order.
pub(crate) async fn connect(
    backends: &[L4Backend],
    timeout: Duration,
    peer: SocketAddr,
    metrics: &L4Metrics,
) -> Option<TcpStream> {
    let order = crate::pick::order(backends, &mut rand::rng());
    for backend in &order {
        match tokio::time::timeout(timeout, TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Ok(Err(e)) => tracing::debug!(%peer, %backend, "backend refused: {e}"),
            Err(_) => tracing::debug!(%peer, %backend, "backend did not answer in {timeout:?}"),
        }
    }
    metrics.connect_failures.inc();
    tracing::debug!(%peer, tried = order.len(), "no backend reachable; connection closed");
    None
}
