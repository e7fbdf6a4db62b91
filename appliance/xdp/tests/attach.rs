//! Attaching the program to a real interface: a veth pair inside a network namespace that the
//! test creates for its own thread (`unshare(CLONE_NEWNET)`) and that vanishes with it.
//! Needs root (hence `_needs_root`).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

use std::process::Command;

use gatehouse_xdp::{AttachMode, Datapath, Limits, XdpError};

fn root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root =
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        eprintln!("skipped: needs root and a BPF-capable kernel");
    }
    root
}

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
        assert!(!ip(&["link", "show", "ghx0"]).contains("xdp"), "detached on drop");
        // Now free: the second one attaches.
        second.attach("ghx0", AttachMode::Generic).unwrap();
        assert!(ip(&["link", "show", "ghx0"]).contains("xdpgeneric"));
        drop(second);
        assert!(!ip(&["link", "show", "ghx0"]).contains("xdp"));
    })
    .join()
    .unwrap();
}
