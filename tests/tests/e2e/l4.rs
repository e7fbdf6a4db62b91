//! TCPRoute, UDPRoute and TLSRoute through the user-space L4 proxy (`[xdp] mode = "off"`):
//! real TCP and UDP echo peers and a TLS backend with its own CA on 127.0.0.1.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test (peers included)")]

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use gatehouse_tests::{Appliance, TestCa, free_port};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::GATEWAY_CLASS;

/// Every step of these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

/// A TCP peer that reads until the client's end of stream (so it answers only through a
/// working half-close), then replies `<name>:<what it read>` and closes.
async fn tcp_echo(name: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
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
    port
}

/// A UDP peer replying `<name>:<datagram>`.
async fn udp_echo(name: &'static str) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&reply, peer).await;
        }
    });
    port
}

/// A TLS peer with a certificate from `ca` for `name`: replies `tls-backend:<line>` to the
/// first chunk it reads.
async fn tls_backend(ca: &TestCa, name: &str) -> u16 {
    let (chain, key) = ca.leaf(&[name]);
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let mut buf = vec![0u8; 1024];
                let Ok(n) = tls.read(&mut buf).await else { return };
                let mut reply = b"tls-backend:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = tls.write_all(&reply).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// A Service `name` on port 80 (protocol `protocol`) with one endpoint 127.0.0.1:`port`.
fn service(name: &str, protocol: &str, port: u16) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{port: 80, protocol: {protocol}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: "", port: {port}, protocol: {protocol}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#
    )
}

fn secret(name: &str, chain: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(chain),
        b64(key)
    )
}

/// The config: manifests in `manifests/`, XDP explicitly off, short L4 bounds for the tests.
fn config() -> &'static str {
    r#"
[admin]
listen = "127.0.0.1:{admin}"
[gateway_api]
manifests = ["manifests"]
[xdp]
mode = "off"
[l4]
client_hello_timeout_ms = 500
udp_max_sessions = 8
udp_idle_timeout_ms = 30000
"#
}

fn object<'a>(status: &'a Value, kind: &str, name: &str) -> &'a Value {
    status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name))
        .unwrap_or_else(|| panic!("no {kind} {name} in {status:#}"))
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} in {conditions:#}"))
}

fn programmed(status: &Value) -> bool {
    status["objects"].as_array().is_some_and(|objects| {
        objects.iter().any(|o| {
            o["kind"] == "Gateway"
                && o["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| c["type"] == "Programmed" && c["status"] == "True")
                })
        })
    })
}

/// Sends `data`, half-closes, reads the whole reply.
async fn tcp_exchange(port: u16, data: &[u8]) -> Vec<u8> {
    tokio::time::timeout(BOUND, async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(data).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        reply
    })
    .await
    .expect("TCP exchange bounded")
}

async fn udp_exchange(socket: &UdpSocket, to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    // A datagram can be lost only on an overloaded machine: ask a few times.
    for _ in 0..10 {
        socket.send_to(data, to).await.unwrap();
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
        {
            assert_eq!(from, to, "the reply comes from the listener's address");
            return buf[..n].to_vec();
        }
    }
    panic!("no UDP reply from {to}");
}

fn tcp_udp_manifests(tcp_port: u16, udp_port: u16, tcp_backend: u16, udp_backend: u16) -> String {
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: l4, namespace: default}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: tcp, port: {tcp_port}, protocol: TCP}}
  - {{name: udp, port: {udp_port}, protocol: UDP}}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {{name: echo-tcp, namespace: default}}
spec:
  parentRefs: [{{name: l4, sectionName: tcp}}]
  rules:
  - backendRefs: [{{name: gone, port: 80, weight: 1}}, {{name: tcp-echo, port: 80, weight: 1}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: UDPRoute
metadata: {{name: echo-udp, namespace: default}}
spec:
  parentRefs: [{{name: l4, sectionName: udp}}]
  rules:
  - backendRefs: [{{name: udp-echo, port: 80}}]
"#
    ));
    yaml.push_str(&service("tcp-echo", "TCP", tcp_backend));
    // A backend whose port refuses connections: every connection that picks it first moves
    // on to the next.
    yaml.push_str(&service("gone", "TCP", free_port()));
    yaml.push_str(&service("udp-echo", "UDP", udp_backend));
    yaml
}

#[tokio::test]
async fn tcp_and_udp_routes_are_served_in_user_space_with_xdp_off() {
    let tcp_backend = tcp_echo("tcp-echo").await;
    let udp_backend = udp_echo("udp-echo").await;
    let (tcp_port, udp_port) = (free_port(), free_port());
    let yaml = tcp_udp_manifests(tcp_port, udp_port, tcp_backend, udp_backend);
    let appliance = Appliance::start(config(), &[("manifests/l4.yaml", &yaml)]);
    let status = appliance.wait_status(programmed).await;

    let gateway = object(&status, "Gateway", "l4");
    for listener in gateway["status"]["listeners"].as_array().unwrap() {
        assert_eq!(condition(&listener["conditions"], "Programmed")["status"], "True");
        assert_eq!(listener["attachedRoutes"], 1, "{listener:#}");
    }
    let tcp_route = object(&status, "TCPRoute", "echo-tcp");
    assert_eq!(tcp_route["apiVersion"], "gateway.networking.k8s.io/v1alpha2");
    let parent = &tcp_route["status"]["parents"][0];
    assert_eq!(condition(&parent["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&parent["conditions"], "ResolvedRefs")["status"], "True");
    let udp_route = object(&status, "UDPRoute", "echo-udp");
    assert_eq!(
        condition(&udp_route["status"]["parents"][0]["conditions"], "Accepted")["status"],
        "True"
    );

    // Half of the first choices are the refusing backend: every connection still lands.
    for i in 0..12 {
        let data = format!("hello {i}");
        let reply = tcp_exchange(tcp_port, data.as_bytes()).await;
        assert_eq!(reply, format!("tcp-echo:{data}").into_bytes(), "half-close relayed both ways");
    }

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to: SocketAddr = ([127, 0, 0, 1], udp_port).into();
    for i in 0..3 {
        let reply = udp_exchange(&client, to, format!("dgram {i}").as_bytes()).await;
        assert_eq!(reply, format!("udp-echo:dgram {i}").into_bytes());
    }
}

#[tokio::test]
async fn udp_flood_of_new_clients_is_bounded_and_counted() {
    let udp_backend = udp_echo("udp-echo").await;
    let tcp_backend = tcp_echo("tcp-echo").await;
    let (tcp_port, udp_port) = (free_port(), free_port());
    let yaml = tcp_udp_manifests(tcp_port, udp_port, tcp_backend, udp_backend);
    let appliance = Appliance::start(config(), &[("manifests/l4.yaml", &yaml)]);
    appliance.wait_status(programmed).await;
    let to: SocketAddr = ([127, 0, 0, 1], udp_port).into();

    // One client with a session before the flood keeps being served.
    let steady = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(udp_exchange(&steady, to, b"before").await, b"udp-echo:before");

    // 200 new clients (source ports), tiny datagrams: at most 8 sessions (the bound). The
    // sockets stay open so that no two flooders share a source port.
    let mut flooders = Vec::new();
    for _ in 0..200 {
        let flooder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        flooder.send_to(b"x", to).unwrap();
        flooders.push(flooder);
    }
    let metrics = tokio::time::timeout(BOUND, async {
        loop {
            let reply = gatehouse_tests::Client::http1()
                .get(&appliance.admin_url("/metrics"))
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&reply.body).into_owned();
            let value = |name: &str| -> f64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
                    .unwrap_or(0.0)
            };
            let (sessions, dropped) =
                (value("gatehouse_l4_udp_sessions "), value("gatehouse_l4_udp_dropped_total "));
            if sessions + dropped >= 201.0 {
                return (sessions, dropped);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every datagram is either a session or a counted drop");
    drop(flooders);
    assert_eq!(metrics.0, 8.0, "sessions bounded at udp_max_sessions");
    // The steady client and 7 flooders hold the sessions (a session's first datagram is
    // forwarded, not dropped); the other 193 flooders' datagrams are counted drops.
    assert_eq!(metrics.1, 193.0, "{metrics:?}");
    assert!(appliance.logs().contains("UDP datagrams of new clients dropped"), "a logged drop");
    assert_eq!(udp_exchange(&steady, to, b"after").await, b"udp-echo:after");
}

/// The TLS fixture: one port with a Passthrough listener (`pass.example.test`) and a
/// Terminate listener (`term.example.test`) — TLSRouteModeMixed — plus a TLSRoute wrongly
/// attached to an HTTP listener.
struct TlsSetup {
    appliance: Appliance,
    port: u16,
    backend_ca: TestCa,
    gateway_ca: TestCa,
}

async fn tls_setup() -> TlsSetup {
    let backend_ca = TestCa::new();
    let gateway_ca = TestCa::new();
    let pass_backend = tls_backend(&backend_ca, "pass.example.test").await;
    let plain_backend = tcp_echo("plain").await;
    let (port, http_port) = (free_port(), free_port());
    let (chain, key) = gateway_ca.leaf(&["term.example.test"]);
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tls, namespace: default}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: pass, port: {port}, protocol: TLS, hostname: pass.example.test, tls: {{mode: Passthrough}}}}
  - name: term
    port: {port}
    protocol: TLS
    hostname: term.example.test
    tls: {{mode: Terminate, certificateRefs: [{{name: term-cert}}]}}
  - {{name: http, port: {http_port}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: pass, namespace: default}}
spec:
  parentRefs: [{{name: tls, sectionName: pass}}]
  hostnames: [pass.example.test]
  rules: [{{backendRefs: [{{name: tls-backend, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {{name: term, namespace: default}}
spec:
  parentRefs: [{{name: tls, sectionName: term}}]
  hostnames: [term.example.test]
  rules: [{{backendRefs: [{{name: plain, port: 80}}]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: on-http, namespace: default}}
spec:
  parentRefs: [{{name: tls, sectionName: http}}]
  rules: [{{backendRefs: [{{name: plain, port: 80}}]}}]
"#
    ));
    yaml.push_str(&service("tls-backend", "TCP", pass_backend));
    yaml.push_str(&service("plain", "TCP", plain_backend));
    yaml.push_str(&secret("term-cert", &chain, &key));
    let appliance = Appliance::start(config(), &[("manifests/tls.yaml", &yaml)]);
    appliance.wait_status(programmed).await;
    TlsSetup { appliance, port, backend_ca, gateway_ca }
}

fn connector(ca: &TestCa) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS exchange over `io`: handshake for `name` trusting `ca`, send `data`, half-close,
/// read the reply.
async fn tls_exchange<IO>(io: IO, ca: &TestCa, name: &str, data: &[u8]) -> Vec<u8>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(BOUND, async {
        let server = ServerName::try_from(name.to_owned()).unwrap();
        let mut tls = connector(ca).connect(server, io).await.expect("TLS handshake");
        tls.write_all(data).await.unwrap();
        tls.shutdown().await.unwrap();
        let mut reply = Vec::new();
        let _ = tls.read_to_end(&mut reply).await;
        reply
    })
    .await
    .expect("TLS exchange bounded")
}

#[tokio::test]
async fn tls_passthrough_terminate_and_mixed_on_one_port() {
    let setup = tls_setup().await;
    let status = setup.appliance.status().await;
    let gateway = object(&status, "Gateway", "tls");
    let listeners = gateway["status"]["listeners"].as_array().unwrap();
    for l in listeners {
        assert_eq!(condition(&l["conditions"], "Programmed")["status"], "True", "{l:#}");
    }
    assert_eq!(listeners[0]["supportedKinds"][0]["kind"], "TLSRoute");

    // Passthrough: the client validates the backend's own certificate (its CA), so the
    // stream was never decrypted on the way.
    let stream = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    let reply = tls_exchange(stream, &setup.backend_ca, "pass.example.test", b"secret").await;
    assert_eq!(reply, b"tls-backend:secret");

    // Terminate, same port: the gateway's certificate, plaintext to a TCP peer that only
    // answers after the end of stream (close_notify became a half-close).
    let stream = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    let reply = tls_exchange(stream, &setup.gateway_ca, "term.example.test", b"clear").await;
    assert_eq!(reply, b"plain:clear");

    let route = object(&status, "TLSRoute", "term");
    assert_eq!(
        condition(&route["status"]["parents"][0]["conditions"], "Accepted")["status"],
        "True"
    );
}

/// A stream that writes one byte per write call (each flushed on its own TCP segment with
/// `TCP_NODELAY`): the ClientHello reaches the appliance split across many segments.
struct Trickle(TcpStream);

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let one = &buf[..buf.len().min(1)];
        Pin::new(&mut self.0).poll_write(cx, one)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Reads until the appliance closes the connection (0 bytes or a reset).
async fn closed_by_appliance(mut stream: TcpStream) -> bool {
    let mut buf = [0u8; 256];
    matches!(tokio::time::timeout(BOUND, stream.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn bad_client_hellos_are_dropped_and_bad_routes_get_a_reason() {
    let setup = tls_setup().await;

    // A TLSRoute on an HTTP listener: not allowed there.
    let status = setup.appliance.status().await;
    let route = object(&status, "TLSRoute", "on-http");
    let accepted = condition(&route["status"]["parents"][0]["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "NotAllowedByListeners");

    // Garbage instead of a ClientHello: closed.
    let mut garbage = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: pass.example.test\r\n\r\n").await.unwrap();
    assert!(closed_by_appliance(garbage).await, "garbage is dropped");

    // A ClientHello never finished: closed at the deadline (500 ms here).
    let mut slow = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    assert!(closed_by_appliance(slow).await, "an unfinished ClientHello is dropped");

    // A ClientHello split byte by byte still routes (passthrough, the backend's CA).
    let stream = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let reply =
        tls_exchange(Trickle(stream), &setup.backend_ca, "pass.example.test", b"slowly").await;
    assert_eq!(reply, b"tls-backend:slowly");

    // An SNI no listener takes: closed.
    let stream = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    let server = ServerName::try_from("nobody.example.test".to_owned()).unwrap();
    let refused = tokio::time::timeout(BOUND, connector(&setup.backend_ca).connect(server, stream))
        .await
        .expect("bounded");
    assert!(refused.is_err(), "no route for this name");

    let metrics =
        gatehouse_tests::Client::http1().get(&setup.appliance.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let rejected: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("gatehouse_l4_tls_rejected_total ").and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0);
    assert!(rejected >= 3.0, "garbage, deadline and unknown name counted: {rejected}");

    // And the listener still serves after all that.
    let stream = TcpStream::connect(("127.0.0.1", setup.port)).await.unwrap();
    let reply = tls_exchange(stream, &setup.gateway_ca, "term.example.test", b"still").await;
    assert_eq!(reply, b"plain:still");
}

/// Cluster mode: a TCPRoute read by the watch (experimental channel, `v1alpha2`), served, and
/// its status written to `tcproutes/status`.
#[tokio::test]
async fn tcp_route_from_the_cluster_is_served_and_its_status_written() {
    use gatehouse_tests::FakeKube;
    use serde_json::json;

    let backend = tcp_echo("cluster-echo").await;
    let port = free_port();
    let kube = FakeKube::start().await;
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "gatehouse"},
               "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "l4", "namespace": "default", "generation": 1},
               "spec": {"gatewayClassName": "gatehouse",
                        "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                        "listeners": [{"name": "tcp", "port": port, "protocol": "TCP"}]}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
               "metadata": {"name": "echo", "namespace": "default"},
               "spec": {"parentRefs": [{"name": "l4"}],
                        "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "echo", "namespace": "default"},
               "spec": {"ports": [{"port": 80, "targetPort": backend}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "echo-1", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "echo"}},
               "addressType": "IPv4",
               "ports": [{"name": "", "port": backend}],
               "endpoints": [{"addresses": ["127.0.0.1"]}]}),
    ];
    for object in objects {
        // The route's spec changes once after its create: the API server says generation 2.
        if object["kind"] == "TCPRoute" {
            let mut earlier = object.clone();
            earlier["spec"]["rules"] = json!([]);
            kube.apply(earlier).await;
        }
        kube.apply(object).await;
    }
    let config = r#"
[admin]
listen = "127.0.0.1:{admin}"
[kubernetes]
kubeconfig = "kubeconfig"
"#;
    let appliance = Appliance::start_ready(config, &[("kubeconfig", &kube.kubeconfig())]).await;
    appliance.wait_status(programmed).await;
    assert_eq!(tcp_exchange(port, b"from the cluster").await, b"cluster-echo:from the cluster");

    let path = "/apis/gateway.networking.k8s.io/v1alpha2/namespaces/default/tcproutes/echo/status";
    let patch = tokio::time::timeout(BOUND, async {
        loop {
            let found =
                kube.patches().await.into_iter().find(|p| p.path == path && p.answered == 200);
            if let Some(patch) = found {
                return patch;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no TCPRoute status written; logs:\n{}", appliance.logs()));
    let parent = &patch.body["status"]["parents"][0];
    assert_eq!(parent["controllerName"], "gatehouse.dev/gateway-controller");
    let accepted = condition(&parent["conditions"], "Accepted");
    assert_eq!((&accepted["status"], &accepted["observedGeneration"]), (&json!("True"), &json!(2)));
}

/// Cluster mode against an API server without the TCPRoute, UDPRoute and TLSRoute CRDs (their
/// lists answer 404): the appliance still gets ready and serves the rest.
#[tokio::test]
async fn a_cluster_without_the_l4_route_crds_still_gets_ready() {
    use gatehouse_tests::FakeKube;
    use serde_json::json;

    let port = free_port();
    let kube = FakeKube::start().await;
    for plural in ["tcproutes", "udproutes", "tlsroutes"] {
        kube.unserve(&format!("gateway.networking.k8s.io/{plural}")).await;
    }
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
               "metadata": {"name": "gatehouse"},
               "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "l4", "namespace": "default", "generation": 1},
               "spec": {"gatewayClassName": "gatehouse",
                        "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                        "listeners": [{"name": "tcp", "port": port, "protocol": "TCP"}]}}),
    ];
    for object in objects {
        kube.apply(object).await;
    }
    let config =
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[kubernetes]\nkubeconfig = \"kubeconfig\"\n";
    // `start_ready` waits for /readyz: it fails if a watch never lists.
    let appliance = Appliance::start_ready(config, &[("kubeconfig", &kube.kubeconfig())]).await;
    let status = appliance.wait_status(programmed).await;
    let listener = &object(&status, "Gateway", "l4")["status"]["listeners"][0];
    assert_eq!(listener["attachedRoutes"], 0);
    assert!(appliance.logs().contains("CRD not installed"), "{}", appliance.logs());
    let requests = kube.requests().await;
    assert!(
        requests.iter().any(|r| r.contains("/tcproutes")),
        "the TCPRoute watch asked: {requests:?}"
    );
}
