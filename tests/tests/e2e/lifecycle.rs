//! Reloads, bad input, port conflicts, draining, the embedded default.

use std::time::Duration;

use gatehouse_tests::{Appliance, Client, EchoBackend, free_port, gatehouse_bin};

use crate::{gateway_api_config, manifests};

fn route(path: &str, service: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r-{service}
  namespace: default
spec:
  parentRefs: [{{ name: web }}]
  rules:
  - matches: [{{ path: {{ type: PathPrefix, value: {path} }} }}]
    backendRefs: [{{ name: {service}, port: 80 }}]
"#
    )
}

#[tokio::test]
async fn file_changes_reload_and_bad_input_keeps_the_last_good_config() {
    let one = EchoBackend::start("one").await;
    let two = EchoBackend::start("two").await;
    let port = free_port();
    let base = manifests(port, &[("one", one.port()), ("two", two.port())]);
    let gh = Appliance::start_ready(
        gateway_api_config(),
        &[("manifests/base.yaml", &base), ("manifests/routes/one.yaml", &route("/one", "one"))],
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert_eq!(Client::http1().get(&url("/one")).await.unwrap().backend(), Some("one"));
    assert_eq!(Client::http1().get(&url("/two")).await.unwrap().status, 404);

    // A new file in a watched directory is picked up.
    let generation = gh.status().await["generation"].as_u64().unwrap();
    gh.write("manifests/routes/two.yaml", &route("/two", "two"));
    let status = gh.wait_generation(generation).await;
    assert_eq!(status["last_reload"]["ok"], true);
    assert_eq!(Client::http1().get(&url("/two")).await.unwrap().backend(), Some("two"));

    // Broken YAML: the reload fails with the place named, the last good config serves.
    let generation = status["generation"].as_u64().unwrap();
    gh.write("manifests/routes/two.yaml", "kind: HTTPRoute\nmetadata: {name: [\n");
    let status = gh.wait_status(|s| s["last_reload"]["ok"] == false).await;
    assert_eq!(status["generation"].as_u64().unwrap(), generation);
    let errors = status["last_reload"]["errors"].to_string();
    assert!(errors.contains("two.yaml:"), "{errors}");
    assert_eq!(Client::http1().get(&url("/two")).await.unwrap().backend(), Some("two"));
    assert!(!status["objects"].as_array().unwrap().is_empty());

    // Unknown fields are rejected with the field path.
    gh.write(
        "manifests/routes/two.yaml",
        &route("/two", "two").replace("parentRefs", "parentRefz"),
    );
    let status =
        gh.wait_status(|s| s["last_reload"]["errors"].to_string().contains("parentRefz")).await;
    assert_eq!(status["generation"].as_u64().unwrap(), generation);

    // A duplicate object is an error naming both places.
    gh.write("manifests/routes/dup.yaml", &route("/one", "one"));
    gh.write("manifests/routes/two.yaml", &route("/two", "two"));
    let status =
        gh.wait_status(|s| s["last_reload"]["errors"].to_string().contains("dup.yaml")).await;
    let errors = status["last_reload"]["errors"].to_string();
    assert!(errors.contains("one.yaml"), "{errors}");
    std::fs::remove_file(gh.path("manifests/routes/dup.yaml")).unwrap();
    let status = gh.wait_status(|s| s["last_reload"]["ok"] == true).await;
    assert!(status["generation"].as_u64().unwrap() > generation);

    // The whole manifest directory vanishes: the reload fails, traffic is still served.
    let generation = status["generation"].as_u64().unwrap();
    std::fs::rename(gh.path("manifests"), gh.path("manifests.away")).unwrap();
    gh.signal("HUP");
    let status = gh.wait_status(|s| s["last_reload"]["ok"] == false).await;
    assert_eq!(status["generation"].as_u64().unwrap(), generation);
    assert!(status["last_reload"]["errors"].to_string().contains("manifests"));
    assert_eq!(Client::http1().get(&url("/one")).await.unwrap().backend(), Some("one"));

    // It comes back: served again without a restart.
    std::fs::rename(gh.path("manifests.away"), gh.path("manifests")).unwrap();
    gh.signal("HUP");
    gh.wait_status(|s| s["last_reload"]["ok"] == true).await;
    assert_eq!(Client::http1().get(&url("/two")).await.unwrap().backend(), Some("two"));
}

#[tokio::test]
async fn a_port_in_use_is_a_listener_condition() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let free = free_port();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
listeners = [
  {{ name = "taken", port = {port}, protocol = "HTTP" }},
  {{ name = "free", port = {free}, protocol = "HTTP" }},
]
"#
    );
    let gh = Appliance::start(&config, &[]);
    let status = gh.wait_status(|s| s["objects"].as_array().is_some_and(|o| !o.is_empty())).await;
    let gateway = &status["objects"].as_array().unwrap()[0];
    let taken_listener = gateway["status"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "taken")
        .unwrap()
        .clone();
    let accepted = taken_listener["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Accepted")
        .unwrap()
        .clone();
    assert_eq!(accepted["reason"], "PortUnavailable", "{taken_listener:#}");
    // The other listener serves (404: no routes).
    let reply = Client::http1().get(&format!("http://127.0.0.1:{free}/")).await.unwrap();
    assert_eq!(reply.status, 404);
    drop(taken);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let slow = EchoBackend::start("slow").await;
    let port = free_port();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
shutdown_grace_ms = 5000
[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
listeners = [{{ name = "http", port = {port}, protocol = "HTTP" }}]
[[routes]]
name = "slow"
parents = ["web"]
rules = [{{ backends = [{{ address = "127.0.0.1:{}" }}] }}]
"#,
        slow.port()
    );
    let mut gh = Appliance::start_ready(&config, &[]).await;
    let url = format!("http://127.0.0.1:{port}/?sleep_ms=700");
    let in_flight = tokio::spawn(async move { Client::http1().get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gh.signal("TERM");
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    let exit = gh.wait_exit(Duration::from_secs(10)).await;
    assert!(exit.success(), "{exit:?}\n{}", gh.logs());
    // No longer accepting.
    assert!(Client::http1().get(&format!("http://127.0.0.1:{port}/")).await.is_err());
}

#[tokio::test]
async fn reload_keeps_connections_in_flight() {
    let slow = EchoBackend::start("slow").await;
    let port = free_port();
    let config = |path: &str| {
        format!(
            r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
listeners = [{{ name = "http", port = {port}, protocol = "HTTP" }}]
[[routes]]
name = "slow"
parents = ["web"]
rules = [{{ matches = [{{ path = {{ prefix = "{path}" }} }}], backends = [{{ address = "127.0.0.1:{}" }}] }}]
"#,
            slow.port()
        )
    };
    let gh = Appliance::start_ready(&config("/"), &[]).await;
    let url = format!("http://127.0.0.1:{port}/?sleep_ms=800");
    let in_flight = tokio::spawn(async move { Client::http1().get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let generation = gh.status().await["generation"].as_u64().unwrap();
    std::fs::write(
        gh.path("gatehouse.toml"),
        config("/v2").replace("{admin}", &gh.admin.to_string()),
    )
    .unwrap();
    gh.wait_generation(generation).await;
    assert_eq!(in_flight.await.unwrap().unwrap().status, 200);
    let reply = Client::http1().get(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(reply.status, 404);
}

#[tokio::test]
async fn the_embedded_default_serves_status_through_the_demo_route() {
    // The default config uses fixed ports; skip if something else holds them.
    if std::net::TcpListener::bind("127.0.0.1:8080").is_err()
        || std::net::TcpListener::bind("127.0.0.1:9901").is_err()
    {
        eprintln!("skipped: 127.0.0.1:8080 or :9901 is in use");
        return;
    }
    let mut child = std::process::Command::new(gatehouse_bin())
        .arg("run")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // `/status` follows the first load by a moment (it is computed off the reload path): the
    // demo route may answer with the document from before it.
    let served = |body: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(body)
            .is_ok_and(|status| status["generation"].as_u64().unwrap_or(0) >= 1)
    };
    let reply = loop {
        match Client::http1().get("http://127.0.0.1:8080/status").await {
            Ok(reply) if reply.status == 200 && served(&reply.body) => break reply,
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => {
                let _ = child.kill();
                panic!("demo route never answered: {other:?}");
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let status: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
}
