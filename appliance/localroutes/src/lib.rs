//! Local routes for the addresses the user-space listeners bind.
//!
//! Listeners bind with `IP_FREEBIND`, so a Gateway's address (from a pool or from
//! `spec.addresses`) binds whether or not it is on an interface; but the kernel hands a packet to
//! a local socket only when its routing takes the destination as local. After each reload the
//! daemon passes the addresses the HTTP proxy and the user-space L4 proxy bind to
//! [`LocalRoutes::reconcile`], which adds a `local` route in the kernel's `local` table for each
//! one the host does not already take as its own, and removes the ones it added earlier that are
//! no longer bound. Its routes carry the route protocol [`ROUTE_PROTOCOL`], so they are told
//! apart from everyone else's (`ip route show table local proto 157`): routes it did not add are
//! never touched, and leftovers of a crashed run are removed by the next start's first
//! reconciliation. Addresses the XDP load balancer owns are not listed: their packets are
//! forwarded, never delivered locally.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

/// The kernel's `local` table (`RT_TABLE_LOCAL`).
const LOCAL_TABLE: u8 = 255;

/// The route protocol number that marks Gatehouse's routes (free in iproute2's `rt_protos`).
pub const ROUTE_PROTOCOL: u8 = 157;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] io::Error),
    #[error("no loopback interface `lo` in this network namespace")]
    NoLoopback,
    #[error("cannot list the local routes: {0}")]
    List(#[source] io::Error),
    #[error("cannot look up the route to {address}: {source}")]
    Lookup {
        address: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot add a local route for {address}: {source}")]
    Add {
        address: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the local route for {address}: {source}")]
    Remove {
        address: IpAddr,
        #[source]
        source: io::Error,
    },
}

/// What one reconciliation did.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Addresses that got a route now.
    pub added: Vec<IpAddr>,
    /// Routes of ours removed: their addresses are no longer bound.
    pub removed: Vec<IpAddr>,
    /// Addresses the host already took as local (on an interface, or someone else's route).
    pub already_local: Vec<IpAddr>,
    /// What could not be done; every other address was handled.
    pub failed: Vec<Error>,
}

/// The addresses among `bound` that need a route: specific unicast addresses, without the
/// loopback range (always local) and IPv6 link-local ones (bound per interface).
pub fn wanted(bound: impl IntoIterator<Item = IpAddr>) -> BTreeSet<IpAddr> {
    bound
        .into_iter()
        .map(|address| address.to_canonical())
        .filter(|address| match address {
            IpAddr::V4(v4) => {
                !(v4.is_unspecified() || v4.is_loopback() || v4.is_multicast() || v4.is_broadcast())
            }
            IpAddr::V6(v6) => {
                !(v6.is_unspecified()
                    || v6.is_loopback()
                    || v6.is_multicast()
                    || v6.is_unicast_link_local())
            }
        })
        .collect()
}

/// A netlink connection to the kernel's routing, in the network namespace of the process.
#[derive(Debug)]
pub struct LocalRoutes {
    handle: Handle,
    loopback: u32,
}

impl LocalRoutes {
    /// Opens the connection (its task runs on the current tokio runtime).
    pub fn open() -> Result<Self, Error> {
        let loopback = nix::net::if_::if_nametoindex("lo").map_err(|_| Error::NoLoopback)?;
        // Strict checking: the kernel filters dumps by table, protocol and type (a host with a
        // full routing table does not send it all on every reconciliation).
        let (connection, handle, _) =
            rtnetlink::new_connection_with_strict_check().map_err(Error::Open)?;
        tokio::spawn(connection);
        Ok(LocalRoutes { handle, loopback })
    }

    /// Makes exactly `addresses` (from [`wanted`]) routed as local by a route of ours: adds what
    /// is missing unless the host already takes the address as local, removes ours that are
    /// not listed. Failures are per address: the others are still handled.
    pub async fn reconcile(&self, addresses: &BTreeSet<IpAddr>) -> Reconciled {
        let mut done = Reconciled::default();
        let ours = match self.ours().await {
            Ok(ours) => ours,
            Err(error) => {
                done.failed.push(error);
                return done;
            }
        };
        for (address, route) in &ours {
            if addresses.contains(address) {
                continue;
            }
            match self.handle.route().del(route.clone()).execute().await {
                Ok(()) => done.removed.push(*address),
                Err(error) => {
                    done.failed.push(Error::Remove { address: *address, source: io_error(error) })
                }
            }
        }
        for address in addresses.iter().filter(|a| !ours.contains_key(a)) {
            match self.is_local(*address).await {
                Ok(true) => {
                    done.already_local.push(*address);
                    continue;
                }
                Ok(false) => {}
                Err(error) => {
                    done.failed.push(error);
                    continue;
                }
            }
            match self.handle.route().add(self.route(*address)).execute().await {
                Ok(()) => done.added.push(*address),
                Err(error) => {
                    let source = io_error(error);
                    // Taken as local between the lookup and the add (an address came up).
                    if source.raw_os_error() == Some(Errno::EEXIST as i32) {
                        done.already_local.push(*address);
                    } else {
                        done.failed.push(Error::Add { address: *address, source });
                    }
                }
            }
        }
        done
    }

    /// Removes every route of ours (at exit: the listeners are gone).
    pub async fn clear(&self) -> Reconciled {
        self.reconcile(&BTreeSet::new()).await
    }

    /// Our routes in the `local` table, by address.
    async fn ours(&self) -> Result<BTreeMap<IpAddr, RouteMessage>, Error> {
        let mut ours = BTreeMap::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family;
            query.header.table = LOCAL_TABLE;
            query.header.protocol = RouteProtocol::Other(ROUTE_PROTOCOL);
            query.header.kind = RouteType::Local;
            let mut routes = self.handle.route().get(query).execute();
            while let Some(route) = routes.try_next().await.map_err(|e| Error::List(io_error(e)))? {
                if route.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL)
                    || route.header.kind != RouteType::Local
                    || table(&route) != u32::from(LOCAL_TABLE)
                {
                    continue;
                }
                if let Some(address) = destination(&route) {
                    ours.insert(address, route);
                }
            }
        }
        Ok(ours)
    }

    /// Whether the kernel's routing already delivers packets for `address` locally.
    async fn is_local(&self, address: IpAddr) -> Result<bool, Error> {
        let lookup = |source| Error::Lookup { address, source };
        // A lookup (not a dump): with strict checking the header's table, protocol, scope and
        // type must be unset.
        let mut query = RouteMessage::default();
        query.header.address_family = match address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        query.header.destination_prefix_length = full_length(address);
        query.attributes.push(RouteAttribute::Destination(match address {
            IpAddr::V4(v4) => RouteAddress::Inet(v4),
            IpAddr::V6(v6) => RouteAddress::Inet6(v6),
        }));
        let mut answers = self.handle.route().get(query).execute();
        match answers.try_next().await {
            Ok(Some(route)) => Ok(route.header.kind == RouteType::Local),
            Ok(None) => Ok(false),
            // No route at all (an isolated namespace): not local.
            Err(error) => match io_error(error) {
                e if e.raw_os_error() == Some(Errno::ENETUNREACH as i32) => Ok(false),
                e => Err(lookup(e)),
            },
        }
    }

    /// `local ADDRESS/32 dev lo table local proto 157 scope host`.
    fn route(&self, address: IpAddr) -> RouteMessage {
        let builder = RouteMessageBuilder::<IpAddr>::new();
        let builder = match builder.destination_prefix(address, full_length(address)) {
            Ok(builder) => builder,
            // Unreachable: the prefix length matches the address family by construction.
            Err(_) => RouteMessageBuilder::<IpAddr>::new(),
        };
        builder
            .table_id(u32::from(LOCAL_TABLE))
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .scope(RouteScope::Host)
            .kind(RouteType::Local)
            .output_interface(self.loopback)
            .build()
    }
}

fn full_length(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

/// The destination of a host route (`/32`, `/128`); `None` for prefixes.
fn destination(route: &RouteMessage) -> Option<IpAddr> {
    let address = route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    (route.header.destination_prefix_length == full_length(address)).then_some(address)
}

fn io_error(error: rtnetlink::Error) -> io::Error {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    }
}
