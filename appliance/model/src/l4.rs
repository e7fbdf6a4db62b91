//! L4 services: connections to a VIP (address, port, transport) balanced over weighted
//! backends without looking into the stream. The XDP data plane serves them.
//!
//! L4 listeners (a sibling of [`L4Service`]): Gateway listeners of protocol TCP, UDP and TLS
//! with the TCPRoutes, UDPRoutes and TLSRoutes attached to them. The user-space L4 proxy
//! serves them; a TCP or UDP listener's decision is the same as an [`L4Service`]'s
//! ([`L4Listener::service`]), so the XDP data plane can serve it too.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use crate::{Hostname, ListenerId, ListenerTls, ObjectId};

/// Transport protocol of an L4 service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum L4Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for L4Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
        })
    }
}

/// A backend of an L4 service and its share of new connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct L4Backend {
    pub addr: SocketAddr,
    /// Relative weight; 0 takes no new connections.
    pub weight: u32,
}

/// One L4 service: every address in `addresses` on `port`/`protocol` is a VIP balanced over
/// `backends`; a connection keeps its backend for its lifetime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct L4Service {
    /// `L4Service toml/<name>` for the TOML file, `Service <ns>/<name>` for a Kubernetes
    /// Service of type LoadBalancer.
    pub id: ObjectId,
    /// The VIPs; empty while LB-IPAM has none to give (the service then serves nothing).
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub protocol: L4Protocol,
    pub backends: Vec<L4Backend>,
}

impl L4Service {
    /// Backends that take new connections (weight above 0) of the VIP's family.
    pub fn serving_backends(&self, vip: IpAddr) -> impl Iterator<Item = &L4Backend> {
        self.backends.iter().filter(move |b| b.weight > 0 && b.addr.is_ipv4() == vip.is_ipv4())
    }
}

/// What an L4 listener does with a connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum L4Mode {
    /// TCP: every connection to the first attached route's backends (TCPRoute).
    Tcp,
    /// UDP: every datagram flow to the first attached route's backends (UDPRoute).
    Udp,
    /// TLS passthrough: routed by the ClientHello's SNI, the stream relayed still encrypted.
    TlsPassthrough,
    /// TLS terminated with the listener's certificates; plaintext relayed to the backend.
    TlsTerminate(ListenerTls),
}

impl L4Mode {
    /// The transport the listener binds.
    pub fn protocol(&self) -> L4Protocol {
        match self {
            L4Mode::Udp => L4Protocol::Udp,
            _ => L4Protocol::Tcp,
        }
    }

    /// Whether connections are routed by SNI (TLS listeners).
    pub fn is_tls(&self) -> bool {
        matches!(self, L4Mode::TlsPassthrough | L4Mode::TlsTerminate(_))
    }
}

/// A Gateway listener of protocol TCP, UDP or TLS and the routes attached to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L4Listener {
    pub id: ListenerId,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub mode: L4Mode,
    /// TLS listeners: the SNI names this listener takes (`None`: any).
    pub hostname: Option<Hostname>,
    /// Attached routes, oldest first (the order Gateway API gives precedence in).
    pub routes: Vec<L4Route>,
}

/// A TCPRoute, UDPRoute or TLSRoute as attached to one L4 listener.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L4Route {
    pub id: ObjectId,
    /// TLSRoute: the SNI names it takes, already intersected with the listener's; empty for
    /// TCP/UDP routes (and a TLSRoute without hostnames: any name the listener takes).
    pub hostnames: Vec<Hostname>,
    /// Weighted backends; an empty list (or all weights 0) refuses connections.
    pub backends: Vec<L4Backend>,
}

impl L4Listener {
    /// A TCP or UDP listener as an [`L4Service`] (the first route's backends), for a data
    /// plane that balances VIPs; `None` for TLS listeners and listeners without routes.
    pub fn service(&self) -> Option<L4Service> {
        if self.mode.is_tls() {
            return None;
        }
        let route = self.routes.first()?;
        Some(L4Service {
            id: route.id.clone(),
            addresses: self.addresses.clone(),
            port: self.port,
            protocol: self.mode.protocol(),
            backends: route.backends.clone(),
        })
    }
}

/// Bounds of the user-space L4 proxy (hot-reloaded; `[l4]` in the TOML file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct L4Limits {
    /// A TCP connection with no byte in either direction for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// A UDP session (one client address) with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
    /// UDP sessions per listener socket; datagrams of new clients beyond it are dropped.
    pub udp_max_sessions: usize,
    /// A TLS client must finish its ClientHello within this.
    pub client_hello_timeout: Duration,
    /// Connecting to one backend gives up after this (the next backend is tried).
    pub connect_timeout: Duration,
}

impl Default for L4Limits {
    fn default() -> Self {
        Self {
            tcp_idle_timeout: Duration::from_secs(3600),
            udp_idle_timeout: Duration::from_secs(60),
            udp_max_sessions: 4096,
            client_hello_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use super::*;

    #[test]
    fn serving_backends_skip_zero_weights_and_the_other_family() {
        let b = |a: &str, weight| L4Backend { addr: a.parse().unwrap(), weight };
        let service = L4Service {
            id: ObjectId::new("L4Service", "toml", "db"),
            addresses: vec!["192.0.2.1".parse().unwrap()],
            port: 5432,
            protocol: L4Protocol::Tcp,
            backends: vec![b("10.0.0.1:5432", 1), b("10.0.0.2:5432", 0), b("[fd00::1]:5432", 1)],
        };
        let vip: IpAddr = "192.0.2.1".parse().unwrap();
        let serving: Vec<String> =
            service.serving_backends(vip).map(|b| b.addr.to_string()).collect();
        assert_eq!(serving, ["10.0.0.1:5432"]);
        assert_eq!(L4Protocol::Udp.to_string(), "udp");
    }

    #[test]
    fn tcp_and_udp_listeners_are_services_tls_ones_are_not() {
        let route = L4Route {
            id: ObjectId::new("UDPRoute", "apps", "dns"),
            hostnames: Vec::new(),
            backends: vec![L4Backend { addr: "10.0.0.1:53".parse().unwrap(), weight: 1 }],
        };
        let mut listener = L4Listener {
            id: ListenerId {
                gateway: ObjectId::new("Gateway", "infra", "edge"),
                name: "dns".into(),
            },
            addresses: vec!["192.0.2.1".parse().unwrap()],
            port: 53,
            mode: L4Mode::Udp,
            hostname: None,
            routes: vec![route],
        };
        let service = listener.service().unwrap();
        assert_eq!((service.port, service.protocol), (53, L4Protocol::Udp));
        assert_eq!(service.id, ObjectId::new("UDPRoute", "apps", "dns"));
        listener.mode = L4Mode::TlsPassthrough;
        assert_eq!(listener.mode.protocol(), L4Protocol::Tcp);
        assert!(listener.service().is_none());
        listener.mode = L4Mode::Tcp;
        listener.routes.clear();
        assert!(listener.service().is_none());
    }
}
