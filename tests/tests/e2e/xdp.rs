//! The XDP data plane through the real binary, in network namespaces the test creates and
//! removes: a client, two backends and the appliance on one L2 segment (a bridge in a fourth
//! namespace), the appliance attached in driver mode to its one interface. Needs root.
//!
//! Veth facts on this kernel: a frame sent by XDP (`XDP_TX`) into a veth is delivered only
//! when its peer runs an XDP program, so the appliance's bridge port gets one that passes
//! everything (the same program with an empty plan); TX checksum offload is off everywhere
//! or forwarded packets carry partial checksums.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatehouse_tests::Appliance;
use serde_json::Value;

const VIP: &str = "10.10.0.100";
const B1: &str = "10.10.0.3:8080";
const B2: &str = "10.10.0.4:8080";

pub(crate) fn root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root =
        status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        eprintln!("skipped: needs root (network namespaces, XDP)");
    }
    root
}

pub(crate) fn run(cmd: &[&str]) -> String {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().expect("run a command");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// client, appliance, two backends and the L2 segment joining them; removed on drop.
pub(crate) struct Topology {
    pub(crate) lan: String,
    pub(crate) client: String,
    pub(crate) appliance: String,
    pub(crate) backends: [String; 2],
}

impl Topology {
    /// `tag` keeps the namespaces of tests running in parallel apart.
    pub(crate) fn new(tag: &str) -> Topology {
        let id = format!("{tag}{}", std::process::id());
        let t = Topology {
            lan: format!("ghe-lan-{id}"),
            client: format!("ghe-c-{id}"),
            appliance: format!("ghe-a-{id}"),
            backends: [format!("ghe-b1-{id}"), format!("ghe-b2-{id}")],
        };
        let all = [&t.lan, &t.client, &t.appliance, &t.backends[0], &t.backends[1]];
        for ns in all {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&["ip", "-n", &t.lan, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &t.lan, "link", "set", "br0", "up"]);
        let hosts = [
            (&t.appliance, "a0", "la", "10.10.0.1/24"),
            (&t.client, "c0", "lc", "10.10.0.2/24"),
            (&t.backends[0], "b0", "lb1", "10.10.0.3/24"),
            (&t.backends[1], "b0", "lb2", "10.10.0.4/24"),
        ];
        for (ns, dev, port, addr) in hosts {
            run(&[
                "ip", "link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port,
                "netns", &t.lan,
            ]);
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", &t.lan, "link", "set", port, "master", "br0", "up"]);
            run(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
            run(&["ip", "netns", "exec", &t.lan, "ethtool", "-K", port, "tx", "off", "gro", "on"]);
        }
        let a = t.appliance.as_str();
        run(&["ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for key in ["all", "default", "a0"] {
            for setting in [
                format!("net.ipv4.conf.{key}.rp_filter=0"),
                format!("net.ipv4.conf.{key}.send_redirects=0"),
            ] {
                run(&["ip", "netns", "exec", a, "sysctl", "-qw", &setting]);
            }
        }
        // The client learns addresses from gratuitous ARP (the kernel's default ignores them).
        run(&["ip", "netns", "exec", &t.client, "sysctl", "-qw", "net.ipv4.conf.c0.arp_accept=1"]);
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let all = [&self.client, &self.appliance, &self.backends[0], &self.backends[1], &self.lan];
        for ns in all {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub(crate) fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let file = File::open(format!("/run/netns/{ns}")).expect("open the namespace");
    std::thread::spawn(move || {
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// `GET path` on the admin API inside the appliance's namespace; `None` while it is down.
pub(crate) fn admin_get(ns: &str, port: u16, path: &str) -> Option<String> {
    let path = path.to_owned();
    in_ns(ns, move || {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(conn, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).ok()?;
        reply.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    })
    .join()
    .ok()
    .flatten()
}

/// Waits (20 s at most) until `/status` satisfies `pred`.
pub(crate) fn wait_status(appliance: &Appliance, ns: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = admin_get(ns, appliance.admin, "/status")
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or(Value::Null);
        if pred(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "status never matched; last: {status:#}\nlogs:\n{}",
            appliance.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP server on `addr` in namespace `ns` answering every line with its address.
pub(crate) fn backend(ns: &str, addr: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    in_ns(ns, move || {
        let listener = TcpListener::bind(addr).expect("bind the backend");
        listener.set_nonblocking(true).expect("nonblocking");
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => {
                    std::thread::spawn(move || {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
                        let Ok(mut w) = conn.try_clone() else { return };
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
    })
}

fn connect() -> BufReader<TcpStream> {
    let vip: SocketAddr = format!("{VIP}:80").parse().expect("VIP");
    let conn =
        TcpStream::connect_timeout(&vip, Duration::from_secs(3)).expect("connect to the VIP");
    conn.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    BufReader::new(conn)
}

fn ask(conn: &mut BufReader<TcpStream>) -> String {
    writeln!(conn.get_mut(), "which").expect("send");
    let mut line = String::new();
    conn.read_line(&mut line).expect("an answer through the VIP");
    line.trim().to_owned()
}

fn config(w1: u32, w2: u32) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
shutdown_grace_ms = 200

[xdp]
interface = "a0"
mode = "driver"
maglev_table_size = 4099
max_flows = 4096
nat_source_v4 = "10.10.0.254"

[[ipam.pools]]
name = "vips"
ranges = [{{ start = "{VIP}", end = "{VIP}" }}]

[[l4_services]]
name = "echo"
port = 80
backends = [{{ address = "{B1}", weight = {w1} }}, {{ address = "{B2}", weight = {w2} }}]
"#
    )
}

/// An XDP program that passes everything on the appliance's bridge port (see the module doc).
pub(crate) fn pass_on_bridge_port(lan: &str) -> gatehouse_xdp::Datapath {
    in_ns(lan, || {
        let limits =
            gatehouse_xdp::Limits { max_vips: 4, max_backends: 4, ring_size: 13, max_flows: 1024 };
        let mut dp = gatehouse_xdp::Datapath::load(limits).expect("load the peer program");
        dp.attach("la", gatehouse_xdp::AttachMode::Driver).expect("attach to the bridge port");
        dp
    })
    .join()
    .expect("peer program")
}

pub(crate) fn xdp_attached(ns: &str) -> bool {
    run(&["ip", "-n", ns, "-d", "link", "show", "a0"]).contains("prog/xdp")
}

#[test]
fn l4_service_through_xdp_ipam_vip_arp_reload_and_clean_exit_needs_root() {
    if !root() {
        return;
    }
    let topo = Topology::new("l");
    let ns = topo.appliance.clone();
    let _peer = pass_on_bridge_port(&topo.lan);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        backend(&topo.backends[0], B1, stop.clone()),
        backend(&topo.backends[1], B2, stop.clone()),
    ];
    let mut appliance = Appliance::start_in_netns(&ns, &config(1, 3), &[]);
    let status = wait_status(&appliance, &ns, |s| {
        s["xdp"]["applied_generation"].as_u64().is_some_and(|g| g >= 1)
    });
    assert_eq!(status["xdp"]["attached"], true, "{status:#}");
    assert_eq!(status["xdp"]["mode"], "driver", "{status:#}");
    assert!(xdp_attached(&ns));
    let a0_mac = run(&["ip", "-n", &ns, "-br", "link", "show", "a0"])
        .split_whitespace()
        .nth(2)
        .expect("a0's MAC")
        .to_owned();

    // The VIP came from the pool; the gratuitous ARP sent on taking it taught the client
    // before it asked.
    let learned = run(&["ip", "-n", &topo.client, "neigh", "show", VIP]);
    assert!(learned.contains(&a0_mac), "gratuitous ARP: {learned:?} / {a0_mac}");
    run(&["ip", "-n", &topo.client, "neigh", "flush", "dev", "c0"]);

    // Weights 1:3 over 200 connections, answered by both backends; one flow kept open.
    let (answers, kept, first) = in_ns(&topo.client, || {
        let answers: Vec<String> = (0..200).map(|_| ask(&mut connect())).collect();
        let mut kept = connect();
        let first = ask(&mut kept);
        (answers, kept, first)
    })
    .join()
    .expect("client");
    let heavy = answers.iter().filter(|a| *a == B2).count();
    assert!(answers.iter().all(|a| a == B1 || a == B2), "{answers:?}");
    assert!((120..=180).contains(&heavy), "{heavy} of 200 on the weight-3 backend");
    // The client's ARP for the VIP was answered from XDP with the appliance's MAC.
    let neigh = run(&["ip", "-n", &topo.client, "neigh", "show", VIP]);
    assert!(neigh.contains(&a0_mac), "{neigh} / {a0_mac}");

    // Reload: the first backend takes no new connections; the open flow keeps its backend.
    let generation = status["generation"].as_u64().expect("generation");
    appliance
        .write("gatehouse.toml", &config(0, 1).replace("{admin}", &appliance.admin.to_string()));
    wait_status(&appliance, &ns, |s| {
        s["xdp"]["applied_generation"].as_u64().is_some_and(|g| g > generation)
    });
    let (again, new) = in_ns(&topo.client, move || {
        let mut kept = kept;
        let again = ask(&mut kept);
        let new: Vec<String> = (0..30).map(|_| ask(&mut connect())).collect();
        (again, new)
    })
    .join()
    .expect("client");
    assert_eq!(again, first, "the open flow kept its backend across the reload");
    assert!(new.iter().all(|a| a == B2), "weight 0 takes no new flows: {new:?}");

    // Counters on /metrics, read from the per-CPU maps.
    let metrics = admin_get(&ns, appliance.admin, "/metrics").expect("/metrics");
    let value = |needle: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics_ok =
        value(&format!("gatehouse_xdp_vip_packets_total{{vip=\"{VIP}:80/tcp\"}}")) > 0;
    while !metrics_ok && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        let m = admin_get(&ns, appliance.admin, "/metrics").unwrap_or_default();
        metrics_ok =
            m.contains(&format!("gatehouse_xdp_vip_packets_total{{vip=\"{VIP}:80/tcp\"}}"));
    }
    assert!(metrics_ok, "{metrics}");
    assert!(
        value(&format!("gatehouse_xdp_backend_packets_total{{backend=\"{B2}\"}}")) > 0,
        "{metrics}"
    );
    assert!(value("gatehouse_xdp_replies_total{kind=\"arp_reply\"}") >= 1, "{metrics}");
    assert!(value("gatehouse_xdp_replies_total{kind=\"nat_reverse\"}") > 0, "{metrics}");
    assert_eq!(value("gatehouse_xdp_attached"), 1, "{metrics}");

    // Exit: nothing stays attached.
    appliance.signal("TERM");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let exit = rt.block_on(appliance.wait_exit(Duration::from_secs(10)));
    assert!(exit.success(), "{exit:?}\n{}", appliance.logs());
    assert!(!xdp_attached(&ns), "the XDP program outlived the process");
    assert!(appliance.logs().contains("XDP program detached"), "{}", appliance.logs());

    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().expect("backend");
    }
}

#[test]
fn faults_second_appliance_refused_plan_and_interface_loss_needs_root() {
    if !root() {
        return;
    }
    let topo = Topology::new("i");
    let ns = topo.appliance.clone();
    let appliance = Appliance::start_in_netns(&ns, &config(1, 1), &[]);
    wait_status(&appliance, &ns, |s| s["xdp"]["attached"] == true);
    assert!(xdp_attached(&ns));

    // A second appliance on the same interface refuses to start, saying why.
    let mut second = Appliance::start_in_netns(&ns, &config(1, 1), &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let exit = rt.block_on(second.wait_exit(Duration::from_secs(20)));
    assert!(!exit.success());
    assert!(second.logs().contains("already has an XDP program attached"), "{}", second.logs());
    assert!(xdp_attached(&ns), "the first appliance's program stays");

    // A plan XDP refuses (an IPv6 VIP without nat_source_v6) is a status problem; the maps
    // keep the previous generation.
    let before = wait_status(&appliance, &ns, |s| s["xdp"]["applied_generation"].is_u64());
    let applied = before["xdp"]["applied_generation"].as_u64().expect("applied");
    let refused = config(1, 1)
        + "\n[[l4_services]]\nname = \"v6\"\naddress = \"fd00::100\"\nport = 80\n\
           backends = [{ address = \"[fd00::3]:80\" }]\n";
    appliance.write("gatehouse.toml", &refused.replace("{admin}", &appliance.admin.to_string()));
    let status = wait_status(&appliance, &ns, |s| s["xdp"]["last_error"].is_string());
    assert_eq!(status["xdp"]["applied_generation"], applied, "{status:#}");
    let error = status["xdp"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("no IPv6 source address"), "{error}");
    let warnings = status["last_reload"]["warnings"].to_string();
    assert!(warnings.contains("no IPv6 source address"), "{warnings}");

    // The interface goes away (its veth pair with it).
    run(&["ip", "-n", &ns, "link", "del", "a0"]);
    let status = wait_status(&appliance, &ns, |s| s["xdp"]["attached"] == false);
    assert_eq!(status["xdp"]["interface_losses"], 1, "{status:#}");
    let metrics = admin_get(&ns, appliance.admin, "/metrics").expect("/metrics");
    assert!(metrics.contains("gatehouse_xdp_attached 0"), "{metrics}");
    assert!(metrics.contains("gatehouse_xdp_interface_losses_total 1"), "{metrics}");
    assert!(appliance.logs().contains("XDP interface disappeared"), "{}", appliance.logs());

    // It comes back: attached again, without a restart.
    run(&[
        "ip", "link", "add", "a0", "netns", &ns, "type", "veth", "peer", "name", "la", "netns",
        &topo.lan,
    ]);
    run(&["ip", "-n", &ns, "link", "set", "a0", "up"]);
    wait_status(&appliance, &ns, |s| s["xdp"]["attached"] == true);
    assert!(xdp_attached(&ns));
    assert!(appliance.logs().contains("re-attached"), "{}", appliance.logs());
}
