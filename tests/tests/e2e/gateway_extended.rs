//! Extended features of GATEWAY-HTTP: a listener on 8080, static addresses (and the status of
//! ones that cannot be served), an address left empty for a pool to fill, the retry backoff.

use std::path::Path;
use std::time::Duration;

use gatehouse_tests::{Appliance, Client, EchoBackend, ScriptedBackend, Step, free_port};
use serde_json::Value;

use crate::{GATEWAY_CLASS, gateway_api_config, service};

/// A Gateway `web` with one HTTP listener on `port` and these `spec.addresses` values, and a
/// route to Service `echo`.
fn manifests(echo_port: u16, port: u16, addresses: &[&str]) -> String {
    let addresses: String =
        addresses.iter().map(|a| format!("  - type: IPAddress\n    value: \"{a}\"\n")).collect();
    let mut out = GATEWAY_CLASS.to_owned();
    out.push_str(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: web
  namespace: default
spec:
  gatewayClassName: gatehouse
  addresses:
{addresses}  listeners:
  - name: http
    port: {port}
    protocol: HTTP
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: app
  namespace: default
spec:
  parentRefs: [{{name: web}}]
  rules:
  - backendRefs: [{{name: echo, port: 80}}]
"#
    ));
    out.push_str(&service("echo", "default", echo_port));
    out
}

fn gateway(status: &Value) -> &Value {
    status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == "Gateway" && o["metadata"]["name"] == "web"))
        .unwrap_or_else(|| panic!("no Gateway web in {status:#}"))
}

fn condition(status: &Value, type_: &str) -> (String, String) {
    let conditions =
        gateway(status)["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let c = conditions
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} in {status:#}"));
    (
        c["status"].as_str().unwrap_or_default().into(),
        c["reason"].as_str().unwrap_or_default().into(),
    )
}

fn addresses(status: &Value) -> Vec<String> {
    gateway(status)["status"]["addresses"]
        .as_array()
        .map(|l| l.iter().filter_map(|a| a["value"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// GatewayPort8080 and GatewayStaticAddresses: the requested loopback address (not
/// 127.0.0.1) serves on 8080; an address no socket can serve (multicast) is left out of the
/// status addresses with Programmed=False/AddressNotUsable, the Gateway stays accepted, and
/// dropping it makes the Gateway programmed; a Hostname address is not accepted.
#[tokio::test]
async fn port_8080_on_a_static_address_serves_and_unusable_addresses_are_reported() {
    let echo = EchoBackend::start("echo").await;
    let static_ip = "127.0.80.80";
    let yaml = manifests(echo.port(), 8080, &[static_ip, "224.0.0.7"]);
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;

    let reply = Client::http1().get(&format!("http://{static_ip}:8080/x")).await.unwrap();
    assert_eq!(reply.status, 200, "{:?}\n{}", reply.body, gh.logs());
    assert_eq!(reply.backend(), Some("echo"));

    let status = gh.status().await;
    assert_eq!(condition(&status, "Accepted"), ("True".into(), "Accepted".into()));
    assert_eq!(condition(&status, "Programmed"), ("False".into(), "AddressNotUsable".into()));
    assert_eq!(addresses(&status), [static_ip]);
    let generation = status["generation"].as_u64().unwrap();

    gh.write("manifests/all.yaml", &manifests(echo.port(), 8080, &[static_ip]));
    let status = gh.wait_generation(generation).await;
    assert_eq!(condition(&status, "Programmed"), ("True".into(), "Programmed".into()));
    assert_eq!(addresses(&status), [static_ip]);
    let generation = status["generation"].as_u64().unwrap();

    let hostname = manifests(echo.port(), 8080, &[static_ip]).replace(
        "  - type: IPAddress\n    value: \"127.0.80.80\"\n",
        "  - type: Hostname\n    value: lb.example\n",
    );
    gh.write("manifests/all.yaml", &hostname);
    let status = gh.wait_generation(generation).await;
    assert_eq!(condition(&status, "Accepted"), ("False".into(), "UnsupportedAddress".into()));
}

/// GatewayAddressEmpty: an IPAddress entry with an empty value is filled from an address
/// pool, reported in the status addresses, and served.
#[tokio::test]
async fn an_empty_address_is_assigned_from_a_pool() {
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
shutdown_grace_ms = 1000
state_dir = "{}"
[gateway_api]
manifests = ["manifests"]
[[ipam.pools]]
name = "empty-address"
cidrs = ["127.0.81.0/30"]
"#,
        Path::new("state").display()
    );
    let yaml = manifests(echo.port(), port, &[""]);
    let gh = Appliance::start_ready(&config, &[("manifests/all.yaml", &yaml)]).await;
    let status = gh
        .wait_status(|s| {
            s["objects"].as_array().is_some_and(|o| !o.is_empty())
                && condition(s, "Programmed").0 == "True"
        })
        .await;
    let assigned = addresses(&status);
    assert_eq!(assigned.len(), 1, "{status:#}");
    assert!(assigned[0].starts_with("127.0.81."), "{assigned:?}");
    let reply = Client::http1().get(&format!("http://{}:{port}/", assigned[0])).await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.backend(), Some("echo"));
}

/// HTTPRouteRetryBackoff: the backend sees the retry no earlier than the backoff after it saw
/// the first try (a lower bound the proxy guarantees, so no flaky upper bound is asserted).
#[tokio::test]
async fn retries_wait_the_backoff_before_trying_again() {
    let flaky = ScriptedBackend::start("flaky", vec![Step::Status(503)]).await;
    let port = free_port();
    let yaml = manifests(flaky.port(), port, &["127.0.0.1"]).replace(
        "  - backendRefs: [{name: echo, port: 80}]\n",
        "  - backendRefs: [{name: echo, port: 80}]\n    retry: { codes: [503], attempts: 1, backoff: 400ms }\n",
    );
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let reply = Client::http1().get(&format!("http://127.0.0.1:{port}/")).await.unwrap();
    assert_eq!(reply.status, 200, "{:?}\n{}", reply.body, gh.logs());
    let seen = flaky.requests().await;
    assert_eq!(seen.len(), 2, "one try, one retry");
    let pause = seen[1].at.duration_since(seen[0].at);
    assert!(pause >= Duration::from_millis(400), "retried after {pause:?}, before the backoff");
}

/// HTTPRouteDestinationPortMatching: two listeners on two ports share a hostname; a route
/// whose parentRef names a port serves only requests to that port; a parentRef port no
/// listener has is `Accepted=False/NoMatchingParent` and attaches nowhere.
#[tokio::test]
async fn parent_ref_ports_match_requests_by_destination_port() {
    let one = EchoBackend::start("one").await;
    let two = EchoBackend::start("two").await;
    let (p1, p2, none) = (free_port(), free_port(), free_port());
    let mut yaml = GATEWAY_CLASS.to_owned();
    yaml.push_str(&format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: default}}
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: first, port: {p1}, protocol: HTTP, hostname: shared.example}}
  - {{name: second, port: {p2}, protocol: HTTP, hostname: shared.example}}
"#
    ));
    for (name, port) in [("one", p1), ("two", p2), ("nowhere", none)] {
        yaml.push_str(&format!(
            r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: web, port: {port}}}]
  hostnames: [shared.example]
  rules:
  - backendRefs: [{{name: {name}, port: 80}}]
"#
        ));
    }
    yaml.push_str(&service("one", "default", one.port()));
    yaml.push_str(&service("two", "default", two.port()));
    yaml.push_str(&service("nowhere", "default", one.port()));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;

    for (port, backend) in [(p1, "one"), (p2, "two")] {
        let url = format!("http://127.0.0.1:{port}/");
        let reply = Client::http1().get_host(&url, "shared.example").await.unwrap();
        assert_eq!(reply.status, 200, "{:?}\n{}", reply.body, gh.logs());
        assert_eq!(reply.backend(), Some(backend), "request to port {port}");
    }

    let status = gh.status().await;
    let listeners = gateway(&status)["status"]["listeners"].as_array().cloned().unwrap();
    assert!(listeners.iter().all(|l| l["attachedRoutes"] == 1), "{listeners:#?}");
    let route = status["objects"]
        .as_array()
        .and_then(|o| {
            o.iter().find(|o| o["kind"] == "HTTPRoute" && o["metadata"]["name"] == "nowhere")
        })
        .unwrap();
    let accepted = route["status"]["parents"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .unwrap();
    assert_eq!(
        (&accepted["status"], &accepted["reason"]),
        (&"False".into(), &"NoMatchingParent".into())
    );
}
