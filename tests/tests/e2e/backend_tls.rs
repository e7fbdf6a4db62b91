//! TLS towards backends (BackendTLSPolicy, the Gateway's backend client certificate) and
//! client certificate validation on HTTPS listeners, with real TLS peers on loopback.

use base64::Engine as _;
use gatehouse_tests::{Appliance, Client, TestCa, TlsEchoBackend, free_port};
use rcgen::{CertificateParams, KeyPair, SanType};

use crate::{GATEWAY_CLASS, gateway_api_config};

const SPIFFE_ID: &str = "spiffe://cluster.local/ns/default/sa/backend";

/// A backend certificate for `backend.example.com` with a SPIFFE URI SAN: `(chain, key)`.
fn backend_cert(ca: &TestCa) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(vec!["backend.example.com".to_owned()]).expect("params");
    params.subject_alt_names.push(SanType::URI(SPIFFE_ID.try_into().expect("uri")));
    (ca.sign(params, &key), key.serialize_pem())
}

fn indent(pem: &str, by: usize) -> String {
    pem.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect()
}

/// A ConfigMap with `ca.crt`.
fn ca_config_map(name: &str, pem: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  ca.crt: |\n{}",
        indent(pem, 4)
    )
}

/// A kubernetes.io/tls Secret.
fn tls_secret(name: &str, chain: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(chain),
        b64(key)
    )
}

/// A Service with one named port `https` (443) whose endpoint is 127.0.0.1:`port`.
fn tls_service(name: &str, port: u16) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  ports:
  - name: https
    port: 443
    targetPort: {port}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: https
  port: {port}
endpoints:
- addresses: ["127.0.0.1"]
"#
    )
}

/// A BackendTLSPolicy for Service `service`; `validation` is the YAML under `validation:`.
fn policy(name: &str, service: &str, validation: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata:
  name: {name}
  namespace: default
spec:
  targetRefs:
  - group: ""
    kind: Service
    name: {service}
    sectionName: https
  validation:
{}"#,
        indent(validation, 4)
    )
}

/// An HTTP Gateway `name` on `port` (`tls` is extra YAML under `spec.tls`, may be empty) and
/// an HTTPRoute sending `/<service>` to each Service.
fn http_gateway(name: &str, port: u16, tls: &str, services: &[&str]) -> String {
    let tls = if tls.is_empty() { String::new() } else { format!("  tls:\n{}", indent(tls, 4)) };
    let rules: String = services
        .iter()
        .map(|s| {
            format!(
                "  - matches: [{{ path: {{ type: PathPrefix, value: /{s} }} }}]\n    backendRefs: [{{ name: {s}, port: 443 }}]\n"
            )
        })
        .collect();
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {name}
  namespace: default
spec:
  gatewayClassName: gatehouse
  addresses: [{{ type: IPAddress, value: 127.0.0.1 }}]
{tls}  listeners:
  - name: http
    port: {port}
    protocol: HTTP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}-routes
  namespace: default
spec:
  parentRefs: [{{ name: {name} }}]
  rules:
{rules}"#
    )
}

fn find<'a>(status: &'a serde_json::Value, kind: &str, name: &str) -> &'a serde_json::Value {
    status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name))
        .unwrap_or_else(|| panic!("no {kind} {name} in {status:#}"))
}

fn condition<'a>(conditions: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} in {conditions:#}"))
}

#[tokio::test]
async fn backend_tls_policy_validates_the_backend_ca_hostname_and_subject_alt_names() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let (chain, key) = backend_cert(&ca);
    let backend = TlsEchoBackend::start("secure", &chain, &key, None).await;
    let port = free_port();
    let services = ["right", "wrong-ca", "wrong-name", "san-uri", "san-host", "san-wrong", "no-ca"];
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&http_gateway("web", port, "", &services));
    for s in services {
        yaml.push_str(&tls_service(s, backend.port()));
    }
    yaml.push_str(&ca_config_map("backend-ca", &ca.cert_pem));
    yaml.push_str(&ca_config_map("other-ca", &other_ca.cert_pem));
    let ca_ref = "caCertificateRefs: [{ group: \"\", kind: ConfigMap, name: backend-ca }]\n";
    yaml.push_str(&policy("right", "right", &format!("{ca_ref}hostname: backend.example.com\n")));
    yaml.push_str(&policy(
        "wrong-ca",
        "wrong-ca",
        "caCertificateRefs: [{ group: \"\", kind: ConfigMap, name: other-ca }]\nhostname: backend.example.com\n",
    ));
    yaml.push_str(&policy(
        "wrong-name",
        "wrong-name",
        &format!("{ca_ref}hostname: other.example.com\n"),
    ));
    yaml.push_str(&policy(
        "san-uri",
        "san-uri",
        &format!("{ca_ref}hostname: other.example.com\nsubjectAltNames:\n- type: URI\n  uri: {SPIFFE_ID}\n"),
    ));
    yaml.push_str(&policy(
        "san-host",
        "san-host",
        &format!("{ca_ref}hostname: other.example.com\nsubjectAltNames:\n- type: Hostname\n  hostname: backend.example.com\n"),
    ));
    yaml.push_str(&policy(
        "san-wrong",
        "san-wrong",
        &format!("{ca_ref}hostname: backend.example.com\nsubjectAltNames:\n- type: Hostname\n  hostname: nope.example.com\n- type: URI\n  uri: spiffe://elsewhere/x\n"),
    ));
    yaml.push_str(&policy(
        "no-ca",
        "no-ca",
        "caCertificateRefs: [{ group: \"\", kind: ConfigMap, name: missing }]\nhostname: backend.example.com\n",
    ));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/tls.yaml", &yaml)]).await;
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}/{path}");
        async move { Client::http1().get_host(&url, "app.example.com").await.unwrap() }
    };

    for ok in ["right", "san-uri", "san-host"] {
        let reply = get(ok).await;
        assert_eq!(reply.status, 200, "{ok}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.backend(), Some("secure"), "{ok}");
    }
    for bad in ["wrong-ca", "wrong-name", "san-wrong"] {
        assert_eq!(get(bad).await.status, 502, "{bad}");
    }
    assert_eq!(get("no-ca").await.status, 500, "an unusable policy fails its requests");
    let logs = gh.logs();
    assert!(logs.contains("backend TLS handshake failed"), "{logs}");
    assert!(logs.contains("BackendTLSPolicy default/wrong-ca"), "{logs}");

    let status = gh.status().await;
    let ancestor = &find(&status, "BackendTLSPolicy", "right")["status"]["ancestors"][0];
    assert_eq!(ancestor["ancestorRef"]["name"], "web");
    assert_eq!(ancestor["controllerName"], "gatehouse.dev/gateway-controller");
    assert_eq!(condition(&ancestor["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&ancestor["conditions"], "ResolvedRefs")["status"], "True");
    let broken = &find(&status, "BackendTLSPolicy", "no-ca")["status"]["ancestors"][0];
    let accepted = condition(&broken["conditions"], "Accepted");
    assert_eq!(
        (&accepted["status"], &accepted["reason"]),
        (&"False".into(), &"NoValidCACertificate".into())
    );
    let resolved = condition(&broken["conditions"], "ResolvedRefs");
    assert_eq!(resolved["reason"], "InvalidCACertificateRef", "{broken:#}");
    // The route itself is fine: only the policy says what is wrong.
    let route = &find(&status, "HTTPRoute", "web-routes")["status"]["parents"][0];
    assert_eq!(condition(&route["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&route["conditions"], "ResolvedRefs")["status"], "True");
}

#[tokio::test]
async fn gateway_presents_its_backend_client_certificate_to_tls_backends() {
    let ca = TestCa::new();
    let client_ca = TestCa::new();
    let (chain, key) = backend_cert(&ca);
    let backend = TlsEchoBackend::start("mtls", &chain, &key, Some(&client_ca.cert_pem)).await;
    let (with_port, without_port, broken_port) = (free_port(), free_port(), free_port());
    let (client_chain, client_key) = client_ca.leaf(&["gateway.example.com"]);
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&http_gateway(
        "with",
        with_port,
        "backend:\n  clientCertificateRef: { name: gateway-client }\n",
        &["mtls"],
    ));
    yaml.push_str(&http_gateway("without", without_port, "", &["mtls"]));
    yaml.push_str(&http_gateway(
        "broken",
        broken_port,
        "backend:\n  clientCertificateRef: { name: no-such-secret }\n",
        &["mtls"],
    ));
    yaml.push_str(&tls_service("mtls", backend.port()));
    yaml.push_str(&ca_config_map("backend-ca", &ca.cert_pem));
    yaml.push_str(&tls_secret("gateway-client", &client_chain, &client_key));
    yaml.push_str(&policy(
        "mtls",
        "mtls",
        "caCertificateRefs: [{ group: \"\", kind: ConfigMap, name: backend-ca }]\nhostname: backend.example.com\n",
    ));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/mtls.yaml", &yaml)]).await;

    let reply = Client::http1().get(&format!("http://127.0.0.1:{with_port}/mtls")).await.unwrap();
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("x-client-cert"), Some("present"));
    let reply =
        Client::http1().get(&format!("http://127.0.0.1:{without_port}/mtls")).await.unwrap();
    assert_eq!(reply.status, 502, "the backend refuses a gateway without a client certificate");

    let status = gh.status().await;
    let broken = &find(&status, "Gateway", "broken")["status"]["conditions"];
    let resolved = condition(broken, "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "InvalidClientCertificateRef");
    assert_eq!(condition(broken, "Accepted")["status"], "True");
    let with = &find(&status, "Gateway", "with")["status"]["conditions"];
    assert_eq!(condition(with, "ResolvedRefs")["status"], "True");
}

#[tokio::test]
async fn https_listeners_validate_client_certificates_strictly_or_with_insecure_fallback() {
    let server_ca = TestCa::new();
    let client_ca = TestCa::new();
    let rogue_ca = TestCa::new();
    let (server_chain, server_key) = server_ca.leaf(&["app.example.com"]);
    let (good_chain, good_key) = client_ca.leaf(&["client.example.com"]);
    let (rogue_chain, rogue_key) = rogue_ca.leaf(&["client.example.com"]);
    let echo = gatehouse_tests::EchoBackend::start("echo").await;
    let (strict, fallback, broken) = (free_port(), free_port(), free_port());
    let gateway = format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: mtls
  namespace: default
spec:
  gatewayClassName: gatehouse
  addresses: [{{ type: IPAddress, value: 127.0.0.1 }}]
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{{ group: "", kind: ConfigMap, name: client-ca }}]
      perPort:
      - port: {fallback}
        tls:
          validation:
            mode: AllowInsecureFallback
            caCertificateRefs: [{{ group: "", kind: ConfigMap, name: client-ca }}]
      - port: {broken}
        tls:
          validation:
            caCertificateRefs: [{{ group: "", kind: ConfigMap, name: missing }}]
  listeners:
  - name: strict
    port: {strict}
    protocol: HTTPS
    tls: {{ certificateRefs: [{{ name: server }}] }}
  - name: fallback
    port: {fallback}
    protocol: HTTPS
    tls: {{ certificateRefs: [{{ name: server }}] }}
  - name: broken
    port: {broken}
    protocol: HTTPS
    tls: {{ certificateRefs: [{{ name: server }}] }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
  namespace: default
spec:
  parentRefs: [{{ name: mtls }}]
  rules:
  - backendRefs: [{{ name: echo, port: 80 }}]
"#
    );
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&gateway);
    yaml.push_str(&crate::service("echo", "default", echo.port()));
    yaml.push_str(&tls_secret("server", &server_chain, &server_key));
    yaml.push_str(&ca_config_map("client-ca", &client_ca.cert_pem));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/mtls.yaml", &yaml)]).await;

    let client = || Client::tls(&server_ca.cert_pem, &["http/1.1"], Some("app.example.com"));
    let get = |client: Client, port: u16| async move {
        client.get_host(&format!("https://127.0.0.1:{port}/"), "app.example.com").await
    };
    let valid = || client().client_cert(&good_chain, &good_key);
    let invalid = || client().client_cert(&rogue_chain, &rogue_key);

    // AllowValidOnly: only a certificate from the listener's CA gets through.
    assert_eq!(get(valid(), strict).await.unwrap().status, 200);
    assert!(get(invalid(), strict).await.is_err(), "a certificate from another CA is refused");
    assert!(get(client(), strict).await.is_err(), "no certificate is refused");
    // AllowInsecureFallback: everyone is served.
    assert_eq!(get(valid(), fallback).await.unwrap().status, 200);
    assert_eq!(get(invalid(), fallback).await.unwrap().status, 200);
    assert_eq!(get(client(), fallback).await.unwrap().status, 200);

    // A listener whose CA refs all fail is not served, and says why.
    assert!(get(valid(), broken).await.is_err());
    let status = gh.status().await;
    let listener = find(&status, "Gateway", "mtls")["status"]["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "broken"))
        .expect("broken listener")
        .clone();
    let accepted = condition(&listener["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "NoValidCACertificate");
    let resolved = condition(&listener["conditions"], "ResolvedRefs");
    assert_eq!(resolved["reason"], "InvalidCACertificateRef");
}

/// Cluster mode: the policy and its CA come from the API server, and ConfigMaps are listed
/// only in the namespaces that reference them.
#[tokio::test]
async fn cluster_mode_reads_policies_and_lists_config_maps_only_where_referenced() {
    use gatehouse_tests::FakeKube;
    use serde_json::json;

    let ca = TestCa::new();
    let (chain, key) = backend_cert(&ca);
    let backend = TlsEchoBackend::start("secure", &chain, &key, None).await;
    let port = free_port();
    let kube = FakeKube::start().await;
    let gateway_api = "gateway.networking.k8s.io/v1";
    let config_map = |ns: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "ca", "namespace": ns}, "data": {"ca.crt": ca.cert_pem}})
    };
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
        json!({"apiVersion": gateway_api, "kind": "GatewayClass", "metadata": {"name": "gatehouse"},
               "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
        json!({"apiVersion": gateway_api, "kind": "Gateway",
               "metadata": {"name": "web", "namespace": "app"},
               "spec": {"gatewayClassName": "gatehouse",
                        "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                        "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}}),
        json!({"apiVersion": gateway_api, "kind": "HTTPRoute",
               "metadata": {"name": "secure", "namespace": "app"},
               "spec": {"parentRefs": [{"name": "web"}],
                        "rules": [{"backendRefs": [{"name": "secure", "port": 443}]}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "secure", "namespace": "app"},
               "spec": {"ports": [{"name": "https", "port": 443, "targetPort": backend.port()}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "secure-1", "namespace": "app",
                            "labels": {"kubernetes.io/service-name": "secure"}},
               "addressType": "IPv4", "ports": [{"name": "https", "port": backend.port()}],
               "endpoints": [{"addresses": ["127.0.0.1"]}]}),
        json!({"apiVersion": gateway_api, "kind": "BackendTLSPolicy",
               "metadata": {"name": "secure", "namespace": "app"},
               "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "secure"}],
                        "validation": {"caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "ca"}],
                                       "hostname": "backend.example.com"}}}),
        config_map("app"),
        config_map("other"),
    ] {
        kube.apply(object).await;
    }
    let config = "\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[runtime]\nshutdown_grace_ms = 1000\n[kubernetes]\nkubeconfig = \"kubeconfig\"\n";
    let gh = Appliance::start_ready(config, &[("kubeconfig", &kube.kubeconfig())]).await;
    let reply = Client::http1().get(&format!("http://127.0.0.1:{port}/")).await;
    let status = gh.status().await;
    let reply = reply.unwrap_or_else(|e| panic!("{e}\n{status:#}"));
    assert_eq!(reply.status, 200, "{}", gh.logs());
    assert_eq!(reply.backend(), Some("secure"));
    let lists: Vec<String> = kube
        .requests()
        .await
        .into_iter()
        .filter(|r| r.starts_with("LIST") && r.contains("configmaps"))
        .collect();
    assert!(!lists.is_empty());
    assert!(lists.iter().all(|r| r.contains("/namespaces/app/configmaps")), "{lists:#?}");
}
