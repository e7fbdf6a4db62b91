//! Bounds-checked parsing and in-place rewriting of frames. Every access goes through
//! [`ptr_at`], which checks the whole object against the end of the frame first.

use core::mem::size_of;
use core::ptr::{read_unaligned, write_unaligned};

use aya_ebpf::programs::XdpContext;
use gatehouse_ebpf_common::{Addr, PROTO_TCP, PROTO_UDP, mapped_v4};

use crate::csum;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_ICMPV6: u8 = 58;
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// What the parser found.
pub enum Verdict {
    /// Not an IP/ARP frame we look at, or not TCP/UDP.
    Miss,
    /// Truncated or inconsistent headers.
    Malformed,
    /// An IP fragment.
    Fragment,
    /// An ARP frame; its header starts at this offset.
    Arp(usize),
    /// An ICMPv6 neighbour solicitation; its IPv6 header starts at this offset.
    Solicit(usize),
    /// A TCP or UDP packet.
    L4(Parsed),
}

/// A parsed TCP/UDP packet: offsets into the frame and its 5-tuple in wire order.
#[derive(Clone, Copy)]
pub struct Parsed {
    pub v4: bool,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Length of the IP packet (header and payload), host order.
    pub ip_len: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    pub src: Addr,
    pub dst: Addr,
    /// Network order.
    pub sport: u16,
    /// Network order.
    pub dport: u16,
}

impl Parsed {
    /// A TCP SYN opening a connection (SYN without ACK).
    #[inline(always)]
    pub fn syn_only(&self) -> bool {
        self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

#[inline(always)]
fn load<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the whole `T` lies inside the frame.
    ptr_at::<T>(ctx, off).map(|p| unsafe { read_unaligned(p) })
}

#[inline(always)]
fn store<T: Copy>(ctx: &XdpContext, off: usize, value: T) -> bool {
    match ptr_at::<T>(ctx, off) {
        Some(p) => {
            // SAFETY: `ptr_at` checked that the whole `T` lies inside the frame.
            unsafe { write_unaligned(p, value) };
            true
        }
        None => false,
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// Parses Ethernet, up to two VLAN tags, then IPv4/IPv6/ARP and TCP/UDP.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Verdict {
    let Some(et) = load::<[u8; 2]>(ctx, 12) else {
        return Verdict::Malformed;
    };
    let mut ethertype = be16(et);
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(et) = load::<[u8; 2]>(ctx, l3 + 2) else {
            return Verdict::Malformed;
        };
        ethertype = be16(et);
        l3 += 4;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            let Some(et) = load::<[u8; 2]>(ctx, l3 + 2) else {
                return Verdict::Malformed;
            };
            ethertype = be16(et);
            l3 += 4;
        }
    }
    match ethertype {
        ETH_P_IP => parse_v4(ctx, l3),
        ETH_P_IPV6 => parse_v6(ctx, l3),
        ETH_P_ARP => Verdict::Arp(l3),
        _ => Verdict::Miss,
    }
}

#[inline(always)]
fn parse_v4(ctx: &XdpContext, l3: usize) -> Verdict {
    let Some(h) = load::<[u8; 20]>(ctx, l3) else {
        return Verdict::Malformed;
    };
    if h[0] >> 4 != 4 {
        return Verdict::Malformed;
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(be16([h[2], h[3]]));
    if ihl < 20 || total < ihl || l3 + total > frame_len(ctx) {
        return Verdict::Malformed;
    }
    if be16([h[6], h[7]]) & 0x3fff != 0 {
        return Verdict::Fragment;
    }
    let src = mapped_v4([h[12], h[13], h[14], h[15]]);
    let dst = mapped_v4([h[16], h[17], h[18], h[19]]);
    transport(ctx, true, l3, l3 + ihl, total, h[9], src, dst)
}

#[inline(always)]
fn parse_v6(ctx: &XdpContext, l3: usize) -> Verdict {
    let Some(h) = load::<[u8; 40]>(ctx, l3) else {
        return Verdict::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Verdict::Malformed;
    }
    let total = 40 + usize::from(be16([h[4], h[5]]));
    if l3 + total > frame_len(ctx) {
        return Verdict::Malformed;
    }
    let next = h[6];
    if next == IPPROTO_FRAGMENT {
        return Verdict::Fragment;
    }
    if next == IPPROTO_ICMPV6 {
        return match load::<u8>(ctx, l3 + 40) {
            Some(ND_SOLICIT) => Verdict::Solicit(l3),
            _ => Verdict::Miss,
        };
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    transport(ctx, false, l3, l3 + 40, total, next, src, dst)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transport(
    ctx: &XdpContext,
    v4: bool,
    l3: usize,
    l4: usize,
    total: usize,
    proto: u8,
    src: Addr,
    dst: Addr,
) -> Verdict {
    let end = l3 + total;
    let (sport, dport, tcp_flags) = if proto == PROTO_TCP {
        let Some(t) = load::<[u8; 20]>(ctx, l4) else {
            return Verdict::Malformed;
        };
        let doff = usize::from(t[12] >> 4) * 4;
        if doff < 20 || l4 + doff > end {
            return Verdict::Malformed;
        }
        (u16::from_ne_bytes([t[0], t[1]]), u16::from_ne_bytes([t[2], t[3]]), t[13])
    } else if proto == PROTO_UDP {
        let Some(u) = load::<[u8; 8]>(ctx, l4) else {
            return Verdict::Malformed;
        };
        let len = usize::from(be16([u[4], u[5]]));
        if len < 8 || l4 + len > end {
            return Verdict::Malformed;
        }
        (u16::from_ne_bytes([u[0], u[1]]), u16::from_ne_bytes([u[2], u[3]]), 0)
    } else {
        return Verdict::Miss;
    };
    Verdict::L4(Parsed {
        v4,
        l3,
        l4,
        ip_len: total as u16,
        proto,
        tcp_flags,
        src,
        dst,
        sport,
        dport,
    })
}

/// New addresses and ports for [`rewrite`], wire order.
pub struct Endpoints {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
}

/// Rewrites addresses and ports (full NAT, either direction), updating every checksum.
#[inline(never)]
pub fn rewrite(raw: *mut aya_ebpf::bindings::xdp_md, pkt: &Parsed, to: &Endpoints) -> bool {
    let ctx = &XdpContext::new(raw);
    let (src, dst, sport, dport) = (&to.src, &to.dst, to.sport, to.dport);
    let mut delta;
    if pkt.v4 {
        let Some(old) = load::<[u8; 8]>(ctx, pkt.l3 + 12) else {
            return false;
        };
        let new = [src[12], src[13], src[14], src[15], dst[12], dst[13], dst[14], dst[15]];
        delta = csum::sum_not_words(&old) + csum::sum_words(&new);
        let Some(ip_csum) = load::<u16>(ctx, pkt.l3 + 10) else {
            return false;
        };
        if !store(ctx, pkt.l3 + 10, csum::update(ip_csum, delta)) || !store(ctx, pkt.l3 + 12, new) {
            return false;
        }
    } else {
        let Some(old) = load::<[u8; 32]>(ctx, pkt.l3 + 8) else {
            return false;
        };
        let mut new = [0u8; 32];
        new[..16].copy_from_slice(src);
        new[16..].copy_from_slice(dst);
        delta = csum::sum_not_words(&old) + csum::sum_words(&new);
        if !store(ctx, pkt.l3 + 8, new) {
            return false;
        }
    }
    let Some(old_ports) = load::<[u8; 4]>(ctx, pkt.l4) else {
        return false;
    };
    let s = sport.to_ne_bytes();
    let d = dport.to_ne_bytes();
    let new_ports = [s[0], s[1], d[0], d[1]];
    delta += csum::sum_not_words(&old_ports) + csum::sum_words(&new_ports);
    if !store(ctx, pkt.l4, new_ports) {
        return false;
    }
    let csum_off = if pkt.proto == PROTO_TCP { pkt.l4 + 16 } else { pkt.l4 + 6 };
    let Some(old) = load::<u16>(ctx, csum_off) else {
        return false;
    };
    if pkt.proto == PROTO_UDP && old == 0 {
        // IPv4 UDP without a checksum stays without one.
        return true;
    }
    let mut new = csum::update(old, delta);
    if pkt.proto == PROTO_UDP && new == 0 {
        new = 0xffff;
    }
    store(ctx, csum_off, new)
}

/// Sets the Ethernet destination and source.
#[inline(always)]
pub fn set_macs(ctx: &XdpContext, dst: &[u8; 6], src: &[u8; 6]) -> bool {
    store(ctx, 0, *dst) && store(ctx, 6, *src)
}

/// After growing the head by `by` bytes, moves the `l2`-byte link header to the new start.
#[inline(always)]
pub fn move_l2(ctx: &XdpContext, l2: usize, by: usize) -> bool {
    match l2 {
        ETH_HLEN => match load::<[u8; 14]>(ctx, by) {
            Some(h) => store(ctx, 0, h),
            None => false,
        },
        18 => match load::<[u8; 18]>(ctx, by) {
            Some(h) => store(ctx, 0, h),
            None => false,
        },
        _ => match load::<[u8; 22]>(ctx, by) {
            Some(h) => store(ctx, 0, h),
            None => false,
        },
    }
}

/// Writes an outer IPv4 header at `l3` for an inner packet of `inner_len` bytes.
#[inline(always)]
pub fn write_outer_v4(
    ctx: &XdpContext,
    l3: usize,
    inner_len: u16,
    src: &Addr,
    dst: &Addr,
    proto: u8,
) -> bool {
    let Some(total) = inner_len.checked_add(20) else {
        return false;
    };
    let t = total.to_be_bytes();
    let mut h = [
        0x45, 0, t[0], t[1], 0, 0, 0x40, 0, 64, proto, 0, 0, src[12], src[13], src[14], src[15],
        dst[12], dst[13], dst[14], dst[15],
    ];
    let c = (!csum::fold(csum::sum_words(&h))).to_ne_bytes();
    h[10] = c[0];
    h[11] = c[1];
    store(ctx, l3, h)
}

/// Writes an outer IPv6 header at `l3` for an inner packet of `inner_len` bytes.
#[inline(always)]
pub fn write_outer_v6(
    ctx: &XdpContext,
    l3: usize,
    inner_len: u16,
    src: &Addr,
    dst: &Addr,
    next: u8,
) -> bool {
    let l = inner_len.to_be_bytes();
    let mut h = [0u8; 40];
    h[0] = 0x60;
    h[4] = l[0];
    h[5] = l[1];
    h[6] = next;
    h[7] = 64;
    h[8..24].copy_from_slice(src);
    h[24..40].copy_from_slice(dst);
    store(ctx, l3, h)
}

/// The target of an IPv4-over-Ethernet ARP request (not a gratuitous one), IPv4-mapped.
#[inline(always)]
pub fn arp_request_target(ctx: &XdpContext, l3: usize) -> Option<Addr> {
    let a = load::<[u8; 28]>(ctx, l3)?;
    let request = a[0..8] == [0, 1, 0x08, 0x00, 6, 4, 0, 1];
    let gratuitous = a[14..18] == a[24..28];
    if !request || gratuitous {
        return None;
    }
    Some(mapped_v4([a[24], a[25], a[26], a[27]]))
}

/// Turns an ARP request into the reply from `mac`, in place.
#[inline(always)]
pub fn arp_to_reply(ctx: &XdpContext, l3: usize, mac: &[u8; 6]) -> bool {
    let Some(a) = load::<[u8; 28]>(ctx, l3) else {
        return false;
    };
    let mut r = a;
    r[7] = 2;
    r[8..14].copy_from_slice(mac);
    r[14..18].copy_from_slice(&a[24..28]);
    r[18..24].copy_from_slice(&a[8..14]);
    r[24..28].copy_from_slice(&a[14..18]);
    let Some(requester) = load::<[u8; 6]>(ctx, 6) else {
        return false;
    };
    store(ctx, l3, r) && set_macs(ctx, &requester, mac)
}

/// The target of a well-formed neighbour solicitation from a unicast source that carries a
/// source link-layer address option (the form hosts send when resolving an address).
#[inline(always)]
pub fn solicit_target(ctx: &XdpContext, l3: usize) -> Option<Addr> {
    let h = load::<[u8; 40]>(ctx, l3)?;
    let i = load::<[u8; 32]>(ctx, l3 + 40)?;
    let payload_32 = h[4] == 0 && h[5] == 32;
    let unspecified = h[8..24] == [0; 16];
    let shape = i[0] == ND_SOLICIT && i[1] == 0 && i[24] == 1 && i[25] == 1;
    if h[7] != 255 || !payload_32 || unspecified || !shape {
        return None;
    }
    let mut target = [0u8; 16];
    target.copy_from_slice(&i[8..24]);
    Some(target)
}

/// Turns a neighbour solicitation into the solicited advertisement from `mac`, in place.
#[inline(always)]
pub fn solicit_to_advert(ctx: &XdpContext, l3: usize, mac: &[u8; 6]) -> bool {
    let Some(h) = load::<[u8; 40]>(ctx, l3) else {
        return false;
    };
    let Some(i) = load::<[u8; 32]>(ctx, l3 + 40) else {
        return false;
    };
    let mut nh = h;
    nh[7] = 255;
    nh[8..24].copy_from_slice(&i[8..24]);
    nh[24..40].copy_from_slice(&h[8..24]);
    let mut na = [0u8; 32];
    na[0] = ND_ADVERT;
    // Flags: Solicited | Override.
    na[4] = 0x60;
    na[8..24].copy_from_slice(&i[8..24]);
    na[24] = 2;
    na[25] = 1;
    na[26..32].copy_from_slice(mac);
    let pseudo = [0u8, 0, 0, 32, 0, 0, 0, IPPROTO_ICMPV6];
    let mut addrs = [0u8; 32];
    addrs.copy_from_slice(&nh[8..40]);
    let sum = csum::sum_words(&addrs) + csum::sum_words(&pseudo) + csum::sum_words(&na);
    let c = (!csum::fold(sum)).to_ne_bytes();
    na[2] = c[0];
    na[3] = c[1];
    let Some(requester) = load::<[u8; 6]>(ctx, 6) else {
        return false;
    };
    store(ctx, l3, nh) && store(ctx, l3 + 40, na) && set_macs(ctx, &requester, mac)
}
