//! ns/packet of the XDP program through `BPF_PROG_TEST_RUN` (run by `bench/xdp`, release
//! build, needs root). Each figure includes the harness; the trivial XDP_PASS program's figure
//! is the harness floor.
//!
//! With `repeat > 1` the kernel reruns the program on the frame it already rewrote, so the
//! repeated cases run `gatehouse_xdp_bench`, which restores the original 60 bytes (and the
//! head, after an encapsulation) after every run; the restore is part of those figures. A new
//! flow cannot repeat (the first run pins it), so new flows are N distinct frames at
//! `repeat = 1`, corrected by the floor's own repeat-1 overhead.

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

#[path = "../tests/frames/mod.rs"]
mod frames;

use std::net::SocketAddr;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use frames::{Frame, TCP_ACK, TCP_SYN};
use gatehouse_xdp::{Datapath, Forwarding, L4Protocol, Limits, Plan, Vip, VipAction, WeightedAddr};

const REPEAT: u32 = 1_000_000;
const NEW_FLOWS: u32 = 20_000;

fn backends(list: &[&str]) -> Vec<WeightedAddr> {
    list.iter()
        .map(|b| WeightedAddr { addr: b.parse::<SocketAddr>().unwrap(), weight: 1 })
        .collect()
}

fn plan() -> Plan {
    Plan {
        generation: 1,
        vips: vec![
            Vip {
                addr: "10.0.0.1".parse().unwrap(),
                port: 80,
                protocol: L4Protocol::Tcp,
                action: VipAction::Balance {
                    backends: backends(&["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"]),
                    forwarding: Forwarding::Nat,
                    syn_limit: 0,
                },
            },
            Vip {
                addr: "10.0.0.3".parse().unwrap(),
                port: 80,
                protocol: L4Protocol::Tcp,
                action: VipAction::Balance {
                    backends: backends(&["10.2.0.1:80", "10.2.0.2:80"]),
                    forwarding: Forwarding::Ipip,
                    syn_limit: 0,
                },
            },
        ],
        owned: vec![],
        drop_sources: vec![],
        source_v4: Some("10.9.9.9".parse().unwrap()),
        source_v6: None,
    }
}

/// One test run: (return code, kernel-measured ns per repetition).
fn run(program: &Xdp, frame: &[u8], repeat: u32) -> (u32, f64) {
    let mut out = vec![0u8; frame.len() + 128];
    let r = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        })
        .unwrap();
    (r.return_value, r.duration.as_nanos() as f64)
}

fn repeated(name: &str, program: &Xdp, frame: &[u8], want: &[u32]) -> f64 {
    // Warm up (and pin the flow, for hits), then measure three times and keep the best.
    let (code, _) = run(program, frame, 1);
    assert!(want.contains(&code), "{name}: return code {code}, wanted one of {want:?}");
    let mut best = f64::MAX;
    for _ in 0..3 {
        let (again, ns) = run(program, frame, REPEAT);
        assert_eq!(again, code, "{name}: return code changed between runs");
        best = best.min(ns);
    }
    println!("{name:<28} {best:>7.1} ns/packet  (XDP action {code}, repeat {REPEAT})");
    best
}

fn single_runs(program: &Xdp, frames: &[Vec<u8>], want: &[u32]) -> f64 {
    let mut total = 0.0;
    for f in frames {
        let (code, ns) = run(program, f, 1);
        assert!(want.contains(&code), "return code {code}");
        total += ns;
    }
    total / frames.len() as f64
}

fn main() {
    let limits = Limits { max_vips: 16, max_backends: 64, ring_size: 65_537, max_flows: 1 << 20 };
    let mut dp = Datapath::load(limits).expect("load the XDP program (root needed)");
    dp.apply(&plan()).unwrap();
    let floor = dp.floor_program().unwrap();
    let bench = dp.program(true).unwrap();
    // XDP_PASS, XDP_TX or XDP_REDIRECT: forwarded, depending on this host's FIB.
    let forwarded = [2, 3, 4];

    let miss_frame = Frame::tcp("198.51.100.7", 40000, "10.0.0.9", 80, TCP_ACK).bytes();
    let nat_frame = Frame::tcp("198.51.100.7", 40000, "10.0.0.1", 80, TCP_ACK).bytes();
    let ipip_frame = Frame::tcp("198.51.100.7", 40000, "10.0.0.3", 80, TCP_ACK).bytes();
    assert_eq!(miss_frame.len(), 60);

    println!("XDP program via BPF_PROG_TEST_RUN, 60-byte frames, harness included");
    let floor_ns = repeated("floor (XDP_PASS only)", floor, &miss_frame, &[2]);
    let miss = repeated("miss", bench, &miss_frame, &[2]);
    let hit_nat = repeated("conntrack hit, full NAT", bench, &nat_frame, &forwarded);
    let hit_ipip = repeated("conntrack hit, IPIP", bench, &ipip_frame, &forwarded);

    let distinct = |dst: &str| -> Vec<Vec<u8>> {
        (0..NEW_FLOWS)
            .map(|i| {
                let src = format!("198.{}.{}.{}", 18 + (i >> 16) % 2, (i >> 8) & 255, i & 255);
                Frame::tcp(&src, 1024 + (i % 60_000) as u16, dst, 80, TCP_SYN).bytes()
            })
            .collect()
    };
    let floor_single =
        single_runs(floor, &(0..10_000).map(|_| miss_frame.clone()).collect::<Vec<_>>(), &[2]);
    let overhead = floor_single - floor_ns;
    let new_nat = single_runs(bench, &distinct("10.0.0.1"), &forwarded) - overhead;
    let new_ipip = single_runs(bench, &distinct("10.0.0.3"), &forwarded) - overhead;
    println!(
        "{:<28} {new_nat:>7.1} ns/packet  ({NEW_FLOWS} distinct SYNs at repeat 1, minus the \
         repeat-1 overhead {overhead:.1} ns)",
        "new flow, full NAT"
    );
    println!("{:<28} {new_ipip:>7.1} ns/packet", "new flow, IPIP");
    let stats = dp.stats(&plan()).unwrap();
    let flows: u64 = stats.vips.values().map(|v| v.new_flows).sum();
    println!("flows created: {flows}");

    println!("RESULT ns_per_packet_floor {floor_ns:.1}");
    println!("RESULT ns_per_packet_miss {miss:.1}");
    println!("RESULT ns_per_packet_hit {hit_nat:.1}");
    println!("RESULT ns_per_packet_hit_ipip {hit_ipip:.1}");
    println!("RESULT ns_per_packet_new_flow {new_nat:.1}");
    println!("RESULT ns_per_packet_new_flow_ipip {new_ipip:.1}");
}
