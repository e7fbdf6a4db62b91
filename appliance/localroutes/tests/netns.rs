//! Against the real kernel, each test in a network namespace of its own (a thread that
//! unshared its namespace; the namespace goes away with the thread). Needs root.

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::Command;

use gatehouse_localroutes::{LocalRoutes, ROUTE_PROTOCOL, wanted};

fn root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root =
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        eprintln!("skipped: needs root (network namespaces, routes)");
    }
    root
}

/// Runs `f` on a thread in a fresh network namespace with `lo` up, on a tokio runtime there.
fn in_new_netns<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F + Send + 'static) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        ip(&["link", "set", "lo", "up"]);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(f());
    })
    .join()
    .expect("the namespace's thread");
}

/// `ip ARGS` in the calling thread's namespace (a forked child inherits it).
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ours() -> String {
    let proto = ROUTE_PROTOCOL.to_string();
    ip(&["route", "show", "table", "local", "proto", &proto])
        + &ip(&["-6", "route", "show", "table", "local", "proto", &proto])
}

fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
    addresses.iter().map(|a| a.parse().expect("address")).collect()
}

#[test]
fn wanted_keeps_specific_unicast_addresses_only() {
    let bound = [
        "192.0.2.1",
        "0.0.0.0",
        "127.0.0.1",
        "127.3.4.5",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:198.51.100.4",
        "192.0.2.1",
    ]
    .map(|a| a.parse::<IpAddr>().expect("address"));
    assert_eq!(wanted(bound), set(&["192.0.2.1", "198.51.100.4", "2001:db8::1"]));
}

#[test]
fn adds_what_is_bound_and_the_kernel_then_delivers_it_locally_needs_root() {
    if !root() {
        return;
    }
    in_new_netns(|| async {
        let routes = LocalRoutes::open().expect("netlink");
        // Not local yet: a plain bind fails.
        assert!(TcpListener::bind("192.0.2.10:0").is_err());
        let done = routes.reconcile(&set(&["192.0.2.10", "2001:db8::10"])).await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        assert_eq!(
            done.added,
            set(&["192.0.2.10", "2001:db8::10"]).into_iter().collect::<Vec<_>>()
        );
        let listed = ours();
        assert!(listed.contains("local 192.0.2.10 dev lo"), "{listed}");
        assert!(listed.contains("local 2001:db8::10 dev lo"), "{listed}");
        // The kernel takes it as its own: a plain bind works and a connection is delivered.
        let listener = TcpListener::bind("192.0.2.10:0").expect("bind a now-local address");
        let port = listener.local_addr().expect("port").port();
        TcpStream::connect(("192.0.2.10", port)).expect("connect");
        assert!(listener.accept().is_ok());

        // Again with the same set: nothing to do.
        let again = routes.reconcile(&set(&["192.0.2.10", "2001:db8::10"])).await;
        assert!(again.added.is_empty() && again.removed.is_empty() && again.failed.is_empty());
    });
}

#[test]
fn removes_only_its_own_routes_and_skips_addresses_already_local_needs_root() {
    if !root() {
        return;
    }
    in_new_netns(|| async {
        // Someone else's local route, an address on an interface, and a leftover of ours from
        // a run that crashed.
        ip(&[
            "route",
            "add",
            "local",
            "198.51.100.7",
            "dev",
            "lo",
            "table",
            "local",
            "proto",
            "static",
        ]);
        ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
        ip(&["addr", "add", "203.0.113.5/24", "dev", "d0"]);
        ip(&["link", "set", "d0", "up"]);
        let proto = ROUTE_PROTOCOL.to_string();
        ip(&[
            "route",
            "add",
            "local",
            "192.0.2.99",
            "dev",
            "lo",
            "table",
            "local",
            "proto",
            &proto,
        ]);

        let routes = LocalRoutes::open().expect("netlink");
        let done = routes.reconcile(&set(&["192.0.2.20", "198.51.100.7", "203.0.113.5"])).await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        assert_eq!(done.added, vec!["192.0.2.20".parse::<IpAddr>().expect("address")]);
        assert_eq!(done.removed, vec!["192.0.2.99".parse::<IpAddr>().expect("address")]);
        assert_eq!(
            done.already_local,
            set(&["198.51.100.7", "203.0.113.5"]).into_iter().collect::<Vec<_>>()
        );

        let cleared = routes.clear().await;
        assert!(cleared.failed.is_empty(), "{:?}", cleared.failed);
        assert_eq!(cleared.removed, vec!["192.0.2.20".parse::<IpAddr>().expect("address")]);
        assert_eq!(ours(), "");
        // What was not ours is still there.
        let local = ip(&["route", "show", "table", "local"]);
        assert!(local.contains("local 198.51.100.7 dev lo proto static"), "{local}");
        assert!(local.contains("local 203.0.113.5 dev d0 proto kernel"), "{local}");
    });
}
