//! L4 services: connections to a VIP (address, port, transport) balanced over weighted
//! backends without looking into the stream. The XDP data plane serves them today; the
//! user-space proxy can serve the same type for TCPRoute/UDPRoute later.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::ObjectId;

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
}
