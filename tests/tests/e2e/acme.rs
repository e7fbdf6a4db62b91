//! ACME end to end: the real binary obtains certificates by DNS-01 from Debian's pebble,
//! publishing challenges in bind9 (RFC 2136 + TSIG), and serves them over HTTPS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_tests::{
    Appliance, Bind9, Client, EchoBackend, Pebble, PebbleOptions, acme_peers_installed, free_port,
    pebble_issuer_toml,
};

fn config(pebble: &Pebble, bind: &Bind9, secret: &str, port: u16, echo: u16) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"

{issuer}
[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
  [[gateways.listeners]]
  name = "www"
  port = {port}
  protocol = "HTTPS"
  hostname = "www.example.test"
  tls = {{ acme = {{ issuer = "pebble" }} }}
  [[gateways.listeners]]
  name = "wildcard"
  port = {port}
  protocol = "HTTPS"
  hostname = "*.example.test"
  tls = {{ acme = {{ issuer = "pebble" }} }}

[[routes]]
name = "app"
parents = ["web"]
  [[routes.rules]]
  backends = [{{ address = "127.0.0.1:{echo}" }}]
"#,
        issuer = pebble_issuer_toml(pebble, bind, secret, 50),
    )
}

/// Every managed certificate in `/status` has been issued.
pub(crate) fn all_issued(status: &serde_json::Value, count: usize) -> bool {
    status["acme"]
        .as_array()
        .is_some_and(|certs| certs.len() == count && certs.iter().all(|c| c["not_after"].is_u64()))
}

/// GETs `https://127.0.0.1:port/` with SNI `host`, trusting `root`, until it answers 200
/// (the certificate goes live with the reload that follows issuance).
pub(crate) async fn wait_https(root: &str, port: u16, host: &str, appliance: &Appliance) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let client = Client::tls(root, &[], Some(host));
        match client.get_host(&format!("https://127.0.0.1:{port}/"), host).await {
            Ok(reply) if reply.status == 200 => return,
            other => assert!(
                Instant::now() < deadline,
                "HTTPS for {host} never answered: {other:?}\n{}",
                appliance.logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn listener<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["objects"]
        .as_array()
        .and_then(|objects| {
            objects.iter().find_map(|o| {
                o["status"]["listeners"].as_array()?.iter().find(|l| l["name"] == name)
            })
        })
        .unwrap_or(&serde_json::Value::Null)
}

pub(crate) fn condition<'a>(listener: &'a serde_json::Value, kind: &str) -> &'a serde_json::Value {
    listener["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&serde_json::Value::Null)
}

#[tokio::test]
async fn listeners_get_certificates_for_a_name_and_a_wildcard_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test", "example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let appliance = Appliance::start(&config(&pebble, &bind, &bind.secret, port, echo.port()), &[]);
    appliance.wait_status(|s| all_issued(s, 2)).await;
    let root = pebble.issuing_root_pem().await;
    wait_https(&root, port, "www.example.test", &appliance).await;
    wait_https(&root, port, "anything.example.test", &appliance).await;

    let status = appliance
        .wait_status(|s| condition(listener(s, "www"), "ResolvedRefs")["status"] == "True")
        .await;
    assert_eq!(condition(listener(&status, "wildcard"), "ResolvedRefs")["status"], "True");
    assert!(status["acme"].as_array().is_some_and(|c| c.iter().all(|c| c["last_error"].is_null())));
    // No challenge record is left behind.
    assert!(bind.txt_values("_acme-challenge.example.test.").is_empty());
    assert!(bind.txt_values("_acme-challenge.www.example.test.").is_empty());

    // `gatehouse certs` lists both from the state directory.
    let out = std::process::Command::new(gatehouse_tests::gatehouse_bin())
        .args(["certs", "--config"])
        .arg(appliance.path("gatehouse.toml"))
        .output()
        .expect("gatehouse certs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("www.example.test") && text.contains("*.example.test"), "{text}");
    assert!(text.contains("pebble"), "{text}");

    // The metrics tell the expiry and the issuance time.
    let metrics = Client::http1().get(&appliance.admin_url("/metrics")).await.expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(metrics.contains("gatehouse_acme_certificate_expiry_timestamp_seconds{"), "{metrics}");
    assert!(metrics.contains("gatehouse_acme_issuance_duration_seconds_count"), "{metrics}");
}

#[tokio::test]
async fn a_wrong_tsig_key_shows_in_status_then_recovers_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test", "example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let wrong = "d3Jvbmcgc2VjcmV0IHdyb25nIHNlY3JldCB3cm9uZyE=";
    let appliance = Appliance::start(&config(&pebble, &bind, wrong, port, echo.port()), &[]);
    let status = appliance
        .wait_status(|s| {
            let c = condition(listener(s, "www"), "ResolvedRefs");
            c["status"] == "False" && c["message"].as_str().is_some_and(|m| m.contains("TSIG"))
        })
        .await;
    let message = condition(listener(&status, "www"), "ResolvedRefs")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!message.contains("truncated"), "{message}");
    let cert = &status["acme"][0];
    assert_eq!(cert["last_error"]["reason"], "DNSError", "{cert}");
    assert!(cert["next_attempt"].is_u64(), "a retry is planned: {cert}");

    // The operator fixes the secret: the next reload retries at once and HTTPS comes up.
    let fixed = config(&pebble, &bind, &bind.secret, port, echo.port())
        .replace("{admin}", &appliance.admin.to_string());
    appliance.write("gatehouse.toml", &fixed);
    appliance.wait_status(|s| all_issued(s, 2)).await;
    wait_https(&pebble.issuing_root_pem().await, port, "www.example.test", &appliance).await;
    assert!(bind.txt_values("_acme-challenge.www.example.test.").is_empty());
}

#[tokio::test]
async fn renewal_swaps_the_certificate_without_a_failed_request_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test", "example.test"], "");
    // Short-lived certificates: renewal at about 2/3 of 24 s.
    // Renewal starts at two thirds of the lifetime; each failed attempt waits out a DNS timeout
    // (seconds): 30 s leave the old certificate valid while the test looks at it.
    let options = PebbleOptions { validity_seconds: Some(30), ..Default::default() };
    let pebble = Pebble::start(&bind.addr(), &options);
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let appliance = Appliance::start(&config(&pebble, &bind, &bind.secret, port, echo.port()), &[]);
    let first = appliance.wait_status(|s| all_issued(s, 2)).await;
    let root = pebble.issuing_root_pem().await;
    wait_https(&root, port, "www.example.test", &appliance).await;
    let not_after = |s: &serde_json::Value| -> Vec<u64> {
        s["acme"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["not_after"].as_u64()).collect())
            .unwrap_or_default()
    };
    let before = not_after(&first);

    // A small load: two clients, a fresh TLS connection per request, until both renewed.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for host in ["www.example.test", "load.example.test"] {
        let (stop, ok, failed, root) = (stop.clone(), ok.clone(), failed.clone(), root.clone());
        load.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let client = Client::tls(&root, &[], Some(host));
                match client.get_host(&format!("https://127.0.0.1:{port}/"), host).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            errors
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let status = appliance.status().await;
        let now = not_after(&status);
        if now.len() == 2 && now.iter().zip(&before).all(|(n, b)| n > b) {
            break;
        }
        assert!(Instant::now() < deadline, "no renewal; status {status:#}\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep the load on a little after the swap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in load {
        errors.extend(task.await.expect("load task"));
    }
    assert!(ok.load(Ordering::Relaxed) > 20, "too little load: {}", ok.load(Ordering::Relaxed));
    assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests: {errors:?}");
    // The renewed certificate serves.
    wait_https(&root, port, "www.example.test", &appliance).await;
}

#[tokio::test]
async fn dns_down_at_renewal_keeps_the_old_certificate_serving_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let mut bind = Bind9::start(&["www.example.test", "example.test"], "");
    // Renewal starts at two thirds of the lifetime; each failed attempt waits out a DNS timeout
    // (seconds): 30 s leave the old certificate valid while the test looks at it.
    let options = PebbleOptions { validity_seconds: Some(30), ..Default::default() };
    let pebble = Pebble::start(&bind.addr(), &options);
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let appliance = Appliance::start(&config(&pebble, &bind, &bind.secret, port, echo.port()), &[]);
    let first = appliance.wait_status(|s| all_issued(s, 2)).await;
    let root = pebble.issuing_root_pem().await;
    wait_https(&root, port, "www.example.test", &appliance).await;
    let first_expiry = first["acme"][0]["not_after"].as_u64().unwrap_or(0);

    // The DNS server goes away before the renewal is due: renewal fails with a clear reason.
    bind.stop();
    let deadline = Instant::now() + Duration::from_secs(40);
    // The certificates renew one after the other: the first to fail is the one to look at.
    let dns_error = |e: &&serde_json::Value| e["last_error"]["reason"] == "DNSError";
    let failed = loop {
        let status = appliance.status().await;
        if status["acme"].as_array().is_some_and(|a| a.iter().any(|e| dns_error(&e))) {
            break status;
        }
        assert!(Instant::now() < deadline, "renewal never failed: {status:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let entry = failed["acme"].as_array().and_then(|a| a.iter().find(dns_error)).unwrap();
    assert!(entry["next_attempt"].is_u64(), "a retry is planned: {entry}");
    // The listener still has its certificate: resolved, and HTTPS still answers with it.
    assert_eq!(condition(listener(&failed, "www"), "ResolvedRefs")["status"], "True");
    wait_https(&root, port, "www.example.test", &appliance).await;

    // DNS back: the retry renews, and nothing is left in the zone.
    bind.restart();
    let renewed = appliance
        .wait_status(|s| {
            s["acme"][0]["not_after"].as_u64().is_some_and(|t| t > first_expiry)
                && s["acme"][0]["last_error"].is_null()
        })
        .await;
    assert!(renewed["acme"][0]["failures"] == 0, "{}", renewed["acme"][0]);
    wait_https(&root, port, "www.example.test", &appliance).await;
    assert!(bind.txt_values("_acme-challenge.www.example.test.").is_empty());
    assert!(bind.txt_values("_acme-challenge.example.test.").is_empty());
}

#[tokio::test]
async fn cert_manager_annotations_on_a_gateway_get_certificates_with_pebble_and_bind9() {
    assert!(acme_peers_installed(), "pebble and bind9 are required: run make setup");
    let bind = Bind9::start(&["www.example.test", "example.test"], "");
    let pebble = Pebble::start(&bind.addr(), &PebbleOptions::default());
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    // A manifest written for cert-manager, unchanged: the annotation names our issuer.
    let manifests = format!(
        r#"{class}apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: default
  annotations:
    cert-manager.io/cluster-issuer: pebble
    cert-manager.io/renew-before: 360h
spec:
  gatewayClassName: gatehouse
  addresses: [{{ type: IPAddress, value: 127.0.0.1 }}]
  listeners:
  - name: www
    port: {port}
    protocol: HTTPS
    hostname: www.example.test
    tls:
      certificateRefs: [{{ name: web-tls }}]
  - name: wildcard
    port: {port}
    protocol: HTTPS
    hostname: "*.example.test"
    tls:
      certificateRefs: [{{ name: web-tls }}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
  namespace: default
spec:
  parentRefs: [{{ name: web }}]
  rules:
  - backendRefs: [{{ name: echo, port: 80 }}]
{service}"#,
        class = crate::GATEWAY_CLASS,
        service = crate::service("echo", "default", echo.port()),
    );
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"
[gateway_api]
manifests = ["manifests"]
[[acme.issuers]]
name = "pebble"
directory_url = "{directory}"
ca_roots = "{ca_roots}"
dns = {{ provider = "rfc2136", server = "{dns}", key_name = "{key}", secret = "{secret}" }}
propagation = {{ timeout_seconds = 10, interval_ms = 50, resolvers = ["{dns}"] }}
"#,
        directory = pebble.directory_url(),
        ca_roots = pebble.https_ca_path.display(),
        dns = bind.addr(),
        key = bind.key_name,
        secret = bind.secret,
    );
    let appliance = Appliance::start(&config, &[("manifests/web.yaml", &manifests)]);
    // One certificate for the Secret both listeners name, with both hostnames.
    let status = appliance.wait_status(|s| all_issued(s, 1)).await;
    assert_eq!(
        status["acme"][0]["names"],
        serde_json::json!(["www.example.test", "*.example.test"])
    );
    let root = pebble.issuing_root_pem().await;
    wait_https(&root, port, "www.example.test", &appliance).await;
    wait_https(&root, port, "api.example.test", &appliance).await;
    let status = appliance
        .wait_status(|s| condition(listener(s, "www"), "ResolvedRefs")["status"] == "True")
        .await;
    assert_eq!(condition(listener(&status, "wildcard"), "Programmed")["status"], "True");
}
