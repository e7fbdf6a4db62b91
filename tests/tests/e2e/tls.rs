//! HTTPS listeners: certificates from kubernetes.io/tls Secrets, SNI, ALPN, 421.

use base64::Engine as _;
use gatehouse_tests::{Appliance, Client, EchoBackend, TestCa, free_port};
use http::Version;

use crate::{GATEWAY_CLASS, gateway_api_config, service};

fn secret(name: &str, chain: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        r#"---
apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: default
type: kubernetes.io/tls
data:
  tls.crt: {}
  tls.key: {}
"#,
        b64(chain),
        b64(key)
    )
}

fn gateway(port: u16) -> String {
    let gateway = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: tls
  namespace: default
spec:
  gatewayClassName: gatehouse
  addresses: [{{ type: IPAddress, value: 127.0.0.1 }}]
  listeners:
  - name: a
    port: {port}
    protocol: HTTPS
    hostname: a.example.com
    tls:
      mode: Terminate
      certificateRefs: [{{ name: cert-a }}]
  - name: b
    port: {port}
    protocol: HTTPS
    hostname: "*.b.example.com"
    tls:
      certificateRefs: [{{ name: cert-b }}]
  - name: broken
    port: {port}
    protocol: HTTPS
    hostname: broken.example.com
    tls:
      certificateRefs: [{{ name: cert-broken }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: everything
  namespace: default
spec:
  parentRefs: [{{ name: tls }}]
  rules:
  - backendRefs: [{{ name: echo, port: 80 }}]
"#
    );
    format!("{GATEWAY_CLASS}{gateway}")
}

#[tokio::test]
async fn terminates_tls_by_sni_with_alpn_and_detects_misdirected_requests() {
    let ca = TestCa::new();
    let (chain_a, key_a) = ca.leaf(&["a.example.com"]);
    let (chain_b, key_b) = ca.leaf(&["*.b.example.com"]);
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let mut yaml = gateway(port);
    yaml.push_str(&service("echo", "default", echo.port()));
    yaml.push_str(&secret("cert-a", &chain_a, &key_a));
    yaml.push_str(&secret("cert-b", &chain_b, &key_b));
    yaml.push_str(&secret(
        "cert-broken",
        &chain_a,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/tls.yaml", &yaml)]).await;
    let url = format!("https://127.0.0.1:{port}/hello");

    // SNI picks the certificate; the client verifies it against the name.
    let reply = Client::tls(&ca.cert_pem, &["h2"], Some("a.example.com"))
        .get_host(&url, "a.example.com")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.json()["headers"]["x-forwarded-proto"], "https");

    let reply = Client::tls(&ca.cert_pem, &["http/1.1"], Some("x.b.example.com"))
        .get_host(&url, "x.b.example.com")
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_11);

    // Host selects another listener than the SNI did: 421.
    let reply = Client::tls(&ca.cert_pem, &["h2"], Some("a.example.com"))
        .get_host(&url, "x.b.example.com")
        .await
        .unwrap();
    assert_eq!(reply.status, 421);

    // The broken key is a listener condition; the other listeners still serve.
    let status = gh.status().await;
    let gateway = status["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "Gateway" && o["metadata"]["name"] == "tls")
        .unwrap()
        .clone();
    let broken = gateway["status"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "broken")
        .unwrap()
        .clone();
    let resolved = broken["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .unwrap()
        .clone();
    assert_eq!(resolved["status"], "False", "{broken:#}");
    assert_eq!(resolved["reason"], "InvalidCertificateRef");
}
