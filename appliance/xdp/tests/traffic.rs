//! Real traffic through the XDP program: client ns ↔ appliance ns ↔ backend ns over veth
//! pairs, driver mode, namespaces created and removed by the test. Needs root (hence
//! `_needs_root`). Veth facts: a frame redirected into a veth is delivered only when the peer
//! runs an XDP program, XDP_TX likewise, so the peers get one (passing everything); TX
//! checksum offload is off on the sending veths.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any unexpected error")]

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use gatehouse_xdp::{
    AttachMode, Datapath, Forwarding, L4Protocol, Limits, NextHopWatch, Plan, Vip, VipAction,
    WeightedAddr,
};

// The crate's unit tests' root check, the same file.
#[path = "../src/test_support.rs"]
mod test_support;
use test_support::root;

fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Three namespaces, removed on drop.
struct Topology {
    client: String,
    appliance: String,
    backend: String,
}

impl Topology {
    fn new() -> Topology {
        // Unique per test: the tests of this file run in parallel threads of one process.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let t = Topology {
            client: format!("ghx-c-{id}"),
            appliance: format!("ghx-a-{id}"),
            backend: format!("ghx-b-{id}"),
        };
        for ns in [&t.client, &t.appliance, &t.backend] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (c, a, b) = (t.client.as_str(), t.appliance.as_str(), t.backend.as_str());
        run(&[
            "ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "c1", "netns", a,
        ]);
        run(&[
            "ip", "link", "add", "b0", "netns", b, "type", "veth", "peer", "name", "b1", "netns", a,
        ]);
        run(&["ip", "-n", c, "addr", "add", "10.10.1.2/24", "dev", "c0"]);
        run(&["ip", "-n", a, "addr", "add", "10.10.1.1/24", "dev", "c1"]);
        run(&["ip", "-n", a, "addr", "add", "10.10.2.1/24", "dev", "b1"]);
        for addr in ["10.10.2.2/24", "10.10.2.3/24", "10.10.2.4/24"] {
            run(&["ip", "-n", b, "addr", "add", addr, "dev", "b0"]);
        }
        for (ns, dev) in [(c, "c0"), (a, "c1"), (a, "b1"), (b, "b0")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        }
        run(&["ip", "-n", c, "route", "add", "default", "via", "10.10.1.1"]);
        run(&["ip", "-n", b, "route", "add", "default", "via", "10.10.2.1"]);
        run(&["ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for key in ["all", "default", "c1", "b1"] {
            let setting = format!("net.ipv4.conf.{key}.rp_filter=0");
            run(&["ip", "netns", "exec", a, "sysctl", "-qw", &setting]);
        }
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.client, &self.appliance, &self.backend] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let file = File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

fn weighted(list: &[(&str, u32)]) -> Vec<WeightedAddr> {
    list.iter().map(|(a, w)| WeightedAddr { addr: a.parse().unwrap(), weight: *w }).collect()
}

fn plan(generation: u64, tcp: &[(&str, u32)]) -> Plan {
    Plan {
        generation,
        vips: vec![
            Vip {
                addr: "10.10.1.100".parse().unwrap(),
                port: 80,
                protocol: L4Protocol::Tcp,
                action: VipAction::Balance {
                    backends: weighted(tcp),
                    forwarding: Forwarding::Nat,
                    syn_limit: 0,
                },
            },
            Vip {
                addr: "10.10.1.100".parse().unwrap(),
                port: 53,
                protocol: L4Protocol::Udp,
                action: VipAction::Balance {
                    backends: weighted(&[("10.10.2.2:5353", 1), ("10.10.2.3:5353", 1)]),
                    forwarding: Forwarding::Nat,
                    syn_limit: 0,
                },
            },
        ],
        // The NAT source is owned (answered for by XDP), not assigned: the kernel would drop a
        // forwarded packet whose source is one of its own addresses.
        owned: vec!["10.10.1.100".parse().unwrap(), "10.10.2.100".parse().unwrap()],
        drop_sources: vec![],
        source_v4: Some("10.10.2.100".parse().unwrap()),
        source_v6: None,
    }
}

fn limits() -> Limits {
    Limits { max_vips: 8, max_backends: 16, ring_size: 4099, max_flows: 4096 }
}

/// TCP servers on the backend addresses: every line read is answered with the server's
/// address; UDP servers answer every datagram the same way. Stop when `stop` is set.
fn backends(ns: &str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    in_ns(ns, move || {
        let mut threads = Vec::new();
        for addr in ["10.10.2.2:8080", "10.10.2.3:8080", "10.10.2.4:8080"] {
            let listener = TcpListener::bind(addr).unwrap();
            listener.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            std::thread::spawn(move || {
                                conn.set_nonblocking(false).unwrap();
                                conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                                let mut w = conn.try_clone().unwrap();
                                for line in BufReader::new(conn).lines() {
                                    if line.is_err() || writeln!(w, "{addr}").is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        for addr in ["10.10.2.2:5353", "10.10.2.3:5353"] {
            let socket = UdpSocket::bind(addr).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                // Replies leave from CPU 0: veth runs the appliance's program on the sender's
                // CPU, and the next-hop cache is per CPU.
                on_cpu0();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(addr.as_bytes(), from);
                    }
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
    })
}

fn ask(conn: &mut BufReader<TcpStream>) -> String {
    writeln!(conn.get_mut(), "which").unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    line.trim().to_owned()
}

fn connect() -> BufReader<TcpStream> {
    let vip: SocketAddr = "10.10.1.100:80".parse().unwrap();
    let conn = TcpStream::connect_timeout(&vip, Duration::from_secs(3)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    BufReader::new(conn)
}

#[test]
fn tcp_and_udp_through_a_vip_weights_flow_pinning_and_arp_needs_root() {
    if !root() {
        return;
    }
    let topo = Topology::new();
    // The peers' XDP programs only pass frames (empty plans), so veth delivers redirects/TX.
    let peer_c = in_ns(&topo.client, || {
        let mut dp = Datapath::load(limits()).unwrap();
        dp.attach("c0", AttachMode::Driver).unwrap();
        dp
    })
    .join()
    .unwrap();
    let peer_b = in_ns(&topo.backend, || {
        let mut dp = Datapath::load(limits()).unwrap();
        dp.attach("b0", AttachMode::Driver).unwrap();
        dp
    })
    .join()
    .unwrap();
    let mut appliance = in_ns(&topo.appliance, || {
        let mut dp = Datapath::load(limits()).unwrap();
        for dev in ["c1", "b1"] {
            let a = dp.attach(dev, AttachMode::Driver).unwrap();
            assert!(!a.fell_back, "veth supports driver mode");
        }
        dp
    })
    .join()
    .unwrap();
    let heavy = "10.10.2.3:8080";
    appliance.apply(&plan(1, &[("10.10.2.2:8080", 1), (heavy, 3)])).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let servers = backends(&topo.backend, stop.clone());
    std::thread::sleep(Duration::from_millis(200));

    // Weights 1:3 over 200 connections; a flow kept open across a change of the backend set.
    let client = in_ns(&topo.client, move || {
        let mut answers = Vec::new();
        for _ in 0..200 {
            let mut c = connect();
            answers.push(ask(&mut c));
        }
        let mut kept = connect();
        let first = ask(&mut kept);
        (answers, kept, first)
    });
    let (answers, kept, first) = client.join().unwrap();
    let on_heavy = answers.iter().filter(|a| *a == heavy).count();
    assert!(answers.iter().all(|a| a == heavy || a == "10.10.2.2:8080"), "{answers:?}");
    assert!((120..=180).contains(&on_heavy), "{on_heavy} of 200 on the weight-3 backend");

    appliance.apply(&plan(2, &[("10.10.2.2:8080", 1), (heavy, 3), ("10.10.2.4:8080", 4)])).unwrap();
    let after = in_ns(&topo.client, move || {
        let mut kept = kept;
        let again = ask(&mut kept);
        let mut new = Vec::new();
        for _ in 0..50 {
            new.push(ask(&mut connect()));
        }
        // UDP: the answer comes back from the VIP (the reverse path rewritten in XDP).
        let socket = UdpSocket::bind("10.10.1.2:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        socket.send_to(b"which", "10.10.1.100:53").unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = socket.recv_from(&mut buf).unwrap();
        (again, new, String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    });
    let (again, new, udp_answer, udp_from) = after.join().unwrap();
    assert_eq!(again, first, "the open flow kept its backend");
    assert!(new.iter().any(|a| a == "10.10.2.4:8080"), "new flows reach the added backend");
    assert!(udp_answer.ends_with(":5353"), "{udp_answer}");
    assert_eq!(udp_from, "10.10.1.100:53".parse::<SocketAddr>().unwrap());

    // ARP for the VIP was answered by XDP with c1's MAC.
    let neigh = run(&["ip", "-n", &topo.client, "neigh", "show", "10.10.1.100"]);
    let c1 = run(&["ip", "-n", &topo.appliance, "-br", "link", "show", "c1"]);
    let c1_mac = c1.split_whitespace().nth(2).unwrap().to_owned();
    assert!(neigh.contains(&c1_mac), "{neigh} / {c1}");
    let stats = appliance.stats(&plan(2, &[])).unwrap();
    assert!(stats.counters[gatehouse_xdp::common::COUNTER_ARP_REPLY as usize] >= 1);
    assert!(stats.counters[gatehouse_xdp::common::COUNTER_NAT_REVERSE as usize] > 0);

    stop.store(true, Ordering::Relaxed);
    servers.join().unwrap();
    drop((appliance, peer_c, peer_b));
}

/// Pins the calling thread to CPU 0.
fn on_cpu0() {
    let mut cpu0 = nix::sched::CpuSet::new();
    cpu0.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0).unwrap();
}

/// One UDP exchange through the VIP from the client namespace: the answer, or `None` when
/// nothing came back within a second. Sent from CPU 0: veth runs the appliance's program on
/// the sender's CPU, and the next-hop cache is per CPU.
fn udp_exchange(client_ns: &str) -> Option<String> {
    in_ns(client_ns, || {
        on_cpu0();
        let socket = UdpSocket::bind("10.10.1.2:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        socket.send_to(b"which", "10.10.1.100:53").unwrap();
        let mut buf = [0u8; 64];
        socket
            .recv_from(&mut buf)
            .ok()
            .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .join()
    .unwrap()
}

/// The program caches the FIB's next hop per backend (and per client for the replies). When the
/// backend's (the client's) MAC changes and the
/// appliance's kernel learns it, the cached one is wrong (frames to it are dropped by the
/// backend as not its own) until the cache is marked stale: the rtnetlink watch reports the
/// neighbour change, and after [`Datapath::invalidate_next_hops`] the next packet is resolved
/// again (the daemon's data plane does both on its own).
#[test]
fn next_hop_cache_follows_a_changed_neighbour_needs_root() {
    if !root() {
        return;
    }
    let topo = Topology::new();
    let (a, b) = (topo.appliance.clone(), topo.backend.clone());
    let peers = [(topo.client.clone(), "c0"), (b.clone(), "b0")].map(|(ns, dev)| {
        in_ns(&ns, move || {
            let mut dp = Datapath::load(limits()).unwrap();
            dp.attach(dev, AttachMode::Driver).unwrap();
            dp
        })
        .join()
        .unwrap()
    });
    let (mut appliance, watch) = in_ns(&a, || {
        let mut dp = Datapath::load(limits()).unwrap();
        for dev in ["c1", "b1"] {
            dp.attach(dev, AttachMode::Driver).unwrap();
        }
        (dp, NextHopWatch::open(Duration::from_millis(200)).unwrap())
    })
    .join()
    .unwrap();
    let mut udp_plan = plan(1, &[("10.10.2.2:8080", 1)]);
    if let VipAction::Balance { backends, .. } = &mut udp_plan.vips[1].action {
        backends.truncate(1);
    }
    appliance.apply(&udp_plan).unwrap();
    let neighbour = |mac: &str| {
        let args =
            ["neigh", "replace", "10.10.2.2", "lladdr", mac, "dev", "b1", "nud", "permanent"];
        run(&[&["ip", "-n", a.as_str()][..], &args[..]].concat());
    };
    let b0_mac = run(&["ip", "-n", &b, "-br", "link", "show", "b0"]);
    neighbour(b0_mac.split_whitespace().nth(2).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let servers = backends(&b, stop.clone());
    std::thread::sleep(Duration::from_millis(200));

    assert_eq!(udp_exchange(&topo.client).as_deref(), Some("10.10.2.2:5353"));
    // The backend's MAC changes and the appliance's kernel learns it, but the program still
    // sends to the MAC it cached: a FIB lookup per packet would have found the new one.
    while watch.wait().unwrap() {}
    run(&["ip", "-n", &b, "link", "set", "b0", "address", "02:00:00:00:0b:0b"]);
    neighbour("02:00:00:00:0b:0b");
    assert_eq!(udp_exchange(&topo.client), None, "sent to the cached (old) MAC");
    // The watch reported the change; marking the cache stale makes the program ask again.
    let mut changed = false;
    for _ in 0..25 {
        changed = watch.wait().unwrap();
        if changed {
            break;
        }
    }
    assert!(changed, "no rtnetlink notification for the changed neighbour");
    appliance.invalidate_next_hops().unwrap();
    assert_eq!(udp_exchange(&topo.client).as_deref(), Some("10.10.2.2:5353"));

    // The same for the client, whose next hop the reverse path caches.
    let c = topo.client.clone();
    let client_neighbour = |mac: &str| {
        let args =
            ["neigh", "replace", "10.10.1.2", "lladdr", mac, "dev", "c1", "nud", "permanent"];
        run(&[&["ip", "-n", a.as_str()][..], &args[..]].concat());
    };
    let c0_mac = run(&["ip", "-n", &c, "-br", "link", "show", "c0"]);
    client_neighbour(c0_mac.split_whitespace().nth(2).unwrap());
    while watch.wait().unwrap() {}
    appliance.invalidate_next_hops().unwrap();
    assert_eq!(udp_exchange(&c).as_deref(), Some("10.10.2.2:5353"));
    while watch.wait().unwrap() {}
    run(&["ip", "-n", &c, "link", "set", "c0", "address", "02:00:00:00:0c:0c"]);
    client_neighbour("02:00:00:00:0c:0c");
    assert_eq!(udp_exchange(&c), None, "the reply went to the client's cached (old) MAC");
    let mut changed = false;
    for _ in 0..25 {
        changed = watch.wait().unwrap();
        if changed {
            break;
        }
    }
    assert!(changed, "no rtnetlink notification for the client's changed neighbour");
    appliance.invalidate_next_hops().unwrap();
    assert_eq!(udp_exchange(&c).as_deref(), Some("10.10.2.2:5353"));

    stop.store(true, Ordering::Relaxed);
    servers.join().unwrap();
    drop((appliance, peers));
}
