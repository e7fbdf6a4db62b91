//! The plane after a failed plan: acknowledgement, `/status`, and the full write after a
//! failed undo. A veth pair in a network namespace the test makes for its own thread (the
//! plane's threads, started from it, share it); root needed, as in `tests/attach.rs`.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::process::Command;
use std::time::{Duration, Instant};

use super::{Plane, PlaneConfig, PlaneStatus};
use crate::datapath::AttachMode;
use crate::journal::faults;
use crate::test_support::root;
use crate::{Forwarding, L4Protocol, Limits, Plan, Vip, VipAction, WeightedAddr};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Generation `generation`: one VIP, plus a second with a backend of its own from
/// generation 2 on.
fn plan(generation: u64) -> Plan {
    let balance = |backends: &[&str]| VipAction::Balance {
        backends: backends
            .iter()
            .map(|b| WeightedAddr { addr: b.parse().unwrap(), weight: 1 })
            .collect(),
        forwarding: Forwarding::Nat,
        syn_limit: 0,
    };
    let mut vips = vec![Vip {
        addr: "10.0.0.1".parse().unwrap(),
        port: 80,
        protocol: L4Protocol::Tcp,
        action: balance(&["10.1.0.1:80", "10.1.0.2:80"]),
    }];
    if generation >= 2 {
        vips.push(Vip {
            addr: "10.0.0.2".parse().unwrap(),
            port: 80,
            protocol: L4Protocol::Tcp,
            action: balance(&["10.1.0.3:80"]),
        });
    }
    Plan {
        generation,
        vips,
        owned: vec!["10.0.0.1".parse().unwrap()],
        source_v4: Some("10.9.9.9".parse().unwrap()),
        ..Plan::default()
    }
}

/// Waits (at most 30 s: the plane retries a full write after 1, 2, 4 … seconds) until the
/// status satisfies `done`.
fn wait(plane: &Plane, done: impl Fn(&PlaneStatus) -> bool) -> PlaneStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = plane.status();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_failed_plan_keeps_the_acknowledged_generation_and_a_failed_undo_is_repaired_needs_root() {
    if !root() {
        return;
    }
    let _faults = faults::exclusive();
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        ip(&["link", "add", "ghf0", "type", "veth", "peer", "name", "ghf1"]);
        ip(&["link", "set", "ghf0", "up"]);
        ip(&["link", "set", "ghf1", "up"]);
        let config = PlaneConfig {
            interfaces: vec!["ghf0".into()],
            mode: AttachMode::Generic,
            require_driver: false,
            limits: Limits { max_vips: 4, max_backends: 8, ring_size: 13, max_flows: 64 },
        };
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let plane = Plane::start(config).unwrap();
        assert_eq!(runtime.block_on(plane.apply(plan(1))), Ok(1));

        // Generation 2's second write (its new backend) fails; undone, generation 1 stays.
        faults::fail(&[1]);
        let error = runtime.block_on(plane.apply(plan(2))).unwrap_err();
        faults::fail(&[]);
        let status = plane.status();
        assert_eq!(status.applied_generation, Some(1));
        assert_eq!(status.last_error.as_deref(), Some(error.as_str()));
        assert!(!status.needs_full_apply, "{status:?}");

        // Now every write from the second on fails, its undo too: loud, and the plane's full
        // writes of generation 1 fail as well until the faults stop.
        faults::fail_from(1);
        let error = runtime.block_on(plane.apply(plan(2))).unwrap_err();
        assert!(error.contains("undoing the plan's map writes failed too"), "{error}");
        let status = plane.status();
        assert_eq!(status.applied_generation, Some(1));
        assert_eq!(status.last_error.as_deref(), Some(error.as_str()));
        assert!(status.needs_full_apply, "{status:?}");
        faults::fail(&[]);
        let status = wait(&plane, |s| !s.needs_full_apply);
        assert_eq!(status.applied_generation, Some(1));

        assert_eq!(runtime.block_on(plane.apply(plan(2))), Ok(2));
        let status = plane.status();
        assert_eq!((status.applied_generation, status.last_error), (Some(2), None));
    })
    .join()
    .unwrap();
}
