//! WasmPlugin objects (`gatehouse.dev/v1alpha1`) behind HTTPRoute ExtensionRef filters, from
//! YAML manifests and from a (fake) Kubernetes API server, through the real binary.

use std::time::{Duration, Instant};

use gatehouse_tests::{Appliance, Client, EchoBackend, FakeKube, free_port, wasm_plugin};
use serde_json::{Value, json};

use crate::manifests;

/// The directory the built plugins are in: the tests' `wasm_module_dir`.
fn plugins_dir() -> String {
    let hm = wasm_plugin("header-modifier");
    hm.parent().expect("plugins dir").display().to_string()
}

fn condition<'a>(status: &'a Value, route: &str, type_: &str) -> &'a Value {
    let route = status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == "HTTPRoute" && o["metadata"]["name"] == route))
        .unwrap_or_else(|| panic!("no HTTPRoute {route} in {status:#}"));
    route["status"]["parents"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} in {route:#}"))
}

/// An HTTPRoute on `web` whose one rule, on `path`, runs ExtensionRef `plugin` (group `group`)
/// and forwards to Service `echo`.
fn route_yaml(name: &str, path: &str, group: &str, plugin: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: web}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    filters:
    - type: ExtensionRef
      extensionRef: {{group: {group}, kind: WasmPlugin, name: {plugin}}}
    backendRefs: [{{name: echo, port: 80}}]
"#
    )
}

#[tokio::test]
async fn wasm_plugins_from_yaml_filter_routes_and_bad_refs_answer_500_with_a_reason() {
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let mut yaml = manifests(port, &[("echo", echo.port())]);
    yaml.push_str(
        r#"---
apiVersion: gatehouse.dev/v1alpha1
kind: WasmPlugin
metadata: {name: hm, namespace: default}
spec:
  module: header_modifier.wasm
  failurePolicy: Closed
  timeoutMs: 100
  memoryLimit: 16Mi
  config:
    request:
      set: {x-plugin: "{route_name}"}
---
apiVersion: gatehouse.dev/v1alpha1
kind: WasmPlugin
metadata: {name: escape, namespace: default}
spec:
  module: ../../../etc/hostname
---
apiVersion: gatehouse.dev/v1alpha1
kind: WasmPlugin
metadata: {name: absent, namespace: default}
spec:
  module: no_such_plugin.wasm
---
apiVersion: gatehouse.dev/v1alpha1
kind: WasmPlugin
metadata: {name: tampered, namespace: default}
spec:
  module: header_modifier.wasm
  sha256: "0000000000000000000000000000000000000000000000000000000000000000"
"#,
    );
    yaml.push_str(&route_yaml("ok", "/ok", "gatehouse.dev", "hm"));
    yaml.push_str(&route_yaml("missing", "/missing", "gatehouse.dev", "nope"));
    yaml.push_str(&route_yaml("escape", "/escape", "gatehouse.dev", "escape"));
    yaml.push_str(&route_yaml("kind", "/kind", "example.com", "hm"));
    yaml.push_str(&route_yaml("absent", "/absent", "gatehouse.dev", "absent"));
    yaml.push_str(&route_yaml("tampered", "/tampered", "gatehouse.dev", "tampered"));
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"
[gateway_api]
manifests = ["manifests"]
wasm_module_dir = "{}"
"#,
        plugins_dir()
    );
    let gh = Appliance::start_ready(&config, &[("manifests/all.yaml", &yaml)]).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let reply = Client::http1().get(&url("/ok")).await.unwrap();
    assert_eq!(reply.status, 200, "{}", gh.logs());
    assert_eq!(reply.json()["headers"]["x-plugin"], "default/ok", "the plugin ran");
    // A module that cannot be loaded costs only the rules that use it (a warning and their
    // routes' ResolvedRefs), not the whole configuration.
    for path in ["/missing", "/escape", "/kind", "/absent", "/tampered"] {
        let reply = Client::http1().get(&url(path)).await.unwrap();
        assert_eq!(reply.status, 500, "{path} must not skip its filter");
    }

    let status = gh.status().await;
    let warnings = status["last_reload"]["warnings"].to_string();
    assert!(
        warnings.contains("WasmPlugin default/absent") && warnings.contains("answer 500"),
        "{status:#}"
    );
    assert_eq!(condition(&status, "ok", "ResolvedRefs")["status"], "True");
    for (route, reason, text) in [
        ("missing", "BackendNotFound", "WasmPlugin default/nope does not exist"),
        ("escape", "BackendNotFound", "must be relative to wasm_module_dir"),
        ("kind", "InvalidKind", "example.com/WasmPlugin"),
        // Modules that fail when the data plane prepares them (unreadable, wrong digest).
        (
            "absent",
            "BackendNotFound",
            "the module of WasmPlugin default/absent could not be loaded",
        ),
        ("tampered", "BackendNotFound", "WasmPlugin default/tampered could not be loaded"),
    ] {
        let resolved = condition(&status, route, "ResolvedRefs");
        assert_eq!(resolved["status"], "False", "{route}");
        assert_eq!(resolved["reason"], reason, "{route}");
        let message = resolved["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "{route}: {message}");
        assert_eq!(condition(&status, route, "Accepted")["status"], "True", "{route}");
    }
}

fn cluster_objects(port: u16, echo: &EchoBackend) -> Vec<Value> {
    let v1 = "gateway.networking.k8s.io/v1";
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        json!({"apiVersion": v1, "kind": "GatewayClass", "metadata": {"name": "gatehouse"},
               "spec": {"controllerName": "gatehouse.dev/gateway-controller"}}),
        json!({"apiVersion": v1, "kind": "Gateway",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"gatewayClassName": "gatehouse",
                        "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
                        "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "echo", "namespace": "default"},
               "spec": {"ports": [{"port": 80, "targetPort": echo.port()}]}}),
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "echo-1", "namespace": "default",
                            "labels": {"kubernetes.io/service-name": "echo"}},
               "addressType": "IPv4", "ports": [{"name": "", "port": echo.port()}],
               "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]}),
        json!({"apiVersion": v1, "kind": "HTTPRoute",
               "metadata": {"name": "app", "namespace": "default"},
               "spec": {"parentRefs": [{"name": "web"}],
                        "rules": [{"filters": [{"type": "ExtensionRef", "extensionRef":
                                      {"group": "gatehouse.dev", "kind": "WasmPlugin",
                                       "name": "hm"}}],
                                   "backendRefs": [{"name": "echo", "port": 80}]}]}}),
    ]
}

fn cluster_plugin(value: &str) -> Value {
    json!({"apiVersion": "gatehouse.dev/v1alpha1", "kind": "WasmPlugin",
           "metadata": {"name": "hm", "namespace": "default"},
           "spec": {"module": "header_modifier.wasm",
                    "config": {"request": {"set": {"x-plugin": value}}}}})
}

/// Waits (20 s at most) until a request to `url` reaches the backend with `x-plugin: want`
/// (`None`: until it is answered 500).
async fn wait_plugin(gh: &Appliance, url: &str, want: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = Client::http1().get(url).await;
        let seen = match &reply {
            Ok(r) if r.status == 200 => r.json()["headers"]["x-plugin"].as_str().map(str::to_owned),
            _ => None,
        };
        let done = match want {
            Some(want) => seen.as_deref() == Some(want),
            None => reply.as_ref().is_ok_and(|r| r.status == 500),
        };
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: never {want:?}, last {:?}\n{}",
            reply.map(|r| (r.status, seen)),
            gh.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wasm_plugins_are_watched_in_cluster_mode_and_changes_follow() {
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let kube = FakeKube::start().await;
    for object in cluster_objects(port, &echo) {
        kube.apply(object).await;
    }
    kube.apply(cluster_plugin("one")).await;
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
state_dir = "state"
shutdown_grace_ms = 1000
[kubernetes]
kubeconfig = "kubeconfig"
write_status = false
wasm_module_dir = "{}"
"#,
        plugins_dir()
    );
    let gh = Appliance::start_ready(&config, &[("kubeconfig", &kube.kubeconfig())]).await;
    let url = format!("http://127.0.0.1:{port}/");
    let reply = Client::http1().get(&url).await.unwrap();
    assert_eq!(reply.status, 200, "{}", gh.logs());
    assert_eq!(reply.json()["headers"]["x-plugin"], "one");

    // MODIFIED: the new configuration is prepared and swapped in without a restart.
    kube.apply(cluster_plugin("two")).await;
    wait_plugin(&gh, &url, Some("two")).await;

    // DELETED: the filter must not be skipped, the rule answers 500.
    kube.delete("gatehouse.dev/v1alpha1", "WasmPlugin", "default", "hm").await;
    wait_plugin(&gh, &url, None).await;
    // Status follows once the data plane acknowledged the generation.
    let reason = |status: &Value| {
        let objects = status["objects"].as_array().cloned().unwrap_or_default();
        objects.iter().find(|o| o["kind"] == "HTTPRoute").and_then(|route| {
            let conditions = route["status"]["parents"][0]["conditions"].as_array()?.clone();
            let resolved = conditions.into_iter().find(|c| c["type"] == "ResolvedRefs")?;
            Some((resolved["status"].clone(), resolved["reason"].clone()))
        })
    };
    let status = gh.wait_status(|s| reason(s).is_some_and(|(s, _)| s == "False")).await;
    assert_eq!(reason(&status), Some((json!("False"), json!("BackendNotFound"))));

    // The watch lists our kind under its own group and version.
    let requests = kube.requests().await;
    assert!(
        requests.iter().any(|r| r.contains("/apis/gatehouse.dev/v1alpha1/wasmplugins")),
        "{requests:?}"
    );
}
