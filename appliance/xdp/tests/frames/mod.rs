//! Crafting and checking Ethernet frames for the program tests.

#![allow(dead_code, reason = "not every test uses every helper")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// The transport part of a frame.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Tcp { flags: u8 },
    Udp,
}

/// A frame description; [`Frame::bytes`] renders it with valid checksums.
#[derive(Clone, Debug)]
pub struct Frame {
    pub vlans: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    /// IPv4 options, a multiple of 4 bytes.
    pub options: Vec<u8>,
    /// IPv4 flags and fragment offset field.
    pub frag: u16,
    pub payload: Vec<u8>,
    /// Pad the frame to this length (Ethernet padding after the IP packet).
    pub pad_to: usize,
}

impl Frame {
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Frame {
        Frame {
            vlans: 0,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
            l4: L4::Tcp { flags },
            options: Vec::new(),
            frag: 0,
            payload: Vec::new(),
            pad_to: 60,
        }
    }

    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Frame {
        Frame { l4: L4::Udp, payload: b"ping".to_vec(), ..Frame::tcp(src, sport, dst, dport, 0) }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&OUR_MAC);
        f.extend_from_slice(&CLIENT_MAC);
        for i in 0..self.vlans {
            f.extend_from_slice(if i == 0 && self.vlans == 2 {
                &[0x88, 0xa8]
            } else {
                &[0x81, 0x00]
            });
            f.extend_from_slice(&[0, 7 + i as u8]);
        }
        let v4 = self.src.is_ipv4();
        f.extend_from_slice(if v4 { &[0x08, 0x00] } else { &[0x86, 0xdd] });
        let mut l4 = match self.l4 {
            L4::Tcp { flags } => {
                let mut t = vec![0u8; 20];
                t[0..2].copy_from_slice(&self.sport.to_be_bytes());
                t[2..4].copy_from_slice(&self.dport.to_be_bytes());
                t[4..8].copy_from_slice(&1000u32.to_be_bytes());
                t[12] = 5 << 4;
                t[13] = flags;
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                t
            }
            L4::Udp => {
                let mut u = vec![0u8; 8];
                u[0..2].copy_from_slice(&self.sport.to_be_bytes());
                u[2..4].copy_from_slice(&self.dport.to_be_bytes());
                u[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                u
            }
        };
        l4.extend_from_slice(&self.payload);
        let proto = match self.l4 {
            L4::Tcp { .. } => 6u8,
            L4::Udp => 17,
        };
        let c = l4_checksum(self.src, self.dst, proto, &l4);
        let at = if proto == 6 { 16 } else { 6 };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 20 + self.options.len();
                let mut h = vec![0u8; 20];
                h[0] = 0x40 | (ihl / 4) as u8;
                h[2..4].copy_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
                h[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
                h[6..8].copy_from_slice(&self.frag.to_be_bytes());
                h[8] = 64;
                h[9] = proto;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                h.extend_from_slice(&self.options);
                let c = checksum(&h, 0);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut h = vec![0u8; 40];
                h[0] = 0x60;
                h[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
                h[6] = proto;
                h[7] = 64;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
                f.extend_from_slice(&h);
            }
            _ => panic!("mixed families"),
        }
        f.extend_from_slice(&l4);
        while f.len() < self.pad_to {
            f.push(0);
        }
        f
    }
}

/// One's complement sum of 16-bit big-endian words, plus `initial`, folded and inverted.
pub fn checksum(bytes: &[u8], initial: u32) -> u16 {
    let mut sum = initial as u64;
    for chunk in bytes.chunks(2) {
        let w = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u64::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut bytes = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            bytes.extend_from_slice(&s.octets());
            bytes.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed families"),
    }
    let mut sum = 0u32;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    sum + u32::from(proto) + len as u32
}

/// The TCP/UDP checksum of a segment whose checksum field is zero.
pub fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    checksum(segment, pseudo_sum(src, dst, proto, segment.len()))
}

/// What a test reads back from an IP packet in a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Every checksum (IPv4 header, TCP/UDP) verifies.
    pub checksums_ok: bool,
    pub l3: usize,
}

/// Parses the IP packet of a frame (after `vlans` tags) and verifies its checksums.
pub fn seen(frame: &[u8], vlans: usize) -> Seen {
    let l3 = 14 + 4 * vlans;
    let v4 = frame[l3] >> 4 == 4;
    let (src, dst, proto, l4, end, mut ok) = if v4 {
        let ihl = usize::from(frame[l3] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
        let s: [u8; 4] = frame[l3 + 12..l3 + 16].try_into().unwrap();
        let d: [u8; 4] = frame[l3 + 16..l3 + 20].try_into().unwrap();
        (
            IpAddr::V4(Ipv4Addr::from(s)),
            IpAddr::V4(Ipv4Addr::from(d)),
            frame[l3 + 9],
            l3 + ihl,
            l3 + total,
            checksum(&frame[l3..l3 + ihl], 0) == 0,
        )
    } else {
        let plen = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
        let s: [u8; 16] = frame[l3 + 8..l3 + 24].try_into().unwrap();
        let d: [u8; 16] = frame[l3 + 24..l3 + 40].try_into().unwrap();
        (
            IpAddr::V6(Ipv6Addr::from(s)),
            IpAddr::V6(Ipv6Addr::from(d)),
            frame[l3 + 6],
            l3 + 40,
            l3 + 40 + plen,
            true,
        )
    };
    let (sport, dport) = if proto == 6 || proto == 17 {
        let segment = &frame[l4..end];
        let udp_unchecked = proto == 17 && v4 && segment[6] == 0 && segment[7] == 0;
        if !udp_unchecked {
            ok &= checksum(segment, pseudo_sum(src, dst, proto, segment.len())) == 0;
        }
        (
            u16::from_be_bytes([frame[l4], frame[l4 + 1]]),
            u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]),
        )
    } else {
        (0, 0)
    };
    Seen { src, dst, proto, sport, dport, checksums_ok: ok, l3 }
}

/// An ARP request from the client for `target`.
pub fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// A neighbour solicitation from `src` for `target` with a source link-layer option.
pub fn solicit(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let t = target.octets();
    let dst = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut icmp = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&t);
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&CLIENT_MAC);
    let c = checksum(&icmp, pseudo_sum(src.into(), dst.into(), 58, icmp.len()));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&[0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// Verifies an ICMPv6 message's checksum in an IPv6 frame without VLAN tags.
pub fn icmp6_checksum_ok(frame: &[u8]) -> bool {
    let s: [u8; 16] = frame[22..38].try_into().unwrap();
    let d: [u8; 16] = frame[38..54].try_into().unwrap();
    let plen = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    let icmp = &frame[54..54 + plen];
    checksum(icmp, pseudo_sum(Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into(), 58, plen)) == 0
}
