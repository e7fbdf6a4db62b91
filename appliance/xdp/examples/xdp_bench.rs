//! ns/packet of the XDP program through `BPF_PROG_TEST_RUN` (run by `bench/xdp`, release
//! build, needs root). Each figure includes the harness; the trivial XDP_PASS program's figure
//! is the harness floor.
//!
//! It runs in a network namespace of its own (created and removed here) with forwarding on, a
//! veth pair and routes to the backends with permanent neighbour entries: the kernel's FIB
//! answers as on a forwarding appliance, so forwarded packets end in `XDP_REDIRECT` (on the
//! host's own namespace, forwarding off, every FIB lookup would stop at its first check). The
//! hit is measured one-armed too: the frame given as received on the veth the backends are
//! reached through (the test run's context names the ingress interface), so the FIB's answer
//! sends it back out of it, `XDP_TX` (Katran's topology: clients and backends on one side).
//!
//! With `repeat > 1` the kernel reruns the program on the frame it already rewrote, so the
//! repeated cases run `gatehouse_xdp_bench`, which restores the original 60 bytes (and the
//! head, after an encapsulation) after every run; the restore is part of those figures. New
//! flows run `gatehouse_xdp_bench_new`, which also gives every run its own source address and
//! port (from a run counter): 10^6 new flows per measurement, the connection table at
//! its default size (so it is full and evicting for most of them), every run's action
//! counted and checked. For comparison the older way is printed too: N distinct frames at
//! `repeat = 1` (cold caches after each syscall), corrected by the floor's repeat-1 overhead.
//!
//! `GH_BENCH_MAX_FLOWS` sets the connection table's size (default: the appliance's default);
//! `GH_BENCH_DEBUG` prints every new-flow round's action counts.

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

#[path = "../tests/frames/mod.rs"]
mod frames;

use std::fs::File;
use std::net::SocketAddr;
use std::process::Command;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use frames::{Frame, TCP_ACK, TCP_SYN, seen};
use gatehouse_xdp::common::COUNTER_NO_BACKEND;
use gatehouse_xdp::{Datapath, Forwarding, L4Protocol, Limits, Plan, Vip, VipAction, WeightedAddr};

const REPEAT: u32 = 1_000_000;
const NEW_FLOWS: u32 = 20_000;

fn backends(list: &[&str]) -> Vec<WeightedAddr> {
    list.iter()
        .map(|b| WeightedAddr { addr: b.parse::<SocketAddr>().unwrap(), weight: 1 })
        .collect()
}

/// Backends of the new-flow VIPs: enough NAT source ports (64,512 per backend) that the
/// flows alive at once rarely take all four candidates of a new one.
fn many(prefix: &str, port: u16) -> Vec<WeightedAddr> {
    (1..=64)
        .map(|i| WeightedAddr {
            addr: SocketAddr::new(format!("{prefix}{i}").parse().unwrap(), port),
            weight: 1,
        })
        .collect()
}

fn plan() -> Plan {
    Plan {
        generation: 1,
        vips: vec![
            Vip {
                addr: "10.0.0.5".parse().unwrap(),
                port: 80,
                protocol: L4Protocol::Tcp,
                action: VipAction::Balance {
                    backends: many("10.1.1.", 8080),
                    forwarding: Forwarding::Nat,
                    syn_limit: 0,
                },
            },
            Vip {
                addr: "10.0.0.6".parse().unwrap(),
                port: 80,
                protocol: L4Protocol::Tcp,
                action: VipAction::Balance {
                    backends: many("10.2.1.", 80),
                    forwarding: Forwarding::Ipip,
                    syn_limit: 0,
                },
            },
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

fn sh(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A namespace with forwarding on and a route to every backend network; removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let ns = Netns(format!("ghxb-{}", std::process::id()));
        let n = ns.0.as_str();
        sh(&["ip", "netns", "add", n]);
        sh(&["ip", "-n", n, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", n, "link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        sh(&["ip", "-n", n, "addr", "add", "10.77.0.1/24", "dev", "v0"]);
        sh(&["ip", "-n", n, "link", "set", "v0", "up"]);
        sh(&["ip", "-n", n, "link", "set", "v1", "up"]);
        sh(&["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        sh(&[
            "ip",
            "-n",
            n,
            "neigh",
            "replace",
            "10.77.0.2",
            "lladdr",
            "02:00:00:00:77:02",
            "dev",
            "v0",
            "nud",
            "permanent",
        ]);
        for net in ["10.1.0.0/16", "10.2.0.0/16", "198.18.0.0/15", "198.51.100.0/24"] {
            sh(&["ip", "-n", n, "route", "add", net, "via", "10.77.0.2", "dev", "v0"]);
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One test run: (return code, kernel-measured ns per repetition).
fn run(program: &Xdp, frame: &[u8], repeat: u32) -> (u32, f64) {
    run_from(program, frame, repeat, None)
}

/// One test run of a frame received on `ingress` (an interface index; `None`: the
/// namespace's loopback, the kernel's default).
fn run_from(program: &Xdp, frame: &[u8], repeat: u32, ingress: Option<u32>) -> (u32, f64) {
    let mut out = vec![0u8; frame.len() + 128];
    // `struct xdp_md`: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex; the kernel wants data 0 and data_end the frame's length.
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, ingress.unwrap_or(0), 0, 0]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    let r = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ingress.map(|_| ctx.as_slice()),
            repeat,
            ..TestRunOptions::default()
        })
        .unwrap();
    (r.return_value, r.duration.as_nanos() as f64)
}

fn repeated(name: &str, program: &Xdp, frame: &[u8], want: &[u32]) -> f64 {
    repeated_from(name, program, frame, want, None)
}

fn repeated_from(
    name: &str,
    program: &Xdp,
    frame: &[u8],
    want: &[u32],
    ingress: Option<u32>,
) -> f64 {
    // Warm up (and pin the flow, for hits), then measure three times and keep the best.
    let (code, _) = run_from(program, frame, 1, ingress);
    assert!(want.contains(&code), "{name}: return code {code}, wanted one of {want:?}");
    let mut best = f64::MAX;
    for _ in 0..3 {
        let (again, ns) = run_from(program, frame, REPEAT, ingress);
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
    let ns = Netns::new();
    let file = File::open(format!("/run/netns/{}", ns.0)).unwrap();
    // BPF_PROG_TEST_RUN runs XDP on the loopback device of the caller's namespace.
    let bench = std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        // One CPU for every run: the test run's repetitions may otherwise move between CPUs,
        // and each CPU has its own next-hop cache and NAT port cursor (as with one receive
        // queue, a real flow source stays on one CPU).
        let mut cpu = nix::sched::CpuSet::new();
        cpu.set(0).unwrap();
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu).unwrap();
        measure();
    });
    let outcome = bench.join();
    drop(ns);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn measure() {
    let max_flows = std::env::var("GH_BENCH_MAX_FLOWS").ok().and_then(|v| v.parse().ok());
    let limits = Limits {
        ring_size: 65_537,
        max_flows: max_flows.unwrap_or(Limits::default().max_flows),
        ..Limits::default()
    };
    let mut dp = Datapath::load(limits).expect("load the XDP program (root needed)");
    dp.apply(&plan()).unwrap();
    let floor = dp.floor_program().unwrap();
    let bench = dp.program(true).unwrap();
    // XDP_REDIRECT: the FIB's answer in this namespace (to v0) for every backend.
    let forwarded = [4];

    let miss_frame = Frame::tcp("198.51.100.7", 40000, "10.0.0.9", 80, TCP_ACK).bytes();
    let nat_frame = Frame::tcp("198.51.100.7", 40000, "10.0.0.1", 80, TCP_ACK).bytes();
    let ipip_frame = Frame::tcp("198.51.100.7", 40000, "10.0.0.3", 80, TCP_ACK).bytes();
    assert_eq!(miss_frame.len(), 60);

    println!("XDP program via BPF_PROG_TEST_RUN, 60-byte frames, harness included");
    let floor_ns = repeated("floor (XDP_PASS only)", floor, &miss_frame, &[2]);
    let miss = repeated("miss", bench, &miss_frame, &[2]);
    let hit_nat = repeated("conntrack hit, full NAT", bench, &nat_frame, &forwarded);
    let hit_ipip = repeated("conntrack hit, IPIP", bench, &ipip_frame, &forwarded);
    // One-arm, as Katran is deployed: the frame comes in on the interface the backends are
    // reached through, so the FIB's answer sends it back out of it (XDP_TX, no redirect).
    let backends_side = Some(nix::net::if_::if_nametoindex("v0").unwrap());
    let tx = [3];
    let hit_nat_one_arm =
        repeated_from("conntrack hit, full NAT, one-arm", bench, &nat_frame, &tx, backends_side);
    let hit_ipip_one_arm =
        repeated_from("conntrack hit, IPIP, one-arm", bench, &ipip_frame, &tx, backends_side);
    // A backend's reply to that full-NAT flow, rewritten back to the client: the NAT source
    // port is the one the program chose (seen on the forward packet, run once unrestored).
    let mut out = vec![0u8; nat_frame.len() + 128];
    let first = dp
        .program(false)
        .unwrap()
        .test_run(TestRunOptions {
            data_in: Some(&nat_frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })
        .unwrap();
    out.truncate(first.data_size_out as usize);
    let forward = seen(&out, 0);
    let reply_frame = Frame::tcp(
        &forward.dst.to_string(),
        forward.dport,
        &forward.src.to_string(),
        forward.sport,
        TCP_ACK,
    )
    .bytes();
    let reply = repeated("reply, full NAT", bench, &reply_frame, &forwarded);

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
        "{:<28} {new_nat:>7.1} ns/packet  ({NEW_FLOWS} distinct SYNs at repeat 1, cold, minus \
         the repeat-1 overhead {overhead:.1} ns)",
        "new flow, full NAT, cold"
    );
    println!("{:<28} {new_ipip:>7.1} ns/packet", "new flow, IPIP, cold");
    let new_flows = |vip: &str| dp.stats(&plan()).unwrap().vips[&format!("{vip}:80/tcp")].new_flows;
    let bench_new = dp.new_flow_bench_program().unwrap();
    let no_port = || dp.stats(&plan()).unwrap().counters[COUNTER_NO_BACKEND as usize];
    let repeated_new = |name: &str, vip: &str| -> f64 {
        let frame = Frame::tcp("198.18.0.0", 1, vip, 80, TCP_SYN).bytes();
        let mut best = f64::MAX;
        let mut drops = 0;
        for _ in 0..3 {
            let (flows_before, counts_before) = (new_flows(vip), dp.bench_counts().unwrap());
            let no_port_before = no_port();
            let (_, ns) = run(bench_new, &frame, REPEAT);
            let counts: Vec<u64> = dp
                .bench_counts()
                .unwrap()
                .iter()
                .zip(&counts_before)
                .map(|(after, before)| after - before)
                .collect();
            // counts[0]: runs; counts[1 + action]: runs that returned it.
            // Every run forwarded (XDP_REDIRECT) as a new flow, but for the rare full-NAT flow
            // whose 16 candidate source ports were all taken (dropped, and counted so).
            let (redirected, dropped) = (counts[1 + 4], counts[1 + 1]);
            drops = drops.max(dropped);
            if std::env::var_os("GH_BENCH_DEBUG").is_some() {
                eprintln!(
                    "{name}: {ns} ns, counts {counts:?}, new flows {}",
                    new_flows(vip) - flows_before
                );
            }
            assert_eq!(counts[0], u64::from(REPEAT), "{name}: runs");
            assert_eq!(redirected + dropped, u64::from(REPEAT), "{name}: actions {counts:?}");
            assert_eq!(no_port() - no_port_before, dropped, "{name}: drops without a NAT port");
            // With the connection table full of full-NAT flows (a SYN flood's steady state),
            // a few new flows in 10^4 find all 16 candidate ports still held by live flows.
            assert!(dropped <= u64::from(REPEAT / 1_000), "{name}: {dropped} dropped");
            assert_eq!(new_flows(vip) - flows_before, redirected, "{name}: every run a new flow");
            best = best.min(ns);
        }
        println!(
            "{name:<28} {best:>7.1} ns/packet  ({REPEAT} new flows per run, every one checked; \
             at most {drops} dropped without a free NAT port)"
        );
        best
    };
    let new_nat_repeated = repeated_new("new flow, full NAT", "10.0.0.5");
    let new_ipip_repeated = repeated_new("new flow, IPIP", "10.0.0.6");

    println!("RESULT ns_per_packet_floor {floor_ns:.1}");
    println!("RESULT ns_per_packet_miss {miss:.1}");
    println!("RESULT ns_per_packet_hit {hit_nat:.1}");
    println!("RESULT ns_per_packet_hit_ipip {hit_ipip:.1}");
    println!("RESULT ns_per_packet_hit_one_arm {hit_nat_one_arm:.1}");
    println!("RESULT ns_per_packet_hit_ipip_one_arm {hit_ipip_one_arm:.1}");
    println!("RESULT ns_per_packet_reply {reply:.1}");
    println!("RESULT ns_per_packet_new_flow {new_nat_repeated:.1}");
    println!("RESULT ns_per_packet_new_flow_ipip {new_ipip_repeated:.1}");
    println!("RESULT ns_per_packet_new_flow_cold {new_nat:.1}");
    println!("RESULT ns_per_packet_new_flow_ipip_cold {new_ipip:.1}");
}
