//! `Desired` → [`Plan`]: the pure step between the compiled model and the map applier.
//!
//! L7 listeners become PASS entries (their packets go up to the proxy untouched, but the drop
//! list still applies); L4 services become balanced VIPs. The addresses answered for by ARP/NDP
//! are every specific, non-loopback listener address and every L4 VIP.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gatehouse_model::Desired;

use crate::plan::{Forwarding, L4Protocol, Plan, Vip, VipAction, WeightedAddr};

/// An L4 service: a VIP balanced over weighted backends. (The source-agnostic model has no L4
/// service type yet; until it does, callers build these from their own source.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L4Service {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: L4Protocol,
    pub backends: Vec<WeightedAddr>,
}

/// Plan-wide settings from the `[xdp]` configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanSettings {
    pub forwarding: Forwarding,
    pub source_v4: Option<Ipv4Addr>,
    pub source_v6: Option<Ipv6Addr>,
    /// New TCP connections per second per CPU for every L4 VIP; 0 = no limit.
    pub syn_limit: u32,
    pub drop_sources: Vec<(IpAddr, u8)>,
}

fn owned(addr: IpAddr) -> bool {
    !addr.is_loopback() && !addr.is_unspecified() && !addr.is_multicast()
}

/// Builds the XDP plan of a desired state. A VIP key claimed twice keeps its first claim
/// (L4 services first, then listeners in order).
pub fn plan(desired: &Desired, l4_services: &[L4Service], settings: &PlanSettings) -> Plan {
    let mut seen = HashSet::new();
    let mut vips = Vec::new();
    let mut owned_addrs = BTreeSet::new();
    for service in l4_services {
        if !seen.insert((service.addr, service.port, service.protocol)) {
            continue;
        }
        if owned(service.addr) {
            owned_addrs.insert(service.addr);
        }
        vips.push(Vip {
            addr: service.addr,
            port: service.port,
            protocol: service.protocol,
            action: VipAction::Balance {
                backends: service.backends.clone(),
                forwarding: settings.forwarding,
                syn_limit: settings.syn_limit,
            },
        });
    }
    for listener in &desired.listeners {
        for addr in &listener.addresses {
            // A wildcard listener has no VIP to match: its packets miss and pass anyway.
            if addr.is_unspecified() {
                continue;
            }
            if owned(*addr) {
                owned_addrs.insert(*addr);
            }
            if seen.insert((*addr, listener.port, L4Protocol::Tcp)) {
                vips.push(Vip {
                    addr: *addr,
                    port: listener.port,
                    protocol: L4Protocol::Tcp,
                    action: VipAction::Pass,
                });
            }
        }
    }
    // The NAT source address is answered for too (backends send their replies to it); it
    // must not be assigned to an interface, or the kernel drops forwarded packets from it.
    owned_addrs.extend(settings.source_v4.map(IpAddr::V4));
    owned_addrs.extend(settings.source_v6.map(IpAddr::V6));
    Plan {
        generation: desired.generation,
        vips,
        owned: owned_addrs.into_iter().collect(),
        drop_sources: settings.drop_sources.clone(),
        source_v4: settings.source_v4,
        source_v6: settings.source_v6,
    }
}

#[cfg(test)]
mod tests {
    use gatehouse_model::{Listener, ListenerId, ObjectId, Protocol};

    use super::*;

    fn listener(addresses: &[&str], port: u16) -> Listener {
        Listener {
            id: ListenerId {
                gateway: ObjectId::new("Gateway", "default", "gw"),
                name: format!("l{port}"),
            },
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            port,
            protocol: Protocol::Http,
            hostname: None,
            tls: None,
        }
    }

    #[test]
    fn listeners_pass_services_balance_and_owned_addresses_are_specific() {
        let desired = Desired {
            generation: 7,
            listeners: vec![
                listener(&["192.0.2.10", "127.0.0.1", "0.0.0.0"], 80),
                listener(&["2001:db8::10"], 443),
            ],
            http_routes: vec![],
            ..Desired::default()
        };
        let service = L4Service {
            addr: "192.0.2.20".parse().unwrap(),
            port: 5432,
            protocol: L4Protocol::Tcp,
            backends: vec![WeightedAddr { addr: "10.0.0.1:5432".parse().unwrap(), weight: 1 }],
        };
        let settings =
            PlanSettings { source_v4: Some("10.0.0.254".parse().unwrap()), ..Default::default() };
        let plan = plan(&desired, std::slice::from_ref(&service), &settings);
        assert_eq!(plan.generation, 7);
        let summary: Vec<(String, u16, bool)> = plan
            .vips
            .iter()
            .map(|v| (v.addr.to_string(), v.port, v.action == VipAction::Pass))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("192.0.2.20".to_owned(), 5432, false),
                ("192.0.2.10".to_owned(), 80, true),
                ("127.0.0.1".to_owned(), 80, true),
                ("2001:db8::10".to_owned(), 443, true),
            ]
        );
        let owned: Vec<String> = plan.owned.iter().map(ToString::to_string).collect();
        assert_eq!(owned, ["10.0.0.254", "192.0.2.10", "192.0.2.20", "2001:db8::10"]);
        assert_eq!(plan.source_v4, settings.source_v4);
    }

    #[test]
    fn a_vip_claimed_twice_keeps_the_first_claim() {
        let desired = Desired {
            generation: 1,
            listeners: vec![listener(&["192.0.2.10"], 80)],
            http_routes: vec![],
            ..Desired::default()
        };
        let service = L4Service {
            addr: "192.0.2.10".parse().unwrap(),
            port: 80,
            protocol: L4Protocol::Tcp,
            backends: vec![],
        };
        let plan = plan(&desired, &[service], &PlanSettings::default());
        assert_eq!(plan.vips.len(), 1);
        assert!(matches!(plan.vips[0].action, VipAction::Balance { .. }));
    }
}
