//! `Desired` → [`Plan`]: the pure step between the compiled model and the map applier.
//!
//! L7 listeners become PASS entries (their packets go up to the proxy untouched, but the drop
//! list still applies); the model's L4 services and the TCP/UDP Gateway listeners that XDP
//! can serve ([`split_l4`]) become balanced VIPs. The addresses answered for by ARP/NDP are
//! every address LB-IPAM handed out (`Desired::owned_addresses`), every specific,
//! non-loopback listener address (L7 and L4), every L4 VIP and the NAT source addresses.
//!
//! Which data plane serves an L4 listener, with XDP on: a TCP or UDP listener with a route
//! ([`gatehouse_model::L4Listener::service`]) is balanced by XDP on each of its specific
//! addresses; the user-space L4 proxy keeps what XDP cannot serve: TLS listeners (SNI needs
//! the stream), listeners without routes, and wildcard or loopback addresses.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gatehouse_model::{
    Desired, L4Backend, L4Listener, ListenerId, ListenerProblem, ListenerProblemKind,
};

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

/// The L4 listeners divided between the data planes (XDP on).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct L4Split {
    /// What the user-space L4 proxy serves: listeners with the addresses left to it (a
    /// listener XDP took whole is absent).
    pub user_space: Vec<L4Listener>,
    /// Listeners XDP balances on at least one address: programmed once XDP applied the plan.
    pub xdp: Vec<ListenerId>,
    /// Listeners whose VIP (address, port, transport) an L4 service or an earlier listener
    /// took first: not served there.
    pub problems: Vec<ListenerProblem>,
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

type VipKey = (IpAddr, u16, L4Protocol);

/// Who serves what: the balanced VIPs with their backends (L4 services first, then
/// listeners in order; a key claimed twice keeps its first claim) and the listeners' split.
fn assign(desired: &Desired) -> (Vec<(VipKey, Vec<L4Backend>)>, L4Split) {
    let mut claimed: HashMap<VipKey, String> = HashMap::new();
    let mut balanced = Vec::new();
    for service in &desired.l4_services {
        for addr in &service.addresses {
            let key = (*addr, service.port, protocol(service.protocol));
            if owned(*addr) && !claimed.contains_key(&key) {
                claimed.insert(key, service.id.to_string());
                balanced.push((key, service.backends.clone()));
            }
        }
    }
    let mut split = L4Split::default();
    for listener in &desired.l4_listeners {
        let Some(service) = listener.service() else {
            split.user_space.push(listener.clone());
            continue;
        };
        let mut user_space = Vec::new();
        let mut taken = false;
        for addr in &listener.addresses {
            if !owned(*addr) {
                user_space.push(*addr);
                continue;
            }
            let key = (*addr, listener.port, protocol(service.protocol));
            match claimed.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(format!("listener {}", listener.id));
                    balanced.push((key, service.backends.clone()));
                    taken = true;
                }
                Entry::Occupied(entry) => split.problems.push(ListenerProblem {
                    listener: listener.id.clone(),
                    kind: ListenerProblemKind::PortUnavailable,
                    message: format!(
                        "{addr}:{}/{} is already served by {}",
                        listener.port,
                        service.protocol,
                        entry.get()
                    ),
                }),
            }
        }
        if taken {
            split.xdp.push(listener.id.clone());
        }
        // A listener XDP took nothing from stays whole (with its addresses, or none).
        if !user_space.is_empty() || user_space.len() == listener.addresses.len() {
            split.user_space.push(L4Listener { addresses: user_space, ..listener.clone() });
        }
    }
    (balanced, split)
}

/// Divides the L4 listeners of `desired` between XDP and the user-space L4 proxy (XDP on),
/// exactly as [`plan`] balances them.
pub fn split_l4(desired: &Desired) -> L4Split {
    assign(desired).1
}

/// Builds the XDP plan of a desired state. A VIP key claimed twice keeps its first claim
/// (L4 services, then L4 listeners, then L7 listeners, in order). Backends of the other IP
/// family than a VIP are left out of that VIP (an address LB-IPAM chose may be of either
/// family). The L4 listeners left to user space on a specific address are PASS entries.
pub fn plan(desired: &Desired, settings: &PlanSettings) -> Plan {
    let (balanced, split) = assign(desired);
    let mut seen: BTreeSet<VipKey> = BTreeSet::new();
    let mut vips = Vec::new();
    let mut owned_addrs: BTreeSet<IpAddr> =
        desired.owned_addresses.iter().map(|o| o.address).filter(|a| owned(*a)).collect();
    for ((addr, port, proto), backends) in balanced {
        seen.insert((addr, port, proto));
        owned_addrs.insert(addr);
        let backends = backends
            .iter()
            .filter(|b| b.addr.is_ipv4() == addr.is_ipv4())
            .map(|b| WeightedAddr { addr: b.addr, weight: b.weight })
            .collect();
        vips.push(Vip {
            addr,
            port,
            protocol: proto,
            action: VipAction::Balance {
                backends,
                forwarding: settings.forwarding,
                syn_limit: settings.syn_limit,
            },
        });
    }
    let passed = desired
        .listeners
        .iter()
        .flat_map(|l| l.addresses.iter().map(move |a| (*a, l.port, L4Protocol::Tcp)))
        .chain(split.user_space.iter().flat_map(|l| {
            l.addresses.iter().map(move |a| (*a, l.port, protocol(l.mode.protocol())))
        }));
    for (addr, port, proto) in passed {
        // A wildcard listener has no VIP to match: its packets miss and pass anyway.
        if addr.is_unspecified() {
            continue;
        }
        if owned(addr) {
            owned_addrs.insert(addr);
        }
        if seen.insert((addr, port, proto)) {
            vips.push(Vip { addr, port, protocol: proto, action: VipAction::Pass });
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
        L4Backend, L4Mode, L4Route, L4Service, Listener, ListenerId, ObjectId, OwnedAddress,
        Protocol,
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

    fn l4_listener(
        name: &str,
        addresses: &[&str],
        port: u16,
        mode: L4Mode,
        routed: bool,
    ) -> L4Listener {
        L4Listener {
            id: ListenerId {
                gateway: ObjectId::new("Gateway", "default", "l4"),
                name: name.into(),
            },
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            port,
            mode,
            hostname: None,
            routes: if routed {
                vec![L4Route {
                    id: ObjectId::new("TCPRoute", "default", name),
                    hostnames: Vec::new(),
                    backends: vec![
                        L4Backend { addr: "10.0.0.1:7000".parse().unwrap(), weight: 500 },
                        L4Backend { addr: "10.0.0.2:7000".parse().unwrap(), weight: 1000 },
                    ],
                }]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn tcp_and_udp_listeners_with_routes_go_to_xdp_the_rest_stays_in_user_space() {
        let desired = Desired {
            generation: 3,
            l4_services: vec![service(&["192.0.2.20"], 9000, &["10.0.0.9:9000"])],
            l4_listeners: vec![
                // Balanced on its pool address; its loopback address stays in user space.
                l4_listener("tcp", &["192.0.2.20", "127.0.0.1"], 7000, L4Mode::Tcp, true),
                l4_listener("udp", &["192.0.2.20"], 7000, L4Mode::Udp, true),
                l4_listener("tls", &["192.0.2.20"], 7443, L4Mode::TlsPassthrough, true),
                l4_listener("unrouted", &["192.0.2.21"], 7001, L4Mode::Tcp, false),
                l4_listener("wildcard", &["0.0.0.0"], 7002, L4Mode::Tcp, true),
                // Its VIP is the L4 service's: not served, and said so.
                l4_listener("clash", &["192.0.2.20"], 9000, L4Mode::Tcp, true),
            ],
            ..Desired::default()
        };
        let split = split_l4(&desired);
        let names = |ids: &[ListenerId]| ids.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&split.xdp), ["tcp", "udp"]);
        let user: Vec<(String, Vec<String>)> = split
            .user_space
            .iter()
            .map(|l| (l.id.name.clone(), l.addresses.iter().map(ToString::to_string).collect()))
            .collect();
        let user: Vec<(&str, Vec<&str>)> = user
            .iter()
            .map(|(n, a)| (n.as_str(), a.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            user,
            [
                ("tcp", vec!["127.0.0.1"]),
                ("tls", vec!["192.0.2.20"]),
                ("unrouted", vec!["192.0.2.21"]),
                ("wildcard", vec!["0.0.0.0"]),
            ]
        );
        assert_eq!(split.problems.len(), 1, "{:?}", split.problems);
        assert_eq!(split.problems[0].listener.name, "clash");
        assert_eq!(split.problems[0].kind, ListenerProblemKind::PortUnavailable);
        assert!(split.problems[0].message.contains("L4Service toml/s"), "{:?}", split.problems);

        let plan = plan(&desired, &PlanSettings::default());
        let summary: Vec<(String, u16, L4Protocol, Option<usize>)> = plan
            .vips
            .iter()
            .map(|v| {
                let backends = match &v.action {
                    VipAction::Balance { backends, .. } => Some(backends.len()),
                    VipAction::Pass => None,
                };
                (v.addr.to_string(), v.port, v.protocol, backends)
            })
            .collect();
        let vip = |a: &str, p, t, b| (a.to_owned(), p, t, b);
        assert_eq!(
            summary,
            vec![
                vip("192.0.2.20", 9000, L4Protocol::Tcp, Some(1)),
                vip("192.0.2.20", 7000, L4Protocol::Tcp, Some(2)),
                vip("192.0.2.20", 7000, L4Protocol::Udp, Some(2)),
                vip("127.0.0.1", 7000, L4Protocol::Tcp, None),
                vip("192.0.2.20", 7443, L4Protocol::Tcp, None),
                vip("192.0.2.21", 7001, L4Protocol::Tcp, None),
            ]
        );
        let VipAction::Balance { backends, .. } = &plan.vips[1].action else { panic!() };
        assert_eq!(
            backends[1],
            WeightedAddr { addr: "10.0.0.2:7000".parse().unwrap(), weight: 1000 }
        );
        let owned: Vec<String> = plan.owned.iter().map(ToString::to_string).collect();
        assert_eq!(owned, ["192.0.2.20", "192.0.2.21"]);
    }

    #[test]
    fn without_l4_listeners_the_split_is_empty_and_a_listener_without_addresses_stays_whole() {
        assert_eq!(split_l4(&Desired::default()), L4Split::default());
        let desired = Desired {
            l4_listeners: vec![l4_listener("waiting", &[], 7000, L4Mode::Tcp, true)],
            ..Desired::default()
        };
        let split = split_l4(&desired);
        assert!(split.xdp.is_empty());
        assert_eq!(split.user_space, desired.l4_listeners);
    }
}
