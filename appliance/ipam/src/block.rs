//! Address blocks: a CIDR or an explicit range, both held as one inclusive range.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// IP family of an address or a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Why text is not a block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("{0:?} is not a CIDR (ADDRESS/PREFIX-LENGTH)")]
    InvalidCidr(String),
    #[error("{cidr:?} has host bits set; the network is {network}")]
    HostBitsSet { cidr: String, network: String },
    #[error("range start {start} and end {end} are of different IP families")]
    MixedFamilies { start: IpAddr, end: IpAddr },
    #[error("range end {end} is before its start {start}")]
    EndBeforeStart { start: IpAddr, end: IpAddr },
}

/// An inclusive range of addresses of one family.
///
/// An IPv4 CIDR shorter than /31 leaves out its network and broadcast addresses (hosts
/// cannot use them); every other CIDR and every explicit range is used whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    family: Family,
    first: u128,
    last: u128,
}

impl Block {
    /// Parses `ADDRESS/PREFIX-LENGTH`; host bits must be zero.
    pub fn cidr(text: &str) -> Result<Self, BlockError> {
        let net: IpNet =
            text.trim().parse().map_err(|_| BlockError::InvalidCidr(text.to_owned()))?;
        if net.trunc() != net {
            return Err(BlockError::HostBitsSet {
                cidr: text.to_owned(),
                network: net.trunc().to_string(),
            });
        }
        let (mut first, mut last) = (to_u128(net.network()), to_u128(net.broadcast()));
        if let IpNet::V4(v4) = net
            && v4.prefix_len() < 31
        {
            first += 1;
            last -= 1;
        }
        Ok(Self { family: Family::of(net.addr()), first, last })
    }

    /// An explicit range `start..=end` of one family.
    pub fn range(start: IpAddr, end: IpAddr) -> Result<Self, BlockError> {
        if Family::of(start) != Family::of(end) {
            return Err(BlockError::MixedFamilies { start, end });
        }
        let (first, last) = (to_u128(start), to_u128(end));
        if last < first {
            return Err(BlockError::EndBeforeStart { start, end });
        }
        Ok(Self { family: Family::of(start), first, last })
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// The first usable address.
    pub fn first(&self) -> IpAddr {
        from_u128(self.family, self.first)
    }

    /// The last usable address.
    pub fn last(&self) -> IpAddr {
        from_u128(self.family, self.last)
    }

    /// Whether `ip` is one of the block's usable addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&to_u128(ip))
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(&self, other: &Block) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }

    /// The lowest address of the block for which `taken` is false, walking the taken
    /// addresses in order (so a huge IPv6 block costs what is taken, not its size).
    pub(crate) fn lowest_free<'a>(&self, taken: impl Iterator<Item = &'a u128>) -> Option<IpAddr> {
        let mut candidate = self.first;
        for &used in taken {
            if used > candidate {
                break;
            }
            if used == candidate {
                if candidate == self.last {
                    return None;
                }
                candidate += 1;
            }
        }
        Some(from_u128(self.family, candidate))
    }

    pub(crate) fn bounds(&self) -> (u128, u128) {
        (self.first, self.last)
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first(), self.last())
    }
}

/// An address as a number; IPv4 and IPv6 share the space, so keys carry the family too.
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(family: Family, n: u128) -> IpAddr {
    match family {
        // The block's bounds came from IPv4 addresses, so `n` fits.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_cidr_leaves_out_network_and_broadcast() {
        let b = Block::cidr("10.0.0.0/29").unwrap();
        assert_eq!((b.first(), b.last()), (ip("10.0.0.1"), ip("10.0.0.6")));
        assert!(!b.contains(ip("10.0.0.0")));
        assert!(!b.contains(ip("10.0.0.7")));
        let b = Block::cidr("10.0.0.4/31").unwrap();
        assert_eq!((b.first(), b.last()), (ip("10.0.0.4"), ip("10.0.0.5")));
        let b = Block::cidr("10.0.0.9/32").unwrap();
        assert_eq!((b.first(), b.last()), (ip("10.0.0.9"), ip("10.0.0.9")));
    }

    #[test]
    fn ipv6_cidr_is_used_whole() {
        let b = Block::cidr("fd00::/120").unwrap();
        assert_eq!((b.first(), b.last()), (ip("fd00::"), ip("fd00::ff")));
        assert!(!b.contains(ip("10.0.0.1")));
    }

    #[test]
    fn rejects_bad_cidrs_and_ranges() {
        assert!(matches!(Block::cidr("10.0.0.0"), Err(BlockError::InvalidCidr(_))));
        assert!(matches!(Block::cidr("10.0.0.0/33"), Err(BlockError::InvalidCidr(_))));
        assert!(matches!(Block::cidr("10.0.0.1/24"), Err(BlockError::HostBitsSet { .. })));
        assert!(matches!(
            Block::range(ip("10.0.0.5"), ip("10.0.0.4")),
            Err(BlockError::EndBeforeStart { .. })
        ));
        assert!(matches!(
            Block::range(ip("10.0.0.5"), ip("fd00::1")),
            Err(BlockError::MixedFamilies { .. })
        ));
    }

    #[test]
    fn overlap_is_per_family() {
        let a = Block::cidr("10.0.0.0/24").unwrap();
        let b = Block::range(ip("10.0.0.254"), ip("10.0.1.3")).unwrap();
        let c = Block::range(ip("10.0.1.0"), ip("10.0.1.3")).unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        let v6 = Block::range(ip("::a00:0"), ip("::a00:ffff")).unwrap();
        assert!(!a.overlaps(&v6));
    }

    #[test]
    fn lowest_free_skips_taken() {
        let b = Block::range(ip("10.0.0.1"), ip("10.0.0.3")).unwrap();
        let taken = [to_u128(ip("10.0.0.1")), to_u128(ip("10.0.0.3"))];
        assert_eq!(b.lowest_free(taken.iter()), Some(ip("10.0.0.2")));
        let all = [1u128, 2, 3].map(|n| n + to_u128(ip("10.0.0.0")));
        assert_eq!(b.lowest_free(all.iter()), None);
    }
}
