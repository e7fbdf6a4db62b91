//! ListenerSets from YAML files: listeners attached from other namespaces per the Gateway's
//! `allowedListeners`, routes attached to them, their status.

use gatehouse_tests::{Appliance, Client, EchoBackend, free_port};
use serde_json::Value;

use crate::{GATEWAY_CLASS, gateway_api_config, service};

fn object<'a>(status: &'a Value, kind: &str, namespace: &str, name: &str) -> &'a Value {
    status["objects"]
        .as_array()
        .and_then(|objects| {
            objects.iter().find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && o["metadata"]["namespace"] == namespace
            })
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} in {status:#}"))
}

fn condition<'a>(conditions: &'a Value, kind: &str) -> (&'a str, &'a str) {
    let c = conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions:#}"));
    (c["status"].as_str().unwrap_or_default(), c["reason"].as_str().unwrap_or_default())
}

/// A Gateway in `infra` on `gw_port` (catch-all HTTP) that admits ListenerSets from namespaces
/// labelled `edge: allowed`; namespace `team-a` is, `team-b` is not.
fn gateway(gw_port: u16) -> String {
    format!(
        r#"{GATEWAY_CLASS}apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  labels: {{edge: allowed}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: team-b
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: infra
spec:
  gatewayClassName: gatehouse
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  allowedListeners:
    namespaces:
      from: Selector
      selector: {{matchLabels: {{edge: allowed}}}}
  listeners:
  - name: http
    port: {gw_port}
    protocol: HTTP
"#
    )
}

fn listener_set(namespace: &str, name: &str, created: &str, listeners: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: ListenerSet
metadata:
  name: {name}
  namespace: {namespace}
  creationTimestamp: "{created}"
spec:
  parentRef: {{name: edge, namespace: infra}}
  listeners:
{listeners}"#
    )
}

fn route_to_set(namespace: &str, name: &str, set: &str, section: &str, service: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: {namespace}
spec:
  parentRefs:
  - {{group: gateway.networking.k8s.io, kind: ListenerSet, name: {set}, sectionName: {section}}}
  rules:
  - backendRefs: [{{name: {service}, port: 80}}]
"#
    )
}

#[tokio::test]
async fn listener_set_from_another_namespace_serves_and_disallowed_ones_are_refused() {
    let app = EchoBackend::start("team-a-app").await;
    let shared = EchoBackend::start("team-a-shared").await;
    let denied = EchoBackend::start("team-b").await;
    let (gw_port, set_port) = (free_port(), free_port());

    let mut yaml = gateway(gw_port);
    yaml.push_str(&service("app", "team-a", app.port()));
    yaml.push_str(&service("shared", "team-a", shared.port()));
    yaml.push_str(&service("denied", "team-b", denied.port()));
    // team-a's set: a listener on a port of its own, one beside the Gateway's on its port.
    yaml.push_str(&listener_set(
        "team-a",
        "apps",
        "2026-01-01T00:00:00Z",
        &format!(
            "  - {{name: app, port: {set_port}, protocol: HTTP, hostname: app.example}}
  - {{name: shared, port: {gw_port}, protocol: HTTP, hostname: shared.example}}
"
        ),
    ));
    // A newer set in team-a whose only listener is the Gateway's own (catch-all on its port).
    yaml.push_str(&listener_set(
        "team-a",
        "clash",
        "2026-02-01T00:00:00Z",
        &format!("  - {{name: again, port: {gw_port}, protocol: HTTP}}\n"),
    ));
    yaml.push_str(&listener_set(
        "team-b",
        "denied",
        "2026-01-01T00:00:00Z",
        &format!("  - {{name: b, port: {gw_port}, protocol: HTTP, hostname: b.example}}\n"),
    ));
    yaml.push_str(&route_to_set("team-a", "app", "apps", "app", "app"));
    yaml.push_str(&route_to_set("team-a", "shared", "apps", "shared", "shared"));
    yaml.push_str(&route_to_set("team-b", "denied", "denied", "b", "denied"));

    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;

    // The set's own port serves its route, by the set's hostname.
    let url = format!("http://127.0.0.1:{set_port}/x");
    let reply = Client::http1().get_host(&url, "app.example").await.unwrap();
    assert_eq!(reply.status, 200, "{:?}\n{}", reply.body, gh.logs());
    assert_eq!(reply.backend(), Some("team-a-app"));
    // On the Gateway's port the set's hostname goes to the set's route…
    let url = format!("http://127.0.0.1:{gw_port}/x");
    let reply = Client::http1().get_host(&url, "shared.example").await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.backend(), Some("team-a-shared"));
    // …and the disallowed set's hostname reaches nothing.
    let reply = Client::http1().get_host(&url, "b.example").await.unwrap();
    assert_eq!(reply.status, 404, "{:?}", reply.body);

    let status = gh.status().await;
    let gw = object(&status, "Gateway", "infra", "edge");
    assert_eq!(gw["status"]["attachedListenerSets"], 1, "{gw:#}");
    assert_eq!(condition(&gw["status"]["conditions"], "Programmed"), ("True", "Programmed"));

    let apps = object(&status, "ListenerSet", "team-a", "apps");
    assert_eq!(condition(&apps["status"]["conditions"], "Accepted"), ("True", "Accepted"));
    assert_eq!(condition(&apps["status"]["conditions"], "Programmed"), ("True", "Programmed"));
    let listeners = apps["status"]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2);
    for l in listeners {
        assert_eq!(l["attachedRoutes"], 1, "{l:#}");
        assert_eq!(condition(&l["conditions"], "Programmed"), ("True", "Programmed"));
    }

    let clash = object(&status, "ListenerSet", "team-a", "clash");
    assert_eq!(
        condition(&clash["status"]["conditions"], "Accepted"),
        ("False", "ListenersNotValid")
    );
    let again = &clash["status"]["listeners"][0];
    assert_eq!(condition(&again["conditions"], "Conflicted"), ("True", "HostnameConflict"));
    assert_eq!(condition(&again["conditions"], "Accepted"), ("False", "HostnameConflict"));

    let denied_set = object(&status, "ListenerSet", "team-b", "denied");
    assert_eq!(condition(&denied_set["status"]["conditions"], "Accepted"), ("False", "NotAllowed"));
    assert_eq!(
        condition(&denied_set["status"]["conditions"], "Programmed"),
        ("False", "NotAllowed")
    );
    let route = object(&status, "HTTPRoute", "team-b", "denied");
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["parentRef"]["kind"], "ListenerSet");
    assert_eq!(condition(&parent["conditions"], "Accepted"), ("False", "NotAllowedByListeners"));
    let route = object(&status, "HTTPRoute", "team-a", "app");
    assert_eq!(condition(&route["status"]["parents"][0]["conditions"], "Accepted").0, "True");
}

/// Cluster mode: a ListenerSet and a route to it, read by the watches from a (fake) API
/// server, serve traffic; the ListenerSet's status is written back with server-side apply to
/// `listenersets/status`, and deleting it takes its listener away.
#[tokio::test]
async fn listener_sets_are_watched_and_their_status_written_in_cluster_mode() {
    use std::time::{Duration, Instant};

    use gatehouse_tests::FakeKube;
    use serde_json::json;

    const V1: &str = "gateway.networking.k8s.io/v1";
    let echo = EchoBackend::start("team-echo").await;
    let (gw_port, set_port) = (free_port(), free_port());
    let kube = FakeKube::start().await;
    let objects = [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "infra"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        json!({"apiVersion": V1, "kind": "GatewayClass", "metadata": {"name": "gatehouse"},
               "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
        json!({"apiVersion": V1, "kind": "Gateway",
               "metadata": {"name": "edge", "namespace": "infra", "generation": 1},
               "spec": {"gatewayClassName": "gatehouse",
                        "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                        "allowedListeners": {"namespaces": {"from": "All"}},
                        "listeners": [{"name": "http", "port": gw_port, "protocol": "HTTP"}]}}),
        json!({"apiVersion": V1, "kind": "ListenerSet",
               "metadata": {"name": "apps", "namespace": "team"},
               "spec": {"parentRef": {"name": "edge", "namespace": "infra"},
                        "listeners": [{"name": "app", "port": set_port, "protocol": "HTTP"}]}}),
        json!({"apiVersion": V1, "kind": "HTTPRoute",
               "metadata": {"name": "app", "namespace": "team"},
               "spec": {"parentRefs": [{"kind": "ListenerSet", "name": "apps"}],
                        "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "team"},
               "spec": {"ports": [{"port": 80, "targetPort": echo.port()}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "echo-1", "namespace": "team",
                            "labels": {"kubernetes.io/service-name": "echo"}},
               "addressType": "IPv4",
               "ports": [{"name": "", "port": echo.port()}],
               "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}),
    ];
    for object in objects {
        // The set's spec changes once after its create: the API server says generation 2.
        if object["kind"] == "ListenerSet" {
            let mut earlier = object.clone();
            earlier["spec"]["listeners"] = json!([]);
            kube.apply(earlier).await;
        }
        kube.apply(object).await;
    }
    let config = r#"
[admin]
listen = "127.0.0.1:{admin}"
[runtime]
shutdown_grace_ms = 1000
[kubernetes]
kubeconfig = "kubeconfig"
"#;
    let gh = Appliance::start_ready(config, &[("kubeconfig", &kube.kubeconfig())]).await;
    let url = format!("http://127.0.0.1:{set_port}/");
    let reply = Client::http1().get(&url).await.unwrap();
    assert_eq!(reply.status, 200, "{:?}\n{}", reply.body, gh.logs());
    assert_eq!(reply.backend(), Some("team-echo"));

    let path = format!("/apis/{V1}/namespaces/team/listenersets/apps/status");
    let deadline = Instant::now() + Duration::from_secs(10);
    let set = loop {
        let patched = kube.patches().await.iter().any(|p| p.path == path && p.answered == 200);
        let set = kube.object(V1, "ListenerSet", "team", "apps").await;
        let programmed = |s: &Value| {
            s["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter().any(|c| c["type"] == "Programmed" && c["status"] == "True")
            })
        };
        if let Some(set) = set.filter(|s| patched && programmed(s)) {
            break set;
        }
        assert!(Instant::now() < deadline, "no status at {path}: {:#?}", kube.patches().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(condition(&set["status"]["conditions"], "Accepted"), ("True", "Accepted"));
    let accepted = set["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Accepted"))
        .unwrap();
    assert_eq!(accepted["observedGeneration"], 2);
    assert_eq!(set["status"]["listeners"][0]["attachedRoutes"], 1);
    let patch = kube.patches().await.into_iter().find(|p| p.path == path).unwrap();
    assert_eq!(patch.content_type, "application/apply-patch+yaml");
    assert_eq!(patch.body["kind"], "ListenerSet");
    let gateway = kube.object(V1, "Gateway", "infra", "edge").await.unwrap();
    assert_eq!(gateway["status"]["attachedListenerSets"], 1, "{gateway:#}");

    kube.delete(V1, "ListenerSet", "team", "apps").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Client::http1().get(&url).await.is_ok() {
        assert!(Instant::now() < deadline, "{url} still served\n{}", gh.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
