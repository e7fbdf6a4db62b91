//! LB-IPAM in file mode: Gateways and LoadBalancer Services get addresses from
//! `[[ipam.pools]]`, keep them across reloads and restarts, and report what they cannot get.

use std::path::Path;
use std::time::Duration;

use gatehouse_tests::{Appliance, Client, EchoBackend, free_port};
use serde_json::Value;

use crate::{GATEWAY_CLASS, service};

fn config(state_dir: &Path, pools: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
shutdown_grace_ms = 1000
state_dir = "{}"
[gateway_api]
manifests = ["manifests"]
{pools}
"#,
        state_dir.display()
    )
}

const LOOPBACK_POOL: &str = r#"
[[ipam.pools]]
name = "loopback"
cidrs = ["127.0.10.0/29"]
"#;

/// A Gateway with one HTTP listener on `port`; `address` is requested when given.
fn gateway(name: &str, port: u16, address: Option<&str>) -> String {
    let addresses = address
        .map(|a| format!("  addresses:\n  - type: IPAddress\n    value: {a}\n"))
        .unwrap_or_default();
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: default
spec:
  gatewayClassName: gatehouse
{addresses}  listeners:
  - name: http
    port: {port}
    protocol: HTTP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: default
spec:
  parentRefs:
  - name: {name}
  rules:
  - backendRefs:
    - name: echo
      port: 80
"#
    )
}

fn manifests(echo_port: u16, gateways: &[String]) -> String {
    let mut out = GATEWAY_CLASS.to_owned();
    out.push_str(service("echo", "default", echo_port).trim_start_matches("---\n"));
    for g in gateways {
        out.push_str(g);
    }
    out
}

fn object<'a>(status: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    status["objects"]
        .as_array()?
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// `(status, reason)` of a condition of a Gateway in `/status`.
fn condition(status: &Value, gateway: &str, type_: &str) -> Option<(String, String)> {
    let conditions = object(status, "Gateway", gateway)?["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == type_)?;
    Some((c["status"].as_str()?.to_owned(), c["reason"].as_str()?.to_owned()))
}

fn addresses(status: &Value, gateway: &str) -> Vec<String> {
    object(status, "Gateway", gateway)
        .and_then(|g| g["status"]["addresses"].as_array())
        .map(|list| list.iter().filter_map(|a| a["value"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn programmed(status: &Value, gateway: &str) -> bool {
    condition(status, gateway, "Programmed") == Some(("True".into(), "Programmed".into()))
}

async fn get_backend(url: &str) -> Option<String> {
    let reply = Client::http1().get(url).await.ok()?;
    (reply.status == 200).then(|| reply.backend().map(str::to_owned)).flatten()
}

#[tokio::test]
async fn a_gateway_without_addresses_gets_one_from_a_pool_and_keeps_it_across_a_restart() {
    let echo = EchoBackend::start("echo").await;
    let state = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());

    let yaml = manifests(echo.port(), &[gateway("b", port_b, None)]);
    let mut gh = Appliance::start_ready(
        &config(state.path(), LOOPBACK_POOL),
        &[("manifests/all.yaml", &yaml)],
    )
    .await;
    let status = gh.wait_status(|s| programmed(s, "b")).await;
    assert_eq!(addresses(&status, "b"), ["127.0.10.1"]);
    let url = format!("http://127.0.10.1:{port_b}/");
    assert_eq!(get_backend(&url).await.as_deref(), Some("echo"));
    let stored = std::fs::read_to_string(state.path().join("ipam.json")).unwrap();
    assert!(stored.contains("127.0.10.1"), "{stored}");
    gh.signal("TERM");
    let exit = gh.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}; logs:\n{}", gh.logs());
    drop(gh);

    // After the restart Gateway "a" appears; it ranks before "b" (same age, name order) and
    // would take 127.0.10.1 from a fresh allocation, but "b" keeps what it had.
    let yaml = manifests(echo.port(), &[gateway("a", port_a, None), gateway("b", port_b, None)]);
    let gh = Appliance::start_ready(
        &config(state.path(), LOOPBACK_POOL),
        &[("manifests/all.yaml", &yaml)],
    )
    .await;
    let status = gh.wait_status(|s| programmed(s, "a") && programmed(s, "b")).await;
    assert_eq!(addresses(&status, "b"), ["127.0.10.1"]);
    assert_eq!(addresses(&status, "a"), ["127.0.10.2"]);
    assert_eq!(get_backend(&url).await.as_deref(), Some("echo"));
    let url_a = format!("http://127.0.10.2:{port_a}/");
    assert_eq!(get_backend(&url_a).await.as_deref(), Some("echo"));
}

#[tokio::test]
async fn a_reload_keeps_addresses() {
    let echo = EchoBackend::start("echo").await;
    let (port_a, port_m) = (free_port(), free_port());
    let yaml = manifests(echo.port(), &[gateway("m", port_m, None)]);
    let gh = Appliance::start_ready(
        &config(Path::new("state"), LOOPBACK_POOL),
        &[("manifests/all.yaml", &yaml)],
    )
    .await;
    let status = gh.wait_status(|s| programmed(s, "m")).await;
    assert_eq!(addresses(&status, "m"), ["127.0.10.1"]);
    let generation = status["generation"].as_u64().unwrap();

    gh.write(
        "manifests/all.yaml",
        &manifests(echo.port(), &[gateway("a", port_a, None), gateway("m", port_m, None)]),
    );
    let status =
        gh.wait_status(|s| s["generation"].as_u64() > Some(generation) && programmed(s, "a")).await;
    assert_eq!(addresses(&status, "m"), ["127.0.10.1"]);
    assert_eq!(addresses(&status, "a"), ["127.0.10.2"]);
    let url = format!("http://127.0.10.1:{port_m}/");
    assert_eq!(get_backend(&url).await.as_deref(), Some("echo"));
}

#[tokio::test]
async fn exhaustion_and_addresses_outside_every_pool_are_gateway_conditions() {
    let echo = EchoBackend::start("echo").await;
    let pools = r#"
[[ipam.pools]]
name = "one"
ranges = [{ start = "127.0.11.1", end = "127.0.11.1" }]

[[ipam.pools]]
name = "manual"
cidrs = ["127.0.11.4/31"]
auto_assign = false
"#;
    let lb_service = r#"---
apiVersion: v1
kind: Service
metadata:
  name: dns
  namespace: default
  annotations:
    lbipam.cilium.io/ips: "127.0.11.5"
spec:
  type: LoadBalancer
  ports:
  - port: 53
    protocol: UDP
"#;
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let yaml = manifests(
        echo.port(),
        &[
            gateway("first", p1, None),
            gateway("second", p2, None),
            gateway("outside", p3, Some("127.0.0.1")),
            lb_service.to_owned(),
        ],
    );
    let gh = Appliance::start_ready(
        &config(Path::new("state"), pools),
        &[("manifests/all.yaml", &yaml)],
    )
    .await;
    let status = gh.wait_status(|s| programmed(s, "first")).await;
    assert_eq!(addresses(&status, "first"), ["127.0.11.1"]);

    let expect = |kind: &str, reason: &str| Some((kind.to_owned(), reason.to_owned()));
    assert_eq!(condition(&status, "second", "Accepted"), expect("True", "Accepted"));
    assert_eq!(condition(&status, "second", "Programmed"), expect("False", "AddressNotAssigned"));
    assert!(addresses(&status, "second").is_empty());
    assert_eq!(condition(&status, "outside", "Accepted"), expect("False", "UnsupportedAddress"));
    assert_eq!(condition(&status, "outside", "Programmed"), expect("False", "Invalid"));

    let dns = object(&status, "Service", "dns").expect("Service status");
    assert_eq!(dns["status"]["loadBalancer"]["ingress"][0]["ip"], "127.0.11.5");
    // Nothing was bound for the gateways without an address.
    assert!(Client::http1().get(&format!("http://127.0.0.1:{p3}/")).await.is_err());
}

#[tokio::test]
async fn pool_addresses_not_on_any_interface_are_bound_with_freebind() {
    let echo = EchoBackend::start("echo").await;
    // TEST-NET-1: on no interface here. Only a listening socket is bound; no packet leaves.
    // The host's routing is left alone: local routes are tested in a namespace of their own
    // (`local_routes_make_pool_addresses_reachable_needs_root`).
    let pool = "[[ipam.pools]]\nname = \"unrouted\"\ncidrs = [\"192.0.2.0/30\"]\n";
    let yaml = manifests(echo.port(), &[gateway("far", free_port(), None)]);
    let config = config(Path::new("state"), pool)
        .replace("[runtime]\n", "[runtime]\nlocal_routes = false\n");
    let gh = Appliance::start_ready(&config, &[("manifests/all.yaml", &yaml)]).await;
    let status = gh.wait_status(|s| condition(s, "far", "Programmed").is_some()).await;
    assert_eq!(addresses(&status, "far"), ["192.0.2.1"]);
    assert!(programmed(&status, "far"), "{status:#}");
}

#[tokio::test]
async fn native_gateways_and_load_balancer_services_get_pool_addresses() {
    let echo = EchoBackend::start("echo").await;
    let (port_web, port_late) = (free_port(), free_port());
    // Three addresses: the Service takes one by choice, "web" the next, "late" none is left
    // after "reserved" (named, inside the pool) keeps its own.
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"
[gateway_api]
manifests = ["manifests"]

[[ipam.pools]]
name = "small"
ranges = [{{ start = "127.0.12.1", end = "127.0.12.3" }}]

[[gateways]]
name = "web"
  [[gateways.listeners]]
  name = "http"
  port = {port_web}
  protocol = "HTTP"

[[gateways]]
name = "reserved"
addresses = ["127.0.12.3"]
  [[gateways.listeners]]
  name = "http"
  port = {}
  protocol = "HTTP"

[[gateways]]
name = "zz-late"
  [[gateways.listeners]]
  name = "http"
  port = {port_late}
  protocol = "HTTP"

[[routes]]
name = "app"
parents = ["web"]
  [[routes.rules]]
  backends = [{{ address = "127.0.0.1:{}" }}]
"#,
        free_port(),
        echo.port()
    );
    let lb_service = r#"apiVersion: v1
kind: Service
metadata:
  name: dns
  namespace: default
spec:
  type: LoadBalancer
  ports:
  - port: 53
    protocol: UDP
"#;
    let gh = Appliance::start_ready(&config, &[("manifests/svc.yaml", lb_service)]).await;
    let status = gh.wait_status(|s| object(s, "Service", "dns").is_some()).await;
    // "default" ranks before "toml": the Service chose first.
    let dns = object(&status, "Service", "dns").unwrap();
    assert_eq!(dns["status"]["loadBalancer"]["ingress"][0]["ip"], "127.0.12.1");
    assert_eq!(addresses(&status, "web"), ["127.0.12.2"]);
    assert_eq!(addresses(&status, "reserved"), ["127.0.12.3"]);
    assert!(addresses(&status, "zz-late").is_empty());
    assert_eq!(
        condition(&status, "zz-late", "Programmed"),
        Some(("False".into(), "AddressNotAssigned".into()))
    );
    let warnings = status["last_reload"]["warnings"].to_string();
    assert!(warnings.contains("zz-late") && warnings.contains("no free address"), "{warnings}");
    let url = format!("http://127.0.12.2:{port_web}/");
    assert_eq!(get_backend(&url).await.as_deref(), Some("echo"));
}

/// `GET /` from namespace `ns` to `addr`: the status line, or `None` when nothing answers.
fn get_from_ns(ns: &str, addr: std::net::SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    crate::xdp::in_ns(ns, move || {
        let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(conn, "GET / HTTP/1.0\r\nHost: web\r\n\r\n").ok()?;
        let mut reply = String::new();
        conn.read_to_string(&mut reply).ok()?;
        reply.lines().next().map(str::to_owned)
    })
    .join()
    .ok()
    .flatten()
}

#[test]
fn local_routes_make_pool_addresses_reachable_needs_root() {
    use crate::xdp::{Topology, admin_get, in_ns, root, run, wait_status};
    if !root() {
        return;
    }
    // The appliance's namespace on a LAN with a client; no XDP: the client routes the pool to
    // the appliance, and the proxy's listener binds the pool address with IP_FREEBIND.
    let topo = Topology::new("lr");
    let ns = topo.appliance.clone();
    run(&["ip", "-n", &topo.client, "route", "add", "10.20.9.0/29", "via", "10.10.0.1"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = rt.handle().clone();
    // The backend listens on the appliance namespace's loopback.
    let echo = in_ns(&ns, move || handle.block_on(EchoBackend::start("echo")))
        .join()
        .expect("echo backend");
    let port = 8080;
    let pool = "[[ipam.pools]]\nname = \"lan\"\ncidrs = [\"10.20.9.0/29\"]\n";
    let config = config(Path::new("state"), pool);
    let yaml = manifests(echo.port(), &[gateway("web", port, None)]);
    let mut gh = Appliance::start_in_netns(&ns, &config, &[("manifests/all.yaml", &yaml)]);
    let status = wait_status(&gh, &ns, |s| programmed(s, "web"));
    let address = addresses(&status, "web").pop().expect("an address from the pool");
    let ours = || run(&["ip", "-n", &ns, "route", "show", "table", "local", "proto", "157"]);
    assert!(ours().contains(&format!("local {address} dev lo")), "{}", ours());
    let target: std::net::SocketAddr = format!("{address}:{port}").parse().expect("address");
    let answer = get_from_ns(&topo.client, target);
    assert!(answer.as_deref().is_some_and(|l| l.contains(" 200 ")), "{answer:?}\n{}", gh.logs());

    // Turned off: the appliance removes its route (the operator routes the address himself).
    let generation = status["generation"].as_u64().expect("generation");
    let admin = gh.admin.to_string();
    let off = config.replace("[runtime]\n", "[runtime]\nlocal_routes = false\n");
    gh.write("gatehouse.toml", &off.replace("{admin}", &admin));
    wait_status(&gh, &ns, |s| s["generation"].as_u64().is_some_and(|g| g > generation));
    assert_eq!(ours(), "");
    // On again, then the appliance stops: the route goes with it.
    gh.write("gatehouse.toml", &config.replace("{admin}", &admin));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ours().contains(&address) {
        assert!(std::time::Instant::now() < deadline, "the route never came back:\n{}", gh.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = get_from_ns(&topo.client, target);
    assert!(answer.as_deref().is_some_and(|l| l.contains(" 200 ")), "{answer:?}");
    assert!(admin_get(&ns, gh.admin, "/readyz").is_some());
    gh.signal("TERM");
    let exit = rt.block_on(gh.wait_exit(Duration::from_secs(10)));
    assert!(exit.success(), "{exit:?}\n{}", gh.logs());
    assert_eq!(ours(), "", "the local route outlived the process");
}
