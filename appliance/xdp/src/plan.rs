//! The XDP plan: what the maps should hold at one generation. Pure data, built from the
//! compiled snapshot (or by hand in tests), applied by [`crate::Datapath::apply`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Transport protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4Protocol {
    Tcp,
    Udp,
}

impl L4Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            L4Protocol::Tcp => gatehouse_ebpf_common::PROTO_TCP,
            L4Protocol::Udp => gatehouse_ebpf_common::PROTO_UDP,
        }
    }
}

/// How balanced packets reach a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// Full NAT: destination and source rewritten, replies rewritten back in XDP.
    #[default]
    Nat,
    /// IPIP / IPv6-in-IPv6 encapsulation; the backend answers the client directly (DSR).
    Ipip,
}

/// A backend and its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightedAddr {
    pub addr: SocketAddr,
    pub weight: u32,
}

/// What a VIP does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipAction {
    /// Hand to the local stack (an L7 listener of the proxy).
    Pass,
    /// Balance over the backends.
    Balance {
        backends: Vec<WeightedAddr>,
        forwarding: Forwarding,
        /// New TCP connections per second per CPU; 0 = no limit.
        syn_limit: u32,
    },
}

/// One entry of the VIP table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: L4Protocol,
    pub action: VipAction,
}

/// Everything the XDP maps hold at one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub generation: u64,
    pub vips: Vec<Vip>,
    /// Addresses answered for by ARP / NDP.
    pub owned: Vec<IpAddr>,
    /// Sources whose packets to any VIP are dropped: (network, prefix length).
    pub drop_sources: Vec<(IpAddr, u8)>,
    /// Source address of full-NAT and IPIP packets to IPv4 backends.
    pub source_v4: Option<Ipv4Addr>,
    /// Source address of full-NAT and IPIP packets to IPv6 backends.
    pub source_v6: Option<Ipv6Addr>,
}

/// Table sizes, fixed when the program is loaded (boot-only settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_vips: u32,
    pub max_backends: u32,
    /// Maglev table length per VIP; a prime.
    pub ring_size: u32,
    /// Connection table entries (and as many full-NAT reverse entries).
    pub max_flows: u32,
}

impl Default for Limits {
    fn default() -> Self {
        use gatehouse_ebpf_common as c;
        Limits {
            max_vips: c::DEFAULT_MAX_VIPS,
            max_backends: c::DEFAULT_MAX_BACKENDS,
            ring_size: c::DEFAULT_RING_SIZE,
            max_flows: c::DEFAULT_MAX_FLOWS,
        }
    }
}
