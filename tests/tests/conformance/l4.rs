//! GATEWAY-TCP, GATEWAY-UDP and GATEWAY-TLS: TCPRoute, UDPRoute and TLSRoute (Passthrough,
//! Terminate, Mixed) against one real `gatehouse` per profile, with TCP/UDP echo peers and TLS
//! backends holding certificates of their own CA, all on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_tests::{Appliance, TestCa, free_port};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::{
    Case, GATEWAY_API_CONFIG, GATEWAY_CLASS, Outcome, case, condition, ensure, ensure_eq,
    expect_route_condition, namespace, object, run_profile,
};

/// Bounds every network step of a case.
const STEP: Duration = Duration::from_secs(10);

/// A TCP peer: reads to the client's end of stream, replies `<name>:<bytes>`, closes.
async fn tcp_peer(name: &'static str) -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).await.is_ok() {
                    let mut reply = format!("{name}:").into_bytes();
                    reply.extend_from_slice(&got);
                    let _ = stream.write_all(&reply).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    Ok(port)
}

/// A UDP peer replying `<name>:<datagram>`.
async fn udp_peer(name: &'static str) -> Result<u16, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = socket.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    Ok(port)
}

/// A TLS peer for `host` with a certificate of `ca`: replies `<name>:<first chunk>`.
async fn tls_peer(ca: &TestCa, host: &str, name: &'static str) -> Result<u16, String> {
    let (chain, key) = ca.leaf(&[host]);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let mut buf = vec![0u8; 1024];
                let Ok(n) = tls.read(&mut buf).await else { return };
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = tls.write_all(&reply).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(port)
}

/// A Service `namespace/name` (port 80, `protocol`) with one endpoint at 127.0.0.1:`port`.
fn service(namespace: &str, name: &str, protocol: &str, port: u16) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  ports: [{{port: 80, protocol: {protocol}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {namespace}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: \"\", port: {port}, protocol: {protocol}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n"
    )
}

/// A route of `kind` (`apiVersion` `version`) `namespace/name` with `spec` (YAML below `spec:`).
fn route(version: &str, kind: &str, namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/{version}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    )
}

/// A ReferenceGrant in `namespace` letting `from_kind`s of `from_namespace` use Service `to`.
fn grant(namespace: &str, from_kind: &str, from_namespace: &str, to: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: from-{from_namespace}, namespace: {namespace}}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_namespace}}}]\n  to: [{{group: \"\", kind: Service, name: {to}}}]\n"
    )
}

/// Sends `data` over TCP, half-closes, reads the whole reply.
async fn tcp_exchange(port: u16, data: &str) -> Result<String, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(data.as_bytes()).await?;
        stream.shutdown().await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply).into_owned())
    };
    match tokio::time::timeout(STEP, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(format!("TCP to {port}: {e}")),
        Err(_) => Err(format!("TCP to {port}: no reply within {STEP:?}")),
    }
}

/// One datagram to the listener and its reply (retried: UDP may lose one).
async fn udp_exchange(port: u16, data: &str) -> Result<String, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let mut buf = vec![0u8; 2048];
    for _ in 0..5 {
        socket.send_to(data.as_bytes(), to).await.map_err(|e| e.to_string())?;
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
        {
            ensure_eq!(from, to, "the reply's source address");
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err(format!("no UDP reply from {to}"))
}

/// A TLS client trusting only `ca`.
fn connector(ca: &TestCa) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A TLS exchange for `sni` trusting `ca`: the reply, or why it failed.
async fn tls_exchange(port: u16, ca: &TestCa, sni: &str, data: &str) -> Result<String, String> {
    let connector = connector(ca)?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let exchange = async {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut tls = connector.connect(name, stream).await?;
        tls.write_all(data.as_bytes()).await?;
        tls.shutdown().await?;
        let mut reply = Vec::new();
        let _ = tls.read_to_end(&mut reply).await;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply).into_owned())
    };
    match tokio::time::timeout(STEP, exchange).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(format!("TLS {sni} to {port}: {e}")),
        Err(_) => Err(format!("TLS {sni} to {port}: no reply within {STEP:?}")),
    }
}

/// A listener's status entry of Gateway `infra/name`.
fn listener<'a>(status: &'a Value, gateway: &str, name: &str) -> Result<&'a Value, String> {
    object(status, "Gateway", "infra", gateway)?["status"]["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == name))
        .ok_or_else(|| format!("no listener {name} in Gateway {gateway}"))
}

/// Checks a listener: programmed, its one supported kind, its attached routes.
fn expect_listener(
    status: &Value,
    gateway: &str,
    name: &str,
    kind: &str,
    attached: u64,
) -> Outcome {
    let l = listener(status, gateway, name)?;
    let (programmed, _) = condition(&l["conditions"], "Programmed")?;
    ensure_eq!(programmed.as_str(), "True", "listener {name} Programmed");
    let (conflicted, _) = condition(&l["conditions"], "Conflicted")?;
    ensure_eq!(conflicted.as_str(), "False", "listener {name} Conflicted");
    ensure_eq!(
        l["supportedKinds"][0]["kind"].as_str(),
        Some(kind),
        "listener {name} supportedKinds"
    );
    ensure_eq!(l["attachedRoutes"].as_u64(), Some(attached), "listener {name} attachedRoutes");
    Ok(())
}

fn gateway(name: &str, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  gatewayClassName: gatehouse\n  addresses: [{{type: IPAddress, value: 127.0.0.1}}]\n  listeners:\n{listeners}---\n"
    )
}

// ---------------------------------------------------------------- GATEWAY-TCP

struct TcpWorld {
    gh: Appliance,
    /// Listener `tcp` (TCPRoute `echo`, one backend).
    tcp: u16,
    /// Listener `weighted` (TCPRoute `split`: a:1, b:1, never:0).
    weighted: u16,
    /// Listener `cross` (TCPRoute `other/granted` → infra/a through a ReferenceGrant).
    cross: u16,
}

async fn tcp_world() -> TcpWorld {
    let (a, b, never) = (tcp_peer("a").await, tcp_peer("b").await, tcp_peer("never").await);
    let (a, b, never) = (a.unwrap_or_default(), b.unwrap_or_default(), never.unwrap_or_default());
    let (tcp, weighted, cross) = (free_port(), free_port(), free_port());
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&gateway(
        "l4",
        &format!(
            "  - {{name: tcp, port: {tcp}, protocol: TCP}}\n  - {{name: weighted, port: {weighted}, protocol: TCP}}\n  - {{name: cross, port: {cross}, protocol: TCP, allowedRoutes: {{namespaces: {{from: All}}}}}}\n  - {{name: udp, port: {tcp}, protocol: UDP}}\n"
        ),
    ));
    yaml.push_str(&namespace("infra", &[]));
    yaml.push_str(&namespace("other", &[]));
    yaml.push_str(&service("infra", "a", "TCP", a));
    yaml.push_str(&service("infra", "b", "TCP", b));
    yaml.push_str(&service("infra", "never", "TCP", never));
    let tcp_route =
        |name: &str, ns: &str, spec: &str| route("v1alpha2", "TCPRoute", ns, name, spec);
    yaml.push_str(&tcp_route("echo", "infra", "  parentRefs: [{name: l4, sectionName: tcp}]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"));
    yaml.push_str(&tcp_route("split", "infra", "  parentRefs: [{name: l4, sectionName: weighted}]\n  rules: [{backendRefs: [{name: a, port: 80, weight: 1}, {name: b, port: 80, weight: 1}, {name: never, port: 80, weight: 0}]}]\n"));
    yaml.push_str(&tcp_route("granted", "other", "  parentRefs: [{name: l4, namespace: infra, sectionName: cross}]\n  rules: [{backendRefs: [{name: a, namespace: infra, port: 80}]}]\n"));
    yaml.push_str(&grant("infra", "TCPRoute", "other", "a"));
    yaml.push_str(&tcp_route("ungranted", "other", "  parentRefs: [{name: l4, namespace: infra, sectionName: cross}]\n  rules: [{backendRefs: [{name: b, namespace: infra, port: 80}]}]\n"));
    yaml.push_str(&tcp_route("missing", "infra", "  parentRefs: [{name: l4, sectionName: tcp}]\n  rules: [{backendRefs: [{name: nowhere, port: 80}]}]\n"));
    yaml.push_str(&tcp_route("wrong-section", "infra", "  parentRefs: [{name: l4, sectionName: nope}]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"));
    yaml.push_str(&tcp_route("on-udp", "infra", "  parentRefs: [{name: l4, sectionName: udp}]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n"));
    let gh = Appliance::start_ready(GATEWAY_API_CONFIG, &[("manifests/tcp.yaml", &yaml)]).await;
    TcpWorld { gh, tcp, weighted, cross }
}

async fn tcp_route_accepted_and_listener_programmed(w: &TcpWorld) -> Outcome {
    let status = w.gh.status().await;
    let parent = ("l4", Some("tcp"));
    expect_route_condition(
        &status,
        "TCPRoute",
        ("infra", "echo"),
        parent,
        ("Accepted", "True", "Accepted"),
    )?;
    expect_route_condition(
        &status,
        "TCPRoute",
        ("infra", "echo"),
        parent,
        ("ResolvedRefs", "True", "ResolvedRefs"),
    )?;
    let route = object(&status, "TCPRoute", "infra", "echo")?;
    ensure_eq!(
        route["apiVersion"].as_str(),
        Some("gateway.networking.k8s.io/v1alpha2"),
        "status apiVersion"
    );
    // `echo` and `missing` attach; only the oldest serves.
    expect_listener(&status, "l4", "tcp", "TCPRoute", 2)
}

async fn tcp_traffic_reaches_the_backend(w: &TcpWorld) -> Outcome {
    let reply = tcp_exchange(w.tcp, "over tcp").await?;
    ensure_eq!(reply.as_str(), "a:over tcp", "reply through the TCPRoute (after a half-close)");
    Ok(())
}

async fn tcp_weighted_backends(w: &TcpWorld) -> Outcome {
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..40 {
        let reply = tcp_exchange(w.weighted, &i.to_string()).await?;
        let backend = reply.split(':').next().unwrap_or_default().to_owned();
        *seen.entry(backend).or_insert(0) += 1;
    }
    ensure!(
        seen.get("a").is_some_and(|n| *n > 0) && seen.get("b").is_some_and(|n| *n > 0),
        "both weighted backends serve: {seen:?}"
    );
    ensure!(!seen.contains_key("never"), "weight 0 never serves: {seen:?}");
    Ok(())
}

async fn tcp_cross_namespace_backend_needs_a_grant(w: &TcpWorld) -> Outcome {
    let status = w.gh.status().await;
    let parent = ("l4", Some("cross"));
    expect_route_condition(
        &status,
        "TCPRoute",
        ("other", "granted"),
        parent,
        ("ResolvedRefs", "True", "ResolvedRefs"),
    )?;
    expect_route_condition(
        &status,
        "TCPRoute",
        ("other", "ungranted"),
        parent,
        ("ResolvedRefs", "False", "RefNotPermitted"),
    )?;
    let reply = tcp_exchange(w.cross, "granted").await?;
    ensure_eq!(reply.as_str(), "a:granted", "the granted (older) route serves");
    Ok(())
}

async fn tcp_unresolved_and_misattached_routes(w: &TcpWorld) -> Outcome {
    let status = w.gh.status().await;
    expect_route_condition(
        &status,
        "TCPRoute",
        ("infra", "missing"),
        ("l4", Some("tcp")),
        ("ResolvedRefs", "False", "BackendNotFound"),
    )?;
    expect_route_condition(
        &status,
        "TCPRoute",
        ("infra", "wrong-section"),
        ("l4", Some("nope")),
        ("Accepted", "False", "NoMatchingParent"),
    )?;
    expect_route_condition(
        &status,
        "TCPRoute",
        ("infra", "on-udp"),
        ("l4", Some("udp")),
        ("Accepted", "False", "NotAllowedByListeners"),
    )
}

#[tokio::test]
async fn gateway_tcp_profile() {
    let world = tcp_world().await;
    let cases: &[Case<TcpWorld>] = &[
        case!(
            "tcp_route_accepted_and_listener_programmed",
            ["Gateway", "TCPRoute"],
            tcp_route_accepted_and_listener_programmed
        ),
        case!("tcp_traffic_reaches_the_backend", ["TCPRoute"], tcp_traffic_reaches_the_backend),
        case!("tcp_weighted_backends", ["TCPRoute"], tcp_weighted_backends),
        case!(
            "tcp_cross_namespace_backend_needs_a_grant",
            ["TCPRoute", "ReferenceGrant"],
            tcp_cross_namespace_backend_needs_a_grant
        ),
        case!(
            "tcp_unresolved_and_misattached_routes",
            ["TCPRoute"],
            tcp_unresolved_and_misattached_routes
        ),
    ];
    run_profile("GATEWAY-TCP", &world, cases).await;
}

// ---------------------------------------------------------------- GATEWAY-UDP

struct UdpWorld {
    gh: Appliance,
    /// Listener `udp` (UDPRoute `echo`) and listener `tcp` on the same port number.
    port: u16,
}

async fn udp_world() -> UdpWorld {
    let udp = udp_peer("udp-echo").await.unwrap_or_default();
    let tcp = tcp_peer("tcp-echo").await.unwrap_or_default();
    let port = free_port();
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&gateway(
        "l4",
        &format!("  - {{name: udp, port: {port}, protocol: UDP}}\n  - {{name: tcp, port: {port}, protocol: TCP}}\n"),
    ));
    yaml.push_str(&namespace("infra", &[]));
    yaml.push_str(&service("infra", "udp-echo", "UDP", udp));
    yaml.push_str(&service("infra", "tcp-echo", "TCP", tcp));
    yaml.push_str(&route("v1alpha2", "UDPRoute", "infra", "echo", "  parentRefs: [{name: l4, sectionName: udp}]\n  rules: [{backendRefs: [{name: udp-echo, port: 80}]}]\n"));
    yaml.push_str(&route("v1alpha2", "TCPRoute", "infra", "echo", "  parentRefs: [{name: l4, sectionName: tcp}]\n  rules: [{backendRefs: [{name: tcp-echo, port: 80}]}]\n"));
    yaml.push_str(&route("v1alpha2", "UDPRoute", "infra", "missing", "  parentRefs: [{name: l4, sectionName: udp}]\n  rules: [{backendRefs: [{name: nowhere, port: 80}]}]\n"));
    yaml.push_str(&route("v1alpha2", "UDPRoute", "infra", "on-tcp", "  parentRefs: [{name: l4, sectionName: tcp}]\n  rules: [{backendRefs: [{name: udp-echo, port: 80}]}]\n"));
    let gh = Appliance::start_ready(GATEWAY_API_CONFIG, &[("manifests/udp.yaml", &yaml)]).await;
    UdpWorld { gh, port }
}

async fn udp_route_accepted_and_listener_programmed(w: &UdpWorld) -> Outcome {
    let status = w.gh.status().await;
    let parent = ("l4", Some("udp"));
    expect_route_condition(
        &status,
        "UDPRoute",
        ("infra", "echo"),
        parent,
        ("Accepted", "True", "Accepted"),
    )?;
    expect_route_condition(
        &status,
        "UDPRoute",
        ("infra", "echo"),
        parent,
        ("ResolvedRefs", "True", "ResolvedRefs"),
    )?;
    expect_listener(&status, "l4", "udp", "UDPRoute", 2)
}

async fn udp_datagrams_reach_the_backend_and_replies_return(w: &UdpWorld) -> Outcome {
    for i in 0..3 {
        let reply = udp_exchange(w.port, &format!("d{i}")).await?;
        ensure_eq!(reply, format!("udp-echo:d{i}"), "UDP reply");
    }
    Ok(())
}

async fn udp_and_tcp_listeners_share_a_port_number(w: &UdpWorld) -> Outcome {
    let status = w.gh.status().await;
    expect_listener(&status, "l4", "tcp", "TCPRoute", 1)?;
    let reply = tcp_exchange(w.port, "stream").await?;
    ensure_eq!(reply.as_str(), "tcp-echo:stream", "TCP on the UDP listener's port number");
    Ok(())
}

async fn udp_unresolved_and_misattached_routes(w: &UdpWorld) -> Outcome {
    let status = w.gh.status().await;
    expect_route_condition(
        &status,
        "UDPRoute",
        ("infra", "missing"),
        ("l4", Some("udp")),
        ("ResolvedRefs", "False", "BackendNotFound"),
    )?;
    expect_route_condition(
        &status,
        "UDPRoute",
        ("infra", "on-tcp"),
        ("l4", Some("tcp")),
        ("Accepted", "False", "NotAllowedByListeners"),
    )
}

#[tokio::test]
async fn gateway_udp_profile() {
    let world = udp_world().await;
    let cases: &[Case<UdpWorld>] = &[
        case!(
            "udp_route_accepted_and_listener_programmed",
            ["Gateway", "UDPRoute"],
            udp_route_accepted_and_listener_programmed
        ),
        case!(
            "udp_datagrams_reach_the_backend_and_replies_return",
            ["UDPRoute"],
            udp_datagrams_reach_the_backend_and_replies_return
        ),
        case!(
            "udp_and_tcp_listeners_share_a_port_number",
            ["UDPRoute", "TCPRoute"],
            udp_and_tcp_listeners_share_a_port_number
        ),
        case!(
            "udp_unresolved_and_misattached_routes",
            ["UDPRoute"],
            udp_unresolved_and_misattached_routes
        ),
    ];
    run_profile("GATEWAY-UDP", &world, cases).await;
}

// ---------------------------------------------------------------- GATEWAY-TLS

struct TlsWorld {
    gh: Appliance,
    /// Passthrough listener `pass` (no hostname): TLSRoutes `alpha` and `beta` by SNI.
    pass: u16,
    /// `mixed-pass` (Passthrough, `p.mixed.example`) and `mixed-term` (Terminate,
    /// `*.mixed.example`) on one port.
    mixed: u16,
    /// Listener `cross`: TLSRoute `other/granted` → infra/alpha through a grant.
    cross: u16,
    backend_ca: TestCa,
    gateway_ca: TestCa,
}

async fn tls_world() -> TlsWorld {
    let backend_ca = TestCa::new();
    let gateway_ca = TestCa::new();
    let alpha = tls_peer(&backend_ca, "alpha.example", "alpha").await.unwrap_or_default();
    let beta = tls_peer(&backend_ca, "beta.example", "beta").await.unwrap_or_default();
    let mixed_pass =
        tls_peer(&backend_ca, "p.mixed.example", "mixed-pass").await.unwrap_or_default();
    let plain = tcp_peer("plain").await.unwrap_or_default();
    let (pass, mixed, cross, http) = (free_port(), free_port(), free_port(), free_port());
    let (chain, key) = gateway_ca.leaf(&["*.mixed.example"]);
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&gateway(
        "tls",
        &format!(
            "  - {{name: pass, port: {pass}, protocol: TLS, tls: {{mode: Passthrough}}}}\n  - {{name: mixed-pass, port: {mixed}, protocol: TLS, hostname: p.mixed.example, tls: {{mode: Passthrough}}}}\n  - {{name: mixed-term, port: {mixed}, protocol: TLS, hostname: \"*.mixed.example\", tls: {{mode: Terminate, certificateRefs: [{{name: mixed-cert}}]}}}}\n  - {{name: cross, port: {cross}, protocol: TLS, tls: {{mode: Passthrough}}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n  - {{name: http, port: {http}, protocol: HTTP}}\n"
        ),
    ));
    yaml.push_str(&namespace("infra", &[]));
    yaml.push_str(&namespace("other", &[]));
    yaml.push_str(&service("infra", "alpha", "TCP", alpha));
    yaml.push_str(&service("infra", "beta", "TCP", beta));
    yaml.push_str(&service("infra", "mixed-pass", "TCP", mixed_pass));
    yaml.push_str(&service("infra", "plain", "TCP", plain));
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    yaml.push_str(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: mixed-cert, namespace: infra}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(&chain),
        b64(&key)
    ));
    let tls_route = |ns: &str, name: &str, spec: &str| route("v1", "TLSRoute", ns, name, spec);
    yaml.push_str(&tls_route("infra", "alpha", "  parentRefs: [{name: tls, sectionName: pass}]\n  hostnames: [alpha.example]\n  rules: [{backendRefs: [{name: alpha, port: 80}]}]\n"));
    yaml.push_str(&tls_route("infra", "beta", "  parentRefs: [{name: tls, sectionName: pass}]\n  hostnames: [beta.example]\n  rules: [{backendRefs: [{name: beta, port: 80}]}]\n"));
    yaml.push_str(&tls_route("infra", "mixed-pass", "  parentRefs: [{name: tls, sectionName: mixed-pass}]\n  hostnames: [p.mixed.example]\n  rules: [{backendRefs: [{name: mixed-pass, port: 80}]}]\n"));
    yaml.push_str(&tls_route("infra", "mixed-term", "  parentRefs: [{name: tls, sectionName: mixed-term}]\n  hostnames: [t.mixed.example]\n  rules: [{backendRefs: [{name: plain, port: 80}]}]\n"));
    yaml.push_str(&tls_route("other", "granted", "  parentRefs: [{name: tls, namespace: infra, sectionName: cross}]\n  hostnames: [alpha.example]\n  rules: [{backendRefs: [{name: alpha, namespace: infra, port: 80}]}]\n"));
    yaml.push_str(&grant("infra", "TLSRoute", "other", "alpha"));
    yaml.push_str(&tls_route("other", "ungranted", "  parentRefs: [{name: tls, namespace: infra, sectionName: cross}]\n  hostnames: [beta.example]\n  rules: [{backendRefs: [{name: beta, namespace: infra, port: 80}]}]\n"));
    yaml.push_str(&tls_route("infra", "on-http", "  parentRefs: [{name: tls, sectionName: http}]\n  rules: [{backendRefs: [{name: alpha, port: 80}]}]\n"));
    yaml.push_str(&tls_route("infra", "elsewhere", "  parentRefs: [{name: tls, sectionName: mixed-pass}]\n  hostnames: [other.example]\n  rules: [{backendRefs: [{name: alpha, port: 80}]}]\n"));
    let gh = Appliance::start_ready(GATEWAY_API_CONFIG, &[("manifests/tls.yaml", &yaml)]).await;
    TlsWorld { gh, pass, mixed, cross, backend_ca, gateway_ca }
}

async fn tls_route_accepted_and_listeners_programmed(w: &TlsWorld) -> Outcome {
    let status = w.gh.status().await;
    expect_route_condition(
        &status,
        "TLSRoute",
        ("infra", "alpha"),
        ("tls", Some("pass")),
        ("Accepted", "True", "Accepted"),
    )?;
    expect_route_condition(
        &status,
        "TLSRoute",
        ("infra", "alpha"),
        ("tls", Some("pass")),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    )?;
    let route = object(&status, "TLSRoute", "infra", "alpha")?;
    ensure_eq!(
        route["apiVersion"].as_str(),
        Some("gateway.networking.k8s.io/v1"),
        "TLSRoute status apiVersion"
    );
    expect_listener(&status, "tls", "pass", "TLSRoute", 2)
}

async fn passthrough_routes_by_sni(w: &TlsWorld) -> Outcome {
    // The client checks the backend's certificate (the backend CA): nothing was terminated.
    let alpha = tls_exchange(w.pass, &w.backend_ca, "alpha.example", "hi").await?;
    ensure_eq!(alpha.as_str(), "alpha:hi", "alpha.example");
    let beta = tls_exchange(w.pass, &w.backend_ca, "beta.example", "hi").await?;
    ensure_eq!(beta.as_str(), "beta:hi", "beta.example");
    Ok(())
}

async fn unknown_server_name_is_refused(w: &TlsWorld) -> Outcome {
    let refused = tls_exchange(w.pass, &w.backend_ca, "gamma.example", "hi").await;
    ensure!(refused.is_err(), "no route takes gamma.example, yet: {refused:?}");
    Ok(())
}

async fn terminate_forwards_plaintext(w: &TlsWorld) -> Outcome {
    let reply = tls_exchange(w.mixed, &w.gateway_ca, "t.mixed.example", "clear").await?;
    ensure_eq!(reply.as_str(), "plain:clear", "terminated with the listener's certificate");
    let status = w.gh.status().await;
    expect_route_condition(
        &status,
        "TLSRoute",
        ("infra", "mixed-term"),
        ("tls", Some("mixed-term")),
        ("Accepted", "True", "Accepted"),
    )
}

async fn passthrough_and_terminate_share_a_port(w: &TlsWorld) -> Outcome {
    let status = w.gh.status().await;
    expect_listener(&status, "tls", "mixed-pass", "TLSRoute", 1)?;
    expect_listener(&status, "tls", "mixed-term", "TLSRoute", 1)?;
    let pass = tls_exchange(w.mixed, &w.backend_ca, "p.mixed.example", "p").await?;
    ensure_eq!(
        pass.as_str(),
        "mixed-pass:p",
        "the exact Passthrough listener wins over the Terminate wildcard"
    );
    let term = tls_exchange(w.mixed, &w.gateway_ca, "t.mixed.example", "t").await?;
    ensure_eq!(term.as_str(), "plain:t", "the Terminate wildcard listener on the same port");
    Ok(())
}

async fn tls_cross_namespace_backend_needs_a_grant(w: &TlsWorld) -> Outcome {
    let status = w.gh.status().await;
    let parent = ("tls", Some("cross"));
    expect_route_condition(
        &status,
        "TLSRoute",
        ("other", "granted"),
        parent,
        ("ResolvedRefs", "True", "ResolvedRefs"),
    )?;
    expect_route_condition(
        &status,
        "TLSRoute",
        ("other", "ungranted"),
        parent,
        ("ResolvedRefs", "False", "RefNotPermitted"),
    )?;
    let reply = tls_exchange(w.cross, &w.backend_ca, "alpha.example", "x").await?;
    ensure_eq!(reply.as_str(), "alpha:x", "granted backend");
    ensure!(
        tls_exchange(w.cross, &w.backend_ca, "beta.example", "x").await.is_err(),
        "an ungranted backend serves nothing"
    );
    Ok(())
}

async fn tls_route_rejections(w: &TlsWorld) -> Outcome {
    let status = w.gh.status().await;
    expect_route_condition(
        &status,
        "TLSRoute",
        ("infra", "on-http"),
        ("tls", Some("http")),
        ("Accepted", "False", "NotAllowedByListeners"),
    )?;
    expect_route_condition(
        &status,
        "TLSRoute",
        ("infra", "elsewhere"),
        ("tls", Some("mixed-pass")),
        ("Accepted", "False", "NoMatchingListenerHostname"),
    )
}

#[tokio::test]
async fn gateway_tls_profile() {
    let world = tls_world().await;
    let cases: &[Case<TlsWorld>] = &[
        case!(
            "tls_route_accepted_and_listeners_programmed",
            ["Gateway", "TLSRoute"],
            tls_route_accepted_and_listeners_programmed
        ),
        case!("passthrough_routes_by_sni", ["TLSRoute"], passthrough_routes_by_sni),
        case!("unknown_server_name_is_refused", ["TLSRoute"], unknown_server_name_is_refused),
        case!(
            "terminate_forwards_plaintext",
            ["TLSRouteModeTerminate"],
            terminate_forwards_plaintext
        ),
        case!(
            "passthrough_and_terminate_share_a_port",
            ["TLSRouteModeMixed"],
            passthrough_and_terminate_share_a_port
        ),
        case!(
            "tls_cross_namespace_backend_needs_a_grant",
            ["TLSRoute", "ReferenceGrant"],
            tls_cross_namespace_backend_needs_a_grant
        ),
        case!("tls_route_rejections", ["TLSRoute"], tls_route_rejections),
    ];
    run_profile("GATEWAY-TLS", &world, cases).await;
}
