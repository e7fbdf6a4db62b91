//! The user-space L4 data plane: Gateway listeners of protocol TCP, UDP and TLS
//! ([`gatehouse_model::L4Listener`]) with their TCPRoutes, UDPRoutes and TLSRoutes.
//!
//! Place in the data flow: the daemon hands every generation's `Desired` to
//! [`L4Proxy::apply`], which compiles it into one immutable [`Plan`] and swaps it in at once
//! (one `ArcSwap` for every socket); accept loops read the plan per connection or datagram
//! and never a config source. Sockets are bound and closed as listeners come and go; a
//! socket that cannot be bound becomes a listener problem (status `PortUnavailable`).
//!
//! - TCP: weighted backend choice, a backend that refuses (or times out) gives way to the
//!   next; the stream is spliced with half-close and an idle timeout.
//! - UDP: one session per client address (its own socket to the backend), a bounded flow
//!   table with idle expiry; replies leave from the listener's socket; a datagram is sent or
//!   dropped, never queued.
//! - TLS: the ClientHello is read (with a deadline and a size bound) and parsed by rustls;
//!   its SNI picks the listener and route. Passthrough replays the exact bytes to the
//!   backend and splices; Terminate completes the handshake with the listener's certificate
//!   and forwards plaintext.

mod compile;
mod metrics;
mod pick;
mod splice;
mod tcp;
mod tls;
mod udp;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use gatehouse_model::{Desired, L4Limits, ListenerId, ListenerProblem, ListenerProblemKind};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;

pub use compile::{Bind, Frontend, Plan, compile};
pub use metrics::L4Metrics;
pub use tls::{HelloError, HelloReader};

/// The L4 data plane: its sockets and the plan they serve.
#[derive(Debug)]
pub struct L4Proxy {
    plan: Arc<ArcSwap<Plan>>,
    sockets: Mutex<BTreeMap<Bind, JoinHandle<()>>>,
    metrics: Arc<L4Metrics>,
}

impl L4Proxy {
    /// A data plane serving nothing yet; its metrics go to `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        Self {
            plan: Arc::new(ArcSwap::from_pointee(Plan::default())),
            sockets: Mutex::new(BTreeMap::new()),
            metrics: Arc::new(L4Metrics::register(registry)),
        }
    }

    /// Serves the L4 listeners of `desired` with `limits`: binds new sockets, swaps the plan
    /// in one step, closes sockets no listener needs. Established connections keep their
    /// backend. Returns the listeners that cannot be served as asked.
    pub async fn apply(&self, desired: &Desired, limits: L4Limits) -> Vec<ListenerProblem> {
        let (plan, mut problems) = compile(desired, limits);
        let wanted: Vec<(Bind, Vec<ListenerId>)> =
            plan.frontends.iter().map(|(bind, f)| (*bind, f.listeners())).collect();
        let missing: Vec<(Bind, Vec<ListenerId>)> = {
            let sockets = self.sockets.lock();
            wanted.into_iter().filter(|(bind, _)| !sockets.contains_key(bind)).collect()
        };
        let mut bound = Vec::new();
        for (bind, listeners) in missing {
            match self.bind(bind).await {
                Ok(task) => bound.push((bind, task)),
                Err(e) => {
                    for listener in listeners {
                        problems.push(ListenerProblem {
                            listener,
                            kind: ListenerProblemKind::PortUnavailable,
                            message: format!("cannot bind {} {}: {e}", bind.protocol, bind.addr),
                        });
                    }
                }
            }
        }
        self.plan.store(Arc::new(plan));
        let plan = self.plan.load();
        let mut sockets = self.sockets.lock();
        sockets.extend(bound);
        sockets.retain(|bind, task| {
            let keep = plan.frontends.contains_key(bind);
            if !keep {
                tracing::info!(addr = %bind.addr, protocol = %bind.protocol, "L4 listener closed");
                task.abort();
            }
            keep
        });
        problems
    }

    async fn bind(&self, bind: Bind) -> std::io::Result<JoinHandle<()>> {
        let plan = self.plan.clone();
        let metrics = self.metrics.clone();
        let task = match bind.protocol {
            gatehouse_model::L4Protocol::Tcp => {
                let listener = tokio::net::TcpListener::from_std(socket(bind)?.into())?;
                tokio::spawn(tcp::serve(listener, bind, plan, metrics))
            }
            gatehouse_model::L4Protocol::Udp => {
                let socket = tokio::net::UdpSocket::from_std(socket(bind)?.into())?;
                tokio::spawn(udp::serve(Arc::new(socket), bind, plan, metrics))
            }
        };
        tracing::info!(addr = %bind.addr, protocol = %bind.protocol, "L4 listener bound");
        Ok(task)
    }

    /// The sockets currently bound.
    pub fn bound(&self) -> Vec<Bind> {
        self.sockets.lock().keys().copied().collect()
    }

    /// Closes every listening socket (shutdown); established connections end on their own.
    pub fn shutdown(&self) {
        for (_, task) in std::mem::take(&mut *self.sockets.lock()) {
            task.abort();
        }
    }
}

/// A listening TCP or bound UDP socket with `IP_FREEBIND` (best effort), as the HTTP proxy's:
/// a Gateway address from the pools binds before (or without) being on an interface.
fn socket(bind: Bind) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (kind, protocol) = match bind.protocol {
        gatehouse_model::L4Protocol::Tcp => (Type::STREAM, Protocol::TCP),
        gatehouse_model::L4Protocol::Udp => (Type::DGRAM, Protocol::UDP),
    };
    let socket = Socket::new(Domain::for_address(bind.addr), kind, Some(protocol))?;
    if bind.protocol == gatehouse_model::L4Protocol::Tcp {
        socket.set_reuse_address(true)?;
    }
    let _ = if bind.addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)
    } else {
        socket.set_freebind_v4(true)
    };
    socket.set_nonblocking(true)?;
    socket.bind(&bind.addr.into())?;
    if bind.protocol == gatehouse_model::L4Protocol::Tcp {
        socket.listen(1024)?;
    }
    Ok(socket)
}

impl Drop for L4Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use gatehouse_model::{L4Listener, L4Mode, ObjectId};

    use super::*;

    #[tokio::test]
    async fn pool_addresses_bind_before_they_are_on_an_interface() {
        // 192.0.2.0/24 (TEST-NET-1) is on no interface here: IP_FREEBIND lets both bind.
        let listener = |name: &str, mode| L4Listener {
            id: ListenerId {
                gateway: ObjectId::new("Gateway", "infra", "edge"),
                name: name.into(),
            },
            addresses: vec!["192.0.2.77".parse().unwrap()],
            port: 7000,
            mode,
            hostname: None,
            routes: Vec::new(),
        };
        let desired = Desired {
            generation: 1,
            l4_listeners: vec![listener("tcp", L4Mode::Tcp), listener("udp", L4Mode::Udp)],
            ..Desired::default()
        };
        let proxy = L4Proxy::new(&mut Registry::default());
        let problems = proxy.apply(&desired, L4Limits::default()).await;
        assert!(problems.is_empty(), "{problems:?}");
        let bound: Vec<String> =
            proxy.bound().iter().map(|b| format!("{} {}", b.protocol, b.addr)).collect();
        assert_eq!(bound, ["tcp 192.0.2.77:7000", "udp 192.0.2.77:7000"]);
        proxy.shutdown();
    }
}
