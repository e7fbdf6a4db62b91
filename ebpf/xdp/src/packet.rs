//! Bounds-checked parsing and in-place rewriting of frames. Every access goes through
//! [`ptr_at`], which checks the whole object against the end of the frame first.

use core::mem::size_of;
use core::ptr::{read, write};

use aya_ebpf::bindings::xdp_md;
use gatehouse_ebpf_common::{
    Addr, FILTER_WORDS, FlowKey, PROTO_TCP, PROTO_UDP, filter_has, mapped_v4, mapped_v4_word,
};

use crate::csum;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_ICMPV6: u8 = 58;
const ND_SOLICIT: u8 = 135;
const ND_ADVERT: u8 = 136;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// The program's context. Its fields are read with volatile loads, so they stay inside the
/// function that uses them: were LLVM to hoist them into a caller and pass them as 32-bit
/// arguments, the verifier would reject the widening of a packet pointer.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub raw: *mut xdp_md,
}

impl Ctx {
    #[inline(always)]
    pub fn new(raw: *mut xdp_md) -> Ctx {
        Ctx { raw }
    }

    #[inline(always)]
    pub fn data(&self) -> usize {
        // SAFETY: `raw` is the context the kernel passed to the program.
        unsafe { core::ptr::read_volatile(&raw const (*self.raw).data) as usize }
    }

    #[inline(always)]
    pub fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.raw).data_end) as usize }
    }

    #[inline(always)]
    pub fn ingress_ifindex(&self) -> u32 {
        // SAFETY: as above. A plain load: LLVM may not split it from its address.
        unsafe { (*self.raw).ingress_ifindex }
    }
}

/// What the parser found.
pub enum Verdict {
    /// Not an IP/ARP frame we look at, not TCP/UDP, or for none of our addresses.
    Miss,
    /// Truncated or inconsistent headers.
    Malformed,
    /// An IP fragment.
    Fragment,
    /// An ARP frame; its header starts at this offset.
    Arp(usize),
    /// An ICMPv6 neighbour solicitation; its IPv6 header starts at this offset.
    Solicit(usize),
    /// A TCP or UDP packet (the `Parsed` given to [`parse`] describes it).
    L4,
}

/// A parsed TCP/UDP packet: offsets into the frame and its 5-tuple in wire order.
#[derive(Clone, Copy, Default)]
pub struct Parsed {
    /// The 5-tuple, as the connection table keys it (wire order, IPv4-mapped addresses):
    /// compared with a slot's key and hashed word by word.
    pub key: FlowKey,
    pub v4: bool,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the TCP/UDP header.
    pub l4: usize,
    /// Length of the IP packet (header and payload), host order.
    pub ip_len: u16,
    pub tcp_flags: u8,
}

impl Parsed {
    /// A TCP SYN opening a connection (SYN without ACK).
    #[inline(always)]
    pub fn syn_only(&self) -> bool {
        self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }
}

#[inline(always)]
fn ptr_at<T>(ctx: &Ctx, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

// Packet loads and stores use plain (aligned) instructions although header fields sit at any
// offset: BPF's LLVM backend splits unaligned accesses into single bytes (eight times the
// instructions, and register spills past the 512-byte stack), while the kernel accepts
// unaligned packet access on every architecture with efficient unaligned access (x86-64,
// arm64) and its JIT emits plain loads and stores for them.
#[inline(always)]
fn load<T: Copy>(ctx: &Ctx, off: usize) -> Option<T> {
    // SAFETY: `ptr_at` checked that the whole `T` lies inside the frame; see above on alignment.
    ptr_at::<T>(ctx, off).map(|p| unsafe { read(p) })
}

#[inline(always)]
fn store<T: Copy>(ctx: &Ctx, off: usize, value: T) -> bool {
    match ptr_at::<T>(ctx, off) {
        Some(p) => {
            // SAFETY: `ptr_at` checked that the whole `T` lies inside the frame; see `load`.
            unsafe { write(p, value) };
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
fn frame_len(ctx: &Ctx) -> usize {
    ctx.data_end() - ctx.data()
}

/// Parses Ethernet, up to two VLAN tags, then IPv4/IPv6/ARP and TCP/UDP into `pkt`. An IP
/// packet whose destination `filter` says is none of ours is a [`Verdict::Miss`] as soon as
/// its destination is read (most frames: their transport header is not looked at).
/// `pkt` may be uninitialised: every field is written before `Verdict::L4` is returned.
#[inline(always)]
pub fn parse(raw: *mut xdp_md, pkt: *mut Parsed, filter: &[u64; FILTER_WORDS]) -> Verdict {
    let ctx = &Ctx::new(raw);
    let Some(et) = load::<u16>(ctx, 12) else {
        return Verdict::Malformed;
    };
    // Wire order, compared as loaded: an untagged IPv4 frame (the common case) takes one
    // comparison to its parser.
    let mut ethertype = u16::from_be(et);
    let mut l3 = ETH_HLEN;
    if et == ETH_P_IP.to_be() {
        ethertype = ETH_P_IP;
    } else if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
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
        ETH_P_IP => parse_v4(ctx, l3, pkt, filter),
        ETH_P_IPV6 => parse_v6(ctx, l3, pkt, filter),
        ETH_P_ARP => Verdict::Arp(l3),
        _ => Verdict::Miss,
    }
}

#[inline(always)]
fn parse_v4(ctx: &Ctx, l3: usize, pkt: *mut Parsed, filter: &[u64; FILTER_WORDS]) -> Verdict {
    // As words, in one bounds check: the addresses are whole words, the other fields are
    // taken from their bytes (no second read of the frame for the addresses).
    let Some(h) = load::<[u32; 5]>(ctx, l3) else {
        return Verdict::Malformed;
    };
    let (w0, w1, w2) = (h[0].to_ne_bytes(), h[1].to_ne_bytes(), h[2].to_ne_bytes());
    if w0[0] >> 4 != 4 {
        return Verdict::Malformed;
    }
    let ihl = usize::from(w0[0] & 0x0f) * 4;
    let total = usize::from(be16([w0[2], w0[3]]));
    if ihl < 20 || total < ihl || l3 + total > frame_len(ctx) {
        return Verdict::Malformed;
    }
    if be16([w1[2], w1[3]]) & 0x3fff != 0 {
        return Verdict::Fragment;
    }
    let (src, dst, proto) = (h[3], h[4], w2[1]);
    if !filter_has(filter, &mapped_v4_word(dst)) {
        return Verdict::Miss;
    }
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).key.src = mapped_v4_word(src) };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).key.dst = mapped_v4_word(dst) };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).v4 = true };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).l3 = l3 };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).l4 = l3 + ihl };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).ip_len = total as u16 };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).key.proto = proto };
    transport(ctx, pkt)
}

#[inline(always)]
fn parse_v6(ctx: &Ctx, l3: usize, pkt: *mut Parsed, filter: &[u64; FILTER_WORDS]) -> Verdict {
    let Some(h) = load::<[u8; 8]>(ctx, l3) else {
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
    let (Some(src), Some(dst)) = (load::<Addr>(ctx, l3 + 8), load::<Addr>(ctx, l3 + 24)) else {
        return Verdict::Malformed;
    };
    if !filter_has(filter, &dst) {
        return Verdict::Miss;
    }
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).key.src = src };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).key.dst = dst };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).v4 = false };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).l3 = l3 };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).l4 = l3 + 40 };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).ip_len = total as u16 };
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).key.proto = next };
    transport(ctx, pkt)
}

#[inline(always)]
fn transport(ctx: &Ctx, pkt: *mut Parsed) -> Verdict {
    // SAFETY: the IPv4/IPv6 parser wrote these fields before calling.
    let (l4, proto, end) =
        unsafe { ((*pkt).l4, (*pkt).key.proto, (*pkt).l3 + usize::from((*pkt).ip_len)) };
    // The ports are the first word of either header: its halves, in wire order, are the source
    // and destination port (a little-endian target: the first two bytes are the low half).
    // Halves of the word, not its bytes: BPF's LLVM would split and rejoin the bytes.
    const _: () = assert!(cfg!(target_endian = "little"));
    let (ports, tcp_flags) = if proto == PROTO_TCP {
        // As words (see `parse_v4`): the ports, then the data offset and flags.
        let Some(t) = load::<[u32; 5]>(ctx, l4) else {
            return Verdict::Malformed;
        };
        let doff = ((t[3] & 0xf0) >> 2) as usize;
        if doff < 20 || l4 + doff > end {
            return Verdict::Malformed;
        }
        (t[0], (t[3] >> 8) as u8)
    } else if proto == PROTO_UDP {
        let Some(u) = load::<[u32; 2]>(ctx, l4) else {
            return Verdict::Malformed;
        };
        let len = usize::from((u[1] as u16).swap_bytes());
        if len < 8 || l4 + len > end {
            return Verdict::Malformed;
        }
        (u[0], 0)
    } else {
        return Verdict::Miss;
    };
    // The key's last word in one store: the ports, the protocol and the padding (zero).
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; its key is
    // 8-aligned and its last word is these fields (see `FlowKey::words`).
    unsafe {
        let words = &raw mut (*pkt).key as *mut u64;
        core::ptr::write(words.add(4), u64::from(ports) | (u64::from(proto) << 32));
    }
    // SAFETY: `pkt` points to the caller's (possibly uninitialised) Parsed; writing a
    // Copy field never reads it.
    unsafe { (*pkt).tcp_flags = tcp_flags };
    Verdict::L4
}

/// Source and destination port (wire order) packed as the 32-bit word they form on the wire.
#[inline(always)]
pub fn ports(sport: u16, dport: u16) -> u32 {
    let s = sport.to_ne_bytes();
    let d = dport.to_ne_bytes();
    u32::from_ne_bytes([s[0], s[1], d[0], d[1]])
}

/// Rewrites addresses and ports (full NAT, either direction), updating every checksum.
/// Works word by word on the packet to keep the stack small.
/// The common case (IPv4 without options) is inlined: no BPF-to-BPF call, whose return goes
/// through the kernel's return thunk.
#[inline(always)]
pub fn rewrite(raw: *mut xdp_md, pkt: &Parsed, src: &Addr, dst: &Addr, new_ports: u32) -> bool {
    if pkt.v4 && pkt.l4 == pkt.l3 + 20 {
        return rewrite_v4(&Ctx::new(raw), pkt, src[3], dst[3], new_ports);
    }
    rewrite_any(raw, pkt, src, dst, new_ports)
}

/// [`rewrite`] of IPv6, or IPv4 with options: the addresses at fixed offsets from the IP
/// header, the ports and checksum at the transport header's offset, each part with one bounds
/// check; the old addresses and ports from `pkt`.
#[inline(never)]
fn rewrite_any(raw: *mut xdp_md, pkt: &Parsed, src: &Addr, dst: &Addr, new_ports: u32) -> bool {
    let ctx = &Ctx::new(raw);
    let end = ctx.data_end();
    let ip = ctx.data() + pkt.l3;
    let mut delta = 0u64;
    if pkt.v4 {
        if ip + 20 > end {
            return false;
        }
        let addrs = csum::not32(pkt.key.src[3])
            + csum::not32(pkt.key.dst[3])
            + csum::add32(src[3])
            + csum::add32(dst[3]);
        let ip = ip as *mut u8;
        // SAFETY: the 20 bytes from `ip` were checked above; unaligned packet access is
        // accepted (see `load`).
        unsafe {
            let ip_csum = ip.add(10) as *mut u16;
            write(ip_csum, csum::update(read(ip_csum), addrs));
            write(ip.add(12) as *mut u32, src[3]);
            write(ip.add(16) as *mut u32, dst[3]);
        }
        delta += addrs;
    } else {
        if ip + 40 > end {
            return false;
        }
        let words = ip as *mut u32;
        let mut i = 0;
        while i < 4 {
            delta += csum::not32(pkt.key.src[i])
                + csum::not32(pkt.key.dst[i])
                + csum::add32(src[i])
                + csum::add32(dst[i]);
            // SAFETY: the addresses (bytes 8 to 40 from `ip`) were checked above.
            unsafe {
                write(words.add(2 + i), src[i]);
                write(words.add(6 + i), dst[i]);
            }
            i += 1;
        }
    }
    delta += csum::not32(ports(pkt.key.sport, pkt.key.dport)) + csum::add32(new_ports);
    let l4 = ctx.data() + pkt.l4;
    if l4 + 8 > end {
        return false;
    }
    let l4 = l4 as *mut u8;
    // SAFETY: the first 8 bytes from `l4` were checked above.
    unsafe { write(l4 as *mut u32, new_ports) };
    if pkt.key.proto == PROTO_TCP {
        l4_checksum::<16>(l4, end, delta, false)
    } else {
        l4_checksum::<6>(l4, end, delta, true)
    }
}

/// [`rewrite`] of the common case, an IPv4 header without options: the old addresses and
/// ports taken from `pkt` (what [`parse`] read) rather than read again, and the frame's bounds
/// read and checked once for the IPv4 header and the ports, once more for the checksum.
#[inline(always)]
fn rewrite_v4(ctx: &Ctx, pkt: &Parsed, new_src: u32, new_dst: u32, new_ports: u32) -> bool {
    let end = ctx.data_end();
    let ip = ctx.data() + pkt.l3;
    if ip + 24 > end {
        return false;
    }
    let addrs = csum::not32(pkt.key.src[3])
        + csum::not32(pkt.key.dst[3])
        + csum::add32(new_src)
        + csum::add32(new_dst);
    let ip = ip as *mut u8;
    // SAFETY: the 24 bytes from `ip` were checked above; unaligned packet access is accepted
    // (see `load`).
    unsafe {
        let ip_csum = ip.add(10) as *mut u16;
        write(ip_csum, csum::update(read(ip_csum), addrs));
        write(ip.add(12) as *mut u32, new_src);
        write(ip.add(16) as *mut u32, new_dst);
        write(ip.add(20) as *mut u32, new_ports);
    }
    let delta = addrs + csum::not32(ports(pkt.key.sport, pkt.key.dport)) + csum::add32(new_ports);
    if pkt.key.proto == PROTO_TCP {
        l4_checksum::<{ 20 + 16 }>(ip, end, delta, false)
    } else {
        l4_checksum::<{ 20 + 6 }>(ip, end, delta, true)
    }
}

/// Updates the TCP or UDP checksum at `AT` bytes from `base` (a bounds check of its own, at a
/// fixed offset the verifier follows) by `delta`.
#[inline(always)]
fn l4_checksum<const AT: usize>(base: *mut u8, end: usize, delta: u64, udp: bool) -> bool {
    if base as usize + AT + 2 > end {
        return false;
    }
    // SAFETY: the two bytes at `AT` from `base` were checked just above.
    unsafe {
        let at = base.add(AT) as *mut u16;
        let old = read(at);
        if udp && old == 0 {
            // UDP without a checksum stays without one.
            return true;
        }
        let mut new = csum::update(old, delta);
        if udp && new == 0 {
            new = 0xffff;
        }
        write(at, new);
    }
    true
}

/// Sets the Ethernet destination and source.
#[inline(always)]
pub fn set_macs(ctx: &Ctx, dst: &[u8; 6], src: &[u8; 6]) -> bool {
    store(ctx, 0, *dst) && store(ctx, 6, *src)
}

/// Sets the Ethernet destination and source from their 12 bytes as three words.
#[inline(always)]
pub fn set_mac_words(ctx: &Ctx, macs: &[u32; 3]) -> bool {
    store(ctx, 0, u64::from(macs[0]) | (u64::from(macs[1]) << 32)) && store(ctx, 8, macs[2])
}

/// After growing the head by `by` bytes, moves the `l2`-byte link header to the new start.
/// Word by word: a byte array copy becomes a `memmove` call that BPF runs a byte at a time.
#[inline(always)]
pub fn move_l2(ctx: &Ctx, l2: usize, by: usize) -> bool {
    let (Some(a), Some(b)) = (load::<u64>(ctx, by), load::<u32>(ctx, by + 8)) else {
        return false;
    };
    match l2 {
        ETH_HLEN => match load::<u16>(ctx, by + 12) {
            Some(c) => store(ctx, 0, a) && store(ctx, 8, b) && store(ctx, 12, c),
            None => false,
        },
        18 => match (load::<u32>(ctx, by + 12), load::<u16>(ctx, by + 16)) {
            (Some(c), Some(d)) => {
                store(ctx, 0, a) && store(ctx, 8, b) && store(ctx, 12, c) && store(ctx, 16, d)
            }
            _ => false,
        },
        _ => match (load::<u64>(ctx, by + 12), load::<u16>(ctx, by + 20)) {
            (Some(c), Some(d)) => {
                store(ctx, 0, a) && store(ctx, 8, b) && store(ctx, 12, c) && store(ctx, 20, d)
            }
            _ => false,
        },
    }
}

/// After growing the head by 20 bytes, the common case of IPIP: an untagged Ethernet header
/// moved to the new start and the outer IPv4 header (from `src` to `dst`, wire words) for an
/// inner packet of `inner_len` bytes written after it, in one bounds check, as words.
#[inline(always)]
pub fn encapsulate_v4(ctx: &Ctx, inner_len: u16, src: u32, dst: u32) -> bool {
    const OUTER: usize = 20;
    let Some(total) = inner_len.checked_add(OUTER as u16) else {
        return false;
    };
    let start = ctx.data();
    if start + ETH_HLEN + OUTER > ctx.data_end() {
        return false;
    }
    let t = total.to_be_bytes();
    // Version 4, IHL 5, total length; no id, don't fragment; TTL 64, IPIP, checksum.
    let w0 = u32::from_ne_bytes([0x45, 0, t[0], t[1]]);
    let w1 = u32::from_ne_bytes([0, 0, 0x40, 0]);
    let ttl_proto = u32::from_ne_bytes([64, IPPROTO_IPIP, 0, 0]);
    let sum = csum::add32(w0)
        + csum::add32(w1)
        + csum::add32(ttl_proto)
        + csum::add32(src)
        + csum::add32(dst);
    let c = (!csum::fold(sum)).to_ne_bytes();
    let w2 = u32::from_ne_bytes([64, IPPROTO_IPIP, c[0], c[1]]);
    let p = start as *mut u8;
    // SAFETY: the `ETH_HLEN + OUTER` bytes from `start` were checked above; unaligned packet
    // access is accepted (see `load`).
    unsafe {
        let a = read(p.add(OUTER) as *const u64);
        let b = read(p.add(OUTER + 8) as *const u32);
        let c = read(p.add(OUTER + 12) as *const u16);
        write(p as *mut u64, a);
        write(p.add(8) as *mut u32, b);
        write(p.add(12) as *mut u16, c);
        let ip = p.add(ETH_HLEN) as *mut u32;
        write(ip, w0);
        write(ip.add(1), w1);
        write(ip.add(2), w2);
        write(ip.add(3), src);
        write(ip.add(4), dst);
    }
    true
}

/// Writes an outer IPv4 header at `l3` for an inner packet of `inner_len` bytes.
#[inline(always)]
pub fn write_outer_v4(
    ctx: &Ctx,
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
    let s = src[3].to_ne_bytes();
    let d = dst[3].to_ne_bytes();
    let mut h = [
        0x45, 0, t[0], t[1], 0, 0, 0x40, 0, 64, proto, 0, 0, s[0], s[1], s[2], s[3], d[0], d[1],
        d[2], d[3],
    ];
    let c = (!csum::fold(csum::sum_words(&h))).to_ne_bytes();
    h[10] = c[0];
    h[11] = c[1];
    store(ctx, l3, h)
}

/// Writes an outer IPv6 header at `l3` for an inner packet of `inner_len` bytes.
#[inline(always)]
pub fn write_outer_v6(
    ctx: &Ctx,
    l3: usize,
    inner_len: u16,
    src: &Addr,
    dst: &Addr,
    next: u8,
) -> bool {
    let l = inner_len.to_be_bytes();
    store(ctx, l3, [0x60u8, 0, 0, 0, l[0], l[1], next, 64])
        && store(ctx, l3 + 8, *src)
        && store(ctx, l3 + 24, *dst)
}

/// The target of an IPv4-over-Ethernet ARP request (not a gratuitous one), IPv4-mapped.
#[inline(always)]
pub fn arp_request_target(ctx: &Ctx, l3: usize) -> Option<Addr> {
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
pub fn arp_to_reply(ctx: &Ctx, l3: usize, mac: &[u8; 6]) -> bool {
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
pub fn solicit_target(ctx: &Ctx, l3: usize) -> Option<Addr> {
    let hop_limit = load::<u8>(ctx, l3 + 7)?;
    let payload = load::<[u8; 2]>(ctx, l3 + 4)?;
    let src_hi = load::<u64>(ctx, l3 + 8)?;
    let src_lo = load::<u64>(ctx, l3 + 16)?;
    let kind = load::<[u8; 2]>(ctx, l3 + 40)?;
    let option = load::<[u8; 2]>(ctx, l3 + 64)?;
    if hop_limit != 255
        || payload != [0, 32]
        || (src_hi | src_lo) == 0
        || kind != [ND_SOLICIT, 0]
        || option != [1, 1]
    {
        return None;
    }
    load::<Addr>(ctx, l3 + 48)
}

/// Turns a neighbour solicitation into the solicited advertisement from `mac`, in place.
/// `solicit_target` has checked the shape (payload of 32 bytes, one option).
#[inline(always)]
pub fn solicit_to_advert(ctx: &Ctx, l3: usize, mac: &[u8; 6]) -> bool {
    let (Some(s0), Some(s1), Some(t0), Some(t1)) = (
        load::<u64>(ctx, l3 + 8),
        load::<u64>(ctx, l3 + 16),
        load::<u64>(ctx, l3 + 48),
        load::<u64>(ctx, l3 + 56),
    ) else {
        return false;
    };
    let Some(requester) = load::<[u8; 6]>(ctx, 6) else {
        return false;
    };
    // IPv6: from the target, back to the solicitor, hop limit 255.
    // ICMPv6: type 136, code 0, checksum 0 for now, flags Solicited | Override, the target,
    // then the target link-layer address option.
    let ok = store(ctx, l3 + 7, 255u8)
        && store(ctx, l3 + 8, t0)
        && store(ctx, l3 + 16, t1)
        && store(ctx, l3 + 24, s0)
        && store(ctx, l3 + 32, s1)
        && store(ctx, l3 + 40, u32::from_ne_bytes([ND_ADVERT, 0, 0, 0]))
        && store(ctx, l3 + 44, u32::from_ne_bytes([0x60, 0, 0, 0]))
        && store(ctx, l3 + 64, [2u8, 1])
        && store(ctx, l3 + 66, *mac)
        && set_macs(ctx, &requester, mac);
    if !ok {
        return false;
    }
    // Pseudo header (addresses, length 32, next header 58), then the 32-byte message, from
    // the values just written (the target appears twice: source address and target field).
    let kind = u32::from_ne_bytes([ND_ADVERT, 0, 0, 0]);
    let flags = u32::from_ne_bytes([0x60, 0, 0, 0]);
    let opt_a = u32::from_ne_bytes([2, 1, mac[0], mac[1]]);
    let opt_b = u32::from_ne_bytes([mac[2], mac[3], mac[4], mac[5]]);
    let sum = csum::add32(u32::from_ne_bytes([0, 0, 0, 32]))
        + csum::add32(u32::from_ne_bytes([0, 0, 0, IPPROTO_ICMPV6]))
        + 2 * (csum::add64(t0) + csum::add64(t1))
        + csum::add64(s0)
        + csum::add64(s1)
        + csum::add32(kind)
        + csum::add32(flags)
        + csum::add32(opt_a)
        + csum::add32(opt_b);
    store(ctx, l3 + 42, !csum::fold(sum))
}
