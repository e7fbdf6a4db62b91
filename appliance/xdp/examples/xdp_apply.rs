//! Milliseconds per `Datapath::apply` of a large plan (needs root): the first plan, a reload
//! that changes nothing, one that moves the backends of 1 % of the VIPs, and one that
//! re-weights every VIP. Each figure is the median of `ROUNDS` applies.
//!
//! `cargo run --release -p gatehouse-xdp --example xdp_apply` (as root).

#![allow(clippy::unwrap_used, reason = "a benchmark fails loudly")]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use gatehouse_xdp::{Datapath, Forwarding, L4Protocol, Limits, Plan, Vip, VipAction, WeightedAddr};

const VIPS: u32 = 2_000;
const BACKENDS: u32 = 1_000;
const ROUNDS: usize = 9;

/// `VIPS` VIPs over 4 of `BACKENDS` backends each; `moved` VIPs (every `stride`-th) take
/// the next backends instead, `weight` is the first backend's weight.
fn plan(generation: u64, stride: u32, weight: u32) -> Plan {
    let vips = (0..VIPS)
        .map(|i| {
            let shift = u32::from(stride != 0 && i % stride == 0);
            let backends = (0..4)
                .map(|b| {
                    let n = (i * 4 + b + shift) % BACKENDS;
                    let addr = IpAddr::V4(Ipv4Addr::new(10, 1, (n >> 8) as u8, n as u8));
                    WeightedAddr {
                        addr: SocketAddr::new(addr, 80),
                        weight: if b == 0 { weight } else { 1 },
                    }
                })
                .collect();
            Vip {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8)),
                port: 80,
                protocol: L4Protocol::Tcp,
                action: VipAction::Balance { backends, forwarding: Forwarding::Nat, syn_limit: 0 },
            }
        })
        .collect();
    Plan {
        generation,
        vips,
        owned: Vec::new(),
        drop_sources: Vec::new(),
        source_v4: Some("10.9.9.9".parse().unwrap()),
        source_v6: None,
    }
}

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

fn main() {
    let limits =
        Limits { max_vips: 2_048, max_backends: 4_096, ring_size: 4_099, max_flows: 4_096 };
    let mut generation = 0;
    let mut cases: Vec<(&str, Vec<f64>)> =
        ["first plan", "unchanged", "1 % of VIPs moved", "every VIP re-weighted"]
            .into_iter()
            .map(|name| (name, Vec::new()))
            .collect();
    for _ in 0..ROUNDS {
        let mut dp = Datapath::load(limits).unwrap();
        let steps = [(0, 1), (0, 1), (100, 1), (100, 2)];
        for (case, (stride, weight)) in cases.iter_mut().zip(steps) {
            generation += 1;
            let plan = plan(generation, stride, weight);
            let start = Instant::now();
            dp.apply(&plan).unwrap();
            case.1.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    for (name, ms) in cases {
        println!("{name:>24}: {:8.2} ms (median of {ROUNDS})", median(ms));
    }
}
