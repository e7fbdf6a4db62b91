//! A small reference model of the XDP program's decision, in plain Rust, written from the
//! rules rather than from the program: tests feed the same frames to both and compare.
//!
//! It models a program whose connection table holds no entry for the frame's flow and whose
//! SYN guard is off (the differential tests set it up so).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use gatehouse_ebpf_common::{
    Addr, FlowKey, VipKey, addr_from_octets, addr_octets, flow_hash, mapped_v4, ring_slot,
};

use crate::applier::{vip_key, wire_addr};
use crate::plan::{Forwarding, Plan, VipAction};

/// What the program should do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `XDP_PASS` with the frame untouched.
    Pass,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_TX` of an ARP reply.
    ArpReply,
    /// `XDP_TX` of a neighbour advertisement.
    NdAdvert,
    /// Rewritten by full NAT towards this backend.
    Nat(SocketAddr),
    /// Encapsulated towards this backend.
    Ipip(SocketAddr),
}

/// One VIP as the model sees it.
#[derive(Clone, Debug)]
pub struct ModelVip {
    pub pass: bool,
    pub ipip: bool,
    /// The Maglev table, slot by slot.
    pub table: Vec<SocketAddr>,
}

/// The maps' content, as plain collections.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub vips: HashMap<VipKey, ModelVip>,
    pub owned: HashSet<Addr>,
    /// (address, prefix bits over the 128-bit mapped form).
    pub drop: Vec<(Addr, u32)>,
    /// Whether the ingress interface has a MAC recorded (ARP/NDP answers need one).
    pub has_mac: bool,
}

impl Model {
    /// The model of a plan, with the Maglev tables the applier computed.
    pub fn new(
        plan: &Plan,
        tables: impl Fn(&VipKey) -> Option<Vec<SocketAddr>>,
        has_mac: bool,
    ) -> Model {
        let mut model = Model { has_mac, ..Model::default() };
        for vip in &plan.vips {
            let key = vip_key(vip.addr, vip.port, vip.protocol.number());
            let (pass, ipip) = match &vip.action {
                VipAction::Pass => (true, false),
                VipAction::Balance { forwarding, .. } => (false, *forwarding == Forwarding::Ipip),
            };
            let table = tables(&key).unwrap_or_default();
            model.vips.insert(key, ModelVip { pass, ipip, table });
        }
        model.owned = plan.owned.iter().map(|a| wire_addr(*a)).collect();
        model.drop = plan
            .drop_sources
            .iter()
            .map(|(a, len)| {
                let bits = match a {
                    IpAddr::V4(_) => 96 + u32::from(*len),
                    IpAddr::V6(_) => u32::from(*len),
                };
                (wire_addr(*a), bits)
            })
            .collect();
        model
    }

    /// The decision for one Ethernet frame.
    pub fn decide(&self, f: &[u8]) -> Decision {
        let be =
            |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?])) };
        let Some(mut ethertype) = be(12) else {
            return Decision::Pass;
        };
        let mut l3 = 14;
        for _ in 0..2 {
            if ethertype == 0x8100 || ethertype == 0x88a8 {
                let Some(t) = be(l3 + 2) else {
                    return Decision::Pass;
                };
                ethertype = t;
                l3 += 4;
            }
        }
        match ethertype {
            0x0806 => self.arp(f, l3),
            0x0800 => self.ipv4(f, l3),
            0x86dd => self.ipv6(f, l3),
            _ => Decision::Pass,
        }
    }

    fn arp(&self, f: &[u8], l3: usize) -> Decision {
        let Some(a) = f.get(l3..l3 + 28) else {
            return Decision::Pass;
        };
        let request = a[0..8] == [0, 1, 8, 0, 6, 4, 0, 1];
        let target = mapped_v4([a[24], a[25], a[26], a[27]]);
        if request && a[14..18] != a[24..28] && self.owned.contains(&target) && self.has_mac {
            Decision::ArpReply
        } else {
            Decision::Pass
        }
    }

    fn ipv4(&self, f: &[u8], l3: usize) -> Decision {
        let Some(h) = f.get(l3..l3 + 20) else {
            return Decision::Pass;
        };
        let ihl = usize::from(h[0] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if h[0] >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > f.len() {
            return Decision::Pass;
        }
        if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
            return Decision::Pass;
        }
        let src = mapped_v4([h[12], h[13], h[14], h[15]]);
        let dst = mapped_v4([h[16], h[17], h[18], h[19]]);
        self.transport(f, l3 + ihl, l3 + total, h[9], src, dst)
    }

    fn ipv6(&self, f: &[u8], l3: usize) -> Decision {
        let Some(h) = f.get(l3..l3 + 40) else {
            return Decision::Pass;
        };
        let total = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
        if h[0] >> 4 != 6 || l3 + total > f.len() {
            return Decision::Pass;
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&h[8..24]);
        dst.copy_from_slice(&h[24..40]);
        let (src, dst) = (addr_from_octets(src), addr_from_octets(dst));
        match h[6] {
            58 => {
                let Some(i) = f.get(l3 + 40..l3 + 72) else {
                    return Decision::Pass;
                };
                let ok = h[7] == 255
                    && total == 72
                    && src != [0; 4]
                    && i[0] == 135
                    && i[1] == 0
                    && i[24] == 1
                    && i[25] == 1;
                let mut target = [0u8; 16];
                target.copy_from_slice(&i[8..24]);
                if ok && self.owned.contains(&addr_from_octets(target)) && self.has_mac {
                    Decision::NdAdvert
                } else {
                    Decision::Pass
                }
            }
            next => self.transport(f, l3 + 40, l3 + total, next, src, dst),
        }
    }

    fn transport(
        &self,
        f: &[u8],
        l4: usize,
        end: usize,
        proto: u8,
        src: Addr,
        dst: Addr,
    ) -> Decision {
        let (sport, dport) = match proto {
            6 => {
                let Some(t) = f.get(l4..l4 + 20) else {
                    return Decision::Pass;
                };
                let doff = usize::from(t[12] >> 4) * 4;
                if doff < 20 || l4 + doff > end {
                    return Decision::Pass;
                }
                (u16::from_ne_bytes([t[0], t[1]]), u16::from_ne_bytes([t[2], t[3]]))
            }
            17 => {
                let Some(u) = f.get(l4..l4 + 8) else {
                    return Decision::Pass;
                };
                let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
                if len < 8 || l4 + len > end {
                    return Decision::Pass;
                }
                (u16::from_ne_bytes([u[0], u[1]]), u16::from_ne_bytes([u[2], u[3]]))
            }
            _ => return Decision::Pass,
        };
        let key = VipKey { addr: dst, port: dport, proto, _pad: 0 };
        let Some(vip) = self.vips.get(&key) else {
            return Decision::Pass;
        };
        if self.drop.iter().any(|(net, bits)| prefix_match(net, *bits, &src)) {
            return Decision::Drop;
        }
        if vip.pass || vip.table.is_empty() {
            return Decision::Pass;
        }
        let flow = FlowKey { src, dst, sport, dport, proto, _pad: 0, _pad2: 0 };
        let slot = ring_slot(flow_hash(&flow), vip.table.len() as u32);
        let backend = vip.table[slot as usize];
        if vip.ipip { Decision::Ipip(backend) } else { Decision::Nat(backend) }
    }
}

fn prefix_match(net: &Addr, bits: u32, addr: &Addr) -> bool {
    let (net, addr) = (addr_octets(net), addr_octets(addr));
    let bits = bits.min(128) as usize;
    let full = bits / 8;
    if net[..full] != addr[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (net[full] ^ addr[full]) >> (8 - rest) == 0
}

#[cfg(test)]
mod tests {
    use super::prefix_match;
    use gatehouse_ebpf_common::mapped_v4;

    #[test]
    fn prefixes() {
        let net = mapped_v4([192, 0, 2, 0]);
        assert!(prefix_match(&net, 96 + 24, &mapped_v4([192, 0, 2, 77])));
        assert!(!prefix_match(&net, 96 + 24, &mapped_v4([192, 0, 3, 1])));
        assert!(prefix_match(&net, 96 + 23, &mapped_v4([192, 0, 3, 1])));
        assert!(prefix_match(&net, 0, &[7; 4]));
    }
}
