//! Cluster mode against a fake API server that speaks the real list/watch wire protocol.

use std::time::{Duration, Instant};

use gatehouse_tests::{Appliance, Client, EchoBackend, FakeKube, free_port};
use serde_json::{Value, json};

const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

fn config(namespaces: Option<&[&str]>) -> String {
    let mut config = r#"
[admin]
listen = "127.0.0.1:{admin}"
[runtime]
shutdown_grace_ms = 1000
[kubernetes]
kubeconfig = "kubeconfig"
"#
    .to_owned();
    if let Some(namespaces) = namespaces {
        config.push_str(&format!("namespaces = {namespaces:?}\n"));
    }
    config
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn gateway_class() -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "GatewayClass",
        "metadata": {"name": "gatehouse"},
        "spec": {"controllerName": "gatehouse.dev/gateway-controller"},
        "status": {"conditions": []}
    })
}

fn gateway(port: u16) -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "default", "generation": 1,
                     "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": {
            "gatewayClassName": "gatehouse",
            "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
            "listeners": [{"name": "http", "port": port, "protocol": "HTTP",
                           "allowedRoutes": {"namespaces": {"from": "All"}}}]
        }
    })
}

/// A Service and its EndpointSlice pointing at a backend on 127.0.0.1.
fn service(namespace: &str, name: &str, backend: &EchoBackend) -> [Value; 2] {
    [
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": 80, "targetPort": backend.port()}]}
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": backend.port()}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]
        }),
    ]
}

fn route(namespace: &str, name: &str, path: &str, service: &str) -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"name": "web", "namespace": "default"}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [{"name": service, "port": 80}]
            }]
        }
    })
}

/// A fake cluster with a Gateway on `port` and one Service per backend, all in `default`.
async fn cluster(port: u16, backends: &[&EchoBackend]) -> FakeKube {
    let kube = FakeKube::start().await;
    for object in [namespace("default"), gateway_class(), gateway(port)] {
        kube.apply(object).await;
    }
    for backend in backends {
        for object in service("default", &backend.name, backend) {
            kube.apply(object).await;
        }
    }
    kube
}

async fn start(kube: &FakeKube, namespaces: Option<&[&str]>) -> Appliance {
    Appliance::start_ready(&config(namespaces), &[("kubeconfig", &kube.kubeconfig())]).await
}

/// Waits (10 s at most) until `url` is answered by `backend` (`None`: answered 404).
async fn wait_for(appliance: &Appliance, url: &str, backend: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = Client::http1().get(url).await;
        let got = match &reply {
            Ok(reply) if reply.status == 200 => reply.backend().map(str::to_owned),
            _ => None,
        };
        let done = match backend {
            Some(want) => got.as_deref() == Some(want),
            None => reply.as_ref().is_ok_and(|r| r.status == 404),
        };
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered by {backend:?}; last {:?}\nlogs:\n{}",
            reply.map(|r| (r.status, r.backend().map(str::to_owned))),
            appliance.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(appliance: &Appliance) -> String {
    let reply = Client::http1().get(&appliance.admin_url("/metrics")).await.expect("/metrics");
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn cluster_objects_route_traffic_and_changes_follow_without_restart() {
    let one = EchoBackend::start("one").await;
    let two = EchoBackend::start("two").await;
    let port = free_port();
    let kube = cluster(port, &[&one, &two]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    let appliance = start(&kube, None).await;
    let url = format!("http://127.0.0.1:{port}/app");
    // Ready means every watch listed: the route is served from the first ready moment.
    let reply = Client::http1().get(&url).await.expect("request");
    assert_eq!((reply.status, reply.backend()), (200, Some("one")), "{}", appliance.logs());

    let status = appliance.status().await;
    let route_status = status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == "HTTPRoute"))
        .expect("HTTPRoute in /status");
    assert_eq!(route_status["status"]["parents"][0]["conditions"][0]["status"], "True");

    // MODIFIED: the same process follows.
    kube.apply(route("default", "app", "/app", "two")).await;
    wait_for(&appliance, &url, Some("two")).await;

    // DELETED.
    kube.delete(GATEWAY_API, "HTTPRoute", "default", "app").await;
    wait_for(&appliance, &url, None).await;

    let text = metrics(&appliance).await;
    assert!(metric(&text, "gatehouse_kube_last_event_timestamp_seconds") > 0.0, "{text}");
    assert!(metric(&text, "gatehouse_kube_watch_events_total") > 0.0, "{text}");
}

#[tokio::test]
async fn a_410_gone_relists_and_converges() {
    let one = EchoBackend::start("one").await;
    let two = EchoBackend::start("two").await;
    let port = free_port();
    let kube = cluster(port, &[&one, &two]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    kube.apply(route("default", "gone", "/gone", "one")).await;
    let appliance = start(&kube, None).await;
    let url = format!("http://127.0.0.1:{port}/app");
    wait_for(&appliance, &url, Some("one")).await;
    let lists_before = route_lists(&kube).await;

    // Changed and deleted behind the watches' back, history compacted, watches cut with 410:
    // only a relist can see either change.
    kube.replace_behind_watches(route("default", "app", "/app", "two")).await;
    kube.delete(GATEWAY_API, "HTTPRoute", "default", "gone").await;
    wait_for(&appliance, &url, Some("two")).await;
    wait_for(&appliance, &format!("http://127.0.0.1:{port}/gone"), None).await;
    assert!(route_lists(&kube).await > lists_before, "{:#?}", kube.requests().await);

    // Watching again after the relist: a plain change still arrives.
    kube.apply(route("default", "app", "/app", "one")).await;
    wait_for(&appliance, &url, Some("one")).await;
}

async fn route_lists(kube: &FakeKube) -> usize {
    kube.requests()
        .await
        .iter()
        .filter(|r| r.starts_with("LIST") && r.contains("httproutes"))
        .count()
}

#[tokio::test]
async fn losing_the_api_server_keeps_traffic_served() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    let appliance = start(&kube, None).await;
    let url = format!("http://127.0.0.1:{port}/app");
    wait_for(&appliance, &url, Some("one")).await;

    kube.stop();
    drop(kube);
    // Watches fail and retry with backoff; every request in the meantime is served.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = 0;
    loop {
        let reply = Client::http1().get(&url).await.expect("request");
        assert_eq!((reply.status, reply.backend()), (200, Some("one")), "{}", appliance.logs());
        served += 1;
        let text = metrics(&appliance).await;
        if metric(&text, "gatehouse_kube_watch_errors_total") > 0.0 && served >= 20 {
            assert!(metric(&text, "gatehouse_kube_last_error_timestamp_seconds") > 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no watch error seen; metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = Client::http1().get(&appliance.admin_url("/readyz")).await.expect("/readyz");
    assert_eq!(ready.status, 200, "still ready on the last good state");
    assert!(appliance.logs().contains("the last good state keeps serving"), "{}", appliance.logs());
}

#[tokio::test]
async fn a_namespace_filter_watches_only_those_namespaces() {
    let one = EchoBackend::start("one").await;
    let other = EchoBackend::start("other").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    kube.apply(namespace("elsewhere")).await;
    for object in service("elsewhere", "other", &other) {
        kube.apply(object).await;
    }
    kube.apply(route("default", "app", "/app", "one")).await;
    kube.apply(route("elsewhere", "other", "/other", "other")).await;
    let appliance = start(&kube, Some(&["default"])).await;
    wait_for(&appliance, &format!("http://127.0.0.1:{port}/app"), Some("one")).await;
    let reply = Client::http1().get(&format!("http://127.0.0.1:{port}/other")).await.unwrap();
    assert_eq!(reply.status, 404);
    let requests = kube.requests().await;
    assert!(requests.iter().any(|r| r.contains("/namespaces/default/httproutes")), "{requests:#?}");
    assert!(!requests.iter().any(|r| r.contains("elsewhere")), "{requests:#?}");
}

/// Opt-in: the read side against a real cluster. Needs `GATEHOUSE_E2E_KUBECONFIG` pointing at a
/// cluster with the Gateway API CRDs installed and the RBAC in docs/kubernetes.md.
#[tokio::test]
async fn real_cluster_read_side_needs_gatehouse_e2e_kubeconfig() {
    let Some(kubeconfig) = std::env::var_os("GATEHOUSE_E2E_KUBECONFIG") else {
        eprintln!(
            "skipped: GATEHOUSE_E2E_KUBECONFIG is not set (opt-in test against a real cluster)"
        );
        return;
    };
    let kubeconfig = std::path::absolute(kubeconfig).expect("absolute kubeconfig path");
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{{admin}}\"\n[kubernetes]\nkubeconfig = {:?}\n",
        kubeconfig.display().to_string()
    );
    // Ready means every watch listed once.
    let appliance = Appliance::start_ready(&config, &[]).await;
    let status = appliance.wait_generation(0).await;
    assert!(status["last_reload"]["ok"].as_bool().unwrap_or(false), "{status:#}");
    let text = metrics(&appliance).await;
    assert!(metric(&text, "gatehouse_kube_watch_events_total") > 0.0, "{text}");
}

#[test]
fn check_reports_an_unreadable_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), "clusters: [not, a, kubeconfig\n").unwrap();
    std::fs::write(dir.path().join("gatehouse.toml"), config(None).replace("{admin}", "0"))
        .unwrap();
    let out = std::process::Command::new(gatehouse_tests::gatehouse_bin())
        .args(["check", "--config", "gatehouse.toml"])
        .current_dir(dir.path())
        .output()
        .expect("run gatehouse check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("error: kubeconfig "), "{stderr}");
}
