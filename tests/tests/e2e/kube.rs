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
        "spec": {"controllerName": "gatehouse.dev/gateway-controller"}
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

    // Status follows the swap (computed by its own task): wait for it.
    let is_route = |o: &&Value| o["kind"] == "HTTPRoute";
    let status = appliance
        .wait_status(|s| s["objects"].as_array().is_some_and(|o| o.iter().any(|o| is_route(&o))))
        .await;
    let route_status = status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(is_route))
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
        // Read-only: a test must not write status to someone's cluster.
        "[admin]\nlisten = \"127.0.0.1:{{admin}}\"\n[kubernetes]\nkubeconfig = {:?}\nwrite_status = false\n",
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

const FIELD_MANAGER: &str = "gatehouse.dev/gateway-controller";

/// The `/status` subresource path of an object.
fn status_path(kind: &str, namespace: Option<&str>, name: &str) -> String {
    let plural = match kind {
        "GatewayClass" => "gatewayclasses",
        "Gateway" => "gateways",
        "HTTPRoute" => "httproutes",
        "GRPCRoute" => "grpcroutes",
        other => panic!("no status written for {other}"),
    };
    match namespace {
        Some(ns) => format!("/apis/{GATEWAY_API}/namespaces/{ns}/{plural}/{name}/status"),
        None => format!("/apis/{GATEWAY_API}/{plural}/{name}/status"),
    }
}

/// Waits (10 s at most) until a status patch of the object was accepted and `ready` holds for
/// the stored object; returns it.
async fn written(
    kube: &FakeKube,
    appliance: &Appliance,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let path = status_path(kind, namespace, name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let accepted = kube.patches().await.iter().any(|p| p.path == path && p.answered == 200);
        let object = kube.object(GATEWAY_API, kind, namespace.unwrap_or(""), name).await;
        if let Some(object) = object.filter(|o| accepted && ready(o)) {
            return object;
        }
        assert!(
            Instant::now() < deadline,
            "no status written to {path}; patches: {:#?}\nlogs:\n{}",
            kube.patches().await,
            appliance.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The condition of `type_` in a condition list.
fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:#}"))
}

fn is_true(conditions: &Value, type_: &str) -> bool {
    conditions
        .as_array()
        .is_some_and(|list| list.iter().any(|c| c["type"] == type_ && c["status"] == "True"))
}

fn has_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(has_null),
        Value::Object(map) => map.values().any(has_null),
        _ => false,
    }
}

/// Our parent entries of a route.
fn our_parents(route: &Value) -> Vec<&Value> {
    route["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["controllerName"] == FIELD_MANAGER)
        .collect()
}

async fn written_all(kube: &FakeKube, appliance: &Appliance) -> (Value, Value, Value) {
    let class = written(kube, appliance, "GatewayClass", None, "gatehouse", |o| {
        is_true(&o["status"]["conditions"], "Accepted")
    })
    .await;
    let gateway = written(kube, appliance, "Gateway", Some("default"), "web", |o| {
        is_true(&o["status"]["conditions"], "Programmed")
    })
    .await;
    let route = written(kube, appliance, "HTTPRoute", Some("default"), "app", |o| {
        our_parents(o).first().is_some_and(|p| is_true(&p["conditions"], "Accepted"))
    })
    .await;
    (class, gateway, route)
}

#[tokio::test]
async fn status_is_written_back_with_server_side_apply() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    // Two spec changes after the create: the API server says generation 3.
    for path in ["/first", "/second", "/app"] {
        kube.apply(route("default", "app", path, "one")).await;
    }
    let appliance = start(&kube, None).await;
    wait_for(&appliance, &format!("http://127.0.0.1:{port}/app"), Some("one")).await;

    let (class, gateway, route) = written_all(&kube, &appliance).await;
    assert_eq!(condition(&class["status"]["conditions"], "Accepted")["observedGeneration"], 1);

    let conditions = &gateway["status"]["conditions"];
    assert!(is_true(conditions, "Accepted"), "{gateway:#}");
    assert_eq!(condition(conditions, "Programmed")["reason"], "Programmed");
    assert_eq!(condition(conditions, "Programmed")["observedGeneration"], 1);
    assert_eq!(
        gateway["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "127.0.0.1"}])
    );
    let listener = &gateway["status"]["listeners"][0];
    assert_eq!((&listener["name"], &listener["attachedRoutes"]), (&json!("http"), &json!(1)));
    assert!(is_true(&listener["conditions"], "Programmed"), "{gateway:#}");
    // The spec is the user's: a status write leaves it (and the generation) alone.
    assert_eq!(gateway["spec"]["listeners"][0]["port"], port);
    assert_eq!(gateway["metadata"]["generation"], 1);

    let parents = our_parents(&route);
    assert_eq!(parents.len(), 1, "{route:#}");
    assert_eq!(parents[0]["parentRef"]["name"], "web");
    assert!(is_true(&parents[0]["conditions"], "ResolvedRefs"), "{route:#}");
    // observedGeneration is the object's metadata.generation.
    assert_eq!(condition(&parents[0]["conditions"], "Accepted")["observedGeneration"], 3);

    let patches = kube.patches().await;
    for patch in &patches {
        assert_eq!(patch.content_type, "application/apply-patch+yaml", "{patch:#?}");
        assert_eq!(patch.field_manager.as_deref(), Some(FIELD_MANAGER), "{patch:#?}");
        assert!(patch.force, "{patch:#?}");
        assert!(patch.body.get("spec").is_none(), "{patch:#?}");
        assert_eq!(patch.body["apiVersion"], GATEWAY_API, "{patch:#?}");
        assert!(patch.body["status"].is_object(), "{patch:#?}");
        // A null in an apply patch removes the field: never send one by accident.
        assert!(!has_null(&patch.body), "{patch:#?}");
    }
    // Only our three objects; never a Service, a Namespace or the like.
    let mut paths: Vec<&str> = patches.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(
        paths,
        [
            status_path("GatewayClass", None, "gatehouse"),
            status_path("Gateway", Some("default"), "web"),
            status_path("HTTPRoute", Some("default"), "app"),
        ],
        "{patches:#?}"
    );
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    let appliance = start(&kube, None).await;
    written_all(&kube, &appliance).await;

    // Our own writes come back as MODIFIED events: they must cause neither a reload nor a write.
    let before = kube.patches().await.len();
    let generation = appliance.status().await["generation"].clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let patches = kube.patches().await;
    assert_eq!(patches.len(), before, "{:#?}", &patches[before.min(patches.len())..]);
    assert_eq!(appliance.status().await["generation"], generation, "no reload");

    // A spec change: the route is written once more with its new generation, and only the
    // route (the Gateway's status did not change).
    // The API server bumps metadata.generation to 2.
    kube.apply(route("default", "app", "/moved", "one")).await;
    written(&kube, &appliance, "HTTPRoute", Some("default"), "app", |o| {
        our_parents(o).first().is_some_and(|p| p["conditions"][0]["observedGeneration"] == 2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let patches = kube.patches().await;
    let route_path = status_path("HTTPRoute", Some("default"), "app");
    assert!(patches[before..].iter().all(|p| p.path == route_path), "{:#?}", &patches[before..]);
    assert_eq!(patches.len(), before + 1, "{:#?}", &patches[before..]);
}

#[tokio::test]
async fn another_controllers_parent_status_is_kept() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    let theirs = json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "namespace": "default", "name": "elsewhere"},
        "controllerName": "example.com/other-controller",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "theirs", "observedGeneration": 1,
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    });
    let mut app = route("default", "app", "/app", "one");
    kube.apply(app.clone()).await;
    app["status"] = json!({"parents": [theirs.clone()]});
    kube.write_status(app).await;
    let appliance = start(&kube, None).await;

    let (_, _, route) = written_all(&kube, &appliance).await;
    let parents = route["status"]["parents"].as_array().expect("parents");
    assert_eq!(parents.len(), 2, "{route:#}");
    assert_eq!(parents[0], theirs, "theirs kept, untouched, in place");
    assert_eq!(parents[1]["controllerName"], FIELD_MANAGER);
    // The atomic list is applied whole, from the version it was read at.
    let path = status_path("HTTPRoute", Some("default"), "app");
    let patch = kube.patches().await.into_iter().find(|p| p.path == path).expect("route patch");
    assert_eq!(patch.body["status"]["parents"][0], theirs);
    assert!(patch.body["metadata"]["resourceVersion"].is_string(), "{patch:#?}");
}

#[tokio::test]
async fn a_parent_status_written_concurrently_by_another_controller_survives_a_409() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    // Between our read and our write, another controller adds its entry.
    let theirs = json!({
        "parentRef": {"name": "elsewhere"},
        "controllerName": "example.com/other-controller",
        "conditions": []
    });
    let path = status_path("HTTPRoute", Some("default"), "app");
    kube.interfere_before_patch(&path, json!({"parents": [theirs.clone()]})).await;
    let appliance = start(&kube, None).await;

    let route = written(&kube, &appliance, "HTTPRoute", Some("default"), "app", |o| {
        !our_parents(o).is_empty()
    })
    .await;
    assert_eq!(route["status"]["parents"][0], theirs, "{route:#}");
    let answers: Vec<u16> =
        kube.patches().await.iter().filter(|p| p.path == path).map(|p| p.answered).collect();
    assert_eq!(answers, [409, 200]);
    let text = metrics(&appliance).await;
    assert!(metric(&text, "gatehouse_kube_status_writes_total{result=\"conflict\"}") >= 1.0);
}

#[tokio::test]
async fn write_status_false_writes_nothing() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    let config = format!("{}write_status = false\n", config(None));
    let appliance = Appliance::start_ready(&config, &[("kubeconfig", &kube.kubeconfig())]).await;
    wait_for(&appliance, &format!("http://127.0.0.1:{port}/app"), Some("one")).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(kube.patches().await.len(), 0, "{:#?}", kube.patches().await);
}

#[tokio::test]
async fn failing_status_writes_are_retried_and_traffic_is_unaffected() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    kube.fail_patches(4).await;
    let appliance = start(&kube, None).await;
    let url = format!("http://127.0.0.1:{port}/app");

    // Served from the first ready moment, while the writes fail and back off.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = Client::http1().get(&url).await.expect("request");
        assert_eq!((reply.status, reply.backend()), (200, Some("one")), "{}", appliance.logs());
        let patches = kube.patches().await;
        let failed = patches.iter().filter(|p| p.answered == 500).count();
        let ok = patches.iter().filter(|p| p.answered == 200).count();
        if failed == 4 && ok >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{patches:#?}\nlogs:\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    written_all(&kube, &appliance).await;
    assert!(appliance.logs().contains("status write failed; retrying"), "{}", appliance.logs());
    let text = metrics(&appliance).await;
    assert!(metric(&text, "gatehouse_kube_status_writes_total{result=\"error\"}") >= 4.0, "{text}");
}

/// An appliance of a pair sharing one cluster: its own identity, kubeconfig token (so the fake
/// server tells their requests apart) and default address (so both bind the Gateway's port).
async fn start_member(kube: &FakeKube, name: &str, address: &str) -> Appliance {
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"
[runtime]
shutdown_grace_ms = 1000
[kubernetes]
kubeconfig = "kubeconfig"
default_address = "{address}"
identity = "appliance-{name}"
lease_duration_seconds = {LEASE_SECONDS}
"#
    );
    let kubeconfig = kube.kubeconfig_with_token(&format!("token-{name}"));
    Appliance::start_ready(&config, &[("kubeconfig", &kubeconfig)]).await
}

const LEASE_SECONDS: u64 = 3;

/// A cluster whose Gateway has no addresses: each appliance binds its own default address.
async fn shared_cluster(port: u16, backend: &EchoBackend) -> FakeKube {
    let kube = cluster(port, &[backend]).await;
    let mut gateway = gateway(port);
    gateway["spec"].as_object_mut().expect("spec").remove("addresses");
    kube.apply(gateway).await;
    kube.apply(route("default", "app", "/app", &backend.name)).await;
    kube
}

async fn lease_holder(kube: &FakeKube) -> Option<String> {
    let lease =
        kube.object("coordination.k8s.io/v1", "Lease", "gatehouse-system", "gatehouse").await?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

/// Accepted status patches sent with `token`.
async fn patches_by(kube: &FakeKube, token: &str) -> usize {
    kube.patches()
        .await
        .iter()
        .filter(|p| p.answered == 200 && p.token.as_deref() == Some(token))
        .count()
}

#[tokio::test]
async fn only_the_lease_holder_of_two_appliances_writes_status() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = shared_cluster(port, &one).await;
    let a = start_member(&kube, "a", "127.0.0.1").await;
    written_all(&kube, &a).await;
    let b = start_member(&kube, "b", "127.0.0.2").await;
    // Both serve traffic.
    wait_for(&a, &format!("http://127.0.0.1:{port}/app"), Some("one")).await;
    wait_for(&b, &format!("http://127.0.0.2:{port}/app"), Some("one")).await;

    // A change both compute status for: only the leader writes it.
    kube.apply(route("default", "two", "/two", "one")).await;
    wait_for(&b, &format!("http://127.0.0.2:{port}/two"), Some("one")).await;
    written(&kube, &a, "HTTPRoute", Some("default"), "two", |o| !our_parents(o).is_empty()).await;
    // Two renew periods for B to (wrongly) write, had it decided it leads.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let patches = kube.patches().await;
    assert!(patches.iter().all(|p| p.field_manager.as_deref() == Some(FIELD_MANAGER)));
    assert!(patches_by(&kube, "token-a").await >= 4, "{patches:#?}");
    assert_eq!(patches_by(&kube, "token-b").await, 0, "{patches:#?}\nB:\n{}", b.logs());
    assert_eq!(lease_holder(&kube).await.as_deref(), Some("appliance-a"));
    let renewals = kube.lease_writes().await;
    assert!(renewals.iter().all(|w| w.holder.as_deref() == Some("appliance-a")), "{renewals:#?}");

    let status_a = a.status().await;
    assert_eq!(status_a["kubernetes"], json!({"leader": true, "holder": "appliance-a"}));
    let status_b = b.status().await;
    assert_eq!(status_b["kubernetes"], json!({"leader": false, "holder": "appliance-a"}));
    assert_eq!(metric(&metrics(&a).await, "gatehouse_kube_leader "), 1.0);
    assert_eq!(metric(&metrics(&b).await, "gatehouse_kube_leader "), 0.0);
}

#[tokio::test]
async fn a_follower_takes_over_status_writes_within_the_bound_when_the_leader_dies() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = shared_cluster(port, &one).await;
    let a = start_member(&kube, "a", "127.0.0.1").await;
    written_all(&kube, &a).await;
    let b = start_member(&kube, "b", "127.0.0.2").await;
    let url_b = format!("http://127.0.0.2:{port}/app");
    wait_for(&b, &url_b, Some("one")).await;
    assert_eq!(lease_holder(&kube).await.as_deref(), Some("appliance-a"));

    drop(a);
    let killed = Instant::now();
    // The lease duration plus one renew period, plus a margin for the write itself.
    let bound = Duration::from_secs(LEASE_SECONDS + LEASE_SECONDS / 3 + 2);
    loop {
        // B serves throughout.
        let reply = Client::http1().get(&url_b).await.expect("B answers");
        assert_eq!((reply.status, reply.backend()), (200, Some("one")));
        // B's Gateway address differs from A's: becoming leader, B writes it.
        if patches_by(&kube, "token-b").await > 0 {
            break;
        }
        assert!(
            killed.elapsed() < bound,
            "B did not take over within {bound:?}; lease writes {:#?}\nB:\n{}",
            kube.lease_writes().await,
            b.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(LEASE_SECONDS) - Duration::from_millis(500),
        "took over before the lease expired: {:?}",
        killed.elapsed()
    );
    assert_eq!(lease_holder(&kube).await.as_deref(), Some("appliance-b"));
    let gateway = written(&kube, &b, "Gateway", Some("default"), "web", |o| {
        o["status"]["addresses"] == json!([{"type": "IPAddress", "value": "127.0.0.2"}])
    })
    .await;
    assert!(is_true(&gateway["status"]["conditions"], "Programmed"), "{gateway:#}");
    let status = b.wait_status(|s| s["kubernetes"]["leader"] == true).await;
    assert_eq!(status["kubernetes"]["holder"], "appliance-b");
}

#[tokio::test]
async fn a_leader_stopping_gracefully_releases_the_lease_to_its_follower() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = shared_cluster(port, &one).await;
    let mut a = start_member(&kube, "a", "127.0.0.1").await;
    written_all(&kube, &a).await;
    let b = start_member(&kube, "b", "127.0.0.2").await;
    wait_for(&b, &format!("http://127.0.0.2:{port}/app"), Some("one")).await;
    assert_eq!(lease_holder(&kube).await.as_deref(), Some("appliance-a"));

    a.signal("TERM");
    assert!(a.wait_exit(Duration::from_secs(10)).await.success(), "{}", a.logs());
    assert!(a.logs().contains("released the lease"), "{}", a.logs());
    let writes = kube.lease_writes().await;
    let release = writes.iter().rposition(|w| w.answered == 200 && w.holder.is_none());
    assert!(release.is_some(), "no release among {writes:#?}");

    // B takes the released Lease without waiting for it to expire, and writes status.
    b.wait_status(|s| s["kubernetes"]["leader"] == true).await;
    assert_eq!(lease_holder(&kube).await.as_deref(), Some("appliance-b"));
    let gateway = written(&kube, &b, "Gateway", Some("default"), "web", |o| {
        o["status"]["addresses"] == json!([{"type": "IPAddress", "value": "127.0.0.2"}])
    })
    .await;
    assert!(is_true(&gateway["status"]["conditions"], "Programmed"), "{gateway:#}");
}

#[tokio::test]
async fn load_balancer_services_get_pool_addresses_written_to_their_status() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    kube.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "UDP"}]}
    }))
    .await;
    let pools = "[[ipam.pools]]\nname = \"lb\"\ncidrs = [\"127.0.13.0/30\"]\n";
    let config = format!("{}{pools}", config(None));
    let appliance = Appliance::start_ready(&config, &[("kubeconfig", &kube.kubeconfig())]).await;
    let path = "/api/v1/namespaces/default/services/dns/status";
    let deadline = Instant::now() + Duration::from_secs(10);
    let service = loop {
        let accepted = kube.patches().await.iter().any(|p| p.path == path && p.answered == 200);
        let object = kube.object("v1", "Service", "default", "dns").await;
        if let Some(object) = object.filter(|o| accepted && o["status"]["loadBalancer"].is_object())
        {
            break object;
        }
        assert!(
            Instant::now() < deadline,
            "no Service status written; patches: {:#?}\nlogs:\n{}",
            kube.patches().await,
            appliance.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        service["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "127.0.13.1", "ipMode": "VIP"}])
    );
    assert_eq!(service["spec"]["type"], "LoadBalancer", "the spec is left alone");
    let patch = kube.patches().await.into_iter().find(|p| p.path == path).unwrap();
    assert_eq!(patch.field_manager.as_deref(), Some(FIELD_MANAGER));
    assert!(patch.body.get("spec").is_none(), "{patch:#?}");
    assert!(!has_null(&patch.body), "{patch:#?}");
    // The echo Service (ClusterIP) gets nothing and no status write.
    assert!(!kube.patches().await.iter().any(|p| p.path.contains("/services/one/")));
}

/// `status.addresses` values of a Gateway as `/status` shows it.
fn status_addresses(status: &Value, name: &str) -> Vec<String> {
    status["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["kind"] == "Gateway" && o["metadata"]["name"] == name)
        .flat_map(|o| o["status"]["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["value"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn gateway_addresses_recorded_in_the_cluster_survive_a_new_appliance() {
    let kube = FakeKube::start().await;
    let unaddressed = |name: &str, port: u16| {
        json!({
            "apiVersion": GATEWAY_API, "kind": "Gateway",
            "metadata": {"name": name, "namespace": "default", "generation": 1},
            "spec": {"gatewayClassName": "gatehouse",
                     "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}
        })
    };
    for object in [namespace("default"), gateway_class(), unaddressed("web", free_port())] {
        kube.apply(object).await;
    }
    let pools = "[[ipam.pools]]\nname = \"lb\"\ncidrs = [\"127.0.14.0/29\"]\n";
    let config = format!("{}{pools}", config(None));
    let first = Appliance::start_ready(&config, &[("kubeconfig", &kube.kubeconfig())]).await;
    written(&kube, &first, "Gateway", Some("default"), "web", |o| {
        o["status"]["addresses"] == json!([{"type": "IPAddress", "value": "127.0.14.1"}])
    })
    .await;
    drop(first);

    // A new appliance with no state of its own, and a Gateway that ranks first by name: "web"
    // keeps what the cluster records, the newcomer takes the next address.
    kube.apply(unaddressed("a-first", free_port())).await;
    let second = Appliance::start_ready(&config, &[("kubeconfig", &kube.kubeconfig())]).await;
    let status = second.wait_status(|s| !status_addresses(s, "a-first").is_empty()).await;
    assert_eq!(status_addresses(&status, "web"), ["127.0.14.1"], "{status:#}");
    assert_eq!(status_addresses(&status, "a-first"), ["127.0.14.2"], "{status:#}");
}

fn node(name: &str, ip: &str, ready: bool, cordoned: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "spec": {"unschedulable": cordoned},
        "status": {
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
        }
    })
}

fn node_port_service(node_port: Option<u16>) -> Value {
    let mut port = json!({"port": 80, "targetPort": 8080});
    if let Some(node_port) = node_port {
        port["nodePort"] = node_port.into();
    }
    let type_ = if node_port.is_some() { "NodePort" } else { "ClusterIP" };
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {"type": type_, "ports": [port]}
    })
}

/// Waits (10 s at most) until requests to `url` are answered by exactly the `want` backends.
async fn wait_for_set(appliance: &Appliance, url: &str, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut seen = std::collections::BTreeSet::new();
        let mut failed = 0;
        for _ in 0..20 {
            match Client::http1().get(url).await {
                Ok(reply) if reply.status == 200 => {
                    seen.extend(reply.backend().map(str::to_owned));
                }
                _ => failed += 1,
            }
        }
        let want: std::collections::BTreeSet<String> =
            want.iter().map(|s| (*s).to_owned()).collect();
        if seen == want && failed == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: answered by {seen:?} ({failed} failed), want {want:?}\nlogs:\n{}",
            appliance.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nodeport_addressing_sends_to_ready_uncordoned_nodes_and_their_node_port() {
    // Two "nodes" on 127.0.0.2 and 127.0.0.3, each with a backend on the same nodePort.
    let a = EchoBackend::start_on("127.0.0.2:0".parse().unwrap(), "node-a").await;
    let b =
        EchoBackend::start_on(format!("127.0.0.3:{}", a.port()).parse().unwrap(), "node-b").await;
    let node_port = a.port();
    let port = free_port();
    let kube = FakeKube::start().await;
    for object in [
        namespace("default"),
        gateway_class(),
        gateway(port),
        node("node-a", "127.0.0.2", true, false),
        node("node-b", "127.0.0.3", true, false),
        node("node-down", "127.0.0.4", false, false),
        node_port_service(Some(node_port)),
        route("default", "app", "/app", "app"),
    ] {
        kube.apply(object).await;
    }
    // A kubelet writes its Node's status.
    for (name, ip, ready) in [
        ("node-a", "127.0.0.2", true),
        ("node-b", "127.0.0.3", true),
        ("node-down", "127.0.0.4", false),
    ] {
        kube.write_status(node(name, ip, ready, false)).await;
    }
    let config = format!("{}backend_addressing = \"nodeport\"\n", config(None));
    let appliance = Appliance::start_ready(&config, &[("kubeconfig", &kube.kubeconfig())]).await;
    let url = format!("http://127.0.0.1:{port}/app");
    wait_for_set(&appliance, &url, &["node-a", "node-b"]).await;
    assert!(
        kube.requests().await.iter().any(|r| r.starts_with("LIST") && r.contains("/nodes")),
        "Nodes are listed in nodeport mode"
    );

    // Cordoned: drained from the backends; NotReady likewise.
    kube.apply(node("node-b", "127.0.0.3", true, true)).await;
    wait_for_set(&appliance, &url, &["node-a"]).await;
    kube.apply(node("node-b", "127.0.0.3", true, false)).await;
    kube.write_status(node("node-a", "127.0.0.2", false, false)).await;
    wait_for_set(&appliance, &url, &["node-b"]).await;

    // A ClusterIP Service has no nodePort: the route's ResolvedRefs turns False, with why.
    kube.apply(node_port_service(None)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = appliance.status().await;
        let route = status["objects"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["kind"] == "HTTPRoute"))
            .cloned()
            .unwrap_or_default();
        let resolved = condition(&route["status"]["parents"][0]["conditions"], "ResolvedRefs");
        if resolved["status"] == "False" {
            assert_eq!(resolved["reason"], "BackendNotFound", "{resolved}");
            let message = resolved["message"].as_str().unwrap_or_default();
            assert!(message.contains("has no nodePort (type ClusterIP)"), "{message}");
            break;
        }
        assert!(Instant::now() < deadline, "ResolvedRefs never False: {route:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}

#[tokio::test]
async fn endpoints_addressing_does_not_watch_nodes() {
    let one = EchoBackend::start("one").await;
    let port = free_port();
    let kube = cluster(port, &[&one]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    let appliance = start(&kube, None).await;
    wait_for(&appliance, &format!("http://127.0.0.1:{port}/app"), Some("one")).await;
    let requests = kube.requests().await;
    assert!(!requests.iter().any(|r| r.contains("/nodes")), "{requests:#?}");
}

fn tls_secret(namespace: &str, name: &str, ca: &gatehouse_tests::TestCa) -> Value {
    use base64::Engine as _;
    let (chain, key) = ca.leaf(&["app.example"]);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"tls.crt": b64(&chain), "tls.key": b64(&key)}
    })
}

fn https_gateway(port: u16, cert_namespace: &str) -> Value {
    json!({
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {
            "gatewayClassName": "gatehouse",
            "addresses": [{"type": "IPAddress", "value": "127.0.0.1"}],
            "listeners": [{"name": "https", "port": port, "protocol": "HTTPS",
                           "tls": {"certificateRefs": [
                               {"name": "cert", "namespace": cert_namespace}]}}]
        }
    })
}

/// The appliance's `/status` `ResolvedRefs` of the Gateway's first listener.
/// The Gateway listener's ResolvedRefs condition, once `/status` shows one: `/status` is
/// computed by its own task after the swap, so it may trail readiness by a moment.
async fn listener_resolved(appliance: &Appliance) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resolved = listener_resolved_now(appliance).await;
        if !resolved.is_null() || Instant::now() > deadline {
            return resolved;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn listener_resolved_now(appliance: &Appliance) -> Value {
    let status = appliance.status().await;
    let gateway = status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == "Gateway"))
        .cloned()
        .unwrap_or_default();
    gateway["status"]["listeners"][0]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ResolvedRefs"))
        .cloned()
        .unwrap_or_default()
}

async fn secret_lists(kube: &FakeKube) -> Vec<String> {
    kube.requests()
        .await
        .into_iter()
        .filter(|r| r.starts_with("LIST") && r.contains("secrets"))
        .collect()
}

#[tokio::test]
async fn secrets_are_watched_only_in_namespaces_listeners_reference() {
    let ca = gatehouse_tests::TestCa::new();
    let port = free_port();
    let kube = FakeKube::start().await;
    let grant = json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "gateways", "namespace": "certs"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                           "namespace": "default"}],
                 "to": [{"group": "", "kind": "Secret"}]}
    });
    for object in [
        namespace("default"),
        namespace("certs"),
        namespace("other"),
        gateway_class(),
        https_gateway(port, "certs"),
        grant,
        tls_secret("certs", "cert", &ca),
        tls_secret("default", "cert", &ca),
        tls_secret("other", "cert", &ca),
    ] {
        kube.apply(object).await;
    }
    let appliance = start(&kube, None).await;
    // Ready means the Secret watch listed: the certificate is there from the first moment.
    let resolved = listener_resolved(&appliance).await;
    assert_eq!(resolved["status"], "True", "{resolved}\n{}", appliance.logs());
    let lists = secret_lists(&kube).await;
    assert!(!lists.is_empty());
    assert!(lists.iter().all(|r| r.contains("/namespaces/certs/secrets")), "{lists:#?}");

    // The listener now points into its own namespace: a watch there, none in "certs" any more.
    kube.apply(https_gateway(port, "default")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !secret_lists(&kube).await.iter().any(|r| r.contains("/namespaces/default/secrets")) {
        assert!(Instant::now() < deadline, "no Secret watch in default:\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The Secret in "default" arrives and resolves the listener.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resolved = listener_resolved(&appliance).await;
        if resolved["status"] == "True" {
            break;
        }
        assert!(Instant::now() < deadline, "{resolved}\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lists = secret_lists(&kube).await;
    assert!(!lists.iter().any(|r| r.contains("/namespaces/other/")), "{lists:#?}");
    assert!(!lists.iter().any(|r| r.contains("LIST /api/v1/secrets")), "{lists:#?}");
}

#[tokio::test]
async fn a_watch_stream_cut_mid_event_loses_nothing() {
    let one = EchoBackend::start("one").await;
    let two = EchoBackend::start("two").await;
    let port = free_port();
    let kube = cluster(port, &[&one, &two]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    let appliance = start(&kube, None).await;
    let url = format!("http://127.0.0.1:{port}/app");
    wait_for(&appliance, &url, Some("one")).await;
    let watches_before = route_watches(&kube).await;

    // The MODIFIED event arrives as half a JSON line, then the connection is aborted.
    kube.cut_next_event(GATEWAY_API, "HTTPRoute").await;
    kube.apply(route("default", "app", "/app", "two")).await;
    wait_for(&appliance, &url, Some("two")).await;
    assert!(route_watches(&kube).await > watches_before, "{:#?}", kube.requests().await);

    // Watching again afterwards: later changes still arrive.
    kube.apply(route("default", "app", "/app", "one")).await;
    wait_for(&appliance, &url, Some("one")).await;
}

async fn route_watches(kube: &FakeKube) -> usize {
    kube.requests()
        .await
        .iter()
        .filter(|r| r.starts_with("WATCH") && r.contains("httproutes"))
        .count()
}

/// Slow (about 45 s): the API server is down for 30 s.
#[tokio::test]
async fn api_server_down_30s_then_back_keeps_serving_and_resyncs_slow() {
    let one = EchoBackend::start("one").await;
    let two = EchoBackend::start("two").await;
    let port = free_port();
    let kube = cluster(port, &[&one, &two]).await;
    kube.apply(route("default", "app", "/app", "one")).await;
    let appliance = start(&kube, None).await;
    let url = format!("http://127.0.0.1:{port}/app");
    wait_for(&appliance, &url, Some("one")).await;

    kube.set_down(true);
    let down_at = Instant::now();
    // Changed while the appliance cannot see it.
    kube.apply(route("default", "app", "/app", "two")).await;
    let mut served = 0;
    while down_at.elapsed() < Duration::from_secs(30) {
        let reply = Client::http1().get(&url).await.expect("request");
        assert_eq!((reply.status, reply.backend()), (200, Some("one")), "{}", appliance.logs());
        let ready = Client::http1().get(&appliance.admin_url("/readyz")).await.expect("/readyz");
        assert_eq!(ready.status, 200, "ready on the last good state");
        served += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(served > 0);
    let text = metrics(&appliance).await;
    assert!(metric(&text, "gatehouse_kube_stale_seconds") > 0.0, "{text}");
    assert!(metric(&text, "gatehouse_kube_failing_watches") > 0.0, "{text}");
    assert!(appliance.logs().contains("API server unreachable: serving the last good state"));

    // Back: the change made meanwhile is picked up without a restart, and staleness clears.
    kube.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = Client::http1().get(&url).await.expect("request");
        assert_eq!(reply.status, 200, "{}", appliance.logs());
        if reply.backend() == Some("two") {
            break;
        }
        assert!(Instant::now() < deadline, "no resync:\n{}", appliance.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics(&appliance).await;
        if metric(&text, "gatehouse_kube_stale_seconds") == 0.0
            && metric(&text, "gatehouse_kube_failing_watches") == 0.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "still stale:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(appliance.logs().contains("watch recovered; resynced from the API server"));
}

#[tokio::test]
async fn grpc_routes_are_watched_served_and_their_status_written() {
    let grpc = gatehouse_tests::GrpcEcho::start("grpc").await;
    let port = free_port();
    let kube = FakeKube::start().await;
    for object in [namespace("default"), gateway_class(), gateway(port)] {
        kube.apply(object).await;
    }
    kube.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "grpc", "namespace": "default"},
        "spec": {"ports": [{"port": 80, "targetPort": grpc.port()}]}
    }))
    .await;
    kube.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "grpc-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "grpc"}},
        "addressType": "IPv4",
        "ports": [{"name": "", "port": grpc.port()}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]
    }))
    .await;
    let appliance = start(&kube, None).await;
    kube.apply(json!({
        "apiVersion": GATEWAY_API, "kind": "GRPCRoute",
        "metadata": {"name": "echo", "namespace": "default", "generation": 1},
        "spec": {
            "parentRefs": [{"name": "web"}],
            "rules": [{
                "matches": [{"method": {"service": "echo.v1.Echo"}}],
                "backendRefs": [{"name": "grpc", "port": 80}]
            }]
        }
    }))
    .await;
    let route = written(&kube, &appliance, "GRPCRoute", Some("default"), "echo", |o| {
        our_parents(o).first().is_some_and(|p| is_true(&p["conditions"], "Accepted"))
    })
    .await;
    assert_eq!(our_parents(&route)[0]["parentRef"]["name"], "web");
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let reply = gatehouse_tests::GrpcClient::connect(addr)
        .await
        .unary("any.example.com", "/echo.v1.Echo/Say", &[], b"from the cluster")
        .await;
    assert_eq!(reply.grpc_status(), Some(0), "{reply:?}");
    assert_eq!(reply.json()["message"], "from the cluster");
}
