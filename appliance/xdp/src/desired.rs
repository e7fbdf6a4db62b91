//! `Desired` → [`Plan`]: the pure step between the compiled model and the map applier.
//!
//! L7 listeners become PASS entries (their packets go up to the proxy untouched, but the drop
//! list still applies); the model's L4 services become balanced VIPs. The addresses answered
//! for by ARP/NDP are every address LB-IPAM handed out (`Desired::owned_addresses`), every
//! specific, non-loopback listener address, every L4 VIP and the NAT source addresses.

use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gatehouse_model::Desired;

use crate::plan::{Forwarding, L4Protocol, Plan, Vip, VipAction, WeightedAddr};

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

fn protocol(p: gatehouse_model::L4Protocol) -> L4Protocol {
    match p {
        gatehouse_model::L4Protocol::Tcp => L4Protocol::Tcp,
        gatehouse_model::L4Protocol::Udp => L4Protocol::Udp,
    }
}

/// Builds the XDP plan of a desired state. A VIP key claimed twice keeps its first claim
/// (L4 services first, then listeners in order). Backends of the other IP family than a VIP
/// are left out of that VIP (an address LB-IPAM chose may be of either family).
pub fn plan(desired: &Desired, settings: &PlanSettings) -> Plan {
    let mut seen = HashSet::new();
    let mut vips = Vec::new();
    let mut owned_addrs: BTreeSet<IpAddr> =
        desired.owned_addresses.iter().map(|o| o.address).filter(|a| owned(*a)).collect();
    for service in &desired.l4_services {
        let proto = protocol(service.protocol);
        for addr in &service.addresses {
            if !owned(*addr) || !seen.insert((*addr, service.port, proto)) {
                continue;
            }
            owned_addrs.insert(*addr);
            let backends = service
                .backends
                .iter()
                .filter(|b| b.addr.is_ipv4() == addr.is_ipv4())
                .map(|b| WeightedAddr { addr: b.addr, weight: b.weight })
                .collect();
            vips.push(Vip {
                addr: *addr,
                port: service.port,
                protocol: proto,
                action: VipAction::Balance {
                    backends,
                    forwarding: settings.forwarding,
                    syn_limit: settings.syn_limit,
                },
            });
        }
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
    use gatehouse_model::{
        L4Backend, L4Service, Listener, ListenerId, ObjectId, OwnedAddress, Protocol,
    };

    use super::*;

    fn service(addresses: &[&str], port: u16, backends: &[&str]) -> L4Service {
        L4Service {
            id: ObjectId::new("L4Service", "toml", "s"),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            port,
            protocol: gatehouse_model::L4Protocol::Tcp,
            backends: backends
                .iter()
                .map(|a| L4Backend { addr: a.parse().unwrap(), weight: 1 })
                .collect(),
        }
    }

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
            l4_services: vec![service(&["192.0.2.20"], 5432, &["10.0.0.1:5432", "[fd00::1]:5432"])],
            owned_addresses: vec![OwnedAddress {
                address: "192.0.2.30".parse().unwrap(),
                owner: ObjectId::new("Gateway", "default", "other"),
            }],
            ..Desired::default()
        };
        let settings =
            PlanSettings { source_v4: Some("10.0.0.254".parse().unwrap()), ..Default::default() };
        let plan = plan(&desired, &settings);
        let VipAction::Balance { backends, .. } = &plan.vips[0].action else { panic!() };
        assert_eq!(backends.len(), 1, "the IPv6 backend is not the IPv4 VIP's");
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
        assert_eq!(owned, ["10.0.0.254", "192.0.2.10", "192.0.2.20", "192.0.2.30", "2001:db8::10"]);
        assert_eq!(plan.source_v4, settings.source_v4);
    }

    #[test]
    fn a_vip_claimed_twice_keeps_the_first_claim() {
        let desired = Desired {
            generation: 1,
            listeners: vec![listener(&["192.0.2.10"], 80)],
            http_routes: vec![],
            l4_services: vec![service(&["192.0.2.10"], 80, &[])],
            ..Desired::default()
        };
        let plan = plan(&desired, &PlanSettings::default());
        assert_eq!(plan.vips.len(), 1);
        assert!(matches!(plan.vips[0].action, VipAction::Balance { .. }));
    }
}
