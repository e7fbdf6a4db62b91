//! The allocation: every request against every pool, in one deterministic pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use gatehouse_model::ObjectId;

use crate::block::{Family, to_u128};
use crate::pool::{Pool, Pools};
use crate::request::{Families, Port, Request};

/// Addresses objects held before (the state file in file mode, the objects' status in
/// cluster mode); kept when still valid so addresses survive restarts and reloads.
pub type Previous = BTreeMap<ObjectId, Vec<IpAddr>>;

/// An address handed to an object, and the pool it came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Assigned {
    pub address: IpAddr,
    pub pool: String,
}

/// Why (part of) a request could not be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Pools select the object but none has a free address (of the family).
    #[error("no free address in {}", pool_list(pools))]
    PoolExhausted { family: Option<Family>, pools: Vec<String> },
    /// No auto-assigning pool selects the object (for the family).
    #[error("no address pool selects this object{}", family_suffix(*family))]
    NoMatchingPool { family: Option<Family> },
    /// A requested address is outside every pool.
    #[error("requested address {address} is outside every address pool")]
    UnsupportedAddress { address: IpAddr },
    /// A requested address is in a pool that does not select the object.
    #[error("requested address {address} is in pool {pool:?}, which does not select this object")]
    PoolNotSelected { address: IpAddr, pool: String },
    /// A requested address is held by an older object it cannot share with.
    #[error("requested address {address} is in use by {holder}")]
    AddressInUse { address: IpAddr, holder: ObjectId },
}

fn pool_list(pools: &[String]) -> String {
    let quoted: Vec<String> = pools.iter().map(|p| format!("{p:?}")).collect();
    format!("pool{} {}", if pools.len() == 1 { "" } else { "s" }, quoted.join(", "))
}

fn family_suffix(family: Option<Family>) -> String {
    family.map(|f| format!(" for {f}")).unwrap_or_default()
}

/// What one object got: its addresses (sorted), and what it asked for but did not get.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub addresses: Vec<Assigned>,
    pub failures: Vec<Failure>,
}

impl Outcome {
    /// The addresses alone.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|a| a.address).collect()
    }
}

/// The result for every requesting object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    pub objects: BTreeMap<ObjectId, Outcome>,
}

impl Allocation {
    /// The outcome of `owner`, if it asked.
    pub fn outcome(&self, owner: &ObjectId) -> Option<&Outcome> {
        self.objects.get(owner)
    }

    /// Every object's addresses, to be passed back as [`Previous`] next time.
    pub fn to_previous(&self) -> Previous {
        self.objects
            .iter()
            .filter(|(_, o)| !o.addresses.is_empty())
            .map(|(id, o)| (id.clone(), o.ips()))
            .collect()
    }

    /// Every (address, owner) pair, sorted by address then owner; shared addresses appear
    /// once per owner.
    pub fn owned(&self) -> Vec<(IpAddr, ObjectId)> {
        let mut out: Vec<(IpAddr, ObjectId)> = self
            .objects
            .iter()
            .flat_map(|(id, o)| o.addresses.iter().map(move |a| (a.address, id.clone())))
            .collect();
        out.sort();
        out
    }
}

/// One address in use, and who holds it.
#[derive(Debug)]
struct Holding {
    pool: usize,
    /// Indices into the sorted requests.
    holders: Vec<usize>,
    ports: BTreeSet<Port>,
}

/// Addresses keyed by family and number, so one family's taken addresses are one range.
type Key = (Family, u128);

fn key(ip: IpAddr) -> Key {
    (Family::of(ip), to_u128(ip))
}

struct Run<'a> {
    pools: &'a [Pool],
    requests: Vec<&'a Request>,
    taken: BTreeMap<Key, Holding>,
    outcomes: Vec<Outcome>,
}

/// Allocates addresses to every request. Pure and deterministic: the result depends on the
/// pools, the set of requests (not their order) and `previous`.
///
/// Order of play: requests are ranked oldest first (then namespace, name); in rank order each
/// claims its requested addresses, or, when it requests none, the still-valid addresses it held
/// before; then, in rank order, objects still lacking an address get the lowest free one of the
/// first pool with room. So a newcomer never takes a held address, and of two objects wanting
/// one address the older wins.
pub fn allocate(pools: &Pools, requests: &[Request], previous: &Previous) -> Allocation {
    let mut sorted: Vec<&Request> = requests.iter().collect();
    sorted.sort_by(|a, b| a.priority().cmp(&b.priority()).then_with(|| a.cmp(b)));
    sorted.dedup_by(|later, first| later.owner == first.owner);
    let pools: Vec<Pool> = pools.iter().cloned().collect();
    let mut run = Run {
        pools: &pools,
        outcomes: vec![Outcome::default(); sorted.len()],
        requests: sorted,
        taken: BTreeMap::new(),
    };
    for i in 0..run.requests.len() {
        let request = run.requests[i];
        if request.requested.is_empty() {
            run.claim_previous(i, previous.get(&request.owner).map_or(&[], Vec::as_slice));
        } else {
            run.claim_requested(i);
        }
    }
    for i in 0..run.requests.len() {
        let request = run.requests[i];
        if request.requested.is_empty() {
            // Again, now that every claim is in: a previous address shared with a younger
            // holder can be joined only now (and before any newcomer chooses).
            run.claim_previous(i, previous.get(&request.owner).map_or(&[], Vec::as_slice));
        }
    }
    for i in 0..run.requests.len() {
        if run.requests[i].requested.is_empty() {
            run.assign(i);
        }
    }
    let Run { requests, mut outcomes, .. } = run;
    let objects = requests
        .iter()
        .zip(outcomes.iter_mut())
        .map(|(r, o)| {
            o.addresses.sort();
            (r.owner.clone(), std::mem::take(o))
        })
        .collect();
    Allocation { objects }
}

impl Run<'_> {
    fn claim_requested(&mut self, i: usize) {
        let request = self.requests[i];
        let mut seen = BTreeSet::new();
        for &ip in &request.requested {
            if !seen.insert(ip) {
                continue;
            }
            if let Err(failure) = self.claim(i, ip, true) {
                self.outcomes[i].failures.push(failure);
            }
        }
    }

    /// Keeps what the object held before, as far as it is still valid and wanted; what is
    /// not is silently dropped (the object gets a fresh address).
    fn claim_previous(&mut self, i: usize, held: &[IpAddr]) {
        let mut held = held.to_vec();
        held.sort();
        held.dedup();
        for ip in held {
            let (v4, v6) = self.held_per_family(i);
            if self.requests[i].wants(Family::of(ip), v4, v6) {
                let _ = self.claim(i, ip, false);
            }
        }
    }

    /// Gives `ip` to request `i` if it may have it.
    fn claim(&mut self, i: usize, ip: IpAddr, explicit: bool) -> Result<(), Failure> {
        let request = self.requests[i];
        let Some(pool) = self.pools.iter().position(|p| p.contains(ip)) else {
            return Err(Failure::UnsupportedAddress { address: ip });
        };
        let chosen = &self.pools[pool];
        let holding = self.taken.get(&key(ip));
        // Unrequested addresses come from auto-assigning pools, or are shared with a holder.
        let joining = holding.is_some_and(|h| self.can_share(h, i));
        if !chosen.selects(request) || (!explicit && !chosen.auto_assign && !joining) {
            return Err(Failure::PoolNotSelected { address: ip, pool: chosen.name.clone() });
        }
        match holding {
            None => {
                self.hold(i, ip, pool);
                Ok(())
            }
            Some(holding) if self.can_share(holding, i) => {
                self.hold(i, ip, pool);
                Ok(())
            }
            Some(holding) => {
                let first = holding.holders.first().map(|&h| self.requests[h].owner.clone());
                Err(Failure::AddressInUse {
                    address: ip,
                    holder: first.unwrap_or_else(|| request.owner.clone()),
                })
            }
        }
    }

    fn hold(&mut self, i: usize, ip: IpAddr, pool: usize) {
        let request = self.requests[i];
        let holding = self.taken.entry(key(ip)).or_insert_with(|| Holding {
            pool,
            holders: Vec::new(),
            ports: BTreeSet::new(),
        });
        holding.holders.push(i);
        holding.ports.extend(request.ports.iter().copied());
        self.outcomes[i]
            .addresses
            .push(Assigned { address: ip, pool: self.pools[pool].name.clone() });
    }

    /// Whether request `i` may join the holders of an address: every holder has its sharing
    /// key, namespaces agree (or both sides allow each other), and no port is served twice.
    fn can_share(&self, holding: &Holding, i: usize) -> bool {
        let request = self.requests[i];
        let Some(sharing) = &request.sharing else { return false };
        if holding.holders.contains(&i) {
            return false;
        }
        let ports_free = request.ports.iter().all(|p| !holding.ports.contains(p));
        ports_free
            && holding.holders.iter().all(|&h| {
                let other = self.requests[h];
                let Some(other_sharing) = &other.sharing else { return false };
                let (ns, other_ns) = (&request.owner.namespace, &other.owner.namespace);
                other_sharing.key == sharing.key
                    && (ns == other_ns || (sharing.allows(other_ns) && other_sharing.allows(ns)))
            })
    }

    fn held_per_family(&self, i: usize) -> (usize, usize) {
        let addresses = &self.outcomes[i].addresses;
        let v4 = addresses.iter().filter(|a| a.address.is_ipv4()).count();
        (v4, addresses.len() - v4)
    }

    /// Chooses addresses for the families request `i` still lacks.
    fn assign(&mut self, i: usize) {
        let wanted: &[Option<Family>] = match self.requests[i].families {
            Families::Any => &[None],
            Families::Only(Family::V4) => &[Some(Family::V4)],
            Families::Only(Family::V6) => &[Some(Family::V6)],
            Families::Both => &[Some(Family::V4), Some(Family::V6)],
        };
        for &family in wanted {
            let (v4, v6) = self.held_per_family(i);
            let lacking = match family {
                None => v4 + v6 == 0,
                Some(f) => self.requests[i].wants(f, v4, v6),
            };
            if !lacking {
                continue;
            }
            match self.choose(i, family) {
                Ok((ip, pool)) => self.hold(i, ip, pool),
                Err(failure) => self.outcomes[i].failures.push(failure),
            }
        }
    }

    /// A shared address of the request's key if one fits, else the lowest free address of
    /// the first auto-assigning pool (in pool order) that selects the request and has room.
    fn choose(&self, i: usize, family: Option<Family>) -> Result<(IpAddr, usize), Failure> {
        let request = self.requests[i];
        let in_family = |f: Family| family.is_none_or(|want| want == f);
        if request.sharing.is_some() {
            let shared = self.taken.iter().find(|((f, _), h)| {
                in_family(*f) && self.pools[h.pool].selects(request) && self.can_share(h, i)
            });
            if let Some(((f, n), holding)) = shared {
                return Ok((ip_of(*f, *n), holding.pool));
            }
        }
        let selecting: Vec<usize> = (0..self.pools.len())
            .filter(|&p| {
                let pool = &self.pools[p];
                pool.auto_assign
                    && pool.selects(request)
                    && family.is_none_or(|f| pool.has_family(f))
            })
            .collect();
        if selecting.is_empty() {
            return Err(Failure::NoMatchingPool { family });
        }
        for &p in &selecting {
            for block in self.pools[p].blocks.iter().filter(|b| in_family(b.family())) {
                let (first, last) = block.bounds();
                let f = block.family();
                let taken = self.taken.range((f, first)..=(f, last)).map(|((_, n), _)| n);
                if let Some(ip) = block.lowest_free(taken) {
                    return Ok((ip, p));
                }
            }
        }
        let pools = selecting.iter().map(|&p| self.pools[p].name.clone()).collect();
        Err(Failure::PoolExhausted { family, pools })
    }
}

fn ip_of(family: Family, n: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into()),
        Family::V6 => IpAddr::V6(n.into()),
    }
}

impl fmt::Display for Assigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pool {:?})", self.address, self.pool)
    }
}

#[cfg(test)]
mod tests;
