//! Gateway API objects from YAML files: routing, backends, status.

use gatehouse_tests::{Appliance, Client, EchoBackend, free_port};
use serde_json::Value;

use crate::{gateway_api_config, manifests, service};

fn route(name: &str, namespace: &str, body: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: {namespace}
spec:
  parentRefs:
  - name: web
    namespace: default
{body}"#
    )
}

fn object<'a>(status: &'a Value, kind: &str, namespace: &str, name: &str) -> &'a Value {
    status["objects"]
        .as_array()
        .and_then(|objects| {
            objects.iter().find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && (o["metadata"]["namespace"] == namespace
                        || (namespace.is_empty() && o["metadata"]["namespace"].is_null()))
            })
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} in {status:#}"))
}

fn condition<'a>(conditions: &'a Value, kind: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition in {conditions:#}"))
}

#[tokio::test]
async fn serves_routes_and_reports_status() {
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let mut yaml = manifests(port, &[("echo", echo.port())]);
    yaml.push_str(&route(
        "app",
        "default",
        r#"  hostnames: ["app.example.com"]
  rules:
  - matches:
    - path: { type: PathPrefix, value: /app }
    backendRefs:
    - name: echo
      port: 80
  - matches:
    - path: { type: PathPrefix, value: /missing }
    backendRefs:
    - name: nowhere
      port: 80
"#,
    ));
    yaml.push_str(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: someone-else
spec:
  controllerName: example.com/other
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: theirs
  namespace: default
spec:
  gatewayClassName: someone-else
  listeners:
  - name: http
    port: 1
    protocol: HTTP
"#,
    );
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let reply = Client::http1().get_host(&url("/app/x"), "app.example.com").await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.backend(), Some("echo"));
    let reply = Client::http1().get_host(&url("/missing"), "app.example.com").await.unwrap();
    assert_eq!(reply.status, 500);

    let status = gh.status().await;
    let class = object(&status, "GatewayClass", "", "gatehouse");
    assert_eq!(condition(&class["status"]["conditions"], "Accepted")["status"], "True");
    let gateway = object(&status, "Gateway", "default", "web");
    assert_eq!(condition(&gateway["status"]["conditions"], "Accepted")["status"], "True");
    assert_eq!(condition(&gateway["status"]["conditions"], "Programmed")["status"], "True");
    let listener = &gateway["status"]["listeners"][0];
    assert_eq!(listener["attachedRoutes"], 1);
    assert_eq!(condition(&listener["conditions"], "Programmed")["status"], "True");
    let route = object(&status, "HTTPRoute", "default", "app");
    let parent = &route["status"]["parents"][0];
    assert_eq!(parent["parentRef"]["kind"], "Gateway");
    assert_eq!(parent["parentRef"]["group"], "gateway.networking.k8s.io");
    assert_eq!(condition(&parent["conditions"], "Accepted")["status"], "True");
    let resolved = condition(&parent["conditions"], "ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");

    // Objects of other controllers are not ours and not listed.
    let objects = status["objects"].as_array().unwrap();
    assert!(!objects.iter().any(|o| o["metadata"]["name"] == "theirs"));
    assert!(!objects.iter().any(|o| o["metadata"]["name"] == "someone-else"));
}

#[tokio::test]
async fn endpoints_grants_and_weights() {
    let a = EchoBackend::start("a").await;
    let b = EchoBackend::start("b").await;
    let port = free_port();
    let mut yaml = manifests(port, &[("a", a.port()), ("b", b.port())]);
    yaml.push_str(&service("other", "elsewhere", b.port()));
    // A Service whose only endpoint is not ready.
    yaml.push_str(&service("notready", "default", a.port()).replace("ready: true", "ready: false"));
    yaml.push_str(&route(
        "weights",
        "default",
        r#"  rules:
  - matches: [{ path: { type: Exact, value: /weighted } }]
    backendRefs:
    - { name: a, port: 80, weight: 1 }
    - { name: b, port: 80, weight: 0 }
  - matches: [{ path: { type: Exact, value: /zero } }]
    backendRefs:
    - { name: a, port: 80, weight: 0 }
  - matches: [{ path: { type: Exact, value: /notready } }]
    backendRefs:
    - { name: notready, port: 80 }
  - matches: [{ path: { type: Exact, value: /cross } }]
    backendRefs:
    - { name: other, namespace: elsewhere, port: 80 }
"#,
    ));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for _ in 0..20 {
        let reply = Client::http1().get(&url("/weighted")).await.unwrap();
        assert_eq!(reply.backend(), Some("a"));
    }
    assert_eq!(Client::http1().get(&url("/zero")).await.unwrap().status, 500);
    assert_eq!(Client::http1().get(&url("/notready")).await.unwrap().status, 503);
    assert_eq!(Client::http1().get(&url("/cross")).await.unwrap().status, 500);
    let status = gh.status().await;
    let route = object(&status, "HTTPRoute", "default", "weights");
    let resolved = condition(&route["status"]["parents"][0]["conditions"], "ResolvedRefs");
    assert_eq!(resolved["reason"], "RefNotPermitted");

    // A ReferenceGrant in the target namespace permits the cross-namespace backend.
    let grant = r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: allow-default
  namespace: elsewhere
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: default
  to:
  - group: ""
    kind: Service
"#;
    let generation = status["generation"].as_u64().unwrap();
    let accepted_at = |status: &Value| {
        let gateway = object(status, "Gateway", "default", "web");
        condition(&gateway["status"]["conditions"], "Accepted")["lastTransitionTime"].clone()
    };
    let before = accepted_at(&status);
    assert!(before.is_string(), "{status:#}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    gh.write("manifests/grant.yaml", grant);
    let status = gh.wait_generation(generation).await;
    // Unchanged conditions keep their transition time; the changed one moves.
    assert_eq!(accepted_at(&status), before);
    let route = object(&status, "HTTPRoute", "default", "weights");
    let resolved = condition(&route["status"]["parents"][0]["conditions"], "ResolvedRefs");
    assert_eq!(resolved["status"], "True", "{resolved:#}\n{}", gh.logs());
    assert_ne!(resolved["lastTransitionTime"], before);
    let reply = Client::http1().get(&url("/cross")).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("b"));
}

#[tokio::test]
async fn http_to_https_redirect_uses_the_right_port() {
    let port = free_port();
    let mut yaml = manifests(port, &[]);
    yaml.push_str(&route(
        "redirect",
        "default",
        r#"  hostnames: ["secure.example.com"]
  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        statusCode: 301
  - matches: [{ path: { type: PathPrefix, value: /moved } }]
    filters:
    - type: RequestRedirect
      requestRedirect:
        scheme: https
        port: 8443
        path: { type: ReplacePrefixMatch, replacePrefixMatch: /new }
"#,
    ));
    let _gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let reply = Client::http1().get_host(&url("/a/b?c=d"), "secure.example.com").await.unwrap();
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("https://secure.example.com/a/b?c=d"));
    let reply = Client::http1()
        .get_host(&url("/moved/x"), &format!("secure.example.com:{port}"))
        .await
        .unwrap();
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), Some("https://secure.example.com:8443/new/x"));
}
