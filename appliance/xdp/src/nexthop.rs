//! Watching the kernel's neighbours, routes, rules, addresses and links. The program caches the
//! FIB's answer (egress interface, MACs, MTU) per backend instead of asking the FIB for every
//! packet; any change there must make that cache stale, so the data plane subscribes to the
//! kernel's rtnetlink notifications and bumps the cache's epoch
//! ([`crate::Datapath::invalidate_next_hops`]) whenever one arrives. Its content does not
//! matter: a change of any kind re-resolves every backend once.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, setsockopt,
    socket, sockopt,
};
use nix::sys::time::TimeVal;

/// rtnetlink multicast groups (bit n-1 for group n): links (1), neighbours (3), IPv4
/// addresses (5), routes (7) and rules (8), IPv6 addresses (9), routes (11) and rules (19),
/// nexthop objects (32).
const GROUPS: u32 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x4_0000 | 0x8000_0000;

/// A subscription to the kernel's neighbour, route, address and link changes, in the network
/// namespace of the thread that opened it.
#[derive(Debug)]
pub struct NextHopWatch {
    fd: OwnedFd,
}

impl NextHopWatch {
    /// Subscribes; [`NextHopWatch::wait`] then waits at most `timeout` for changes.
    pub fn open(timeout: Duration) -> io::Result<NextHopWatch> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, GROUPS))?;
        let micros = i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX).max(1);
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::new(micros / 1_000_000, micros % 1_000_000),
        )?;
        Ok(NextHopWatch { fd })
    }

    /// Waits (up to the timeout given to [`NextHopWatch::open`]) for notifications, reads
    /// every one queued, and says whether any arrived. A lost notification (the socket's
    /// buffer overflowed) counts as a change.
    pub fn wait(&self) -> io::Result<bool> {
        let mut buf = vec![0u8; 16 * 1024];
        match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(_) | Err(Errno::ENOBUFS) => {}
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        loop {
            match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(_) | Err(Errno::ENOBUFS | Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
    }
}
