//! HTTPRoute extended features through the real binary: redirect status codes, request and
//! backend timeouts, retries, request mirrors, CORS and GatewayClass `supportedFeatures`.

use std::time::Duration;

use gatehouse_tests::{Appliance, Client, EchoBackend, ScriptedBackend, Step, free_port};
use http::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{gateway_api_config, manifests, service};

/// An HTTPRoute attached to Gateway `default/web` with `body` (hostnames, rules) below `spec`.
fn route(name: &str, body: &str) -> String {
    format!(
        r#"---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: {name}
  namespace: default
spec:
  parentRefs:
  - name: web
{body}"#
    )
}

fn route_conditions(status: &Value, name: &str) -> Vec<(String, String, String)> {
    let objects = status["objects"].as_array().cloned().unwrap_or_default();
    let route = objects
        .iter()
        .find(|o| o["kind"] == "HTTPRoute" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no HTTPRoute {name} in {status:#}"));
    route["status"]["parents"][0]["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                    (s("type"), s("status"), s("reason"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assert_accepted(status: &Value, name: &str) {
    let conds = route_conditions(status, name);
    assert!(
        conds.iter().any(|(t, s, _)| t == "Accepted" && s == "True"),
        "route {name} not accepted: {conds:?}"
    );
}

#[tokio::test]
async fn redirect_status_codes_301_302_303_307_308() {
    let port = free_port();
    let mut yaml = manifests(port, &[]);
    let mut rules = String::from("  rules:\n");
    for code in [301, 302, 303, 307, 308] {
        rules.push_str(&format!(
            r#"  - matches: [{{ path: {{ type: PathPrefix, value: /r{code} }} }}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{ hostname: moved.example.com, statusCode: {code} }}
"#
        ));
    }
    yaml.push_str(&route("redirects", &rules));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    assert_accepted(&gh.status().await, "redirects");
    for code in [301, 302, 303, 307, 308] {
        let url = format!("http://127.0.0.1:{port}/r{code}/x?q=1");
        let reply = Client::http1().get_host(&url, "app.example.com").await.unwrap();
        assert_eq!(reply.status, code);
        assert_eq!(
            reply.header("location"),
            Some(format!("http://moved.example.com:{port}/r{code}/x?q=1").as_str())
        );
    }
}

#[tokio::test]
async fn request_and_backend_timeouts_answer_504() {
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let mut yaml = manifests(port, &[("echo", echo.port())]);
    yaml.push_str(&route(
        "timeouts",
        r#"  rules:
  - matches: [{ path: { type: PathPrefix, value: /request } }]
    timeouts: { request: 400ms }
    backendRefs: [{ name: echo, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /backend } }]
    timeouts: { request: 20s, backendRequest: 400ms }
    backendRefs: [{ name: echo, port: 80 }]
  - matches: [{ path: { type: PathPrefix, value: /unbounded } }]
    timeouts: { request: 0s }
    backendRefs: [{ name: echo, port: 80 }]
"#,
    ));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    assert_accepted(&gh.status().await, "timeouts");
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move { Client::http1().get(&url).await.unwrap() }
    };
    // The backend answers after 3 s: both timeouts expire first (the margin is wide).
    assert_eq!(get("/request?sleep_ms=3000").await.status, 504);
    assert_eq!(get("/backend?sleep_ms=3000").await.status, 504);
    // A prompt backend is not affected, and 0s disables the request timeout.
    assert_eq!(get("/request").await.status, 200);
    assert_eq!(get("/backend").await.status, 200);
    assert_eq!(get("/unbounded?sleep_ms=1000").await.status, 200);
}

/// Two EndpointSlices behind Service `name`: a port nothing listens on, and `live`.
fn service_with_dead_endpoint(name: &str, dead: u16, live: u16) -> String {
    let mut out = service(name, "default", live);
    out.push_str(&format!(
        r#"---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-dead
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: ""
  port: {dead}
endpoints:
- addresses: ["127.0.0.1"]
  conditions:
    ready: true
"#
    ));
    out
}

/// Sends a raw HTTP/1.1 POST with `body` and returns the status code.
async fn post(port: u16, path: &str, body: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write request");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read reply");
    let text = String::from_utf8_lossy(&reply);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn retries_follow_codes_attempts_and_connection_errors() {
    let flaky = ScriptedBackend::start("flaky", vec![Step::Status(503), Step::Status(503)]).await;
    let short = ScriptedBackend::start("short", vec![Step::Status(503), Step::Status(503)]).await;
    let unlisted = ScriptedBackend::start("unlisted", vec![Step::Status(500)]).await;
    let hangup = ScriptedBackend::start("hangup", vec![Step::Hangup]).await;
    let slow = ScriptedBackend::start("slow", vec![Step::Delay(Duration::from_secs(5))]).await;
    let body = ScriptedBackend::start("body", vec![Step::Status(502)]).await;
    let live = EchoBackend::start("live").await;
    let port = free_port();
    let services = [
        ("flaky", flaky.port()),
        ("short", short.port()),
        ("unlisted", unlisted.port()),
        ("hangup", hangup.port()),
        ("slow", slow.port()),
        ("body", body.port()),
    ];
    let mut yaml = manifests(port, &services);
    yaml.push_str(&service_with_dead_endpoint("halfdead", free_port(), live.port()));
    let rule = |path: &str, backend: &str, retry: &str| {
        format!(
            "  - matches: [{{ path: {{ type: PathPrefix, value: {path} }} }}]\n    retry: {retry}\n    backendRefs: [{{ name: {backend}, port: 80 }}]\n"
        )
    };
    let mut rules = String::from("  rules:\n");
    rules.push_str(&rule("/flaky", "flaky", "{ codes: [503], attempts: 2, backoff: 10ms }"));
    rules.push_str(&rule("/short", "short", "{ codes: [503], attempts: 1, backoff: 10ms }"));
    rules.push_str(&rule("/unlisted", "unlisted", "{ codes: [503], attempts: 3 }"));
    rules.push_str(&rule("/hangup", "hangup", "{ attempts: 1 }"));
    rules.push_str(&rule("/halfdead", "halfdead", "{ attempts: 1, backoff: 1ms }"));
    rules.push_str(&rule("/body", "body", "{ codes: [502], attempts: 1 }"));
    rules.push_str(&format!(
        "{}    timeouts: {{ request: 20s, backendRequest: 500ms }}\n",
        rule("/slow", "slow", "{ attempts: 1 }")
    ));
    yaml.push_str(&route("retries", &rules));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    assert_accepted(&gh.status().await, "retries");
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move { Client::http1().get(&url).await.unwrap().status }
    };

    assert_eq!(get("/flaky").await, 200, "two 503s, two retries");
    assert_eq!(flaky.requests().await.len(), 3);
    assert_eq!(get("/short").await, 503, "attempts exhausted: the last answer is returned");
    assert_eq!(short.requests().await.len(), 2);
    assert_eq!(get("/unlisted").await, 500, "a code not listed is not retried");
    assert_eq!(unlisted.requests().await.len(), 1);
    assert_eq!(get("/hangup").await, 200, "a connection closed without answer is retried");
    assert_eq!(hangup.requests().await.len(), 2);
    // Round-robin over a dead and a live endpoint: every request reaches the live one.
    for _ in 0..4 {
        assert_eq!(get("/halfdead").await, 200, "connection refused is retried");
    }
    // The backend timeout bounds each attempt; the retry fits in the request timeout.
    assert_eq!(get("/slow").await, 200, "a backend timeout is retried");
    assert_eq!(slow.requests().await.len(), 2);
    // A small body is buffered and sent again, intact.
    assert_eq!(post(port, "/body", "hello retry").await, 200);
    let seen = body.requests().await;
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.method == "POST" && s.body.as_ref() == b"hello retry"));

    let metrics = Client::http1().get(&gh.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("gatehouse_proxy_retries_total{"), "{text}");
}

#[tokio::test]
async fn mirrors_copy_requests_without_affecting_them() {
    let echo = EchoBackend::start("echo").await;
    let m1 = ScriptedBackend::start("m1", vec![]).await;
    let m2 = ScriptedBackend::start("m2", vec![Step::Status(500)]).await;
    let slow = ScriptedBackend::start("slow", vec![Step::Delay(Duration::from_secs(5)); 4]).await;
    let half = ScriptedBackend::start("half", vec![]).await;
    let never = ScriptedBackend::start("never", vec![]).await;
    let port = free_port();
    let services = [
        ("echo", echo.port()),
        ("m1", m1.port()),
        ("m2", m2.port()),
        ("slow", slow.port()),
        ("half", half.port()),
        ("never", never.port()),
    ];
    let mut yaml = manifests(port, &services);
    yaml.push_str(&service("dead", "default", free_port()));
    let mirror = |name: &str, share: &str| {
        format!(
            "    - type: RequestMirror\n      requestMirror: {{ backendRef: {{ name: {name}, port: 80 }}{share} }}\n"
        )
    };
    let mut rules = String::from("  rules:\n");
    rules.push_str("  - name: mirrored\n    matches: [{ path: { type: PathPrefix, value: /both } }]\n    filters:\n");
    rules.push_str("    - type: RequestHeaderModifier\n      requestHeaderModifier: { set: [{ name: x-mirror-test, value: yes }] }\n");
    rules.push_str(&mirror("m1", ""));
    rules.push_str(&mirror("m2", ""));
    rules.push_str(&mirror("dead", ""));
    rules.push_str("    backendRefs: [{ name: echo, port: 80 }]\n");
    rules.push_str("  - matches: [{ path: { type: PathPrefix, value: /slow } }]\n    timeouts: { request: 2s }\n    filters:\n");
    rules.push_str(&mirror("slow", ""));
    rules.push_str("    backendRefs: [{ name: echo, port: 80 }]\n");
    rules.push_str("  - matches: [{ path: { type: PathPrefix, value: /share } }]\n    filters:\n");
    rules.push_str(&mirror("half", ", percent: 50"));
    rules.push_str(&mirror("never", ", fraction: { numerator: 0, denominator: 3 }"));
    rules.push_str("    backendRefs: [{ name: echo, port: 80 }]\n");
    yaml.push_str(&route("mirrors", &rules));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    let status = gh.status().await;
    assert_accepted(&status, "mirrors");
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        async move { Client::http1().get(&url).await.unwrap() }
    };

    // Both mirrors get a copy (after the rule's header filter); a failing mirror (500) and an
    // unreachable one change nothing for the client.
    for i in 0..3 {
        let reply = get(&format!("/both/{i}")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.backend(), Some("echo"));
    }
    for m in [&m1, &m2] {
        let seen = m.wait_requests(3, Duration::from_secs(10)).await;
        assert_eq!(seen.len(), 3);
        let mut paths: Vec<_> = seen.iter().map(|s| s.path.clone()).collect();
        paths.sort();
        assert_eq!(paths, ["/both/0", "/both/1", "/both/2"]);
        assert!(seen.iter().all(|s| s.headers.get("x-mirror-test").is_some()));
    }
    // A mirror slower than the rule's request timeout does not hold the request back.
    for _ in 0..2 {
        assert_eq!(get("/slow").await.status, 200);
    }
    assert_eq!(slow.wait_requests(2, Duration::from_secs(10)).await.len(), 2);

    // 50 %: over 60 requests some are mirrored and some not (each outcome has p = 2^-60);
    // a 0/3 fraction mirrors none.
    for i in 0..60 {
        assert_eq!(get(&format!("/share/{i}")).await.status, 200);
    }
    let mirrored = half.wait_requests(1, Duration::from_secs(10)).await.len();
    assert!(mirrored > 0 && mirrored < 60, "{mirrored} of 60 mirrored at 50 %");
    assert!(never.requests().await.is_empty());

    let metrics = Client::http1().get(&gh.admin_url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("gatehouse_proxy_mirrored_requests_total{"), "{text}");
}

#[tokio::test]
async fn cors_preflight_answered_by_the_proxy() {
    let backend = ScriptedBackend::start("app", vec![]).await;
    let port = free_port();
    let mut yaml = manifests(port, &[("app", backend.port())]);
    // Attached by port alone (no sectionName): ParentRefPort.
    yaml.push_str(&route(
        "cors",
        &format!(
            r#"    port: {port}
  rules:
  - name: api
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://app.example.com", "https://*.example.org"]
        allowMethods: [GET, PUT]
        allowHeaders: [x-token]
        exposeHeaders: [x-request-id]
        maxAge: 600
        allowCredentials: true
    backendRefs: [{{ name: app, port: 80 }}]
"#
        ),
    ));
    let gh = Appliance::start_ready(gateway_api_config(), &[("manifests/all.yaml", &yaml)]).await;
    assert_accepted(&gh.status().await, "cors");
    let url = format!("http://127.0.0.1:{port}/items");
    let preflight = |origin: &str| {
        Client::http1()
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "x-token")
    };

    let reply = preflight("https://app.example.com").request(Method::OPTIONS, &url, None).await;
    let reply = reply.unwrap();
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(reply.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(reply.header("access-control-allow-headers"), Some("x-token"));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.header("access-control-max-age"), Some("600"));

    let reply = preflight("https://a.b.example.org").request(Method::OPTIONS, &url, None).await;
    assert_eq!(
        reply.unwrap().header("access-control-allow-origin"),
        Some("https://a.b.example.org")
    );
    let reply = preflight("https://evil.test").request(Method::OPTIONS, &url, None).await.unwrap();
    assert_eq!(reply.status, 204);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert!(backend.requests().await.is_empty(), "preflights never reach the backend");

    let reply = Client::http1().header("origin", "https://app.example.com").get(&url).await;
    let reply = reply.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("app"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(reply.header("access-control-expose-headers"), Some("x-request-id"));
    let reply = Client::http1().header("origin", "https://evil.test").get(&url).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(backend.requests().await.len(), 2);
}

#[tokio::test]
async fn gateway_class_lists_supported_features_sorted() {
    let port = free_port();
    let gh = Appliance::start_ready(
        gateway_api_config(),
        &[("manifests/all.yaml", &manifests(port, &[]))],
    )
    .await;
    let status = gh.status().await;
    let class = status["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == "GatewayClass"))
        .cloned()
        .unwrap_or_else(|| panic!("no GatewayClass in {status:#}"));
    let names: Vec<&str> = class["status"]["supportedFeatures"]
        .as_array()
        .unwrap_or_else(|| panic!("no supportedFeatures in {class:#}"))
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    for feature in ["HTTPRoute", "HTTPRouteCORS", "HTTPRouteRequestMirror", "HTTPRouteRetry"] {
        assert!(names.contains(&feature), "{feature} missing from {names:?}");
    }
}

#[tokio::test]
async fn native_rules_time_out_retry_mirror_and_answer_cors() {
    let flaky = ScriptedBackend::start("flaky", vec![Step::Status(503)]).await;
    let shadow = ScriptedBackend::start("shadow", vec![]).await;
    let echo = EchoBackend::start("echo").await;
    let port = free_port();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:{{admin}}"

[[gateways]]
name = "web"
addresses = ["127.0.0.1"]
  [[gateways.listeners]]
  name = "http"
  port = {port}
  protocol = "HTTP"

[[routes]]
name = "app"
parents = ["web"]
  [[routes.rules]]
  matches = [{{ path = {{ prefix = "/flaky" }} }}]
  retry = {{ codes = [503], attempts = 1, backoff_ms = 5 }}
  filters = [{{ request_mirror = {{ address = "127.0.0.1:{shadow}" }} }},
             {{ cors = {{ allow_origins = ["https://app.example.com"], allow_methods = ["GET"] }} }}]
  backends = [{{ address = "127.0.0.1:{flaky}" }}]
  [[routes.rules]]
  matches = [{{ path = {{ prefix = "/slow" }} }}]
  timeouts = {{ request_ms = 400 }}
  backends = [{{ address = "127.0.0.1:{echo}" }}]
"#,
        shadow = shadow.port(),
        flaky = flaky.port(),
        echo = echo.port(),
    );
    let _gh = Appliance::start_ready(&config, &[]).await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    let reply =
        Client::http1().header("origin", "https://app.example.com").get(&url("/flaky")).await;
    let reply = reply.unwrap();
    assert_eq!(reply.status, 200, "the 503 was retried");
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(flaky.requests().await.len(), 2);
    assert_eq!(shadow.wait_requests(1, Duration::from_secs(10)).await.len(), 1);

    let preflight = Client::http1()
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .request(Method::OPTIONS, &url("/flaky"), None)
        .await
        .unwrap();
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(flaky.requests().await.len(), 2, "the preflight never reached the backend");

    assert_eq!(Client::http1().get(&url("/slow?sleep_ms=3000")).await.unwrap().status, 504);
}
