//! A plan that fails at each of its map writes in turn, against the real program and maps
//! (root needed, like `tests/program.rs`; without root each test says so and returns).

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/frames/mod.rs"]
mod frames;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use aya::programs::TestRunOptions;
use frames::{Frame, OUR_MAC, TCP_SYN, arp_request, seen, solicit};
use gatehouse_ebpf_common::{Addr, Backend, RING_CHUNK, VipEntry, vip_index_slots};

use super::faults;
use crate::test_support::root;
use crate::vip_index;
use crate::{Datapath, Forwarding, L4Protocol, Limits, Plan, Vip, VipAction, WeightedAddr};

const LO_IFINDEX: u32 = 1;
const LIMITS: Limits = Limits { max_vips: 16, max_backends: 64, ring_size: 257, max_flows: 4096 };

fn balance(backends: &[(&str, u32)], forwarding: Forwarding, syn_limit: u32) -> VipAction {
    VipAction::Balance {
        backends: backends
            .iter()
            .map(|(b, weight)| WeightedAddr { addr: b.parse().unwrap(), weight: *weight })
            .collect(),
        forwarding,
        syn_limit,
    }
}

fn vip(addr: &str, port: u16, protocol: L4Protocol, action: VipAction) -> Vip {
    Vip { addr: addr.parse().unwrap(), port, protocol, action }
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn old(generation: u64) -> Plan {
    use L4Protocol::{Tcp, Udp};
    Plan {
        generation,
        vips: vec![
            vip(
                "10.0.0.1",
                80,
                Tcp,
                balance(&[("10.1.0.1:80", 1), ("10.1.0.2:80", 1)], Forwarding::Nat, 0),
            ),
            vip(
                "10.0.0.1",
                53,
                Udp,
                balance(&[("10.1.0.1:53", 1), ("10.1.0.2:53", 1)], Forwarding::Nat, 0),
            ),
            vip("10.0.0.2", 443, Tcp, VipAction::Pass),
            vip(
                "2001:db8::1",
                80,
                Tcp,
                balance(
                    &[("[2001:db8:1::1]:80", 1), ("[2001:db8:1::2]:80", 1)],
                    Forwarding::Nat,
                    0,
                ),
            ),
            vip("10.0.0.3", 80, Tcp, balance(&[("10.2.0.1:80", 1)], Forwarding::Ipip, 0)),
            vip(
                "10.0.0.4",
                80,
                Tcp,
                balance(&[("10.1.0.3:80", 1), ("10.1.0.4:80", 1)], Forwarding::Nat, 0),
            ),
            vip(
                "10.0.0.7",
                25,
                Tcp,
                balance(&[("10.1.0.7:25", 1), ("10.1.0.8:25", 1)], Forwarding::Nat, 0),
            ),
        ],
        owned: addrs(&["10.0.0.1", "2001:db8::1", "10.0.0.4"]),
        drop_sources: vec![("192.0.2.0".parse().unwrap(), 24)],
        source_v4: Some("10.9.9.9".parse().unwrap()),
        source_v6: Some("2001:db8:9::9".parse().unwrap()),
    }
}

/// From `old`: a VIP re-weighted (and given a SYN budget), one whose backends moved, one
/// unchanged, one changing forwarding, one removed, two added (one reusing a removed VIP's
/// backend), owned addresses, the drop list and the IPv4 NAT source changed.
fn new(generation: u64) -> Plan {
    use L4Protocol::{Tcp, Udp};
    Plan {
        generation,
        vips: vec![
            vip(
                "10.0.0.1",
                80,
                Tcp,
                balance(&[("10.1.0.1:80", 1), ("10.1.0.2:80", 3)], Forwarding::Nat, 100_000),
            ),
            vip(
                "10.0.0.1",
                53,
                Udp,
                balance(&[("10.1.0.2:53", 1), ("10.1.0.5:53", 1)], Forwarding::Nat, 0),
            ),
            vip("10.0.0.2", 443, Tcp, VipAction::Pass),
            vip(
                "2001:db8::1",
                80,
                Tcp,
                balance(
                    &[("[2001:db8:1::1]:80", 1), ("[2001:db8:1::2]:80", 1)],
                    Forwarding::Nat,
                    0,
                ),
            ),
            vip("10.0.0.3", 80, Tcp, balance(&[("10.2.0.1:80", 1)], Forwarding::Nat, 0)),
            vip(
                "10.0.0.5",
                443,
                Tcp,
                balance(&[("10.1.0.6:443", 2), ("10.1.0.4:80", 1)], Forwarding::Nat, 0),
            ),
            vip("10.0.0.6", 80, Tcp, VipAction::Pass),
            vip(
                "10.0.0.7",
                25,
                Tcp,
                balance(&[("10.1.0.8:25", 1), ("10.1.0.9:25", 1)], Forwarding::Nat, 0),
            ),
        ],
        owned: addrs(&["10.0.0.1", "2001:db8::1", "10.0.0.5"]),
        drop_sources: vec![
            ("198.51.100.0".parse().unwrap(), 24),
            ("2001:db8:bad::".parse().unwrap(), 48),
        ],
        source_v4: Some("10.9.9.8".parse().unwrap()),
        source_v6: Some("2001:db8:9::9".parse().unwrap()),
    }
}

fn loaded(plan: &Plan) -> Datapath {
    let mut dp = Datapath::load(LIMITS).unwrap();
    dp.set_mac(LO_IFINDEX, OUR_MAC).unwrap();
    dp.apply(plan).unwrap();
    dp
}

/// A VIP as the program sees it: its entry and the table of the half it points to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VipView {
    action: u8,
    flags: u8,
    syn_limit: u32,
    /// Backend (address, port in network order) slot by slot.
    table: Vec<(Addr, u16)>,
}

/// What the maps hold, read back and decoded (ids, indexes and halves are the applier's
/// own business: two equal snapshots make the same decisions).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Snapshot {
    generation: u64,
    sources: (Addr, Addr),
    filter: Vec<u64>,
    drop_entries: u32,
    vips: BTreeMap<(Addr, u16, u8), VipView>,
    /// VIPs with a copy in the VIP index.
    indexed: BTreeSet<(Addr, u16, u8)>,
    owned: BTreeSet<Addr>,
    drop: BTreeSet<(u32, Addr)>,
}

/// Reads the maps back; checks on the way what must hold for the program (each VIP's shape
/// generation live, every backend a live VIP points to live, every index copy equal to its
/// entry) and that the applier's state names the same tables.
fn snapshot(dp: &Datapath) -> Snapshot {
    let maps = dp.maps();
    let settings = maps.settings.get(&0, 0).unwrap();
    let mut backends: HashMap<u16, Backend> = HashMap::new();
    let mut vips = BTreeMap::new();
    for key in maps.vips.keys() {
        let key = key.unwrap();
        let value = maps.vips.get(&key, 0).unwrap();
        let name = (key.addr, key.port, key.proto);
        assert_ne!(value.shape_gen, 0, "{name:?}");
        assert_eq!(maps.vip_gen.get(&value.index, 0).unwrap(), value.shape_gen, "{name:?}");
        let mut table = Vec::new();
        for i in 0..value.ring_size {
            let at = value.ring_offset + i;
            let chunk = maps.ring.get(&(at / RING_CHUNK), 0).unwrap();
            let id = chunk.ids[(at % RING_CHUNK) as usize];
            let backend = *backends
                .entry(id)
                .or_insert_with(|| maps.backends.get(&u32::from(id), 0).unwrap());
            assert_eq!(backend.live, 1, "{name:?} points to dead backend id {id}");
            table.push((backend.addr, backend.port));
        }
        let by_state: Option<Vec<(Addr, u16)>> = dp
            .table(&key)
            .map(|t| t.iter().map(|a| (crate::wire_addr(a.ip()), a.port().to_be())).collect());
        assert_eq!(by_state.unwrap_or_default(), table, "state and maps differ for {name:?}");
        let view =
            VipView { action: value.action, flags: value.flags, syn_limit: value.syn_limit, table };
        vips.insert(name, view);
    }
    let mut indexed = BTreeSet::new();
    for slot in 0..vip_index_slots(LIMITS.max_vips) {
        let entry = maps.vip_index.get(&slot, 0).unwrap();
        if entry == VipEntry::default() {
            continue;
        }
        let value = maps.vips.get(&entry.key, 0).expect("an index copy of a VIP not in GH_VIPS");
        assert_eq!(entry, vip_index::entry(&entry.key, &value), "slot {slot}");
        assert!(indexed.insert((entry.key.addr, entry.key.port, entry.key.proto)));
    }
    let owned = maps.owned.keys().map(|k| k.unwrap().addr).collect();
    let drop = maps.drop.keys().map(|k| k.unwrap()).map(|k| (k.prefix_len(), k.data())).collect();
    Snapshot {
        generation: settings.generation,
        sources: (settings.source_v4, settings.source_v6),
        filter: settings.filter.to_vec(),
        drop_entries: settings.drop_entries,
        vips,
        indexed,
        owned,
        drop,
    }
}

/// What the program does with a frame: its action and, for an IP packet it changed, the
/// addresses, protocol and destination port it left with (the NAT source port is the
/// connection table's business). Only SYNs, ARP and NDP: their fate depends on the maps
/// alone (other packets of a flow pinned earlier keep its backend, as they should).
type Decision = (u32, Option<(IpAddr, IpAddr, u8, u16)>);

fn frames() -> Vec<(Vec<u8>, bool)> {
    let mut frames = Vec::new();
    let tcp = [
        ("10.0.0.1", 80),
        ("10.0.0.2", 443),
        ("2001:db8::1", 80),
        ("10.0.0.3", 80),
        ("10.0.0.4", 80),
        ("10.0.0.5", 443),
        ("10.0.0.6", 80),
        ("10.0.0.7", 25),
        ("10.0.0.9", 80),
    ];
    for (dst, port) in tcp {
        let v6 = dst.contains(':');
        for client in 0..4u16 {
            let src =
                if v6 { format!("2001:db8:ff::{client}") } else { format!("203.0.113.{client}") };
            frames.push((Frame::tcp(&src, 40_000 + client, dst, port, TCP_SYN).bytes(), true));
        }
    }
    // Sources on the old and on the new drop list.
    frames.push((Frame::tcp("192.0.2.7", 40_000, "10.0.0.1", 80, TCP_SYN).bytes(), true));
    frames.push((Frame::tcp("198.51.100.7", 40_000, "10.0.0.1", 80, TCP_SYN).bytes(), true));
    frames.push((Frame::tcp("2001:db8:bad::7", 40_000, "2001:db8::1", 80, TCP_SYN).bytes(), true));
    for target in [[10, 0, 0, 1], [10, 0, 0, 4], [10, 0, 0, 5], [10, 9, 9, 9], [10, 9, 9, 8]] {
        frames.push((arp_request([203, 0, 113, 1], target), false));
    }
    let client = "2001:db8:ff::1".parse().unwrap();
    frames.push((solicit(client, "2001:db8::1".parse().unwrap()), false));
    frames
}

fn decisions(dp: &Datapath) -> Vec<Decision> {
    let program = dp.program(false).unwrap();
    frames()
        .into_iter()
        .map(|(frame, ip)| {
            let mut out = vec![0u8; frame.len() + 256];
            let result = aya::programs::TestRun::test_run(
                program,
                TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    ..TestRunOptions::default()
                },
            )
            .unwrap();
            out.truncate(result.data_size_out as usize);
            let changed = (ip && out != frame).then(|| {
                let s = seen(&out, 0);
                (s.src, s.dst, s.proto, s.dport)
            });
            (result.return_value, changed)
        })
        .collect()
}

/// The maps and decisions of `plan` written over `old(1)` without a fault.
fn reference(plan: &Plan) -> (Snapshot, Vec<Decision>) {
    let mut dp = loaded(&old(1));
    dp.apply(plan).unwrap();
    (snapshot(&dp), decisions(&dp))
}

fn at(view: &Snapshot, generation: u64) -> Snapshot {
    Snapshot { generation, ..view.clone() }
}

#[test]
fn a_plan_failing_at_any_map_write_leaves_the_generation_before_needs_root() {
    if !root() {
        return;
    }
    let _faults = faults::exclusive();
    let (new_view, new_decisions) = reference(&new(2));
    let mut dp = loaded(&old(1));
    let (old_view, old_decisions) = (snapshot(&dp), decisions(&dp));
    assert_ne!(old_view.vips, new_view.vips);
    assert_ne!(old_decisions, new_decisions);
    let mut generation = 1;
    let mut failed = 0;
    loop {
        faults::fail(&[failed]);
        let result = dp.apply(&new(generation + 1));
        faults::fail(&[]);
        if result.is_ok() {
            break;
        }
        // (a) The maps are the old plan's, the state is theirs, the program decides as before.
        assert!(!dp.needs_full_apply(), "write {failed}");
        assert_eq!(dp.applied(), Some(generation));
        assert_eq!(snapshot(&dp), at(&old_view, generation), "write {failed} failed");
        assert_eq!(decisions(&dp), old_decisions, "write {failed} failed");
        // (b) The new plan applies as it does without a fault, and the old one after it.
        generation += 1;
        assert_eq!(dp.apply(&new(generation)).unwrap(), generation);
        assert_eq!(snapshot(&dp), at(&new_view, generation), "after write {failed} failed");
        assert_eq!(decisions(&dp), new_decisions, "after write {failed} failed");
        generation += 1;
        dp.apply(&old(generation)).unwrap();
        assert_eq!(snapshot(&dp), at(&old_view, generation));
        failed += 1;
    }
    // Every write of the plan failed once (settings, backends, tables, VIPs, index copies,
    // generations, owned, drop list, the commit).
    eprintln!("the plan failed at each of its {failed} writes in turn");
    assert!(failed > 40, "only {failed} writes");
    assert_eq!(snapshot(&dp), at(&new_view, generation + 1));
}

#[test]
fn a_plan_whose_undo_fails_is_written_in_full_next_needs_root() {
    if !root() {
        return;
    }
    let _faults = faults::exclusive();
    let (new_view, new_decisions) = reference(&new(2));
    let mut dp = loaded(&old(1));
    let (old_view, old_decisions) = (snapshot(&dp), decisions(&dp));
    let mut generation = 1;
    let mut torn = 0;
    // The plan's write `failed` fails, and then either the first write undoing it (the last
    // made: the undos after it succeed) or every write from there on (the maps keep what the
    // plan wrote before `failed`).
    let rounds = (0..).flat_map(|failed| [(failed, false), (failed, true)]);
    for (failed, every) in rounds {
        if every {
            faults::fail_from(failed);
        } else {
            faults::fail(&[failed, failed + 1]);
        }
        let result = dp.apply(&new(generation + 1));
        faults::fail(&[]);
        let Err(error) = result else {
            break;
        };
        assert_eq!(dp.applied(), Some(generation));
        if !dp.needs_full_apply() {
            // Nothing the program sees was written yet: nothing to undo.
            assert_eq!(
                snapshot(&dp),
                at(&old_view, generation),
                "write {failed}, every later write failing: {every}"
            );
            continue;
        }
        torn += 1;
        assert!(error.to_string().contains("written in full"), "{error}");
        // The next plan, written in full, is the old one or the new one in turn: either way
        // nothing of the other may stay.
        let (plan, view, decided): (fn(u64) -> Plan, _, _) =
            if (failed + usize::from(every)) % 2 == 0 {
                (old, &old_view, &old_decisions)
            } else {
                (new, &new_view, &new_decisions)
            };
        // A full write that fails leaves it to the next one.
        faults::fail(&[failed]);
        let again = dp.apply(&plan(generation + 1));
        faults::fail(&[]);
        if again.is_err() {
            assert!(dp.needs_full_apply());
            assert_eq!(dp.applied(), Some(generation));
        }
        generation += 1;
        assert_eq!(dp.apply(&plan(generation)).unwrap(), generation);
        assert!(!dp.needs_full_apply());
        assert_eq!(
            snapshot(&dp),
            at(view, generation),
            "after write {failed}, every later write failing: {every}"
        );
        assert_eq!(
            &decisions(&dp),
            decided,
            "after write {failed}, every later write failing: {every}"
        );
        // And plans apply as differences again.
        generation += 1;
        dp.apply(&new(generation)).unwrap();
        assert_eq!(
            snapshot(&dp),
            at(&new_view, generation),
            "after write {failed}, every later write failing: {every}"
        );
        generation += 1;
        dp.apply(&old(generation)).unwrap();
        assert_eq!(
            snapshot(&dp),
            at(&old_view, generation),
            "after write {failed}, every later write failing: {every}"
        );
    }
    eprintln!("{torn} failed plans had an undo to fail");
    assert!(torn > 60, "only {torn} failed plans had an undo to fail");
}
