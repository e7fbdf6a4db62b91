//! What an object asks of the allocator.

use std::net::IpAddr;

use gatehouse_model::ObjectId;

use crate::block::Family;
use crate::selector::Labels;

/// One object that needs addresses: a Gateway, a Service of type LoadBalancer, a native
/// gateway of the TOML file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    pub owner: ObjectId,
    /// Creation time in seconds since the epoch; the oldest object wins a conflict. `None`
    /// (objects from files) sorts after every known time.
    pub created: Option<i64>,
    pub labels: Labels,
    /// Labels of the object's namespace, for pools' namespace selectors.
    pub namespace_labels: Labels,
    /// Addresses asked for by value; empty means "choose for me".
    pub requested: Vec<IpAddr>,
    /// Which families to choose when nothing is requested.
    pub families: Families,
    pub sharing: Option<Sharing>,
    /// Ports the object serves on its addresses; sharers of one address must not overlap.
    pub ports: Vec<Port>,
}

impl Request {
    /// A request for one address of any family, nothing else set.
    pub fn new(owner: ObjectId) -> Self {
        Self {
            owner,
            created: None,
            labels: Labels::new(),
            namespace_labels: Labels::new(),
            requested: Vec::new(),
            families: Families::Any,
            sharing: None,
            ports: Vec::new(),
        }
    }

    /// Conflict order: oldest first, unknown times last, then namespace, name and kind.
    pub(crate) fn priority(&self) -> impl Ord + '_ {
        (
            self.created.is_none(),
            self.created,
            &self.owner.namespace,
            &self.owner.name,
            &self.owner.kind,
        )
    }

    /// Whether an address of `family` is wanted, given how many of each the object holds.
    pub(crate) fn wants(&self, family: Family, held_v4: usize, held_v6: usize) -> bool {
        match self.families {
            Families::Any => held_v4 + held_v6 == 0,
            Families::Only(f) => f == family && held_v4 + held_v6 == 0,
            Families::Both => match family {
                Family::V4 => held_v4 == 0,
                Family::V6 => held_v6 == 0,
            },
        }
    }
}

/// Families of the addresses to choose (Service `spec.ipFamilies`/`ipFamilyPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Families {
    /// One address, IPv4 preferred in pool order: the first pool that has room.
    #[default]
    Any,
    /// One address of this family.
    Only(Family),
    /// One IPv4 and one IPv6 address.
    Both,
}

/// A sharing key (`lbipam.cilium.io/sharing-key`): objects with the same key share one
/// address when their ports do not overlap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sharing {
    pub key: String,
    /// Other namespaces whose objects may share with this one
    /// (`lbipam.cilium.io/sharing-cross-namespace`); `"*"` allows any. Both sides must allow.
    pub cross_namespace: Vec<String>,
}

impl Sharing {
    pub(crate) fn allows(&self, namespace: &str) -> bool {
        self.cross_namespace.iter().any(|n| n == "*" || n == namespace)
    }
}

/// Transport protocol of a [`Port`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    Tcp,
    Udp,
    Sctp,
}

/// A port an object serves on its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub transport: Transport,
    pub port: u16,
}

impl Port {
    pub fn tcp(port: u16) -> Self {
        Self { transport: Transport::Tcp, port }
    }
}
