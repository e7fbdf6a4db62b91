//! `[xdp]` (the XDP data plane's boot settings and hot-reloaded policy) and `[[l4_services]]`
//! (VIPs balanced in XDP), checked with every error at its place.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gatehouse_model::{L4Backend, L4Protocol, L4Service, ObjectId};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Errors, Position, Problem};
use crate::native::{MAX_WEIGHT, NAMESPACE, is_dns_subdomain, parse_ip, parse_socket_addr};

/// Maglev table length per VIP when `maglev_table_size` is absent (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 16_381;
/// Largest accepted Maglev table length.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 1_000_003;
/// Connection table entries when `max_flows` is absent.
pub const DEFAULT_MAX_FLOWS: u32 = 262_144;
/// Kind of the object ids of `[[l4_services]]` entries.
pub const L4_SERVICE_KIND: &str = "L4Service";

/// `[xdp] mode`: how the program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Driver mode, generic mode (with a warning) where the driver has no XDP support.
    Auto,
    /// Driver mode only: boot fails where the driver has no XDP support.
    Driver,
    /// Generic (SKB) mode: works everywhere, slower.
    Generic,
    /// No XDP: the appliance serves in user space only (the default).
    #[default]
    Off,
}

/// `[xdp] forwarding`: how balanced packets reach a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpForwarding {
    /// Full NAT (DNAT + SNAT, replies rewritten back in XDP): works with any backend.
    #[default]
    Nat,
    /// IPIP encapsulation, backends answer clients directly (DSR).
    Ipip,
}

/// `[xdp]` when present with a mode other than `off`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpSettings {
    /// Interface the program attaches to (boot-only); the first of `interfaces`.
    pub interface: String,
    /// Every interface the program attaches to, `interface` first (boot-only): `interface =
    /// "eth0"` or `interfaces = ["eth0", "eth1"]` for a two-armed appliance.
    pub interfaces: Vec<String>,
    /// Attach mode (boot-only); never [`XdpMode::Off`] here.
    pub mode: XdpMode,
    /// Maglev table length per VIP, a prime (boot-only).
    pub maglev_table_size: u32,
    /// Connection table entries (boot-only).
    pub max_flows: u32,
    /// How balanced packets are forwarded (hot-reloads).
    pub forwarding: XdpForwarding,
    /// Source address of forwarded packets to IPv4 / IPv6 backends; owned (answered for by
    /// ARP/NDP), not assigned to an interface (hot-reloads).
    pub source_v4: Option<Ipv4Addr>,
    pub source_v6: Option<Ipv6Addr>,
    /// Sources whose packets to any VIP are dropped (hot-reloads).
    pub drop_sources: Vec<(IpAddr, u8)>,
    /// New TCP connections per second per CPU for each L4 VIP; 0 = no SYN guard (hot-reloads).
    pub syn_guard_per_cpu: u32,
}

impl XdpSettings {
    /// The settings fixed when the program is loaded and attached: a change needs a restart.
    pub fn boot_only(&self) -> (Vec<String>, XdpMode, u32, u32) {
        (self.interfaces.clone(), self.mode, self.maglev_table_size, self.max_flows)
    }
}

pub(crate) mod schema {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Xdp {
        pub interface: Option<Spanned<String>>,
        pub interfaces: Option<Spanned<Vec<Spanned<String>>>>,
        pub mode: Option<XdpMode>,
        pub maglev_table_size: Option<Spanned<u32>>,
        pub max_flows: Option<Spanned<u32>>,
        pub forwarding: Option<XdpForwarding>,
        pub nat_source_v4: Option<Spanned<String>>,
        pub nat_source_v6: Option<Spanned<String>>,
        #[serde(default)]
        pub drop_sources: Vec<Spanned<String>>,
        pub syn_guard_per_cpu: Option<u32>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct L4Service {
        pub name: Spanned<String>,
        /// The VIP; absent means LB-IPAM chooses one, as for a gateway without addresses.
        pub address: Option<Spanned<String>>,
        pub port: Spanned<u16>,
        pub protocol: Option<Protocol>,
        #[serde(default)]
        pub backends: Vec<Spanned<Backend>>,
    }

    #[derive(Clone, Copy, Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub(crate) enum Protocol {
        Tcp,
        Udp,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Backend {
        pub address: Spanned<String>,
        pub weight: Option<Spanned<u32>>,
    }
}

fn problem(text: impl Into<String>) -> Problem {
    Problem::Xdp(text.into())
}

/// Converts `[xdp]`; `None` when absent or `mode = "off"`.
pub(crate) fn settings(
    xdp: Option<Spanned<schema::Xdp>>,
    errors: &mut Errors<'_>,
) -> Option<XdpSettings> {
    let xdp = xdp?;
    let span = xdp.span();
    let xdp = xdp.into_inner();
    let mode = xdp.mode.unwrap_or(XdpMode::Auto);
    let maglev_table_size = match &xdp.maglev_table_size {
        None => DEFAULT_MAGLEV_TABLE_SIZE,
        Some(size) => {
            let n = *size.get_ref();
            if !(3..=MAX_MAGLEV_TABLE_SIZE).contains(&n) || !is_prime(n) {
                errors.push(
                    &size.span(),
                    problem(format!(
                        "maglev_table_size {n} must be a prime between 3 and {MAX_MAGLEV_TABLE_SIZE} \
                         (e.g. 4099, 16381, 65537)"
                    )),
                );
            }
            n
        }
    };
    let max_flows = match &xdp.max_flows {
        None => DEFAULT_MAX_FLOWS,
        Some(n) => {
            if *n.get_ref() < 1024 {
                errors.push(&n.span(), problem("max_flows must be at least 1024"));
            }
            *n.get_ref()
        }
    };
    let source_v4 = xdp.nat_source_v4.as_ref().and_then(|s| match parse_ip(s.get_ref()) {
        Ok(IpAddr::V4(v4)) => Some(v4),
        Ok(IpAddr::V6(_)) => {
            errors.push(&s.span(), problem("nat_source_v4 must be an IPv4 address"));
            None
        }
        Err(p) => {
            errors.push(&s.span(), p);
            None
        }
    });
    let source_v6 = xdp.nat_source_v6.as_ref().and_then(|s| match parse_ip(s.get_ref()) {
        Ok(IpAddr::V6(v6)) => Some(v6),
        Ok(IpAddr::V4(_)) => {
            errors.push(&s.span(), problem("nat_source_v6 must be an IPv6 address"));
            None
        }
        Err(p) => {
            errors.push(&s.span(), p);
            None
        }
    });
    let drop_sources =
        xdp.drop_sources.iter().filter_map(|c| cidr(c).map_err(|p| errors.push(&c.span(), p)).ok());
    let drop_sources = drop_sources.collect();
    if mode == XdpMode::Off {
        return None;
    }
    let names = match (xdp.interface, xdp.interfaces) {
        (Some(name), None) => vec![name],
        (None, Some(list)) => {
            if list.get_ref().is_empty() {
                errors.push(&list.span(), problem("interfaces must name at least one interface"));
            }
            list.into_inner()
        }
        (Some(_), Some(list)) => {
            errors.push(&list.span(), problem("set `interface` or `interfaces`, not both"));
            list.into_inner()
        }
        (None, None) => {
            errors.push(&span, problem("[xdp] needs `interface` unless mode = \"off\""));
            Vec::new()
        }
    };
    let mut interfaces: Vec<String> = Vec::new();
    for name in names {
        let n = name.get_ref();
        if n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\0']) {
            errors.push(&name.span(), problem(format!("{n:?} is not an interface name")));
        } else if interfaces.contains(n) {
            errors.push(&name.span(), problem(format!("interface {n:?} is named twice")));
            continue;
        }
        interfaces.push(name.into_inner());
    }
    Some(XdpSettings {
        interface: interfaces.first().cloned().unwrap_or_default(),
        interfaces,
        mode,
        maglev_table_size,
        max_flows,
        forwarding: xdp.forwarding.unwrap_or_default(),
        source_v4,
        source_v6,
        drop_sources,
        syn_guard_per_cpu: xdp.syn_guard_per_cpu.unwrap_or(0),
    })
}

/// Converts `[[l4_services]]` into the model; a service without `address` has no addresses
/// yet (LB-IPAM fills them in).
pub(crate) fn l4_services(
    services: Vec<schema::L4Service>,
    errors: &mut Errors<'_>,
) -> Vec<L4Service> {
    let mut names: BTreeMap<String, Position> = BTreeMap::new();
    let mut vips: HashMap<(IpAddr, u16, L4Protocol), String> = HashMap::new();
    let mut out = Vec::new();
    for service in services {
        let name = service.name.get_ref().clone();
        if !is_dns_subdomain(&name) {
            let p = Problem::InvalidName { what: "l4 service", name: name.clone() };
            errors.push(&service.name.span(), p);
        }
        let position = errors.position(&service.name.span());
        if let Some(&first) = names.get(&name) {
            let p = Problem::DuplicateName { what: "l4 service", name: name.clone(), first };
            errors.push(&service.name.span(), p);
        }
        names.entry(name.clone()).or_insert(position);
        let port = *service.port.get_ref();
        if port == 0 {
            errors.push(&service.port.span(), Problem::ZeroPort);
        }
        let protocol = match service.protocol {
            None | Some(schema::Protocol::Tcp) => L4Protocol::Tcp,
            Some(schema::Protocol::Udp) => L4Protocol::Udp,
        };
        let address = service.address.as_ref().and_then(|a| {
            let ip = parse_ip(a.get_ref()).map_err(|p| errors.push(&a.span(), p)).ok()?;
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                errors.push(&a.span(), problem(format!("{ip} cannot be a VIP")));
            }
            if let Some(other) = vips.insert((ip, port, protocol), name.clone()) {
                let p = problem(format!("{ip}:{port}/{protocol} is l4 service {other:?}'s too"));
                errors.push(&a.span(), p);
            }
            Some(ip)
        });
        if service.backends.is_empty() {
            errors.push(&service.name.span(), Problem::Empty { what: "backends" });
        }
        let mut backends = Vec::new();
        for backend in &service.backends {
            let b = backend.get_ref();
            let Ok(addr) = parse_socket_addr(b.address.get_ref())
                .map_err(|p| errors.push(&b.address.span(), p))
            else {
                continue;
            };
            if addr.port() == 0 {
                errors.push(&b.address.span(), Problem::ZeroPort);
            }
            if let Some(vip) = address
                && vip.is_ipv4() != addr.is_ipv4()
            {
                let p = problem(format!("backend {addr} is not of the VIP {vip}'s IP family"));
                errors.push(&b.address.span(), p);
            }
            let weight = b.weight.as_ref().map_or(1, |w| {
                if *w.get_ref() > MAX_WEIGHT {
                    errors.push(&w.span(), Problem::WeightOutOfRange(*w.get_ref()));
                }
                *w.get_ref()
            });
            backends.push(L4Backend { addr, weight });
        }
        out.push(L4Service {
            id: ObjectId::new(L4_SERVICE_KIND, NAMESPACE, name),
            addresses: address.into_iter().collect(),
            port,
            protocol,
            backends,
        });
    }
    out
}

/// `ADDRESS/LEN` (or a bare address: the host).
fn cidr(text: &Spanned<String>) -> Result<(IpAddr, u8), Problem> {
    let (addr, len) = match text.get_ref().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text.get_ref().as_str(), None),
    };
    let ip = parse_ip(addr)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => {
                return Err(problem(format!(
                    "{:?}: prefix length must be 0..={max}",
                    text.get_ref()
                )));
            }
        },
    };
    Ok((ip, len))
}

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..).take_while(|d: &u32| d * d <= n).all(|d| !n.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<crate::Config, Vec<String>> {
        crate::parse(text, Path::new("t.toml"), Path::new("/base")).map_err(|e| {
            e.errors()
                .iter()
                .map(|e| e.to_string().trim_start_matches("t.toml:").to_owned())
                .collect()
        })
    }

    #[test]
    fn absent_or_off_is_no_xdp_and_defaults_fill_in() {
        assert_eq!(parse("").unwrap().xdp, None);
        assert_eq!(parse("[xdp]\nmode = \"off\"\n").unwrap().xdp, None);
        let xdp = parse("[xdp]\ninterface = \"eth0\"\n").unwrap().xdp.unwrap();
        assert_eq!(xdp.mode, XdpMode::Auto);
        assert_eq!(xdp.maglev_table_size, DEFAULT_MAGLEV_TABLE_SIZE);
        assert_eq!(xdp.forwarding, XdpForwarding::Nat);
        assert_eq!(xdp.syn_guard_per_cpu, 0);
    }

    #[test]
    fn every_setting_and_an_l4_service() {
        let config = parse(
            r#"
[xdp]
interface = "eth1"
mode = "driver"
maglev_table_size = 4099
max_flows = 4096
forwarding = "ipip"
nat_source_v4 = "10.0.0.254"
nat_source_v6 = "fd00::fe"
drop_sources = ["198.51.100.0/24", "2001:db8::1"]
syn_guard_per_cpu = 5000

[[l4_services]]
name = "db"
address = "192.0.2.10"
port = 5432
backends = [{ address = "10.0.0.1:5432", weight = 3 }, { address = "10.0.0.2:5432" }]

[[l4_services]]
name = "dns"
port = 53
protocol = "udp"
backends = [{ address = "10.0.0.3:53" }]
"#,
        )
        .unwrap();
        let xdp = config.xdp.unwrap();
        assert_eq!(xdp.boot_only(), (vec!["eth1".to_owned()], XdpMode::Driver, 4099, 4096));
        assert_eq!(xdp.forwarding, XdpForwarding::Ipip);
        assert_eq!(xdp.source_v4, Some("10.0.0.254".parse().unwrap()));
        assert_eq!(xdp.source_v6, Some("fd00::fe".parse().unwrap()));
        assert_eq!(
            xdp.drop_sources,
            [("198.51.100.0".parse().unwrap(), 24), ("2001:db8::1".parse().unwrap(), 128)]
        );
        assert_eq!(xdp.syn_guard_per_cpu, 5000);
        let services = &config.native.l4_services;
        assert_eq!(services.len(), 2);
        assert_eq!(services[0].id, ObjectId::new(L4_SERVICE_KIND, NAMESPACE, "db"));
        assert_eq!(services[0].addresses, ["192.0.2.10".parse::<IpAddr>().unwrap()]);
        assert_eq!(services[0].protocol, L4Protocol::Tcp);
        assert_eq!(services[0].backends[0].weight, 3);
        assert_eq!(services[0].backends[1].weight, 1);
        assert!(services[1].addresses.is_empty(), "LB-IPAM chooses");
        assert_eq!(services[1].protocol, L4Protocol::Udp);
    }

    #[test]
    fn errors_name_their_place() {
        let errors = parse(
            r#"[xdp]
maglev_table_size = 4096
nat_source_v4 = "fd00::1"
drop_sources = ["10.0.0.0/33"]

[[l4_services]]
name = "a"
address = "192.0.2.1"
port = 80
backends = [{ address = "[fd00::1]:80" }]

[[l4_services]]
name = "a"
address = "192.0.2.1"
port = 80
backends = []
"#,
        )
        .unwrap_err();
        let expected = [
            "1:1: [xdp] needs `interface` unless mode = \"off\"",
            "2:21: maglev_table_size 4096 must be a prime",
            "3:17: nat_source_v4 must be an IPv4 address",
            "4:17: \"10.0.0.0/33\": prefix length must be 0..=32",
            "10:25: backend [fd00::1]:80 is not of the VIP 192.0.2.1's IP family",
            "13:8: duplicate l4 service name \"a\"",
            "13:8: backends must not be empty",
            "14:11: 192.0.2.1:80/tcp is l4 service \"a\"'s too",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (e, want) in errors.iter().zip(expected) {
            assert!(e.starts_with(want), "{e} / {want}");
        }
    }

    #[test]
    fn two_interfaces_and_their_errors() {
        let xdp = parse("[xdp]\ninterfaces = [\"c1\", \"b1\"]\n").unwrap().xdp.unwrap();
        assert_eq!(
            (xdp.interface.as_str(), xdp.interfaces.clone()),
            ("c1", vec!["c1".into(), "b1".into()])
        );
        let errors =
            parse("[xdp]\ninterface = \"a\"\ninterfaces = [\"b\", \"b\", \"x/y\"]\n").unwrap_err();
        let expected = [
            "3:14: set `interface` or `interfaces`, not both",
            "3:20: interface \"b\" is named twice",
            "3:25: \"x/y\" is not an interface name",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (e, want) in errors.iter().zip(expected) {
            assert!(e.starts_with(want), "{e} / {want}");
        }
        let errors = parse("[xdp]\ninterfaces = []\n").unwrap_err();
        assert!(errors[0].starts_with("2:14: interfaces must name at least one"), "{errors:?}");
    }
}
