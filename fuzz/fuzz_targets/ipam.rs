//! The LB-IPAM allocator on fuzzed pools, requests and histories: it must never panic, never
//! give one address to two objects that may not share it, never hand out an address outside
//! the pools, and give the same result whatever the order of the requests.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use gatehouse_ipam::{
    Block, Families, Family, Pool, Pools, Port, Previous, Request, Selector, Sharing, allocate,
};
use gatehouse_model::ObjectId;
use libfuzzer_sys::fuzz_target;

const NAMESPACES: [&str; 3] = ["a", "b", "c"];

#[derive(Arbitrary, Debug)]
struct Input {
    pools: Vec<PoolIn>,
    requests: Vec<RequestIn>,
    previous: Vec<(u8, Vec<u16>)>,
}

#[derive(Arbitrary, Debug)]
struct PoolIn {
    /// Offsets into a small IPv4 and IPv6 space so blocks and requests collide often.
    start: u16,
    len: u8,
    v6: bool,
    auto_assign: bool,
    red_only: bool,
    namespace: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct RequestIn {
    namespace: u8,
    created: Option<u8>,
    requested: Vec<(bool, u16)>,
    families: u8,
    sharing: Option<(bool, bool)>,
    port: u8,
    red: bool,
}

fn ip(v6: bool, offset: u16) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, offset))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + u32::from(offset)))
    }
}

fn owner(i: usize, namespace: u8) -> ObjectId {
    ObjectId::new("Gateway", NAMESPACES[usize::from(namespace) % 3], format!("o{i}"))
}

fuzz_target!(|input: Input| {
    let mut pools = Vec::new();
    for (i, p) in input.pools.iter().take(6).enumerate() {
        let start = p.start % 512;
        let end = start.saturating_add(u16::from(p.len % 16));
        let Ok(block) = Block::range(ip(p.v6, start), ip(p.v6, end)) else { continue };
        let mut pool = Pool::new(format!("p{i}"), vec![block]);
        pool.auto_assign = p.auto_assign;
        if p.red_only {
            pool.selector = Some(Selector {
                match_labels: [("color".to_owned(), "red".to_owned())].into(),
                match_expressions: Vec::new(),
            });
        }
        pool.namespaces =
            p.namespace.map(|n| NAMESPACES[usize::from(n) % 3].to_owned()).into_iter().collect();
        pools.push(pool);
    }
    // Overlapping pools are refused; the allocator only ever sees checked pools.
    let Ok(pools) = Pools::new(pools) else { return };
    let requests: Vec<Request> = input
        .requests
        .iter()
        .take(32)
        .enumerate()
        .map(|(i, r)| {
            let mut request = Request::new(owner(i, r.namespace));
            request.created = r.created.map(i64::from);
            request.requested =
                r.requested.iter().take(3).map(|(v6, o)| ip(*v6, o % 600)).collect();
            request.families = match r.families % 4 {
                0 => Families::Any,
                1 => Families::Only(Family::V4),
                2 => Families::Only(Family::V6),
                _ => Families::Both,
            };
            request.sharing = r.sharing.map(|(key, cross)| Sharing {
                key: if key { "k1".into() } else { "k2".into() },
                cross_namespace: if cross { vec!["*".into()] } else { Vec::new() },
            });
            request.ports = vec![Port::tcp(u16::from(r.port % 3) + 80)];
            if r.red {
                request.labels.insert("color".into(), "red".into());
            }
            request
        })
        .collect();
    let previous: Previous = input
        .previous
        .iter()
        .take(32)
        .filter_map(|(i, offsets)| {
            let r = requests.get(usize::from(*i))?;
            Some((r.owner.clone(), offsets.iter().take(3).map(|o| ip(o % 2 == 0, o % 600)).collect()))
        })
        .collect();

    let allocation = allocate(&pools, &requests, &previous);
    let mut reversed = requests.clone();
    reversed.reverse();
    assert_eq!(allocate(&pools, &reversed, &previous), allocation, "order changed the result");

    let by_owner: BTreeMap<&ObjectId, &Request> = requests.iter().map(|r| (&r.owner, r)).collect();
    let mut holders: BTreeMap<IpAddr, Vec<&Request>> = BTreeMap::new();
    for (address, owner) in allocation.owned() {
        assert!(pools.pool_of(address).is_some(), "{address} is in no pool");
        holders.entry(address).or_default().push(by_owner[&owner]);
    }
    for (address, list) in holders {
        if list.len() < 2 {
            continue;
        }
        let mut ports = BTreeSet::new();
        let keys: BTreeSet<_> = list.iter().map(|r| r.sharing.as_ref().map(|s| &s.key)).collect();
        assert!(keys.len() == 1 && !keys.contains(&None), "{address} shared without one key");
        for r in list {
            for p in &r.ports {
                assert!(ports.insert(*p), "{address} serves {p:?} twice");
            }
        }
    }
});
