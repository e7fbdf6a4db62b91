//! ACME in cluster mode: the real binary against the fake API server, Debian's pebble and
//! bind9. The certificate of an annotated Gateway is written to the Secret its listeners name.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_tests::{
    Appliance, Bind9, EchoBackend, FakeKube, Pebble, PebbleOptions, TestCa, acme_peers_installed,
    free_port, pebble_issuer_toml,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};

use crate::acme::{all_issued, wait_https};

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

fn gateway(name: &str, port: u16, hostname: &str, secret: &str) -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": name, "namespace": "default", "generation": 1,
                     "annotations": {"cert-manager.io/cluster-issuer": "pebble"}},
        "spec": {
            "gatewayClassName": "gatehouse",
            "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
            "listeners": [{"name": "https", "port": port, "protocol": "HTTPS",
                           "hostname": hostname,
                           "tls": {"certificateRefs": [{"name": secret}]},
                           "allowedRoutes": {"namespaces": {"from": "All"}}}]
        }
    })
}

fn objects(echo: &EchoBackend) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({
            "apiVersion": GATEWAY_API, "kind": "GatewayClass", "metadata": {"name": "gatehouse"},
            "spec": {"controllerName": "gatehouse.dev/gateway-controller"}
        }),
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "default"},
            "spec": {"ports": [{"port": 80, "targetPort": echo.port()}]}
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "echo-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": echo.port()}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]
        }),
        json!({
            "apiVersion": GATEWAY_API, "kind": "HTTPRoute",
            "metadata": {"name": "app", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "web"}, {"name": "other"}],
                     "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}
        }),
    ]
}

fn secret_data(secret: &Value, key: &str) -> String {
    use base64::Engine as _;
    let encoded = secret["data"][key].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

fn pem_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().expect("PEM chain")
}

/// Verifies `chain_pem` (leaf first) for `host` against `root_pem`, as a TLS client would.
fn verify(chain_pem: &str, root_pem: &str, host: &str) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(root_pem) {
        roots.add(cert).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
    let chain = pem_certs(chain_pem);
    assert!(!chain.is_empty(), "empty tls.crt");
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .unwrap_or_else(|e| panic!("the Secret's chain does not verify for {host}: {e}"));
}

/// The leaf the appliance serves on 127.0.0.1:`port` for SNI `host`.
async fn served_leaf(root_pem: &str, port: u16, host: &str) -> CertificateDer<'static> {
    served_leaf_at(root_pem, "127.0.0.1", port, host).await.expect("TLS handshake")
}

/// The leaf served on `address`:`port` for SNI `host`, trusting `root_pem`.
async fn served_leaf_at(
    root_pem: &str,
    address: &str,
    port: u16,
    host: &str,
) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in pem_certs(root_pem) {
        roots.add(cert).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream =
        tokio::net::TcpStream::connect((address, port)).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| e.to_string())?;
    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned().ok_or("no leaf".into())
}

#[tokio::test]
async fn the_certificate_is_written_to_the_listeners_secret_in_cluster_mode_with_pebble_and_bind9()
{
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test", "api.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let echo = EchoBackend::start("echo").await;
    let (port, other_port) = (free_port(), free_port());
    let kube = FakeKube::start().await;
    for object in objects(&echo) {
        kube.apply(object).await;
    }
    // `web-tls` does not exist: gatehouse creates it. `theirs-tls` exists, made by someone
    // else: it is never overwritten.
    // Its Gateway's infrastructure labels and annotations go onto the Secret it gets.
    let mut web = gateway("web", port, "www.example.test", "web-tls");
    web["spec"]["infrastructure"] =
        json!({"labels": {"team": "edge"}, "annotations": {"example.com/owner": "infra"}});
    kube.apply(web).await;
    let (their_crt, their_key) = TestCa::new().leaf(&["api.example.test"]);
    let theirs = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "theirs-tls", "namespace": "default",
                     "annotations": {"cert-manager.io/issuer-name": "pebble"}},
        "data": {"tls.crt": b64(&their_crt), "tls.key": b64(&their_key)},
    });
    kube.apply(theirs).await;
    kube.apply(gateway("other", other_port, "api.example.test", "theirs-tls")).await;

    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"
shutdown_grace_ms = 1000
[kubernetes]
kubeconfig = "kubeconfig"

{issuer}"#,
        issuer = pebble_issuer_toml(&pebble, &bind, &bind.secret, 50),
    );
    let appliance = Appliance::start(&config, &[("kubeconfig", &kube.kubeconfig())]);
    appliance.wait_status(|s| all_issued(s, 2)).await;

    // The Secret appears in the cluster, written by server-side apply under our manager.
    let deadline = Instant::now() + Duration::from_secs(20);
    let secret = loop {
        if let Some(secret) = kube.object("v1", "Secret", "default", "web-tls").await {
            break secret;
        }
        assert!(Instant::now() < deadline, "no Secret web-tls\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["annotations"]["gatehouse.dev/acme-issuer"], "pebble");
    assert_eq!(secret["metadata"]["annotations"]["example.com/owner"], "infra");
    assert_eq!(secret["metadata"]["labels"]["team"], "edge");
    assert_eq!(secret["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"], "web");
    let patches = kube.patches().await;
    let write = patches
        .iter()
        .find(|p| p.path == "/api/v1/namespaces/default/secrets/web-tls")
        .expect("a PATCH of the Secret");
    assert_eq!(write.content_type, "application/apply-patch+yaml");
    assert_eq!(write.field_manager.as_deref(), Some("gatehouse.dev/gateway-controller"));
    let root = pebble.issuing_root_pem().await;
    let chain = secret_data(&secret, "tls.crt");
    verify(&chain, &root, "www.example.test");
    assert!(secret_data(&secret, "tls.key").contains("PRIVATE KEY"));

    // HTTPS answers with exactly that certificate.
    wait_https(&root, port, "www.example.test", &appliance).await;
    assert_eq!(served_leaf(&root, port, "www.example.test").await, pem_certs(&chain)[0]);

    // The foreign Secret is left as it was; the listener serves our certificate anyway.
    wait_https(&root, other_port, "api.example.test", &appliance).await;
    let still = kube.object("v1", "Secret", "default", "theirs-tls").await.expect("theirs");
    assert_eq!(secret_data(&still, "tls.crt"), their_crt);
    assert!(!patches.iter().any(|p| p.path.ends_with("/secrets/theirs-tls")), "{patches:#?}");
    let metrics = gatehouse_tests::Client::http1()
        .get(&appliance.admin_url("/metrics"))
        .await
        .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains(r#"gatehouse_kube_secret_writes_total{result="foreign"}"#),
        "{metrics}"
    );
    assert!(bind.txt_values("_acme-challenge.www.example.test.").is_empty());

    // Deleted in the cluster, our Secret is written again.
    kube.delete("v1", "Secret", "default", "web-tls").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        if let Some(secret) = kube.object("v1", "Secret", "default", "web-tls").await {
            break secret;
        }
        assert!(Instant::now() < deadline, "web-tls not written again\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(secret_data(&again, "tls.crt"), chain);
}

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// An appliance of a two-member cluster: its own default address, identity and token.
fn member_config(pebble: &Pebble, bind: &Bind9, name: &str, address: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"
shutdown_grace_ms = 1000
[kubernetes]
kubeconfig = "kubeconfig"
default_address = "{address}"
identity = "appliance-{name}"
lease_duration_seconds = 3

{issuer}"#,
        issuer = pebble_issuer_toml(pebble, bind, &bind.secret, 50),
    )
}

#[tokio::test]
async fn only_the_lease_holder_writes_the_secret_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let kube = FakeKube::start().await;
    for object in objects(&echo) {
        kube.apply(object).await;
    }
    // No addresses: each appliance binds its own default address.
    let mut web = gateway("web", port, "www.example.test", "web-tls");
    web["spec"].as_object_mut().expect("spec").remove("addresses");
    kube.apply(web).await;
    let a = Appliance::start(
        &member_config(&pebble, &bind, "a", "127.0.0.1"),
        &[("kubeconfig", &kube.kubeconfig_with_token("token-a"))],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while kube.object("v1", "Secret", "default", "web-tls").await.is_none() {
        assert!(Instant::now() < deadline, "A never wrote web-tls\n{}", a.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b = Appliance::start(
        &member_config(&pebble, &bind, "b", "127.0.0.2"),
        &[("kubeconfig", &kube.kubeconfig_with_token("token-b"))],
    );
    // B obtains and serves its own certificate, as a follower.
    b.wait_status(|s| all_issued(s, 1) && s["kubernetes"]["leader"] == false).await;
    let root = pebble.issuing_root_pem().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_leaf_at(&root, "127.0.0.2", port, "www.example.test").await.is_err() {
        assert!(Instant::now() < deadline, "B never served HTTPS\n{}", b.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for B to (wrongly) write, had it decided it leads.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let secret_writes: Vec<_> =
        kube.patches().await.into_iter().filter(|p| p.path.ends_with("/secrets/web-tls")).collect();
    assert!(!secret_writes.is_empty());
    assert!(
        secret_writes.iter().all(|p| p.token.as_deref() == Some("token-a")),
        "{secret_writes:#?}\nB:\n{}",
        b.logs()
    );
    assert_eq!(a.status().await["kubernetes"]["leader"], true);
}
