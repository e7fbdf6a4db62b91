//! Packets/s through a VIP on a veth topology, XDP against the kernel in the same run (run by
//! `bench/xdp`, release build, needs root and `nft`).
//!
//! generator ns (c0) ↔ (c1) appliance ns (b1) ↔ (b0) backend ns. The generator is the
//! `XDP_TX`-only program run with live-frames `BPF_PROG_TEST_RUN` on c0: every run sends one
//! 60-byte UDP frame to the appliance. The backend's XDP program drops what arrives and counts
//! it; packets/s = frames counted at the backend / wall time of the generator's run. One flow
//! (one 5-tuple) throughout: the connection-table hit path of each data plane.
//!
//! - `xdp`: gatehouse's program on c1, the VIP balanced by full NAT and redirected to b1.
//! - `nftables`: DNAT to the backend and SNAT to the NAT source with conntrack, kernel
//!   forwarding (c1 has GRO on: veth delivers redirected frames to it only then).
//! - `routing`: the frame sent to the backend's own address, plain kernel forwarding.
//!
//! Every case runs `ROUNDS` times interleaved; the best round counts. The namespaces are
//! removed at the end (and on a panic).

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

#[path = "../tests/frames/mod.rs"]
mod frames;

use std::fs::File;
use std::process::Command;
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
use frames::Frame;
use gatehouse_xdp::common::COUNTER_DROP_LIST;
use gatehouse_xdp::{
    AttachMode, Datapath, Forwarding, L4Protocol, Limits, Plan, Vip, VipAction, WeightedAddr,
};

const FRAMES_PER_ROUND: u32 = 1_000_000;
const ROUNDS: usize = 3;
const BATCH: u32 = 64;

fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Topology {
    names: [String; 3],
}

impl Topology {
    fn new() -> Topology {
        let id = std::process::id();
        let t = Topology {
            names: [format!("ghp-g-{id}"), format!("ghp-a-{id}"), format!("ghp-b-{id}")],
        };
        let [g, a, b] = [&t.names[0], &t.names[1], &t.names[2]];
        for ns in &t.names {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&[
            "ip", "link", "add", "c0", "netns", g, "type", "veth", "peer", "name", "c1", "netns", a,
        ]);
        run(&[
            "ip", "link", "add", "b0", "netns", b, "type", "veth", "peer", "name", "b1", "netns", a,
        ]);
        for (ns, dev, addr) in [
            (g, "c0", "10.10.1.2/24"),
            (a, "c1", "10.10.1.1/24"),
            (a, "b1", "10.10.2.1/24"),
            (b, "b0", "10.10.2.2/24"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        }
        run(&["ip", "netns", "exec", a, "ethtool", "-K", "c1", "gro", "on"]);
        run(&["ip", "-n", g, "route", "add", "default", "via", "10.10.1.1"]);
        run(&["ip", "-n", b, "route", "add", "default", "via", "10.10.2.1"]);
        run(&["ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for key in ["all", "default", "c1", "b1"] {
            run(&[
                "ip",
                "netns",
                "exec",
                a,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{key}.rp_filter=0"),
            ]);
        }
        // The backend's neighbour entry before the first frame: XDP forwards itself only with
        // a complete FIB answer.
        let b0 = mac(b, "b0").map(|o| format!("{o:02x}")).join(":");
        run(&[
            "ip",
            "-n",
            a,
            "neigh",
            "replace",
            "10.10.2.2",
            "lladdr",
            &b0,
            "dev",
            "b1",
            "nud",
            "permanent",
        ]);
        t
    }

    fn ns(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn mac(ns: &str, dev: &str) -> [u8; 6] {
    let text = run(&["ip", "-n", ns, "-br", "link", "show", dev]);
    let field = text.split_whitespace().nth(2).unwrap();
    let mut out = [0u8; 6];
    for (o, part) in out.iter_mut().zip(field.split(':')) {
        *o = u8::from_str_radix(part, 16).unwrap();
    }
    out
}

fn limits() -> Limits {
    Limits { max_vips: 8, max_backends: 8, ring_size: 4099, max_flows: 4096 }
}

fn appliance_plan() -> Plan {
    Plan {
        generation: 1,
        vips: vec![Vip {
            addr: "10.10.1.100".parse().unwrap(),
            port: 9,
            protocol: L4Protocol::Udp,
            action: VipAction::Balance {
                backends: vec![WeightedAddr { addr: "10.10.2.2:9".parse().unwrap(), weight: 1 }],
                forwarding: Forwarding::Nat,
                syn_limit: 0,
            },
        }],
        owned: vec!["10.10.1.100".parse().unwrap(), "10.10.2.100".parse().unwrap()],
        drop_sources: vec![],
        source_v4: Some("10.10.2.100".parse().unwrap()),
        source_v6: None,
    }
}

/// The backend drops (and counts) every UDP frame to port 9 from 10.0.0.0/8.
fn sink_plan() -> Plan {
    Plan {
        generation: 1,
        vips: vec![Vip {
            addr: "10.10.2.2".parse().unwrap(),
            port: 9,
            protocol: L4Protocol::Udp,
            action: VipAction::Pass,
        }],
        drop_sources: vec![("10.0.0.0".parse().unwrap(), 8)],
        ..Plan::default()
    }
}

/// Sends `FRAMES_PER_ROUND` copies of `frame` out of c0; returns the wall time.
fn generate(topo: &Topology, frame: Vec<u8>) -> Duration {
    in_ns(topo.ns(0), move || {
        let mut dp = Datapath::load(limits()).unwrap();
        dp.set_generator_frame(&frame).unwrap();
        let generator = dp.generator_program().unwrap();
        let ifindex = nix::net::if_::if_nametoindex("c0").unwrap();
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let mut ctx = Vec::with_capacity(24);
        for word in [0, frame.len() as u32, 0, ifindex, 0, 0] {
            ctx.extend_from_slice(&word.to_ne_bytes());
        }
        let started = Instant::now();
        generator
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: FRAMES_PER_ROUND,
                attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                ..TestRunOptions::default()
            })
            .unwrap();
        started.elapsed()
    })
}

fn main() {
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("nft is missing (Debian package nftables; `make bench-xdp` installs it)");
        std::process::exit(1);
    }
    let topo = Topology::new();
    let (g, a, b) = (topo.ns(0).to_owned(), topo.ns(1).to_owned(), topo.ns(2).to_owned());
    let sink = in_ns(&b, || {
        let mut dp = Datapath::load(limits()).unwrap();
        dp.attach("b0", AttachMode::Driver).unwrap();
        dp.apply(&sink_plan()).unwrap();
        dp
    });
    let dropped = || sink.stats(&sink_plan()).unwrap().counters[COUNTER_DROP_LIST as usize];
    let (c0, c1) = (mac(&g, "c0"), mac(&a, "c1"));
    let frame = |dst: &str| {
        let mut f = Frame::udp("10.10.1.2", 40000, dst, 9).bytes();
        f[0..6].copy_from_slice(&c1);
        f[6..12].copy_from_slice(&c0);
        f
    };
    let to_vip = frame("10.10.1.100");
    let to_backend = frame("10.10.2.2");
    assert_eq!(to_vip.len(), 60);

    let nft_rules = "table ip ghbench {
  chain pre { type nat hook prerouting priority -100; ip daddr 10.10.1.100 udp dport 9 dnat to 10.10.2.2:9; }
  chain post { type nat hook postrouting priority 100; ip daddr 10.10.2.2 udp dport 9 snat to 10.10.2.100; }
}
";
    let rules_file = std::env::temp_dir().join(format!("ghbench-{}.nft", std::process::id()));
    std::fs::write(&rules_file, nft_rules).unwrap();

    let mut best = [0f64; 3];
    let names = ["xdp (full NAT)", "nftables DNAT+SNAT, conntrack", "plain routing"];
    for round in 0..ROUNDS {
        for (case, name) in names.iter().enumerate() {
            let appliance = (case == 0).then(|| {
                in_ns(&a, || {
                    let mut dp = Datapath::load(limits()).unwrap();
                    dp.attach("c1", AttachMode::Driver).unwrap();
                    dp.apply(&appliance_plan()).unwrap();
                    dp
                })
            });
            if case == 1 {
                run(&["ip", "netns", "exec", &a, "nft", "-f", rules_file.to_str().unwrap()]);
            }
            let f = if case == 2 { to_backend.clone() } else { to_vip.clone() };
            let before = dropped();
            let elapsed = generate(&topo, f);
            // Frames still in flight land within a moment.
            std::thread::sleep(Duration::from_millis(100));
            let delivered = dropped() - before;
            if std::env::var_os("GH_BENCH_DEBUG").is_some() {
                for (ns, dev) in [(&g, "c0"), (&a, "c1"), (&a, "b1"), (&b, "b0")] {
                    eprintln!("{ns} {}", run(&["ip", "-n", ns, "-s", "link", "show", dev]));
                    let _ = Command::new("ip")
                        .args(["netns", "exec", ns, "ethtool", "-S", dev])
                        .status();
                }
            }
            let pps = delivered as f64 / elapsed.as_secs_f64();
            println!(
                "round {round} {name:<32} {:>6.3} Mpps delivered ({delivered} of {FRAMES_PER_ROUND} in {:.2} s)",
                pps / 1e6,
                elapsed.as_secs_f64()
            );
            best[case] = best[case].max(pps);
            if case == 1 {
                run(&["ip", "netns", "exec", &a, "nft", "delete", "table", "ip", "ghbench"]);
            }
            drop(appliance);
        }
    }
    let _ = std::fs::remove_file(&rules_file);
    println!(
        "best of {ROUNDS}: xdp {:.3} Mpps, nftables {:.3} Mpps, routing {:.3} Mpps",
        best[0] / 1e6,
        best[1] / 1e6,
        best[2] / 1e6
    );
    println!("RESULT pps_xdp {:.0}", best[0]);
    println!("RESULT pps_nftables {:.0}", best[1]);
    println!("RESULT pps_routing {:.0}", best[2]);
    println!("RESULT pps_ratio_vs_nftables {:.2}", best[0] / best[1].max(1.0));
    println!("RESULT pps_ratio_vs_routing {:.2}", best[0] / best[2].max(1.0));
    drop(sink);
}
