use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;
use crate::{Block, Expression, Families, Operator, Pool, Pools, Selector, Sharing};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn id(namespace: &str, name: &str) -> ObjectId {
    ObjectId::new("Gateway", namespace, name)
}

fn pool(name: &str, blocks: &[&str]) -> Pool {
    Pool::new(name, blocks.iter().map(|b| Block::cidr(b).unwrap()).collect())
}

fn pools(list: Vec<Pool>) -> Pools {
    Pools::new(list).unwrap()
}

fn req(namespace: &str, name: &str) -> Request {
    Request::new(id(namespace, name))
}

fn ips(allocation: &Allocation, namespace: &str, name: &str) -> Vec<IpAddr> {
    allocation.outcome(&id(namespace, name)).unwrap().ips()
}

fn failures(allocation: &Allocation, namespace: &str, name: &str) -> Vec<Failure> {
    allocation.outcome(&id(namespace, name)).unwrap().failures.clone()
}

#[test]
fn objects_without_requests_get_the_lowest_free_address_in_pool_order() {
    let p = pools(vec![pool("a", &["10.0.0.0/30"]), pool("b", &["10.0.1.0/30"])]);
    let a = allocate(&p, &[req("ns", "x"), req("ns", "y"), req("ns", "z")], &Previous::new());
    assert_eq!(ips(&a, "ns", "x"), [ip("10.0.0.1")]);
    assert_eq!(ips(&a, "ns", "y"), [ip("10.0.0.2")]);
    assert_eq!(ips(&a, "ns", "z"), [ip("10.0.1.1")]);
    assert_eq!(a.outcome(&id("ns", "z")).unwrap().addresses[0].pool, "b");
}

#[test]
fn exhaustion_names_the_pools() {
    let p = pools(vec![pool("only", &["10.0.0.0/30"])]);
    let requests = [req("ns", "a"), req("ns", "b"), req("ns", "c")];
    let a = allocate(&p, &requests, &Previous::new());
    assert!(ips(&a, "ns", "c").is_empty());
    assert_eq!(
        failures(&a, "ns", "c"),
        [Failure::PoolExhausted { family: None, pools: vec!["only".into()] }]
    );
    assert_eq!(failures(&a, "ns", "c")[0].to_string(), "no free address in pool \"only\"");
}

#[test]
fn requested_addresses_are_honoured_or_refused_with_a_reason() {
    let mut manual = pool("manual", &["10.0.9.0/30"]);
    manual.auto_assign = false;
    let mut team = pool("team", &["10.0.8.0/30"]);
    team.namespaces = vec!["team".into()];
    let p = pools(vec![pool("a", &["10.0.0.0/30"]), manual, team]);
    let mut inside = req("ns", "inside");
    inside.requested = vec![ip("10.0.0.2")];
    let mut manual_req = req("ns", "manual");
    manual_req.requested = vec![ip("10.0.9.1")];
    let mut outside = req("ns", "outside");
    outside.requested = vec![ip("192.0.2.1"), ip("10.0.0.1")];
    let mut wrong_ns = req("ns", "wrong-ns");
    wrong_ns.requested = vec![ip("10.0.8.1")];
    let a = allocate(&p, &[inside, manual_req, outside, wrong_ns], &Previous::new());
    assert_eq!(ips(&a, "ns", "inside"), [ip("10.0.0.2")]);
    assert_eq!(ips(&a, "ns", "manual"), [ip("10.0.9.1")]);
    // One of two requested addresses is served; the other is reported.
    assert_eq!(ips(&a, "ns", "outside"), [ip("10.0.0.1")]);
    assert_eq!(
        failures(&a, "ns", "outside"),
        [Failure::UnsupportedAddress { address: ip("192.0.2.1") }]
    );
    assert_eq!(
        failures(&a, "ns", "wrong-ns"),
        [Failure::PoolNotSelected { address: ip("10.0.8.1"), pool: "team".into() }]
    );
}

#[test]
fn auto_assign_false_pools_serve_only_requests() {
    let mut manual = pool("manual", &["10.0.9.0/30"]);
    manual.auto_assign = false;
    let p = pools(vec![manual]);
    let a = allocate(&p, &[req("ns", "x")], &Previous::new());
    assert_eq!(failures(&a, "ns", "x"), [Failure::NoMatchingPool { family: None }]);
}

#[test]
fn selectors_see_labels_and_pseudo_labels() {
    let mut by_name = pool("by-name", &["10.0.1.0/30"]);
    by_name.selector = Some(Selector {
        match_labels: [(crate::NAME_LABEL.to_owned(), "special".to_owned())].into(),
        match_expressions: vec![],
    });
    let mut by_ns = pool("by-ns", &["10.0.2.0/30"]);
    by_ns.selector = Some(Selector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![Expression {
            key: crate::NAMESPACE_LABEL.into(),
            operator: Operator::In,
            values: vec!["blue".into()],
        }],
    });
    let mut by_label = pool("by-label", &["10.0.3.0/30"]);
    by_label.selector = Some(Selector {
        match_labels: [("color".to_owned(), "red".to_owned())].into(),
        match_expressions: vec![],
    });
    let mut by_ns_labels = pool("by-ns-labels", &["10.0.4.0/30"]);
    by_ns_labels.namespace_selector = Some(Selector {
        match_labels: [("tier".to_owned(), "edge".to_owned())].into(),
        match_expressions: vec![],
    });
    let p = pools(vec![by_name, by_ns, by_label, by_ns_labels]);
    let mut red = req("ns", "red");
    red.labels.insert("color".into(), "red".into());
    let mut edge = req("edge", "e");
    edge.namespace_labels.insert("tier".into(), "edge".into());
    let requests = [req("ns", "special"), req("blue", "x"), red, edge, req("ns", "plain")];
    let a = allocate(&p, &requests, &Previous::new());
    assert_eq!(ips(&a, "ns", "special"), [ip("10.0.1.1")]);
    assert_eq!(ips(&a, "blue", "x"), [ip("10.0.2.1")]);
    assert_eq!(ips(&a, "ns", "red"), [ip("10.0.3.1")]);
    assert_eq!(ips(&a, "edge", "e"), [ip("10.0.4.1")]);
    assert_eq!(failures(&a, "ns", "plain"), [Failure::NoMatchingPool { family: None }]);
}

#[test]
fn the_oldest_wins_a_conflict_whatever_the_input_order() {
    let p = pools(vec![pool("a", &["10.0.0.0/29"])]);
    let mut old = req("z", "old");
    old.created = Some(100);
    old.requested = vec![ip("10.0.0.3")];
    let mut young = req("a", "young");
    young.created = Some(200);
    young.requested = vec![ip("10.0.0.3")];
    let mut unknown = req("a", "a-unknown");
    unknown.requested = vec![ip("10.0.0.3")];
    for requests in [
        vec![old.clone(), young.clone(), unknown.clone()],
        vec![unknown.clone(), young.clone(), old.clone()],
    ] {
        let a = allocate(&p, &requests, &Previous::new());
        assert_eq!(ips(&a, "z", "old"), [ip("10.0.0.3")]);
        let lost = Failure::AddressInUse { address: ip("10.0.0.3"), holder: id("z", "old") };
        assert_eq!(failures(&a, "a", "young"), std::slice::from_ref(&lost));
        assert_eq!(failures(&a, "a", "a-unknown"), [lost]);
    }
    // Without times, namespace then name decides.
    let mut b = req("ns", "b");
    b.requested = vec![ip("10.0.0.3")];
    let mut a_ = req("ns", "a");
    a_.requested = vec![ip("10.0.0.3")];
    let a = allocate(&p, &[b, a_], &Previous::new());
    assert_eq!(ips(&a, "ns", "a"), [ip("10.0.0.3")]);
    assert!(ips(&a, "ns", "b").is_empty());
}

fn sharer(namespace: &str, name: &str, key: &str, port: u16, cross: &[&str]) -> Request {
    let mut r = req(namespace, name);
    r.sharing = Some(Sharing {
        key: key.into(),
        cross_namespace: cross.iter().map(|s| s.to_string()).collect(),
    });
    r.ports = vec![Port::tcp(port)];
    r
}

#[test]
fn sharing_keys_share_one_address_on_disjoint_ports() {
    let p = pools(vec![pool("a", &["10.0.0.0/29"])]);
    let requests = [
        sharer("ns", "web", "k", 80, &[]),
        sharer("ns", "tls", "k", 443, &[]),
        sharer("ns", "web2", "k", 80, &[]), // port clash: gets its own address
        sharer("ns", "other-key", "j", 8080, &[]),
        req("ns", "no-key"),
    ];
    let a = allocate(&p, &requests, &Previous::new());
    let web = ips(&a, "ns", "web");
    assert_eq!(ips(&a, "ns", "tls"), web);
    assert_ne!(ips(&a, "ns", "web2"), web);
    assert_ne!(ips(&a, "ns", "other-key"), web);
    assert_ne!(ips(&a, "ns", "no-key"), web);
    let owned = a.owned();
    assert_eq!(owned.iter().filter(|(address, _)| *address == web[0]).count(), 2);
}

#[test]
fn cross_namespace_sharing_needs_both_sides_to_opt_in() {
    let p = pools(vec![pool("a", &["10.0.0.0/29"])]);
    let a = allocate(
        &p,
        &[sharer("one", "a", "k", 80, &["two"]), sharer("two", "b", "k", 443, &[])],
        &Previous::new(),
    );
    assert_ne!(ips(&a, "one", "a"), ips(&a, "two", "b"));
    let a = allocate(
        &p,
        &[sharer("one", "a", "k", 80, &["two"]), sharer("two", "b", "k", 443, &["*"])],
        &Previous::new(),
    );
    assert_eq!(ips(&a, "one", "a"), ips(&a, "two", "b"));
    // A requested shared address follows the same rules: a newcomer from a namespace that
    // may not share is refused the address the others hold.
    let mut c = sharer("three", "c", "k", 8443, &[]);
    c.requested = ips(&a, "one", "a");
    let b = allocate(
        &p,
        &[sharer("one", "a", "k", 80, &["two"]), sharer("two", "b", "k", 443, &["*"]), c],
        &a.to_previous(),
    );
    assert_eq!(
        failures(&b, "three", "c"),
        [Failure::AddressInUse { address: ips(&a, "one", "a")[0], holder: id("one", "a") }]
    );
    assert_eq!(ips(&b, "two", "b"), ips(&a, "two", "b"));
}

#[test]
fn previous_addresses_are_kept_and_newcomers_never_take_them() {
    let p = pools(vec![pool("a", &["10.0.0.0/29"])]);
    let previous: Previous = [(id("ns", "m"), vec![ip("10.0.0.5")])].into();
    // "a" sorts first and would get .1 anyway; "m" keeps .5 although .1 is lower.
    let a = allocate(&p, &[req("ns", "m"), req("ns", "a")], &previous);
    assert_eq!(ips(&a, "ns", "m"), [ip("10.0.0.5")]);
    assert_eq!(ips(&a, "ns", "a"), [ip("10.0.0.1")]);
    // A previous address no pool holds any more is replaced.
    let moved = pools(vec![pool("b", &["10.1.0.0/29"])]);
    let a = allocate(&moved, &[req("ns", "m")], &previous);
    assert_eq!(ips(&a, "ns", "m"), [ip("10.1.0.1")]);
    // An older object asking for it by value wins it.
    let mut older = req("ns", "older");
    older.created = Some(1);
    older.requested = vec![ip("10.0.0.5")];
    let a = allocate(&p, &[req("ns", "m"), older], &previous);
    assert_eq!(ips(&a, "ns", "older"), [ip("10.0.0.5")]);
    assert_eq!(ips(&a, "ns", "m"), [ip("10.0.0.1")]);
}

#[test]
fn families_and_dual_stack() {
    let p = pools(vec![pool("v6", &["fd00::/64"]), pool("v4", &["10.0.0.0/30"])]);
    let mut both = req("ns", "both");
    both.families = Families::Both;
    let mut v4 = req("ns", "v4");
    v4.families = Families::Only(Family::V4);
    let a = allocate(&p, &[both, v4, req("ns", "any")], &Previous::new());
    // Any takes the first pool in order with room: the IPv6 pool here.
    assert_eq!(ips(&a, "ns", "any"), [ip("fd00::")]);
    assert_eq!(ips(&a, "ns", "both"), [ip("10.0.0.1"), ip("fd00::1")]);
    assert_eq!(ips(&a, "ns", "v4"), [ip("10.0.0.2")]);
    let only_v4 = pools(vec![pool("v4", &["10.0.0.0/30"])]);
    let mut v6 = req("ns", "v6");
    v6.families = Families::Only(Family::V6);
    let a = allocate(&only_v4, &[v6], &Previous::new());
    assert_eq!(failures(&a, "ns", "v6"), [Failure::NoMatchingPool { family: Some(Family::V6) }]);
}

// Property-style tests over random pools, requests and histories.

fn random_requests(rng: &mut StdRng) -> Vec<Request> {
    let n = rng.random_range(1..24);
    (0..n)
        .map(|i| {
            let namespace = ["a", "b", "c"][rng.random_range(0..3)];
            let mut r = req(namespace, &format!("obj-{i}"));
            if rng.random_bool(0.5) {
                r.created = Some(rng.random_range(0..5));
            }
            if rng.random_bool(0.2) {
                r.requested = vec![ip(&format!("10.0.0.{}", rng.random_range(0..12)))];
            }
            if rng.random_bool(0.3) {
                let key = ["k1", "k2"][rng.random_range(0..2)];
                let cross = if rng.random_bool(0.5) { vec!["*".to_owned()] } else { vec![] };
                r.sharing = Some(Sharing { key: key.into(), cross_namespace: cross });
            }
            r.ports = vec![Port::tcp([80, 443, 8080][rng.random_range(0..3)])];
            if rng.random_bool(0.2) {
                r.labels.insert("color".into(), "red".into());
            }
            r
        })
        .collect()
}

fn random_pools() -> Pools {
    let mut red = Pool::new("red", vec![Block::range(ip("10.0.0.8"), ip("10.0.0.10")).unwrap()]);
    red.selector = Some(Selector {
        match_labels: [("color".to_owned(), "red".to_owned())].into(),
        match_expressions: vec![],
    });
    let mut manual = pool("manual", &["10.0.0.6/31"]);
    manual.auto_assign = false;
    pools(vec![red, pool("small", &["10.0.0.0/30"]), manual, pool("v6", &["fd00::/126"])])
}

/// No address is held by two objects unless they share it by the rules.
fn assert_no_double_assignment(requests: &[Request], allocation: &Allocation) {
    let by_id: BTreeMap<&ObjectId, &Request> = requests.iter().map(|r| (&r.owner, r)).collect();
    let mut holders: BTreeMap<IpAddr, Vec<&Request>> = BTreeMap::new();
    for (address, owner) in allocation.owned() {
        holders.entry(address).or_default().push(by_id[&owner]);
    }
    for (address, list) in holders {
        if list.len() < 2 {
            continue;
        }
        let key = &list[0].sharing.as_ref().expect("shared without a key").key;
        let mut ports = BTreeSet::new();
        for r in &list {
            let sharing = r.sharing.as_ref().expect("shared without a key");
            assert_eq!(&sharing.key, key, "{address} shared across keys");
            for p in &r.ports {
                assert!(ports.insert(*p), "{address} port {p:?} served twice");
            }
        }
    }
}

#[test]
fn property_deterministic_whatever_the_order() {
    let pools = random_pools();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..300 {
        let mut requests = random_requests(&mut rng);
        let expected = allocate(&pools, &requests, &Previous::new());
        assert_no_double_assignment(&requests, &expected);
        requests.shuffle(&mut rng);
        assert_eq!(allocate(&pools, &requests, &Previous::new()), expected);
    }
}

#[test]
fn property_stable_across_reallocation_and_newcomers() {
    let pools = random_pools();
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..300 {
        let mut requests = random_requests(&mut rng);
        // Newcomers only choose (requests by value may legitimately take from younger holders).
        let newcomers: Vec<Request> = random_requests(&mut rng)
            .into_iter()
            .enumerate()
            .map(|(i, mut r)| {
                r.owner.name = format!("new-{i}");
                r.requested.clear();
                r
            })
            .collect();
        let first = allocate(&pools, &requests, &Previous::new());
        let previous = first.to_previous();
        // The same input keeps every address (a loser may now name another holder).
        let again = allocate(&pools, &requests, &previous);
        for (owner, outcome) in &first.objects {
            assert_eq!(again.outcome(owner).unwrap().addresses, outcome.addresses, "{owner}");
        }
        requests.extend(newcomers);
        requests.shuffle(&mut rng);
        let second = allocate(&pools, &requests, &previous);
        assert_no_double_assignment(&requests, &second);
        for (owner, outcome) in &first.objects {
            if !outcome.addresses.is_empty() {
                assert_eq!(second.outcome(owner).unwrap().addresses, outcome.addresses, "{owner}");
            }
        }
    }
}

#[test]
fn huge_ipv6_pools_cost_what_is_taken() {
    let p = pools(vec![pool("v6", &["fd00::/32"])]);
    let requests: Vec<Request> = (0..200).map(|i| req("ns", &format!("o{i:03}"))).collect();
    let a = allocate(&p, &requests, &Previous::new());
    assert_eq!(ips(&a, "ns", "o199"), [ip("fd00::c7")]);
}
