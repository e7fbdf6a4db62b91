//! GATEWAY-HTTP, TLS around the proxy: BackendTLSPolicy (CA, hostname, subjectAltNames,
//! status reasons, precedence), the Gateway's backend client certificate and client
//! certificate validation on HTTPS listeners (strict and insecure fallback). Cases follow
//! the spec's MUSTs and the reasons the upstream conformance tests check; the manifests are
//! ours.

use base64::Engine as _;
use gatehouse_tests::{Appliance, Client, EchoBackend, TestCa, TlsEchoBackend, free_port};
use rcgen::{CertificateParams, KeyPair, SanType};
use serde_json::Value;

use crate::{
    Case, GATEWAY_API_CONFIG, GATEWAY_CLASS, Outcome, case, condition, ensure, ensure_eq, object,
    run_profile, service,
};

const NS: &str = "tls";
const SPIFFE: &str = "spiffe://cluster.local/ns/tls/sa/backend";

/// One appliance, TLS backends with their own CAs, and the client certificates.
struct World {
    gh: Appliance,
    /// HTTP listener of Gateway `backends` (no client certificate).
    http: u16,
    /// HTTP listener of Gateway `with-client-cert` (presents `gateway-client`).
    mtls_http: u16,
    /// HTTPS listeners of Gateway `frontend`: strict, insecure fallback, broken CA refs, and
    /// its plain HTTP listener.
    strict: u16,
    fallback: u16,
    broken: u16,
    frontend_http: u16,
    server_ca: TestCa,
    client: (String, String),
    rogue: (String, String),
    _peers: (TlsEchoBackend, TlsEchoBackend, EchoBackend),
}

impl World {
    async fn get(&self, port: u16, path: &str) -> Result<u16, String> {
        let reply = Client::http1()
            .get_host(&format!("http://127.0.0.1:{port}{path}"), "app.example")
            .await?;
        Ok(reply.status)
    }

    async fn https(&self, port: u16, cert: Option<&(String, String)>) -> Result<u16, String> {
        let mut client = Client::tls(&self.server_ca.cert_pem, &["http/1.1"], Some("app.example"));
        if let Some((chain, key)) = cert {
            client = client.client_cert(chain, key);
        }
        Ok(client.get_host(&format!("https://127.0.0.1:{port}/"), "app.example").await?.status)
    }

    async fn policy_conditions(&self, name: &str) -> Result<Value, String> {
        let status = self.gh.status().await;
        let policy = object(&status, "BackendTLSPolicy", NS, name)?;
        let ancestor = policy["status"]["ancestors"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["ancestorRef"]["name"] == "backends"))
            .ok_or_else(|| format!("no ancestor `backends` in {}", policy["status"]))?;
        ensure_eq!(ancestor["ancestorRef"]["kind"], "Gateway", "ancestorRef kind");
        ensure_eq!(
            ancestor["controllerName"],
            "gatehouse.dev/gateway-controller",
            "controllerName"
        );
        Ok(ancestor["conditions"].clone())
    }

    async fn expect_policy(
        &self,
        name: &str,
        accepted: (&str, &str),
        resolved: (&str, &str),
    ) -> Outcome {
        let conditions = self.policy_conditions(name).await?;
        let (s, r) = condition(&conditions, "Accepted")?;
        ensure_eq!((s.as_str(), r.as_str()), accepted, "{name} Accepted");
        let (s, r) = condition(&conditions, "ResolvedRefs")?;
        ensure_eq!((s.as_str(), r.as_str()), resolved, "{name} ResolvedRefs");
        Ok(())
    }
}

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect()
}

fn config_map(name: &str, ca: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {NS}\ndata:\n  ca.crt: |\n{}",
        indent(ca, 4)
    )
}

fn tls_secret(name: &str, (chain, key): &(String, String)) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NS}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(chain),
        b64(key)
    )
}

/// A Service with one port named `https` whose endpoint is 127.0.0.1:`port`.
fn tls_service(name: &str, port: u16) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  ports:\n  - name: https\n    port: 443\n    targetPort: {port}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {NS}\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: https\n  port: {port}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n"
    )
}

/// A BackendTLSPolicy on the Service of the same name (`created`: creation time).
fn policy(name: &str, service: &str, created: &str, validation: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata:\n  name: {name}\n  namespace: {NS}\n  creationTimestamp: \"{created}\"\nspec:\n  targetRefs:\n  - {{ group: \"\", kind: Service, name: {service} }}\n  validation:\n{}",
        indent(validation, 4)
    )
}

/// An HTTPRoute on `gateway` sending `/<service>` to each Service's port 443.
fn route(name: &str, gateway: &str, services: &[&str]) -> String {
    let rules: String = services
        .iter()
        .map(|s| format!("  - matches: [{{ path: {{ type: PathPrefix, value: /{s} }} }}]\n    backendRefs: [{{ name: {s}, port: 443 }}]\n"))
        .collect();
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  parentRefs: [{{ name: {gateway} }}]\n  rules:\n{rules}"
    )
}

fn http_gateway(name: &str, port: u16, tls: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  gatewayClassName: gatehouse\n  addresses: [{{ type: IPAddress, value: 127.0.0.1 }}]\n{tls}  listeners:\n  - {{ name: http, port: {port}, protocol: HTTP }}\n"
    )
}

const SERVICES: &[&str] = &[
    "valid",
    "nonexistent-ca",
    "malformed-ca",
    "invalid-kind",
    "wrong-hostname",
    "san-uri",
    "san-hostname",
    "san-mismatch",
    "conflict",
    "system",
    "mtls",
];

async fn world() -> World {
    let backend_ca = TestCa::new();
    let server_ca = TestCa::new();
    let client_ca = TestCa::new();
    let rogue_ca = TestCa::new();
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["backend.example".to_owned()]).expect("params");
    params.subject_alt_names.push(SanType::URI(SPIFFE.try_into().expect("uri")));
    let backend_cert = (backend_ca.sign(params, &key), key.serialize_pem());
    let tls = TlsEchoBackend::start("tls", &backend_cert.0, &backend_cert.1, None).await;
    let mtls =
        TlsEchoBackend::start("mtls", &backend_cert.0, &backend_cert.1, Some(&client_ca.cert_pem))
            .await;
    let echo = EchoBackend::start("echo").await;
    let client = client_ca.leaf(&["client.example"]);
    let rogue = rogue_ca.leaf(&["client.example"]);
    let gateway_client = client_ca.leaf(&["gateway.example"]);
    let server = server_ca.leaf(&["app.example"]);
    let [http, mtls_http, strict, fallback, broken, frontend_http] = [(); 6].map(|()| free_port());

    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n"));
    yaml.push_str(&http_gateway("backends", http, ""));
    yaml.push_str(&http_gateway(
        "with-client-cert",
        mtls_http,
        "  tls:\n    backend:\n      clientCertificateRef: { name: gateway-client }\n",
    ));
    yaml.push_str(&http_gateway(
        "bad-client-cert",
        free_port(),
        "  tls:\n    backend:\n      clientCertificateRef: { name: missing-secret }\n",
    ));
    yaml.push_str(&route("backends", "backends", SERVICES));
    yaml.push_str(&route("with-client-cert", "with-client-cert", &["mtls"]));
    for s in SERVICES {
        let port = if *s == "mtls" { mtls.addr.port() } else { tls.addr.port() };
        yaml.push_str(&tls_service(s, port));
    }
    yaml.push_str(&config_map("backend-ca", &backend_ca.cert_pem));
    yaml.push_str(&config_map(
        "malformed",
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    ));
    yaml.push_str(&config_map("client-ca", &client_ca.cert_pem));
    let ca = "caCertificateRefs: [{ group: \"\", kind: ConfigMap, name: backend-ca }]\n";
    let t0 = "2026-01-01T00:00:00Z";
    let t1 = "2026-01-02T00:00:00Z";
    for (name, service, created, validation) in [
        ("valid", "valid", t0, format!("{ca}hostname: backend.example\n")),
        ("nonexistent-ca", "nonexistent-ca", t0, "caCertificateRefs: [{ group: \"\", kind: ConfigMap, name: nope }]\nhostname: backend.example\n".to_owned()),
        ("malformed-ca", "malformed-ca", t0, "caCertificateRefs: [{ group: \"\", kind: ConfigMap, name: malformed }]\nhostname: backend.example\n".to_owned()),
        ("invalid-kind", "invalid-kind", t0, "caCertificateRefs: [{ group: example.com, kind: Bundle, name: backend-ca }]\nhostname: backend.example\n".to_owned()),
        ("wrong-hostname", "wrong-hostname", t0, format!("{ca}hostname: other.example\n")),
        ("san-uri", "san-uri", t0, format!("{ca}hostname: other.example\nsubjectAltNames:\n- {{ type: URI, uri: \"{SPIFFE}\" }}\n")),
        ("san-hostname", "san-hostname", t0, format!("{ca}hostname: other.example\nsubjectAltNames:\n- {{ type: Hostname, hostname: backend.example }}\n")),
        ("san-mismatch", "san-mismatch", t0, format!("{ca}hostname: backend.example\nsubjectAltNames:\n- {{ type: Hostname, hostname: nope.example }}\n")),
        ("conflict-older", "conflict", t0, format!("{ca}hostname: backend.example\n")),
        ("conflict-newer", "conflict", t1, format!("{ca}hostname: other.example\n")),
        ("system", "system", t0, "wellKnownCACertificates: System\nhostname: backend.example\n".to_owned()),
        ("mtls", "mtls", t0, format!("{ca}hostname: backend.example\n")),
    ] {
        yaml.push_str(&policy(name, service, created, &validation));
    }
    yaml.push_str(&tls_secret("gateway-client", &gateway_client));
    yaml.push_str(&tls_secret("server", &server));
    yaml.push_str(&format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: frontend
  namespace: {NS}
spec:
  gatewayClassName: gatehouse
  addresses: [{{ type: IPAddress, value: 127.0.0.1 }}]
  tls:
    frontend:
      default:
        validation:
          caCertificateRefs: [{{ kind: ConfigMap, name: client-ca }}]
      perPort:
      - port: {fallback}
        tls:
          validation:
            mode: AllowInsecureFallback
            caCertificateRefs: [{{ kind: ConfigMap, name: client-ca }}]
      - port: {broken}
        tls:
          validation:
            caCertificateRefs: [{{ kind: ConfigMap, name: nope }}]
  listeners:
  - {{ name: strict, port: {strict}, protocol: HTTPS, tls: {{ certificateRefs: [{{ name: server }}] }} }}
  - {{ name: fallback, port: {fallback}, protocol: HTTPS, tls: {{ certificateRefs: [{{ name: server }}] }} }}
  - {{ name: broken, port: {broken}, protocol: HTTPS, tls: {{ certificateRefs: [{{ name: server }}] }} }}
  - {{ name: http, port: {frontend_http}, protocol: HTTP }}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: frontend
  namespace: {NS}
spec:
  parentRefs: [{{ name: frontend }}]
  rules:
  - backendRefs: [{{ name: echo, port: 80 }}]
"#
    ));
    yaml.push_str(&service(NS, "echo", echo.addr.port()));
    let gh = Appliance::start_ready(GATEWAY_API_CONFIG, &[("manifests/tls.yaml", &yaml)]).await;
    World {
        gh,
        http,
        mtls_http,
        strict,
        fallback,
        broken,
        frontend_http,
        server_ca,
        client,
        rogue,
        _peers: (tls, mtls, echo),
    }
}

async fn policy_with_valid_ca_serves(w: &World) -> Outcome {
    ensure_eq!(w.get(w.http, "/valid").await?, 200, "backend validated against its CA");
    w.expect_policy("valid", ("True", "Accepted"), ("True", "ResolvedRefs")).await
}

async fn invalid_ca_certificate_refs(w: &World) -> Outcome {
    for name in ["nonexistent-ca", "malformed-ca"] {
        let code = w.get(w.http, &format!("/{name}")).await?;
        ensure!((500..=503).contains(&code), "{name}: expected a 5xx, got {code}");
        w.expect_policy(
            name,
            ("False", "NoValidCACertificate"),
            ("False", "InvalidCACertificateRef"),
        )
        .await?;
    }
    Ok(())
}

async fn invalid_ca_kind(w: &World) -> Outcome {
    let code = w.get(w.http, "/invalid-kind").await?;
    ensure!((500..=503).contains(&code), "expected a 5xx, got {code}");
    w.expect_policy("invalid-kind", ("False", "NoValidCACertificate"), ("False", "InvalidKind"))
        .await
}

async fn hostname_must_match_the_certificate(w: &World) -> Outcome {
    let code = w.get(w.http, "/wrong-hostname").await?;
    ensure!((500..=503).contains(&code), "expected a 5xx, got {code}");
    Ok(())
}

async fn subject_alt_names_replace_the_hostname(w: &World) -> Outcome {
    ensure_eq!(w.get(w.http, "/san-uri").await?, 200, "URI SAN");
    ensure_eq!(w.get(w.http, "/san-hostname").await?, 200, "Hostname SAN");
    let code = w.get(w.http, "/san-mismatch").await?;
    ensure!((500..=503).contains(&code), "no SAN matches (the hostname would): got {code}");
    w.expect_policy("san-uri", ("True", "Accepted"), ("True", "ResolvedRefs")).await
}

async fn older_policy_wins_a_conflict(w: &World) -> Outcome {
    ensure_eq!(w.get(w.http, "/conflict").await?, 200, "the older, valid policy applies");
    w.expect_policy("conflict-older", ("True", "Accepted"), ("True", "ResolvedRefs")).await?;
    let conditions = w.policy_conditions("conflict-newer").await?;
    let (s, r) = condition(&conditions, "Accepted")?;
    ensure_eq!((s.as_str(), r.as_str()), ("False", "Conflicted"), "conflict-newer Accepted");
    Ok(())
}

async fn system_trust_store_does_not_trust_a_private_ca(w: &World) -> Outcome {
    // 502: the handshake ran against the host's store and refused the private CA (a store
    // that could not be read would make the backend unusable: 500).
    ensure_eq!(w.get(w.http, "/system").await?, 502, "private CA against the system store");
    w.expect_policy("system", ("True", "Accepted"), ("True", "ResolvedRefs")).await
}

async fn gateway_presents_its_client_certificate(w: &World) -> Outcome {
    let reply = Client::http1()
        .get_host(&format!("http://127.0.0.1:{}/mtls", w.mtls_http), "app.example")
        .await?;
    ensure_eq!(reply.status, 200, "mTLS backend behind a Gateway with a client certificate");
    ensure_eq!(reply.header("x-client-cert"), Some("present"), "client certificate seen");
    let code = w.get(w.http, "/mtls").await?;
    ensure!((500..=503).contains(&code), "without a client certificate: got {code}");
    let status = w.gh.status().await;
    let gateway = object(&status, "Gateway", NS, "bad-client-cert")?;
    let (s, r) = condition(&gateway["status"]["conditions"], "ResolvedRefs")?;
    ensure_eq!((s.as_str(), r.as_str()), ("False", "InvalidClientCertificateRef"), "ResolvedRefs");
    let (s, _) = condition(&gateway["status"]["conditions"], "Accepted")?;
    ensure_eq!(s, "True", "a bad client certificate ref keeps the Gateway accepted");
    Ok(())
}

async fn frontend_validation_allows_valid_only(w: &World) -> Outcome {
    ensure_eq!(w.https(w.strict, Some(&w.client)).await?, 200, "valid client certificate");
    ensure!(
        w.https(w.strict, Some(&w.rogue)).await.is_err(),
        "certificate from another CA accepted"
    );
    ensure!(w.https(w.strict, None).await.is_err(), "no certificate accepted");
    Ok(())
}

async fn frontend_validation_insecure_fallback(w: &World) -> Outcome {
    ensure_eq!(w.https(w.fallback, Some(&w.client)).await?, 200, "valid certificate");
    ensure_eq!(w.https(w.fallback, Some(&w.rogue)).await?, 200, "invalid certificate");
    ensure_eq!(w.https(w.fallback, None).await?, 200, "no certificate");
    Ok(())
}

async fn invalid_frontend_validation_only_affects_https(w: &World) -> Outcome {
    ensure_eq!(w.get(w.frontend_http, "/").await?, 200, "HTTP listener unaffected");
    ensure!(w.https(w.broken, Some(&w.client)).await.is_err(), "broken listener served");
    let status = w.gh.status().await;
    let gateway = object(&status, "Gateway", NS, "frontend")?;
    let listener = gateway["status"]["listeners"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "broken"))
        .ok_or("no listener `broken`")?;
    let (s, r) = condition(&listener["conditions"], "Accepted")?;
    ensure_eq!((s.as_str(), r.as_str()), ("False", "NoValidCACertificate"), "Accepted");
    let (s, r) = condition(&listener["conditions"], "ResolvedRefs")?;
    ensure_eq!((s.as_str(), r.as_str()), ("False", "InvalidCACertificateRef"), "ResolvedRefs");
    Ok(())
}

#[tokio::test]
async fn gateway_http_tls_profile() {
    let world = world().await;
    let cases: &[Case<World>] = &[
        case!("policy_with_valid_ca_serves", ["BackendTLSPolicy"], policy_with_valid_ca_serves),
        case!("invalid_ca_certificate_refs", ["BackendTLSPolicy"], invalid_ca_certificate_refs),
        case!("invalid_ca_kind", ["BackendTLSPolicy"], invalid_ca_kind),
        case!(
            "hostname_must_match_the_certificate",
            ["BackendTLSPolicy"],
            hostname_must_match_the_certificate
        ),
        case!(
            "subject_alt_names_replace_the_hostname",
            ["BackendTLSPolicySANValidation"],
            subject_alt_names_replace_the_hostname
        ),
        case!("older_policy_wins_a_conflict", ["BackendTLSPolicy"], older_policy_wins_a_conflict),
        case!(
            "system_trust_store_does_not_trust_a_private_ca",
            ["BackendTLSPolicy"],
            system_trust_store_does_not_trust_a_private_ca
        ),
        case!(
            "gateway_presents_its_client_certificate",
            ["GatewayBackendClientCertificate"],
            gateway_presents_its_client_certificate
        ),
        case!(
            "frontend_validation_allows_valid_only",
            ["GatewayFrontendClientCertificateValidation"],
            frontend_validation_allows_valid_only
        ),
        case!(
            "frontend_validation_insecure_fallback",
            ["GatewayFrontendClientCertificateValidationInsecureFallback"],
            frontend_validation_insecure_fallback
        ),
        case!(
            "invalid_frontend_validation_only_affects_https",
            ["GatewayFrontendClientCertificateValidation"],
            invalid_frontend_validation_only_affects_https
        ),
    ];
    run_profile("GATEWAY-HTTP-TLS", &world, cases).await;
}
