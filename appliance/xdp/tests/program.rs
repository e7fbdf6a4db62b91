#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

//! The real XDP program, verified and run by the kernel through `BPF_PROG_TEST_RUN` on
//! crafted frames. Needs root and a BPF-capable kernel (hence `_needs_root`); without root
//! each test says so and returns.

mod frames;

use std::net::{IpAddr, SocketAddr};

use aya::programs::{TestRun, TestRunOptions};
use frames::{Frame, OUR_MAC, TCP_ACK, TCP_SYN, arp_request, seen, solicit};
use gatehouse_xdp::model::{Decision, Model};
use gatehouse_xdp::{
    Datapath, Forwarding, L4Protocol, Limits, Plan, Vip, VipAction, WeightedAddr, vip_key,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
/// `BPF_PROG_TEST_RUN` runs XDP with `lo` as the ingress interface.
const LO_IFINDEX: u32 = 1;

// The crate's unit tests' root check, the same file.
#[path = "../src/test_support.rs"]
mod test_support;
use test_support::root;

fn balance(backends: &[&str], forwarding: Forwarding, syn_limit: u32) -> VipAction {
    VipAction::Balance {
        backends: backends
            .iter()
            .map(|b| WeightedAddr { addr: b.parse().unwrap(), weight: 1 })
            .collect(),
        forwarding,
        syn_limit,
    }
}

fn vip(addr: &str, port: u16, protocol: L4Protocol, action: VipAction) -> Vip {
    Vip { addr: addr.parse().unwrap(), port, protocol, action }
}

fn plan() -> Plan {
    Plan {
        generation: 1,
        vips: vec![
            vip(
                "10.0.0.1",
                80,
                L4Protocol::Tcp,
                balance(&["10.1.0.1:8080", "10.1.0.2:8080"], Forwarding::Nat, 0),
            ),
            vip(
                "10.0.0.1",
                53,
                L4Protocol::Udp,
                balance(&["10.1.0.1:53", "10.1.0.2:53"], Forwarding::Nat, 0),
            ),
            vip("10.0.0.2", 443, L4Protocol::Tcp, VipAction::Pass),
            vip(
                "2001:db8::1",
                80,
                L4Protocol::Tcp,
                balance(&["[2001:db8:1::1]:8080", "[2001:db8:1::2]:8080"], Forwarding::Nat, 0),
            ),
            vip("10.0.0.3", 80, L4Protocol::Tcp, balance(&["10.2.0.1:80"], Forwarding::Ipip, 0)),
            vip(
                "10.0.0.4",
                80,
                L4Protocol::Tcp,
                balance(&["10.1.0.3:80", "10.1.0.4:80"], Forwarding::Nat, 3),
            ),
        ],
        owned: vec!["10.0.0.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
        drop_sources: vec![("192.0.2.0".parse().unwrap(), 24)],
        source_v4: Some("10.9.9.9".parse().unwrap()),
        source_v6: Some("2001:db8:9::9".parse().unwrap()),
    }
}

fn loaded() -> Datapath {
    let limits = Limits { max_vips: 16, max_backends: 64, ring_size: 4099, max_flows: 4096 };
    let mut dp = Datapath::load(limits).expect("load the XDP program");
    dp.set_mac(LO_IFINDEX, OUR_MAC).unwrap();
    assert_eq!(dp.apply(&plan()).unwrap(), 1);
    dp
}

/// Runs the program once; returns its action and the frame it left.
fn run(dp: &Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let result = dp
        .program(false)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

fn forwarded(action: u32) -> bool {
    matches!(action, XDP_PASS | XDP_TX | XDP_REDIRECT)
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn tcp_hit_is_full_nat_to_a_backend_and_the_reply_is_rewritten_back_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    let syn = Frame::tcp("203.0.113.7", 40000, "10.0.0.1", 80, TCP_SYN).bytes();
    let (action, out) = run(&dp, &syn);
    assert!(forwarded(action), "action {action}");
    let s = seen(&out, 0);
    assert!(s.checksums_ok, "{s:?}");
    assert_eq!(s.src, "10.9.9.9".parse::<IpAddr>().unwrap());
    assert!(s.sport >= 1024);
    let backend = SocketAddr::new(s.dst, s.dport);
    assert!([sock("10.1.0.1:8080"), sock("10.1.0.2:8080")].contains(&backend));
    let model = Model::new(&plan(), |k| dp.table(k), true);
    assert_eq!(model.decide(&syn), Decision::Nat(backend));

    // The same flow again: the connection table answers, same backend, same NAT port.
    let ack = Frame::tcp("203.0.113.7", 40000, "10.0.0.1", 80, TCP_ACK).bytes();
    let (action, out2) = run(&dp, &ack);
    assert!(forwarded(action));
    let s2 = seen(&out2, 0);
    assert_eq!((s2.dst, s2.dport, s2.sport), (s.dst, s.dport, s.sport));

    // The backend's reply to the NAT address goes back as from the VIP to the client.
    let reply =
        Frame::tcp(&s.dst.to_string(), s.dport, "10.9.9.9", s.sport, TCP_SYN | TCP_ACK).bytes();
    let (action, out3) = run(&dp, &reply);
    assert!(forwarded(action));
    let r = seen(&out3, 0);
    assert!(r.checksums_ok);
    assert_eq!(r.src, "10.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(r.sport, 80);
    assert_eq!(r.dst, "203.0.113.7".parse::<IpAddr>().unwrap());
    assert_eq!(r.dport, 40000);
    let stats = dp.stats(&plan()).unwrap();
    let v = &stats.vips["10.0.0.1:80/tcp"];
    assert_eq!((v.packets, v.new_flows), (2, 1));
    assert_eq!(stats.backends[&backend].packets, 2);
}

#[test]
fn udp_and_ipv6_hits_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    let model = Model::new(&plan(), |k| dp.table(k), true);
    let udp = Frame::udp("203.0.113.8", 5353, "10.0.0.1", 53).bytes();
    let (action, out) = run(&dp, &udp);
    assert!(forwarded(action));
    let s = seen(&out, 0);
    assert!(s.checksums_ok && s.proto == 17 && s.dport == 53);
    assert_eq!(model.decide(&udp), Decision::Nat(SocketAddr::new(s.dst, s.dport)));

    let v6 = Frame::tcp("2001:db8:ff::7", 40001, "2001:db8::1", 80, TCP_SYN).bytes();
    let (action, out) = run(&dp, &v6);
    assert!(forwarded(action));
    let s = seen(&out, 0);
    assert!(s.checksums_ok, "{s:?}");
    assert_eq!(s.src, "2001:db8:9::9".parse::<IpAddr>().unwrap());
    assert_eq!(model.decide(&v6), Decision::Nat(SocketAddr::new(s.dst, s.dport)));
}

#[test]
fn misses_and_l7_vips_pass_untouched_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    for frame in [
        Frame::tcp("203.0.113.7", 40000, "10.0.0.9", 80, TCP_SYN).bytes(),
        // Right address and port, wrong protocol.
        Frame::udp("203.0.113.7", 40000, "10.0.0.1", 80).bytes(),
        Frame::tcp("203.0.113.7", 40000, "10.0.0.1", 81, TCP_SYN).bytes(),
        // The L7 listener's VIP.
        Frame::tcp("203.0.113.7", 40000, "10.0.0.2", 443, TCP_SYN).bytes(),
        // A reply to the NAT address without a NAT entry.
        Frame::tcp("10.1.0.1", 8080, "10.9.9.9", 5555, TCP_ACK).bytes(),
    ] {
        let (action, out) = run(&dp, &frame);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, frame);
    }
    let stats = dp.stats(&plan()).unwrap();
    assert_eq!(stats.vips["10.0.0.2:443/tcp"].packets, 1);
}

#[test]
fn ip_options_and_vlan_tags_are_parsed_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    let model = Model::new(&plan(), |k| dp.table(k), true);
    let mut with_options = Frame::tcp("203.0.113.9", 40002, "10.0.0.1", 80, TCP_SYN);
    // Two NOPs, then a 6-byte timestamp-like option: 8 bytes of options (IHL 7).
    with_options.options = vec![1, 1, 68, 6, 5, 0, 0, 0];
    let frame = with_options.bytes();
    let (action, out) = run(&dp, &frame);
    assert!(forwarded(action));
    let s = seen(&out, 0);
    assert!(s.checksums_ok);
    assert_eq!(out[34..42], frame[34..42], "options intact");
    assert_eq!(model.decide(&frame), Decision::Nat(SocketAddr::new(s.dst, s.dport)));

    for vlans in [1, 2] {
        let mut tagged = Frame::tcp("203.0.113.10", 40003, "10.0.0.1", 80, TCP_SYN);
        tagged.vlans = vlans;
        let frame = tagged.bytes();
        let (action, out) = run(&dp, &frame);
        // Tagged frames are rewritten, then forwarded by the kernel.
        assert_eq!(action, XDP_PASS);
        let s = seen(&out, vlans);
        assert!(s.checksums_ok);
        assert_eq!(out[12..14], frame[12..14], "tags intact");
        assert_eq!(model.decide(&frame), Decision::Nat(SocketAddr::new(s.dst, s.dport)));
    }
}

#[test]
fn fragments_truncations_and_bad_lengths_pass_untouched_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    let mut frames = Vec::new();
    for frag in [0x2000u16, 0x0001, 0x2010] {
        let mut f = Frame::tcp("203.0.113.7", 40000, "10.0.0.1", 80, TCP_SYN);
        f.frag = frag;
        frames.push(f.bytes());
    }
    let good = Frame::tcp("203.0.113.7", 40000, "10.0.0.1", 80, TCP_SYN);
    let mut v6 = Frame::tcp("2001:db8:ff::7", 40001, "2001:db8::1", 80, TCP_SYN);
    v6.pad_to = 0;
    let v6 = v6.bytes();
    for cut in 14..54 {
        let mut f = good.bytes();
        f.truncate(cut);
        frames.push(f);
    }
    for cut in 14..v6.len() {
        frames.push(v6[..cut].to_vec());
    }
    let base = good.bytes();
    let mut bad = |at: usize, value: u8| {
        let mut f = base.clone();
        f[at] = value;
        frames.push(f);
    };
    bad(14, 0x44); // IHL 4
    bad(14, 0x4f); // IHL 15: options beyond the packet
    bad(14, 0x65); // version 6 in an IPv4 frame
    bad(16, 0x01); // total length 256+ beyond the frame
    bad(17, 19); // total length shorter than the header
    bad(46, 0x40); // TCP data offset 4
    bad(46, 0xf0); // TCP data offset 15: beyond the packet
    let mut u = Frame::udp("203.0.113.8", 5353, "10.0.0.1", 53).bytes();
    u[38] = 0;
    u[39] = 7; // UDP length 7
    frames.push(u.clone());
    u[39] = 200; // UDP length beyond the packet
    frames.push(u);
    let model = Model::new(&plan(), |k| dp.table(k), true);
    for frame in frames {
        let (action, out) = run(&dp, &frame);
        assert_eq!(action, XDP_PASS, "{frame:02x?}");
        assert_eq!(out, frame);
        assert_eq!(model.decide(&frame), Decision::Pass);
    }
    let stats = dp.stats(&plan()).unwrap();
    assert!(stats.counters[gatehouse_xdp::common::COUNTER_FRAGMENT as usize] >= 3);
    assert!(stats.counters[gatehouse_xdp::common::COUNTER_MALFORMED as usize] > 40);
}

#[test]
fn syn_flood_guard_and_drop_list_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    // The VIP allows 3 new connections per second per CPU (test runs stay on one CPU and
    // well within a second of each other: the window is 1 s).
    let mut actions = Vec::new();
    for port in 0..5u16 {
        let syn = Frame::tcp("203.0.113.20", 41000 + port, "10.0.0.4", 80, TCP_SYN).bytes();
        actions.push(run(&dp, &syn).0);
    }
    assert_eq!(actions.iter().filter(|a| **a == XDP_DROP).count(), 2, "{actions:?}");
    // New flows without SYN (e.g. after a restart) are not counted as SYNs.
    let ack = Frame::tcp("203.0.113.20", 42000, "10.0.0.4", 80, TCP_ACK).bytes();
    assert!(forwarded(run(&dp, &ack).0));
    let stats = dp.stats(&plan()).unwrap();
    assert_eq!(stats.vips["10.0.0.4:80/tcp"].syn_drops, 2);

    let blocked = Frame::tcp("192.0.2.7", 40000, "10.0.0.1", 80, TCP_SYN).bytes();
    assert_eq!(run(&dp, &blocked).0, XDP_DROP);
    let l7 = Frame::tcp("192.0.2.7", 40000, "10.0.0.2", 443, TCP_SYN).bytes();
    assert_eq!(run(&dp, &l7).0, XDP_DROP);
    let allowed = Frame::tcp("192.0.3.7", 40000, "10.0.0.1", 80, TCP_SYN).bytes();
    assert!(forwarded(run(&dp, &allowed).0));
    // Not for a VIP: the drop list does not apply.
    let other = Frame::tcp("192.0.2.7", 40000, "10.0.0.99", 80, TCP_SYN).bytes();
    assert_eq!(run(&dp, &other).0, XDP_PASS);
}

#[test]
fn ipip_encapsulates_the_original_packet_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    let frame = Frame::tcp("203.0.113.7", 40000, "10.0.0.3", 80, TCP_SYN).bytes();
    let (action, out) = run(&dp, &frame);
    assert!(forwarded(action));
    assert_eq!(out.len(), frame.len() + 20);
    let outer = seen(&out, 0);
    assert!(outer.checksums_ok);
    assert_eq!(outer.proto, 4);
    assert_eq!(outer.src, "10.9.9.9".parse::<IpAddr>().unwrap());
    assert_eq!(outer.dst, "10.2.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(out[34..], frame[14..], "inner packet unchanged");
    let model = Model::new(&plan(), |k| dp.table(k), true);
    assert_eq!(model.decide(&frame), Decision::Ipip(sock("10.2.0.1:80")));
}

#[test]
fn arp_and_ndp_are_answered_for_owned_addresses_only_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    let request = arp_request([10, 0, 0, 50], [10, 0, 0, 1]);
    let (action, out) = run(&dp, &request);
    assert_eq!(action, XDP_TX);
    assert_eq!(out[0..6], frames::CLIENT_MAC);
    assert_eq!(out[6..12], OUR_MAC);
    assert_eq!(out[20..22], [0, 2], "ARP reply");
    assert_eq!(out[22..28], OUR_MAC);
    assert_eq!(out[28..32], [10, 0, 0, 1]);
    assert_eq!(out[32..38], frames::CLIENT_MAC);
    assert_eq!(out[38..42], [10, 0, 0, 50]);
    for other in
        [arp_request([10, 0, 0, 50], [10, 0, 0, 77]), arp_request([10, 0, 0, 1], [10, 0, 0, 1])]
    {
        let (action, out) = run(&dp, &other);
        assert_eq!(action, XDP_PASS);
        assert_eq!(out, other);
    }

    let ns = solicit("fe80::1".parse().unwrap(), "2001:db8::1".parse().unwrap());
    let (action, out) = run(&dp, &ns);
    assert_eq!(action, XDP_TX);
    assert_eq!(out[0..6], frames::CLIENT_MAC);
    assert_eq!(out[6..12], OUR_MAC);
    assert_eq!(out[54], 136, "neighbour advertisement");
    assert_eq!(out[58], 0x60, "solicited + override");
    assert_eq!(out[38..54], ns[22..38], "sent back to the solicitor");
    assert_eq!(out[80..86], OUR_MAC, "target link-layer address");
    assert!(frames::icmp6_checksum_ok(&out));
    let other = solicit("fe80::1".parse().unwrap(), "2001:db8::77".parse().unwrap());
    assert_eq!(run(&dp, &other).0, XDP_PASS);
}

#[test]
fn flows_keep_their_backend_when_a_backend_is_added_needs_root() {
    if !root() {
        return;
    }
    let mut dp = loaded();
    let mut pinned = Vec::new();
    for port in 0..200u16 {
        let f = Frame::tcp("203.0.113.30", 30000 + port, "10.0.0.1", 80, TCP_SYN).bytes();
        let (_, out) = run(&dp, &f);
        let s = seen(&out, 0);
        pinned.push((port, SocketAddr::new(s.dst, s.dport)));
    }
    let mut grown = plan();
    grown.generation = 2;
    grown.vips[0].action =
        balance(&["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.5:8080"], Forwarding::Nat, 0);
    assert_eq!(dp.apply(&grown).unwrap(), 2);
    let model = Model::new(&grown, |k| dp.table(k), true);
    let mut moved_by_table = 0;
    for (port, backend) in pinned {
        let f = Frame::tcp("203.0.113.30", 30000 + port, "10.0.0.1", 80, TCP_ACK).bytes();
        let (_, out) = run(&dp, &f);
        let s = seen(&out, 0);
        assert_eq!(SocketAddr::new(s.dst, s.dport), backend, "flow {port} moved");
        if model.decide(&f) != Decision::Nat(backend) {
            moved_by_table += 1;
        }
    }
    // The new table would have sent about a third of them elsewhere.
    assert!(moved_by_table > 20, "{moved_by_table}");
    // New flows do reach the new backend.
    let table = dp.table(&vip_key("10.0.0.1".parse().unwrap(), 80, 6)).unwrap();
    assert!(table.contains(&sock("10.1.0.5:8080")));
}

fn tags(frame: &[u8]) -> usize {
    let tagged = |at: usize| matches!(frame.get(at..at + 2), Some([0x81, 0x00] | [0x88, 0xa8]));
    match (tagged(12), tagged(16)) {
        (true, true) => 2,
        (true, false) => 1,
        _ => 0,
    }
}

/// Random frames, biased towards the interesting corners, through the program and the
/// reference model: the decisions must agree on every one.
#[test]
fn differential_against_the_reference_model_needs_root() {
    if !root() {
        return;
    }
    let dp = loaded();
    let model = Model::new(&plan(), |k| dp.table(k), true);
    let mut rng = StdRng::seed_from_u64(0x6a7e_4017);
    let dsts_v4 = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9", "10.0.0.1"];
    let ports = [80u16, 53, 443, 8080, 80];
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..5000u32 {
        let v6 = rng.random_ratio(1, 5);
        let src = if v6 {
            format!("2001:db8:ff::{:x}", rng.random::<u16>())
        } else if rng.random_ratio(1, 10) {
            format!("192.0.2.{}", rng.random::<u8>())
        } else {
            format!("198.51.{}.{}", rng.random::<u8>(), rng.random::<u8>())
        };
        let dst = if v6 {
            if rng.random_ratio(3, 4) { "2001:db8::1" } else { "2001:db8::2" }.to_owned()
        } else {
            dsts_v4[rng.random_range(0..dsts_v4.len())].to_owned()
        };
        let sport = rng.random_range(1024..65535);
        let dport = ports[rng.random_range(0..ports.len())];
        let mut f = if rng.random_ratio(1, 4) {
            Frame::udp(&src, sport, &dst, dport)
        } else {
            let flags = [TCP_SYN, TCP_ACK, TCP_SYN | TCP_ACK, 0x04, 0x01][rng.random_range(0..5)];
            Frame::tcp(&src, sport, &dst, dport, flags)
        };
        f.vlans = [0, 0, 0, 1, 2][rng.random_range(0..5)];
        if !v6 && rng.random_ratio(1, 5) {
            f.options = vec![1; 4 * rng.random_range(1..=10)];
        }
        if !v6 && rng.random_ratio(1, 20) {
            f.frag = rng.random_range(1..0x4000);
        }
        let mut bytes = f.bytes();
        if rng.random_ratio(1, 10) {
            let cut = rng.random_range(14..bytes.len());
            bytes.truncate(cut);
        }
        if rng.random_ratio(1, 10) {
            let at = rng.random_range(12..bytes.len());
            bytes[at] = rng.random();
        }
        let want = model.decide(&bytes);
        let (action, out) = run(&dp, &bytes);
        assert_ne!(action, XDP_ABORTED);
        // Corrupted bytes may have changed the tags; count them as the parser does.
        let vlans = tags(&bytes);
        match want {
            Decision::Pass => {
                assert_eq!(action, XDP_PASS, "frame {i}: {bytes:02x?}");
                assert_eq!(out, bytes, "frame {i} was modified");
            }
            Decision::Drop => assert_eq!(action, XDP_DROP, "frame {i}"),
            Decision::ArpReply | Decision::NdAdvert => assert_eq!(action, XDP_TX),
            Decision::Nat(backend) => {
                assert!(forwarded(action), "frame {i}: action {action}");
                let s = seen(&out, vlans);
                // A frame whose checksums were broken before stays broken; a good one stays good.
                let input_ok = seen(&bytes, vlans).checksums_ok;
                assert_eq!(s.checksums_ok, input_ok, "frame {i}: {s:?}");
                assert_eq!(SocketAddr::new(s.dst, s.dport), backend, "frame {i}");
            }
            Decision::Ipip(backend) => {
                assert!(forwarded(action));
                let s = seen(&out, vlans);
                assert_eq!(s.dst, backend.ip(), "frame {i}");
                assert_eq!(out.len(), bytes.len() + 20);
            }
        }
        *counts
            .entry(format!("{:?}", want).split('(').next().unwrap_or("").to_owned())
            .or_insert(0u32) += 1;
    }
    eprintln!("decisions: {counts:?}");
    assert!(counts.get("Nat").copied().unwrap_or(0) > 500, "{counts:?}");
    assert!(counts.get("Pass").copied().unwrap_or(0) > 1000, "{counts:?}");
    assert!(counts.get("Drop").copied().unwrap_or(0) > 50, "{counts:?}");
    assert!(counts.get("Ipip").copied().unwrap_or(0) > 100, "{counts:?}");
}

/// Packets of an established flow skip the VIP lookup while the VIP keeps its shape: a VIP
/// that is removed stops forwarding them, one whose forwarding changes forwards them the new
/// way, and a change of its backends alone keeps them on theirs (see the test above).
#[test]
fn established_flows_follow_their_vip_leaving_and_changing_forwarding_needs_root() {
    if !root() {
        return;
    }
    let mut dp = loaded();
    let syn = Frame::tcp("203.0.113.40", 40400, "10.0.0.1", 80, TCP_SYN).bytes();
    let ack = Frame::tcp("203.0.113.40", 40400, "10.0.0.1", 80, TCP_ACK).bytes();
    assert!(forwarded(run(&dp, &syn).0));
    let (action, out) = run(&dp, &ack);
    assert!(forwarded(action));
    assert_eq!(seen(&out, 0).src, "10.9.9.9".parse::<IpAddr>().unwrap(), "full NAT");

    // The VIP leaves: its established flow is none of the program's business any more.
    let mut without = plan();
    without.generation = 2;
    without.vips.remove(0);
    dp.apply(&without).unwrap();
    let (action, out) = run(&dp, &ack);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, ack, "untouched");

    // It comes back forwarding by IPIP: the same flow is encapsulated now.
    let mut ipip = plan();
    ipip.generation = 3;
    ipip.vips[0].action = balance(&["10.1.0.1:8080", "10.1.0.2:8080"], Forwarding::Ipip, 0);
    dp.apply(&ipip).unwrap();
    let (action, out) = run(&dp, &ack);
    assert!(forwarded(action));
    assert_eq!(out.len(), ack.len() + 20);
    assert_eq!(seen(&out, 0).proto, 4, "IPIP");
    assert_eq!(out[34..], ack[14..], "inner packet unchanged");
}

/// The VIP index slot holding `key`, if any (`Limits::max_vips` 16: 64 slots).
fn indexed(dp: &Datapath, key: &gatehouse_xdp::common::VipKey) -> Option<u32> {
    let slots = gatehouse_xdp::common::vip_index_slots(dp.limits().max_vips);
    (0..slots).find(|&i| dp.vip_index_entry(i).is_ok_and(|e| e.tag != 0 && e.key == *key))
}

#[test]
fn vip_index_copies_are_checked_and_the_vip_table_decides_otherwise_needs_root() {
    if !root() {
        return;
    }
    let mut dp = loaded();
    let key = vip_key("10.0.0.1".parse().unwrap(), 80, 6);
    let slot = indexed(&dp, &key).expect("the VIP is indexed");
    let entry = dp.vip_index_entry(slot).unwrap();
    let backends: Vec<IpAddr> =
        ["10.1.0.1", "10.1.0.2"].iter().map(|a| a.parse().unwrap()).collect();
    let syn = |port: u16| Frame::tcp("203.0.113.41", port, "10.0.0.1", 80, TCP_SYN).bytes();
    let to_backend = |dp: &Datapath, port: u16| {
        let (action, out) = run(dp, &syn(port));
        assert!(forwarded(action), "action {action}");
        let s = seen(&out, 0);
        assert!(backends.contains(&s.dst), "to a backend of the VIP, not {}", s.dst);
        s.dst
    };
    let before: Vec<IpAddr> = (0..32).map(|p| to_backend(&dp, 41000 + p)).collect();

    // A whole copy is taken as it is, without asking the VIP table (here one that says PASS).
    let mut pass = entry;
    pass.value.action = gatehouse_xdp::common::ACTION_PASS;
    pass.tag = gatehouse_xdp::common::vip_tag(&key.addr, key.port, key.proto, &pass.value);
    dp.write_vip_index_entry(slot, &pass).unwrap();
    let (action, out) = run(&dp, &syn(41000));
    assert_eq!((action, out), (XDP_PASS, syn(41000)), "passed untouched, as the copy says");

    // A copy whose fields do not match its tag (a write in progress): not used, the VIP
    // table answers, with the same decisions.
    let mut torn = entry;
    torn.value.ring_offset = torn.value.ring_offset.wrapping_add(1);
    torn.value.action = 1;
    dp.write_vip_index_entry(slot, &torn).unwrap();
    let after: Vec<IpAddr> = (0..32).map(|p| to_backend(&dp, 41000 + p)).collect();
    assert_eq!(after, before);

    // An empty index: every VIP from the table of record.
    let slots = gatehouse_xdp::common::vip_index_slots(dp.limits().max_vips);
    for i in 0..slots {
        dp.write_vip_index_entry(i, &gatehouse_xdp::common::VipEntry::default()).unwrap();
    }
    let empty: Vec<IpAddr> = (0..32).map(|p| to_backend(&dp, 41000 + p)).collect();
    assert_eq!(empty, before);

    // A VIP that leaves leaves the index too (its slot is cleared before the table's entry).
    dp.write_vip_index_entry(slot, &entry).unwrap();
    let mut without = plan();
    without.generation = 2;
    without.vips.remove(0);
    dp.apply(&without).unwrap();
    assert_eq!(indexed(&dp, &key), None);
    assert_eq!(run(&dp, &syn(41000)).0, XDP_PASS);
    // And comes back into it.
    let mut back = plan();
    back.generation = 3;
    dp.apply(&back).unwrap();
    assert!(indexed(&dp, &key).is_some());
    assert_eq!(to_backend(&dp, 41000), before[0]);
}

/// The program with `plan()` applied and a connection table of one bucket (four flows).
fn one_bucket() -> Datapath {
    let limits = Limits { max_vips: 16, max_backends: 64, ring_size: 4099, max_flows: 4 };
    let mut dp = Datapath::load(limits).expect("load the XDP program");
    assert_eq!(dp.apply(&plan()).unwrap(), 1);
    dp
}

/// New flows counted for the VIP `10.0.0.1:80/tcp`.
fn new_flows(dp: &Datapath) -> u64 {
    dp.stats(&plan()).unwrap().vips["10.0.0.1:80/tcp"].new_flows
}

/// The connection table is set-associative (buckets of four slots): with room for four flows
/// (one bucket), a fifth takes the slot seen longest ago, never that of a flow seen since; a
/// flow whose slot was taken is balanced again (a new flow, on the current table) and keeps
/// its backend while the backend set is unchanged.
#[test]
fn connection_table_replaces_the_flow_seen_longest_ago_needs_root() {
    if !root() {
        return;
    }
    let mut dp = one_bucket();
    let frame = |port: u16, flags: u8| Frame::tcp("203.0.113.40", port, "10.0.0.1", 80, flags);
    let backend_of = |dp: &Datapath, port: u16| {
        let (action, out) = run(dp, &frame(port, TCP_ACK).bytes());
        assert!(forwarded(action), "action {action}");
        let s = seen(&out, 0);
        SocketAddr::new(s.dst, s.dport)
    };
    dp.set_flow_clock(10).unwrap();
    let mut backends = Vec::new();
    for port in 1..=4u16 {
        let (action, out) = run(&dp, &frame(port, TCP_SYN).bytes());
        assert!(forwarded(action));
        let s = seen(&out, 0);
        backends.push(SocketAddr::new(s.dst, s.dport));
    }
    assert_eq!(new_flows(&dp), 4);
    // Every one is pinned: its packets are no new flows.
    for port in 1..=4u16 {
        assert_eq!(backend_of(&dp, port), backends[usize::from(port) - 1]);
    }
    assert_eq!(new_flows(&dp), 4);
    // Later, flow 1 is seen again; then a fifth flow needs a slot.
    dp.set_flow_clock(20).unwrap();
    backend_of(&dp, 1);
    dp.set_flow_clock(30).unwrap();
    let (action, _) = run(&dp, &frame(5, TCP_SYN).bytes());
    assert!(forwarded(action));
    assert_eq!(new_flows(&dp), 5);
    // Flow 1 (seen at 20) and flow 5 are pinned: no new flow for their packets.
    assert_eq!(backend_of(&dp, 1), backends[0]);
    backend_of(&dp, 5);
    assert_eq!(new_flows(&dp), 5);
    // One of flows 2–4 (all last seen at 10) lost its slot: its next packet is a new flow,
    // balanced to the same backend (the table did not change).
    let before = new_flows(&dp);
    let mut evicted = 0;
    for port in 2..=4u16 {
        let flows = new_flows(&dp);
        assert_eq!(backend_of(&dp, port), backends[usize::from(port) - 1], "flow {port}");
        evicted += new_flows(&dp) - flows;
    }
    assert!(evicted >= 1, "no flow lost its slot");
    assert!(new_flows(&dp) - before <= 3);
}

/// A slot whose flow changed its VIP's shape or lost its backend is taken over by the same
/// flow's new entry, not duplicated: with one bucket, four flows stay pinned after each of
/// them was re-balanced.
#[test]
fn a_rebalanced_flow_reuses_its_own_slot_needs_root() {
    if !root() {
        return;
    }
    let dp = one_bucket();
    let frame = |port: u16, flags: u8| Frame::tcp("203.0.113.41", port, "10.0.0.1", 80, flags);
    for port in 1..=4u16 {
        // A SYN and its retransmission: one slot (a second would evict another flow).
        run(&dp, &frame(port, TCP_SYN).bytes());
        run(&dp, &frame(port, TCP_SYN).bytes());
    }
    let after_syns = new_flows(&dp);
    assert_eq!(after_syns, 8);
    for port in 1..=4u16 {
        let (action, _) = run(&dp, &frame(port, TCP_ACK).bytes());
        assert!(forwarded(action));
    }
    assert_eq!(new_flows(&dp), after_syns, "a retransmitted SYN took a second slot");
}

/// The program with `plan()` applied, one connection-table bucket (4 flows), one NAT port per
/// CPU and the flow clock at 10; the test thread pinned to CPU 0, whose port it is.
fn one_nat_port() -> Datapath {
    let mut cpu = nix::sched::CpuSet::new();
    cpu.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu).unwrap();
    let mut dp = one_bucket();
    dp.limit_nat_ports(1).unwrap();
    dp.set_flow_clock(10).unwrap();
    dp
}

/// Full-NAT new flows dropped for want of a free NAT port.
fn no_port(dp: &Datapath) -> u64 {
    use gatehouse_xdp::common::COUNTER_NO_BACKEND;
    dp.stats(&plan()).unwrap().counters[COUNTER_NO_BACKEND as usize]
}

/// The full-NAT reverse table: a NAT source port stays its flow's while the flow is in the
/// connection table, and after that until no reply came for `NAT_QUIET_SECS`; with every
/// port taken a new flow is dropped and counted, never given a port in use. Once reused, the
/// port's replies go to the new flow's client, and the old backend's are not rewritten.
/// (One NAT port per CPU, the test thread pinned to one CPU.)
#[test]
fn nat_ports_are_reused_only_after_their_flow_is_gone_and_quiet_needs_root() {
    if !root() {
        return;
    }
    use gatehouse_xdp::common::NAT_QUIET_SECS;
    let mut dp = one_nat_port();
    let model = Model::new(&plan(), |k| dp.table(k), true);
    let syn = |client: &str, port: u16| Frame::tcp(client, port, "10.0.0.1", 80, TCP_SYN).bytes();
    let backend = |f: &[u8]| match model.decide(f) {
        Decision::Nat(b) => b,
        other => panic!("{other:?}"),
    };
    // Flow A gets the port.
    let a = syn("203.0.113.50", 1000);
    let (action, out) = run(&dp, &a);
    assert!(forwarded(action), "action {action}");
    let fa = seen(&out, 0);
    assert_eq!(SocketAddr::new(fa.dst, fa.dport), backend(&a));
    // Flow B, to the other backend: no port free (A holds it) → dropped and counted.
    let b = (2000..3000u16)
        .map(|p| syn("203.0.113.51", p))
        .find(|f| backend(f) != backend(&a))
        .unwrap();
    let before = no_port(&dp);
    assert_eq!(run(&dp, &b).0, XDP_DROP);
    assert_eq!(no_port(&dp), before + 1);
    // A backend's reply to A is rewritten to A's client (and marks the port seen at 10).
    let reply_a =
        Frame::tcp(&fa.dst.to_string(), fa.dport, &fa.src.to_string(), fa.sport, TCP_ACK).bytes();
    let (action, out) = run(&dp, &reply_a);
    assert!(forwarded(action));
    assert_eq!(seen(&out, 0).dst, "203.0.113.50".parse::<IpAddr>().unwrap());
    // Four IPIP flows at 20 fill the one bucket: A (seen at 10) loses its slot.
    dp.set_flow_clock(20).unwrap();
    for port in 1..=4u16 {
        let f = Frame::tcp("203.0.113.52", port, "10.0.0.3", 80, TCP_SYN).bytes();
        assert!(forwarded(run(&dp, &f).0));
    }
    // Still within the quiet time after A's last reply: the port stays A's.
    let before = no_port(&dp);
    assert_eq!(run(&dp, &b).0, XDP_DROP);
    assert_eq!(no_port(&dp), before + 1);
    let (_, out) = run(&dp, &reply_a);
    assert_eq!(seen(&out, 0).dst, "203.0.113.50".parse::<IpAddr>().unwrap());
    // Quiet long enough: B takes the port.
    dp.set_flow_clock(20 + NAT_QUIET_SECS).unwrap();
    let (action, out) = run(&dp, &b);
    assert!(forwarded(action), "action {action}");
    let fb = seen(&out, 0);
    assert_eq!(fb.sport, fa.sport, "B has A's old port");
    assert_ne!(fb.dst, fa.dst);
    // B's backend's reply goes to B's client; A's backend's is no longer rewritten.
    let reply_b =
        Frame::tcp(&fb.dst.to_string(), fb.dport, &fb.src.to_string(), fb.sport, TCP_ACK).bytes();
    let (action, out) = run(&dp, &reply_b);
    assert!(forwarded(action));
    assert_eq!(seen(&out, 0).dst, "203.0.113.51".parse::<IpAddr>().unwrap());
    let (action, out) = run(&dp, &reply_a);
    assert_eq!(action, XDP_PASS);
    assert_eq!(out, reply_a, "a reply for the old flow was rewritten");
}

/// A NAT port's slot is written only by the CPU whose claim (one compare-and-swap of the
/// slot's claim word from the value seen when it was judged free) succeeded: a slot another
/// CPU is claiming (odd claim word, written from here) is not overwritten, the flow tries its
/// next port (none here: dropped and counted); once released, a claim takes it (+ 2).
#[test]
fn nat_slot_claimed_by_another_cpu_is_not_overwritten_needs_root() {
    if !root() {
        return;
    }
    use gatehouse_xdp::common::{NAT_PORT_BASE, nat_index};
    let mut dp = one_nat_port();
    // One lane (4 flows), one port: every full-NAT flow wants this slot.
    let index = nat_index(0, NAT_PORT_BASE as u16);
    let empty = dp.nat_slot(index).unwrap();
    assert_eq!((empty.tag, empty.claim), (0, 0));
    // Another CPU claimed the (empty, free) slot and is writing it.
    let claimed = gatehouse_xdp::common::NatSlot { claim: 7, ..empty };
    dp.write_nat_slot(index, &claimed).unwrap();
    let a = Frame::tcp("203.0.113.60", 1000, "10.0.0.1", 80, TCP_SYN).bytes();
    let before = no_port(&dp);
    assert_eq!(run(&dp, &a).0, XDP_DROP, "a slot being claimed was taken");
    assert_eq!(no_port(&dp), before + 1);
    assert_eq!(dp.nat_slot(index).unwrap(), claimed, "a slot being claimed was written");
    // Released (still empty): the next flow claims it, writes it and releases it (+ 2).
    dp.write_nat_slot(index, &gatehouse_xdp::common::NatSlot { claim: 8, ..empty }).unwrap();
    let (action, out) = run(&dp, &a);
    assert!(forwarded(action), "action {action}");
    let taken = dp.nat_slot(index).unwrap();
    assert_eq!(taken.claim, 10);
    assert_ne!(taken.tag, 0);
    assert_eq!(u16::from_be(taken.client_port), 1000);
    assert_eq!(seen(&out, 0).sport, NAT_PORT_BASE as u16);
    // Taken: a second client finds no free port and leaves the slot (and its claim) alone.
    let b = Frame::tcp("203.0.113.61", 2000, "10.0.0.1", 80, TCP_SYN).bytes();
    let before = no_port(&dp);
    assert_eq!(run(&dp, &b).0, XDP_DROP);
    assert_eq!(no_port(&dp), before + 1);
    assert_eq!(dp.nat_slot(index).unwrap(), taken);
}

#[test]
fn more_backends_than_a_maglev_entry_can_name_are_refused() {
    // Maglev entries are 16-bit backend ids: refused before anything is loaded.
    let limits = Limits { max_backends: 70_000, ..Limits::default() };
    assert!(matches!(
        Datapath::load(limits),
        Err(gatehouse_xdp::XdpError::TooManyBackends(65_536))
    ));
}
