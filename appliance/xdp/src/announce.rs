//! Gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6) for addresses the
//! appliance takes over, so neighbours update their caches at once instead of when their entry
//! times out. Sent from user space on a packet socket of the attached interface: the XDP
//! program only sees ingress frames and cannot originate one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_datalink::{Channel, Config, NetworkInterface};

/// Why an announcement could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("interface `{0}` does not exist")]
    UnknownInterface(String),
    #[error("interface `{interface}`: {source}")]
    Io {
        interface: String,
        #[source]
        source: std::io::Error,
    },
}

/// A gratuitous ARP request (sender = target = `addr`), broadcast.
pub fn gratuitous_arp(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6-byte MACs, 4-byte addresses, request.
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&addr.octets());
    f
}

/// An unsolicited neighbour advertisement for `addr` (override flag, target link-layer
/// address option) to all nodes, from `addr` itself.
pub fn unsolicited_na(mac: [u8; 6], addr: Ipv6Addr) -> Vec<u8> {
    let all_nodes: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]);
    // Flags: override (not router, not solicited).
    icmp.extend_from_slice(&[0x20, 0, 0, 0]);
    icmp.extend_from_slice(&addr.octets());
    // Option 2: target link-layer address, 8 bytes.
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(addr, all_nodes, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    // Next header ICMPv6, hop limit 255 (RFC 4861 requires it).
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(body);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The frame announcing `addr` from `mac`.
pub fn frame(mac: [u8; 6], addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(v4) => gratuitous_arp(mac, v4),
        IpAddr::V6(v6) => unsolicited_na(mac, v6),
    }
}

/// Sends one announcement per address on `interface` (in this thread's network namespace).
pub fn announce(interface: &str, addrs: &[IpAddr]) -> Result<usize, AnnounceError> {
    if addrs.is_empty() {
        return Ok(0);
    }
    let io = |source| AnnounceError::Io { interface: interface.to_owned(), source };
    let found: Option<NetworkInterface> =
        pnet_datalink::interfaces().into_iter().find(|i| i.name == interface);
    let Some(nic) = found else {
        return Err(AnnounceError::UnknownInterface(interface.to_owned()));
    };
    let mac = nic.mac.map(|m| m.octets()).unwrap_or_default();
    // Nothing is read: a tiny receive buffer keeps the socket from copying traffic for long.
    let config = Config { read_buffer_size: 256, write_buffer_size: 4096, ..Config::default() };
    let mut tx = match pnet_datalink::channel(&nic, config).map_err(io)? {
        Channel::Ethernet(tx, _rx) => tx,
        _ => {
            let other = std::io::Error::other("not an Ethernet channel");
            return Err(io(other));
        }
    };
    let mut sent = 0;
    for addr in addrs {
        if let Some(result) = tx.send_to(&frame(mac, *addr), None) {
            result.map_err(io)?;
            sent += 1;
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

    #[test]
    fn gratuitous_arp_names_the_address_as_sender_and_target() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[192, 0, 2, 7]);
        assert_eq!(&f[38..42], &[192, 0, 2, 7]);
    }

    #[test]
    fn unsolicited_na_is_well_formed_with_a_valid_checksum() {
        let addr: Ipv6Addr = "2001:db8::7".parse().unwrap_or(Ipv6Addr::LOCALHOST);
        let f = unsolicited_na(MAC, addr);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[20], 58);
        assert_eq!(f[21], 255);
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x20, "override, unsolicited");
        assert_eq!(&icmp[8..24], &addr.octets());
        assert_eq!(&icmp[26..32], &MAC);
        // Summing the whole message with its checksum in place gives zero.
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(icmpv6_checksum(addr, dst, icmp), 0);
    }
}
