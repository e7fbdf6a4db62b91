//! Attaching the program to a real interface: a veth pair inside a network namespace that the
//! test creates for its own thread (`unshare(CLONE_NEWNET)`) and that vanishes with it (threads
//! the test thread starts share that namespace).
//! Needs root (hence `_needs_root`).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gatehouse_xdp::{AttachMode, Datapath, Limits, Plane, PlaneConfig, XdpError};

// The crate's unit tests' root check, the same file.
#[path = "../src/test_support.rs"]
mod test_support;
use test_support::root;

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn small() -> Limits {
    Limits { max_vips: 4, max_backends: 8, ring_size: 13, max_flows: 64 }
}

#[test]
fn attach_driver_mode_refuse_a_second_attach_and_detach_on_drop_needs_root() {
    if !root() {
        return;
    }
    // A thread of its own: the namespace dies with the thread, the test process keeps its own.
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        ip(&["link", "add", "ghx0", "type", "veth", "peer", "name", "ghx1"]);
        ip(&["link", "set", "ghx0", "up"]);
        ip(&["link", "set", "ghx1", "up"]);

        let mut first = Datapath::load(small()).unwrap();
        let attached = first.attach("ghx0", AttachMode::Driver).unwrap();
        assert_eq!(attached.mode, AttachMode::Driver, "veth supports driver mode");
        assert!(!attached.fell_back);
        assert!(ip(&["link", "show", "ghx0"]).contains("xdp"));

        let mut second = Datapath::load(small()).unwrap();
        let err = second.attach("ghx0", AttachMode::Driver).unwrap_err();
        assert!(matches!(err, XdpError::Busy(ref i) if i == "ghx0"), "{err}");
        assert!(err.to_string().contains("already has an XDP program"), "{err}");

        let err = second.attach("ghx-nope", AttachMode::Driver).unwrap_err();
        assert!(matches!(err, XdpError::UnknownInterface(_)), "{err}");

        drop(first);
        // The link is released with its last file descriptor: a child another test in this
        // process is spawning holds a copy until its exec, so give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        while ip(&["link", "show", "ghx0"]).contains("xdp") {
            assert!(Instant::now() < deadline, "detached on drop");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Now free: the second one attaches.
        second.attach("ghx0", AttachMode::Generic).unwrap();
        assert!(ip(&["link", "show", "ghx0"]).contains("xdpgeneric"));
        drop(second);
        let deadline = Instant::now() + Duration::from_secs(2);
        while ip(&["link", "show", "ghx0"]).contains("xdp") {
            assert!(Instant::now() < deadline, "detached on drop");
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .join()
    .unwrap();
}

/// The data plane's thread gets a command for every burst of neighbour, route or link changes
/// (the next-hop cache goes stale); however many arrive, it keeps watching its interface: a
/// loss is still seen while the neighbour table churns.
#[test]
fn plane_sees_an_interface_loss_while_neighbours_churn_needs_root() {
    if !root() {
        return;
    }
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        ip(&["link", "add", "ghp0", "type", "veth", "peer", "name", "ghp1"]);
        ip(&["link", "set", "ghp0", "up"]);
        ip(&["link", "set", "ghp1", "up"]);
        // The churn happens on another interface, so it goes on after ghp0 is gone.
        ip(&["link", "add", "ghq0", "type", "veth", "peer", "name", "ghq1"]);
        ip(&["link", "set", "ghq0", "up"]);
        ip(&["addr", "add", "10.99.0.1/24", "dev", "ghq0"]);
        let config = PlaneConfig {
            interfaces: vec!["ghp0".into()],
            mode: AttachMode::Driver,
            require_driver: false,
            limits: small(),
        };
        let mut plane = Plane::start(config).unwrap();
        assert!(plane.status().attached);

        // Set on the way out, a failed assertion included: the churn stops with the test.
        struct Stop(Arc<AtomicBool>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stop = Stop(Arc::new(AtomicBool::new(false)));
        let churning = stop.0.clone();
        let churn = std::thread::spawn(move || {
            let mut i = 0u32;
            while !churning.load(Ordering::Relaxed) {
                let addr = format!("10.99.0.{}", 2 + i % 200);
                let mac = format!("02:00:00:00:00:{:02x}", i % 256);
                ip(&["neigh", "replace", &addr, "lladdr", &mac, "dev", "ghq0"]);
                i += 1;
            }
            i
        });
        std::thread::sleep(Duration::from_millis(1500));
        ip(&["link", "del", "ghp0"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while plane.status().attached {
            assert!(Instant::now() < deadline, "the interface loss was not seen");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(stop);
        let changes = churn.join().unwrap();
        assert!(changes > 10, "only {changes} neighbour changes");
        assert_eq!(plane.status().interface_losses, 1);
        plane.stop();
    })
    .join()
    .unwrap();
}
