//! Gateway API L4 routes and LoadBalancer Services balanced by XDP, through the real binary,
//! on the namespaces of [`crate::xdp`] (client, appliance, two backends on one bridge; driver
//! mode; created and removed by each test). Needs root.
//!
//! With `[xdp]` on, a TCP or UDP listener with a route is balanced in the kernel on its
//! specific addresses and the user-space L4 proxy does not bind it; a TLS listener stays in
//! user space. A LoadBalancer Service gets an address from the pools, in file mode and in
//! cluster mode, and is balanced over its endpoints.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatehouse_tests::{Appliance, FakeKube};
use serde_json::{Value, json};

use crate::GATEWAY_CLASS;
use crate::xdp::{
    Topology, admin_get, backend, in_ns, pass_on_bridge_port, root, wait_status, xdp_attached,
};

const GATEWAY_VIP: &str = "10.10.0.100";
const SERVICE_VIP: &str = "10.10.0.101";
const TLS_VIP: &str = "10.10.0.102";
const B1: &str = "10.10.0.3:8080";
const B2: &str = "10.10.0.4:8080";
const UDP_BACKEND: &str = "10.10.0.3:9090";
const TLS_BACKEND: &str = "10.10.0.4:8443";

/// The `[xdp]` boot config with a pool holding both VIPs (and IPv6 addresses no NAT source
/// serves: a Gateway asking for one makes XDP refuse the plan).
fn config(sources: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
shutdown_grace_ms = 200
{sources}
[xdp]
interface = "a0"
mode = "driver"
maglev_table_size = 4099
max_flows = 4096
nat_source_v4 = "10.10.0.254"

[[ipam.pools]]
name = "vips"
ranges = [{{ start = "{GATEWAY_VIP}", end = "{TLS_VIP}" }}, {{ start = "fd00::100", end = "fd00::101" }}]
"#
    )
}

/// A UDP server in `ns` answering every datagram with its address.
fn udp_backend(ns: &str, addr: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    in_ns(ns, move || {
        let socket = UdpSocket::bind(addr).expect("bind the UDP backend");
        socket.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(addr.as_bytes(), peer);
            }
        }
    })
}

/// A TCP server in `ns` that reads once (a TLS ClientHello, or part of one) and answers
/// `tls-backend`: what a passthrough route delivers.
fn tls_backend(ns: &str, addr: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    in_ns(ns, move || {
        let listener = std::net::TcpListener::bind(addr).expect("bind the TLS backend");
        listener.set_nonblocking(true).expect("nonblocking");
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = [0u8; 4096];
                    if std::io::Read::read(&mut conn, &mut buf).is_ok_and(|n| n > 0) {
                        let _ = conn.write_all(b"tls-backend");
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// The first flight of a TLS client asking for `sni`.
fn client_hello(sni: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("ClientHello");
    hello
}

/// A ClientHello to `vip`; what comes back before the end of the stream.
fn tls_exchange(vip: SocketAddr, sni: &str) -> String {
    let mut conn = TcpStream::connect_timeout(&vip, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    conn.write_all(&client_hello(sni)).expect("send the ClientHello");
    let mut reply = String::new();
    let _ = std::io::Read::read_to_string(&mut conn, &mut reply);
    reply
}

/// One connection to `vip`: a line out, the backend's address back (`None`: no answer).
fn try_ask(vip: SocketAddr) -> Option<String> {
    let conn = TcpStream::connect_timeout(&vip, Duration::from_secs(3)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut conn = BufReader::new(conn);
    writeln!(conn.get_mut(), "which").ok()?;
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    Some(line.trim().to_owned())
}

fn ask(vip: SocketAddr) -> String {
    try_ask(vip).unwrap_or_else(|| panic!("no answer through {vip}"))
}

/// A datagram to `vip` and the answer, from the VIP's address (asked a few times: a
/// datagram may be lost before the neighbours are known).
fn ask_udp(vip: SocketAddr) -> String {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind the client");
    socket.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        socket.send_to(b"which", vip).expect("send");
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(from, vip, "the answer comes from the VIP (reverse NAT in XDP)");
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    panic!("no UDP answer from {vip}");
}

/// The Gateway (TCP and UDP listeners with routes, a TLS passthrough listener), the routes,
/// and the Services: `echo` of type LoadBalancer over both TCP backends, `dns` over the UDP
/// one. `extra_address` is a second address the Gateway asks for.
fn manifests(extra_address: Option<&str>) -> String {
    let extra = extra_address.map(|a| format!(", {{type: IPAddress, value: \"{a}\"}}"));
    let extra = extra.unwrap_or_default();
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: l4, namespace: default}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: {GATEWAY_VIP}}}{extra}]
  listeners:
  - {{name: tcp, port: 7000, protocol: TCP}}
  - {{name: udp, port: 7001, protocol: UDP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tls, namespace: default}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: {TLS_VIP}}}]
  listeners:
  - {{name: tls, port: 7443, protocol: TLS, tls: {{mode: Passthrough}}}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: echo-tcp, namespace: default}}
spec:
  parentRefs: [{{name: l4, sectionName: tcp}}]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: echo-udp, namespace: default}}
spec:
  parentRefs: [{{name: l4, sectionName: udp}}]
  rules: [{{backendRefs: [{{name: dns, port: 53}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: pass, namespace: default}}
spec:
  parentRefs: [{{name: tls, sectionName: tls}}]
  hostnames: [pass.example.test]
  rules: [{{backendRefs: [{{name: tls-echo, port: 80}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: tls-echo, namespace: default}}
spec:
  ports: [{{name: tls, port: 80, targetPort: 8443, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: tls-echo-1
  namespace: default
  labels: {{kubernetes.io/service-name: tls-echo}}
addressType: IPv4
ports: [{{name: tls, port: 8443, protocol: TCP}}]
endpoints: [{{addresses: ["10.10.0.4"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  type: LoadBalancer
  ports: [{{name: tcp, port: 80, targetPort: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: tcp, port: 8080, protocol: TCP}}]
endpoints: [{{addresses: ["10.10.0.3"]}}, {{addresses: ["10.10.0.4"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: dns, namespace: default}}
spec:
  ports: [{{name: dns, port: 53, targetPort: 9090, protocol: UDP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dns-1
  namespace: default
  labels: {{kubernetes.io/service-name: dns}}
addressType: IPv4
ports: [{{name: dns, port: 9090, protocol: UDP}}]
endpoints: [{{addresses: ["10.10.0.3"]}}]
"#
    ));
    yaml
}

fn object<'a>(status: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    status["objects"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// The listener's `Programmed` condition (status, message).
fn listener_programmed(status: &Value, gateway: &str, listener: &str) -> Option<(String, String)> {
    let listeners = object(status, "Gateway", gateway)?["status"]["listeners"].as_array()?;
    let listener = listeners.iter().find(|l| l["name"] == listener)?;
    let condition =
        listener["conditions"].as_array()?.iter().find(|c| c["type"] == "Programmed")?;
    Some((
        condition["status"].as_str()?.to_owned(),
        condition["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

fn all_programmed(status: &Value) -> bool {
    [("l4", "tcp"), ("l4", "udp"), ("tls", "tls")]
        .iter()
        .all(|(g, l)| listener_programmed(status, g, l).is_some_and(|(s, _)| s == "True"))
}

/// A counter's value on `/metrics` (0 when absent).
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The `addr` fields of the L4 proxy's "L4 listener bound" log lines.
fn user_space_binds(logs: &str) -> Vec<String> {
    logs.lines()
        .filter(|l| l.contains("L4 listener bound"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let addr = v["fields"]["addr"].as_str().or(v["addr"].as_str())?.to_owned();
            Some(addr)
        })
        .collect()
}

#[test]
fn tcp_and_udp_routes_and_a_load_balancer_service_through_xdp_needs_root() {
    if !root() {
        return;
    }
    let topo = Topology::new("r");
    let ns = topo.appliance.clone();
    let _peer = pass_on_bridge_port(&topo.lan);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        backend(&topo.backends[0], B1, stop.clone()),
        backend(&topo.backends[1], B2, stop.clone()),
        udp_backend(&topo.backends[0], UDP_BACKEND, stop.clone()),
        tls_backend(&topo.backends[1], TLS_BACKEND, stop.clone()),
    ];
    // The TLS listener is served by a socket in user space: the kernel delivers to it only
    // what it routes as local, so the appliance adds a local route for its address (and none
    // for the XDP VIPs: the kernel drops forwarded packets from a local address, such as
    // full-NAT replies, docs/l4.md).
    let config = config("[gateway_api]\nmanifests = [\"manifests\"]\n");
    let manifests_v4 = manifests(None);
    let mut appliance =
        Appliance::start_in_netns(&ns, &config, &[("manifests/l4.yaml", &manifests_v4)]);
    let status = wait_status(&appliance, &ns, |s| {
        s["xdp"]["applied_generation"].as_u64().is_some_and(|g| g >= 1) && all_programmed(s)
    });
    assert!(xdp_attached(&ns));
    // The user-space listener's address got a local route of the appliance's; the XDP VIPs
    // did not.
    let ours =
        || crate::xdp::run(&["ip", "-n", &ns, "route", "show", "table", "local", "proto", "157"]);
    let local = ours();
    assert!(local.contains(&format!("local {TLS_VIP} dev lo")), "{local}");
    assert!(!local.contains(GATEWAY_VIP) && !local.contains(SERVICE_VIP), "{local}");
    let service = object(&status, "Service", "echo").expect("the Service's status");
    assert_eq!(service["status"]["loadBalancer"]["ingress"][0]["ip"], SERVICE_VIP, "{status:#}");
    for route in ["echo-tcp", "echo-udp", "pass"] {
        let kind = match route {
            "echo-tcp" => "TCPRoute",
            "echo-udp" => "UDPRoute",
            _ => "TLSRoute",
        };
        let route = object(&status, kind, route).expect("the route's status");
        let accepted = &route["status"]["parents"][0]["conditions"][0];
        assert_eq!((&accepted["type"], &accepted["status"]), (&json!("Accepted"), &json!("True")));
    }

    // The TCP route, the UDP route and the LoadBalancer Service, balanced in the kernel.
    let gateway_tcp: SocketAddr = format!("{GATEWAY_VIP}:7000").parse().expect("VIP");
    let gateway_udp: SocketAddr = format!("{GATEWAY_VIP}:7001").parse().expect("VIP");
    let service_tcp: SocketAddr = format!("{SERVICE_VIP}:80").parse().expect("VIP");
    let gateway_tls: SocketAddr = format!("{TLS_VIP}:7443").parse().expect("VIP");
    let (route_answers, service_answers) = in_ns(&topo.client, move || {
        let route: Vec<Option<String>> = (0..60).map(|_| try_ask(gateway_tcp)).collect();
        let service: Vec<Option<String>> = (0..60).map(|_| try_ask(service_tcp)).collect();
        (route, service)
    })
    .join()
    .expect("client");
    let dump = || {
        format!(
            "{}\n{}\n{}",
            admin_get(&ns, appliance.admin, "/status").unwrap_or_default(),
            admin_get(&ns, appliance.admin, "/metrics").unwrap_or_default(),
            appliance.logs()
        )
    };
    let route_answers: Vec<String> =
        route_answers.into_iter().map(|a| a.unwrap_or_else(|| panic!("{}", dump()))).collect();
    let service_answers: Vec<String> =
        service_answers.into_iter().map(|a| a.unwrap_or_else(|| panic!("{}", dump()))).collect();
    let (udp_answer, tls_answer) = in_ns(&topo.client, move || {
        (ask_udp(gateway_udp), tls_exchange(gateway_tls, "pass.example.test"))
    })
    .join()
    .expect("client");
    for answers in [&route_answers, &service_answers] {
        assert!(answers.iter().all(|a| a == B1 || a == B2), "{answers:?}");
        assert!(answers.iter().any(|a| a == B1) && answers.iter().any(|a| a == B2), "{answers:?}");
    }
    assert_eq!(udp_answer, UDP_BACKEND);
    assert_eq!(tls_answer, "tls-backend", "TLS passthrough in user space beside XDP");

    // XDP served them, not the user-space proxy: it bound the TLS listener only.
    let metrics = admin_get(&ns, appliance.admin, "/metrics").expect("/metrics");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut metrics = metrics;
    while metric(
        &metrics,
        &format!("gatehouse_xdp_vip_packets_total{{vip=\"{GATEWAY_VIP}:7001/udp\"}}"),
    ) == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        metrics = admin_get(&ns, appliance.admin, "/metrics").unwrap_or_default();
    }
    for vip in [
        format!("{GATEWAY_VIP}:7000/tcp"),
        format!("{GATEWAY_VIP}:7001/udp"),
        format!("{SERVICE_VIP}:80/tcp"),
    ] {
        let packets =
            metric(&metrics, &format!("gatehouse_xdp_vip_packets_total{{vip=\"{vip}\"}}"));
        assert!(packets > 0, "no packets counted for {vip}:\n{metrics}");
    }
    // The user-space proxy counted the TLS connection only.
    assert_eq!(metric(&metrics, "gatehouse_l4_connections_total"), 1, "{metrics}");
    let binds = user_space_binds(&appliance.logs());
    assert_eq!(binds, [format!("{TLS_VIP}:7443")], "{}", appliance.logs());

    // A Gateway address XDP cannot serve (IPv6 without nat_source_v6): XDP refuses the plan,
    // the listeners it was to balance are not Programmed and say why; the previous plan keeps
    // serving the IPv4 VIP.
    appliance.write("manifests/l4.yaml", &manifests(Some("fd00::100")));
    let status = wait_status(&appliance, &ns, |s| {
        listener_programmed(s, "l4", "tcp").is_some_and(|(s, _)| s == "False")
    });
    for listener in ["tcp", "udp"] {
        let (programmed, message) = listener_programmed(&status, "l4", listener).expect("listener");
        assert_eq!(programmed, "False", "{status:#}");
        assert!(message.contains("no IPv6 source address"), "{message}");
    }
    assert_eq!(listener_programmed(&status, "tls", "tls").map(|(s, _)| s), Some("True".to_owned()));
    assert!(status["xdp"]["last_error"].is_string(), "{status:#}");
    let again = in_ns(&topo.client, move || ask(gateway_tcp)).join().expect("client");
    assert!(again == B1 || again == B2, "{again}");

    // Back to IPv4 only: programmed again.
    appliance.write("manifests/l4.yaml", &manifests_v4);
    wait_status(&appliance, &ns, all_programmed);

    // The interface goes away: what XDP serves is not programmed until it is back; the
    // user-space TLS listener stays programmed.
    crate::xdp::run(&["ip", "-n", &ns, "link", "del", "a0"]);
    let status = wait_status(&appliance, &ns, |s| {
        listener_programmed(s, "l4", "udp").is_some_and(|(s, _)| s == "False")
    });
    let (_, message) = listener_programmed(&status, "l4", "tcp").expect("listener");
    assert!(message.contains("XDP interface a0 is gone"), "{message}");
    assert_eq!(listener_programmed(&status, "tls", "tls").map(|(s, _)| s), Some("True".into()));
    crate::xdp::run(&[
        "ip", "link", "add", "a0", "netns", &ns, "type", "veth", "peer", "name", "la", "netns",
        &topo.lan,
    ]);
    crate::xdp::run(&["ip", "-n", &ns, "link", "set", "a0", "up"]);
    wait_status(&appliance, &ns, |s| s["xdp"]["attached"] == true && all_programmed(s));

    appliance.signal("TERM");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let exit = rt.block_on(appliance.wait_exit(Duration::from_secs(10)));
    assert!(exit.success(), "{exit:?}\n{}", appliance.logs());
    assert!(!xdp_attached(&ns), "the XDP program outlived the process");
    assert_eq!(ours(), "", "the local routes outlived the process");
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().expect("backend");
    }
}

#[test]
fn load_balancer_service_from_the_cluster_through_xdp_with_its_status_written_needs_root() {
    if !root() {
        return;
    }
    let topo = Topology::new("k");
    let ns = topo.appliance.clone();
    let _peer = pass_on_bridge_port(&topo.lan);
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        backend(&topo.backends[0], B1, stop.clone()),
        backend(&topo.backends[1], B2, stop.clone()),
    ];
    // The fake API server listens on the appliance namespace's loopback: the socket is made
    // on a thread inside it; the runtime's workers serve it from anywhere.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = rt.handle().clone();
    let kube = in_ns(&ns, move || handle.block_on(FakeKube::start())).join().expect("fake kube");
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "echo", "namespace": "default",
                            "creationTimestamp": "2026-01-01T00:00:00Z"},
               "spec": {"type": "LoadBalancer",
                        "ports": [{"name": "tcp", "port": 80, "targetPort": 8080,
                                   "protocol": "TCP"}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "echo-1", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "echo"}},
               "addressType": "IPv4",
               "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"}],
               "endpoints": [{"addresses": ["10.10.0.3"]}, {"addresses": ["10.10.0.4"]}]}),
    ];
    for object in objects {
        rt.block_on(kube.apply(object));
    }
    let config = config("[kubernetes]\nkubeconfig = \"kubeconfig\"\n");
    let mut appliance =
        Appliance::start_in_netns(&ns, &config, &[("kubeconfig", &kube.kubeconfig())]);

    // The leader writes the address the pool gave (the first one: no Gateway asks here).
    let path = "/api/v1/namespaces/default/services/echo/status";
    let deadline = Instant::now() + Duration::from_secs(30);
    let vip = loop {
        let patches = rt.block_on(kube.patches());
        let written = patches
            .iter()
            .filter(|p| p.path == path && p.answered == 200)
            .filter_map(|p| p.body["status"]["loadBalancer"]["ingress"][0]["ip"].as_str())
            .next_back()
            .map(str::to_owned);
        if let Some(ip) = written {
            break ip;
        }
        assert!(
            Instant::now() < deadline,
            "no Service status written: {patches:#?}\nlogs:\n{}",
            appliance.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(vip, GATEWAY_VIP, "the pool's first address");
    wait_status(&appliance, &ns, |s| {
        s["xdp"]["applied_generation"].as_u64().is_some_and(|g| g >= 1)
            && s["xdp"]["last_error"].is_null()
    });

    let service_tcp: SocketAddr = format!("{vip}:80").parse().expect("VIP");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The plan with the Service's endpoints may land a reload after the address.
    let answers = loop {
        let answers = in_ns(&topo.client, move || {
            (0..60).map(|_| try_ask(service_tcp).unwrap_or_default()).collect::<Vec<String>>()
        })
        .join()
        .expect("client");
        if answers.iter().all(|a| a == B1 || a == B2) || Instant::now() > deadline {
            break answers;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(answers.iter().all(|a| a == B1 || a == B2), "{answers:?}\n{}", appliance.logs());
    assert!(answers.iter().any(|a| a == B1) && answers.iter().any(|a| a == B2), "{answers:?}");

    // An endpoint leaves: new connections go to the other one only (a connection opened
    // while the plan changes may be reset: its backend went away under it).
    rt.block_on(kube.apply(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "echo-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "echo"}},
        "addressType": "IPv4",
        "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.10.0.4"]}]})));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answers = in_ns(&topo.client, move || {
            (0..20).map(|_| try_ask(service_tcp)).collect::<Vec<Option<String>>>()
        })
        .join()
        .expect("client");
        if answers.iter().all(|a| a.as_deref() == Some(B2)) {
            break;
        }
        assert!(Instant::now() < deadline, "B1 still chosen: {answers:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    appliance.signal("TERM");
    let exit = rt.block_on(appliance.wait_exit(Duration::from_secs(10)));
    assert!(exit.success(), "{exit:?}\n{}", appliance.logs());
    assert!(!xdp_attached(&ns), "the XDP program outlived the process");
    kube.stop();
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().expect("backend");
    }
}

/// A two-armed appliance: clients on one interface, backends on another, no bridge.
struct TwoArmed {
    client: String,
    appliance: String,
    backend: String,
}

impl TwoArmed {
    fn new() -> TwoArmed {
        let id = std::process::id();
        let t = TwoArmed {
            client: format!("ghe2-c-{id}"),
            appliance: format!("ghe2-a-{id}"),
            backend: format!("ghe2-b-{id}"),
        };
        for ns in [&t.client, &t.appliance, &t.backend] {
            crate::xdp::run(&["ip", "netns", "add", ns]);
            crate::xdp::run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let links = [
            (&t.client, "c0", "c1", &["10.20.1.2/24"][..], "10.20.1.1/24"),
            (&t.backend, "b0", "b1", &["10.20.2.2/24", "10.20.2.3/24"][..], "10.20.2.1/24"),
        ];
        for (ns, dev, arm, addrs, arm_addr) in links {
            crate::xdp::run(&[
                "ip",
                "link",
                "add",
                dev,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                arm,
                "netns",
                &t.appliance,
            ]);
            for addr in addrs {
                crate::xdp::run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            }
            crate::xdp::run(&["ip", "-n", &t.appliance, "addr", "add", arm_addr, "dev", arm]);
            for (n, d) in [(ns.as_str(), dev), (t.appliance.as_str(), arm)] {
                crate::xdp::run(&["ip", "-n", n, "link", "set", d, "up"]);
                crate::xdp::run(&["ip", "netns", "exec", n, "ethtool", "-K", d, "tx", "off"]);
            }
        }
        let a = t.appliance.as_str();
        crate::xdp::run(&["ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for key in ["all", "default", "c1", "b1"] {
            let setting = format!("net.ipv4.conf.{key}.rp_filter=0");
            crate::xdp::run(&["ip", "netns", "exec", a, "sysctl", "-qw", &setting]);
        }
        t
    }
}

impl Drop for TwoArmed {
    fn drop(&mut self) {
        for ns in [&self.client, &self.appliance, &self.backend] {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// An XDP program that passes everything on `dev` in `ns` (veth delivers redirected frames
/// only to a peer that runs one).
fn pass_on(ns: &str, dev: &'static str) -> gatehouse_xdp::Datapath {
    in_ns(ns, move || {
        let limits =
            gatehouse_xdp::Limits { max_vips: 4, max_backends: 4, ring_size: 13, max_flows: 1024 };
        let mut dp = gatehouse_xdp::Datapath::load(limits).expect("load the peer program");
        dp.attach(dev, gatehouse_xdp::AttachMode::Driver).expect("attach to the peer");
        dp
    })
    .join()
    .expect("peer program")
}

#[test]
fn two_armed_appliance_balances_from_one_interface_to_the_other_needs_root() {
    if !root() {
        return;
    }
    let topo = TwoArmed::new();
    let ns = topo.appliance.clone();
    let _peers = [pass_on(&topo.client, "c0"), pass_on(&topo.backend, "b0")];
    let stop = Arc::new(AtomicBool::new(false));
    let servers = [
        backend(&topo.backend, "10.20.2.2:8080", stop.clone()),
        backend(&topo.backend, "10.20.2.3:8080", stop.clone()),
    ];
    // A LoadBalancer Service from a manifest: its address from the pool on the client side.
    let config = r#"
[admin]
listen = "127.0.0.1:{admin}"
[runtime]
shutdown_grace_ms = 200
[gateway_api]
manifests = ["manifests"]
[xdp]
interfaces = ["c1", "b1"]
mode = "driver"
maglev_table_size = 4099
max_flows = 4096
nat_source_v4 = "10.20.2.254"

[[ipam.pools]]
name = "client-side"
cidrs = ["10.20.1.100/31"]
"#;
    let service = r#"apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  type: LoadBalancer
  ports: [{name: tcp, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {kubernetes.io/service-name: echo}
addressType: IPv4
ports: [{name: tcp, port: 8080, protocol: TCP}]
endpoints: [{addresses: ["10.20.2.2"]}, {addresses: ["10.20.2.3"]}]
"#;
    let mut appliance = Appliance::start_in_netns(&ns, config, &[("manifests/echo.yaml", service)]);
    let status = wait_status(&appliance, &ns, |s| {
        s["xdp"]["applied_generation"].as_u64().is_some_and(|g| g >= 1)
            && object(s, "Service", "echo").is_some()
    });
    let service = object(&status, "Service", "echo").expect("the Service's status");
    assert_eq!(service["status"]["loadBalancer"]["ingress"][0]["ip"], "10.20.1.100");
    assert_eq!(status["xdp"]["interfaces"], json!(["c1", "b1"]), "{status:#}");
    assert_eq!(
        (&status["xdp"]["attached"], &status["xdp"]["mode"]),
        (&json!(true), &json!("driver"))
    );
    let attached = |dev: &str| {
        crate::xdp::run(&["ip", "-n", &ns, "-d", "link", "show", dev]).contains("prog/xdp")
    };
    assert!(attached("c1") && attached("b1"));

    // The client's ARP for the VIP is answered on c1, the backends' for the NAT source on b1.
    let vip: SocketAddr = "10.20.1.100:80".parse().expect("VIP");
    let answers = in_ns(&topo.client, move || (0..40).map(|_| ask(vip)).collect::<Vec<String>>())
        .join()
        .expect("client");
    assert!(answers.iter().all(|a| a == "10.20.2.2:8080" || a == "10.20.2.3:8080"), "{answers:?}");
    assert!(answers.iter().any(|a| a == "10.20.2.2:8080"), "{answers:?}");
    assert!(answers.iter().any(|a| a == "10.20.2.3:8080"), "{answers:?}");

    // One arm lost: the status says which, the other stays attached.
    crate::xdp::run(&["ip", "-n", &ns, "link", "del", "b1"]);
    let status = wait_status(&appliance, &ns, |s| s["xdp"]["attached"] == false);
    assert_eq!(status["xdp"]["missing"], json!(["b1"]), "{status:#}");
    assert!(attached("c1"));

    appliance.signal("TERM");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let exit = rt.block_on(appliance.wait_exit(Duration::from_secs(10)));
    assert!(exit.success(), "{exit:?}\n{}", appliance.logs());
    assert!(!attached("c1"), "the XDP program outlived the process");
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().expect("backend");
    }
}
